/* http_tiles.c: XYZ map tiles (the scheme of Leaflet and OpenLayers) over a base view given in
 * the query: /v1/tiles/{z}/{x}/{y}.png is the 256x256 tile (x, y) of zoom z, where zoom 0 is the
 * base view's square as one tile and each zoom halves the tile's width. The tile becomes a
 * RenderRequest, so request_to_spec validates it with the messages gRPC clients get. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http_internal.h"

#define TILE_SIDE 256
/* Deeper than fp64 can resolve from any sane base view (the viewer moves its base view long
 * before), and 2^48 tiles a side keeps every coordinate exact in a double. */
#define TILE_MAX_ZOOM 48
/* Tiles around the base square (as many base widths on every side) are served too, so a map
 * panned past the edge still shows the plane. */
#define TILE_MARGIN 4
/* The base view when the query gives none: the square [-2, 2] x [-2, 2]. */
#define TILE_DEFAULT_WIDTH 4.0

/* The request and everything it points to, freed at once. */
struct tile_msg {
    Fractal__V1__RenderRequest req;
    Fractal__V1__Julia julia;
    Fractal__V1__Mandelbrot mandelbrot;
    Fractal__V1__Complex c, center;
    Fractal__V1__View view;
    Fractal__V1__Coloring coloring;
};

/* The query parameters a tile takes; any other is refused, so a typo is not silently ignored. */
static const char *const tile_params[] = {
    "fractal", "c_re", "c_im", "center_re", "center_im", "width", "max_iter", "palette", "cycle", "offset",
    "reverse", "supersample", "precision", "escape_radius", "device",
};

/* A decimal integer, all of text, in lo..hi. */
static bool parse_int(long long *out, const char *text, size_t len, long long lo, long long hi)
{
    char buf[32], *end = NULL;

    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (!isdigit((unsigned char)buf[buf[0] == '-' ? 1 : 0]))
        return false;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return *end == '\0' && errno == 0 && *out >= lo && *out <= hi;
}

/* A number for a double field. NaN and infinities parse, and are left to request_to_spec, which
 * refuses them with the gRPC message; only text that is not a number is refused here. */
static int arg_double(double *out, const char *name, const char *text, char *msg, size_t msglen)
{
    char *end = NULL;

    errno = 0;
    *out = strtod(text, &end);
    if (end == text || *end != '\0' || isspace((unsigned char)text[0])) {
        snprintf(msg, msglen, "%s must be a number, got '%.64s'", name, text);
        return ERR_INVALID;
    }
    return 0;
}

/* A number for a uint32 field; its range is request_to_spec's to check. */
static int arg_u32(uint32_t *out, const char *name, const char *text, char *msg, size_t msglen)
{
    long long v;

    if (!parse_int(&v, text, strlen(text), 0, UINT32_MAX)) {
        snprintf(msg, msglen, "%s must be an integer 0..4294967295, got '%.64s'", name, text);
        return ERR_INVALID;
    }
    *out = (uint32_t)v;
    return 0;
}

static int arg_bool(protobuf_c_boolean *out, const char *name, const char *text, char *msg, size_t msglen)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
        *out = 1;
    } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
        *out = 0;
    } else {
        snprintf(msg, msglen, "%s must be true or false, got '%.64s'", name, text);
        return ERR_INVALID;
    }
    return 0;
}

/* precision=auto, fp64, ...: the Precision value named PRECISION_<upper case>, whatever values
 * the contract has. */
static int arg_precision(Fractal__V1__Precision *out, const char *text, char *msg, size_t msglen)
{
    char name[48];
    const ProtobufCEnumValue *v;
    size_t n = strlen(text);

    if (n + 11 < sizeof(name)) {
        snprintf(name, sizeof(name), "PRECISION_");
        for (size_t i = 0; i <= n; i++)
            name[10 + i] = (char)toupper((unsigned char)text[i]);
        if ((v = protobuf_c_enum_descriptor_get_value_by_name(&fractal__v1__precision__descriptor, name)) != NULL) {
            *out = (Fractal__V1__Precision)v->value;
            return 0;
        }
    }
    snprintf(msg, msglen, "precision must be a Precision without its prefix (auto, fp32, fp64, ...), got '%.64s'", text);
    return ERR_INVALID;
}

