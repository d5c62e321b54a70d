/* unit_main.c: one runner for every unit-test group (libuv style).
 *   unit_tests                 run every group
 *   unit_tests GROUP [FILTER]  run one group, optionally only tests whose name matches FILTER
 *                              (a cmocka glob such as "*fp64*"). */
#include <stdio.h>
#include <string.h>

#include "unit.h"

struct unit_group {
    const char *name;
    int (*run)(void);
};

static const struct unit_group groups[] = {
    {"kernels", test_kernels_run},
    {"smooth", test_smooth_run},
    {"engine_cpu", test_engine_cpu_run},
    {"engine_cl", test_engine_cl_run},
    {"color", test_color_run},
    {"encode", test_encode_run},
    {"proto_json", test_proto_json_run},
    {"request", test_request_run},
    {"sched", test_sched_run},
    {"devconf", test_devconf_run},
    {"sched_pocl", test_sched_pocl_run},
    {"sched_noicd", test_sched_noicd_run},
    {"jobs", test_jobs_run},
    {"config", test_config_run},
    {"rect_fill", test_rect_fill_run},
    {"deep_cache", test_deep_cache_run},
    {"imgcache", test_imgcache_run},
};

int main(int argc, char **argv)
{
    size_t n = sizeof(groups) / sizeof(groups[0]);
    int failures = 0, ran = 0;

    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], groups[i].name) != 0)
            continue;
        failures += groups[i].run();
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "unit_tests: no group named '%s'; groups:", argv[1]);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %s", groups[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    return failures ? 1 : 0;
}
