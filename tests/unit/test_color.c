/* test_color.c: built-in palettes, the palette coordinate, stop interpolation, interior colour,
 * reverse, cycle and the supersample reduction, against values worked out by hand, and the rows
 * byte for byte against the colouring as it was before vectorisation (the reference below). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

#include "color.h"
#include "err.h"

/* A palette of stops given inline; every other field zeroed (log-scaled pass, no reverse). */
static void set_stops(struct spec_coloring *c, uint32_t n, const float *pos,
                      const struct spec_rgb *rgb)
{
    memset(c, 0, sizeof(*c));
    c->nstops = n;
    for (uint32_t k = 0; k < n; k++) {
        c->pos[k] = pos[k];
        c->rgb[k] = rgb[k];
    }
}

static void ramp(struct spec_coloring *c)
{
    static const float pos[2] = {0.0f, 1.0f};
    static const struct spec_rgb rgb[2] = {{0, 0, 0}, {255, 101, 3}};

    set_stops(c, 2, pos, rgb);
    c->interior = (struct spec_rgb){10, 20, 30};
}

/* One sample through color_rows_rgb8. */
static struct spec_rgb colour_of(const struct spec_coloring *c, uint32_t max_iter, float mu)
{
    uint8_t px[3];

    color_rows_rgb8(c, max_iter, &mu, 1, 1, 1, 1, px);
    return (struct spec_rgb){px[0], px[1], px[2]};
}

static void assert_rgb(struct spec_rgb got, int r, int g, int b)
{
    assert_int_equal(got.r, r);
    assert_int_equal(got.g, g);
    assert_int_equal(got.b, b);
}

/* ---- Reference: server/image/color.c as it was before its row functions were vectorised, kept here
 * verbatim in logic (libm's log per sample, bucketed segment lookup, double interpolation) so
 * that the new rows can be compared with it byte for byte. Only the names changed (ref_). ---- */

#define REF_SEG_BUCKETS 512

struct ref_coord_params {
    double log_range;
    double cycle;
    double offset;
    int reverse;
};

struct ref_segments {
    uint32_t count;
    uint16_t bucket[REF_SEG_BUCKETS];
    double start[SPEC_MAX_STOPS + 1];
    double inv_width[SPEC_MAX_STOPS];
    double c0[SPEC_MAX_STOPS][3];
    double dc[SPEC_MAX_STOPS][3];
    uint8_t interior[3];
};

static void ref_coord_params_init(struct ref_coord_params *p, const struct spec_coloring *coloring,
                                  uint32_t max_iter)
{
    p->log_range = log(1.0 + (double)(max_iter ? max_iter : 1));
    p->cycle = coloring->cycle > 0 ? coloring->cycle : 0;
    p->offset = coloring->offset;
    p->reverse = coloring->reverse;
}

static double ref_coord(const struct ref_coord_params *p, float mu)
{
    double t;

    if (!(mu >= 0.0f))
        return -1.0;
    if (p->cycle > 0) {
        double x = (double)mu / p->cycle + p->offset;
        t = x - floor(x);
        if (!(t >= 0.0))
            t = 0.0;
    } else {
        t = log(1.0 + (double)mu) / p->log_range;
        if (t > 1.0)
            t = 1.0;
    }
    return p->reverse ? 1.0 - t : t;
}

static void ref_segments_init(struct ref_segments *s, const struct spec_coloring *coloring)
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
    for (uint32_t b = 0, k = 0; b < REF_SEG_BUCKETS; b++) {
        double t = (double)b / REF_SEG_BUCKETS;

        while (k + 1 < m && t >= s->start[k + 1])
            k++;
        s->bucket[b] = (uint16_t)k;
    }
    s->interior[0] = coloring->interior.r;
    s->interior[1] = coloring->interior.g;
    s->interior[2] = coloring->interior.b;
}

static void ref_sample_rgb(const struct ref_segments *s, double t, uint8_t out[3])
{
    if (t < 0.0) {
        out[0] = s->interior[0];
        out[1] = s->interior[1];
        out[2] = s->interior[2];
        return;
    }
    uint32_t b = (uint32_t)(t * REF_SEG_BUCKETS);
    if (b >= REF_SEG_BUCKETS)
        b = REF_SEG_BUCKETS - 1;
    uint32_t k = s->bucket[b];
    k += t >= s->start[k + 1];
    while (t >= s->start[k + 1])
        k++;
    double f = (t - s->start[k]) * s->inv_width[k];
    f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)(s->c0[k][c] + s->dc[k][c] * f + 0.5);
}

static uint32_t ref_sample_grey(double t)
{
    return t < 0.0 ? 0 : (uint32_t)(65535.0 * t + 0.5);
}

static uint32_t ref_mean_round(uint32_t sum, uint32_t n)
{
    uint64_t magic = (UINT64_C(1) << 32) / n + 1;

    return (uint32_t)(((uint64_t)(sum + n / 2) * magic) >> 32);
}

static double ref_coordinate(const struct spec_coloring *coloring, uint32_t max_iter, float mu)
{
    struct ref_coord_params p;

    ref_coord_params_init(&p, coloring, max_iter);
    return ref_coord(&p, mu);
}

static void ref_rows_rgb8(const struct spec_coloring *coloring, uint32_t max_iter,
                          const float *smooth, size_t stride, uint32_t width, uint32_t rows,
                          uint32_t ss, uint8_t *rgb8)
{
    struct ref_coord_params p;
    struct ref_segments *s = malloc(sizeof(*s));

    assert_non_null(s);
    if (ss == 0)
        ss = 1;
    ref_coord_params_init(&p, coloring, max_iter);
    ref_segments_init(s, coloring);
    for (uint32_t y = 0; y < rows; y++) {
        const float *block = smooth + (size_t)y * ss * stride;
        uint8_t *dst = rgb8 + (size_t)y * width * 3;

        for (uint32_t x = 0; x < width; x++) {
            uint32_t sum[3] = {0, 0, 0};

            for (uint32_t sy = 0; sy < ss; sy++) {
                const float *src = block + (size_t)sy * stride + (size_t)x * ss;

                for (uint32_t sx = 0; sx < ss; sx++) {
                    uint8_t c[3];

                    ref_sample_rgb(s, ref_coord(&p, src[sx]), c);
                    sum[0] += c[0];
                    sum[1] += c[1];
                    sum[2] += c[2];
                }
            }
            /* ss == 1 stored the sample itself; the rounded mean of one value is that value. */
            for (int c = 0; c < 3; c++)
                dst[(size_t)x * 3 + c] = (uint8_t)ref_mean_round(sum[c], ss * ss);
        }
    }
    free(s);
}

