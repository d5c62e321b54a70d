/* internal.h: what libfractal's modules share and the public header does not show. */
#ifndef FRACTAL_CLIENT_INTERNAL_H
#define FRACTAL_CLIENT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "fractal/fractal.h"
#include "fractal/v1/fractal.pb-c.h"

#if defined(__GNUC__)
#define FR_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define FR_PRINTF(fmt_index, first_arg)
#endif

/* Keyword of the PNG text chunk fractald stores the request in (the server's ENCODE_REQUEST_KEYWORD). */
#define FR_PNG_REQUEST_KEYWORD "fractal.v1.RenderRequest"

/* Writes a one-line message into buf (buf may be NULL, then nothing is written; a message too long
 * is cut). Returns err, so that a failure is recorded and returned in one statement. */
int fr_errorf(char *buf, size_t len, int err, const char *fmt, ...) FR_PRINTF(4, 5);

/* ---- options.c: fractal_render_options <-> fractal.v1.RenderRequest, in one place. ---- */

/* A RenderRequest with every sub-message it points to embedded, so that building one from options
 * allocates nothing. Large (stops): keep it on the heap. */
typedef struct opts_wire {
    Fractal__V1__RenderRequest req;
    Fractal__V1__Julia julia;
    Fractal__V1__Mandelbrot mandelbrot;
    Fractal__V1__Complex julia_c;
    Fractal__V1__View view;
    Fractal__V1__Complex center;
    Fractal__V1__Coloring coloring;
    Fractal__V1__ColorStop stops[FRACTAL_STOPS_MAX];
    Fractal__V1__Color stop_colors[FRACTAL_STOPS_MAX];
    Fractal__V1__ColorStop *stop_ptrs[FRACTAL_STOPS_MAX];
    Fractal__V1__Color interior;
    Fractal__V1__Region region;
} opts_wire;

/* Checks what the library itself must refuse in render options: the version, strings without their
 * NUL, n_stops over capacity. Values the server validates are not looked at. Returns 0 or
 * FRACTAL_EINVAL with a message in err. */
int opts_check(const fractal_render_options *opts, char *err, size_t errlen);

/* Fills w->req from opts (already passed opts_check). Every field is set explicitly, except the view
 * width when it is 0 (the server's default). w->req points into w and into opts' strings: both must
 * outlive the packing of w->req. */
void opts_to_request(opts_wire *w, const fractal_render_options *opts);

/* Fills out from a decoded request, starting from the defaults; fields the request leaves unset keep
 * them. Returns 0 or FRACTAL_EFORMAT (a string or the stop list does not fit the fixed arrays). */
int opts_from_request(fractal_render_options *out, const Fractal__V1__RenderRequest *req, char *err,
                      size_t errlen);

/* ---- png_text.c: the text chunks of a PNG file. ---- */

/* Finds the first text chunk (tEXt, zTXt or iTXt) with `keyword` in the PNG file at path and
 * returns its text as a NUL-terminated UTF-8 string in *out (caller frees) and its length in
 * *out_len. Latin-1 text (tEXt, zTXt) is converted to UTF-8 unless it already is valid UTF-8.
 * Returns 0, FRACTAL_EIO, FRACTAL_ENOMEM or FRACTAL_EFORMAT (not a PNG, bad CRC, truncated,
 * bad compression, keyword not found), with a message in err. */
int pngtext_find(char **out, size_t *out_len, const char *path, const char *keyword, char *err,
                 size_t errlen);

#endif
