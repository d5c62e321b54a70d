/* encode.h: turns rows of pixels into the bytes of the requested format (PNG, 16-bit PNG, raw),
 * row band by row band, handing the encoded bytes to a sink as they are produced. */
#ifndef FRACTALD_ENCODE_H
#define FRACTALD_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "workpool.h"

typedef struct encoder encoder;

/* Receives encoded bytes in order. Returns 0 to go on, or a negative error code, which aborts the
 * encoding and is returned by the encoder call that was writing. */
typedef int (*encode_sink_fn)(void *ctx, const void *data, size_t len);

/* Keyword of the PNG text chunk carrying the request the image was made from (JSON). */
#define ENCODE_REQUEST_KEYWORD "fractal.v1.RenderRequest"

/* MIME type of a format: "image/png" or "application/octet-stream". Static string. */
const char *encode_content_type(enum spec_format format);

/* Starts encoding an image of width x height pixels in `format`. For the PNG formats,
 * request_json (may be NULL) is stored in a text chunk with keyword ENCODE_REQUEST_KEYWORD,
 * before the image data (tEXt; zTXt from 1 KiB on; iTXt if it holds non-ASCII UTF-8). The raw
 * formats ignore it. The sink is called from inside encoder calls only; the PNG header is held
 * back until the first encoder_write_rows.
 * Returns 0 and the encoder in *out (free with encoder_free), ERR_INVALID (width or height 0,
 * unknown format, no sink), ERR_NOMEM, ERR_INTERNAL, or the sink's error (only for a request
 * text so long that its chunk alone fills the 64 KiB output buffer). */
int encoder_new(encoder **out, enum spec_format format, uint32_t width, uint32_t height,
                const char *request_json, encode_sink_fn sink, void *sink_ctx);

/* Appends `rows` rows. Pixel layout by format: SPEC_PNG 3 bytes RGB; SPEC_PNG16 one native-endian
 * uint16; SPEC_RAW_U32 one native uint32 (escape count); SPEC_RAW_F32 one float (smooth value).
 * Rows are tightly packed. Raw formats are written little-endian whatever the host.
 * When it returns, every byte encoded so far has gone to the sink (the rows of an incomplete PNG
 * segment, at most 128 KiB of image data, wait for the rest of their segment); memory stays
 * bounded whatever the image size and band size.
 * Returns 0, the sink's error, ERR_NOMEM, ERR_INVALID (more rows than the image has, or after
 * encoder_finish; nothing is written) or ERR_INTERNAL. After the sink's error or ERR_INTERNAL
 * the encoder is dead: every later call returns that error again. */
int encoder_write_rows(encoder *enc, const void *pixels, uint32_t rows);

/* Sets the pool whose threads deflate the PNG image data, in segments cut at fixed rows (the
 * default is workpool_shared(); NULL deflates on the calling thread alone). The bytes do not
 * depend on it. Call before the first encoder_write_rows; the raw formats ignore it. */
void encoder_set_pool(encoder *enc, workpool *pool);

/* Ends the image (all rows must have been written) and flushes the last bytes to the sink.
 * Returns 0, the sink's error, ERR_NOMEM, ERR_INVALID (rows missing; more may still be written) or
 * ERR_INTERNAL. A second call after success returns 0 and writes nothing. */
int encoder_finish(encoder *enc);

/* Frees the encoder, finished or not. Accepts NULL. */
void encoder_free(encoder *enc);

#endif
