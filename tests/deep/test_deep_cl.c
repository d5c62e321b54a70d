/* test_deep_cl.c: the deep-zoom renderer on OpenCL devices (engine_cl_deep.h, fed by
 * deep_device.h) against the CPU deep engine (deep_render) on the fp64-mode views of
 * test_deep.c, sample by sample, and its cancellation. Every OpenCL device with fp64 is tested;
 * with none, every case is reported skipped with the reason.
 *   deep_cl_tests            every case
 *   deep_cl_tests FILTER     the cases whose name matches FILTER (a cmocka glob: "*julia*")
 * The OpenCL programs are compiled once for the run (render.cl's cached under deep_cl_cache/ in
 * the working directory; deep.cl at its first job). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "deep.h"
#include "deep_device.h"
#include "deep_points.h"
#include "engine_cl.h"
#include "engine_cl_deep.h"
#include "err.h"

/* The fraction of counts that must equal the CPU deep engine's. The kernel is the CPU loop
 * operation for operation without FMA, so in practice every count agrees; the bound is the
 * task's, not a tolerance the code needs. */
#define MATCH_MIN 0.999

#define SIDE 64u

/* The run's OpenCL engines, discovered once (group setup), and the ones with fp64. */
static engine_cl **engines;
static size_t nengines;
static engine_cl *fp64[8];
static size_t nfp64;
static char skip_reason[512];

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int group_setup(void **state)
{
    struct engine_cl_options opts = ENGINE_CL_OPTIONS_INIT;
    char msg[256] = "";

    (void)state;
    opts.cache_dir = "deep_cl_cache";
    if (engine_cl_discover(&engines, &nengines, &opts, msg, sizeof(msg)) < 0) {
        snprintf(skip_reason, sizeof(skip_reason), "OpenCL discovery failed: %.200s", msg);
        return 0;
    }
    for (size_t i = 0; i < nengines && nfp64 < sizeof(fp64) / sizeof(fp64[0]); i++) {
        const struct engine_cl_info *info = engine_cl_get_info(engines[i]);
        const char *why = engine_cl_failure(engines[i]);
        if (why)
            print_message("OpenCL device %s (%s): failed at discovery, not tested: %s\n",
                          info->name, info->platform, why);
        else if (!info->fp64)
            print_message("OpenCL device %s (%s): no fp64, not used for deep views\n",
                          info->name, info->platform);
        else if (engine_cl_deep_usable(engines[i]))
            fp64[nfp64++] = engines[i];
    }
    if (nfp64 == 0)
        snprintf(skip_reason, sizeof(skip_reason),
                 "no usable OpenCL device with fp64 (%.200s): deep device tests skipped",
                 msg[0] ? msg : "no device");
    else
        print_message("%s; %zu with fp64 under test\n", msg, nfp64);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < nengines; i++)
        engine_cl_deep_release(engines[i]);
    engine_cl_free_all(engines, nengines);
    return 0;
}

/* Skips the running case, saying why, when no device can run it. */
#define NEED_DEVICE()                                                                          \
    do {                                                                                       \
        if (nfp64 == 0) {                                                                      \
            print_message("SKIPPED: %s\n", skip_reason);                                       \
            skip();                                                                            \
        }                                                                                      \
    } while (0)

/* Samples the last device_render recomputed exactly (engine_cl_deep_stats.exact). */
static uint64_t last_exact;

static struct deep_view make_view(enum spec_fractal fractal, const char *re, const char *im,
                                  const char *width, uint32_t w, uint32_t h, uint32_t max_iter)
{
    struct deep_view v;
    double l2s, l2m;
    char msg[160];

    memset(&v, 0, sizeof(v));
    v.fractal = fractal;
    v.center_re = re;
    v.center_im = im;
    v.width = width;
    v.c_re = JULIA_C_RE;
    v.c_im = JULIA_C_IM;
    v.grid_w = w;
    v.grid_h = h;
    v.max_iter = max_iter;
    v.escape_radius = 2.0;
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), 0);
    v.mode = deep_mode_for(l2s);
    return v;
}

static size_t distinct_counts(const uint32_t *c, size_t n)
{
    size_t d = 0;

    for (size_t k = 0; k < n; k++) {
        size_t j = 0;
        while (j < k && c[j] != c[k])
            j++;
        d += j == k;
    }
    return d;
}

