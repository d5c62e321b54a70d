/* test_engine_cl.c: the OpenCL engine on every device found (PoCL here) against the CPU engine,
 * sample by sample, for each kernel variant; the interior shortcuts against brute force;
 * cancellation, launch splitting, device errors, discovery without any ICD, and the program
 * binary cache. Skips when no device exists. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "engine_cl.h"
#include "engine_cpu.h"
#include "err.h"
#include "escape.h"
#include "smooth.h"
#include "spec_helpers.h"

extern char **environ;

/* Set in a child process this file starts (see run_child): names the test that child runs. */
#define CHILD_ENV "FRACTALD_TEST_ENGINE_CL_CHILD"

/* The tolerance vs the CPU engine, stated once. Escape counts: equal on every sample (the
 * kernels do escape.h's arithmetic in its order, without FMA); MIN_EXACT leaves room for a
 * device that flushes fp32 subnormals, which can change an orbit that passes near 0. Smooth
 * values of samples with equal counts: bit-identical (the device returns the final z and the
 * host computes the smooth value with smooth.h's pass, as the CPU engine does). */
#define MIN_EXACT 0.9999

#define NVARIANTS 3
static const enum engine_cl_variant variants[NVARIANTS] = {ENGINE_CL_VECTOR, ENGINE_CL_SCALAR,
                                                           ENGINE_CL_NAIVE};
static const char *const variant_names[] = {"auto", "vector", "scalar", "naive"};

struct fixture {
    engine_cpu *cpu;
    engine_cl **engines[NVARIANTS];
    size_t count[NVARIANTS];
    /* The same variants built without the interior shortcuts (NAIVE never has them). */
    engine_cl **brute[NVARIANTS];
    size_t nbrute[NVARIANTS];
    char cache_dir[64];
    /* The lowest fraction of exact counts over every comparison, printed at the end. */
    double worst_exact;
};

static struct fixture fx;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *ent;
    char path[512];

    if (d == NULL)
        return -1;
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        if (remove(path) != 0)
            remove_tree(path);
    }
    closedir(d);
    return rmdir(dir);
}

static int setup(void **state)
{
    struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
    char msg[256];

    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.worst_exact = 1.0;
    /* A child started by run_child runs one test that does its own discovery: the fixture
     * would start the ICD loader (and warm PoCL's kernel cache) before it. */
    if (getenv(CHILD_ENV))
        return 0;
    snprintf(fx.cache_dir, sizeof(fx.cache_dir), "/tmp/fractald-cl-test-XXXXXX");
    if (mkdtemp(fx.cache_dir) == NULL)
        return -1;
    if (engine_cpu_new(&fx.cpu, 0) < 0)
        return -1;
    o.cache_dir = fx.cache_dir;
    for (int v = 0; v < NVARIANTS; v++) {
        o.variant = variants[v];
        o.brute_force = false;
        if (engine_cl_discover(&fx.engines[v], &fx.count[v], &o, msg, sizeof(msg)) < 0)
            return -1;
        if (v == 0)
            print_message("engine_cl: %s\n", msg);
        o.brute_force = true;
        if (variants[v] != ENGINE_CL_NAIVE &&
            engine_cl_discover(&fx.brute[v], &fx.nbrute[v], &o, msg, sizeof(msg)) < 0)
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int v = 0; v < NVARIANTS; v++) {
        engine_cl_free_all(fx.engines[v], fx.count[v]);
        engine_cl_free_all(fx.brute[v], fx.nbrute[v]);
    }
    engine_cpu_free(fx.cpu);
    if (fx.cache_dir[0])
        remove_tree(fx.cache_dir);
    if (fx.count[0] > 0)
        print_message("engine_cl: lowest fraction of exact counts over the group: %.6f\n",
                      fx.worst_exact);
    return 0;
}

/* The usable engines of one variant; skips the test (with a message) when there is none. */
static size_t usable(int v, engine_cl **out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < fx.count[v] && n < max; i++)
        if (engine_cl_failure(fx.engines[v][i]) == NULL)
            out[n++] = fx.engines[v][i];
    if (n == 0) {
        print_message("engine_cl: no usable OpenCL device, skipped\n");
        skip();
    }
    return n;
}

/* usable() for the engines built without shortcuts; list[i] is on the device of usable()'s.
 * NAIVE has none: its own engines are brute force. */
static size_t usable_brute(int v, engine_cl **out, size_t max)
{
    size_t n = 0;

    if (variants[v] == ENGINE_CL_NAIVE)
        return usable(v, out, max);
    for (size_t i = 0; i < fx.nbrute[v] && n < max; i++)
        if (engine_cl_failure(fx.brute[v][i]) == NULL)
            out[n++] = fx.brute[v][i];
    if (n == 0) {
        print_message("engine_cl: no usable OpenCL device, skipped\n");
        skip();
    }
    return n;
}

/* Renders r on a device and on the CPU engine and compares them sample by sample within the
 * stated tolerance; also checks the iteration total against the device's own counts. */
