/* rpc.h: fractald's gRPC front end: one completion-queue thread that never blocks, answering cheap
 * calls inline and handing renders to a bounded pool of render workers. The only module that
 * includes grpc headers. */
#ifndef FRACTALD_RPC_H
#define FRACTALD_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "devices.h"
#include "engine_cpu.h"
#include "imgcache.h"
#include "jobs.h"
#include "latency.h"
#include "sched.h"

typedef struct rpc_server rpc_server;

/* What the server computes with and keeps jobs in; everything must outlive the server. */
struct rpc_deps {
    const struct config *cfg;
    engine_cpu *engine;
    struct devices *devs;
    jobs_store *jobs;           /* NULL: jobs disabled (SubmitJob and friends answer UNAVAILABLE) */
    sched *sched;               /* computes every render over the usable devices */
    imgcache *cache;            /* encoded images shared with the HTTP front end; NULL: none */
};

/* Binds cfg->listen, starts the completion-queue thread, the render and I/O workers, and begins
 * serving (jobs recovered in the store start running). *port receives the bound port (useful
 * with port 0). Returns 0 and the server in *out, or ERR_UNAVAILABLE when the address cannot be
 * bound (taken, malformed), ERR_NOMEM or ERR_INTERNAL, with a line in msg. */
int rpc_server_start(rpc_server **out, int *port, const struct rpc_deps *deps, char *msg, size_t msglen);

/* SIGHUP: rereads the --token-file; a file that fails keeps the old tokens, and the log says why.
 * Any thread. Accepts NULL. */
void rpc_server_reload(rpc_server *srv);

/* Periodic upkeep (expired job results); call about once a second from any thread. */
void rpc_server_tick(rpc_server *srv);

/* Graceful stop: health turns NOT_SERVING and new work is refused with UNAVAILABLE while the
 * listener stays open until the calls and jobs in flight have finished (and at least
 * cfg->drain_notice_ms have passed); then the listener closes. What is still running when grace_ms
 * is over is cancelled (cancelled jobs go back to the queue, journaled for the next start);
 * returns when every call is released and every thread joined, and frees the server (not the
 * deps). Accepts NULL. */
void rpc_server_stop(rpc_server *srv, unsigned grace_ms);

/* ---- What other front ends (the HTTP listener) use, so that they share this server's render
 * queue, budgets, tokens, jobs and counters rather than keep their own (rpc_front.c). Any thread;
 * none blocks on a render. ---- */

/* Queues work for the render workers exactly as a Render call is queued: the same bounded queue,
 * in-flight cost budget and per-client shares (client_key as gRPC calls have it: "token:NAME"
 * with tokens on, else the peer's address without the port, "ipv4:1.2.3.4"), and the drain waits
 * for it. run(ctx) is then called exactly once on a render worker (also during a drain); it must
 * poll its own cancel flag and return promptly once it is set. Returns 0, ERR_EXHAUSTED (queue or
 * budget full: msg, and a retry hint in *retry_after_ms), ERR_UNAVAILABLE (shutting down) or
 * ERR_NOMEM; run is not called then. */
int rpc_server_queue_render(rpc_server *srv, const char *client_key, double cost, void (*run)(void *ctx),
                            void *ctx, char *msg, size_t msglen, unsigned *retry_after_ms);

/* Checks the value of an HTTP Authorization header (NULL: none) against the --token-file tokens
 * (the same table, reloaded on SIGHUP). Returns 1 when tokens are off, 0 with the token's name in
 * id (cap RPC_FRONT_ID_MAX), or ERR_UNAUTHENTICATED with the reason in msg. */
#define RPC_FRONT_ID_MAX 64
int rpc_server_check_token(rpc_server *srv, const char *authorization, char *id, char *msg, size_t msglen);

/* Tells the render workers a job was submitted (after jobs_submit). */
void rpc_server_wake_jobs(rpc_server *srv);

/* The replies of GetStats (fractal.v1.ServerStats), ListDevices (ListDevicesResponse), GetJob
 * (Job) and ListJobs (ListJobsResponse; state a JobState 0..5, limit 1..1000) as packed protobuf
 * bytes in *out (malloc'd, caller frees) and *len, built by the same code as the gRPC replies.
 * Return 0, ERR_NOMEM, and for the jobs ERR_UNAVAILABLE (jobs disabled) or ERR_NOT_FOUND. */
int rpc_server_stats_packed(rpc_server *srv, uint8_t **out, size_t *len);
int rpc_server_devices_packed(rpc_server *srv, uint8_t **out, size_t *len);
int rpc_server_job_packed(rpc_server *srv, const char *id, uint8_t **out, size_t *len);
int rpc_server_jobs_list_packed(rpc_server *srv, unsigned state, size_t limit, uint8_t **out, size_t *len);

/* The gRPC counters for /metrics: calls answered by method and status code, their latency
 * (latency.h buckets, not cumulative), and the render queue. */
#define RPC_METRICS_METHODS 32
struct rpc_metrics {
    size_t nmethods;
    const char *method[RPC_METRICS_METHODS];        /* short names ("Render", "Health.Check") */
    uint64_t answered[RPC_METRICS_METHODS][17];
    uint64_t latency[RPC_METRICS_METHODS][LATENCY_NBUCKETS];
    double latency_sum_s[RPC_METRICS_METHODS];
    unsigned queued, running, job_runners;
    double inflight_cost;
};
void rpc_server_metrics(struct rpc_metrics *out, rpc_server *srv);

#endif
