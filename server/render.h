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

struct render_stats {
    uint64_t iterations;    /* sum of escape counts over all samples */
    uint64_t samples;
    uint32_t tiles;
    double compute_ms;      /* engine time */
    double encode_ms;       /* colouring and encoding time */
};

/* Renders spec->region of the image into `sink` in spec->format, computing on `engine` and
 * crediting `device`'s counters (device may be NULL). request_json (may be NULL) goes into the PNG
 * text chunk. cancel (may be NULL) is polled between tiles. Rows are produced in bands of about
 * `band_samples` samples (0 = a default of a few million), which bounds the memory used.
 * Returns 0, ERR_CANCELLED, ERR_NOMEM, the sink's error, or ERR_INTERNAL; msg gets a line for
 * errors other than the sink's own. */
int render_run(struct render_stats *out, engine_cpu *engine, struct device *device,
               const struct render_spec *spec, const char *request_json, encode_sink_fn sink,
               void *sink_ctx, const atomic_int *cancel, size_t band_samples, char *msg, size_t msglen);

/* Milliseconds on the monotonic clock. */
double render_now_ms(void);

#endif
