/* test_engine_cpu.c: the CPU engine against the scalar references of kernels/escape.h and
 * engines/smooth.h, pixel by pixel: escape counts equal and smooth values bit-identical, in fp32
 * and fp64. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unit.h"
#include "engine_cpu.h"
#include "err.h"
#include "spec_helpers.h"
#include "escape.h"
#include "smooth.h"

/* The scalar references over a rectangle of the sample grid, escape.h's for the counts and
 * smooth.h's for the smooth values; returns the count sum. */
static uint64_t ref_render(const struct render_spec *s, const struct spec_rect *r,
                           uint32_t *counts, float *smooth)
{
    uint32_t gw = s->width * s->supersample, gh = s->height * s->supersample;
    uint64_t sum = 0;
    size_t k = 0;

    if (s->precision == SPEC_FP32) {
        esc_view_f32 v;
        struct smooth_f32 sm;
        esc_view_init_f32(&v, (int)s->fractal, (float)s->c_re, (float)s->c_im,
                          (float)s->center_re, (float)s->center_im, (float)s->view_width, gw, gh,
                          (float)s->escape_radius, s->max_iter);
        smooth_init_f32(&sm, &v);
        for (uint32_t j = r->y; j < r->y + r->height; j++)
            for (uint32_t i = r->x; i < r->x + r->width; i++, k++) {
                float zr, zi;
                counts[k] = esc_sample_f32(&v, i, j, &zr, &zi);
                smooth[k] = smooth_sample_f32(&sm, i, j, counts[k], zr, zi);
                sum += counts[k];
            }
    } else {
        esc_view_f64 v;
        struct smooth_f64 sm;
        esc_view_init_f64(&v, (int)s->fractal, s->c_re, s->c_im, s->center_re, s->center_im,
                          s->view_width, gw, gh, s->escape_radius, s->max_iter);
        smooth_init_f64(&sm, &v);
        for (uint32_t j = r->y; j < r->y + r->height; j++)
            for (uint32_t i = r->x; i < r->x + r->width; i++, k++) {
                double zr, zi;
                counts[k] = esc_sample_f64(&v, i, j, &zr, &zi);
                smooth[k] = smooth_sample_f64(&sm, i, j, counts[k], zr, zi);
                sum += counts[k];
            }
    }
    return sum;
}

/* Renders r with the engine and with the reference; fails on the first sample whose count or
 * smooth bits differ, or on a wrong iteration total. Renders it once more for counts only (lane
 * machines may take a cheaper path without smooth values) and compares those too. Returns the
 * count sum. */
static uint64_t check_rect(engine_cpu *engine, const struct render_spec *s,
                           const struct spec_rect *r)
{
    size_t n = (size_t)r->width * r->height;
    uint32_t *c_eng = malloc(n * sizeof(uint32_t)), *c_ref = malloc(n * sizeof(uint32_t));
    float *s_eng = malloc(n * sizeof(float)), *s_ref = malloc(n * sizeof(float));
    struct engine_cpu_stats st;
    uint64_t sum;

    assert_non_null(c_eng);
    assert_non_null(c_ref);
    assert_non_null(s_eng);
    assert_non_null(s_ref);
    memset(c_eng, 0xee, n * sizeof(uint32_t));
    memset(s_eng, 0xee, n * sizeof(float));
    assert_int_equal(engine_cpu_render(engine, s, r, c_eng, s_eng, NULL, &st), 0);
    sum = ref_render(s, r, c_ref, s_ref);
    for (size_t k = 0; k < n; k++) {
        if (c_eng[k] != c_ref[k] || memcmp(&s_eng[k], &s_ref[k], sizeof(float)) != 0)
            fail_msg("%s %s sample (%u, %u): engine n=%u mu=%.9g, reference n=%u mu=%.9g",
                     s->fractal == SPEC_JULIA ? "julia" : "mandelbrot",
                     s->precision == SPEC_FP32 ? "fp32" : "fp64",
                     r->x + (uint32_t)(k % r->width), r->y + (uint32_t)(k / r->width), c_eng[k],
                     (double)s_eng[k], c_ref[k], (double)s_ref[k]);
    }
    assert_true(st.iterations == sum);
    assert_true(st.tiles >= 1);
    memset(c_eng, 0xee, n * sizeof(uint32_t));
    assert_int_equal(engine_cpu_render(engine, s, r, c_eng, NULL, NULL, &st), 0);
    for (size_t k = 0; k < n; k++)
        if (c_eng[k] != c_ref[k])
            fail_msg("%s %s sample (%u, %u), counts only: engine n=%u, reference n=%u",
                     s->fractal == SPEC_JULIA ? "julia" : "mandelbrot",
                     s->precision == SPEC_FP32 ? "fp32" : "fp64",
                     r->x + (uint32_t)(k % r->width), r->y + (uint32_t)(k / r->width), c_eng[k],
                     c_ref[k]);
    assert_true(st.iterations == sum);
    free(c_eng);
    free(c_ref);
    free(s_eng);
    free(s_ref);
    return sum;
}

