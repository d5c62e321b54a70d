/* engine_cl_deep.h: the deep-zoom perturbation renderer (server/deep/deep_render.c's fp64 mode)
 * on an OpenCL device with fp64: plain-data jobs that server/deep fills (deep_device.h), so this
 * library knows nothing of MPFR or of struct deep_ref. */
#ifndef FRACTALD_ENGINE_CL_DEEP_H
#define FRACTALD_ENGINE_CL_DEEP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine_cl.h"
#include "spec.h"

/* The most BLA levels one orbit's table may have (deep_internal.h's DEEP_BLA_LEVELS_MAX must
 * not exceed it). */
#define ENGINE_CL_DEEP_LEVELS_MAX 32

/* Doubles per BLA entry: A re, A im, B re, B im, radius (struct deep_bla_f64's layout). */
#define ENGINE_CL_DEEP_BLA_DOUBLES 5

/*
 * One reference orbit and its BLA table, borrowed (the deep_ref that holds them must outlive
 * the call): z[2k], z[2k+1] = re, im of Z_k for k < len (len >= 1, < 2^31); level k of the
 * table has bla_count[k] entries from entry bla_first[k] of `bla`, entry j of level k starting
 * at iteration 1 + j 2^k and covering 2^k iterations (deep_internal.h, struct deep_bla).
 * bla_entries is the number of entries of `bla` in all; bla may be NULL when bla_levels is 0.
 */
struct engine_cl_deep_orbit {
    const double *z;
    uint32_t len;
    uint32_t bla_levels;
    uint32_t bla_count[ENGINE_CL_DEEP_LEVELS_MAX];
    size_t bla_first[ENGINE_CL_DEEP_LEVELS_MAX];
    const double *bla;
    size_t bla_entries;
};

/*
 * Recomputes sample (i, j) of the job's grid exactly (server/deep fills it in: MPFR), given the
 * kernel's error bound `err` for it (units of 2^-53, deep.cl): writes its count and final z.
 * ref and view are the job's exact_ref and exact_view. Polls *cancel (may be NULL). Returns 0,
 * ERR_CANCELLED or another negative error code.
 */
typedef int (*engine_cl_deep_exact_fn)(const void *ref, const void *view, uint32_t i, uint32_t j,
                                       double err, const atomic_int *cancel, uint32_t *out_n,
                                       double *out_zr, double *out_zi);

/*
 * A deep render of one rectangle, plain data (deep_ref_device_job fills it from a reference).
 * Sample (i, j) of the grid sits at the reference point plus the offset
 *     d = (((i + 0.5) - half_w) * spacing, -((j + 0.5) - half_h) * spacing)
 * each product rounded once in double (half_w = grid_w / 2, half_h = grid_h / 2, exact).
 * Mandelbrot: dc = d, dz_0 = 0 against orbit[0] (the centre's orbit of 0). Julia: dz_0 = d, dc = 0
 * against orbit[0] (the centre's orbit), rebasing onto orbit[1] (the critical point 0's).
 * center_re/_im (the centre rounded to double) and c_re/_im (Julia's constant) serve only the
 * smooth value's c, as in deep_render.c.
 * Julia: a sample whose error bound exceeds exact_above (the kernel's deltas lost its count) is
 * recomputed on the host by exact(exact_ref, exact_view, ...), which replaces its count and
 * final z; exact NULL: never. exact_ref and exact_view are borrowed until the render returns.
 * orbit_id names the contents of orbit[] (deep_ref_serial of the reference they come from):
 * a call whose nonzero orbit_id is that of the engine's previous upload reuses the device's
 * copy instead of sending the orbits and BLA tables again, so the caller promises that equal
 * nonzero ids mean equal orbit[] contents. 0: no identity, uploaded on every call.
 */
#define ENGINE_CL_DEEP_JOB_VERSION 2
struct engine_cl_deep_job {
    unsigned version;                  /* ENGINE_CL_DEEP_JOB_VERSION */
    enum spec_fractal fractal;
    int norbits;                       /* Mandelbrot 1, Julia 2 */
    struct engine_cl_deep_orbit orbit[2];
    double spacing;                    /* > 0, finite, normal (fp64 mode: >= ~2^-960) */
    double half_w, half_h;
    uint32_t grid_w, grid_h;
    double center_re, center_im;
    double c_re, c_im;
    double escape_radius;              /* r2max = escape_radius * escape_radius */
    uint32_t max_iter;                 /* 1 .. 2^31 - 2 */
    struct spec_rect rect;             /* inside the grid, row-major output */
    double exact_above;                /* > 0; units of 2^-53 */
    engine_cl_deep_exact_fn exact;     /* may be NULL */
    const void *exact_ref, *exact_view;
    uint64_t orbit_id;                 /* 0, or unique to these orbits' contents (above) */
};

/* What one engine_cl_deep_render call did. */
struct engine_cl_deep_stats {
    uint64_t iterations;               /* sum of escape counts over the rectangle */
    uint32_t launches;                 /* kernel launches */
    uint64_t exact;                    /* samples recomputed by job->exact */
    double build_ms;                   /* the deep program's build, when this call built it */
    uint64_t upload_bytes;             /* orbit, BLA and meta bytes sent (0: the device's copy) */
};

/* Nonzero when the engine can run deep jobs: usable (not failed) and with fp64. */
int engine_cl_deep_usable(const engine_cl *engine);

/*
 * Computes job->rect on the device into counts (may be NULL) and smooth (may be NULL): the
 * escape counts and smooth values of deep_render (fp64 mode, rebasing and BLA on), the smooth
 * value computed on the host by smooth.h's smooth_value_f64 from the count and the device's
 * final z, with deep_render.c's c, so its bits are the CPU deep engine's wherever the counts
 * and final z agree. Both arrays are rect.width * rect.height, row-major.
 * The first call on an engine builds the deep program (seconds on PoCL; kept, with its own
 * command queue and buffers, until engine_cl_deep_release). The engine keeps the orbits of its
 * last upload on the device: a following call with the same nonzero job->orbit_id (the bands of
 * one frame) sends none of them. Launches are bounded to about the engine's max_launch_ms and
 * *cancel (may be NULL) is polled between them, so a raised flag
 * returns within about a launch (and within milliseconds during the host's exact recomputations
 * of Julia samples, job->exact). Thread-safe: deep calls on one engine are serialised (a
 * waiting call still answers *cancel), and they may run beside engine_cl_render on the same
 * engine (separate queue, kernel and buffers; the engine's struct is only read).
 * Returns 0, ERR_CANCELLED, ERR_INVALID (a job outside the limits above, msg says which),
 * ERR_PRECONDITION (device without fp64), ERR_NOMEM, or ERR_DEVICE with the OpenCL error (name,
 * call, file:line) or the build log of a failed build in msg. After ERR_DEVICE every later deep
 * call on the engine returns the same message (the engine's plain renders are not affected:
 * engine_cl_render finds out by itself whether the device still works). stats may be NULL.
 */
int engine_cl_deep_render(engine_cl *engine, const struct engine_cl_deep_job *job,
                          uint32_t *counts, float *smooth, const atomic_int *cancel,
                          struct engine_cl_deep_stats *stats, char *msg, size_t msglen);

/* Releases the deep program, queue and buffers of engine (nothing if it has none), while no deep
 * call on it runs. Call before engine_cl_free_all frees the engine; whatever is not released
 * stays (reachable) until exit. */
void engine_cl_deep_release(engine_cl *engine);

#endif
