/* encode.c: PNG (libpng) and raw little-endian encoding, row band by row band, into a sink.
 * The only file of the server that includes png.h. */
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "encode.h"
#include "err.h"

/* zlib settings for image data, per format, chosen for speed: a 1920x1080 render must not wait
 * on its encoding. Measured on the default Julia view at 1920x1080 (max_iter 256, inferno; grey16
 * of the same), whole image in 64-row bands, one core of a shared 2-vCPU AMD EPYC VM, zlib 1.2.13,
 * libpng 1.6.39, best of 7 (ms / bytes; raw RGB is 6.2 MB):
 *   RGB8   level 1: NONE 42 / 1.29M  SUB 56 / 1.67M  UP 62 / 1.69M  PAETH 72 / 1.72M
 *                   SUB|UP 68 / 1.68M  ALL (adaptive) 93 / 1.69M
 *          NONE at level 2: 43 / 1.20M, level 3: 48 / 1.15M; SUB at level 3: 84, level 6: 183
 *          Z_RLE: NONE 75 / 5.2M, SUB 47 / 1.64M
 *   grey16 level 1: NONE 93 / 3.38M  SUB 62 / 1.97M  UP 64 / 2.02M  PAETH 77 / 2.10M
 *          SUB at level 2: 71 / 1.91M, level 3: 101 / 1.84M; Z_RLE + SUB 55 / 2.57M
 * Palette-mapped RGB repeats exact byte triplets, which deflate matches best unfiltered; the
 * smooth 16-bit ramps want SUB. Hence RGB8: level 2, no filter (fastest and smaller than level
 * 1); grey16: level 1, SUB. The adaptive filter choice libpng makes by default costs 2x. */
#define ENCODE_RGB8_LEVEL 2
#define ENCODE_RGB8_FILTERS PNG_FILTER_NONE
#define ENCODE_GREY16_LEVEL 1
#define ENCODE_GREY16_FILTERS PNG_FILTER_SUB

/* Bytes of encoded output gathered before one sink call, and the size of libpng's IDAT buffer.
 * libpng writes every chunk as three pieces (header, data, CRC); gathering them keeps the sink
 * calls few and large while memory stays bounded whatever the image size. */
#define ENCODE_OUT_BUFFER (64 * 1024)
#define ENCODE_IDAT_BUFFER (32 * 1024)

/* Requests longer than this go into a compressed text chunk (zTXt, or compressed iTXt). */
#define ENCODE_TEXT_COMPRESS_MIN 1024

struct encoder {
    enum spec_format format;
    uint32_t width, height;
    uint32_t rows_done;
    size_t row_bytes;           /* input bytes per row */
    encode_sink_fn sink;
    void *sink_ctx;
    int err;                    /* sticky: once set, every later call returns it */
    int finished;
    int nomem;                  /* set by png_alloc when libpng's allocation failed */
    png_structp png;
    png_infop info;
    uint8_t *buf;               /* ENCODE_OUT_BUFFER bytes */
    size_t buf_len;
};

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;

    memcpy(&first, &one, 1);
    return first == 1;
}

static int out_flush(encoder *enc)
{
    int err;

    if (enc->buf_len == 0)
        return 0;
    err = enc->sink(enc->sink_ctx, enc->buf, enc->buf_len);
    enc->buf_len = 0;
    return err < 0 ? err : 0;
}

/* Appends encoded bytes, handing full buffers to the sink. A piece at least a buffer long skips
 * the copy once the buffer is empty. Returns 0 or the sink's error. */
static int out_append(encoder *enc, const uint8_t *data, size_t len)
{
    int err;

    while (len > 0) {
        if (enc->buf_len == 0 && len >= ENCODE_OUT_BUFFER) {
            err = enc->sink(enc->sink_ctx, data, len);
            return err < 0 ? err : 0;
        }
        size_t n = ENCODE_OUT_BUFFER - enc->buf_len;
        if (n > len)
            n = len;
        memcpy(enc->buf + enc->buf_len, data, n);
        enc->buf_len += n;
        data += n;
        len -= n;
        if (enc->buf_len == ENCODE_OUT_BUFFER && (err = out_flush(enc)) < 0)
            return err;
    }
    return 0;
}

