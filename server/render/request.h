/* request.h: the boundary between the wire and the engines: validates a fractal.v1.RenderRequest
 * against the limits and turns it into a render_spec, and turns a spec back into the fully
 * resolved request that PNGs carry. */
#ifndef FRACTALD_REQUEST_H
#define FRACTALD_REQUEST_H

#include <stddef.h>

#include "config.h"
#include "devices.h"
#include "fractal/v1/fractal.pb-c.h"
#include "spec.h"

/* Default Julia constant and image of docs/MATH.md (the demo service's image). */
#define REQUEST_DEFAULT_C_RE (-0.8)
#define REQUEST_DEFAULT_C_IM 0.156
#define REQUEST_DEFAULT_WIDTH 600
#define REQUEST_DEFAULT_HEIGHT 400
#define REQUEST_DEFAULT_MAX_ITER 256
#define REQUEST_DEFAULT_ESCAPE_RADIUS 2.0
#define REQUEST_DEFAULT_PALETTE "inferno"
#define REQUEST_MAX_ESCAPE_RADIUS 1e18
/* Cost of one step of a deep view's reference orbit at two limbs (128 bits) of MPFR precision,
 * in sample iterations (fp64 steps), for admission: about 100 ns against 1 ns. */
#define REQUEST_REF_STEP_COST 100.0

/* Validates `req` and fills *out with defaults applied and precision resolved; *device_index
 * receives the index in devs->list of the device chosen for it. *out owns its deep view (a deep
 * request's exact text): dispose of it with render_spec_dispose (spec.h); on failure it owns
 * nothing. `streamed` says the image goes out
 * in chunks (RenderStream, jobs), so the reply-size limit of unary replies does not apply.
 * Returns 0, or, with a one-line message in msg naming the field, the value and the allowed range:
 *   ERR_INVALID       malformed input (NaN, out of range, unknown palette or device, ...);
 *   ERR_EXHAUSTED     well-formed but over a configured limit (samples, cost, reply size);
 *   ERR_PRECONDITION  a view too deep for the precision asked, or no device able to run it. */
int request_to_spec(struct render_spec *out, int *device_index, const Fractal__V1__RenderRequest *req,
                    const struct limits *limits, const struct devices *devs, bool streamed, char *msg,
                    size_t msglen);

/* The request that reproduces `spec` exactly, every default written out, as compact JSON
 * (proto3 JSON mapping). Returns 0 and a malloc'd string in *out (caller frees), ERR_NOMEM, or
 * ERR_INVALID for a string field that is not UTF-8 (validation never lets one through). */
int request_json_from_spec(char **out, const struct render_spec *spec);

/* The request text an image of spec carries: request_json_from_spec's for the PNG formats, NULL in
 * *out for the raw formats, which have nowhere to keep it (writing the JSON costs ~80 us a
 * request, wasted on a raw tile). Returns 0 or ERR_NOMEM. */
int request_text_for_image(char **out, const struct render_spec *spec);

/* The same resolved request as packed protobuf bytes (what the job store keeps: small, and free
 * of whatever unknown fields the client sent). Returns 0 with a malloc'd buffer in *out and its
 * size in *len (caller frees), or ERR_NOMEM. */
int request_pack_from_spec(uint8_t **out, size_t *len, const struct render_spec *spec);

/* What a render costs for admission and the --max-cost limit, in sample iterations: samples x
 * max_iter, plus, for a deep spec, its reference orbit (request_reference_cost). */
double request_cost(const struct render_spec *spec);

/* The reference orbit's part of request_cost: 0 for fp32 and fp64; for perturbation, orbits x
 * max_iter x REQUEST_REF_STEP_COST x (limbs / 2)^1.585, limbs the 64-bit words of the precision
 * the view's digits need (plus 64 guard bits). */
double request_reference_cost(const struct render_spec *spec);

/* Views narrower than this (and every perturbation view) cycle the palette when the request
 * leaves coloring.cycle unset, every request_default_cycle(max_iter) iterations. */
#define REQUEST_DEEP_CYCLE_WIDTH 1e-10

/* Iterations per palette cycle of a deep view whose request leaves coloring.cycle unset:
 * 4 sqrt(max_iter), rounded, at least 16. A function of the request alone, so that every tile of
 * an image gets the same colours; with max_iter about the view's highest escape counts (as deep
 * zooms set it), the counts of the view span several cycles. */
double request_default_cycle(uint32_t max_iter);

/* Pixel spacing below which a precision cannot resolve the view (see request.c). Exposed for tests. */
double request_min_spacing(enum spec_precision precision, double magnitude);

#endif
