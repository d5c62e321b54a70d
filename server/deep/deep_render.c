/* deep_render.c: per-sample perturbation against a reference: deltas in double or extended floats,
 * Zhuoran's rebasing, BLA steps, escape counts and smooth values, over threads taking row tiles. */
#include "deep_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "escape.h"
#include "smooth.h"

/* Loop turns of one sample between polls of the cancel flag: a turn is one perturbed step or
 * one BLA step, a few ns, so 2^14 of them are well under a millisecond. */
#define POLL_MASK 0x3fffu

/* Row tiles per thread: enough that the last tiles balance the threads' finishing times. */
#define TILES_PER_THREAD 8u

/* What one thread did. */
struct tally {
    uint64_t iterations, perturbed, skipped, rebases, exact;
};

/* One deep_render call: read-only but for the tile counter, the abort flag and the totals. */
struct job {
    const struct deep_ref *ref;
    const struct deep_view *view;  /* borrowed for the call: deep_exact_sample's text */
    int julia, rebase, bla, exact;
    uint32_t max_iter;
    double r2max;
    struct smooth_f64 sm;
    double s;                      /* spacing in double (fp64 mode) */
    xf sx;                         /* spacing as an extended float (extended mode) */
    double half_w, half_h;
    struct spec_rect rect;
    uint32_t *counts;
    float *smooth;
    const atomic_int *cancel;
    uint32_t rows_per_tile, ntiles;
    atomic_uint next_tile;
    atomic_int aborted;
    pthread_mutex_t lock;          /* guards total */
    struct tally total;
};

static int cancel_raised(const struct job *jb)
{
    return (jb->cancel && atomic_load_explicit(jb->cancel, memory_order_relaxed) != 0) ||
           atomic_load_explicit(&jb->aborted, memory_order_relaxed) != 0;
}

/*
 * The longest BLA step of orbit table b from iteration m (>= 1) valid for a delta of L-infinity
 * norm dz_inf and at most `left` iterations long, or NULL. Steps at level k start where m - 1 is
 * a multiple of 2^k; within one start, a longer step's radius is never larger than a shorter
 * one's (R = min(R_x, ...)), so the first valid level from the top is the longest.
 */
static inline const struct deep_bla_f64 *find_f64(const struct deep_bla *b, uint32_t m,
                                                  double dz_inf, uint32_t left, uint32_t *len)
{
    uint32_t i = m - 1;
    int k = i ? __builtin_ctz(i) : (int)b->levels - 1;

    if (k > (int)b->levels - 1)
        k = (int)b->levels - 1;
    for (; k >= 0; k--) {
        uint32_t j = i >> k;
        const struct deep_bla_f64 *e;
        if (j >= b->count[k] || (1u << k) > left)
            continue;
        e = &b->f64[b->first[k] + j];
        if (dz_inf < e->r) {
            *len = 1u << k;
            return e;
        }
    }
    return NULL;
}

static inline const struct deep_bla_xf *find_xf(const struct deep_bla *b, uint32_t m, xf dz_inf,
                                                uint32_t left, uint32_t *len)
{
    uint32_t i = m - 1;
    int k = i ? __builtin_ctz(i) : (int)b->levels - 1;

    if (k > (int)b->levels - 1)
        k = (int)b->levels - 1;
    for (; k >= 0; k--) {
        uint32_t j = i >> k;
        const struct deep_bla_xf *e;
        if (j >= b->count[k] || (1u << k) > left)
            continue;
        e = &b->xf[b->first[k] + j];
        if (xf_lt_pos(dz_inf, e->r)) {
            *len = 1u << k;
            return e;
        }
    }
    return NULL;
}

