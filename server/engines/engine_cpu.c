/* engine_cpu.c: the built-in CPU engine: a persistent pthread pool that computes rectangles of the
 * sample grid with SIMD lane machines (GCC vector extensions, one build per instruction set; the
 * intrinsics machines for AVX2 and AVX-512 live in engine_cpu_avx2.c and engine_cpu_avx512.c). */
#ifndef ECPU_TEMPLATE

#include "engine_cpu.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_isa.h"
#include "engine_cpu_internal.h"
#include "err.h"
#include "escape.h"
#include "smooth.h"

/* Iterations between escape checks. A lane idles for up to this many steps after its escape, and
 * settling scans this many saved z values; 8..32 measured alike on workload B, 16 best on A. */
#define ECPU_BLOCK 16

/* Blocks between polls of the cancel flag inside a lane machine (16 * 256 = 4096 iterations of
 * every lane, well under a millisecond). */
#define ECPU_CANCEL_POLL 256

/* A tile is a run of consecutive samples of the rectangle in row-major order. Enough tiles for
 * every worker to take several keeps the end of a render balanced; a floor keeps the claim
 * overhead (one mutex round trip) negligible. */
#define ECPU_TILE_MIN 256u
#define ECPU_TILE_MAX 8192u
#define ECPU_TILES_PER_THREAD 32u

/* Blocks between cycle checks (Brent's algorithm on the z of block ends, engine_cpu.h): a check
 * costs about a dozen vector operations per group, a block about 16 * 9, so checking every 4th
 * block keeps the cost near 1 % where nothing cycles (workloads A, B). */
#define ECPU_CYCLE_EVERY 4

/* Relative margin of the test that lets a lane skip per-iteration escape checks (see
 * lane_safe_limit); fp32 rounding of one step is below 1e-6 relative. */
#define ECPU_SAFE_MARGIN 1e-4

struct engine_cpu {
    pthread_mutex_t lock;
    pthread_cond_t work;            /* a job was queued, or the pool is stopping */
    struct ecpu_job *head, *tail;   /* jobs with unclaimed tiles, served round-robin */
    int stopping;
    unsigned nthreads, started;
    pthread_t *threads;
    ecpu_machine_fn machine_f32, machine_f64;
    int shortcuts;                  /* FRACTALD_CPU_SHORTCUTS != "0" at engine_cpu_new */
    struct engine_cpu_counters counters;   /* under lock */
};

int ecpu_cancel_raised(const struct ecpu_job *job)
{
    return job->cancel && atomic_load_explicit(job->cancel, memory_order_relaxed) != 0;
}

/* Removes job from the queue. Caller holds the lock; job must be queued. */
static void unqueue(struct engine_cpu *engine, struct ecpu_job *job)
{
    struct ecpu_job **link = &engine->head, *prev = NULL;

    while (*link != job) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = job->next;
    if (engine->tail == job)
        engine->tail = prev;
    job->next = NULL;
}

/* Claims the next tile of a queued job into *tile. Caller holds the lock. A job whose last tile
 * goes, or whose cancel flag is up, leaves the queue; the latter yields no tile. Returns 1 when a
 * tile was claimed. */
static int claim_locked(struct engine_cpu *engine, struct ecpu_job *job, uint64_t *tile)
{
    if (ecpu_cancel_raised(job)) {
        job->cancelled = 1;
        job->next_tile = job->ntiles;
        unqueue(engine, job);
        return 0;
    }
    *tile = job->next_tile++;
    if (job->next_tile == job->ntiles)
        unqueue(engine, job);
    return 1;
}

/* Called by a lane machine whose tile ran out of samples: hands it the job's next tile while the
 * job is alone in the queue, so its lanes stay busy across tile boundaries. With other jobs
 * waiting it returns 0, the machine drains and the worker serves the queue round-robin. Sets
 * *aborted when the job was cancelled. */
int ecpu_claim_more(struct engine_cpu *engine, struct ecpu_job *job, uint64_t *tile,
                    int *aborted)
{
    int got = 0;

    pthread_mutex_lock(&engine->lock);
    if (job->next_tile < job->ntiles && engine->head == job && job->next == NULL) {
        got = claim_locked(engine, job, tile);
        if (job->cancelled)
            *aborted = 1;
    }
    pthread_mutex_unlock(&engine->lock);
    return got;
}

/* |c|^2 bound under which a lane needs no escape check inside a block. Mathematically, if
 * |c| <= R^2 - R then every z with |z| > R maps to |z^2 + c| >= |z|^2 - |c| > R: once out, an
 * orbit stays out (or overflows to inf/NaN, which the NaN-aware check also counts), so checking
 * the last z of a block finds every escape inside it. The margin covers rounding. With r2max
 * infinite the only way out is NaN, which is sticky, so every lane is safe. Returns a negative
 * bound (no lane safe) when R <= ~1, where the argument fails for every c. */
