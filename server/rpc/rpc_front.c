/* rpc_front.c: what other front ends (the HTTP listener) use of the gRPC server, so both share one
 * render queue with its budgets and per-client shares, one token table, one job store and one
 * set of counters: the work is queued as a call without a grpc call behind it. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "rpc_call.h"

/* The render worker's side: the front end's work, then the handler's reference goes. The worker
 * releases the call's queue place and cost itself (render_worker). */
static void front_run(struct call *c)
{
    c->front_run(c->front_ctx);
    rpc_call_release(c);
}

int rpc_server_queue_render(rpc_server *srv, const char *client_key, double cost, void (*run)(void *ctx),
                            void *ctx, char *msg, size_t msglen, unsigned *retry_after_ms)
{
    struct call *c;
    int err;

    *retry_after_ms = 0;
    if (atomic_load(&srv->shutting_down)) {
        snprintf(msg, msglen, "server is shutting down");
        return ERR_UNAVAILABLE;
    }
    /* Counted in live_calls, so the drain waits for it as for any render. */
    if (!(c = rpc_call_new(srv, M_RENDER))) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    c->t_accept = render_now_ms();
    c->front_run = run;
    c->front_ctx = ctx;
    c->run = front_run;
    snprintf(c->client_key, sizeof(c->client_key), "%s", client_key);
    if ((err = rpc_queue_work(c, cost, msg, msglen, retry_after_ms)) < 0) {
        rpc_call_release(c);
        return err;
    }
    return 0;
}

int rpc_server_check_token(rpc_server *srv, const char *authorization, char *id, char *msg, size_t msglen)
{
    grpc_metadata_array md;
    grpc_metadata entry;
    char who[RPC_AUTH_ID_MAX];
    int err;

    if (!srv->auth)
        return 1;
    /* The check reads grpc metadata: one entry made from the header, if there is one. */
    grpc_metadata_array_init(&md);
    memset(&entry, 0, sizeof(entry));
    if (authorization) {
        entry.key = grpc_slice_from_static_string("authorization");
        entry.value = grpc_slice_from_copied_string(authorization);
        md.metadata = &entry;
        md.count = md.capacity = 1;
    }
    err = rpc_auth_check(srv->auth, &md, who, msg, msglen);
    if (authorization)
        grpc_slice_unref(entry.value);
    if (err == 0)
        snprintf(id, RPC_FRONT_ID_MAX, "%s", who);
    return err;
}

void rpc_server_wake_jobs(rpc_server *srv)
{
    rpc_jobs_wake(srv);
}

void rpc_server_metrics(struct rpc_metrics *out, rpc_server *srv)
{
    _Static_assert(M_COUNT + 1 <= RPC_METRICS_METHODS, "struct rpc_metrics needs room for every method");
    memset(out, 0, sizeof(*out));
    out->nmethods = M_COUNT + 1;
    for (int m = 0; m <= M_COUNT; m++) {
        out->method[m] = m == M_UNKNOWN ? "unknown" : rpc_method_names[m].name;
        for (int code = 0; code < 17; code++)
            out->answered[m][code] = atomic_load(&srv->answered[m][code]);
        for (int b = 0; b < LATENCY_NBUCKETS; b++)
            out->latency[m][b] = atomic_load(&srv->latency[m][b]);
        out->latency_sum_s[m] = (double)atomic_load(&srv->latency_us_sum[m]) / 1e6;
    }
    pthread_mutex_lock(&srv->lock);
    out->queued = srv->renders.queued;
    out->running = srv->renders.running;
    out->job_runners = srv->job_runners;
    out->inflight_cost = srv->inflight_cost;
    pthread_mutex_unlock(&srv->lock);
}
