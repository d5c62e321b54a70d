/* test_encode.c: PNG and PNG16 round trips through libpng's decoder (pixels and the request text
 * chunk), raw formats byte for byte, band independence, row-count errors and sink failures. */
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "unit.h"

#include "encode.h"
#include "err.h"

/* A sink that collects everything into memory; with fail_at > 0 the fail_at-th call fails. */
struct mem_sink {
    uint8_t *data;
    size_t len, cap;
    int calls;
    int fail_at;
    int fail_code;
};

static int mem_sink_write(void *ctx, const void *data, size_t len)
{
    struct mem_sink *s = ctx;

    s->calls++;
    if (s->fail_at > 0 && s->calls >= s->fail_at)
        return s->fail_code;
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;

        while (cap < s->len + len)
            cap *= 2;
        uint8_t *p = realloc(s->data, cap);
        if (!p)
            return ERR_NOMEM;
        s->data = p;
        s->cap = cap;
    }
    memcpy(s->data + s->len, data, len);
    s->len += len;
    return 0;
}

static void mem_sink_dispose(struct mem_sink *s)
{
    free(s->data);
    memset(s, 0, sizeof(*s));
}

static size_t bytes_per_pixel(enum spec_format format)
{
    return format == SPEC_PNG ? 3 : format == SPEC_PNG16 ? 2 : 4;
}

/* Encodes a whole image, `band` rows per encoder_write_rows call; asserts every step succeeds. */
static void encode_all(struct mem_sink *sink, enum spec_format format, uint32_t w, uint32_t h,
                       const void *pixels, uint32_t band, const char *json)
{
    encoder *enc = NULL;
    size_t row_bytes = w * bytes_per_pixel(format);

    memset(sink, 0, sizeof(*sink));
    assert_int_equal(encoder_new(&enc, format, w, h, json, mem_sink_write, sink), 0);
    for (uint32_t y = 0; y < h; y += band) {
        uint32_t n = h - y < band ? h - y : band;

        assert_int_equal(encoder_write_rows(enc, (const uint8_t *)pixels + y * row_bytes, n), 0);
    }
    assert_int_equal(encoder_finish(enc), 0);
    encoder_free(enc);
}

/* What the test decoder read back from a PNG. */
struct decoded {
    uint32_t width, height;
    int bit_depth, color_type;
    uint8_t *pixels;            /* rows as stored: 16-bit samples big-endian */
    size_t row_bytes;
    char *text;                 /* the ENCODE_REQUEST_KEYWORD chunk, or NULL */
    int text_compression;
    int text_chunks;
};

struct mem_reader {
    const uint8_t *data;
    size_t len, pos;
};

static void mem_read(png_structp png, png_bytep out, size_t len)
{
    struct mem_reader *r = png_get_io_ptr(png);

    if (len > r->len - r->pos)
        png_error(png, "read past the end");
    memcpy(out, r->data + r->pos, len);
    r->pos += len;
}

/* Decodes a PNG from memory with libpng; returns 0, or -1 if libpng rejected it. */
static int decode_png(struct decoded *out, const uint8_t *data, size_t len)
{
    struct mem_reader reader = {data, len, 0};
    png_structp png = NULL;
    png_infop info = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = -1;

    memset(out, 0, sizeof(*out));
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (!png)
        return -1;
    info = png_create_info_struct(png);
    if (!info)
        goto done;
    if (setjmp(png_jmpbuf(png)))
        goto done;

    png_set_read_fn(png, &reader, mem_read);
    png_read_info(png, info);
    out->width = png_get_image_width(png, info);
    out->height = png_get_image_height(png, info);
    out->bit_depth = png_get_bit_depth(png, info);
    out->color_type = png_get_color_type(png, info);
    out->row_bytes = png_get_rowbytes(png, info);
    out->pixels = malloc(out->row_bytes * out->height);
    rows = malloc(sizeof(png_bytep) * out->height);
    if (!out->pixels || !rows)
        goto done;
    for (uint32_t y = 0; y < out->height; y++)
        rows[y] = out->pixels + y * out->row_bytes;
    png_read_image(png, rows);
    png_read_end(png, info);

    png_textp text = NULL;
    int ntext = png_get_text(png, info, &text, NULL);
    for (int i = 0; i < ntext; i++) {
        if (strcmp(text[i].key, ENCODE_REQUEST_KEYWORD) != 0)
            continue;
        out->text_chunks++;
        out->text_compression = text[i].compression;
        free(out->text);
        out->text = strdup(text[i].text);
    }
    /* Nothing may follow IEND. */
    rc = reader.pos == reader.len ? 0 : -1;
done:
    free(rows);
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    return rc;
}

