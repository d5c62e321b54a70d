/* bench_cpu.c: throughput of the CPU engine, measured in one run on workloads A, B and C of
 * bench/README.md, fp32 and fp64, in Giter/s (sum of escape counts per second): with its exact
 * interior shortcuts and without (brute force), against the hand-written peer lanes of
 * ../shared/peers/ (built here with the C compiler, when that folder exists) and a plain
 * one-thread scalar loop. Usage: bench_cpu [REPS]   (FRACTALD_CPU_ISA=avx2|base picks narrower
 * lanes, for the engine and the peer alike) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cpu_isa.h"
#include "engine_cpu.h"
#include "err.h"
#include "escape.h"
#include "bench_stats.h"

#define MAX_REPS 15

#ifndef BENCH_SOURCE_DIR
#define BENCH_SOURCE_DIR "."
#endif
#ifndef BENCH_BINARY_DIR
#define BENCH_BINARY_DIR "."
#endif

struct workload {
    const char *name;
    double c_re, c_im, center_re, center_im, view_width;
    uint32_t max_iter;
    uint64_t sum_fp32, sum_fp64;   /* bench/README.md checksums, no FMA */
    uint32_t scalar_row_step;      /* the scalar loop runs every n-th row (0: not at all) */
    const char *peer_env;          /* how the peer's driver is told the view (julia.h) */
    const char *peer_wl;
};

static const struct workload workloads[] = {
    {"A", -0.8, 0.156, 0.0, 0.0, 3.0, 1000, 107491740ull, 107566860ull, 1, "", "A"},
    {"B", -0.8, 0.156, 0.17304, 0.23854, 0.0005, 10000, 2346960036ull, 2348272443ull, 8, "",
     "B"},
    {"C", -0.12, 0.75, 0.0, 0.0, 3.0, 10000, 5009662680ull, 5009643062ull, 0,
     "JULIA_C=-0.12,0.75 JULIA_WIDTH=3.0 JULIA_MAXITER=10000 ", "A"},
};

/* The peer build: its binary and variant, or path[0] == 0 with a note saying why not. */
struct peer {
    char path[1024], variant[32], note[2048];
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

/* One render; *gips gets its Giter/s and *sum its checksum. */
static int render_once(engine_cpu *engine, const struct render_spec *spec, uint32_t *counts,
                       float *smooth, double *gips, uint64_t *sum)
{
    struct engine_cpu_stats st;
    double t0 = bench_now_s();
    int err;

    if ((err = engine_cpu_render(engine, spec, &spec->region, counts, smooth, NULL, &st)) < 0)
        return err;
    *gips = (double)st.iterations / (bench_now_s() - t0) * 1e-9;
    *sum = st.iterations;
    return 0;
}

/* The peer's turn in engines_run: one run of the peer program per round, between the engine
 * renders, so that a slow spell of this shared host weighs on the peer as on the engines. */
struct peer_turn {
    const struct peer *peer;
    const struct workload *w;
    int f64;
    unsigned threads;
    double gips;            /* out: the median over the rounds of the peer's Giter/s, 0 if none */
    uint64_t sum;           /* out: the peer's checksum (0 if its runs disagree or failed) */
};

static double peer_run(const struct peer *p, const struct workload *w, int f64, unsigned threads,
                       int reps, uint64_t *sum);

/* Median Giter/s of `reps` renders of each of n engines after one warm-up render each; the
 * engines take turns render by render, so that a slow spell of the host weighs on all alike.
 * sum[i] gets engine i's checksum (0 if its renders disagree). With pt, the peer takes a turn
 * after the engines' in every round too (a run of 2 renders, its faster one counted: the first
 * render of a fresh process pays its thread start and first touch). */
static int engines_run(engine_cpu *const *engines, int n, const struct render_spec *spec,
                       uint32_t *counts, float *smooth, int reps, double *gips, uint64_t *sum,
                       struct peer_turn *pt)
{
    double rate[4][MAX_REPS], prate[MAX_REPS], g;
    uint64_t s;
    int err, np = 0;

