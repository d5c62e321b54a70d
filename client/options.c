/* options.c: render options <-> fractal.v1.RenderRequest (the one place that knows both shapes),
 * their defaults, and reading them back from the request fractald stores in a PNG. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "proto_json.h"

/* Bytes of a version 1 and a version 2 fractal_render_options; later fields must not be touched
 * in one. */
#define RENDER_OPTIONS_V1_SIZE (offsetof(fractal_render_options, device) + FRACTAL_DEVICE_NAME_MAX)
#define RENDER_OPTIONS_V2_SIZE (offsetof(fractal_render_options, rect_fill) + sizeof(int))

static const fractal_render_options defaults_v3 = FRACTAL_RENDER_OPTIONS_INIT;

int fractal_render_options_init(fractal_render_options *opts, unsigned version)
{
    if (opts == NULL || version < 1 || version > FRACTAL_RENDER_OPTIONS_VERSION)
        return FRACTAL_EINVAL;
    if (version < FRACTAL_RENDER_OPTIONS_VERSION) {
        memcpy(opts, &defaults_v3, version == 1 ? RENDER_OPTIONS_V1_SIZE : RENDER_OPTIONS_V2_SIZE);
        opts->version = version;
    } else {
        *opts = defaults_v3;
    }
    return 0;
}

int opts_check(const fractal_render_options *opts, char *err, size_t errlen)
{
    if (opts->version < 1 || opts->version > FRACTAL_RENDER_OPTIONS_VERSION)
        return fr_errorf(err, errlen, FRACTAL_EINVAL,
                         "render options version %u is not supported (this library: %u)",
                         opts->version, FRACTAL_RENDER_OPTIONS_VERSION);
    if (memchr(opts->palette, '\0', sizeof opts->palette) == NULL)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "render options: palette is not NUL-terminated");
    if (memchr(opts->device, '\0', sizeof opts->device) == NULL)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "render options: device is not NUL-terminated");
    if (opts->n_stops > FRACTAL_STOPS_MAX)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "render options: %zu stops, at most %d fit",
                         opts->n_stops, FRACTAL_STOPS_MAX);
    if (opts->version >= 3 && (memchr(opts->center_re_text, '\0', sizeof opts->center_re_text) == NULL ||
                               memchr(opts->center_im_text, '\0', sizeof opts->center_im_text) == NULL ||
                               memchr(opts->view_width_text, '\0', sizeof opts->view_width_text) == NULL))
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "render options: a *_text field is not NUL-terminated");
    return 0;
}

static void color_to_wire(Fractal__V1__Color *w, fractal_color c)
{
    fractal__v1__color__init(w);
    w->r = c.r;
    w->g = c.g;
    w->b = c.b;
}

