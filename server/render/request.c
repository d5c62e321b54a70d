/* request.c: validation of RenderRequest into render_spec, and the resolved request as JSON. */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "decimal.h"
#include "deep.h"
#include "err.h"
#include "proto_json.h"
#include "render_deep.h"

#define FAIL(code, ...)                          \
    do {                                         \
        snprintf(msg, msglen, __VA_ARGS__);      \
        return (code);                           \
    } while (0)

/* Precision policy. A path resolves a view when the pixel spacing s is at least 2^-16 (fp32) or
 * 2^-45 (fp64) of the largest coordinate magnitude in the view (at least 1, since orbits reach
 * |z| ~ 2 whatever the view): that leaves 128 units in the last place per pixel step, enough that
 * neighbouring pixels stay distinct after the orbit amplifies rounding, where fewer gives the
 * blocky images the policy exists to prevent. */
double request_min_spacing(enum spec_precision precision, double magnitude)
{
    double m = magnitude > 1.0 ? magnitude : 1.0;
    return precision == SPEC_FP32 ? ldexp(m, -16) : ldexp(m, -45);
}

static int check_finite(const char *field, double v, char *msg, size_t msglen)
{
    if (!isfinite(v))
        FAIL(ERR_INVALID, "%s must be a finite number, got %g", field, v);
    return 0;
}

static int check_rgb(const char *field, const Fractal__V1__Color *c, struct spec_rgb *out, char *msg,
                     size_t msglen)
{
    if (!c) {
        out->r = out->g = out->b = 0;
        return 0;
    }
    if (c->r > 255 || c->g > 255 || c->b > 255)
        FAIL(ERR_INVALID, "%s must have r, g, b in 0..255, got (%u, %u, %u)", field, c->r, c->g, c->b);
    out->r = (uint8_t)c->r;
    out->g = (uint8_t)c->g;
    out->b = (uint8_t)c->b;
    return 0;
}

/* Custom stops: positions in [0, 1], non-decreasing. The palette is extended flat to 0 and 1 so
 * that lookups never leave it, and the count is checked after that extension: the resolved
 * request written into PNGs and the job store lists the extended stops, and must validate again. */
static int load_stops(struct spec_coloring *out, const Fractal__V1__Coloring *c, char *msg, size_t msglen)
{
    uint32_t n = 0;
    int err;

    if (c->n_stops > SPEC_MAX_STOPS)
        FAIL(ERR_INVALID, "coloring.stops must have 1..%d entries, got %zu", SPEC_MAX_STOPS, c->n_stops);
    for (size_t i = 0; i < c->n_stops; i++) {
        double pos = c->stops[i]->position, prev = i ? c->stops[i - 1]->position : 0.0;
        if (!(pos >= 0.0 && pos <= 1.0))
            FAIL(ERR_INVALID, "coloring.stops[%zu].position must be 0..1, got %g", i, pos);
        if (pos < prev)
            FAIL(ERR_INVALID, "coloring.stops[%zu].position must not be below the previous stop's %g, got %g",
                 i, prev, pos);
    }
    {
        size_t total = c->n_stops + (c->stops[0]->position > 0.0) + (c->stops[c->n_stops - 1]->position < 1.0);
        if (total > SPEC_MAX_STOPS)
            FAIL(ERR_INVALID, "coloring.stops must have at most %d entries counting the ones added at "
                 "positions 0 and 1, got %zu", SPEC_MAX_STOPS, total);
    }
    for (size_t i = 0; i < c->n_stops; i++) {
        const Fractal__V1__ColorStop *s = c->stops[i];
        char field[64];
        double prev = i ? c->stops[i - 1]->position : 0.0;
        snprintf(field, sizeof(field), "coloring.stops[%zu].color", i);
        if (!(s->position >= 0.0 && s->position <= 1.0))
            FAIL(ERR_INVALID, "coloring.stops[%zu].position must be 0..1, got %g", i, s->position);
        if (s->position < prev)
            FAIL(ERR_INVALID, "coloring.stops[%zu].position must not be below the previous stop's %g, got %g",
                 i, prev, s->position);
        if (i == 0 && s->position > 0.0) {
            if ((err = check_rgb(field, s->color, &out->rgb[n], msg, msglen)) < 0)
                return err;
            out->pos[n++] = 0.0f;
        }
        if ((err = check_rgb(field, s->color, &out->rgb[n], msg, msglen)) < 0)
            return err;
        out->pos[n++] = (float)s->position;
    }
    if (out->pos[n - 1] < 1.0f) {
        out->rgb[n] = out->rgb[n - 1];
        out->pos[n++] = 1.0f;
    }
    if (n == 1) {
        out->rgb[1] = out->rgb[0];
        out->pos[1] = 1.0f;
        n = 2;
    }
    out->nstops = n;
    return 0;
}

