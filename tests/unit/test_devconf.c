/* test_devconf.c: the device-selection config: a table of good and bad INI files with the exact
 * message (file:line and problem), the one-line form, flag > env > file > default precedence,
 * include/exclude/limits applied to a GPU host's devices, stable device ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "config.h"
#include "devconf.h"
#include "devices.h"
#include "err.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/devconf-test-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/fractald.ini", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}

/* Loads `text` as a file over the defaults; returns the result, message in msg. */
static int load(struct devconf *conf, const char *text, char *msg, size_t msglen)
{
    devconf_defaults(conf);
    write_file(text);
    msg[0] = '\0';
    return devconf_load_file(conf, path, msg, msglen);
}

#define RULES "(expected all, gpu, cpu, accelerator, platform:TEXT, vendor:TEXT, name:GLOB, index:P[:D], id:ID or cl:...)"
#define SECTIONS "(sections: [server], [devices], [opencl], [device \"RULE\"])"

static void bad_files_name_file_line_and_problem(void **state)
{
    static const struct {
        const char *text;
        const char *want;   /* %1$s: the file's path */
    } cases[] = {
        {"[devices]\ninclude = gpus\n", "%s:2: include: bad device rule 'gpus' " RULES},
        {"[devices]\ninclude = gpu, name:\n", "%s:2: include: bad device rule 'name:' " RULES},
        {"[devices]\nexclude = index:x\n", "%s:2: exclude: bad device rule 'index:x' " RULES},
        {"[devices]\ninclude = gpu,,cpu\n", "%s:2: include: empty device rule in 'gpu,,cpu'"},
        {"[devices]\ncpu_engine = maybe\n", "%s:2: cpu_engine must be on or off, got 'maybe'"},
        {"# comment\n[devices]\nspeed = 11\n",
         "%s:3: unknown key 'speed' (keys: include, exclude, cpu_engine, opencl, calibrate, share_cpu, "
         "fault_inject, cache_dir, max_launch_ms, shortcuts)"},
        {"[devices]\nshare_cpu = fair\n", "%s:2: share_cpu must be 'priority' or 'equal', got 'fair'"},
        {"[gpu]\nweight = 2\n", "%s:2: unknown section [gpu] " SECTIONS},
        {"cpu_engine = on\n", "%s:1: key 'cpu_engine' outside any section " SECTIONS},
        {"[devices]\n\n; a comment\ninclude gpu\n", "%s:4: expected key = value or [section], got 'include gpu'"},
        {"[devices\ninclude = gpu\n", "%s:1: section header must be [name] on one line, got '[devices'"},
        {"[devices]\ncache_dir = /var/cache/fractald\n", "%s:2: key 'cache_dir' belongs in [opencl], not [devices]"},
        {"[opencl]\nmax_launch_ms = 0\n",
         "%s:2: max_launch_ms must be an integer 1..10000 (K, M, G, T suffixes allowed), got '0'"},
        {"[devices]\nfault_inject = cpu\n", "%s:2: fault_inject must be DEVICE_ID:N (fail after N tiles), got 'cpu'"},
        {"[device \"gpu\"]\nmax_tile_samples = 0\n",
         "%s:2: max_tile_samples must be an integer 1..1099511627776 (K, M, G, T suffixes allowed), got '0'"},
        {"[device \"gpu\"]\nmax_memory = 12Q\n",
         "%s:2: max_memory must be an integer 4096..1125899906842624 (K, M, G, T suffixes allowed), got '12Q'"},
        {"[device \"gpu\"]\nweight = -1\n", "%s:2: weight must be a number > 0 and <= 1000, got '-1'"},
        {"[device \"gpu\"]\nweight = 2\nspeed = 3\n",
         "%s:3: unknown key 'speed' in a [device] section (keys: max_tile_samples, max_memory, weight, fp64)"},
        {"[device \"gpus\"]\nweight = 2\n", "%s:2: [device]: bad device rule 'gpus' " RULES},
        /* The earliest error wins, whichever kind it is. */
        {"[devices]\ninclude = bad\nnoequals\n", "%s:2: include: bad device rule 'bad' " RULES},
        {"[devices]\nnoequals\ninclude = bad\n", "%s:2: expected key = value or [section], got 'noequals'"},
    };
    char msg[1024], want[1024];
    struct devconf conf;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int err = load(&conf, cases[i].text, msg, sizeof(msg));
        snprintf(want, sizeof(want), cases[i].want, path);
        if (err != ERR_INVALID || strcmp(msg, want) != 0)
            fail_msg("case %zu: got %d '%s'\n  want '%s'", i, err, msg, want);
    }
    devconf_defaults(&conf);
    assert_int_equal(devconf_load_file(&conf, "/nonexistent/fractald.ini", msg, sizeof(msg)), ERR_INVALID);
    assert_string_equal(msg, "/nonexistent/fractald.ini: cannot read: No such file or directory");
}

