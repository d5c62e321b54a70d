/* rpc.c: gRPC C core server: call lifecycle, the completion-queue thread, the render worker pool,
 * and the handlers of fractal.v1.Renderer and grpc.health.v1.Health. */
#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "render.h"
#include "request.h"

enum method_id {
    M_RENDER,
    M_RENDER_STREAM,
    M_SUBMIT_JOB,
    M_GET_JOB,
    M_FETCH_JOB_RESULT,
    M_CANCEL_JOB,
    M_LIST_JOBS,
    M_LIST_DEVICES,
    M_GET_STATS,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
    M_COUNT,
    M_UNKNOWN = M_COUNT, /* the catch-all for methods the server does not know */
};

/* Path and short name of each registered method. The Renderer paths are those protoc-c records in
 * fractal__v1__renderer__descriptor; they are spelled out because protoc-c does not record which
 * methods stream, and the table is the one place that says so. */
static const struct method_info {
    const char *path;
    const char *name;
    int implemented;
} methods[M_COUNT] = {
    [M_RENDER] = {"/fractal.v1.Renderer/Render", "Render", 1},
    [M_RENDER_STREAM] = {"/fractal.v1.Renderer/RenderStream", "RenderStream", 0},
    [M_SUBMIT_JOB] = {"/fractal.v1.Renderer/SubmitJob", "SubmitJob", 0},
    [M_GET_JOB] = {"/fractal.v1.Renderer/GetJob", "GetJob", 0},
    [M_FETCH_JOB_RESULT] = {"/fractal.v1.Renderer/FetchJobResult", "FetchJobResult", 0},
    [M_CANCEL_JOB] = {"/fractal.v1.Renderer/CancelJob", "CancelJob", 0},
    [M_LIST_JOBS] = {"/fractal.v1.Renderer/ListJobs", "ListJobs", 0},
    [M_LIST_DEVICES] = {"/fractal.v1.Renderer/ListDevices", "ListDevices", 1},
    [M_GET_STATS] = {"/fractal.v1.Renderer/GetStats", "GetStats", 0},
    [M_HEALTH_CHECK] = {"/grpc.health.v1.Health/Check", "Health.Check", 1},
    [M_HEALTH_WATCH] = {"/grpc.health.v1.Health/Watch", "Health.Watch", 0},
};

/* Services Health.Check reports SERVING for. */
static const char *const served_services[] = {"", "fractal.v1.Renderer"};

enum tag_kind { TAG_NEW, TAG_CLOSE, TAG_FINISH, TAG_SHUTDOWN };

struct call;

/* What the completion queue hands back: which event of which call. */
struct tag {
    enum tag_kind kind;
    struct call *call;
};

/* One accepted (or posted) call. Reference counted: one reference for the handler, one per
 * batch in flight; the last release frees everything. */
struct call {
    rpc_server *srv;
    enum method_id method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details;          /* catch-all calls only */
    grpc_byte_buffer *payload;
    struct tag tag_new, tag_close, tag_finish;
    atomic_int refs;
    atomic_int cancelled;               /* set when the client cancelled or the deadline passed */
    int close_cancelled;                /* RECV_CLOSE_ON_SERVER's out-parameter */
    grpc_byte_buffer *reply;
    double t_accept;
    /* Render calls, set on the CQ thread before the call is queued. */
    struct render_spec spec;
    int device_index;
    char summary[160];
    struct call *next;                  /* render queue link */
};

struct rpc_server {
    const struct config *cfg;
    engine_cpu *engine;
    struct devices *devs;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *handles[M_COUNT];
    pthread_t cq_thread;
    int cq_thread_started;
    atomic_int shutting_down;
    atomic_int live_calls;

    /* Render queue and workers. */
    pthread_mutex_t lock;
    pthread_cond_t work_ready;          /* a render was queued, or workers must stop */
    pthread_cond_t state_changed;       /* shutdown tag arrived, or live_calls dropped */
    struct call *queue_head, *queue_tail;
    unsigned queued;
    int stop_workers;
    int shutdown_done;
    pthread_t *workers;
    unsigned nworkers;
    struct tag tag_shutdown;
};

/* ---- status mapping: the one place server error codes become gRPC status codes ---- */

