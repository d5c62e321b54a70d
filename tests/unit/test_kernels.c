/* test_kernels.c: kernels/escape.h, the scalar reference of the escape-time math, against plain
 * loops written here from docs/MATH.md, plus the mapping's corner cases. (The smooth value, which
 * the host computes, is tested in test_smooth.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "escape.h"

/* A view of a sample grid, as a test states it (docs/MATH.md's parameters). */
struct view {
    int fractal;
    double c_re, c_im, center_re, center_im, width;
    uint32_t gw, gh, max_iter;
    double radius;
};

/* docs/MATH.md's pixel mapping and recurrence, written out plainly in double. */
static uint32_t plain64(const struct view *w, uint32_t i, uint32_t j)
{
    double s = w->width / w->gw;
    double x = w->center_re + (i + 0.5 - w->gw / 2.0) * s;
    double y = w->center_im - (j + 0.5 - w->gh / 2.0) * s;
    double zr = x, zi = y, cr = w->c_re, ci = w->c_im, r2 = w->radius * w->radius;
    uint32_t n;

    if (w->fractal == ESC_MANDELBROT) {
        zr = zi = 0;
        cr = x;
        ci = y;
    }
    for (n = 0; n < w->max_iter; n++) {
        double nzr;
        if (!(zr * zr + zi * zi <= r2))
            break;
        nzr = zr * zr - zi * zi + cr;
        zi = 2 * zr * zi + ci;
        zr = nzr;
    }
    return n;
}

/* The same in float: every parameter rounded to float first, all arithmetic in float. */
static uint32_t plain32(const struct view *w, uint32_t i, uint32_t j)
{
    float s = (float)w->width / (float)w->gw;
    float x = (float)w->center_re + ((float)i + 0.5f - (float)w->gw / 2.0f) * s;
    float y = (float)w->center_im - ((float)j + 0.5f - (float)w->gh / 2.0f) * s;
    float zr = x, zi = y, cr = (float)w->c_re, ci = (float)w->c_im;
    float r2 = (float)w->radius * (float)w->radius;
    uint32_t n;

    if (w->fractal == ESC_MANDELBROT) {
        zr = zi = 0;
        cr = x;
        ci = y;
    }
    for (n = 0; n < w->max_iter; n++) {
        float nzr;
        if (!(zr * zr + zi * zi <= r2))
            break;
        nzr = zr * zr - zi * zi + cr;
        zi = 2 * zr * zi + ci;
        zr = nzr;
    }
    return n;
}

static void view64(esc_view_f64 *v, const struct view *w)
{
    esc_view_init_f64(v, w->fractal, w->c_re, w->c_im, w->center_re, w->center_im, w->width, w->gw,
                      w->gh, w->radius, w->max_iter);
}

static void view32(esc_view_f32 *v, const struct view *w)
{
    esc_view_init_f32(v, w->fractal, (float)w->c_re, (float)w->c_im, (float)w->center_re,
                      (float)w->center_im, (float)w->width, w->gw, w->gh, (float)w->radius,
                      w->max_iter);
}

/* Compares escape.h with the plain loops on every sample of the grid, both precisions. Returns
 * the fp64 sum of escape counts. */
static uint64_t check_grid(const struct view *w)
{
    esc_view_f64 v64;
    esc_view_f32 v32;
    uint64_t sum = 0;

    view64(&v64, w);
    view32(&v32, w);
    for (uint32_t j = 0; j < w->gh; j++) {
        for (uint32_t i = 0; i < w->gw; i++) {
            double zr, zi;
            float fr, fi;
            uint32_t n64 = esc_sample_f64(&v64, i, j, &zr, &zi);
            uint32_t n32 = esc_sample_f32(&v32, i, j, &fr, &fi);
            uint32_t p64 = plain64(w, i, j), p32 = plain32(w, i, j);
            if (n64 != p64 || n32 != p32)
                fail_msg("sample (%u, %u): fp64 %u, plain %u; fp32 %u, plain %u", i, j, n64, p64,
                         n32, p32);
            sum += n64;
        }
    }
    return sum;
}

