/* fractal.c: libfractal's client handle, the one place RPCs are made over gRPC C core with
 * protobuf-c messages (unary and server-streaming calls, retries with backoff, cancellation,
 * credentials), and the error table's functions. The calls built on them are in unary.c,
 * stream.c and jobs.c. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open, fsync, getpid, clock_gettime, pthread_condattr_setclock */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"

/* Method paths, indexed by enum fr_method. Static: registered calls keep pointers to them for the
 * channel's lifetime. */
static const char *const method_paths[FR_M_COUNT] = {
    [FR_M_RENDER] = "/fractal.v1.Renderer/Render",
    [FR_M_RENDER_STREAM] = "/fractal.v1.Renderer/RenderStream",
    [FR_M_SUBMIT_JOB] = "/fractal.v1.Renderer/SubmitJob",
    [FR_M_GET_JOB] = "/fractal.v1.Renderer/GetJob",
    [FR_M_FETCH_JOB_RESULT] = "/fractal.v1.Renderer/FetchJobResult",
    [FR_M_CANCEL_JOB] = "/fractal.v1.Renderer/CancelJob",
    [FR_M_LIST_JOBS] = "/fractal.v1.Renderer/ListJobs",
    [FR_M_LIST_DEVICES] = "/fractal.v1.Renderer/ListDevices",
    [FR_M_GET_STATS] = "/fractal.v1.Renderer/GetStats",
    [FR_M_HEALTH_CHECK] = "/grpc.health.v1.Health/Check",
};

/* The service config of a channel over several servers: round_robin spreads the calls over every
 * server that is up, and client-side health checking (a Health/Watch stream per server, which
 * grpc core opens by itself when the config asks for it and the policy is not pick_first) takes
 * a server out of the rotation while it answers NOT_SERVING, as fractald does while it drains. A
 * server without Watch answers UNIMPLEMENTED, which grpc takes as "healthy". */
#define BALANCED_SERVICE_CONFIG \
    "{\"loadBalancingConfig\":[{\"round_robin\":{}}],\"healthCheckConfig\":{\"serviceName\":\"\"}}"

/* Trailing metadata key of the server's retry hint, in milliseconds. */
#define RETRY_AFTER_KEY "retry-after-ms"

struct fractal_client {
    grpc_channel *channel;
    grpc_completion_queue *cq;   /* pluck queue of this handle; one thread at a time uses it */
    void *methods[FR_M_COUNT];   /* registered-call handles */
    uint32_t deadline_ms;
    unsigned max_attempts;
    uint32_t retry_initial_ms;
    uint32_t retry_max_ms;
    uint64_t rng;                /* backoff jitter (xorshift64) */
    /* Shared with fractal_client_cancel, which may run on another thread; under `lock`. */
    pthread_mutex_t lock;
    pthread_cond_t wake;         /* signalled on cancel, to end a backoff or poll wait */
    int lock_ready;
    int depth;                   /* public calls in flight (they nest) */
    int cancelled;               /* fractal_client_cancel reached the call in flight */
    grpc_call *active;           /* the gRPC call in flight, if any */
    char *auth_value;            /* "Bearer TOKEN", sent with every call; NULL for none */
    grpc_metadata auth_md;       /* its metadata entry, slices borrowing auth_value */
    char error[FR_ERROR_MAX];
};

/* ---- errors ---------------------------------------------------------------------------------- */

const char *fractal_strerror(int err)
{
    switch (err) {
    case FRACTAL_OK: return "success";
#define ERROR_TEXT(name, value, grpc_status, text) case name: return text;
    FRACTAL_ERROR_MAP(ERROR_TEXT)
#undef ERROR_TEXT
    }
    return "unknown error code";
}

int fractal_error_grpc_status(int err)
{
    switch (err) {
    case FRACTAL_OK: return 0;
#define ERROR_STATUS(name, value, grpc_status, text) case name: return grpc_status;
    FRACTAL_ERROR_MAP(ERROR_STATUS)
#undef ERROR_STATUS
    }
    return -1;
}

/* The one place a gRPC status becomes a library code: the table's row for that status, or
 * FRACTAL_EUNKNOWN for a status the table does not know. */
