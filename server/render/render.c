/* render.c: the band-by-band pipeline from engine to encoder. */
#include "render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "color.h"
#include "err.h"
#include "workpool.h"

#define DEFAULT_BAND_SAMPLES (4u << 20)

/* Samples coloured per workpool iteration: a 256x256 tile makes 4 chunks, enough to keep two
 * threads even, and the per-call setup of the colour functions (about a microsecond) stays
 * negligible. */
#define COLOR_CHUNK_SAMPLES (16u << 10)

double render_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static size_t pixel_bytes(enum spec_format format)
{
    switch (format) {
    case SPEC_PNG: return 3;
    case SPEC_PNG16: return 2;
    default: return 4;
    }
}

int render_compute_cpu(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                       uint32_t *counts, float *smooth, const atomic_int *cancel,
                       struct engine_cpu_stats *stats)
{
    struct render_cpu *cpu = ctx;
    int err = engine_cpu_render(cpu->engine, spec, rect, counts, smooth, cancel, stats);

    if (err == 0 && cpu->device) {
        atomic_fetch_add(&cpu->device->tiles_done, stats->tiles);
        atomic_fetch_add(&cpu->device->iterations_done, stats->iterations);
    }
    return err;
}

/* A band to colour, cut into chunks of output rows for the workpool. */
struct color_job {
    const struct render_spec *spec;
    const float *smooth;
    size_t stride;                  /* samples per sample row */
    uint32_t rows, chunk_rows;
    void *pixels;
};

static void color_chunk(void *ctx, size_t index)
{
    const struct color_job *job = ctx;
    const struct render_spec *spec = job->spec;
    const uint32_t ss = spec->supersample, width = spec->region.width;
    uint32_t y = (uint32_t)index * job->chunk_rows;
    uint32_t rows = job->rows - y < job->chunk_rows ? job->rows - y : job->chunk_rows;
    const float *smooth = job->smooth + (size_t)y * ss * job->stride;

    if (spec->format == SPEC_PNG)
        color_rows_rgb8(&spec->coloring, spec->max_iter, smooth, job->stride, width, rows, ss,
                        (uint8_t *)job->pixels + (size_t)y * width * 3);
    else
        color_rows_grey16(&spec->coloring, spec->max_iter, smooth, job->stride, width, rows, ss,
                          (uint16_t *)job->pixels + (size_t)y * width);
}

/* Colours `rows` output rows of a band on the shared workpool's threads and the caller's. */
static void color_band(const struct render_spec *spec, const float *smooth, size_t stride,
                       uint32_t rows, void *pixels)
{
    const size_t row_samples = (size_t)spec->region.width * spec->supersample * spec->supersample;
    struct color_job job = {spec, smooth, stride, rows, 1, pixels};

    if (row_samples < COLOR_CHUNK_SAMPLES)
        job.chunk_rows = (uint32_t)(COLOR_CHUNK_SAMPLES / row_samples);
    workpool_run(workpool_shared(), (rows + job.chunk_rows - 1) / job.chunk_rows, color_chunk, &job);
}

int render_run(struct render_stats *out, const struct render_io *io, const struct render_spec *spec,
               const char *request_json, char *msg, size_t msglen)
{
    size_t band_samples = io->band_samples;
    const uint32_t ss = spec->supersample, width = spec->region.width;
    const size_t row_samples = (size_t)width * ss * ss;
    const bool raw_counts = spec->format == SPEC_RAW_U32;
    uint32_t band_rows, done = 0;
    float *smooth = NULL;
    uint32_t *counts = NULL;
    void *pixels = NULL;
    encoder *enc = NULL;
    int err;

    memset(out, 0, sizeof(*out));
    if (band_samples == 0)
        band_samples = DEFAULT_BAND_SAMPLES;
    band_rows = (uint32_t)(band_samples / row_samples);
    if (band_rows < 1)
        band_rows = 1;
    if (band_rows > spec->region.height)
        band_rows = spec->region.height;

    /* Raw formats hand the engine's output to the encoder as it is; the PNG formats colour it
     * into a separate pixel buffer first. */
    if (raw_counts)
        counts = malloc(row_samples * band_rows * sizeof(*counts));
    else
        smooth = malloc(row_samples * band_rows * sizeof(*smooth));
    if (spec->format == SPEC_PNG || spec->format == SPEC_PNG16)
        pixels = malloc((size_t)width * band_rows * pixel_bytes(spec->format));
    else
        pixels = raw_counts ? (void *)counts : (void *)smooth;
    if ((!counts && !smooth) || !pixels) {
        snprintf(msg, msglen, "out of memory for a band of %u rows of %u pixels", band_rows, width);
        err = ERR_NOMEM;
        goto done;
    }
    if ((err = encoder_new(&enc, spec->format, width, spec->region.height, request_json, io->sink,
                           io->sink_ctx)) < 0) {
        snprintf(msg, msglen, "could not start the %s encoder", encode_content_type(spec->format));
        goto done;
    }

    while (done < spec->region.height) {
        uint32_t rows = spec->region.height - done < band_rows ? spec->region.height - done : band_rows;
        struct spec_rect rect = {spec->region.x * ss, (spec->region.y + done) * ss, width * ss, rows * ss};
        struct engine_cpu_stats es = {0};
        double t0 = render_now_ms(), t1;

        err = io->compute(io->compute_ctx, spec, &rect, counts, smooth, io->cancel, &es);
        t1 = render_now_ms();
        out->compute_ms += t1 - t0;
        if (err < 0) {
            snprintf(msg, msglen, "%s", err == ERR_CANCELLED ? "render cancelled" : "compute failed");
            goto done;
        }
        out->iterations += es.iterations;
        out->tiles += es.tiles;
        out->samples += (uint64_t)rect.width * rect.height;
        if (spec->format == SPEC_PNG || spec->format == SPEC_PNG16)
            color_band(spec, smooth, rect.width, rows, pixels);
        if ((err = encoder_write_rows(enc, pixels, rows)) < 0) {
            snprintf(msg, msglen, "encoding failed: %s", err_name(err));
            goto done;
        }
        out->encode_ms += render_now_ms() - t1;
        done += rows;
        if (io->progress)
            io->progress(io->progress_ctx, done, spec->region.height, out->samples);
    }
    {
        double t = render_now_ms();
        if ((err = encoder_finish(enc)) < 0)
            snprintf(msg, msglen, "encoding failed: %s", err_name(err));
        out->encode_ms += render_now_ms() - t;
    }

done:
    encoder_free(enc);
    if (pixels != (void *)counts && pixels != (void *)smooth)
        free(pixels);
    free(counts);
    free(smooth);
    return err;
}