static void ref_rows_grey16(const struct spec_coloring *coloring, uint32_t max_iter,
                            const float *smooth, size_t stride, uint32_t width, uint32_t rows,
                            uint32_t ss, uint16_t *grey16)
{
    struct ref_coord_params p;

    if (ss == 0)
        ss = 1;
    ref_coord_params_init(&p, coloring, max_iter);
    for (uint32_t y = 0; y < rows; y++) {
        const float *block = smooth + (size_t)y * ss * stride;
        uint16_t *dst = grey16 + (size_t)y * width;

        for (uint32_t x = 0; x < width; x++) {
            uint32_t sum = 0;

            for (uint32_t sy = 0; sy < ss; sy++) {
                const float *src = block + (size_t)sy * stride + (size_t)x * ss;

                for (uint32_t sx = 0; sx < ss; sx++)
                    sum += ref_sample_grey(ref_coord(&p, src[sx]));
            }
            dst[x] = (uint16_t)ref_mean_round(sum, ss * ss);
        }
    }
}
/* ---- end of the reference ---- */

static void test_palette_names(void **state)
{
    static const char *const required[] = {"inferno", "viridis", "magma", "plasma",
                                           "cividis", "twilight", "grayscale"};
    size_t count = 0;
    const char *const *names = color_palette_names(&count);

    (void)state;
    assert_true(count >= 7);
    assert_string_equal(names[0], "inferno");
    for (size_t r = 0; r < sizeof(required) / sizeof(required[0]); r++) {
        size_t i = 0;

        while (i < count && strcmp(names[i], required[r]) != 0)
            i++;
        assert_true(i < count);
    }
}

static void test_palette_every_name_loads(void **state)
{
    size_t count = 0;
    const char *const *names = color_palette_names(&count);

    (void)state;
    for (size_t i = 0; i < count; i++) {
        struct spec_coloring c;

        memset(&c, 0, sizeof(c));
        c.cycle = 7.5;
        c.offset = 0.25;
        c.interior = (struct spec_rgb){1, 2, 3};
        c.reverse = true;
        assert_int_equal(color_palette_load(&c, names[i]), 0);
        assert_in_range(c.nstops, 2, SPEC_MAX_STOPS);
        assert_true(c.pos[0] == 0.0f);
        assert_true(c.pos[c.nstops - 1] == 1.0f);
        for (uint32_t k = 1; k < c.nstops; k++)
            assert_true(c.pos[k] >= c.pos[k - 1]);
        /* Loading a palette leaves the rest of the colouring alone. */
        assert_true(c.cycle == 7.5);
        assert_true(c.offset == 0.25);
        assert_rgb(c.interior, 1, 2, 3);
        assert_true(c.reverse);
    }
}

static void test_palette_unknown(void **state)
{
    struct spec_coloring c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(color_palette_load(&c, "nope"), ERR_NOT_FOUND);
    assert_int_equal(color_palette_load(&c, "Inferno"), ERR_NOT_FOUND);
    assert_int_equal(color_palette_load(&c, ""), ERR_NOT_FOUND);
    assert_int_equal(color_palette_load(&c, "inferno "), ERR_NOT_FOUND);
    assert_int_equal(c.nstops, 0);
}

/* The ends of the sampled matplotlib maps are their first and last list entries, scaled by 255. */
static void test_palette_endpoints(void **state)
{
    struct spec_coloring c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(color_palette_load(&c, "inferno"), 0);
    assert_rgb(c.rgb[0], 0, 0, 4);
    assert_rgb(c.rgb[c.nstops - 1], 252, 255, 164);
    assert_int_equal(color_palette_load(&c, "viridis"), 0);
    assert_rgb(c.rgb[0], 68, 1, 84);
    assert_rgb(c.rgb[c.nstops - 1], 253, 231, 37);
    assert_int_equal(color_palette_load(&c, "grayscale"), 0);
    assert_rgb(c.rgb[0], 0, 0, 0);
    assert_rgb(c.rgb[c.nstops - 1], 255, 255, 255);
    /* twilight is cyclic: it ends where it starts. */
    assert_int_equal(color_palette_load(&c, "twilight"), 0);
    assert_rgb(c.rgb[0], c.rgb[c.nstops - 1].r, c.rgb[c.nstops - 1].g, c.rgb[c.nstops - 1].b);

    /* Rendered, the ends of inferno come out as its end stops: t = 0 at mu = 0, t = 1 at
     * mu = max_iter, and the interior colour is the one asked for, not a palette colour. */
    assert_int_equal(color_palette_load(&c, "inferno"), 0);
    c.interior = (struct spec_rgb){9, 8, 7};
    assert_rgb(colour_of(&c, 256, 0.0f), 0, 0, 4);
    assert_rgb(colour_of(&c, 256, 256.0f), 252, 255, 164);
    assert_rgb(colour_of(&c, 256, -1.0f), 9, 8, 7);
}

/* Every stop of a built-in palette is hit exactly at its own position: t = k/64 with cycle 64. */
static void test_palette_stops_exact(void **state)
{
    struct spec_coloring c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(color_palette_load(&c, "magma"), 0);
    assert_int_equal(c.nstops, 65);
    c.cycle = 64;
    c.offset = 0;
    c.reverse = false;
    for (uint32_t k = 0; k < 64; k++) {
        assert_true(color_coordinate(&c, 100, (float)k) == k / 64.0);
        assert_rgb(colour_of(&c, 100, (float)k), c.rgb[k].r, c.rgb[k].g, c.rgb[k].b);
    }
}

