/* deep_ref.c: reference orbits in MPFR (Mandelbrot: the centre's; Julia: the centre's and the
 * critical point 0's), their storage as doubles and extended floats, the reference's lifetime. */
#include "deep_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "escape.h"

/* Entries an orbit array starts with; it doubles as the orbit grows, then shrinks to fit. */
#define ORBIT_START 4096u

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cancelled(const atomic_int *cancel)
{
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d)
        memcpy(d, s, n);
    return d;
}

/* The value of x as an extended float, over MPFR's whole exponent range. */
static xf xf_of_mpfr(const mpfr_t x)
{
    long e;
    double m = mpfr_get_d_2exp(&e, x, MPFR_RNDN);

    return xf_norm(2.0 * m, (int32_t)(e - 1));
}

static size_t orbit_entry_bytes(enum deep_mode mode)
{
    return 2 * sizeof(double) + (mode == DEEP_EXTENDED ? sizeof(xfc) : 0);
}

/* Grows o's arrays to hold cap entries. Returns 0 or ERR_NOMEM (o unchanged). */
static int orbit_reserve(struct deep_orbit *o, size_t cap, enum deep_mode mode)
{
    double *z = realloc(o->z, cap * 2 * sizeof(double));

    if (z == NULL)
        return ERR_NOMEM;
    o->z = z;
    if (mode == DEEP_EXTENDED) {
        xfc *zx = realloc(o->zx, cap * sizeof(xfc));
        if (zx == NULL)
            return ERR_NOMEM;
        o->zx = zx;
    }
    return 0;
}

/*
 * Computes the orbit Z_{n+1} = Z_n^2 + C from Z_0 = (z0r, z0i) into o, at the precision of the
 * arguments, until the first Z_n that escapes (by escape.h's check on Z_n rounded to double: the
 * one a sample makes, kept as the last entry) or until Z_max_iter. Polls *cancel every iteration:
 * an atomic load is nothing beside the precision's multiplications, and it keeps cancellation
 * prompt at any depth. Returns 0, ERR_NOMEM or ERR_CANCELLED.
 */
static int orbit_compute(struct deep_orbit *o, const mpfr_t z0r, const mpfr_t z0i,
                         const mpfr_t cr, const mpfr_t ci, double r2max, uint32_t max_iter,
                         enum deep_mode mode, const atomic_int *cancel)
{
    mpfr_prec_t prec = mpfr_get_prec(z0r);
    mpfr_t x, y, x2, y2, t;
    size_t cap = 0;
    uint32_t n;
    int err = 0;

    mpfr_inits2(prec, x, y, x2, y2, t, (mpfr_ptr)0);
    mpfr_set(x, z0r, MPFR_RNDN);
    mpfr_set(y, z0i, MPFR_RNDN);
    for (n = 0;; n++) {
        double zr, zi;

        if (n >= cap) {
            size_t want = cap ? 2 * cap : ORBIT_START;
            if (want > (size_t)max_iter + 1)
                want = (size_t)max_iter + 1;
            if ((err = orbit_reserve(o, want, mode)) < 0)
                goto done;
            cap = want;
        }
        zr = mpfr_get_d(x, MPFR_RNDN);
        zi = mpfr_get_d(y, MPFR_RNDN);
        o->z[2 * (size_t)n] = zr;
        o->z[2 * (size_t)n + 1] = zi;
        if (mode == DEEP_EXTENDED)
            o->zx[n] = xfc_from_xf(xf_of_mpfr(x), xf_of_mpfr(y));
        if (ESC_ESCAPED(zr * zr, zi * zi, r2max) || n == max_iter)
            break;
        if (cancelled(cancel)) {
            err = ERR_CANCELLED;
            goto done;
        }
        mpfr_sqr(x2, x, MPFR_RNDN);
        mpfr_sqr(y2, y, MPFR_RNDN);
        mpfr_mul(t, x, y, MPFR_RNDN);
        mpfr_sub(x, x2, y2, MPFR_RNDN);
        mpfr_add(x, x, cr, MPFR_RNDN);
        mpfr_mul_2ui(t, t, 1, MPFR_RNDN);
        mpfr_add(y, t, ci, MPFR_RNDN);
    }
    o->len = n + 1;
    /* Give back what the doubling over-reserved; a failed shrink keeps the larger block. */
    if (cap > o->len) {
        double *z = realloc(o->z, (size_t)o->len * 2 * sizeof(double));
        if (z)
            o->z = z;
        if (mode == DEEP_EXTENDED) {
            xfc *zx = realloc(o->zx, (size_t)o->len * sizeof(xfc));
            if (zx)
                o->zx = zx;
        }
    }

done:
    mpfr_clears(x, y, x2, y2, t, (mpfr_ptr)0);
    return err;
}

