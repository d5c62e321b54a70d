/* test_smooth.c: the smooth value of engines/smooth.h (docs/MATH.md): its definition on chosen
 * inputs, the vectorised pass against the scalar reference bit for bit (both builds), the
 * project's logarithm on the pass's wider domain, and what a user sees: no bands in the default
 * Julia image and a default-ish Mandelbrot image, where the plain formula made them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "color.h"
#include "engine_cpu.h"
#include "fastlog.h"
#include "smooth.h"
#include "spec_helpers.h"

static uint32_t rng_next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s;
}

/* Uniform in [0, 1). */
static double rng_unit(uint32_t *s)
{
    return (double)(rng_next(s) >> 8) / 16777216.0;
}

static void views(esc_view_f32 *f, esc_view_f64 *d, int fractal, uint32_t max_iter, double radius)
{
    esc_view_init_f32(f, fractal, -0.8f, 0.156f, 0.0f, 0.0f, 3.0f, 600, 400, (float)radius,
                      max_iter);
    esc_view_init_f64(d, fractal, -0.8, 0.156, 0.0, 0.0, 3.0, 600, 400, radius, max_iter);
}

/* The definition on inputs whose value is known. */
static void test_definition(void **state)
{
    esc_view_f32 vf;
    esc_view_f64 vd;
    struct smooth_f32 f;
    struct smooth_f64 d;

    (void)state;
    views(&vf, &vd, ESC_JULIA, 256, 2.0);
    smooth_init_f32(&f, &vf);
    smooth_init_f64(&d, &vd);

    /* Interior: -1 whatever z is. */
    assert_true(smooth_value_f64(&d, 256, 0.1, 0.1, 0, 0) == -1.0f);
    assert_true(smooth_value_f32(&f, 300, 5.0f, 0.0f, 0, 0) == -1.0f);

    /* c = 0, z_n = 2: the steps 2, 4, 16, 256, 65536 (k = 4, |z|^2 = 2^32 > 2^16), and
     * mu = (n + 4) + 1 - log2(ln 2^32 / ln 4) = n + 1 exactly: the potential of z^2. */
    assert_true(smooth_value_f64(&d, 7, 2.0, 0.0, 0.0, 0.0) == 8.0f);
    assert_true(smooth_value_f32(&f, 7, 0.0f, 2.0f, 0.0f, 0.0f) == 8.0f);
    /* Already past the bound: no step; |z| = 2^10 gives n + 1 - log2(10). */
    assert_true(fabsf(smooth_value_f64(&d, 7, 1024.0, 0.0, -0.8, 0.156)
                      - (float)(8.0 - log2(10.0))) < 1e-6f);
    assert_true(fabsf(smooth_value_f32(&f, 7, 1024.0f, 0.0f, -0.8f, 0.156f)
                      - (float)(8.0 - log2(10.0))) < 1e-6f);

    /* Clamped at 0: a huge |z| at n = 0 gives a negative value; NaN and inf give 0. */
    assert_true(smooth_value_f64(&d, 0, 1e100, 0.0, 0, 0) == 0.0f);
    assert_true(smooth_value_f32(&f, 0, NAN, 0.0f, 0, 0) == 0.0f);
    assert_true(smooth_value_f64(&d, 3, INFINITY, 0.0, 0, 0) == 0.0f);
    assert_true(smooth_value_f32(&f, 3, 1e30f, 1e30f, 0, 0) == 0.0f);   /* |z|^2 finite in double */
    /* An orbit that falls back inside R (|c| > R^2 - R): clamped at (n + k) + 1, never above. */
    {
        float mu = smooth_value_f64(&d, 5, 2.01, 0.0, -4.0, 0.0);   /* 2.01 -> 0.04 -> -4 -> 12 */
        assert_true(mu >= 0.0f && mu <= 5.0f + SMOOTH_EXTRA_MAX + 1.0f);
    }

    /* Decreasing in |z_n| for a fixed n. */
    {
        float prev = 1e9f;
        for (double r = 2.01; r < 6; r += 0.1) {
            float mu = smooth_value_f64(&d, 10, r, 0.0, -0.8, 0.156);
            assert_true(mu < prev);
            prev = mu;
        }
    }
}