int fr_error_from_status(int status)
{
    if (status == GRPC_STATUS_OK)
        return FRACTAL_OK;
#define ERROR_FROM_STATUS(name, value, grpc_status, text) \
    if ((grpc_status) >= 0 && status == (grpc_status)) \
        return name;
    FRACTAL_ERROR_MAP(ERROR_FROM_STATUS)
#undef ERROR_FROM_STATUS
    return FRACTAL_EUNKNOWN;
}

const char *fractal_version(void)
{
    return FRACTAL_VERSION;
}

int fr_errorf(char *buf, size_t len, int err, const char *fmt, ...)
{
    va_list ap;
    char *p;

    if (buf == NULL || len == 0)
        return err;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    /* One line: a server's message could hold newlines or control bytes. */
    for (p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return err;
}

const char *fractal_client_last_error(const fractal_client *client)
{
    return client ? client->error : "";
}

char *fr_client_errbuf(fractal_client *c)
{
    return c->error;
}

/* ---- client ---------------------------------------------------------------------------------- */

/* Fields of version 1, 2 and 3 fractal_client_options; later fields must not be touched in one. */
#define CLIENT_OPTIONS_V1_SIZE (offsetof(fractal_client_options, max_receive_bytes) + sizeof(size_t))
#define CLIENT_OPTIONS_V2_SIZE (offsetof(fractal_client_options, retry_max_ms) + sizeof(uint32_t))
#define CLIENT_OPTIONS_V3_SIZE (offsetof(fractal_client_options, token) + sizeof(const char *))

int fractal_client_options_init(fractal_client_options *opts, unsigned version)
{
    const fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;

    if (opts == NULL || version < 1 || version > FRACTAL_CLIENT_OPTIONS_VERSION)
        return FRACTAL_EINVAL;
    if (version < FRACTAL_CLIENT_OPTIONS_VERSION) {
        memcpy(opts, &defaults, version == 1   ? CLIENT_OPTIONS_V1_SIZE
                                : version == 2 ? CLIENT_OPTIONS_V2_SIZE
                                               : CLIENT_OPTIONS_V3_SIZE);
        opts->version = version;
    } else {
        *opts = defaults;
    }
    return 0;
}

/* Reads a whole PEM file into a NUL-terminated string (free it); NULL when it cannot be read, is
 * over 16 MiB or holds no PEM block. */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *grown;
    size_t len = 0, cap = 0, n;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            if (cap >= ((size_t)16 << 20) || (grown = realloc(buf, cap = cap ? cap * 2 : 8192)) == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        if ((n = fread(buf + len, 1, 4096, f)) == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    if (strstr(buf, "-----BEGIN ") == NULL) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        size_t i;

        for (i = 0; p[i]; i++)
            p[i] = 0;
    }
    free(s);
}

static int set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* RFC 6750 b64token, the characters a bearer token may hold (and so a metadata value can). */
static int token_ok(const char *t)
{
    size_t i = 0, len = strlen(t);

    while (i < len && ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
                       (t[i] >= '0' && t[i] <= '9') || strchr("-._~+/", t[i]) != NULL))
        i++;
    if (i == 0 || len > 512)
        return 0;
    while (i < len && t[i] == '=')
        i++;
    return i == len;
}

/* The channel's credentials: TLS through grpc core's own when asked, else plaintext. */
static int channel_credentials(grpc_channel_credentials **out, const fractal_client_options *opts)
{
    grpc_ssl_pem_key_cert_pair pair = { NULL, NULL };
    char *ca = NULL, *cert = NULL, *key = NULL;
    int err = FRACTAL_EIO;

    *out = NULL;
    if (opts->version < 3 || (!opts->tls && !set(opts->ca_file))) {
        if (opts->version >= 3 && (set(opts->cert_file) || set(opts->key_file)))
            return FRACTAL_EINVAL; /* a client certificate means nothing without TLS */
        *out = grpc_insecure_credentials_create();
        return *out ? 0 : FRACTAL_ENOMEM;
    }
    if (set(opts->cert_file) != set(opts->key_file))
        return FRACTAL_EINVAL;
    if ((set(opts->ca_file) && (ca = read_pem(opts->ca_file)) == NULL) ||
        (set(opts->cert_file) && ((cert = read_pem(opts->cert_file)) == NULL ||
                                  (key = read_pem(opts->key_file)) == NULL)))
        goto done;
    pair.private_key = key;
    pair.cert_chain = cert;
    /* NULL roots: grpc core's default, the system's CAs. The strings are copied. */
    *out = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
    err = *out ? 0 : FRACTAL_ENOMEM;
done:
    free(ca);
    free(cert);
    free_secret(key);
    return err;
}

