/* internal.h: what libfractal's modules share and the public header does not show. */
#ifndef FRACTAL_CLIENT_INTERNAL_H
#define FRACTAL_CLIENT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "fractal/fractal.h"
#include "fractal/v1/fractal.pb-c.h"

#if defined(__GNUC__)
#define FR_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define FR_PRINTF(fmt_index, first_arg)
#endif

/* Keyword of the PNG text chunk fractald stores the request in (the server's ENCODE_REQUEST_KEYWORD). */
#define FR_PNG_REQUEST_KEYWORD "fractal.v1.RenderRequest"

/* Writes a one-line message into buf (buf may be NULL, then nothing is written; a message too long
 * is cut). Returns err, so that a failure is recorded and returned in one statement. */
int fr_errorf(char *buf, size_t len, int err, const char *fmt, ...) FR_PRINTF(4, 5);

/* ---- fractal.c: the client handle and the one place calls are made (retries, cancel). ---- */

/* The RPCs the library makes; index into fractal_client.methods. */
enum fr_method {
    FR_M_RENDER,
    FR_M_RENDER_STREAM,
    FR_M_SUBMIT_JOB,
    FR_M_GET_JOB,
    FR_M_FETCH_JOB_RESULT,
    FR_M_CANCEL_JOB,
    FR_M_LIST_JOBS,
    FR_M_LIST_DEVICES,
    FR_M_GET_STATS,
    FR_M_HEALTH_CHECK,
    FR_M_COUNT
};

/* The client's error buffer (fractal_client is opaque outside fractal.c) and its size. */
#define FR_ERROR_MAX 512
char *fr_client_errbuf(fractal_client *c);

/* Records a one-line message on the client and returns err. */
#define client_error(client, err, ...) fr_errorf(fr_client_errbuf(client), FR_ERROR_MAX, (err), __VA_ARGS__)

/* The one place a gRPC status code (google.rpc.Code) becomes a library code. */
int fr_error_from_status(int status);

/* Makes one unary call of `method`: packs req, sends it with the handle's deadline, checks the
 * status and unpacks the reply as resp_desc into *out (caller frees with
 * protobuf_c_message_free_unpacked). When `retry` is nonzero the call is repeated as the header's
 * "Retries" paragraph says. Returns 0, FRACTAL_ENOMEM, FRACTAL_EINTERNAL (gRPC refused to start
 * the call), FRACTAL_EPROTOCOL, FRACTAL_ECANCELLED, or the code of the server's status; the
 * message goes to the handle. */
int fr_call_unary(ProtobufCMessage **out, fractal_client *c, enum fr_method method,
                  const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc, int retry);

/* Receives the events of a server stream. `event` gets each decoded RenderEvent (borrowed: it is
 * freed after the call unless the handler sets *keep, then the handler owns it) and returns 0 or a
 * FRACTAL_E* code with a message on the client, which cancels the call. `committed` tells the
 * retry loop that data has been handed on and the call may no longer be repeated. `reset` (may be
 * NULL) is called before each attempt after the first; `finish` after a stream that ended with
 * status OK, to check that it was whole. */
typedef struct fr_stream_handler {
    int (*event)(void *ctx, Fractal__V1__RenderEvent *ev, int *keep);
    void (*reset)(void *ctx);
    int (*finish)(void *ctx);
    void *ctx;
    int committed;
} fr_stream_handler;

/* Makes one server-streaming call of `method` with req, feeding the events to h, with the handle's
 * deadline over the whole stream, and retries (when `retry` is nonzero) until h->committed is
 * set. Returns 0 or a FRACTAL_E* code, message on the handle. */
int fr_call_stream(fractal_client *c, enum fr_method method, const ProtobufCMessage *req,
                   fr_stream_handler *h, int retry);

/* A public call that spans several RPCs (fractal_job_wait) brackets them with these, so that
 * fractal_client_cancel reaches the waits between them. They nest. */
void fr_op_begin(fractal_client *c);
void fr_op_end(fractal_client *c);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait on a condition
 * variable set to that clock. */
struct timespec;
void fr_monotonic_after(struct timespec *out, uint32_t ms);

/* Sleeps up to ms milliseconds inside an op; returns 0, or FRACTAL_ECANCELLED (message set) when
 * fractal_client_cancel woke it. */
int fr_sleep(fractal_client *c, uint32_t ms);


/* Fills the public stats from the wire's; the strings stay borrowed from st. */
void fr_stats_from_wire(fractal_render_stats *out, const Fractal__V1__RenderStats *st);

/* Atomic files: creates a new temporary file beside path (same directory, so the final rename is
 * atomic); *tmp_out (caller frees) is its name. Then fr_tmpfile_commit flushes, closes and renames
 * it over path; fr_tmpfile_abort closes and removes it. Both free tmp. Return 0 or FRACTAL_EIO /
 * FRACTAL_ENOMEM with a message in err. */
int fr_tmpfile_open(int *fd_out, char **tmp_out, const char *path, char *err, size_t errlen);
int fr_tmpfile_commit(int fd, char *tmp, const char *path, char *err, size_t errlen);
void fr_tmpfile_abort(int fd, char *tmp);

/* Writes all of buf to fd, going on after short writes and EINTR. Returns 0 or -1 (errno set). */
int fr_write_all(int fd, const unsigned char *buf, size_t len);

/* ---- target.c: which servers a target names. ---- */

/* Addresses of servers, each "a.b.c.d:port" or "[v6]:port", all of one family. authority[i] is
 * the "host:port" the address was resolved from when that was a name (the name TLS checks the
 * server's certificate against, and the :authority calls carry), NULL for a numeric entry. */
typedef struct fr_addrs {
    char **addr;
    char **authority;
    size_t count;
    int v6;
} fr_addrs;

