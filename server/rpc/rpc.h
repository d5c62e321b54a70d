/* rpc.h: fractald's gRPC front end: one completion-queue thread that never blocks, answering cheap
 * calls inline and handing renders to a bounded pool of render workers. The only module that
 * includes grpc headers. */
#ifndef FRACTALD_RPC_H
#define FRACTALD_RPC_H

#include <stddef.h>

#include "config.h"
#include "devices.h"
#include "engine_cpu.h"
#include "jobs.h"
#include "sched.h"

typedef struct rpc_server rpc_server;

/* What the server computes with and keeps jobs in; everything must outlive the server. */
struct rpc_deps {
    const struct config *cfg;
    engine_cpu *engine;
    struct devices *devs;
    jobs_store *jobs;           /* NULL: jobs disabled (SubmitJob and friends answer UNAVAILABLE) */
    sched *sched;               /* computes every render over the usable devices */
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

#endif