/* The plain formula of the old definition, from z_n alone: mu = (n + 1) - log2(ln|z_n| / ln R),
 * clamped to [0, n + 1], in double with libm (the tests' stand-in for what fractald did). */
static double plain_mu(uint32_t n, double zr, double zi, double radius)
{
    double top = (double)n + 1.0;
    double mu = top - log2(0.5 * log(zr * zr + zi * zi) / log(radius));

    return !(mu > 0.0) ? 0.0 : mu > top ? top : mu;
}

/* What removes the bands: the value hardly depends on where along the orbit it is taken. For an
 * escaped z_n just outside R = 2 and |c| <= 2, mu(n, z_n) and mu(n + 1, z_n^2 + c) agree to
 * 1e-3 of an iteration (the plain formula differs by up to ~0.3 there, which this also shows). */
static void test_orbit_invariance(void **state)
{
    esc_view_f32 vf;
    esc_view_f64 vd;
    struct smooth_f32 f;
    struct smooth_f64 d;
    uint32_t seed = 4242;
    double worst = 0, worst32 = 0, worst_plain = 0;

    (void)state;
    views(&vf, &vd, ESC_MANDELBROT, 1000, 2.0);
    smooth_init_f32(&f, &vf);
    smooth_init_f64(&d, &vd);
    for (int i = 0; i < 20000; i++) {
        const double a = 2 * M_PI * rng_unit(&seed), r = 2.0 + 2.0 * rng_unit(&seed);
        const double ca = 2 * M_PI * rng_unit(&seed), cm = 2.0 * rng_unit(&seed);
        const double zr = r * cos(a), zi = r * sin(a), cr = cm * cos(ca), ci = cm * sin(ca);
        const double wr = zr * zr - zi * zi + cr, wi = 2 * zr * zi + ci;
        const uint32_t n = 5 + (uint32_t)(i % 50);
        double diff, d32;

        if (!(wr * wr + wi * wi > 4.0))
            continue;   /* z_{n+1} back inside R: not an escaped sample's next step */
        diff = fabs((double)smooth_value_f64(&d, n, zr, zi, cr, ci)
                    - (double)smooth_value_f64(&d, n + 1, wr, wi, cr, ci));
        d32 = fabs((double)smooth_value_f32(&f, n, (float)zr, (float)zi, (float)cr, (float)ci)
                   - (double)smooth_value_f32(&f, n + 1, (float)wr, (float)wi, (float)cr,
                                              (float)ci));
        worst = fmax(worst, diff);
        worst32 = fmax(worst32, d32);
        worst_plain = fmax(worst_plain, fabs(plain_mu(n, zr, zi, 2.0)
                                             - plain_mu(n + 1, wr, wi, 2.0)));
    }
    print_message("smooth: worst |mu(n, z_n) - mu(n+1, z_n+1)|: %.3g (fp64), %.3g (fp32), "
                  "%.3g with the plain formula\n", worst, worst32, worst_plain);
    assert_true(worst < 1e-3);
    assert_true(worst32 < 1e-3);
    assert_true(worst_plain > 0.1);
}

/* Fills a run of samples with counts and final z that exercise every branch of the definition:
 * ordinary escapes near R, values past the bound, interior samples, NaN, inf and huge z, and
 * (Mandelbrot) orbits that take the full SMOOTH_EXTRA_MAX steps. */
static void odd_samples(uint32_t *seed, size_t count, uint32_t max_iter, uint32_t *n, double *z)
{
    for (size_t k = 0; k < count; k++) {
        const uint32_t r = rng_next(seed);
        const double a = 2 * M_PI * rng_unit(seed), m = 2.0 + 3.0 * rng_unit(seed);

        n[k] = r % 7 == 0 ? max_iter : r % max_iter;
        z[2 * k] = m * cos(a);
        z[2 * k + 1] = m * sin(a);
        switch (r % 23) {
        case 1: z[2 * k] = NAN; break;
        case 2: z[2 * k + 1] = INFINITY; break;
        case 3: z[2 * k] = 1e30 * rng_unit(seed); break;
        case 4: z[2 * k] = 255.9 + rng_unit(seed); z[2 * k + 1] = 0; break;   /* at the bound */
        case 5: z[2 * k] = 2.0000001; z[2 * k + 1] = 0; break;   /* slow growth for c ~ -2 */
        case 6: z[2 * k] = -0.0; z[2 * k + 1] = 0; break;
        default: break;
        }
    }
}

