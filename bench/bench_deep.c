/* bench_deep.c: the deep-zoom engine (server/deep) on full frames at 1e-50 and 1e-300: reference
 * and BLA table times, iterations computed and skipped, the speed-up of BLA on a band of rows,
 * and the cost of one perturbed iteration against the fp64 CPU engine's on a shallow view; with
 * an OpenCL device that has fp64, the fp64 frames also on it (engine_cl_deep.h), against the CPU.
 *
 *   bench_deep [W H]     frames of W x H samples (default 1920 1080; 480 270 runs in ~1 min)
 *
 * Points come from tests/deep/deep_points.h (how each was found is written there). */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "deep.h"
#include "deep_internal.h"
#include "deep_points.h"
#include "deep_device.h"
#include "engine_cl.h"
#include "engine_cl_deep.h"
#include "engine_cpu.h"

#define MAX_ITER 100000u

/* Rows of the BLA-off band: a full frame without BLA would take many minutes inside a
 * minibrot (10^5 perturbed steps a sample), so the speed-up is measured on a band of rows
 * through the middle of the frame, rendered both ways. */
#define BAND_DIV 64u

struct frame {
    const char *name;
    enum spec_fractal fractal;
    const char *re, *im, *width;
};

/* The first OpenCL device with fp64, when there is one: fp64-mode frames also run on it
 * (engine_cl_deep.h), timed against the CPU deep engine's render of the same frame. */
static engine_cl *cl_dev;

/* Rows of the bands cl_bands cuts a frame into, as the scheduler hands a device strips. */
#define CL_BAND_ROWS 32u

/* The frame on cl_dev band by band, as render_deep.c sends it, with job.orbit_id `id` (0: the
 * orbits are uploaded for every band): its time, with the bytes uploaded added to *bytes and
 * the bands' counts, row-major, written to counts. */
static double cl_bands(const deep_ref *ref, const struct deep_view *v, uint64_t id,
                       uint32_t *counts, uint64_t *bytes)
{
    struct engine_cl_deep_job job;
    struct engine_cl_deep_stats st;
    char msg[512];
    double t0 = bench_now_s();

    for (uint32_t y = 0; y < v->grid_h; y += CL_BAND_ROWS) {
        struct spec_rect band = {0, y, v->grid_w,
                                 v->grid_h - y < CL_BAND_ROWS ? v->grid_h - y : CL_BAND_ROWS};
        if (deep_ref_device_job(&job, ref, v, &band, msg, sizeof(msg)) != 0)
            goto fail;
        job.orbit_id = id;
        if (engine_cl_deep_render(cl_dev, &job, counts + (size_t)y * v->grid_w, NULL, NULL, &st,
                                  msg, sizeof(msg)) != 0)
            goto fail;
        *bytes += st.upload_bytes;
    }
    return bench_now_s() - t0;

fail:
    fprintf(stderr, "bench_deep: OpenCL: %s\n", msg);
    exit(1);
}

/* The frame on cl_dev: one warm-up tile first (the deep program's build, and PoCL's compile),
 * then the full frame timed; writes into line its time, Giter/s (counting skipped iterations,
 * as the CPU line does), the ratio to the CPU render and how many counts agree with it. */