/*
 * The perturbation loop, the same in both modes. State: n (the sample's iteration), the current
 * orbit o with index m, and the delta dz, so that z_n = Z_m + dz. Each turn:
 *   1. z = Z_m + dz; escaped by escape.h's check on z in double -> n is the count; n == max_iter
 *      -> interior. This is the check of z_n before its step, as escape.h makes it.
 *   2. Rebase (Zhuoran) when |z| < |dz|, or when m is the orbit's last entry: dz := z, m := 0.
 *      The full z is then the delta from Z_0 = 0, the critical point, whose orbit continues it.
 *      Mandelbrot: orbit 0 starts at Z_0 = 0 with the same c, so rebasing stays on it and the
 *      dc term is unchanged. Julia: the centre's orbit starts at the centre, not at 0, so
 *      rebasing switches to orbit 1, the critical point's (W_0 = 0, W_{k+1} = W_k^2 + c): its
 *      delta recurrence dz' = 2 W dz + dz^2 has no dc term either, because the sample's c is
 *      the reference's. Later rebases go from orbit 1 to its own start. Near 0 the map z^2
 *      folds: two nearby orbits are squeezed together and the delta loses its relative
 *      precision against a reference that passes elsewhere; against the orbit of 0 itself
 *      the delta stays the dominant part and keeps its bits.
 *   3. A BLA step of length l if one is valid at m for |dz| (m >= 1; not past max_iter, not past
 *      the orbit's end): dz := A dz + B dc, m += l, n += l. Else one perturbed step:
 *      dz := (2 Z_m + dz) dz + dc (Julia: dc = 0), m += 1, n += 1.
 * Mandelbrot starts with dz = 0 and dc = the sample's offset from the centre; Julia with dz =
 * the offset and dc = 0, both at m = 0 on orbit 0.
 */

/* |a + bi| without overflow: a long BLA step's A reaches 1e200 and more, whose square does not
 * fit a double. Division and root are correctly rounded, so deep.cl's copy gets the same bits. */
static inline double modulus(double a, double b)
{
    double s = fmax(fabs(a), fabs(b));

    return s > 0.0 ? s * sqrt((a / s) * (a / s) + (b / s) * (b / s)) : 0.0;
}

/*
 * Julia only, the error bound E (deep_internal.h, DEEP_EXACT_LOG2): a bound on the absolute
 * error of z_n = Z_m + dz in units of u = 2^-53, carried along the loop as first-order error
 * analysis has it: a perturbed step maps an error by the derivative 2 z_n and adds its own
 * roundings, about u |dz_{n+1}| (E := 2 |z_n| E + |dz_{n+1}|_1); a BLA step of length l maps it
 * by |A| and adds l of them; a rebase adds the rounding of Z_m + dz (|z|_1). The start is the
 * offset's rounding, |dz_0|_1. The 1-norms overestimate the additive terms by at most sqrt(2);
 * the factors use the true moduli, so the bound does not drift by sqrt(2) a step.
 * Why: c = -0.8 + 0.156i (the default) lies outside the Mandelbrot set by the period-2 bulb. Its
 * critical orbit escapes after 252 iterations and samples near the Julia set crawl for
 * hundreds of iterations more through the slow channel, where dz is a tenth of z and the map
 * multiplies errors by ~1e14 before they escape. No double delta holds that: the count depends
 * on bits of the start that no double computation keeps, and only a recomputation in MPFR
 * (deep_exact_sample) gets it right. Mandelbrot views keep the loop without the bound (their
 * counts match the brute force on every test view; the hot loop keeps its speed).
 */

/* fp64 mode: one sample at offset (d0r, d0i) from the centre. Returns its count and leaves the
 * final z in (*ozr, *ozi) and, Julia only, the error bound in units of 2^-53 in *oerr; sets
 * *aborted when it stopped for the cancel flag. Inlined into one copy per fractal, so that
 * Mandelbrot's loop carries no bound. */