static void test_small_views(void **state)
{
    /* The demo default (workload D) at 120x80, a zoom, and the whole Mandelbrot set. */
    struct view d = {ESC_JULIA, -0.8, 0.156, 0, 0, 3.0, 120, 80, 256, 2.0};
    struct view zoom = {ESC_JULIA, -0.8, 0.156, 0.17304, 0.23854, 0.01, 64, 48, 2000, 2.0};
    struct view m = {ESC_MANDELBROT, 0, 0, -0.5, 0, 3.0, 90, 60, 500, 2.0};
    struct view r3 = {ESC_JULIA, -0.4, 0.6, 0.1, -0.2, 2.5, 33, 17, 300, 3.0};

    (void)state;
    assert_true(check_grid(&d) > 0);
    assert_true(check_grid(&zoom) > 0);
    assert_true(check_grid(&m) > 0);
    assert_true(check_grid(&r3) > 0);
}

/* Workload A (bench/README.md) at 240x135 over the same view: every count matches the plain loop,
 * and the mean stays near A's 52 iterations per pixel. */
static void test_workload_a_reduced(void **state)
{
    struct view a = {ESC_JULIA, -0.8, 0.156, 0, 0, 3.0, 240, 135, 1000, 2.0};
    uint64_t sum;

    (void)state;
    sum = check_grid(&a);
    assert_true(sum > 240 * 135 * 30 && sum < 240 * 135 * 80);
}

static void test_mapping(void **state)
{
    esc_view_f64 v;
    esc_view_f32 f;

    (void)state;
    /* 4 x 2 grid over width 4 centred at (1, -1): s = 1, columns at 1 + (-1.5, -0.5, 0.5, 1.5),
     * rows at -1 + (0.5, -0.5): row 0 is the top. */
    esc_view_init_f64(&v, ESC_JULIA, 0, 0, 1.0, -1.0, 4.0, 4, 2, 2.0, 10);
    assert_true(esc_x_f64(&v, 0) == -0.5 && esc_x_f64(&v, 3) == 2.5);
    assert_true(esc_y_f64(&v, 0) == -0.5 && esc_y_f64(&v, 1) == -1.5);
    esc_view_init_f32(&f, ESC_JULIA, 0, 0, 1.0f, -1.0f, 4.0f, 4, 2, 2.0f, 10);
    assert_true(esc_x_f32(&f, 1) == 0.5f && esc_y_f32(&f, 1) == -1.5f);

    /* A 1 x 1 grid and the middle column of an odd grid sit exactly on the centre. */
    esc_view_init_f64(&v, ESC_JULIA, 0, 0, 0.3, 0.7, 2.0, 1, 1, 2.0, 10);
    assert_true(esc_x_f64(&v, 0) == 0.3 && esc_y_f64(&v, 0) == 0.7);
    esc_view_init_f64(&v, ESC_JULIA, 0, 0, 0.3, 0.7, 2.0, 7, 5, 2.0, 10);
    assert_true(esc_x_f64(&v, 3) == 0.3 && esc_y_f64(&v, 2) == 0.7);

    /* Symmetry about the centre, and the largest grid side (65536 px x 8 samples) stays exact
     * in float: the first and last columns are mirror images. */
    esc_view_init_f64(&v, ESC_JULIA, 0, 0, 0, 0, 3.0, 1920, 1080, 2.0, 10);
    assert_true(esc_x_f64(&v, 0) == -esc_x_f64(&v, 1919));
    assert_true(esc_y_f64(&v, 0) == -esc_y_f64(&v, 1079));
    esc_view_init_f32(&f, ESC_JULIA, 0, 0, 0, 0, 1.0f, 524288, 524288, 2.0f, 10);
    assert_true(esc_x_f32(&f, 0) == -esc_x_f32(&f, 524287));
    assert_true(esc_x_f32(&f, 0) < esc_x_f32(&f, 1));

    /* Supersampling: with n = 3 the middle sample of pixel i lands on pixel i's centre. */
    {
        esc_view_f64 p, s3;
        esc_view_init_f64(&p, ESC_JULIA, 0, 0, 0.25, 0, 3.0, 40, 30, 2.0, 10);
        esc_view_init_f64(&s3, ESC_JULIA, 0, 0, 0.25, 0, 3.0, 120, 90, 2.0, 10);
        for (uint32_t i = 0; i < 40; i++)
            assert_true(fabs(esc_x_f64(&p, i) - esc_x_f64(&s3, 3 * i + 1)) < 1e-15);
        for (uint32_t j = 0; j < 30; j++)
            assert_true(fabs(esc_y_f64(&p, j) - esc_y_f64(&s3, 3 * j + 1)) < 1e-15);
    }
}