static void good_files_set_what_they_say(void **state)
{
    char msg[1024];
    struct devconf conf;

    (void)state;
    assert_int_equal(load(&conf, "", msg, sizeof(msg)), 0);
    assert_int_equal(conf.include.count, 1);
    assert_int_equal(conf.include.rules[0].kind, DEVCONF_ALL);
    assert_int_equal(conf.exclude.count, 0);
    assert_true(conf.cpu_engine && conf.calibrate && conf.opencl && conf.share_cpu_priority);
    assert_int_equal(conf.max_launch_ms, 50);
    assert_int_equal(conf.fault_after, -1);
    assert_false(conf.cl_shortcuts);
    assert_int_equal(load(&conf, "[opencl]\nshortcuts = on\n", msg, sizeof(msg)), 0);
    assert_true(conf.cl_shortcuts);
    assert_int_equal(load(&conf, "[devices]\nshortcuts = on\n", msg, sizeof(msg)), ERR_INVALID);

    assert_int_equal(load(&conf,
                          "; A GPU host: both NVIDIA cards, not the iGPU, CPU engine as a fallback.\n"
                          "[devices]\n"
                          "include = gpu, platform:NVIDIA ; inline comment\n"
                          "exclude = name:*Intel*, index:1:0\n"
                          "cpu_engine = off\n"
                          "calibrate = no\n"
                          "share_cpu = equal\n"
                          "fault_inject = cl:nvidia:nvidia-geforce-rtx-4090:1:7\n"
                          "\n"
                          "[opencl]\n"
                          "cache_dir = /var/cache/fractald\n"
                          "max_launch_ms = 80\n"
                          "\n"
                          "[device \"platform:NVIDIA\"]\n"
                          "max_tile_samples = 8M\n"
                          "max_memory = 2G\n"
                          "weight = 2.5\n"
                          "\n"
                          "[device \"cl:nvidia:nvidia-geforce-rtx-4090:1\"]\n"
                          "fp64 = off\n",
                          msg, sizeof(msg)),
                     0);
    assert_int_equal(conf.include.count, 2);
    assert_int_equal(conf.include.rules[0].kind, DEVCONF_TYPE);
    assert_int_equal(conf.include.rules[0].type, DEVICE_GPU);
    assert_int_equal(conf.include.rules[1].kind, DEVCONF_PLATFORM);
    assert_string_equal(conf.include.rules[1].arg, "NVIDIA");
    snprintf(msg, sizeof(msg), "%s:3", path);
    assert_string_equal(conf.include.origin, msg);
    assert_int_equal(conf.exclude.count, 2);
    assert_int_equal(conf.exclude.rules[0].kind, DEVCONF_NAME);
    assert_int_equal(conf.exclude.rules[1].kind, DEVCONF_INDEX);
    assert_true(conf.exclude.rules[1].has_device);
    assert_int_equal(conf.exclude.rules[1].platform, 1);
    assert_false(conf.cpu_engine);
    assert_false(conf.calibrate);
    assert_false(conf.share_cpu_priority);
    assert_string_equal(conf.fault_device, "cl:nvidia:nvidia-geforce-rtx-4090:1");
    assert_int_equal(conf.fault_after, 7);
    assert_string_equal(conf.cache_dir, "/var/cache/fractald");
    assert_int_equal(conf.max_launch_ms, 80);
    assert_int_equal(conf.nsections, 2);
    assert_int_equal(conf.sections[0].max_tile_samples, 8u << 20);
    assert_true(conf.sections[0].max_memory_bytes == (uint64_t)2 << 30);
    assert_true(conf.sections[0].weight == 2.5);
    assert_int_equal(conf.sections[0].fp64, -1);
    assert_int_equal(conf.sections[1].match.kind, DEVCONF_ID);
    assert_int_equal(conf.sections[1].fp64, 0);
}