static void decoded_dispose(struct decoded *d)
{
    free(d->pixels);
    free(d->text);
}

static uint8_t *random_bytes(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n);

    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
    return p;
}

static void test_content_type(void **state)
{
    (void)state;
    assert_string_equal(encode_content_type(SPEC_PNG), "image/png");
    assert_string_equal(encode_content_type(SPEC_PNG16), "image/png");
    assert_string_equal(encode_content_type(SPEC_RAW_U32), "application/octet-stream");
    assert_string_equal(encode_content_type(SPEC_RAW_F32), "application/octet-stream");
}

static void test_png_round_trip(void **state)
{
    const uint32_t w = 37, h = 23;
    const char *json = "{\"julia\":{\"c\":{\"re\":-0.8,\"im\":0.156}},\"width\":37}";
    uint8_t *rgb = random_bytes(w * h * 3, 1);
    struct mem_sink sink;
    struct decoded d;

    (void)state;
    encode_all(&sink, SPEC_PNG, w, h, rgb, 5, json);
    assert_true(sink.len > 8);
    assert_memory_equal(sink.data, "\x89PNG\r\n\x1a\n", 8);
    assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
    assert_int_equal(d.width, w);
    assert_int_equal(d.height, h);
    assert_int_equal(d.bit_depth, 8);
    assert_int_equal(d.color_type, PNG_COLOR_TYPE_RGB);
    assert_int_equal(d.row_bytes, w * 3);
    assert_memory_equal(d.pixels, rgb, w * h * 3);
    assert_int_equal(d.text_chunks, 1);
    assert_non_null(d.text);
    assert_string_equal(d.text, json);
    assert_int_equal(d.text_compression, PNG_TEXT_COMPRESSION_NONE);
    /* The request sits before the image data, where a reader that stops early still finds it. */
    assert_non_null(memmem(sink.data, sink.len, "tEXt" ENCODE_REQUEST_KEYWORD, 28));
    assert_true((uint8_t *)memmem(sink.data, sink.len, "tEXt", 4) <
                (uint8_t *)memmem(sink.data, sink.len, "IDAT", 4));
    decoded_dispose(&d);
    mem_sink_dispose(&sink);
    free(rgb);
}

static void test_png16_round_trip(void **state)
{
    const uint32_t w = 29, h = 17;
    uint16_t *grey = malloc(w * h * sizeof(uint16_t));
    struct mem_sink sink;
    struct decoded d;

    (void)state;
    assert_non_null(grey);
    for (uint32_t i = 0; i < w * h; i++)
        grey[i] = (uint16_t)(i * 2654435761u >> 7);
    grey[0] = 0x0102;
    grey[1] = 0xffff;
    grey[2] = 0;
    encode_all(&sink, SPEC_PNG16, w, h, grey, 4, "{}");
    assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
    assert_int_equal(d.width, w);
    assert_int_equal(d.height, h);
    assert_int_equal(d.bit_depth, 16);
    assert_int_equal(d.color_type, PNG_COLOR_TYPE_GRAY);
    /* PNG keeps 16-bit samples big-endian, whatever order the host gave them in. */
    for (uint32_t i = 0; i < w * h; i++) {
        assert_int_equal(d.pixels[2 * i], grey[i] >> 8);
        assert_int_equal(d.pixels[2 * i + 1], grey[i] & 0xff);
    }
    assert_string_equal(d.text, "{}");
    decoded_dispose(&d);
    mem_sink_dispose(&sink);
    free(grey);
}

/* A long request goes compressed (zTXt); one with UTF-8 in it goes as iTXt; none, no chunk. */
static void test_png_text_variants(void **state)
{
    uint8_t rgb[4 * 3 * 3];
    char *json = malloc(6001);
    struct mem_sink sink;
    struct decoded d;

    (void)state;
    assert_non_null(json);
    memset(rgb, 7, sizeof(rgb));
    strcpy(json, "{\"coloring\":{\"stops\":[");
    while (strlen(json) < 5900)
        strcat(json, "{\"pos\":0.5,\"rgb\":1},");
    strcat(json, "{}]}}");

    encode_all(&sink, SPEC_PNG, 4, 3, rgb, 3, json);
    assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
    assert_string_equal(d.text, json);
    assert_int_equal(d.text_compression, PNG_TEXT_COMPRESSION_zTXt);
    assert_true(sink.len < strlen(json));
    decoded_dispose(&d);
    mem_sink_dispose(&sink);

    const char *utf8 = "{\"device\":\"caf\xc3\xa9\"}";
    encode_all(&sink, SPEC_PNG, 4, 3, rgb, 1, utf8);
    assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
    assert_string_equal(d.text, utf8);
    assert_int_equal(d.text_compression, PNG_ITXT_COMPRESSION_NONE);
    decoded_dispose(&d);
    mem_sink_dispose(&sink);

    encode_all(&sink, SPEC_PNG, 4, 3, rgb, 2, NULL);
    assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
    assert_int_equal(d.text_chunks, 0);
    assert_memory_equal(d.pixels, rgb, sizeof(rgb));
    decoded_dispose(&d);
    mem_sink_dispose(&sink);
    free(json);
}

