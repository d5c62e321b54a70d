/* bench_encode.c: PNG encoding time and size of fractald's encoder (encode.c, one thread) against
 * zlib on the same filtered scanlines and against libpng's defaults, measured in one run on the
 * 28 tiles of workload T and on the whole 1920x1080 frame they come from (bench/README.md).
 * Usage: bench_encode [REPS]   (default 15; medians over REPS passes) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <zlib.h>

#include "bench_stats.h"
#include "color.h"
#include "encode.h"
#include "engine_cpu.h"
#include "err.h"

#define FRAME_W 1920
#define FRAME_H 1080
#define TILE 256
#define MAX_TILES 64
#define MAX_REPS 101

/* An image to encode: RGB8 or native-endian grey16 rows, tightly packed. */
struct image {
    const uint8_t *pixels;
    uint32_t width, height;
    size_t row_bytes;
    enum spec_format format;
};

struct growbuf {
    uint8_t *data;
    size_t len, cap;
};

static int growbuf_sink(void *ctx, const void *data, size_t len)
{
    struct growbuf *b = ctx;

    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        uint8_t *p;

        while (cap < b->len + len)
            cap *= 2;
        if (!(p = realloc(b->data, cap)))
            return ERR_NOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* fractald's encoder on the calling thread alone. Returns the PNG's size, 0 on failure. The PNG
 * stays in *keep when keep is not NULL. */
static size_t run_fractald(const struct image *im, struct growbuf *keep)
{
    struct growbuf b = {0};
    encoder *enc = NULL;
    size_t n = 0;

    if (encoder_new(&enc, im->format, im->width, im->height, NULL, growbuf_sink, &b) < 0)
        goto done;
    encoder_set_pool(enc, NULL);
    if (encoder_write_rows(enc, im->pixels, im->height) < 0 || encoder_finish(enc) < 0)
        goto done;
    n = b.len;
done:
    encoder_free(enc);
    if (keep && n) {
        *keep = b;
        return n;
    }
    free(b.data);
    return n;
}

/* zlib on the scanlines fractald filters (RGB8 unfiltered, grey16 big-endian with SUB), as one
 * stream at `level`: the image data cost of a PNG without the chunk framing. Returns the deflated
 * size, 0 on failure. */
static size_t run_zlib(const struct image *im, int level, uint8_t *scratch, size_t scratch_cap)
{
    size_t line = im->row_bytes + 1, n = line * im->height;
    uint8_t *filtered = scratch, *out = scratch + n;
    uLongf out_len = (uLongf)(scratch_cap - n);

    for (uint32_t y = 0; y < im->height; y++) {
        uint8_t *dst = filtered + y * line;
        const uint8_t *src = im->pixels + y * im->row_bytes;

        if (im->format == SPEC_PNG) {
            dst[0] = 0;
            memcpy(dst + 1, src, im->row_bytes);
        } else {
            uint8_t ph = 0, pl = 0;

            dst[0] = 1;
            for (uint32_t x = 0; x < im->width; x++) {
                uint16_t v;

                memcpy(&v, src + 2 * x, 2);
                dst[1 + 2 * x] = (uint8_t)((v >> 8) - ph);
                dst[2 + 2 * x] = (uint8_t)(v - pl);
                ph = (uint8_t)(v >> 8);
                pl = (uint8_t)v;
            }
        }
    }
    if (compress2(out, &out_len, filtered, n, level) != Z_OK)
        return 0;
    return out_len;
}

/* libpng's simplified writer with its defaults (adaptive filters, zlib level 6): RGB8 only. */
static size_t run_libpng(const struct image *im, uint8_t *scratch, size_t scratch_cap)
{
    png_image pi;
    png_alloc_size_t size = scratch_cap;

    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    pi.width = im->width;
    pi.height = im->height;
    pi.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_memory(&pi, scratch, &size, 0, im->pixels, (png_int_32)im->row_bytes,
                                   NULL))
        return 0;
    return size;
}

