/* color.c: smooth colouring: palette lookup by name, the palette coordinate of a smooth value,
 * linear interpolation between stops in sRGB, and the ss x ss supersample reduction. The row
 * functions work on blocks of samples in loops the compiler vectorises, built twice (AVX2 and
 * baseline x86-64, picked at run time) from one source, so both give the same bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "cpu_isa.h"
#include "err.h"
#include "fastlog.h"
#include "palettes.h"

/* Buckets of the segment index: bucket b holds the segment that contains t = b / SEG_BUCKETS, so a
 * lookup starts there and needs at most one step for any palette whose stops are at least a bucket
 * apart (all built-in ones). A power of two keeps t * SEG_BUCKETS exact. */
#define SEG_BUCKETS 512

/* Samples per block: every vectorised loop runs over exactly BLOCK elements (a constant trip count
 * is what GCC's -O2 vectoriser accepts); a partial block is padded, and a run of fewer than
 * SHORT_RUN samples (a narrow image's row) takes the scalar path instead. Against 64, 128 was
 * 1-5 % faster on a 256x256 tile and 256 5-8 %, but 256 wastes more on rows that are not a
 * multiple of it (1920 = 7.5 blocks) and needs ~40 KiB of stack. */
#define BLOCK 128
#define SHORT_RUN (BLOCK / 4)

/* Reads and writes a double's bits; memcpy is how C11 spells it and compiles to nothing. */
static inline uint64_t bits_of(double x)
{
    uint64_t b;

    memcpy(&b, &x, sizeof(b));
    return b;
}

static inline double double_of(uint64_t b)
{
    double x;

    memcpy(&x, &b, sizeof(x));
    return x;
}

/* ---------------------------------------------------------------------------------------------
 * The palette coordinate. Its logarithm is fastlog.h's (platform/): libm's log() cost about half
 * of a log-scaled row and is not the same function on every host, while fastlog's is nearly
 * correctly rounded on every input here and vectorises. */

/* What maps a smooth value to a palette coordinate. */
struct coord_params {
    double log_range;   /* ln(1 + max_iter) by fastlog_ln_at(): divisor of the log-scaled pass */
    double cycle;       /* iterations per cycle; 0 for the log-scaled pass */
    double offset;
    int reverse;
};

static void coord_params_init(struct coord_params *p, const struct spec_coloring *coloring,
                              uint32_t max_iter)
{
    /* max_iter >= 1 in a validated spec; 1 keeps the divisor positive if a caller slips. */
    const double x = 1.0 + (double)(max_iter ? max_iter : 1);

    p->log_range = fastlog_ln_at(x, fastlog_row_of(x));
    p->cycle = coloring->cycle > 0 ? coloring->cycle : 0;
    p->offset = coloring->offset;
    p->reverse = coloring->reverse;
}

/* mu >= 0 (+0, -0, up to +inf), i.e. not interior, decided on the bits: an integer test
 * vectorises where a float compare (which may trap) keeps GCC from if-converting the loop. */
static inline __attribute__((always_inline)) int escaped(float mu)
{
    uint32_t b;

    memcpy(&b, &mu, sizeof(b));
    return b <= 0x7F800000u || b == 0x80000000u;
}

/* The steps of one coordinate, shared by the block loops and color_coordinate(), so that the two
 * perform the same operations and agree to the last bit. Log-scaled: t = ln(1 + mu) / log_range,
 * clamped to 1 (y = ln(1 + mu) by fastlog.h). */
static inline __attribute__((always_inline)) double coord_scale(double y, double log_range)
{
    const double t = y / log_range;

    return t > 1.0 ? 1.0 : t;
}

/* floor(x) for every double x, from two additions: n = x rounded to an integer (adding and taking
 * away 2^52 with x's sign), minus 1 where that rounded up. |x| >= 2^52 is already an integer, as
 * are inf and NaN, which come back unchanged. The one difference from floor(): -0 gives +0, which
 * coord_cycle absorbs. Written with masks because libm's floor() does not vectorise here. */