static void check_rect(engine_cl *e, const struct render_spec *s, const struct spec_rect *r)
{
    size_t n = (size_t)r->width * r->height, exact = 0;
    uint32_t *c_dev = malloc(n * sizeof(uint32_t)), *c_cpu = malloc(n * sizeof(uint32_t));
    float *s_dev = malloc(n * sizeof(float)), *s_cpu = malloc(n * sizeof(float));
    struct engine_cpu_stats st;
    uint64_t sum = 0;
    double frac;
    char msg[256];
    int rc;

    assert_non_null(c_dev);
    assert_non_null(c_cpu);
    assert_non_null(s_dev);
    assert_non_null(s_cpu);
    memset(c_dev, 0xee, n * sizeof(uint32_t));
    memset(s_dev, 0xee, n * sizeof(float));
    rc = engine_cl_render(e, s, r, c_dev, s_dev, NULL, &st, msg, sizeof(msg));
    if (rc != 0)
        fail_msg("engine_cl_render: %s: %s", err_name(rc), msg);
    assert_int_equal(engine_cpu_render(fx.cpu, s, r, c_cpu, s_cpu, NULL, NULL), 0);
    for (size_t k = 0; k < n; k++) {
        sum += c_dev[k];
        if (c_dev[k] != c_cpu[k])
            continue;
        exact++;
        if (memcmp(&s_dev[k], &s_cpu[k], sizeof(float)) != 0)
            fail_msg("%s %s sample (%u, %u): n=%u, smooth %.9g on the device, %.9g on the CPU",
                     variant_names[engine_cl_get_info(e)->variant],
                     s->precision == SPEC_FP32 ? "fp32" : "fp64", r->x + (uint32_t)(k % r->width),
                     r->y + (uint32_t)(k / r->width), c_dev[k], (double)s_dev[k],
                     (double)s_cpu[k]);
    }
    frac = (double)exact / (double)n;
    if (frac < MIN_EXACT) {
        size_t k = 0;
        while (c_dev[k] == c_cpu[k])
            k++;
        fail_msg("%s %s: only %zu of %zu counts equal the CPU engine's; first at (%u, %u): %u "
                 "vs %u",
                 variant_names[engine_cl_get_info(e)->variant],
                 s->precision == SPEC_FP32 ? "fp32" : "fp64", exact, n,
                 r->x + (uint32_t)(k % r->width), r->y + (uint32_t)(k / r->width), c_dev[k],
                 c_cpu[k]);
    }
    if (frac < fx.worst_exact)
        fx.worst_exact = frac;
    assert_true(st.iterations == sum);
    assert_true(st.tiles >= 1);
    free(c_dev);
    free(c_cpu);
    free(s_dev);
    free(s_cpu);
}

/* check_rect on every usable engine of every variant, in the spec's precision (fp64 only on
 * devices with fp64). */
static void check_all(const struct render_spec *s, const struct spec_rect *r)
{
    for (int v = 0; v < NVARIANTS; v++) {
        engine_cl *list[8];
        size_t n = usable(v, list, 8);
        for (size_t i = 0; i < n; i++)
            if (s->precision == SPEC_FP32 || engine_cl_get_info(list[i])->fp64)
                check_rect(list[i], s, r);
    }
}

static void check_both(struct render_spec s)
{
    struct spec_rect r = grid_of(&s);

    s.precision = SPEC_FP32;
    check_all(&s, &r);
    s.precision = SPEC_FP64;
    check_all(&s, &r);
}

static void test_discover(void **state)
{
    engine_cl *list[8];
    size_t n;

    (void)state;
    n = usable(0, list, 8);
    for (size_t i = 0; i < n; i++) {
        const struct engine_cl_info *info = engine_cl_get_info(list[i]);
        struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
        engine_cl **autos = NULL;
        size_t nauto = 0;
        char msg[256];

        print_message("engine_cl: %s (%s, %s), %u compute units, fp64 %s, prepared in %.0f ms%s\n",
                      info->name, info->vendor, info->platform, info->compute_units,
                      info->fp64 ? "yes" : "no", info->build_ms,
                      info->from_cache ? " from the cache" : "");
        assert_true(info->name[0] != '\0');
        assert_true(info->platform[0] != '\0');
        assert_true(info->type >= 1 && info->type <= 3);
        assert_true(info->compute_units >= 1);
        assert_true(info->memory_bytes > 0);
        assert_int_equal(info->variant, ENGINE_CL_VECTOR);
        /* AUTO: vector kernels for CPU-type devices, scalar ones for the rest. */
        o.cache_dir = fx.cache_dir;
        assert_int_equal(engine_cl_discover(&autos, &nauto, &o, msg, sizeof(msg)), 0);
        assert_int_equal(nauto, fx.count[0]);
        for (size_t k = 0; k < nauto; k++) {
            const struct engine_cl_info *a = engine_cl_get_info(autos[k]);
            assert_int_equal(a->variant, a->type == 1 ? ENGINE_CL_VECTOR : ENGINE_CL_SCALAR);
            /* Same programs, same options: this discovery loaded them from the cache. */
            assert_true(engine_cl_failure(autos[k]) != NULL || a->from_cache);
        }
        engine_cl_free_all(autos, nauto);
    }
}

/* Workload A of bench/README.md at 240x135 (the same view). */
static void test_workload_a(void **state)
{
    (void)state;
    check_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 240, 135, 1000, 2.0, SPEC_FP32, 1));
}

