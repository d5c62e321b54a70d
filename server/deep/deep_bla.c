/* deep_bla.c: the bilinear approximation (BLA) tables of a reference orbit: single steps and their
 * pairwise merges, level by level, each with the radius within which it is exact enough. */
#include "deep_internal.h"

#include <math.h>
#include <stdlib.h>

#include "err.h"

/*
 * The approximation and its radius (after Claude Heiland-Allen's write-up of Zhuoran's BLA).
 * One perturbation step from iteration m is dz' = 2 Z_m dz + dz^2 + dc (Julia: no dc). Dropping
 * dz^2 leaves the linear map dz' = A dz + B dc with A = 2 Z_m, B = 1 (Julia: B = 0); the dropped
 * term is at most DEEP_BLA_EPS of the kept one, |dz|^2 <= eps |2 Z_m dz|, while |dz| < R = eps |A|.
 * So within R a BLA step errs no more than a double rounding of the exact step does.
 *
 * Two steps, x from m then y from m + l_x, compose into A = A_y A_x, B = A_y B_x + B_y, valid
 * while x is and while x lands inside y's radius: |dz_{m+l_x}| <= |A_x| |dz| + |B_x| |dc| < R_y,
 * so R = max(0, min(R_x, (R_y - |B_x| reach) / |A_x|)) with reach the largest |dc| of the view.
 * Each merged step is made of single steps that each hold within their own radius, so its error
 * is at most l eps relative.
 */
#define DEEP_BLA_EPS 0x1p-53

/* Entries between polls of the cancel flag while building. */
#define BLA_POLL 65536u

static int cancelled(const atomic_int *cancel)
{
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

/* Level sizes of an orbit of len entries: level k has (len - 2) >> k steps (entry j covers
 * iterations 1 + j 2^k .. 1 + (j + 1) 2^k, which must stay within Z_{len-1}). Returns the
 * number of entries in all. */
static size_t plan_levels(struct deep_bla *bla, size_t len)
{
    size_t total = 0, n = len >= 3 ? len - 2 : 0;

    bla->levels = 0;
    while (bla->levels < DEEP_BLA_LEVELS_MAX && (n >> bla->levels) > 0) {
        bla->first[bla->levels] = total;
        bla->count[bla->levels] = (uint32_t)(n >> bla->levels);
        total += n >> bla->levels;
        bla->levels++;
    }
    return total;
}

size_t deep_bla_bytes(size_t len, enum deep_mode mode)
{
    struct deep_bla plan;
    size_t total = plan_levels(&plan, len);

    return total * (mode == DEEP_EXTENDED ? sizeof(struct deep_bla_xf) : sizeof(struct deep_bla_f64));
}

static void merge_f64(struct deep_bla_f64 *out, const struct deep_bla_f64 *x,
                      const struct deep_bla_f64 *y, double reach)
{
    double ax = sqrt(x->ar * x->ar + x->ai * x->ai), bx = sqrt(x->br * x->br + x->bi * x->bi);
    double r = 0.0;

    out->ar = y->ar * x->ar - y->ai * x->ai;
    out->ai = y->ar * x->ai + y->ai * x->ar;
    out->br = (y->ar * x->br - y->ai * x->bi) + y->br;
    out->bi = (y->ar * x->bi + y->ai * x->br) + y->bi;
    if (ax > 0.0) {
        r = (y->r - bx * reach) / ax;
        if (r > x->r)
            r = x->r;
    }
    /* NaN (an overflowed A or B) and negative radii both mean "never". */
    if (!(r > 0.0) || !isfinite(out->ar + out->ai + out->br + out->bi))
        r = 0.0;
    out->r = r;
}

static void merge_xf(struct deep_bla_xf *out, const struct deep_bla_xf *x,
                     const struct deep_bla_xf *y, xf reach)
{
    xf ax = xfc_abs(x->a), bx = xfc_abs(x->b), r = xf_norm(0.0, 0);

    out->a = xfc_mul(y->a, x->a);
    out->b = xfc_add(xfc_mul(y->a, x->b), y->b);
    if (ax.m > 0.0) {
        xf num = xf_sub(y->r, xf_mul(bx, reach));
        if (num.m > 0.0)
            r = xf_min_pos(x->r, xf_div(num, ax));
    }
    out->r = r;
}

int deep_bla_build(struct deep_orbit *o, enum deep_mode mode, int julia, xf reach,
                   const atomic_int *cancel)
{
    struct deep_bla *bla = &o->bla;
    size_t total = plan_levels(bla, o->len), done_entries = 0;
    int err = 0;

    bla->f64 = NULL;
    bla->xf = NULL;
    if (total == 0)
        return 0;
    if (mode == DEEP_EXTENDED) {
        const xf eps = xf_from_d(DEEP_BLA_EPS), half_sqrt2 = xf_from_d(M_SQRT1_2);
        struct deep_bla_xf *t = malloc(total * sizeof(*t));

        if ((bla->xf = t) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        for (uint32_t j = 0; j < bla->count[0]; j++) {
            t[j].a = xfc_twice(o->zx[1 + j]);
            t[j].b = julia ? xfc_norm(0.0, 0.0, 0) : xfc_norm(1.0, 0.0, 0);
            t[j].r = xf_mul(eps, xfc_abs(t[j].a));
        }
        for (uint32_t k = 1; k < bla->levels; k++) {
            struct deep_bla_xf *lo = t + bla->first[k - 1], *hi = t + bla->first[k];
            for (uint32_t j = 0; j < bla->count[k]; j++) {
                merge_xf(&hi[j], &lo[2 * j], &lo[2 * j + 1], reach);
                if (++done_entries % BLA_POLL == 0 && cancelled(cancel)) {
                    err = ERR_CANCELLED;
                    goto done;
                }
            }
        }
        for (size_t i = 0; i < total; i++)
            t[i].r = xf_mul(t[i].r, half_sqrt2);
    } else {
        const double reach_d = xf_to_d(reach);
        struct deep_bla_f64 *t = malloc(total * sizeof(*t));

        if ((bla->f64 = t) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        for (uint32_t j = 0; j < bla->count[0]; j++) {
            const double *z = o->z + 2 * (size_t)(1 + j);
            t[j].ar = 2.0 * z[0];
            t[j].ai = 2.0 * z[1];
            t[j].br = julia ? 0.0 : 1.0;
            t[j].bi = 0.0;
            t[j].r = DEEP_BLA_EPS * sqrt(t[j].ar * t[j].ar + t[j].ai * t[j].ai);
        }
        for (uint32_t k = 1; k < bla->levels; k++) {
            struct deep_bla_f64 *lo = t + bla->first[k - 1], *hi = t + bla->first[k];
            for (uint32_t j = 0; j < bla->count[k]; j++) {
                merge_f64(&hi[j], &lo[2 * j], &lo[2 * j + 1], reach_d);
                if (++done_entries % BLA_POLL == 0 && cancelled(cancel)) {
                    err = ERR_CANCELLED;
                    goto done;
                }
            }
        }
        for (size_t i = 0; i < total; i++)
            t[i].r *= M_SQRT1_2;
    }

done:
    if (err < 0)
        deep_bla_dispose(bla);
    return err;
}

void deep_bla_dispose(struct deep_bla *bla)
{
    free(bla->f64);
    free(bla->xf);
    bla->f64 = NULL;
    bla->xf = NULL;
    bla->levels = 0;
}