static inline __attribute__((always_inline)) uint32_t
sample_f64(const struct job *jb, const int julia, double d0r, double d0i, double *ozr,
           double *ozi, double *oerr, struct tally *t, int *aborted)
{
    const struct deep_orbit *o = &jb->ref->orbit[0];
    const double *Z = o->z;
    uint32_t last = o->len - 1, n = 0, m = 0, turns = 0;
    const uint32_t max_iter = jb->max_iter;
    const double r2max = jb->r2max;
    double dzr, dzi, dcr, dci, zr, zi, err = 0.0;

    if (julia) {
        dzr = d0r, dzi = d0i, dcr = 0.0, dci = 0.0;
        err = fabs(d0r) + fabs(d0i);
    } else {
        dzr = 0.0, dzi = 0.0, dcr = d0r, dci = d0i;
    }
    for (;;) {
        double x2, y2;
        zr = Z[2 * (size_t)m] + dzr;
        zi = Z[2 * (size_t)m + 1] + dzi;
        x2 = zr * zr;
        y2 = zi * zi;
        if (ESC_ESCAPED(x2, y2, r2max) || n >= max_iter)
            break;
        if ((jb->rebase && x2 + y2 < dzr * dzr + dzi * dzi) || m == last) {
            dzr = zr;
            dzi = zi;
            m = 0;
            if (julia) {
                o = &jb->ref->orbit[1];
                Z = o->z;
                last = o->len - 1;
                err += fabs(zr) + fabs(zi);
            }
            t->rebases++;
        }
        if (jb->bla && m >= 1 && o->bla.levels > 0) {
            uint32_t l;
            double ar = fabs(dzr), ai = fabs(dzi);
            const struct deep_bla_f64 *e =
                find_f64(&o->bla, m, ar > ai ? ar : ai, max_iter - n, &l);
            if (e) {
                double nr = (e->ar * dzr - e->ai * dzi) + (e->br * dcr - e->bi * dci);
                double ni = (e->ar * dzi + e->ai * dzr) + (e->br * dci + e->bi * dcr);
                dzr = nr;
                dzi = ni;
                if (julia)
                    err = modulus(e->ar, e->ai) * err + (double)l * (fabs(nr) + fabs(ni));
                m += l;
                n += l;
                t->skipped += l;
                goto polled;
            }
        }
        {
            double tr = 2.0 * Z[2 * (size_t)m] + dzr, ti = 2.0 * Z[2 * (size_t)m + 1] + dzi;
            double nr = (tr * dzr - ti * dzi) + dcr, ni = (tr * dzi + ti * dzr) + dci;
            dzr = nr;
            dzi = ni;
            if (julia)
                err = 2.0 * sqrt(x2 + y2) * err + (fabs(nr) + fabs(ni));
            m++;
            n++;
            t->perturbed++;
        }
    polled:
        if ((++turns & POLL_MASK) == 0 && cancel_raised(jb)) {
            *aborted = 1;
            break;
        }
    }
    *ozr = zr;
    *ozi = zi;
    *oerr = err;
    return n;
}

static uint32_t sample_f64_julia(const struct job *jb, double d0r, double d0i, double *ozr,
                                 double *ozi, double *oerr, struct tally *t, int *aborted)
{
    return sample_f64(jb, 1, d0r, d0i, ozr, ozi, oerr, t, aborted);
}

static uint32_t sample_f64_mandel(const struct job *jb, double d0r, double d0i, double *ozr,
                                  double *ozi, double *oerr, struct tally *t, int *aborted)
{
    return sample_f64(jb, 0, d0r, d0i, ozr, ozi, oerr, t, aborted);
}

/* Extended mode: the same loop on extended floats, the bound an extended float too (its first
 * terms are far below double's range, and the orbit multiplies them back up). *oerr gets
 * log2 of the bound in units of 2^-53 (Julia; -inf for Mandelbrot). */
static uint32_t sample_xf(const struct job *jb, xfc d0, double *ozr, double *ozi, double *oerr,
                          struct tally *t, int *aborted)
{
    const struct deep_orbit *o = &jb->ref->orbit[0];
    const xfc *Z = o->zx;
    uint32_t last = o->len - 1, n = 0, m = 0, turns = 0;
    const uint32_t max_iter = jb->max_iter;
    const double r2max = jb->r2max;
    const xfc zero = xfc_norm(0.0, 0.0, 0);
    xfc dz = jb->julia ? d0 : zero, dc = jb->julia ? zero : d0;
    xf err = xf_norm(fabs(d0.re) + fabs(d0.im), d0.e);
    double zr, zi;

    for (;;) {
        xfc z = xfc_add(Z[m], dz);
        xfc_to_d(z, &zr, &zi);
        if (ESC_ESCAPED(zr * zr, zi * zi, r2max) || n >= max_iter)
            break;
        if ((jb->rebase && xf_lt_pos(xfc_norm2(z), xfc_norm2(dz))) || m == last) {
            dz = z;
            m = 0;
            if (jb->julia) {
                o = &jb->ref->orbit[1];
                Z = o->zx;
                last = o->len - 1;
                err = xf_add(err, xf_norm(fabs(z.re) + fabs(z.im), z.e));
            }
            t->rebases++;
        }
        if (jb->bla && m >= 1 && o->bla.levels > 0) {
            uint32_t l;
            const struct deep_bla_xf *e = find_xf(&o->bla, m, xfc_inf(dz), max_iter - n, &l);
            if (e) {
                dz = xfc_add(xfc_mul(e->a, dz), xfc_mul(e->b, dc));
                if (jb->julia)
                    err = xf_add(xf_mul(xfc_abs(e->a), err),
                                 xf_norm((double)l * (fabs(dz.re) + fabs(dz.im)), dz.e));
                m += l;
                n += l;
                t->skipped += l;
                goto polled;
            }
        }
        dz = xfc_add(xfc_mul(xfc_add(xfc_twice(Z[m]), dz), dz), dc);
        if (jb->julia)
            err = xf_add(xf_mul(xfc_abs(xfc_twice(z)), err),
                         xf_norm(fabs(dz.re) + fabs(dz.im), dz.e));
        m++;
        n++;
        t->perturbed++;
    polled:
        if ((++turns & POLL_MASK) == 0 && cancel_raised(jb)) {
            *aborted = 1;
            break;
        }
    }
    *ozr = zr;
    *ozi = zi;
    *oerr = !jb->julia ? -INFINITY : err.m > 0.0 ? (double)err.e + log2(err.m) - 53.0 : -INFINITY;
    return n;
}

