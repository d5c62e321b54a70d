/* deep_exact.c: one sample's orbit directly in MPFR, for the samples whose double deltas lost the
 * count (deep_render.c's error bound, Julia sets by the period-2 bulb: docs/MATH.md). */
#include "deep_internal.h"

#include <math.h>

#include "err.h"
#include "escape.h"

/* Iterations between polls of the cancel flag: a few hundred MPFR steps are well under 10 ms
 * even at thousands of bits. */
#define EXACT_POLL 256u

int deep_exact_sample(const deep_ref *ref, const struct deep_view *view, uint32_t i, uint32_t j,
                      double log2_err, const atomic_int *cancel, uint32_t *out_n, double *out_zr,
                      double *out_zi)
{
    const double r2max = ref->escape_radius * ref->escape_radius;
    double log2_spacing, log2_mag, zr = 0.0, zi = 0.0;
    mpfr_t s, x, y, cr, ci, x2, y2, t;
    char msg[160];
    long prec;
    uint32_t n;
    int err = 0;

    if ((err = deep_view_check(view, &log2_spacing, &log2_mag, msg, sizeof(msg))) < 0)
        return err;
    /* !(a >= b) also catches NaN. */
    if (!(log2_err >= DEEP_EXACT_LOG2))
        log2_err = isnan(log2_err) ? 1024.0 : DEEP_EXACT_LOG2;
    if (log2_err > 1024.0)
        log2_err = 1024.0;
    prec = (long)ceil(log2_mag - log2_spacing + 118.0 + log2_err);

    mpfr_inits2(prec, s, x, y, cr, ci, x2, y2, t, (mpfr_ptr)0);
    /* The view's text was checked above, so these parse. The offsets are half integers times
     * the spacing, exact but for one rounding at this precision, as in mpfr_brute.c. */
    mpfr_set_str(s, view->width, 10, MPFR_RNDN);
    mpfr_div_ui(s, s, view->grid_w, MPFR_RNDN);
    mpfr_set_d(t, ((double)i + 0.5) - 0.5 * view->grid_w, MPFR_RNDN);
    mpfr_mul(t, t, s, MPFR_RNDN);
    mpfr_set_str(x, ref->center_re, 10, MPFR_RNDN);
    mpfr_add(x, x, t, MPFR_RNDN);
    mpfr_set_d(t, ((double)j + 0.5) - 0.5 * view->grid_h, MPFR_RNDN);
    mpfr_mul(t, t, s, MPFR_RNDN);
    mpfr_set_str(y, ref->center_im, 10, MPFR_RNDN);
    mpfr_sub(y, y, t, MPFR_RNDN);
    if (ref->fractal == SPEC_MANDELBROT) {
        mpfr_set(cr, x, MPFR_RNDN);
        mpfr_set(ci, y, MPFR_RNDN);
        mpfr_set_zero(x, 1);
        mpfr_set_zero(y, 1);
    } else {
        mpfr_set_d(cr, ref->c_re, MPFR_RNDN);
        mpfr_set_d(ci, ref->c_im, MPFR_RNDN);
    }
    for (n = 0;; n++) {
        zr = mpfr_get_d(x, MPFR_RNDN);
        zi = mpfr_get_d(y, MPFR_RNDN);
        if (ESC_ESCAPED(zr * zr, zi * zi, r2max) || n >= ref->max_iter)
            break;
        if ((n & (EXACT_POLL - 1)) == EXACT_POLL - 1 && cancel &&
            atomic_load_explicit(cancel, memory_order_relaxed) != 0) {
            err = ERR_CANCELLED;
            break;
        }
        mpfr_sqr(x2, x, MPFR_RNDN);
        mpfr_sqr(y2, y, MPFR_RNDN);
        mpfr_mul(t, x, y, MPFR_RNDN);
        mpfr_sub(x, x2, y2, MPFR_RNDN);
        mpfr_add(x, x, cr, MPFR_RNDN);
        mpfr_mul_2ui(t, t, 1, MPFR_RNDN);
        mpfr_add(y, t, ci, MPFR_RNDN);
    }
    mpfr_clears(s, x, y, cr, ci, x2, y2, t, (mpfr_ptr)0);
    *out_n = n;
    *out_zr = zr;
    *out_zi = zi;
    return err;
}