static double lane_safe_limit(double r, double r2max)
{
    double lim;

    if (isinf(r2max))
        return INFINITY;
    lim = r * r - r - ECPU_SAFE_MARGIN * r * r;
    return lim > 0 ? lim * lim : -1.0;
}

/* Nonzero when c = (x, y) lies inside the Mandelbrot set's main cardioid or period-2 bulb with
 * the margin ECPU_BULB_MARGIN: the orbit of 0 then converges to an attracting fixed point or
 * 2-cycle with multiplier |lambda| <= 1 - margin, inside |z| < 2, and never escapes. Computed
 * in double from the working-precision c (exact), so the rounding of the test itself is orders
 * of magnitude below the margin. Fixed point: lambda = 1 - sqrt(1 - 4c); 2-cycle:
 * lambda = 4 (c + 1). */
static int in_main_bulbs(double x, double y)
{
    const double r = 1.0 - ECPU_BULB_MARGIN;
    double y2 = y * y, bx = x + 1.0, a, b, m, wr, wi;

    if (16.0 * (bx * bx + y2) <= r * r)
        return 1;
    /* The cardioid lies within x in [-0.75, 0.375], |y| <= 0.65. */
    if (x < -0.75 || x > 0.375 || y2 > 0.65 * 0.65)
        return 0;
    a = 1.0 - 4.0 * x;
    b = -4.0 * y;
    m = sqrt(a * a + b * b);
    wr = sqrt(0.5 * (m + a));       /* sqrt(1 - 4c) = wr + i wi, principal branch (wr >= 0) */
    wi = sqrt(0.5 * (m - a));
    return (1.0 - wr) * (1.0 - wr) + wi * wi <= r * r;
}

/* The lane machines, one per precision and instruction set, come from the template part of this
 * file (below, after #else), included once per instantiation. GROUPS independent vectors hide the
 * ~10-cycle latency of one step; 7 (fp32) and 6 (fp64) were fastest with 16 AVX2 registers (8
 * spills), and the lane bits must fit 64. AVX2 and AVX-512 CPUs run the intrinsics machines of
 * engine_cpu_avx2.c and engine_cpu_avx512.c instead (vector settle and refill); the 32-byte
 * builds here serve the jobs those do not fit (ecpu_avx2_fits, ecpu_avx512_fits). */
#define ECPU_TEMPLATE 1

#define ECPU_REAL float
#define ECPU_IREAL int32_t
#define ECPU_UREAL uint32_t
#define ECPU_SFX f32
#define ECPU_IS_F64 0
#define ECPU_VIEW(job) (&(job)->v32)
#define ECPU_XTAB(job) ((job)->x32)

#if defined(__x86_64__)
#define ECPU_NAME machine_f32_avx2_gv
#define ECPU_ATTR __attribute__((target("avx2")))
#define ECPU_VBYTES 32
#define ECPU_GROUPS 7
#include "engine_cpu.c"
#endif
#define ECPU_NAME machine_f32_base
#define ECPU_ATTR
#define ECPU_VBYTES 16
#define ECPU_GROUPS 7
#include "engine_cpu.c"

#undef ECPU_REAL
#undef ECPU_IREAL
#undef ECPU_UREAL
#undef ECPU_SFX
#undef ECPU_IS_F64
#undef ECPU_VIEW
#undef ECPU_XTAB
#define ECPU_REAL double
#define ECPU_IREAL int64_t
#define ECPU_UREAL uint64_t
#define ECPU_SFX f64
#define ECPU_IS_F64 1
#define ECPU_VIEW(job) (&(job)->v64)
#define ECPU_XTAB(job) ((job)->x64)

#if defined(__x86_64__)
#define ECPU_NAME machine_f64_avx2_gv
#define ECPU_ATTR __attribute__((target("avx2")))
#define ECPU_VBYTES 32
#define ECPU_GROUPS 6
#include "engine_cpu.c"
#endif
#define ECPU_NAME machine_f64_base
#define ECPU_ATTR
#define ECPU_VBYTES 16
#define ECPU_GROUPS 6
#include "engine_cpu.c"

#undef ECPU_TEMPLATE

/* Picks the widest lane machines this CPU runs (cpu_isa.h: FRACTALD_CPU_ISA may ask for
 * narrower ones). */
