/* fanout_png.c: the PNG side of a fan-out render, with zlib alone: decodes the bands the servers
 * send (8-bit RGB or 16-bit grey, non-interlaced, as fractald writes them) into rows, and encodes
 * the whole image again as one PNG, streamed row by row, with the request text chunk. */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "internal.h"

/* Text chunks longer than this are compressed, at this level, as fractald does. */
#define TEXT_COMPRESS_MIN 1024
#define TEXT_LEVEL 2
/* Deflated image data is cut into IDAT chunks of this size. */
#define IDAT_BYTES (256 * 1024)
/* A band's text chunk is refused beyond this (a request is a few KiB). */
#define TEXT_MAX ((size_t)16 << 20)

static const unsigned char signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---- decoding a band ------------------------------------------------------------------------ */

/* Inflates a zlib stream into exactly `want` bytes at out (fewer or more is a damaged band). */
static int inflate_exact(unsigned char *out, size_t want, const unsigned char *in, size_t in_len)
{
    z_stream z;
    int rc;

    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        return FRACTAL_ENOMEM;
    z.next_in = (unsigned char *)(uintptr_t)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)want;
    rc = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    return rc == Z_STREAM_END && z.avail_out == 0 ? 0 : FRACTAL_EPROTOCOL;
}

static unsigned char paeth(unsigned char a, unsigned char b, unsigned char c)
{
    int p = (int)a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);

    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Undoes the filter of each scanline (PNG spec 9.2) in place, and packs the rows together without
 * their filter bytes. */
static int unfilter(unsigned char *buf, uint32_t height, size_t stride, size_t bpp)
{
    unsigned char *prev = NULL;
    uint32_t y;
    size_t i;

    for (y = 0; y < height; y++) {
        unsigned char *line = buf + (size_t)y * (stride + 1), type = line[0], *px = line + 1;

        for (i = 0; i < stride; i++) {
            unsigned char a = i >= bpp ? px[i - bpp] : 0, b = prev ? prev[i] : 0,
                          c = prev && i >= bpp ? prev[i - bpp] : 0;
            switch (type) {
            case 0: break;
            case 1: px[i] = (unsigned char)(px[i] + a); break;
            case 2: px[i] = (unsigned char)(px[i] + b); break;
            case 3: px[i] = (unsigned char)(px[i] + ((a + b) >> 1)); break;
            case 4: px[i] = (unsigned char)(px[i] + paeth(a, b, c)); break;
            default: return FRACTAL_EPROTOCOL;
            }
        }
        /* The packed row goes where the previous rows' filter bytes were: behind this line. */
        memmove(buf + (size_t)y * stride, px, stride);
        prev = buf + (size_t)y * stride;
    }
    return 0;
}

/* The text of a tEXt, zTXt or iTXt chunk with our keyword, as a malloc'd NUL-terminated string;
 * NULL when the chunk is another one. Text is taken as it is: fractald writes ASCII in tEXt/zTXt
 * and UTF-8 in iTXt. */
static int chunk_text(char **out, const char *type, const unsigned char *d, size_t len)
{
    size_t klen = sizeof FR_PNG_REQUEST_KEYWORD, off;
    int compressed;

    *out = NULL;
    if (len < klen || memcmp(d, FR_PNG_REQUEST_KEYWORD, klen) != 0)
        return 0;
    if (memcmp(type, "tEXt", 4) == 0) {
        compressed = 0;
        off = klen;
    } else if (memcmp(type, "zTXt", 4) == 0) {
        compressed = 1;
        off = klen + 1;
    } else {
        const unsigned char *p;
        /* iTXt: flag, method, language NUL, translated keyword NUL, text. */
        if (len < klen + 2)
            return FRACTAL_EPROTOCOL;
        compressed = d[klen];
        off = klen + 2;
        if ((p = memchr(d + off, 0, len - off)) == NULL)
            return FRACTAL_EPROTOCOL;
        off = (size_t)(p - d) + 1;
        if ((p = memchr(d + off, 0, len - off)) == NULL)
            return FRACTAL_EPROTOCOL;
        off = (size_t)(p - d) + 1;
    }
    if (off > len)
        return FRACTAL_EPROTOCOL;
    if (!compressed) {
        if ((*out = malloc(len - off + 1)) == NULL)
            return FRACTAL_ENOMEM;
        memcpy(*out, d + off, len - off);
        (*out)[len - off] = '\0';
        return 0;
    } else {
        z_stream z;
        size_t cap = 4096;
        int rc;

        memset(&z, 0, sizeof z);
        if (inflateInit(&z) != Z_OK || (*out = malloc(cap)) == NULL) {
            inflateEnd(&z);
            return FRACTAL_ENOMEM;
        }
        z.next_in = (unsigned char *)(uintptr_t)(d + off);
        z.avail_in = (uInt)(len - off);
        for (;;) {
            z.next_out = (unsigned char *)*out + z.total_out;
            z.avail_out = (uInt)(cap - 1 - z.total_out);
            rc = inflate(&z, Z_NO_FLUSH);
            if (rc == Z_STREAM_END)
                break;
            if ((rc != Z_OK && rc != Z_BUF_ERROR) || (z.avail_out > 0 && z.avail_in == 0) || cap >= TEXT_MAX) {
                inflateEnd(&z);
                free(*out);
                *out = NULL;
                return FRACTAL_EPROTOCOL;
            }
            if (z.avail_out == 0) {
                char *grown = realloc(*out, cap * 2);
                if (grown == NULL) {
                    inflateEnd(&z);
                    free(*out);
                    *out = NULL;
                    return FRACTAL_ENOMEM;
                }
                *out = grown;
                cap *= 2;
            }
        }
        (*out)[z.total_out] = '\0';
        inflateEnd(&z);
        return 0;
    }
}

