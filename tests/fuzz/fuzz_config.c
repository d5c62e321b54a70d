/* fuzz_config.c: the INI config file, as fractald reads it at start: the [server] section
 * (config_load_file) and the device config (devconf_load_file), the same text as the one-line
 * form of FRACTALD_DEVICES / --devices (devconf_load_string), then the device config applied to a
 * device list: the CPU engine and three OpenCL devices that are only described (no OpenCL call
 * is made). */
#include <string.h>

#include "config.h"
#include "devconf.h"
#include "devices.h"
#include "err.h"
#include "fuzz_util.h"
#include "log.h"

static struct fuzz_file file;
static struct device host[4];   /* the device list devconf_apply starts from, every time */

static void describe_cl(struct device *dev, const char *platform, const char *name, enum device_type type,
                        unsigned p, unsigned d, unsigned n)
{
    memset(dev, 0, sizeof(*dev));
    devconf_device_id(dev->id, sizeof(dev->id), platform, name, n);
    snprintf(dev->name, sizeof(dev->name), "%s", name);
    snprintf(dev->platform, sizeof(dev->platform), "%s", platform);
    snprintf(dev->vendor, sizeof(dev->vendor), "%s", platform);
    snprintf(dev->engine, sizeof(dev->engine), "opencl");
    dev->type = type;
    dev->fp64 = type != DEVICE_ACCELERATOR;
    dev->enabled = true;
    dev->weight = 1;
    dev->fault_after = -1;
    dev->platform_index = p;
    dev->device_index = d;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct devices devs = {0};

    (void)argc;
    (void)argv;
    log_min_level = LOG_OFF;
    if (fuzz_file_init(&file, "fractald.ini") < 0 || devices_init(&devs, 2) < 0)
        abort();
    host[0] = devs.list[0];
    devices_dispose(&devs);
    describe_cl(&host[1], "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", DEVICE_GPU, 0, 0, 0);
    describe_cl(&host[2], "Portable Computing Language", "cpu-haswell-AMD EPYC", DEVICE_CPU, 1, 0, 0);
    describe_cl(&host[3], "Xilinx", "xilinx_u250", DEVICE_ACCELERATOR, 2, 0, 0);
    return 0;
}

static void check_msg(int err, const char *msg, const char *what)
{
    FUZZ_CHECK(err == 0 || err == ERR_INVALID, "%s returned %d", what, err);
    FUZZ_CHECK(err == 0 || msg[0] != '\0', "%s refused without a message", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    struct devconf conf;
    struct devices devs = {0};
    char msg[1024], *text;
    int err;

    fuzz_file_set(&file, data, size);

    config_defaults(&cfg);
    msg[0] = '\0';
    err = config_load_file(&cfg, file.path, msg, sizeof(msg));
    check_msg(err, msg, "config_load_file");

    devconf_defaults(&conf);
    msg[0] = '\0';
    err = devconf_load_file(&conf, file.path, msg, sizeof(msg));
    check_msg(err, msg, "devconf_load_file");
    if (err == 0) {
        FUZZ_CHECK(conf.include.count <= DEVCONF_MAX_RULES && conf.exclude.count <= DEVCONF_MAX_RULES &&
                   conf.nsections <= DEVCONF_MAX_SECTIONS, "more rules or sections than fit");
        for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++)
            if (devices_add(NULL, &devs, &host[i]) < 0)
                abort();
        msg[0] = '\0';
        err = devconf_apply(&conf, &devs, msg, sizeof(msg));
        check_msg(err, msg, "devconf_apply");
        devices_dispose(&devs);
    }

    /* The one-line form over the defaults (FRACTALD_DEVICES, --devices). */
    text = fuzz_strndup(data, size);
    devconf_defaults(&conf);
    msg[0] = '\0';
    err = devconf_load_string(&conf, "FRACTALD_DEVICES", text, msg, sizeof(msg));
    check_msg(err, msg, "devconf_load_string");
    free(text);
    return 0;
}