static void pick_machines(struct engine_cpu *engine)
{
    switch (cpu_isa_widest()) {
#if defined(__x86_64__)
    case CPU_ISA_AVX512:
        engine->machine_f32 = ecpu_machine_f32_avx512;
        engine->machine_f64 = ecpu_machine_f64_avx512;
        break;
    case CPU_ISA_AVX2:
        engine->machine_f32 = ecpu_machine_f32_avx2;
        engine->machine_f64 = ecpu_machine_f64_avx2;
        break;
#endif
    default:
        engine->machine_f32 = machine_f32_base;
        engine->machine_f64 = machine_f64_base;
        break;
    }
}

/* Worker thread: serves the queue round-robin, one tile claim at a time, until stopping. */
static void *worker_main(void *arg)
{
    struct engine_cpu *engine = arg;

    pthread_mutex_lock(&engine->lock);
    for (;;) {
        struct ecpu_job *job;
        struct ecpu_tally t = {0, 0, 0, 0};
        uint64_t tile;
        int aborted = 0, got;

        while (!engine->stopping && engine->head == NULL)
            pthread_cond_wait(&engine->work, &engine->lock);
        if (engine->stopping)
            break;
        job = engine->head;
        /* No tile when the job was cancelled: it left the queue, its caller may be woken. */
        got = claim_locked(engine, job, &tile);
        /* Rotate so that concurrent renders take turns tile by tile. */
        if (got && engine->head == job && job->next != NULL) {
            engine->head = job->next;
            job->next = NULL;
            engine->tail->next = job;
            engine->tail = job;
        }
        if (got)
            job->active++;
        pthread_mutex_unlock(&engine->lock);

        if (got)
            job->machine(engine, job, tile, &t, &aborted);

        pthread_mutex_lock(&engine->lock);
        if (got) {
            job->tally.iterations += t.iterations;
            job->tally.executed += t.executed;
            job->tally.bulb += t.bulb;
            job->tally.cycles += t.cycles;
            job->active--;
        }
        if (aborted && !job->cancelled) {
            job->cancelled = 1;
            if (job->next_tile < job->ntiles) {
                job->next_tile = job->ntiles;
                unqueue(engine, job);
            }
        }
        if (job->next_tile == job->ntiles && job->active == 0)
            pthread_cond_signal(&job->done);
    }
    pthread_mutex_unlock(&engine->lock);
    return NULL;
}

int engine_cpu_new(engine_cpu **out, unsigned threads)
{
    struct engine_cpu *engine = NULL;
    int err = ERR_NOMEM, have_lock = 0, have_cond = 0;

    *out = NULL;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    if ((engine = calloc(1, sizeof(*engine))) == NULL)
        goto done;
    if ((engine->threads = calloc(threads, sizeof(pthread_t))) == NULL)
        goto done;
    if (pthread_mutex_init(&engine->lock, NULL) != 0)
        goto done;
    have_lock = 1;
    if (pthread_cond_init(&engine->work, NULL) != 0)
        goto done;
    have_cond = 1;
    engine->nthreads = threads;
    {
        const char *sc = getenv("FRACTALD_CPU_SHORTCUTS");
        engine->shortcuts = !(sc && strcmp(sc, "0") == 0);
    }
    pick_machines(engine);
    for (; engine->started < threads; engine->started++)
        if (pthread_create(&engine->threads[engine->started], NULL, worker_main, engine) != 0)
            goto done;
    *out = engine;
    engine = NULL;
    err = 0;

done:
    if (engine) {
        if (engine->started > 0) {
            engine_cpu_free(engine);
        } else {
            if (have_cond)
                pthread_cond_destroy(&engine->work);
            if (have_lock)
                pthread_mutex_destroy(&engine->lock);
            free(engine->threads);
            free(engine);
        }
    }
    return err;
}

void engine_cpu_free(engine_cpu *engine)
{
    if (engine == NULL)
        return;
    pthread_mutex_lock(&engine->lock);
    engine->stopping = 1;
    pthread_cond_broadcast(&engine->work);
    pthread_mutex_unlock(&engine->lock);
    for (unsigned i = 0; i < engine->started; i++)
        pthread_join(engine->threads[i], NULL);
    pthread_cond_destroy(&engine->work);
    pthread_mutex_destroy(&engine->lock);
    free(engine->threads);
    free(engine);
}

unsigned engine_cpu_threads(const engine_cpu *engine)
{
    return engine->nthreads;
}

int engine_cpu_shortcuts(const engine_cpu *engine)
{
    return engine->shortcuts;
}

void engine_cpu_counters(struct engine_cpu_counters *out, engine_cpu *engine)
{
    pthread_mutex_lock(&engine->lock);
    *out = engine->counters;
    pthread_mutex_unlock(&engine->lock);
}

