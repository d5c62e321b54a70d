/* test_deep.c: the deep-zoom engine (server/deep) against a brute-force MPFR renderer
 * (mpfr_brute.c) on deep views of both fractals (Julia: the dendrite c and the default c, where
 * the engine's exact recomputation must take over), fp64 against extended deltas, rebasing on
 * and off, shallow views against the fp64 CPU engine, and cancellation.
 *   deep_tests            every case
 *   deep_tests FILTER     the cases whose name matches FILTER (a cmocka glob: "*julia*")
 * DEEP_TEST_PGM=DIR writes every compared image there as a PGM, to look at the views. The whole
 * runner takes ~17 s of CPU (~29 s of wall time on two cores shared with other work), ~45 s
 * under ASan + UBSan on the same busy box; the brute force dominates, and the default-c views add
 * ~3.5 s of CPU, most of it julia_default_1e400's. */
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
#include "deep_internal.h"
#include "deep_points.h"
#include "engine_cpu.h"
#include "err.h"
#include "mpfr_brute.h"
#include "xfloat.h"

/* The fraction of matching counts the engine must reach against the brute force. */
#define MATCH_MIN 0.999

/* Brute-force images are 48x48 samples: 2304 pixels, so 0.1 % is 2 pixels. */
static uint32_t brute_side(void)
{
    return 48;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A side x side view; Julia's c is (c_re, c_im). */
static struct deep_view make_view_c(enum spec_fractal fractal, const char *re, const char *im,
                                    double c_re, double c_im, const char *width, uint32_t side,
                                    uint32_t max_iter)
{
    struct deep_view v;
    double l2s, l2m;
    char msg[160];

    memset(&v, 0, sizeof(v));
    v.fractal = fractal;
    v.center_re = re;
    v.center_im = im;
    v.width = width;
    v.c_re = c_re;
    v.c_im = c_im;
    v.grid_w = side;
    v.grid_h = side;
    v.max_iter = max_iter;
    v.escape_radius = 2.0;
    if (deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)) == 0)
        v.mode = deep_mode_for(l2s);
    return v;
}

/* A view with JULIA's c. */
static struct deep_view make_view(enum spec_fractal fractal, const char *re, const char *im,
                                  const char *width, uint32_t side, uint32_t max_iter)
{
    return make_view_c(fractal, re, im, JULIA_C_RE, JULIA_C_IM, width, side, max_iter);
}

/* Writes counts as a PGM under $DEEP_TEST_PGM (nothing without it): grey from the smallest to
 * the largest escaped count (deep views span a few dozen counts above a large floor), interior
 * black. */
static void dump_pgm(const char *name, const uint32_t *counts, uint32_t w, uint32_t h,
                     uint32_t max_iter)
{
    const char *dir = getenv("DEEP_TEST_PGM");
    uint32_t lo = UINT32_MAX, hi = 0;
    char path[512];
    FILE *f;

    if (dir == NULL)
        return;
    for (size_t k = 0; k < (size_t)w * h; k++)
        if (counts[k] < max_iter) {
            lo = counts[k] < lo ? counts[k] : lo;
            hi = counts[k] > hi ? counts[k] : hi;
        }
    snprintf(path, sizeof(path), "%s/%s.pgm", dir, name);
    if ((f = fopen(path, "wb")) == NULL)
        return;
    fprintf(f, "P5\n%u %u\n255\n", w, h);
    for (size_t k = 0; k < (size_t)w * h; k++)
        fputc(counts[k] >= max_iter ? 0 : (int)(40 + 215.0 * (counts[k] - lo) / (hi - lo + 1)), f);
    fclose(f);
}

