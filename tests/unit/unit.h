/* unit.h: the unit-test runner's contract. Each tests/unit/test_<module>.c defines one
 * `int test_<module>_run(void)` that runs its cmocka group and returns the number of failures. */
#ifndef FRACTALD_UNIT_H
#define FRACTALD_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

int test_kernels_run(void);
int test_smooth_run(void);
int test_engine_cpu_run(void);
int test_engine_cl_run(void);
int test_color_run(void);
int test_encode_run(void);
int test_proto_json_run(void);
int test_request_run(void);
int test_sched_run(void);
int test_devconf_run(void);
int test_sched_pocl_run(void);
int test_sched_noicd_run(void);
int test_jobs_run(void);
int test_config_run(void);
int test_rect_fill_run(void);
int test_deep_cache_run(void);
int test_imgcache_run(void);

#endif