/* libpng callbacks. The error callback must not return: it jumps back to the setjmp of the
 * encoder call that is running (png_start, png_rows, png_finish). */
static void png_on_write(png_structp png, png_bytep data, size_t len)
{
    encoder *enc = png_get_io_ptr(png);
    int err = out_append(enc, data, len);

    if (err < 0) {
        enc->err = err;
        png_error(png, "sink failed");
    }
}

static void png_on_flush(png_structp png)
{
    (void)png;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static png_voidp png_alloc(png_structp png, png_alloc_size_t size)
{
    void *p = malloc(size);

    if (!p) {
        encoder *enc = png_get_mem_ptr(png);
        enc->nomem = 1;
    }
    return p;
}

static void png_dealloc(png_structp png, png_voidp p)
{
    (void)png;
    free(p);
}

/* The code of a failure that longjmp'ed out of libpng: the sink's error if the sink failed,
 * ERR_NOMEM if an allocation did, else ERR_INTERNAL. Makes it sticky. */
static int png_failed(encoder *enc)
{
    if (enc->err >= 0)
        enc->err = enc->nomem ? ERR_NOMEM : ERR_INTERNAL;
    return enc->err;
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* Writes signature, IHDR and the request text chunk (the PNG "info" before the image data), and
 * sets the compression and row transforms. Returns 0, the sink's error, ERR_NOMEM or
 * ERR_INTERNAL. */
static int png_start(encoder *enc, const char *request_json)
{
    png_text text;

    if (setjmp(png_jmpbuf(enc->png)))
        return png_failed(enc);

    png_set_write_fn(enc->png, enc, png_on_write, png_on_flush);
    png_set_compression_level(enc->png, enc->format == SPEC_PNG16 ? ENCODE_GREY16_LEVEL
                                                                   : ENCODE_RGB8_LEVEL);
    png_set_filter(enc->png, PNG_FILTER_TYPE_BASE,
                   enc->format == SPEC_PNG16 ? ENCODE_GREY16_FILTERS : ENCODE_RGB8_FILTERS);
    png_set_compression_buffer_size(enc->png, ENCODE_IDAT_BUFFER);
    png_set_IHDR(enc->png, enc->info, enc->width, enc->height, enc->format == SPEC_PNG16 ? 16 : 8,
                 enc->format == SPEC_PNG16 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);

    if (request_json) {
        size_t len = strlen(request_json);
        int compress = len >= ENCODE_TEXT_COMPRESS_MIN;

        /* JSON is normally ASCII, which tEXt/zTXt (Latin-1) carry as is; a request with UTF-8
         * in a string would be misread as Latin-1 there, so it goes into iTXt (UTF-8). */
        memset(&text, 0, sizeof(text));
        if (is_ascii(request_json))
            text.compression = compress ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE;
        else
            text.compression = compress ? PNG_ITXT_COMPRESSION_zTXt : PNG_ITXT_COMPRESSION_NONE;
        /* libpng copies both strings in png_set_text; its API is just not const-correct. */
        text.key = (png_charp)(uintptr_t)ENCODE_REQUEST_KEYWORD;
        text.text = (png_charp)(uintptr_t)request_json;
        text.text_length = len;
        png_set_text(enc->png, enc->info, &text, 1);
    }

    png_write_info(enc->png, enc->info);
    /* PNG stores 16-bit samples big-endian; set after png_write_info, as libpng requires. libpng
     * swaps in its own row copy, so the caller's rows stay untouched. */
    if (enc->format == SPEC_PNG16 && host_is_little_endian())
        png_set_swap(enc->png);
    return 0;
}

static int png_rows(encoder *enc, const uint8_t *pixels, uint32_t rows)
{
    if (setjmp(png_jmpbuf(enc->png)))
        return png_failed(enc);

    for (uint32_t r = 0; r < rows; r++) {
        png_write_row(enc->png, pixels + (size_t)r * enc->row_bytes);
        enc->rows_done++;
    }
    return 0;
}

static int png_finish(encoder *enc)
{
    if (setjmp(png_jmpbuf(enc->png)))
        return png_failed(enc);

    png_write_end(enc->png, NULL);
    return 0;
}

/* Raw formats: 4-byte samples, little-endian on the wire. On a little-endian host the caller's
 * rows go to the sink as they are, without a copy. */
static int raw_rows(encoder *enc, const uint8_t *pixels, uint32_t rows)
{
    size_t len = (size_t)rows * enc->row_bytes;
    int err;

    if (host_is_little_endian()) {
        err = enc->sink(enc->sink_ctx, pixels, len);
        if (err < 0)
            return err;
    } else {
        for (size_t done = 0; done < len;) {
            size_t n = len - done;

            if (n > ENCODE_OUT_BUFFER)
                n = ENCODE_OUT_BUFFER;
            for (size_t i = 0; i < n; i += 4) {
                enc->buf[i + 0] = pixels[done + i + 3];
                enc->buf[i + 1] = pixels[done + i + 2];
                enc->buf[i + 2] = pixels[done + i + 1];
                enc->buf[i + 3] = pixels[done + i + 0];
            }
            enc->buf_len = n;
            if ((err = out_flush(enc)) < 0)
                return err;
            done += n;
        }
    }
    enc->rows_done += rows;
    return 0;
}

const char *encode_content_type(enum spec_format format)
{
    return format == SPEC_PNG || format == SPEC_PNG16 ? "image/png" : "application/octet-stream";
}

int encoder_new(encoder **out, enum spec_format format, uint32_t width, uint32_t height,
                const char *request_json, encode_sink_fn sink, void *sink_ctx)
{
    encoder *enc = NULL;
    size_t bytes_per_pixel;
    int err;

    *out = NULL;
    switch (format) {
    case SPEC_PNG: bytes_per_pixel = 3; break;
    case SPEC_PNG16: bytes_per_pixel = 2; break;
    case SPEC_RAW_U32:
    case SPEC_RAW_F32: bytes_per_pixel = 4; break;
    default: return ERR_INVALID;
    }
    if (width == 0 || height == 0 || !sink)
        return ERR_INVALID;

    if (!(enc = calloc(1, sizeof(*enc))) || !(enc->buf = malloc(ENCODE_OUT_BUFFER))) {
        err = ERR_NOMEM;
        goto done;
    }
    enc->format = format;
    enc->width = width;
    enc->height = height;
    enc->row_bytes = (size_t)width * bytes_per_pixel;
    enc->sink = sink;
    enc->sink_ctx = sink_ctx;

    if (format == SPEC_PNG || format == SPEC_PNG16) {
        enc->png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, enc, png_on_error,
                                             png_on_warning, enc, png_alloc, png_dealloc);
        if (!enc->png || !(enc->info = png_create_info_struct(enc->png))) {
            err = ERR_NOMEM;
            goto done;
        }
        if ((err = png_start(enc, request_json)) < 0)
            goto done;
    }
    *out = enc;
    enc = NULL;
    err = 0;
done:
    encoder_free(enc);
    return err;
}

int encoder_write_rows(encoder *enc, const void *pixels, uint32_t rows)
{
    int err;

    if (enc->err < 0)
        return enc->err;
    if (enc->finished || rows > enc->height - enc->rows_done)
        return ERR_INVALID;
    if (rows == 0)
        return 0;

    if (enc->png)
        err = png_rows(enc, pixels, rows);
    else
        err = raw_rows(enc, pixels, rows);
    /* Everything produced so far goes to the sink now, so a streaming reply keeps pace with the
     * bands (zlib still holds back up to one IDAT buffer). */
    if (err == 0)
        err = out_flush(enc);
    if (err < 0)
        enc->err = err;
    return err;
}

int encoder_finish(encoder *enc)
{
    int err = 0;

    if (enc->err < 0)
        return enc->err;
    if (enc->finished)
        return 0;
    if (enc->rows_done != enc->height)
        return ERR_INVALID;

    if (enc->png)
        err = png_finish(enc);
    if (err == 0)
        err = out_flush(enc);
    if (err < 0)
        enc->err = err;
    else
        enc->finished = 1;
    return err;
}

void encoder_free(encoder *enc)
{
    if (!enc)
        return;
    if (enc->png)
        png_destroy_write_struct(&enc->png, enc->info ? &enc->info : NULL);
    free(enc->buf);
    free(enc);
}
