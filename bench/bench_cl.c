/* bench_cl.c: throughput of every OpenCL device's engine (the kernel AUTO picks, with and without
 * its interior shortcuts) against the naive one-sample-per-work-item kernel on the same device,
 * and against the PyOpenCL vector peer of ../shared/peers on the first device, on workloads A, B
 * and C of bench/README.md, fp32 and fp64, in Giter/s; program preparation cold and cached
 * reported apart.
 * Usage: bench_cl [REPS [WORKLOADS]]   (median of REPS renders, default 3; WORKLOADS: the
 * names to run, e.g. "AC", default all) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <time.h>
#include <unistd.h>

#include "engine_cl.h"
#include "err.h"
#include "bench_stats.h"

#define MAX_REPS 15

#ifndef FRACTALD_SOURCE_DIR
#define FRACTALD_SOURCE_DIR "."
#endif

/* The PyOpenCL peer (../shared/peers/README.md): its vector kernel, no FMA, per precision. */
#define PEER_PYTHON "/usr/bin/python3"
#define PEER_OPTS_F32 "-DNVEC=4 -DKB=8 -DUSE_FMA=0"
#define PEER_OPTS_F64 "-DNVEC=6 -DKB=8 -DUSE_FMA=0"

struct workload {
    const char *name;
    double c_re, c_im, center_re, center_im, view_width;
    uint32_t max_iter;
    uint64_t sum_fp32, sum_fp64;   /* bench/README.md checksums, no FMA; 0 = none given */
    uint32_t naive_div;            /* the naive kernel renders a (1920/div)x(1080/div) grid */
    int peer;                      /* the peer knows this workload */
};

static const struct workload workloads[] = {
    {"A", -0.8, 0.156, 0.0, 0.0, 3.0, 1000, 107491740ull, 107566860ull, 1, 1},
    {"B", -0.8, 0.156, 0.17304, 0.23854, 0.0005, 10000, 2346960036ull, 2348272443ull, 4, 1},
    {"C", -0.12, 0.75, 0.0, 0.0, 3.0, 10000, 5009662680ull, 5009643062ull, 4, 0},
};

static const char *const variant_names[] = {"auto", "vector", "scalar", "naive"};


static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a temporary directory this program made (a template never filled in is left). */
static void remove_tree(const char *dir)
{
    if (strstr(dir, "XXXXXX") == NULL)
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}



/* The workload's view on a w x h grid (the same complex rectangle at any size). */
static void spec_fill(struct render_spec *spec, const struct workload *w, enum spec_precision p,
                      uint32_t width, uint32_t height)
{
    memset(spec, 0, sizeof(*spec));
    spec->fractal = SPEC_JULIA;
    spec->c_re = w->c_re;
    spec->c_im = w->c_im;
    spec->center_re = w->center_re;
    spec->center_im = w->center_im;
    spec->view_width = w->view_width;
    spec->width = width;
    spec->height = height;
    spec->region = (struct spec_rect){0, 0, width, height};
    spec->max_iter = w->max_iter;
    spec->escape_radius = 2.0;
    spec->precision = p;
    spec->format = SPEC_RAW_U32;
    spec->supersample = 1;
}

/* Median Giter/s of `reps` renders after one warm-up render (first touch, first launches);
 * *sum gets the checksum. */
static int run(engine_cl *e, const struct render_spec *spec, uint32_t *counts, float *smooth,
               int reps, double *gips, uint64_t *sum)
{
    double rate[MAX_REPS];
    struct engine_cpu_stats st;
    char msg[256];
    int err;

    if ((err = engine_cl_render(e, spec, &spec->region, counts, smooth, NULL, &st, msg,
                                sizeof(msg))) < 0)
        goto fail;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s(), dt;
        if ((err = engine_cl_render(e, spec, &spec->region, counts, smooth, NULL, &st, msg,
                                    sizeof(msg))) < 0)
            goto fail;
        dt = bench_now_s() - t0;
        rate[r] = (double)st.iterations / dt * 1e-9;
    }
    *sum = st.iterations;
    *gips = bench_median(rate, reps);
    return 0;

