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
    [M_REFLECTION] = rpc_reflection_info,
    [M_REFLECTION_ALPHA] = rpc_reflection_info,
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
                                                &c->deadline, &c->req_md,
                                                RPC_METHOD_READS_STREAM(method) ? NULL : &c->payload, srv->cq, srv->cq,
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

/* jobs_set_wake's callback: the shared store says other servers queued work (rpc_jobs_wake). */
static void wake_job_runners(void *srv)
{
    rpc_jobs_wake(srv);
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
            struct client_use *client = c->client;
            pthread_mutex_unlock(&srv->lock);
            /* run() finishes the call, which may free it: nothing of c is touched afterwards. */
            c->run(c);
            pthread_mutex_lock(&srv->lock);
            rpc_queue_done_locked(srv, client, cost);
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

/* The peer without its port ("ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1"), into out. */
static void peer_host(char *out, size_t cap, const char *peer)
{
    const char *colon = strrchr(peer, ':');
    size_t len = strlen(peer);

    if ((strncmp(peer, "ipv4:", 5) == 0 || strncmp(peer, "ipv6:", 5) == 0) && colon && colon > peer + 4)
        len = (size_t)(colon - peer);
    snprintf(out, cap, "%.*s", (int)len, peer);
}

/* The name of the client certificate the TLS handshake verified (mutual TLS), into out; "" if
 * none. */
static void cert_name(char *out, size_t cap, grpc_call *call)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    grpc_auth_property_iterator it;
    const grpc_auth_property *p;

    out[0] = '\0';
    if (!ctx)
        return;
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        it = grpc_auth_context_peer_identity(ctx);
        if ((p = grpc_auth_property_iterator_next(&it)) != NULL)
            snprintf(out, cap, "%.*s", (int)p->value_length, p->value);
    }
    grpc_auth_context_release(ctx);
}

/* Who the call is from, and whether it may go on: with tokens on, every method but health (unless
 * --auth-health) needs a known bearer token, checked here, before its request is parsed. Sets the
 * call's auth fields; returns 0, or ERR_UNAUTHENTICATED with the message for the client. */
static int authenticate(struct call *c, char *msg, size_t msglen)
{
    rpc_server *srv = c->srv;
    bool health = c->method == M_HEALTH_CHECK || c->method == M_HEALTH_WATCH;
    char *peer = grpc_call_get_peer(c->call);
    int err;

    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "?");
    gpr_free(peer);
    peer_host(c->client_key, sizeof(c->client_key), c->peer);
    c->auth = "none";
    if (srv->cfg->tls_client_ca[0]) {
        /* The handshake already refused clients without a valid certificate. */
        c->auth = "mtls";
        cert_name(c->client_id, sizeof(c->client_id), c->call);
    }
    if (!srv->auth || (health && !srv->cfg->auth_health))
        return 0;
    {
        /* On a refusal the certificate's name stays for the log line. */
        char id[RPC_AUTH_ID_MAX];
        if ((err = rpc_auth_check(srv->auth, &c->req_md, id, msg, msglen)) < 0)
            return err;
        snprintf(c->client_id, sizeof(c->client_id), "%s", id);
    }
    c->auth = "token";
    snprintf(c->client_key, sizeof(c->client_key), "token:%s", c->client_id);
    return 0;
}

