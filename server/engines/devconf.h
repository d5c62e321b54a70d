/* devconf.h: device-selection config: which devices fractald uses (by type, platform, name
 * pattern, index or id, with exclusions), per-device limits, the CPU engine on or off, the OpenCL
 * program cache, and fault injection for tests. Read from an INI file, the FRACTALD_DEVICES and
 * FRACTALD_FAULT_INJECT environment variables and flags, in that order of increasing precedence
 * (flags > env > file > defaults), and applied to the devices discovery finds. The format is
 * documented in README.md ("Choosing devices"). */
#ifndef FRACTALD_DEVCONF_H
#define FRACTALD_DEVCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "devices.h"
#include "engine_cpu.h"

#define DEVCONF_MAX_RULES 32
#define DEVCONF_MAX_SECTIONS 32
#define DEVCONF_ORIGIN_MAX 320

enum devconf_rule_kind {
    DEVCONF_ALL = 0,            /* all */
    DEVCONF_TYPE,               /* gpu, cpu, accelerator */
    DEVCONF_PLATFORM,           /* platform:TEXT (case-insensitive substring) */
    DEVCONF_VENDOR,             /* vendor:TEXT (case-insensitive substring) */
    DEVCONF_NAME,               /* name:GLOB (fnmatch, case-insensitive) */
    DEVCONF_INDEX,              /* index:P or index:P:D (OpenCL platform and device index) */
    DEVCONF_ID                  /* id:ID, or any other word: a device id */
};

/* One device rule, as written in include, exclude or a [device "RULE"] section. */
struct devconf_rule {
    enum devconf_rule_kind kind;
    int type;                   /* DEVCONF_TYPE: enum device_type */
    unsigned platform, device;  /* DEVCONF_INDEX */
    bool has_device;            /* DEVCONF_INDEX: index:P:D rather than index:P */
    char text[128];             /* the rule as written */
    char arg[128];              /* PLATFORM/VENDOR/NAME/ID: what it matches */
};

struct devconf_list {
    struct devconf_rule rules[DEVCONF_MAX_RULES];
    size_t count;
    char origin[DEVCONF_ORIGIN_MAX];   /* where it was set: "FILE:LINE", "FRACTALD_DEVICES", a flag */
};

/* A [device "RULE"] section: limits for every device the rule matches. Later sections win. */
struct devconf_section {
    struct devconf_rule match;
    char origin[DEVCONF_ORIGIN_MAX];
    uint64_t max_tile_samples;  /* 0 = not set */
    uint64_t max_memory_bytes;  /* 0 = not set */
    double weight;              /* 0 = not set */
    int fp64;                   /* -1 not set, 0 off (never give the device fp64 work), 1 on */
};

struct devconf {
    struct devconf_list include;       /* default: all */
    struct devconf_list exclude;       /* default: none */
    bool cpu_engine;                   /* default on */
    char cpu_engine_origin[DEVCONF_ORIGIN_MAX];
    bool calibrate;                    /* default on */
    /* share_cpu: how CPU-type devices (the CPU engine, an OpenCL CPU device) share the host's
     * cores. true ("priority", default): the slower ones run on spare cycles (sched.c,
     * share_host_cpu); false ("equal"): all at the same priority. */
    bool share_cpu_priority;
    char cache_dir[1024];              /* "" = no program cache */
    unsigned max_launch_ms;            /* default 50 */
    /* [opencl] shortcuts: build the kernels with their exact interior shortcuts (cycle detection,
     * cardioid and bulb). Default off: on PoCL they cost B 22-44 % while gaining C 4-5x
     * (bench/README.md, bench_cl), and they have not been measured on a GPU yet. */
    bool cl_shortcuts;
    bool opencl;                       /* default on; off skips OpenCL discovery altogether */
    char fault_device[64];             /* "" = no fault injection */
    int64_t fault_after;               /* tiles before the injected fault */
    char fault_origin[DEVCONF_ORIGIN_MAX];
    struct devconf_section sections[DEVCONF_MAX_SECTIONS];
    size_t nsections;
};

/* Defaults: every device, the CPU engine on, calibration on, cache in $XDG_CACHE_HOME/fractald
 * or ~/.cache/fractald (none when neither variable is set), launches of 50 ms, no fault. */
void devconf_defaults(struct devconf *out);

/* Reads an INI file over *conf. Returns 0, or ERR_INVALID with "FILE:LINE: problem" (or
 * "FILE: problem" when it cannot be read) in msg. */
int devconf_load_file(struct devconf *conf, const char *path, char *msg, size_t msglen);

/* Reads the one-line form over *conf: "key = value; key = value" with the keys of the [devices]
 * and [opencl] sections (FRACTALD_DEVICES, --devices). origin names the source in messages.
 * Returns 0, or ERR_INVALID with "ORIGIN: problem" in msg. */
int devconf_load_string(struct devconf *conf, const char *origin, const char *text, char *msg,
                        size_t msglen);

/* Sets one key of the [devices] or [opencl] sections (e.g. from a flag). Returns 0 or
 * ERR_INVALID with "ORIGIN: problem" in msg. */
int devconf_set(struct devconf *conf, const char *origin, const char *key, const char *value, char *msg,
                size_t msglen);

/* Builds the whole device config for the server: defaults, then cfg->config_file (if any), then
 * FRACTALD_DEVICES and FRACTALD_FAULT_INJECT from the environment, then the flags kept in cfg.
 * Returns 0 or ERR_INVALID with a message naming the source (file and line, variable or flag). */
int devconf_from_config(struct devconf *out, const struct config *cfg, char *msg, size_t msglen);

/* Whether a device matches a rule. */
bool devconf_rule_match(const struct devconf_rule *rule, const struct device *d);

/* Applies the config to devices already listed: the CPU engine on or off, include and exclude for
 * the OpenCL devices (disabled_reason names the rule and where it was set), the per-device
 * sections' limits, and fault injection. Returns 0, or ERR_INVALID when the fault injection names
 * a device that is not there. */
int devconf_apply(const struct devconf *conf, struct devices *devs, char *msg, size_t msglen);

/* Fills *devs with every device: the built-in CPU engine `cpu` (device "cpu", backend
 * devices_cpu_ops) first, then every OpenCL device engine_cl_discover finds (when fractald is built
 * with the OpenCL engine), each with a stable id, then applies the config (devconf_apply). The
 * OpenCL engines are owned by devs and released by devices_dispose. Returns 0, ERR_NOMEM or
 * ERR_INVALID with msg. */
int devconf_discover(struct devices *devs, const struct devconf *conf, engine_cpu *cpu, char *msg,
                     size_t msglen);

/* The stable id of an OpenCL device: "cl:<platform slug>:<device name slug>:<n>", n counting the
 * devices of the same platform and name in enumeration order (so ids survive other platforms being
 * installed or removed). Slugs are lower case, [a-z0-9] runs joined by '-'. */
void devconf_device_id(char *out, size_t outlen, const char *platform, const char *name, unsigned n);

#endif
