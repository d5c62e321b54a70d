/* escape.h: the escape-time math of docs/MATH.md, written once for every engine. It
 * compiles as C11 (CPU engine, tests, bench) and as OpenCL C (device kernels), and is one
 * self-contained file so it can be embedded into a program source string as it is. */
#ifndef FRACTAL_ESCAPE_H
#define FRACTAL_ESCAPE_H

/*
 * The function every engine computes, bit for bit when no FMA is used:
 *
 * Sample mapping, computed entirely in the working precision REAL (float for fp32, so a device
 * without fp64 computes the very same coordinates; double for fp64). With the sample grid of
 * gw x gh samples (gw = width * supersample) and the spec's double parameters each rounded once
 * to REAL:
 *     s = (REAL)view_width / (REAL)gw
 *     x = (REAL)center_re + (((REAL)i + 0.5) - (REAL)gw * 0.5) * s
 *     y = (REAL)center_im - (((REAL)j + 0.5) - (REAL)gh * 0.5) * s
 * evaluated left to right exactly as bracketed. ((REAL)i + 0.5) - gw*0.5 is exact for grids up
 * to 2^22 samples a side, so only the multiply and the add round.
 *
 * Iteration, z = zr + i*zi, n counted from 0; the check of z_n comes before the step:
 *     x2 = zr*zr;  y2 = zi*zi;
 *     escaped iff !(x2 + y2 <= r2max)          with r2max = (REAL)R * (REAL)R
 *     t = zr*zi;  zi = (t + t) + ci;  zr = (x2 - y2) + cr;
 * The escape count is the first n < max_iter whose z_n is escaped, else max_iter (interior).
 * "!(r2 <= r2max)" rather than "r2 > r2max" makes an orbit that overflowed to NaN count as
 * escaped; with a huge R, r2max may itself be +inf and then NaN is the only way out, which every
 * diverging orbit reaches within a few steps past overflow (inf - inf).
 * Julia: z_0 = (x, y), c fixed. Mandelbrot: z_0 = 0, c = (x, y).
 *
 * This order reproduces the checksums of bench/README.md (sum of escape counts, no FMA):
 * A fp64 107566860, fp32 107491740; B fp64 2348272443, fp32 2346960036. Computing zr as
 * (x2 + cr) - y2 instead, for example, does not. Engines that vectorise must keep it; t + t may
 * be written t * 2 (both exact). FMA contraction changes results: C builds use -ffp-contract=off;
 * OpenCL programs that must agree exactly are built without -cl-mad-enable and
 * -cl-fast-relaxed-math, and with -cl-fp32-correctly-rounded-divide-sqrt (the fp32 division in
 * the mapping is otherwise allowed 2.5 ulp).
 *
 * The smooth value is not here: devices return the escape count and the final z, and the host
 * computes it for every engine with one function (server/engines/smooth.h), whose logarithm is
 * the project's own (OpenCL's log/log2 have looser error bounds than libm, and libm's last bit
 * differs between hosts).
 */

#ifdef __OPENCL_VERSION__
#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define ESC_HAVE_FP64 1
#endif
typedef uint esc_u32;
#define ESC_LOGF(v) log(v)
#define ESC_LOGD(v) log(v)
#else
#include <math.h>
#include <stdint.h>
#define ESC_HAVE_FP64 1
typedef uint32_t esc_u32;
#define ESC_LOGF(v) logf(v)
#define ESC_LOGD(v) log(v)
#endif

/* Values match enum spec_fractal of server/spec.h. */
#define ESC_JULIA 0
#define ESC_MANDELBROT 1

/* One step of the recurrence in the fixed operation order, usable on scalars, GCC vector types
 * and OpenCL vector types alike. x2 and y2 must already hold zr*zr and zi*zi of the current z
 * (the escape check computed them); t is a caller's temporary of the same type. */
#define ESC_STEP(zr, zi, cr, ci, x2, y2, t)                                   \
    ((t) = (zr) * (zi), (zi) = (t) + (t) + (ci), (zr) = (x2) - (y2) + (cr))

/* Nonzero when z (with x2 = zr*zr, y2 = zi*zi) lies outside the escape radius or is NaN. */
#define ESC_ESCAPED(x2, y2, r2max) (!((x2) + (y2) <= (r2max)))

/*
 * ESC_DEFINE(REAL, SFX, LIT, LOG) defines, for one precision:
 *
 *   esc_view_SFX                 the per-render constants, built by esc_view_init_SFX;
 *   esc_view_init_SFX(...)       fills it from the spec's values rounded to REAL;
 *   esc_x_SFX / esc_y_SFX        the sample mapping of one column / row;
 *   esc_orbit_SFX(...)           continues an orbit from z_n to its escape or max_iter;
 *   esc_sample_SFX(...)          maps and iterates one sample of the grid.
 *
 * A macro template rather than a second header included twice, so that this file stays one
 * string for OpenCL programs.
 */
