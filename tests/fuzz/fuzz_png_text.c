/* fuzz_png_text.c: `fractal render --from FILE.png`: the PNG text-chunk reader (client/png_text.c,
 * pngtext_find) and fractal_render_options_from_png, which decodes the request it finds. A fuzzer
 * rarely gets a CRC-32 right, so the harness rewrites the CRC of every whole chunk before the file
 * is read, except for inputs whose size is 7 modulo 8, which keep their CRCs as they are (and test
 * the CRC check). */
#include <string.h>

#include <zlib.h>

#include "fuzz_util.h"
#include "internal.h"

static struct fuzz_file file;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fuzz_file_init(&file, "image.png") < 0)
        abort();
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Walks the chunks after the 8-byte signature and writes the right CRC into each whole one. */
static void fix_crcs(uint8_t *png, size_t size)
{
    size_t at = 8;

    while (at <= size && size - at >= 12) {
        uint32_t len = be32(png + at);
        uLong crc;

        if (len > size - at - 12)
            break;
        crc = crc32(0L, png + at + 4, (uInt)len + 4);
        png[at + 8 + len] = (uint8_t)(crc >> 24);
        png[at + 9 + len] = (uint8_t)(crc >> 16);
        png[at + 10 + len] = (uint8_t)(crc >> 8);
        png[at + 11 + len] = (uint8_t)crc;
        at += 12 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *png = malloc(size ? size : 1);
    char *text = NULL, err[512];
    size_t len = 0;
    fractal_render_options opts;
    int e;

    if (!png)
        abort();
    memcpy(png, data, size);
    if (size % 8 != 7 && size >= 8)
        fix_crcs(png, size);
    fuzz_file_set(&file, png, size);
    free(png);

    err[0] = '\0';
    e = pngtext_find(&text, &len, file.path, FR_PNG_REQUEST_KEYWORD, err, sizeof(err));
    if (e == 0) {
        FUZZ_CHECK(text != NULL && text[len] == '\0', "the text is not NUL-terminated at its length");
        FUZZ_CHECK(len <= ((size_t)16 << 20), "text of %zu bytes passed the 16 MiB cap", len);
    } else {
        FUZZ_CHECK(text == NULL && len == 0, "a failed read handed out text");
        FUZZ_CHECK(e == FRACTAL_EFORMAT || e == FRACTAL_EIO || e == FRACTAL_ENOMEM, "pngtext_find returned %d", e);
        FUZZ_CHECK(err[0] != '\0', "pngtext_find failed without a message");
    }
    free(text);

    err[0] = '\0';
    e = fractal_render_options_from_png(&opts, file.path, err, sizeof(err));
    FUZZ_CHECK(e == 0 || err[0] != '\0', "fractal_render_options_from_png failed (%d) without a message", e);
    return 0;
}