int fractal_client_new(fractal_client **out, const char *target, const fractal_client_options *opts)
{
    return fr_client_new(out, target, NULL, opts);
}

int fr_client_new(fractal_client **out, const char *target, const char *authority, const fractal_client_options *opts)
{
    const fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_client *c = NULL;
    grpc_channel_credentials *creds;
    pthread_condattr_t cond_attr;
    grpc_arg args[6];
    grpc_channel_args channel_args;
    struct timespec now;
    char *channel_target = NULL, *list_authority = NULL;
    int err = 0, i, balanced = 0;

    if (out == NULL)
        return FRACTAL_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (target == NULL || target[0] == '\0' || opts->version < 1 || opts->version > FRACTAL_CLIENT_OPTIONS_VERSION ||
        opts->max_receive_bytes == 0 || opts->max_receive_bytes > INT_MAX ||
        (opts->version >= 3 && set(opts->token) && !token_ok(opts->token)) ||
        (opts->version >= 4 && (opts->balance < FRACTAL_BALANCE_AUTO || opts->balance > FRACTAL_BALANCE_ROUND_ROBIN)))
        return FRACTAL_EINVAL;
    /* No handle exists yet to hold a message: the code alone says why. */
    if ((err = fr_target_for_channel(&channel_target, &balanced, &list_authority, target, NULL, 0)) < 0)
        return err;
    if (authority == NULL)
        authority = list_authority;
    if (opts->version >= 4 && opts->balance != FRACTAL_BALANCE_AUTO)
        balanced = opts->balance == FRACTAL_BALANCE_ROUND_ROBIN;
    if ((c = calloc(1, sizeof *c)) == NULL) {
        free(channel_target);
        free(list_authority);
        return FRACTAL_ENOMEM;
    }
    if (opts->version >= 3 && set(opts->token)) {
        size_t len = strlen(opts->token);
        if ((c->auth_value = malloc(len + 8)) == NULL) {
            free(c);
            free(channel_target);
            free(list_authority);
            return FRACTAL_ENOMEM;
        }
        memcpy(c->auth_value, "Bearer ", 7);
        memcpy(c->auth_value + 7, opts->token, len + 1);
        c->auth_md.key = grpc_slice_from_static_string("authorization");
        c->auth_md.value = grpc_slice_from_static_string(c->auth_value);
    }
    c->deadline_ms = opts->deadline_ms;
    c->max_attempts = defaults.max_attempts;
    c->retry_initial_ms = defaults.retry_initial_ms;
    c->retry_max_ms = defaults.retry_max_ms;
    if (opts->version >= 2) {
        if (opts->max_attempts)
            c->max_attempts = opts->max_attempts;
        if (opts->retry_initial_ms)
            c->retry_initial_ms = opts->retry_initial_ms;
        if (opts->retry_max_ms)
            c->retry_max_ms = opts->retry_max_ms;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    c->rng = ((uint64_t)now.tv_sec << 32 ^ (uint64_t)now.tv_nsec ^ (uint64_t)(uintptr_t)c) | 1u;

    /* The wait clock is monotonic, so that a wall-clock step cannot stretch a backoff. */
    if (pthread_condattr_init(&cond_attr) != 0) {
        free_secret(c->auth_value);
        free(c);
        free(channel_target);
        free(list_authority);
        return FRACTAL_ENOMEM;
    }
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        pthread_condattr_destroy(&cond_attr);
        free_secret(c->auth_value);
        free(c);
        free(channel_target);
        free(list_authority);
        return FRACTAL_ENOMEM;
    }
    if (pthread_cond_init(&c->wake, &cond_attr) != 0) {
        pthread_condattr_destroy(&cond_attr);
        pthread_mutex_destroy(&c->lock);
        free_secret(c->auth_value);
        free(c);
        free(channel_target);
        free(list_authority);
        return FRACTAL_ENOMEM;
    }
    pthread_condattr_destroy(&cond_attr);
    c->lock_ready = 1;

    grpc_init();
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)opts->max_receive_bytes;
    args[1].type = GRPC_ARG_STRING;
    args[1].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[1].value.string = (char *)"libfractal/" FRACTAL_VERSION;
    /* After a failed connection the channel waits before it tries again (1 s by default) and fails
     * calls at once meanwhile; matching the first wait to ours makes a retry a real new attempt. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[2].value.integer = (int)(c->retry_initial_ms > INT_MAX ? INT_MAX : c->retry_initial_ms);
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[3].value.integer = (int)(c->retry_max_ms > INT_MAX ? INT_MAX : c->retry_max_ms);
    channel_args.num_args = 4;
    if (balanced) {
        args[channel_args.num_args].type = GRPC_ARG_STRING;
        args[channel_args.num_args].key = (char *)GRPC_ARG_SERVICE_CONFIG;
        args[channel_args.num_args].value.string = (char *)BALANCED_SERVICE_CONFIG;
        channel_args.num_args++;
    }
    if (authority) {
        /* A list of names resolved to addresses: TLS checks the certificate against this name
         * (and calls carry it as :authority), not against an IP address. */
        args[channel_args.num_args].type = GRPC_ARG_STRING;
        args[channel_args.num_args].key = (char *)GRPC_ARG_DEFAULT_AUTHORITY;
        args[channel_args.num_args].value.string = (char *)authority;
        channel_args.num_args++;
    }
    channel_args.args = args;
    if ((err = channel_credentials(&creds, opts)) < 0)
        goto done;
    c->channel = grpc_channel_create(channel_target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (c->channel == NULL || c->cq == NULL) {
        err = FRACTAL_ENOMEM;
        goto done;
    }
    for (i = 0; i < FR_M_COUNT; i++) {
        c->methods[i] = grpc_channel_register_call(c->channel, method_paths[i], NULL, NULL);
        if (c->methods[i] == NULL) {
            err = FRACTAL_ENOMEM;
            goto done;
        }
    }
    *out = c;
    c = NULL;
done:
    free(channel_target);
    free(list_authority);
    fractal_client_free(c);
    return err;
}

