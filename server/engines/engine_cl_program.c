/* engine_cl_program.c: the OpenCL engine's error names, device queries, and program build with
 * its binary cache (a driver's compile takes seconds; a cached binary, milliseconds). */
#include "engine_cl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cl_source.h"
#include "devices.h"
#include "err.h"

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

const char *ecl_error_name(cl_int code)
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
int ecl_fail(char *msg, size_t msglen, cl_int code, const char *expr, const char *file,
                   int line)
{
    if (msg && msglen)
        snprintf(msg, msglen, "%s (%d) from %s at %s:%d", ecl_error_name(code), (int)code, expr,
                 base_name(file), line);
    return ERR_DEVICE;
}



/* ---- device information ---- */

/* Copies a string query into buf (always terminated); "" when the query fails. */
void ecl_device_string(cl_device_id dev, cl_device_info what, char *buf, size_t len)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(dev, what, len - 1, buf, NULL) != CL_SUCCESS)
        buf[0] = '\0';
    buf[len - 1] = '\0';
}

void ecl_platform_string(cl_platform_id p, cl_platform_info what, char *buf, size_t len)
{
    buf[0] = '\0';
    if (clGetPlatformInfo(p, what, len - 1, buf, NULL) != CL_SUCCESS)
        buf[0] = '\0';
    buf[len - 1] = '\0';
}

/* Fills engine->info and the sizes the kernels are specialised for. Queries that fail leave
 * zeros: a device that answers nothing fails later, at context creation, with a clear error. */
void ecl_query_device(struct engine_cl *e)
{
    cl_device_type type = 0;
    cl_device_fp_config fp64 = 0;
    cl_uint cu = 0, wf = 0, wd = 0;
    cl_ulong mem = 0, alloc = 0;

    ecl_device_string(e->device, CL_DEVICE_NAME, e->info.name, sizeof(e->info.name));
    ecl_device_string(e->device, CL_DEVICE_VENDOR, e->info.vendor, sizeof(e->info.vendor));
    ecl_device_string(e->device, CL_DEVICE_VERSION, e->info.version, sizeof(e->info.version));
    ecl_platform_string(e->platform, CL_PLATFORM_NAME, e->info.platform, sizeof(e->info.platform));
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
unsigned ecl_vector_width(uint32_t pref, unsigned lo)
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

    ecl_device_string(e->device, CL_DRIVER_VERSION, driver, sizeof(driver));
    ecl_platform_string(e->platform, CL_PLATFORM_VERSION, pversion, sizeof(pversion));
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
int ecl_build_program(struct engine_cl *e, int prec, const char *cache_dir, int *from_cache,
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
                 ECL_BLOCK, ecl_vector_width(e->pref_width[prec], prec == PREC_F64 ? 4 : 8),
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
                 ecl_error_name(rc));
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
                         ? ecl_vector_width(e->pref_width[prec], prec == PREC_F64 ? 4 : 8) *
                               (prec == PREC_F64 ? ECL_GROUPS_F64 : ECL_GROUPS_F32)
                         : 1;

done:
    if (program)
        clReleaseProgram(program);
    free(bin);
    free(log);
    return err;
}

