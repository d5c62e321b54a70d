/* rpc.h: fractald's gRPC front end: one completion-queue thread that never blocks, answering cheap
 * calls inline and handing renders to a bounded pool of render workers. The only module that
 * includes grpc headers. */
#ifndef FRACTALD_RPC_H
#define FRACTALD_RPC_H

#include <stddef.h>

#include "config.h"
#include "devices.h"
#include "engine_cpu.h"

typedef struct rpc_server rpc_server;

/* Binds cfg->listen, starts the completion-queue thread and the render workers, and begins
 * serving. The config, engine and devices must outlive the server. *port receives the bound
 * port (useful with port 0). Returns 0 and the server in *out, or ERR_UNAVAILABLE when the address
 * cannot be bound (taken, malformed), ERR_NOMEM or ERR_INTERNAL, with a line in msg. */
int rpc_server_start(rpc_server **out, int *port, const struct config *cfg, engine_cpu *engine,
                     struct devices *devs, char *msg, size_t msglen);

/* Graceful stop: health turns NOT_SERVING, the listener closes, in-flight calls get grace_ms to
 * finish and are then cancelled; returns when every call is released and every thread joined,
 * and frees the server. Accepts NULL. */
void rpc_server_stop(rpc_server *srv, unsigned grace_ms);

#endif