static grpc_status_code status_of(int err)
{
    switch (err) {
    case ERR_OK: return GRPC_STATUS_OK;
#define ERR_STATUS(name, value, grpc, text) case name: return (grpc_status_code)(grpc);
    ERR_MAP(ERR_STATUS)
#undef ERR_STATUS
    }
    return GRPC_STATUS_UNKNOWN;
}

/* ---- protobuf <-> byte buffer ---- */

static grpc_byte_buffer *pack_message(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(size);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Returns the decoded message (free with protobuf_c_message_free_unpacked) or NULL if the bytes
 * are not a valid message of that type. */
static ProtobufCMessage *unpack_message(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *m;
    grpc_slice s;

    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    s = grpc_byte_buffer_reader_readall(&reader);
    m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_reader_destroy(&reader);
    return m;
}

/* ---- call lifecycle ---- */

static struct call *call_new(rpc_server *srv, enum method_id method)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = srv;
    c->method = method;
    c->tag_new = (struct tag){TAG_NEW, c};
    c->tag_close = (struct tag){TAG_CLOSE, c};
    c->tag_finish = (struct tag){TAG_FINISH, c};
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, 0);
    grpc_metadata_array_init(&c->req_md);
    grpc_call_details_init(&c->details);
    atomic_fetch_add(&srv->live_calls, 1);
    return c;
}

static void call_release(struct call *c)
{
    rpc_server *srv = c->srv;

    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->call)
        grpc_call_unref(c->call);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    free(c);
    if (atomic_fetch_sub(&srv->live_calls, 1) == 1) {
        pthread_mutex_lock(&srv->lock);
        pthread_cond_broadcast(&srv->state_changed);
        pthread_mutex_unlock(&srv->lock);
    }
}

/* Posts a request for the next call of `method` (or the catch-all). Returns 0 or a negative code. */
static int post_request(rpc_server *srv, enum method_id method)
{
    struct call *c = call_new(srv, method);
    grpc_call_error e;

    if (!c)
        return ERR_NOMEM;
    if (method == M_UNKNOWN)
        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md, srv->cq, srv->cq,
                                     &c->tag_new);
    else
        e = grpc_server_request_registered_call(srv->server, srv->handles[method], &c->call,
                                                &c->deadline, &c->req_md, &c->payload, srv->cq, srv->cq,
                                                &c->tag_new);
    if (e != GRPC_CALL_OK) {
        log_at(LOG_ERROR, "rpc: cannot post a request for %s: %s",
               method == M_UNKNOWN ? "unknown methods" : methods[method].path, grpc_call_error_to_string(e));
        call_release(c);
        return ERR_INTERNAL;
    }
    return 0;
}

/* Starts a batch, taking a reference for it. A rejected batch is fatal for the call (GRPC_NOTES
 * pitfall 4): the call is cancelled so the client is not left waiting. */
static void start_batch(struct call *c, const grpc_op *ops, size_t n, struct tag *tag)
{
    grpc_call_error e;

    atomic_fetch_add(&c->refs, 1);
    e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        log_at(LOG_ERROR, "rpc: start_batch failed on %s: %s",
               c->method == M_UNKNOWN ? "catch-all" : methods[c->method].path, grpc_call_error_to_string(e));
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server could not send its reply", NULL);
        call_release(c);
    }
}

/* Sends the reply (may be NULL) and the final status in one batch; ends the handler's part. */
static void call_finish(struct call *c, int err, const char *message, grpc_byte_buffer *reply)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_slice details = grpc_slice_from_copied_string(message ? message : "");

    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (reply) {
        c->reply = reply;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status_of(err);
    ops[n].data.send_status_from_server.status_details = &details;
    n++;
    start_batch(c, ops, n, &c->tag_finish);
    /* Core does not retain the details slice past start_batch (GRPC_NOTES section 3). */
    grpc_slice_unref(details);
    call_release(c);
}

static void arm_close(struct call *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    start_batch(c, &op, 1, &c->tag_close);
}

static char *call_peer(struct call *c)
{
    return grpc_call_get_peer(c->call);
}