void fractal_client_free(fractal_client *client)
{
    grpc_event ev;

    if (client == NULL)
        return;
    if (client->cq) {
        /* Every call this handle made has completed (calls are synchronous), so the queue drains
         * straight to its shutdown event. */
        grpc_completion_queue_shutdown(client->cq);
        do {
            ev = grpc_completion_queue_pluck(client->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        } while (ev.type != GRPC_QUEUE_SHUTDOWN);
        grpc_completion_queue_destroy(client->cq);
    }
    if (client->channel)
        grpc_channel_destroy(client->channel);
    if (client->lock_ready) {
        pthread_cond_destroy(&client->wake);
        pthread_mutex_destroy(&client->lock);
        grpc_shutdown();
    }
    free_secret(client->auth_value);
    free(client);
}

void fractal_client_cancel(fractal_client *client)
{
    if (client == NULL)
        return;
    pthread_mutex_lock(&client->lock);
    if (client->depth > 0) {
        client->cancelled = 1;
        if (client->active)
            grpc_call_cancel(client->active, NULL);
        pthread_cond_broadcast(&client->wake);
    }
    pthread_mutex_unlock(&client->lock);
}

void fr_op_begin(fractal_client *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->depth++ == 0)
        c->cancelled = 0;
    pthread_mutex_unlock(&c->lock);
}

void fr_op_end(fractal_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->depth--;
    pthread_mutex_unlock(&c->lock);
}

static int is_cancelled(fractal_client *c)
{
    int cancelled;

    pthread_mutex_lock(&c->lock);
    cancelled = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    return cancelled;
}

void fr_monotonic_after(struct timespec *out, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += (time_t)(ms / 1000u);
    out->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int fr_sleep(fractal_client *c, uint32_t ms)
{
    struct timespec until;
    int cancelled;

    fr_monotonic_after(&until, ms);
    pthread_mutex_lock(&c->lock);
    while (!c->cancelled && pthread_cond_timedwait(&c->wake, &c->lock, &until) != ETIMEDOUT)
        ;
    cancelled = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    if (cancelled)
        return client_error(c, FRACTAL_ECANCELLED, "cancelled");
    return 0;
}

/* ---- calls: one attempt each, then the retry loop around them -------------------------------- */

/* What one attempt tells the retry loop besides its code. */
typedef struct attempt_info {
    int64_t retry_after_ms;      /* the server's hint, or -1 */
} attempt_info;

static gpr_timespec call_deadline(const fractal_client *c)
{
    return c->deadline_ms == 0
               ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
               : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_millis((int64_t)c->deadline_ms, GPR_TIMESPAN));
}

