/* engine_cl_internal.h: what the OpenCL engine's files share: the engine's struct, its constants,
 * the one checking macro, and the device-query and program-build functions of
 * engine_cl_program.c. Only engine_cl.c, engine_cl_program.c and engine_cl_deep.c include it (and
 * so CL/). */
#ifndef FRACTALD_ENGINE_CL_INTERNAL_H
#define FRACTALD_ENGINE_CL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine_cl.h"

#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

/* Iterations between escape checks in the VECTOR kernel (the settle finds the exact count among
 * the saved z); a multiple of 8. On PoCL/AVX2 32 measured 5-10 % faster than 16 on workload B
 * (half the checks; the settle counts the steps inside rather than rescanning them), 8 slower. */
#define ECL_BLOCK 32

/* Vectors per work-item in the VECTOR kernel: enough independent chains to hide the latency of
 * one step (about 9 cycles: multiply, subtract, add). On PoCL/AVX2 with the block unrolled, 7
 * measured best for float8 and double4 on workload B, 6 within a few %, 5 and 4 5-15 % slower. */
#define ECL_GROUPS_F32 7
#define ECL_GROUPS_F64 7

/* Work-items per compute unit: VECTOR claims samples dynamically, so a few per unit balance the
 * load; SCALAR wants enough to fill a GPU's schedulers (2048 resident per multiprocessor). */
#define ECL_VECTOR_PER_CU 8u
#define ECL_SCALAR_PER_CU 2048u
#define ECL_SCALAR_LOCAL 64u

/* A rectangle is computed in row bands of at most this many samples, so memory stays bounded
 * (about 44 bytes of state and output per sample on the device, 16 on the host) whatever the
 * rectangle. */
#define ECL_BAND_SAMPLES (1u << 22)

/* First launch of a render before anything was measured: small enough to stay far under any
 * watchdog on a slow device; the budget then grows by at most ECL_GROW per launch. */
#define ECL_FIRST_BLOCKS 2u
#define ECL_FIRST_ITERS 256u
#define ECL_GROW 4.0

/* The turn budget of the next launch, from the one just run (budget) and how long it took (dt,
 * ms): scaled toward a launch of target ms, by at most ECL_GROW either way, within 1..1e9. */
static inline double ecl_next_budget(double budget, double dt, double target)
{
    double scale = dt > 0.01 ? target / dt : ECL_GROW;

    if (scale > ECL_GROW)
        scale = ECL_GROW;
    if (scale < 1 / ECL_GROW)
        scale = 1 / ECL_GROW;
    budget *= scale;
    return budget < 1 ? 1 : budget > 1e9 ? 1e9 : budget;
}

/* Cache file: magic, key, binary length, FNV-1a of the binary (8 bytes each, little-endian),
 * then the binary. */
#define ECL_CACHE_MAGIC "FRCLBIN2"

enum { PREC_F32 = 0, PREC_F64 = 1 };

/* Kernel argument indices of render.cl's KERNEL_ARGS. */
enum {
    ARG_FRACTAL, ARG_CENTER_RE, ARG_CENTER_IM, ARG_S, ARG_HALF_W, ARG_HALF_H, ARG_C_RE, ARG_C_IM,
    ARG_R2MAX, ARG_LOG_R, ARG_MAX_ITER, ARG_RECT_X, ARG_RECT_Y, ARG_RECT_W, ARG_NSAMPLES,
    ARG_NWORK, ARG_BUDGET, ARG_INIT, ARG_FLAGS, ARG_ST_ZR, ARG_ST_ZI, ARG_ST_N, ARG_ST_POS,
    ARG_ST_WI, ARG_CTL, ARG_COUNTS, ARG_ZOUT
};

#define FLAG_CAREFUL 1u
#define FLAG_SMOOTH 2u
#define FLAG_MAIN 4u

struct engine_cl {
    struct engine_cl_info info;
    char failure[512];
    int failed;
    unsigned max_launch_ms;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    cl_program program[2];          /* per precision; [PREC_F64] only with fp64 */
    cl_kernel kernel[2];
    size_t local;                   /* work-group size of every launch */
    unsigned lanes[2];              /* samples in flight per work-item */
    uint32_t pref_width[2];         /* CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT / _DOUBLE */
    cl_mem ctl, counts, zout, st_zr, st_zi, st_n, st_pos, st_wi;
    size_t cap_samples, cap_state, cap_work;
    uint32_t *scratch;              /* counts when the caller wants none (the sum needs them) */
    size_t scratch_cap;
    void *zhost;                    /* final z of a band's samples, for the smooth values */
    size_t zhost_cap;
    double rate[2];                 /* budget units x active work-items per ms, once measured */
    uint64_t launches, fault_at;    /* fault_at: launch number that fails; 0 = never */
    /* Threads that appeared while this device's platform listed and prepared its devices: the
     * runtime's own workers (PoCL starts its CPU device's threads in clGetDeviceIDs). Shared by
     * the platform's engines; runtime_threads_owner frees it. */
    pid_t *runtime_threads;
    size_t nruntime_threads;
    bool runtime_threads_owner;
    bool platform_cpu_only;         /* every device of the platform is CPU-type */
};

/* The name of an OpenCL error code ("CL_OUT_OF_RESOURCES"); static. */
const char *ecl_error_name(cl_int code);

/* Records an OpenCL failure as the one-line message ("NAME (code) from EXPR at file:line") and
 * returns ERR_DEVICE. */
int ecl_fail(char *msg, size_t msglen, cl_int code, const char *expr, const char *file, int line);

/* The one checking macro every OpenCL call goes through: on failure it records the error name,
 * the expression and file:line into msg, sets err = ERR_DEVICE and jumps to done. Calls that
 * return an object are written as (obj = clCreateX(..., &rc), rc). */
#define CL_CHECK(expr)                                                                         \
    do {                                                                                       \
        cl_int check_rc_ = (expr);                                                             \
        if (check_rc_ != CL_SUCCESS) {                                                         \
            err = ecl_fail(msg, msglen, check_rc_, #expr, __FILE__, __LINE__);                  \
            goto done;                                                                         \
        }                                                                                      \
    } while (0)

/* A device's or platform's string parameter into buf ("" if the query fails). */
void ecl_device_string(cl_device_id dev, cl_device_info what, char *buf, size_t len);
void ecl_platform_string(cl_platform_id p, cl_platform_info what, char *buf, size_t len);

/* Fills e->info and e->pref_width from the device's queries. */
void ecl_query_device(struct engine_cl *e);

/* The vector width of the VECTOR kernel for a preferred width `pref`, at least lo. */
unsigned ecl_vector_width(uint32_t pref, unsigned lo);

/* Builds the program of one precision: from the binary cache under cache_dir when it holds one
 * for this exact device, driver, source and options, else from the embedded source (and then
 * stores it there). Creates e->kernel[prec] and sets e->lanes[prec]. A failed build returns
 * ERR_DEVICE with the build log in msg. Sets *from_cache. */
int ecl_build_program(struct engine_cl *e, int prec, const char *cache_dir, int *from_cache, char *msg,
                      size_t msglen);

#endif
