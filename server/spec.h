/* spec.h: render_spec, the engine-neutral, validated description of one render. Everything after
 * the service layer (engines, colouring, encoding) speaks render_spec, never protobuf. */
#ifndef FRACTALD_SPEC_H
#define FRACTALD_SPEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define SPEC_MAX_STOPS 256
#define SPEC_DEVICE_MAX 128

enum spec_fractal { SPEC_JULIA = 0, SPEC_MANDELBROT = 1 };

/* Always resolved: PRECISION_AUTO never reaches an engine. Values match fractal.v1.Precision.
 * The perturbation ones (deep zoom, server/deep/) come with render_spec.deep. */
enum spec_precision { SPEC_FP32 = 1, SPEC_FP64 = 2, SPEC_PERTURB = 3, SPEC_PERTURB_EXTENDED = 4 };

static inline bool spec_precision_is_deep(enum spec_precision p)
{
    return p == SPEC_PERTURB || p == SPEC_PERTURB_EXTENDED;
}

/* The precision's name for logs: "fp32", "fp64", "perturb", "perturb_extended". */
static inline const char *spec_precision_name(enum spec_precision p)
{
    static const char *const names[] = {"auto", "fp32", "fp64", "perturb", "perturb_extended"};
    return (unsigned)p < 5 ? names[p] : "unknown";
}

/* Values match fractal.v1.Format. */
enum spec_format { SPEC_PNG = 0, SPEC_PNG16 = 1, SPEC_RAW_U32 = 2, SPEC_RAW_F32 = 3 };

/* The format's name as the contract spells it, lower case ("png", "raw_f32"), for logs. */
static inline const char *spec_format_name(enum spec_format format)
{
    static const char *const names[] = {"png", "png16", "raw_u32", "raw_f32"};
    return (unsigned)format < 4 ? names[format] : "unknown";
}

/* A rectangle of pixels (or samples), x/y its top-left corner. */
struct spec_rect {
    uint32_t x, y, width, height;
};

struct spec_rgb {
    uint8_t r, g, b;
};

/* A resolved palette: either a built-in one copied in by name, or the request's custom stops. */
struct spec_coloring {
    uint32_t nstops;                    /* 2..SPEC_MAX_STOPS */
    float pos[SPEC_MAX_STOPS];          /* 0..1, non-decreasing, pos[0] == 0, pos[nstops-1] == 1 */
    struct spec_rgb rgb[SPEC_MAX_STOPS];
    double cycle;                       /* iterations per palette cycle; 0: one log-scaled pass */
    double offset;                      /* 0..1 shift of the palette coordinate when cycling */
    struct spec_rgb interior;           /* colour of points that never escape */
    bool reverse;
};

/* The view of a render as exact decimal text (fractal.v1.View's *_text fields, or the doubles
 * written out when a perturbation precision was asked for them): one allocation, reference
 * counted, immutable once request_to_spec has built it but for `attached`. Copies of a
 * render_spec share it: a copy that may outlive the spec it came from takes spec_deep_ref (and
 * disposes of itself with render_spec_dispose); a copy used only while the original lives (a
 * tile's copy in the scheduler) borrows it. */
struct spec_deep {
    atomic_int refs;
    const char *center_re, *center_im;  /* decimal text, NUL-terminated, inside this allocation */
    const char *width;                  /* > 0, "1.5e-400" */
    double log2_spacing;                /* log2 of the sample spacing (width / (width px x n)) */
    double digits;                      /* log10(max(|centre|, 1) / spacing): digits the view needs */
    /* What the render stage keeps with the request while it lives, released with the last
     * reference: the reference orbit (render_deep.c), so every band of a render uses the same. */
    void *attached;
    void (*attached_release)(void *attached);
};

/* Takes a reference; returns d. Accepts NULL. */
static inline struct spec_deep *spec_deep_ref(struct spec_deep *d)
{
    if (d)
        atomic_fetch_add(&d->refs, 1);
    return d;
}

/* Drops a reference; the last one releases the attachment and frees d. Accepts NULL. */
static inline void spec_deep_unref(struct spec_deep *d)
{
    if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    if (d->attached && d->attached_release)
        d->attached_release(d->attached);
    free(d);
}

/* One render, validated: every field is in range and every default is filled in.
 *
 * The sample grid: with n = supersample, the engines compute a grid of (width*n) x (height*n)
 * samples over the same view; sample (i, j) of that grid sits at
 *     s = view_width / (width*n)
 *     x = center_re + (i + 0.5 - width*n/2) * s,   y = center_im - (j + 0.5 - height*n/2) * s
 * which for n = 1 is exactly the pixel mapping of docs/MATH.md. */
struct render_spec {
    enum spec_fractal fractal;
    double c_re, c_im;                  /* Julia constant (unused for Mandelbrot) */
    double center_re, center_im;
    double view_width;                  /* span of the real axis across the full image, > 0 */
    uint32_t width, height;             /* full image, pixels */
    struct spec_rect region;            /* the pixels to render, inside the full image */
    uint32_t max_iter;                  /* >= 1 */
    double escape_radius;               /* > 0, finite */
    enum spec_precision precision;
    enum spec_format format;
    uint32_t supersample;               /* 1..8; 1 for raw formats */
    struct spec_coloring coloring;
    char device[SPEC_DEVICE_MAX];       /* "" any, "cpu", "gpu", "opencl", or a device id */
    /* Engines may fill a rectangle whose whole border is interior as interior (Mariani-Silver);
     * false computes every sample. The exact shortcuts (cardioid and bulb tests, cycle
     * detection) are always on: they cannot change a count. */
    bool rect_fill;
    /* The precision the request asked for (fractal.v1.Precision, 0 = AUTO): what the resolved
     * request records, so a re-render of a changed view resolves again. `precision` is what runs. */
    int precision_asked;
    /* The exact view: set when the request gave any *_text field or the precision is a
     * perturbation one, else NULL. The doubles above are its correctly rounded values, which
     * fp32/fp64 renders use. Owned (one reference) by the spec: render_spec_dispose drops it. */
    struct spec_deep *deep;
};

/* Releases what a spec owns (its deep view) and leaves it without. Accepts NULL. */
static inline void render_spec_dispose(struct render_spec *s)
{
    if (!s)
        return;
    spec_deep_unref(s->deep);
    s->deep = NULL;
}

#endif
