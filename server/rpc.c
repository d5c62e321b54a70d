/* rpc.c: the gRPC C core server: method table, call lifecycle, the completion-queue thread (which
 * never blocks), reply and stream primitives, the render worker pool, start and graceful stop. */
#include "rpc.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "rpc_internal.h"

/* Paths, names and handlers. The Renderer paths are those protoc-c records in
 * fractal__v1__renderer__descriptor; they are spelled out because protoc-c does not record which
 * methods stream, and the handlers are the one place that knows. */
const struct method_info rpc_methods[M_COUNT] = {
    [M_RENDER] = {"/fractal.v1.Renderer/Render", "Render", rpc_render_accept},
    [M_RENDER_STREAM] = {"/fractal.v1.Renderer/RenderStream", "RenderStream", rpc_render_accept},
    [M_SUBMIT_JOB] = {"/fractal.v1.Renderer/SubmitJob", "SubmitJob", rpc_jobs_submit},
    [M_GET_JOB] = {"/fractal.v1.Renderer/GetJob", "GetJob", rpc_jobs_get},
    [M_FETCH_JOB_RESULT] = {"/fractal.v1.Renderer/FetchJobResult", "FetchJobResult", rpc_jobs_fetch},
    [M_CANCEL_JOB] = {"/fractal.v1.Renderer/CancelJob", "CancelJob", rpc_jobs_cancel},
    [M_LIST_JOBS] = {"/fractal.v1.Renderer/ListJobs", "ListJobs", rpc_jobs_list},
    [M_LIST_DEVICES] = {"/fractal.v1.Renderer/ListDevices", "ListDevices", rpc_list_devices},
    [M_GET_STATS] = {"/fractal.v1.Renderer/GetStats", "GetStats", rpc_get_stats},
    [M_HEALTH_CHECK] = {"/grpc.health.v1.Health/Check", "Health.Check", rpc_health_check},
    [M_HEALTH_WATCH] = {"/grpc.health.v1.Health/Watch", "Health.Watch", rpc_health_watch},
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

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *m;
    grpc_slice s;

    if (!bb || !grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    s = grpc_byte_buffer_reader_readall(&reader);
    m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_reader_destroy(&reader);
    return m;
}

/* Condition variables here time out on the monotonic clock, so a wall-clock jump neither
 * stretches nor cuts a grace period or a write timeout. */
static void init_monotonic_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

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
    c->tag_write = (struct tag){TAG_WRITE, c};
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, 0);
    pthread_mutex_init(&c->lock, NULL);
    init_monotonic_cond(&c->write_done);
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
    if (c->write_bb)
        grpc_byte_buffer_destroy(c->write_bb);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    pthread_cond_destroy(&c->write_done);
    pthread_mutex_destroy(&c->lock);
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
        log_at(LOG_ERROR, "rpc: cannot post a request for %s: %s; retrying",
               method == M_UNKNOWN ? "unknown methods" : rpc_methods[method].path, grpc_call_error_to_string(e));
        call_release(c);
        /* Without a posted request, calls of this method would wait for their deadline
         * (GRPC_NOTES pitfall 2): the tick posts it again. */
        atomic_fetch_add(&srv->repost[method], 1);
        return ERR_INTERNAL;
    }
    return 0;
}

/* Starts a batch, taking a reference for it. A rejected batch is fatal for the call (GRPC_NOTES
 * pitfall 4): the call is cancelled so the client is not left waiting. Returns 0 or ERR_INTERNAL. */
static int start_batch(struct call *c, const grpc_op *ops, size_t n, struct tag *tag)
{
    grpc_call_error e;

    atomic_fetch_add(&c->refs, 1);
    e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        log_at(LOG_ERROR, "rpc: start_batch failed on %s: %s",
               c->method == M_UNKNOWN ? "catch-all" : rpc_methods[c->method].path, grpc_call_error_to_string(e));
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server could not send its reply", NULL);
        atomic_store(&c->cancelled, 1);
        call_release(c);
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
               c->method == M_UNKNOWN ? "unknown" : rpc_methods[c->method].name, timeout_ms);
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
    /* Core does not retain the details slice past start_batch (GRPC_NOTES section 3). */
    grpc_slice_unref(details);
    call_release(c);
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

static void on_write_done(struct call *c, int ok)
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