static void one_line_form_and_its_errors(void **state)
{
    struct devconf conf;
    char msg[512];

    (void)state;
    devconf_defaults(&conf);
    assert_int_equal(devconf_load_string(&conf, "FRACTALD_DEVICES", " include = gpu ; cpu_engine=off;; exclude = ", msg,
                                         sizeof(msg)), 0);
    assert_int_equal(conf.include.count, 1);
    assert_int_equal(conf.exclude.count, 0);
    assert_false(conf.cpu_engine);
    assert_string_equal(conf.cpu_engine_origin, "FRACTALD_DEVICES");
    assert_int_equal(devconf_load_string(&conf, "FRACTALD_DEVICES", "include gpu", msg, sizeof(msg)), ERR_INVALID);
    assert_string_equal(msg, "FRACTALD_DEVICES: expected key = value, got 'include gpu'");
    assert_int_equal(devconf_load_string(&conf, "--devices", "cpu_engine = on; opencl = sometimes", msg, sizeof(msg)),
                     ERR_INVALID);
    assert_string_equal(msg, "--devices: opencl must be on or off, got 'sometimes'");
    /* A failed load changes nothing. */
    assert_false(conf.cpu_engine);
}

static void flags_beat_env_beat_file(void **state)
{
    struct config cfg;
    struct devconf conf;
    char msg[512], origin[160];

    (void)state;
    config_defaults(&cfg);
    write_file("[devices]\ncpu_engine = off\ninclude = gpu\n[opencl]\ncache_dir = /from/file\n");
    cfg.config_file = path;
    setenv("FRACTALD_DEVICES", "cpu_engine = on; exclude = name:*Intel*; cache_dir = /from/env", 1);
    setenv("FRACTALD_FAULT_INJECT", "cpu:3", 1);
    assert_int_equal(devconf_from_config(&conf, &cfg, msg, sizeof(msg)), 0);
    assert_true(conf.cpu_engine);                       /* env over file */
    assert_string_equal(conf.cpu_engine_origin, "FRACTALD_DEVICES");
    snprintf(origin, sizeof(origin), "%s:3", path);
    assert_string_equal(conf.include.origin, origin);  /* file, untouched by env */
    assert_string_equal(conf.exclude.origin, "FRACTALD_DEVICES");
    assert_string_equal(conf.cache_dir, "/from/env");
    assert_string_equal(conf.fault_device, "cpu");
    assert_int_equal(conf.fault_after, 3);

    cfg.cpu_engine = "off";
    cfg.cache_dir = "";
    cfg.devices = "exclude = vendor:Intel";
    assert_int_equal(devconf_from_config(&conf, &cfg, msg, sizeof(msg)), 0);
    assert_false(conf.cpu_engine);                      /* flag over env */
    assert_string_equal(conf.cpu_engine_origin, "--cpu-engine");
    assert_string_equal(conf.exclude.origin, "--devices");
    assert_string_equal(conf.exclude.rules[0].text, "vendor:Intel");
    assert_string_equal(conf.cache_dir, "");

    setenv("FRACTALD_DEVICES", "include = gpux", 1);
    assert_int_equal(devconf_from_config(&conf, &cfg, msg, sizeof(msg)), ERR_INVALID);
    assert_string_equal(msg, "FRACTALD_DEVICES: include: bad device rule 'gpux' " RULES);
    unsetenv("FRACTALD_DEVICES");
    unsetenv("FRACTALD_FAULT_INJECT");

    /* Defaults alone: the XDG cache directory. */
    config_defaults(&cfg);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    assert_int_equal(devconf_from_config(&conf, &cfg, msg, sizeof(msg)), 0);
    assert_string_equal(conf.cache_dir, "/xdg/fractald");
    unsetenv("XDG_CACHE_HOME");
}

