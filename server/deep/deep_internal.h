/* deep_internal.h: what the files of server/deep share and deep.h does not promise: the layout of a
 * reference (orbits and BLA tables), the MPFR parsing helpers, and the render options the tests
 * and the benchmark switch (rebasing and BLA off). Includes <mpfr.h>. */
#ifndef FRACTALD_DEEP_INTERNAL_H
#define FRACTALD_DEEP_INTERNAL_H

#include <mpfr.h>

#include "deep.h"
#include "xfloat.h"

/* deep_mode_for's bound: views whose pixel spacing is below 2^DEEP_FP64_MIN_LOG2 need the
 * extended exponent (deep_view.c explains the number). */
#define DEEP_FP64_MIN_LOG2 (-960.0)

/* Bits of MPFR precision a reference orbit gets beyond those that resolve one pixel spacing
 * (deep_ref.c explains the number). */
#define DEEP_GUARD_BITS 64

/* How much finer (log2) than the spacing it was built for a reference still renders
 * (deep_ref_fits): the orbit then has DEEP_GUARD_BITS - 16 = 48 guard bits left. */
#define DEEP_FIT_FINER_LOG2 16.0

/*
 * One BLA step: from iteration m of its orbit, dz_{m+l} ~= A dz_m + B dc for |dz_m| < radius,
 * where the radius is stored divided by sqrt(2) so that the hot loop compares the L-infinity
 * norm max(|re dz|, |im dz|) (no square to underflow, no root) and stays on the safe side:
 * |dz| <= sqrt(2) max(|re|, |im|).
 */
struct deep_bla_f64 {
    double ar, ai, br, bi, r;
};

struct deep_bla_xf {
    xfc a, b;
    xf r;
};

/* The BLA table of one orbit: level k holds count[k] steps of 2^k iterations; entry j of level
 * k starts at iteration 1 + j * 2^k (the table starts at 1: Z_0 = 0 of the Mandelbrot orbit and
 * of Julia's critical orbit gives radius 0, which would void every step merged with it), all
 * levels in one array from first[k]. One of f64 / xf is set, by the reference's mode. */
#define DEEP_BLA_LEVELS_MAX 32

struct deep_bla {
    uint32_t levels;
    uint32_t count[DEEP_BLA_LEVELS_MAX];
    size_t first[DEEP_BLA_LEVELS_MAX];
    struct deep_bla_f64 *f64;
    struct deep_bla_xf *xf;
};

/* One reference orbit Z_0 .. Z_{len-1}: it stops at the first Z that escapes (kept: the last
 * entry) or at Z_max_iter. z holds re, im interleaved as doubles (0 where a value is below
 * double's range); zx the same values with an extended exponent, in extended mode only. */
struct deep_orbit {
    uint32_t len;
    double *z;
    xfc *zx;
    struct deep_bla bla;
};

struct deep_ref {
    atomic_uint refs;
    /* deep_ref_serial: unique per process (a counter, never an address), so that a device's copy
     * of the orbits cannot be taken for those of a later reference allocated at the same place. */
    uint64_t serial;
    /* The key (deep_ref_fits). The centre strings are copies, owned. */
    enum spec_fractal fractal;
    double c_re, c_im, escape_radius;
    uint32_t max_iter;
    enum deep_mode mode;
    char *center_re, *center_im;
    double center_re_d, center_im_d;   /* the centre rounded to double, for smooth values */
    /* What the reference was built for: the finest pixel spacing its precision serves, and the
     * largest |dc| (Mandelbrot) its BLA radii assume, both as log2. */
    double log2_spacing, log2_reach;
    long prec;                         /* MPFR bits of the orbits */
    /* orbit[0]: the centre's (Mandelbrot: of c = centre from 0; Julia: of z = centre with the
     * fixed c). orbit[1], Julia only: the critical point 0's, which rebasing switches to. */
    int norbits;
    struct deep_orbit orbit[2];
    double orbit_s, bla_s;
    size_t bytes;
};

/* Switches of deep_render_opts, for tests and the benchmark: what the renderer may use. The
 * server always renders with all on (deep_render). */