static void test_coordinate_log(void **state)
{
    struct spec_coloring c;

    (void)state;
    ramp(&c);
    /* ln(1 + mu) / ln(16): ln 2, ln 4 and ln 8 are exactly 1/4, 1/2 and 3/4 of ln 16 in binary
     * floating point too, so these compare exactly. */
    assert_true(color_coordinate(&c, 15, 0.0f) == 0.0);
    assert_true(color_coordinate(&c, 15, 1.0f) == 0.25);
    assert_true(color_coordinate(&c, 15, 3.0f) == 0.5);
    assert_true(color_coordinate(&c, 15, 7.0f) == 0.75);
    assert_true(color_coordinate(&c, 15, 15.0f) == 1.0);
    assert_true(color_coordinate(&c, 15, 40.0f) == 1.0);
    assert_true(fabs(color_coordinate(&c, 256, 10.0f) - log(11.0) / log(257.0)) < 1e-15);
    assert_true(color_coordinate(&c, 15, -1.0f) < 0.0);
    assert_true(color_coordinate(&c, 15, NAN) < 0.0);

    c.reverse = true;
    assert_true(color_coordinate(&c, 15, 0.0f) == 1.0);
    assert_true(color_coordinate(&c, 15, 1.0f) == 0.75);
    assert_true(color_coordinate(&c, 15, 15.0f) == 0.0);
    assert_true(color_coordinate(&c, 15, -1.0f) < 0.0);
}

static void test_coordinate_cycle(void **state)
{
    struct spec_coloring c;

    (void)state;
    ramp(&c);
    c.cycle = 10;
    assert_true(color_coordinate(&c, 1000, 0.0f) == 0.0);
    assert_true(color_coordinate(&c, 1000, 2.5f) == 0.25);
    assert_true(color_coordinate(&c, 1000, 25.0f) == 0.5);
    assert_true(color_coordinate(&c, 1000, 30.0f) == 0.0);
    assert_true(color_coordinate(&c, 1000, 995.0f) == 0.5);
    c.offset = 0.75;
    assert_true(color_coordinate(&c, 1000, 2.5f) == 0.0);
    assert_true(color_coordinate(&c, 1000, 7.5f) == 0.5);
    c.reverse = true;
    assert_true(color_coordinate(&c, 1000, 7.5f) == 0.5);
    assert_true(color_coordinate(&c, 1000, 0.0f) == 0.25);
    assert_true(color_coordinate(&c, 1000, -1.0f) < 0.0);
    assert_true(color_coordinate(&c, 1000, INFINITY) >= 0.0);
}

/* Interpolation in sRGB, rounded to nearest: (0,0,0) -> (255,101,3). */
static void test_interpolation(void **state)
{
    struct spec_coloring c;

    (void)state;
    ramp(&c);
    assert_rgb(colour_of(&c, 15, 0.0f), 0, 0, 0);
    assert_rgb(colour_of(&c, 15, 1.0f), 64, 25, 1);    /* t = .25: 63.75, 25.25, 0.75 */
    assert_rgb(colour_of(&c, 15, 3.0f), 128, 51, 2);   /* t = .5: 127.5, 50.5, 1.5 */
    assert_rgb(colour_of(&c, 15, 7.0f), 191, 76, 2);   /* t = .75: 191.25, 75.75, 2.25 */
    assert_rgb(colour_of(&c, 15, 15.0f), 255, 101, 3);
    assert_rgb(colour_of(&c, 15, 99.0f), 255, 101, 3);
}

static void test_interpolation_uneven_stops(void **state)
{
    static const float pos[3] = {0.0f, 0.75f, 1.0f};
    static const struct spec_rgb rgb[3] = {{0, 0, 0}, {30, 60, 90}, {30, 0, 255}};
    struct spec_coloring c;

    (void)state;
    set_stops(&c, 3, pos, rgb);
    c.cycle = 8;
    assert_rgb(colour_of(&c, 100, 4.0f), 20, 40, 60);    /* t = .5, 2/3 into the first */
    assert_rgb(colour_of(&c, 100, 6.0f), 30, 60, 90);    /* t = .75, on the middle stop */
    assert_rgb(colour_of(&c, 100, 7.0f), 30, 30, 173);   /* t = .875: 172.5 rounds up */
}

/* Two stops at one position make a hard step; at the step the later stop wins. */
static void test_interpolation_hard_step(void **state)
{
    static const float pos[4] = {0.0f, 0.5f, 0.5f, 1.0f};
    static const struct spec_rgb rgb[4] = {{0, 0, 0}, {100, 0, 0}, {0, 200, 0}, {0, 0, 250}};
    struct spec_coloring c;

    (void)state;
    set_stops(&c, 4, pos, rgb);
    c.cycle = 4;
    assert_rgb(colour_of(&c, 100, 1.0f), 50, 0, 0);      /* t = .25 */
    assert_rgb(colour_of(&c, 100, 1.998f), 100, 0, 0);   /* t just below .5 */
    assert_rgb(colour_of(&c, 100, 2.0f), 0, 200, 0);     /* t = .5 */
    assert_rgb(colour_of(&c, 100, 3.0f), 0, 100, 125);   /* t = .75 */
}

static void test_interior(void **state)
{
    struct spec_coloring c;
    const float mu[4] = {-1.0f, NAN, 3.0f, -1.0f};
    uint8_t px[12];
    uint16_t grey[4];

    (void)state;
    ramp(&c);
    color_rows_rgb8(&c, 15, mu, 4, 4, 1, 1, px);
    const uint8_t want[12] = {10, 20, 30, 10, 20, 30, 128, 51, 2, 10, 20, 30};
    assert_memory_equal(px, want, sizeof(want));

    /* Reversing the palette does not touch interior samples. */
    c.reverse = true;
    color_rows_rgb8(&c, 15, mu, 4, 4, 1, 1, px);
    assert_memory_equal(px, want, sizeof(want));

    color_rows_grey16(&c, 15, mu, 4, 4, 1, 1, grey);
    assert_int_equal(grey[0], 0);
    assert_int_equal(grey[1], 0);
    assert_int_equal(grey[2], 32768);
    assert_int_equal(grey[3], 0);
}

