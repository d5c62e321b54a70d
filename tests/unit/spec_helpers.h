/* spec_helpers.h: render_spec builders shared by the engine tests (CPU and OpenCL), so both
 * compare the same views. */
#ifndef FRACTALD_TEST_SPEC_HELPERS_H
#define FRACTALD_TEST_SPEC_HELPERS_H

#include <string.h>

#include "spec.h"

/* A validated-looking spec of the whole w x h image (raw smooth values, no palette). */
static inline struct render_spec make_spec(enum spec_fractal fractal, double c_re, double c_im,
                                           double center_re, double center_im, double view_width,
                                           uint32_t w, uint32_t h, uint32_t max_iter, double radius,
                                           enum spec_precision precision, uint32_t supersample)
{
    struct render_spec s;

    memset(&s, 0, sizeof(s));
    s.fractal = fractal;
    s.c_re = c_re;
    s.c_im = c_im;
    s.center_re = center_re;
    s.center_im = center_im;
    s.view_width = view_width;
    s.width = w;
    s.height = h;
    s.region = (struct spec_rect){0, 0, w, h};
    s.max_iter = max_iter;
    s.escape_radius = radius;
    s.precision = precision;
    s.format = SPEC_RAW_F32;
    s.supersample = supersample;
    return s;
}

/* The whole sample grid of a spec, as a rectangle. */
static inline struct spec_rect grid_of(const struct render_spec *s)
{
    return (struct spec_rect){0, 0, s->width * s->supersample, s->height * s->supersample};
}

#endif