/* Renders view with the engine (opts, NULL for the defaults) into a new array. */
static uint32_t *engine_counts(const struct deep_view *v, const struct deep_render_opts *opts,
                               struct deep_stats *st)
{
    struct spec_rect r = {0, 0, v->grid_w, v->grid_h};
    uint32_t *counts = malloc((size_t)v->grid_w * v->grid_h * sizeof(uint32_t));
    float *smooth = malloc((size_t)v->grid_w * v->grid_h * sizeof(float));
    deep_ref *ref = NULL;
    char msg[160] = "";
    int err;

    assert_non_null(counts);
    assert_non_null(smooth);
    err = deep_ref_new(&ref, v, NULL, msg, sizeof(msg));
    if (err != 0)
        fail_msg("deep_ref_new: %d %s", err, msg);
    assert_int_equal(deep_render_opts(ref, v, &r, counts, smooth, NULL, 2, st, opts), 0);
    /* Smooth values where the count says: -1 inside, finite and >= 0 outside. */
    for (size_t k = 0; k < (size_t)v->grid_w * v->grid_h; k++) {
        if (counts[k] >= v->max_iter)
            assert_true(smooth[k] == -1.0f);
        else
            assert_true(smooth[k] >= 0.0f && isfinite(smooth[k]));
    }
    deep_ref_unref(ref);
    free(smooth);
    return counts;
}

static double fraction_equal(const uint32_t *a, const uint32_t *b, size_t n)
{
    size_t same = 0;

    for (size_t k = 0; k < n; k++)
        same += a[k] == b[k];
    return (double)same / (double)n;
}

/* Escape counts spread over the image: the view shows structure, not a flat field. Returns the
 * number of distinct counts. */
static size_t distinct_counts(const uint32_t *c, size_t n)
{
    uint32_t *s = malloc(n * sizeof(*s));
    size_t d = 0;

    assert_non_null(s);
    memcpy(s, c, n * sizeof(*s));
    for (size_t i = 1; i < n; i++) {          /* insertion sort: n is a few thousand */
        uint32_t x = s[i];
        size_t j = i;
        while (j > 0 && s[j - 1] > x) {
            s[j] = s[j - 1];
            j--;
        }
        s[j] = x;
    }
    for (size_t i = 0; i < n; i++)
        d += i == 0 || s[i] != s[i - 1];
    free(s);
    return d;
}

/*
 * The engine against the brute force on one view of Julia's c = (c_re, c_im); prints and asserts
 * the matching fraction. exact_needed: the view is one where double deltas lose counts, so the
 * engine without its exact recomputation must fall below MATCH_MIN (else the recomputation is
 * not what this view tests).
 */