/* Fills the read-only part of a job from the spec and rectangle. */
static void job_setup(struct ecpu_job *job, const engine_cpu *engine, const struct render_spec *spec,
                      const struct spec_rect *rect)
{
    uint32_t gw = spec->width * spec->supersample, gh = spec->height * spec->supersample;
    uint64_t per;

    if (spec->precision == SPEC_FP32) {
        /* Every parameter is rounded to float once, then the mapping runs in float (escape.h). */
        esc_view_init_f32(&job->v32, (int)spec->fractal, (float)spec->c_re, (float)spec->c_im,
                          (float)spec->center_re, (float)spec->center_im, (float)spec->view_width,
                          gw, gh, (float)spec->escape_radius, spec->max_iter);
        job->machine = engine->machine_f32;
        job->safe_c2 = lane_safe_limit((double)(float)spec->escape_radius, job->v32.r2max);
        job->bulbs = job->v32.r2max >= 4.0f;
    } else {
        esc_view_init_f64(&job->v64, (int)spec->fractal, spec->c_re, spec->c_im, spec->center_re,
                          spec->center_im, spec->view_width, gw, gh, spec->escape_radius,
                          spec->max_iter);
        job->machine = engine->machine_f64;
        job->safe_c2 = lane_safe_limit(spec->escape_radius, job->v64.r2max);
        job->bulbs = job->v64.r2max >= 4.0;
    }
#if defined(__x86_64__)
    /* The intrinsics machines keep positions and counts in 32-bit lanes; a job too big for them
     * (never one of render_run's bands) runs on this file's AVX2 build, which has no such limit. */
    if (!ecpu_avx512_fits((uint64_t)rect->width * rect->height, spec->max_iter)) {
        if (job->machine == ecpu_machine_f32_avx512)
            job->machine = machine_f32_avx2_gv;
        else if (job->machine == ecpu_machine_f64_avx512)
            job->machine = machine_f64_avx2_gv;
    }
    if (!ecpu_avx2_fits((uint64_t)rect->width * rect->height, spec->max_iter)) {
        if (job->machine == ecpu_machine_f32_avx2)
            job->machine = machine_f32_avx2_gv;
        else if (job->machine == ecpu_machine_f64_avx2)
            job->machine = machine_f64_avx2_gv;
    }
#endif
    /* The orbit of 0 for c in the cardioid or the bulb stays within |z| < 2, so with R >= 2 it
     * never escapes; a smaller R can see it leave. */
    job->bulbs = job->bulbs && engine->shortcuts && spec->fractal == SPEC_MANDELBROT;
    job->cycles = engine->shortcuts;
    job->rect_x = rect->x;
    job->rect_y = rect->y;
    job->rect_w = rect->width;
    job->nsamples = (uint64_t)rect->width * rect->height;
    per = job->nsamples / ((uint64_t)engine->nthreads * ECPU_TILES_PER_THREAD);
    job->tile_size = per < ECPU_TILE_MIN ? ECPU_TILE_MIN : per > ECPU_TILE_MAX ? ECPU_TILE_MAX : per;
    job->ntiles = (job->nsamples + job->tile_size - 1) / job->tile_size;
}