static void test_raw_u32_little_endian(void **state)
{
    const uint32_t px[6] = {0x01020304u, 0, 0xffffffffu, 256, 0x80000001u, 7};
    const uint8_t want[24] = {4, 3, 2, 1, 0, 0, 0, 0, 255, 255, 255, 255,
                              0, 1, 0, 0, 1, 0, 0, 128, 7, 0, 0, 0};
    struct mem_sink sink;

    (void)state;
    encode_all(&sink, SPEC_RAW_U32, 3, 2, px, 1, "{\"ignored\":1}");
    assert_int_equal(sink.len, sizeof(want));
    assert_memory_equal(sink.data, want, sizeof(want));
    mem_sink_dispose(&sink);
}

static void test_raw_f32_little_endian(void **state)
{
    const float px[4] = {1.0f, -1.0f, 0.0f, 2.5f};
    const uint8_t want[16] = {0, 0, 0x80, 0x3f, 0, 0, 0x80, 0xbf, 0, 0, 0, 0, 0, 0, 0x20, 0x40};
    struct mem_sink sink;

    (void)state;
    encode_all(&sink, SPEC_RAW_F32, 2, 2, px, 2, NULL);
    assert_int_equal(sink.len, sizeof(want));
    assert_memory_equal(sink.data, want, sizeof(want));
    mem_sink_dispose(&sink);
}

/* However the rows are split into bands, the bytes are the same. */
static void test_bands_same_bytes(void **state)
{
    const enum spec_format formats[4] = {SPEC_PNG, SPEC_PNG16, SPEC_RAW_U32, SPEC_RAW_F32};
    const uint32_t w = 61, h = 47;
    const uint32_t bands[3] = {1, 7, 13};
    uint8_t *pixels = random_bytes(w * h * 4, 2);

    (void)state;
    for (int f = 0; f < 4; f++) {
        struct mem_sink whole, split;

        encode_all(&whole, formats[f], w, h, pixels, h, "{\"a\":1}");
        assert_true(whole.len > 0);
        for (int b = 0; b < 3; b++) {
            encode_all(&split, formats[f], w, h, pixels, bands[b], "{\"a\":1}");
            assert_int_equal(split.len, whole.len);
            assert_memory_equal(split.data, whole.data, whole.len);
            mem_sink_dispose(&split);
        }
        mem_sink_dispose(&whole);
    }
    free(pixels);
}

static void test_row_counts(void **state)
{
    const enum spec_format formats[2] = {SPEC_PNG, SPEC_RAW_U32};
    uint8_t pixels[5 * 4 * 4];
    struct mem_sink sink;
    struct decoded d;

    (void)state;
    memset(pixels, 9, sizeof(pixels));
    for (int f = 0; f < 2; f++) {
        encoder *enc = NULL;

        memset(&sink, 0, sizeof(sink));
        assert_int_equal(encoder_new(&enc, formats[f], 5, 4, NULL, mem_sink_write, &sink), 0);
        assert_int_equal(encoder_write_rows(enc, pixels, 5), ERR_INVALID);
        assert_int_equal(encoder_write_rows(enc, pixels, 3), 0);
        assert_int_equal(encoder_finish(enc), ERR_INVALID);
        assert_int_equal(encoder_write_rows(enc, pixels, 2), ERR_INVALID);
        assert_int_equal(encoder_write_rows(enc, pixels, 0), 0);
        /* The refused calls changed nothing: the image still completes and decodes. */
        assert_int_equal(encoder_write_rows(enc, pixels, 1), 0);
        assert_int_equal(encoder_write_rows(enc, pixels, 1), ERR_INVALID);
        assert_int_equal(encoder_finish(enc), 0);
        assert_int_equal(encoder_write_rows(enc, pixels, 1), ERR_INVALID);
        encoder_free(enc);
        if (formats[f] == SPEC_PNG) {
            assert_int_equal(decode_png(&d, sink.data, sink.len), 0);
            assert_int_equal(d.height, 4);
            assert_memory_equal(d.pixels, pixels, 5 * 4 * 3);
            decoded_dispose(&d);
        } else {
            assert_int_equal(sink.len, 5 * 4 * 4);
        }
        mem_sink_dispose(&sink);
    }
}

