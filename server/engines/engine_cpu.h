/* engine_cpu.h: the built-in CPU engine, the reference every other engine is tested against.
 * A persistent pool of worker threads computes rectangles of the sample grid (spec.h) with SIMD
 * inner loops, lane refill and blocked escape checks; it computes exactly the function of
 * kernels/escape.h. */
#ifndef FRACTALD_ENGINE_CPU_H
#define FRACTALD_ENGINE_CPU_H

#include <stdatomic.h>
#include <stdint.h>

#include "spec.h"

typedef struct engine_cpu engine_cpu;

/* What one engine_cpu_render call did. */
struct engine_cpu_stats {
    uint64_t iterations;   /* sum of escape counts over the rectangle's samples */
    uint32_t tiles;        /* pieces the rectangle was cut into */
};

/* Starts a pool of `threads` worker threads (0 = one per online CPU).
 * Returns 0 and the engine in *out (caller frees with engine_cpu_free), or ERR_NOMEM. */
int engine_cpu_new(engine_cpu **out, unsigned threads);

/* Stops and joins the workers and frees the engine. Accepts NULL. No render may be in flight. */
void engine_cpu_free(engine_cpu *engine);

/* Number of worker threads. */
unsigned engine_cpu_threads(const engine_cpu *engine);

/* Computes the samples of `rect`, a rectangle of the spec's sample grid (coordinates in samples,
 * not pixels: the grid is (width*supersample) x (height*supersample)), in spec->precision.
 * Writes row-major, rect->width per row:
 *   counts[k]: escape count n (max_iter for interior samples), if counts is not NULL;
 *   smooth[k]: smooth value mu = n + 1 - log2(ln|z_n| / ln R) clamped at 0, or -1 for interior,
 *              if smooth is not NULL.
 * Blocks until done; several threads may call it at once (their tiles share the pool).
 * If `cancel` is not NULL it is polled between tiles: once nonzero the call returns ERR_CANCELLED
 * soon, leaving the outputs partly written. Returns 0, ERR_CANCELLED or ERR_NOMEM.
 * stats may be NULL. */
int engine_cpu_render(engine_cpu *engine, const struct render_spec *spec,
                      const struct spec_rect *rect, uint32_t *counts, float *smooth,
                      const atomic_int *cancel, struct engine_cpu_stats *stats);

#endif
