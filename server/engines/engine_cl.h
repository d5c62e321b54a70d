/* engine_cl.h: one OpenCL device (GPU, CPU through PoCL, accelerator) as a render engine, running
 * the escape-time function of kernels/escape.h. The only module that includes CL headers. */
#ifndef FRACTALD_ENGINE_CL_H
#define FRACTALD_ENGINE_CL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine_cpu.h"
#include "spec.h"

typedef struct engine_cl engine_cl;

/* Which kernel a device runs. AUTO picks VECTOR for CPU-type devices and SCALAR for the rest;
 * NAIVE (one pixel per work-item, no refill) exists as the benchmarks' baseline. */
enum engine_cl_variant { ENGINE_CL_AUTO = 0, ENGINE_CL_VECTOR, ENGINE_CL_SCALAR, ENGINE_CL_NAIVE };

/*
 * Interior shortcuts: VECTOR and SCALAR detect orbits that became exactly periodic (Brent's
 * cycle detection on exact equality of z in the working precision) and, for the Mandelbrot set
 * with R >= 2, c well inside the main cardioid or the period-2 bulb; both settle the sample as
 * interior (count max_iter) without running its remaining iterations. They never change a
 * count: every engine's output stays bit-identical to brute force (kernels/render.cl says
 * why). `brute_force` builds the programs without them (the benchmarks' baseline), as does the
 * environment variable FRACTALD_CL_BRUTE_FORCE=1, read at discovery. NAIVE never has them.
 */
#define ENGINE_CL_OPTIONS_VERSION 2
struct engine_cl_options {
    unsigned version;             /* ENGINE_CL_OPTIONS_VERSION */
    const char *cache_dir;        /* compiled program binaries; NULL or "" = no cache */
    unsigned max_launch_ms;       /* target duration of one kernel launch; 0 = 50 */
    enum engine_cl_variant variant;
    bool brute_force;             /* no interior shortcuts (above) */
};
#define ENGINE_CL_OPTIONS_INIT {ENGINE_CL_OPTIONS_VERSION, NULL, 50, ENGINE_CL_AUTO, false}

/* What a device is. type takes devices.h's enum device_type values. */
struct engine_cl_info {
    char name[128];
    char vendor[64];
    char platform[128];
    char version[64];             /* CL_DEVICE_VERSION */
    int type;
    bool fp64;
    uint32_t compute_units;
    uint64_t memory_bytes;        /* CL_DEVICE_GLOBAL_MEM_SIZE */
    uint64_t max_alloc_bytes;     /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    unsigned platform_index, device_index;
    enum engine_cl_variant variant;  /* the kernel it runs (AUTO resolved) */
    bool shortcuts;               /* its programs have the interior shortcuts */
    bool from_cache;              /* every program was loaded from the binary cache */
    double build_ms;              /* preparing the programs at discovery: build or cache load,
                                   * plus one small warm-up render */
};

/* Enumerates every OpenCL platform and device through the ICD loader and prepares each (context,
 * in-order queue, program built from the kernels embedded in the binary, or loaded from the cache).
 * *out receives an array of *count engines (free with engine_cl_free_all); a device whose
 * preparation failed is still listed, with engine_cl_failure() saying why (the build log for a
 * failed build). No ICD or no platform is not an error: *count = 0 and msg says so.
 * Threads that start while a platform prepares its devices are taken for that runtime's own (for
 * engine_cl_lower_priority): call this while no other thread of the process starts threads.
 * Returns 0, or ERR_NOMEM. Never prints. */
int engine_cl_discover(engine_cl ***out, size_t *count, const struct engine_cl_options *opts,
                       char *msg, size_t msglen);

void engine_cl_free_all(engine_cl **engines, size_t count);

/* Borrowed for the engine's lifetime. */
const struct engine_cl_info *engine_cl_get_info(const engine_cl *engine);

/* NULL while the device is usable; otherwise a one-line reason, borrowed. */
const char *engine_cl_failure(const engine_cl *engine);

/* The engine_cpu_render contract on this device: computes `rect` of the spec's sample grid into
 * counts/smooth (either may be NULL), polling `cancel` between launches, each launch bounded to
 * about max_launch_ms so cancellation is prompt and no launch trips a GPU watchdog.
 * One call at a time per engine. Returns 0, ERR_CANCELLED, ERR_PRECONDITION (fp64 spec on a
 * device without fp64), ERR_NOMEM, or ERR_DEVICE with the OpenCL error (name, call, file:line) in
 * msg; after ERR_DEVICE the engine reports itself failed. stats->tiles counts the kernel
 * launches the render took. Smooth values are bit-identical to engine_cpu_render's (the host
 * computes them from the device's final z with escape.h). */
int engine_cl_render(engine_cl *engine, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen);

/* Lowers to `nice` (0..19) the priority of the threads the device's OpenCL runtime started at
 * discovery, when every device of its platform is CPU-type (they then compete with the CPU engine
 * for the same cores; a platform that also drives a GPU is left alone, since starving its threads
 * would idle the GPU). Returns how many threads were changed: 0 for other platforms, or for a
 * runtime that starts its threads later (those inherit the priority of the thread that drives the
 * engine, which the caller can lower too). */
size_t engine_cl_lower_priority(engine_cl *engine, int nice);

/* Test hook: after `after_launches` more kernel launches (0 = off) every launch of this engine
 * fails as CL_OUT_OF_RESOURCES would, so callers can exercise their handling of ERR_DEVICE. */
void engine_cl_inject_fault(engine_cl *engine, uint64_t after_launches);

#endif