static void test_new_invalid(void **state)
{
    encoder *enc = (encoder *)&enc;
    struct mem_sink sink;

    (void)state;
    memset(&sink, 0, sizeof(sink));
    assert_int_equal(encoder_new(&enc, SPEC_PNG, 0, 10, NULL, mem_sink_write, &sink), ERR_INVALID);
    assert_null(enc);
    assert_int_equal(encoder_new(&enc, SPEC_PNG16, 10, 0, NULL, mem_sink_write, &sink),
                     ERR_INVALID);
    assert_int_equal(encoder_new(&enc, (enum spec_format)9, 10, 10, NULL, mem_sink_write, &sink),
                     ERR_INVALID);
    assert_int_equal(sink.calls, 0);
    encoder_free(NULL);
}

/* The sink fails at its k-th call, for every k an encoding makes: the call that was writing
 * returns the sink's own error, every later call returns it again, and freeing releases all
 * (LeakSanitizer checks that in the sanitizer build). Also frees unfinished encoders. */
static void test_sink_failure(void **state)
{
    const enum spec_format formats[3] = {SPEC_PNG, SPEC_PNG16, SPEC_RAW_F32};
    const uint32_t w = 300, h = 200;
    uint8_t *pixels = random_bytes(w * h * 4, 3);

    (void)state;
    for (int f = 0; f < 3; f++) {
        struct mem_sink ok;

        /* Count the calls a clean run makes. */
        encode_all(&ok, formats[f], w, h, pixels, 16, "{\"x\":1}");
        assert_true(ok.calls >= 2);
        for (int k = 1; k <= ok.calls; k++) {
            struct mem_sink sink = {.fail_at = k, .fail_code = ERR_CANCELLED};
            encoder *enc = NULL;
            int err = 0;
            size_t row_bytes = w * bytes_per_pixel(formats[f]);

            assert_int_equal(encoder_new(&enc, formats[f], w, h, "{\"x\":1}", mem_sink_write,
                                         &sink), 0);
            for (uint32_t y = 0; y < h && err == 0; y += 16)
                err = encoder_write_rows(enc, pixels + y * row_bytes, h - y < 16 ? h - y : 16);
            if (err == 0)
                err = encoder_finish(enc);
            assert_int_equal(err, ERR_CANCELLED);
            assert_int_equal(sink.calls, k);
            assert_int_equal(encoder_write_rows(enc, pixels, 1), ERR_CANCELLED);
            assert_int_equal(encoder_finish(enc), ERR_CANCELLED);
            assert_int_equal(sink.calls, k);
            encoder_free(enc);
            mem_sink_dispose(&sink);
        }
        mem_sink_dispose(&ok);

        /* Abandoned half way, without a failure. */
        encoder *enc = NULL;
        struct mem_sink sink;
        memset(&sink, 0, sizeof(sink));
        assert_int_equal(encoder_new(&enc, formats[f], w, h, NULL, mem_sink_write, &sink), 0);
        assert_int_equal(encoder_write_rows(enc, pixels, h / 2), 0);
        encoder_free(enc);
        mem_sink_dispose(&sink);
    }
    free(pixels);
}

/* Encodes like encode_all, deflating on `pool`. */
static void encode_pool(struct mem_sink *sink, enum spec_format format, uint32_t w, uint32_t h,
                        const void *pixels, uint32_t band, workpool *pool)
{
    encoder *enc = NULL;
    size_t row_bytes = w * bytes_per_pixel(format);

    memset(sink, 0, sizeof(*sink));
    assert_int_equal(encoder_new(&enc, format, w, h, "{}", mem_sink_write, sink), 0);
    encoder_set_pool(enc, pool);
    for (uint32_t y = 0; y < h; y += band) {
        uint32_t n = h - y < band ? h - y : band;

        assert_int_equal(encoder_write_rows(enc, (const uint8_t *)pixels + y * row_bytes, n), 0);
    }
    assert_int_equal(encoder_finish(enc), 0);
    encoder_free(enc);
}

/* An image of many deflate segments (more than one parallel pass), with the repeats and ramps of
 * a rendered fractal so the segments use their preset dictionaries: it decodes to the exact
 * pixels, and the bytes are the same whatever the threads and however the rows are fed. */
