/* encode.c: PNG and raw little-endian encoding, row band by row band, into a sink. libpng writes
 * the PNG's header chunks; the image data is deflated here, in segments on several threads.
 * The only file of the server that includes png.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <zlib.h>

#include "encode.h"
#include "err.h"
#include "workpool.h"

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
#define ENCODE_GREY16_LEVEL 1
/* RGB8 then retunes level 2's matcher (deflateTune: good_length, max_lazy, which deflate's fast
 * path uses as the longest match whose strings are all hashed, nice_length, max_chain): level 2
 * is 4, 5, 16, 8. Measured on the 28 tiles of workload T (256x256, max_iter 256; single-thread
 * deflate of all 4 segments, best of 15, same VM) and the whole 1920x1080 frame at max_iter 256:
 *   level 2           1.50 ms / 46194 B a tile   1080p 49.6 ms / 1459727 B
 *   4, 8, 16, 4       1.38 ms / 45502 B          1080p 46.6 ms / 1472271 B (+0.9 %)
 *   4, 4, 8, 2        1.31 ms / 48267 B          1080p 46.2 ms / 1623739 B
 *   level 1           1.35 ms / 47518 B          1080p 45.9 ms / 1551148 B
 * Chains of 4 find nearly every match a palette image has (its repeats are a pixel or a row
 * away), hashing whole 8-byte matches keeps the next row's matches findable, so the tune is 8 %
 * faster and 1.5 % smaller on tiles, 6 % faster and 0.9 % larger on frames. grey16 keeps level 1
 * (the same tune there: 3 % slower, 2 % smaller). For reference, libdeflate (a whole-buffer
 * compressor, so no parallel segments) takes 0.77 ms / 50476 B a tile at its level 1 and
 * 1.20 ms / 45228 B at level 2. */
#define ENCODE_RGB8_TUNE 4, 8, 16, 4

/* PNG filter type bytes (PNG spec 9.2). */
#define FILTER_NONE 0
#define FILTER_SUB 1

/* The image data is deflated in segments, as pigz does: the filtered scanlines are cut at fixed
 * rows, each segment is deflated on its own (raw deflate, ending on a byte boundary with a sync
 * flush, the last with Z_FINISH) with the tail of the segment before as preset dictionary, and
 * the pieces are concatenated behind a zlib header and followed by the combined Adler-32. The cut
 * depends only on width, height and format, and each segment only on its own rows and the rows
 * before, so the bytes are the same whatever the threads and however the rows arrive.
 * Segments of up to ENCODE_SEG_BYTES of filtered rows (at least one row), and images of at least
 * ENCODE_SEG_SPLIT_MIN bytes cut into at least ENCODE_SEG_MIN_COUNT segments, so a 256x256 tile
 * spreads over the cores too. */
#define ENCODE_SEG_BYTES (128 * 1024)
#define ENCODE_SEG_MIN_COUNT 4
#define ENCODE_SEG_SPLIT_MIN (64 * 1024)
/* Preset dictionary: the last bytes of the segment before. Measured (256x256 tile of workload A,
 * RGB8, 4 segments on 2 threads; 1920x1080 of A; same VM as above): libpng's single stream 2.75 ms
 * / 81446 B (1080p: 1012814 B, grey16 1679310 B); no dictionary 1.31 ms / 83533 B (1080p +4.4 %);
 * 32 KiB 1.40 ms / 81325 B; 8 KiB 1.31 ms / 81752 B (1080p: 1017591 B, +0.5 %; grey16 +0.06 %).
 * Hashing a dictionary costs about what deflating it does, and the rows just above carry nearly
 * all the matches, hence 8 KiB. 2 segments per tile instead of 4: 1.42 ms; 8: 1.51 ms. */
#define ENCODE_DICT_BYTES (8 * 1024)
/* Complete segments deflated in one parallel pass at most; bounds memory to this many segments of
 * input and output whatever the band size. */