void rpc_log_call(struct call *c, int err, const char *message, const char *extra)
{
    const char *name = c->method == M_UNKNOWN ? "unknown" : rpc_methods[c->method].name;
    int code = (int)rpc_status_of(err);
    int level = err == 0 ? LOG_INFO : LOG_WARN;
    bool has_msg = message && *message;
    char *peer;

    if (code >= 0 && code <= 16)
        atomic_fetch_add(&c->srv->answered[c->method][code], 1);
    /* The peer string is allocated: not for a line that is not written. */
    if (level < log_min_level)
        return;
    peer = grpc_call_get_peer(c->call);
    log_at(level, "rpc %s peer=%s status=%d%s%s%s%s%s%s ms=%.2f", name,
           peer ? peer : "?", code, c->job_id[0] ? " job=" : "", c->job_id, has_msg ? " error=\"" : "",
           has_msg ? message : "", has_msg ? "\"" : "", extra ? extra : "", render_now_ms() - c->t_accept);
    gpr_free(peer);
}

static void handle_unimplemented(struct call *c)
{
    char msg[200];

    if (c->method == M_UNKNOWN) {
        char *path = grpc_slice_to_c_string(c->details.method);
        snprintf(msg, sizeof(msg), "unknown method %.150s", path);
        gpr_free(path);
    } else {
        snprintf(msg, sizeof(msg), "%s is not implemented yet by this fractald", rpc_methods[c->method].path);
    }
    rpc_log_call(c, ERR_UNIMPLEMENTED, msg, NULL);
    rpc_finish(c, ERR_UNIMPLEMENTED, msg, NULL, 0);
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
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->queued++;
    pthread_cond_signal(&q->ready);
}

static struct call *dequeue(struct work_queue *q)
{
    struct call *c = q->head;

    q->head = c->next;
    if (!q->head)
        q->tail = NULL;
    q->queued--;
    q->running++;
    return c;
}

/* The retry hint: about one average render per worker-load of backlog, 100 ms at the least and
 * 10 s at the most; a client backing off by it finds room more often than not. */
static unsigned retry_hint(const struct work_queue *q, unsigned workers)
{
    unsigned ms = 100u * ((q->queued + q->running) / (workers ? workers : 1) + 1);
    return ms > 10000 ? 10000 : ms;
}

