/* bench_server.c: the whole server's compute path (the scheduler over every usable device) against
 * each device alone, in one run, on workloads A, B and C of bench/README.md at 1920x1080, fp32 and
 * fp64, in Giter/s (sum of escape counts per second), counts and smooth values as a PNG needs.
 * Usage: bench_server [REPS]   (devices as fractald finds them; FRACTALD_DEVICES applies;
 * BENCH_COLOCATED_NICE=0 runs CPU-type devices at equal priority, as `share_cpu = equal`) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "devconf.h"
#include "devices.h"
#include "engine_cpu.h"
#include "err.h"
#include "sched.h"
#include "bench_stats.h"

#define MAX_REPS 9

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



/* Giter/s of one render of the full frame through the scheduler, restricted to `selector`
 * ("" = every device). Returns a negative number if the render fails. */
static double measure_once(sched *s, struct render_spec *spec, const char *selector, uint32_t *counts,
                           float *smooth)
{
    struct spec_rect rect = {0, 0, spec->width, spec->height};
    struct sched_call call = {s, 0, ""};
    struct engine_cpu_stats st = {0};
    double t0, t;
    int err;

    snprintf(spec->device, sizeof(spec->device), "%s", selector);
    t0 = bench_now_s();
    err = sched_compute(&call, spec, &rect, counts, smooth, NULL, &st);
    t = bench_now_s() - t0;
    if (err < 0) {
        fprintf(stderr, "bench_server: %s on %s: %s\n", err_name(err), selector[0] ? selector : "all", call.msg);
        return -1;
    }
    return (double)st.iterations / t / 1e9;
}


int main(int argc, char **argv)
{
    static struct devconf conf;
    struct config cfg;
    struct devices devs = {0};
    struct sched_options so = SCHED_OPTIONS_INIT;
    engine_cpu *cpu = NULL;
    sched *s = NULL;
    uint32_t *counts = malloc(1920 * 1080 * sizeof(*counts));
    float *smooth = malloc(1920 * 1080 * sizeof(*smooth));
    int reps = argc > 1 ? atoi(argv[1]) : 3, status = 1;
    double (*rates)[MAX_REPS] = NULL;    /* per device, then all devices: one rate per round */
    char msg[512];

    if (reps < 1 || reps > MAX_REPS || !counts || !smooth) {
        fprintf(stderr, "usage: bench_server [REPS 1..%d]\n", MAX_REPS);
        return 2;
    }
    config_defaults(&cfg);
    /* BENCH_COLOCATED_NICE=0 measures the devices at equal priority (share_cpu = equal). */
    if (getenv("BENCH_COLOCATED_NICE"))
        so.colocated_nice = atoi(getenv("BENCH_COLOCATED_NICE"));
    if (devconf_from_config(&conf, &cfg, msg, sizeof(msg)) < 0 || engine_cpu_new(&cpu, 0) < 0 ||
        devconf_discover(&devs, &conf, cpu, msg, sizeof(msg)) < 0 || sched_new(&s, &devs, &so, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "bench_server: %s\n", msg);
        goto done;
    }
    if (!(rates = calloc(devs.count + 1, sizeof(*rates)))) {
        fprintf(stderr, "bench_server: out of memory\n");
        goto done;
    }
    printf("devices (calibrated Giter/s):\n");
    for (size_t i = 0; i < devs.count; i++)
        printf("  %-42s %s %6.2f\n", devs.list[i].id, devices_usable(&devs.list[i]) ? "used  " : "unused",
               devs.list[i].giter_per_s);
    printf("\n%-3s %-5s", "wl", "prec");
    for (size_t i = 0; i < devs.count; i++)
        if (devices_usable(&devs.list[i]))
            printf(" %12.12s", devs.list[i].id);
    printf(" %12s %10s\n", "all devices", "all/best");
    for (size_t w = 0; w < sizeof(workloads) / sizeof(workloads[0]); w++)
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            const struct workload *wl = &workloads[w];
            struct render_spec spec;
            double best = 0, all;
            memset(&spec, 0, sizeof(spec));
            spec.fractal = SPEC_JULIA;
            spec.c_re = wl->c_re;
            spec.c_im = wl->c_im;
            spec.center_re = wl->center_re;
            spec.center_im = wl->center_im;
            spec.view_width = wl->view_width;
            spec.width = 1920;
            spec.height = 1080;
            spec.region = (struct spec_rect){0, 0, 1920, 1080};
            spec.max_iter = wl->max_iter;
            spec.escape_radius = 2.0;
            spec.precision = (enum spec_precision)p;
            spec.supersample = 1;
            printf("%-3s %-5s", wl->name, p == SPEC_FP32 ? "fp32" : "fp64");
            /* Rounds of one render per configuration (each device alone, then all of them),
             * round after round, so that a slow spell of this shared host weighs on every
             * column alike rather than on whichever ran during it. Round 0 is a warm-up. */
            for (int r = -1; r < reps; r++)
                for (size_t i = 0; i <= devs.count; i++) {
                    double v;
                    if (i < devs.count && !devices_usable(&devs.list[i]))
                        continue;
                    v = measure_once(s, &spec, i < devs.count ? devs.list[i].id : "", counts, smooth);
                    if (v < 0)
                        goto done;
                    if (r >= 0)
                        rates[i][r] = v;
                }
            for (size_t i = 0; i < devs.count; i++) {
                double r;
                if (!devices_usable(&devs.list[i]))
                    continue;
                r = bench_median(rates[i], reps);
                printf(" %12.2f", r);
                if (r > best)
                    best = r;
            }
            all = bench_median(rates[devs.count], reps);
            printf(" %12.2f %9.2fx\n", all, best > 0 ? all / best : 0);
            fflush(stdout);
        }
    printf("\nGiter/s, median of %d interleaved rounds of 1920x1080 renders after a warm-up round, counts and smooth values, through "
           "the scheduler (a device alone: the request's device selector)\n", reps);
    status = 0;
done:
    sched_free(s);
    devices_dispose(&devs);
    engine_cpu_free(cpu);
    free(rates);
    free(counts);
    free(smooth);
    return status;
}