static void test_iteration_edges(void **state)
{
    esc_view_f64 v;
    double zr, zi;
    float fr, fi;

    (void)state;
    /* max_iter 1: n is 0 (z_0 already outside) or 1 (interior). */
    esc_view_init_f64(&v, ESC_JULIA, -0.8, 0.156, 0, 0, 10.0, 10, 1, 2.0, 1);
    assert_int_equal(esc_sample_f64(&v, 0, 0, &zr, &zi), 0);   /* x = -4.5 */
    assert_int_equal(esc_sample_f64(&v, 5, 0, &zr, &zi), 1);   /* x = 0.5 */

    /* Mandelbrot z_0 = 0 never escapes at n = 0; c outside R escapes at n = 1 with z_1 = c. */
    esc_view_init_f64(&v, ESC_MANDELBROT, 0, 0, 0, 0, 10.0, 10, 1, 2.0, 100);
    assert_int_equal(esc_sample_f64(&v, 0, 0, &zr, &zi), 1);
    assert_true(zr == esc_x_f64(&v, 0) && zi == 0);

    /* The boundary: |z| == R is not an escape. c = -2 stays on 0, -2, 2, 2, ... forever. */
    zr = 0;
    zi = 0;
    assert_int_equal(esc_orbit_f64(&zr, &zi, -2.0, 0.0, 4.0, 0, 1000), 1000);

    /* Overflow: with R = 1e300, R*R is +inf and only NaN counts as escaped; the orbit gets
     * there a few steps after overflowing and the count is that step. */
    zr = 3;
    zi = 0;
    {
        uint32_t n = esc_orbit_f64(&zr, &zi, 0.0, 0.0, 1e300 * 1e300, 0, 1000);
        assert_true(n > 9 && n < 14);
        assert_true(isnan(zr) || isnan(zi));
    }
    /* Same in float with R = 1e30 (R*R overflows float), and a NaN start escapes at once. */
    fr = 3;
    fi = 0.5f;
    assert_true(esc_orbit_f32(&fr, &fi, 0.0f, 0.0f, 1e30f * 1e30f, 0, 1000) < 12);
    fr = NAN;
    fi = 0;
    assert_int_equal(esc_orbit_f32(&fr, &fi, 0.0f, 0.0f, 4.0f, 0, 1000), 0);

    /* The fixed operation order: zr' = (x2 - y2) + cr, not (x2 + cr) - y2. With zr = 4096,
     * zi = 4095.5, cr = 0.75 in float: x2 = 2^24, y2 rounds to 16773120, and the first order
     * gives 4096.75 where the second loses the 0.75 in 2^24 + 0.75. */
    fr = 4096.0f;
    fi = 4095.5f;
    assert_int_equal(esc_orbit_f32(&fr, &fi, 0.75f, 0.0f, 1e30f, 0, 1), 1);
    assert_true(fr == 4096.75f);
    assert_true(fi == 4096.0f * 4095.5f * 2.0f);
}

int test_kernels_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_views),
        cmocka_unit_test(test_workload_a_reduced),
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_iteration_edges),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