static void check_brute_c(const char *name, enum spec_fractal fractal, const char *re,
                          const char *im, double c_re, double c_im, const char *width,
                          uint32_t max_iter, enum deep_mode want_mode, int exact_needed)
{
    uint32_t side = brute_side();
    struct deep_view v = make_view_c(fractal, re, im, c_re, c_im, width, side, max_iter);
    struct spec_rect r = {0, 0, side, side};
    size_t n = (size_t)side * side;
    uint32_t *brute = malloc(n * sizeof(uint32_t)), *eng;
    struct deep_stats st;
    double t0, t_brute, t_eng, f, f_norebase, f_noexact = 1.0;
    size_t interior = 0;

    assert_non_null(brute);
    assert_int_equal(v.mode, want_mode);
    t0 = now_s();
    eng = engine_counts(&v, NULL, &st);
    t_eng = now_s() - t0;
    t0 = now_s();
    assert_int_equal(mpfr_brute_render(&v, &r, brute, 2), 0);
    t_brute = now_s() - t0;
    f = fraction_equal(eng, brute, n);
    {
        /* For the record: how the same view fares without rebasing (test_rebase_needed asserts
         * it on one view). */
        struct deep_render_opts no_rebase = DEEP_RENDER_OPTS_INIT;
        uint32_t *nr;
        no_rebase.rebase = 0;
        nr = engine_counts(&v, &no_rebase, NULL);
        f_norebase = fraction_equal(nr, brute, n);
        free(nr);
    }
    if (fractal == SPEC_JULIA) {
        /* And without the exact recomputation: what the double deltas alone get right. */
        struct deep_render_opts no_exact = DEEP_RENDER_OPTS_INIT;
        uint32_t *ne;
        no_exact.exact = 0;
        ne = engine_counts(&v, &no_exact, NULL);
        f_noexact = fraction_equal(ne, brute, n);
        free(ne);
    }
    for (size_t k = 0; k < n; k++)
        interior += brute[k] >= max_iter;
    print_message("%-22s %ux%u width %-6s %s: %.4f of counts equal (%zu of %zu differ), "
                  "%zu distinct, %zu interior; BLA skipped %.1f%%, %llu rebases, %llu exact; "
                  "rebasing off: %.4f, exact off: %.4f; engine %.2f s, brute %.2f s\n",
                  name, side, side, width, v.mode == DEEP_EXTENDED ? "extended" : "fp64", f,
                  (size_t)((1.0 - f) * (double)n + 0.5), n, distinct_counts(brute, n), interior,
                  100.0 * (double)st.skipped / (double)(st.skipped + st.perturbed + 1),
                  (unsigned long long)st.rebases, (unsigned long long)st.exact, f_norebase,
                  f_noexact, t_eng, t_brute);
    {
        char pgm[96];
        snprintf(pgm, sizeof(pgm), "%s-brute", name);
        dump_pgm(pgm, brute, side, side, max_iter);
        snprintf(pgm, sizeof(pgm), "%s-engine", name);
        dump_pgm(pgm, eng, side, side, max_iter);
    }
    /* A view that is one flat colour would prove little. */
    assert_true(distinct_counts(brute, n) >= 20);
    assert_true(f >= MATCH_MIN);
    if (exact_needed)
        assert_true(f_noexact < MATCH_MIN);
    free(brute);
    free(eng);
}

static void check_brute(const char *name, enum spec_fractal fractal, const char *re,
                        const char *im, const char *width, uint32_t max_iter,
                        enum deep_mode want_mode)
{
    check_brute_c(name, fractal, re, im, JULIA_C_RE, JULIA_C_IM, width, max_iter, want_mode, 0);
}

/* ---- the brute-force cases ---- */