static void ref_free(struct deep_ref *ref)
{
    if (ref == NULL)
        return;
    for (int k = 0; k < 2; k++) {
        free(ref->orbit[k].z);
        free(ref->orbit[k].zx);
        deep_bla_dispose(&ref->orbit[k].bla);
    }
    free(ref->center_re);
    free(ref->center_im);
    free(ref);
}

size_t deep_ref_estimate_bytes(const struct deep_view *view)
{
    size_t len = (size_t)view->max_iter + 1;
    size_t per_orbit = len * orbit_entry_bytes(view->mode) + deep_bla_bytes(len, view->mode);

    return sizeof(struct deep_ref) + (view->fractal == SPEC_JULIA ? 2 : 1) * per_orbit;
}

/*
 * The precision: a sample's delta is about the spacing s = 2^log2_spacing, and the reference's
 * own rounding error grows along the orbit by the same derivative that grows the deltas, so the
 * orbit must be exact to well below s relative to the centre's magnitude M: log2(M / s) bits
 * resolve one spacing, DEEP_GUARD_BITS more keep the orbit's error 2^-64 of a delta, below
 * double's own rounding of it. The floor of 64 bits serves shallow views.
 */
static long precision_for(double log2_spacing, double log2_magnitude)
{
    double bits = ceil(log2_magnitude - log2_spacing) + DEEP_GUARD_BITS;

    return bits < 64 ? 64 : (long)bits;
}

/* deep_ref_serial's counter; starts at 1 so that 0 stays "no identity" (engine_cl_deep_job). */
static atomic_uint_fast64_t next_serial = 1;

int deep_ref_new(deep_ref **out, const struct deep_view *view, const atomic_int *cancel,
                 char *msg, size_t msglen)
{
    struct deep_ref *ref = NULL;
    double log2_spacing, log2_mag, t0, r2max;
    mpfr_t cre, cim, zre, zim;
    int have_mpfr = 0, err;
    xf s, reach;

    *out = NULL;
    if ((err = deep_view_check(view, &log2_spacing, &log2_mag, msg, msglen)) < 0)
        return err;
    /* fp64 deltas of a deeper view would underflow: refuse rather than render noise. */
    if (view->mode == DEEP_FP64 && deep_mode_for(log2_spacing) == DEEP_EXTENDED) {
        snprintf(msg, msglen, "mode fp64 cannot resolve a pixel spacing of 2^%.1f (below 2^%.0f); "
                 "use extended", log2_spacing, DEEP_FP64_MIN_LOG2);
        return ERR_INVALID;
    }
    t0 = now_s();
    err = ERR_NOMEM;
    if ((ref = calloc(1, sizeof(*ref))) == NULL)
        goto done;
    atomic_init(&ref->refs, 1);
    ref->serial = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed);
    ref->fractal = view->fractal;
    ref->c_re = view->fractal == SPEC_JULIA ? view->c_re : 0.0;
    ref->c_im = view->fractal == SPEC_JULIA ? view->c_im : 0.0;
    ref->escape_radius = view->escape_radius;
    ref->max_iter = view->max_iter;
    ref->mode = view->mode;
    ref->log2_spacing = log2_spacing;
    ref->prec = precision_for(log2_spacing, log2_mag);
    if ((ref->center_re = dup_str(view->center_re)) == NULL ||
        (ref->center_im = dup_str(view->center_im)) == NULL)
        goto done;
    if ((err = deep_view_spacing(view, &s, &ref->log2_reach, msg, msglen)) < 0)
        goto done;

    mpfr_inits2(ref->prec, cre, cim, zre, zim, (mpfr_ptr)0);
    have_mpfr = 1;
    r2max = view->escape_radius * view->escape_radius;
    if (view->fractal == SPEC_MANDELBROT) {
        if ((err = deep_parse(cre, view->center_re, "center.re", msg, msglen)) < 0 ||
            (err = deep_parse(cim, view->center_im, "center.im", msg, msglen)) < 0)
            goto done;
        ref->center_re_d = mpfr_get_d(cre, MPFR_RNDN);
        ref->center_im_d = mpfr_get_d(cim, MPFR_RNDN);
        mpfr_set_zero(zre, 1);
        mpfr_set_zero(zim, 1);
        ref->norbits = 1;
        if ((err = orbit_compute(&ref->orbit[0], zre, zim, cre, cim, r2max, view->max_iter,
                                 ref->mode, cancel)) < 0)
            goto done;
    } else {
        if ((err = deep_parse(zre, view->center_re, "center.re", msg, msglen)) < 0 ||
            (err = deep_parse(zim, view->center_im, "center.im", msg, msglen)) < 0)
            goto done;
        ref->center_re_d = mpfr_get_d(zre, MPFR_RNDN);
        ref->center_im_d = mpfr_get_d(zim, MPFR_RNDN);
        mpfr_set_d(cre, view->c_re, MPFR_RNDN);
        mpfr_set_d(cim, view->c_im, MPFR_RNDN);
        ref->norbits = 2;
        if ((err = orbit_compute(&ref->orbit[0], zre, zim, cre, cim, r2max, view->max_iter,
                                 ref->mode, cancel)) < 0)
            goto done;
        /* The critical point's orbit does not depend on the depth, but its error grows along
         * it as any orbit's does; the same precision keeps it as exact as the centre's. */
        mpfr_set_zero(zre, 1);
        mpfr_set_zero(zim, 1);
        if ((err = orbit_compute(&ref->orbit[1], zre, zim, cre, cim, r2max, view->max_iter,
                                 ref->mode, cancel)) < 0)
            goto done;
    }
    ref->orbit_s = now_s() - t0;

    t0 = now_s();
    /* Julia's steps have no dc term (B = 0): their radii need no reach. */
    reach = view->fractal == SPEC_JULIA ? xf_norm(0.0, 0)
                                        : xf_norm(exp2(ref->log2_reach - floor(ref->log2_reach)),
                                                  (int32_t)floor(ref->log2_reach));
    for (int k = 0; k < ref->norbits; k++)
        if ((err = deep_bla_build(&ref->orbit[k], ref->mode, view->fractal == SPEC_JULIA, reach,
                                  cancel)) < 0)
            goto done;
    ref->bla_s = now_s() - t0;

    ref->bytes = sizeof(*ref) + strlen(ref->center_re) + strlen(ref->center_im) + 2;
    for (int k = 0; k < ref->norbits; k++)
        ref->bytes += (size_t)ref->orbit[k].len * orbit_entry_bytes(ref->mode) +
                      deep_bla_bytes(ref->orbit[k].len, ref->mode);
    *out = ref;
    ref = NULL;
    err = 0;