/* smooth_rect_* (the pass, in batches of SMOOTH_BATCH with a partial one at the end) against
 * smooth_sample_* (the scalar reference), bit for bit, for Julia and Mandelbrot, fp32 and fp64,
 * the AVX2 build and the baseline one. */
static void test_pass_matches_reference(void **state)
{
    static const size_t counts[] = {1, 63, 64, 65, 200, 1000};
    const char *old = getenv("FRACTALD_CPU_ISA");
    char *saved = old ? strdup(old) : NULL;
    uint32_t seed = 99;
    size_t checked = 0;

    (void)state;
    for (int isa = 0; isa < 2; isa++) {
        if (isa)
            setenv("FRACTALD_CPU_ISA", "base", 1);
        for (int fractal = 0; fractal < 2; fractal++) {
            for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
                const size_t count = counts[c];
                const uint32_t width = 37, x0 = 11, y0 = 5, max_iter = 300;
                uint32_t *n = malloc(count * sizeof(*n));
                double *z = malloc(2 * count * sizeof(*z));
                float *z32 = malloc(2 * count * sizeof(*z32));
                float *got = malloc(count * sizeof(*got));
                esc_view_f32 vf;
                esc_view_f64 vd;
                struct smooth_f32 f;
                struct smooth_f64 d;

                assert_non_null(n);
                assert_non_null(z);
                assert_non_null(z32);
                assert_non_null(got);
                esc_view_init_f32(&vf, fractal, -0.8f, 0.156f, -0.5f, 0.0f, 3.0f, 600, 400, 2.0f,
                                  max_iter);
                esc_view_init_f64(&vd, fractal, -0.8, 0.156, -0.5, 0.0, 3.0, 600, 400, 2.0,
                                  max_iter);
                smooth_init_f32(&f, &vf);
                smooth_init_f64(&d, &vd);
                odd_samples(&seed, count, max_iter, n, z);
                for (size_t k = 0; k < 2 * count; k++)
                    z32[k] = (float)z[k];

                smooth_rect_f64(&vd, x0, y0, width, count, n, z, got);
                for (size_t k = 0; k < count; k++) {
                    const uint32_t i = x0 + (uint32_t)(k % width), j = y0 + (uint32_t)(k / width);
                    const float want = smooth_sample_f64(&d, i, j, n[k], z[2 * k], z[2 * k + 1]);

                    if (memcmp(&want, &got[k], sizeof(want)) != 0)
                        fail_msg("fp64 %s isa=%s count %zu sample %zu: pass %.9g, reference %.9g",
                                 fractal ? "mandelbrot" : "julia", isa ? "base" : "widest", count,
                                 k, (double)got[k], (double)want);
                }
                smooth_rect_f32(&vf, x0, y0, width, count, n, z32, got);
                for (size_t k = 0; k < count; k++) {
                    const uint32_t i = x0 + (uint32_t)(k % width), j = y0 + (uint32_t)(k / width);
                    const float want = smooth_sample_f32(&f, i, j, n[k], z32[2 * k],
                                                         z32[2 * k + 1]);

                    if (memcmp(&want, &got[k], sizeof(want)) != 0)
                        fail_msg("fp32 %s isa=%s count %zu sample %zu: pass %.9g, reference %.9g",
                                 fractal ? "mandelbrot" : "julia", isa ? "base" : "widest", count,
                                 k, (double)got[k], (double)want);
                }
                checked += 2 * count;
                free(n);
                free(z);
                free(z32);
                free(got);
            }
        }
    }
    if (saved) {
        setenv("FRACTALD_CPU_ISA", saved, 1);
        free(saved);
    } else {
        unsetenv("FRACTALD_CPU_ISA");
    }
    assert_true(checked > 10000);
}

/* fastlog.h on the smooth value's domain (any double >= 1, not only 1 + float), as its comment
 * states: within 1 ulp of logl() from 4 on, 1.5 ulp on [2, 4), 2^-44 relative on [1, 2). */