#define ENCODE_WAVE 8
/* Idle deflate states kept per level for reuse (each ~270 KiB): a fresh deflateInit2 per segment
 * would allocate and fault in its window, hash and buffers every time. */
#define ENCODE_ZCACHE 16

/* Bytes of encoded output gathered before one sink call, and the size of libpng's IDAT buffer.
 * libpng writes every chunk as three pieces (header, data, CRC); gathering them keeps the sink
 * calls few and large while memory stays bounded whatever the image size. */
#define ENCODE_OUT_BUFFER (64 * 1024)

/* Requests longer than this go into a compressed text chunk (zTXt, or compressed iTXt), at this
 * zlib level. */
#define ENCODE_TEXT_COMPRESS_MIN 1024
#define ENCODE_TEXT_LEVEL 2

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
    png_structp png;            /* only while encoder_new writes the header chunks */
    png_infop info;
    uint8_t *buf;               /* ENCODE_OUT_BUFFER bytes */
    size_t buf_len;

    /* PNG image data (is_png). */
    int is_png;
    int level;
    size_t line_len;            /* filtered scanline: filter byte + row */
    uint32_t seg_rows;          /* rows per segment (the last may have fewer) */
    uint32_t seg_done;          /* segments deflated and emitted */
    uint32_t seg_total;
    struct segment *slots;      /* ENCODE_WAVE of them, buffers allocated on first use */
    uint32_t nslots_full;       /* complete segments waiting in slots[0..] */
    uint32_t rows_in_slot;      /* rows of the next segment already in slots[nslots_full] */
    uint8_t *dict;              /* tail of the last segment emitted, ENCODE_DICT_BYTES */
    size_t dict_len;
    uint32_t adler;             /* Adler-32 of the filtered data emitted so far */
    workpool *pool;
};