static void cl_frame(const deep_ref *ref, const struct deep_view *v, const uint32_t *cpu_counts,
                     double t_cpu, char *line, size_t linelen)
{
    struct spec_rect all = {0, 0, v->grid_w, v->grid_h}, tile = {0, 0, 16, 16};
    size_t n = (size_t)v->grid_w * v->grid_h, equal = 0;
    uint32_t *counts = malloc(n * sizeof(uint32_t)), *bands = malloc(n * sizeof(uint32_t));
    struct engine_cl_deep_job job;
    struct engine_cl_deep_stats st;
    uint64_t bytes_each = 0, bytes_kept = 0;
    size_t band_equal = 0;
    char msg[512];
    double t0, t, t_each, t_kept;
    int at;

    if (counts == NULL || bands == NULL)
        exit(1);
    if (deep_ref_device_job(&job, ref, v, &tile, msg, sizeof(msg)) != 0 ||
        engine_cl_deep_render(cl_dev, &job, counts, NULL, NULL, &st, msg, sizeof(msg)) != 0 ||
        deep_ref_device_job(&job, ref, v, &all, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "bench_deep: OpenCL: %s\n", msg);
        exit(1);
    }
    t0 = bench_now_s();
    if (engine_cl_deep_render(cl_dev, &job, counts, NULL, NULL, &st, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "bench_deep: OpenCL: %s\n", msg);
        exit(1);
    }
    t = bench_now_s() - t0;
    for (size_t k = 0; k < n; k++)
        equal += counts[k] == cpu_counts[k];
    at = snprintf(line, linelen,
                  "%-26s   OpenCL %s: render %.2f s, %.2f Giter/s counting both (%.2fx the CPU "
                  "render's time), %u launches; counts equal to the CPU's on %.5f\n",
                  "", engine_cl_get_info(cl_dev)->name, t, (double)st.iterations / t * 1e-9,
                  t / t_cpu, st.launches, (double)equal / (double)n);
    /* The bands twice: the orbits sent with every band (orbit_id 0, as before the device kept
     * them), then kept from the first band on; both must give the full frame's counts. */
    t_each = cl_bands(ref, v, 0, bands, &bytes_each);
    t_kept = cl_bands(ref, v, deep_ref_serial(ref), bands, &bytes_kept);
    for (size_t k = 0; k < n; k++)
        band_equal += bands[k] == counts[k];
    if (at >= 0 && (size_t)at < linelen)
        snprintf(line + at, linelen - (size_t)at,
                 "%-26s   OpenCL in %u-row bands: orbits sent per band %.3f s, %.2f MB uploaded; "
                 "kept on the device %.3f s, %.2f MB (%.2fx); counts equal to the frame's on "
                 "%.5f\n",
                 "", CL_BAND_ROWS, t_each, (double)bytes_each * 1e-6, t_kept,
                 (double)bytes_kept * 1e-6, t_each / t_kept, (double)band_equal / (double)n);
    free(bands);
    free(counts);
}

static struct deep_view view_of(const struct frame *f, uint32_t w, uint32_t h, uint32_t max_iter)
{
    struct deep_view v;
    double l2s, l2m;
    char msg[160];

    memset(&v, 0, sizeof(v));
    v.fractal = f->fractal;
    v.center_re = f->re;
    v.center_im = f->im;
    v.width = f->width;
    v.c_re = JULIA_C_RE;
    v.c_im = JULIA_C_IM;
    v.grid_w = w;
    v.grid_h = h;
    v.max_iter = max_iter;
    v.escape_radius = 2.0;
    if (deep_view_check(&v, &l2s, &l2m, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "bench_deep: %s\n", msg);
        exit(1);
    }
    v.mode = deep_mode_for(l2s);
    return v;
}

/* Renders rect with opts; returns seconds, fills *st. */
static double timed_render(const deep_ref *ref, const struct deep_view *v,
                           const struct spec_rect *r, uint32_t *counts,
                           const struct deep_render_opts *opts, struct deep_stats *st)
{
    double t0 = bench_now_s();

    if (deep_render_opts(ref, v, r, counts, NULL, NULL, 0, st, opts) != 0) {
        fprintf(stderr, "bench_deep: render failed\n");
        exit(1);
    }
    return bench_now_s() - t0;
}