/* Computes rows [y0, y1) of the job's rectangle. Returns nonzero when cancelled. */
static int render_rows(struct job *jb, uint32_t y0, uint32_t y1, struct tally *t)
{
    const struct spec_rect *r = &jb->rect;
    int aborted = 0;

    for (uint32_t y = y0; y < y1; y++) {
        uint32_t j = r->y + y;
        /* The offsets of escape.h's mapping, (i + 0.5) - grid/2 in double: exact half
         * integers; the sign of the imaginary one follows y = center_im - (...) * s. */
        double oy = -(((double)j + 0.5) - jb->half_h);
        if (cancel_raised(jb))
            return 1;
        for (uint32_t x = 0; x < r->width; x++) {
            uint32_t i = r->x + x, n;
            size_t k = (size_t)y * r->width + x;
            double ox = ((double)i + 0.5) - jb->half_w, zr, zi, cr, ci, log2_err;

            if (jb->ref->mode == DEEP_EXTENDED) {
                xfc d0 = xfc_from_xf(xf_mul_d(jb->sx, ox), xf_mul_d(jb->sx, oy));
                n = sample_xf(jb, d0, &zr, &zi, &log2_err, t, &aborted);
                xfc_to_d(d0, &cr, &ci);
            } else {
                double e;
                cr = ox * jb->s;
                ci = oy * jb->s;
                if (jb->julia) {
                    n = sample_f64_julia(jb, cr, ci, &zr, &zi, &e, t, &aborted);
                    log2_err = deep_err_log2(e);
                } else {
                    n = sample_f64_mandel(jb, cr, ci, &zr, &zi, &e, t, &aborted);
                    log2_err = -INFINITY;
                }
            }
            if (aborted)
                return 1;
            if (jb->julia && jb->exact && !(log2_err <= DEEP_EXACT_LOG2)) {
                /* The double deltas lost this sample's z: its count and z come from MPFR. */
                if (deep_exact_sample(jb->ref, jb->view, i, j, log2_err, jb->cancel, &n, &zr,
                                      &zi) < 0)
                    return 1;
                t->exact++;
            }
            t->iterations += n;
            if (jb->counts)
                jb->counts[k] = n;
            if (jb->smooth) {
                /* Mandelbrot: the sample's own c in double (the few steps past the escape
                 * that smooth.h takes are dominated by z^2); Julia: the constant. */
                if (jb->julia) {
                    cr = jb->ref->c_re;
                    ci = jb->ref->c_im;
                } else {
                    cr += jb->ref->center_re_d;
                    ci += jb->ref->center_im_d;
                }
                jb->smooth[k] = smooth_value_f64(&jb->sm, n, zr, zi, cr, ci);
            }
        }
    }
    return 0;
}

/* A thread of the render: claims row tiles until none is left or the job is cancelled, then
 * adds its tally to the job's. */
static void *worker(void *arg)
{
    struct job *jb = arg;
    struct tally t = {0, 0, 0, 0, 0};

    for (;;) {
        uint32_t tile, y0, y1;
        if (cancel_raised(jb)) {
            atomic_store(&jb->aborted, 1);
            break;
        }
        tile = atomic_fetch_add_explicit(&jb->next_tile, 1, memory_order_relaxed);
        if (tile >= jb->ntiles)
            break;
        y0 = tile * jb->rows_per_tile;
        y1 = y0 + jb->rows_per_tile < jb->rect.height ? y0 + jb->rows_per_tile : jb->rect.height;
        if (render_rows(jb, y0, y1, &t)) {
            atomic_store(&jb->aborted, 1);
            break;
        }
    }
    pthread_mutex_lock(&jb->lock);
    jb->total.iterations += t.iterations;
    jb->total.perturbed += t.perturbed;
    jb->total.skipped += t.skipped;
    jb->total.rebases += t.rebases;
    jb->total.exact += t.exact;
    pthread_mutex_unlock(&jb->lock);
    /* MPFR's per-thread caches of deep_exact_sample: the worker threads end with the call. */
    if (t.exact)
        mpfr_free_cache2(MPFR_FREE_LOCAL_CACHE);
    return NULL;
}