/* One segment of filtered scanlines and its deflated bytes. */
struct segment {
    uint8_t *in;                /* seg_rows scanlines */
    size_t in_len;
    uint8_t *out;
    size_t out_cap, out_len;
    uint32_t adler;             /* of in */
    const uint8_t *dict;        /* preset dictionary, the tail of the segment before */
    size_t dict_len;
    int last;
    int err;
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

/* Writes signature, IHDR and the request text chunk (the PNG "info" before the image data) with
 * libpng. Returns 0, the sink's error, ERR_NOMEM or ERR_INTERNAL. */
static int png_start(encoder *enc, const char *request_json)
{
    png_text text;

    if (setjmp(png_jmpbuf(enc->png)))
        return png_failed(enc);

    png_set_write_fn(enc->png, enc, png_on_write, png_on_flush);
    /* The request text of a built-in palette is ~3.7 KiB of JSON, so it is compressed for every
     * image: level 2 takes 25 us against level 6's 45 us (the default), for 90 bytes more. */
    png_set_text_compression_level(enc->png, ENCODE_TEXT_LEVEL);
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
    return 0;
}

/* Idle raw-deflate states, per level (1..9), shared by all encoders. */
static pthread_mutex_t zcache_lock = PTHREAD_MUTEX_INITIALIZER;
static z_stream *zcache[10][ENCODE_ZCACHE];
static unsigned zcache_count[10];

/* A raw-deflate state at `level`, reset: a cached one or a new one. NULL when out of memory. */
static z_stream *zstream_get(int level)
{
    z_stream *zs = NULL;

    pthread_mutex_lock(&zcache_lock);
    if (zcache_count[level] > 0)
        zs = zcache[level][--zcache_count[level]];
    pthread_mutex_unlock(&zcache_lock);
    if (zs)
        return zs;
    if (!(zs = calloc(1, sizeof(*zs))))
        return NULL;
    if (deflateInit2(zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(zs);
        return NULL;
    }
    return zs;
}

static void zstream_put(z_stream *zs, int level)
{
    if (deflateReset(zs) == Z_OK) {
        pthread_mutex_lock(&zcache_lock);
        if (zcache_count[level] < ENCODE_ZCACHE) {
            zcache[level][zcache_count[level]++] = zs;
            zs = NULL;
        }
        pthread_mutex_unlock(&zcache_lock);
    }
    if (zs) {
        deflateEnd(zs);
        free(zs);
    }
}

/* Deflates one segment (a workpool iteration): raw deflate with the segment before as preset
 * dictionary, ending on a byte boundary (sync flush), or with the final block for the last one.
 * Sets seg->err to ERR_NOMEM or ERR_INTERNAL on failure. */
static void segment_deflate(void *ctx, size_t index)
{
    encoder *enc = ctx;
    struct segment *seg = &enc->slots[index];
    z_stream *zs = zstream_get(enc->level);
    int zerr;

    seg->err = 0;
    seg->out_len = 0;
    if (!zs) {
        seg->err = ERR_NOMEM;
        return;
    }
    /* deflateReset, which the cache does, restores the level's parameters: tune every time. */
    if (enc->format == SPEC_PNG && deflateTune(zs, ENCODE_RGB8_TUNE) != Z_OK) {
        seg->err = ERR_INTERNAL;
        goto done;
    }
    seg->adler = (uint32_t)adler32(adler32(0, NULL, 0), seg->in, (uInt)seg->in_len);
    if (seg->dict_len > 0 &&
        deflateSetDictionary(zs, seg->dict, (uInt)seg->dict_len) != Z_OK) {
        seg->err = ERR_INTERNAL;
        goto done;
    }
    zs->next_in = seg->in;
    zs->avail_in = (uInt)seg->in_len;
    for (;;) {
        if (seg->out_len == seg->out_cap) {
            /* The buffer is sized from deflateBound and normally suffices; grow if not. */
            size_t cap = seg->out_cap + seg->out_cap / 2 + 64;
            uint8_t *p = realloc(seg->out, cap);

            if (!p) {
                seg->err = ERR_NOMEM;
                goto done;
            }
            seg->out = p;
            seg->out_cap = cap;
        }
        zs->next_out = seg->out + seg->out_len;
        zs->avail_out = (uInt)(seg->out_cap - seg->out_len);
        zerr = deflate(zs, seg->last ? Z_FINISH : Z_SYNC_FLUSH);
        seg->out_len = seg->out_cap - zs->avail_out;
        if (zerr == Z_STREAM_END)
            break;
        /* A flush is complete once deflate leaves room in the buffer (Z_BUF_ERROR: nothing
         * left to do). Z_FINISH must end with Z_STREAM_END. */
        if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
            seg->err = ERR_INTERNAL;
            break;
        }
        if (zs->avail_out > 0) {
            if (seg->last)
                seg->err = ERR_INTERNAL;
            break;
        }
    }
done:
    zstream_put(zs, enc->level);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes one PNG chunk: length, type, the concatenation of `pre`, `data` and `post`, CRC. */
static int chunk_write(encoder *enc, const char *type, const uint8_t *pre, size_t pre_len,
                       const uint8_t *data, size_t len, const uint8_t *post, size_t post_len)
{
    uint8_t head[8], crc[4];
    uLong c = crc32(0, (const Bytef *)type, 4);
    int err;

    put_be32(head, (uint32_t)(pre_len + len + post_len));
    memcpy(head + 4, type, 4);
    c = crc32(c, pre, (uInt)pre_len);
    c = crc32(c, data, (uInt)len);
    c = crc32(c, post, (uInt)post_len);
    put_be32(crc, (uint32_t)c);
    if ((err = out_append(enc, head, 8)) < 0 || (err = out_append(enc, pre, pre_len)) < 0 ||
        (err = out_append(enc, data, len)) < 0 || (err = out_append(enc, post, post_len)) < 0 ||
        (err = out_append(enc, crc, 4)) < 0)
        return err;
    return 0;
}

/* Deflates the complete segments waiting in the slots on the pool's threads and emits them, in
 * order, one IDAT chunk each (the first after the zlib header, the last with the Adler-32).
 * Returns 0, the sink's error, ERR_NOMEM or ERR_INTERNAL. */
static int segments_flush(encoder *enc)
{
    uint32_t n = enc->nslots_full;
    int err;

    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        struct segment *seg = &enc->slots[i];

        seg->dict = i == 0 ? enc->dict : enc->slots[i - 1].in;
        seg->dict_len = i == 0 ? enc->dict_len : enc->slots[i - 1].in_len;
        if (i > 0 && seg->dict_len > ENCODE_DICT_BYTES) {
            seg->dict += seg->dict_len - ENCODE_DICT_BYTES;
            seg->dict_len = ENCODE_DICT_BYTES;
        }
        seg->last = enc->seg_done + i + 1 == enc->seg_total;
    }
    workpool_run(enc->pool, n, segment_deflate, enc);

    for (uint32_t i = 0; i < n; i++) {
        struct segment *seg = &enc->slots[i];
        /* zlib header: deflate, 32 KiB window, no preset dictionary, FLEVEL of the level. */
        const uint8_t zhead[2] = {0x78, enc->level >= 2 ? 0x5e : 0x01};
        uint8_t ztail[4];
        int first = enc->seg_done == 0;

        if (seg->err < 0)
            return seg->err;
        enc->adler = (uint32_t)adler32_combine(enc->adler, seg->adler, (z_off_t)seg->in_len);
        put_be32(ztail, enc->adler);
        if ((err = chunk_write(enc, "IDAT", zhead, first ? 2 : 0, seg->out, seg->out_len, ztail,
                               seg->last ? 4 : 0)) < 0)
            return err;
        enc->seg_done++;
    }

    /* The next pass starts from the tail of the last segment; the slot being filled moves to the
     * front. */
    struct segment *lastseg = &enc->slots[n - 1];
    enc->dict_len = lastseg->in_len < ENCODE_DICT_BYTES ? lastseg->in_len : ENCODE_DICT_BYTES;
    memcpy(enc->dict, lastseg->in + lastseg->in_len - enc->dict_len, enc->dict_len);
    if (n < ENCODE_WAVE) {
        struct segment tmp = enc->slots[0];

        enc->slots[0] = enc->slots[n];
        enc->slots[n] = tmp;
    }
    enc->nslots_full = 0;
    return 0;
}

/* Filters one row into a scanline: RGB8 unfiltered; grey16 big-endian with the SUB filter (the
 * byte two to the left subtracted), the choices measured above. */
static void row_filter(const encoder *enc, uint8_t *dst, const uint8_t *src)
{
    if (enc->format == SPEC_PNG) {
        dst[0] = FILTER_NONE;
        memcpy(dst + 1, src, enc->line_len - 1);
    } else {
        uint8_t prev_hi = 0, prev_lo = 0;

        dst[0] = FILTER_SUB;
        dst++;
        for (uint32_t x = 0; x < enc->width; x++) {
            uint16_t v;

            memcpy(&v, src + 2 * (size_t)x, 2);
            uint8_t hi = (uint8_t)(v >> 8), lo = (uint8_t)v;
            dst[2 * (size_t)x] = (uint8_t)(hi - prev_hi);
            dst[2 * (size_t)x + 1] = (uint8_t)(lo - prev_lo);
            prev_hi = hi;
            prev_lo = lo;
        }
    }
}

/* Rows of segment k. */
static uint32_t segment_rows(const encoder *enc, uint32_t k)
{
    uint32_t start = k * enc->seg_rows;

    return enc->height - start < enc->seg_rows ? enc->height - start : enc->seg_rows;
}

/* Makes sure slot i has its buffers. Returns 0 or ERR_NOMEM. */
static int slot_alloc(encoder *enc, uint32_t i)
{
    struct segment *seg = &enc->slots[i];
    size_t in_cap = (size_t)enc->seg_rows * enc->line_len;

    if (seg->in)
        return 0;
    /* Room for stored blocks (5 bytes per 16 KiB or so) and the flush marker. */
    seg->out_cap = in_cap + in_cap / 1000 + 5 * (in_cap / 16384 + 1) + 64;
    if (!(seg->in = malloc(in_cap)) || !(seg->out = malloc(seg->out_cap)))
        return ERR_NOMEM;
    return 0;
}

static int png_rows(encoder *enc, const uint8_t *pixels, uint32_t rows)
{
    int err;

    while (rows > 0) {
        uint32_t k = enc->seg_done + enc->nslots_full;
        uint32_t want = segment_rows(enc, k) - enc->rows_in_slot;
        uint32_t n = rows < want ? rows : want;
        struct segment *seg = &enc->slots[enc->nslots_full];

        if ((err = slot_alloc(enc, enc->nslots_full)) < 0)
            return err;
        for (uint32_t r = 0; r < n; r++)
            row_filter(enc, seg->in + (size_t)(enc->rows_in_slot + r) * enc->line_len,
                       pixels + (size_t)r * enc->row_bytes);
        enc->rows_in_slot += n;
        enc->rows_done += n;
        pixels += (size_t)n * enc->row_bytes;
        rows -= n;
        if (enc->rows_in_slot == segment_rows(enc, k)) {
            seg->in_len = (size_t)enc->rows_in_slot * enc->line_len;
            enc->rows_in_slot = 0;
            if (++enc->nslots_full == ENCODE_WAVE && (err = segments_flush(enc)) < 0)
                return err;
        }
    }
    /* What is complete goes out now, so a streaming reply keeps pace with the bands. */
    return segments_flush(enc);
}

static int png_finish(encoder *enc)
{
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};