static void log_call(struct call *c, int err, const char *message, const char *extra)
{
    char *peer = call_peer(c);
    const char *name = c->method == M_UNKNOWN ? "unknown" : methods[c->method].name;

    log_at(err == 0 ? LOG_INFO : LOG_WARN, "rpc %s peer=%s status=%d%s%s%s%s ms=%.2f", name,
           peer ? peer : "?", (int)status_of(err), message && *message ? " error=\"" : "",
           message && *message ? message : "", message && *message ? "\"" : "", extra ? extra : "",
           render_now_ms() - c->t_accept);
    gpr_free(peer);
}

/* ---- handlers ---- */

static void handle_health_check(struct call *c)
{
    Grpc__Health__V1__HealthCheckRequest *req = NULL;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    char msg[256] = "";
    int err = ERR_NOT_FOUND, found = 0;

    if (c->payload)
        req = (Grpc__Health__V1__HealthCheckRequest *)unpack_message(
            &grpc__health__v1__health_check_request__descriptor, c->payload);
    if (!req) {
        snprintf(msg, sizeof(msg), "request is not a valid grpc.health.v1.HealthCheckRequest");
        err = ERR_INVALID;
        goto done;
    }
    for (size_t i = 0; i < sizeof(served_services) / sizeof(served_services[0]); i++)
        if (strcmp(req->service, served_services[i]) == 0)
            found = 1;
    if (!found) {
        snprintf(msg, sizeof(msg), "unknown service \"%.100s\"", req->service);
        goto done;
    }
    err = 0;
    resp.status = atomic_load(&c->srv->shutting_down)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
done:
    log_call(c, err, msg, NULL);
    call_finish(c, err, msg, err == 0 ? pack_message(&resp.base) : NULL);
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void handle_list_devices(struct call *c)
{
    struct devices *devs = c->srv->devs;
    Fractal__V1__ListDevicesResponse resp = FRACTAL__V1__LIST_DEVICES_RESPONSE__INIT;
    Fractal__V1__Device *items = calloc(devs->count ? devs->count : 1, sizeof(*items));
    Fractal__V1__Device **ptrs = calloc(devs->count ? devs->count : 1, sizeof(*ptrs));

    if (!items || !ptrs) {
        log_call(c, ERR_NOMEM, "out of memory", NULL);
        call_finish(c, ERR_NOMEM, "out of memory", NULL);
        goto done;
    }
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        Fractal__V1__Device *m = &items[i];
        fractal__v1__device__init(m);
        m->id = d->id;
        m->name = d->name;
        m->vendor = d->vendor;
        m->platform = d->platform;
        m->type = (Fractal__V1__DeviceType)d->type;
        m->engine = d->engine;
        m->fp64 = d->fp64;
        m->compute_units = d->compute_units;
        m->memory_bytes = d->memory_bytes;
        m->enabled = d->enabled;
        m->disabled_reason = d->disabled_reason;
        m->status = d->failed ? "failed" : "ok";
        m->status_reason = d->failed_reason;
        m->giter_per_s = d->giter_per_s;
        m->tiles_done = atomic_load(&d->tiles_done);
        m->iterations_done = atomic_load(&d->iterations_done);
        ptrs[i] = m;
    }
    resp.n_devices = devs->count;
    resp.devices = ptrs;
    log_call(c, 0, NULL, NULL);
    call_finish(c, 0, NULL, pack_message(&resp.base));
done:
    free(ptrs);
    free(items);
}

static void handle_unimplemented(struct call *c)
{
    char msg[200];

    if (c->method == M_UNKNOWN) {
        char *path = grpc_slice_to_c_string(c->details.method);
        snprintf(msg, sizeof(msg), "unknown method %.150s", path);
        gpr_free(path);
    } else
        snprintf(msg, sizeof(msg), "%s is not implemented yet by this fractald", methods[c->method].path);
    log_call(c, ERR_UNIMPLEMENTED, msg, NULL);
    call_finish(c, ERR_UNIMPLEMENTED, msg, NULL);
}

/* Validates a Render request on the CQ thread (cheap) and queues it for a worker, or answers at
 * once with the validation or admission status. */
