/* smooth.c: the smooth value of smooth.h: the scalar reference, and the vectorised pass over
 * batches of escaped samples, built twice (AVX2 and baseline x86-64, picked at run time) from one
 * template, so that every build and the reference give the same bits. */
#ifndef SMOOTH_TEMPLATE

#include "smooth.h"

#include <math.h>
#include <string.h>

#include "cpu_isa.h"
#include "fastlog.h"

/* 1 / ln 2, the double nearest to it: log2 y is computed as ln(y) * INV_LN2. */
#define INV_LN2 0x1.71547652b82fep0

/* A float's bits and back, as fastlog.h does for doubles. */
static inline __attribute__((always_inline)) uint32_t f32_bits(float x)
{
    uint32_t b;

    memcpy(&b, &x, sizeof(b));
    return b;
}

static inline __attribute__((always_inline)) float f32_of(uint32_t b)
{
    float x;

    memcpy(&x, &b, sizeof(x));
    return x;
}

/* (double)u, as integer operations that vectorise on SSE2 and AVX2 alike (neither converts
 * unsigned or 64-bit integers to double): u in the low bits of 2^52's significand, minus 2^52. */
static inline __attribute__((always_inline)) double u32_to_double(uint32_t u)
{
    return fastlog_double(UINT64_C(0x4330000000000000) | u) - 0x1p52;
}

/* Step 2 of the definition, the scalar way; the pass's last loops perform these operations in
 * this order. nk = n + k. */
static float finish(double q, double inv_ln_r2, uint32_t nk)
{
    const double l = fastlog_ln(q);
    const double y = l * inv_ln_r2;
    const double l2 = fastlog_ln(y);
    const double top = u32_to_double(nk) + 1.0;
    double mu = top - l2 * INV_LN2;

    if (!(q < INFINITY && y > 0.0 && y < INFINITY && mu > 0.0))
        mu = 0.0;
    else if (mu > top)
        mu = top;
    return (float)mu;
}

void smooth_init_f32(struct smooth_f32 *out, const esc_view_f32 *v)
{
    out->v = *v;
    out->inv_ln_r2 = 1.0 / fastlog_ln((double)v->r2max);
}

void smooth_init_f64(struct smooth_f64 *out, const esc_view_f64 *v)
{
    out->v = *v;
    out->inv_ln_r2 = 1.0 / fastlog_ln(v->r2max);
}

float smooth_value_f32(const struct smooth_f32 *s, uint32_t n, float zr, float zi, float cr,
                       float ci)
{
    const float bound = (float)SMOOTH_BOUND;
    uint32_t k;

    if (n >= s->v.max_iter)
        return -1.0f;
    for (k = 0; k < SMOOTH_EXTRA_MAX; k++) {
        float x2 = zr * zr, y2 = zi * zi, t;

        if (!(x2 + y2 <= bound))
            break;
        ESC_STEP(zr, zi, cr, ci, x2, y2, t);
    }
    return finish((double)zr * (double)zr + (double)zi * (double)zi, s->inv_ln_r2, n + k);
}

float smooth_value_f64(const struct smooth_f64 *s, uint32_t n, double zr, double zi, double cr,
                       double ci)
{
    const double bound = SMOOTH_BOUND;
    uint32_t k;

    if (n >= s->v.max_iter)
        return -1.0f;
    for (k = 0; k < SMOOTH_EXTRA_MAX; k++) {
        double x2 = zr * zr, y2 = zi * zi, t;

        if (!(x2 + y2 <= bound))
            break;
        ESC_STEP(zr, zi, cr, ci, x2, y2, t);
    }
    return finish(zr * zr + zi * zi, s->inv_ln_r2, n + k);
}

float smooth_sample_f32(const struct smooth_f32 *s, uint32_t i, uint32_t j, uint32_t n, float zr,
                        float zi)
{
    if (s->v.fractal == ESC_MANDELBROT)
        return smooth_value_f32(s, n, zr, zi, esc_x_f32(&s->v, i), esc_y_f32(&s->v, j));
    return smooth_value_f32(s, n, zr, zi, s->v.c_re, s->v.c_im);
}

