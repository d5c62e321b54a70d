/* bench_rectfill.c: Mariani-Silver rectangle fill (server/engines/rect_fill.c) on against off, in
 * the scheduler's strips on each usable device alone, workloads A, B and C of bench/README.md at
 * 1920x1080, fp32 and fp64, counts and smooth values: wall time, process CPU time (steadier on a
 * busy host), the work ratio (brute force's sum of escape counts over that of the samples the
 * device computed), the samples and device calls the fill took, and the pixels whose count differs
 * from brute force.
 * Usage: bench_rectfill [REPS]   (devices as fractald finds them; FRACTALD_DEVICES applies) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "devconf.h"
#include "devices.h"
#include "engine_cpu.h"
#include "err.h"
#include "rect_fill.h"
#include "sched.h"
#include "bench_stats.h"

#define MAX_REPS 9
#define W 1920
#define H 1080

struct workload {
    const char *name;
    double c_re, c_im, center_re, center_im, view_width;
    uint32_t max_iter;
};

static const struct workload workloads[] = {
    {"A", -0.8, 0.156, 0.0, 0.0, 3.0, 1000},
    {"B", -0.8, 0.156, 0.17304, 0.23854, 0.0005, 10000},
    {"C", -0.12, 0.75, 0.0, 0.0, 3.0, 10000},
};

static double cpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds of one full-frame render on device d, cut into row strips of the scheduler's tile size
 * for it (sched_tile_samples), each through the rect-fill layer as the scheduler calls it; the
 * process's CPU seconds in *cpu_s, the sum of escape counts in *sum, the layer's counters in *rf.
 * Returns a negative number on failure. */