/* Workload C at 240x135: mostly interior, max_iter 10000. */
static void test_workload_c(void **state)
{
    (void)state;
    check_both(make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 240, 135, 10000, 2.0, SPEC_FP32, 1));
}

/* Workload B's deep view, smaller still (its orbits are long). */
static void test_workload_b(void **state)
{
    (void)state;
    check_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0.17304, 0.23854, 0.0005, 96, 54, 10000, 2.0,
                         SPEC_FP32, 1));
}

static void test_mandelbrot(void **state)
{
    (void)state;
    check_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 200, 150, 500, 2.0, SPEC_FP32, 1));
    /* A view reaching |c| > 2: orbits may come back inside R, so the careful blocks run. */
    check_both(make_spec(SPEC_MANDELBROT, 0, 0, 0, 0, 6.0, 120, 90, 300, 2.0, SPEC_FP32, 1));
    check_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.743643887, 0.131825904, 0.0002, 100, 80, 3000,
                         2.0, SPEC_FP32, 1));
}

/* Julia sets whose c or radius make escaped orbits able to return (careful blocks), a large R
 * and a radius below 1. */
static void test_radius_and_c(void **state)
{
    (void)state;
    check_both(make_spec(SPEC_JULIA, -2.1, 0.1, 0, 0, 4.0, 101, 67, 200, 2.0, SPEC_FP32, 1));
    check_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 97, 61, 400, 1000.0, SPEC_FP32, 1));
    check_both(make_spec(SPEC_JULIA, 0.285, 0.01, 0, 0, 3.0, 90, 50, 300, 0.9, SPEC_FP32, 1));
}

/* Sub-rectangles (tiles) of one image, including single rows, columns and samples. */
static void test_regions(void **state)
{
    struct render_spec s =
        make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 300, 200, 700, 2.0, SPEC_FP32, 1);
    const struct spec_rect rects[] = {
        {0, 0, 300, 200}, {37, 21, 101, 77}, {299, 199, 1, 1}, {0, 100, 300, 1},
        {150, 0, 1, 200}, {250, 150, 50, 50}, {13, 7, 3, 190},
    };

    (void)state;
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        s.precision = (enum spec_precision)p;
        for (size_t i = 0; i < sizeof(rects) / sizeof(rects[0]); i++)
            check_all(&s, &rects[i]);
    }
}

/* A supersampled grid (3x3 samples per pixel), whole and as a tile in sample coordinates. */
static void test_supersample(void **state)
{
    struct render_spec s =
        make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 90, 50, 500, 2.0, SPEC_FP32, 3);
    struct spec_rect tile = {31, 17, 100, 61};

    (void)state;
    check_both(s);
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        s.precision = (enum spec_precision)p;
        check_all(&s, &tile);
    }
}

static void test_odd_sizes(void **state)
{
    const uint32_t sizes[][2] = {{1, 1}, {7, 3}, {333, 1}, {1, 257}, {61, 59}};

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0.1, -0.05, 2.5, sizes[i][0], sizes[i][1],
                             600, 2.0, SPEC_FP32, 1));
    check_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 64, 36, 1, 2.0, SPEC_FP32, 1));
}

/* counts alone, smooth alone: the same values as with both. */
static void test_null_outputs(void **state)
{
    struct render_spec s =
        make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 80, 45, 300, 2.0, SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t c1[80 * 45], c2[80 * 45];
    float s1[80 * 45], s2[80 * 45];
    struct engine_cpu_stats a, b;
    engine_cl *list[8];
    size_t n;
    char msg[256];

    (void)state;
    n = usable(0, list, 8);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(engine_cl_render(list[i], &s, &r, c1, s1, NULL, &a, msg, sizeof(msg)), 0);
        assert_int_equal(engine_cl_render(list[i], &s, &r, c2, NULL, NULL, &b, msg, sizeof(msg)), 0);
        assert_memory_equal(c1, c2, sizeof(c1));
        assert_true(a.iterations == b.iterations);
        assert_int_equal(engine_cl_render(list[i], &s, &r, NULL, s2, NULL, &b, msg, sizeof(msg)), 0);
        assert_memory_equal(s1, s2, sizeof(s1));
        assert_true(a.iterations == b.iterations);
    }
}

