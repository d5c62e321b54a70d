/* engine_cpu_internal.h: what the CPU engine's lane machines share with its pool (engine_cpu.c):
 * the job a render becomes, the tally a machine returns, tile claiming, the cancel check and the
 * cardioid / bulb margin. Only the files of the CPU engine include it. */
#ifndef FRACTALD_ENGINE_CPU_INTERNAL_H
#define FRACTALD_ENGINE_CPU_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "escape.h"

/* The cardioid / bulb shortcut takes c only where the attracting cycle's multiplier has
 * |lambda| <= 1 - ECPU_BULB_MARGIN: on the boundary itself (|lambda| = 1, e.g. the cusps at 0.25
 * and -0.75) orbits converge so slowly that rounding could still matter, so the thin shell
 * next to it is iterated (and usually caught by cycle detection) instead. */
#define ECPU_BULB_MARGIN (1.0 / 256)

/* Entries past the last column of a job's x table (x32 / x64), readable and zero: a vector of
 * 8 floats loaded at any column stays inside the table. */
#define ECPU_XTAB_PAD 8

struct engine_cpu;
struct ecpu_job;

/* What a lane machine did (struct engine_cpu_counters, for the samples it finished). */
struct ecpu_tally {
    uint64_t iterations, executed, bulb, cycles;
};

/* A lane machine: computes tile `tile` of the job and, while the job is the only one queued,
 * further tiles it claims itself. Adds what it did for the samples it finished to *tally; sets
 * *aborted when it stopped because the job's cancel flag was raised. */
typedef void (*ecpu_machine_fn)(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                                struct ecpu_tally *tally, int *aborted);

/* One engine_cpu_render call. Lives on the caller's stack; queued while it has unclaimed tiles. */
struct ecpu_job {
    struct ecpu_job *next;          /* queue link, under engine->lock */

    /* Read-only while the job is queued or worked on. */
    ecpu_machine_fn machine;
    esc_view_f32 v32;
    esc_view_f64 v64;
    double safe_c2;                 /* lanes with |c|^2 <= this may skip per-iteration checks */
    int bulbs;                      /* take the cardioid / bulb shortcut at refill */
    int cycles;                     /* detect cycles */
    uint32_t rect_x, rect_y, rect_w;
    float *x32;                     /* x of every column of the rectangle (fp32 jobs), then */
    double *x64;                    /* ECPU_XTAB_PAD zeros; the same for fp64 jobs */
    uint64_t nsamples, tile_size;
    uint64_t ntiles;
    uint32_t *counts;
    float *smooth;
    const atomic_int *cancel;

    /* Under engine->lock. */
    uint64_t next_tile;             /* == ntiles once every tile is claimed (or on cancel) */
    unsigned active;                /* workers inside a lane machine for this job */
    int cancelled;
    struct ecpu_tally tally;
    pthread_cond_t done;            /* signalled when next_tile == ntiles and active == 0 */
};

/* Nonzero when the job's cancel flag is up. */
int ecpu_cancel_raised(const struct ecpu_job *job);

/* Called by a lane machine whose tile ran out of samples: hands it the job's next tile in *tile
 * while the job is alone in the queue, so its lanes stay busy across tile boundaries. With other
 * jobs waiting it returns 0, the machine drains and the worker serves the queue round-robin. Sets
 * *aborted when the job was cancelled. */
int ecpu_claim_more(struct engine_cpu *engine, struct ecpu_job *job, uint64_t *tile, int *aborted);

#if defined(__x86_64__)
/* The AVX-512 lane machines (engine_cpu_avx512.c): per-step escape checks in mask registers and
 * vector refill. They need positions and counts that fit 32 bits: ecpu_avx512_fits says whether
 * a job qualifies (else the engine runs engine_cpu.c's AVX2 build). */
void ecpu_machine_f32_avx512(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                             struct ecpu_tally *tally, int *aborted);
void ecpu_machine_f64_avx512(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                             struct ecpu_tally *tally, int *aborted);
int ecpu_avx512_fits(uint64_t nsamples, uint32_t max_iter);

/* The AVX2 lane machines (engine_cpu_avx2.c): counts in integer vectors (per step, or from the
 * saved z of unchecked batches), vector settle and refill through movemask bits. The same limits as the AVX-512 machines: ecpu_avx2_fits says
 * whether a job qualifies (else the engine runs engine_cpu.c's AVX2 build). */
void ecpu_machine_f32_avx2(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                           struct ecpu_tally *tally, int *aborted);
void ecpu_machine_f64_avx2(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                           struct ecpu_tally *tally, int *aborted);
int ecpu_avx2_fits(uint64_t nsamples, uint32_t max_iter);
#endif

#endif
