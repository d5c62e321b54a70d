/* deep_view.c: a deep view's numbers: parsing the centre and width with MPFR, the checks of
 * deep_view_check, the spacing and reach of the sample grid, and the choice of the delta mode. */
#include "deep_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

/* Enough bits to tell whether a number is finite, positive, and where its exponent lies; the
 * value itself is parsed again at the reference's precision by deep_ref.c. */
#define CHECK_PREC 64

int deep_parse(mpfr_t out, const char *text, const char *field, char *msg, size_t msglen)
{
    char *end = NULL;

    if (text == NULL || *text == '\0') {
        snprintf(msg, msglen, "%s must be a decimal number, got an empty string", field);
        return ERR_INVALID;
    }
    /* mpfr_strtofr skips leading white space and takes "inf" and "nan"; neither is a number
     * of a view, so both are refused here rather than by a later surprise. */
    if (strchr(" \t\n\r\f\v", text[0]) == NULL)
        mpfr_strtofr(out, text, &end, 10, MPFR_RNDN);
    if (end == NULL || end == text || *end != '\0') {
        snprintf(msg, msglen, "%s must be a decimal number, got '%.40s%s'", field, text,
                 strlen(text) > 40 ? "..." : "");
        return ERR_INVALID;
    }
    if (!mpfr_number_p(out)) {
        snprintf(msg, msglen, "%s must be finite, got '%.40s%s'", field, text,
                 strlen(text) > 40 ? "..." : "");
        return ERR_INVALID;
    }
    return 0;
}

/* log2 |x| for a finite nonzero MPFR number, over MPFR's whole exponent range. */
static double log2_abs(const mpfr_t x)
{
    long e;
    double m = fabs(mpfr_get_d_2exp(&e, x, MPFR_RNDN));

    return (double)e + log2(m);
}

int deep_view_check(const struct deep_view *view, double *out_log2_spacing,
                    double *out_log2_magnitude, char *msg, size_t msglen)
{
    mpfr_t re, im, w;
    int err;
    double mag = 0.0;

    mpfr_inits2(CHECK_PREC, re, im, w, (mpfr_ptr)0);
    err = ERR_INVALID;
    if (view->fractal != SPEC_JULIA && view->fractal != SPEC_MANDELBROT) {
        snprintf(msg, msglen, "fractal must be julia or mandelbrot, got %d", (int)view->fractal);
        goto done;
    }
    if (view->mode != DEEP_FP64 && view->mode != DEEP_EXTENDED) {
        snprintf(msg, msglen, "mode must be fp64 (0) or extended (1), got %d", (int)view->mode);
        goto done;
    }
    if (view->grid_w < 1 || view->grid_h < 1 || view->grid_w > (1u << 22) ||
        view->grid_h > (1u << 22)) {
        snprintf(msg, msglen, "sample grid must be 1..4194304 a side, got %ux%u", view->grid_w,
                 view->grid_h);
        goto done;
    }
    if (view->max_iter < 1) {
        snprintf(msg, msglen, "max_iter must be >= 1, got 0");
        goto done;
    }
    if (!(view->escape_radius > 0) || !isfinite(view->escape_radius)) {
        snprintf(msg, msglen, "escape_radius must be > 0 and finite, got %g", view->escape_radius);
        goto done;
    }
    if (!isfinite(view->c_re) || !isfinite(view->c_im)) {
        snprintf(msg, msglen, "c must be finite, got (%g, %g)", view->c_re, view->c_im);
        goto done;
    }
    if ((err = deep_parse(re, view->center_re, "center.re", msg, msglen)) < 0 ||
        (err = deep_parse(im, view->center_im, "center.im", msg, msglen)) < 0 ||
        (err = deep_parse(w, view->width, "view.width", msg, msglen)) < 0)
        goto done;
    err = ERR_INVALID;
    if (mpfr_sgn(w) <= 0) {
        snprintf(msg, msglen, "view.width must be > 0, got '%.40s'", view->width);
        goto done;
    }
    if (!mpfr_zero_p(re))
        mag = fmax(mag, log2_abs(re));
    if (!mpfr_zero_p(im))
        mag = fmax(mag, log2_abs(im));
    *out_log2_spacing = log2_abs(w) - log2((double)view->grid_w);
    *out_log2_magnitude = mag;
    err = 0;

done:
    mpfr_clears(re, im, w, (mpfr_ptr)0);
    return err;
}

/*
 * Why 2^-960 (about 1e-289): in fp64 mode every delta is a double. The deltas of a render start
 * at dc = offset * s with |offset| >= 0.5 in each nonzero part, and they may shrink below the
 * spacing: after a rebase near the critical point, and along the orbit of a sample that nears
 * its reference (a minibrot's interior); a subnormal delta has lost bits, a flushed one all.
 * 0.5 * 2^-960 = 2^-961 leaves 61 binary orders (1e18) above double's smallest normal 2^-1022 for
 * that, so an fp64 delta stays normal unless the orbit comes 1e18 times closer to its reference
 * than one pixel. The BLA coefficients are no limit here: their radii are compared as norms,
 * never squared, and a step whose A overflows gets radius 0 and is simply not taken. Deeper
 * views keep the same double mantissas with an int exponent (xfloat.h), at several times the
 * cost a step.
 */
enum deep_mode deep_mode_for(double log2_spacing)
{
    return log2_spacing < DEEP_FP64_MIN_LOG2 ? DEEP_EXTENDED : DEEP_FP64;
}

int deep_view_spacing(const struct deep_view *view, xf *out_s, double *out_log2_reach,
                      char *msg, size_t msglen)
{
    mpfr_t w;
    long e;
    double m, half_w = 0.5 * view->grid_w, half_h = 0.5 * view->grid_h;
    int err;

    mpfr_init2(w, CHECK_PREC);
    if ((err = deep_parse(w, view->width, "view.width", msg, msglen)) < 0)
        goto done;
    if (mpfr_sgn(w) <= 0) {
        snprintf(msg, msglen, "view.width must be > 0, got '%.40s'", view->width);
        err = ERR_INVALID;
        goto done;
    }
    mpfr_div_ui(w, w, view->grid_w, MPFR_RNDN);
    m = mpfr_get_d_2exp(&e, w, MPFR_RNDN);
    /* m in [0.5, 1): as xf, 2m * 2^(e-1). The exponent fits int32 for every width MPFR's
     * default exponent range admits that a caller's digit limit lets through. */
    *out_s = xf_norm(2.0 * m, (int32_t)(e - 1));
    /* The corner sample sits (half_w - 0.5, half_h - 0.5) spacings from the centre; taking
     * half_w, half_h keeps the reach a little larger, the safe side for the BLA radii. */
    *out_log2_reach = (double)(e - 1) + log2(2.0 * m) + 0.5 * log2(half_w * half_w + half_h * half_h);

done:
    mpfr_clear(w);
    return err;
}