/* The brute-force reference of escape.h for rectangle r of the spec: counts and smooth values. */
static void reference(const struct render_spec *s, const struct spec_rect *r, uint32_t *counts,
                      float *smooth)
{
    uint32_t gw = s->width * s->supersample, gh = s->height * s->supersample;

    if (s->precision == SPEC_FP32) {
        esc_view_f32 v;
        struct smooth_f32 sm;
        esc_view_init_f32(&v, (int)s->fractal, (float)s->c_re, (float)s->c_im,
                          (float)s->center_re, (float)s->center_im, (float)s->view_width, gw, gh,
                          (float)s->escape_radius, s->max_iter);
        smooth_init_f32(&sm, &v);
        for (uint32_t j = 0; j < r->height; j++)
            for (uint32_t i = 0; i < r->width; i++) {
                size_t k = (size_t)j * r->width + i;
                float zr, zi;
                counts[k] = esc_sample_f32(&v, r->x + i, r->y + j, &zr, &zi);
                smooth[k] = smooth_sample_f32(&sm, r->x + i, r->y + j, counts[k], zr, zi);
            }
    } else {
        esc_view_f64 v;
        struct smooth_f64 sm;
        esc_view_init_f64(&v, (int)s->fractal, s->c_re, s->c_im, s->center_re, s->center_im,
                          s->view_width, gw, gh, s->escape_radius, s->max_iter);
        smooth_init_f64(&sm, &v);
        for (uint32_t j = 0; j < r->height; j++)
            for (uint32_t i = 0; i < r->width; i++) {
                size_t k = (size_t)j * r->width + i;
                double zr, zi;
                counts[k] = esc_sample_f64(&v, r->x + i, r->y + j, &zr, &zi);
                smooth[k] = smooth_sample_f64(&sm, r->x + i, r->y + j, counts[k], zr, zi);
            }
    }
}

/* The shortcut engines (VECTOR, SCALAR) against brute force, sample by sample: equal to the
 * same kernel built without the shortcuts on the same device, count and smooth value, on every
 * sample; and to escape.h's scalar reference within MIN_EXACT. Returns the samples the
 * reference found interior, so a caller can check its view stresses what it means to. */
static size_t check_shortcuts(const struct render_spec *s, const struct spec_rect *r)
{
    size_t n = (size_t)r->width * r->height, interior = 0;
    uint32_t *c_ref = malloc(n * sizeof(uint32_t)), *c_bf = malloc(n * sizeof(uint32_t));
    uint32_t *c_sc = malloc(n * sizeof(uint32_t));
    float *s_ref = malloc(n * sizeof(float)), *s_bf = malloc(n * sizeof(float));
    float *s_sc = malloc(n * sizeof(float));
    char msg[256];

    assert_non_null(c_ref);
    assert_non_null(c_bf);
    assert_non_null(c_sc);
    assert_non_null(s_ref);
    assert_non_null(s_bf);
    assert_non_null(s_sc);
    reference(s, r, c_ref, s_ref);
    for (size_t k = 0; k < n; k++)
        interior += c_ref[k] == s->max_iter;
    for (int v = 0; v < 2; v++) {
        engine_cl *sc[8], *bf[8];
        size_t ns = usable(v, sc, 8), nb = usable_brute(v, bf, 8);

        assert_int_equal(ns, nb);
        for (size_t i = 0; i < ns; i++) {
            size_t exact = 0;
            int rc;

            if (s->precision == SPEC_FP64 && !engine_cl_get_info(sc[i])->fp64)
                continue;
            assert_true(engine_cl_get_info(sc[i])->shortcuts);
            assert_false(engine_cl_get_info(bf[i])->shortcuts);
            memset(c_sc, 0xee, n * sizeof(uint32_t));
            memset(s_sc, 0xee, n * sizeof(float));
            if ((rc = engine_cl_render(sc[i], s, r, c_sc, s_sc, NULL, NULL, msg, sizeof(msg))) ||
                (rc = engine_cl_render(bf[i], s, r, c_bf, s_bf, NULL, NULL, msg, sizeof(msg))))
                fail_msg("engine_cl_render: %s: %s", err_name(rc), msg);
            for (size_t k = 0; k < n; k++) {
                if (c_sc[k] != c_bf[k] || memcmp(&s_sc[k], &s_bf[k], sizeof(float)) != 0)
                    fail_msg("%s %s shortcuts, sample (%u, %u): n=%u smooth %.9g, brute force "
                             "n=%u smooth %.9g (reference n=%u)",
                             variant_names[variants[v]],
                             s->precision == SPEC_FP32 ? "fp32" : "fp64",
                             r->x + (uint32_t)(k % r->width), r->y + (uint32_t)(k / r->width),
                             c_sc[k], (double)s_sc[k], c_bf[k], (double)s_bf[k], c_ref[k]);
                exact += c_sc[k] == c_ref[k] &&
                         memcmp(&s_sc[k], &s_ref[k], sizeof(float)) == 0;
            }
            if ((double)exact / (double)n < MIN_EXACT)
                fail_msg("%s %s: only %zu of %zu samples equal escape.h's",
                         variant_names[variants[v]], s->precision == SPEC_FP32 ? "fp32" : "fp64",
                         exact, n);
        }
    }
    free(c_ref);
    free(c_bf);
    free(c_sc);
    free(s_ref);
    free(s_bf);
    free(s_sc);
    return interior;
}

/* check_shortcuts in both precisions. Unless `outside` (a Julia c outside the Mandelbrot set:
 * no interior at all), the view must hold interior and escaping samples both (it straddles a
 * boundary), in each precision. */
static void check_shortcuts_both(struct render_spec s, bool outside)
{
    struct spec_rect r = grid_of(&s);
    size_t n = (size_t)r.width * r.height;

    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        size_t interior;

        s.precision = (enum spec_precision)p;
        interior = check_shortcuts(&s, &r);
        if (outside ? interior != 0 : interior == 0 || interior == n)
            fail_msg("view c=%.9g%+.9gi centre %.9g%+.9gi width %g, %s: %zu of %zu samples "
                     "interior",
                     s.c_re, s.c_im, s.center_re, s.center_im, s.view_width,
                     p == SPEC_FP32 ? "fp32" : "fp64", interior, n);
    }
}