    return out_append(enc, iend, sizeof(iend));
}

/* Sets the segment layout of a PNG encoder and allocates what it needs besides the slot buffers.
 * Returns 0 or ERR_NOMEM. */
static int png_layout(encoder *enc)
{
    size_t total;
    uint64_t rows;

    enc->is_png = 1;
    enc->level = enc->format == SPEC_PNG16 ? ENCODE_GREY16_LEVEL : ENCODE_RGB8_LEVEL;
    enc->line_len = enc->row_bytes + 1;
    total = enc->line_len * enc->height;
    rows = (ENCODE_SEG_BYTES + enc->line_len - 1) / enc->line_len;
    if (total >= ENCODE_SEG_SPLIT_MIN) {
        uint64_t split = (enc->height + ENCODE_SEG_MIN_COUNT - 1) / ENCODE_SEG_MIN_COUNT;
        if (split < rows)
            rows = split;
    }
    if (rows < 1)
        rows = 1;
    if (rows > enc->height)
        rows = enc->height;
    enc->seg_rows = (uint32_t)rows;
    enc->seg_total = (uint32_t)((enc->height + rows - 1) / rows);
    enc->adler = (uint32_t)adler32(0, NULL, 0);
    enc->pool = workpool_shared();
    if (!(enc->slots = calloc(ENCODE_WAVE, sizeof(*enc->slots))) ||
        !(enc->dict = malloc(ENCODE_DICT_BYTES)))
        return ERR_NOMEM;
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
        /* libpng's part ends with the header chunks. */
        png_destroy_write_struct(&enc->png, &enc->info);
        if ((err = png_layout(enc)) < 0)
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

    if (enc->is_png)
        err = png_rows(enc, pixels, rows);
    else
        err = raw_rows(enc, pixels, rows);
    /* Everything produced so far goes to the sink now, so a streaming reply keeps pace with the
     * bands (the rows of an incomplete PNG segment wait for the rest of it). */
    if (err == 0)
        err = out_flush(enc);
    if (err < 0)
        enc->err = err;
    return err;
}

void encoder_set_pool(encoder *enc, workpool *pool)
{
    enc->pool = pool;
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

    if (enc->is_png)
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
    if (enc->slots) {
        for (uint32_t i = 0; i < ENCODE_WAVE; i++) {
            free(enc->slots[i].in);
            free(enc->slots[i].out);
        }
    }
    free(enc->slots);
    free(enc->dict);
    free(enc->buf);
    free(enc);
}