void opts_to_request(opts_wire *w, const fractal_render_options *o)
{
    Fractal__V1__RenderRequest *req = &w->req;
    size_t i;

    fractal__v1__render_request__init(req);
    if (o->kind == FRACTAL_KIND_MANDELBROT) {
        fractal__v1__mandelbrot__init(&w->mandelbrot);
        req->fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
        req->mandelbrot = &w->mandelbrot;
    } else {
        fractal__v1__julia__init(&w->julia);
        fractal__v1__complex__init(&w->julia_c);
        w->julia_c.re = o->julia_c.re;
        w->julia_c.im = o->julia_c.im;
        w->julia.c = &w->julia_c;
        req->fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA;
        req->julia = &w->julia;
    }

    fractal__v1__view__init(&w->view);
    fractal__v1__complex__init(&w->center);
    w->center.re = o->center.re;
    w->center.im = o->center.im;
    w->view.center = &w->center;
    /* 0 is the one value that means "default" (2 * W / H, which depends on the size); every other
     * width, negative or NaN included, goes to the server to be judged. */
    if (o->view_width != 0.0) {
        w->view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
        w->view.width = o->view_width;
    }
    /* A version 1 or 2 struct ends before the text: the doubles' view. "" is proto3's unset. */
    if (o->version >= 3) {
        w->view.center_re_text = (char *)o->center_re_text; /* read only by the packer */
        w->view.center_im_text = (char *)o->center_im_text;
        w->view.width_text = (char *)o->view_width_text;
    }
    req->view = &w->view;

    req->opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req->width = o->width;
    req->opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    req->height = o->height;
    req->opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
    req->max_iter = o->max_iter;
    req->opt_escape_radius_case = FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS;
    req->escape_radius = o->escape_radius;
    req->opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
    req->supersample = o->supersample;
    /* Enum values are the proto's own numbers, so they pass through unchanged (an out-of-range one
     * included, for the server to refuse). */
    req->precision = (Fractal__V1__Precision)o->precision;
    req->format = (Fractal__V1__Format)o->format;

    fractal__v1__coloring__init(&w->coloring);
    w->coloring.palette = (char *)o->palette; /* read only by the packer */
    for (i = 0; i < o->n_stops; i++) {
        fractal__v1__color_stop__init(&w->stops[i]);
        color_to_wire(&w->stop_colors[i], o->stops[i].color);
        w->stops[i].position = o->stops[i].position;
        w->stops[i].color = &w->stop_colors[i];
        w->stop_ptrs[i] = &w->stops[i];
    }
    w->coloring.n_stops = o->n_stops;
    w->coloring.stops = o->n_stops ? w->stop_ptrs : NULL;
    /* 0 is sent as "unset": the server's default, which is 0 (one log-scaled pass) but for deep
     * views, which cycle by default (README). Any other value, NaN included, goes to be judged. */
    if (o->cycle != 0.0) {
        w->coloring.opt_cycle_case = FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE;
        w->coloring.cycle = o->cycle;
    }
    w->coloring.offset = o->offset;
    color_to_wire(&w->interior, o->interior);
    w->coloring.interior = &w->interior;
    w->coloring.reverse = o->reverse != 0;
    req->coloring = &w->coloring;

    if (o->has_region) {
        fractal__v1__region__init(&w->region);
        w->region.x = o->region.x;
        w->region.y = o->region.y;
        w->region.width = o->region.width;
        w->region.height = o->region.height;
        req->region = &w->region;
    }
    req->device = (char *)o->device; /* read only by the packer */
    /* A version 1 struct ends before the field: the server's default. */
    req->rect_fill = o->version >= 2 && o->rect_fill != 0;
}

static fractal_color color_from_wire(const Fractal__V1__Color *w)
{
    fractal_color c = { 0, 0, 0 };

    if (w) {
        c.r = w->r;
        c.g = w->g;
        c.b = w->b;
    }
    return c;
}

/* Copies a string into a fixed array, refusing (not cutting) one that does not fit. */
static int copy_field(char *dst, size_t cap, const char *src, const char *field, char *err,
                      size_t errlen)
{
    size_t n = strlen(src);

    if (n >= cap)
        return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s is %zu bytes long, at most %zu fit", field,
                         n, cap - 1);
    memcpy(dst, src, n + 1);
    return 0;
}

