/* rpc_handlers.h: the method handlers, one file per service (rpc_render.c, rpc_jobs.c,
 * rpc_health.c, rpc_info.c). Only rpc_server.c's dispatch table calls them; they call rpc_call.h. */
#ifndef FRACTALD_RPC_HANDLERS_H
#define FRACTALD_RPC_HANDLERS_H

#include "jobs.h"
#include "rpc_call.h"

void rpc_render_accept(struct call *c);     /* Render and RenderStream */
void rpc_health_check(struct call *c);
void rpc_health_watch(struct call *c);
/* A drain is on (srv->shutting_down is set): tells every Health.Watch stream not yet told that
 * the server is NOT_SERVING and keeps it open, so balancers move traffic without reopening
 * streams. Never waits; a stream with a write in flight is told on a later call, so the drain
 * calls it until the listener closes. */
void rpc_health_draining(rpc_server *srv);
/* The listener closes: ends every Health.Watch stream UNAVAILABLE; later watches end at once.
 * Never waits for a stream's writes. */
void rpc_health_shutdown(rpc_server *srv);
/* The client of a Health.Watch stream went away (completion-queue thread). */
void rpc_health_watch_closed(struct call *c);
void rpc_list_devices(struct call *c);
/* rpc_jobs.c */
void rpc_jobs_submit(struct call *c);
void rpc_jobs_get(struct call *c);
void rpc_jobs_cancel(struct call *c);
void rpc_jobs_list(struct call *c);
void rpc_jobs_fetch(struct call *c);
/* Runs one job a render worker took from the store (the worker's slot is `slot`). */
void rpc_jobs_run(rpc_server *srv, struct jobs_work *work, unsigned slot);
void rpc_get_stats(struct call *c);
/* rpc_reflection.c: ServerReflectionInfo (v1 and v1alpha), a bidi stream answered on the
 * completion-queue thread; rpc_reflection_step takes each TAG_READ completion. */
void rpc_reflection_info(struct call *c);
void rpc_reflection_step(struct call *c, int ok);

#endif
