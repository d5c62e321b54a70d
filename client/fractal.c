/* fractal.c: libfractal's client handle and its calls (Render, ListDevices, Health/Check) over gRPC
 * C core with protobuf-c messages, the error table's functions, and atomic image files. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open, fsync, getpid */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"

#define ERROR_MAX 512

/* Method paths. Static: registered calls keep pointers to them for the channel's lifetime. */
static const char method_render[] = "/fractal.v1.Renderer/Render";
static const char method_list_devices[] = "/fractal.v1.Renderer/ListDevices";
static const char method_health_check[] = "/grpc.health.v1.Health/Check";

struct fractal_client {
    grpc_channel *channel;
    grpc_completion_queue *cq;   /* pluck queue of this handle; one thread at a time uses it */
    void *render;                /* registered-call handles */
    void *list_devices;
    void *health_check;
    uint32_t deadline_ms;
    char error[ERROR_MAX];
};

/* What fractal_render hands out: the public image first, then the reply it borrows from. */
typedef struct image_impl {
    fractal_image pub;
    Fractal__V1__RenderResponse *reply;
} image_impl;

typedef struct device_list_impl {
    fractal_device_list pub;
    fractal_device *devices;
    Fractal__V1__ListDevicesResponse *reply;
} device_list_impl;

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
static int error_from_status(grpc_status_code status)
{
    if (status == GRPC_STATUS_OK)
        return FRACTAL_OK;
#define ERROR_FROM_STATUS(name, value, grpc_status, text) \
    if ((grpc_status) >= 0 && (int)status == (grpc_status)) \
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

#define client_error(client, err, ...) fr_errorf((client)->error, sizeof (client)->error, (err), __VA_ARGS__)

const char *fractal_client_last_error(const fractal_client *client)
{
    return client ? client->error : "";
}

/* ---- client ---------------------------------------------------------------------------------- */

int fractal_client_options_init(fractal_client_options *opts, unsigned version)
{
    const fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;

    if (opts == NULL || version != FRACTAL_CLIENT_OPTIONS_VERSION)
        return FRACTAL_EINVAL;
    *opts = defaults;
    return 0;
}

int fractal_client_new(fractal_client **out, const char *target, const fractal_client_options *opts)
{
    const fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_client *c = NULL;
    grpc_channel_credentials *creds;
    grpc_arg args[2];
    grpc_channel_args channel_args;
    int err = 0;

    if (out == NULL)
        return FRACTAL_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (target == NULL || target[0] == '\0' || opts->version != FRACTAL_CLIENT_OPTIONS_VERSION ||
        opts->max_receive_bytes == 0 || opts->max_receive_bytes > INT_MAX)
        return FRACTAL_EINVAL;
    if ((c = calloc(1, sizeof *c)) == NULL)
        return FRACTAL_ENOMEM;
    c->deadline_ms = opts->deadline_ms;

    grpc_init();
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)opts->max_receive_bytes;
    args[1].type = GRPC_ARG_STRING;
    args[1].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[1].value.string = (char *)"libfractal/" FRACTAL_VERSION;
    channel_args.num_args = 2;
    channel_args.args = args;
    creds = grpc_insecure_credentials_create();
    c->channel = grpc_channel_create(target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (c->channel == NULL || c->cq == NULL) {
        err = FRACTAL_ENOMEM;
        goto done;
    }
    c->render = grpc_channel_register_call(c->channel, method_render, NULL, NULL);
    c->list_devices = grpc_channel_register_call(c->channel, method_list_devices, NULL, NULL);
    c->health_check = grpc_channel_register_call(c->channel, method_health_check, NULL, NULL);
    if (c->render == NULL || c->list_devices == NULL || c->health_check == NULL) {
        err = FRACTAL_ENOMEM;
        goto done;
    }
    *out = c;
    c = NULL;
done:
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
    free(client);
    grpc_shutdown();
}

/* ---- one unary call -------------------------------------------------------------------------- */

/* Makes one unary call: packs req, sends it with the handle's deadline, waits, checks the status
 * and unpacks the reply as resp_desc into *out (caller frees with protobuf_c_message_free_unpacked).
 * Returns 0, FRACTAL_ENOMEM, FRACTAL_EINTERNAL (gRPC refused to start the call), FRACTAL_EPROTOCOL,
 * or the code of the server's status; the message goes to the handle. */
static int unary_call(ProtobufCMessage **out, fractal_client *c, void *method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc)
{
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    grpc_byte_buffer_reader reader;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice(), payload;
    grpc_call_error call_err;
    grpc_op ops[6];
    grpc_event ev;
    gpr_timespec deadline;
    size_t len;
    int err = 0, tag;

    *out = NULL;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);

    len = protobuf_c_message_get_packed_size(req);
    payload = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(payload));
    send_bb = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);

    deadline = c->deadline_ms == 0
                   ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                   : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                  gpr_time_from_millis((int64_t)c->deadline_ms, GPR_TIMESPAN));
    call = grpc_channel_create_registered_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                               method, deadline, NULL);
    if (call == NULL) {
        err = client_error(c, FRACTAL_ENOMEM, "cannot create a gRPC call");
        goto done;
    }

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
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
    call_err = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (call_err != GRPC_CALL_OK) {
        err = client_error(c, FRACTAL_EINTERNAL, "gRPC refused the call: %s",
                           grpc_call_error_to_string(call_err));
        goto done;
    }
    /* With RECV_STATUS in the batch the event always succeeds; the outcome is in the status. */
    ev = grpc_completion_queue_pluck(c->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        err = client_error(c, FRACTAL_EINTERNAL, "gRPC completion queue failed");
        goto done;
    }
    if (status != GRPC_STATUS_OK) {
        err = error_from_status(status);
        if (GRPC_SLICE_LENGTH(details) > 0)
            client_error(c, err, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                         (const char *)GRPC_SLICE_START_PTR(details));
        else
            client_error(c, err, "%s (gRPC status %d)", fractal_strerror(err), (int)status);
        goto done;
    }
    if (recv_bb == NULL) {
        err = client_error(c, FRACTAL_EPROTOCOL, "server sent OK without a reply message");
        goto done;
    }
    if (!grpc_byte_buffer_reader_init(&reader, recv_bb)) {
        err = client_error(c, FRACTAL_EPROTOCOL, "cannot read the reply (bad compression?)");
        goto done;
    }
    payload = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *out = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(payload),
                                     GRPC_SLICE_START_PTR(payload));
    if (*out == NULL)
        err = client_error(c, FRACTAL_EPROTOCOL, "reply of %zu bytes is not a valid %s",
                           (size_t)GRPC_SLICE_LENGTH(payload), resp_desc->name);
    grpc_slice_unref(payload);