int opts_from_request(fractal_render_options *out, const Fractal__V1__RenderRequest *req, char *err,
                      size_t errlen)
{
    fractal_render_options o = FRACTAL_RENDER_OPTIONS_INIT;
    const Fractal__V1__Coloring *col = req->coloring;
    size_t i;
    int e;

    if (req->fractal_case == FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT) {
        o.kind = FRACTAL_KIND_MANDELBROT;
    } else if (req->fractal_case == FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA) {
        o.kind = FRACTAL_KIND_JULIA;
        /* A Julia message without c is c = 0 (proto3: an unset message reads as its defaults). */
        o.julia_c.re = req->julia && req->julia->c ? req->julia->c->re : 0.0;
        o.julia_c.im = req->julia && req->julia->c ? req->julia->c->im : 0.0;
    }
    if (req->view) {
        if (req->view->center) {
            o.center.re = req->view->center->re;
            o.center.im = req->view->center->im;
        }
        if (req->view->opt_width_case == FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH)
            o.view_width = req->view->width;
        if (req->view->center_re_text &&
            (e = copy_field(o.center_re_text, sizeof o.center_re_text, req->view->center_re_text,
                            "view.center_re_text", err, errlen)) < 0)
            return e;
        if (req->view->center_im_text &&
            (e = copy_field(o.center_im_text, sizeof o.center_im_text, req->view->center_im_text,
                            "view.center_im_text", err, errlen)) < 0)
            return e;
        if (req->view->width_text &&
            (e = copy_field(o.view_width_text, sizeof o.view_width_text, req->view->width_text,
                            "view.width_text", err, errlen)) < 0)
            return e;
    }
    if (req->opt_width_case == FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH)
        o.width = req->width;
    if (req->opt_height_case == FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT)
        o.height = req->height;
    if (req->opt_max_iter_case == FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER)
        o.max_iter = req->max_iter;
    if (req->opt_escape_radius_case == FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS)
        o.escape_radius = req->escape_radius;
    if (req->opt_supersample_case == FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE)
        o.supersample = req->supersample;
    o.precision = (fractal_precision)req->precision;
    o.format = (fractal_format)req->format;

    if (col) {
        /* proto3: an empty palette string is "unset", i.e. the default. */
        if (col->palette && col->palette[0] &&
            (e = copy_field(o.palette, sizeof o.palette, col->palette, "coloring.palette", err, errlen)) < 0)
            return e;
        if (col->n_stops > FRACTAL_STOPS_MAX)
            return fr_errorf(err, errlen, FRACTAL_EFORMAT, "coloring.stops has %zu stops, at most %d fit",
                             col->n_stops, FRACTAL_STOPS_MAX);
        for (i = 0; i < col->n_stops; i++) {
            o.stops[i].position = col->stops[i]->position;
            o.stops[i].color = color_from_wire(col->stops[i]->color);
        }
        o.n_stops = col->n_stops;
        if (col->opt_cycle_case == FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE)
            o.cycle = col->cycle;
        o.offset = col->offset;
        o.interior = color_from_wire(col->interior);
        o.reverse = col->reverse != 0;
    }
    if (req->region) {
        o.has_region = 1;
        o.region.x = req->region->x;
        o.region.y = req->region->y;
        o.region.width = req->region->width;
        o.region.height = req->region->height;
    }
    if (req->device && (e = copy_field(o.device, sizeof o.device, req->device, "device", err, errlen)) < 0)
        return e;
    o.rect_fill = req->rect_fill != 0;
    *out = o;
    return 0;
}

int fractal_render_options_from_png(fractal_render_options *out, const char *png_path, char *err,
                                    size_t errlen)
{
    const fractal_render_options defaults = FRACTAL_RENDER_OPTIONS_INIT;
    ProtobufCMessage *msg = NULL;
    char *json = NULL, jerr[256];
    size_t json_len;
    int e;

    if (out == NULL || png_path == NULL)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_render_options_from_png: %s is NULL",
                         out == NULL ? "out" : "png_path");
    *out = defaults;
    if ((e = pngtext_find(&json, &json_len, png_path, FR_PNG_REQUEST_KEYWORD, err, errlen)) < 0)
        goto done;
    if (strlen(json) != json_len) {
        e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: stored request contains a NUL byte", png_path);
        goto done;
    }
    jerr[0] = '\0';
    if ((e = pjson_decode(&msg, &fractal__v1__render_request__descriptor, json, jerr, sizeof jerr)) < 0) {
        e = e == PJSON_ERR_NOMEM
                ? fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory decoding the stored request")
                : fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: stored request: %s", png_path,
                            jerr[0] ? jerr : "not a valid RenderRequest");
        goto done;
    }
    e = opts_from_request(out, (const Fractal__V1__RenderRequest *)msg, err, errlen);
    if (e < 0)
        *out = defaults;
done:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    free(json);
    return e;
}