static void handle_render_accept(struct call *c)
{
    rpc_server *srv = c->srv;
    Fractal__V1__RenderRequest *req = NULL;
    char msg[512] = "";
    int err;

    if (!c->payload) {
        err = ERR_INVALID;
        snprintf(msg, sizeof(msg), "missing request message");
        goto fail;
    }
    req = (Fractal__V1__RenderRequest *)unpack_message(&fractal__v1__render_request__descriptor, c->payload);
    if (!req) {
        err = ERR_INVALID;
        snprintf(msg, sizeof(msg), "request is not a valid fractal.v1.RenderRequest");
        goto fail;
    }
    if ((err = request_to_spec(&c->spec, &c->device_index, req, &srv->cfg->limits, srv->devs, msg,
                               sizeof(msg))) < 0)
        goto fail;
    protobuf_c_message_free_unpacked(&req->base, NULL);
    req = NULL;
    snprintf(c->summary, sizeof(c->summary), " %s %ux%u region=%u,%u,%ux%u max_iter=%u %s ss=%u fmt=%d",
             c->spec.fractal == SPEC_MANDELBROT ? "mandelbrot" : "julia", c->spec.width, c->spec.height,
             c->spec.region.x, c->spec.region.y, c->spec.region.width, c->spec.region.height,
             c->spec.max_iter, c->spec.precision == SPEC_FP64 ? "fp64" : "fp32", c->spec.supersample,
             (int)c->spec.format);

    pthread_mutex_lock(&srv->lock);
    if (srv->queued >= srv->cfg->queue_length + srv->nworkers) {
        pthread_mutex_unlock(&srv->lock);
        err = ERR_EXHAUSTED;
        snprintf(msg, sizeof(msg), "render queue is full (%u waiting); retry later", srv->queued);
        goto fail;
    }
    c->next = NULL;
    if (srv->queue_tail)
        srv->queue_tail->next = c;
    else
        srv->queue_head = c;
    srv->queue_tail = c;
    srv->queued++;
    pthread_cond_signal(&srv->work_ready);
    pthread_mutex_unlock(&srv->lock);
    return;

fail:
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
    log_call(c, err, msg, c->summary);
    call_finish(c, err, msg, NULL);
}

/* Collects the encoded image for a unary reply, refusing to grow past the message limit. */
struct reply_buffer {
    uint8_t *data;
    size_t len, cap, limit;
    char msg[256];
};

