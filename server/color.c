/* color.c: smooth colouring: palette lookup by name, the palette coordinate of a smooth value,
 * linear interpolation between stops in sRGB, and the ss x ss supersample reduction. */
#include <math.h>
#include <string.h>

#include "color.h"
#include "err.h"
#include "palettes.h"

/* Buckets of the segment index: bucket b holds the segment that contains t = b / SEG_BUCKETS, so a
 * lookup starts there and scans forward at most a step or two. 512 covers the 64 segments of the
 * built-in palettes with at most one compare and custom palettes of up to 255 segments with a short
 * scan. A power of two keeps t * SEG_BUCKETS exact.
 * No per-render LUT: measured on a 1920x1080 Julia frame (one core of a shared 2-vCPU EPYC VM),
 * rgb8 takes ~36 ms (~17 ns a sample), grey16 ~27 ms, rgb8 in cycle mode ~24 ms; log() is about
 * half of the log-scaled pass. A LUT indexed by t would still need the log and would make the
 * rounding depend on the table's step instead of on t; rebuilding these segments costs about a
 * microsecond per call, nothing against a band. */
#define SEG_BUCKETS 512

/* What maps a smooth value to a palette coordinate. */
struct coord_params {
    double log_range;   /* ln(1 + max_iter): divisor of the log-scaled pass */
    double cycle;       /* iterations per cycle; 0 for the log-scaled pass */
    double offset;
    int reverse;
};

/* The palette as non-empty segments: segment k covers [start[k], start[k+1]) (the last one up to
 * 1 inclusive), colour = c0 + dc * f with f = (t - start[k]) * inv_width[k]. Stops at equal
 * positions make empty segments, which are dropped: the colour jumps there, and at the jump the
 * later stop wins. */
struct segments {
    uint32_t count;
    uint16_t bucket[SEG_BUCKETS];
    double start[SPEC_MAX_STOPS + 1];
    double inv_width[SPEC_MAX_STOPS];
    double c0[SPEC_MAX_STOPS][3];
    double dc[SPEC_MAX_STOPS][3];
    uint8_t interior[3];
};

static void coord_params_init(struct coord_params *p, const struct spec_coloring *coloring,
                              uint32_t max_iter)
{
    /* max_iter >= 1 in a validated spec; 1 keeps the divisor positive if a caller slips. */
    p->log_range = log(1.0 + (double)(max_iter ? max_iter : 1));
    p->cycle = coloring->cycle > 0 ? coloring->cycle : 0;
    p->offset = coloring->offset;
    p->reverse = coloring->reverse;
}

/* The one implementation of color_coordinate(), inlined into the row loops so that the rows and
 * the public function agree to the last bit. NaN counts as interior. */
static inline double coord(const struct coord_params *p, float mu)
{
    double t;

    if (!(mu >= 0.0f))
        return -1.0;
    if (p->cycle > 0) {
        double x = (double)mu / p->cycle + p->offset;
        t = x - floor(x);
        /* Only an infinite mu gets here as NaN; start of the palette rather than garbage. */
        if (!(t >= 0.0))
            t = 0.0;
    } else {
        t = log(1.0 + (double)mu) / p->log_range;
        if (t > 1.0)
            t = 1.0;
    }
    return p->reverse ? 1.0 - t : t;
}

/* Turns the stops of `coloring` into segments and the bucket index. A validated spec has
 * 2..SPEC_MAX_STOPS stops from 0 to 1; anything else still yields a usable (if odd) palette
 * rather than out-of-range reads, since these functions cannot fail. */
