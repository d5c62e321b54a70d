/* engine_cl.c: every OpenCL device as a render engine: discovery through the ICD loader, programs
 * built from the embedded kernels/render.cl (or a binary cache), bounded resumable launches. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "engine_cl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cl_source.h"
#include "devices.h"
#include "err.h"
#include "escape.h"
#include "host_threads.h"
#include "smooth.h"

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

/* ---- errors ---- */

#define CL_ERRORS(X)                                                                           \
    X(CL_DEVICE_NOT_FOUND) X(CL_DEVICE_NOT_AVAILABLE) X(CL_COMPILER_NOT_AVAILABLE)             \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE) X(CL_OUT_OF_RESOURCES) X(CL_OUT_OF_HOST_MEMORY)        \
    X(CL_PROFILING_INFO_NOT_AVAILABLE) X(CL_MEM_COPY_OVERLAP) X(CL_IMAGE_FORMAT_MISMATCH)      \
    X(CL_IMAGE_FORMAT_NOT_SUPPORTED) X(CL_BUILD_PROGRAM_FAILURE) X(CL_MAP_FAILURE)             \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET) X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)         \
    X(CL_COMPILE_PROGRAM_FAILURE) X(CL_LINKER_NOT_AVAILABLE) X(CL_LINK_PROGRAM_FAILURE)        \
    X(CL_DEVICE_PARTITION_FAILED) X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) X(CL_INVALID_VALUE)      \
    X(CL_INVALID_DEVICE_TYPE) X(CL_INVALID_PLATFORM) X(CL_INVALID_DEVICE)                      \
    X(CL_INVALID_CONTEXT) X(CL_INVALID_QUEUE_PROPERTIES) X(CL_INVALID_COMMAND_QUEUE)           \
    X(CL_INVALID_HOST_PTR) X(CL_INVALID_MEM_OBJECT) X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)      \
    X(CL_INVALID_IMAGE_SIZE) X(CL_INVALID_SAMPLER) X(CL_INVALID_BINARY)                        \
    X(CL_INVALID_BUILD_OPTIONS) X(CL_INVALID_PROGRAM) X(CL_INVALID_PROGRAM_EXECUTABLE)         \
    X(CL_INVALID_KERNEL_NAME) X(CL_INVALID_KERNEL_DEFINITION) X(CL_INVALID_KERNEL)             \
    X(CL_INVALID_ARG_INDEX) X(CL_INVALID_ARG_VALUE) X(CL_INVALID_ARG_SIZE)                     \
    X(CL_INVALID_KERNEL_ARGS) X(CL_INVALID_WORK_DIMENSION) X(CL_INVALID_WORK_GROUP_SIZE)       \
    X(CL_INVALID_WORK_ITEM_SIZE) X(CL_INVALID_GLOBAL_OFFSET) X(CL_INVALID_EVENT_WAIT_LIST)     \
    X(CL_INVALID_EVENT) X(CL_INVALID_OPERATION) X(CL_INVALID_GL_OBJECT)                        \
    X(CL_INVALID_BUFFER_SIZE) X(CL_INVALID_MIP_LEVEL) X(CL_INVALID_GLOBAL_WORK_SIZE)           \
    X(CL_INVALID_PROPERTY) X(CL_INVALID_IMAGE_DESCRIPTOR) X(CL_INVALID_COMPILER_OPTIONS)       \
    X(CL_INVALID_LINKER_OPTIONS) X(CL_INVALID_DEVICE_PARTITION_COUNT)                          \
    X(CL_PLATFORM_NOT_FOUND_KHR)

