/* bench_color.c: the colour pass (server/image/color.c) against a naive per-sample colouring with libm's
 * log, measured in one run on one thread: a 256x256 tile and a whole 1920x1080 frame of workload A
 * at max_iter 256, RGB8 and grey16.
 * Usage: bench_color [REPS]   (FRACTALD_CPU_ISA=base measures the baseline build) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "engine_cpu.h"
#include "err.h"
#include "bench_stats.h"

#define FRAME_W 1920
#define FRAME_H 1080
#define TILE 256
#define MAX_ITER 256
#define MAX_REPS 1000

/* ---- The naive colouring: what server/image/color.c did per sample before its row functions were
 * vectorised. t = log(1 + mu) / log(1 + max_iter) with libm's log, the segment found from a
 * bucket index, interpolated in double and rounded; ss = 1 only, which is all this bench runs. */

#define NAIVE_BUCKETS 512

struct naive_palette {
    uint32_t count;
    uint16_t bucket[NAIVE_BUCKETS];
    double start[SPEC_MAX_STOPS + 1];
    double inv_width[SPEC_MAX_STOPS];
    double c0[SPEC_MAX_STOPS][3];
    double dc[SPEC_MAX_STOPS][3];
    uint8_t interior[3];
};

/* The stops as non-empty segments with a bucket index (a validated palette: 2.. stops, 0 to 1). */
static void naive_palette_init(struct naive_palette *s, const struct spec_coloring *c)
{
    uint32_t m = 0;

    for (uint32_t k = 0; k + 1 < c->nstops; k++) {
        double a = c->pos[k], b = c->pos[k + 1];

        if (!(b > a))
            continue;
        s->start[m] = a;
        s->inv_width[m] = 1.0 / (b - a);
        s->c0[m][0] = c->rgb[k].r;
        s->c0[m][1] = c->rgb[k].g;
        s->c0[m][2] = c->rgb[k].b;
        s->dc[m][0] = (double)c->rgb[k + 1].r - c->rgb[k].r;
        s->dc[m][1] = (double)c->rgb[k + 1].g - c->rgb[k].g;
        s->dc[m][2] = (double)c->rgb[k + 1].b - c->rgb[k].b;
        m++;
    }
    s->count = m;
    s->start[m] = INFINITY;
    for (uint32_t b = 0, k = 0; b < NAIVE_BUCKETS; b++) {
        while (k + 1 < m && (double)b / NAIVE_BUCKETS >= s->start[k + 1])
            k++;
        s->bucket[b] = (uint16_t)k;
    }
    s->interior[0] = c->interior.r;
    s->interior[1] = c->interior.g;
    s->interior[2] = c->interior.b;
}

static double naive_coordinate(double log_range, float mu)
{
    double t;

    if (!(mu >= 0.0f))
        return -1.0;
    t = log(1.0 + (double)mu) / log_range;
    return t > 1.0 ? 1.0 : t;
}

static void naive_rows_rgb8(const struct spec_coloring *coloring, uint32_t max_iter,
                            const float *smooth, size_t stride, uint32_t width, uint32_t rows,
                            uint8_t *rgb8)
{
    struct naive_palette s;
    const double log_range = log(1.0 + (double)max_iter);

    naive_palette_init(&s, coloring);
    for (uint32_t y = 0; y < rows; y++) {
        for (uint32_t x = 0; x < width; x++) {
            const double t = naive_coordinate(log_range, smooth[(size_t)y * stride + x]);
            uint8_t *out = rgb8 + ((size_t)y * width + x) * 3;

            if (t < 0.0) {
                memcpy(out, s.interior, 3);
                continue;
            }
            uint32_t b = (uint32_t)(t * NAIVE_BUCKETS);
            if (b >= NAIVE_BUCKETS)
                b = NAIVE_BUCKETS - 1;
            uint32_t k = s.bucket[b];
            k += t >= s.start[k + 1];
            while (t >= s.start[k + 1])
                k++;
            double f = (t - s.start[k]) * s.inv_width[k];
            f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
            for (int c = 0; c < 3; c++)
                out[c] = (uint8_t)(s.c0[k][c] + s.dc[k][c] * f + 0.5);
        }
    }
}

static void naive_rows_grey16(uint32_t max_iter, const float *smooth, size_t stride, uint32_t width,
                              uint32_t rows, uint16_t *grey16)
{
    const double log_range = log(1.0 + (double)max_iter);

    for (uint32_t y = 0; y < rows; y++)
        for (uint32_t x = 0; x < width; x++) {
            const double t = naive_coordinate(log_range, smooth[(size_t)y * stride + x]);

            grey16[(size_t)y * width + x] = t < 0.0 ? 0 : (uint16_t)(65535.0 * t + 0.5);
        }
}

/* ---- Measurement. */

/* One image to colour: `rows` rows of `width` smooth values, `stride` floats apart. */
struct image {
    const char *name;
    const float *smooth;
    size_t stride;
    uint32_t width, rows;
};

/* Median seconds of the new and the naive row function over `reps` calls, alternated so that a
 * slow spell of the shared host weighs on both; one warm-up call of each first. Counts the bytes
 * in which the last outputs differ into *diff. */