static void test_reverse(void **state)
{
    struct spec_coloring c;

    (void)state;
    ramp(&c);
    c.reverse = true;
    assert_rgb(colour_of(&c, 15, 0.0f), 255, 101, 3);
    assert_rgb(colour_of(&c, 15, 1.0f), 191, 76, 2);   /* t = .75 */
    assert_rgb(colour_of(&c, 15, 7.0f), 64, 25, 1);    /* t = .25 */
    assert_rgb(colour_of(&c, 15, 15.0f), 0, 0, 0);
}

static void test_cycle(void **state)
{
    struct spec_coloring c;

    (void)state;
    ramp(&c);
    c.cycle = 8;
    assert_rgb(colour_of(&c, 1000, 2.0f), 64, 25, 1);     /* t = .25 */
    assert_rgb(colour_of(&c, 1000, 12.0f), 128, 51, 2);   /* t = .5 */
    assert_rgb(colour_of(&c, 1000, 800.0f), 0, 0, 0);     /* t = 0 */
    c.offset = 0.5;
    assert_rgb(colour_of(&c, 1000, 2.0f), 191, 76, 2);    /* t = .75 */
    assert_rgb(colour_of(&c, 1000, 4.0f), 0, 0, 0);       /* t = frac(1) = 0 */
}

/* 2 x 2 supersampling of a 2 x 2 pixel block, with a stride wider than the block. */
static void test_supersample_rgb8(void **state)
{
    struct spec_coloring c;
    /* Pixel (0,0): t = 0, .25 / .5, interior; pixel (1,0): four interior samples;
     * pixel (0,1): four samples at t = 1; pixel (1,1): t = .25, .25 / .5, .5. */
    const float smooth[4 * 5] = {
        0.0f, 1.0f, -1.0f, -1.0f, 99.0f,
        3.0f, -1.0f, -1.0f, -1.0f, 99.0f,
        15.0f, 15.0f, 1.0f, 1.0f, 99.0f,
        15.0f, 15.0f, 3.0f, 3.0f, 99.0f,
    };
    uint8_t px[2 * 2 * 3];

    (void)state;
    ramp(&c);
    color_rows_rgb8(&c, 15, smooth, 5, 2, 2, 2, px);
    /* (0+64+128+10)/4 = 50.5 -> 51; (0+25+51+20)/4 = 24; (0+1+2+30)/4 = 8.25 -> 8. */
    const uint8_t want[12] = {51, 24, 8, 10, 20, 30, 255, 101, 3, 96, 38, 2};
    assert_memory_equal(px, want, sizeof(want));
}

static void test_supersample_3x3(void **state)
{
    struct spec_coloring c;
    float smooth[3 * 3];
    uint8_t px[3];
    uint16_t grey;

    (void)state;
    ramp(&c);
    /* Five samples at t = 1 (255,101,3), four at t = 0: means 141.67, 56.1, 1.67. */
    for (int i = 0; i < 9; i++)
        smooth[i] = i % 2 ? 0.0f : 15.0f;
    color_rows_rgb8(&c, 15, smooth, 3, 1, 1, 3, px);
    assert_int_equal(px[0], 142);
    assert_int_equal(px[1], 56);
    assert_int_equal(px[2], 2);
    color_rows_grey16(&c, 15, smooth, 3, 1, 1, 3, &grey);
    assert_int_equal(grey, 36408);   /* 5 * 65535 / 9 = 36408.3 */
}

static void test_grey16(void **state)
{
    struct spec_coloring c;
    const float mu[6] = {0.0f, 1.0f, 3.0f, 7.0f, 15.0f, -1.0f};
    uint16_t grey[6];

    (void)state;
    ramp(&c);
    color_rows_grey16(&c, 15, mu, 6, 6, 1, 1, grey);
    assert_int_equal(grey[0], 0);
    assert_int_equal(grey[1], 16384);   /* 16383.75 */
    assert_int_equal(grey[2], 32768);   /* 32767.5, halves up */
    assert_int_equal(grey[3], 49151);   /* 49151.25 */
    assert_int_equal(grey[4], 65535);
    assert_int_equal(grey[5], 0);

    /* 2 x 2: (0 + 16384 + 32768 + 65535) / 4 = 28671.75 -> 28672; reverse turns t into 1 - t. */
    const float block[4] = {0.0f, 1.0f, 3.0f, 15.0f};
    color_rows_grey16(&c, 15, block, 2, 1, 1, 2, grey);
    assert_int_equal(grey[0], 28672);
    c.reverse = true;
    color_rows_grey16(&c, 15, block, 2, 1, 1, 2, grey);
    assert_int_equal(grey[0], (65535 + 49151 + 32768 + 0 + 2) / 4);
}

/* Straightforward reference: linear scan for the segment, then interpolate, in double. */
static struct spec_rgb reference_colour(const struct spec_coloring *c, double t)
{
    uint32_t k = 0;

    if (t < 0)
        return c->interior;
    while (k + 2 < c->nstops && t >= c->pos[k + 1])
        k++;
    double f = (t - c->pos[k]) / (c->pos[k + 1] - c->pos[k]);
    return (struct spec_rgb){
        (uint8_t)floor(c->rgb[k].r + (c->rgb[k + 1].r - c->rgb[k].r) * f + 0.5),
        (uint8_t)floor(c->rgb[k].g + (c->rgb[k + 1].g - c->rgb[k].g) * f + 0.5),
        (uint8_t)floor(c->rgb[k].b + (c->rgb[k + 1].b - c->rgb[k].b) * f + 0.5),
    };
}

/* A whole row of pseudo-random smooth values through every built-in palette, in both modes,
 * against the reference; rounding the last bit differently may move a value by one level at an
 * exact half, nothing more. Grey levels must agree exactly with color_coordinate. */