/* Boundary point of the main cardioid (t = 0: the cusp) and of the period-2 bulb. */
static void cardioid_point(double t, double *re, double *im)
{
    *re = 0.5 * cos(t) - 0.25 * cos(2 * t);
    *im = 0.5 * sin(t) - 0.25 * sin(2 * t);
}

/* The Mandelbrot main-component test and cycle detection on views that stress them: across the
 * cusp (0.25) and the bulb's root (-0.75), where convergence slows without bound and the test
 * must decline (an odd height puts a row on the real axis, where the thin outside of the cusp
 * lies; an odd width a column on -0.75 + iy, the axis of the seahorse valley); c just inside
 * and just outside the cardioid and the bulb (tiny views across their boundary); thin
 * filaments and a period-3 minibrot on the antenna. */
static void test_shortcuts_mandelbrot(void **state)
{
    double re, im;

    (void)state;
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, 0.25, 0, 0.02, 64, 40, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, 0.25, 0, 2e-5, 48, 33, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.75, 0, 0.01, 65, 41, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.75, 0.002, 1e-4, 48, 32, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    cardioid_point(1.0, &re, &im);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, re, im, 1e-4, 48, 32, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    cardioid_point(2.5, &re, &im);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, re, im, 1e-3, 48, 32, 20000, 2.0,
                                   SPEC_FP32, 1), false);
    /* The bulb's boundary, -1 + e^{it} / 4, at t = 1. */
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -1 + 0.25 * cos(1.0), 0.25 * sin(1.0),
                                   1e-4, 48, 32, 20000, 2.0, SPEC_FP32, 1), false);
    /* The antenna: filaments and the period-3 minibrot at -1.7549. */
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -1.76, 0, 0.03, 64, 40, 5000, 2.0,
                                   SPEC_FP32, 1), false);
    /* Seahorse valley filaments, and the whole set, with R = 2 and a larger R. */
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.7436, 0.1318, 0.003, 64, 40, 5000,
                                   2.0, SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 96, 64, 5000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 64, 40, 3000, 50.0,
                                   SPEC_FP32, 1), false);
    /* R < 2: orbits inside the cardioid do escape, so the test must stay off. */
    check_shortcuts_both(make_spec(SPEC_MANDELBROT, 0, 0, -0.2, 0, 1.0, 64, 40, 3000, 0.45,
                                   SPEC_FP32, 1), false);
}

/* Cycle detection on Julia sets: workload C's rabbit (period 3), c just inside and just outside
 * the cardioid near the cusp (slow, parabolic-like convergence, where fp32 rounding makes the
 * cycles), a Siegel-disc-like c on the cardioid boundary, workload A's c (outside the set: no
 * interior, long escapes) and an escaped orbit able to come back inside R (careful blocks). */
static void test_shortcuts_julia(void **state)
{
    double re, im;

    (void)state;
    check_shortcuts_both(make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 96, 54, 10000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_JULIA, 0.2499, 0, 0, 0, 3.0, 64, 40, 10000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_JULIA, 0.2501, 0, 0.5, 0, 0.01, 64, 40, 10000, 2.0,
                                   SPEC_FP32, 1), true);
    cardioid_point(2 * 3.14159265358979 * 0.6180339887, &re, &im);
    check_shortcuts_both(make_spec(SPEC_JULIA, re, im, 0, 0, 3.0, 64, 40, 10000, 2.0,
                                   SPEC_FP32, 1), false);
    check_shortcuts_both(make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 64, 40, 3000, 2.0,
                                   SPEC_FP32, 1), true);
    check_shortcuts_both(make_spec(SPEC_JULIA, -1.0, 0.05, 0, 0, 3.0, 64, 40, 10000, 1.1,
                                   SPEC_FP32, 1), false);
}

/* The shortcuts' state across launches: with max_launch_ms = 1 a render of long orbits is cut
 * into many launches, and still equals brute force sample by sample. */