static int reply_sink(void *ctx, const void *data, size_t len)
{
    struct reply_buffer *b = ctx;

    if (b->len + len > b->limit) {
        snprintf(b->msg, sizeof(b->msg),
                 "the encoded image exceeds the %zu-byte message limit; use RenderStream, a region, "
                 "or a smaller image", b->limit);
        return ERR_EXHAUSTED;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        uint8_t *p;
        while (cap < b->len + len)
            cap *= 2;
        if (!(p = realloc(b->data, cap)))
            return ERR_NOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Runs on a render worker: computes, encodes and answers one queued Render call. */
static void run_render(struct call *c)
{
    rpc_server *srv = c->srv;
    struct device *dev = &srv->devs->list[c->device_index];
    struct reply_buffer buf = {0};
    struct render_stats st;
    char msg[512] = "", extra[512];
    char *json = NULL;
    double t_start = render_now_ms(), queue_ms = t_start - c->t_accept;
    grpc_byte_buffer *reply = NULL;
    int err;

    /* Reserve room for the RenderResponse around the image bytes. */
    buf.limit = srv->cfg->limits.max_message_bytes > 4096 ? srv->cfg->limits.max_message_bytes - 4096 : 0;
    if (atomic_load(&c->cancelled)) {
        err = ERR_CANCELLED;
        snprintf(msg, sizeof(msg), "cancelled while queued");
        goto done;
    }
    if ((err = request_json_from_spec(&json, &c->spec)) < 0) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }
    {
        struct render_cpu cpu = {srv->engine, dev};
        struct render_io io = {render_compute_cpu, &cpu, reply_sink, &buf, NULL, NULL, &c->cancelled, 0};
        err = render_run(&st, &io, &c->spec, json, msg, sizeof(msg));
    }
    if (err < 0) {
        if (buf.msg[0])
            snprintf(msg, sizeof(msg), "%s", buf.msg);
        goto done;
    }
    {
        Fractal__V1__RenderResponse resp = FRACTAL__V1__RENDER_RESPONSE__INIT;
        Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
        char *device_ids[1] = {dev->id};

        stats.iterations = st.iterations;
        stats.queue_ms = queue_ms;
        stats.compute_ms = st.compute_ms;
        stats.encode_ms = st.encode_ms;
        stats.total_ms = render_now_ms() - c->t_accept;
        stats.n_devices = 1;
        stats.devices = device_ids;
        stats.precision = (Fractal__V1__Precision)c->spec.precision;
        stats.tiles = st.tiles;
        stats.samples = st.samples;
        resp.data.data = buf.data;
        resp.data.len = buf.len;
        resp.content_type = (char *)encode_content_type(c->spec.format);
        resp.width = c->spec.region.width;
        resp.height = c->spec.region.height;
        resp.stats = &stats;
        resp.format = (Fractal__V1__Format)c->spec.format;
        reply = pack_message(&resp.base);
        snprintf(extra, sizeof(extra), "%s device=%s queue_ms=%.2f compute_ms=%.2f encode_ms=%.2f bytes=%zu iter=%llu",
                 c->summary, dev->id, queue_ms, st.compute_ms, st.encode_ms, buf.len,
                 (unsigned long long)st.iterations);
    }
done:
    if (err < 0) {
        /* A client that cancelled, or whose deadline passed, has its status from core already. */
        if (err == ERR_CANCELLED && atomic_load(&c->cancelled) && !msg[0])
            snprintf(msg, sizeof(msg), "cancelled");
        snprintf(extra, sizeof(extra), "%s", c->summary);
    }
    log_call(c, err, msg, extra);
    call_finish(c, err, msg, reply);
    free(json);
    free(buf.data);
}

static void *render_worker(void *arg)
{
    rpc_server *srv = arg;

    for (;;) {
        struct call *c;
        pthread_mutex_lock(&srv->lock);
        while (!srv->queue_head && !srv->stop_workers)
            pthread_cond_wait(&srv->work_ready, &srv->lock);
        if (!srv->queue_head) {
            pthread_mutex_unlock(&srv->lock);
            return NULL;
        }
        c = srv->queue_head;
        srv->queue_head = c->next;
        if (!srv->queue_head)
            srv->queue_tail = NULL;
        pthread_mutex_unlock(&srv->lock);
        run_render(c);
        pthread_mutex_lock(&srv->lock);
        srv->queued--;
        pthread_mutex_unlock(&srv->lock);
    }
}

/* ---- the completion-queue thread ---- */

static void on_new_call(struct call *c, int ok)
{
    rpc_server *srv = c->srv;

    if (!ok) {
        /* The server is shutting down: the posted request ends unused. */
        call_release(c);
        return;
    }
    if (!atomic_load(&srv->shutting_down))
        post_request(srv, c->method);
    c->t_accept = render_now_ms();
    arm_close(c);
    if (c->method == M_UNKNOWN || !methods[c->method].implemented) {
        handle_unimplemented(c);
        return;
    }
    switch (c->method) {
    case M_HEALTH_CHECK: handle_health_check(c); break;
    case M_LIST_DEVICES: handle_list_devices(c); break;
    case M_RENDER:
        if (atomic_load(&srv->shutting_down)) {
            log_call(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
            call_finish(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
        } else {
            handle_render_accept(c);
        }
        break;
    default: handle_unimplemented(c); break;
    }
}

static void *cq_loop(void *arg)
{
    rpc_server *srv = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        struct tag *tag;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag = ev.tag;
        switch (tag->kind) {
        case TAG_NEW: on_new_call(tag->call, ev.success); break;
        case TAG_CLOSE:
            if (tag->call->close_cancelled)
                atomic_store(&tag->call->cancelled, 1);
            call_release(tag->call);
            break;
        case TAG_FINISH: call_release(tag->call); break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->lock);
            srv->shutdown_done = 1;
            pthread_cond_broadcast(&srv->state_changed);
            pthread_mutex_unlock(&srv->lock);
            break;
        }
    }
}

/* ---- start and stop ---- */

int rpc_server_start(rpc_server **out, int *port, const struct config *cfg, engine_cpu *engine,
                     struct devices *devs, char *msg, size_t msglen)
{
    rpc_server *srv = calloc(1, sizeof(*srv));
    grpc_arg args[3];
    grpc_channel_args channel_args = {3, args};
    grpc_server_credentials *creds;
    int err = ERR_INTERNAL;

    if (!srv) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    srv->cfg = cfg;
    srv->engine = engine;
    srv->devs = devs;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->work_ready, NULL);
    pthread_cond_init(&srv->state_changed, NULL);
    srv->tag_shutdown = (struct tag){TAG_SHUTDOWN, NULL};
    grpc_init();

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)cfg->limits.max_request_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)cfg->limits.max_message_bytes;
    /* Off, so a second server on a taken port fails to bind instead of silently sharing it
     * (GRPC_NOTES pitfall 7). */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    srv->server = grpc_server_create(&channel_args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (int m = 0; m < M_COUNT; m++) {
        srv->handles[m] = grpc_server_register_method(srv->server, methods[m].path, NULL,
                                                      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!srv->handles[m]) {
            snprintf(msg, msglen, "cannot register method %s", methods[m].path);
            goto fail;
        }
    }
    creds = grpc_insecure_server_credentials_create();
    *port = grpc_server_add_http2_port(srv->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (*port == 0) {
        snprintf(msg, msglen, "cannot listen on %s (address in use or malformed)", cfg->listen);
        err = ERR_UNAVAILABLE;
        goto fail;
    }
    grpc_server_start(srv->server);

    srv->nworkers = cfg->render_workers;
    srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
    if (!srv->workers) {
        err = ERR_NOMEM;
        snprintf(msg, msglen, "out of memory");
        goto fail_started;
    }
    for (unsigned i = 0; i < srv->nworkers; i++)
        if (pthread_create(&srv->workers[i], NULL, render_worker, srv) != 0) {
            srv->nworkers = i;
            snprintf(msg, msglen, "cannot start render worker %u", i);
            goto fail_started;
        }
    for (int m = 0; m <= M_UNKNOWN; m++)
        if ((err = post_request(srv, (enum method_id)m)) < 0) {
            snprintf(msg, msglen, "cannot post requests");
            goto fail_started;
        }
    if (pthread_create(&srv->cq_thread, NULL, cq_loop, srv) != 0) {
        snprintf(msg, msglen, "cannot start the completion-queue thread");
        err = ERR_INTERNAL;
        goto fail_started;
    }
    srv->cq_thread_started = 1;
    *out = srv;
    return 0;

fail_started:
    /* The shutdown path knows how to unwind a started server, threads or not. */
    rpc_server_stop(srv, 0);
    return err < 0 ? err : ERR_INTERNAL;
fail:
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(srv->cq);
    grpc_shutdown();
    free(srv);
    return err;
}

static void wait_until(rpc_server *srv, int *flag_done, atomic_int *count_zero, unsigned timeout_ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->lock);
    while ((flag_done && !*flag_done) || (count_zero && atomic_load(count_zero) != 0))
        if (pthread_cond_timedwait(&srv->state_changed, &srv->lock, &until) != 0)
            break;
    pthread_mutex_unlock(&srv->lock);
}