static inline __attribute__((always_inline)) double floor_of(double x)
{
    const double magic = double_of((bits_of(x) & 0x8000000000000000u) | 0x4330000000000000u);
    const double n = (x + magic) - magic;
    const uint64_t up = -(uint64_t)(n > x);
    const uint64_t small = -(uint64_t)(fabs(x) < 0x1p52);
    const double fl = n - double_of(bits_of(1.0) & up);

    return double_of((bits_of(fl) & small) | (bits_of(x) & ~small));
}

/* Cycling: the fraction of mu / cycle + offset, as x - floor(x). Adding +0 turns the -0 that
 * floor_of's +0 for x = -0 would leave into the +0 that floor(-0) = -0 gives (x - floor(x) is
 * never -0 otherwise, so nothing else changes). Only an infinite mu makes it NaN (inf - inf);
 * that is the start of the palette rather than garbage. */
static inline __attribute__((always_inline)) double coord_cycle(float mu, double cycle,
                                                                 double offset)
{
    const double x = (double)mu / cycle + offset;
    const double t = (x - floor_of(x)) + 0.0;
    const uint64_t number = -(uint64_t)(t == t);

    return double_of(bits_of(t) & number);
}

/* Interior samples get -1, as bit operations so that the select vectorises on SSE2 too. */
static inline __attribute__((always_inline)) double coord_interior(float mu, double t)
{
    const uint64_t keep = -(uint64_t)escaped(mu);

    return double_of((bits_of(t) & keep) | (bits_of(-1.0) & ~keep));
}

/* The coordinate of one sample by the steps above: color_coordinate() and short runs. */
static inline double coord_one(const struct coord_params *p, float mu)
{
    double t;

    if (p->cycle > 0) {
        t = coord_cycle(mu, p->cycle, p->offset);
    } else {
        const double x = 1.0 + (double)mu;

        t = coord_scale(fastlog_ln_at(x, fastlog_row_of(x)), p->log_range);
    }
    if (p->reverse)
        t = 1.0 - t;
    return coord_interior(mu, t);
}

/* Palette coordinates of BLOCK smooth values (pad a partial block): the steps above as several
 * short loops rather than one, each of which vectorises and keeps the vector units busy. One long
 * loop body stalled on its dependency chain: the division in a loop of its own alone took a
 * log-scaled block from 2.7 to 2.25 ns a sample (AVX2, this file's VM). Interior samples are set
 * to -1 before the reversal, which leaves negative coordinates alone: the same values as
 * color_coordinate()'s reverse-then-interior order. */
static inline __attribute__((always_inline)) void coord_block(const struct coord_params *p,
                                                               const float *restrict mu,
                                                               double *restrict t)
{
    /* Locals, so that the compiler need not fear that the stores to t[] change *p. */
    const double log_range = p->log_range, cycle = p->cycle, offset = p->offset;

    if (cycle > 0) {
        for (int i = 0; i < BLOCK; i++)
            t[i] = coord_interior(mu[i], coord_cycle(mu[i], cycle, offset));
    } else {
        double x[BLOCK];
        uint64_t row[BLOCK];

        for (int i = 0; i < BLOCK; i++) {
            x[i] = 1.0 + (double)mu[i];
            row[i] = fastlog_row_of(x[i]);
        }
        for (int i = 0; i < BLOCK; i++)
            x[i] = fastlog_ln_at(x[i], row[i]);
        for (int i = 0; i < BLOCK; i++)
            t[i] = coord_interior(mu[i], coord_scale(x[i], log_range));
    }
    if (p->reverse)
        for (int i = 0; i < BLOCK; i++) {
            const uint64_t in = -(bits_of(t[i]) >> 63);

            t[i] = double_of((bits_of(1.0 - t[i]) & ~in) | (bits_of(t[i]) & in));
        }
}

/* ---------------------------------------------------------------------------------------------
 * Palette segments and the colour of a sample. */

/* How rgb_block finds a sample's segment, decided once per call from the stops. */
enum seg_mode {
    SEG_UNIFORM,    /* 2^n equal segments starting at exactly k / 2^n: k is computed */
    SEG_ONE_STEP,   /* every bucket holds at most one segment start: bucket + one compare */
    SEG_SCAN        /* stops closer than a bucket, or odd ones: the scalar loop */
};