int fr_png_decode(fr_png_band *out, const unsigned char *data, size_t size, int want_text)
{
    unsigned char *idat = NULL;
    size_t idat_len = 0, pos = 8, bpp, stride, raw_len;
    int have_ihdr = 0, err = FRACTAL_EPROTOCOL;

    memset(out, 0, sizeof *out);
    if (size < 8 || memcmp(data, signature, 8) != 0)
        return FRACTAL_EPROTOCOL;
    if ((idat = malloc(size)) == NULL)
        return FRACTAL_ENOMEM;
    while (pos + 12 <= size) {
        uint32_t len = be32(data + pos);
        const char *type = (const char *)data + pos + 4;
        const unsigned char *d = data + pos + 8;

        if (len > size - pos - 12 || crc32(crc32(0L, Z_NULL, 0), (const Bytef *)type, len + 4) != be32(d + len))
            goto done;
        if (memcmp(type, "IHDR", 4) == 0 && len == 13) {
            out->width = be32(d);
            out->height = be32(d + 4);
            /* 8-bit RGB or 16-bit grey, deflate, adaptive filters, no interlace. */
            if (!((d[8] == 8 && d[9] == 2) || (d[8] == 16 && d[9] == 0)) || d[10] || d[11] || d[12])
                goto done;
            out->grey16 = d[8] == 16;
            have_ihdr = 1;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            memcpy(idat + idat_len, d, len);
            idat_len += len;
        } else if (want_text && out->text == NULL &&
                   (memcmp(type, "tEXt", 4) == 0 || memcmp(type, "zTXt", 4) == 0 || memcmp(type, "iTXt", 4) == 0)) {
            if ((err = chunk_text(&out->text, type, d, len)) < 0)
                goto done;
            err = FRACTAL_EPROTOCOL;
        } else if (memcmp(type, "IEND", 4) == 0) {
            break;
        }
        pos += (size_t)len + 12;
    }
    if (!have_ihdr || out->width == 0 || out->height == 0)
        goto done;
    bpp = out->grey16 ? 2 : 3;
    stride = (size_t)out->width * bpp;
    raw_len = (stride + 1) * out->height;
    if ((out->rows = malloc(raw_len)) == NULL) {
        err = FRACTAL_ENOMEM;
        goto done;
    }
    if ((err = inflate_exact(out->rows, raw_len, idat, idat_len)) < 0)
        goto done;
    err = unfilter(out->rows, out->height, stride, bpp);
    out->stride = stride;
done:
    free(idat);
    if (err < 0)
        fr_png_band_dispose(out);
    return err;
}

void fr_png_band_dispose(fr_png_band *b)
{
    free(b->rows);
    free(b->text);
    memset(b, 0, sizeof *b);
}

/* ---- encoding the whole image --------------------------------------------------------------- */

struct fr_png_writer {
    z_stream z;
    int z_ready;
    uint32_t width;
    int grey16;
    size_t stride;               /* bytes per row, without the filter byte */
    unsigned char *line;         /* one filtered scanline */
    unsigned char *out;          /* IDAT_BYTES of deflated data waiting for its chunk */
    int (*emit)(void *ctx, const unsigned char *data, size_t len);
    void *ctx;
};