void rpc_server_stop(rpc_server *srv, unsigned grace_ms)
{
    if (!srv)
        return;
    atomic_store(&srv->shutting_down, 1);
    if (!srv->cq_thread_started) {
        /* Nothing drains the queue yet: do it here (only on a failed start). */
        srv->cq_thread_started = pthread_create(&srv->cq_thread, NULL, cq_loop, srv) == 0;
    }
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->tag_shutdown);
    wait_until(srv, &srv->shutdown_done, NULL, grace_ms);
    if (!srv->shutdown_done) {
        log_at(LOG_WARN, "rpc: grace period of %u ms over; cancelling the calls still in flight", grace_ms);
        grpc_server_cancel_all_calls(srv->server);
    }
    wait_until(srv, &srv->shutdown_done, &srv->live_calls, 1u << 30);

    pthread_mutex_lock(&srv->lock);
    srv->stop_workers = 1;
    pthread_cond_broadcast(&srv->work_ready);
    pthread_mutex_unlock(&srv->lock);
    for (unsigned i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    free(srv->workers);

    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->cq_thread_started)
        pthread_join(srv->cq_thread, NULL);
    grpc_completion_queue_destroy(srv->cq);
    grpc_shutdown();
    pthread_cond_destroy(&srv->state_changed);
    pthread_cond_destroy(&srv->work_ready);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