static uint64_t check_full(engine_cpu *engine, const struct render_spec *s)
{
    struct spec_rect r = grid_of(s);
    return check_rect(engine, s, &r);
}

/* Sets FRACTALD_CPU_ISA to isa (NULL: unset); returns the value it had, to give back to
 * isa_restore, so that a run of the suite under FRACTALD_CPU_ISA=avx2 keeps that level for
 * every engine the tests make after one that asked for another. */
static char *isa_set(const char *isa)
{
    const char *old = getenv("FRACTALD_CPU_ISA");
    char *saved = old ? strdup(old) : NULL;

    if (isa)
        setenv("FRACTALD_CPU_ISA", isa, 1);
    return saved;
}

static void isa_restore(char *saved)
{
    if (saved)
        setenv("FRACTALD_CPU_ISA", saved, 1);
    else
        unsetenv("FRACTALD_CPU_ISA");
    free(saved);
}

/* A new engine with FRACTALD_CPU_SHORTCUTS set to `shortcuts` ("0": brute force) and, when isa
 * is not NULL, FRACTALD_CPU_ISA to it, both read by engine_cpu_new only. */
static engine_cpu *new_engine(const char *shortcuts, const char *isa, unsigned threads)
{
    engine_cpu *engine = NULL;
    char *saved;

    setenv("FRACTALD_CPU_SHORTCUTS", shortcuts, 1);
    saved = isa_set(isa);
    assert_int_equal(engine_cpu_new(&engine, threads), 0);
    unsetenv("FRACTALD_CPU_SHORTCUTS");
    isa_restore(saved);
    assert_int_equal(engine_cpu_shortcuts(engine), strcmp(shortcuts, "0") != 0);
    return engine;
}

static int setup(void **state)
{
    engine_cpu *engine;

    if (engine_cpu_new(&engine, 0) < 0)
        return -1;
    *state = engine;
    return 0;
}

static int teardown(void **state)
{
    engine_cpu_free(*state);
    return 0;
}

/* Workload A's view at 240x135, both precisions; counts equal to the reference's. */
static void test_workload_a(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 240, 135, 1000, 2.0,
                                         (enum spec_precision)p, 1);
        check_full(*state, &s);
    }
}

/* Workload B's deep view at 96x54 with max_iter 10000: long orbits, many blocks per sample. */
static void test_workload_b(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0.17304, 0.23854, 0.0005, 96,
                                         54, 10000, 2.0, (enum spec_precision)p, 1);
        assert_true(check_full(*state, &s) > (uint64_t)96 * 54 * 900);
    }
}

/* Workload C (mostly interior, max_iter 10000) at 160x90. */
static void test_workload_c(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 160, 90, 10000, 2.0,
                                         (enum spec_precision)p, 1);
        check_full(*state, &s);
    }
}

/* The whole Mandelbrot set: c per sample, lanes near |c| = 2 take the careful blocks. */
static void test_mandelbrot(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.2, 200, 150, 500, 2.0,
                                         (enum spec_precision)p, 1);
        struct render_spec z = make_spec(SPEC_MANDELBROT, 0, 0, -0.7435, 0.1314, 0.002, 80, 60,
                                         3000, 2.0, (enum spec_precision)p, 1);
        check_full(*state, &s);
        check_full(*state, &z);
    }
}

static void test_odd_sizes(void **state)
{
    static const uint32_t sizes[][2] = {{1, 1}, {7, 3}, {1000, 1}, {1, 333}, {65, 65}};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0.1, -0.05, 2.9, sizes[i][0],
                                             sizes[i][1], 300, 2.0, (enum spec_precision)p, 1);
            check_full(*state, &s);
        }
}

