/* http.h: fractald on the web: a second listener (--http-listen) serving the same renders over
 * HTTP/1.1: XYZ map tiles, POST /v1/render, the submit-and-poll jobs as REST, devices, stats,
 * Prometheus metrics, health, and a map viewer at /. It shares the gRPC server's render queue,
 * budgets, per-client shares, tokens, job store and image cache (rpc.h). */
#ifndef FRACTALD_HTTP_H
#define FRACTALD_HTTP_H

#include <stddef.h>

#include "config.h"
#include "devices.h"
#include "imgcache.h"
#include "jobs.h"
#include "rpc.h"
#include "sched.h"

typedef struct http_server http_server;

/* What the listener serves from; everything must outlive it. */
struct http_deps {
    const struct config *cfg;
    rpc_server *rpc;            /* the render queue, tokens and counters it shares */
    struct devices *devs;
    jobs_store *jobs;           /* NULL: jobs disabled (the /v1/jobs routes answer 503) */
    sched *sched;
    imgcache *cache;            /* may be NULL or hold nothing */
};

/* Binds cfg->http_listen (HOST:PORT; port 0 picks one) and starts serving, over TLS when
 * cfg->tls_cert is set. *port receives the bound port. Returns 0 and the listener in *out, or
 * ERR_UNAVAILABLE (cannot bind), ERR_INVALID (unreadable certificate) or ERR_NOMEM, with a line
 * in msg. */
int http_server_start(http_server **out, int *port, const struct http_deps *deps, char *msg, size_t msglen);

/* The start of the drain (SIGTERM): /readyz answers 503 and every route but /healthz and /readyz
 * answers 503 UNAVAILABLE from now on; renders already accepted go on, and are cancelled once
 * grace_ms have passed. Returns once no request is using the gRPC server any more, so the caller
 * may stop it next (rpc_server_stop waits for the accepted renders). Accepts NULL. */
void http_server_drain(http_server *h, unsigned grace_ms);

/* Waits, until the drain's deadline, for the replies still being sent (a render that finished in
 * the grace period reaches its client whole), then closes the listener and every connection,
 * joins its threads and frees it. Call after
 * rpc_server_stop (or before it when the drain never began) and before the job store closes.
 * Accepts NULL. */
void http_server_stop(http_server *h);

#endif
