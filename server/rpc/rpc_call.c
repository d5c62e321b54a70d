/* rpc_call.c: what a handler answers with: the call's lifecycle and reference count, status
 * mapping, packing, unary replies and stream writes with back-pressure, the per-call log line, and
 * the bounded queues that hand calls to the workers. Knows no handler. */
#include "rpc_call.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "proto_wire.h"

/* Paths and names. The Renderer paths are those protoc-c records in
 * fractal__v1__renderer__descriptor; they are spelled out because protoc-c does not record which
 * methods stream, and the handlers (rpc_server.c's table) are the one place that knows. */
const struct method_name rpc_method_names[M_COUNT] = {
    [M_RENDER] = {"/fractal.v1.Renderer/Render", "Render"},
    [M_RENDER_STREAM] = {"/fractal.v1.Renderer/RenderStream", "RenderStream"},
    [M_SUBMIT_JOB] = {"/fractal.v1.Renderer/SubmitJob", "SubmitJob"},
    [M_GET_JOB] = {"/fractal.v1.Renderer/GetJob", "GetJob"},
    [M_FETCH_JOB_RESULT] = {"/fractal.v1.Renderer/FetchJobResult", "FetchJobResult"},
    [M_CANCEL_JOB] = {"/fractal.v1.Renderer/CancelJob", "CancelJob"},
    [M_LIST_JOBS] = {"/fractal.v1.Renderer/ListJobs", "ListJobs"},
    [M_LIST_DEVICES] = {"/fractal.v1.Renderer/ListDevices", "ListDevices"},
    [M_GET_STATS] = {"/fractal.v1.Renderer/GetStats", "GetStats"},
    [M_HEALTH_CHECK] = {"/grpc.health.v1.Health/Check", "Health.Check"},
    [M_HEALTH_WATCH] = {"/grpc.health.v1.Health/Watch", "Health.Watch"},
    [M_REFLECTION] = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "ServerReflectionInfo"},
    [M_REFLECTION_ALPHA] = {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                            "v1alpha.ServerReflectionInfo"},
};

/* ---- primitives ---- */

grpc_status_code rpc_status_of(int err)
{
    switch (err) {
    case ERR_OK: return GRPC_STATUS_OK;
#define ERR_STATUS(name, value, grpc, text) case name: return (grpc_status_code)(grpc);
    ERR_MAP(ERR_STATUS)
#undef ERR_STATUS
    }
    return GRPC_STATUS_UNKNOWN;
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(size);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, char *msg,
                             size_t msglen)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *m = NULL;
    char path[128];
    grpc_slice s;

    if (!bb || !grpc_byte_buffer_reader_init(&reader, bb)) {
        snprintf(msg, msglen, "missing request message");
        return NULL;
    }
    s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    if (!m) {
        snprintf(msg, msglen, "request is not a valid %s", desc->name);
    } else if (pwire_find_nul_string(desc, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), path, sizeof(path)) != 0) {
        /* protobuf-c would hand the string over cut at the NUL ("cpu\0evil" as "cpu"): such a
         * value names no device, palette or job, and is refused whole. */
        snprintf(msg, msglen, "%s must not contain a NUL byte", path);
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
    }
    grpc_slice_unref(s);
    return m;
}

/* Condition variables here time out on the monotonic clock, so a wall-clock jump neither
 * stretches nor cuts a grace period or a write timeout. */
void rpc_init_monotonic_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

struct call *rpc_call_new(rpc_server *srv, enum method_id method)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = srv;
    c->method = method;
    c->tag_new = (struct tag){TAG_NEW, c};
    c->tag_close = (struct tag){TAG_CLOSE, c};
    c->tag_finish = (struct tag){TAG_FINISH, c};
    c->tag_write = (struct tag){TAG_WRITE, c};
    c->tag_read = (struct tag){TAG_READ, c};
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, 0);
    pthread_mutex_init(&c->lock, NULL);
    rpc_init_monotonic_cond(&c->write_done);
    grpc_metadata_array_init(&c->req_md);
    grpc_call_details_init(&c->details);
    atomic_fetch_add(&srv->live_calls, 1);
    return c;
}