static void run_frame(const struct frame *f, uint32_t w, uint32_t h)
{
    struct deep_view v = view_of(f, w, h, MAX_ITER);
    struct spec_rect all = {0, 0, w, h};
    uint32_t band_h = h / BAND_DIV ? h / BAND_DIV : 1;
    struct spec_rect band = {0, h / 2 - band_h / 2, w, band_h};
    struct deep_render_opts off = DEEP_RENDER_OPTS_INIT;
    uint32_t *counts = malloc((size_t)w * h * sizeof(uint32_t));
    struct deep_stats st, st_on, st_off;
    double t0, t_ref, t_orbit, t_bla, t_all, t_on, t_off;
    size_t interior = 0;
    deep_ref *ref = NULL;
    char msg[160], cl_line[1024] = "";

    if (counts == NULL)
        exit(1);
    t0 = bench_now_s();
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "bench_deep: %s\n", msg);
        exit(1);
    }
    t_ref = bench_now_s() - t0;
    deep_ref_times(ref, &t_orbit, &t_bla);
    t_all = timed_render(ref, &v, &all, counts, NULL, &st);
    for (size_t k = 0; k < (size_t)w * h; k++)
        interior += counts[k] >= MAX_ITER;
    if (cl_dev && v.mode == DEEP_FP64)
        cl_frame(ref, &v, counts, t_all, cl_line, sizeof(cl_line));
    t_on = timed_render(ref, &v, &band, counts, NULL, &st_on);
    off.bla = 0;
    t_off = timed_render(ref, &v, &band, counts, &off, &st_off);

    printf("%-26s %-8s %s  total %.2f s (reference %.3f s: orbit %.3f s, BLA %.3f s; "
           "render %.2f s)\n",
           f->name, f->width, v.mode == DEEP_EXTENDED ? "extended" : "fp64    ", t_ref + t_all,
           t_ref, t_orbit, t_bla, t_all);
    printf("%-26s   %.1f %% interior, %.3g iterations: %.3g perturbed (%.3f Giter/s), %.3g skipped "
           "by BLA; %.2f Giter/s counting both; %llu rebases, %llu samples recomputed exactly\n",
           "", 100.0 * (double)interior / ((double)w * h), (double)st.iterations,
           (double)st.perturbed, (double)st.perturbed / t_all * 1e-9, (double)st.skipped,
           (double)st.iterations / t_all * 1e-9, (unsigned long long)st.rebases,
           (unsigned long long)st.exact);
    printf("%-26s   BLA off on %u rows: %.3f s against %.3f s on: %.1fx (%.3f Giter/s perturbed "
           "without BLA)\n",
           "", band_h, t_off, t_on, t_off / t_on, (double)st_off.perturbed / t_off * 1e-9);
    fputs(cl_line, stdout);
    deep_ref_unref(ref);
    free(counts);
}

/* One perturbed iteration against one iteration of the fp64 CPU engine (its SIMD lanes, exact
 * shortcuts off), on a shallow view where both compute every step: BLA off, both modes. */
static void per_iteration(uint32_t w, uint32_t h)
{
    const struct frame shallow = {"shallow", SPEC_MANDELBROT, "-0.743643", "0.131825", "1e-5"};
    struct deep_view v = view_of(&shallow, w, h, 2000);
    struct spec_rect all = {0, 0, w, h};
    struct deep_render_opts off = DEEP_RENDER_OPTS_INIT;
    uint32_t *counts = malloc((size_t)w * h * sizeof(uint32_t));
    struct render_spec spec;
    struct engine_cpu_stats cst;
    struct deep_stats st;
    engine_cpu *engine = NULL;
    deep_ref *ref = NULL;
    double t0, t_cpu, t_64, t_x, ns_cpu, ns_64, ns_x;
    char msg[160];

    if (counts == NULL)
        exit(1);
    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_MANDELBROT;
    spec.center_re = -0.743643;
    spec.center_im = 0.131825;
    spec.view_width = 1e-5;
    spec.width = w;
    spec.height = h;
    spec.region = all;
    spec.max_iter = 2000;
    spec.escape_radius = 2.0;
    spec.precision = SPEC_FP64;
    spec.format = SPEC_RAW_U32;
    spec.supersample = 1;
    setenv("FRACTALD_CPU_SHORTCUTS", "0", 1);
    if (engine_cpu_new(&engine, 0) != 0)
        exit(1);
    t0 = bench_now_s();
    if (engine_cpu_render(engine, &spec, &all, counts, NULL, NULL, &cst) != 0)
        exit(1);
    t_cpu = bench_now_s() - t0;
    ns_cpu = t_cpu / (double)cst.iterations * 1e9;
    engine_cpu_free(engine);

    off.bla = 0;
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0)
        exit(1);
    t_64 = timed_render(ref, &v, &all, counts, &off, &st);
    ns_64 = t_64 / (double)st.perturbed * 1e9;
    deep_ref_unref(ref);
    v.mode = DEEP_EXTENDED;
    if (deep_ref_new(&ref, &v, NULL, msg, sizeof(msg)) != 0)
        exit(1);
    t_x = timed_render(ref, &v, &all, counts, &off, &st);
    ns_x = t_x / (double)st.perturbed * 1e9;
    deep_ref_unref(ref);
    printf("per iteration, shallow view %s %s width 1e-5, max_iter 2000, all threads "
           "(ns of wall time per iteration):\n", shallow.re, shallow.im);
    printf("  fp64 CPU engine (SIMD, shortcuts off) %.3f ns (%.2f Giter/s); perturbation fp64 "
           "%.3f ns (%.1fx); extended %.3f ns (%.1fx)\n",
           ns_cpu, 1.0 / ns_cpu, ns_64, ns_64 / ns_cpu, ns_x, ns_x / ns_cpu);
    free(counts);
}