static void add_cl(struct devices *devs, const char *platform, const char *name, enum device_type type,
                   unsigned p, unsigned d, unsigned n)
{
    struct device dev;

    memset(&dev, 0, sizeof(dev));
    devconf_device_id(dev.id, sizeof(dev.id), platform, name, n);
    snprintf(dev.name, sizeof(dev.name), "%s", name);
    snprintf(dev.platform, sizeof(dev.platform), "%s", platform);
    snprintf(dev.vendor, sizeof(dev.vendor), "%s", strstr(platform, "Intel") ? "Intel(R) Corporation" : "NVIDIA Corporation");
    snprintf(dev.engine, sizeof(dev.engine), "opencl");
    dev.type = type;
    dev.fp64 = true;
    dev.enabled = true;
    dev.weight = 1;
    dev.fault_after = -1;
    dev.platform_index = p;
    dev.device_index = d;
    assert_int_equal(devices_add(NULL, devs, &dev), 0);
}

static void config_applies_to_a_gpu_host(void **state)
{
    struct devices devs = {0};
    struct devconf conf;
    char msg[1024], want[512];

    (void)state;
    assert_int_equal(devices_init(&devs, 4), 0);
    add_cl(&devs, "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", DEVICE_GPU, 0, 0, 0);
    add_cl(&devs, "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", DEVICE_GPU, 0, 1, 1);
    add_cl(&devs, "Intel(R) OpenCL Graphics", "Intel(R) UHD Graphics 770", DEVICE_GPU, 1, 0, 0);
    add_cl(&devs, "Portable Computing Language", "cpu-haswell-AMD EPYC 7B13 64-Core Processor", DEVICE_CPU, 2, 0, 0);
    add_cl(&devs, "Xilinx", "xilinx_u250", DEVICE_ACCELERATOR, 3, 0, 0);
    assert_string_equal(devs.list[1].id, "cl:nvidia:nvidia-geforce-rtx-4090:0");
    assert_string_equal(devs.list[2].id, "cl:nvidia:nvidia-geforce-rtx-4090:1");
    assert_string_equal(devs.list[3].id, "cl:intel:intel-r-uhd-graphics-770:0");
    assert_string_equal(devs.list[4].id, "cl:portable:cpu-haswell-amd-epyc-7b13-64-core-processor:0");

    assert_int_equal(load(&conf,
                          "[devices]\n"
                          "include = gpu, index:2\n"
                          "exclude = name:*intel*\n"
                          "fault_inject = cl:nvidia:nvidia-geforce-rtx-4090:0:5\n"
                          "[device \"platform:nvidia\"]\n"
                          "max_tile_samples = 8M\n"
                          "weight = 4\n"
                          "[device \"cl:nvidia:nvidia-geforce-rtx-4090:1\"]\n"
                          "fp64 = off\n"
                          "[device \"cpu\"]\n"
                          "max_tile_samples = 65536\n",
                          msg, sizeof(msg)),
                     0);
    assert_int_equal(devconf_apply(&conf, &devs, msg, sizeof(msg)), 0);
    /* The CPU engine stays on (cpu_engine governs it, not include), and takes the CPU-type section. */
    assert_true(devs.list[0].enabled);
    assert_int_equal(devs.list[0].max_tile_samples, 65536);
    assert_true(devs.list[1].enabled && devs.list[2].enabled);
    assert_int_equal(devs.list[1].max_tile_samples, 8u << 20);
    assert_true(devs.list[1].weight == 4 && devs.list[2].weight == 4);
    assert_true(devs.list[1].fp64);
    assert_false(devs.list[2].fp64);
    assert_int_equal(devs.list[1].fault_after, 5);
    assert_int_equal(devs.list[2].fault_after, -1);
    assert_false(devs.list[3].enabled);
    snprintf(want, sizeof(want), "excluded by exclude rule name:*intel* (%s:3)", path);
    assert_string_equal(devs.list[3].disabled_reason, want);
    assert_true(devs.list[4].enabled);
    assert_int_equal(devs.list[4].max_tile_samples, 65536);
    assert_false(devs.list[5].enabled);
    snprintf(want, sizeof(want), "not matched by include = gpu, index:2 (%s:2)", path);
    assert_string_equal(devs.list[5].disabled_reason, want);

    /* cpu_engine = off, and a fault for a device that is not there. */
    assert_int_equal(devconf_load_string(&conf, "--devices", "cpu_engine = off; fault_inject = cl:amd:x:0:1", msg,
                                         sizeof(msg)), 0);
    assert_int_equal(devconf_apply(&conf, &devs, msg, sizeof(msg)), ERR_INVALID);
    assert_string_equal(msg, "--devices: fault_inject names device 'cl:amd:x:0', which is not there (see --list-devices)");
    assert_false(devs.list[0].enabled);
    assert_string_equal(devs.list[0].disabled_reason, "turned off by cpu_engine = off (--devices)");
    devices_dispose(&devs);
}

