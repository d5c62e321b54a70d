/* png_text.c: reads text chunks (tEXt, zTXt, iTXt) out of a PNG file by walking its chunks by hand:
 * signature, then length / type / data / CRC, until IEND. Nothing else of the PNG is decoded. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* fseeko */
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <zlib.h>

#include "internal.h"

/* Text longer than this, compressed or not, is refused: a stored request is a few KiB at most, and
 * the cap keeps a hostile zTXt from inflating without bound. */
#define TEXT_MAX ((size_t)16 << 20)

/* Keywords are 1..79 bytes plus their NUL (PNG 1.2, 11.3.4.3). */
#define KEYWORD_MAX 80

static const unsigned char png_signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads exactly n bytes. Returns 0, or FRACTAL_EIO / FRACTAL_EFORMAT (end of file) with a message. */
static int read_exact(FILE *f, void *buf, size_t n, const char *path, char *err, size_t errlen)
{
    if (fread(buf, 1, n, f) == n)
        return 0;
    if (ferror(f))
        return fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
    return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: truncated PNG file", path);
}

/* Inflates a zlib stream into a new NUL-terminated buffer of at most TEXT_MAX bytes. */
static int inflate_text(char **out, size_t *out_len, const unsigned char *in, size_t in_len,
                        const char *path, char *err, size_t errlen)
{
    z_stream zs;
    char *buf = NULL, *grown;
    size_t cap = in_len * 4 + 256, len = 0;
    int zerr, err_code = 0, inited = 0;

    *out = NULL;
    memset(&zs, 0, sizeof zs);
    if (in_len > UINT32_MAX) /* z_stream counts in uInt */
        return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: compressed text too large", path);
    if (inflateInit(&zs) != Z_OK) {
        err_code = fr_errorf(err, errlen, FRACTAL_ENOMEM, "zlib: cannot initialise inflate");
        goto done;
    }
    inited = 1;
    zs.next_in = (Bytef *)(uintptr_t)in; /* zlib's API is not const-correct; it does not write */
    zs.avail_in = (uInt)in_len;
    for (;;) {
        if (cap > TEXT_MAX + 1)
            cap = TEXT_MAX + 1;
        if ((grown = realloc(buf, cap)) == NULL) {
            err_code = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory inflating text");
            goto done;
        }
        buf = grown;
        zs.next_out = (Bytef *)buf + len;
        zs.avail_out = (uInt)(cap - 1 - len); /* keep one byte for the NUL */
        zerr = inflate(&zs, Z_NO_FLUSH);
        len = (size_t)((char *)zs.next_out - buf);
        if (zerr == Z_STREAM_END)
            break;
        if (zerr == Z_BUF_ERROR && zs.avail_in == 0) {
            err_code = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: compressed text is truncated", path);
            goto done;
        }
        if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
            err_code = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: bad compressed text: %s", path,
                                 zs.msg ? zs.msg : "zlib error");
            goto done;
        }
        if (len == cap - 1) {
            if (cap == TEXT_MAX + 1) {
                err_code = fr_errorf(err, errlen, FRACTAL_EFORMAT,
                                     "%s: text chunk inflates past %zu bytes", path, TEXT_MAX);
                goto done;
            }
            cap *= 2;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
done:
    if (inited)
        inflateEnd(&zs);
    free(buf);
    return err_code;
}

static int is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0, k, more;
    uint32_t cp;

    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= more)
            return 0;
        for (k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += more + 1;
    }
    return 1;
}

/* Takes ownership of text (len bytes, NUL-terminated). The PNG specification says tEXt and zTXt
 * hold Latin-1, so bytes >= 0x80 become two-byte UTF-8. Text that already is valid UTF-8 is kept as
 * it is: some writers put UTF-8 in tEXt, and Latin-1 that happens to be valid UTF-8 is vanishingly
 * rare in JSON. */
static int latin1_to_utf8(char **text, size_t *len, char *err, size_t errlen)
{
    const unsigned char *in = (const unsigned char *)*text;
    size_t i, extra = 0, j = 0;
    char *out;

    if (is_utf8(in, *len))
        return 0;
    for (i = 0; i < *len; i++)
        extra += in[i] >= 0x80;
    if ((out = malloc(*len + extra + 1)) == NULL)
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory converting text");
    for (i = 0; i < *len; i++) {
        if (in[i] < 0x80) {
            out[j++] = (char)in[i];
        } else {
            out[j++] = (char)(0xc0 | in[i] >> 6);
            out[j++] = (char)(0x80 | (in[i] & 0x3f));
        }
    }
    out[j] = '\0';
    free(*text);
    *text = out;
    *len = j;
    return 0;
}

/* Copies n bytes into a new NUL-terminated buffer. */
static int copy_text(char **out, size_t *out_len, const unsigned char *p, size_t n, char *err,
                     size_t errlen)
{
    if ((*out = malloc(n + 1)) == NULL)
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory reading text");
    memcpy(*out, p, n);
    (*out)[n] = '\0';
    *out_len = n;
    return 0;
}

