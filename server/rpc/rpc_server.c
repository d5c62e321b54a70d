/* rpc_server.c: the gRPC C core server: the handler table, the completion-queue thread (which
 * never blocks), the render and I/O workers, start and graceful stop. The primitives the handlers
 * reply with live apart, in rpc_call.c, so that handlers never depend on this file. */
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
#include "rpc_call.h"
#include "rpc_handlers.h"

/* Each method's handler; NULL is answered UNIMPLEMENTED. A handler runs on the completion-queue
 * thread and must not block: it answers at once or queues work. */
static void (*const handlers[M_COUNT])(struct call *c) = {
    [M_RENDER] = rpc_render_accept,
    [M_RENDER_STREAM] = rpc_render_accept,
    [M_SUBMIT_JOB] = rpc_jobs_submit,
    [M_GET_JOB] = rpc_jobs_get,
    [M_FETCH_JOB_RESULT] = rpc_jobs_fetch,
    [M_CANCEL_JOB] = rpc_jobs_cancel,
    [M_LIST_JOBS] = rpc_jobs_list,
    [M_LIST_DEVICES] = rpc_list_devices,
    [M_GET_STATS] = rpc_get_stats,
    [M_HEALTH_CHECK] = rpc_health_check,
    [M_HEALTH_WATCH] = rpc_health_watch,
};

/* Posts a request for the next call of `method` (or the catch-all). Returns 0 or a negative code. */
static int post_request(rpc_server *srv, enum method_id method)
{
    struct call *c = rpc_call_new(srv, method);
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
               method == M_UNKNOWN ? "unknown methods" : rpc_method_names[method].path, grpc_call_error_to_string(e));
        rpc_call_release(c);
        /* Without a posted request, grpc core holds new calls of this method until their
         * deadline instead of refusing them: the tick posts it again. */
        atomic_fetch_add(&srv->repost[method], 1);
        return ERR_INTERNAL;
    }
    return 0;
}

static void handle_unimplemented(struct call *c)
{
    char msg[200];

    if (c->method == M_UNKNOWN) {
        char *path = grpc_slice_to_c_string(c->details.method);
        snprintf(msg, sizeof(msg), "unknown method %.150s", path);
        gpr_free(path);
    } else {
        snprintf(msg, sizeof(msg), "%s is not implemented yet by this fractald", rpc_method_names[c->method].path);
    }
    rpc_log_call(c, ERR_UNIMPLEMENTED, msg, NULL);
    rpc_finish(c, ERR_UNIMPLEMENTED, msg, NULL, 0);
}

/* ---- render workers ---- */

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
            struct call *c = rpc_queue_take(q);
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
            struct call *c = rpc_queue_take(q);
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
        while (!atomic_load(&srv->listener_closed) && atomic_load(&srv->repost[m]) > 0) {
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
        rpc_call_release(c);
        return;
    }
    /* Requests stay posted through the drain, so health and the UNAVAILABLE answers go on until
     * the listener closes. */
    if (!atomic_load(&srv->listener_closed))
        post_request(srv, c->method);
    c->t_accept = render_now_ms();
    rpc_call_arm_close(c);
    if (c->method == M_UNKNOWN || !handlers[c->method]) {
        handle_unimplemented(c);
        return;
    }
    if (atomic_load(&srv->shutting_down) && c->method != M_HEALTH_CHECK && c->method != M_HEALTH_WATCH) {
        rpc_log_call(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
        rpc_finish(c, ERR_UNAVAILABLE, "server is shutting down", NULL, 0);
        return;
    }
    handlers[c->method](c);
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
            if (tag->call->close_cancelled) {
                atomic_store(&tag->call->cancelled, 1);
                rpc_queue_drop_cancelled(tag->call);
            }
            if (tag->call->method == M_HEALTH_WATCH)
                rpc_health_watch_closed(tag->call);
            rpc_call_release(tag->call);
            break;
        case TAG_WRITE: rpc_call_write_done(tag->call, ev.success); break;
        case TAG_FINISH: rpc_call_release(tag->call); break;
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
    rpc_init_monotonic_cond(&srv->state_changed);
    srv->tag_shutdown = (struct tag){TAG_SHUTDOWN, NULL};
    grpc_init();

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)cfg->limits.max_request_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)cfg->limits.max_message_bytes;
    /* Off, so a second server on a taken port fails to bind instead of silently sharing it
     * (grpc core turns SO_REUSEPORT on by default). */
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
        srv->handles[m] = grpc_server_register_method(srv->server, rpc_method_names[m].path, NULL,
                                                      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!srv->handles[m]) {
            snprintf(msg, msglen, "cannot register method %s", rpc_method_names[m].path);
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

/* Whether no render, stream, I/O call or job is queued or running: what the drain waits for with
 * the listener still open. */
static bool work_drained(rpc_server *srv)
{
    bool done;

    pthread_mutex_lock(&srv->lock);
    done = srv->renders.queued == 0 && srv->renders.running == 0 && srv->io.queued == 0 && srv->io.running == 0 &&
           srv->job_runners == 0;
    pthread_mutex_unlock(&srv->lock);
    return done;
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
    double deadline, notice_until;

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
    deadline = render_now_ms() + grace_ms;
    notice_until = render_now_ms() + (srv->cfg->drain_notice_ms < grace_ms ? srv->cfg->drain_notice_ms : grace_ms);
    /* The listener stays open while the work in flight drains (and for at least
     * --drain-notice-ms): health answers NOT_SERVING and new work UNAVAILABLE, so a load balancer
     * sees the drain and moves traffic, instead of refused connections. */
    while ((!work_drained(srv) || render_now_ms() < notice_until) && render_now_ms() < deadline)
        wait_changed(srv, 20);
    atomic_store(&srv->listener_closed, 1);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->tag_shutdown);
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