/*
 * Renders rect of v on engine e into counts/smooth (rect-sized), asserting success; returns
 * the launches taken.
 */
static uint32_t device_render(engine_cl *e, const deep_ref *ref, const struct deep_view *v,
                              const struct spec_rect *rect, uint32_t *counts, float *smooth,
                              const atomic_int *cancel, int *out_err)
{
    struct engine_cl_deep_job job;
    struct engine_cl_deep_stats st;
    char msg[512] = "";
    int err;

    assert_int_equal(deep_ref_device_job(&job, ref, v, rect, msg, sizeof(msg)), 0);
    err = engine_cl_deep_render(e, &job, counts, smooth, cancel, &st, msg, sizeof(msg));
    last_exact = st.exact;
    if (out_err) {
        *out_err = err;
        return st.launches;
    }
    if (err != 0)
        fail_msg("engine_cl_deep_render on %s: %s (%s)", engine_cl_get_info(e)->name,
                 err_name(err), msg);
    if (st.build_ms > 0)
        print_message("  (deep program built on %s in %.0f ms)\n", engine_cl_get_info(e)->name,
                      st.build_ms);
    return st.launches;
}

/*
 * One view on every fp64 device against deep_render: counts equal on >= MATCH_MIN of the
 * samples (printed), smooth values bit-identical wherever the counts are (the host computes
 * them with the CPU engine's function from the device's final z, which the same operations
 * make the CPU's), then a tile off the grid's origin against the same samples of the full CPU
 * image (the mapping of rect offsets). Julia's c is (c_re, c_im).
 */
static void check_view_c(const char *name, enum spec_fractal fractal, const char *re,
                         const char *im, double c_re, double c_im, const char *width,
                         uint32_t max_iter)
{
    struct deep_view v = make_view(fractal, re, im, width, SIDE, SIDE, max_iter);
    struct spec_rect all = {0, 0, SIDE, SIDE}, tile = {13, 29, 37, 21};
    const size_t n = (size_t)SIDE * SIDE;
    uint32_t *cpu, *dev;
    float *cpu_s, *dev_s;
    deep_ref *ref = NULL;
    char msg[160] = "";
    double t0, t_cpu;
    struct deep_stats cst;

    NEED_DEVICE();
    v.c_re = c_re;
    v.c_im = c_im;
    cpu = malloc(n * sizeof(uint32_t));
    dev = malloc(n * sizeof(uint32_t));
    cpu_s = malloc(n * sizeof(float));
    dev_s = malloc(n * sizeof(float));
    assert_non_null(cpu);
    assert_non_null(dev);
    assert_non_null(cpu_s);
    assert_non_null(dev_s);
    assert_int_equal(v.mode, DEEP_FP64);
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0)
        fail_msg("deep_ref_new: %s", msg);
    t0 = now_s();
    assert_int_equal(deep_render(ref, &v, &all, cpu, cpu_s, NULL, 2, &cst), 0);
    t_cpu = now_s() - t0;
    /* A view of one flat colour would prove little. */
    assert_true(distinct_counts(cpu, n) >= 20);

    for (size_t d = 0; d < nfp64; d++) {
        size_t equal = 0, smooth_equal = 0, smooth_differ = 0, tile_differ = 0;
        uint64_t dev_exact;
        uint32_t launches;
        double f, t_dev;

        t0 = now_s();
        launches = device_render(fp64[d], ref, &v, &all, dev, dev_s, NULL, NULL);
        t_dev = now_s() - t0;
        dev_exact = last_exact;
        for (size_t k = 0; k < n; k++) {
            if (dev[k] != cpu[k])
                continue;
            equal++;
            if (memcmp(&dev_s[k], &cpu_s[k], sizeof(float)) == 0)
                smooth_equal++;
            else
                smooth_differ++;
        }
        f = (double)equal / (double)n;
        /* The tile: its own rect, outputs rect-sized. */
        memset(dev, 0xff, n * sizeof(uint32_t));
        device_render(fp64[d], ref, &v, &tile, dev, dev_s, NULL, NULL);
        for (uint32_t y = 0; y < tile.height; y++)
            for (uint32_t x = 0; x < tile.width; x++) {
                size_t kt = (size_t)y * tile.width + x;
                size_t kf = (size_t)(tile.y + y) * SIDE + tile.x + x;
                tile_differ += dev[kt] != cpu[kf] ||
                               memcmp(&dev_s[kt], &cpu_s[kf], sizeof(float)) != 0;
            }
        print_message("%-22s %ux%u width %-6s on %s: %.4f of counts equal (%zu of %zu differ), "
                      "smooth bit-identical on %zu of %zu equal counts; tile %ux%u at %u,%u: "
                      "%zu samples differ; %u launches; exact recomputations device %llu, "
                      "CPU %llu; device %.3f s, CPU %.3f s\n",
                      name, SIDE, SIDE, width, engine_cl_get_info(fp64[d])->name, f, n - equal,
                      n, smooth_equal, equal, tile.width, tile.height, tile.x, tile.y,
                      tile_differ, launches, (unsigned long long)dev_exact,
                      (unsigned long long)cst.exact, t_dev, t_cpu);
        assert_true(f >= MATCH_MIN);
        assert_int_equal(smooth_differ, 0);
        /* The device flags the samples the CPU recomputes (the same bound, bit for bit). */
        assert_true(dev_exact == cst.exact);
        assert_true((double)tile_differ <= (1.0 - MATCH_MIN) * (double)(tile.width * tile.height));
    }
    deep_ref_unref(ref);
    free(cpu);
    free(dev);
    free(cpu_s);
    free(dev_s);
}