static void measure(const struct image *im, const struct spec_coloring *coloring, int grey,
                    int reps, void *out_new, void *out_naive, double *t_new, double *t_naive,
                    size_t *diff)
{
    static double a[MAX_REPS], b[MAX_REPS];
    const size_t bytes = (size_t)im->width * im->rows * (grey ? 2 : 3);

    for (int r = -1; r < reps; r++) {
        double t0 = bench_now_s(), t1, t2;

        if (grey)
            color_rows_grey16(coloring, MAX_ITER, im->smooth, im->stride, im->width, im->rows, 1,
                              out_new);
        else
            color_rows_rgb8(coloring, MAX_ITER, im->smooth, im->stride, im->width, im->rows, 1,
                            out_new);
        t1 = bench_now_s();
        if (grey)
            naive_rows_grey16(MAX_ITER, im->smooth, im->stride, im->width, im->rows, out_naive);
        else
            naive_rows_rgb8(coloring, MAX_ITER, im->smooth, im->stride, im->width, im->rows,
                            out_naive);
        t2 = bench_now_s();
        if (r >= 0) {
            a[r] = t1 - t0;
            b[r] = t2 - t1;
        }
    }
    *t_new = bench_median(a, (size_t)reps);
    *t_naive = bench_median(b, (size_t)reps);
    *diff = 0;
    for (size_t i = 0; i < bytes; i++)
        *diff += ((const uint8_t *)out_new)[i] != ((const uint8_t *)out_naive)[i];
}

int main(int argc, char **argv)
{
    engine_cpu *engine = NULL;
    float *smooth = NULL;
    uint8_t *out_new = NULL, *out_naive = NULL;
    struct render_spec spec;
    struct spec_coloring coloring;
    int tile_reps = 400, err = 0, bad = 0;
    double t_start = bench_now_s();

    if (argc > 1)
        tile_reps = atoi(argv[1]);
    if (tile_reps < 1 || tile_reps > MAX_REPS) {
        fprintf(stderr, "bench_color: REPS must be 1..%d\n", MAX_REPS);
        return 2;
    }
    smooth = malloc(sizeof(*smooth) * FRAME_W * FRAME_H);
    out_new = malloc((size_t)FRAME_W * FRAME_H * 3);
    out_naive = malloc((size_t)FRAME_W * FRAME_H * 3);
    if (smooth == NULL || out_new == NULL || out_naive == NULL) {
        err = ERR_NOMEM;
        goto done;
    }

    /* Workload A at max_iter 256, smooth values from the CPU engine in fp32 (the precision the
     * server's AUTO picks for this view). The engine's threads only make the data. */
    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_JULIA;
    spec.c_re = -0.8;
    spec.c_im = 0.156;
    spec.view_width = 3.0;
    spec.width = FRAME_W;
    spec.height = FRAME_H;
    spec.region = (struct spec_rect){0, 0, FRAME_W, FRAME_H};
    spec.max_iter = MAX_ITER;
    spec.escape_radius = 2.0;
    spec.precision = SPEC_FP32;
    spec.format = SPEC_RAW_F32;
    spec.supersample = 1;
    if ((err = engine_cpu_new(&engine, 0)) < 0)
        goto done;
    if ((err = engine_cpu_render(engine, &spec, &spec.region, NULL, smooth, NULL, NULL)) < 0)
        goto done;
    engine_cpu_free(engine);
    engine = NULL;

    /* The default colouring: "inferno", log-scaled (cycle 0), black interior. */
    memset(&coloring, 0, sizeof(coloring));
    if ((err = color_palette_load(&coloring, "inferno")) < 0)
        goto done;

    {
        const size_t x0 = (FRAME_W - TILE) / 2, y0 = (FRAME_H - TILE) / 2;
        const struct image images[2] = {
            {"tile 256x256 (centre)", smooth + y0 * FRAME_W + x0, FRAME_W, TILE, TILE},
            {"frame 1920x1080", smooth, FRAME_W, FRAME_W, FRAME_H},
        };
        size_t interior = 0;

        for (size_t i = 0; i < (size_t)FRAME_W * FRAME_H; i++)
            interior += !(smooth[i] >= 0.0f);
        printf("workload A, max_iter %d, fp32 smooth values (%.1f %% interior); palette inferno, "
               "log-scaled; %s path; one thread, median of %d (tile) / %d (frame) calls\n",
               MAX_ITER, 100.0 * (double)interior / ((double)FRAME_W * FRAME_H),
               getenv("FRACTALD_CPU_ISA") ? getenv("FRACTALD_CPU_ISA") : "widest", tile_reps,
               tile_reps / 20 > 5 ? tile_reps / 20 : 5);
        printf("%-22s %-7s %10s %10s %8s %9s  %s\n", "image", "format", "new ms", "naive ms",
               "ratio", "ns/sample", "bytes differing");
        for (int im = 0; im < 2; im++) {
            const int reps = im == 0 ? tile_reps : (tile_reps / 20 > 5 ? tile_reps / 20 : 5);

            for (int grey = 0; grey < 2; grey++) {
                double t_new, t_naive;
                size_t diff;
                const double samples = (double)images[im].width * images[im].rows;

                measure(&images[im], &coloring, grey, reps, out_new, out_naive, &t_new, &t_naive,
                        &diff);
                bad |= diff != 0;
                printf("%-22s %-7s %10.3f %10.3f %7.2fx %9.2f  %zu\n", images[im].name,
                       grey ? "grey16" : "rgb8", t_new * 1e3, t_naive * 1e3, t_naive / t_new,
                       t_new * 1e9 / samples, diff);
                fflush(stdout);
            }
        }
    }
    printf("new = color_rows_*() of server/image/color.c; naive = libm log per sample (the previous "
           "color.c); ratio = naive / new. Total %.1f s.\n",
           bench_now_s() - t_start);

done:
    if (err < 0)
        fprintf(stderr, "bench_color: %s\n", err_name(err));
    engine_cpu_free(engine);
    free(smooth);
    free(out_new);
    free(out_naive);
    return err < 0 || bad ? 1 : 0;
}
