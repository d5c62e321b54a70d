/* smooth.h: the smooth value of docs/MATH.md ("The smooth value"), one function for every engine:
 * from a finished sample's escape count and final z, on the host. A scalar reference, and a
 * vectorised pass over runs of escaped samples (batches for the CPU engine's lanes, rectangles
 * for the OpenCL engine's read-back) that computes the same bits. */
#ifndef FRACTALD_SMOOTH_H
#define FRACTALD_SMOOTH_H

#include <stddef.h>
#include <stdint.h>

#include "escape.h"

/*
 * The definition, for a sample with escape count n < max_iter whose escaped z_n and c (Julia: the
 * constant; Mandelbrot: the sample's own coordinate) are in the working precision REAL:
 *
 *   1. Up to SMOOTH_EXTRA_MAX further steps, in REAL, with escape.h's step (ESC_STEP): while
 *      k < SMOOTH_EXTRA_MAX and x2 + y2 <= SMOOTH_BOUND (x2 = zr*zr, y2 = zi*zi of the current z),
 *      step and k += 1. The escape count is not changed; z_{n+k} is the z it ends on.
 *   2. In double: q = zr*zr + zi*zi of z_{n+k} (each component converted to double first, exact
 *      for fp32), L = ln q, y = L * (1 / ln r2max) (r2max = R*R in REAL, the escape check's
 *      bound; the reciprocal rounded once per render: a multiply costs a fraction of a divide),
 *          mu = ((n + k) + 1) - ln(y) * (1 / ln 2)
 *      with ln the project's logarithm (platform/fastlog.h), 1 / ln 2 the double nearest to it,
 *      then clamped to [0, (n + k) + 1]: NaN, negative values, and any q or y that is not
 *      finite and positive (an orbit that overflowed) give 0. Rounded to float.
 *   Interior samples (n >= max_iter) get -1.
 *
 * Why: mu = n + 1 - log2(ln|z_n| / ln R) alone is continuous only in the limit |z_n| -> inf; at
 * |z_n| ~ R the term ln(1 + c / z_n^2) it leaves out makes mu jump by tenths where n changes,
 * visible as concentric bands. k steps more shrink that term to ~|c| / |z|^2 < 2^-16 |c|, while
 * (n + k) + 1 - log2(ln|z_{n+k}| / ln R) is the same potential, so mu keeps its meaning.
 * SMOOTH_BOUND keeps fp32 finite: a step from |z|^2 <= 2^16 reaches at most (2^16 + |c|)^2.
 */
#define SMOOTH_BOUND 0x1p16
#define SMOOTH_EXTRA_MAX 12

/* Escaped samples per pass: the vector loops run over exactly this many (a partial batch is
 * padded), which GCC's -O2 vectoriser needs; 64 keeps a batch's arrays in L1 beside the lanes. */
#define SMOOTH_BATCH 64

/* The constants of one render in one precision: the view (c, max_iter, the mapping) and
 * 1 / ln(r2max). Filled by smooth_init_f32/_f64; plain data, nothing to free. */
struct smooth_f32 {
    esc_view_f32 v;
    double inv_ln_r2;
};

struct smooth_f64 {
    esc_view_f64 v;
    double inv_ln_r2;
};

void smooth_init_f32(struct smooth_f32 *out, const esc_view_f32 *v);
void smooth_init_f64(struct smooth_f64 *out, const esc_view_f64 *v);

/* The scalar reference: the smooth value of one sample with escape count n, escaped z
 * (zr, zi) and c (cr, ci), by the definition above. */
float smooth_value_f32(const struct smooth_f32 *s, uint32_t n, float zr, float zi, float cr,
                       float ci);
float smooth_value_f64(const struct smooth_f64 *s, uint32_t n, double zr, double zi, double cr,
                       double ci);

/* The same for sample (i, j) of the grid, with c from the fractal: the view's constant for
 * Julia, the sample's coordinate (esc_x, esc_y) for Mandelbrot. */