/* Decodes a PNG of fractald's and compares it with the image. Returns 1 when equal. */
static int roundtrip_ok(const struct image *im, const struct growbuf *png)
{
    png_image pi;
    uint8_t *back;
    int ok = 0;

    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, png->data, png->len))
        return 0;
    pi.format = im->format == SPEC_PNG ? PNG_FORMAT_RGB : PNG_FORMAT_LINEAR_Y;
    if (!(back = malloc(PNG_IMAGE_SIZE(pi))))
        return 0;
    if (png_image_finish_read(&pi, NULL, back, 0, NULL))
        ok = pi.width == im->width && pi.height == im->height &&
             memcmp(back, im->pixels, im->row_bytes * im->height) == 0;
    free(back);
    return ok;
}

enum variant { V_FRACTALD, V_ZLIB1, V_ZLIB2, V_LIBPNG, V_COUNT };
static const char *const variant_names[V_COUNT] = {
    "fractald encoder", "zlib level 1, one stream", "zlib level 2, one stream",
    "libpng defaults (naive)"};

/* Median seconds of one pass over the images with variant v, and the bytes of one pass. */
static double measure(enum variant v, const struct image *ims, size_t n, int reps, size_t *bytes,
                      uint8_t *scratch, size_t scratch_cap)
{
    double t[MAX_REPS];

    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s();
        size_t total = 0;

        for (size_t i = 0; i < n; i++) {
            const struct image *im = &ims[i];

            switch (v) {
            case V_FRACTALD: total += run_fractald(im, NULL); break;
            case V_ZLIB1: total += run_zlib(im, 1, scratch, scratch_cap); break;
            case V_ZLIB2: total += run_zlib(im, 2, scratch, scratch_cap); break;
            default: total += im->format == SPEC_PNG ? run_libpng(im, scratch, scratch_cap) : 0; break;
            }
        }
        t[r] = bench_now_s() - t0;
        *bytes = total;
    }
    return bench_median(t, (size_t)reps);
}