fail:
    fprintf(stderr, "bench_cl: %s: %s\n", err_name(err), msg);
    return err;
}

/* Where the peers live: $BENCH_PEERS_DIR, else ../shared/peers beside the source tree. Returns
 * NULL (with the reason printed) when the PyOpenCL peer cannot run. */
static const char *peer_dir(char *buf, size_t len)
{
    const char *env = getenv("BENCH_PEERS_DIR");
    char path[4200];

    snprintf(buf, len, "%s", env && env[0] ? env : FRACTALD_SOURCE_DIR "/../shared/peers");
    snprintf(path, sizeof(path), "%s/julia_pyopencl.py", buf);
    if (access(path, R_OK) != 0) {
        printf("peer: %s not found: the peer column is skipped\n", path);
        return NULL;
    }
    if (access(PEER_PYTHON, X_OK) != 0 ||
        system(PEER_PYTHON " -c 'import pyopencl, numpy' >/dev/null 2>&1") != 0) {
        printf("peer: %s cannot import pyopencl and numpy (Debian: python3-pyopencl "
               "python3-numpy): the peer column is skipped\n",
               PEER_PYTHON);
        return NULL;
    }
    return buf;
}

/* Runs the PyOpenCL vector peer on workload `wl` with a fresh PoCL kernel cache (and PyOpenCL
 * binary cache) of its own; *gips gets its median Giter/s and *sum its count total. Returns 0,
 * or -1 when it failed (printed). */
static int run_peer(const char *dir, const char *wl, int fp64, int reps, double *gips,
                    uint64_t *sum)
{
    char tmp[64] = "/tmp/fractald-bench-peer-XXXXXX", cmd[8192], line[1024];
    FILE *p;
    int found = 0;

    if (mkdtemp(tmp) == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && POCL_CACHE_DIR='%s/pocl' JULIA_PYOPENCL_CACHE='%s/pyopencl' "
             PEER_PYTHON " julia_pyopencl.py %s vec %s %d 0 1 '%s' 2>/dev/null",
             dir, tmp, tmp, wl, fp64 ? "f64" : "f32", reps, fp64 ? PEER_OPTS_F64 : PEER_OPTS_F32);
    if ((p = popen(cmd, "r")) != NULL) {
        while (fgets(line, sizeof(line), p)) {
            const char *g = strstr(line, "Giter_s_median="), *t = strstr(line, "total_iters=");
            if (strncmp(line, "RESULT", 6) == 0 && g && t) {
                *gips = atof(g + 15);
                *sum = strtoull(t + 12, NULL, 10);
                found = 1;
            }
        }
        if (pclose(p) != 0)
            found = 0;
    }
    remove_tree(tmp);
    if (!found)
        printf("peer: %s %s failed: %s\n", wl, fp64 ? "f64" : "f32", cmd);
    return found ? 0 : -1;
}

/* Discovers every device with `variant`, caching programs under cache_dir; prints how long
 * preparing each took. */
static int discover(engine_cl ***list, size_t *n, enum engine_cl_variant variant, bool brute,
                    const char *cache_dir, const char *label)
{
    struct engine_cl_options o = ENGINE_CL_OPTIONS_INIT;
    char msg[256];
    double t0 = bench_now_s();
    int err;

    o.cache_dir = cache_dir;
    o.variant = variant;
    o.brute_force = brute;
    if ((err = engine_cl_discover(list, n, &o, msg, sizeof(msg))) < 0)
        return err;
    printf("%-28s %7.0f ms  (%s)\n", label, (bench_now_s() - t0) * 1e3, msg);
    for (size_t i = 0; i < *n; i++) {
        const struct engine_cl_info *info = engine_cl_get_info((*list)[i]);
        printf("  [%zu] %-40s %s, %7.0f ms%s%s\n", i, info->name, variant_names[info->variant],
               info->build_ms, info->from_cache ? " (binary cache)" : " (built from source)",
               engine_cl_failure((*list)[i]) ? " FAILED" : "");
        if (engine_cl_failure((*list)[i]))
            printf("      %s\n", engine_cl_failure((*list)[i]));
    }
    return 0;
}

