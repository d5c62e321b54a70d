/* test_rect_fill.c: the rectangle-fill layer (server/engines/rect_fill.c) against brute force on the
 * CPU engine, sample by sample, on views that stress it: filaments across box borders, the
 * Mandelbrot cusp, escaping specks in interior, c just inside and outside the set, both precisions,
 * supersampled grids, regions, strips as the scheduler cuts them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "devices.h"
#include "engine_cpu.h"
#include "err.h"
#include "rect_fill.h"
#include "spec_helpers.h"

static engine_cpu *engine;

/* A Mandelbrot view (600x400) on which the fill is wrong on a few samples in fp64: escaping hairs
 * cross box borders between samples. Found by search; any such view will do. */
#define DIFF_VIEW_RE 0.20043615904424816
#define DIFF_VIEW_IM 0.54317852949518808
#define DIFF_VIEW_WIDTH 0.0079432823472428138
#define DIFF_VIEW_ITER 770

/* The CPU engine as a device, counting what it is asked to compute. */
static atomic_ullong counted_samples, counted_calls;
static int counting_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                           uint32_t *counts, float *smooth, const atomic_int *cancel,
                           struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    atomic_fetch_add(&counted_samples, (unsigned long long)rect->width * rect->height);
    atomic_fetch_add(&counted_calls, 1);
    return devices_cpu_ops.render(backend, spec, rect, counts, smooth, cancel, stats, msg, msglen);
}
static const struct device_ops counting_ops = {counting_render, NULL};

/* A fake device whose every sample has count `fake_count` (smooth 0.5, or -1 at max_iter). */
static uint32_t fake_count;
static int fake_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                       uint32_t *counts, float *smooth, const atomic_int *cancel,
                       struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    size_t n = (size_t)rect->width * rect->height;
    (void)backend, (void)cancel, (void)msg, (void)msglen;
    atomic_fetch_add(&counted_samples, (unsigned long long)n);
    atomic_fetch_add(&counted_calls, 1);
    for (size_t k = 0; k < n; k++) {
        if (counts)
            counts[k] = fake_count;
        if (smooth)
            smooth[k] = fake_count >= spec->max_iter ? -1.0f : 0.5f;
    }
    stats->iterations = (uint64_t)n * fake_count;
    stats->tiles = 1;
    return 0;
}
static const struct device_ops fake_ops = {fake_render, NULL};

static int setup(void **state)
{
    (void)state;
    return engine_cpu_new(&engine, 2);
}

static int teardown(void **state)
{
    (void)state;
    engine_cpu_free(engine);
    return 0;
}

/* What one comparison found. */
struct outcome {
    size_t samples, differ, wrong_fill;
    unsigned long long computed, calls;
};

/* Renders `rect` by brute force (one engine call) and through the layer in strips of
 * `strip_rows` rows, as the scheduler cuts them, with counts and/or smooth values. Asserts:
 * every sample the two disagree on is one the layer filled as interior (count max_iter, smooth -1),
 * smooth values are bit-identical wherever the counts agree, and the layer's iteration total is
 * the sum of its counts. */
static struct outcome compare(const struct render_spec *spec, struct spec_rect rect, uint32_t strip_rows,
                              bool want_counts, bool want_smooth)
{
    size_t n = (size_t)rect.width * rect.height;
    uint32_t *cb = malloc(n * sizeof(*cb)), *cf = want_counts ? malloc(n * sizeof(*cf)) : NULL;
    float *sb = malloc(n * sizeof(*sb)), *sf = want_smooth ? malloc(n * sizeof(*sf)) : NULL;
    struct engine_cpu_stats st;
    struct outcome o = {n, 0, 0, 0, 0};
    uint64_t iterations = 0, sum = 0;
    char msg[256] = "";

    assert_non_null(cb);
    assert_non_null(sb);
    assert_int_equal(engine_cpu_render(engine, spec, &rect, cb, sb, NULL, &st), 0);
    atomic_store(&counted_samples, 0);
    atomic_store(&counted_calls, 0);
    for (uint32_t y = 0; y < rect.height; y += strip_rows) {
        struct spec_rect strip = {rect.x, rect.y + y, rect.width,
                                  rect.height - y < strip_rows ? rect.height - y : strip_rows};
        struct rect_fill rf;
        size_t off = (size_t)y * rect.width;
        rect_fill_init(&rf, &counting_ops, engine);
        st = (struct engine_cpu_stats){0, 0};
        assert_int_equal(rect_fill_render(&rf, spec, &strip, cf ? cf + off : NULL, sf ? sf + off : NULL, NULL,
                                          &st, msg, sizeof(msg)), 0);
        /* Borders of boxes cut by the strip are computed outside it too. */
        assert_true(rf.samples_computed + rf.samples_filled >= (uint64_t)strip.width * strip.height);
        assert_true(rf.samples_filled <= (uint64_t)strip.width * strip.height);
        iterations += st.iterations;
    }
    o.computed = atomic_load(&counted_samples);
    o.calls = atomic_load(&counted_calls);
    for (size_t k = 0; k < n; k++) {
        bool filled_interior = cf ? cf[k] == spec->max_iter : sf[k] == -1.0f;
        bool same = cf ? cf[k] == cb[k] : memcmp(&sf[k], &sb[k], sizeof(float)) == 0;
        if (cf && sf && cf[k] == cb[k] && memcmp(&sf[k], &sb[k], sizeof(float)) != 0)
            fail_msg("sample %zu: count %u agrees but smooth %a != %a", k, cf[k], sf[k], sb[k]);
        if (cf && sf && filled_interior && sf[k] != -1.0f)
            fail_msg("sample %zu: interior count with smooth %a", k, sf[k]);
        sum += cf ? cf[k] : filled_interior ? spec->max_iter : cb[k];
        if (same)
            continue;
        o.differ++;
        if (!filled_interior)
            fail_msg("sample %zu: the layer wrote %u / %a where brute force has %u / %a: only interior may be filled",
                     k, cf ? cf[k] : 0, sf ? sf[k] : 0.0f, cb[k], sb[k]);
        /* Interior written where brute force escapes: a wrong fill. */
        o.wrong_fill++;
    }
    assert_true(iterations == sum);
    free(cb);
    free(cf);
    free(sb);
    free(sf);
    return o;
}