static void test_rows_match_reference(void **state)
{
    enum { N = 4000 };
    size_t count = 0;
    const char *const *names = color_palette_names(&count);
    float *mu = malloc(N * sizeof(float));
    uint8_t *px = malloc(N * 3);
    uint16_t *grey = malloc(N * sizeof(uint16_t));
    uint32_t seed = 12345;

    (void)state;
    assert_non_null(mu);
    assert_non_null(px);
    assert_non_null(grey);
    for (int i = 0; i < N; i++) {
        seed = seed * 1664525u + 1013904223u;
        mu[i] = (seed >> 8) % 11 == 0 ? -1.0f : (float)((seed >> 8) % 300000) / 1000.0f;
    }
    for (size_t p = 0; p < count; p++) {
        for (int mode = 0; mode < 2; mode++) {
            struct spec_coloring c;

            memset(&c, 0, sizeof(c));
            assert_int_equal(color_palette_load(&c, names[p]), 0);
            c.cycle = mode ? 17.25 : 0;
            c.offset = mode ? 0.3 : 0;
            c.reverse = mode;
            c.interior = (struct spec_rgb){1, 2, 3};
            color_rows_rgb8(&c, 256, mu, N, N, 1, 1, px);
            color_rows_grey16(&c, 256, mu, N, N, 1, 1, grey);
            for (int i = 0; i < N; i++) {
                double t = color_coordinate(&c, 256, mu[i]);
                struct spec_rgb want = reference_colour(&c, t);

                assert_in_range(px[3 * i + 0], want.r ? want.r - 1 : 0, want.r + 1);
                assert_in_range(px[3 * i + 1], want.g ? want.g - 1 : 0, want.g + 1);
                assert_in_range(px[3 * i + 2], want.b ? want.b - 1 : 0, want.b + 1);
                assert_int_equal(grey[i], t < 0 ? 0 : (uint16_t)floor(65535.0 * t + 0.5));
            }
        }
    }
    free(mu);
    free(px);
    free(grey);
}

/* ---- Byte-for-byte comparison with the reference (the colouring before vectorisation). ---- */

static uint32_t rng_next(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

static float float_of_bits(uint32_t b)
{
    float f;

    memcpy(&f, &b, sizeof(f));
    return f;
}

static int same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* Tally of a comparison: samples coloured, and coordinates whose bits differ from the
 * reference's (libm's log against color.c's: expected now and then, harmless unless a colour
 * sits exactly on a rounding edge, which the byte comparisons would catch). */
struct tally {
    size_t samples, t_differ;
};

/* n smooth values as one row, ss = 1, through the new and the reference rows: the bytes must be
 * identical. Counts coordinate differences when count_t is set (they do not depend on the
 * palette, so callers count them for one palette per setting). */
static void compare_row(const struct spec_coloring *c, uint32_t max_iter, const float *mu,
                        size_t n, int count_t, struct tally *tally)
{
    uint8_t *px = malloc(n * 3), *want = malloc(n * 3);
    uint16_t *grey = malloc(n * sizeof(*grey)), *want_grey = malloc(n * sizeof(*grey));

    assert_non_null(px);
    assert_non_null(want);
    assert_non_null(grey);
    assert_non_null(want_grey);
    color_rows_rgb8(c, max_iter, mu, n, (uint32_t)n, 1, 1, px);
    ref_rows_rgb8(c, max_iter, mu, n, (uint32_t)n, 1, 1, want);
    color_rows_grey16(c, max_iter, mu, n, (uint32_t)n, 1, 1, grey);
    ref_rows_grey16(c, max_iter, mu, n, (uint32_t)n, 1, 1, want_grey);
    for (size_t i = 0; i < n; i++) {
        if (memcmp(px + 3 * i, want + 3 * i, 3) != 0 || grey[i] != want_grey[i])
            print_message("differs: max_iter %u, mu %a (t %a, libm t %a): rgb %u %u %u want "
                          "%u %u %u, grey %u want %u\n", max_iter, mu[i],
                          color_coordinate(c, max_iter, mu[i]), ref_coordinate(c, max_iter, mu[i]),
                          px[3 * i], px[3 * i + 1], px[3 * i + 2], want[3 * i], want[3 * i + 1],
                          want[3 * i + 2], grey[i], want_grey[i]);
        assert_memory_equal(px + 3 * i, want + 3 * i, 3);
        assert_int_equal(grey[i], want_grey[i]);
        if (count_t)
            tally->t_differ += !same_double(color_coordinate(c, max_iter, mu[i]),
                                            ref_coordinate(c, max_iter, mu[i]));
    }
    tally->samples += n;
    free(px);
    free(want);
    free(grey);
    free(want_grey);
}

/* color.c's logarithm is correctly rounded except within 2^-12 ulp of a rounding boundary. Checked
 * through color_coordinate() at max_iter = 2^20 - 1, whose log range is 20 ln 2: the expected t is
 * RN(RN(ln(1 + mu)) / RN(20 ln 2)), the logarithms from logl() (64-bit significand). Values whose
 * logl() result lies within 2^-7 ulp (in double) of a rounding boundary are skipped, where logl's
 * own error could decide; every other one must match exactly. */
static void test_coordinate_log_rounding(void **state)
{
    struct spec_coloring c;
    uint32_t seed = 777;
    size_t checked = 0, skipped = 0;

    (void)state;
    ramp(&c);
    const uint32_t max_iter = (1u << 20) - 1;
    const double range = (double)logl(0x1p20L);

    /* RN(20 ln 2) itself is clear-cut: logl's value is far from the midpoints beside it. */
    assert_true(fabsl(logl(0x1p20L) - (long double)range)
                < 0.25L * (long double)(nextafter(range, INFINITY) - range));
    for (int pass = 0; pass < 3; pass++) {
        const uint32_t n = pass == 0 ? 129 * 64 : 200000;

        for (uint32_t i = 0; i < n; i++) {
            float mu;

            if (pass == 0)   /* every table row: 1 + mu near 1 + j/128 and 2^k (1 + j/128) */
                mu = (float)(ldexp(1.0 + (i / 64) / 128.0, (int)(i % 16)) - 1.0)
                     + (float)((int)(i % 64 / 16) - 2) * 1e-6f;
            else if (pass == 1)   /* every float bit pattern in [0, 2^20), stepped */
                mu = float_of_bits(i * (0x49800000u / 200000u));
            else
                mu = (float)(rng_next(&seed) % 1048576u)
                     + (float)(rng_next(&seed) >> 8) / 16777216.0f;
            if (!(mu >= 0.0f) || mu >= (float)max_iter)
                continue;

            /* ln of 1 + mu rounded to double, as color.c (and libm's log before it) take it. */
            const long double y = logl((long double)(1.0 + (double)mu));
            const double yd = (double)y;
            /* |y - yd| in ulps of double on y's side of yd: near 0.5 is too close to call. */
            const double ulp = (long double)yd < y ? nextafter(yd, INFINITY) - yd
                                                   : yd - nextafter(yd, -INFINITY);
            const long double off = fabsl(y - (long double)yd) / ulp;

            if (off > 0.5L - 0x1p-7L) {
                skipped++;
                continue;
            }
            double want = yd / range;
            want = want > 1.0 ? 1.0 : want;
            if (!same_double(color_coordinate(&c, max_iter, mu), want))
                print_message("mu %a: t %a, want %a\n", mu, color_coordinate(&c, max_iter, mu),
                              want);
            assert_true(same_double(color_coordinate(&c, max_iter, mu), want));
            checked++;
        }
    }
    print_message("log rounding: %zu values checked, %zu skipped as too close to call\n", checked,
                  skipped);
    assert_true(skipped * 20 < checked);
}