done:
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    if (call)
        grpc_call_unref(call);
    return err;
}

/* ---- render ---------------------------------------------------------------------------------- */

int fractal_render(fractal_image **out, fractal_client *client, const fractal_render_options *opts)
{
    const fractal_render_options defaults = FRACTAL_RENDER_OPTIONS_INIT;
    opts_wire *wire = NULL;
    ProtobufCMessage *msg = NULL;
    Fractal__V1__RenderResponse *reply;
    image_impl *img = NULL;
    const Fractal__V1__RenderStats *st;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_render: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if ((err = opts_check(opts, client->error, sizeof client->error)) < 0)
        return err;
    if ((wire = malloc(sizeof *wire)) == NULL)
        return client_error(client, FRACTAL_ENOMEM, "out of memory");
    opts_to_request(wire, opts);
    err = unary_call(&msg, client, client->render, &wire->req.base,
                     &fractal__v1__render_response__descriptor);
    free(wire);
    if (err < 0)
        return err;
    reply = (Fractal__V1__RenderResponse *)msg;

    /* Raw formats carry no header, so their size is the only check that the reply is whole. */
    if (reply->format == FRACTAL__V1__FORMAT__FORMAT_RAW_U32 ||
        reply->format == FRACTAL__V1__FORMAT__FORMAT_RAW_F32) {
        if ((uint64_t)reply->width * reply->height * 4 != reply->data.len) {
            err = client_error(client, FRACTAL_EPROTOCOL,
                               "raw image of %ux%u pixels arrived with %zu bytes, not %llu",
                               reply->width, reply->height, reply->data.len,
                               (unsigned long long)reply->width * reply->height * 4);
            goto done;
        }
    }
    if ((img = calloc(1, sizeof *img)) == NULL) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    img->reply = reply;
    img->pub.data = reply->data.data;
    img->pub.size = reply->data.len;
    img->pub.content_type = reply->content_type ? reply->content_type : "";
    img->pub.format = (fractal_format)reply->format;
    img->pub.width = reply->width;
    img->pub.height = reply->height;
    if ((st = reply->stats) != NULL) {
        img->pub.stats.iterations = st->iterations;
        img->pub.stats.samples = st->samples;
        img->pub.stats.queue_ms = st->queue_ms;
        img->pub.stats.compute_ms = st->compute_ms;
        img->pub.stats.encode_ms = st->encode_ms;
        img->pub.stats.total_ms = st->total_ms;
        img->pub.stats.precision = (fractal_precision)st->precision;
        img->pub.stats.tiles = st->tiles;
        img->pub.stats.n_devices = st->n_devices;
        img->pub.stats.devices = (const char *const *)st->devices;
    }
    *out = &img->pub;
    msg = NULL;
done:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_image_free(fractal_image *image)
{
    image_impl *img = (image_impl *)image;

    if (img == NULL)
        return;
    protobuf_c_message_free_unpacked(&img->reply->base, NULL);
    free(img);
}

/* Writes all of buf to fd, going on after short writes and EINTR. */
static int write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int fractal_image_save(const fractal_image *image, const char *path, char *err, size_t errlen)
{
    static atomic_uint counter; /* several threads may save at once */
    char *tmp = NULL;
    size_t tmp_len;
    int fd = -1, e = 0, attempt;

    if (image == NULL || path == NULL || path[0] == '\0')
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_image_save: no image or no path");
    tmp_len = strlen(path) + 48;
    if ((tmp = malloc(tmp_len)) == NULL)
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
    /* The temporary file sits next to the destination, so that rename() stays on one file system
     * and is atomic. open() with 0666 (not mkstemp's 0600) lets the umask decide the final mode,
     * as it would for any new file; O_EXCL plus pid and counter keep concurrent writers apart. */
    for (attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, tmp_len, "%s.tmp.%ld.%u", path, (long)getpid(),
                 (unsigned)atomic_fetch_add(&counter, 1u));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: cannot create a temporary file beside it: %s",
                      path, strerror(errno));
        goto done;
    }
    if (write_all(fd, image->data, image->size) < 0 || fsync(fd) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) < 0) {
        fd = -1;
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
done:
    if (fd >= 0)
        close(fd);
    if (e < 0 && tmp)
        unlink(tmp);
    free(tmp);
    return e;
}