static void test_shortcuts_launches(void **state)
{
    struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
    struct render_spec s = make_spec(SPEC_MANDELBROT, 0, 0, -0.75, 0.05, 0.2, 96, 64, 200000, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    size_t n = (size_t)r.width * r.height;
    uint32_t *c1 = malloc(n * sizeof(uint32_t)), *c2 = malloc(n * sizeof(uint32_t));
    char msg[256];

    (void)state;
    assert_non_null(c1);
    assert_non_null(c2);
    usable(0, (engine_cl *[8]){0}, 8);
    o.cache_dir = fx.cache_dir;
    o.max_launch_ms = 1;
    for (int v = 0; v < 2; v++) {
        engine_cl **list = NULL, *bf[8];
        size_t nl = 0, nb = usable_brute(v, bf, 8);

        o.variant = variants[v];
        assert_int_equal(engine_cl_discover(&list, &nl, &o, msg, sizeof(msg)), 0);
        assert_int_equal(nl, fx.nbrute[v]);
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++)
            for (size_t i = 0; i < nl && i < nb; i++) {
                struct engine_cpu_stats st;

                s.precision = (enum spec_precision)p;
                if (engine_cl_failure(list[i]) ||
                    (p == SPEC_FP64 && !engine_cl_get_info(list[i])->fp64))
                    continue;
                assert_int_equal(engine_cl_render(list[i], &s, &r, c1, NULL, NULL, &st, msg,
                                                  sizeof(msg)),
                                 0);
                assert_int_equal(engine_cl_render(bf[i], &s, &r, c2, NULL, NULL, NULL, msg,
                                                  sizeof(msg)),
                                 0);
                print_message("engine_cl: %s %s shortcuts in %u launches of 1 ms\n",
                              variant_names[variants[v]], p == SPEC_FP32 ? "fp32" : "fp64",
                              st.tiles);
                assert_true(st.tiles >= 3);
                assert_memory_equal(c1, c2, n * sizeof(uint32_t));
            }
        engine_cl_free_all(list, nl);
    }
    free(c1);
    free(c2);
}

/* Proof that the shortcuts engage: on a view like workload C (mostly interior, here max_iter
 * 10^5) they make VECTOR and SCALAR at least 5x faster than the same kernel without them, in
 * both precisions (brute force spends max_iter on every interior sample). */
static void test_shortcuts_engaged(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 128, 72, 100000, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t *counts = malloc((size_t)128 * 72 * sizeof(uint32_t));
    char msg[256];

    (void)state;
    assert_non_null(counts);
    for (int v = 0; v < 2; v++) {
        engine_cl *sc[8], *bf[8];
        size_t ns = usable(v, sc, 8);

        usable_brute(v, bf, 8);
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++)
            for (size_t i = 0; i < ns; i++) {
                double t0, t_sc, t_bf;

                s.precision = (enum spec_precision)p;
                if (p == SPEC_FP64 && !engine_cl_get_info(sc[i])->fp64)
                    continue;
                t0 = now_s();
                assert_int_equal(engine_cl_render(sc[i], &s, &r, counts, NULL, NULL, NULL, msg,
                                                  sizeof(msg)),
                                 0);
                t_sc = now_s() - t0;
                t0 = now_s();
                assert_int_equal(engine_cl_render(bf[i], &s, &r, counts, NULL, NULL, NULL, msg,
                                                  sizeof(msg)),
                                 0);
                t_bf = now_s() - t0;
                print_message("engine_cl: %s %s, C-like view: %.1f ms with the shortcuts, %.1f "
                              "ms without (%.1fx)\n",
                              variant_names[variants[v]], p == SPEC_FP32 ? "fp32" : "fp64",
                              t_sc * 1e3, t_bf * 1e3, t_bf / t_sc);
                assert_true(t_bf > 5 * t_sc);
            }
    }
    free(counts);
}

struct canceller {
    atomic_int *flag;
    long delay_ms;
    double raised_at;
};

static void *cancel_main(void *p)
{
    struct canceller *c = p;
    struct timespec ts = {c->delay_ms / 1000, (c->delay_ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    c->raised_at = now_s();
    atomic_store(c->flag, 1);
    return NULL;
}

/* A render of minutes (an interior view, max_iter 10^7, without the shortcuts that would make
 * it short) cancelled after 300 ms returns ERR_CANCELLED within 250 ms of the flag, on every
 * variant; the engine then serves the next render. */
static void test_cancel(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 0.2, 512, 512, 10000000, 2.0,
                                     SPEC_FP32, 1);
    struct render_spec small =
        make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 32, 32, 100, 2.0, SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s), rs = grid_of(&small);
    uint32_t *counts = malloc(512 * 512 * sizeof(uint32_t));
    char msg[256];

    (void)state;
    assert_non_null(counts);
    for (int v = 0; v < NVARIANTS; v++) {
        engine_cl *list[8];
        size_t n = usable_brute(v, list, 8);
        for (size_t i = 0; i < n; i++) {
            atomic_int flag;
            struct canceller c = {&flag, 300, 0};
            pthread_t t;
            double done;

            atomic_init(&flag, 1);
            assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, &flag, NULL, msg,
                                              sizeof(msg)),
                             ERR_CANCELLED);
            atomic_store(&flag, 0);
            assert_int_equal(pthread_create(&t, NULL, cancel_main, &c), 0);
            assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, &flag, NULL, msg,
                                              sizeof(msg)),
                             ERR_CANCELLED);
            done = now_s();
            pthread_join(t, NULL);
            print_message("engine_cl: %s cancelled %.0f ms after the flag\n",
                          variant_names[variants[v]], (done - c.raised_at) * 1e3);
            /* 250 ms is the contract; sanitizer builds run several times slower. */
            assert_true(done - c.raised_at < (getenv("FRACTALD_SANITIZED") ? 1.0 : 0.25));
            assert_null(engine_cl_failure(list[i]));
            atomic_store(&flag, 0);
            assert_int_equal(engine_cl_render(list[i], &small, &rs, counts, NULL, &flag, NULL, msg,
                                              sizeof(msg)),
                             0);
        }
    }
    free(counts);
}