int main(int argc, char **argv)
{
    engine_cl **cold = NULL, **fast = NULL, **brute = NULL, **naive = NULL;
    size_t ncold = 0, nfast = 0, nbrute = 0, nnaive = 0;
    char cache_dir[64] = "/tmp/fractald-bench-cl-XXXXXX", pocl_dir[64] =
                                                              "/tmp/fractald-bench-pocl-XXXXXX";
    char cpu[256], peers_buf[4096];
    const char *peers;
    uint32_t *counts = NULL;
    float *smooth = NULL;
    int reps = 3, err = 0, bad = 0;
    double t_start = bench_now_s();
    const char *only = argc > 2 ? argv[2] : NULL;

    if (argc > 1)
        reps = atoi(argv[1]);
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_cl: REPS must be 1..%d\n", MAX_REPS);
        return 2;
    }
    counts = malloc(sizeof(*counts) * 1920 * 1080);
    smooth = malloc(sizeof(*smooth) * 1920 * 1080);
    if (counts == NULL || smooth == NULL || mkdtemp(cache_dir) == NULL) {
        err = ERR_NOMEM;
        goto done;
    }
    bench_cpu_model(cpu, sizeof(cpu));
    printf("CPU: %s, %ld logical CPUs online\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
    /* A cold build means PoCL's own kernel cache is empty too: point it at a fresh directory
     * before the ICD loader starts (BENCH_KEEP_POCL_CACHE=1 keeps the user's). */
    if (!getenv("BENCH_KEEP_POCL_CACHE") && mkdtemp(pocl_dir) != NULL)
        setenv("POCL_CACHE_DIR", pocl_dir, 1);

    printf("program preparation (context, queue, fp32+fp64 programs, warm-up launches):\n");
    if ((err = discover(&cold, &ncold, ENGINE_CL_AUTO, false, cache_dir, "auto, cold")) < 0)
        goto done;
    engine_cl_free_all(cold, ncold);
    cold = NULL;
    if ((err = discover(&fast, &nfast, ENGINE_CL_AUTO, false, cache_dir,
                        "auto, from the cache")) < 0)
        goto done;
    if ((err = discover(&brute, &nbrute, ENGINE_CL_AUTO, true, cache_dir,
                        "auto brute force, cold")) < 0)
        goto done;
    if ((err = discover(&naive, &nnaive, ENGINE_CL_NAIVE, false, cache_dir, "naive, cold")) < 0)
        goto done;
    if (nfast == 0) {
        printf("no OpenCL device: nothing to measure\n");
        goto done;
    }
    peers = peer_dir(peers_buf, sizeof(peers_buf));
    if (peers)
        printf("peer: %s/julia_pyopencl.py, vec kernel, '%s' (fp32), '%s' (fp64), its own fresh "
               "POCL_CACHE_DIR, on OpenCL device 0\n",
               peers, PEER_OPTS_F32, PEER_OPTS_F64);

    printf("\n%-3s %-2s %-4s %-6s %8s %8s %6s %8s %8s %7s %8s %6s  %-11s %s\n", "dev", "wl",
           "prec", "kernel", "auto", "brute", "a/br", "+smooth", "naive", "a/naive", "peer",
           "a/peer", "sum", "check");
    for (size_t d = 0; d < nfast; d++) {
        engine_cl *e = fast[d], *bf = d < nbrute ? brute[d] : NULL;
        engine_cl *nv = d < nnaive ? naive[d] : NULL;
        const struct engine_cl_info *info = engine_cl_get_info(e);

        if (engine_cl_failure(e))
            continue;
        printf("device %zu: %s (%s), %u compute units\n", d, info->name, info->platform,
               info->compute_units);
        for (size_t wi = 0; wi < sizeof(workloads) / sizeof(workloads[0]); wi++) {
            const struct workload *w = &workloads[wi];

            if (only && strchr(only, w->name[0]) == NULL)
                continue;
            for (int p = SPEC_FP32; p <= SPEC_FP64; p++) {
                struct render_spec spec;
                double g_auto, g_smooth, g_brute = 0, g_naive = 0, g_peer = 0;
                uint64_t sum, sum2, bsum = 0, nsum, psum = 0;
                uint64_t want = p == SPEC_FP32 ? w->sum_fp32 : w->sum_fp64;
                const char *check;
                char peer_col[2][16] = {"-", "-"};

                if (p == SPEC_FP64 && !info->fp64)
                    continue;
                spec_fill(&spec, w, (enum spec_precision)p, 1920, 1080);
                if ((err = run(e, &spec, counts, NULL, reps, &g_auto, &sum)) < 0)
                    goto done;
                if (bf && !engine_cl_failure(bf) &&
                    (err = run(bf, &spec, counts, NULL, reps, &g_brute, &bsum)) < 0)
                    goto done;
                if ((err = run(e, &spec, counts, smooth, reps, &g_smooth, &sum2)) < 0)
                    goto done;
                if (nv && !engine_cl_failure(nv)) {
                    spec_fill(&spec, w, (enum spec_precision)p, 1920 / w->naive_div,
                              1080 / w->naive_div);
                    if ((err = run(nv, &spec, counts, NULL, reps < 3 ? reps : 3, &g_naive,
                                   &nsum)) < 0)
                        goto done;
                }
                if (peers && d == 0 && w->peer &&
                    run_peer(peers, w->name, p == SPEC_FP64, reps, &g_peer, &psum) == 0) {
                    snprintf(peer_col[0], sizeof(peer_col[0]), "%.2f", g_peer);
                    snprintf(peer_col[1], sizeof(peer_col[1]), "%.2fx", g_auto / g_peer);
                }
                check = sum != sum2                  ? "MISMATCH auto vs +smooth"
                        : g_brute > 0 && sum != bsum ? "MISMATCH shortcuts vs brute force"
                        : want != 0 && sum != want   ? "MISMATCH with bench/README.md"
                        : g_peer > 0 && psum != sum  ? "ok (peer sum differs)"
                                                     : "ok";
                bad |= check[0] == 'M';
                printf("%-3zu %-2s %-4s %-6s %8.2f %8.2f %5.2fx %8.2f %8.3f %6.1fx %8s %6s  "
                       "%-11llu %s\n",
                       d, w->name, p == SPEC_FP32 ? "fp32" : "fp64", variant_names[info->variant],
                       g_auto, g_brute, g_brute > 0 ? g_auto / g_brute : 0.0, g_smooth, g_naive,
                       g_naive > 0 ? g_auto / g_naive : 0.0, peer_col[0], peer_col[1],
                       (unsigned long long)sum, check);
                fflush(stdout);
            }
        }
    }
    printf("Giter/s (sum of escape counts / s), median of %d renders after a warm-up; 1920x1080;\n"
           "auto = the kernel AUTO picks, with its interior shortcuts, counts only; brute = the "
           "same kernel\nbuilt without them; a/br = auto / brute (the shortcuts' gain; A and B "
           "have few cycles);\n+smooth = auto, counts and smooth values; naive = one sample per "
           "work-item, brute force,\ncounts only, on the same view at 1920x1080 (A) or 480x270 "
           "(B, C); peer = PyOpenCL vector\nkernel (no shortcuts, no FMA), kernel time only, "
           "median of %d launches. Total %.1f s.\n",
           reps, reps, bench_now_s() - t_start);

done:
    if (err < 0)
        fprintf(stderr, "bench_cl: %s\n", err_name(err));
    engine_cl_free_all(cold, ncold);
    engine_cl_free_all(fast, nfast);
    engine_cl_free_all(brute, nbrute);
    engine_cl_free_all(naive, nnaive);
    free(counts);
    free(smooth);
    remove_tree(cache_dir);
    remove_tree(pocl_dir);
    return err < 0 || bad ? 1 : 0;
}