/* A segment's colour as whole rows (r, g, b, 0), so that rgb_block computes a sample's three
 * channels with one vector operation each: GCC's vector extensions, as in engine_cpu.c. With the
 * channels in separate tables the compiler vectorised across samples instead and emulated six
 * gathers per sample; this form measured 1.6 ns a sample against 2.6 (colour and store, AVX2). */
typedef double v4d __attribute__((vector_size(32)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef uint8_t v16qu __attribute__((vector_size(16)));

struct seg_colour {
    v4d c0, dc;
};

/* The palette as non-empty segments: segment k covers [start[k], start[k+1]) (the last one up to
 * 1 inclusive), colour = c0 + dc * f with f = (t - start[k]) * inv_width[k]. Stops at equal
 * positions make empty segments, which are dropped: the colour jumps there, and at the jump the
 * later stop wins. colour[count] is the interior colour with dc = 0, so that interior samples
 * take the same arithmetic as the others (c0 + 0 * f + 0.5 truncates to c0). */
struct segments {
    struct seg_colour colour[SPEC_MAX_STOPS + 1];
    uint32_t count;
    enum seg_mode mode;
    double uniform_inv;            /* SEG_UNIFORM: the number of segments, 2^n */
    int64_t bucket[SEG_BUCKETS];   /* int64: the index width GCC emulates gathers for */
    double start[SPEC_MAX_STOPS + 1];
    double inv_width[SPEC_MAX_STOPS];
};

/* How rgb_block may find the segments, and the buckets where it needs them:
 * SEG_UNIFORM when there are m = 2^n <= SEG_BUCKETS segments with starts and widths exactly k / m
 *   and 1 / m: then bucket b would hold segment b >> (9 - n), start[k] is k * 2^-n and
 *   inv_width[k] is m, bit for bit (all built-in palettes but "fire"); no buckets are needed;
 * SEG_ONE_STEP when no bucket's range [b, b + 1) / SEG_BUCKETS (the last one up to 1 inclusive)
 *   holds two segment starts, so that one step after the bucket is all sample_rgb's loop does,
 *   and no start is negative or -0 (rgb_block compares t and starts as integers);
 * SEG_SCAN otherwise. */
static void segments_index(struct segments *s)
{
    const uint32_t m = s->count;
    uint32_t shift = 0;

    while (((uint32_t)SEG_BUCKETS >> shift) > m)
        shift++;
    if (((uint32_t)SEG_BUCKETS >> shift) == m) {
        const double width = (double)(1u << shift) / SEG_BUCKETS;
        const double inv = (double)SEG_BUCKETS / (1u << shift);
        uint32_t k = 0;

        while (k < m && s->start[k] == (double)k * width && s->inv_width[k] == inv)
            k++;
        if (k == m) {
            s->mode = SEG_UNIFORM;
            s->uniform_inv = inv;
            return;
        }
    }

    for (uint32_t b = 0, k = 0; b < SEG_BUCKETS; b++) {
        double t = (double)b / SEG_BUCKETS;

        while (k + 1 < m && t >= s->start[k + 1])
            k++;
        s->bucket[b] = k;
    }
    s->mode = SEG_ONE_STEP;
    for (uint32_t k = 0; k < m; k++)
        if (bits_of(s->start[k]) >> 63)
            s->mode = SEG_SCAN;
    for (uint32_t b = 0; b < SEG_BUCKETS && s->mode == SEG_ONE_STEP; b++) {
        const uint32_t k = (uint32_t)s->bucket[b];
        const double end = (double)(b + 1) / SEG_BUCKETS;

        /* start[m] = inf ends the table, so k + 2 <= m is a valid index. */
        if (k + 2 <= m && (b + 1 < SEG_BUCKETS ? s->start[k + 2] < end : s->start[k + 2] <= end))
            s->mode = SEG_SCAN;
    }
}

static void set_colour(struct seg_colour *out, const struct spec_rgb *a, const struct spec_rgb *b)
{
    out->c0 = (v4d){a->r, a->g, a->b, 0.0};
    out->dc = (v4d){(double)b->r - a->r, (double)b->g - a->g, (double)b->b - a->b, 0.0};
}

/* Turns the stops of `coloring` into segments and picks the lookup mode. A validated spec has
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
        set_colour(&s->colour[m], &coloring->rgb[k], &coloring->rgb[k + 1]);
        m++;
    }
    if (m == 0) {
        /* No stop spans any width: one flat segment of the last stop's colour. */
        const struct spec_rgb *c = n ? &coloring->rgb[n - 1] : &coloring->interior;

        s->start[0] = 0.0;
        s->inv_width[0] = 1.0;
        set_colour(&s->colour[0], c, c);
        m = 1;
    }
    s->count = m;
    s->start[m] = INFINITY;
    set_colour(&s->colour[m], &coloring->interior, &coloring->interior);
    segments_index(s);
}