float smooth_sample_f64(const struct smooth_f64 *s, uint32_t i, uint32_t j, uint32_t n,
                        double zr, double zi)
{
    if (s->v.fractal == ESC_MANDELBROT)
        return smooth_value_f64(s, n, zr, zi, esc_x_f64(&s->v, i), esc_y_f64(&s->v, j));
    return smooth_value_f64(s, n, zr, zi, s->v.c_re, s->v.c_im);
}

/* The pass, four times: SM_REAL and SM_UINT (an unsigned integer of its width, for masks) pick
 * the precision, SM_ATTR the instruction set. */
#define SMOOTH_TEMPLATE
#define SM_REAL float
#define SM_UINT uint32_t
#define SM_BITS f32_bits
#define SM_OF f32_of
#define SM_NAME pass_f32_base
#define SM_ATTR
#define SM_VBYTES 16
#include "smooth.c"
#define SM_REAL double
#define SM_UINT uint64_t
#define SM_BITS fastlog_bits
#define SM_OF fastlog_double
#define SM_NAME pass_f64_base
#define SM_ATTR
#define SM_VBYTES 16
#include "smooth.c"
#if defined(__x86_64__) && defined(__GNUC__)
#define SMOOTH_HAVE_AVX2 1
#define SM_REAL float
#define SM_UINT uint32_t
#define SM_BITS f32_bits
#define SM_OF f32_of
#define SM_NAME pass_f32_avx2
#define SM_ATTR __attribute__((target("avx2")))
#define SM_VBYTES 32
#include "smooth.c"
#define SM_REAL double
#define SM_UINT uint64_t
#define SM_BITS fastlog_bits
#define SM_OF fastlog_double
#define SM_NAME pass_f64_avx2
#define SM_ATTR __attribute__((target("avx2")))
#define SM_VBYTES 32
#include "smooth.c"
#define SM_REAL float
#define SM_UINT uint32_t
#define SM_BITS f32_bits
#define SM_OF f32_of
#define SM_NAME pass_f32_avx512
#define SM_ATTR __attribute__((target("avx512f,avx512vl")))
#define SM_VBYTES 64
#include "smooth.c"
#define SM_REAL double
#define SM_UINT uint64_t
#define SM_BITS fastlog_bits
#define SM_OF fastlog_double
#define SM_NAME pass_f64_avx512
#define SM_ATTR __attribute__((target("avx512f,avx512vl")))
#define SM_VBYTES 64
#include "smooth.c"
#endif
#undef SMOOTH_TEMPLATE

/* Which build of the pass runs (enum cpu_isa): the widest the CPU has, unless FRACTALD_CPU_ISA
 * asks for a narrower one (the tests compare the builds). Decided once per batch, since it reads
 * the environment. */
static int pass_isa(void)
{
#ifdef SMOOTH_HAVE_AVX2
    return (int)cpu_isa_widest();
#else
    return CPU_ISA_BASE;
#endif
}

void smooth_batch_init_f32(struct smooth_batch_f32 *b, const esc_view_f32 *v, float *out)
{
    smooth_init_f32(&b->s, v);
    b->out = out;
    b->isa = pass_isa();
    b->len = 0;
}

void smooth_batch_init_f64(struct smooth_batch_f64 *b, const esc_view_f64 *v, float *out)
{
    smooth_init_f64(&b->s, v);
    b->out = out;
    b->isa = pass_isa();
    b->len = 0;
}

/* Pads a partial batch with samples that take no step (|z|^2 = 2^18 > SMOOTH_BOUND), so that the
 * pass's step loop ends as soon as the real samples are done; their values are not stored. */
#define PAD(b)                                                                                    \
    for (uint32_t i_ = (b)->len; i_ < SMOOTH_BATCH; i_++) {                                       \
        (b)->n[i_] = 0;                                                                           \
        (b)->zr[i_] = (b)->zi[i_] = 0x1p9;                                                        \
        (b)->cr[i_] = (b)->ci[i_] = 0;                                                            \
    }