/* Creates a call on the handle's queue and makes it the one fractal_client_cancel reaches; refuses
 * when a cancel has already come. */
static int call_create(grpc_call **out, fractal_client *c, enum fr_method method, gpr_timespec deadline)
{
    int err = 0;

    *out = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->cancelled) {
        err = FRACTAL_ECANCELLED;
    } else {
        *out = grpc_channel_create_registered_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                                   c->methods[method], deadline, NULL);
        if (*out == NULL)
            err = FRACTAL_ENOMEM;
        c->active = *out;
    }
    pthread_mutex_unlock(&c->lock);
    if (err == FRACTAL_ECANCELLED)
        return client_error(c, err, "cancelled");
    if (err < 0)
        return client_error(c, err, "cannot create a gRPC call");
    return 0;
}

static void call_release(fractal_client *c, grpc_call *call)
{
    if (call == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->active = NULL;
    pthread_mutex_unlock(&c->lock);
    grpc_call_unref(call);
}

/* Starts a batch and waits for it. Returns the event's success (1 or 0), or -1 when gRPC refused
 * the batch (message set). */
static int run_batch(fractal_client *c, grpc_call *call, const grpc_op *ops, size_t n)
{
    grpc_call_error call_err;
    grpc_event ev;
    int tag;

    call_err = grpc_call_start_batch(call, ops, n, &tag, NULL);
    if (call_err != GRPC_CALL_OK) {
        client_error(c, FRACTAL_EINTERNAL, "gRPC refused the call: %s", grpc_call_error_to_string(call_err));
        return -1;
    }
    ev = grpc_completion_queue_pluck(c->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        client_error(c, FRACTAL_EINTERNAL, "gRPC completion queue failed");
        return -1;
    }
    return ev.success != 0;
}

/* Reads "retry-after-ms: N" from metadata; -1 when absent or not a plain number. */
static int64_t retry_after_from(const grpc_metadata_array *md)
{
    size_t i, j;

    for (i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
        const unsigned char *p = GRPC_SLICE_START_PTR(*v);
        size_t len = GRPC_SLICE_LENGTH(*v);
        int64_t ms = 0;

        if (GRPC_SLICE_LENGTH(*k) != sizeof RETRY_AFTER_KEY - 1 ||
            memcmp(GRPC_SLICE_START_PTR(*k), RETRY_AFTER_KEY, sizeof RETRY_AFTER_KEY - 1) != 0)
            continue;
        if (len == 0 || len > 12)
            return -1;
        for (j = 0; j < len; j++) {
            if (p[j] < '0' || p[j] > '9')
                return -1;
            ms = ms * 10 + (p[j] - '0');
        }
        return ms;
    }
    return -1;
}

/* Turns a call's final status into the result: 0 for OK, else the library code with the server's
 * message (or, when this handle cancelled the call, "cancelled"), and the retry hint. */
static int status_result(fractal_client *c, grpc_status_code status, grpc_slice details,
                         const grpc_metadata_array *initial_md, const grpc_metadata_array *trailing_md,
                         attempt_info *info)
{
    int err;

    if (status == GRPC_STATUS_OK)
        return 0;
    err = fr_error_from_status((int)status);
    if (err == FRACTAL_ECANCELLED && is_cancelled(c))
        return client_error(c, err, "cancelled");
    /* A trailers-only reply may land in either array, depending on the transport. */
    info->retry_after_ms = retry_after_from(trailing_md);
    if (info->retry_after_ms < 0)
        info->retry_after_ms = retry_after_from(initial_md);
    if (GRPC_SLICE_LENGTH(details) > 0)
        return client_error(c, err, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                            (const char *)GRPC_SLICE_START_PTR(details));
    return client_error(c, err, "%s (gRPC status %d)", fractal_strerror(err), (int)status);
}

static grpc_byte_buffer *buffer_from(grpc_slice payload)
{
    return grpc_raw_byte_buffer_create(&payload, 1); /* takes its own reference */
}

/* Unpacks a received message as desc into *out. */
static int unpack(ProtobufCMessage **out, fractal_client *c, grpc_byte_buffer *bb,
                  const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader reader;
    grpc_slice payload;

    *out = NULL;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return client_error(c, FRACTAL_EPROTOCOL, "cannot read the reply (bad compression?)");
    payload = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *out = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(payload), GRPC_SLICE_START_PTR(payload));
    grpc_slice_unref(payload);
    if (*out == NULL)
        return client_error(c, FRACTAL_EPROTOCOL, "reply of %zu bytes is not a valid %s",
                            grpc_byte_buffer_length(bb), desc->name);
    return 0;
}