int rpc_queue_work(struct call *c, double cost, char *msg, size_t msglen, unsigned *retry_after_ms)
{
    rpc_server *srv = c->srv;
    const struct config *cfg = srv->cfg;
    struct work_queue *q = &srv->renders;

    pthread_mutex_lock(&srv->lock);
    *retry_after_ms = retry_hint(q, srv->nworkers);
    if (q->queued >= cfg->queue_length) {
        pthread_mutex_unlock(&srv->lock);
        snprintf(msg, msglen, "render queue is full (%u waiting, %u running); retry later", q->queued, q->running);
        return ERR_EXHAUSTED;
    }
    if (srv->inflight_cost > 0 && srv->inflight_cost + cost > cfg->max_inflight_cost) {
        pthread_mutex_unlock(&srv->lock);
        snprintf(msg, msglen, "server is busy: %.4g iterations in flight, budget %.4g; retry later",
                 srv->inflight_cost, cfg->max_inflight_cost);
        return ERR_EXHAUSTED;
    }
    c->cost = cost;
    srv->inflight_cost += cost;
    enqueue(q, c);
    pthread_mutex_unlock(&srv->lock);
    return 0;
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

/* Marks a runner slot taken before its job (and so its cancel flag) is known; setting it is
 * harmless. */
static atomic_int slot_reserved;

/* Takes a queued job from the store into runner slot `slot` and runs it; srv->lock not held. */
static void run_one_job(rpc_server *srv, unsigned slot, unsigned hint_seq)
{
    struct jobs_work work;
    char msg[256];
    int err = jobs_next_queued(&work, srv->jobs, 0, msg, sizeof(msg));

    if (err < 0) {
        if (err != ERR_NOT_FOUND && err != ERR_UNAVAILABLE)
            log_at(LOG_ERROR, "jobs: cannot take the next job: %s", msg);
        pthread_mutex_lock(&srv->lock);
        /* Nothing queued (or the store stopped): sleep until a submission says otherwise. A
         * failed commit leaves the hint, so the job is tried again. */
        if (srv->jobs_hint_seq == hint_seq && (err == ERR_NOT_FOUND || err == ERR_UNAVAILABLE))
            srv->jobs_hint = 0;
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    srv->job_cancel[slot] = work.cancel;
    /* The drain may have cancelled the running jobs while this one was being taken. */
    if (srv->cancel_jobs)
        atomic_store(work.cancel, 1);
    pthread_mutex_unlock(&srv->lock);
    rpc_jobs_run(srv, &work, slot);
    pthread_mutex_lock(&srv->lock);
    srv->job_cancel[slot] = NULL;
    pthread_mutex_unlock(&srv->lock);
    jobs_work_dispose(&work);
}

/* A render worker: interactive calls first, then jobs on at most max_job_runners workers. */
static void *render_worker(void *arg)
{
    rpc_server *srv = arg;
    struct work_queue *q = &srv->renders;

    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (q->head) {
            struct call *c = dequeue(q);
            double cost = c->cost;
            pthread_mutex_unlock(&srv->lock);
            /* run() finishes the call, which may free it: nothing of c is touched afterwards. */
            c->run(c);
            pthread_mutex_lock(&srv->lock);
            q->running--;
            srv->inflight_cost -= cost;
            if (q->queued == 0 && q->running == 0)
                srv->inflight_cost = 0; /* no drift from floating-point subtraction */
        } else if (srv->jobs && srv->jobs_hint && !atomic_load(&srv->shutting_down) &&
                   srv->job_runners < srv->max_job_runners) {
            unsigned slot = 0, seq = srv->jobs_hint_seq;
            while (srv->job_cancel[slot])
                slot++;
            srv->job_cancel[slot] = &slot_reserved; /* until the job's own flag is known */
            srv->job_runners++;
            pthread_mutex_unlock(&srv->lock);
            run_one_job(srv, slot, seq);
            pthread_mutex_lock(&srv->lock);
            srv->job_cancel[slot] = NULL;
            srv->job_runners--;
            pthread_cond_broadcast(&srv->state_changed);
        } else if (srv->stop_workers) {
            break;
        } else {
            pthread_cond_wait(&q->ready, &srv->lock);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

static void *io_worker(void *arg)
{
    rpc_server *srv = arg;
    struct work_queue *q = &srv->io;

    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (q->head) {
            struct call *c = dequeue(q);
            pthread_mutex_unlock(&srv->lock);
            c->run(c);
            pthread_mutex_lock(&srv->lock);
            q->running--;
        } else if (srv->stop_workers) {
            break;
        } else {
            pthread_cond_wait(&q->ready, &srv->lock);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

void rpc_server_tick(rpc_server *srv)
{
    struct timespec now;

    if (!srv)
        return;
    for (int m = 0; m <= M_UNKNOWN; m++)
        while (!atomic_load(&srv->shutting_down) && atomic_load(&srv->repost[m]) > 0) {
            atomic_fetch_sub(&srv->repost[m], 1);
            if (post_request(srv, (enum method_id)m) < 0)
                break;
        }
    if (!srv->jobs)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    if (jobs_expire(srv->jobs, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000) < 0)
        log_at(LOG_WARN, "jobs: expiring old results failed; will retry");
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
    if (c->method == M_UNKNOWN || !rpc_methods[c->method].handle) {
        handle_unimplemented(c);
        return;
    }
    if (atomic_load(&srv->shutting_down) && c->method != M_HEALTH_CHECK && c->method != M_HEALTH_WATCH) {
        rpc_log_call(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
        rpc_finish(c, ERR_UNAVAILABLE, "server is shutting down", NULL, 0);
        return;
    }
    rpc_methods[c->method].handle(c);
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
            if (tag->call->method == M_HEALTH_WATCH)
                rpc_health_watch_closed(tag->call);
            call_release(tag->call);
            break;
        case TAG_WRITE: on_write_done(tag->call, ev.success); break;
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

int rpc_server_start(rpc_server **out, int *port, const struct rpc_deps *deps, char *msg, size_t msglen)
{
    const struct config *cfg = deps->cfg;
    rpc_server *srv = calloc(1, sizeof(*srv));
    grpc_arg args[4];
    grpc_channel_args channel_args = {4, args};
    grpc_server_credentials *creds;
    int err = ERR_INTERNAL;

    if (!srv) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    srv->cfg = cfg;
    srv->engine = deps->engine;
    srv->devs = deps->devs;
    srv->jobs = deps->jobs;
    srv->sched = deps->sched;
    srv->t_start = render_now_ms();
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->renders.ready, NULL);
    pthread_cond_init(&srv->io.ready, NULL);
    init_monotonic_cond(&srv->state_changed);
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
    /* Bounds what one connection can hold open at once (streams, watchers). */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[3].value.integer = 256;
    srv->server = grpc_server_create(&channel_args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (int m = 0; m < M_COUNT; m++) {
        srv->handles[m] = grpc_server_register_method(srv->server, rpc_methods[m].path, NULL,
                                                      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!srv->handles[m]) {
            snprintf(msg, msglen, "cannot register method %s", rpc_methods[m].path);
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
    srv->nio_workers = cfg->io_workers;
    srv->max_job_runners = srv->nworkers > 1 ? srv->nworkers - 1 : 1;
    srv->jobs_hint = 1; /* jobs recovered from the journal start at once */
    srv->workers = calloc(srv->nworkers + srv->nio_workers, sizeof(*srv->workers));
    srv->job_cancel = calloc(srv->max_job_runners, sizeof(*srv->job_cancel));
    if (!srv->workers || !srv->job_cancel) {
        srv->nworkers = srv->nio_workers = 0;
        err = ERR_NOMEM;
        snprintf(msg, msglen, "out of memory");
        goto fail_started;
    }
    {
        unsigned total = srv->nworkers + srv->nio_workers, started = 0;
        for (; started < total; started++)
            if (pthread_create(&srv->workers[started], NULL, started < srv->nworkers ? render_worker : io_worker,
                               srv) != 0)
                break;
        if (started < total) {
            /* Join only what started: the stop path joins nworkers + nio_workers threads. */
            srv->nio_workers = started > srv->nworkers ? started - srv->nworkers : 0;
            srv->nworkers = started < srv->nworkers ? started : srv->nworkers;
            snprintf(msg, msglen, "cannot start worker thread %u", started);
            goto fail_started;
        }
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

/* Waits on state_changed until *flag_done is set (if given) and *count_zero is 0 (if given), or
 * timeout_ms passes. */
static void wait_until(rpc_server *srv, int *flag_done, atomic_int *count_zero, unsigned timeout_ms)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
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

/* Waits up to timeout_ms for state_changed. */
static void wait_changed(rpc_server *srv, unsigned timeout_ms)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)timeout_ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&srv->lock);
    pthread_cond_timedwait(&srv->state_changed, &srv->lock, &until);
    pthread_mutex_unlock(&srv->lock);
}

/* Asks every running job to stop (the drain's grace period is over); they go back to the queue. */
static void cancel_running_jobs(rpc_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->cancel_jobs = true;
    for (unsigned k = 0; k < srv->max_job_runners; k++)
        if (srv->job_cancel && srv->job_cancel[k])
            atomic_store(srv->job_cancel[k], 1);
    pthread_mutex_unlock(&srv->lock);
}

static bool drained(rpc_server *srv)
{
    bool done;

    pthread_mutex_lock(&srv->lock);
    done = srv->shutdown_done && srv->job_runners == 0;
    pthread_mutex_unlock(&srv->lock);
    return done;
}

void rpc_server_stop(rpc_server *srv, unsigned grace_ms)
{
    double deadline;

    if (!srv)
        return;
    atomic_store(&srv->shutting_down, 1);
    if (!srv->cq_thread_started) {
        /* Nothing drains the queue yet: start the loop just for the shutdown (failed start only). */
        srv->cq_thread_started = pthread_create(&srv->cq_thread, NULL, cq_loop, srv) == 0;
    }
    /* No new jobs start; queued ones stay journaled for the next start. */
    if (srv->jobs)
        jobs_stop(srv->jobs);
    /* Watchers first: they would otherwise hold the shutdown for the whole grace period. */
    rpc_health_shutdown(srv);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->tag_shutdown);
    deadline = render_now_ms() + grace_ms;
    while (!drained(srv) && render_now_ms() < deadline)
        wait_changed(srv, 20);
    if (!drained(srv)) {
        log_at(LOG_WARN, "rpc: grace period of %u ms over; cancelling the calls and jobs still in flight", grace_ms);
        grpc_server_cancel_all_calls(srv->server);
        cancel_running_jobs(srv);
    }
    wait_until(srv, &srv->shutdown_done, &srv->live_calls, 1u << 30);

    pthread_mutex_lock(&srv->lock);
    srv->stop_workers = 1;
    pthread_cond_broadcast(&srv->renders.ready);
    pthread_cond_broadcast(&srv->io.ready);
    pthread_mutex_unlock(&srv->lock);
    for (unsigned i = 0; i < srv->nworkers + srv->nio_workers; i++)
        pthread_join(srv->workers[i], NULL);
    free(srv->workers);
    free(srv->job_cancel);

    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->cq_thread_started)
        pthread_join(srv->cq_thread, NULL);
    grpc_completion_queue_destroy(srv->cq);
    grpc_shutdown();
    pthread_cond_destroy(&srv->state_changed);
    pthread_cond_destroy(&srv->io.ready);
    pthread_cond_destroy(&srv->renders.ready);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