void smooth_batch_flush_f32(struct smooth_batch_f32 *b)
{
    float mu[SMOOTH_BATCH];

    if (b->len == 0)
        return;
    PAD(b);
#ifdef SMOOTH_HAVE_AVX2
    if (b->isa == CPU_ISA_AVX512)
        pass_f32_avx512(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    else if (b->isa == CPU_ISA_AVX2)
        pass_f32_avx2(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    else
#endif
        pass_f32_base(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    for (uint32_t i = 0; i < b->len; i++)
        b->out[b->pos[i]] = mu[i];
    b->len = 0;
}

void smooth_batch_flush_f64(struct smooth_batch_f64 *b)
{
    float mu[SMOOTH_BATCH];

    if (b->len == 0)
        return;
    PAD(b);
#ifdef SMOOTH_HAVE_AVX2
    if (b->isa == CPU_ISA_AVX512)
        pass_f64_avx512(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    else if (b->isa == CPU_ISA_AVX2)
        pass_f64_avx2(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    else
#endif
        pass_f64_base(b->s.inv_ln_r2, b->n, b->zr, b->zi, b->cr, b->ci, mu);
    for (uint32_t i = 0; i < b->len; i++)
        b->out[b->pos[i]] = mu[i];
    b->len = 0;
}

/* The rectangle walk of smooth_rect_*: sample k of the run sits at column (x + k % width), row
 * (y + k / width), tracked incrementally; c is the view's constant for Julia and the sample's
 * coordinate for Mandelbrot (the row's y computed once per row). */
#define RECT_WALK(SFX, REAL)                                                                      \
    do {                                                                                          \
        const int mandel = b.s.v.fractal == ESC_MANDELBROT;                                       \
        uint32_t col = 0, row = y;                                                                \
        REAL cy = mandel ? esc_y_##SFX(&b.s.v, row) : b.s.v.c_im;                                 \
                                                                                                  \
        for (size_t k = 0; k < count; k++) {                                                      \
            const REAL cx = mandel ? esc_x_##SFX(&b.s.v, x + col) : b.s.v.c_re;                   \
                                                                                                  \
            smooth_batch_add_##SFX(&b, k, counts[k], z[2 * k], z[2 * k + 1], cx, cy);             \
            if (++col == width) {                                                                 \
                col = 0;                                                                          \
                row++;                                                                            \
                if (mandel)                                                                       \
                    cy = esc_y_##SFX(&b.s.v, row);                                                \
            }                                                                                     \
        }                                                                                         \
        smooth_batch_flush_##SFX(&b);                                                             \
    } while (0)

void smooth_rect_f32(const esc_view_f32 *v, uint32_t x, uint32_t y, uint32_t width, size_t count,
                     const uint32_t *counts, const float *z, float *out)
{
    struct smooth_batch_f32 b;

    smooth_batch_init_f32(&b, v, out);
    RECT_WALK(f32, float);
}

void smooth_rect_f64(const esc_view_f64 *v, uint32_t x, uint32_t y, uint32_t width, size_t count,
                     const uint32_t *counts, const double *z, float *out)
{
    struct smooth_batch_f64 b;

    smooth_batch_init_f64(&b, v, out);
    RECT_WALK(f64, double);
}

#else /* SMOOTH_TEMPLATE */

/*
 * Template part: the pass over exactly SMOOTH_BATCH escaped samples: their counts n, escaped z
 * and c, to their smooth values in mu; zr and zi are scratch (they end as z_{n+k}). Short loops
 * over the batch, vectorised, selects written as bit masks (a float compare in a ?: keeps GCC from
 * if-converting a loop); per sample the very operations of smooth_value_* and finish(), so the
 * bits are the same. The step loop ends once no sample of the batch steps: a sample that stopped
 * keeps its z, so when the loop ends does not change any value.
 */
SM_ATTR static void SM_NAME(double inv_ln_r2, const uint32_t *restrict n, SM_REAL *restrict zr,
                            SM_REAL *restrict zi, const SM_REAL *restrict cr,
                            const SM_REAL *restrict ci, float *restrict mu)
{
    typedef SM_REAL vr __attribute__((vector_size(SM_VBYTES)));
    typedef SM_UINT vu __attribute__((vector_size(SM_VBYTES)));
    typedef double vd __attribute__((vector_size(SM_VBYTES)));
    typedef uint64_t vq __attribute__((vector_size(SM_VBYTES)));
    enum {
        B = SMOOTH_BATCH,
        W = SM_VBYTES / sizeof(SM_REAL),    /* samples per vector in the step loop */
        WD = SM_VBYTES / sizeof(double),    /* and in the double loops */
    };
    const SM_REAL bound = (SM_REAL)SMOOTH_BOUND;
    const vd inf = (vd){0} + INFINITY;
    vu k[B / W];
    SM_UINT fk[B];
    double q[B], l[B], l2[B], top[B];
    uint64_t row[B];

    /* The steps, in vectors of the working precision (GCC's vector extensions, as engine_cpu.c:
     * the loop over a plain array did not vectorise in every build), on the batch's own arrays:
     * per-vector loads and stores rather than copies, which GCC turns into slow rep movs. */
    for (int v = 0; v < B / W; v++)
        k[v] = (vu){0};
    for (int step = 0; step < SMOOTH_EXTRA_MAX; step++) {
        vu any = {0};
        SM_UINT some = 0;

        for (int v = 0; v < B / W; v++) {
            vr a, b, c, d;

            memcpy(&a, zr + v * W, sizeof(a));
            memcpy(&b, zi + v * W, sizeof(b));
            memcpy(&c, cr + v * W, sizeof(c));
            memcpy(&d, ci + v * W, sizeof(d));
            const vr x2 = a * a, y2 = b * b, t = a * b;
            const vr nzi = t + t + d, nzr = x2 - y2 + c;
            const vu go = (vu)(x2 + y2 <= bound);

            a = (vr)(((vu)nzr & go) | ((vu)a & ~go));
            b = (vr)(((vu)nzi & go) | ((vu)b & ~go));
            memcpy(zr + v * W, &a, sizeof(a));
            memcpy(zi + v * W, &b, sizeof(b));
            k[v] -= go;
            any |= go;
        }
        for (int e = 0; e < W; e++)
            some |= any[e];
        if (!some)
            break;
    }
    for (int v = 0; v < B / W; v++)
        memcpy(fk + v * W, &k[v], sizeof(k[v]));

    /* The logarithms, as plain loops over the batch, which GCC vectorises (color.c's pattern:
     * the row indices in one loop, the table loads in the next). */
    for (int i = 0; i < B; i++) {
        const double a = (double)zr[i], b = (double)zi[i];

        q[i] = a * a + b * b;
        row[i] = fastlog_row_of(q[i]);
    }
    for (int i = 0; i < B; i++)
        l[i] = fastlog_ln_at(q[i], row[i]);
    for (int i = 0; i < B; i++) {
        l[i] = l[i] * inv_ln_r2;
        row[i] = fastlog_row_of(l[i]);
    }
    for (int i = 0; i < B; i++) {
        top[i] = u32_to_double(n[i] + (uint32_t)fk[i]) + 1.0;
        l2[i] = top[i] - fastlog_ln_at(l[i], row[i]) * INV_LN2;
    }

    /* finish()'s select chain as masks: l is y, l2 the unclamped mu; ok, then the clamp at top. */
    for (int v = 0; v < B / WD; v++) {
        vd qv, y, m, tv;
        vq ok, over;

        memcpy(&qv, q + v * WD, sizeof(qv));
        memcpy(&y, l + v * WD, sizeof(y));
        memcpy(&m, l2 + v * WD, sizeof(m));
        memcpy(&tv, top + v * WD, sizeof(tv));
        ok = (vq)(qv < inf) & (vq)(y > 0.0) & (vq)(y < inf) & (vq)(m > 0.0);
        over = (vq)(m > tv);
        ok &= ((vq)tv & over) | ((vq)m & ~over);
        memcpy(row + v * WD, &ok, sizeof(ok));
    }
    for (int i = 0; i < B; i++)
        mu[i] = (float)fastlog_double(row[i]);
}

#undef SM_REAL
#undef SM_UINT
#undef SM_BITS
#undef SM_OF
#undef SM_NAME
#undef SM_ATTR
#undef SM_VBYTES

#endif /* SMOOTH_TEMPLATE */