static void segments_init(struct segments *s, const struct spec_coloring *coloring)
{
    uint32_t n = coloring->nstops;
    uint32_t m = 0;

    if (n > SPEC_MAX_STOPS)
        n = SPEC_MAX_STOPS;
    for (uint32_t k = 0; k + 1 < n; k++) {
        double a = coloring->pos[k], b = coloring->pos[k + 1];

        if (!(b > a))
            continue;
        s->start[m] = a;
        s->inv_width[m] = 1.0 / (b - a);
        s->c0[m][0] = coloring->rgb[k].r;
        s->c0[m][1] = coloring->rgb[k].g;
        s->c0[m][2] = coloring->rgb[k].b;
        s->dc[m][0] = (double)coloring->rgb[k + 1].r - coloring->rgb[k].r;
        s->dc[m][1] = (double)coloring->rgb[k + 1].g - coloring->rgb[k].g;
        s->dc[m][2] = (double)coloring->rgb[k + 1].b - coloring->rgb[k].b;
        m++;
    }
    if (m == 0) {
        /* No stop spans any width: one flat segment of the last stop's colour. */
        const struct spec_rgb *c = n ? &coloring->rgb[n - 1] : &coloring->interior;

        s->start[0] = 0.0;
        s->inv_width[0] = 1.0;
        s->c0[0][0] = c->r;
        s->c0[0][1] = c->g;
        s->c0[0][2] = c->b;
        s->dc[0][0] = s->dc[0][1] = s->dc[0][2] = 0.0;
        m = 1;
    }
    s->count = m;
    s->start[m] = INFINITY;

    for (uint32_t b = 0, k = 0; b < SEG_BUCKETS; b++) {
        double t = (double)b / SEG_BUCKETS;

        while (k + 1 < m && t >= s->start[k + 1])
            k++;
        s->bucket[b] = (uint16_t)k;
    }
    s->interior[0] = coloring->interior.r;
    s->interior[1] = coloring->interior.g;
    s->interior[2] = coloring->interior.b;
}

/* Colour of one sample: the interpolated stop colour rounded to nearest, or the interior colour
 * for t < 0. f is clamped so that rounding can never leave 0..255 (t - start can exceed the
 * segment's width by an ulp). */
static inline void sample_rgb(const struct segments *s, double t, uint8_t out[3])
{
    if (t < 0.0) {
        out[0] = s->interior[0];
        out[1] = s->interior[1];
        out[2] = s->interior[2];
        return;
    }
    uint32_t b = (uint32_t)(t * SEG_BUCKETS);
    if (b >= SEG_BUCKETS)
        b = SEG_BUCKETS - 1;
    uint32_t k = s->bucket[b];
    /* One step without a branch covers every bucket that holds at most one segment boundary
     * (all of them for the built-in palettes); the loop, which the sentinel start[count] = inf
     * ends, only runs for custom stops closer together than a bucket. A data-dependent branch
     * here mispredicted often enough to cost a third of the row time. */
    k += t >= s->start[k + 1];
    while (t >= s->start[k + 1])
        k++;
    double f = (t - s->start[k]) * s->inv_width[k];
    f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)(s->c0[k][c] + s->dc[k][c] * f + 0.5);
}

static inline uint32_t sample_grey(double t)
{
    return t < 0.0 ? 0 : (uint32_t)(65535.0 * t + 0.5);
}

/* Rounded mean of n sample values: (sum + n/2) / n, with the division, which costs more than the
 * rest of a pixel, done as a multiply by magic = floor(2^32 / n) + 1. That is exact here: sum is
 * below 64 * 65536 = 2^22, so the product overshoots sum/n by less than 2^-10, while sum/n falls
 * at least 1/n >= 1/64 short of the next integer. */
static inline uint64_t mean_magic(uint32_t n)
{
    return (UINT64_C(1) << 32) / n + 1;
}

static inline uint32_t mean_round(uint32_t sum, uint32_t n, uint64_t magic)
{
    return (uint32_t)(((uint64_t)(sum + n / 2) * magic) >> 32);
}

const char *const *color_palette_names(size_t *count)
{
    if (count)
        *count = palette_count;
    return palette_names;
}