/* Writes one chunk: length, type, data, CRC of type and data. */
static int put_chunk(fr_png_writer *w, const char *type, const unsigned char *data, size_t len)
{
    unsigned char head[8], tail[4];
    uLong crc = crc32(0L, Z_NULL, 0);
    int err;

    put_be32(head, (uint32_t)len);
    memcpy(head + 4, type, 4);
    crc = crc32(crc, (const Bytef *)type, 4);
    if (len)
        crc = crc32(crc, data, (uInt)len);
    put_be32(tail, (uint32_t)crc);
    if ((err = w->emit(w->ctx, head, 8)) < 0 || (len && (err = w->emit(w->ctx, data, len)) < 0))
        return err;
    return w->emit(w->ctx, tail, 4);
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* The request text chunk, as fractald writes it: tEXt/zTXt for ASCII, iTXt for UTF-8, compressed
 * from TEXT_COMPRESS_MIN bytes. */
static int put_text(fr_png_writer *w, const char *text)
{
    size_t klen = sizeof FR_PNG_REQUEST_KEYWORD, len = strlen(text), head, cap;
    int compress = len >= TEXT_COMPRESS_MIN, ascii = is_ascii(text), err;
    unsigned char *buf;
    uLongf zlen;

    head = klen + (ascii ? (compress ? 1 : 0) : 4);
    cap = head + (compress ? compressBound((uLong)len) : len);
    if ((buf = malloc(cap)) == NULL)
        return FRACTAL_ENOMEM;
    memcpy(buf, FR_PNG_REQUEST_KEYWORD, klen);
    if (ascii && compress) {
        buf[klen] = 0; /* method: deflate */
    } else if (!ascii) {
        buf[klen] = (unsigned char)compress; /* flag */
        buf[klen + 1] = 0;                   /* method */
        buf[klen + 2] = 0;                   /* no language */
        buf[klen + 3] = 0;                   /* no translated keyword */
    }
    zlen = (uLongf)(cap - head);
    if (compress) {
        if (compress2(buf + head, &zlen, (const Bytef *)text, (uLong)len, TEXT_LEVEL) != Z_OK) {
            free(buf);
            return FRACTAL_ENOMEM;
        }
    } else {
        memcpy(buf + head, text, len);
        zlen = (uLongf)len;
    }
    err = put_chunk(w, ascii ? (compress ? "zTXt" : "tEXt") : "iTXt", buf, head + zlen);
    free(buf);
    return err;
}

int fr_png_begin(fr_png_writer **out, uint32_t width, uint32_t height, int grey16, const char *text,
                 int (*emit)(void *ctx, const unsigned char *data, size_t len), void *ctx)
{
    unsigned char ihdr[13];
    fr_png_writer *w;
    int err;

    if ((*out = w = calloc(1, sizeof *w)) == NULL)
        return FRACTAL_ENOMEM;
    w->width = width;
    w->grey16 = grey16;
    w->stride = (size_t)width * (grey16 ? 2 : 3);
    w->emit = emit;
    w->ctx = ctx;
    if ((w->line = malloc(w->stride + 1)) == NULL || (w->out = malloc(IDAT_BYTES)) == NULL)
        return FRACTAL_ENOMEM;
    /* fractald's settings: RGB8 unfiltered at level 2, grey16 SUB at level 1. Unfiltered RGB also
     * makes the inflated image data byte for byte a single server's, whatever the deflate. */
    if (deflateInit(&w->z, grey16 ? 1 : 2) != Z_OK)
        return FRACTAL_ENOMEM;
    w->z_ready = 1;
    w->z.next_out = w->out;
    w->z.avail_out = IDAT_BYTES;
    put_be32(ihdr, width);
    put_be32(ihdr + 4, height);
    ihdr[8] = grey16 ? 16 : 8;
    ihdr[9] = grey16 ? 0 : 2;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    if ((err = emit(ctx, signature, 8)) < 0 || (err = put_chunk(w, "IHDR", ihdr, 13)) < 0)
        return err;
    return text ? put_text(w, text) : 0;
}

/* Runs deflate over what is in w->z.next_in, writing an IDAT each time the output buffer fills. */
static int deflate_some(fr_png_writer *w, int flush)
{
    int rc, err;

    for (;;) {
        rc = deflate(&w->z, flush);
        if (rc == Z_STREAM_ERROR)
            return FRACTAL_ENOMEM;
        if (w->z.avail_out == 0 || (flush == Z_FINISH && rc == Z_STREAM_END)) {
            size_t n = IDAT_BYTES - w->z.avail_out;
            if (n && (err = put_chunk(w, "IDAT", w->out, n)) < 0)
                return err;
            w->z.next_out = w->out;
            w->z.avail_out = IDAT_BYTES;
        }
        if (flush == Z_FINISH ? rc == Z_STREAM_END : w->z.avail_in == 0)
            return 0;
    }
}

int fr_png_rows(fr_png_writer *w, const unsigned char *rows, uint32_t n)
{
    uint32_t y;
    size_t i;
    int err;

    for (y = 0; y < n; y++) {
        const unsigned char *src = rows + (size_t)y * w->stride;

        if (w->grey16) {
            /* SUB: each byte less the byte of the previous pixel (2 bytes back). */
            w->line[0] = 1;
            for (i = 0; i < w->stride; i++)
                w->line[1 + i] = (unsigned char)(src[i] - (i >= 2 ? src[i - 2] : 0));
        } else {
            w->line[0] = 0;
            memcpy(w->line + 1, src, w->stride);
        }
        w->z.next_in = w->line;
        w->z.avail_in = (uInt)(w->stride + 1);
        if ((err = deflate_some(w, Z_NO_FLUSH)) < 0)
            return err;
    }
    return 0;
}

int fr_png_end(fr_png_writer *w)
{
    int err;

    w->z.next_in = NULL;
    w->z.avail_in = 0;
    if ((err = deflate_some(w, Z_FINISH)) < 0)
        return err;
    return put_chunk(w, "IEND", NULL, 0);
}

void fr_png_writer_free(fr_png_writer *w)
{
    if (w == NULL)
        return;
    if (w->z_ready)
        deflateEnd(&w->z);
    free(w->line);
    free(w->out);
    free(w);
}
