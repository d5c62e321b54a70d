/* devices.h: the registry of compute devices fractald knows (today the built-in CPU engine), what
 * ListDevices reports about each, and how a request's `device` selector picks among them. */
#ifndef FRACTALD_DEVICES_H
#define FRACTALD_DEVICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values match fractal.v1.DeviceType. */
enum device_type { DEVICE_CPU = 1, DEVICE_GPU = 2, DEVICE_ACCELERATOR = 3 };

/* The built-in CPU engine's id: stable across restarts and hosts. */
#define DEVICE_CPU_ENGINE_ID "cpu"

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
    char disabled_reason[256];
    bool failed;
    char failed_reason[256];
    double giter_per_s;         /* measured throughput, 0 if not measured */
    atomic_uint_least64_t tiles_done;
    atomic_uint_least64_t iterations_done;
};

struct devices {
    struct device *list;
    size_t count;
};

/* Describes the built-in CPU engine with `threads` workers as the first device.
 * Returns 0 or ERR_NOMEM. Release with devices_dispose. */
int devices_init(struct devices *devs, unsigned threads);

void devices_dispose(struct devices *devs);

/* Picks the device a request's selector names: "" (any), "cpu", "gpu", "opencl", or a device id.
 * need_fp64 excludes devices without fp64. Returns the index into devs->list of the preferred
 * enabled, working device; ERR_INVALID with a message if the selector is none of those forms;
 * ERR_PRECONDITION with a message if it is valid but no usable device matches. */
int devices_select(const struct devices *devs, const char *selector, bool need_fp64, char *msg,
                   size_t msglen);

/* Prints every device, whether it is used and why not, one per line (fractald --list-devices). */
void devices_print(const struct devices *devs);

#endif