static const char *cl_error_name(cl_int code)
{
    switch (code) {
#define CL_ERROR_CASE(name)                                                                    \
    case name:                                                                                 \
        return #name;
        CL_ERRORS(CL_ERROR_CASE)
#undef CL_ERROR_CASE
    default:
        return "unknown OpenCL error";
    }
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Records an OpenCL failure as the one-line message and returns ERR_DEVICE. */
static int cl_fail(char *msg, size_t msglen, cl_int code, const char *expr, const char *file,
                   int line)
{
    if (msg && msglen)
        snprintf(msg, msglen, "%s (%d) from %s at %s:%d", cl_error_name(code), (int)code, expr,
                 base_name(file), line);
    return ERR_DEVICE;
}

/* The one checking macro every OpenCL call goes through: on failure it records the error name,
 * the expression and file:line into msg, sets err = ERR_DEVICE and jumps to done. Calls that
 * return an object are written as (obj = clCreateX(..., &rc), rc). */
#define CL_CHECK(expr)                                                                         \
    do {                                                                                       \
        cl_int check_rc_ = (expr);                                                             \
        if (check_rc_ != CL_SUCCESS) {                                                         \
            err = cl_fail(msg, msglen, check_rc_, #expr, __FILE__, __LINE__);                  \
            goto done;                                                                         \
        }                                                                                      \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- device information ---- */

/* Copies a string query into buf (always terminated); "" when the query fails. */
static void device_string(cl_device_id dev, cl_device_info what, char *buf, size_t len)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(dev, what, len - 1, buf, NULL) != CL_SUCCESS)
        buf[0] = '\0';
    buf[len - 1] = '\0';
}

static void platform_string(cl_platform_id p, cl_platform_info what, char *buf, size_t len)
{
    buf[0] = '\0';
    if (clGetPlatformInfo(p, what, len - 1, buf, NULL) != CL_SUCCESS)
        buf[0] = '\0';
    buf[len - 1] = '\0';
}

/* Fills engine->info and the sizes the kernels are specialised for. Queries that fail leave
 * zeros: a device that answers nothing fails later, at context creation, with a clear error. */
static void query_device(struct engine_cl *e)
{
    cl_device_type type = 0;
    cl_device_fp_config fp64 = 0;
    cl_uint cu = 0, wf = 0, wd = 0;
    cl_ulong mem = 0, alloc = 0;

    device_string(e->device, CL_DEVICE_NAME, e->info.name, sizeof(e->info.name));
    device_string(e->device, CL_DEVICE_VENDOR, e->info.vendor, sizeof(e->info.vendor));
    device_string(e->device, CL_DEVICE_VERSION, e->info.version, sizeof(e->info.version));
    platform_string(e->platform, CL_PLATFORM_NAME, e->info.platform, sizeof(e->info.platform));
    clGetDeviceInfo(e->device, CL_DEVICE_TYPE, sizeof(type), &type, NULL);
    /* A 1.2 device without fp64 answers 0 (or an error, taken as 0). */
    if (clGetDeviceInfo(e->device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof(fp64), &fp64, NULL) !=
        CL_SUCCESS)
        fp64 = 0;
    clGetDeviceInfo(e->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(cu), &cu, NULL);
    clGetDeviceInfo(e->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(mem), &mem, NULL);
    clGetDeviceInfo(e->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(alloc), &alloc, NULL);
    clGetDeviceInfo(e->device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, sizeof(wf), &wf, NULL);
    clGetDeviceInfo(e->device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_DOUBLE, sizeof(wd), &wd, NULL);
    e->info.type = (type & CL_DEVICE_TYPE_GPU)   ? DEVICE_GPU
                   : (type & CL_DEVICE_TYPE_CPU) ? DEVICE_CPU
                                                 : DEVICE_ACCELERATOR;
    e->info.fp64 = fp64 != 0;
    e->info.compute_units = cu ? cu : 1;
    e->info.memory_bytes = mem;
    e->info.max_alloc_bytes = alloc;
    e->pref_width[PREC_F32] = wf;
    e->pref_width[PREC_F64] = wd;
}

/* A legal OpenCL vector width (2, 4, 8, 16) near the device's preferred width, at least `lo`:
 * narrower vectors than one register leave the CPU's vector units half used. */
static unsigned vector_width(uint32_t pref, unsigned lo)
{
    unsigned w = 2;

    while (w < 16 && w < pref)
        w *= 2;
    return w < lo ? lo : w;
}

/* ---- program build and binary cache ---- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv1a_str(uint64_t h, const char *s)
{
    return fnv1a(h, s, strlen(s) + 1);
}

/* The cache key of one program: everything that changes the binary a driver produces. */
static uint64_t cache_key(const struct engine_cl *e, const char *options)
{
    char driver[128], pversion[128];
    uint64_t h = 0xcbf29ce484222325ull;

    device_string(e->device, CL_DRIVER_VERSION, driver, sizeof(driver));
    platform_string(e->platform, CL_PLATFORM_VERSION, pversion, sizeof(pversion));
    h = fnv1a_str(h, e->info.platform);
    h = fnv1a_str(h, pversion);
    h = fnv1a_str(h, e->info.name);
    h = fnv1a_str(h, e->info.version);
    h = fnv1a_str(h, driver);
    h = fnv1a_str(h, options);
    return fnv1a(h, cl_source_text, cl_source_len);
}

/* Reads a cache file written by cache_store: returns a malloc'd binary and its length, or NULL
 * when the file is missing, short, not for this key, or its checksum does not match. The
 * checksum matters: drivers trust a binary's internal lengths (PoCL crashes on a corrupt one),
 * so nothing damaged may reach clCreateProgramWithBinary. */
static unsigned char *cache_load(const char *path, uint64_t key, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char head[32], *bin = NULL;
    uint64_t k = 0, n = 0, sum = 0;

    if (f == NULL)
        return NULL;
    if (fread(head, 1, sizeof(head), f) != sizeof(head) || memcmp(head, ECL_CACHE_MAGIC, 8) != 0)
        goto done;
    for (int i = 7; i >= 0; i--) {
        k = k << 8 | head[8 + i];
        n = n << 8 | head[16 + i];
        sum = sum << 8 | head[24 + i];
    }
    if (k != key || n == 0 || n > ((uint64_t)1 << 30))
        goto done;
    if ((bin = malloc((size_t)n)) == NULL)
        goto done;
    if (fread(bin, 1, (size_t)n, f) != (size_t)n || fgetc(f) != EOF ||
        fnv1a(0xcbf29ce484222325ull, bin, (size_t)n) != sum) {
        free(bin);
        bin = NULL;
        goto done;
    }
    *len = (size_t)n;

done:
    fclose(f);
    return bin;
}

/* Writes the program's binary to the cache, through a temporary file and rename so a reader
 * never sees half a file. Failing to cache only costs the next start a build, so errors are
 * ignored. */
static void cache_store(const char *dir, const char *path, uint64_t key, cl_program program)
{
    size_t size = 0;
    unsigned char *bin = NULL, head[32];
    uint64_t sum;
    char tmp[4200];
    FILE *f = NULL;
    int ok = 0;

    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof(size), &size, NULL) !=
            CL_SUCCESS ||
        size == 0 || (bin = malloc(size)) == NULL)
        goto done;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof(bin), &bin, NULL) != CL_SUCCESS)
        goto done;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        goto done;
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    if ((f = fopen(tmp, "wb")) == NULL)
        goto done;
    sum = fnv1a(0xcbf29ce484222325ull, bin, size);
    memcpy(head, ECL_CACHE_MAGIC, 8);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (unsigned char)(key >> (8 * i));
        head[16 + i] = (unsigned char)((uint64_t)size >> (8 * i));
        head[24 + i] = (unsigned char)(sum >> (8 * i));
    }
    ok = fwrite(head, 1, sizeof(head), f) == sizeof(head) && fwrite(bin, 1, size, f) == size;
    ok = (fclose(f) == 0) && ok;
    f = NULL;
    if (!ok || rename(tmp, path) != 0)
        remove(tmp);