int engine_cpu_render(engine_cpu *engine, const struct render_spec *spec,
                      const struct spec_rect *rect, uint32_t *counts, float *smooth,
                      const atomic_int *cancel, struct engine_cpu_stats *stats)
{
    struct ecpu_job job;
    int err = 0, have_cond = 0;

    memset(&job, 0, sizeof(job));
    if (stats)
        memset(stats, 0, sizeof(*stats));
    job.counts = counts;
    job.smooth = smooth;
    job.cancel = cancel;
    if (ecpu_cancel_raised(&job)) {
        err = ERR_CANCELLED;
        goto done;
    }
    if (rect->width == 0 || rect->height == 0)
        goto done;
    job_setup(&job, engine, spec, rect);
    /* The column mapping once per render rather than once per sample: refill then loads x
     * (the same value esc_x computes). ECPU_XTAB_PAD zeros follow the row: the AVX2 machine
     * loads a whole vector from any column and permutes the entries it needs into place. */
    if (spec->precision == SPEC_FP32) {
        if ((job.x32 = calloc((size_t)rect->width + ECPU_XTAB_PAD, sizeof(float))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        for (uint32_t i = 0; i < rect->width; i++)
            job.x32[i] = esc_x_f32(&job.v32, rect->x + i);
    } else {
        if ((job.x64 = calloc((size_t)rect->width + ECPU_XTAB_PAD, sizeof(double))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        for (uint32_t i = 0; i < rect->width; i++)
            job.x64[i] = esc_x_f64(&job.v64, rect->x + i);
    }
    if (pthread_cond_init(&job.done, NULL) != 0) {
        err = ERR_NOMEM;
        goto done;
    }
    have_cond = 1;

    pthread_mutex_lock(&engine->lock);
    if (engine->tail)
        engine->tail->next = &job;
    else
        engine->head = &job;
    engine->tail = &job;
    pthread_cond_broadcast(&engine->work);
    while (job.next_tile < job.ntiles || job.active > 0)
        pthread_cond_wait(&job.done, &engine->lock);
    engine->counters.iterations += job.tally.iterations;
    engine->counters.executed += job.tally.executed;
    engine->counters.bulb += job.tally.bulb;
    engine->counters.cycles += job.tally.cycles;
    pthread_mutex_unlock(&engine->lock);

    if (stats) {
        stats->iterations = job.tally.iterations;
        stats->tiles = (uint32_t)job.ntiles;
    }
    if (job.cancelled)
        err = ERR_CANCELLED;

done:
    if (have_cond)
        pthread_cond_destroy(&job.done);
    free(job.x32);
    free(job.x64);
    return err;
}

#else /* ECPU_TEMPLATE */

/*
 * Template part: one lane machine. Parameters: ECPU_NAME (function name), ECPU_ATTR (target
 * attribute), ECPU_REAL / ECPU_IREAL / ECPU_UREAL (float, and the signed and unsigned integers
 * of its width), ECPU_SFX (f32/f64,
 * picks the escape.h functions), ECPU_VIEW(job), ECPU_VBYTES (bytes per vector), ECPU_GROUPS
 * (independent vectors, enough to cover the ~10-cycle latency of one step).
 *
 * The machine keeps LANES = GROUPS * VBYTES / sizeof(REAL) samples in flight. It runs blocks of
 * ECPU_BLOCK steps with no branch, saving every z of the block, then checks the last z. A lane
 * that escaped (or reached max_iter) inside the block is settled by applying escape.h's check to
 * its saved z values in order (vector-wide, one group at a time), so its count and final z are
 * exactly those of the scalar reference; then it takes the next sample at once (lane refill). Lanes whose c
 * could bring an escaped orbit back inside R (see lane_safe_limit) switch the whole machine to
 * blocks that also accumulate the check at every step. Every ECPU_CYCLE_EVERY blocks the z of
 * every lane is compared with its saved z (cycle detection); with the shortcuts on, Mandelbrot
 * samples inside the cardioid or the period-2 bulb are written out at refill without a lane.
 */

/* ECPU_MOVMSK(m): bits of the lanes where the comparison mask m is true, in one instruction where
 * SSE/AVX have one (vps/vpd: the machine's float/double vector types of the same width). AVX-512
 * has no movmsk and other CPUs no x86 builtins: there the machine collects the bits element by
 * element. */
#if defined(__x86_64__) && ECPU_VBYTES == 32 && !ECPU_IS_F64
#define ECPU_MOVMSK(m) __builtin_ia32_movmskps256((vps)(m))
#elif defined(__x86_64__) && ECPU_VBYTES == 32
#define ECPU_MOVMSK(m) __builtin_ia32_movmskpd256((vpd)(m))
#elif defined(__x86_64__) && ECPU_VBYTES == 16 && !ECPU_IS_F64
#define ECPU_MOVMSK(m) __builtin_ia32_movmskps((vps)(m))
#elif defined(__x86_64__) && ECPU_VBYTES == 16
#define ECPU_MOVMSK(m) __builtin_ia32_movmskpd((vpd)(m))
#endif

#define ECPU_CAT_(a, b) a##b
#define ECPU_CAT(a, b) ECPU_CAT_(a, b)
#define ECPU_ESC(fn) ECPU_CAT(ECPU_CAT(esc_, fn), ECPU_CAT(_, ECPU_SFX))

ECPU_ATTR
static void ECPU_NAME(struct engine_cpu *engine, struct ecpu_job *job, uint64_t tile,
                      struct ecpu_tally *tally, int *aborted)
{
    typedef ECPU_REAL vreal __attribute__((vector_size(ECPU_VBYTES)));
    typedef ECPU_IREAL vmask __attribute__((vector_size(ECPU_VBYTES)));
    typedef ECPU_UREAL vage __attribute__((vector_size(ECPU_VBYTES)));
    typedef float vps __attribute__((vector_size(ECPU_VBYTES), unused));
    typedef double vpd __attribute__((vector_size(ECPU_VBYTES), unused));
    enum {
        W = ECPU_VBYTES / sizeof(ECPU_REAL),
        G = ECPU_GROUPS,
        LANES = W * G,
        K = ECPU_BLOCK,
    };
    _Static_assert(LANES <= 64, "lane bits live in one uint64_t");
    const ECPU_CAT(esc_view_, ECPU_SFX) *v = ECPU_VIEW(job);
    const ECPU_REAL r2max = v->r2max, *const xtab = ECPU_XTAB(job);
    const uint32_t max_iter = v->max_iter, w = job->rect_w;
    const int mandel = v->fractal == ESC_MANDELBROT, bulbs = job->bulbs, cycles = job->cycles;
    vreal zr[G], zi[G], cr[G], ci[G];
    vreal hr[K][G], hi[K][G];            /* z at the start of each step of the current block */
    vreal sr[G], si[G];                  /* cycle detection: the z saved last, per lane */
    vage birth[G];                       /* cycle detection: the check count at refill */
    uint64_t start[LANES], due[LANES], pos[LANES];
    unsigned char unsafe[LANES];
    unsigned short todo[LANES];
    vmask first[G];
    unsigned ntodo;
    uint64_t iter = 0, min_due = UINT64_MAX, feed = 0, feed_end = 0, blocks = 0, live = 0;
    uint64_t sum = 0, executed = 0, nbulb = 0, ncycle = 0;
    uint32_t col = 0, row = 0, y_row = UINT32_MAX;
    ECPU_UREAL checks = 0;
    ECPU_REAL y_val = 0;
    unsigned alive = 0, nunsafe = 0;
    int have_feed = 1;
    struct ECPU_CAT(smooth_batch_, ECPU_SFX) smooth_b;

    feed = tile * job->tile_size;
    feed_end = feed + job->tile_size < job->nsamples ? feed + job->tile_size : job->nsamples;
    col = (uint32_t)(feed % w);
    row = (uint32_t)(feed / w);
    memset(unsafe, 0, sizeof(unsafe));
    /* Smooth values go out in batches, through smooth.h's vectorised pass. */
    ECPU_CAT(smooth_batch_init_, ECPU_SFX)(&smooth_b, v, job->smooth);

/* Gives lane l (group g, element e) the next sample, or parks it (z = c = 0 never escapes) when
 * the job has no more tiles for this machine. Samples the cardioid / bulb test finishes are
 * written out here and never take a lane. */
#define ECPU_REFILL(l, g, e)                                                                      \
    do {                                                                                          \
        if (unsafe[l]) {                                                                          \
            unsafe[l] = 0;                                                                        \
            nunsafe--;                                                                            \
        }                                                                                         \
        for (;;) {                                                                                \
            ECPU_REAL x_, y_;                                                                     \
            uint64_t p_;                                                                          \
            double c2_;                                                                           \
            if (feed == feed_end && have_feed) {                                                  \
                have_feed = ecpu_claim_more(engine, job, &tile, aborted);                         \
                if (have_feed) {                                                                  \
                    feed = tile * job->tile_size;                                                 \
                    feed_end = feed + job->tile_size < job->nsamples ? feed + job->tile_size      \
                                                                     : job->nsamples;             \
                    col = (uint32_t)(feed % w);                                                   \
                    row = (uint32_t)(feed / w);                                                   \
                }                                                                                 \
            }                                                                                     \
            if (feed == feed_end) {                                                               \
                zr[g][e] = zi[g][e] = cr[g][e] = ci[g][e] = 0;                                    \
                due[l] = UINT64_MAX;                                                              \
                live &= ~((uint64_t)1 << (l));                                                    \
                break;                                                                            \
            }                                                                                     \
            x_ = xtab[col];                                                                       \
            if (row != y_row) {                                                                   \
                y_row = row;                                                                      \
                y_val = ECPU_ESC(y)(v, job->rect_y + row);                                        \
            }                                                                                     \
            y_ = y_val;                                                                           \
            p_ = feed++;                                                                          \
            if (++col == w) {                                                                     \
                col = 0;                                                                          \
                row++;                                                                            \
            }                                                                                     \
            if (bulbs && in_main_bulbs((double)x_, (double)y_)) {                                 \
                sum += max_iter;                                                                  \
                nbulb++;                                                                          \
                if (job->counts)                                                                  \
                    job->counts[p_] = max_iter;                                                   \
                if (job->smooth)                                                                  \
                    job->smooth[p_] = -1.0f;                                                      \
                continue;                                                                         \
            }                                                                                     \
            pos[l] = p_;                                                                          \
            if (mandel) {                                                                         \
                zr[g][e] = 0;                                                                     \
                zi[g][e] = 0;                                                                     \
                cr[g][e] = x_;                                                                    \
                ci[g][e] = y_;                                                                    \
            } else {                                                                              \
                zr[g][e] = x_;                                                                    \
                zi[g][e] = y_;                                                                    \
                cr[g][e] = v->c_re;                                                               \
                ci[g][e] = v->c_im;                                                               \
            }                                                                                     \
            sr[g][e] = zr[g][e];                                                                  \
            si[g][e] = zi[g][e];                                                                  \
            birth[g][e] = checks;                                                                 \
            start[l] = iter;                                                                      \
            due[l] = iter + max_iter;                                                             \
            c2_ = (double)cr[g][e] * cr[g][e] + (double)ci[g][e] * ci[g][e];                      \
            if (!(c2_ <= job->safe_c2)) {                                                         \
                unsafe[l] = 1;                                                                    \
                nunsafe++;                                                                        \
            }                                                                                     \
            live |= (uint64_t)1 << (l);                                                           \
            alive++;                                                                              \
            break;                                                                                \
        }                                                                                         \
    } while (0)

    for (unsigned l = 0; l < LANES; l++) {
        ECPU_REFILL(l, l / W, l % W);
        if (due[l] < min_due)
            min_due = due[l];
    }

    while (alive > 0) {
        vreal a[G], b[G], x2, y2, t;
        vmask ok[G];
        uint64_t flagged = 0, cycled = 0, settle;

        if (*aborted)
            break;
        if (++blocks % ECPU_CANCEL_POLL == 0 && ecpu_cancel_raised(job)) {
            *aborted = 1;
            break;
        }
#pragma GCC unroll 16
        for (int g = 0; g < G; g++) {
            a[g] = zr[g];
            b[g] = zi[g];
            ok[g] = (vmask){0} - 1;
        }
        /* t + t is written t * 2 in odd groups (the same value, always): it moves work from the
         * adders to the multipliers, which otherwise idle for a quarter of the step. */
        if (nunsafe == 0) {
            for (int k = 0; k < K; k++) {
#pragma GCC unroll 16
                for (int g = 0; g < G; g++) {
                    hr[k][g] = a[g];
                    hi[k][g] = b[g];
                    x2 = a[g] * a[g];
                    y2 = b[g] * b[g];
                    t = a[g] * b[g];
                    b[g] = (g & 1 ? t * 2 : t + t) + ci[g];
                    a[g] = x2 - y2 + cr[g];
                }
            }
        } else {
            for (int k = 0; k < K; k++) {
#pragma GCC unroll 16
                for (int g = 0; g < G; g++) {
                    hr[k][g] = a[g];
                    hi[k][g] = b[g];
                    x2 = a[g] * a[g];
                    y2 = b[g] * b[g];
                    ok[g] &= (x2 + y2 <= r2max);
                    t = a[g] * b[g];
                    b[g] = (g & 1 ? t * 2 : t + t) + ci[g];
                    a[g] = x2 - y2 + cr[g];
                }
            }
        }
        iter += K;
#pragma GCC unroll 16
        for (int g = 0; g < G; g++) {
            x2 = a[g] * a[g];
            y2 = b[g] * b[g];
            /* Lanes out of R (or NaN) now, or (careful blocks) out at some step. */
            vmask out = ~(ok[g] & (x2 + y2 <= r2max));
#ifdef ECPU_MOVMSK
            flagged |= (uint64_t)(unsigned)ECPU_MOVMSK(out) << (g * W);
#else
            for (unsigned e = 0; e < W; e++)
                flagged |= (uint64_t)(out[e] & 1) << (g * W + e);
#endif
            zr[g] = a[g];
            zi[g] = b[g];
        }

        /* Cycle detection (Brent): a lane not flagged has every z so far inside R (once out a
         * safe lane stays out; careful blocks check every step), so a z bit-equal to the saved
         * one closes a cycle of inside points and the orbit never escapes. The saved z is
         * refreshed when the lane's age in checks is a power of two, so a cycle of any period
         * is found once the window (doubling) covers it past the pre-period. Ages count modulo
         * 2^bits, which they never reach (max_iter < 2^32 steps). */
        if (cycles && blocks % ECPU_CYCLE_EVERY == 0) {
            checks++;
#pragma GCC unroll 16
            for (int g = 0; g < G; g++) {
                vmask eq = ((vmask)zr[g] == (vmask)sr[g]) & ((vmask)zi[g] == (vmask)si[g]);
                vage age = checks - birth[g];
                vmask save = (vmask)((age & (age - 1)) == 0);

                sr[g] = (vreal)(((vmask)zr[g] & save) | ((vmask)sr[g] & ~save));
                si[g] = (vreal)(((vmask)zi[g] & save) | ((vmask)si[g] & ~save));
#ifdef ECPU_MOVMSK
                cycled |= (uint64_t)(unsigned)ECPU_MOVMSK(eq) << (g * W);
#else
                for (unsigned e = 0; e < W; e++)
                    cycled |= (uint64_t)(eq[e] & 1) << (g * W + e);
#endif
            }
            /* Parked lanes (z = c = 0) cycle at once: only lanes holding a sample count. */
            cycled &= live & ~flagged;
        }
        if (!(flagged | cycled) && iter < min_due)
            continue;

        /* List the lanes to settle: those flagged by the check or found cycling, then (rarely)
         * those that reached max_iter in this block, recomputing min_due over the others. */
        ntodo = 0;
        settle = flagged | cycled;
        for (uint64_t bits = settle; bits; bits &= bits - 1)
            todo[ntodo++] = (unsigned short)__builtin_ctzll(bits);
        if (iter >= min_due) {
            min_due = UINT64_MAX;
            for (unsigned l = 0; l < LANES; l++) {
                if (settle >> l & 1)
                    continue;
                if (due[l] <= iter) {
                    todo[ntodo++] = (unsigned short)l;
                    flagged |= (uint64_t)1 << l;
                } else if (due[l] < min_due) {
                    min_due = due[l];
                }
            }
        }

        /* For each group holding a flagged lane, first[g] = the step k (0..K) of the first
         * escaped z among the saved ones, K + 1 if none: the count of leading steps whose z passed
         * the escape check of escape.h, computed for all lanes of the group at once. */
#pragma GCC unroll 16
        for (int g = 0; g < G; g++) {
            vmask inside = (vmask){0} - 1;

            if (!(flagged >> (g * W) & (((uint64_t)1 << W) - 1)))
                continue;
            first[g] = (vmask){0};
            if (nunsafe == 0) {
                /* Safe lanes stay out once out, so the steps inside R come first: counting
                 * them needs no running AND, and the two sums halve the dependency chain. */
                vmask c0 = (vmask){0}, c1 = (vmask){0};
                for (int k = 0; k < K; k += 2) {
                    c0 -= (hr[k][g] * hr[k][g] + hi[k][g] * hi[k][g] <= r2max);
                    c1 -= (hr[k + 1][g] * hr[k + 1][g] + hi[k + 1][g] * hi[k + 1][g] <= r2max);
                }
                /* A flagged lane has its current z out, so it counts K at most (and an
                 * unflagged one needs no first). */
                first[g] = c0 + c1;
                continue;
            }
            for (int k = 0; k < K; k++) {
                inside &= (hr[k][g] * hr[k][g] + hi[k][g] * hi[k][g] <= r2max);
                first[g] -= inside;
            }
            inside &= (zr[g] * zr[g] + zi[g] * zi[g] <= r2max);
            first[g] -= inside;
        }

        for (unsigned i = 0; i < ntodo; i++) {
            unsigned l = todo[i], g = l / W, e = l % W;
            uint64_t n0 = iter - K - start[l];
            uint32_t n = max_iter;
            ECPU_REAL x = 0, y = 0;

            if (!(flagged >> l & 1)) {
                /* Cycling: interior, finished after iter - start steps (or max_iter, if it got
                 * there first). */
                executed += n0 + K < max_iter ? n0 + K : max_iter;
                ncycle++;
            } else {
                uint64_t k = (uint64_t)first[g][e];

                if (n0 + k < max_iter) {
                    if (k > K) {
                        /* Unreachable: a flagged lane's escape is among the z just checked.
                         * Keep the lane running rather than write a wrong count. */
                        if (due[l] < min_due)
                            min_due = due[l];
                        continue;
                    }
                    /* z_{n0 + k} is hr/hi[k] for k < K and the current z for k == K. */
                    n = (uint32_t)(n0 + k);
                    x = k < K ? hr[k][g][e] : zr[g][e];
                    y = k < K ? hi[k][g][e] : zi[g][e];
                }
                executed += n;
            }
            sum += n;
            if (job->counts)
                job->counts[pos[l]] = n;
            if (job->smooth)
                ECPU_CAT(smooth_batch_add_, ECPU_SFX)(&smooth_b, pos[l], n, x, y, cr[g][e],
                                                      ci[g][e]);
            alive--;
            ECPU_REFILL(l, g, e);
            if (due[l] < min_due)
                min_due = due[l];
        }
    }
#undef ECPU_REFILL
    if (job->smooth)
        ECPU_CAT(smooth_batch_flush_, ECPU_SFX)(&smooth_b);
    tally->iterations += sum;
    tally->executed += executed;
    tally->bulb += nbulb;
    tally->cycles += ncycle;
}

#undef ECPU_MOVMSK
#undef ECPU_CAT_
#undef ECPU_CAT
#undef ECPU_ESC
#undef ECPU_NAME
#undef ECPU_ATTR
#undef ECPU_VBYTES
#undef ECPU_GROUPS

#endif /* ECPU_TEMPLATE */