/* Colour of one sample, the scalar way: the interpolated stop colour rounded to nearest, or the
 * interior colour for t < 0. f is clamped so that rounding can never leave 0..255 (t - start can
 * exceed the segment's width by an ulp). rgb_block's vector loops compute exactly this, with the
 * same shortcut for uniform palettes (see there). */
static inline void sample_rgb(const struct segments *s, double t, uint8_t out[3])
{
    uint32_t k = s->count;
    double f = 0.0;

    if (t >= 0.0 && s->mode == SEG_UNIFORM) {
        const double tm = t * s->uniform_inv;

        k = (uint32_t)tm;
        k = k > s->count - 1 ? s->count - 1 : k;
        f = tm - (double)k;
    } else if (t >= 0.0) {
        uint32_t b = (uint32_t)(t * SEG_BUCKETS);

        if (b >= SEG_BUCKETS)
            b = SEG_BUCKETS - 1;
        k = (uint32_t)s->bucket[b];
        while (t >= s->start[k + 1])
            k++;
        f = (t - s->start[k]) * s->inv_width[k];
        f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
    }
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)(s->colour[k].c0[c] + s->colour[k].dc[c] * f + 0.5);
}

/* Colours of BLOCK palette coordinates as RGB bytes (rgb needs 3 * BLOCK + 1 bytes): sample_rgb()
 * for each, the segment and f first, in loops the compiler vectorises across samples, then the
 * three channels at once per sample. byte_shuffle (a constant of each build) packs each sample's
 * bytes with one shuffle, which the AVX2 build has an instruction for (pshufb); without it GCC
 * spells the shuffle out byte by byte, and a loop over the int32s measured ~0.4 ms a tile faster. */