static int load_coloring(struct spec_coloring *out, const Fractal__V1__Coloring *c, char *msg, size_t msglen)
{
    int err;

    memset(out, 0, sizeof(*out));
    if (!c)
        return color_palette_load(out, REQUEST_DEFAULT_PALETTE) < 0 ? ERR_INTERNAL : 0;
    if (c->n_stops > 0) {
        if ((err = load_stops(out, c, msg, msglen)) < 0)
            return err;
    } else {
        const char *name = c->palette && c->palette[0] ? c->palette : REQUEST_DEFAULT_PALETTE;
        if (color_palette_load(out, name) < 0) {
            size_t count;
            const char *const *names = color_palette_names(&count);
            char list[512] = "";
            for (size_t i = 0; i < count; i++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", names[i]);
            FAIL(ERR_INVALID, "coloring.palette must be one of %s, got \"%.64s\"", list, name);
        }
    }
    if (c->opt_cycle_case == FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE) {
        if (!(isfinite(c->cycle) && c->cycle >= 0.0))
            FAIL(ERR_INVALID, "coloring.cycle must be a finite number >= 0, got %g", c->cycle);
        out->cycle = c->cycle;
    }
    if (!(c->offset >= 0.0 && c->offset <= 1.0))
        FAIL(ERR_INVALID, "coloring.offset must be 0..1, got %g", c->offset);
    out->offset = c->offset;
    out->reverse = c->reverse != 0;
    return check_rgb("coloring.interior", c->interior, &out->interior, msg, msglen);
}

/* Largest |x| or |y| of any pixel centre in the full image. */
static double view_magnitude(const struct render_spec *s)
{
    double half_w = s->view_width / 2.0, half_h = s->view_width * s->height / s->width / 2.0;
    double mx = fabs(s->center_re) + half_w, my = fabs(s->center_im) + half_h;
    return mx > my ? mx : my;
}

/* A spec_deep holding the three strings (copied) in one allocation, refcount 1; NULL when out of
 * memory. */
static struct spec_deep *deep_new(const char *re, const char *im, const char *width)
{
    size_t lre = strlen(re) + 1, lim = strlen(im) + 1, lw = strlen(width) + 1;
    struct spec_deep *d = calloc(1, sizeof(*d) + lre + lim + lw);
    char *text;

    if (!d)
        return NULL;
    text = (char *)(d + 1);
    atomic_init(&d->refs, 1);
    memcpy(text, re, lre);
    memcpy(text + lre, im, lim);
    memcpy(text + lre + lim, width, lw);
    d->center_re = text;
    d->center_im = text + lre;
    d->width = text + lre + lim;
    return d;
}

/* A finite double as deep-view text: 17 significant digits (they read back to the same bits), in
 * decimal_normalize's form ("5.19e32", not printf's "5.19e+32"), so that text written here and the
 * same text read back from a PNG's request make the same spec. */
static void text_of_double(char *out, size_t outlen, double v)
{
    char raw[40];

    snprintf(raw, sizeof(raw), "%.17g", v);
    if (outlen >= strlen(raw) + 2)
        decimal_normalize(out, raw);
    else
        snprintf(out, outlen, "%s", raw);
}

/* The deep view of a request that gave only doubles but needs perturbation: the doubles written
 * exactly, so the view is exactly the one asked for. */
static int deep_from_doubles(struct render_spec *s, char *msg, size_t msglen)
{
    char re[40], im[40], w[40];

    if (s->deep)
        return 0;
    /* The text fields' own bound (text_field): a resolved request with the text written here
     * must validate again. */
    if (fabs(s->center_re) > 1e300 || fabs(s->center_im) > 1e300)
        FAIL(ERR_INVALID, "view.center must be of magnitude at most 1e300 for a view past fp64 (rendered by "
             "perturbation), got (%.3g, %.3g)", s->center_re, s->center_im);
    text_of_double(re, sizeof(re), s->center_re);
    text_of_double(im, sizeof(im), s->center_im);
    text_of_double(w, sizeof(w), s->view_width);
    if (!(s->deep = deep_new(re, im, w)))
        FAIL(ERR_NOMEM, "out of memory");
    s->deep->log2_spacing = log2(s->view_width) - log2((double)s->width * s->supersample);
    return 0;
}

/* A view's pixel spacing, log2 and as text ("1.23e-400"), from its deep text when it has one, so
 * that spacings below double's range still compare and print. */
static double log2_spacing_of(const struct render_spec *s)
{
    if (s->deep)
        return s->deep->log2_spacing;
    return log2(s->view_width) - log2((double)s->width * s->supersample);
}

static void spacing_text(char *out, size_t outlen, double log2_spacing)
{
    decimal_format_pow10(out, outlen, log2_spacing * M_LN2 / M_LN10);
}

/* Precision policy (docs/MATH.md). AUTO takes the first of fp32, fp64, perturbation with fp64
 * offsets and perturbation with extended offsets that resolves the view; an explicit precision
 * that cannot is refused. Perturbation views are held to the digit limit, and get their deep text
 * (from the doubles when the request gave none). */
static int resolve_precision(struct render_spec *s, Fractal__V1__Precision asked, const struct limits *lim,
                             char *msg, size_t msglen)
{
    double log2_spacing = log2_spacing_of(s);
    double magnitude = view_magnitude(s);
    double log2_m = log2(magnitude > 1.0 ? magnitude : 1.0);
    /* While the width is a double, fp32 and fp64 are judged on the spacing itself, exactly at
     * request_min_spacing's bounds; below double's range only the logarithm can tell. */
    bool as_double = isnormal(s->view_width);
    double spacing_d = s->view_width / ((double)s->width * s->supersample);
    char spacing[48];
    enum deep_mode mode;
    int err;

    if (as_double)
        snprintf(spacing, sizeof(spacing), "%.3g", spacing_d);
    else
        spacing_text(spacing, sizeof(spacing), log2_spacing);
    s->precision_asked = (int)asked;
    if (asked == FRACTAL__V1__PRECISION__PRECISION_FP32 || asked == FRACTAL__V1__PRECISION__PRECISION_AUTO) {
        if (as_double ? spacing_d >= request_min_spacing(SPEC_FP32, magnitude) : log2_spacing >= log2_m - 16) {
            s->precision = SPEC_FP32;
            return 0;
        }
        if (asked == FRACTAL__V1__PRECISION__PRECISION_FP32)
            FAIL(ERR_PRECONDITION,
                 "precision PRECISION_FP32 cannot resolve a pixel spacing of %s at coordinates up to %.3g "
                 "(fp32 needs >= %.3g); ask for PRECISION_FP64 or PRECISION_AUTO",
                 spacing, magnitude, request_min_spacing(SPEC_FP32, magnitude));
    }
    if (asked == FRACTAL__V1__PRECISION__PRECISION_FP32 || asked == FRACTAL__V1__PRECISION__PRECISION_FP64 ||
        asked == FRACTAL__V1__PRECISION__PRECISION_AUTO) {
        if (as_double ? spacing_d >= request_min_spacing(SPEC_FP64, magnitude) : log2_spacing >= log2_m - 45) {
            s->precision = SPEC_FP64;
            return 0;
        }
        if (asked == FRACTAL__V1__PRECISION__PRECISION_FP64)
            FAIL(ERR_PRECONDITION,
                 "view too deep: pixel spacing %s at coordinates up to %.3g is below what fp64 resolves (%.3g); "
                 "ask for PRECISION_AUTO or PRECISION_PERTURB",
                 spacing, magnitude, request_min_spacing(SPEC_FP64, magnitude));
    }

    /* Perturbation. */
    if ((err = deep_from_doubles(s, msg, msglen)) < 0)
        return err;
    s->deep->digits = (log2_m - log2_spacing) * M_LN2 / M_LN10;
    if (s->deep->digits > lim->deep_max_digits)
        FAIL(ERR_PRECONDITION,
             "view too deep: a pixel spacing of %s at coordinates up to %.3g needs %.0f digits, over this "
             "server's limit of %u (--deep-max-digits)",
             spacing, magnitude, ceil(s->deep->digits), lim->deep_max_digits);
    mode = deep_mode_for(log2_spacing);
    if (asked == FRACTAL__V1__PRECISION__PRECISION_PERTURB && mode == DEEP_EXTENDED)
        FAIL(ERR_PRECONDITION,
             "precision PRECISION_PERTURB cannot resolve a pixel spacing of %s: its fp64 offsets would leave "
             "double's exponent range; ask for PRECISION_PERTURB_EXTENDED or PRECISION_AUTO", spacing);
    s->precision = asked == FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED || mode == DEEP_EXTENDED
                       ? SPEC_PERTURB_EXTENDED : SPEC_PERTURB;
    {
        struct deep_view v = render_deep_view(s);
        double l2s, l2m;
        if ((err = deep_view_check(&v, &l2s, &l2m, msg, msglen)) < 0)
            return err;
    }
    return 0;
}

/* Checks one *_text field of the view (decimal syntax, digits) and fills *out; `positive` for
 * the width, which must be in (0, 1e6] as the double is. */
static int check_text(const char *field, const char *text, bool positive, const struct limits *lim,
                      struct decimal *out, char *msg, size_t msglen)
{
    size_t len = strlen(text);
    const char *more = len > 64 ? "..." : "";

    if (decimal_parse(out, text) < 0)
        FAIL(ERR_INVALID, "%s must be a decimal number such as -1.25, 0.3e-2 or 1e-400, got \"%.64s%s\"", field,
             text, more);
    if (out->digits > lim->deep_max_digits)
        FAIL(ERR_INVALID, "%s must have at most %u digits (--deep-max-digits), got %zu", field,
             lim->deep_max_digits, out->digits);
    if (positive && (out->zero || out->negative || out->log10_abs > 6.0 ||
                     (out->log10_abs == 6.0 && strtod(text, NULL) > 1e6)))
        FAIL(ERR_INVALID, "%s must be a decimal number in (0, 1e6], got \"%.64s%s\"", field, text, more);
    if (!positive && out->log10_abs > 300.0)
        FAIL(ERR_INVALID, "%s must be a decimal number of magnitude at most 1e300, got \"%.64s%s\"", field,
             text, more);
    return 0;
}

/* The view: doubles, each overridden by its *_text field when that is set. With any text, the
 * spec gets its deep view (the text normalised, the other parts from the doubles) and the doubles
 * are the text correctly rounded. */
static int load_view(struct render_spec *s, const Fractal__V1__RenderRequest *req, const struct limits *lim,
                     char *msg, size_t msglen)
{
    const Fractal__V1__View *v = req->view;
    const char *re_text = v && v->center_re_text && v->center_re_text[0] ? v->center_re_text : NULL;
    const char *im_text = v && v->center_im_text && v->center_im_text[0] ? v->center_im_text : NULL;
    const char *w_text = v && v->width_text && v->width_text[0] ? v->width_text : NULL;
    struct decimal dre, dim, dw;
    int err;

    s->center_re = s->center_im = 0.0;
    s->view_width = 2.0 * s->width / s->height;
    if (!v)
        return 0;
    if (v->center) {
        if (!re_text && (err = check_finite("view.center.re", v->center->re, msg, msglen)) < 0)
            return err;
        if (!im_text && (err = check_finite("view.center.im", v->center->im, msg, msglen)) < 0)
            return err;
        s->center_re = v->center->re;
        s->center_im = v->center->im;
    }
    if (!w_text && v->opt_width_case == FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH) {
        double w = v->width;
        if (!(isfinite(w) && w > 0.0 && w <= 1e6))
            FAIL(ERR_INVALID, "view.width must be a finite number in (0, 1e6], got %g", w);
        s->view_width = w;
    }
    if (!re_text && !im_text && !w_text)
        return 0;

    if ((re_text && (err = check_text("view.center_re_text", re_text, false, lim, &dre, msg, msglen)) < 0) ||
        (im_text && (err = check_text("view.center_im_text", im_text, false, lim, &dim, msg, msglen)) < 0) ||
        (w_text && (err = check_text("view.width_text", w_text, true, lim, &dw, msg, msglen)) < 0))
        return err;
    {
        char dre_buf[40], dim_buf[40], dw_buf[40];
        char *nre = NULL, *nim = NULL, *nw = NULL;
        /* Normalised copies of what was given; the doubles, written exactly, for what was not. */
        nre = re_text ? malloc(strlen(re_text) + 2) : NULL;
        nim = im_text ? malloc(strlen(im_text) + 2) : NULL;
        nw = w_text ? malloc(strlen(w_text) + 2) : NULL;
        if ((re_text && !nre) || (im_text && !nim) || (w_text && !nw)) {
            free(nre);
            free(nim);
            free(nw);
            FAIL(ERR_NOMEM, "out of memory");
        }
        if (re_text) {
            decimal_normalize(nre, re_text);
            s->center_re = strtod(nre, NULL);
        } else {
            text_of_double(dre_buf, sizeof(dre_buf), s->center_re);
        }
        if (im_text) {
            decimal_normalize(nim, im_text);
            s->center_im = strtod(nim, NULL);
        } else {
            text_of_double(dim_buf, sizeof(dim_buf), s->center_im);
        }
        if (w_text) {
            decimal_normalize(nw, w_text);
            s->view_width = strtod(nw, NULL);
        } else {
            text_of_double(dw_buf, sizeof(dw_buf), s->view_width);
            decimal_parse(&dw, dw_buf);
        }
        s->deep = deep_new(re_text ? nre : dre_buf, im_text ? nim : dim_buf, w_text ? nw : dw_buf);
        free(nre);
        free(nim);
        free(nw);
        if (!s->deep)
            FAIL(ERR_NOMEM, "out of memory");
        /* The grid is known once supersample is (request_to_spec finishes log2_spacing). */
        s->deep->log2_spacing = dw.log10_abs * M_LN10 / M_LN2;
    }
    return 0;
}

static int load_size(struct render_spec *s, const Fractal__V1__RenderRequest *req, const struct limits *lim,
                     char *msg, size_t msglen)
{
    s->width = REQUEST_DEFAULT_WIDTH;
    s->height = REQUEST_DEFAULT_HEIGHT;
    if (req->opt_width_case == FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH)
        s->width = req->width;
    if (req->opt_height_case == FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT)
        s->height = req->height;
    if (s->width < 1 || s->width > lim->max_side)
        FAIL(ERR_INVALID, "width must be 1..%u, got %u", lim->max_side, s->width);
    if (s->height < 1 || s->height > lim->max_side)
        FAIL(ERR_INVALID, "height must be 1..%u, got %u", lim->max_side, s->height);
    s->region = (struct spec_rect){0, 0, s->width, s->height};
    if (req->region) {
        const Fractal__V1__Region *r = req->region;
        if (r->width < 1 || r->height < 1)
            FAIL(ERR_INVALID, "region width and height must be >= 1, got %ux%u", r->width, r->height);
        if ((uint64_t)r->x + r->width > s->width || (uint64_t)r->y + r->height > s->height)
            FAIL(ERR_INVALID, "region (x=%u, y=%u, width=%u, height=%u) must lie inside the %ux%u image",
                 r->x, r->y, r->width, r->height, s->width, s->height);
        s->region = (struct spec_rect){r->x, r->y, r->width, r->height};
    }
    return 0;
}

double request_default_cycle(uint32_t max_iter)
{
    double cycle = round(4.0 * sqrt((double)max_iter));
    return cycle < 16.0 ? 16.0 : cycle;
}

double request_reference_cost(const struct render_spec *s)
{
    double bits, limbs;

    if (!spec_precision_is_deep(s->precision) || !s->deep)
        return 0.0;
    /* The reference needs about the view's digits in bits, plus guard bits; an MPFR product of n
     * limbs costs about n^1.585 (Karatsuba), and one complex step at two limbs some hundred times
     * a sample's fp64 step. Julia sets iterate a second orbit (from the critical point 0). */
    bits = s->deep->digits * (M_LN10 / M_LN2) + 64.0;
    limbs = ceil(bits / 64.0);
    return (s->fractal == SPEC_JULIA ? 2.0 : 1.0) * s->max_iter * REQUEST_REF_STEP_COST *
           pow(limbs < 2.0 ? 1.0 : limbs / 2.0, 1.585);
}

double request_cost(const struct render_spec *s)
{
    double samples = (double)s->region.width * s->region.height * s->supersample * s->supersample;
    return samples * s->max_iter + request_reference_cost(s);
}

/* Checks what the request costs against the limits. Reply size can be known before rendering only
 * for raw formats; PNG replies are checked as they are encoded. */
static int check_cost(const struct render_spec *s, const struct limits *lim, bool streamed, char *msg,
                      size_t msglen)
{
    uint64_t pixels = (uint64_t)s->region.width * s->region.height;
    uint64_t samples = pixels * s->supersample * s->supersample;
    double cost = (double)samples * s->max_iter;
    double ref_cost = request_reference_cost(s);

    if (samples > lim->max_samples)
        FAIL(ERR_EXHAUSTED, "request needs %llu samples (pixels x supersample^2), over the limit of %llu",
             (unsigned long long)samples, (unsigned long long)lim->max_samples);
    if (cost > lim->max_cost)
        FAIL(ERR_EXHAUSTED, "request costs up to %.4g iterations (samples x max_iter), over the limit of %.4g",
             cost, lim->max_cost);
    if (cost + ref_cost > lim->max_cost)
        FAIL(ERR_EXHAUSTED, "request costs up to %.4g iterations (samples x max_iter, plus %.4g for the "
             "reference orbit of a %.0f-digit view), over the limit of %.4g",
             cost + ref_cost, ref_cost, ceil(s->deep->digits), lim->max_cost);
    if (spec_precision_is_deep(s->precision)) {
        struct deep_view v = render_deep_view(s);
        size_t bytes = deep_ref_estimate_bytes(&v);
        if (bytes > lim->deep_ref_cache)
            FAIL(ERR_EXHAUSTED, "the reference orbit of this view needs %zu bytes (max_iter %u), over the "
                 "%llu-byte reference cache (--deep-ref-cache)", bytes, s->max_iter,
                 (unsigned long long)lim->deep_ref_cache);
    }
    if (!streamed && (s->format == SPEC_RAW_U32 || s->format == SPEC_RAW_F32) &&
        pixels * 4 + 1024 > lim->max_message_bytes)
        FAIL(ERR_EXHAUSTED, "the raw image is %llu bytes, over the %u-byte message limit; use RenderStream",
             (unsigned long long)(pixels * 4), lim->max_message_bytes);
    return 0;
}

/* Deep renders run on the deep engine on the host's cores, reached through the built-in CPU
 * engine's device, or, for fp64 deltas (PRECISION_PERTURB), on an OpenCL device with fp64 (its
 * perturbation kernel, kernels/deep.cl). Returns the index of the device the selector prefers
 * (sched.c makes the final choice per band), or FAILED_PRECONDITION when the selector names only
 * devices that cannot take this precision, or none of them works. */
static int select_deep_device(const struct devices *devs, const char *selector, enum spec_precision p,
                              char *msg, size_t msglen)
{
    const char *name = p == SPEC_PERTURB_EXTENDED ? "PRECISION_PERTURB_EXTENDED" : "PRECISION_PERTURB";
    bool named_cl = false;
    int err;

    /* An unknown selector is refused as for any render. */
    if ((err = devices_select(devs, selector, false, msg, msglen)) == ERR_INVALID)
        return err;
    for (size_t i = 0; i < devs->count; i++) {
        const struct device *d = &devs->list[i];
        if (!devices_match(d, selector) || !d->enabled || atomic_load(&d->failed))
            continue;
        if (strcmp(d->engine, "cpu") == 0)
            return (int)i;
        if (strcmp(d->engine, "opencl") == 0) {
            named_cl = true;
            if (p == SPEC_PERTURB && d->fp64)
                return (int)i;
        }
    }
    if (named_cl && p == SPEC_PERTURB_EXTENDED)
        FAIL(ERR_PRECONDITION, "deep zoom with extended exponents (%s) runs on the CPU engine only, so device "
             "\"%.64s\" cannot take it; use device \"\" or \"cpu\"", name, selector);
    if (named_cl)
        FAIL(ERR_PRECONDITION, "deep zoom (%s) needs fp64 on an OpenCL device, and no enabled, working device "
             "\"%.64s\" has it; use device \"\" or \"cpu\"", name, selector);
    FAIL(ERR_PRECONDITION, "deep zoom (%s) runs on the built-in CPU engine or an fp64 OpenCL device, and no "
         "enabled, working one matches device \"%.64s\" (see --list-devices and --cpu-engine)", name, selector);
}

static int to_spec(struct render_spec *s, int *device_index, const Fractal__V1__RenderRequest *req,
                   const struct limits *lim, const struct devices *devs, bool streamed, char *msg,
                   size_t msglen);

int request_to_spec(struct render_spec *out, int *device_index, const Fractal__V1__RenderRequest *req,
                    const struct limits *lim, const struct devices *devs, bool streamed, char *msg,
                    size_t msglen)
{
    int err = to_spec(out, device_index, req, lim, devs, streamed, msg, msglen);

    if (err < 0)
        render_spec_dispose(out);
    return err;
}

static int to_spec(struct render_spec *out, int *device_index, const Fractal__V1__RenderRequest *req,
                   const struct limits *lim, const struct devices *devs, bool streamed, char *msg,
                   size_t msglen)
{
    struct render_spec *s = out;
    int err;

    memset(s, 0, sizeof(*s));
    s->fractal = SPEC_JULIA;
    s->c_re = REQUEST_DEFAULT_C_RE;
    s->c_im = REQUEST_DEFAULT_C_IM;
    if (req->fractal_case == FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT) {
        s->fractal = SPEC_MANDELBROT;
        s->c_re = s->c_im = 0.0;
    } else if (req->fractal_case == FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA && req->julia->c) {
        s->c_re = req->julia->c->re;
        s->c_im = req->julia->c->im;
        if ((err = check_finite("julia.c.re", s->c_re, msg, msglen)) < 0 ||
            (err = check_finite("julia.c.im", s->c_im, msg, msglen)) < 0)
            return err;
    }
    if ((err = load_size(s, req, lim, msg, msglen)) < 0 || (err = load_view(s, req, lim, msg, msglen)) < 0)
        return err;

    s->max_iter = REQUEST_DEFAULT_MAX_ITER;
    if (req->opt_max_iter_case == FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER)
        s->max_iter = req->max_iter;
    if (s->max_iter < 1 || s->max_iter > lim->max_iter)
        FAIL(ERR_INVALID, "max_iter must be 1..%u, got %u", lim->max_iter, s->max_iter);

    /* R > 1 keeps ln R positive in the smooth value; R^2 must stay finite in fp32. */
    s->escape_radius = REQUEST_DEFAULT_ESCAPE_RADIUS;
    if (req->opt_escape_radius_case == FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS)
        s->escape_radius = req->escape_radius;
    if (!(s->escape_radius > 1.0 && s->escape_radius <= REQUEST_MAX_ESCAPE_RADIUS))
        FAIL(ERR_INVALID, "escape_radius must be a number in (1, %g], got %g", REQUEST_MAX_ESCAPE_RADIUS,
             s->escape_radius);

    if (req->format > FRACTAL__V1__FORMAT__FORMAT_RAW_F32)
        FAIL(ERR_INVALID, "format must be FORMAT_PNG, FORMAT_PNG16, FORMAT_RAW_U32 or FORMAT_RAW_F32, got %d",
             (int)req->format);
    s->format = (enum spec_format)req->format;

    s->supersample = 1;
    if (req->opt_supersample_case == FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE)
        s->supersample = req->supersample;
    if (s->supersample < 1 || s->supersample > 8)
        FAIL(ERR_INVALID, "supersample must be 1..8, got %u", s->supersample);
    if (s->supersample > 1 && (s->format == SPEC_RAW_U32 || s->format == SPEC_RAW_F32))
        FAIL(ERR_INVALID, "supersample must be 1 for raw formats, got %u", s->supersample);
    /* load_view left the log2 of the width: now the grid is known. */
    if (s->deep)
        s->deep->log2_spacing -= log2((double)s->width * s->supersample);

    if ((err = load_coloring(&s->coloring, req->coloring, msg, msglen)) < 0)
        return err;

    if (req->precision > FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED)
        FAIL(ERR_INVALID, "precision must be PRECISION_AUTO, PRECISION_FP32, PRECISION_FP64, PRECISION_PERTURB "
             "or PRECISION_PERTURB_EXTENDED, got %d", (int)req->precision);
    if ((err = resolve_precision(s, req->precision, lim, msg, msglen)) < 0)
        return err;

    /* Deep views show a narrow band of escape counts high up in 0..max_iter, which the one
     * log-scaled pass paints one flat colour: unless the request says otherwise they cycle the
     * palette instead (recorded in the resolved request like any cycle). */
    if (!(req->coloring && req->coloring->opt_cycle_case == FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE) &&
        (spec_precision_is_deep(s->precision) || log2_spacing_of(s) + log2((double)s->width * s->supersample) <
                                                      log2(REQUEST_DEEP_CYCLE_WIDTH)))
        s->coloring.cycle = request_default_cycle(s->max_iter);

    if (req->device && strlen(req->device) >= sizeof(s->device))
        FAIL(ERR_INVALID, "device must be at most %zu bytes, got %zu", sizeof(s->device) - 1,
             strlen(req->device));
    snprintf(s->device, sizeof(s->device), "%s", req->device ? req->device : "");
    s->rect_fill = req->rect_fill;
    if ((err = check_cost(s, lim, streamed, msg, msglen)) < 0)
        return err;
    if (spec_precision_is_deep(s->precision))
        err = select_deep_device(devs, s->device, s->precision, msg, msglen);
    else
        err = devices_select(devs, s->device, s->precision == SPEC_FP64, msg, msglen);
    if (err < 0)
        return err;
    *device_index = err;
    return 0;
}

/* Builds the resolved request of `s` on the stack and hands it to fn. Returns fn's result. */
static int with_resolved_request(const struct render_spec *s,
                                 int (*fn)(const Fractal__V1__RenderRequest *req, void *ctx), void *ctx)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__Julia julia = FRACTAL__V1__JULIA__INIT;
    Fractal__V1__Mandelbrot mandel = FRACTAL__V1__MANDELBROT__INIT;
    Fractal__V1__Complex c = FRACTAL__V1__COMPLEX__INIT, center = FRACTAL__V1__COMPLEX__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__Coloring col = FRACTAL__V1__COLORING__INIT;
    Fractal__V1__Color interior = FRACTAL__V1__COLOR__INIT;
    Fractal__V1__Region region = FRACTAL__V1__REGION__INIT;
    Fractal__V1__ColorStop stops[SPEC_MAX_STOPS], *stop_ptrs[SPEC_MAX_STOPS];
    Fractal__V1__Color stop_colors[SPEC_MAX_STOPS];

    if (s->fractal == SPEC_MANDELBROT) {
        req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
        req.mandelbrot = &mandel;
    } else {
        c.re = s->c_re;
        c.im = s->c_im;
        julia.c = &c;
        req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA;
        req.julia = &julia;
    }
    center.re = s->center_re;
    center.im = s->center_im;
    view.center = &center;
    /* A deep view's width may round to 0 or a subnormal as a double: its text is what counts
     * then, and the double is written only while it is one a request may give. */
    if (!s->deep || (s->view_width > 0.0 && s->view_width <= 1e6 && isnormal(s->view_width))) {
        view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
        view.width = s->view_width;
    }
    if (s->deep) {
        view.center_re_text = (char *)s->deep->center_re;
        view.center_im_text = (char *)s->deep->center_im;
        view.width_text = (char *)s->deep->width;
    }
    req.view = &view;
    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req.width = s->width;
    req.opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    req.height = s->height;
    req.opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
    req.max_iter = s->max_iter;
    req.opt_escape_radius_case = FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS;
    req.escape_radius = s->escape_radius;
    /* What was asked, not what was used: AUTO resolves the same way again for the same view,
     * and differently, as it should, for a zoomed one made from this request. */
    req.precision = (Fractal__V1__Precision)s->precision_asked;
    req.format = (Fractal__V1__Format)s->format;
    req.opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
    req.supersample = s->supersample;
    if (s->region.x != 0 || s->region.y != 0 || s->region.width != s->width || s->region.height != s->height) {
        region.x = s->region.x;
        region.y = s->region.y;
        region.width = s->region.width;
        region.height = s->region.height;
        req.region = &region;
    }
    req.device = (char *)s->device;
    req.rect_fill = s->rect_fill;

    /* The resolved palette is written as explicit stops, so the image can be made again even by a
     * server whose built-in palettes have changed. */
    for (uint32_t i = 0; i < s->coloring.nstops; i++) {
        fractal__v1__color__init(&stop_colors[i]);
        stop_colors[i].r = s->coloring.rgb[i].r;
        stop_colors[i].g = s->coloring.rgb[i].g;
        stop_colors[i].b = s->coloring.rgb[i].b;
        fractal__v1__color_stop__init(&stops[i]);
        stops[i].position = s->coloring.pos[i];
        stops[i].color = &stop_colors[i];
        stop_ptrs[i] = &stops[i];
    }
    col.n_stops = s->coloring.nstops;
    col.stops = stop_ptrs;
    col.opt_cycle_case = FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE;
    col.cycle = s->coloring.cycle;
    col.offset = s->coloring.offset;
    interior.r = s->coloring.interior.r;
    interior.g = s->coloring.interior.g;
    interior.b = s->coloring.interior.b;
    col.interior = &interior;
    col.reverse = s->coloring.reverse;
    req.coloring = &col;

    return fn(&req, ctx);
}

static int to_json(const Fractal__V1__RenderRequest *req, void *ctx)
{
    /* pjson's codes share the values of err.h's, so they pass up unchanged. */
    return pjson_encode(ctx, &req->base);
}

int request_json_from_spec(char **out, const struct render_spec *s)
{
    return with_resolved_request(s, to_json, out);
}

int request_text_for_image(char **out, const struct render_spec *s)
{
    *out = NULL;
    if (s->format != SPEC_PNG && s->format != SPEC_PNG16)
        return 0;
    return request_json_from_spec(out, s);
}

struct packed {
    uint8_t *data;
    size_t len;
};

static int to_bytes(const Fractal__V1__RenderRequest *req, void *ctx)
{
    struct packed *p = ctx;

    p->len = protobuf_c_message_get_packed_size(&req->base);
    if (!(p->data = malloc(p->len ? p->len : 1)))
        return ERR_NOMEM;
    protobuf_c_message_pack(&req->base, p->data);
    return 0;
}

int request_pack_from_spec(uint8_t **out, size_t *len, const struct render_spec *s)
{
    struct packed p = {NULL, 0};
    int err = with_resolved_request(s, to_bytes, &p);

    *out = p.data;
    *len = p.len;
    return err;
}