void rpc_call_release(struct call *c)
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
    if (c->write_bb)
        grpc_byte_buffer_destroy(c->write_bb);
    if (c->read_bb)
        grpc_byte_buffer_destroy(c->read_bb);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    render_spec_dispose(&c->spec);
    free(c->cache_key);
    pthread_cond_destroy(&c->write_done);
    pthread_mutex_destroy(&c->lock);
    free(c);
    if (atomic_fetch_sub(&srv->live_calls, 1) == 1) {
        pthread_mutex_lock(&srv->lock);
        pthread_cond_broadcast(&srv->state_changed);
        pthread_mutex_unlock(&srv->lock);
    }
}

/* Starts a batch, taking a reference for it. A rejected batch (grpc core refuses a second
 * SEND_MESSAGE while one is in flight, or any op after the status) is fatal for the call: it is
 * cancelled so the client is not left waiting. Returns 0 or ERR_INTERNAL. */
static int start_batch(struct call *c, const grpc_op *ops, size_t n, struct tag *tag)
{
    grpc_call_error e;

    atomic_fetch_add(&c->refs, 1);
    e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        log_at(LOG_ERROR, "rpc: start_batch failed on %s: %s",
               c->method == M_UNKNOWN ? "catch-all" : rpc_method_names[c->method].path, grpc_call_error_to_string(e));
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server could not send its reply", NULL);
        atomic_store(&c->cancelled, 1);
        rpc_call_release(c);
        return ERR_INTERNAL;
    }
    return 0;
}

/* Waits (c->lock held) until no write is in flight. A reader that takes nothing for the stream
 * write timeout has its call cancelled, which completes the stuck write: no worker waits on a
 * stalled client for longer than that. */
static void wait_write_done(struct call *c)
{
    unsigned timeout_ms = c->srv->cfg->stream_write_timeout_ms;
    struct timespec until;
    bool cancelled = false;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (c->write_pending) {
        if (pthread_cond_timedwait(&c->write_done, &c->lock, &until) != ETIMEDOUT || cancelled)
            continue;
        cancelled = true;
        log_at(LOG_WARN, "rpc %s: the client took nothing for %u ms; cancelling the stream",
               c->method == M_UNKNOWN ? "unknown" : rpc_method_names[c->method].name, timeout_ms);
        atomic_store(&c->cancelled, 1);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                     "stream stalled: the client read nothing within the write timeout", NULL);
    }
}

void rpc_finish(struct call *c, int err, const char *message, grpc_byte_buffer *reply, unsigned retry_after_ms)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_slice details = grpc_slice_from_copied_string(message ? message : "");

    memset(ops, 0, sizeof(ops));
    pthread_mutex_lock(&c->lock);
    wait_write_done(c);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    if (reply) {
        c->reply = reply;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = rpc_status_of(err);
    ops[n].data.send_status_from_server.status_details = &details;
    if (retry_after_ms > 0) {
        snprintf(c->retry_after, sizeof(c->retry_after), "%u", retry_after_ms);
        c->trailing.key = grpc_slice_from_static_string("retry-after-ms");
        c->trailing.value = grpc_slice_from_static_string(c->retry_after);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailing;
    }
    n++;
    c->finished = true;
    start_batch(c, ops, n, &c->tag_finish);
    pthread_mutex_unlock(&c->lock);
    /* grpc core copies the status details during start_batch and keeps no reference. */
    grpc_slice_unref(details);
    rpc_call_release(c);
}

