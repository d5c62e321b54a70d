/* workpool.h: a small parallel-for over a persistent pool of helper threads; the calling thread
 * works on its own loop too, so a pool of n helpers runs a loop on up to n + 1 threads. Used to
 * colour and deflate a band on more than the render worker's one thread. */
#ifndef FRACTALD_WORKPOOL_H
#define FRACTALD_WORKPOOL_H

#include <stddef.h>

typedef struct workpool workpool;

/* One iteration of a loop: index is 0..count-1. Iterations of one loop may run at once on
 * different threads, in any order. */
typedef void (*workpool_fn)(void *ctx, size_t index);

/* Starts `helpers` helper threads (0 is allowed: every loop then runs on its caller).
 * Returns 0 and the pool in *out (free with workpool_free), or ERR_NOMEM. */
int workpool_new(workpool **out, unsigned helpers);

/* Stops and joins the helpers and frees the pool. Accepts NULL. No loop may be running. */
void workpool_free(workpool *pool);

/* Runs fn(ctx, i) for i in 0..count-1 and returns once all have returned. pool may be NULL (the
 * loop runs on the caller). Several threads may run loops at once: the helpers take iterations
 * of the queued loops first come first served, and each caller works on its own loop, so a loop
 * always progresses even when every helper is busy elsewhere. Cannot fail. */
void workpool_run(workpool *pool, size_t count, workpool_fn fn, void *ctx);

/* The process-wide pool: one helper per online CPU but one, started on first use and never
 * stopped. NULL if it could not be started (loops then run on their callers). */
workpool *workpool_shared(void);

#endif
