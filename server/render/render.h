/* render.h: the render pipeline: a validated render_spec goes through the engine band by band,
 * is coloured, and is encoded into a sink, so no stage ever holds the whole frame. */
#ifndef FRACTALD_RENDER_H
#define FRACTALD_RENDER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "devices.h"
#include "encode.h"
#include "engine_cpu.h"
#include "spec.h"

/* Computes a rectangle of the spec's sample grid with the contract of engine_cpu_render (outputs,
 * cancel, stats). The CPU engine alone, or a scheduler over several devices, sits behind it. */
typedef int (*render_compute_fn)(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                                 uint32_t *counts, float *smooth, const atomic_int *cancel,
                                 struct engine_cpu_stats *stats);

/* Told after each band is encoded: rows of the region done so far, of how many, and samples. */
typedef void (*render_progress_fn)(void *ctx, uint32_t rows_done, uint32_t rows_total, uint64_t samples_done);

/* Where a render's work comes from and where its bytes and progress go. */
struct render_io {
    render_compute_fn compute;
    void *compute_ctx;
    encode_sink_fn sink;
    void *sink_ctx;
    render_progress_fn progress;        /* may be NULL */
    void *progress_ctx;
    const atomic_int *cancel;           /* may be NULL; polled between tiles */
    size_t band_samples;                /* samples per band, 0 = a default of a few million */
};

struct render_stats {
    uint64_t iterations;    /* sum of escape counts over all samples */
    uint64_t samples;
    uint32_t tiles;
    double compute_ms;      /* engine time */
    double encode_ms;       /* colouring and encoding time */
};

/* Renders spec->region of the image into io->sink in spec->format, band by band: io->compute
 * fills a band of samples, which is coloured and encoded before the next band is computed, so
 * memory stays at one band whatever the image size. request_json (may be NULL) goes into the PNG
 * text chunk. Returns 0, ERR_CANCELLED, ERR_NOMEM, the compute function's or the sink's error, or
 * ERR_INTERNAL; msg gets a line for errors other than the sink's own. */
int render_run(struct render_stats *out, const struct render_io *io, const struct render_spec *spec,
               const char *request_json, char *msg, size_t msglen);

/* A render_compute_fn for the CPU engine alone; ctx is a struct render_cpu. Credits the device's
 * tile and iteration counters when device is not NULL. */
struct render_cpu {
    engine_cpu *engine;
    struct device *device;
};
int render_compute_cpu(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                       uint32_t *counts, float *smooth, const atomic_int *cancel,
                       struct engine_cpu_stats *stats);

/* Milliseconds on the monotonic clock. */
double render_now_ms(void);

#endif