void rpc_finish_when_idle(struct call *c, int err, const char *message)
{
    pthread_mutex_lock(&c->lock);
    if (c->write_pending) {
        c->deferred_finish = true;
        c->deferred_err = err;
        c->deferred_msg = message;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    pthread_mutex_unlock(&c->lock);
    rpc_finish(c, err, message, NULL, 0);
}

/* Starts the write of m; c->lock held, no write in flight. */
static int start_write(struct call *c, const ProtobufCMessage *m)
{
    grpc_op ops[2];
    size_t n = 0;

    if (c->write_failed || c->finished || atomic_load(&c->cancelled))
        return ERR_CANCELLED;
    memset(ops, 0, sizeof(ops));
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    c->write_bb = rpc_pack(m);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->write_bb;
    n++;
    c->write_pending = true;
    if (start_batch(c, ops, n, &c->tag_write) < 0) {
        c->write_pending = false;
        c->write_failed = true;
        grpc_byte_buffer_destroy(c->write_bb);
        c->write_bb = NULL;
        return ERR_CANCELLED;
    }
    return 0;
}

int rpc_stream_send(struct call *c, const ProtobufCMessage *m)
{
    int err;

    pthread_mutex_lock(&c->lock);
    wait_write_done(c);
    err = start_write(c, m);
    pthread_mutex_unlock(&c->lock);
    return err;
}

int rpc_stream_send_nowait(struct call *c, const ProtobufCMessage *m)
{
    int err = ERR_EXHAUSTED;

    pthread_mutex_lock(&c->lock);
    if (!c->write_pending)
        err = start_write(c, m);
    pthread_mutex_unlock(&c->lock);
    return err;
}

void rpc_call_write_done(struct call *c, int ok)
{
    bool finish;

    pthread_mutex_lock(&c->lock);
    c->write_pending = false;
    if (!ok) {
        /* The peer is gone or the call was cancelled: the stream cannot go on. */
        c->write_failed = true;
        atomic_store(&c->cancelled, 1);
    }
    if (c->write_bb) {
        grpc_byte_buffer_destroy(c->write_bb);
        c->write_bb = NULL;
    }
    pthread_cond_broadcast(&c->write_done);
    finish = c->deferred_finish;
    c->deferred_finish = false;
    pthread_mutex_unlock(&c->lock);
    if (finish)
        rpc_finish(c, c->deferred_err, c->deferred_msg, NULL, 0);
    rpc_call_release(c);
}

void rpc_call_arm_close(struct call *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    start_batch(c, &op, 1, &c->tag_close);
}

void rpc_log_call(struct call *c, int err, const char *message, const char *extra)
{
    const char *name = c->method == M_UNKNOWN ? "unknown" : rpc_method_names[c->method].name;
    int code = (int)rpc_status_of(err);
    int level = err == 0 ? LOG_INFO : LOG_WARN;
    char fields[1536] = "";
    char *peer;

    if (code >= 0 && code <= 16)
        atomic_fetch_add(&c->srv->answered[c->method][code], 1);
    {
        double ms = render_now_ms() - c->t_accept;
        atomic_fetch_add(&c->srv->latency[c->method][latency_bucket(ms / 1000.0)], 1);
        atomic_fetch_add(&c->srv->latency_us_sum[c->method], (uint_least64_t)(ms * 1000.0));
    }
    /* The peer string is allocated: not for a line that is not written. */
    if (level < log_min_level)
        return;
    peer = c->peer[0] ? NULL : grpc_call_get_peer(c->call);
    log_kv(fields, sizeof(fields), "method", name);
    log_kv(fields, sizeof(fields), "peer", c->peer[0] ? c->peer : peer ? peer : "?");
    log_kv(fields, sizeof(fields), "auth", c->auth ? c->auth : "none");
    /* A name from the token file or the certificate, never the token. */
    if (c->client_id[0])
        log_kv(fields, sizeof(fields), "client", c->client_id);
    log_kv(fields, sizeof(fields), "status", err_status_name(code));
    if (c->job_id[0])
        log_kv(fields, sizeof(fields), "job", c->job_id);
    if (message && *message)
        log_kv(fields, sizeof(fields), "error", message);
    if (extra && strlen(fields) + strlen(extra) < sizeof(fields))
        strcat(fields, extra);
    log_kvf(fields, sizeof(fields), "ms", "%.2f", render_now_ms() - c->t_accept);
    log_event(level, "rpc", fields);
    gpr_free(peer);
}

void rpc_spec_summary(char *out, size_t cap, const struct render_spec *spec)
{
    out[0] = '\0';
    log_kv(out, cap, "fractal", spec->fractal == SPEC_MANDELBROT ? "mandelbrot" : "julia");
    log_kvf(out, cap, "size", "%ux%u", spec->width, spec->height);
    log_kvf(out, cap, "region", "%u,%u,%ux%u", spec->region.x, spec->region.y, spec->region.width,
            spec->region.height);
    log_kvf(out, cap, "max_iter", "%u", spec->max_iter);
    log_kv(out, cap, "precision", spec_precision_name(spec->precision));
    log_kvf(out, cap, "ss", "%u", spec->supersample);
    log_kv(out, cap, "fmt", spec_format_name(spec->format));
    if (spec->device[0])
        log_kv(out, cap, "device", spec->device);
}

size_t rpc_device_ids(char **ids, size_t max, const struct devices *devs, uint64_t used)
{
    size_t n = 0;

    for (size_t i = 0; i < devs->count && i < 64 && n < max; i++)
        if (used & ((uint64_t)1 << i))
            ids[n++] = devs->list[i].id;
    return n;
}

/* ---- render workers ---- */

static void enqueue(struct work_queue *q, struct call *c)
{
    c->queued_on = q;
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->queued++;
    pthread_cond_signal(&q->ready);
}

struct call *rpc_queue_take(struct work_queue *q)
{
    struct call *c = q->head;

    q->head = c->next;
    if (!q->head)
        q->tail = NULL;
    c->queued_on = NULL;
    q->queued--;
    q->running++;
    return c;
}

/* How long a refused client still counts as active: it is waiting to come back (the retry hint
 * is at most 10 s), and while it does the others are held to their shares. */
#define CLIENT_ACTIVE_MS 10000.0
/* Entries kept at most; past it a new client is admitted without a share of its own (the global
 * limits still hold), so a flood of addresses cannot grow the list without bound. */
#define CLIENTS_MAX 4096

/* A render queued or running is over: its cost leaves the budget and its place and cost its
 * client's account. srv->lock held. */
static void release_locked(rpc_server *srv, struct client_use *client, double cost)
{
    struct work_queue *q = &srv->renders;

    srv->inflight_cost -= cost;
    if (q->queued == 0 && q->running == 0)
        srv->inflight_cost = 0; /* no drift from floating-point subtraction */
    if (client) {
        client->held--;
        client->cost -= cost;
        if (client->held == 0)
            client->cost = 0;
    }
}

/* Unlinks c from the queue it waits in, if it still waits; srv->lock held. Returns whether it did. */
static bool unqueue_locked(rpc_server *srv, struct call *c)
{
    struct work_queue *q = c->queued_on;
    struct call *prev = NULL;

    if (!q)
        return false;
    for (struct call *p = q->head; p; prev = p, p = p->next) {
        if (p != c)
            continue;
        if (prev)
            prev->next = c->next;
        else
            q->head = c->next;
        if (q->tail == c)
            q->tail = prev;
        c->next = NULL;
        c->queued_on = NULL;
        q->queued--;
        if (q == &srv->renders) {
            release_locked(srv, c->client, c->cost);
            c->client = NULL;
        }
        return true;
    }
    return false;
}

void rpc_queue_drop_cancelled(struct call *c)
{
    rpc_server *srv = c->srv;
    bool dropped;

    pthread_mutex_lock(&srv->lock);
    dropped = unqueue_locked(srv, c);
    pthread_mutex_unlock(&srv->lock);
    if (!dropped)
        return;
    /* The queue held the handler's reference: finishing the call here gives it up, as the
     * worker would have. The client is gone, so the status is for the log and the counters. */
    rpc_log_call(c, ERR_CANCELLED, "cancelled while queued", c->summary);
    rpc_finish(c, ERR_CANCELLED, "cancelled while queued", NULL, 0);
}

/* The retry hint: about one average render per worker-load of backlog, 100 ms at the least and
 * 10 s at the most; a client backing off by it finds room more often than not. */
static unsigned retry_hint(const struct work_queue *q, unsigned workers)
{
    unsigned ms = 100u * ((q->queued + q->running) / (workers ? workers : 1) + 1);
    return ms > 10000 ? 10000 : ms;
}

void rpc_queue_done_locked(rpc_server *srv, struct client_use *client, double cost)
{
    srv->renders.running--;
    release_locked(srv, client, cost);
}

void rpc_clients_free(rpc_server *srv)
{
    while (srv->clients) {
        struct client_use *next = srv->clients->next;
        free(srv->clients);
        srv->clients = next;
    }
    srv->nclients = 0;
}

static bool client_active(const struct client_use *u, double now)
{
    return u->held > 0 || (u->refused_ms > 0 && now - u->refused_ms < CLIENT_ACTIVE_MS);
}

/* The entry of `key`, made if needed (NULL when the list is full or memory is short), and in
 * *others the number of other clients active; entries neither active nor holding anything are
 * freed on the way. srv->lock held. */
static struct client_use *client_find(rpc_server *srv, const char *key, double now, unsigned *others)
{
    struct client_use **link = &srv->clients, *found = NULL;

    *others = 0;
    while (*link) {
        struct client_use *u = *link;
        if (strcmp(u->key, key) == 0) {
            found = u;
        } else if (client_active(u, now)) {
            (*others)++;
        } else {
            *link = u->next;
            free(u);
            srv->nclients--;
            continue;
        }
        link = &u->next;
    }
    if (!found && srv->nclients < CLIENTS_MAX && (found = calloc(1, sizeof(*found))) != NULL) {
        snprintf(found->key, sizeof(found->key), "%s", key);
        found->next = srv->clients;
        srv->clients = found;
        srv->nclients++;
    }
    return found;
}

int rpc_queue_work(struct call *c, double cost, char *msg, size_t msglen, unsigned *retry_after_ms)
{
    rpc_server *srv = c->srv;
    const struct config *cfg = srv->cfg;
    struct work_queue *q = &srv->renders;
    double now = render_now_ms();
    struct client_use *u;
    unsigned others, busy, idle;

    pthread_mutex_lock(&srv->lock);
    *retry_after_ms = retry_hint(q, srv->nworkers);
    u = client_find(srv, c->client_key, now, &others);
    /* The shares bind only while another client is active: a client alone may use the whole
     * server, and one that waits (refused, retrying) holds the others to their shares, so the
     * places they free as their renders end are its. Checked first: a client over its share
     * hears that, not that the server is full. */
    if (u && others > 0) {
        unsigned places = cfg->queue_length + srv->nworkers;
        unsigned limit = (unsigned)(cfg->client_queue_share * places);
        double cost_limit = cfg->client_cost_share * cfg->max_inflight_cost;
        if (limit < 1)
            limit = 1;
        if (cfg->client_queue_share < 1 && u->held + 1 > limit) {
            snprintf(msg, msglen, "this client's share of the render queue is used up (%u of %u places held, "
                     "share %.2g while other clients are active); retry later", u->held, places,
                     cfg->client_queue_share);
            goto refused;
        }
        if (cfg->client_cost_share < 1 && u->cost > 0 && u->cost + cost > cost_limit) {
            snprintf(msg, msglen, "this client's share of the in-flight cost is used up (%.4g iterations held, "
                     "%.4g asked, %.4g allowed: share %.2g of %.4g while other clients are active); retry later",
                     u->cost, cost, cost_limit, cfg->client_cost_share, cfg->max_inflight_cost);
            goto refused;
        }
    }
    /* queue_length counts calls that wait: a call an idle worker is about to take does not, so
     * --queue 0 still serves one render per idle worker. Workers running a job are busy too. */
    busy = q->running + srv->job_runners;
    idle = srv->nworkers > busy ? srv->nworkers - busy : 0;
    if (q->queued >= cfg->queue_length + idle) {
        snprintf(msg, msglen, "render queue is full (%u waiting, %u running); retry later", q->queued, q->running);
        goto refused;
    }
    if (srv->inflight_cost > 0 && srv->inflight_cost + cost > cfg->max_inflight_cost) {
        snprintf(msg, msglen, "server is busy: %.4g iterations in flight, budget %.4g; retry later",
                 srv->inflight_cost, cfg->max_inflight_cost);
        goto refused;
    }
    c->cost = cost;
    srv->inflight_cost += cost;
    c->client = u;
    if (u) {
        u->held++;
        u->cost += cost;
    }
    enqueue(q, c);
    pthread_mutex_unlock(&srv->lock);
    return 0;

refused:
    if (u)
        u->refused_ms = now;
    pthread_mutex_unlock(&srv->lock);
    return ERR_EXHAUSTED;
}

int rpc_queue_io(struct call *c, char *msg, size_t msglen, unsigned *retry_after_ms)
{
    rpc_server *srv = c->srv;
    struct work_queue *q = &srv->io;

    pthread_mutex_lock(&srv->lock);
    *retry_after_ms = retry_hint(q, srv->nio_workers);
    if (q->queued >= srv->cfg->queue_length) {
        pthread_mutex_unlock(&srv->lock);
        snprintf(msg, msglen, "I/O queue is full (%u waiting, %u running); retry later", q->queued, q->running);
        return ERR_EXHAUSTED;
    }
    c->cost = 0;
    enqueue(q, c);
    pthread_mutex_unlock(&srv->lock);
    return 0;
}

void rpc_jobs_wake(rpc_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->jobs_hint = 1;
    srv->jobs_hint_seq++;
    pthread_cond_broadcast(&srv->renders.ready);
    pthread_mutex_unlock(&srv->lock);
}