static void report(const char *what, const struct image *ims, size_t n, int reps, uint8_t *scratch,
                   size_t scratch_cap)
{
    double secs[V_COUNT];
    size_t bytes[V_COUNT];

    for (int v = 0; v < V_COUNT; v++) {
        if (v == V_LIBPNG && ims[0].format != SPEC_PNG) {
            secs[v] = 0;
            continue;
        }
        secs[v] = measure((enum variant)v, ims, n, reps, &bytes[v], scratch, scratch_cap);
    }
    printf("%s (%zu image%s, one thread, median of %d):\n", what, n, n == 1 ? "" : "s", reps);
    for (int v = 0; v < V_COUNT; v++) {
        if (secs[v] == 0)
            continue;
        printf("  %-26s %8.3f ms per image  %9zu bytes  time x%.2f  size x%.3f of fractald\n",
               variant_names[v], secs[v] * 1e3 / (double)n, bytes[v] / n, secs[v] / secs[V_FRACTALD],
               (double)bytes[v] / (double)bytes[V_FRACTALD]);
    }
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    struct render_spec spec;
    engine_cpu *engine = NULL;
    struct engine_cpu_stats st;
    float *smooth = NULL;
    uint8_t *rgb = NULL, *scratch = NULL;
    uint16_t *grey = NULL;
    struct image tiles[MAX_TILES], gtiles[MAX_TILES], frame, gframe;
    uint8_t *tile_px[MAX_TILES] = {0}, *gtile_px[MAX_TILES] = {0};
    size_t ntiles = 0, scratch_cap = (size_t)FRAME_W * FRAME_H * 8 + (1 << 20);
    int rc = 1;

    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "usage: bench_encode [REPS 1..%d]\n", MAX_REPS);
        return 2;
    }
    /* Workload T's frame: workload A's view at max_iter 256, inferno, smooth values. */
    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_JULIA;
    spec.c_re = -0.8;
    spec.c_im = 0.156;
    spec.view_width = 3.0;
    spec.width = FRAME_W;
    spec.height = FRAME_H;
    spec.region = (struct spec_rect){0, 0, FRAME_W, FRAME_H};
    spec.max_iter = 256;
    spec.escape_radius = 2.0;
    spec.precision = SPEC_FP32;
    spec.format = SPEC_PNG;
    spec.supersample = 1;
    if (color_palette_load(&spec.coloring, "inferno") < 0)
        goto done;
    if (!(smooth = malloc(sizeof(float) * FRAME_W * FRAME_H)) ||
        !(rgb = malloc((size_t)3 * FRAME_W * FRAME_H)) ||
        !(grey = malloc(sizeof(uint16_t) * FRAME_W * FRAME_H)) || !(scratch = malloc(scratch_cap)))
        goto done;
    if (engine_cpu_new(&engine, 0) < 0 ||
        engine_cpu_render(engine, &spec, &spec.region, NULL, smooth, NULL, &st) < 0)
        goto done;
    color_rows_rgb8(&spec.coloring, spec.max_iter, smooth, FRAME_W, FRAME_W, FRAME_H, 1, rgb);
    color_rows_grey16(&spec.coloring, spec.max_iter, smooth, FRAME_W, FRAME_W, FRAME_H, 1, grey);

    frame = (struct image){rgb, FRAME_W, FRAME_H, (size_t)3 * FRAME_W, SPEC_PNG};
    gframe = (struct image){(const uint8_t *)grey, FRAME_W, FRAME_H, (size_t)2 * FRAME_W, SPEC_PNG16};
    /* The tile sequence of bench_tiles and bench_service.py: the 28 full tiles whose origins lie
     * below 1920 - 256 and 1080 - 256, each copied out as its own image. */
    for (uint32_t y = 0; y < FRAME_H - TILE; y += TILE)
        for (uint32_t x = 0; x < FRAME_W - TILE; x += TILE) {
            if (!(tile_px[ntiles] = malloc((size_t)3 * TILE * TILE)) ||
                !(gtile_px[ntiles] = malloc((size_t)2 * TILE * TILE)))
                goto done;
            for (uint32_t r = 0; r < TILE; r++) {
                memcpy(tile_px[ntiles] + (size_t)r * 3 * TILE, rgb + ((size_t)(y + r) * FRAME_W + x) * 3,
                       (size_t)3 * TILE);
                memcpy(gtile_px[ntiles] + (size_t)r * 2 * TILE, grey + (size_t)(y + r) * FRAME_W + x,
                       (size_t)2 * TILE);
            }
            tiles[ntiles] = (struct image){tile_px[ntiles], TILE, TILE, (size_t)3 * TILE, SPEC_PNG};
            gtiles[ntiles] = (struct image){gtile_px[ntiles], TILE, TILE, (size_t)2 * TILE, SPEC_PNG16};
            ntiles++;
        }

    /* The encoder's output must decode to the input, or its figures mean nothing. */
    {
        const struct image *check[4] = {&tiles[ntiles / 2], &gtiles[ntiles / 2], &frame, &gframe};

        for (int i = 0; i < 4; i++) {
            struct growbuf png = {0};
            int ok = run_fractald(check[i], &png) > 0 && roundtrip_ok(check[i], &png);

            free(png.data);
            if (!ok) {
                fprintf(stderr, "bench_encode: fractald's PNG does not decode to its input\n");
                goto done;
            }
        }
    }

    report("256x256 RGB8 tiles of workload T", tiles, ntiles, reps, scratch, scratch_cap);
    report("256x256 grey16 tiles of workload T", gtiles, ntiles, reps, scratch, scratch_cap);
    report("1920x1080 RGB8 frame (workload A view, max_iter 256)", &frame, 1, reps, scratch, scratch_cap);
    report("1920x1080 grey16 frame", &gframe, 1, reps, scratch, scratch_cap);
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "bench_encode: setup failed\n");
    for (size_t i = 0; i < MAX_TILES; i++) {
        free(tile_px[i]);
        free(gtile_px[i]);
    }
    engine_cpu_free(engine);
    free(scratch);
    free(grey);
    free(rgb);
    free(smooth);
    return rc;
}
