/* devices.h: the registry of compute devices fractald knows (the built-in CPU engine and OpenCL), what
 * ListDevices reports about each, and how a request's `device` selector picks among them. */
#ifndef FRACTALD_DEVICES_H
#define FRACTALD_DEVICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine_cpu.h"
#include "spec.h"

/* Values match fractal.v1.DeviceType. */
enum device_type { DEVICE_CPU = 1, DEVICE_GPU = 2, DEVICE_ACCELERATOR = 3 };

/* The built-in CPU engine's id: stable across restarts and hosts. */
#define DEVICE_CPU_ENGINE_ID "cpu"

/* How the scheduler drives a device: the engine_cpu_render contract (outputs rect->width-strided,
 * cancel polled, stats filled), plus a one-line message for ERR_DEVICE. One call at a time per
 * device. ERR_DEVICE means the device is unusable from now on; any other error belongs to the
 * request. The CPU engine's backend is devices_cpu_ops (below); OpenCL devices get theirs from
 * devconf_discover. */
struct device_ops {
    int (*render)(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                  uint32_t *counts, float *smooth, const atomic_int *cancel,
                  struct engine_cpu_stats *stats, char *msg, size_t msglen);
    /* Optional: lowers the priority of the threads the backend runs on its own (an OpenCL CPU
     * runtime's workers) to `nice`; returns how many it changed. NULL: it runs none. */
    size_t (*lower_priority)(void *backend, int nice);
};

struct device {
    char id[64];
    char name[128];
    char vendor[64];
    char platform[64];
    char engine[16];            /* "cpu" or "opencl" */
    enum device_type type;
    bool fp64;
    uint32_t compute_units;
    uint64_t memory_bytes;
    bool enabled;
    char disabled_reason[1024]; /* a failed OpenCL build puts (the start of) its log here */
    /* Set once, by the scheduler, after failed_reason is written: readers that see it true may
     * read the reason. A failed device never comes back until restart. */
    atomic_bool failed;
    char failed_reason[256];
    double giter_per_s;         /* measured throughput, 0 if not measured */
    /* Set by the scheduler for a CPU-type device that shares the host's cores with a faster one:
     * its threads run at low priority, on the cycles the faster device leaves. */
    bool spare_cycles;
    atomic_uint_least64_t tiles_done;
    atomic_uint_least64_t iterations_done;
    atomic_uint_least64_t busy_us;  /* time spent computing tiles, microseconds */

    /* What the scheduler needs; set by devconf_discover (or by tests). */
    const struct device_ops *ops;   /* NULL: the device cannot compute (listed only) */
    void *backend;                  /* ops' context, owned by whoever owns the devices */
    uint64_t max_tile_samples;      /* largest tile; 0 = the scheduler's default for the type */
    uint64_t max_memory_bytes;      /* device memory a tile may use; 0 = no limit beyond the device's */
    uint64_t max_alloc_bytes;       /* largest single buffer the device allows; 0 = no limit */
    double weight;                  /* scales the device's share of a band's tiles; 0 = 1 */
    int64_t fault_after;            /* fault injection: fail after this many tiles; -1 = off */
    unsigned platform_index, device_index;  /* OpenCL enumeration order (unused for the CPU engine) */
};

struct devices {
    struct device *list;
    size_t count;
    /* Whatever the backends need kept alive (the OpenCL engines), released by devices_dispose. */
    void *owner;
    void (*owner_free)(void *owner);
};

/* The backend for the built-in CPU engine: device->backend is the engine_cpu. Never fails with
 * ERR_DEVICE (the CPU engine has no device to lose). */
extern const struct device_ops devices_cpu_ops;

/* Describes the built-in CPU engine with `threads` workers as the first device.
 * Returns 0 or ERR_NOMEM. Release with devices_dispose. */
int devices_init(struct devices *devs, unsigned threads);

void devices_dispose(struct devices *devs);

/* Appends a copy of *dev (counters start at zero) and returns it in *out, if out is not NULL.
 * Earlier pointers into devs->list are invalidated. Returns 0 or ERR_NOMEM. */
int devices_add(struct device **out, struct devices *devs, const struct device *dev);

/* Whether a device matches a request's selector ("" any, "cpu", "gpu", "opencl" or its id),
 * regardless of whether it is enabled or working. */
bool devices_match(const struct device *d, const char *selector);

/* Whether the scheduler may give the device work: enabled, not failed, with a backend. */
bool devices_usable(const struct device *d);

/* Busy time in milliseconds. */
double devices_busy_ms(const struct device *d);

/* Picks the device a request's selector names: "" (any), "cpu", "gpu", "opencl", or a device id.
 * need_fp64 excludes devices without fp64. Returns the index into devs->list of the preferred
 * enabled, working device; ERR_INVALID with a message if the selector is none of those forms;
 * ERR_PRECONDITION with a message if it is valid but no usable device matches. */
int devices_select(const struct devices *devs, const char *selector, bool need_fp64, char *msg,
                   size_t msglen);

/* Prints every device, whether it is used and why not, one per line (fractald --list-devices). */
void devices_print(const struct devices *devs);

#endif
