/* render_deep.c: deep specs band by band: the reference orbit from the cache, then the deep
 * engine (server/deep/, or an OpenCL device's perturbation kernel) on the band's rectangle. */
#include "render_deep.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "deep_device.h"
#include "engine_cl_deep.h"
#include "err.h"
#include "log.h"

struct deep_view render_deep_view(const struct render_spec *s)
{
    struct deep_view v;

    memset(&v, 0, sizeof(v));
    v.fractal = s->fractal;
    v.center_re = s->deep->center_re;
    v.center_im = s->deep->center_im;
    v.width = s->deep->width;
    v.c_re = s->c_re;
    v.c_im = s->c_im;
    v.grid_w = s->width * s->supersample;
    v.grid_h = s->height * s->supersample;
    v.max_iter = s->max_iter;
    v.escape_radius = s->escape_radius;
    v.mode = s->precision == SPEC_PERTURB_EXTENDED ? DEEP_EXTENDED : DEEP_FP64;
    return v;
}

static void release_entry(void *entry)
{
    deep_cache_release(entry);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int render_compute_deep(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                        uint32_t *counts, float *smooth, const atomic_int *cancel,
                        struct engine_cpu_stats *stats)
{
    struct render_deep *rd = ctx;
    struct spec_deep *deep = spec->deep;
    struct deep_view view;
    struct deep_stats ds;
    double t0 = now_us();
    int err;

    if (stats)
        *stats = (struct engine_cpu_stats){0, 0};
    rd->msg[0] = '\0';
    if (!deep || !spec_precision_is_deep(spec->precision)) {
        snprintf(rd->msg, sizeof(rd->msg), "not a deep render");
        return ERR_INVALID;
    }
    if (rect->width == 0 || rect->height == 0)
        return 0;
    view = render_deep_view(spec);
    /* One render at a time uses a spec (a render worker runs its bands in turn), so attaching
     * needs no lock. */
    if (!deep->attached) {
        deep_cache_entry *entry = NULL;
        if ((err = deep_cache_acquire(&entry, rd->cache, &view, cancel, rd->msg, sizeof(rd->msg))) < 0) {
            if (err == ERR_CANCELLED || !rd->msg[0])
                snprintf(rd->msg, sizeof(rd->msg), "%s", err == ERR_CANCELLED ? "render cancelled"
                                                          : "the reference orbit failed");
            return err;
        }
        deep->attached = entry;
        deep->attached_release = release_entry;
    }
    memset(&ds, 0, sizeof(ds));
    err = -1;
    if (rd->cl && view.mode == DEEP_FP64) {
        /* The device's perturbation kernel: same counts and smooth bits as the CPU's deep engine
         * (tests/deep/test_deep_cl.c). The job borrows the reference's arrays, which the spec
         * holds attached for the whole render. */
        struct engine_cl_deep_job job;
        struct engine_cl_deep_stats cs;

        memset(&cs, 0, sizeof(cs));
        err = deep_ref_device_job(&job, deep_cache_entry_ref(deep->attached), &view, rect, rd->msg,
                                  sizeof(rd->msg));
        if (err == 0) {
            /* The bands of one frame share the reference: the device keeps its orbits from the
             * first band on instead of receiving them again for every band. */
            job.orbit_id = deep_ref_serial(deep_cache_entry_ref(deep->attached));
            err = engine_cl_deep_render(rd->cl, &job, counts, smooth, cancel, &cs, rd->msg,
                                        sizeof(rd->msg));
        }
        if (err == 0) {
            ds.iterations = cs.iterations;
            ds.tiles = cs.launches;
        } else if (err == ERR_CANCELLED) {
            snprintf(rd->msg, sizeof(rd->msg), "render cancelled");
            return err;
        } else {
            /* A device that cannot do it (lost, out of memory, no program) leaves the band to
             * the host's cores: the render still succeeds, at the CPU's speed. */
            log_at(LOG_WARN, "deep render on %s failed, computing on the CPU instead: %s",
                   rd->device ? rd->device->id : "an OpenCL device", rd->msg);
            rd->fell_back = true;
            rd->msg[0] = '\0';
        }
    }
    if (err != 0)
        err = deep_render(deep_cache_entry_ref(deep->attached), &view, rect, counts, smooth, cancel,
                          rd->threads, &ds);
    if (err < 0) {
        snprintf(rd->msg, sizeof(rd->msg), "%s", err == ERR_CANCELLED ? "render cancelled"
                                                  : err == ERR_NOMEM ? "out of memory for the deep render"
                                                                     : "the deep render failed");
        return err;
    }
    if (stats) {
        stats->iterations = ds.iterations;
        stats->tiles = ds.tiles ? ds.tiles : 1;
    }
    if (rd->device && !rd->fell_back) {
        atomic_fetch_add(&rd->device->tiles_done, ds.tiles ? ds.tiles : 1);
        atomic_fetch_add(&rd->device->iterations_done, ds.iterations);
        atomic_fetch_add(&rd->device->busy_us, (uint64_t)(now_us() - t0));
    }
    return 0;
}