/* Extracts the text of a whole text chunk whose keyword (kw_len bytes + NUL) already matched. */
static int chunk_text(char **out, size_t *out_len, const char *type, const unsigned char *data,
                      size_t len, size_t kw_len, const char *path, char *err, size_t errlen)
{
    const unsigned char *p = data + kw_len + 1, *end = data + len, *nul;
    int compressed, e;

    if (memcmp(type, "tEXt", 4) == 0) {
        if ((e = copy_text(out, out_len, p, (size_t)(end - p), err, errlen)) < 0)
            return e;
        return latin1_to_utf8(out, out_len, err, errlen);
    }
    if (memcmp(type, "zTXt", 4) == 0) {
        if (p >= end || *p != 0)
            return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: zTXt chunk with unknown compression", path);
        p++;
        if ((e = inflate_text(out, out_len, p, (size_t)(end - p), path, err, errlen)) < 0)
            return e;
        return latin1_to_utf8(out, out_len, err, errlen);
    }
    /* iTXt: compression flag, method, language tag NUL, translated keyword NUL, UTF-8 text. */
    if (end - p < 2)
        return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: truncated iTXt chunk", path);
    compressed = p[0];
    if (compressed > 1 || (compressed && p[1] != 0))
        return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: iTXt chunk with unknown compression", path);
    p += 2;
    for (e = 0; e < 2; e++) {
        if ((nul = memchr(p, 0, (size_t)(end - p))) == NULL)
            return fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: malformed iTXt chunk", path);
        p = nul + 1;
    }
    if (compressed)
        return inflate_text(out, out_len, p, (size_t)(end - p), path, err, errlen);
    return copy_text(out, out_len, p, (size_t)(end - p), err, errlen);
}

int pngtext_find(char **out, size_t *out_len, const char *path, const char *keyword, char *err,
                 size_t errlen)
{
    FILE *f = NULL;
    unsigned char head[8], crc_buf[4], *data = NULL;
    size_t kw_len = strlen(keyword), prefix;
    uint32_t len;
    int e = 0, is_text, first = 1;
    char type[5] = { 0 };

    *out = NULL;
    *out_len = 0;
    if ((f = fopen(path, "rb")) == NULL) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (fread(head, 1, 8, f) != 8 || memcmp(head, png_signature, 8) != 0) {
        e = ferror(f) ? fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno))
                      : fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: not a PNG file", path);
        goto done;
    }
    for (;;) {
        if ((e = read_exact(f, head, 8, path, err, errlen)) < 0)
            goto done;
        len = be32(head);
        memcpy(type, head + 4, 4);
        if (len > 0x7fffffffu) {
            e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: chunk %s has a bad length", path, type);
            goto done;
        }
        if (first && memcmp(type, "IHDR", 4) != 0) {
            e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: PNG does not start with IHDR", path);
            goto done;
        }
        first = 0;
        if (memcmp(type, "IEND", 4) == 0)
            break;
        is_text = memcmp(type, "tEXt", 4) == 0 || memcmp(type, "zTXt", 4) == 0 ||
                  memcmp(type, "iTXt", 4) == 0;
        if (is_text && len > kw_len) {
            /* Read just enough to compare the keyword, so that large foreign chunks are skipped. */
            prefix = kw_len + 1;
            if ((data = malloc(len > TEXT_MAX ? prefix : len)) == NULL) {
                e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory reading %s", path);
                goto done;
            }
            if ((e = read_exact(f, data, prefix, path, err, errlen)) < 0)
                goto done;
            if (memcmp(data, keyword, kw_len) == 0 && data[kw_len] == 0) {
                uLong crc;
                if (len > TEXT_MAX) {
                    e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: %s chunk too large (%lu bytes)",
                                  path, type, (unsigned long)len);
                    goto done;
                }
                if ((e = read_exact(f, data + prefix, len - prefix, path, err, errlen)) < 0 ||
                    (e = read_exact(f, crc_buf, 4, path, err, errlen)) < 0)
                    goto done;
                crc = crc32(0L, (const Bytef *)type, 4);
                crc = crc32(crc, data, (uInt)len);
                if (crc != be32(crc_buf)) {
                    e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: %s chunk has a bad CRC", path, type);
                    goto done;
                }
                e = chunk_text(out, out_len, type, data, len, kw_len, path, err, errlen);
                goto done;
            }
            free(data);
            data = NULL;
            if (fseeko(f, (off_t)(len - prefix) + 4, SEEK_CUR) != 0) {
                e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
                goto done;
            }
            continue;
        }
        if (fseeko(f, (off_t)len + 4, SEEK_CUR) != 0) {
            e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
            goto done;
        }
    }
    e = fr_errorf(err, errlen, FRACTAL_EFORMAT, "%s: no \"%s\" text chunk (not made by fractald?)",
                  path, keyword);
done:
    free(data);
    if (f)
        fclose(f);
    return e;
}