/* Regions render exactly the same samples as the full image holds at those places. */
static void test_regions(void **state)
{
    static const struct spec_rect regions[] = {
        {13, 7, 40, 21}, {0, 0, 1, 1}, {96, 60, 1, 1}, {0, 60, 97, 1}, {50, 0, 47, 61}, {3, 3, 1, 50},
    };

    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 97, 61, 400, 2.0,
                                         (enum spec_precision)p, 1);
        uint32_t *full = malloc(97 * 61 * sizeof(uint32_t)), *part = malloc(97 * 61 * 4);
        float *fs = malloc(97 * 61 * sizeof(float)), *ps = malloc(97 * 61 * sizeof(float));
        struct spec_rect all = grid_of(&s);

        assert_int_equal(engine_cpu_render(*state, &s, &all, full, fs, NULL, NULL), 0);
        for (size_t i = 0; i < sizeof(regions) / sizeof(regions[0]); i++) {
            const struct spec_rect *r = &regions[i];
            assert_int_equal(engine_cpu_render(*state, &s, r, part, ps, NULL, NULL), 0);
            for (uint32_t y = 0; y < r->height; y++)
                for (uint32_t x = 0; x < r->width; x++) {
                    size_t a = (size_t)(r->y + y) * 97 + r->x + x, b = (size_t)y * r->width + x;
                    assert_int_equal(part[b], full[a]);
                    assert_memory_equal(&ps[b], &fs[a], sizeof(float));
                }
            check_rect(*state, &s, r);
        }
        free(full);
        free(part);
        free(fs);
        free(ps);
    }
}

/* Supersample 3: a 40x30 image has a 120x90 sample grid; the engine computes that grid (and
 * rectangles of it given in sample coordinates). */
static void test_supersample(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 40, 30, 300, 2.0,
                                         (enum spec_precision)p, 3);
        struct spec_rect r = {30, 45, 33, 20};
        assert_true(check_full(*state, &s) > 0);
        check_rect(*state, &s, &r);
    }
}

static void test_max_iter_one(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 6.0, 60, 40, 1, 2.0,
                                         (enum spec_precision)p, 1);
        struct render_spec m = make_spec(SPEC_MANDELBROT, 0, 0, 0, 0, 6.0, 60, 40, 1, 2.0,
                                         (enum spec_precision)p, 1);
        uint64_t sum = check_full(*state, &s);
        assert_true(sum > 0 && sum < 60 * 40);   /* both n = 0 and n = 1 occur */
        assert_true(check_full(*state, &m) == 60 * 40);
    }
}

/* A few samples with max_iter 10^7: the centre of workload C is interior. */
static void test_max_iter_huge(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 0.01, 2, 2, 10000000, 2.0,
                                     SPEC_FP64, 1);
    assert_true(check_full(*state, &s) == 40000000);
}

/* max_iter too large for the intrinsics lane machines' 32-bit counts (ecpu_avx2_fits,
 * ecpu_avx512_fits): the job runs on engine_cpu.c's vector-extension build instead, and is as
 * exact. A view where every orbit escapes soon, so that the reference finishes. */
static void test_max_iter_fallback(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 1.6, 1.2, 0.8, 40, 30,
                                         UINT32_MAX - 1, 2.0, (enum spec_precision)p, 1);
        check_full(*state, &s);
    }
}

/* Escape radii: huge (R*R overflows, so orbits leave through NaN), large, and small (< 2, where
 * an escaped orbit may come back, so every step is checked). */
static void test_radius(void **state)
{
    static const double radii[] = {1e300, 1e30, 1e10, 100.0, 1.5, 0.5};

    for (size_t i = 0; i < sizeof(radii) / sizeof(radii[0]); i++)
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 64, 40, 200,
                                             radii[i], (enum spec_precision)p, 1);
            struct render_spec m = make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 64, 40, 200,
                                             radii[i], (enum spec_precision)p, 1);
            check_full(*state, &s);
            check_full(*state, &m);
        }
}

/* A Julia constant far outside (|c| > R^2 - R): escaped orbits can re-enter the disc. */
static void test_large_c(void **state)
{
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, 1.9, -1.2, 0, 0, 5.0, 70, 50, 100, 2.0,
                                         (enum spec_precision)p, 1);
        check_full(*state, &s);
    }
}

