/* mpfr_brute.c: the brute-force MPFR renderer the deep engine is checked against: each sample's
 * coordinate computed exactly from the view's text and its orbit iterated in MPFR. */
#include "mpfr_brute.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <mpfr.h>

/* Bits beyond those that resolve one spacing: the orbit's rounding error grows along it as the
 * sample's distance from its neighbours does, so the margin is kept relative, and larger than
 * the engine's (64) so that the two are not wrong in the same way. */
#define BRUTE_GUARD_BITS 96

struct brute {
    const struct deep_view *view;
    const struct spec_rect *rect;
    uint32_t *counts;
    mpfr_prec_t prec;
    atomic_uint next_row;
    int failed;
};

/* log2 |x| of a nonzero finite x; 0 for 0. */
static double log2_of(const mpfr_t x)
{
    long e;
    double m;

    if (mpfr_zero_p(x))
        return 0.0;
    m = fabs(mpfr_get_d_2exp(&e, x, MPFR_RNDN));
    return (double)e + log2(m);
}

static void *brute_rows(void *arg)
{
    struct brute *b = arg;
    const struct deep_view *v = b->view;
    mpfr_t cre0, cim0, s, x, y, zr, zi, cr, ci, x2, y2, t;
    double r2 = v->escape_radius * v->escape_radius;

    mpfr_inits2(b->prec, cre0, cim0, s, x, y, zr, zi, cr, ci, x2, y2, t, (mpfr_ptr)0);
    mpfr_set_str(cre0, v->center_re, 10, MPFR_RNDN);
    mpfr_set_str(cim0, v->center_im, 10, MPFR_RNDN);
    mpfr_set_str(s, v->width, 10, MPFR_RNDN);
    mpfr_div_ui(s, s, v->grid_w, MPFR_RNDN);
    for (;;) {
        uint32_t row = atomic_fetch_add(&b->next_row, 1), j;
        if (row >= b->rect->height)
            break;
        j = b->rect->y + row;
        /* y = center_im - ((j + 0.5) - grid_h / 2) * s, exactly: the offset is a half integer. */
        mpfr_set_d(y, ((double)j + 0.5) - 0.5 * v->grid_h, MPFR_RNDN);
        mpfr_mul(y, y, s, MPFR_RNDN);
        mpfr_sub(y, cim0, y, MPFR_RNDN);
        for (uint32_t col = 0; col < b->rect->width; col++) {
            uint32_t i = b->rect->x + col, n;
            mpfr_set_d(x, ((double)i + 0.5) - 0.5 * v->grid_w, MPFR_RNDN);
            mpfr_mul(x, x, s, MPFR_RNDN);
            mpfr_add(x, cre0, x, MPFR_RNDN);
            if (v->fractal == SPEC_MANDELBROT) {
                mpfr_set_zero(zr, 1);
                mpfr_set_zero(zi, 1);
                mpfr_set(cr, x, MPFR_RNDN);
                mpfr_set(ci, y, MPFR_RNDN);
            } else {
                mpfr_set(zr, x, MPFR_RNDN);
                mpfr_set(zi, y, MPFR_RNDN);
                mpfr_set_d(cr, v->c_re, MPFR_RNDN);
                mpfr_set_d(ci, v->c_im, MPFR_RNDN);
            }
            for (n = 0; n < v->max_iter; n++) {
                mpfr_sqr(x2, zr, MPFR_RNDN);
                mpfr_sqr(y2, zi, MPFR_RNDN);
                mpfr_add(t, x2, y2, MPFR_RNDN);
                if (mpfr_cmp_d(t, r2) > 0)
                    break;
                mpfr_mul(t, zr, zi, MPFR_RNDN);
                mpfr_mul_2ui(t, t, 1, MPFR_RNDN);
                mpfr_add(zi, t, ci, MPFR_RNDN);
                mpfr_sub(zr, x2, y2, MPFR_RNDN);
                mpfr_add(zr, zr, cr, MPFR_RNDN);
            }
            b->counts[(size_t)row * b->rect->width + col] = n;
        }
    }
    mpfr_clears(cre0, cim0, s, x, y, zr, zi, cr, ci, x2, y2, t, (mpfr_ptr)0);
    mpfr_free_cache2(MPFR_FREE_LOCAL_CACHE);
    return NULL;
}

int mpfr_brute_render(const struct deep_view *view, const struct spec_rect *rect,
                      uint32_t *counts, unsigned nthreads)
{
    struct brute b;
    pthread_t th[16];
    unsigned started = 0;
    mpfr_t w, re, im;
    double bits;

    mpfr_inits2(128, w, re, im, (mpfr_ptr)0);
    if (mpfr_set_str(w, view->width, 10, MPFR_RNDN) != 0 ||
        mpfr_set_str(re, view->center_re, 10, MPFR_RNDN) != 0 ||
        mpfr_set_str(im, view->center_im, 10, MPFR_RNDN) != 0 || mpfr_sgn(w) <= 0) {
        mpfr_clears(w, re, im, (mpfr_ptr)0);
        return -1;
    }
    bits = fmax(fmax(log2_of(re), log2_of(im)), 1.0) - (log2_of(w) - log2((double)view->grid_w));
    mpfr_clears(w, re, im, (mpfr_ptr)0);
    b.view = view;
    b.rect = rect;
    b.counts = counts;
    b.prec = (mpfr_prec_t)ceil(bits) + BRUTE_GUARD_BITS;
    atomic_init(&b.next_row, 0);
    b.failed = 0;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > 16)
        nthreads = 16;
    for (; started + 1 < nthreads; started++)
        if (pthread_create(&th[started], NULL, brute_rows, &b) != 0)
            break;
    brute_rows(&b);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return 0;
}