/* Parses "{z}/{x}/{y}.png" (after "/v1/tiles/"). */
static int parse_path(long long *z, long long *x, long long *y, const char *p, char *msg, size_t msglen)
{
    const char *s1 = strchr(p, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    const char *dot = s2 ? strstr(s2 + 1, ".png") : NULL;
    long long n;

    if (!s1 || !s2 || !dot || strcmp(dot, ".png") != 0) {
        snprintf(msg, msglen, "a tile's path is /v1/tiles/{z}/{x}/{y}.png, got '%.200s'", p - 10);
        return ERR_NOT_FOUND;
    }
    if (!parse_int(z, p, (size_t)(s1 - p), 0, TILE_MAX_ZOOM)) {
        snprintf(msg, msglen, "zoom must be an integer 0..%d, got '%.*s'", TILE_MAX_ZOOM, (int)(s1 - p > 32 ? 32 : s1 - p), p);
        return ERR_INVALID;
    }
    n = (long long)1 << *z;
    if (!parse_int(x, s1 + 1, (size_t)(s2 - s1 - 1), -TILE_MARGIN * n, (TILE_MARGIN + 1) * n - 1) ||
        !parse_int(y, s2 + 1, (size_t)(dot - s2 - 1), -TILE_MARGIN * n, (TILE_MARGIN + 1) * n - 1)) {
        snprintf(msg, msglen, "tile x and y must be integers %lld..%lld at zoom %lld, got '%.*s' and '%.*s'",
                 -TILE_MARGIN * n, (TILE_MARGIN + 1) * n - 1, *z, (int)(s2 - s1 - 1 > 32 ? 32 : s2 - s1 - 1), s1 + 1,
                 (int)(dot - s2 - 1 > 32 ? 32 : dot - s2 - 1), s2 + 1);
        return ERR_NOT_FOUND;
    }
    return 0;
}

int http_tile_request(Fractal__V1__RenderRequest **out, const struct http_req *req, char *msg, size_t msglen)
{
    struct tile_msg *m = NULL;
    const char *v;
    long long z, x, y;
    double base_re = 0, base_im = 0, base_width = TILE_DEFAULT_WIDTH, scale;
    int err;

    *out = NULL;
    if ((err = parse_path(&z, &x, &y, req->path + 10, msg, msglen)) < 0)
        return err;
    for (size_t i = 0; i < req->nargs; i++) {
        bool known = false;
        for (size_t k = 0; k < sizeof(tile_params) / sizeof(tile_params[0]) && !known; k++)
            known = strcmp(req->args[i].key, tile_params[k]) == 0;
        if (!known) {
            snprintf(msg, msglen, "unknown query parameter '%.64s' (tiles take fractal, c_re, c_im, center_re, "
                     "center_im, width, max_iter, palette, cycle, offset, reverse, supersample, precision, "
                     "escape_radius, device)", req->args[i].key);
            return ERR_INVALID;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(req->args[k].key, req->args[i].key) == 0) {
                snprintf(msg, msglen, "query parameter '%.64s' is given twice", req->args[i].key);
                return ERR_INVALID;
            }
    }
    if (!(m = calloc(1, sizeof(*m)))) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    fractal__v1__render_request__init(&m->req);
    fractal__v1__julia__init(&m->julia);
    fractal__v1__mandelbrot__init(&m->mandelbrot);
    fractal__v1__complex__init(&m->c);
    fractal__v1__complex__init(&m->center);
    fractal__v1__view__init(&m->view);
    fractal__v1__coloring__init(&m->coloring);
    err = ERR_INVALID;

    v = http_arg(req, "fractal");
    if (!v || strcmp(v, "julia") == 0) {
        m->req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA;
        m->req.julia = &m->julia;
        m->julia.c = &m->c;
        m->c.re = -0.8;
        m->c.im = 0.156;
    } else if (strcmp(v, "mandelbrot") == 0) {
        m->req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
        m->req.mandelbrot = &m->mandelbrot;
    } else {
        snprintf(msg, msglen, "fractal must be julia or mandelbrot, got '%.64s'", v);
        goto fail;
    }
    if ((v = http_arg(req, "c_re")) && arg_double(&m->c.re, "c_re", v, msg, msglen) < 0)
        goto fail;
    if ((v = http_arg(req, "c_im")) && arg_double(&m->c.im, "c_im", v, msg, msglen) < 0)
        goto fail;
    if (m->req.fractal_case == FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT &&
        (http_arg(req, "c_re") || http_arg(req, "c_im"))) {
        snprintf(msg, msglen, "c_re and c_im are for fractal=julia");
        goto fail;
    }
    if ((v = http_arg(req, "center_re")) && arg_double(&base_re, "center_re", v, msg, msglen) < 0)
        goto fail;
    if ((v = http_arg(req, "center_im")) && arg_double(&base_im, "center_im", v, msg, msglen) < 0)
        goto fail;
    if ((v = http_arg(req, "width")) && arg_double(&base_width, "width", v, msg, msglen) < 0)
        goto fail;
    if ((v = http_arg(req, "max_iter"))) {
        m->req.opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
        if (arg_u32(&m->req.max_iter, "max_iter", v, msg, msglen) < 0)
            goto fail;
    }
    if ((v = http_arg(req, "supersample"))) {
        m->req.opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
        if (arg_u32(&m->req.supersample, "supersample", v, msg, msglen) < 0)
            goto fail;
    }
    if ((v = http_arg(req, "escape_radius"))) {
        m->req.opt_escape_radius_case = FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS;
        if (arg_double(&m->req.escape_radius, "escape_radius", v, msg, msglen) < 0)
            goto fail;
    }
    if ((v = http_arg(req, "precision")) && arg_precision(&m->req.precision, v, msg, msglen) < 0)
        goto fail;
    /* Strings are borrowed from the query, which outlives the request message. */
    if ((v = http_arg(req, "device")))
        m->req.device = (char *)v;
    m->req.coloring = &m->coloring;
    if ((v = http_arg(req, "palette")))
        m->coloring.palette = (char *)v;
    if ((v = http_arg(req, "cycle"))) {
        m->coloring.opt_cycle_case = FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE;
        if (arg_double(&m->coloring.cycle, "cycle", v, msg, msglen) < 0)
            goto fail;
    }
    if ((v = http_arg(req, "offset")) && arg_double(&m->coloring.offset, "offset", v, msg, msglen) < 0)
        goto fail;
    if ((v = http_arg(req, "reverse")) && arg_bool(&m->coloring.reverse, "reverse", v, msg, msglen) < 0)
        goto fail;

    /* The tile's own view: 1/2^z of the base width, centred on its place in the grid (y grows
     * downwards, the imaginary axis upwards). Powers of two keep the scaling exact. */
    scale = ldexp(1.0, (int)-z);
    m->req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    m->req.width = TILE_SIDE;
    m->req.opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    m->req.height = TILE_SIDE;
    m->req.view = &m->view;
    m->view.center = &m->center;
    m->view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    m->view.width = base_width * scale;
    m->center.re = base_re + (((double)x + 0.5) * scale - 0.5) * base_width;
    m->center.im = base_im - (((double)y + 0.5) * scale - 0.5) * base_width;
    *out = &m->req;
    return 0;

fail:
    free(m);
    return err;
}

void http_tile_request_free(Fractal__V1__RenderRequest *rr)
{
    /* The request is the first member of its tile_msg. */
    free(rr);
}