/* One unary attempt: a single batch of six ops, then the status. */
static int unary_attempt(ProtobufCMessage **out, fractal_client *c, enum fr_method method,
                         grpc_slice payload, const ProtobufCMessageDescriptor *resp_desc,
                         gpr_timespec deadline, attempt_info *info)
{
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    int err = 0;

    *out = NULL;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    send_bb = buffer_from(payload);
    if ((err = call_create(&call, c, method, deadline)) < 0)
        goto done;

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->auth_value) {
        /* The token rides in each call's initial metadata; the entry lives as long as the client. */
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &c->auth_md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    /* With RECV_STATUS in the batch the event always succeeds; the outcome is in the status. */
    if (run_batch(c, call, ops, 6) < 0) {
        err = FRACTAL_EINTERNAL;
        goto done;
    }
    if ((err = status_result(c, status, details, &initial_md, &trailing_md, info)) < 0)
        goto done;
    if (recv_bb == NULL) {
        err = client_error(c, FRACTAL_EPROTOCOL, "server sent OK without a reply message");
        goto done;
    }
    err = unpack(out, c, recv_bb, resp_desc);
done:
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    call_release(c, call);
    return err;
}

/* One server-streaming attempt: send the request, read events until the end of the stream, then
 * the status. A handler failure cancels the call and is what the attempt returns. */
static int stream_attempt(fractal_client *c, enum fr_method method, grpc_slice payload,
                          fr_stream_handler *h, gpr_timespec deadline, attempt_info *info)
{
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[4];
    int err = 0, local_err = 0, ok;

    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    send_bb = buffer_from(payload);
    if ((err = call_create(&call, c, method, deadline)) < 0)
        goto done;

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->auth_value) {
        /* The token rides in each call's initial metadata; the entry lives as long as the client. */
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &c->auth_md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    /* A failed batch (the server refused at once, or the connection failed) still ends with a
     * status, so go on to read it. */
    if ((ok = run_batch(c, call, ops, 4)) < 0) {
        err = FRACTAL_EINTERNAL;
        goto done;
    }
    while (ok) {
        ProtobufCMessage *msg = NULL;
        int keep = 0;

        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &recv_bb;
        if ((ok = run_batch(c, call, ops, 1)) < 0) {
            /* The call is in an unknown state: cancel it, so that the status below comes. */
            local_err = FRACTAL_EINTERNAL;
            grpc_call_cancel(call, NULL);
            break;
        }
        if (!ok || recv_bb == NULL)
            break; /* end of stream, or the call failed: the status says which */
        local_err = unpack(&msg, c, recv_bb, &fractal__v1__render_event__descriptor);
        grpc_byte_buffer_destroy(recv_bb);
        recv_bb = NULL;
        if (local_err == 0)
            local_err = h->event(h->ctx, (Fractal__V1__RenderEvent *)msg, &keep);
        if (msg && !keep)
            protobuf_c_message_free_unpacked(msg, NULL);
        if (local_err < 0) {
            grpc_call_cancel(call, NULL);
            break;
        }
    }
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    if (run_batch(c, call, ops, 1) < 0) {
        err = local_err < 0 ? local_err : FRACTAL_EINTERNAL;
        goto done;
    }
    /* The handler's failure is the real cause; the CANCELLED status it led to is not news. */
    if (local_err < 0) {
        err = local_err;
        goto done;
    }
    if ((err = status_result(c, status, details, &initial_md, &trailing_md, info)) < 0)
        goto done;
    if (h->finish)
        err = h->finish(h->ctx);
done:
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    call_release(c, call);
    return err;
}