/* Floats over [0, 1100] (every 4099th bit pattern, every one in windows around the values where
 * edges are likeliest, random ones) and random bit patterns (NaN, infinities, negatives), through
 * every built-in palette, log-scaled and cycling, forwards and reversed. */
static void test_rows_match_reference_sweep(void **state)
{
    static const float centres[] = {0.0f, 1.0f, 2.0f, 3.0f, 7.0f, 15.0f, 99.0f, 255.0f, 256.0f,
                                    257.0f, 999.0f, 1023.0f, 1099.0f};
    const size_t cap = 400000;
    float *mu = malloc(cap * sizeof(*mu));
    size_t n = 0, count = 0;
    const char *const *names = color_palette_names(&count);
    uint32_t seed = 4242;
    struct tally tally = {0, 0};

    (void)state;
    assert_non_null(mu);
    for (uint32_t b = 0; b <= 0x44898000u; b += 4099)
        mu[n++] = float_of_bits(b);
    for (size_t k = 0; k < sizeof(centres) / sizeof(centres[0]); k++) {
        uint32_t b;

        memcpy(&b, &centres[k], sizeof(b));
        for (uint32_t d = 0; d < 2048; d++)
            mu[n++] = float_of_bits(b + d - (b >= 1024 ? 1024 : 0));
    }
    for (int k = 0; k < 60000; k++)
        mu[n++] = (float)rng_next(&seed) / 4294967296.0f * 1100.0f;
    for (int k = 0; k < 10000; k++)
        mu[n++] = float_of_bits(rng_next(&seed));
    assert_true(n <= cap);

    for (int mode = 0; mode < 4; mode++) {
        const uint32_t max_iter = mode & 1 ? 1000 : 256;

        for (size_t p = 0; p < count; p++) {
            struct spec_coloring c;

            memset(&c, 0, sizeof(c));
            assert_int_equal(color_palette_load(&c, names[p]), 0);
            c.cycle = mode >= 2 ? (mode == 2 ? 17.25 : 1.0) : 0.0;
            c.offset = mode == 2 ? 0.3 : mode == 3 ? 0.75 : 0.0;
            c.reverse = mode & 1;
            c.interior = (struct spec_rgb){7, 8, 9};
            compare_row(&c, max_iter, mu, n, p == 0, &tally);
        }
    }
    print_message("sweep: %zu samples, %zu of %zu coordinates differ from libm's in the last bits, "
                  "no byte differs\n", tally.samples, tally.t_differ, n * 4);
    free(mu);
}

/* max_iter from 1 to 1e6: every value to 1000, then in steps of ~1 %, and the ones whose log range
 * is a multiple of another value's log (M + 1 = d^a: t = k / a exactly, where grey16 and a
 * colour can sit on a half), each with smooth values at those powers, at the palette's segment
 * edges, around 0 and max_iter, and random ones. */
static void test_rows_match_reference_max_iter(void **state)
{
    enum { MAXN = 256 };
    uint32_t *iters = malloc(20000 * sizeof(*iters));
    size_t niters = 0;
    uint32_t seed = 99;
    struct tally tally = {0, 0};
    struct spec_coloring inferno, fire;

    (void)state;
    assert_non_null(iters);
    memset(&inferno, 0, sizeof(inferno));
    memset(&fire, 0, sizeof(fire));
    assert_int_equal(color_palette_load(&inferno, "inferno"), 0);
    assert_int_equal(color_palette_load(&fire, "fire"), 0);
    for (uint32_t m = 1; m <= 1000; m++)
        iters[niters++] = m;
    for (double m = 1000; m <= 1e6; m *= 1.01)
        iters[niters++] = (uint32_t)m;
    iters[niters++] = 1000000;
    for (uint64_t d = 2; d * d <= 1000001; d++)
        for (uint64_t p = d * d; p <= 1000001; p *= d)
            iters[niters++] = (uint32_t)(p - 1);

    for (size_t k = 0; k < niters; k++) {
        const uint32_t m = iters[k];
        float mu[MAXN];
        size_t n = 0;
        const float fixed[] = {0.0f, -0.0f, 1e-30f, 0.5f, 1.0f, 2.0f, (float)m / 2, (float)m - 1,
                               (float)m - 0.5f, (float)m, (float)m + 0.5f, (float)m + 1,
                               (float)m * 2, INFINITY, NAN, -1.0f};

        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
            mu[n++] = fixed[i];
        /* Roots of m + 1: d - 1 where d^a = m + 1. */
        for (uint64_t d = 2; d * d <= (uint64_t)m + 1 && n < MAXN - 90; d++) {
            uint64_t p = d;

            while (p < (uint64_t)m + 1)
                p *= d;
            for (uint64_t q = d; p == (uint64_t)m + 1 && q < p; q *= d)
                mu[n++] = (float)(q - 1);
        }
        /* Segment edges of the 64-segment palettes: t = j / 64. */
        for (int j = 1; j < 64; j++)
            mu[n++] = (float)(pow((double)m + 1.0, j / 64.0) - 1.0);
        while (n < 112)
            mu[n++] = (float)((double)rng_next(&seed) / 4294967296.0 * (double)m);
        compare_row(&inferno, m, mu, n, 1, &tally);
        compare_row(&fire, m, mu, n, 0, &tally);
        inferno.reverse = fire.reverse = true;
        compare_row(&inferno, m, mu, n, 1, &tally);
        inferno.reverse = fire.reverse = false;
    }
    print_message("max_iter: %zu values of max_iter, %zu samples, %zu coordinates differ from "
                  "libm's in the last bits, no byte differs\n", niters, tally.samples,
                  tally.t_differ);
    free(iters);
}