static void test_mandel_spiral_1e20(void **state)
{
    (void)state;
    check_brute("mandel_spiral_1e20", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-20", 2000, DEEP_FP64);
}

static void test_mandel_spiral_1e60(void **state)
{
    (void)state;
    check_brute("mandel_spiral_1e60", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", 2000, DEEP_FP64);
}

static void test_mandel_spiral_1e200(void **state)
{
    (void)state;
    check_brute("mandel_spiral_1e200", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-200", 3000, DEEP_FP64);
}

static void test_mandel_spiral_1e400(void **state)
{
    (void)state;
    check_brute("mandel_spiral_1e400", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-400", 3000,
                DEEP_EXTENDED);
}

static void test_mandel_minibrot_1e20(void **state)
{
    (void)state;
    check_brute("mandel_minibrot_1e20", SPEC_MANDELBROT, MINI30_RE, MINI30_IM, "6e-20", 2000, DEEP_FP64);
}

static void test_mandel_minibrot_1e60(void **state)
{
    (void)state;
    check_brute("mandel_minibrot_1e60", SPEC_MANDELBROT, MINI79_RE, MINI79_IM, "1e-57", 2000, DEEP_FP64);
}

static void test_mandel_minibrot_1e200(void **state)
{
    (void)state;
    check_brute("mandel_minibrot_1e200", SPEC_MANDELBROT, MINI269_RE, MINI269_IM, "1e-200", 3000,
                DEEP_FP64);
}

static void test_mandel_minibrot_1e400(void **state)
{
    (void)state;
    check_brute("mandel_minibrot_1e400", SPEC_MANDELBROT, MINI541_RE, MINI541_IM, "1e-396", 5000,
                DEEP_EXTENDED);
}

static void test_julia_1e20(void **state)
{
    (void)state;
    check_brute("julia_1e20", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-20", 2000, DEEP_FP64);
}

static void test_julia_1e60(void **state)
{
    (void)state;
    check_brute("julia_1e60", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-60", 2000, DEEP_FP64);
}

static void test_julia_1e200(void **state)
{
    (void)state;
    check_brute("julia_1e200", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-200", 3000, DEEP_FP64);
}

static void test_julia_1e400(void **state)
{
    (void)state;
    check_brute("julia_1e400", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-400", 4000, DEEP_EXTENDED);
}

/* The default c = -0.8 + 0.156i (deep_points.h, JULIA_DEFAULT): double deltas lose 0.04-0.4 %
 * of these counts; the engine recomputes those samples in MPFR. */
static void test_julia_default_1e20(void **state)
{
    (void)state;
    check_brute_c("julia_default_1e20", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                  JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-20", 3000, DEEP_FP64, 1);
}

static void test_julia_default_1e60(void **state)
{
    (void)state;
    check_brute_c("julia_default_1e60", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                  JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-60", 3000, DEEP_FP64, 1);
}

static void test_julia_default_1e200(void **state)
{
    (void)state;
    check_brute_c("julia_default_1e200", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                  JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-200", 4000, DEEP_FP64, 1);
}

static void test_julia_default_1e400(void **state)
{
    (void)state;
    check_brute_c("julia_default_1e400", SPEC_JULIA, JULIA_DEFAULT_RE, JULIA_DEFAULT_IM,
                  JULIA_DEFAULT_C_RE, JULIA_DEFAULT_C_IM, "1e-400", 4000, DEEP_EXTENDED, 0);
}

/* ---- rebasing ---- */

/* The view of minibrot_1e60 with its centre moved off the nucleus by a quarter width: the
 * reference then escapes, while the samples in the minibrot pass near 0 every 79 iterations
 * where the reference does not. Without rebasing their deltas lose every bit there (the classic
 * perturbation glitch) and whole regions of the image take wrong counts; with it they match. */
static void test_rebase_needed(void **state)
{
    uint32_t side = brute_side();
    char re[600];
    struct deep_view v;
    struct spec_rect r = {0, 0, side, side};
    struct deep_render_opts off = DEEP_RENDER_OPTS_INIT;
    size_t n = (size_t)side * side;
    uint32_t *brute = malloc(n * sizeof(uint32_t)), *on_c, *off_c;
    double f_on, f_off;
    mpfr_t x;

    (void)state;
    assert_non_null(brute);
    /* re = MINI79_RE + 2.5e-58, printed back with every digit. */
    mpfr_init2(x, 1800);
    mpfr_set_str(x, MINI79_RE, 10, MPFR_RNDN);
    {
        mpfr_t d;
        mpfr_init2(d, 1800);
        mpfr_set_str(d, "2.5e-58", 10, MPFR_RNDN);
        mpfr_add(x, x, d, MPFR_RNDN);
        mpfr_clear(d);
    }
    mpfr_snprintf(re, sizeof(re), "%.420Re", x);
    mpfr_clear(x);
    v = make_view(SPEC_MANDELBROT, re, MINI79_IM, "1e-57", side, 2000);
    assert_int_equal(mpfr_brute_render(&v, &r, brute, 2), 0);
    on_c = engine_counts(&v, NULL, NULL);
    off.rebase = 0;
    off_c = engine_counts(&v, &off, NULL);
    f_on = fraction_equal(on_c, brute, n);
    f_off = fraction_equal(off_c, brute, n);
    print_message("rebase view %ux%u: rebasing on %.4f equal, off %.4f equal\n", side, side, f_on,
                  f_off);
    dump_pgm("rebase-brute", brute, side, side, 2000);
    dump_pgm("rebase-off", off_c, side, side, 2000);
    assert_true(f_on >= MATCH_MIN);
    assert_true(f_off < MATCH_MIN);
    free(brute);
    free(on_c);
    free(off_c);
}

/* ---- fp64 deltas against extended ones ---- */

static void check_modes(const char *name, enum spec_fractal fractal, const char *re,
                        const char *im)
{
    struct deep_view v = make_view(fractal, re, im, "1e-100", 64, 3000);
    uint32_t *c64, *cx;
    struct deep_stats s64, sx;
    double f;

    assert_int_equal(v.mode, DEEP_FP64);
    c64 = engine_counts(&v, NULL, &s64);
    v.mode = DEEP_EXTENDED;
    cx = engine_counts(&v, NULL, &sx);
    f = fraction_equal(c64, cx, 64 * 64);
    print_message("%s 64x64 width 1e-100: fp64 and extended %.4f equal (iterations %llu / %llu)\n",
                  name, f, (unsigned long long)s64.iterations, (unsigned long long)sx.iterations);
    assert_true(distinct_counts(c64, 64 * 64) >= 20);
    assert_true(f >= MATCH_MIN);
    free(c64);
    free(cx);
}

static void test_modes_agree_mandel(void **state)
{
    (void)state;
    check_modes("mandel_spiral", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM);
    check_modes("mandel_minibrot", SPEC_MANDELBROT, MINI269_RE, MINI269_IM);
}

static void test_modes_agree_julia(void **state)
{
    (void)state;
    check_modes("julia", SPEC_JULIA, JULIA_RE, JULIA_IM);
}

/* ---- shallow views against the fp64 CPU engine ---- */

/* cpu_exact: the view is one where fp64 iteration itself is right, so perturbation must equal
 * the CPU engine; else (a view where fp64 loses counts) it must equal the brute force. */
static void check_shallow(const char *name, enum spec_fractal fractal, double re, double im,
                          const char *re_s, const char *im_s, int cpu_exact)
{
    const uint32_t side = 64, max_iter = 1000;
    struct deep_view v = make_view(fractal, re_s, im_s, "1e-5", side, max_iter);
    struct render_spec spec;
    struct spec_rect r = {0, 0, side, side};
    uint32_t *cpu = malloc(side * side * sizeof(uint32_t)), *deep;
    uint32_t *brute = malloc(side * side * sizeof(uint32_t));
    engine_cpu *engine = NULL;
    double f;

    assert_non_null(cpu);
    assert_non_null(brute);
    memset(&spec, 0, sizeof(spec));
    spec.fractal = fractal;
    spec.c_re = JULIA_C_RE;
    spec.c_im = JULIA_C_IM;
    spec.center_re = re;
    spec.center_im = im;
    spec.view_width = 1e-5;
    spec.width = spec.height = side;
    spec.region = r;
    spec.max_iter = max_iter;
    spec.escape_radius = 2.0;
    spec.precision = SPEC_FP64;
    spec.format = SPEC_RAW_U32;
    spec.supersample = 1;
    assert_int_equal(engine_cpu_new(&engine, 2), 0);
    assert_int_equal(engine_cpu_render(engine, &spec, &r, cpu, NULL, NULL, NULL), 0);
    engine_cpu_free(engine);
    deep = engine_counts(&v, NULL, NULL);
    f = fraction_equal(cpu, deep, side * side);
    assert_int_equal(mpfr_brute_render(&v, &r, brute, 2), 0);
    print_message("%s 64x64 width 1e-5: perturbation and the fp64 CPU engine %.4f equal "
                  "(against the brute force: perturbation %.4f, CPU engine %.4f)\n", name, f,
                  fraction_equal(deep, brute, side * side), fraction_equal(cpu, brute, side * side));
    /* Shallow views near a strongly repelling point span fewer counts than the deep ones. */
    assert_true(distinct_counts(cpu, side * side) >= 10);
    if (cpu_exact)
        assert_true(f >= MATCH_MIN);
    else
        assert_true(fraction_equal(deep, brute, side * side) >= MATCH_MIN);
    free(cpu);
    free(deep);
    free(brute);
}

static void test_shallow_mandel(void **state)
{
    (void)state;
    check_shallow("mandel", SPEC_MANDELBROT, 0.343907, 0.70062, "0.343907", "0.70062", 1);
    check_shallow("mandel_p3", SPEC_MANDELBROT, -1.768778, 0.001738, "-1.768778", "0.001738", 1);
    check_shallow("mandel_tip", SPEC_MANDELBROT, -0.000003, 1.000001, "-0.000003", "1.000001", 1);
    /* Seahorse valley: orbits crawl past the parabolic point -0.75 for hundreds of iterations,
     * and fp64 iteration loses ~1 % of the counts here; the deltas keep their relative
     * precision and match the brute force. */
    check_shallow("mandel_seahorse", SPEC_MANDELBROT, -0.743643, 0.131825, "-0.743643",
                  "0.131825", 0);
}

static void test_shallow_julia(void **state)
{
    (void)state;
    /* The critical point 0 lies on this dendrite Julia set: samples next to it fold over 0 and
     * rebase onto the critical orbit right away. */
    check_shallow("julia_0", SPEC_JULIA, 0.000001, 0.000002, "0.000001", "0.000002", 1);
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

/* A reference that would take minutes (10^8 iterations at ~1400 bits; the nucleus never
 * escapes) stops within 250 ms of the flag. */
static void test_cancel_ref(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, MINI541_RE, MINI541_IM, "2e-405", 64,
                                   100000000);
    atomic_int flag;
    struct raiser r = {&flag, 100, 0};
    pthread_t th;
    deep_ref *ref = NULL;
    char msg[160];
    double lag;
    int err;

    (void)state;
    atomic_init(&flag, 0);
    assert_int_equal(pthread_create(&th, NULL, raise_later, &r), 0);
    err = deep_ref_new(&ref, &v, &flag, msg, sizeof(msg));
    lag = now_s() - r.raised_at;
    pthread_join(th, NULL);
    print_message("deep_ref_new returned %d %.1f ms after the flag\n", err, lag * 1e3);
    assert_int_equal(err, ERR_CANCELLED);
    assert_null(ref);
    assert_true(lag < 0.25);
    /* Raised before the call: nothing is computed. */
    err = deep_ref_new(&ref, &v, &flag, msg, sizeof(msg));
    assert_int_equal(err, ERR_CANCELLED);
}

/* A render of 4 M samples (seconds of work) stops within 250 ms of the flag. */
static void test_cancel_render(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-60", 2048, 3000);
    struct spec_rect rect = {0, 0, 2048, 2048};
    atomic_int flag;
    struct raiser r = {&flag, 50, 0};
    struct deep_stats st;
    pthread_t th;
    deep_ref *ref = NULL;
    char msg[160];
    double lag;
    int err;

    (void)state;
    v.grid_h = 2048;
    assert_int_equal(deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)), 0);
    atomic_init(&flag, 0);
    assert_int_equal(pthread_create(&th, NULL, raise_later, &r), 0);
    err = deep_render(ref, &v, &rect, NULL, NULL, &flag, 2, &st);
    lag = now_s() - r.raised_at;
    pthread_join(th, NULL);
    print_message("deep_render returned %d %.1f ms after the flag (%llu iterations done)\n", err,
                  lag * 1e3, (unsigned long long)st.iterations);
    assert_int_equal(err, ERR_CANCELLED);
    assert_true(lag < 0.25);
    assert_int_equal(deep_render(ref, &v, &rect, NULL, NULL, &flag, 2, NULL), ERR_CANCELLED);
    deep_ref_unref(ref);
}

/* ---- the API's checks ---- */

static void test_view_check(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, "-0.75", "0.1", "1e-400", 64, 100);
    const char *bad[] = {"", "abc", "1e", "nan", "inf", " 1", "1 ", "0x10", "--1"};
    double l2s, l2m;
    char msg[160];

    (void)state;
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), 0);
    assert_true(fabs(l2s - (-400 * log2(10.0) - 6)) < 1e-9);
    assert_true(l2m == 0.0);
    assert_int_equal(deep_mode_for(l2s), DEEP_EXTENDED);
    assert_int_equal(deep_mode_for(-900), DEEP_FP64);
    assert_int_equal(deep_mode_for(DEEP_FP64_MIN_LOG2), DEEP_FP64);
    assert_int_equal(deep_mode_for(DEEP_FP64_MIN_LOG2 - 1), DEEP_EXTENDED);
    v.center_re = "-12345.5";
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), 0);
    assert_true(fabs(l2m - log2(12345.5)) < 1e-9);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v.center_re = "0";
        v.center_im = bad[i];
        assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), ERR_INVALID);
        assert_non_null(strstr(msg, "center.im"));
    }
    v.center_im = "0";
    v.width = "0";
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), ERR_INVALID);
    assert_non_null(strstr(msg, "view.width"));
    v.width = "-1e-30";
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), ERR_INVALID);
    v.width = "1e-30";
    v.max_iter = 0;
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), ERR_INVALID);
    v.max_iter = 10;
    v.escape_radius = NAN;
    assert_int_equal(deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)), ERR_INVALID);
}