done:
    free(bin);
}

/* Appends a build log to msg on one line: whitespace runs become one space, cut to what fits. */
static void append_log(char *msg, size_t msglen, const char *log)
{
    size_t at = strlen(msg);
    int space = 0;

    for (const char *p = log; *p && at + 4 < msglen; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
            space = 1;
            continue;
        }
        if (space && at > 0 && msg[at - 1] != ' ')
            msg[at++] = ' ';
        space = 0;
        msg[at++] = *p;
    }
    if (log[0] && at + 4 >= msglen && msglen > 4) {
        at = msglen - 4;
        memcpy(msg + at, "...", 3);
        at += 3;
    }
    msg[at] = '\0';
}

/* Builds the program of one precision: from the binary cache under cache_dir when it holds one
 * for this exact device, driver, source and options, else from the embedded source (and then
 * stores it there). A failed build returns ERR_DEVICE with the build log in msg. Sets
 * *from_cache. */
static int build_program(struct engine_cl *e, int prec, const char *cache_dir, int *from_cache,
                         char *msg, size_t msglen)
{
    char options[256], path[4096];
    const char *src = cl_source_text;
    unsigned char *bin = NULL;
    size_t len = cl_source_len, binlen = 0;
    char *log = NULL;
    cl_int rc = CL_SUCCESS, status = CL_SUCCESS;
    cl_program program = NULL;
    uint64_t key;
    int err = 0;

    *from_cache = 0;
    if (e->info.variant == ENGINE_CL_VECTOR)
        snprintf(options, sizeof(options), "-DRK=%d -DVW=%u -DVG=%d -DFRACTALD_VECTOR%s%s",
                 ECL_BLOCK, vector_width(e->pref_width[prec], prec == PREC_F64 ? 4 : 8),
                 prec == PREC_F64 ? ECL_GROUPS_F64 : ECL_GROUPS_F32,
                 prec == PREC_F64 ? " -DFRACTALD_F64" : "",
                 e->info.shortcuts ? " -DFRACTALD_SHORTCUTS" : "");
    else
        snprintf(options, sizeof(options), "%s%s", prec == PREC_F64 ? "-DFRACTALD_F64" : "",
                 e->info.shortcuts ? " -DFRACTALD_SHORTCUTS" : "");
    key = cache_key(e, options);
    path[0] = '\0';
    if (cache_dir && cache_dir[0]) {
        snprintf(path, sizeof(path), "%s/fractald-%016llx.clbin", cache_dir,
                 (unsigned long long)key);
        bin = cache_load(path, key, &binlen);
    }
    if (bin) {
        const unsigned char *bins[1] = {bin};
        /* Any mismatch (another driver build, a corrupt file) falls back to the source. */
        program = clCreateProgramWithBinary(e->context, 1, &e->device, &binlen, bins, &status, &rc);
        if (rc == CL_SUCCESS && status == CL_SUCCESS &&
            clBuildProgram(program, 1, &e->device, options, NULL, NULL) == CL_SUCCESS) {
            *from_cache = 1;
            goto built;
        }
        if (program)
            clReleaseProgram(program);
        program = NULL;
    }

    CL_CHECK((program = clCreateProgramWithSource(e->context, 1, &src, &len, &rc), rc));
    rc = clBuildProgram(program, 1, &e->device, options, NULL, NULL);
    if (rc != CL_SUCCESS) {
        size_t loglen = 0;

        snprintf(msg, msglen, "%s program build failed (%s): ", prec == PREC_F64 ? "fp64" : "fp32",
                 cl_error_name(rc));
        if (clGetProgramBuildInfo(program, e->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &loglen) ==
                CL_SUCCESS &&
            loglen > 0 && (log = calloc(1, loglen + 1)) != NULL &&
            clGetProgramBuildInfo(program, e->device, CL_PROGRAM_BUILD_LOG, loglen, log, NULL) ==
                CL_SUCCESS)
            append_log(msg, msglen, log);
        err = ERR_DEVICE;
        goto done;
    }
    if (path[0])
        cache_store(cache_dir, path, key, program);

built:
    CL_CHECK((e->kernel[prec] = clCreateKernel(
                  program, e->info.variant == ENGINE_CL_VECTOR ? "render_vector" : "render_scalar",
                  &rc),
              rc));
    e->program[prec] = program;
    program = NULL;
    e->lanes[prec] = e->info.variant == ENGINE_CL_VECTOR
                         ? vector_width(e->pref_width[prec], prec == PREC_F64 ? 4 : 8) *
                               (prec == PREC_F64 ? ECL_GROUPS_F64 : ECL_GROUPS_F32)
                         : 1;

done:
    if (program)
        clReleaseProgram(program);
    free(bin);
    free(log);
    return err;
}

/* ---- rendering ---- */

/* The kernel arguments of one render in both precisions; the kernel reads the one it is built
 * for. Computed by escape.h's own esc_view_init on the host, as the CPU engine does. */
struct launch_params {
    int prec;
    esc_view_f32 v32;
    esc_view_f64 v64;
    uint32_t flags;
};

/* |c|^2 under which an orbit, once outside R, never comes back inside (see engine_cpu.c's
 * lane_safe_limit, which this repeats): then checking the last z of a block finds every escape
 * in it. Negative when no c is safe (R <= ~1). */
static double safe_c2(double r, double r2max)
{
    double lim;

    if (isinf(r2max))
        return INFINITY;
    lim = r * r - r - 1e-4 * r * r;
    return lim > 0 ? lim * lim : -1.0;
}