float smooth_sample_f32(const struct smooth_f32 *s, uint32_t i, uint32_t j, uint32_t n, float zr,
                        float zi);
float smooth_sample_f64(const struct smooth_f64 *s, uint32_t i, uint32_t j, uint32_t n,
                        double zr, double zi);

/* Smooth values of `count` consecutive samples of a rectangle of the grid, row-major, that
 * starts at sample (x, y) and is `width` samples wide: counts[k] and the final z at z[2k],
 * z[2k+1] (interleaved, as the OpenCL kernels write it) give out[k], the bits of
 * smooth_sample_*(). The vectorised pass; uses the AVX2 build where cpu_isa.h allows it. */
void smooth_rect_f32(const esc_view_f32 *v, uint32_t x, uint32_t y, uint32_t width, size_t count,
                     const uint32_t *counts, const float *z, float *out);
void smooth_rect_f64(const esc_view_f64 *v, uint32_t x, uint32_t y, uint32_t width, size_t count,
                     const uint32_t *counts, const double *z, float *out);

/*
 * A batch of finished samples on their way to the pass, for an engine that finishes samples one
 * at a time in no particular order (the CPU engine's lanes): smooth_batch_add_* files a sample
 * under its index into `out`, running the pass whenever SMOOTH_BATCH escaped samples are
 * waiting; smooth_batch_flush_* runs it on the rest. Interior samples are written at once (-1).
 * Lives on the caller's stack; init once, flush before the samples are read. out is borrowed.
 */
struct smooth_batch_f32 {
    struct smooth_f32 s;
    float *out;
    int isa;                           /* the build of the pass that runs (enum cpu_isa) */
    uint32_t len;
    size_t pos[SMOOTH_BATCH];
    uint32_t n[SMOOTH_BATCH];
    float zr[SMOOTH_BATCH], zi[SMOOTH_BATCH], cr[SMOOTH_BATCH], ci[SMOOTH_BATCH];
};

struct smooth_batch_f64 {
    struct smooth_f64 s;
    float *out;
    int isa;
    uint32_t len;
    size_t pos[SMOOTH_BATCH];
    uint32_t n[SMOOTH_BATCH];
    double zr[SMOOTH_BATCH], zi[SMOOTH_BATCH], cr[SMOOTH_BATCH], ci[SMOOTH_BATCH];
};

void smooth_batch_init_f32(struct smooth_batch_f32 *b, const esc_view_f32 *v, float *out);
void smooth_batch_init_f64(struct smooth_batch_f64 *b, const esc_view_f64 *v, float *out);
void smooth_batch_flush_f32(struct smooth_batch_f32 *b);
void smooth_batch_flush_f64(struct smooth_batch_f64 *b);

static inline void smooth_batch_add_f32(struct smooth_batch_f32 *b, size_t pos, uint32_t n,
                                        float zr, float zi, float cr, float ci)
{
    uint32_t i = b->len;

    if (n >= b->s.v.max_iter) {
        b->out[pos] = -1.0f;
        return;
    }
    b->pos[i] = pos;
    b->n[i] = n;
    b->zr[i] = zr;
    b->zi[i] = zi;
    b->cr[i] = cr;
    b->ci[i] = ci;
    if ((b->len = i + 1) == SMOOTH_BATCH)
        smooth_batch_flush_f32(b);
}

static inline void smooth_batch_add_f64(struct smooth_batch_f64 *b, size_t pos, uint32_t n,
                                        double zr, double zi, double cr, double ci)
{
    uint32_t i = b->len;

    if (n >= b->s.v.max_iter) {
        b->out[pos] = -1.0f;
        return;
    }
    b->pos[i] = pos;
    b->n[i] = n;
    b->zr[i] = zr;
    b->zi[i] = zi;
    b->cr[i] = cr;
    b->ci[i] = ci;
    if ((b->len = i + 1) == SMOOTH_BATCH)
        smooth_batch_flush_f64(b);
}

#endif