/* The README's example file, as documented, on the host it describes. */
static void readme_example_works(void **state)
{
    struct devices devs = {0};
    struct devconf conf;
    char msg[1024], *text = NULL, *start, *end;
    FILE *f = fopen(FRACTALD_SOURCE_DIR "/README.md", "r");
    long len;

    (void)state;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    /* The device example is the first ini block with a [devices] section (the one before it
     * shows the [server] section; test_server_config.py checks that one). */
    start = strstr(text, "```ini\n");
    while (start && (!strstr(start, "[devices]") || strstr(start, "[devices]") > strstr(start + 7, "```")))
        start = strstr(start + 7, "```ini\n");
    assert_non_null(start);
    start += 7;
    end = strstr(start, "```");
    assert_non_null(end);
    *end = '\0';

    assert_int_equal(devices_init(&devs, 4), 0);
    add_cl(&devs, "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", DEVICE_GPU, 0, 0, 0);
    add_cl(&devs, "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", DEVICE_GPU, 0, 1, 1);
    add_cl(&devs, "Intel(R) OpenCL Graphics", "Intel(R) UHD Graphics 770", DEVICE_GPU, 1, 0, 0);
    if (load(&conf, start, msg, sizeof(msg)) < 0)
        fail_msg("README example: %s", msg);
    assert_int_equal(devconf_apply(&conf, &devs, msg, sizeof(msg)), 0);
    assert_true(devs.list[0].enabled && devs.list[1].enabled && devs.list[2].enabled);
    assert_false(devs.list[3].enabled);
    assert_int_equal(devs.list[1].max_tile_samples, 16u << 20);
    assert_true(devs.list[1].fp64);
    assert_false(devs.list[2].fp64);
    assert_string_equal(conf.cache_dir, "/var/cache/fractald");
    devices_dispose(&devs);
    free(text);
}

static void discover_lists_the_cpu_engine_with_its_backend(void **state)
{
    struct devices devs = {0};
    struct devconf conf;
    engine_cpu *cpu = NULL;
    char msg[512];

    (void)state;
    assert_int_equal(engine_cpu_new(&cpu, 1), 0);
    devconf_defaults(&conf);
    conf.opencl = false;
    assert_int_equal(devconf_discover(&devs, &conf, cpu, msg, sizeof(msg)), 0);
    assert_true(devs.count >= 1);
    assert_string_equal(devs.list[0].id, "cpu");
    assert_true(devices_usable(&devs.list[0]));
    assert_ptr_equal(devs.list[0].backend, cpu);
    devices_dispose(&devs);
    engine_cpu_free(cpu);
}

int test_devconf_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_files_name_file_line_and_problem),
        cmocka_unit_test(good_files_set_what_they_say),
        cmocka_unit_test(one_line_form_and_its_errors),
        cmocka_unit_test(flags_beat_env_beat_file),
        cmocka_unit_test(config_applies_to_a_gpu_host),
        cmocka_unit_test(readme_example_works),
        cmocka_unit_test(discover_lists_the_cpu_engine_with_its_backend),
    };
    return cmocka_run_group_tests_name("devconf", tests, setup, teardown);
}