/* At least 99.99 % identical, and wrong fills no more often than that. */
static void assert_close(const struct outcome *o, const char *what)
{
    if (o->differ * 10000 > o->samples || o->wrong_fill * 10000 > o->samples)
        fail_msg("%s: %zu of %zu samples differ (%zu wrongly filled as interior)", what, o->differ, o->samples,
                 o->wrong_fill);
}

/* Workload C's view (Julia c = -0.12+0.75i, mostly interior) at 960x540: identical within the
 * tolerance in both precisions, in strips as the scheduler cuts them and in strips that cut the
 * fill's bands, and with aligned strips the device computes under 90 % of the samples (the
 * interior is 24 % of them). */
static void test_interior_view(void **state)
{
    (void)state;
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 960, 540, 3000, 2.0, p, 1);
        /* 34 rows: a strip that cuts the fill's bands (the scheduler aligns them). */
        const uint32_t strips[] = {64, 128, 540, 34};
        s.rect_fill = true;
        for (size_t i = 0; i < sizeof(strips) / sizeof(strips[0]); i++) {
            struct outcome o = compare(&s, grid_of(&s), strips[i], true, true);
            assert_close(&o, "rabbit");
            if (strips[i] % RECT_FILL_BAND_ROWS == 0 && o.computed * 10 > o.samples * 9)
                fail_msg("strips of %u rows: the layer computed %llu of %zu samples", strips[i], o.computed,
                         o.samples);
        }
    }
}

/* The Mandelbrot cusp at -0.75 (the seahorse valley's pinch, whose escaping wedge narrows to
 * nothing between interior on both sides) and the cardioid cusp at 0.25, with its filaments. */
static void test_cusps(void **state)
{
    (void)state;
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec a = make_spec(SPEC_MANDELBROT, 0, 0, -0.75, 0.0, 0.02, 400, 300, 4000, 2.0, p, 1);
        struct render_spec b = make_spec(SPEC_MANDELBROT, 0, 0, 0.26, 0.0, 0.03, 400, 300, 4000, 2.0, p, 1);
        struct outcome o;
        a.rect_fill = b.rect_fill = true;
        o = compare(&a, grid_of(&a), 34, true, true);
        assert_close(&o, "cusp -0.75");
        assert_true(o.computed < o.samples);
        o = compare(&b, grid_of(&b), 64, true, false);
        assert_close(&o, "cusp 0.25");
    }
}

/* Filaments: the whole Mandelbrot set and the junction of the period-3 bulb, where hairs of
 * escaping samples cross box borders between samples; supersampled (the rectangle is in
 * sample-grid coordinates), smooth values only, as a PNG render asks for them. */
static void test_filaments_supersampled(void **state)
{
    (void)state;
    struct render_spec s = make_spec(SPEC_MANDELBROT, 0, 0, -0.5, 0.0, 3.0, 300, 200, 2000, 2.0, SPEC_FP32, 3);
    struct render_spec j = make_spec(SPEC_MANDELBROT, 0, 0, -0.1226, 0.7449, 0.01, 240, 160, 3000, 2.0,
                                     SPEC_FP64, 2);
    struct outcome o;

    s.rect_fill = j.rect_fill = true;
    o = compare(&s, grid_of(&s), 64, false, true);
    assert_close(&o, "mandelbrot, supersample 3");
    assert_true(o.computed * 10 < o.samples * 9);
    o = compare(&j, grid_of(&j), 40, true, true);
    assert_close(&o, "period-3 junction, supersample 2");
}