static inline __attribute__((always_inline)) void rgb_block(const struct segments *s,
                                                             const double *restrict t,
                                                             uint8_t *restrict rgb,
                                                             int byte_shuffle)
{
    int32_t seg[BLOCK];
    double f[BLOCK];
    int32_t level[BLOCK][4];

    if (s->mode == SEG_SCAN) {
        for (int i = 0; i < BLOCK; i++)
            sample_rgb(s, t[i], rgb + 3 * i);
        return;
    }
    if (s->mode == SEG_UNIFORM) {
        const int32_t last = (int32_t)s->count - 1, interior = (int32_t)s->count;
        const double segments = s->uniform_inv;

        for (int i = 0; i < BLOCK; i++) {
            /* With m = 2^n segments, k = floor(t * m) (m - 1 for t = 1) is the segment that the
             * bucket and the step would find, and f = t * m - k equals (t - start[k]) *
             * inv_width[k] bit for bit: t - k / m is exact (Sterbenz, or k = 0) and so are the
             * scalings by m. That f is in [0, 1] already, so its clamp is left out. An interior
             * sample (t = -1) gets a finite f and the interior row, whose dc = 0 makes f
             * irrelevant. sample_rgb's uniform branch is the same arithmetic. */
            const double tm = t[i] * segments;
            int32_t k = (int32_t)tm;

            /* Two statements: GCC 12 does not vectorise the nested conditional. */
            k = k < 0 ? 0 : k;
            k = k > last ? last : k;
            f[i] = tm - (double)k;
            seg[i] = tm < 0.0 ? interior : k;
        }
    } else {
        const int64_t interior = s->count;
        int64_t k64[BLOCK];

        for (int i = 0; i < BLOCK; i++) {
            int32_t b = (int32_t)(t[i] * SEG_BUCKETS);

            k64[i] = b < 0 ? 0 : b > SEG_BUCKETS - 1 ? SEG_BUCKETS - 1 : b;
        }
        for (int i = 0; i < BLOCK; i++)
            k64[i] = s->bucket[k64[i]];
        for (int i = 0; i < BLOCK; i++) {
            /* sample_rgb's loop runs at most once here (segments_index checked): one step,
             * comparing t and start[] as integers, which order non-negative doubles as the
             * doubles do (t = -1 compares below every start and is replaced below). */
            const int64_t k = k64[i] + ((int64_t)bits_of(t[i])
                                        >= (int64_t)bits_of(s->start[k64[i] + 1]));
            const double fi = (t[i] - s->start[k]) * s->inv_width[k];
            const int64_t in = -(int64_t)(bits_of(t[i]) >> 63);

            f[i] = fi < 0.0 ? 0.0 : fi > 1.0 ? 1.0 : fi;
            k64[i] = k + ((interior - k) & in);
        }
        for (int i = 0; i < BLOCK; i++)
            seg[i] = (int32_t)k64[i];
    }
    for (int i = 0; i < BLOCK; i++) {
        /* (int32) truncates as sample_rgb's (uint8_t) does: every value is in [0, 255.5]. The
         * shuffle gathers the low bytes of the four int32s; the fourth (0) is overwritten by
         * the next sample or lies in the spare byte. */
        const struct seg_colour *row = &s->colour[seg[i]];
        const v4d v = row->c0 + row->dc * f[i] + 0.5;
        const v4si q = __builtin_convertvector(v, v4si);

        if (byte_shuffle) {
#if defined(__clang__) /* clang has no __builtin_shuffle; the fuzz build (tests/fuzz) uses clang */
            const v16qu b = __builtin_shufflevector((v16qu)q, (v16qu)q, 0, 4, 8, 12, 0, 0, 0, 0,
                                                    0, 0, 0, 0, 0, 0, 0, 0);
#else
            const v16qu b = __builtin_shuffle((v16qu)q, (v16qu){0, 4, 8, 12, 0, 0, 0, 0,
                                                                0, 0, 0, 0, 0, 0, 0, 0});
#endif

            memcpy(rgb + 3 * i, &b, 4);
        } else {
            memcpy(level[i], &q, sizeof(q));
        }
    }
    if (!byte_shuffle)
        for (int i = 0; i < BLOCK; i++)
            for (int c = 0; c < 3; c++)
                rgb[3 * i + c] = (uint8_t)level[i][c];
}

/* Grey levels round(65535 t) of BLOCK palette coordinates, as ss == 1 stores them: 0 for interior
 * samples, whose t = -1 gives a negative level here. */