static void test_fastlog_wide_domain(void **state)
{
    uint32_t seed = 5;
    double worst_ulp = 0, worst_ulp24 = 0, worst_rel = 0;

    (void)state;
    for (int i = 0; i < 400000; i++) {
        const uint64_t bits = ((uint64_t)rng_next(&seed) << 32) | rng_next(&seed);
        /* full 52-bit fractions; exponents 0 (a quarter), 1 (a quarter), 0..1023 */
        const int e = i % 4 < 2 ? i % 4 : (int)(rng_next(&seed) % 1024);
        const double x = ldexp(fastlog_double((bits & 0xFFFFFFFFFFFFFu) | 0x3FF0000000000000u), e);
        const double got = fastlog_ln(x);
        const long double want = logl((long double)x);

        if (x >= 2.0) {
            const double ulp = nextafter(fabs(got), INFINITY) - fabs(got);
            const double err = (double)(fabsl((long double)got - want) / ulp);

            if (x >= 4.0)
                worst_ulp = fmax(worst_ulp, err);
            else
                worst_ulp24 = fmax(worst_ulp24, err);
        } else if (want > 0) {
            worst_rel = fmax(worst_rel, (double)(fabsl((long double)got - want) / want));
        }
    }
    print_message("fastlog: worst %.3f ulp on [4, 2^1024), %.3f on [2, 4), %.3g relative on "
                  "[1, 2)\n", worst_ulp, worst_ulp24, worst_rel);
    assert_true(worst_ulp <= 1.0);
    assert_true(worst_ulp24 <= 1.501);   /* 1.5 ulp and the core's 2^-12 */
    assert_true(worst_rel <= 0x1p-44);
    assert_true(fastlog_ln(1.0) == 0.0);
    assert_true(fastlog_ln(4.0) == (double)logl(4.0L));
}

/*
 * Banding, as a user sees it: the largest step of the 8-bit palette coordinate, round(255 t) with
 * t = color_coordinate() of the default colouring (log-scaled, as the default PNG), between
 * neighbouring pixels of a smooth region. A pixel pair (right or lower neighbour) counts when
 * both pixels and every pixel of the 5 x 5 windows around them escaped and the counts in those
 * windows span at most 2: away from the set and its boundary, where counts change fast and the
 * colour may change fast too, and across the escape-count boundaries where the plain formula
 * jumps. Computed for the engine's smooth values and for the plain formula from the same z_n.
 */
struct band_result {
    int new_step, plain_step;
    size_t pairs;
};

static int level_of(const struct spec_coloring *col, uint32_t max_iter, float mu)
{
    return (int)lround(255.0 * color_coordinate(col, max_iter, mu));
}

static struct band_result band_steps(const struct render_spec *s)
{
    const uint32_t w = s->width, h = s->height;
    const size_t np = (size_t)w * h;
    uint32_t *counts = malloc(np * sizeof(*counts));
    float *mu = malloc(np * sizeof(*mu));
    int *lv_new = malloc(np * sizeof(int)), *lv_plain = malloc(np * sizeof(int));
    unsigned char *smooth_px = malloc(np);
    struct spec_coloring col;
    struct band_result res = {0, 0, 0};
    engine_cpu *engine = NULL;
    esc_view_f32 v;

    assert_non_null(counts);
    assert_non_null(mu);
    assert_non_null(lv_new);
    assert_non_null(lv_plain);
    assert_non_null(smooth_px);
    memset(&col, 0, sizeof(col));
    assert_int_equal(color_palette_load(&col, "inferno"), 0);
    assert_int_equal(engine_cpu_new(&engine, 0), 0);
    assert_int_equal(engine_cpu_render(engine, s, &s->region, counts, mu, NULL, NULL), 0);
    engine_cpu_free(engine);

