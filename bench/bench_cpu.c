/* bench_cpu.c: throughput of the CPU engine against a plain one-thread scalar loop, measured in
 * one run on workloads A and B of bench/README.md, fp32 and fp64, in Giter/s (sum of escape counts
 * per second). Usage: bench_cpu [REPS]   (FRACTALD_CPU_ISA=avx2|base picks narrower lanes) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_cpu.h"
#include "err.h"
#include "escape.h"
#include "bench_stats.h"

#define MAX_REPS 15

struct workload {
    const char *name;
    double c_re, c_im, center_re, center_im, view_width;
    uint32_t max_iter;
    uint64_t sum_fp32, sum_fp64;   /* bench/README.md checksums, no FMA */
    uint32_t scalar_row_step;      /* the scalar loop runs every n-th row to bound the run time */
};

static const struct workload workloads[] = {
    {"A", -0.8, 0.156, 0.0, 0.0, 3.0, 1000, 107491740ull, 107566860ull, 1},
    {"B", -0.8, 0.156, 0.17304, 0.23854, 0.0005, 10000, 2346960036ull, 2348272443ull, 8},
};




static void spec_fill(struct render_spec *spec, const struct workload *w, enum spec_precision p)
{
    memset(spec, 0, sizeof(*spec));
    spec->fractal = SPEC_JULIA;
    spec->c_re = w->c_re;
    spec->c_im = w->c_im;
    spec->center_re = w->center_re;
    spec->center_im = w->center_im;
    spec->view_width = w->view_width;
    spec->width = 1920;
    spec->height = 1080;
    spec->region = (struct spec_rect){0, 0, 1920, 1080};
    spec->max_iter = w->max_iter;
    spec->escape_radius = 2.0;
    spec->precision = p;
    spec->format = SPEC_RAW_U32;
    spec->supersample = 1;
}

/* The naive reference: escape.h's scalar function, one sample after another, one thread, on rows
 * 0, step, 2*step, ... Returns the sum of escape counts and the seconds taken. */
static uint64_t scalar_run(const struct render_spec *spec, uint32_t step, double *secs)
{
    uint64_t sum = 0;
    double t0 = bench_now_s();

    if (spec->precision == SPEC_FP32) {
        esc_view_f32 v;
        esc_view_init_f32(&v, (int)spec->fractal, (float)spec->c_re, (float)spec->c_im,
                          (float)spec->center_re, (float)spec->center_im, (float)spec->view_width,
                          spec->width, spec->height, (float)spec->escape_radius, spec->max_iter);
        for (uint32_t j = 0; j < spec->height; j += step)
            for (uint32_t i = 0; i < spec->width; i++) {
                float zr, zi;
                sum += esc_sample_f32(&v, i, j, &zr, &zi);
            }
    } else {
        esc_view_f64 v;
        esc_view_init_f64(&v, (int)spec->fractal, spec->c_re, spec->c_im, spec->center_re,
                          spec->center_im, spec->view_width, spec->width, spec->height,
                          spec->escape_radius, spec->max_iter);
        for (uint32_t j = 0; j < spec->height; j += step)
            for (uint32_t i = 0; i < spec->width; i++) {
                double zr, zi;
                sum += esc_sample_f64(&v, i, j, &zr, &zi);
            }
    }
    *secs = bench_now_s() - t0;
    return sum;
}

/* Median Giter/s of `reps` engine renders after one warm-up render; *sum gets the checksum. */
static int engine_run(engine_cpu *engine, const struct render_spec *spec, uint32_t *counts,
                      float *smooth, int reps, double *gips, uint64_t *sum)
{
    double rate[MAX_REPS];
    struct engine_cpu_stats st;
    int err;

    if ((err = engine_cpu_render(engine, spec, &spec->region, counts, smooth, NULL, &st)) < 0)
        return err;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s(), dt;
        if ((err = engine_cpu_render(engine, spec, &spec->region, counts, smooth, NULL, &st)) < 0)
            return err;
        dt = bench_now_s() - t0;
        rate[r] = (double)st.iterations / dt * 1e-9;
    }
    *sum = st.iterations;
    *gips = bench_median(rate, reps);
    return 0;
}

int main(int argc, char **argv)
{
    engine_cpu *engine = NULL;
    uint32_t *counts = NULL;
    float *smooth = NULL;
    int reps = 5, err = 0, bad = 0;
    double t_start = bench_now_s();

    if (argc > 1)
        reps = atoi(argv[1]);
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_cpu: REPS must be 1..%d\n", MAX_REPS);
        return 2;
    }
    counts = malloc(sizeof(*counts) * 1920 * 1080);
    smooth = malloc(sizeof(*smooth) * 1920 * 1080);
    if (counts == NULL || smooth == NULL) {
        err = ERR_NOMEM;
        goto done;
    }
    {
        double t0 = bench_now_s();
        if ((err = engine_cpu_new(&engine, 0)) < 0)
            goto done;
        printf("engine: %u threads, started in %.2f ms; %s lanes; median of %d runs after a "
               "warm-up\n",
               engine_cpu_threads(engine), (bench_now_s() - t0) * 1e3,
               getenv("FRACTALD_CPU_ISA") ? getenv("FRACTALD_CPU_ISA") : "widest", reps);
    }
    printf("%-3s %-5s %11s %11s %11s %8s  %-12s %s\n", "wl", "prec", "engine", "eng+smooth",
           "scalar-1t", "ratio", "sum", "check");
    for (size_t wi = 0; wi < sizeof(workloads) / sizeof(workloads[0]); wi++) {
        const struct workload *w = &workloads[wi];
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            struct render_spec spec;
            double g_eng, g_smooth, rate[MAX_REPS], secs, g_scalar;
            uint64_t sum, sum2, want = p == SPEC_FP32 ? w->sum_fp32 : w->sum_fp64;
            int sreps = reps < 3 ? reps : 3, ok;

            spec_fill(&spec, w, (enum spec_precision)p);
            if ((err = engine_run(engine, &spec, counts, NULL, reps, &g_eng, &sum)) < 0)
                goto done;
            if ((err = engine_run(engine, &spec, counts, smooth, reps, &g_smooth, &sum2)) < 0)
                goto done;
            for (int r = 0; r < sreps; r++) {
                uint64_t s = scalar_run(&spec, w->scalar_row_step, &secs);
                rate[r] = (double)s / secs * 1e-9;
            }
            g_scalar = bench_median(rate, sreps);
            ok = sum == want && sum2 == want;
            bad |= !ok;
            printf("%-3s %-5s %11.2f %11.2f %11.3f %7.1fx  %-12llu %s\n", w->name,
                   p == SPEC_FP32 ? "fp32" : "fp64", g_eng, g_smooth, g_scalar,
                   g_eng / g_scalar, (unsigned long long)sum,
                   ok ? "ok" : "MISMATCH with bench/README.md");
            fflush(stdout);
        }
    }
    printf("Giter/s; engine = all threads, counts only; eng+smooth = counts and smooth values;\n"
           "scalar-1t = escape.h scalar loop, one thread (B: every 8th row); ratio = "
           "engine / scalar-1t. Total %.1f s.\n",
           bench_now_s() - t_start);

done:
    if (err < 0)
        fprintf(stderr, "bench_cpu: %s\n", err_name(err));
    engine_cpu_free(engine);
    free(counts);
    free(smooth);
    return err < 0 || bad ? 1 : 0;
}