static double measure_once(struct device *d, const struct render_spec *spec, uint32_t *counts, float *smooth,
                           uint64_t *sum, struct rect_fill *rf, double *cpu_s)
{
    /* The scheduler's tile for the device, in whole bands of the fill (sched.c, band_aligned). */
    uint32_t rows = (uint32_t)(sched_tile_samples(d) / spec->width);
    double t0 = bench_now_s(), c0 = cpu_now_s();
    char msg[256] = "";

    rect_fill_init(rf, d->ops, d->backend);
    *sum = 0;
    if (spec->rect_fill)
        rows = (rows + RECT_FILL_BAND_ROWS - 1) / RECT_FILL_BAND_ROWS * RECT_FILL_BAND_ROWS;
    if (rows < 1)
        rows = 1;
    for (uint32_t y = 0; y < spec->height; y += rows) {
        struct spec_rect rect = {0, y, spec->width, spec->height - y < rows ? spec->height - y : rows};
        struct engine_cpu_stats st = {0, 0};
        size_t off = (size_t)y * spec->width;
        int err = rect_fill_render(rf, spec, &rect, counts + off, smooth + off, NULL, &st, msg, sizeof(msg));
        if (err < 0) {
            fprintf(stderr, "bench_rectfill: %s on %s: %s\n", err_name(err), d->id, msg);
            return -1;
        }
        *sum += st.iterations;
    }
    *cpu_s = cpu_now_s() - c0;
    return bench_now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    static struct devconf conf;
    struct config cfg;
    struct devices devs = {0};
    engine_cpu *cpu = NULL;
    uint32_t *brute = malloc((size_t)W * H * sizeof(*brute)), *counts = malloc((size_t)W * H * sizeof(*counts));
    float *smooth = malloc((size_t)W * H * sizeof(*smooth));
    int reps = argc > 1 ? atoi(argv[1]) : 3, status = 1;
    char msg[512], model[128] = "unknown";

    if (reps < 1 || reps > MAX_REPS || !brute || !counts || !smooth) {
        fprintf(stderr, "usage: bench_rectfill [REPS 1..%d]\n", MAX_REPS);
        return 2;
    }
    bench_cpu_model(model, sizeof(model));
    config_defaults(&cfg);
    if (devconf_from_config(&conf, &cfg, msg, sizeof(msg)) < 0 || engine_cpu_new(&cpu, 0) < 0 ||
        devconf_discover(&devs, &conf, cpu, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "bench_rectfill: %s\n", msg);
        goto done;
    }
    printf("CPU: %s, %u engine threads; median of %d renders, brute and fill alternating\n", model,
           engine_cpu_threads(cpu), reps);
    printf("%-28.28s %-2s %-4s %9s %9s %8s %8s %8s %9s %6s %s\n", "device", "wl", "prec", "brute ms", "fill ms",
           "speedup", "cpu-time", "work", "computed", "calls", "pixels that differ");
    for (size_t i = 0; i < devs.count; i++) {
        if (!devices_usable(&devs.list[i]))
            continue;
        for (size_t w = 0; w < sizeof(workloads) / sizeof(workloads[0]); w++)
            for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
                const struct workload *wl = &workloads[w];
                struct render_spec spec;
                double tb[MAX_REPS], tf[MAX_REPS], cb[MAX_REPS], cf[MAX_REPS];
                uint64_t sum_brute = 0, sum_fill = 0, differ = 0;
                struct rect_fill rf;
                double work;
                if (p == SPEC_FP64 && !devs.list[i].fp64)
                    continue;
                memset(&spec, 0, sizeof(spec));
                spec.fractal = SPEC_JULIA;
                spec.c_re = wl->c_re;
                spec.c_im = wl->c_im;
                spec.center_re = wl->center_re;
                spec.center_im = wl->center_im;
                spec.view_width = wl->view_width;
                spec.width = W;
                spec.height = H;
                spec.region = (struct spec_rect){0, 0, W, H};
                spec.max_iter = wl->max_iter;
                spec.escape_radius = 2.0;
                spec.precision = (enum spec_precision)p;
                spec.supersample = 1;
                /* Round -1 is a warm-up of each; brute and fill alternate so a slow spell of this
                 * shared host weighs on both alike. */
                for (int r = -1; r < reps; r++) {
                    double t, cpu;
                    spec.rect_fill = false;
                    if ((t = measure_once(&devs.list[i], &spec, brute, smooth, &sum_brute, &rf, &cpu)) < 0)
                        goto done;
                    if (r >= 0) {
                        tb[r] = t;
                        cb[r] = cpu;
                    }
                    spec.rect_fill = true;
                    if ((t = measure_once(&devs.list[i], &spec, counts, smooth, &sum_fill, &rf, &cpu)) < 0)
                        goto done;
                    if (r >= 0) {
                        tf[r] = t;
                        cf[r] = cpu;
                    }
                }
                for (size_t k = 0; k < (size_t)W * H; k++)
                    differ += counts[k] != brute[k];
                /* rf holds the counters of the last fill render. `work` is brute force's sum of
                 * escape counts over that of the samples the device computed with the fill: for
                 * an engine without interior shortcuts, the speedup an idle host would show,
                 * free of this shared host's noise. */
                work = sum_brute / (double)rf.iterations_computed;
                printf("%-28.28s %-2s %-4s %9.1f %9.1f %7.2fx %7.2fx %7.2fx %7.2f %% %6llu %5llu px (%.4f %%)%s\n",
                       devs.list[i].id, wl->name, p == SPEC_FP32 ? "fp32" : "fp64", median(tb, reps) * 1e3,
                       median(tf, reps) * 1e3, median(tb, reps) / median(tf, reps), median(cb, reps) / median(cf, reps),
                       work,
                       100.0 * (double)rf.samples_computed / ((double)W * H), (unsigned long long)rf.device_calls,
                       (unsigned long long)differ, 100.0 * (double)differ / ((double)W * H),
                       sum_fill == sum_brute ? "" : " (sums differ)");
                fflush(stdout);
            }
    }
    status = 0;

done:
    devices_dispose(&devs);
    engine_cpu_free(cpu);
    free(brute);
    free(counts);
    free(smooth);
    return status;
}
