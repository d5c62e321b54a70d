/* render_deep.h: the render_compute_fn of deep specs (PRECISION_PERTURB, _EXTENDED): the view's
 * reference orbit from the shared cache, held for the whole render, then the deep engine on each
 * band: the CPU's (server/deep/), or an OpenCL device's perturbation kernel for fp64 deltas. The
 * scheduler hands deep specs to it (sched.c). */
#ifndef FRACTALD_RENDER_DEEP_H
#define FRACTALD_RENDER_DEEP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "deep_cache.h"
#include "devices.h"
#include "engine_cl.h"
#include "engine_cpu.h"
#include "spec.h"

/* What render_compute_deep computes with, for one render at a time. */
struct render_deep {
    deep_cache *cache;
    unsigned threads;           /* deep_render's threads; 0 = one per online CPU */
    struct device *device;      /* credited with tiles, iterations and busy time; may be NULL */
    engine_cl *cl;              /* the device's OpenCL engine, for PRECISION_PERTURB; NULL: the CPU */
    bool fell_back;             /* out: the device failed and a band ran on the CPU instead */
    char msg[256];              /* out: why the last call failed */
};

/* A render_compute_fn (render.h) for a spec with a perturbation precision and its deep view; ctx
 * is a struct render_deep. The first call of a render acquires the view's reference from the
 * cache (building it, or waiting for the render that builds it) and attaches it to spec->deep, so
 * the following bands and every copy of the spec use it, until the spec's last owner disposes of
 * it. ctx->msg says why on error. Polls *cancel (may be NULL): returns ERR_CANCELLED within some 50 ms of it turning nonzero.
 * Returns 0, ERR_CANCELLED, ERR_NOMEM, ERR_INVALID (a spec that is not deep) or the engine's
 * error. stats gets the band's iterations and tiles. */
int render_compute_deep(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                        uint32_t *counts, float *smooth, const atomic_int *cancel,
                        struct engine_cpu_stats *stats);

/* The deep engine's view of a deep spec, its strings borrowed from spec->deep. */
struct deep_view render_deep_view(const struct render_spec *spec);

#endif