static void on_new_call(struct call *c, int ok)
{
    rpc_server *srv = c->srv;

    if (!ok) {
        /* The server is shutting down: the posted request ends unused. */
        rpc_call_release(c);
        return;
    }
    /* Requests stay posted through the drain and up to grpc_server_shutdown_and_notify (after
     * it, a request completes at once with !ok): a call that arrived between listener_closed and
     * the shutdown with no request posted for its method would be cancelled by the shutdown
     * (CANCELLED, which clients do not retry) instead of hearing UNAVAILABLE. */
    post_request(srv, c->method);
    c->t_accept = render_now_ms();
    rpc_call_arm_close(c);
    {
        char msg[200];
        if (authenticate(c, msg, sizeof(msg)) < 0) {
            rpc_log_call(c, ERR_UNAUTHENTICATED, msg, NULL);
            rpc_finish(c, ERR_UNAUTHENTICATED, msg, NULL, 0);
            return;
        }
    }
    if (c->method == M_UNKNOWN || !handlers[c->method]) {
        handle_unimplemented(c);
        return;
    }
    /* Refused only while the drain notice keeps the listener open. A call that got in just
     * before the listener closed is served within the grace period like the others in flight:
     * refused, it would fail at a proxy that cannot retry it elsewhere. */
    if (atomic_load(&srv->shutting_down) && !atomic_load(&srv->listener_closed) && c->method != M_HEALTH_CHECK &&
        c->method != M_HEALTH_WATCH) {
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
        case TAG_READ: rpc_reflection_step(tag->call, ev.success); break;
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

/* Reads a whole PEM file into a NUL-terminated string (free it), or NULL with the message. */
static char *read_pem(const char *flag, const char *path, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (!f) {
        snprintf(msg, msglen, "%s %s: cannot read: %s", flag, path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *grown = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!grown || cap > ((size_t)16 << 20)) {
                free(grown ? grown : buf);
                fclose(f);
                snprintf(msg, msglen, "%s %s: %s", flag, path, grown ? "larger than 16 MiB" : "out of memory");
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
    if (!strstr(buf, "-----BEGIN ")) {
        free(buf);
        snprintf(msg, msglen, "%s %s: not a PEM file", flag, path);
        return NULL;
    }
    return buf;
}

/* The listener's credentials: TLS through grpc core's own (OpenSSL) when --tls-cert is given,
 * requiring and verifying a client certificate when --tls-client-ca is; else plaintext. */
static int server_credentials(grpc_server_credentials **out, const struct config *cfg, char *msg, size_t msglen)
{
    grpc_ssl_pem_key_cert_pair pair = {NULL, NULL};
    char *ca = NULL, *key = NULL, *chain = NULL;
    int err = ERR_INVALID;

    *out = NULL;
    if (!cfg->tls_cert[0]) {
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    if (!(chain = read_pem("--tls-cert", cfg->tls_cert, msg, msglen)) ||
        !(key = read_pem("--tls-key", cfg->tls_key, msg, msglen)) ||
        (cfg->tls_client_ca[0] && !(ca = read_pem("--tls-client-ca", cfg->tls_client_ca, msg, msglen))))
        goto done;
    pair.private_key = key;
    pair.cert_chain = chain;
    /* grpc core copies the PEM strings. */
    *out = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1, ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!*out) {
        snprintf(msg, msglen, "--tls-cert %s: grpc refused the certificate or key", cfg->tls_cert);
        goto done;
    }
    err = 0;
done:
    if (key) {
        /* The private key: do not leave it in freed memory. */
        volatile char *p = key;
        for (size_t i = 0; p[i]; i++)
            p[i] = 0;
    }
    free(key);
    free(chain);
    free(ca);
    return err;
}

void rpc_server_reload(rpc_server *srv)
{
    char msg[512];

    if (!srv || !srv->auth) {
        log_at(LOG_INFO, "SIGHUP: nothing to reload (no --token-file)");
        return;
    }
    if (rpc_auth_reload(srv->auth, msg, sizeof(msg)) < 0)
        log_at(LOG_ERROR, "SIGHUP: tokens not reloaded, the old ones stay: %s", msg);
    else
        log_at(LOG_INFO, "SIGHUP: reloaded %s from %s", msg, srv->cfg->token_file);
}

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
    srv->cache = deps->cache;
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
                                                      RPC_METHOD_READS_STREAM(m) ? GRPC_SRM_PAYLOAD_NONE
                                                                                 : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!srv->handles[m]) {
            snprintf(msg, msglen, "cannot register method %s", rpc_method_names[m].path);
            goto fail;
        }
    }
    if (cfg->token_file[0] && (err = rpc_auth_new(&srv->auth, cfg->token_file, msg, msglen)) < 0)
        goto fail;
    if ((err = server_credentials(&creds, cfg, msg, msglen)) < 0)
        goto fail;
    *port = grpc_server_add_http2_port(srv->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (*port == 0) {
        snprintf(msg, msglen, "cannot listen on %s (address in use or malformed%s)", cfg->listen,
                 cfg->tls_cert[0] ? ", or the TLS certificate and key are not valid PEM or do not match" : "");
        err = ERR_UNAVAILABLE;
        goto fail;
    }
    grpc_server_start(srv->server);

    srv->nworkers = cfg->render_workers;
    srv->nio_workers = cfg->io_workers;
    srv->max_job_runners = srv->nworkers > 1 ? srv->nworkers - 1 : 1;
    if (cfg->job_runners != CONFIG_JOB_RUNNERS_AUTO && cfg->job_runners < srv->max_job_runners)
        srv->max_job_runners = cfg->job_runners; /* 0: this server accepts jobs but runs none */
    srv->jobs_hint = 1; /* jobs recovered from the journal start at once */
    srv->workers = calloc(srv->nworkers + srv->nio_workers, sizeof(*srv->workers));
    srv->job_cancel = calloc(srv->max_job_runners ? srv->max_job_runners : 1, sizeof(*srv->job_cancel));
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
    /* A shared store (--job-store) announces jobs queued through other servers of the fleet. */
    if (srv->jobs)
        jobs_set_wake(srv->jobs, wake_job_runners, srv);
    *out = srv;
    return 0;

fail_started:
    /* The shutdown path knows how to unwind a started server, threads or not. */
    rpc_server_stop(srv, 0);
    return err < 0 ? err : ERR_INTERNAL;
fail:
    rpc_auth_free(srv->auth);
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

/* Whether every gRPC call is over (the shutdown tag arrived) and no render, I/O call or job is
 * queued or running: renders another front end (HTTP) queued are not gRPC calls, and the tag
 * does not wait for them. */
static bool drained(rpc_server *srv)
{
    bool done;

    pthread_mutex_lock(&srv->lock);
    done = srv->shutdown_done && srv->renders.queued == 0 && srv->renders.running == 0 && srv->io.queued == 0 &&
           srv->io.running == 0 && srv->job_runners == 0;
    pthread_mutex_unlock(&srv->lock);
    return done;
}

void rpc_server_stop(rpc_server *srv, unsigned grace_ms)
{
    double deadline, notice_until;

    if (!srv)
        return;
    /* Without a notice the listener counts as closed from the start (stored first: on_new_call
     * reads them in the other order), so no call is refused for being a moment early. */
    if (srv->cfg->drain_notice_ms == 0 || grace_ms == 0)
        atomic_store(&srv->listener_closed, 1);
    atomic_store(&srv->shutting_down, 1);
    if (!srv->cq_thread_started) {
        /* Nothing drains the queue yet: start the loop just for the shutdown (failed start only). */
        srv->cq_thread_started = pthread_create(&srv->cq_thread, NULL, cq_loop, srv) == 0;
    }
    /* No new jobs start; queued ones stay journaled for the next start. */
    if (srv->jobs) {
        jobs_stop(srv->jobs);
        jobs_set_wake(srv->jobs, NULL, NULL);
    }
    /* Watchers hear NOT_SERVING now and stay open until the listener closes. */
    rpc_health_draining(srv);
    deadline = render_now_ms() + grace_ms;
    notice_until = render_now_ms() + (srv->cfg->drain_notice_ms < grace_ms ? srv->cfg->drain_notice_ms : grace_ms);
    /* For --drain-notice-ms the listener stays open: health answers NOT_SERVING and new work
     * UNAVAILABLE, for balancers that poll health. Then it closes, whatever is still in flight:
     * connections are refused and open ones get a GOAWAY, which a proxy (nginx) retries on
     * another server, while it could not retry an UNAVAILABLE answer it already passed on. The
     * calls and jobs in flight go on until they finish or the grace period ends. */
    while (render_now_ms() < notice_until && render_now_ms() < deadline) {
        wait_changed(srv, 20);
        rpc_health_draining(srv);
    }
    atomic_store(&srv->listener_closed, 1);
    /* Watchers first: they would otherwise hold the shutdown for the whole grace period. */
    rpc_health_shutdown(srv);
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
    rpc_clients_free(srv);
    rpc_auth_free(srv->auth);
    pthread_cond_destroy(&srv->state_changed);
    pthread_cond_destroy(&srv->io.ready);
    pthread_cond_destroy(&srv->renders.ready);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