    /* The plain formula needs z_n, which the engine does not return: the scalar reference. */
    esc_view_init_f32(&v, (int)s->fractal, (float)s->c_re, (float)s->c_im, (float)s->center_re,
                      (float)s->center_im, (float)s->view_width, w, h, (float)s->escape_radius,
                      s->max_iter);
    for (uint32_t j = 0; j < h; j++)
        for (uint32_t i = 0; i < w; i++) {
            const size_t p = (size_t)j * w + i;
            float zr, zi;
            uint32_t n = esc_sample_f32(&v, i, j, &zr, &zi);

            assert_int_equal(n, counts[p]);
            lv_new[p] = level_of(&col, s->max_iter, mu[p]);
            lv_plain[p] = n >= s->max_iter
                              ? -1
                              : level_of(&col, s->max_iter,
                                         (float)plain_mu(n, zr, zi, s->escape_radius));
        }
    for (uint32_t j = 0; j < h; j++)
        for (uint32_t i = 0; i < w; i++) {
            uint32_t lo = UINT32_MAX, hi = 0;

            for (int dj = -2; dj <= 2; dj++)
                for (int di = -2; di <= 2; di++) {
                    const int64_t y = (int64_t)j + dj, x = (int64_t)i + di;
                    uint32_t n;

                    if (x < 0 || y < 0 || x >= w || y >= h)
                        continue;
                    n = counts[(size_t)y * w + (size_t)x];
                    lo = n < lo ? n : lo;
                    hi = n > hi ? n : hi;
                }
            smooth_px[(size_t)j * w + i] = hi < s->max_iter && hi - lo <= 2;
        }
    for (uint32_t j = 0; j < h; j++)
        for (uint32_t i = 0; i < w; i++) {
            const size_t p = (size_t)j * w + i;
            const size_t nb[2] = {i + 1 < w ? p + 1 : p, j + 1 < h ? p + w : p};

            for (int b = 0; b < 2; b++) {
                const size_t q = nb[b];

                if (q == p || !smooth_px[p] || !smooth_px[q])
                    continue;
                res.pairs++;
                res.new_step = abs(lv_new[p] - lv_new[q]) > res.new_step
                                   ? abs(lv_new[p] - lv_new[q]) : res.new_step;
                res.plain_step = abs(lv_plain[p] - lv_plain[q]) > res.plain_step
                                     ? abs(lv_plain[p] - lv_plain[q]) : res.plain_step;
            }
        }
    free(counts);
    free(mu);
    free(lv_new);
    free(lv_plain);
    free(smooth_px);
    return res;
}

/* The default image (an empty RenderRequest: docs/MATH.md "Defaults"), which resolves to fp32. */
static void test_no_bands_default_julia(void **state)
{
    struct render_spec s = make_spec(SPEC_JULIA, -0.8, 0.156, 0.0, 0.0, 3.0, 600, 400, 256, 2.0,
                                     SPEC_FP32, 1);
    struct band_result r;

    (void)state;
    r = band_steps(&s);
    print_message("smooth: default Julia: largest step %d levels (plain formula %d) over %zu "
                  "pairs\n", r.new_step, r.plain_step, r.pairs);
    assert_true(r.pairs > 100000);
    assert_true(r.new_step <= 3);
    /* The plain formula fails this test here too, if narrowly: Julia's |c| = 0.82 is small and
     * its background starts at mu ~ 2-7, where the log-scaled palette is flatter. */
    assert_true(r.plain_step > 3);
}

/* The whole Mandelbrot set, centre -0.5, width 3, at the default size and iterations. */
static void test_no_bands_mandelbrot(void **state)
{
    struct render_spec s = make_spec(SPEC_MANDELBROT, 0.0, 0.0, -0.5, 0.0, 3.0, 600, 400, 256, 2.0,
                                     SPEC_FP32, 1);
    struct band_result r;

    (void)state;
    r = band_steps(&s);
    print_message("smooth: Mandelbrot: largest step %d levels (plain formula %d) over %zu pairs\n",
                  r.new_step, r.plain_step, r.pairs);
    assert_true(r.pairs > 100000);
    assert_true(r.new_step <= 3);
    assert_true(r.plain_step >= 12);   /* the arcs this test exists for */
}

int test_smooth_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_definition),
        cmocka_unit_test(test_orbit_invariance),
        cmocka_unit_test(test_pass_matches_reference),
        cmocka_unit_test(test_fastlog_wide_domain),
        cmocka_unit_test(test_no_bands_default_julia),
        cmocka_unit_test(test_no_bands_mandelbrot),
    };
    return cmocka_run_group_tests_name("smooth", tests, NULL, NULL);
}