/* c just inside the set (the rabbit's neighbour and the cusp c = 0.2499) and just outside
 * (c = 0.2501: a dust whose points escape after thousands of iterations), and workload A's
 * Julia set, whose interior is specks among escaping samples. */
static void test_c_near_boundary(void **state)
{
    (void)state;
    const double cs[][2] = {{0.2499, 0.0}, {0.2501, 0.0}, {-0.75, 0.02}, {-0.8, 0.156}, {-0.1225, 0.7449}};
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec s = make_spec(SPEC_JULIA, cs[i][0], cs[i][1], 0, 0, 3.0, 480, 270, 2000, 2.0, p, 1);
            struct outcome o;
            char what[64];
            s.rect_fill = true;
            o = compare(&s, grid_of(&s), 34, true, true);
            snprintf(what, sizeof(what), "julia c = %g%+gi", cs[i][0], cs[i][1]);
            assert_close(&o, what);
        }
}

/* Escaping specks inside interior: the main cardioid's boundary at a high max_iter, where single
 * escaping samples sit among interior ones; and a region of the rabbit's grid (offset rectangle),
 * so the layer maps its pieces into the grid correctly. */
static void test_specks_and_regions(void **state)
{
    (void)state;
    struct render_spec s = make_spec(SPEC_MANDELBROT, 0, 0, 0.3, 0.5, 0.08, 320, 320, 20000, 2.0, SPEC_FP64, 1);
    struct render_spec r = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 960, 540, 2000, 2.0, SPEC_FP32, 2);
    struct outcome o;

    s.rect_fill = r.rect_fill = true;
    o = compare(&s, grid_of(&s), 32, true, true);
    assert_close(&o, "cardioid boundary");
    o = compare(&r, (struct spec_rect){517, 301, 700, 400}, 45, true, true);
    assert_close(&o, "region of a supersampled grid");
    assert_true(o.computed * 10 < o.samples * 9);
}

/* The counts the layer writes for `rect`, cut into strips of `strip_rows` rows and, when
 * split_col is nonzero, into a left and a right part at that column. */
static void fill_counts(const struct render_spec *spec, struct spec_rect rect, uint32_t strip_rows,
                        uint32_t split_col, uint32_t *out)
{
    char msg[256] = "";

    for (uint32_t y = 0; y < rect.height; y += strip_rows) {
        uint32_t h = rect.height - y < strip_rows ? rect.height - y : strip_rows;
        uint32_t cut = split_col ? split_col : rect.width;
        struct spec_rect parts[2] = {{rect.x, rect.y + y, cut, h}, {rect.x + cut, rect.y + y, rect.width - cut, h}};
        for (int p = 0; p < 2; p++) {
            uint32_t *buf = malloc((size_t)parts[p].width * h * sizeof(*buf) + 1);
            struct engine_cpu_stats st;
            struct rect_fill rf;
            if (parts[p].width == 0) {
                free(buf);
                continue;
            }
            assert_non_null(buf);
            rect_fill_init(&rf, &devices_cpu_ops, engine);
            assert_int_equal(rect_fill_render(&rf, spec, &parts[p], buf, NULL, NULL, &st, msg, sizeof(msg)), 0);
            for (uint32_t r = 0; r < h; r++)
                memcpy(out + (size_t)(y + r) * rect.width + (parts[p].x - rect.x), buf + (size_t)r * parts[p].width,
                       parts[p].width * sizeof(*buf));
            free(buf);
        }
    }
}

/* A sample's value does not depend on how the grid is cut: strips of any height, regions, left
 * and right parts give the very same counts, on a view where the fill is wrong on some samples
 * (so a cut-dependent decision would show), in both precisions. */