int color_palette_load(struct spec_coloring *out, const char *name)
{
    const struct palette *p = NULL;

    if (!name)
        return ERR_NOT_FOUND;
    for (size_t i = 0; i < palette_count; i++) {
        if (strcmp(palette_table[i].name, name) == 0) {
            p = &palette_table[i];
            break;
        }
    }
    if (!p)
        return ERR_NOT_FOUND;

    out->nstops = p->nstops;
    for (uint32_t k = 0; k < p->nstops; k++) {
        /* Evenly spaced stops: k / (n - 1), exact for the 65-stop tables; the last is forced to 1
         * so the "pos[nstops-1] == 1" invariant never depends on rounding. */
        out->pos[k] = p->pos ? p->pos[k] : (float)k / (float)(p->nstops - 1);
        out->rgb[k].r = p->rgb[k][0];
        out->rgb[k].g = p->rgb[k][1];
        out->rgb[k].b = p->rgb[k][2];
    }
    out->pos[0] = 0.0f;
    out->pos[p->nstops - 1] = 1.0f;
    return 0;
}

double color_coordinate(const struct spec_coloring *coloring, uint32_t max_iter, float mu)
{
    struct coord_params p;

    coord_params_init(&p, coloring, max_iter);
    return coord(&p, mu);
}

void color_rows_rgb8(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                     size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint8_t *rgb8)
{
    struct coord_params p;
    struct segments s;

    if (ss == 0)
        ss = 1;
    coord_params_init(&p, coloring, max_iter);
    segments_init(&s, coloring);

    if (ss == 1) {
        for (uint32_t y = 0; y < rows; y++) {
            const float *src = smooth + (size_t)y * stride;
            uint8_t *dst = rgb8 + (size_t)y * width * 3;

            for (uint32_t x = 0; x < width; x++)
                sample_rgb(&s, coord(&p, src[x]), dst + (size_t)x * 3);
        }
        return;
    }

    /* Integer sums of the rounded sample colours; the mean rounds to nearest, halves up. */
    uint32_t n = ss * ss;
    uint64_t magic = mean_magic(n);
    for (uint32_t y = 0; y < rows; y++) {
        const float *block = smooth + (size_t)y * ss * stride;
        uint8_t *dst = rgb8 + (size_t)y * width * 3;

        for (uint32_t x = 0; x < width; x++) {
            uint32_t sum[3] = {0, 0, 0};

            for (uint32_t sy = 0; sy < ss; sy++) {
                const float *src = block + (size_t)sy * stride + (size_t)x * ss;

                for (uint32_t sx = 0; sx < ss; sx++) {
                    uint8_t c[3];

                    sample_rgb(&s, coord(&p, src[sx]), c);
                    sum[0] += c[0];
                    sum[1] += c[1];
                    sum[2] += c[2];
                }
            }
            for (int c = 0; c < 3; c++)
                dst[(size_t)x * 3 + c] = (uint8_t)mean_round(sum[c], n, magic);
        }
    }
}

void color_rows_grey16(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                       size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint16_t *grey16)
{
    struct coord_params p;

    if (ss == 0)
        ss = 1;
    coord_params_init(&p, coloring, max_iter);

    if (ss == 1) {
        for (uint32_t y = 0; y < rows; y++) {
            const float *src = smooth + (size_t)y * stride;
            uint16_t *dst = grey16 + (size_t)y * width;

            for (uint32_t x = 0; x < width; x++)
                dst[x] = (uint16_t)sample_grey(coord(&p, src[x]));
        }
        return;
    }

    uint32_t n = ss * ss;
    uint64_t magic = mean_magic(n);
    for (uint32_t y = 0; y < rows; y++) {
        const float *block = smooth + (size_t)y * ss * stride;
        uint16_t *dst = grey16 + (size_t)y * width;

        for (uint32_t x = 0; x < width; x++) {
            uint32_t sum = 0;

            for (uint32_t sy = 0; sy < ss; sy++) {
                const float *src = block + (size_t)sy * stride + (size_t)x * ss;

                for (uint32_t sx = 0; sx < ss; sx++)
                    sum += sample_grey(coord(&p, src[sx]));
            }
            dst[x] = (uint16_t)mean_round(sum, n, magic);
        }
    }
}
