/* engine_cpu.h: the built-in CPU engine, the reference every other engine is tested against.
 * A persistent pool of worker threads computes rectangles of the sample grid (spec.h) with SIMD
 * inner loops, lane refill and blocked escape checks; it computes exactly the function of
 * kernels/escape.h.
 *
 * Exact interior shortcuts (on by default) finish samples that provably never escape without
 * iterating them to max_iter; counts and smooth values stay those of escape.h on every sample:
 *   - Mandelbrot, escape radius >= 2: c well inside the main cardioid or the period-2 bulb
 *     (attracting multiplier |lambda| <= 1 - 2^-8, tested in double at lane refill) is interior;
 *   - every fractal: an orbit whose z (both components bit-equal, in the working precision)
 *     repeats an earlier z is periodic and never escapes (Brent's cycle detection on the z of
 *     block ends).
 * FRACTALD_CPU_SHORTCUTS=0 in the environment, read once by engine_cpu_new, turns them off
 * (brute force, for tests and benchmarks); any other value or none leaves them on. */
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

/* What an engine has done since engine_cpu_new, over every render (engine_cpu_counters). */
struct engine_cpu_counters {
    uint64_t iterations;   /* sum of escape counts of every finished sample */
    uint64_t executed;     /* orbit steps the lanes ran for those samples (== iterations with
                            * the shortcuts off; a step past an escape inside a block is not
                            * counted) */
    uint64_t bulb;         /* samples finished by the cardioid / period-2 bulb test */
    uint64_t cycles;       /* samples finished by cycle detection */
};

/* Starts a pool of `threads` worker threads (0 = one per online CPU).
 * Returns 0 and the engine in *out (caller frees with engine_cpu_free), or ERR_NOMEM. */
int engine_cpu_new(engine_cpu **out, unsigned threads);

/* Stops and joins the workers and frees the engine. Accepts NULL. No render may be in flight. */
void engine_cpu_free(engine_cpu *engine);

/* Number of worker threads. */
unsigned engine_cpu_threads(const engine_cpu *engine);

/* Nonzero when the engine uses the interior shortcuts (FRACTALD_CPU_SHORTCUTS, above). */
int engine_cpu_shortcuts(const engine_cpu *engine);

/* Copies the engine's counters into *out; safe while renders run (each render adds its share
 * when it finishes). */
void engine_cpu_counters(struct engine_cpu_counters *out, engine_cpu *engine);

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