static void test_cut_independent(void **state)
{
    (void)state;
    for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
        struct render_spec s = make_spec(SPEC_MANDELBROT, 0, 0, DIFF_VIEW_RE, DIFF_VIEW_IM, DIFF_VIEW_WIDTH, 600, 400,
                                         DIFF_VIEW_ITER, 2.0, p, 1);
        struct spec_rect whole = grid_of(&s), region = {173, 61, 300, 250};
        const uint32_t strips[] = {1, 7, 34, 64, 100, 128, 400};
        size_t n = (size_t)600 * 400, nr = (size_t)300 * 250, differ = 0;
        uint32_t *ref = malloc(n * sizeof(*ref)), *got = malloc(n * sizeof(*got)), *brute = malloc(n * sizeof(*brute));
        struct engine_cpu_stats st;
        s.rect_fill = true;
        assert_int_equal(engine_cpu_render(engine, &s, &whole, brute, NULL, NULL, &st), 0);
        fill_counts(&s, whole, 400, 0, ref);
        for (size_t k = 0; k < n; k++)
            differ += ref[k] != brute[k];
        if (p == SPEC_FP64)
            assert_true(differ > 0); /* the view stresses the fill (else pick another) */
        for (size_t i = 0; i < sizeof(strips) / sizeof(strips[0]); i++) {
            fill_counts(&s, whole, strips[i], i % 2 ? 0 : 301, got);
            if (memcmp(got, ref, n * sizeof(*got)) != 0)
                fail_msg("strips of %u rows give other counts than the whole grid", strips[i]);
            fill_counts(&s, region, strips[i], i % 2 ? 100 : 0, got);
            for (size_t k = 0; k < nr; k++)
                if (got[k] != ref[(size_t)(region.y + k / 300) * 600 + region.x + k % 300])
                    fail_msg("region, strips of %u rows: sample %zu differs from the whole grid's", strips[i], k);
        }
        free(ref);
        free(got);
        free(brute);
    }
}

/* rect_fill false is brute force exactly: one device call per strip, every sample computed. */
static void test_off_is_brute(void **state)
{
    (void)state;
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 480, 270, 2000, 2.0, SPEC_FP32, 1);
    struct outcome o;

    s.rect_fill = false;
    o = compare(&s, grid_of(&s), 34, true, true);
    assert_int_equal(o.differ, 0);
    assert_int_equal(o.computed, o.samples);
    assert_int_equal(o.calls, (270 + 33) / 34);
}

/* Uniform devices: equal non-interior counts are never filled (every sample computed); all
 * interior is filled, with the iteration total of brute force. */
static void test_uniform_devices(void **state)
{
    (void)state;
    struct render_spec s = make_spec(SPEC_JULIA, 0, 0, 0, 0, 3.0, 256, 128, 100, 2.0, SPEC_FP32, 1);
    struct spec_rect rect = grid_of(&s);
    uint32_t *counts = malloc((size_t)256 * 128 * sizeof(*counts));
    float *smooth = malloc((size_t)256 * 128 * sizeof(*smooth));
    struct engine_cpu_stats st;
    struct rect_fill rf;
    char msg[64];

    s.rect_fill = true;
    fake_count = 7;
    rect_fill_init(&rf, &fake_ops, NULL);
    assert_int_equal(rect_fill_render(&rf, &s, &rect, counts, smooth, NULL, &st, msg, sizeof(msg)), 0);
    assert_int_equal(rf.samples_filled, 0);
    assert_int_equal(rf.samples_computed, 256 * 128);
    for (size_t k = 0; k < 256 * 128; k++)
        assert_int_equal(counts[k], 7);

    fake_count = 100;
    rect_fill_init(&rf, &fake_ops, NULL);
    assert_int_equal(rect_fill_render(&rf, &s, &rect, NULL, smooth, NULL, &st, msg, sizeof(msg)), 0);
    assert_true(rf.samples_filled > 256 * 128 * 9 / 10);
    assert_true(rf.device_calls <= 8);
    assert_true(st.iterations == (uint64_t)256 * 128 * 100);
    for (size_t k = 0; k < 256 * 128; k++)
        assert_true(smooth[k] == -1.0f);
    free(counts);
    free(smooth);
}

/* A raised cancel flag ends the render with ERR_CANCELLED before any device call. */
static void test_cancel(void **state)
{
    (void)state;
    struct render_spec s = make_spec(SPEC_JULIA, -0.12, 0.75, 0, 0, 3.0, 256, 128, 1000, 2.0, SPEC_FP32, 1);
    struct spec_rect rect = grid_of(&s);
    uint32_t *counts = malloc((size_t)256 * 128 * sizeof(*counts));
    struct engine_cpu_stats st;
    struct rect_fill rf;
    atomic_int cancel;
    char msg[64];

    atomic_init(&cancel, 1);
    s.rect_fill = true;
    rect_fill_init(&rf, &devices_cpu_ops, engine);
    assert_int_equal(rect_fill_render(&rf, &s, &rect, counts, NULL, &cancel, &st, msg, sizeof(msg)), ERR_CANCELLED);
    assert_int_equal(rf.device_calls, 0);
    free(counts);
}

int test_rect_fill_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interior_view),
        cmocka_unit_test(test_cusps),
        cmocka_unit_test(test_filaments_supersampled),
        cmocka_unit_test(test_c_near_boundary),
        cmocka_unit_test(test_specks_and_regions),
        cmocka_unit_test(test_cut_independent),
        cmocka_unit_test(test_off_is_brute),
        cmocka_unit_test(test_uniform_devices),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests_name("rect_fill", tests, setup, teardown);
}