    for (int i = 0; i < n; i++)
        if ((err = render_once(engines[i], spec, counts, smooth, &g, &sum[i])) < 0)
            return err;
    if (pt)
        pt->sum = 0;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < n; i++) {
            if ((err = render_once(engines[i], spec, counts, smooth, &rate[i][r], &s)) < 0)
                return err;
            if (s != sum[i])
                sum[i] = 0;
        }
        if (pt && pt->peer->path[0]) {
            double gp = peer_run(pt->peer, pt->w, pt->f64, pt->threads, 2, &s);

            if (gp > 0) {
                prate[np++] = gp;
                pt->sum = np == 1 || s == pt->sum ? s : 0;
            }
        }
    }
    for (int i = 0; i < n; i++)
        gips[i] = bench_median(rate[i], (size_t)reps);
    if (pt)
        pt->gips = np ? bench_median(prate, (size_t)np) : 0;
    return 0;
}

static const char *isa_name(enum cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "base (sse2)";
}

/* Builds the widest peer variant the picked ISA allows (the flags of peers/README.md) into the
 * build tree, from BENCH_SOURCE_DIR/../shared/peers. The peer is never part of fractald. */
static void peer_build(struct peer *p, enum cpu_isa isa)
{
    char dir[1024], cmd[4096];
    struct stat sb;
    const char *flags;

    p->path[0] = 0;
    snprintf(dir, sizeof(dir), "%s/../shared/peers", BENCH_SOURCE_DIR);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(p->note, sizeof(p->note), "no peer: %.200s is absent", dir);
        return;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == CPU_ISA_AVX512 && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("bmi2")) {
        snprintf(p->variant, sizeof(p->variant), "avx512-refill");
        flags = "-march=native -mprefer-vector-width=512";
    } else if (isa >= CPU_ISA_AVX2 && __builtin_cpu_supports("fma")) {
        snprintf(p->variant, sizeof(p->variant), "avx2-refill");
        flags = "-mavx2 -mfma";
    } else
#endif
    {
        (void)isa;
        snprintf(p->note, sizeof(p->note), "no peer: it needs AVX2 + FMA or AVX-512 lanes");
        return;
    }
    snprintf(p->path, sizeof(p->path), "%s/peer_%s", BENCH_BINARY_DIR, p->variant);
    snprintf(cmd, sizeof(cmd),
             "cc -O3 %s -ffp-contract=off -fopenmp -DNV=6 -DKB=32 -DUSE_FMA=0 -I'%s' "
             "'%s/julia_omp.c' -o '%s'",
             flags, dir, dir, p->path);
    if (system(cmd) != 0) {
        snprintf(p->note, sizeof(p->note), "no peer: its build failed (%.180s)", cmd);
        p->path[0] = 0;
        return;
    }
    snprintf(p->note, sizeof(p->note), "peer: %s (%.200s/julia_omp.c, NV=6 KB=32, no FMA)",
             p->variant, dir);
}

/* Runs the peer on a workload, `reps` renders in one process; returns its best Giter/s (0 on
 * failure), its sum in *sum. */
static double peer_run(const struct peer *p, const struct workload *w, int f64, unsigned threads,
                       int reps, uint64_t *sum)
{
    char cmd[2048], line[1024];
    double g = 0;
    FILE *f;

    *sum = 0;
    if (p->path[0] == 0)
        return 0;
    snprintf(cmd, sizeof(cmd),
             "%sOMP_NUM_THREADS=%u OMP_PROC_BIND=true OMP_PLACES=cores '%s' %s %s %s %d",
             w->peer_env, threads, p->path, w->peer_wl, p->variant, f64 ? "f64" : "f32", reps);
    if ((f = popen(cmd, "r")) == NULL)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char *a = strstr(line, "Giter_s_best="), *b = strstr(line, "total_iters=");
        if (strncmp(line, "RESULT", 6) == 0 && a && b) {
            g = strtod(a + 13, NULL);
            *sum = strtoull(b + 12, NULL, 10);
        }
    }
    pclose(f);
    return g;
}