int main(int argc, char **argv)
{
    const struct frame frames[] = {
        {"mandel spiral (M_{4,1})", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-50"},
        {"mandel near P=79 minibrot", SPEC_MANDELBROT, MINI79_RE, MINI79_IM, "1e-50"},
        {"mandel P=63 minibrot", SPEC_MANDELBROT, MINI63_RE, MINI63_IM, "1e-46"},
        {"julia (dendrite)", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-50"},
        {"mandel spiral (M_{4,1})", SPEC_MANDELBROT, SPIRAL_RE, SPIRAL_IM, "1e-300"},
        {"mandel near P=541 minibrot", SPEC_MANDELBROT, MINI541_RE, MINI541_IM, "1e-300"},
        {"mandel P=399 minibrot", SPEC_MANDELBROT, MINI399_RE, MINI399_IM, "1e-298"},
        {"julia (dendrite)", SPEC_JULIA, JULIA_RE, JULIA_IM, "1e-300"},
    };
    uint32_t w = 1920, h = 1080;
    char cpu[256];
    engine_cl **cl_all = NULL;
    size_t cl_count = 0;
    double t0 = bench_now_s();

    if (argc == 3) {
        w = (uint32_t)strtoul(argv[1], NULL, 10);
        h = (uint32_t)strtoul(argv[2], NULL, 10);
    }
    if (argc != 1 && argc != 3) {
        fprintf(stderr, "usage: bench_deep [WIDTH HEIGHT]\n");
        return 2;
    }
    if (w < 16 || h < 16) {
        fprintf(stderr, "bench_deep: frames must be at least 16x16\n");
        return 2;
    }
    bench_cpu_model(cpu, sizeof(cpu));
    {
        /* OpenCL devices, if any: the first usable one with fp64 runs the fp64 frames too. */
        struct engine_cl_options opts = ENGINE_CL_OPTIONS_INIT;
        char msg[256] = "";
        if (engine_cl_discover(&cl_all, &cl_count, &opts, msg, sizeof(msg)) != 0)
            cl_count = 0;
        for (size_t i = 0; i < cl_count && cl_dev == NULL; i++)
            if (engine_cl_deep_usable(cl_all[i]))
                cl_dev = cl_all[i];
        printf("bench_deep: OpenCL: %s; deep frames on %s\n", msg,
               cl_dev ? engine_cl_get_info(cl_dev)->name : "none (no device with fp64)");
    }
    printf("bench_deep: %s; frames %ux%u samples, max_iter %u, escape radius 2, threads: all "
           "online CPUs\n", cpu, w, h, MAX_ITER);
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++)
        run_frame(&frames[i], w, h);
    per_iteration(w, h);
    printf("bench_deep: %.1f s in all\n", bench_now_s() - t0);
    if (cl_dev)
        engine_cl_deep_release(cl_dev);
    engine_cl_free_all(cl_all, cl_count);
    return 0;
}
