/* test_color.c: built-in palettes, the palette coordinate, stop interpolation, interior colour,
 * reverse, cycle and the supersample reduction, against values worked out by hand. */
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
    };
    return cmocka_run_group_tests_name("color", tests, NULL, NULL);
}