static inline __attribute__((always_inline)) void grey_block(const double *restrict t,
                                                              uint16_t *restrict g)
{
    for (int i = 0; i < BLOCK; i++) {
        const int32_t v = (int32_t)(65535.0 * t[i] + 0.5);

        g[i] = (uint16_t)(v < 0 ? 0 : v);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Row drivers, instantiated once per instruction set below. */

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

/* Coordinates of n <= BLOCK samples from src into t[0..n); a partial block is padded with 0. */
static inline __attribute__((always_inline)) void coord_samples(const struct coord_params *p,
                                                                 const float *src, uint32_t n,
                                                                 double *t)
{
    float mu[BLOCK];

    if (n == BLOCK) {
        coord_block(p, src, t);
        return;
    }
    memcpy(mu, src, n * sizeof(*mu));
    memset(mu + n, 0, (BLOCK - n) * sizeof(*mu));
    coord_block(p, mu, t);
}

/* RGB bytes of n <= BLOCK samples from src (rgb: 3 * BLOCK + 1 bytes). */
static inline __attribute__((always_inline)) void rgb_run(const struct coord_params *p,
                                                           const struct segments *s,
                                                           const float *src, uint32_t n,
                                                           uint8_t *rgb, int byte_shuffle)
{
    double t[BLOCK];

    if (n < SHORT_RUN) {
        for (uint32_t i = 0; i < n; i++)
            sample_rgb(s, coord_one(p, src[i]), rgb + 3 * i);
        return;
    }
    coord_samples(p, src, n, t);
    rgb_block(s, t, rgb, byte_shuffle);
}

/* Grey levels of n <= BLOCK samples from src. */
static inline __attribute__((always_inline)) void grey_run(const struct coord_params *p,
                                                            const float *src, uint32_t n,
                                                            uint16_t *g)
{
    double t[BLOCK];

    if (n < SHORT_RUN) {
        for (uint32_t i = 0; i < n; i++) {
            const double ti = coord_one(p, src[i]);

            g[i] = ti < 0.0 ? 0 : (uint16_t)(65535.0 * ti + 0.5);
        }
        return;
    }
    coord_samples(p, src, n, t);
    grey_block(t, g);
}

/* One output row of RGB8 from its ss sample rows (`stride` floats apart, width * ss samples
 * each). With ss > 1 the row goes in chunks of BLOCK / ss pixels, whose samples in each sample
 * row fit one block (one pixel in several blocks if ss > BLOCK); each pixel is the rounded mean
 * of its integer sample colours, halves up. */
static inline __attribute__((always_inline)) void rgb8_row(const struct coord_params *p,
                                                            const struct segments *s,
                                                            const float *block, size_t stride,
                                                            uint32_t width, uint32_t ss,
                                                            uint8_t *dst, int byte_shuffle)
{
    uint8_t rgb[3 * BLOCK + 1];

    if (ss == 1) {
        for (uint32_t x = 0; x < width; x += BLOCK) {
            const uint32_t n = width - x < BLOCK ? width - x : BLOCK;

            rgb_run(p, s, block + x, n, rgb, byte_shuffle);
            memcpy(dst + (size_t)x * 3, rgb, (size_t)n * 3);
        }
        return;
    }

    const uint32_t nsamples = ss * ss;
    const uint64_t magic = mean_magic(nsamples);
    const uint32_t chunk = ss <= BLOCK ? BLOCK / ss : 1;
    uint32_t sum[BLOCK][3];

    for (uint32_t x = 0; x < width; x += chunk) {
        const uint32_t npx = width - x < chunk ? width - x : chunk;
        const uint32_t total = npx * ss;

        memset(sum, 0, sizeof(sum));
        for (uint32_t sy = 0; sy < ss; sy++) {
            const float *src = block + (size_t)sy * stride + (size_t)x * ss;

            for (uint32_t done = 0; done < total; done += BLOCK) {
                const uint32_t n = total - done < BLOCK ? total - done : BLOCK;
                uint32_t px = done / ss, left = ss - done % ss;

                rgb_run(p, s, src + done, n, rgb, byte_shuffle);
                for (uint32_t i = 0; i < n; i++) {
                    for (int c = 0; c < 3; c++)
                        sum[px][c] += rgb[3 * i + c];
                    if (--left == 0) {
                        px++;
                        left = ss;
                    }
                }
            }
        }
        for (uint32_t i = 0; i < npx; i++)
            for (int c = 0; c < 3; c++)
                dst[(size_t)(x + i) * 3 + c] = (uint8_t)mean_round(sum[i][c], nsamples, magic);
    }
}

/* As rgb8_row, for grey16. */
static inline __attribute__((always_inline)) void grey16_row(const struct coord_params *p,
                                                              const float *block, size_t stride,
                                                              uint32_t width, uint32_t ss,
                                                              uint16_t *dst)
{
    uint16_t g[BLOCK];

    if (ss == 1) {
        for (uint32_t x = 0; x < width; x += BLOCK) {
            const uint32_t n = width - x < BLOCK ? width - x : BLOCK;

            grey_run(p, block + x, n, g);
            memcpy(dst + x, g, (size_t)n * sizeof(*g));
        }
        return;
    }

    const uint32_t nsamples = ss * ss;
    const uint64_t magic = mean_magic(nsamples);
    const uint32_t chunk = ss <= BLOCK ? BLOCK / ss : 1;
    uint32_t sum[BLOCK];

    for (uint32_t x = 0; x < width; x += chunk) {
        const uint32_t npx = width - x < chunk ? width - x : chunk;
        const uint32_t total = npx * ss;

        memset(sum, 0, sizeof(sum));
        for (uint32_t sy = 0; sy < ss; sy++) {
            const float *src = block + (size_t)sy * stride + (size_t)x * ss;

            for (uint32_t done = 0; done < total; done += BLOCK) {
                const uint32_t n = total - done < BLOCK ? total - done : BLOCK;
                uint32_t px = done / ss, left = ss - done % ss;

                grey_run(p, src + done, n, g);
                for (uint32_t i = 0; i < n; i++) {
                    sum[px] += g[i];
                    if (--left == 0) {
                        px++;
                        left = ss;
                    }
                }
            }
        }
        for (uint32_t i = 0; i < npx; i++)
            dst[x + i] = (uint16_t)mean_round(sum[i], nsamples, magic);
    }
}

/* The two builds of the row loops. The AVX2 one differs only in instruction selection (and in how
 * rgb_block moves finished bytes, BYTE_SHUFFLE): the same IEEE operations in the same order, no
 * FMA (the project builds with -ffp-contract=off and the target adds no "fma"), so both write the
 * same bytes. */
#define COLOR_ROWS(NAME, ATTR, BYTE_SHUFFLE)                                                      \
    ATTR static void rgb8_rows_##NAME(const struct coord_params *p, const struct segments *s,     \
                                      const float *smooth, size_t stride, uint32_t width,         \
                                      uint32_t rows, uint32_t ss, uint8_t *rgb8)                  \
    {                                                                                             \
        for (uint32_t y = 0; y < rows; y++)                                                       \
            rgb8_row(p, s, smooth + (size_t)y * ss * stride, stride, width, ss,                   \
                     rgb8 + (size_t)y * width * 3, BYTE_SHUFFLE);                                 \
    }                                                                                             \
    ATTR static void grey16_rows_##NAME(const struct coord_params *p, const float *smooth,        \
                                        size_t stride, uint32_t width, uint32_t rows,             \
                                        uint32_t ss, uint16_t *grey16)                            \
    {                                                                                             \
        for (uint32_t y = 0; y < rows; y++)                                                       \
            grey16_row(p, smooth + (size_t)y * ss * stride, stride, width, ss,                    \
                       grey16 + (size_t)y * width);                                               \
    }