static void test_ref_fits(void **state)
{
    struct deep_view v = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-30", 32, 500);
    struct deep_view w = v;
    struct spec_rect r = {0, 0, 32, 32};
    uint32_t counts[32 * 32];
    deep_ref *ref = NULL;
    double t_orbit = -1, t_bla = -1;
    char msg[160];

    (void)state;
    assert_int_equal(deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)), 0);
    assert_true(deep_ref_fits(ref, &v));
    assert_true(deep_ref_bytes(ref) > 0);
    assert_true(deep_ref_bytes(ref) <= deep_ref_estimate_bytes(&v));
    deep_ref_times(ref, &t_orbit, &t_bla);
    assert_true(t_orbit >= 0 && t_bla >= 0);
    w.width = "5e-31";                          /* narrower: within reach and precision */
    assert_true(deep_ref_fits(ref, &w));
    w.width = "1e-40";                          /* deeper than the orbit's precision serves */
    assert_false(deep_ref_fits(ref, &w));
    w.width = "1e-29";                          /* wider than the BLA radii assume */
    assert_false(deep_ref_fits(ref, &w));
    w = v;
    w.max_iter = 501;
    assert_false(deep_ref_fits(ref, &w));
    assert_int_equal(deep_render(ref, &w, &r, counts, NULL, NULL, 1, NULL), ERR_INVALID);
    w = v;
    w.center_re = "0.34";
    assert_false(deep_ref_fits(ref, &w));
    w = v;
    w.fractal = SPEC_JULIA;
    assert_false(deep_ref_fits(ref, &w));
    w = make_view(SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-400", 32, 500);
    w.mode = DEEP_FP64;                         /* fp64 deltas would underflow */
    {
        deep_ref *deep = NULL;
        assert_int_equal(deep_ref_new(&deep, &w, NULL, msg, sizeof(msg)), ERR_INVALID);
        assert_null(deep);
        assert_non_null(strstr(msg, "extended"));
    }
    r.width = 33;                               /* outside the grid */
    assert_int_equal(deep_render(ref, &v, &r, counts, NULL, NULL, 1, NULL), ERR_INVALID);
    /* Shared: a second reference keeps it alive past the first unref. */
    assert_ptr_equal(deep_ref_ref(ref), ref);
    deep_ref_unref(ref);
    r.width = 32;
    assert_int_equal(deep_render(ref, &v, &r, counts, NULL, NULL, 1, NULL), 0);
    deep_ref_unref(ref);
    deep_ref_unref(NULL);
}