/* Counts only, smooth only: either output may be NULL. */
static void test_null_outputs(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 50, 30, 200, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t counts[50 * 30], ref_c[50 * 30];
    float smooth[50 * 30], ref_s[50 * 30];
    struct engine_cpu_stats st;
    uint64_t sum = ref_render(&s, &r, ref_c, ref_s);

    assert_int_equal(engine_cpu_render(*state, &s, &r, counts, NULL, NULL, &st), 0);
    assert_memory_equal(counts, ref_c, sizeof(counts));
    assert_true(st.iterations == sum);
    assert_int_equal(engine_cpu_render(*state, &s, &r, NULL, smooth, NULL, &st), 0);
    assert_memory_equal(smooth, ref_s, sizeof(smooth));
    assert_int_equal(engine_cpu_render(*state, &s, &r, NULL, NULL, NULL, &st), 0);
    assert_true(st.iterations == sum);
}

/* Views that stress the interior shortcuts (engine_cpu.h): Mandelbrot views straddling the cusp
 * of the cardioid at 0.25, its junction with the period-2 bulb at -0.75, a generic point of the
 * cardioid's boundary (theta = 1), the top of the bulb and its junction with the period-4 bulb at
 * -1.25 (samples just inside and just outside, where orbits take thousands of steps either to
 * escape or to settle on a cycle), the real-axis filament near -1.77, and Julia interiors where
 * fp32 rounding makes the orbits cycle (workload C's c, a deep-ish view; the rabbit's interior). */
struct shortcut_view {
    enum spec_fractal fractal;
    double c_re, c_im, center_re, center_im, width;
    uint32_t w, h, max_iter, supersample;
};

static const struct shortcut_view shortcut_views[] = {
    {SPEC_MANDELBROT, 0, 0, 0.25, 0.0, 0.004, 48, 32, 20000, 1},
    {SPEC_MANDELBROT, 0, 0, -0.75, 0.0, 0.004, 48, 32, 20000, 1},
    {SPEC_MANDELBROT, 0, 0, 0.3741849, 0.1934225, 0.002, 40, 30, 20000, 1},
    {SPEC_MANDELBROT, 0, 0, -1.0, 0.25, 0.004, 40, 30, 20000, 1},
    {SPEC_MANDELBROT, 0, 0, -1.25, 0.0, 0.004, 40, 30, 20000, 1},
    {SPEC_MANDELBROT, 0, 0, -0.5, 0.0, 3.2, 60, 40, 3000, 2},
    {SPEC_MANDELBROT, 0, 0, -1.7687, 0.0012, 0.01, 40, 30, 5000, 1},
    {SPEC_JULIA, -0.12, 0.75, 0.0, 0.0, 3.0, 64, 36, 10000, 1},
    {SPEC_JULIA, -0.12, 0.75, -0.2, 0.15, 0.0005, 40, 30, 20000, 1},
    {SPEC_JULIA, -0.123, 0.745, 0.3, -0.2, 0.01, 40, 30, 20000, 2},
    {SPEC_JULIA, 0.0, 1.0, 0.0, 0.0, 3.0, 48, 32, 2000, 1},
};

static struct render_spec shortcut_spec(const struct shortcut_view *sv, enum spec_precision p)
{
    return make_spec(sv->fractal, sv->c_re, sv->c_im, sv->center_re, sv->center_im, sv->width,
                     sv->w, sv->h, sv->max_iter, 2.0, p, sv->supersample);
}

/* The shortcuts change no sample: every view above, both precisions, the full grid and a region
 * of it, against the brute-force scalar reference, count by count and smooth value by smooth
 * value (check_rect). */
static void test_shortcuts_exact(void **state)
{
    assert_true(engine_cpu_shortcuts(*state));
    for (size_t i = 0; i < sizeof(shortcut_views) / sizeof(shortcut_views[0]); i++)
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec s = shortcut_spec(&shortcut_views[i], (enum spec_precision)p);
            struct spec_rect r = {5, 3, s.width * s.supersample - 9, 11};
            check_full(*state, &s);
            check_rect(*state, &s, &r);
        }
}

/* The shortcuts really engage: on workload C's view and the Mandelbrot set the engine runs a
 * fraction of the steps brute force runs, with the same counts; with FRACTALD_CPU_SHORTCUTS=0
 * every step is run. */