done:
    if (err == ERR_NOMEM)
        snprintf(msg, msglen, "out of memory for the reference orbit (max_iter %u)",
                 view->max_iter);
    else if (err == ERR_CANCELLED)
        snprintf(msg, msglen, "cancelled");
    if (have_mpfr)
        mpfr_clears(cre, cim, zre, zim, (mpfr_ptr)0);
    /* MPFR keeps per-thread caches (constants, the free-list of limbs); the thread that built a
     * reference may be a short-lived worker, so release them here. */
    mpfr_free_cache2(MPFR_FREE_LOCAL_CACHE);
    ref_free(ref);
    return err;
}

int deep_ref_fits(const deep_ref *ref, const struct deep_view *view)
{
    char msg[128];
    double log2_spacing, log2_mag, log2_reach;
    xf s;

    if (ref == NULL || view->fractal != ref->fractal || view->mode != ref->mode ||
        view->max_iter != ref->max_iter || view->escape_radius != ref->escape_radius)
        return 0;
    if (view->fractal == SPEC_JULIA && (view->c_re != ref->c_re || view->c_im != ref->c_im))
        return 0;
    if (view->center_re == NULL || view->center_im == NULL ||
        strcmp(view->center_re, ref->center_re) != 0 ||
        strcmp(view->center_im, ref->center_im) != 0)
        return 0;
    if (deep_view_check(view, &log2_spacing, &log2_mag, msg, sizeof(msg)) < 0 ||
        deep_view_spacing(view, &s, &log2_reach, msg, sizeof(msg)) < 0)
        return 0;
    /* A finer spacing eats into the orbit's guard bits: up to DEEP_FIT_FINER_LOG2 of the
     * DEEP_GUARD_BITS may go (a zoom of 2^16 into the same reference), more needs a new orbit.
     * A wider grid reaches samples the BLA radii (Mandelbrot) do not cover. The 1e-9 absorbs
     * the rounding of the logarithms, not real growth. */
    if (log2_spacing < ref->log2_spacing - DEEP_FIT_FINER_LOG2)
        return 0;
    if (view->fractal == SPEC_MANDELBROT && log2_reach > ref->log2_reach + 1e-9)
        return 0;
    return 1;
}

uint64_t deep_ref_serial(const deep_ref *ref)
{
    return ref->serial;
}

size_t deep_ref_bytes(const deep_ref *ref)
{
    return ref->bytes;
}

void deep_ref_times(const deep_ref *ref, double *out_orbit_s, double *out_bla_s)
{
    *out_orbit_s = ref->orbit_s;
    *out_bla_s = ref->bla_s;
}

deep_ref *deep_ref_ref(deep_ref *ref)
{
    if (ref)
        atomic_fetch_add_explicit(&ref->refs, 1, memory_order_relaxed);
    return ref;
}

void deep_ref_unref(deep_ref *ref)
{
    /* acq_rel: the last holder must see every other holder's reads finished before it frees. */
    if (ref && atomic_fetch_sub_explicit(&ref->refs, 1, memory_order_acq_rel) == 1)
        ref_free(ref);
}