COLOR_ROWS(base, , 0)
#if defined(__x86_64__) && defined(__GNUC__)
#define COLOR_HAVE_AVX2 1
COLOR_ROWS(avx2, __attribute__((target("avx2"))), 1)
#endif

/* Whether to run the AVX2 build: when the CPU has it, unless FRACTALD_CPU_ISA=base asks for the
 * baseline (cpu_isa.h; the tests use it to compare the two builds). */
static int use_avx2(void)
{
#ifdef COLOR_HAVE_AVX2
    return cpu_isa_widest() >= CPU_ISA_AVX2;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Public functions. */

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
    return coord_one(&p, mu);
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
#ifdef COLOR_HAVE_AVX2
    if (use_avx2()) {
        rgb8_rows_avx2(&p, &s, smooth, stride, width, rows, ss, rgb8);
        return;
    }
#endif
    rgb8_rows_base(&p, &s, smooth, stride, width, rows, ss, rgb8);
}

void color_rows_grey16(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                       size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint16_t *grey16)
{
    struct coord_params p;

    if (ss == 0)
        ss = 1;
    coord_params_init(&p, coloring, max_iter);
#ifdef COLOR_HAVE_AVX2
    if (use_avx2()) {
        grey16_rows_avx2(&p, smooth, stride, width, rows, ss, grey16);
        return;
    }
#endif
    grey16_rows_base(&p, smooth, stride, width, rows, ss, grey16);
}