static void check_view(const char *name, enum spec_fractal fractal, const char *re,
                       const char *im, const char *width, uint32_t max_iter)
{
    check_view_c(name, fractal, re, im, JULIA_C_RE, JULIA_C_IM, width, max_iter);
}

static void test_mandel_spiral_1e20(void **state)
{
    (void)state;
    check_view("mandel_spiral_1e20", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-20", 2000);
}

static void test_mandel_spiral_1e60(void **state)
{
    (void)state;
    check_view("mandel_spiral_1e60", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", 2000);
}

static void test_mandel_spiral_1e200(void **state)
{
    (void)state;
    check_view("mandel_spiral_1e200", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-200", 3000);
}

static void test_mandel_minibrot_1e20(void **state)
{
    (void)state;
    check_view("mandel_minibrot_1e20", SPEC_MANDELBROT, MINI30_RE, MINI30_IM, "6e-20", 2000);
}

static void test_mandel_minibrot_1e60(void **state)
{
    (void)state;
    check_view("mandel_minibrot_1e60", SPEC_MANDELBROT, MINI79_RE, MINI79_IM, "1e-57", 2000);
}

static void test_mandel_minibrot_1e200(void **state)
{
    (void)state;
    check_view("mandel_minibrot_1e200", SPEC_MANDELBROT, MINI269_RE, MINI269_IM, "1e-200", 3000);
}

static void test_julia_1e20(void **state)
{
    (void)state;
    check_view("julia_1e20", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-20", 2000);
}

static void test_julia_1e60(void **state)
{
    (void)state;
    check_view("julia_1e60", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-60", 2000);
}

static void test_julia_1e200(void **state)
{
    (void)state;
    check_view("julia_1e200", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-200", 3000);
}

/* The default c = -0.8 + 0.156i: the device's kernel flags the samples whose deltas lost the
 * count (test_deep.c: 0.04-0.4 % of them), and the host recomputes them as deep_render does. */
static void test_julia_default_1e20(void **state)
{
    (void)state;
    check_view_c("julia_default_1e20", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                 JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-20", 3000);
}

static void test_julia_default_1e60(void **state)
{
    (void)state;
    check_view_c("julia_default_1e60", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                 JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-60", 3000);
}

static void test_julia_default_1e200(void **state)
{
    (void)state;
    check_view_c("julia_default_1e200", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                 JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-200", 4000);
}

/* A grid of more samples than one device band (2^20) renders in several bands whose rows join
 * up: counts and smooth values against deep_render on the full 1024x1040 frame. */
static void test_bands(void **state)
{
    const uint32_t w = 1024, h = 1040;
    struct deep_view v = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", w, h, 2000);
    struct spec_rect all = {0, 0, w, h};
    const size_t n = (size_t)w * h;
    uint32_t *cpu, *dev;
    float *cpu_s, *dev_s;
    deep_ref *ref = NULL;
    char msg[160] = "";

    (void)state;
    NEED_DEVICE();
    cpu = malloc(n * sizeof(uint32_t));
    dev = malloc(n * sizeof(uint32_t));
    cpu_s = malloc(n * sizeof(float));
    dev_s = malloc(n * sizeof(float));
    assert_true(cpu && dev && cpu_s && dev_s);
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0)
        fail_msg("deep_ref_new: %s", msg);
    assert_int_equal(deep_render(ref, &v, &all, cpu, cpu_s, NULL, 2, NULL), 0);
    for (size_t d = 0; d < nfp64; d++) {
        size_t equal = 0, smooth_differ = 0;
        uint32_t launches = device_render(fp64[d], ref, &v, &all, dev, dev_s, NULL, NULL);
        for (size_t k = 0; k < n; k++) {
            equal += dev[k] == cpu[k];
            smooth_differ += dev[k] == cpu[k] && memcmp(&dev_s[k], &cpu_s[k], sizeof(float));
        }
        print_message("bands %ux%u on %s: %.5f of counts equal (%zu of %zu differ), %zu smooth "
                      "values differ where counts agree; %u launches\n",
                      w, h, engine_cl_get_info(fp64[d])->name, (double)equal / (double)n,
                      n - equal, n, smooth_differ, launches);
        assert_true((double)equal / (double)n >= MATCH_MIN);
        assert_int_equal(smooth_differ, 0);
    }
    deep_ref_unref(ref);
    free(cpu);
    free(dev);
    free(cpu_s);
    free(dev_s);
}

/* ---- the orbits kept on the device ---- */

/*
 * Renders v in four bands on e with job.orbit_id `id` into counts (the whole grid); returns
 * the bytes uploaded per band in up[0..3] and the bytes of the reference's orbits and BLA tables
 * (what a band that uploads sends at least).
 */
static uint64_t render_bands(engine_cl *e, const deep_ref *ref, const struct deep_view *v,
                             uint64_t id, uint32_t *counts, uint64_t up[4])
{
    uint64_t orbits = 0;
    const uint32_t rows = v->grid_h / 4;
    struct engine_cl_deep_job job;
    struct engine_cl_deep_stats st;
    char msg[512] = "";

    for (uint32_t b = 0; b < 4; b++) {
        struct spec_rect band = {0, b * rows, v->grid_w, b == 3 ? v->grid_h - 3 * rows : rows};
        int err;
        assert_int_equal(deep_ref_device_job(&job, ref, v, &band, msg, sizeof(msg)), 0);
        job.orbit_id = id;
        err = engine_cl_deep_render(e, &job, counts + (size_t)band.y * v->grid_w, NULL, NULL, &st,
                                    msg, sizeof(msg));
        if (err != 0)
            fail_msg("engine_cl_deep_render on %s: %s (%s)", engine_cl_get_info(e)->name,
                     err_name(err), msg);
        up[b] = st.upload_bytes;
    }
    for (int o = 0; o < job.norbits; o++)
        orbits += (uint64_t)job.orbit[o].len * 2 * sizeof(double) +
                  job.orbit[o].bla_entries * ENGINE_CL_DEEP_BLA_DOUBLES * sizeof(double);
    return orbits;
}

/* The fraction of n counts that agree. */
static double agree(const uint32_t *a, const uint32_t *b, size_t n)
{
    size_t equal = 0;

    for (size_t k = 0; k < n; k++)
        equal += a[k] == b[k];
    return (double)equal / (double)n;
}

/*
 * The bands of one reference upload its orbits once (orbit_id), and what the device keeps is
 * never taken for another reference's: a second view (a Julia set: two orbits), the first again
 * (only one is kept), orbit_id 0 (every band), and a reference built anew for the first view
 * (a new serial, whether or not it got the freed one's address) each upload and still give the
 * CPU's counts.
 */
static void test_orbit_kept(void **state)
{
    const size_t n = (size_t)SIDE * SIDE;
    struct deep_view va = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", SIDE, SIDE,
                                    20000);
    struct deep_view vb = make_view(SPEC_JULIA, SPIRAL_RE, SPIRAL_IM, "1e-20", SIDE, SIDE, 2000);
    struct spec_rect all = {0, 0, SIDE, SIDE};
    uint32_t *cpu_a = malloc(n * sizeof(uint32_t)), *cpu_b = malloc(n * sizeof(uint32_t));
    uint32_t *dev = malloc(n * sizeof(uint32_t));
    deep_ref *a = NULL, *b = NULL;
    uint64_t up[4], serial_a, bytes;
    char msg[160] = "";

    (void)state;
    NEED_DEVICE();
    assert_true(cpu_a && cpu_b && dev);
    if (deep_ref_new(&a, &va, NULL, msg, sizeof(msg)) != 0 ||
        deep_ref_new(&b, &vb, NULL, msg, sizeof(msg)) != 0)
        fail_msg("deep_ref_new: %s", msg);
    assert_true(deep_ref_serial(a) != 0 && deep_ref_serial(b) != deep_ref_serial(a));
    assert_int_equal(deep_render(a, &va, &all, cpu_a, NULL, NULL, 2, NULL), 0);
    assert_int_equal(deep_render(b, &vb, &all, cpu_b, NULL, NULL, 2, NULL), 0);
    for (size_t d = 0; d < nfp64; d++) {
        engine_cl *e = fp64[d];

        bytes = render_bands(e, a, &va, deep_ref_serial(a), dev, up);
        print_message("orbit kept on %s: bands upload %llu, %llu, %llu, %llu bytes\n",
                      engine_cl_get_info(e)->name, (unsigned long long)up[0],
                      (unsigned long long)up[1], (unsigned long long)up[2],
                      (unsigned long long)up[3]);
        /* The first band may find the orbits of an earlier case's call (a serial of its own):
         * it uploads; the three others find them. */
        assert_true(up[0] >= bytes && bytes > 0);
        assert_true(up[1] == 0 && up[2] == 0 && up[3] == 0);
        assert_true(agree(dev, cpu_a, n) >= MATCH_MIN);

        bytes = render_bands(e, b, &vb, deep_ref_serial(b), dev, up);
        assert_true(up[0] >= bytes && bytes > 0 && up[1] == 0);
        assert_true(agree(dev, cpu_b, n) >= MATCH_MIN);

        bytes = render_bands(e, a, &va, deep_ref_serial(a), dev, up);
        assert_true(up[0] >= bytes && up[1] == 0);
        assert_true(agree(dev, cpu_a, n) >= MATCH_MIN);

        bytes = render_bands(e, b, &vb, 0, dev, up);
        assert_true(up[0] >= bytes && up[1] == up[0] && up[3] == up[0]);
        assert_true(agree(dev, cpu_b, n) >= MATCH_MIN);
    }
    /* A reference built anew at possibly the same address: the serial tells them apart. Built
     * for the first view while the device holds the first view's orbits under the old serial. */
    for (size_t d = 0; d < nfp64; d++)
        (void)render_bands(fp64[d], a, &va, deep_ref_serial(a), dev, up);
    serial_a = deep_ref_serial(a);
    deep_ref_unref(a);
    a = NULL;
    if (deep_ref_new(&a, &va, NULL, msg, sizeof(msg)) != 0)
        fail_msg("deep_ref_new: %s", msg);
    assert_true(deep_ref_serial(a) != serial_a);
    for (size_t d = 0; d < nfp64; d++) {
        bytes = render_bands(fp64[d], a, &va, deep_ref_serial(a), dev, up);
        assert_true(up[0] >= bytes && up[1] == 0);
        assert_true(agree(dev, cpu_a, n) >= MATCH_MIN);
    }
    deep_ref_unref(a);
    deep_ref_unref(b);
    free(cpu_a);
    free(cpu_b);
    free(dev);
}

/* ---- cancellation ---- */

struct raiser {
    atomic_int *flag;
    unsigned delay_ms;
    double raised_at;
};

static void *raise_later(void *arg)
{
    struct raiser *r = arg;

    usleep(r->delay_ms * 1000u);
    r->raised_at = now_s();
    atomic_store(r->flag, 1);
    return NULL;
}

/* A render of many seconds (512x512 samples on the P=63 minibrot of bench_deep at 1e-46,
 * max_iter 10^5: ~3/4 of the samples are interior and each costs thousands of turns even with
 * BLA; ~10 s on PoCL with two cores) returns ERR_CANCELLED within 250 ms of the flag on every
 * device; raised before the call, nothing runs. */
static void test_cancel(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, MINI63_RE, MINI63_IM, "1e-46", 512, 512,
                                   100000);
    struct spec_rect all = {0, 0, 512, 512};
    uint32_t *counts;
    deep_ref *ref = NULL;
    char msg[160] = "";

    (void)state;
    NEED_DEVICE();
    counts = malloc((size_t)512 * 512 * sizeof(uint32_t));
    assert_non_null(counts);
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0)
        fail_msg("deep_ref_new: %s", msg);
    for (size_t d = 0; d < nfp64; d++) {
        atomic_int flag;
        struct raiser r = {&flag, 150, 0};
        pthread_t th;
        uint32_t launches;
        double lag;
        int err;

        atomic_init(&flag, 0);
        assert_int_equal(pthread_create(&th, NULL, raise_later, &r), 0);
        launches = device_render(fp64[d], ref, &v, &all, counts, NULL, &flag, &err);
        lag = now_s() - r.raised_at;
        pthread_join(th, NULL);
        print_message("%s: engine_cl_deep_render returned %s %.1f ms after the flag (%u "
                      "launches)\n",
                      engine_cl_get_info(fp64[d])->name, err_name(err), lag * 1e3, launches);
        assert_int_equal(err, ERR_CANCELLED);
        assert_true(lag < 0.25);
        device_render(fp64[d], ref, &v, &all, counts, NULL, &flag, &err);
        assert_int_equal(err, ERR_CANCELLED);
        /* The engine is not failed by a cancel. */
        assert_true(engine_cl_deep_usable(fp64[d]));
    }
    deep_ref_unref(ref);
    free(counts);
}

/* ---- the API's checks ---- */

/* An extended-mode reference has no device job; a rect outside the grid and a job the engine
 * cannot run are refused with their codes, and leave the engine usable. */
static void test_refusals(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-400", SIDE, SIDE,
                                   500);
    struct deep_view v64 = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", SIDE, SIDE,
                                     500);
    struct spec_rect all = {0, 0, SIDE, SIDE}, outside = {60, 0, 5, 1};
    struct engine_cl_deep_job job;
    uint32_t counts[SIDE * SIDE];
    deep_ref *ref = NULL;
    char msg[160] = "";

    (void)state;
    assert_int_equal(v.mode, DEEP_EXTENDED);
    assert_int_equal(deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(deep_ref_device_job(&job, ref, &v, &all, msg, sizeof(msg)), ERR_PRECONDITION);
    print_message("extended view: %s\n", msg);
    deep_ref_unref(ref);
    ref = NULL;
    assert_int_equal(deep_ref_new(&ref, &v64, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(deep_ref_device_job(&job, ref, &v64, &outside, msg, sizeof(msg)),
                     ERR_INVALID);
    assert_int_equal(deep_ref_device_job(&job, ref, &v, &all, msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(deep_ref_device_job(&job, ref, &v64, &all, msg, sizeof(msg)), 0);
    NEED_DEVICE();
    job.max_iter = 0;
    assert_int_equal(engine_cl_deep_render(fp64[0], &job, counts, NULL, NULL, NULL, msg,
                                           sizeof(msg)),
                     ERR_INVALID);
    print_message("max_iter 0: %s\n", msg);
    job.max_iter = 500;
    job.rect = outside;
    assert_int_equal(engine_cl_deep_render(fp64[0], &job, counts, NULL, NULL, NULL, msg,
                                           sizeof(msg)),
                     ERR_INVALID);
    assert_true(engine_cl_deep_usable(fp64[0]));
    deep_ref_unref(ref);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mandel_spiral_1e20),
        cmocka_unit_test(test_mandel_spiral_1e60),
        cmocka_unit_test(test_mandel_spiral_1e200),
        cmocka_unit_test(test_mandel_minibrot_1e20),
        cmocka_unit_test(test_mandel_minibrot_1e60),
        cmocka_unit_test(test_mandel_minibrot_1e200),
        cmocka_unit_test(test_julia_1e20),
        cmocka_unit_test(test_julia_1e60),
        cmocka_unit_test(test_julia_1e200),
        cmocka_unit_test(test_julia_default_1e20),
        cmocka_unit_test(test_julia_default_1e60),
        cmocka_unit_test(test_julia_default_1e200),
        cmocka_unit_test(test_bands),
        cmocka_unit_test(test_orbit_kept),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_refusals),
    };

    int failed;

    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    failed = cmocka_run_group_tests_name("deep_cl", tests, group_setup, group_teardown);
    /* No device: ctest reports the run as skipped (SKIP_RETURN_CODE), not passed. */
    if (failed == 0 && nfp64 == 0) {
        printf("deep_cl_tests: SKIPPED: %s\n", skip_reason);
        return 77;
    }
    return failed;
}