static void test_shortcuts_engaged(void **state)
{
    engine_cpu *brute = new_engine("0", NULL, 0);
    struct render_spec c[SPEC_FP64 + 1], m[SPEC_FP64 + 1];
    uint32_t *a = malloc(160 * 90 * sizeof(uint32_t)), *b = malloc(160 * 90 * sizeof(uint32_t));

    assert_non_null(a);
    assert_non_null(b);
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        c[p] = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 160, 90, 10000, 2.0,
                         (enum spec_precision)p, 1);
        m[p] = make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.2, 160, 90, 10000, 2.0,
                         (enum spec_precision)p, 1);
    }
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++)
        for (int which = 0; which < 2; which++) {
            const struct render_spec *s = which ? &m[p] : &c[p];
            struct spec_rect r = grid_of(s);
            struct engine_cpu_counters on0, on1, off0, off1;
            struct engine_cpu_stats st_on, st_off;

            engine_cpu_counters(&on0, *state);
            assert_int_equal(engine_cpu_render(*state, s, &r, a, NULL, NULL, &st_on), 0);
            engine_cpu_counters(&on1, *state);
            engine_cpu_counters(&off0, brute);
            assert_int_equal(engine_cpu_render(brute, s, &r, b, NULL, NULL, &st_off), 0);
            engine_cpu_counters(&off1, brute);
            assert_memory_equal(a, b, 160 * 90 * sizeof(uint32_t));
            assert_true(st_on.iterations == st_off.iterations);
            assert_true(on1.iterations - on0.iterations == st_on.iterations);
            assert_true(off1.iterations - off0.iterations == st_off.iterations);
            /* Brute force runs every step and takes no shortcut. */
            assert_true(off1.executed - off0.executed == st_off.iterations);
            assert_true(off1.bulb == off0.bulb && off1.cycles == off0.cycles);
            if (getenv("TEST_VERBOSE"))
                printf("%s p=%d: iterations %llu executed %llu bulb %llu cycles %llu\n",
                       which ? "mandel" : "julia", p, (unsigned long long)st_on.iterations,
                       (unsigned long long)(on1.executed - on0.executed),
                       (unsigned long long)(on1.bulb - on0.bulb),
                       (unsigned long long)(on1.cycles - on0.cycles));
            /* Mostly interior: the shortcuts cut the steps run by 5x at least. */
            assert_true((on1.executed - on0.executed) * 5 < st_on.iterations);
            if (which) {
                assert_true(on1.bulb - on0.bulb > 160 * 90 / 8);
                assert_true(on1.cycles > on0.cycles);
            } else {
                /* Cycle detection alone, on Julia sets: it finds almost every interior
                 * sample (about a quarter of this view). */
                uint64_t interior = 0;
                for (size_t k = 0; k < 160 * 90; k++)
                    interior += a[k] == s->max_iter;
                assert_true(interior > 160 * 90 / 8);
                assert_true(on1.bulb == on0.bulb);
                assert_true((on1.cycles - on0.cycles) * 100 >= interior * 95);
            }
        }
    engine_cpu_free(brute);
    free(a);
    free(b);
}

/* Every lane machine this CPU can run, not only the widest: the base (SSE2 / generic) lanes
 * through FRACTALD_CPU_ISA, and AVX2 where AVX-512 would be picked. */
static void test_narrow_lanes(void **state)
{
    static const char *isas[] = {"base", "avx2"};

    (void)state;
    for (size_t i = 0; i < sizeof(isas) / sizeof(isas[0]); i++) {
        engine_cpu *engine = NULL;
        char *saved = isa_set(isas[i]);
        assert_int_equal(engine_cpu_new(&engine, 2), 0);
        isa_restore(saved);
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec a = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 120, 68, 1000,
                                             2.0, (enum spec_precision)p, 1);
            struct render_spec m = make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.2, 80, 60, 300,
                                             2.0, (enum spec_precision)p, 1);
            struct render_spec h = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 33, 21, 100,
                                             1e300, (enum spec_precision)p, 1);
            check_full(engine, &a);
            check_full(engine, &m);
            check_full(engine, &h);
            /* The shortcuts in these lanes too: cusps, the bulb, cycling fp32 interiors. */
            for (size_t v = 0; v < sizeof(shortcut_views) / sizeof(shortcut_views[0]); v += 2) {
                struct render_spec c = shortcut_spec(&shortcut_views[v], (enum spec_precision)p);
                check_full(engine, &c);
            }
        }
        engine_cpu_free(engine);
    }
}

struct concurrent_arg {
    engine_cpu *engine;
    struct render_spec spec;
    int rounds, failures;
};

