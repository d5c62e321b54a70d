/* deep_device.c: a deep reference as a device job (deep_device.h): the orbits and BLA tables of
 * deep_internal.h's layout exposed as borrowed arrays, and deep_render.c's mapping as doubles. */
#include "deep_device.h"

#include <stdio.h>
#include <string.h>

#include "deep_internal.h"
#include "err.h"

/* The device reads a BLA entry as ENGINE_CL_DEEP_BLA_DOUBLES doubles in this order. */
_Static_assert(sizeof(struct deep_bla_f64) == ENGINE_CL_DEEP_BLA_DOUBLES * sizeof(double),
               "struct deep_bla_f64 is not 5 packed doubles");
_Static_assert(offsetof(struct deep_bla_f64, ar) == 0 && offsetof(struct deep_bla_f64, ai) == 8 &&
                   offsetof(struct deep_bla_f64, br) == 16 &&
                   offsetof(struct deep_bla_f64, bi) == 24 && offsetof(struct deep_bla_f64, r) == 32,
               "struct deep_bla_f64 is not ar, ai, br, bi, r");
_Static_assert(DEEP_BLA_LEVELS_MAX <= ENGINE_CL_DEEP_LEVELS_MAX, "more BLA levels than a job holds");

/* The job's exact hook: deep_exact_sample with the kernel's bound (units of 2^-53). */
static int device_exact(const void *ref, const void *view, uint32_t i, uint32_t j, double err,
                        const atomic_int *cancel, uint32_t *out_n, double *out_zr,
                        double *out_zi)
{
    return deep_exact_sample(ref, view, i, j, deep_err_log2(err), cancel, out_n, out_zr, out_zi);
}

static void orbit_job(struct engine_cl_deep_orbit *out, const struct deep_orbit *o)
{
    const struct deep_bla *b = &o->bla;

    memset(out, 0, sizeof(*out));
    out->z = o->z;
    out->len = o->len;
    out->bla_levels = b->f64 ? b->levels : 0;
    for (uint32_t k = 0; k < out->bla_levels; k++) {
        out->bla_count[k] = b->count[k];
        out->bla_first[k] = b->first[k];
        if (b->first[k] + b->count[k] > out->bla_entries)
            out->bla_entries = b->first[k] + b->count[k];
    }
    out->bla = out->bla_levels ? (const double *)(const void *)b->f64 : NULL;
}

int deep_ref_device_job(struct engine_cl_deep_job *out, const deep_ref *ref,
                        const struct deep_view *view, const struct spec_rect *rect, char *msg,
                        size_t msglen)
{
    char tmp[160];
    double log2_reach;
    xf sx;
    int err;

    if (msg == NULL || msglen == 0) {
        msg = tmp;
        msglen = sizeof(tmp);
    }
    msg[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!deep_ref_fits(ref, view)) {
        snprintf(msg, msglen, "the reference does not fit the view");
        return ERR_INVALID;
    }
    if (ref->mode != DEEP_FP64) {
        snprintf(msg, msglen, "extended-exponent deep views have no device path");
        return ERR_PRECONDITION;
    }
    if (rect->width == 0 || rect->height == 0 || rect->x > view->grid_w ||
        rect->width > view->grid_w - rect->x || rect->y > view->grid_h ||
        rect->height > view->grid_h - rect->y) {
        snprintf(msg, msglen, "rect %ux%u at %u,%u outside the %ux%u grid", rect->width,
                 rect->height, rect->x, rect->y, view->grid_w, view->grid_h);
        return ERR_INVALID;
    }
    if ((err = deep_view_spacing(view, &sx, &log2_reach, msg, msglen)) < 0)
        return err;
    out->version = ENGINE_CL_DEEP_JOB_VERSION;
    out->fractal = ref->fractal;
    out->norbits = ref->norbits;
    for (int o = 0; o < ref->norbits && o < 2; o++)
        orbit_job(&out->orbit[o], &ref->orbit[o]);
    /* deep_render_opts's own roundings: s from the extended spacing, half the grid exactly. */
    out->spacing = xf_to_d(sx);
    out->half_w = (double)view->grid_w * 0.5;
    out->half_h = (double)view->grid_h * 0.5;
    out->grid_w = view->grid_w;
    out->grid_h = view->grid_h;
    out->center_re = ref->center_re_d;
    out->center_im = ref->center_im_d;
    out->c_re = ref->c_re;
    out->c_im = ref->c_im;
    out->escape_radius = ref->escape_radius;
    out->max_iter = ref->max_iter;
    out->rect = *rect;
    /* deep_render's threshold: a relative error above 2^DEEP_EXACT_LOG2, in units of 2^-53. */
    out->exact_above = ldexp(1.0, 53 + DEEP_EXACT_LOG2);
    out->exact = ref->fractal == SPEC_JULIA ? device_exact : NULL;
    out->exact_ref = ref;
    out->exact_view = view;
    return 0;
}
