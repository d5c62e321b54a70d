/* devices.c: device registry and selector matching. */
#include "devices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

/* Reads "key : value" from /proc/cpuinfo's first processor into out; leaves out alone if absent. */
static void read_cpuinfo(const char *key, char *out, size_t outlen)
{
    char line[512];
    size_t keylen = strlen(key);
    FILE *f = fopen("/proc/cpuinfo", "r");

    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, key, keylen) != 0 || !colon)
            continue;
        colon++;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, outlen, "%s", colon);
        break;
    }
    fclose(f);
}

int devices_init(struct devices *devs, unsigned threads)
{
    struct device *cpu;
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);

    devs->count = 0;
    devs->list = calloc(1, sizeof(*devs->list));
    if (!devs->list)
        return ERR_NOMEM;
    cpu = &devs->list[0];
    snprintf(cpu->id, sizeof(cpu->id), "%s", DEVICE_CPU_ENGINE_ID);
    snprintf(cpu->name, sizeof(cpu->name), "CPU");
    snprintf(cpu->vendor, sizeof(cpu->vendor), "unknown");
    read_cpuinfo("model name", cpu->name, sizeof(cpu->name));
    read_cpuinfo("vendor_id", cpu->vendor, sizeof(cpu->vendor));
    snprintf(cpu->platform, sizeof(cpu->platform), "fractald");
    snprintf(cpu->engine, sizeof(cpu->engine), "cpu");
    cpu->type = DEVICE_CPU;
    cpu->fp64 = true;
    cpu->compute_units = threads;
    cpu->memory_bytes = pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size : 0;
    cpu->enabled = true;
    atomic_init(&cpu->failed, false);
    atomic_init(&cpu->tiles_done, 0);
    atomic_init(&cpu->iterations_done, 0);
    atomic_init(&cpu->busy_us, 0);
    cpu->weight = 1;
    cpu->fault_after = -1;
    devs->count = 1;
    devs->owner = NULL;
    devs->owner_free = NULL;
    return 0;
}

void devices_dispose(struct devices *devs)
{
    if (devs->owner_free)
        devs->owner_free(devs->owner);
    devs->owner = NULL;
    devs->owner_free = NULL;
    free(devs->list);
    devs->list = NULL;
    devs->count = 0;
}

int devices_add(struct device **out, struct devices *devs, const struct device *dev)
{
    struct device *list = realloc(devs->list, (devs->count + 1) * sizeof(*list));
    struct device *d;

    if (!list)
        return ERR_NOMEM;
    devs->list = list;
    d = &list[devs->count++];
    /* Field by field where atomics are involved: the copy starts its counters at zero. */
    memcpy(d, dev, sizeof(*d));
    atomic_init(&d->failed, atomic_load(&dev->failed));
    atomic_init(&d->tiles_done, 0);
    atomic_init(&d->iterations_done, 0);
    atomic_init(&d->busy_us, 0);
    if (out)
        *out = d;
    return 0;
}

bool devices_usable(const struct device *d)
{
    return d->enabled && !atomic_load(&d->failed) && d->ops != NULL;
}

double devices_busy_ms(const struct device *d)
{
    return (double)atomic_load(&d->busy_us) / 1e3;
}

bool devices_match(const struct device *d, const char *selector)
{
    if (selector[0] == '\0')
        return true;
    if (strcmp(selector, "cpu") == 0)
        return d->type == DEVICE_CPU;
    if (strcmp(selector, "gpu") == 0)
        return d->type == DEVICE_GPU;
    if (strcmp(selector, "opencl") == 0)
        return strcmp(d->engine, "opencl") == 0;
    return strcmp(selector, d->id) == 0;
}

static bool is_keyword(const char *selector)
{
    return selector[0] == '\0' || strcmp(selector, "cpu") == 0 || strcmp(selector, "gpu") == 0 ||
           strcmp(selector, "opencl") == 0;
}

int devices_select(const struct devices *devs, const char *selector, bool need_fp64, char *msg,
                   size_t msglen)
{
    bool known = is_keyword(selector);

    for (size_t i = 0; i < devs->count; i++) {
        const struct device *d = &devs->list[i];
        if (!devices_match(d, selector))
            continue;
        known = true;
        if (d->enabled && !d->failed && (d->fp64 || !need_fp64))
            return (int)i;
    }
    if (!known) {
        snprintf(msg, msglen,
                 "device must be \"\", \"cpu\", \"gpu\", \"opencl\" or a device id from ListDevices, "
                 "got \"%.64s\"", selector);
        return ERR_INVALID;
    }
    snprintf(msg, msglen, "no enabled, working%s device matches device \"%.64s\"",
             need_fp64 ? " fp64" : "", selector);
    return ERR_PRECONDITION;
}

static const char *type_name(enum device_type type)
{
    switch (type) {
    case DEVICE_GPU: return "gpu";
    case DEVICE_ACCELERATOR: return "accel";
    default: return "cpu";
    }
}

void devices_print(const struct devices *devs)
{
    for (size_t i = 0; i < devs->count; i++) {
        const struct device *d = &devs->list[i];
        bool failed = atomic_load(&d->failed);
        const char *reason = !d->enabled ? d->disabled_reason : failed ? d->failed_reason : "";
        /* A reason can be a whole build log: its first line here, the rest in ListDevices. */
        int first = (int)strcspn(reason, "\n");

        printf("%-28s %-6s %-5s %s (%s, %s engine, %u compute units, %s, %.1f GiB)%s%.*s%s\n", d->id,
               devices_usable(d) ? "used" : "unused", type_name(d->type), d->name, d->platform, d->engine,
               d->compute_units, d->fp64 ? "fp64" : "no fp64", d->memory_bytes / 1073741824.0,
               !d->enabled ? " - disabled: " : failed ? " - failed: " : d->ops ? "" : " - no backend",
               first, reason, reason[first] ? " [...]" : "");
    }
}

static int cpu_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                      uint32_t *counts, float *smooth, const atomic_int *cancel,
                      struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    int err = engine_cpu_render(backend, spec, rect, counts, smooth, cancel, stats);

    if (err == ERR_NOMEM)
        snprintf(msg, msglen, "CPU engine: out of memory");
    return err;
}

const struct device_ops devices_cpu_ops = {cpu_render, NULL};