/* Custom palettes: stops closer together than a bucket (1/512), several at one position, on
 * bucket edges, uniform ones that are not powers of two, 1 to 255 segments, a -0 first stop;
 * log-scaled and cycling, forwards and reversed. */
static void test_rows_match_reference_custom_stops(void **state)
{
    enum { N = 3000 };
    float mu[N];
    uint32_t seed = 2024;
    struct tally tally = {0, 0};

    (void)state;
    for (int i = 0; i < N; i++)
        mu[i] = i % 23 == 0 ? -1.0f : (float)rng_next(&seed) / 4294967296.0f * 300.0f;
    for (int kind = 0; kind < 160; kind++) {
        struct spec_coloring c;
        uint32_t n;

        memset(&c, 0, sizeof(c));
        n = kind < 8 ? (uint32_t[]){2, 3, 65, 129, 256, 255, 4, 5}[kind]
                     : 2 + rng_next(&seed) % (SPEC_MAX_STOPS - 1);
        c.nstops = n;
        for (uint32_t k = 0; k < n; k++) {
            const uint32_t r = rng_next(&seed);

            switch (kind % 8) {
            case 0: c.pos[k] = (float)k / (float)(n - 1); break;          /* even */
            case 1: c.pos[k] = (float)(r >> 8) / 16777216.0f; break;      /* random */
            case 2: c.pos[k] = (float)(r % 512) / 512.0f; break;          /* on bucket edges */
            case 3: c.pos[k] = (float)(r % 4096) / 4096.0f; break;        /* 8 per bucket */
            case 4: c.pos[k] = (float)(r % 9) / 8.0f; break;              /* many equal */
            case 5: c.pos[k] = 0.5f + (float)(r % 64) / 65536.0f; break;  /* a tight cluster */
            case 6: c.pos[k] = (float)(r % 64) / 64.0f; break;            /* a 64-grid, gaps */
            default: c.pos[k] = (float)k / (float)(n - 1) + ((r & 1) ? 1e-7f : 0.0f); break;
            }
            c.rgb[k] = (struct spec_rgb){(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16)};
        }
        /* Sorted, 0 first and 1 last, as validation requires; kind 9 starts at -0. */
        for (uint32_t a = 1; a < n; a++)
            for (uint32_t b = a; b > 0 && c.pos[b - 1] > c.pos[b]; b--) {
                float t = c.pos[b];

                c.pos[b] = c.pos[b - 1];
                c.pos[b - 1] = t;
            }
        c.pos[0] = kind == 9 ? -0.0f : 0.0f;
        c.pos[n - 1] = 1.0f;
        c.interior = (struct spec_rgb){(uint8_t)kind, 200, 100};
        c.reverse = kind & 1;
        c.cycle = kind % 3 == 1 ? 7.5 : 0.0;
        c.offset = kind % 3 == 1 ? (double)(kind % 5) / 4.0 : 0.0;
        compare_row(&c, 256, mu, N, 0, &tally);
    }
    /* All stops at one position: one flat segment. */
    {
        struct spec_coloring c;

        memset(&c, 0, sizeof(c));
        c.nstops = 3;
        c.rgb[2] = (struct spec_rgb){10, 20, 30};
        compare_row(&c, 256, mu, N, 0, &tally);
    }
}

/* ss = 1..8 over widths that are and are not multiples of the vector blocks (and short rows, which
 * take the scalar path), a stride wider than the block, interior, NaN and infinite samples among
 * the rest; rgb8 and grey16. */
static void test_rows_match_reference_supersample(void **state)
{
    static const uint32_t widths[] = {1, 7, 31, 32, 33, 100, 128, 129, 200};
    static const char *const palettes[] = {"inferno", "fire"};
    uint32_t seed = 31337;

    (void)state;
    for (uint32_t ss = 1; ss <= 8; ss++)
        for (size_t w = 0; w < sizeof(widths) / sizeof(widths[0]); w++)
            for (int variant = 0; variant < 4; variant++) {
                const uint32_t width = widths[w], rows = 3;
                const size_t stride = (size_t)width * ss + 5;
                const size_t nsmooth = stride * rows * ss;
                float *smooth = malloc(nsmooth * sizeof(*smooth));
                const size_t npx = (size_t)width * rows;
                uint8_t *px = malloc(npx * 3), *want = malloc(npx * 3);
                uint16_t *grey = malloc(npx * 2), *want_grey = malloc(npx * 2);
                struct spec_coloring c;

                assert_non_null(smooth);
                assert_non_null(px);
                assert_non_null(want);
                assert_non_null(grey);
                assert_non_null(want_grey);
                for (size_t i = 0; i < nsmooth; i++) {
                    const uint32_t r = rng_next(&seed);

                    smooth[i] = r % 13 == 0 ? -1.0f : r % 29 == 0 ? NAN : r % 31 == 0 ? INFINITY
                              : (float)(r >> 8) / 65536.0f;
                }
                memset(&c, 0, sizeof(c));
                assert_int_equal(color_palette_load(&c, palettes[variant & 1]), 0);
                c.reverse = variant >> 1;
                c.cycle = variant == 3 ? 3.0 : 0.0;
                c.interior = (struct spec_rgb){255, 0, 128};
                color_rows_rgb8(&c, 256, smooth, stride, width, rows, ss, px);
                ref_rows_rgb8(&c, 256, smooth, stride, width, rows, ss, want);
                assert_memory_equal(px, want, npx * 3);
                color_rows_grey16(&c, 256, smooth, stride, width, rows, ss, grey);
                ref_rows_grey16(&c, 256, smooth, stride, width, rows, ss, want_grey);
                assert_memory_equal(grey, want_grey, npx * 2);
                free(smooth);
                free(px);
                free(want);
                free(grey);
                free(want_grey);
            }
}

