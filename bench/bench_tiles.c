/* bench_tiles.c: unary Render latency of 256x256 tiles of workload A at max_iter 256 (workload T of
 * bench/README.md) from libfractal, beside the engine-only time the server reports for each tile
 * (stats.compute_ms): the tile figure of bench_service.py without the Python client's own cost,
 * and where the rest goes (the server's queue, colour + encode and total time, from its stats).
 * Usage: bench_tiles TARGET [N [FORMAT]]   (TARGET "127.0.0.1:PORT" of a running fractald; N
 * measured calls, default 200, after 20 warm-up ones; FORMAT png (default), png16, raw_u32 or
 * raw_f32). Prints two human lines and one "bench_tiles ..." key=value line that
 * bench_service.py reads. BENCH_TILES_XYZ=1 sends bench_http.py's tile mix instead: the 64 XYZ
 * tiles of zoom 3 over workload T's base view (centre 0, width 3), each a 256x256 image of its own
 * view, so that gRPC and HTTP tile figures compare. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fractal/fractal.h"
#include "bench_stats.h"

#define WARMUP 20
#define TILE 256





int main(int argc, char **argv)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_client *client = NULL;
    double *total = NULL, *compute = NULL, *queue = NULL, *encode = NULL, *server = NULL;
    static const char *const format_names[] = {"png", "png16", "raw_u32", "raw_f32"};
    int format = FRACTAL_FORMAT_PNG;
    size_t n = 200, ntiles = 0;
    uint32_t tiles[64][2];
    int err, rc = 1, xyz;

    if (argc == 4) {
        for (format = 0; format < 4 && strcmp(argv[3], format_names[format]) != 0; format++)
            ;
    }
    if (argc < 2 || argc > 4 || (argc >= 3 && (n = strtoul(argv[2], NULL, 10)) == 0) || format == 4) {
        fprintf(stderr, "usage: bench_tiles TARGET [N [png|png16|raw_u32|raw_f32]]\n");
        return 2;
    }
    /* The tile sequence of bench_service.py: row-major over the full tiles of a 1920x1080 frame
     * whose origins are below 1920 - 256 and 1080 - 256 (28 tiles), cycled. */
    for (uint32_t y = 0; y < 1080 - TILE; y += TILE)
        for (uint32_t x = 0; x < 1920 - TILE; x += TILE) {
            tiles[ntiles][0] = x;
            tiles[ntiles][1] = y;
            ntiles++;
        }
    if (!(total = calloc(n, sizeof(*total))) || !(compute = calloc(n, sizeof(*compute))) ||
        !(queue = calloc(n, sizeof(*queue))) || !(encode = calloc(n, sizeof(*encode))) ||
        !(server = calloc(n, sizeof(*server)))) {
        fprintf(stderr, "bench_tiles: out of memory\n");
        goto done;
    }
    /* One handle, so one channel and one connection for every call, as a tile client would keep. */
    if ((err = fractal_client_new(&client, argv[1], NULL)) < 0) {
        fprintf(stderr, "bench_tiles: %s\n", fractal_strerror(err));
        goto done;
    }
    xyz = getenv("BENCH_TILES_XYZ") && strcmp(getenv("BENCH_TILES_XYZ"), "1") == 0;
    opts.width = xyz ? TILE : 1920;
    opts.height = xyz ? TILE : 1080;
    opts.view_width = xyz ? 3.0 / 8 : 3.0;
    opts.max_iter = 256;
    opts.format = (fractal_format)format;
    opts.has_region = !xyz;
    opts.region.width = TILE;
    opts.region.height = TILE;
    for (size_t k = 0; k < n + WARMUP; k++) {
        fractal_image *image = NULL;
        double t0;

        if (xyz) {
            /* Tile (x, y) of zoom 3, row-major, y down as in the XYZ scheme. */
            unsigned x = (unsigned)(k % 64) % 8, y = (unsigned)(k % 64) / 8;
            opts.center.re = -1.5 + (x + 0.5) * (3.0 / 8);
            opts.center.im = 1.5 - (y + 0.5) * (3.0 / 8);
        } else {
            opts.region.x = tiles[k % ntiles][0];
            opts.region.y = tiles[k % ntiles][1];
        }
        t0 = bench_now_s() * 1e3;
        if ((err = fractal_render(&image, client, &opts)) < 0) {
            fprintf(stderr, "bench_tiles: %s\n", fractal_client_last_error(client));
            goto done;
        }
        if (k >= WARMUP) {
            total[k - WARMUP] = bench_now_s() * 1e3 - t0;
            compute[k - WARMUP] = image->stats.compute_ms;
            queue[k - WARMUP] = image->stats.queue_ms;
            encode[k - WARMUP] = image->stats.encode_ms;
            server[k - WARMUP] = image->stats.total_ms;
        }
        fractal_image_free(image);
    }
    {
        double p50 = bench_pct(total, n, 50), p99 = bench_pct(total, n, 99), c50 = bench_median(compute, n);
        double q50 = bench_median(queue, n), e50 = bench_median(encode, n), s50 = bench_median(server, n);

        printf("unary 256x256 %s tiles of %s, max_iter 256, C client (libfractal), %zu calls: p50 %.2f ms, "
               "p99 %.2f ms; engine-only p50 %.2f ms; RPC+queue+colour+encode add %.2f ms at p50 "
               "(%.0f%% of end to end)\n",
               format_names[format], xyz ? "T (XYZ zoom 3)" : "A", n, p50, p99, c50, p50 - c50,
               100.0 * (p50 - c50) / p50);
        /* Medians of each phase, so they need not add up exactly to the end-to-end median. */
        printf("  server phases (medians): queue %.2f ms, compute %.2f ms, colour+encode %.2f ms, rest of "
               "the server %.2f ms (accept to reply %.2f ms); RPC and client %.2f ms\n",
               q50, c50, e50, s50 - q50 - c50 - e50, s50, p50 - s50);
        printf("bench_tiles calls=%zu p50_ms=%.3f p99_ms=%.3f compute_p50_ms=%.3f overhead_pct=%.1f "
               "queue_p50_ms=%.3f encode_p50_ms=%.3f server_p50_ms=%.3f\n", n,
               p50, p99, c50, 100.0 * (p50 - c50) / p50, q50, e50, s50);
    }
    rc = 0;
done:
    fractal_client_free(client);
    free(total);
    free(compute);
    free(queue);
    free(encode);
    free(server);
    return rc;
}