#define ESC_DEFINE(REAL, SFX, LIT, LOG)                                                        \
                                                                                               \
/* Constants of one render in this precision. half_w and half_h are the grid size / 2; r2max  \
 * is R*R rounded to REAL (may be +inf); log_r is ln R in REAL, a kernel argument that the     \
 * smooth value does not use (smooth.h takes ln r2max by its own logarithm). */               \
typedef struct {                                                                               \
    REAL center_re, center_im, s, half_w, half_h;                                              \
    REAL c_re, c_im, r2max, log_r;                                                             \
    esc_u32 max_iter;                                                                          \
    int fractal;                                                                               \
} esc_view_##SFX;                                                                              \
                                                                                               \
/* Fills *v for a grid_w x grid_h sample grid. The double parameters of the spec are rounded  \
 * to REAL by the call itself (or by the host, for a kernel argument) before any arithmetic. */\
static inline void esc_view_init_##SFX(esc_view_##SFX *v, int fractal, REAL c_re, REAL c_im,   \
                                       REAL center_re, REAL center_im, REAL view_width,        \
                                       esc_u32 grid_w, esc_u32 grid_h, REAL escape_radius,     \
                                       esc_u32 max_iter)                                       \
{                                                                                              \
    v->center_re = center_re;                                                                  \
    v->center_im = center_im;                                                                  \
    v->s = view_width / (REAL)grid_w;                                                          \
    v->half_w = (REAL)grid_w * LIT(0.5);                                                       \
    v->half_h = (REAL)grid_h * LIT(0.5);                                                       \
    v->c_re = c_re;                                                                            \
    v->c_im = c_im;                                                                            \
    v->r2max = escape_radius * escape_radius;                                                  \
    v->log_r = LOG(escape_radius);                                                             \
    v->max_iter = max_iter;                                                                    \
    v->fractal = fractal;                                                                      \
}                                                                                              \
                                                                                               \
static inline REAL esc_x_##SFX(const esc_view_##SFX *v, esc_u32 i)                             \
{                                                                                              \
    return v->center_re + (((REAL)i + LIT(0.5)) - v->half_w) * v->s;                           \
}                                                                                              \
                                                                                               \
static inline REAL esc_y_##SFX(const esc_view_##SFX *v, esc_u32 j)                             \
{                                                                                              \
    return v->center_im - (((REAL)j + LIT(0.5)) - v->half_h) * v->s;                           \
}                                                                                              \
                                                                                               \
/* Continues the orbit whose z_n is (*zr, *zi): checks z_n, steps, and so on until z escapes  \
 * or n reaches max_iter. Returns the escape count (max_iter for interior) and leaves in       \
 * (*zr, *zi) the escaped z_n (or z_max_iter). Engines that settle a vector block call this   \
 * from the z saved at the block's start. */                                                  \
static inline esc_u32 esc_orbit_##SFX(REAL *zr, REAL *zi, REAL cr, REAL ci, REAL r2max,        \
                                      esc_u32 n, esc_u32 max_iter)                             \
{                                                                                              \
    REAL x = *zr, y = *zi, x2, y2, t;                                                          \
    for (; n < max_iter; n++) {                                                                \
        x2 = x * x;                                                                            \
        y2 = y * y;                                                                            \
        if (ESC_ESCAPED(x2, y2, r2max))                                                        \
            break;                                                                             \
        ESC_STEP(x, y, cr, ci, x2, y2, t);                                                     \
    }                                                                                          \
    *zr = x;                                                                                   \
    *zi = y;                                                                                   \
    return n;                                                                                  \
}                                                                                              \
                                                                                               \
/* The scalar reference for sample (i, j) of the grid: returns its escape count and leaves     \
 * the final z in (*zr, *zi) for the smooth value (server/engines/smooth.h). */               \
static inline esc_u32 esc_sample_##SFX(const esc_view_##SFX *v, esc_u32 i, esc_u32 j,          \
                                       REAL *zr, REAL *zi)                                     \
{                                                                                              \
    REAL x = esc_x_##SFX(v, i), y = esc_y_##SFX(v, j);                                         \
    if (v->fractal == ESC_MANDELBROT) {                                                        \
        *zr = LIT(0.0);                                                                        \
        *zi = LIT(0.0);                                                                        \
        return esc_orbit_##SFX(zr, zi, x, y, v->r2max, 0, v->max_iter);                        \
    }                                                                                          \
    *zr = x;                                                                                   \
    *zi = y;                                                                                   \
    return esc_orbit_##SFX(zr, zi, v->c_re, v->c_im, v->r2max, 0, v->max_iter);                \
}

#define ESC_LIT_F32(x) x##f
#define ESC_LIT_F64(x) x

ESC_DEFINE(float, f32, ESC_LIT_F32, ESC_LOGF)
#ifdef ESC_HAVE_FP64
ESC_DEFINE(double, f64, ESC_LIT_F64, ESC_LOGD)
#endif

#endif