/* The AVX2 build and the baseline build (FRACTALD_CPU_ISA=base) write the same bytes, and both
 * the reference's. Where the CPU has no AVX2 both runs take the baseline. */
static void test_rows_isa_builds_agree(void **state)
{
    enum { W = 333, ROWS = 4 };
    const char *saved = getenv("FRACTALD_CPU_ISA");
    char *restore = saved ? strdup(saved) : NULL;
    static const char *const palettes[] = {"inferno", "fire", "twilight"};
    float *smooth = malloc((size_t)W * ROWS * 64 * sizeof(*smooth));
    uint8_t *a = malloc((size_t)W * ROWS * 3), *b = malloc((size_t)W * ROWS * 3);
    uint16_t *ga = malloc((size_t)W * ROWS * 2), *gb = malloc((size_t)W * ROWS * 2);
    uint32_t seed = 5;

    (void)state;
    assert_non_null(smooth);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(ga);
    assert_non_null(gb);
    for (size_t i = 0; i < (size_t)W * ROWS * 64; i++) {
        const uint32_t r = rng_next(&seed);

        smooth[i] = r % 17 == 0    ? -1.0f
                    : r % 101 == 0 ? float_of_bits(r)
                                   : (float)(r >> 9) / 8192.0f;
    }
    for (size_t p = 0; p < 3; p++)
        for (int mode = 0; mode < 3; mode++)
            for (uint32_t ss = 1; ss <= 8; ss *= 2) {
                struct spec_coloring c;
                const size_t stride = (size_t)W * ss;

                memset(&c, 0, sizeof(c));
                assert_int_equal(color_palette_load(&c, palettes[p]), 0);
                c.cycle = mode == 2 ? 11.0 : 0.0;
                c.offset = mode == 2 ? 0.4 : 0.0;
                c.reverse = mode == 1;
                setenv("FRACTALD_CPU_ISA", "base", 1);
                color_rows_rgb8(&c, 700, smooth, stride, W, ROWS, ss, a);
                color_rows_grey16(&c, 700, smooth, stride, W, ROWS, ss, ga);
                unsetenv("FRACTALD_CPU_ISA");
                color_rows_rgb8(&c, 700, smooth, stride, W, ROWS, ss, b);
                color_rows_grey16(&c, 700, smooth, stride, W, ROWS, ss, gb);
                assert_memory_equal(a, b, (size_t)W * ROWS * 3);
                assert_memory_equal(ga, gb, (size_t)W * ROWS * 2);
                ref_rows_rgb8(&c, 700, smooth, stride, W, ROWS, ss, b);
                ref_rows_grey16(&c, 700, smooth, stride, W, ROWS, ss, gb);
                assert_memory_equal(a, b, (size_t)W * ROWS * 3);
                assert_memory_equal(ga, gb, (size_t)W * ROWS * 2);
            }
    if (restore)
        setenv("FRACTALD_CPU_ISA", restore, 1);
    free(restore);
    free(smooth);
    free(a);
    free(b);
    free(ga);
    free(gb);
}

/* Interior and odd smooth values: negative, -0 (escaped, t = 0), NaN of either sign and any
 * payload, infinities, the largest float, subnormals; each against the reference. */
static void test_rows_match_reference_special_values(void **state)
{
    const float mu[] = {-1.0f, -0.0f, 0.0f, NAN, -NAN, float_of_bits(0x7F800001u),
                        float_of_bits(0xFFC00001u), INFINITY, -INFINITY, FLT_MAX, -FLT_MAX,
                        FLT_MIN, float_of_bits(1), float_of_bits(0x80000001u), 1e-30f, 1e30f,
                        256.0f, 255.99998f, 256.00003f};
    size_t count = 0;
    const char *const *names = color_palette_names(&count);
    struct tally tally = {0, 0};

    (void)state;
    for (size_t p = 0; p < count; p++)
        for (int mode = 0; mode < 4; mode++) {
            struct spec_coloring c;

            memset(&c, 0, sizeof(c));
            assert_int_equal(color_palette_load(&c, names[p]), 0);
            c.cycle = mode & 2 ? 0.5 : 0.0;
            c.offset = mode & 2 ? 0.25 : 0.0;
            c.reverse = mode & 1;
            c.interior = (struct spec_rgb){3, 2, 1};
            compare_row(&c, 256, mu, sizeof(mu) / sizeof(mu[0]), 0, &tally);
        }
}

int test_color_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_palette_names),
        cmocka_unit_test(test_palette_every_name_loads),
        cmocka_unit_test(test_palette_unknown),
        cmocka_unit_test(test_palette_endpoints),
        cmocka_unit_test(test_palette_stops_exact),
        cmocka_unit_test(test_coordinate_log),
        cmocka_unit_test(test_coordinate_cycle),
        cmocka_unit_test(test_interpolation),
        cmocka_unit_test(test_interpolation_uneven_stops),
        cmocka_unit_test(test_interpolation_hard_step),
        cmocka_unit_test(test_interior),
        cmocka_unit_test(test_reverse),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_supersample_rgb8),
        cmocka_unit_test(test_supersample_3x3),
        cmocka_unit_test(test_grey16),
        cmocka_unit_test(test_rows_match_reference),
        cmocka_unit_test(test_coordinate_log_rounding),
        cmocka_unit_test(test_rows_match_reference_sweep),
        cmocka_unit_test(test_rows_match_reference_max_iter),
        cmocka_unit_test(test_rows_match_reference_custom_stops),
        cmocka_unit_test(test_rows_match_reference_supersample),
        cmocka_unit_test(test_rows_match_reference_special_values),
        cmocka_unit_test(test_rows_isa_builds_agree),
    };
    return cmocka_run_group_tests_name("color", tests, NULL, NULL);
}