int deep_render_opts(const deep_ref *ref, const struct deep_view *view,
                     const struct spec_rect *rect, uint32_t *counts, float *smooth,
                     const atomic_int *cancel, unsigned nthreads, struct deep_stats *stats,
                     const struct deep_render_opts *opts)
{
    const struct deep_render_opts defaults = DEEP_RENDER_OPTS_INIT;
    struct job *jb = NULL;
    pthread_t *threads = NULL;
    unsigned started = 0;
    int err = ERR_INVALID, have_lock = 0;
    double log2_reach;
    char msg[160];
    esc_view_f64 v;

    if (opts == NULL)
        opts = &defaults;
    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (!deep_ref_fits(ref, view))
        return ERR_INVALID;
    if (rect->width == 0 || rect->height == 0 || rect->x > view->grid_w ||
        rect->width > view->grid_w - rect->x || rect->y > view->grid_h ||
        rect->height > view->grid_h - rect->y)
        return ERR_INVALID;
    if (nthreads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = n > 0 ? (unsigned)n : 1;
    }
    if (nthreads > rect->height)
        nthreads = rect->height;

    err = ERR_NOMEM;
    if ((jb = calloc(1, sizeof(*jb))) == NULL)
        goto done;
    if (pthread_mutex_init(&jb->lock, NULL) != 0)
        goto done;
    have_lock = 1;
    jb->ref = ref;
    jb->view = view;
    jb->julia = ref->fractal == SPEC_JULIA;
    jb->rebase = opts->rebase;
    jb->bla = opts->bla;
    jb->exact = opts->exact;
    jb->max_iter = ref->max_iter;
    jb->r2max = ref->escape_radius * ref->escape_radius;
    if ((err = deep_view_spacing(view, &jb->sx, &log2_reach, msg, sizeof(msg))) < 0)
        goto done;
    jb->s = xf_to_d(jb->sx);
    jb->half_w = (double)view->grid_w * 0.5;
    jb->half_h = (double)view->grid_h * 0.5;
    /* smooth.h's constants from an fp64 view with the same r2max and max_iter; its mapping is
     * not used (the samples' c come from here), so the width may well round to 0. */
    esc_view_init_f64(&v, (int)ref->fractal, ref->c_re, ref->c_im, ref->center_re_d,
                      ref->center_im_d, jb->s * view->grid_w, view->grid_w, view->grid_h,
                      ref->escape_radius, ref->max_iter);
    smooth_init_f64(&jb->sm, &v);
    jb->rect = *rect;
    jb->counts = counts;
    jb->smooth = smooth;
    jb->cancel = cancel;
    jb->rows_per_tile = rect->height / (nthreads * TILES_PER_THREAD);
    if (jb->rows_per_tile == 0)
        jb->rows_per_tile = 1;
    jb->ntiles = (rect->height + jb->rows_per_tile - 1) / jb->rows_per_tile;
    atomic_init(&jb->next_tile, 0);
    atomic_init(&jb->aborted, 0);

    /* The caller's thread is one of the nthreads. */
    err = ERR_NOMEM;
    if (nthreads > 1 && (threads = calloc(nthreads - 1, sizeof(*threads))) == NULL)
        goto done;
    for (; started + 1 < nthreads; started++)
        if (pthread_create(&threads[started], NULL, worker, jb) != 0)
            break;
    worker(jb);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    err = atomic_load(&jb->aborted) ? ERR_CANCELLED : 0;
    if (stats) {
        stats->iterations = jb->total.iterations;
        stats->perturbed = jb->total.perturbed;
        stats->skipped = jb->total.skipped;
        stats->rebases = jb->total.rebases;
        stats->exact = jb->total.exact;
        stats->tiles = jb->ntiles;
    }

done:
    if (have_lock)
        pthread_mutex_destroy(&jb->lock);
    free(threads);
    free(jb);
    return err;
}

int deep_render(const deep_ref *ref, const struct deep_view *view, const struct spec_rect *rect,
                uint32_t *counts, float *smooth, const atomic_int *cancel, unsigned nthreads,
                struct deep_stats *stats)
{
    return deep_render_opts(ref, view, rect, counts, smooth, cancel, nthreads, stats, NULL);
}