int main(int argc, char **argv)
{
    engine_cpu *engine = NULL, *brute = NULL;
    uint32_t *counts = NULL;
    float *smooth = NULL;
    int reps = 5, err = 0, bad = 0;
    double t_start = bench_now_s();
    struct peer peer;
    char model[256];
    enum cpu_isa isa = cpu_isa_widest();

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
    bench_cpu_model(model, sizeof(model));
    printf("cpu: %s; lanes: %s%s\n", model, isa_name(isa),
           getenv("FRACTALD_CPU_ISA") ? " (FRACTALD_CPU_ISA)" : " (widest)");
    {
        double t0 = bench_now_s();
        if ((err = engine_cpu_new(&engine, 0)) < 0)
            goto done;
        printf("engine: %u threads, started in %.2f ms; median of %d runs after a warm-up\n",
               engine_cpu_threads(engine), (bench_now_s() - t0) * 1e3, reps);
    }
    setenv("FRACTALD_CPU_SHORTCUTS", "0", 1);
    err = engine_cpu_new(&brute, 0);
    unsetenv("FRACTALD_CPU_SHORTCUTS");
    if (err < 0)
        goto done;
    peer_build(&peer, isa);
    printf("%s\n", peer.note);
    printf("%-3s %-5s %9s %9s %7s %10s %9s %8s %9s %7s  %-11s %s\n", "wl", "prec", "engine",
           "brute", "eng/bru", "eng+smooth", "peer", "eng/peer", "scalar-1t", "eng/sc", "sum",
           "check");
    for (size_t wi = 0; wi < sizeof(workloads) / sizeof(workloads[0]); wi++) {
        const struct workload *w = &workloads[wi];
        for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
            engine_cpu *both[2] = {engine, brute};
            struct render_spec spec;
            double g[2], g_smooth, rate[MAX_REPS], secs, g_scalar = 0, g_peer;
            uint64_t sum[2], sum_s, sum_p, want = p == SPEC_FP32 ? w->sum_fp32 : w->sum_fp64;
            int sreps = reps < 3 ? reps : 3, ok;
            char peer_col[2][16], sc_col[2][16];

            spec_fill(&spec, w, (enum spec_precision)p);
            struct peer_turn pt = {&peer, w, p == SPEC_FP64, engine_cpu_threads(engine), 0, 0};

            if ((err = engines_run(both, 2, &spec, counts, NULL, reps, g, sum, &pt)) < 0)
                goto done;
            g_peer = pt.gips;
            sum_p = pt.sum;
            if ((err = engines_run(&engine, 1, &spec, counts, smooth, reps, &g_smooth, &sum_s,
                                   NULL)) < 0)
                goto done;
            if (w->scalar_row_step) {
                for (int r = 0; r < sreps; r++) {
                    uint64_t s = scalar_run(&spec, w->scalar_row_step, &secs);
                    rate[r] = (double)s / secs * 1e-9;
                }
                g_scalar = bench_median(rate, (size_t)sreps);
            }
            ok = sum[0] == want && sum[1] == want && sum_s == want;
            bad |= !ok;
            snprintf(peer_col[0], sizeof(peer_col[0]), g_peer > 0 ? "%.2f" : "-", g_peer);
            snprintf(peer_col[1], sizeof(peer_col[1]), g_peer > 0 ? "%.2fx" : "-",
                     g[0] / g_peer);
            snprintf(sc_col[0], sizeof(sc_col[0]), g_scalar > 0 ? "%.3f" : "-", g_scalar);
            snprintf(sc_col[1], sizeof(sc_col[1]), g_scalar > 0 ? "%.1fx" : "-",
                     g[0] / g_scalar);
            printf("%-3s %-5s %9.2f %9.2f %6.2fx %10.2f %9s %8s %9s %7s  %-11llu %s%s\n",
                   w->name, p == SPEC_FP32 ? "fp32" : "fp64", g[0], g[1], g[0] / g[1], g_smooth,
                   peer_col[0], peer_col[1], sc_col[0], sc_col[1], (unsigned long long)sum[0],
                   ok ? "ok" : "MISMATCH with bench/README.md",
                   g_peer > 0 && sum_p != want ? " (peer sum differs)" : "");
            fflush(stdout);
        }
    }
    printf("Giter/s; engine = all threads, counts only, exact interior shortcuts on; brute = the "
           "same\nwith FRACTALD_CPU_SHORTCUTS=0 (renders alternate with engine's); eng+smooth = "
           "counts and\nsmooth values; peer = the peer lanes, same threads, one run of 2 renders "
           "after the\nengines' in every round (median of the faster ones); scalar-1t = escape.h "
           "scalar loop,\none thread (B: every 8th row; C: not run). Total %.1f s.\n",
           bench_now_s() - t_start);

done:
    if (err < 0)
        fprintf(stderr, "bench_cpu: %s\n", err_name(err));
    engine_cpu_free(engine);
    engine_cpu_free(brute);
    free(counts);
    free(smooth);
    return err < 0 || bad ? 1 : 0;
}