/* The gRPC target of a client's channel: a comma-separated host:port list becomes an ipv4: (or
 * ipv6:) address list, names resolved now; anything else is kept as it is. *authority gets the
 * first entry of such a list when it is a name (caller frees; NULL otherwise), for
 * GRPC_ARG_DEFAULT_AUTHORITY: without it TLS would check every server's certificate against an
 * IP address. The servers of a fleet share the name their certificates carry. *balanced says whether
 * the target names several servers (such a list, an address list with a comma, or a dns: target),
 * which fractal_client_new then balances round-robin. *out is the caller's to free. Returns 0,
 * FRACTAL_EINVAL (a malformed entry), FRACTAL_EUNAVAILABLE (a name that does not resolve) or
 * FRACTAL_ENOMEM, with a message in err. */
int fr_target_for_channel(char **out, int *balanced, char **authority, const char *target, char *err,
                          size_t errlen);

/* Every server a target names, one address each: a host:port list or a dns: target resolved now,
 * an ipv4:/ipv6: list split. Other schemes are refused (FRACTAL_EINVAL). Free with fr_addrs_free.
 * Returns as fr_target_for_channel. */
int fr_target_addrs(fr_addrs *out, const char *target, char *err, size_t errlen);

/* fractal_client_new with the channel's authority given (NULL: as fractal_client_new chooses):
 * the fan-out connects to each address of a name, each under that name. */
int fr_client_new(fractal_client **out, const char *target, const char *authority, const fractal_client_options *opts);
void fr_addrs_free(fr_addrs *a);

/* ---- fanout_png.c: PNG bands in, one PNG out (zlib only). ---- */

/* A decoded band: height rows of stride bytes (RGB8, or big-endian grey16), packed. */
typedef struct fr_png_band {
    unsigned char *rows;
    size_t stride;
    uint32_t width, height;
    int grey16;
    char *text;                  /* the request text chunk, when asked for and present; else NULL */
} fr_png_band;

/* Decodes a PNG as fractald writes it (8-bit RGB or 16-bit grey, not interlaced; any filters),
 * checking every CRC, and its request text chunk when want_text. Returns 0, FRACTAL_EPROTOCOL
 * (not such a PNG, or damaged) or FRACTAL_ENOMEM; out is empty on failure. */
int fr_png_decode(fr_png_band *out, const unsigned char *data, size_t size, int want_text);
void fr_png_band_dispose(fr_png_band *b);

/* A PNG encoder streaming to emit (which returns 0 or a FRACTAL_E* code that stops it): begin
 * writes the signature, IHDR and the request text chunk (text may be NULL), rows adds rows in
 * order, end the rest. fractald's filters and levels. Each returns 0, FRACTAL_ENOMEM or emit's
 * code. Free the writer whatever happened. */
typedef struct fr_png_writer fr_png_writer;
int fr_png_begin(fr_png_writer **out, uint32_t width, uint32_t height, int grey16, const char *text,
                 int (*emit)(void *ctx, const unsigned char *data, size_t len), void *ctx);
int fr_png_rows(fr_png_writer *w, const unsigned char *rows, uint32_t n);
int fr_png_end(fr_png_writer *w);
void fr_png_writer_free(fr_png_writer *w);

/* ---- options.c: fractal_render_options <-> fractal.v1.RenderRequest, in one place. ---- */

/* A RenderRequest with every sub-message it points to embedded, so that building one from options
 * allocates nothing. Large (stops): keep it on the heap. */
typedef struct opts_wire {
    Fractal__V1__RenderRequest req;
    Fractal__V1__Julia julia;
    Fractal__V1__Mandelbrot mandelbrot;
    Fractal__V1__Complex julia_c;
    Fractal__V1__View view;
    Fractal__V1__Complex center;
    Fractal__V1__Coloring coloring;
    Fractal__V1__ColorStop stops[FRACTAL_STOPS_MAX];
    Fractal__V1__Color stop_colors[FRACTAL_STOPS_MAX];
    Fractal__V1__ColorStop *stop_ptrs[FRACTAL_STOPS_MAX];
    Fractal__V1__Color interior;
    Fractal__V1__Region region;
} opts_wire;

/* Checks what the library itself must refuse in render options: the version, strings without their
 * NUL, n_stops over capacity. Values the server validates are not looked at. Returns 0 or
 * FRACTAL_EINVAL with a message in err. */
int opts_check(const fractal_render_options *opts, char *err, size_t errlen);

/* Fills w->req from opts (already passed opts_check). Every field is set explicitly, except the view
 * width when it is 0 (the server's default). w->req points into w and into opts' strings: both must
 * outlive the packing of w->req. */
void opts_to_request(opts_wire *w, const fractal_render_options *opts);

/* Fills out from a decoded request, starting from the defaults; fields the request leaves unset keep
 * them. Returns 0 or FRACTAL_EFORMAT (a string or the stop list does not fit the fixed arrays). */
int opts_from_request(fractal_render_options *out, const Fractal__V1__RenderRequest *req, char *err,
                      size_t errlen);

/* ---- png_text.c: the text chunks of a PNG file. ---- */

/* Finds the first text chunk (tEXt, zTXt or iTXt) with `keyword` in the PNG file at path and
 * returns its text as a NUL-terminated UTF-8 string in *out (caller frees) and its length in
 * *out_len. Latin-1 text (tEXt, zTXt) is converted to UTF-8 unless it already is valid UTF-8.
 * Returns 0, FRACTAL_EIO, FRACTAL_ENOMEM or FRACTAL_EFORMAT (not a PNG, bad CRC, truncated,
 * bad compression, keyword not found), with a message in err. */
int pngtext_find(char **out, size_t *out_len, const char *path, const char *keyword, char *err,
                 size_t errlen);

#endif