static void *concurrent_main(void *p)
{
    struct concurrent_arg *a = p;
    struct spec_rect r = grid_of(&a->spec);
    size_t n = (size_t)r.width * r.height;
    uint32_t *c = malloc(n * 4), *rc = malloc(n * 4);
    float *s = malloc(n * 4), *rs = malloc(n * 4);

    if (!c || !rc || !s || !rs) {
        a->failures++;
        goto done;
    }
    ref_render(&a->spec, &r, rc, rs);
    for (int i = 0; i < a->rounds; i++) {
        memset(c, 0, n * 4);
        if (engine_cpu_render(a->engine, &a->spec, &r, c, s, NULL, NULL) != 0 ||
            memcmp(c, rc, n * 4) != 0 || memcmp(s, rs, n * 4) != 0)
            a->failures++;
    }
done:
    free(c);
    free(rc);
    free(s);
    free(rs);
    return NULL;
}

/* Two threads render different images at once on one engine; each gets its own, exact. */
static void test_concurrent(void **state)
{
    struct concurrent_arg a[3] = {
        {*state, make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 160, 90, 1000, 2.0, SPEC_FP32, 1),
         6, 0},
        {*state, make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 150, 100, 400, 2.0, SPEC_FP64, 1),
         6, 0},
        {*state, make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 31, 17, 2000, 2.0, SPEC_FP64, 1),
         10, 0},
    };
    pthread_t t[3];

    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, concurrent_main, &a[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(a[i].failures, 0);
}

static void test_cancel_before(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 64, 64, 100, 2.0,
                                     SPEC_FP32, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t counts[64 * 64];
    atomic_int cancel;

    atomic_init(&cancel, 1);
    assert_int_equal(engine_cpu_render(*state, &s, &r, counts, NULL, &cancel, NULL),
                     ERR_CANCELLED);
    /* And the engine still serves the next render. */
    atomic_store(&cancel, 0);
    assert_int_equal(engine_cpu_render(*state, &s, &r, counts, NULL, &cancel, NULL), 0);
}

struct canceller {
    atomic_int *flag;
    long delay_ms;
};

static void *cancel_main(void *p)
{
    struct canceller *c = p;
    struct timespec ts = {c->delay_ms / 1000, (c->delay_ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    atomic_store(c->flag, 1);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A render of minutes (interior, max_iter 10^7, brute force: cycle detection would finish it in
 * milliseconds) cancelled after 50 ms returns ERR_CANCELLED within a fraction of a second: the
 * flag is polled inside long tiles too. */
static void test_cancel_during(void **state)
{
    engine_cpu *engine = new_engine("0", NULL, 0);
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 0.2, 256, 256, 10000000, 2.0,
                                     SPEC_FP64, 1);
    struct spec_rect r = grid_of(&s);
    uint32_t *counts = malloc(256 * 256 * sizeof(uint32_t));
    atomic_int flag;
    struct canceller c = {&flag, 50};
    pthread_t t;
    double t0, dt;

    assert_non_null(counts);
    atomic_init(&flag, 0);
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &c), 0);
    t0 = now_s();
    (void)state;
    assert_int_equal(engine_cpu_render(engine, &s, &r, counts, NULL, &flag, NULL), ERR_CANCELLED);
    dt = now_s() - t0;
    pthread_join(t, NULL);
    free(counts);
    engine_cpu_free(engine);
    assert_true(dt < 1.0);
}

static void test_threads(void **state)
{
    engine_cpu *engine = NULL;
    struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0, 0, 3.0, 90, 50, 500, 2.0,
                                     SPEC_FP64, 1);

    assert_true(engine_cpu_threads(*state) >= 1);
    assert_int_equal(engine_cpu_new(&engine, 3), 0);
    assert_int_equal(engine_cpu_threads(engine), 3);
    check_full(engine, &s);
    engine_cpu_free(engine);
    engine_cpu_free(NULL);
}

int test_engine_cpu_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_a),
        cmocka_unit_test(test_workload_b),
        cmocka_unit_test(test_workload_c),
        cmocka_unit_test(test_mandelbrot),
        cmocka_unit_test(test_odd_sizes),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_supersample),
        cmocka_unit_test(test_max_iter_one),
        cmocka_unit_test(test_max_iter_huge),
        cmocka_unit_test(test_max_iter_fallback),
        cmocka_unit_test(test_radius),
        cmocka_unit_test(test_large_c),
        cmocka_unit_test(test_null_outputs),
        cmocka_unit_test(test_shortcuts_exact),
        cmocka_unit_test(test_shortcuts_engaged),
        cmocka_unit_test(test_narrow_lanes),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_cancel_before),
        cmocka_unit_test(test_cancel_during),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests_name("engine_cpu", tests, setup, teardown);
}