static void params_init(struct launch_params *lp, const struct render_spec *spec,
                        const struct spec_rect *rect, bool want_smooth, bool shortcuts)
{
    uint32_t gw = spec->width * spec->supersample, gh = spec->height * spec->supersample;
    uint32_t xs[2] = {rect->x, rect->x + rect->width - 1};
    uint32_t ys[2] = {rect->y, rect->y + rect->height - 1};
    double c2 = 0, lim;

    memset(lp, 0, sizeof(*lp));
    lp->prec = spec->precision == SPEC_FP64 ? PREC_F64 : PREC_F32;
    if (lp->prec == PREC_F32) {
        esc_view_init_f32(&lp->v32, (int)spec->fractal, (float)spec->c_re, (float)spec->c_im,
                          (float)spec->center_re, (float)spec->center_im, (float)spec->view_width,
                          gw, gh, (float)spec->escape_radius, spec->max_iter);
        lim = safe_c2((double)(float)spec->escape_radius, lp->v32.r2max);
        if (spec->fractal == SPEC_JULIA)
            c2 = (double)lp->v32.c_re * lp->v32.c_re + (double)lp->v32.c_im * lp->v32.c_im;
        else
            /* The mapping is monotonic in i and j, so |c| peaks at a corner of the rectangle. */
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    double x = esc_x_f32(&lp->v32, xs[a]), y = esc_y_f32(&lp->v32, ys[b]);
                    c2 = fmax(c2, x * x + y * y);
                }
    } else {
        esc_view_init_f64(&lp->v64, (int)spec->fractal, spec->c_re, spec->c_im, spec->center_re,
                          spec->center_im, spec->view_width, gw, gh, spec->escape_radius,
                          spec->max_iter);
        lim = safe_c2(spec->escape_radius, lp->v64.r2max);
        if (spec->fractal == SPEC_JULIA)
            c2 = lp->v64.c_re * lp->v64.c_re + lp->v64.c_im * lp->v64.c_im;
        else
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    double x = esc_x_f64(&lp->v64, xs[a]), y = esc_y_f64(&lp->v64, ys[b]);
                    c2 = fmax(c2, x * x + y * y);
                }
    }
    lp->flags = (!(c2 <= lim) ? FLAG_CAREFUL : 0) | (want_smooth ? FLAG_SMOOTH : 0);
    /* The main-component test holds for orbits that stay inside R = 2 (render.cl), which the
     * check sees as x2 + y2 <= r2max in the working precision. */
    if (shortcuts && spec->fractal == SPEC_MANDELBROT &&
        (lp->prec == PREC_F32 ? lp->v32.r2max >= 4.0f : lp->v64.r2max >= 4.0))
        lp->flags |= FLAG_MAIN;
}

/* Sets a REAL kernel argument in the kernel's precision. */
static cl_int set_real(cl_kernel k, cl_uint idx, int prec, double v)
{
    float f = (float)v;

    return prec == PREC_F64 ? clSetKernelArg(k, idx, sizeof(double), &v)
                            : clSetKernelArg(k, idx, sizeof(float), &f);
}

static cl_int injected_fault(const struct engine_cl *e)
{
    return e->fault_at && e->launches + 1 >= e->fault_at ? CL_OUT_OF_RESOURCES : CL_SUCCESS;
}

static void release_buffers(struct engine_cl *e)
{
    cl_mem *bufs[] = {&e->st_wi, &e->st_pos, &e->st_n, &e->st_zi, &e->st_zr,
                      &e->zout, &e->counts, &e->ctl};

    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (*bufs[i]) {
            clReleaseMemObject(*bufs[i]);
            *bufs[i] = NULL;
        }
    e->cap_samples = e->cap_state = e->cap_work = 0;
}

/* Makes the device buffers hold at least `samples` outputs, `state` lane states and `work`
 * work-items, growing (never shrinking) them, so a stream of tiles allocates once. */
static int ensure_buffers(struct engine_cl *e, size_t samples, size_t state, size_t work,
                          char *msg, size_t msglen)
{
    cl_int rc = CL_SUCCESS;
    int err = 0;

    if (e->ctl == NULL)
        CL_CHECK((e->ctl = clCreateBuffer(e->context, CL_MEM_READ_WRITE, 4 * sizeof(cl_uint), NULL,
                                          &rc),
                  rc));
    if (samples > e->cap_samples) {
        if (e->zout)
            clReleaseMemObject(e->zout);
        if (e->counts)
            clReleaseMemObject(e->counts);
        e->zout = e->counts = NULL;
        e->cap_samples = 0;
        CL_CHECK((e->counts = clCreateBuffer(e->context, CL_MEM_WRITE_ONLY,
                                             samples * sizeof(cl_uint), NULL, &rc),
                  rc));
        CL_CHECK((e->zout = clCreateBuffer(e->context, CL_MEM_WRITE_ONLY,
                                           samples * 2 * sizeof(cl_double), NULL, &rc),
                  rc));
        e->cap_samples = samples;
    }
    if (state > e->cap_state) {
        cl_mem *bufs[] = {&e->st_n, &e->st_pos, &e->st_zi, &e->st_zr};
        for (size_t i = 0; i < 4; i++)
            if (*bufs[i]) {
                clReleaseMemObject(*bufs[i]);
                *bufs[i] = NULL;
            }
        e->cap_state = 0;
        /* Room for doubles, so one set of buffers serves both precisions. */
        CL_CHECK((e->st_zr = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            state * sizeof(cl_double), NULL, &rc),
                  rc));
        CL_CHECK((e->st_zi = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            state * sizeof(cl_double), NULL, &rc),
                  rc));
        CL_CHECK((e->st_pos = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                             state * sizeof(cl_uint), NULL, &rc),
                  rc));
        CL_CHECK((e->st_n = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                           state * sizeof(cl_uint), NULL, &rc),
                  rc));
        e->cap_state = state;
    }
    if (work > e->cap_work) {
        if (e->st_wi)
            clReleaseMemObject(e->st_wi);
        e->st_wi = NULL;
        e->cap_work = 0;
        CL_CHECK((e->st_wi = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            work * 4 * sizeof(cl_uint), NULL, &rc),
                  rc));
        e->cap_work = work;
    }