/* ---- xfloat ---- */

static double rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) * 0x1p-53 * 2.0 - 1.0;
}

/* The extended floats against doubles where both can hold the values, and past double's range
 * by scaling: (a 2^-1500)(b 2^-1500) must be ab 2^-3000. */
static void test_xfloat(void **state)
{
    uint64_t s = 42;

    (void)state;
    for (int i = 0; i < 2000; i++) {
        double a = rnd(&s) * 1e3, b = rnd(&s) * 1e-3, c = rnd(&s), d = rnd(&s) * 7;
        xf xa = xf_from_d(a), xb = xf_from_d(b);
        xfc p = xfc_from_d(a, b), q = xfc_from_d(c, d), r;
        double re, im;

        assert_true(fabs(xf_to_d(xf_add(xa, xb)) - (a + b)) <= 1e-15 * fabs(a + b) + 1e-300);
        assert_true(fabs(xf_to_d(xf_mul(xa, xb)) - a * b) <= 1e-15 * fabs(a * b));
        assert_int_equal(xf_cmp(xa, xb), (a > b) - (a < b));
        r = xfc_add(xfc_mul(p, q), q);
        xfc_to_d(r, &re, &im);
        assert_true(fabs(re - ((a * c - b * d) + c)) <= 1e-12 * (fabs(a) + 1) * 8);
        assert_true(fabs(im - ((a * d + b * c) + d)) <= 1e-12 * (fabs(a) + 1) * 8);
        r = xfc_mul(xfc_mul_xf(p, xf_norm(1.0, -1500)), xfc_mul_xf(q, xf_norm(1.0, -1500)));
        r.e += 3000;
        xfc_to_d(r, &re, &im);
        assert_true(fabs(re - (a * c - b * d)) <= 1e-12 * (fabs(a) + 1) * 8);
        assert_true(fabs(im - (a * d + b * c)) <= 1e-12 * (fabs(a) + 1) * 8);
        assert_true(xf_lt_pos(xfc_inf(xfc_mul_xf(q, xf_norm(1.0, -2000))), xf_norm(1.0, -1990)));
    }
    assert_true(xf_to_d(xf_norm(1.0, -1100)) == 0.0);
    assert_true(isinf(xf_to_d(xf_norm(1.0, 1100))));
    assert_true(xf_to_d(xf_from_d(0x1p-1070)) == 0x1p-1070);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mandel_spiral_1e20),
        cmocka_unit_test(test_mandel_spiral_1e60),
        cmocka_unit_test(test_mandel_spiral_1e200),
        cmocka_unit_test(test_mandel_spiral_1e400),
        cmocka_unit_test(test_mandel_minibrot_1e20),
        cmocka_unit_test(test_mandel_minibrot_1e60),
        cmocka_unit_test(test_mandel_minibrot_1e200),
        cmocka_unit_test(test_mandel_minibrot_1e400),
        cmocka_unit_test(test_julia_1e20),
        cmocka_unit_test(test_julia_1e60),
        cmocka_unit_test(test_julia_1e200),
        cmocka_unit_test(test_julia_1e400),
        cmocka_unit_test(test_julia_default_1e20),
        cmocka_unit_test(test_julia_default_1e60),
        cmocka_unit_test(test_julia_default_1e200),
        cmocka_unit_test(test_julia_default_1e400),
        cmocka_unit_test(test_rebase_needed),
        cmocka_unit_test(test_modes_agree_mandel),
        cmocka_unit_test(test_modes_agree_julia),
        cmocka_unit_test(test_shallow_mandel),
        cmocka_unit_test(test_shallow_julia),
        cmocka_unit_test(test_cancel_ref),
        cmocka_unit_test(test_cancel_render),
        cmocka_unit_test(test_view_check),
        cmocka_unit_test(test_ref_fits),
        cmocka_unit_test(test_xfloat),
    };

    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests_name("deep", tests, NULL, NULL);
}