int fractal_render_to_file(fractal_client *client, const fractal_render_options *opts, const char *path)
{
    fractal_image *image = NULL;
    int err;

    if (client == NULL)
        return FRACTAL_EINVAL;
    if (path == NULL || path[0] == '\0')
        return client_error(client, FRACTAL_EINVAL, "fractal_render_to_file: no path");
    if ((err = fractal_render(&image, client, opts)) < 0)
        return err;
    err = fractal_image_save(image, path, client->error, sizeof client->error);
    fractal_image_free(image);
    return err;
}

/* ---- devices --------------------------------------------------------------------------------- */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

int fractal_list_devices(fractal_device_list **out, fractal_client *client)
{
    Fractal__V1__ListDevicesRequest req = FRACTAL__V1__LIST_DEVICES_REQUEST__INIT;
    Fractal__V1__ListDevicesResponse *reply;
    ProtobufCMessage *msg = NULL;
    device_list_impl *list = NULL;
    size_t i;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_list_devices: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if ((err = unary_call(&msg, client, client->list_devices, &req.base,
                          &fractal__v1__list_devices_response__descriptor)) < 0)
        return err;
    reply = (Fractal__V1__ListDevicesResponse *)msg;
    if ((list = calloc(1, sizeof *list)) == NULL ||
        (reply->n_devices && (list->devices = calloc(reply->n_devices, sizeof *list->devices)) == NULL)) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < reply->n_devices; i++) {
        const Fractal__V1__Device *d = reply->devices[i];
        fractal_device *p = &list->devices[i];

        p->id = str_or_empty(d->id);
        p->name = str_or_empty(d->name);
        p->vendor = str_or_empty(d->vendor);
        p->platform = str_or_empty(d->platform);
        p->type = (fractal_device_type)d->type;
        p->engine = str_or_empty(d->engine);
        p->fp64 = d->fp64 != 0;
        p->compute_units = d->compute_units;
        p->memory_bytes = d->memory_bytes;
        p->enabled = d->enabled != 0;
        p->disabled_reason = str_or_empty(d->disabled_reason);
        p->status = str_or_empty(d->status);
        p->status_reason = str_or_empty(d->status_reason);
        p->giter_per_s = d->giter_per_s;
        p->tiles_done = d->tiles_done;
        p->iterations_done = d->iterations_done;
    }
    list->reply = reply;
    list->pub.count = reply->n_devices;
    list->pub.devices = list->devices;
    *out = &list->pub;
    list = NULL;
    msg = NULL;
done:
    if (list) {
        free(list->devices);
        free(list);
    }
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_device_list_free(fractal_device_list *list)
{
    device_list_impl *impl = (device_list_impl *)list;

    if (impl == NULL)
        return;
    protobuf_c_message_free_unpacked(&impl->reply->base, NULL);
    free(impl->devices);
    free(impl);
}

/* ---- health ---------------------------------------------------------------------------------- */

int fractal_health_check(fractal_health_status *out, fractal_client *client, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *reply;
    ProtobufCMessage *msg = NULL;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_health_check: out is NULL") : FRACTAL_EINVAL;
    *out = FRACTAL_HEALTH_UNKNOWN;
    req.service = (char *)(service ? service : ""); /* read only by the packer */
    if ((err = unary_call(&msg, client, client->health_check, &req.base,
                          &grpc__health__v1__health_check_response__descriptor)) < 0)
        return err;
    reply = (Grpc__Health__V1__HealthCheckResponse *)msg;
    switch (reply->status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        *out = FRACTAL_HEALTH_SERVING;
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        *out = FRACTAL_HEALTH_NOT_SERVING;
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        *out = FRACTAL_HEALTH_SERVICE_UNKNOWN;
        break;
    default:
        *out = FRACTAL_HEALTH_UNKNOWN;
        break;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