/* With max_launch_ms = 10 a render of about half a second (brute force: the shortcuts make
 * this interior view short) takes many launches, and each one is bounded: the render still
 * equals the CPU engine's. */
static void test_launches(void **state)
{
    struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 480, 270, 100000, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t *counts = malloc((size_t)480 * 270 * sizeof(uint32_t));
    engine_cl **list = NULL;
    size_t n = 0;
    char msg[256];

    (void)state;
    assert_non_null(counts);
    usable(0, (engine_cl *[8]){0}, 8);
    o.cache_dir = fx.cache_dir;
    o.max_launch_ms = 10;
    o.brute_force = true;
    assert_int_equal(engine_cl_discover(&list, &n, &o, msg, sizeof(msg)), 0);
    for (size_t i = 0; i < n; i++) {
        struct engine_cpu_stats st;
        double t0, dt;

        if (engine_cl_failure(list[i]))
            continue;
        t0 = now_s();
        assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, NULL, &st, msg,
                                          sizeof(msg)),
                         0);
        dt = now_s() - t0;
        print_message("engine_cl: %.0f ms in %u launches (max_launch_ms 10)\n", dt * 1e3,
                      st.tiles);
        assert_true(st.tiles >= 5);
        /* Launches averaged near the target, so none can have run long. */
        assert_true(dt / st.tiles < 0.05);
        check_rect(list[i], &s, &r);
    }
    engine_cl_free_all(list, n);
    free(counts);
}

/* A device error mid-render: ERR_DEVICE naming the OpenCL error, the call and file:line; the
 * engine reports itself failed and refuses further renders with the same reason. */
static void test_device_error(void **state)
{
    struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 240, 135, 20000, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t *counts = malloc((size_t)240 * 135 * sizeof(uint32_t));
    engine_cl **list = NULL;
    size_t n = 0;
    char msg[256];

    (void)state;
    assert_non_null(counts);
    usable(0, (engine_cl *[8]){0}, 8);
    o.cache_dir = fx.cache_dir;
    o.max_launch_ms = 5;
    o.brute_force = true;
    assert_int_equal(engine_cl_discover(&list, &n, &o, msg, sizeof(msg)), 0);
    for (size_t i = 0; i < n; i++) {
        if (engine_cl_failure(list[i]))
            continue;
        engine_cl_inject_fault(list[i], 2);
        assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, NULL, NULL, msg,
                                          sizeof(msg)),
                         ERR_DEVICE);
        print_message("engine_cl: injected fault: %s\n", msg);
        assert_non_null(strstr(msg, "CL_OUT_OF_RESOURCES"));
        assert_non_null(strstr(msg, "engine_cl.c:"));
        assert_non_null(engine_cl_failure(list[i]));
        assert_string_equal(engine_cl_failure(list[i]), msg);
        msg[0] = '\0';
        assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, NULL, NULL, msg,
                                          sizeof(msg)),
                         ERR_DEVICE);
        assert_string_equal(engine_cl_failure(list[i]), msg);
    }
    engine_cl_free_all(list, n);
    free(counts);
}

/* A device without fp64 refuses fp64 work; skipped where every device has fp64 (PoCL). */
static void test_no_fp64(void **state)
{
    struct render_spec s =
        make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 16, 16, 100, 2.0, SPEC_FP64, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t counts[256];
    engine_cl *list[8];
    size_t n, tried = 0;
    char msg[256];

    (void)state;
    n = usable(0, list, 8);
    for (size_t i = 0; i < n; i++) {
        if (engine_cl_get_info(list[i])->fp64)
            continue;
        tried++;
        assert_int_equal(engine_cl_render(list[i], &s, &r, counts, NULL, NULL, NULL, msg,
                                          sizeof(msg)),
                         ERR_PRECONDITION);
        assert_non_null(strstr(msg, "fp64"));
        assert_null(engine_cl_failure(list[i]));
    }
    if (tried == 0)
        skip();
}

/* Runs this test binary again as `unit_tests engine_cl <test>` with CHILD_ENV=<test> and the
 * extra variables, so the OpenCL ICD loader of the child starts from that environment (it reads
 * it once per process). Returns the child's exit status. */