done:
    return err;
}

static int cancel_raised(const atomic_int *cancel)
{
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

/* Computes one band (a rectangle of at most ECL_BAND_SAMPLES samples) into counts (required)
 * and smooth (may be NULL; if not, e->zhost has room for the band's final z values): sets the
 * arguments once, then launches the kernel until every
 * work-item reports done, polling cancel between launches and sizing each launch's budget from
 * the time the previous one took, so each lasts about max_launch_ms. Adds the launches made to
 * *launches. Returns 0, ERR_CANCELLED or ERR_DEVICE (msg set). */
static int render_band(struct engine_cl *e, const struct launch_params *lp,
                       const struct spec_rect *band, uint32_t *counts, float *smooth,
                       const atomic_int *cancel, uint32_t *launches, char *msg, size_t msglen)
{
    const int prec = lp->prec;
    const cl_kernel k = e->kernel[prec];
    const uint32_t nsamples = band->width * band->height;
    const double target = e->max_launch_ms;
    const double growth_first = e->info.variant == ENGINE_CL_VECTOR ? ECL_FIRST_BLOCKS
                                                                     : ECL_FIRST_ITERS;
    cl_uint zero[4] = {0, 0, 0, 0}, ctl[4];
    cl_uint nwork, init = 1, budget, u, finished = 0;
    size_t global, state;
    double budget_f;
    int err = 0;

    switch (e->info.variant) {
    case ENGINE_CL_VECTOR:
        nwork = e->info.compute_units * ECL_VECTOR_PER_CU;
        break;
    case ENGINE_CL_SCALAR:
        nwork = e->info.compute_units * ECL_SCALAR_PER_CU;
        break;
    default:
        nwork = nsamples;
        break;
    }
    if (nwork > nsamples && e->info.variant != ENGINE_CL_VECTOR)
        nwork = nsamples;
    global = (nwork + e->local - 1) / e->local * e->local;
    state = (size_t)nwork * e->lanes[prec];
    if ((err = ensure_buffers(e, nsamples, state, nwork, msg, msglen)) < 0)
        goto done;

    /* A first launch sized from earlier renders' measurements, at a quarter of the target. The
     * rate is per active work-item, so a render with more work-items (NAIVE: one per sample)
     * gets a proportionally smaller budget; on a device with idle capacity this errs short. */
    budget_f = e->rate[prec] > 0 ? e->rate[prec] * target * 0.25 / nwork : growth_first;
    if (budget_f < 1)
        budget_f = 1;

    u = (cl_uint)lp->flags;
    CL_CHECK(clSetKernelArg(k, ARG_FRACTAL, sizeof(cl_int),
                            prec ? &lp->v64.fractal : &lp->v32.fractal));
    if (prec == PREC_F64) {
        CL_CHECK(set_real(k, ARG_CENTER_RE, prec, lp->v64.center_re));
        CL_CHECK(set_real(k, ARG_CENTER_IM, prec, lp->v64.center_im));
        CL_CHECK(set_real(k, ARG_S, prec, lp->v64.s));
        CL_CHECK(set_real(k, ARG_HALF_W, prec, lp->v64.half_w));
        CL_CHECK(set_real(k, ARG_HALF_H, prec, lp->v64.half_h));
        CL_CHECK(set_real(k, ARG_C_RE, prec, lp->v64.c_re));
        CL_CHECK(set_real(k, ARG_C_IM, prec, lp->v64.c_im));
        CL_CHECK(set_real(k, ARG_R2MAX, prec, lp->v64.r2max));
        CL_CHECK(set_real(k, ARG_LOG_R, prec, lp->v64.log_r));
        CL_CHECK(clSetKernelArg(k, ARG_MAX_ITER, sizeof(cl_uint), &lp->v64.max_iter));
    } else {
        CL_CHECK(set_real(k, ARG_CENTER_RE, prec, lp->v32.center_re));
        CL_CHECK(set_real(k, ARG_CENTER_IM, prec, lp->v32.center_im));
        CL_CHECK(set_real(k, ARG_S, prec, lp->v32.s));
        CL_CHECK(set_real(k, ARG_HALF_W, prec, lp->v32.half_w));
        CL_CHECK(set_real(k, ARG_HALF_H, prec, lp->v32.half_h));
        CL_CHECK(set_real(k, ARG_C_RE, prec, lp->v32.c_re));
        CL_CHECK(set_real(k, ARG_C_IM, prec, lp->v32.c_im));
        CL_CHECK(set_real(k, ARG_R2MAX, prec, lp->v32.r2max));
        CL_CHECK(set_real(k, ARG_LOG_R, prec, lp->v32.log_r));
        CL_CHECK(clSetKernelArg(k, ARG_MAX_ITER, sizeof(cl_uint), &lp->v32.max_iter));
    }
    CL_CHECK(clSetKernelArg(k, ARG_RECT_X, sizeof(cl_uint), &band->x));
    CL_CHECK(clSetKernelArg(k, ARG_RECT_Y, sizeof(cl_uint), &band->y));
    CL_CHECK(clSetKernelArg(k, ARG_RECT_W, sizeof(cl_uint), &band->width));
    CL_CHECK(clSetKernelArg(k, ARG_NSAMPLES, sizeof(cl_uint), &nsamples));
    CL_CHECK(clSetKernelArg(k, ARG_NWORK, sizeof(cl_uint), &nwork));
    CL_CHECK(clSetKernelArg(k, ARG_FLAGS, sizeof(cl_uint), &u));
    CL_CHECK(clSetKernelArg(k, ARG_ST_ZR, sizeof(cl_mem), &e->st_zr));
    CL_CHECK(clSetKernelArg(k, ARG_ST_ZI, sizeof(cl_mem), &e->st_zi));
    CL_CHECK(clSetKernelArg(k, ARG_ST_N, sizeof(cl_mem), &e->st_n));
    CL_CHECK(clSetKernelArg(k, ARG_ST_POS, sizeof(cl_mem), &e->st_pos));
    CL_CHECK(clSetKernelArg(k, ARG_ST_WI, sizeof(cl_mem), &e->st_wi));
    CL_CHECK(clSetKernelArg(k, ARG_CTL, sizeof(cl_mem), &e->ctl));
    CL_CHECK(clSetKernelArg(k, ARG_COUNTS, sizeof(cl_mem), &e->counts));
    CL_CHECK(clSetKernelArg(k, ARG_ZOUT, sizeof(cl_mem), &e->zout));
    CL_CHECK(clEnqueueWriteBuffer(e->queue, e->ctl, CL_TRUE, 0, sizeof(zero), zero, 0, NULL, NULL));

    for (;;) {
        double t0, dt, scale;

        if (cancel_raised(cancel)) {
            err = ERR_CANCELLED;
            goto done;
        }
        budget = (cl_uint)budget_f;
        CL_CHECK(clSetKernelArg(k, ARG_BUDGET, sizeof(cl_uint), &budget));
        CL_CHECK(clSetKernelArg(k, ARG_INIT, sizeof(cl_uint), &init));
        CL_CHECK(injected_fault(e));
        t0 = now_ms();
        CL_CHECK(clEnqueueNDRangeKernel(e->queue, k, 1, NULL, &global, &e->local, 0, NULL, NULL));
        /* The blocking read is also the launch's end: the next budget needs its duration. */
        CL_CHECK(clEnqueueReadBuffer(e->queue, e->ctl, CL_TRUE, 0, sizeof(ctl), ctl, 0, NULL,
                                     NULL));
        dt = now_ms() - t0;
        e->launches++;
        (*launches)++;
        init = 0;
        if (ctl[1] >= nwork)
            break;
        /* Only a launch that ran a good while measures the device's rate. */
        if (dt >= 0.5 * target)
            e->rate[prec] = budget_f * (double)(nwork - finished) / dt;
        finished = ctl[1];
        scale = dt > 0.01 ? target / dt : ECL_GROW;
        if (scale > ECL_GROW)
            scale = ECL_GROW;
        if (scale < 1 / ECL_GROW)
            scale = 1 / ECL_GROW;
        budget_f *= scale;
        if (budget_f < 1)
            budget_f = 1;
        if (budget_f > 1e9)
            budget_f = 1e9;
    }
    CL_CHECK(clEnqueueReadBuffer(e->queue, e->counts, CL_FALSE, 0, nsamples * sizeof(cl_uint),
                                 counts, 0, NULL, NULL));
    if (smooth)
        CL_CHECK(clEnqueueReadBuffer(e->queue, e->zout, CL_FALSE, 0,
                                     (size_t)nsamples * 2 * (prec ? sizeof(double) : sizeof(float)),
                                     e->zhost, 0, NULL, NULL));
    CL_CHECK(clFinish(e->queue));
    /* The smooth values from the final z, by smooth.h's pass on the host: bit for bit the CPU
     * engine's values (a device's log/log2 may differ from libm's by an ulp). */
    if (smooth && prec == PREC_F64)
        smooth_rect_f64(&lp->v64, band->x, band->y, band->width, nsamples, counts,
                        (const double *)e->zhost, smooth);
    else if (smooth)
        smooth_rect_f32(&lp->v32, band->x, band->y, band->width, nsamples, counts,
                        (const float *)e->zhost, smooth);

done:
    return err;
}

int engine_cl_render(engine_cl *engine, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    struct launch_params lp;
    uint64_t sum = 0;
    uint32_t launches = 0, band_rows, cap;
    uint32_t *out = counts;
    int err = 0;

    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (msg && msglen)
        msg[0] = '\0';
    if (engine->failed) {
        snprintf(msg, msglen, "%s", engine->failure);
        return ERR_DEVICE;
    }
    if (spec->precision == SPEC_FP64 && !engine->info.fp64) {
        snprintf(msg, msglen, "OpenCL device %s has no fp64", engine->info.name);
        return ERR_PRECONDITION;
    }
    if (cancel_raised(cancel))
        return ERR_CANCELLED;
    if (rect->width == 0 || rect->height == 0)
        return 0;

    cap = ECL_BAND_SAMPLES;
    /* The largest buffer, the final z of every sample, takes 16 bytes a sample. */
    if (engine->info.max_alloc_bytes / (2 * sizeof(cl_double)) < cap)
        cap = (uint32_t)(engine->info.max_alloc_bytes / (2 * sizeof(cl_double)));
    band_rows = cap / rect->width ? cap / rect->width : 1;
    if (band_rows > rect->height)
        band_rows = rect->height;
    if (smooth) {
        size_t need = (size_t)band_rows * rect->width * 2 * sizeof(double);
        if (need > engine->zhost_cap) {
            free(engine->zhost);
            engine->zhost_cap = 0;
            if ((engine->zhost = malloc(need)) == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            engine->zhost_cap = need;
        }
    }
    if (out == NULL) {
        size_t need = (size_t)band_rows * rect->width;
        if (need > engine->scratch_cap) {
            free(engine->scratch);
            engine->scratch_cap = 0;
            if ((engine->scratch = malloc(need * sizeof(uint32_t))) == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            engine->scratch_cap = need;
        }
    }
    params_init(&lp, spec, rect, smooth != NULL, engine->info.shortcuts);
    for (uint32_t row = 0; row < rect->height; row += band_rows) {
        struct spec_rect band = {rect->x, rect->y + row, rect->width,
                                 rect->height - row < band_rows ? rect->height - row : band_rows};
        size_t off = (size_t)row * rect->width, n = (size_t)band.width * band.height;
        uint32_t *c = counts ? counts + off : engine->scratch;

        err = render_band(engine, &lp, &band, c, smooth ? smooth + off : NULL, cancel, &launches,
                          msg, msglen);
        if (err < 0)
            goto done;
        for (size_t i = 0; i < n; i++)
            sum += c[i];
    }
    if (stats) {
        stats->iterations = sum;
        stats->tiles = launches;
    }

done:
    if (err == ERR_DEVICE) {
        engine->failed = 1;
        snprintf(engine->failure, sizeof(engine->failure), "%s", msg);
    }
    return err;
}

/* ---- discovery ---- */

/* A small render through the whole path (buffers, arguments, launch, read-back), which also
 * makes drivers that compile per launch shape at first launch do so now rather than inside the
 * first real render (PoCL compiles each kernel once for grids under about 2^16 work-items and
 * once for larger ones: the second render, max_iter 1 over 2^18 samples, is for the kernels
 * whose grid grows with the rectangle). */
static int warm_up(struct engine_cl *e, int prec, char *msg, size_t msglen)
{
    struct render_spec spec;
    struct spec_rect r = {0, 0, 16, 16};
    uint32_t counts[256];
    float smooth[256];
    int err;

    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_JULIA;
    spec.c_re = -0.8;
    spec.c_im = 0.156;
    spec.view_width = 3.0;
    spec.width = spec.height = 16;
    spec.region = r;
    spec.max_iter = 64;
    spec.escape_radius = 2.0;
    spec.precision = prec == PREC_F64 ? SPEC_FP64 : SPEC_FP32;
    spec.format = SPEC_RAW_F32;
    spec.supersample = 1;
    if ((err = engine_cl_render(e, &spec, &r, counts, smooth, NULL, NULL, msg, msglen)) < 0)
        return err;
    if (e->info.variant == ENGINE_CL_VECTOR)
        return 0;
    spec.width = spec.height = 512;
    spec.region = r = (struct spec_rect){0, 0, 512, 512};
    spec.max_iter = 1;
    return engine_cl_render(e, &spec, &r, NULL, NULL, NULL, NULL, msg, msglen);
}

/* Prepares one device: context, in-order queue, programs (fp64 only with fp64), a warm-up
 * render. Failures are recorded in e->failure (the device stays listed, marked failed). */
static void prepare(struct engine_cl *e, const struct engine_cl_options *opts)
{
    char msg[sizeof(e->failure)] = "";
    size_t msglen = sizeof(msg);
    cl_context_properties props[3] = {CL_CONTEXT_PLATFORM, (cl_context_properties)e->platform, 0};
    cl_int rc = CL_SUCCESS;
    size_t wg = 0;
    int err = 0, cached[2] = {1, 1};
    double t0 = now_ms();

    CL_CHECK((e->context = clCreateContext(props, 1, &e->device, NULL, NULL, &rc), rc));
    CL_CHECK((e->queue = clCreateCommandQueue(e->context, e->device, 0, &rc), rc));
    if ((err = build_program(e, PREC_F32, opts->cache_dir, &cached[0], msg, msglen)) < 0)
        goto done;
    if (e->info.fp64 &&
        (err = build_program(e, PREC_F64, opts->cache_dir, &cached[1], msg, msglen)) < 0)
        goto done;
    /* One work-item per group for VECTOR (each is a whole lane machine); a modest fixed group
     * for SCALAR. A fixed size also means PoCL compiles each kernel once. */
    e->local = 1;
    if (e->info.variant != ENGINE_CL_VECTOR) {
        CL_CHECK(clGetKernelWorkGroupInfo(e->kernel[PREC_F32], e->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof(wg), &wg, NULL));
        e->local = wg < ECL_SCALAR_LOCAL ? (wg ? wg : 1) : ECL_SCALAR_LOCAL;
    }
    if ((err = warm_up(e, PREC_F32, msg, msglen)) < 0)
        goto done;
    if (e->info.fp64 && (err = warm_up(e, PREC_F64, msg, msglen)) < 0)
        goto done;
    e->info.from_cache = cached[0] && cached[1];
    e->info.build_ms = now_ms() - t0;

done:
    if (err < 0) {
        e->failed = 1;
        snprintf(e->failure, sizeof(e->failure), "%s", msg[0] ? msg : err_name(err));
    }
}

static void engine_free(struct engine_cl *e)
{
    if (e == NULL)
        return;
    release_buffers(e);
    for (int p = 1; p >= 0; p--) {
        if (e->kernel[p])
            clReleaseKernel(e->kernel[p]);
        if (e->program[p])
            clReleaseProgram(e->program[p]);
    }
    if (e->queue)
        clReleaseCommandQueue(e->queue);
    if (e->context)
        clReleaseContext(e->context);
    free(e->scratch);
    free(e->zhost);
    if (e->runtime_threads_owner)
        free(e->runtime_threads);
    free(e);
}

/* Records, in the `count` engines of one platform, the threads that started since `before` was
 * taken (the platform's runtime threads) and whether the platform is CPU-only. Without memory the
 * engines simply record none. */
static void note_runtime_threads(struct engine_cl **engines, size_t count, const pid_t *before,
                                 size_t nbefore)
{
    pid_t *now = NULL;
    size_t nnow = 0;
    bool cpu_only = true;

    if (count == 0 || host_threads_list(&now, &nnow) < 0)
        return;
    nnow = host_threads_new_since(before, nbefore, now, nnow);
    for (size_t i = 0; i < count; i++)
        cpu_only = cpu_only && engines[i]->info.type == DEVICE_CPU;
    for (size_t i = 0; i < count; i++) {
        engines[i]->runtime_threads = now;
        engines[i]->nruntime_threads = nnow;
        engines[i]->runtime_threads_owner = i == 0;
        engines[i]->platform_cpu_only = cpu_only;
    }
}

int engine_cl_discover(engine_cl ***out, size_t *count, const struct engine_cl_options *opts,
                       char *msg, size_t msglen)
{
    static const struct engine_cl_options defaults = ENGINE_CL_OPTIONS_INIT;
    cl_platform_id *platforms = NULL;
    cl_device_id *devices = NULL;
    struct engine_cl **list = NULL;
    cl_uint nplat = 0;
    size_t n = 0, nfailed = 0, nthreads_before = 0;
    pid_t *threads_before = NULL;
    const char *env;
    bool brute;
    cl_int rc;
    int err = 0;

    *out = NULL;
    *count = 0;
    if (opts == NULL)
        opts = &defaults;
    if (msg && msglen)
        msg[0] = '\0';
    env = getenv("FRACTALD_CL_BRUTE_FORCE");
    brute = (opts->version >= 2 && opts->brute_force) || (env && env[0] && strcmp(env, "0") != 0);
    rc = clGetPlatformIDs(0, NULL, &nplat);
    if (rc == CL_PLATFORM_NOT_FOUND_KHR || (rc == CL_SUCCESS && nplat == 0)) {
        snprintf(msg, msglen, "no OpenCL platform: the ICD loader found no installed driver");
        goto done;
    }
    if (rc != CL_SUCCESS) {
        snprintf(msg, msglen, "no OpenCL platform: clGetPlatformIDs failed with %s",
                 cl_error_name(rc));
        goto done;
    }
    if ((platforms = calloc(nplat, sizeof(*platforms))) == NULL) {
        err = ERR_NOMEM;
        goto done;
    }
    if ((rc = clGetPlatformIDs(nplat, platforms, NULL)) != CL_SUCCESS) {
        snprintf(msg, msglen, "no OpenCL platform: clGetPlatformIDs failed with %s",
                 cl_error_name(rc));
        goto done;
    }
    for (cl_uint p = 0; p < nplat; p++) {
        cl_uint ndev = 0;
        struct engine_cl **grown;
        size_t first = n;

        free(threads_before);
        threads_before = NULL;
        if (host_threads_list(&threads_before, &nthreads_before) < 0)
            nthreads_before = 0;
        /* A platform with no device (or one that fails to list them) is skipped. */
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS ||
            ndev == 0)
            continue;
        free(devices);
        if ((devices = calloc(ndev, sizeof(*devices))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, ndev, devices, NULL) != CL_SUCCESS)
            continue;
        if ((grown = realloc(list, (n + ndev) * sizeof(*list))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        list = grown;
        for (cl_uint d = 0; d < ndev; d++) {
            struct engine_cl *e = calloc(1, sizeof(*e));

            if (e == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            list[n++] = e;
            e->platform = platforms[p];
            e->device = devices[d];
            e->info.platform_index = p;
            e->info.device_index = d;
            e->max_launch_ms = opts->max_launch_ms ? opts->max_launch_ms : 50;
            query_device(e);
            e->info.variant = opts->variant != ENGINE_CL_AUTO ? opts->variant
                              : e->info.type == DEVICE_CPU   ? ENGINE_CL_VECTOR
                                                             : ENGINE_CL_SCALAR;
            e->info.shortcuts = e->info.variant != ENGINE_CL_NAIVE && !brute;
            prepare(e, opts);
            nfailed += e->failed != 0;
        }
        if (threads_before)
            note_runtime_threads(list + first, n - first, threads_before, nthreads_before);
    }
    snprintf(msg, msglen, "%zu OpenCL device%s on %u platform%s", n, n == 1 ? "" : "s",
             (unsigned)nplat, nplat == 1 ? "" : "s");
    if (nfailed)
        snprintf(msg + strlen(msg), msglen - strlen(msg), ", %zu failed", nfailed);
    *out = list;
    *count = n;
    list = NULL;
    n = 0;

done:
    if (list)
        engine_cl_free_all(list, n);
    free(threads_before);
    free(devices);
    free(platforms);
    return err;
}

void engine_cl_free_all(engine_cl **engines, size_t count)
{
    if (engines == NULL)
        return;
    for (size_t i = count; i > 0; i--)
        engine_free(engines[i - 1]);
    free(engines);
}

const struct engine_cl_info *engine_cl_get_info(const engine_cl *engine)
{
    return &engine->info;
}

const char *engine_cl_failure(const engine_cl *engine)
{
    return engine->failed ? engine->failure : NULL;
}

void engine_cl_inject_fault(engine_cl *engine, uint64_t after_launches)
{
    engine->fault_at = after_launches ? engine->launches + after_launches + 1 : 0;
}

size_t engine_cl_lower_priority(engine_cl *engine, int nice)
{
    if (!engine->platform_cpu_only)
        return 0;
    return host_threads_lower_priority(engine->runtime_threads, engine->nruntime_threads, nice);
}