static void test_png_segments_parallel(void **state)
{
    const enum spec_format formats[2] = {SPEC_PNG, SPEC_PNG16};
    const uint32_t w = 200, h = 2000;
    const uint32_t bands[5] = {1, 7, 219, 300, 2000};
    const unsigned helpers[3] = {0, 1, 3};
    uint8_t *pixels = malloc((size_t)w * h * 3);

    (void)state;
    assert_non_null(pixels);
    for (int f = 0; f < 2; f++) {
        size_t bpp = bytes_per_pixel(formats[f]);
        struct mem_sink ref, sink;
        struct decoded d;

        for (uint32_t y = 0; y < h; y++) {
            for (uint32_t x = 0; x < w; x++) {
                uint32_t v = ((x / 3) * (y / 5) + (x ^ y) % 7) * 2654435761u >> 20;

                for (size_t b = 0; b < bpp; b++)
                    pixels[((size_t)y * w + x) * bpp + b] = (uint8_t)(v >> (4 * b));
            }
        }
        encode_pool(&ref, formats[f], w, h, pixels, 16, NULL);
        assert_int_equal(decode_png(&d, ref.data, ref.len), 0);
        assert_int_equal(d.width, w);
        assert_int_equal(d.height, h);
        if (formats[f] == SPEC_PNG) {
            assert_memory_equal(d.pixels, pixels, (size_t)w * h * 3);
        } else {
            const uint16_t *grey = (const uint16_t *)pixels;
            for (size_t i = 0; i < (size_t)w * h; i++) {
                assert_int_equal(d.pixels[2 * i], grey[i] >> 8);
                assert_int_equal(d.pixels[2 * i + 1], grey[i] & 0xff);
            }
        }
        decoded_dispose(&d);
        /* More than one IDAT: the data really went out in segments. */
        uint8_t *idat = memmem(ref.data, ref.len, "IDAT", 4);
        assert_non_null(idat);
        assert_non_null(memmem(idat + 4, ref.len - (size_t)(idat + 4 - ref.data), "IDAT", 4));

        for (int t = 0; t < 3; t++) {
            workpool *pool = NULL;

            assert_int_equal(workpool_new(&pool, helpers[t]), 0);
            for (int b = 0; b < 5; b++) {
                encode_pool(&sink, formats[f], w, h, pixels, bands[b], pool);
                assert_int_equal(sink.len, ref.len);
                assert_memory_equal(sink.data, ref.data, ref.len);
                mem_sink_dispose(&sink);
            }
            workpool_free(pool);
        }
        /* The default pool too. */
        encode_all(&sink, formats[f], w, h, pixels, 333, "{}");
        assert_int_equal(sink.len, ref.len);
        assert_memory_equal(sink.data, ref.data, ref.len);
        mem_sink_dispose(&sink);
        mem_sink_dispose(&ref);
    }
    free(pixels);
}

/* A big image goes out in many sink calls as rows arrive, not all at the end. */
static void test_streams_as_rows_arrive(void **state)
{
    const uint32_t w = 512, h = 256;
    uint8_t *rgb = random_bytes(w * h * 3, 4);
    struct mem_sink sink;
    encoder *enc = NULL;

    (void)state;
    memset(&sink, 0, sizeof(sink));
    assert_int_equal(encoder_new(&enc, SPEC_PNG, w, h, NULL, mem_sink_write, &sink), 0);
    assert_int_equal(encoder_write_rows(enc, rgb, h / 2), 0);
    /* Random bytes do not compress: half the image is ~196 KiB, most of it out already. */
    assert_true(sink.len > w * (h / 2) * 3 / 2);
    assert_int_equal(encoder_write_rows(enc, rgb + (size_t)w * (h / 2) * 3, h - h / 2), 0);
    assert_int_equal(encoder_finish(enc), 0);
    encoder_free(enc);
    mem_sink_dispose(&sink);
    free(rgb);
}

int test_encode_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_png16_round_trip),
        cmocka_unit_test(test_png_text_variants),
        cmocka_unit_test(test_raw_u32_little_endian),
        cmocka_unit_test(test_raw_f32_little_endian),
        cmocka_unit_test(test_bands_same_bytes),
        cmocka_unit_test(test_row_counts),
        cmocka_unit_test(test_new_invalid),
        cmocka_unit_test(test_sink_failure),
        cmocka_unit_test(test_streams_as_rows_arrive),
        cmocka_unit_test(test_png_segments_parallel),
    };
    return cmocka_run_group_tests_name("encode", tests, NULL, NULL);
}