/* The wait before attempt `attempt` + 1: the server's hint (capped), else exponential backoff from
 * retry_initial_ms with "equal jitter" (uniform in [half, whole]), capped at retry_max_ms. */
static uint32_t retry_wait(fractal_client *c, unsigned attempt, int64_t hint_ms)
{
    uint64_t base = c->retry_initial_ms, x;

    if (hint_ms >= 0)
        return hint_ms > (int64_t)c->retry_max_ms ? c->retry_max_ms : (uint32_t)hint_ms;
    while (--attempt > 0 && base < c->retry_max_ms)
        base *= 2;
    if (base > c->retry_max_ms)
        base = c->retry_max_ms;
    x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->rng = x;
    return (uint32_t)(base / 2 + x % (base - base / 2 + 1));
}

/* Whether a failed attempt may be repeated: the server was unavailable, or over its budget and
 * said when to come back. Without the hint, RESOURCE_EXHAUSTED is a request over a fixed limit
 * (or a reply over the receive limit), which would fail again. */
static int retryable(int err, const attempt_info *info)
{
    return err == FRACTAL_EUNAVAILABLE || (err == FRACTAL_ERESOURCE_EXHAUSTED && info->retry_after_ms >= 0);
}

/* Decides after a failed attempt whether to try again, and waits if so. Returns 1 to retry, 0 to
 * give up with the attempt's error (message appended with the count when retries were made), or
 * FRACTAL_ECANCELLED when cancelled during the wait. */
static int retry_decide(fractal_client *c, int err, unsigned attempt, const attempt_info *info,
                        gpr_timespec deadline)
{
    uint32_t wait;
    size_t len;
    int e;

    if (retryable(err, info) && attempt < c->max_attempts) {
        wait = retry_wait(c, attempt, info->retry_after_ms);
        /* Never wait past the deadline: a retry that cannot finish in time is not made. */
        if (gpr_time_cmp(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait, GPR_TIMESPAN)),
                         deadline) < 0) {
            if ((e = fr_sleep(c, wait)) < 0)
                return e;
            return 1;
        }
    }
    if (attempt > 1 && err != FRACTAL_ECANCELLED) {
        len = strlen(c->error);
        snprintf(c->error + len, sizeof c->error - len, " (after %u attempts)", attempt);
    }
    return 0;
}

static grpc_slice pack(const ProtobufCMessage *req)
{
    grpc_slice payload = grpc_slice_malloc(protobuf_c_message_get_packed_size(req));

    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(payload));
    return payload;
}

int fr_call_unary(ProtobufCMessage **out, fractal_client *c, enum fr_method method,
                  const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc, int retry)
{
    grpc_slice payload = pack(req);
    gpr_timespec deadline = call_deadline(c);
    attempt_info info;
    unsigned attempt;
    int err, again;

    fr_op_begin(c);
    for (attempt = 1;; attempt++) {
        info.retry_after_ms = -1;
        err = unary_attempt(out, c, method, payload, resp_desc, deadline, &info);
        if (err == 0 || !retry)
            break;
        if ((again = retry_decide(c, err, attempt, &info, deadline)) <= 0) {
            err = again < 0 ? again : err;
            break;
        }
    }
    fr_op_end(c);
    grpc_slice_unref(payload);
    return err;
}

int fr_call_stream(fractal_client *c, enum fr_method method, const ProtobufCMessage *req,
                   fr_stream_handler *h, int retry)
{
    grpc_slice payload = pack(req);
    gpr_timespec deadline = call_deadline(c);
    attempt_info info;
    unsigned attempt;
    int err, again;

    fr_op_begin(c);
    h->committed = 0;
    for (attempt = 1;; attempt++) {
        info.retry_after_ms = -1;
        if (attempt > 1 && h->reset)
            h->reset(h->ctx);
        err = stream_attempt(c, method, payload, h, deadline, &info);
        if (err == 0 || !retry || h->committed)
            break;
        if ((again = retry_decide(c, err, attempt, &info, deadline)) <= 0) {
            err = again < 0 ? again : err;
            break;
        }
    }
    fr_op_end(c);
    grpc_slice_unref(payload);
    return err;
}
