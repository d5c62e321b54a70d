/* rect_fill.h: Mariani-Silver rectangle fill over any device: a layer of the device_ops.render
 * shape that computes a rectangle's border through the wrapped device and fills the inside as
 * interior when every border sample is interior, subdividing where it is not. */
#ifndef FRACTALD_RECT_FILL_H
#define FRACTALD_RECT_FILL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "devices.h"
#include "engine_cpu.h"
#include "spec.h"

/* The box geometry, in samples of the grid, the same for every device and every rectangle: boxes
 * of RECT_FILL_BOX_COLS x RECT_FILL_BAND_ROWS aligned to the grid's (0, 0) (the last ones
 * clipped to the grid), halved down to RECT_FILL_MIN_SIDE a side. A box is decided on its own
 * border only, so a sample's value never depends on how the grid is cut into requests, regions,
 * bands or strips, nor on which device computes it: tiles side by side, streamed and unary
 * renders, and jobs give the same pixels. A scheduler that cuts strips at multiples of
 * RECT_FILL_BAND_ROWS saves the border rows a cut box needs from outside the strip. */
#define RECT_FILL_BOX_COLS 256u
#define RECT_FILL_BAND_ROWS 64u
#define RECT_FILL_MIN_SIDE 8u

/* One wrapped device, and what the layer did for it. Set up with rect_fill_init; used by one
 * render at a time (the counters are plain integers). */
struct rect_fill {
    const struct device_ops *ops;   /* the device that computes every sample not filled */
    void *backend;                  /* borrowed: ops' context */
    /* Counters, added to by every rect_fill_render call: */
    uint64_t samples_computed;      /* samples the device computed (borders outside the rectangle
                                     * included) */
    uint64_t samples_filled;        /* samples of the rectangle filled as interior */
    uint64_t iterations_computed;   /* the device's sum of escape counts over samples_computed */
    uint64_t device_calls;          /* calls to ops->render */
};

/* Wraps (ops, backend), counters at zero. */
void rect_fill_init(struct rect_fill *rf, const struct device_ops *ops, void *backend);

/* The device_ops.render contract over the wrapped device, `ctx` being a struct rect_fill:
 * computes `rect` of the spec's sample grid into counts/smooth (rect->width-strided; either may
 * be NULL). With spec->rect_fill, a box whose whole border is interior (count max_iter) gets its
 * inside filled as interior (count max_iter, smooth -1) without computing it; nothing is ever
 * filled with a non-interior value. Otherwise, and always when spec->rect_fill is false or both
 * outputs are NULL, it is exactly one call of the wrapped device. stats->iterations is the sum of
 * the escape counts written (a filled sample adds max_iter), so it equals brute force's wherever
 * the fill is right; stats->tiles adds up the device's pieces. Every device call gets `cancel`;
 * returns 0, ERR_NOMEM, ERR_CANCELLED or the device's error with its message in msg, the outputs
 * then partly written. */
int rect_fill_render(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen);

#endif
