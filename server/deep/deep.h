/* deep.h: deep zoom past fp64 by perturbation: reference orbits in arbitrary precision (MPFR),
 * per-sample deltas in hardware floats (fp64, or fp64 with an extended exponent), rebasing and
 * bilinear approximation (BLA), for Julia sets and the Mandelbrot set. The only module that
 * includes <mpfr.h>. */
#ifndef FRACTALD_DEEP_H
#define FRACTALD_DEEP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* How the deltas are held. Values match fractal.v1.Precision's perturbation members minus 3
 * (PRECISION_PERTURB = 3, PRECISION_PERTURB_EXTENDED = 4). */
enum deep_mode {
    DEEP_FP64 = 0,       /* deltas and BLA coefficients in double: views down to ~1e-290 */
    DEEP_EXTENDED = 1,   /* double mantissa + separate int exponent: any depth */
};

/* The view of one deep render. Strings are borrowed for the duration of each call; the centre
 * is exact decimal text of any length (the caller enforces its digit limit), the width a decimal
 * with optional exponent ("1.5e-400"), the span of the real axis across the full sample grid.
 * The sample grid and the mapping are those of spec.h with s = width / grid_w:
 *     x = center_re + (i + 0.5 - grid_w/2) * s,  y = center_im - (j + 0.5 - grid_h/2) * s
 * evaluated exactly (in MPFR) for the reference point and as small offsets for the samples. */
struct deep_view {
    enum spec_fractal fractal;
    const char *center_re, *center_im;
    const char *width;
    double c_re, c_im;           /* Julia constant (unused for Mandelbrot) */
    uint32_t grid_w, grid_h;     /* sample grid (width and height times supersample) */
    uint32_t max_iter;           /* >= 1 */
    double escape_radius;        /* > 0, finite */
    enum deep_mode mode;
};

/* Reference orbit(s) and BLA tables of one view: immutable once built, shared between threads,
 * tiles, streams and jobs of the same view, reference counted. */
typedef struct deep_ref deep_ref;

/* What one deep_render call did. */
struct deep_stats {
    uint64_t iterations;         /* sum of escape counts over the rectangle's samples */
    uint64_t perturbed;          /* iterations computed step by step on deltas */
    uint64_t skipped;            /* iterations skipped by BLA */
    uint64_t rebases;            /* rebasing events */
    uint64_t exact;              /* samples recomputed in MPFR (Julia: deltas lost the count) */
    uint32_t tiles;
};

/* Parses and checks the view's numbers without computing anything: centre and width must be
 * finite decimal numbers, width > 0. Fills *out_log2_spacing with log2 of the pixel spacing
 * (s = width / grid_w, may be far below -1074) and *out_log2_magnitude with log2 of
 * max(|center_re|, |center_im|, 1). Returns 0 or ERR_INVALID with a one-line message naming the
 * field. */
int deep_view_check(const struct deep_view *view, double *out_log2_spacing,
                    double *out_log2_magnitude, char *msg, size_t msglen);

/* The mode a view needs: DEEP_EXTENDED when deltas or BLA coefficients would leave double's
 * exponent range, else DEEP_FP64. */
enum deep_mode deep_mode_for(double log2_spacing);

/* Bytes deep_ref_new will allocate for a view with this max_iter (orbits and BLA tables), for
 * admission and the cache's byte budget, computed before building. */
size_t deep_ref_estimate_bytes(const struct deep_view *view);

/* Computes the reference orbit(s) of the view (Mandelbrot: one, of the centre; Julia: the orbit
 * of the centre and the orbit of the critical point 0) at an MPFR precision that follows from the
 * depth, and their BLA tables. Polls *cancel (may be NULL) at least every few milliseconds.
 * Returns 0 with *out (refcount 1, caller owns), ERR_CANCELLED, ERR_NOMEM, or ERR_INVALID for a
 * view deep_view_check refuses or whose mode is DEEP_FP64 where deep_mode_for says extended. The key fields (fractal, c, centre, mode, max_iter, escape
 * radius) are copied; grid and width may differ between renders that share a reference only in
 * that the width must keep the samples within the BLA tables' validity (deep_ref_fits). */
int deep_ref_new(deep_ref **out, const struct deep_view *view, const atomic_int *cancel,
                 char *msg, size_t msglen);

/* Nonzero when ref can render view: same fractal, c (Julia), centre text, max_iter, escape radius
 * and mode, and a grid the reference serves: its corner samples no farther from the centre than
 * those of the view the reference was built for (Mandelbrot: the BLA radii assume that reach),
 * and its pixel spacing at most 2^16 finer than that view's (the orbit's guard bits). */
int deep_ref_fits(const deep_ref *ref, const struct deep_view *view);

/* The reference's serial number: nonzero, unique among the references of the process (never
 * reused, unlike its address), so it identifies the orbits and BLA tables a device keeps a copy
 * of (engine_cl_deep_job.orbit_id). */
uint64_t deep_ref_serial(const deep_ref *ref);

/* Bytes the reference holds. */
size_t deep_ref_bytes(const deep_ref *ref);

/* Seconds deep_ref_new took (reference orbits, then BLA tables). */
void deep_ref_times(const deep_ref *ref, double *out_orbit_s, double *out_bla_s);

/* Reference counting; unref of the last reference frees it. Both accept NULL. */
deep_ref *deep_ref_ref(deep_ref *ref);
void deep_ref_unref(deep_ref *ref);

/* Computes rect (in sample-grid coordinates) of the view with reference ref on nthreads threads
 * (0: one per online CPU): counts (may be NULL) get escape counts, smooth (may be NULL) the
 * smooth value of docs/MATH.md computed by server/engines/smooth.h's function from the escaped
 * z in double (-1 for interior). Both are rect->width * rect->height, row-major. Polls *cancel
 * (may be NULL) so that a raised flag returns within ~50 ms. Returns 0, ERR_CANCELLED, ERR_NOMEM,
 * or ERR_INVALID when deep_ref_fits(ref, view) is false. */
int deep_render(const deep_ref *ref, const struct deep_view *view, const struct spec_rect *rect,
                uint32_t *counts, float *smooth, const atomic_int *cancel, unsigned nthreads,
                struct deep_stats *stats);

#endif