static int run_child(const char *test, const char *const *extra)
{
    char *argv[] = {"unit_tests", "engine_cl", (char *)test, NULL};
    char **envp, self[4096], child_var[128];
    size_t n = 0, k = 0;
    ssize_t len;
    pid_t pid;
    int status = -1;

    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(len > 0);
    self[len] = '\0';
    while (environ[n])
        n++;
    envp = calloc(n + 8, sizeof(char *));
    assert_non_null(envp);
    snprintf(child_var, sizeof(child_var), "%s=%s", CHILD_ENV, test);
    envp[k++] = child_var;
    for (size_t i = 0; extra[i]; i++)
        envp[k++] = (char *)extra[i];
    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        for (size_t j = 0; j < k; j++) {
            size_t eq = strcspn(envp[j], "=");
            if (strncmp(environ[i], envp[j], eq + 1) == 0)
                dup = 1;
        }
        if (!dup)
            envp[k++] = environ[i];
    }
    envp[k] = NULL;
    fflush(stdout);
    assert_int_equal(posix_spawn(&pid, self, NULL, NULL, argv, envp), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    free(envp);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int in_child(const char *test)
{
    const char *v = getenv(CHILD_ENV);
    return v && strcmp(v, test) == 0;
}

/* No ICD installed (OCL_ICD_VENDORS names an empty directory): no device, a clear message, and
 * no error. */
static void test_no_icd(void **state)
{
    char dir[64] = "/tmp/fractald-no-icd-XXXXXX", var[96];
    const char *extra[] = {var, NULL};

    (void)state;
    if (in_child("test_no_icd")) {
        engine_cl **list = NULL;
        size_t n = 99;
        char msg[256];

        assert_int_equal(engine_cl_discover(&list, &n, NULL, msg, sizeof(msg)), 0);
        print_message("engine_cl: without an ICD: %s\n", msg);
        assert_int_equal(n, 0);
        assert_null(list);
        assert_non_null(strstr(msg, "no OpenCL platform"));
        return;
    }
    assert_non_null(mkdtemp(dir));
    snprintf(var, sizeof(var), "OCL_ICD_VENDORS=%s", dir);
    assert_int_equal(run_child("test_no_icd", extra), 0);
    rmdir(dir);
}

/* The program binary cache, in a child whose PoCL kernel cache starts empty too, so the first
 * discovery is a true cold build: the second loads every program from the cache (and is
 * faster), a corrupt cache file falls back to a build from source, and all three render alike. */
static void test_binary_cache(void **state)
{
    char pocl[64] = "/tmp/fractald-pocl-XXXXXX", var[96];
    const char *extra[] = {var, NULL};

    (void)state;
    if (in_child("test_binary_cache")) {
        struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
        struct render_spec s =
            make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 64, 36, 200, 2.0, SPEC_FP32, 1);
        struct spec_rect r = grid_of(&s);
        uint32_t c[3][64 * 36];
        char dir[64] = "/tmp/fractald-clcache-XXXXXX", msg[256], path[512];
        double ms[3];
        int from[3];
        DIR *d;
        struct dirent *ent;

        assert_non_null(mkdtemp(dir));
        o.cache_dir = dir;
        for (int round = 0; round < 3; round++) {
            engine_cl **list = NULL;
            size_t n = 0;

            if (round == 2) {
                /* Corrupt every cached program: same length, different bytes. */
                assert_non_null(d = opendir(dir));
                while ((ent = readdir(d)) != NULL) {
                    FILE *f;
                    if (ent->d_name[0] == '.')
                        continue;
                    snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
                    assert_non_null(f = fopen(path, "r+b"));
                    fseek(f, 40, SEEK_SET);
                    fwrite("garbage!garbage!", 1, 16, f);
                    fclose(f);
                }
                closedir(d);
            }
            assert_int_equal(engine_cl_discover(&list, &n, &o, msg, sizeof(msg)), 0);
            if (n == 0 || engine_cl_failure(list[0])) {
                engine_cl_free_all(list, n);
                remove_tree(dir);
                skip();
            }
            ms[round] = engine_cl_get_info(list[0])->build_ms;
            from[round] = engine_cl_get_info(list[0])->from_cache;
            assert_int_equal(engine_cl_render(list[0], &s, &r, c[round], NULL, NULL, NULL, msg,
                                              sizeof(msg)),
                             0);
            engine_cl_free_all(list, n);
        }
        print_message("engine_cl: programs prepared cold in %.0f ms, from the cache in %.0f ms, "
                      "after a corrupt cache in %.0f ms\n",
                      ms[0], ms[1], ms[2]);
        assert_false(from[0]);
        assert_true(from[1]);
        assert_true(ms[1] < ms[0]);
        /* The checksum refused the damaged files: built from source again. */
        assert_false(from[2]);
        assert_memory_equal(c[0], c[1], sizeof(c[0]));
        assert_memory_equal(c[0], c[2], sizeof(c[0]));
        remove_tree(dir);
        return;
    }
    assert_non_null(mkdtemp(pocl));
    snprintf(var, sizeof(var), "POCL_CACHE_DIR=%s", pocl);
    assert_int_equal(run_child("test_binary_cache", extra), 0);
    remove_tree(pocl);
}

int test_engine_cl_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discover),
        cmocka_unit_test(test_workload_a),
        cmocka_unit_test(test_workload_b),
        cmocka_unit_test(test_workload_c),
        cmocka_unit_test(test_mandelbrot),
        cmocka_unit_test(test_radius_and_c),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_supersample),
        cmocka_unit_test(test_odd_sizes),
        cmocka_unit_test(test_null_outputs),
        cmocka_unit_test(test_shortcuts_mandelbrot),
        cmocka_unit_test(test_shortcuts_julia),
        cmocka_unit_test(test_shortcuts_launches),
        cmocka_unit_test(test_shortcuts_engaged),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_launches),
        cmocka_unit_test(test_device_error),
        cmocka_unit_test(test_no_fp64),
        cmocka_unit_test(test_no_icd),
        cmocka_unit_test(test_binary_cache),
    };

    return cmocka_run_group_tests_name("engine_cl", tests, setup, teardown);
}
