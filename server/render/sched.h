/* sched.h: the multi-device scheduler. Each band a render asks for is cut into full-width row
 * strips (tiles) sized per device; one worker thread per device pulls tiles, so faster devices take
 * more; concurrent requests share the devices round-robin; a device that fails has its tile re-run
 * elsewhere. sched_compute is the render_compute_fn (render.h) that render.c calls per band. */
#ifndef FRACTALD_SCHED_H
#define FRACTALD_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deep_cache.h"
#include "devices.h"
#include "engine_cpu.h"
#include "spec.h"

typedef struct sched sched;

#define SCHED_OPTIONS_VERSION 1
struct sched_options {
    unsigned version;           /* SCHED_OPTIONS_VERSION */
    bool calibrate;             /* measure each usable device's giter_per_s at start (when 0) */
    unsigned calibrate_ms;      /* calibration budget per device; 0 = 80 */
    /* Nice value (1..19) of the CPU-type devices slower than the fastest one: they share the
     * host's cores and take only the cycles it leaves (sched.c, share_host_cpu). 0 = every
     * device at normal priority, time-sharing the cores. */
    int colocated_nice;
    /* Deep zoom: the byte budget of the reference cache (0 = SCHED_DEFAULT_DEEP_REF_CACHE), and
     * the threads of the deep engine (0 = one per online CPU). */
    uint64_t deep_ref_cache;
    unsigned deep_threads;
};
#define SCHED_DEFAULT_COLOCATED_NICE 19
#define SCHED_DEFAULT_DEEP_REF_CACHE ((uint64_t)256 << 20)
#define SCHED_OPTIONS_INIT {SCHED_OPTIONS_VERSION, true, 0, SCHED_DEFAULT_COLOCATED_NICE, 0, 0}

/* Starts one worker thread per usable device of `devs` (devices_usable), after a short calibration
 * when opts->calibrate (devices that fail it are marked failed with the reason). devs, its devices
 * and their backends must outlive the scheduler, and the list must not change while it runs; the
 * scheduler updates the devices' counters and failed state. opts may be NULL (defaults).
 * Returns 0 and the scheduler in *out (free with sched_free); ERR_PRECONDITION when no device is
 * usable (msg says so); ERR_NOMEM. */
int sched_new(sched **out, struct devices *devs, const struct sched_options *opts, char *msg,
              size_t msglen);

/* Stops and joins the workers and frees the scheduler. Accepts NULL. No sched_compute call may be
 * in flight. */
void sched_free(sched *s);

/* The context sched_compute takes: one per render (not shared between threads at once). */
struct sched_call {
    sched *sched;               /* in */
    uint64_t devices_used;      /* out, accumulated over calls: bit i set when devs->list[i] (i < 64)
                                 * computed a tile */
    char msg[256];              /* out: why the last call failed, "" after success */
};

/* A render_compute_fn: computes `rect` of the spec's sample grid on the devices spec->device
 * selects (fp64 specs on fp64 devices only; deep specs, PRECISION_PERTURB and _EXTENDED, on the
 * deep engine through the built-in CPU engine's device alone, render_deep.h, with the scheduler's
 * reference cache), writing counts/smooth (either may be NULL)
 * rect->width-strided, as engine_cpu_render does. ctx is a struct sched_call. Blocks until the
 * rectangle is done. Tiles a device fails on are re-run on another device, so the outputs are the
 * same as without the failure. Returns 0; ERR_CANCELLED soon after *cancel turns nonzero (every
 * tile of this call has been let go of when it returns); ERR_PRECONDITION when no usable device
 * matches the selector and precision; ERR_DEVICE when the last such device failed mid-way;
 * ERR_NOMEM or another backend error. call->msg says why on error. stats may be NULL; its tiles
 * counts scheduler tiles. */
int sched_compute(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                  uint32_t *counts, float *smooth, const atomic_int *cancel,
                  struct engine_cpu_stats *stats);

/* The counters of the scheduler's deep-zoom reference cache. */
void sched_deep_stats(sched *s, struct deep_cache_stats *out);

/* The tile size (samples) the scheduler aims at for a device, before a request's share limit. */
uint64_t sched_tile_samples(const struct device *d);

#endif