struct deep_render_opts {
    unsigned version;
    int rebase;     /* Zhuoran's rebasing when |Z_m + dz| < |dz| (the end-of-orbit rebase stays) */
    int bla;        /* BLA steps */
    int exact;      /* Julia: samples whose error bound says the deltas lost the count are
                     * recomputed by deep_exact_sample */
};
#define DEEP_RENDER_OPTS_INIT {1, 1, 1, 1}

/* deep_render with options (NULL: DEEP_RENDER_OPTS_INIT). Same contract as deep_render. */
int deep_render_opts(const deep_ref *ref, const struct deep_view *view,
                     const struct spec_rect *rect, uint32_t *counts, float *smooth,
                     const atomic_int *cancel, unsigned nthreads, struct deep_stats *stats,
                     const struct deep_render_opts *opts);

/*
 * The Julia loop's error bound (deep_render.c): each sample carries a bound on the absolute error
 * of its z_n, in units of 2^-53. A sample that finishes with a bound above 2^DEEP_EXACT_LOG2 (its
 * final z known to worse than about 2^-16) is recomputed by deep_exact_sample. Measured on the
 * default-c Julia views of tests/deep at 48x48 and 64x64 (docs/MATH.md): every wrong count had
 * a bound of 2^5 to 2^46, every sample below 2^-16 a right one, and 1-4 % of the samples lie
 * above the threshold (none of the dendrite views').
 */
#define DEEP_EXACT_LOG2 (-16)

/*
 * Sample (i, j) of view's grid computed directly in MPFR, as tests/deep/mpfr_brute.c does: its
 * coordinate from the view's text exactly (centre + ((i + 0.5) - grid/2) * width / grid_w), its
 * orbit iterated at a precision of log2(M / s) + 118 + log2_err bits, where log2_err (clamped
 * to [DEEP_EXACT_LOG2, 1024]; NaN and +inf take the top) is the double loop's bound on the
 * relative error of its final z: that bound measures how much the orbit amplifies a start
 * error, so the same amplification leaves the exact orbit 2^-64 of its final z. The escape
 * check is escape.h's on z rounded to double, as in the loops. Writes the count and the final z
 * (rounded to double); polls *cancel (may be NULL) every 256 iterations. Returns 0,
 * ERR_CANCELLED, or ERR_INVALID for a view deep_view_check refuses.
 */
int deep_exact_sample(const deep_ref *ref, const struct deep_view *view, uint32_t i, uint32_t j,
                      double log2_err, const atomic_int *cancel, uint32_t *out_n, double *out_zr,
                      double *out_zi);

/* The fp64 loop's bound (units of 2^-53) as deep_exact_sample's log2_err: log2 of the relative
 * error; -inf for 0, +inf for inf and NaN (a bound past double's range). */
static inline double deep_err_log2(double e)
{
    return e > 0.0 ? log2(e) - 53.0 : e == 0.0 ? -INFINITY : INFINITY;
}

/* Parses decimal text into out (already initialised, at its own precision), rounding once.
 * Accepts what mpfr_strtofr takes in base 10 with nothing left over, finite only. Returns 0 or
 * ERR_INVALID with a message naming `field`. */
int deep_parse(mpfr_t out, const char *text, const char *field, char *msg, size_t msglen);

/* The pixel spacing s = width / grid_w of a checked view, as an extended float, and the largest
 * |dc| of its grid, log2 (the distance from the centre to a corner sample). Returns 0 or
 * ERR_INVALID. */
int deep_view_spacing(const struct deep_view *view, xf *out_s, double *out_log2_reach,
                      char *msg, size_t msglen);

/* Builds the BLA table of orbit o for the mode; reach is the largest |dc| (0 for Julia, whose
 * steps are univariate: B = 0). Polls *cancel (may be NULL). Returns 0, ERR_NOMEM or
 * ERR_CANCELLED; on error the table is left empty. */
int deep_bla_build(struct deep_orbit *o, enum deep_mode mode, int julia, xf reach,
                   const atomic_int *cancel);

/* Frees the table's entries and empties it. */
void deep_bla_dispose(struct deep_bla *bla);

/* Bytes of the table for an orbit of len entries (the estimate and the real figure alike). */
size_t deep_bla_bytes(size_t len, enum deep_mode mode);

#endif
