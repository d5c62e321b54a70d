/* fractal.h: libfractal, the C client of fractald (the escape-time fractal render server).
 *
 * One header, plain C11, usable from C++. Lifecycle, as in curl's easy interface:
 *
 *     fractal_client *client = NULL;
 *     fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
 *     fractal_image *image = NULL;
 *     int err;
 *
 *     if ((err = fractal_client_new(&client, "127.0.0.1:50051", NULL)) < 0)
 *         return err;                                         (fractal_strerror(err) says why)
 *     opts.width = 1920; opts.height = 1080;
 *     if ((err = fractal_render(&image, client, &opts)) < 0)
 *         fprintf(stderr, "%s\n", fractal_client_last_error(client));
 *     else
 *         use(image->data, image->size);
 *     fractal_image_free(image);
 *     fractal_client_free(client);
 *
 * Conventions (libgit2's):
 * - Functions return 0 on success or a negative FRACTAL_E* code. A failure on a client handle also
 *   leaves a one-line message on that handle (fractal_client_last_error); functions that take no
 *   handle take a caller's buffer for it instead.
 * - A single out-parameter is named `out` and comes first. What comes back through `**out` belongs
 *   to the caller and is released with the matching `_free`, which accepts NULL. On failure `*out`
 *   is set to NULL.
 * - Option structs are transparent, start with `unsigned version` and are initialised with their
 *   `*_INIT` macro (or `*_init` function), then changed field by field.
 * - The library never writes to stdout or stderr.
 *
 * Thread safety: a fractal_client may be used by one thread at a time (it owns one completion queue
 * and one error buffer); use one handle per thread for concurrent calls. The one exception is
 * fractal_client_cancel, which any thread may call at any time to interrupt the handle's call in
 * flight. Different handles, even to the same server, are independent. Results (images, device
 * lists, jobs, stats) are plain data owned by the caller and may be passed between threads.
 * fractal_strerror, fractal_job_state_name and the option initialisers are thread-safe.
 * fractal_render_fanout takes no handle: it makes its own, one per connection, each used by one
 * thread it starts and joins before it returns; its callbacks run on the caller's thread.
 *
 * Retries: calls that are safe to repeat (Render, RenderStream and FetchJobResult until the first
 * image byte has been handed over, GetJob, CancelJob, ListJobs, ListDevices, GetStats, Health) are
 * tried again when the server answers UNAVAILABLE, or RESOURCE_EXHAUSTED with a `retry-after-ms`
 * hint in its trailing metadata (a refusal without the hint, such as a request over the per-request
 * limit, would fail again and is returned at once). The wait is the server's hint when it gives one,
 * else exponential backoff with jitter; never past the call's deadline; at most
 * fractal_client_options.max_attempts attempts in all. SubmitJob is never retried: a lost reply
 * could leave two jobs queued.
 */
#ifndef FRACTAL_FRACTAL_H
#define FRACTAL_FRACTAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define FRACTAL_API __attribute__((visibility("default")))
#else
#define FRACTAL_API
#endif

/* Version of this header (and of the library it came with): FRACTAL_VERSION ("MAJOR.MINOR.PATCH")
 * and FRACTAL_VERSION_MAJOR, _MINOR, _PATCH. The build writes them from the project's version, the
 * one place it is stated (project() in the top-level CMakeLists.txt); installed next to this one. */
#include <fractal/version.h>

/* ---------------------------------------------------------------------------------------------- */
/* Errors                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* Every error code, with its value, the gRPC status code it stands for (-1 for failures found
 * locally) and its text. Server-side codes are -10 - status, one per gRPC status code, so a caller
 * can tell "the server refused" from "the call never happened" by the code alone. */
#define FRACTAL_ERROR_MAP(X)                                                                        \
    X(FRACTAL_EINVAL, -1, -1, "invalid argument to a library call")                                \
    X(FRACTAL_ENOMEM, -2, -1, "out of memory")                                                     \
    X(FRACTAL_EIO, -3, -1, "input/output error")                                                   \
    X(FRACTAL_EPROTOCOL, -4, -1, "malformed reply from the server")                                \
    X(FRACTAL_EFORMAT, -5, -1, "malformed input file")                                             \
    X(FRACTAL_ECANCELLED, -11, 1, "cancelled")                                                     \
    X(FRACTAL_EUNKNOWN, -12, 2, "unknown error")                                                   \
    X(FRACTAL_EINVALID_ARGUMENT, -13, 3, "request refused as invalid")                             \
    X(FRACTAL_EDEADLINE, -14, 4, "deadline exceeded")                                              \
    X(FRACTAL_ENOT_FOUND, -15, 5, "not found")                                                     \
    X(FRACTAL_EALREADY_EXISTS, -16, 6, "already exists")                                           \
    X(FRACTAL_EPERMISSION_DENIED, -17, 7, "permission denied")                                     \
    X(FRACTAL_ERESOURCE_EXHAUSTED, -18, 8, "resource exhausted")                                   \
    X(FRACTAL_EFAILED_PRECONDITION, -19, 9, "failed precondition")                                 \
    X(FRACTAL_EABORTED, -20, 10, "aborted")                                                        \
    X(FRACTAL_EOUT_OF_RANGE, -21, 11, "out of range")                                              \
    X(FRACTAL_EUNIMPLEMENTED, -22, 12, "not implemented by the server")                            \
    X(FRACTAL_EINTERNAL, -23, 13, "internal error")                                                \
    X(FRACTAL_EUNAVAILABLE, -24, 14, "server unavailable")                                         \
    X(FRACTAL_EDATA_LOSS, -25, 15, "data loss")                                                    \
    X(FRACTAL_EUNAUTHENTICATED, -26, 16, "unauthenticated")

/* Return codes. 0 is success; every error is negative. */
typedef enum fractal_error {
    FRACTAL_OK = 0,
#define FRACTAL_ERROR_ENUM_(name, value, grpc_status, text) name = value,
    FRACTAL_ERROR_MAP(FRACTAL_ERROR_ENUM_)
#undef FRACTAL_ERROR_ENUM_
} fractal_error;

/**
 * Short English description of an error code.
 *
 * @param err  a fractal_error value (0 or negative)
 * @return a static string: "success" for 0, "unknown error code" for values not in the table.
 *         Never NULL.
 */
FRACTAL_API const char *fractal_strerror(int err);

/**
 * The gRPC status code (google.rpc.Code) a server-side error code stands for.
 *
 * @param err  a fractal_error value
 * @return 0 for FRACTAL_OK, 1..16 for the server-side codes, -1 for local failures
 *         (FRACTAL_EINVAL, FRACTAL_ENOMEM, FRACTAL_EIO, FRACTAL_EPROTOCOL, FRACTAL_EFORMAT) and for
 *         values not in the table.
 */
FRACTAL_API int fractal_error_grpc_status(int err);

/**
 * The library's version, "MAJOR.MINOR.PATCH". Compare with FRACTAL_VERSION to detect a header and
 * a shared library from different releases.
 *
 * @return a static string, never NULL.
 */
FRACTAL_API const char *fractal_version(void);

/* ---------------------------------------------------------------------------------------------- */
/* Client                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* A connection to one fractald, or to a fleet of them balanced call by call (see
 * fractal_client_new: the target is a gRPC target or a list of servers). */
typedef struct fractal_client fractal_client;

/* How a client spreads its calls over the servers its target names. */
typedef enum fractal_balance {
    /* Round-robin with health checking when the target names several servers (a host:port list,
     * an ipv4:/ipv6: list with a comma, or a dns: target), else pick_first, gRPC's default. */
    FRACTAL_BALANCE_AUTO = 0,
    /* gRPC's pick_first: every call goes to the first address that connects. */
    FRACTAL_BALANCE_PICK_FIRST = 1,
    /* round_robin over every address whose connection is up and whose health service
     * (grpc.health.v1 Watch) says SERVING, even for a single address. */
    FRACTAL_BALANCE_ROUND_ROBIN = 2
} fractal_balance;

/* Version 2 appended the retry fields, version 3 the security fields, version 4 balance.
 * Structs of versions 1 to 3 are still accepted, and get the default retry policy, a plaintext
 * channel without a token and FRACTAL_BALANCE_AUTO for what they lack. */
#define FRACTAL_CLIENT_OPTIONS_VERSION 4

/* Options of fractal_client_new. */
typedef struct fractal_client_options {
    unsigned version;            /* FRACTAL_CLIENT_OPTIONS_VERSION */
    uint32_t deadline_ms;        /* deadline of each call in milliseconds, retries included; 0 = none.
                                    Default 60000. A stream must finish within it too. */
    size_t max_receive_bytes;    /* largest reply message accepted, 1..INT_MAX. Default 256 MiB */
    /* Since version 2. For each, 0 means the default. */
    unsigned max_attempts;       /* attempts of a retryable call, the first included; 1 = never
                                    retry. Default 4 */
    uint32_t retry_initial_ms;   /* first backoff when the server gives no hint; doubled per attempt,
                                    with jitter. Default 100 */
    uint32_t retry_max_ms;       /* cap on one wait, the server's hint included. Default 30000 */
    /* Since version 3. Paths and the token are read (copied) by fractal_client_new; the caller
     * keeps ownership. NULL (or "") for each means not set. */
    int tls;                     /* nonzero: TLS, verifying the server against the system's CAs
                                    unless ca_file is set. Default 0 (plaintext) */
    const char *ca_file;         /* PEM CAs the server's certificate must chain to; implies TLS */
    const char *cert_file;       /* PEM client certificate chain, for servers that require one
                                    (mutual TLS); needs key_file and TLS */
    const char *key_file;        /* PEM private key of cert_file */
    const char *token;           /* bearer token, sent as "authorization: Bearer TOKEN" with every
                                    call: 1..512 characters of A-Z a-z 0-9 - . _ ~ + / (then '=').
                                    Without TLS it crosses the network in the clear */
    /* Since version 4. */
    int balance;                 /* a fractal_balance; default FRACTAL_BALANCE_AUTO */
} fractal_client_options;

#define FRACTAL_CLIENT_OPTIONS_INIT                                                                 \
    { FRACTAL_CLIENT_OPTIONS_VERSION, 60000u, (size_t)256 << 20, 4u, 100u, 30000u, 0, NULL, NULL, NULL, \
      NULL, 0 }

/**
 * Fills `opts` with the defaults of FRACTAL_CLIENT_OPTIONS_INIT.
 *
 * @param opts     the struct to fill
 * @param version  FRACTAL_CLIENT_OPTIONS_VERSION, or 1, 2 or 3 to fill a struct of that version
 *                 (only its fields are written)
 * @return 0, or FRACTAL_EINVAL if opts is NULL or the version is not supported.
 */
FRACTAL_API int fractal_client_options_init(fractal_client_options *opts, unsigned version);

/**
 * Creates a client for the server at `target`. No connection is made yet: the first call connects,
 * so an unreachable server shows up there (FRACTAL_EUNAVAILABLE), not here. Calls fail fast when
 * the server cannot be reached: they do not wait for it to come up beyond the few retries described
 * under "Retries" at the top of this header.
 *
 * A fleet: a target that names several servers ("h1:p,h2:p", "ipv4:10.0.0.1:p,10.0.0.2:p",
 * "dns:///fleet.example:p") gets one channel that balances round-robin (opts->balance) with
 * client-side health checking: each call goes to the next server that is connected and SERVING,
 * a server that dies or drains (answers NOT_SERVING) leaves the rotation until it is back, and a
 * retried call (see "Retries") is a new pick, so it lands on another server. A call already on a
 * server that dies fails UNAVAILABLE, and is retried when it is one of the retryable calls.
 * Names in a host:port list are resolved here, once (every address of each, IPv4 when any name
 * has one, else IPv6); a dns: target is resolved by gRPC, again whenever connections fail.
 *
 * @param out     receives the new client; free it with fractal_client_free. NULL on failure.
 * @param target  a gRPC target: "host:port", "ipv4:127.0.0.1:50051", "dns:///name:port",
 *                "unix:/path", or a comma-separated list of host:port ("[v6]:port" for IPv6
 *                addresses). Copied; the caller keeps ownership.
 * @param opts    options, or NULL for FRACTAL_CLIENT_OPTIONS_INIT. Copied.
 * @return 0; FRACTAL_EINVAL if out or target is NULL, target is empty or a list entry is not
 *         host:port, or an option is out of
 *         range or of an unsupported version (a token with characters outside its set, cert_file
 *         without key_file or the other way round); FRACTAL_EUNAVAILABLE if a name of a host:port
 *         list does not resolve; FRACTAL_EIO if ca_file, cert_file or key_file
 *         cannot be read or holds no PEM; FRACTAL_ENOMEM. No handle exists on failure, so use
 *         fractal_strerror for the message. A certificate the server refuses, or a server
 *         certificate that does not verify (wrong CA, expired, another name), shows up on the
 *         first call as FRACTAL_EUNAVAILABLE.
 */
FRACTAL_API int fractal_client_new(fractal_client **out, const char *target,
                                   const fractal_client_options *opts);

/**
 * Closes the client's channel and frees it. Must not be called while another thread uses the
 * client. Accepts NULL.
 */
FRACTAL_API void fractal_client_free(fractal_client *client);

/**
 * The one-line message of the last failed call on this client: the server's status message when
 * the server refused, or a local description. Calls that succeed leave it unchanged.
 *
 * @param client  the client, or NULL
 * @return a string borrowed from the client, valid until the next call on it or its free; "" when
 *         no call has failed yet or client is NULL. Never NULL.
 */
FRACTAL_API const char *fractal_client_last_error(const fractal_client *client);

/**
 * Interrupts the call in flight on `client`, from any thread (a signal-watching thread, a UI
 * thread). The interrupted call, a retry wait or fractal_job_wait's polling included, returns
 * FRACTAL_ECANCELLED soon after, with everything it had started cleaned up (a file being streamed
 * is not created). When the client has no call in flight, nothing happens: a cancel does not carry
 * over to the next call. Safe to call concurrently with any call on the client except
 * fractal_client_free.
 *
 * @param client  the client, or NULL (nothing happens)
 */
FRACTAL_API void fractal_client_cancel(fractal_client *client);

/* ---------------------------------------------------------------------------------------------- */
/* Render                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* Which set is drawn. */
typedef enum fractal_kind {
    FRACTAL_KIND_JULIA = 0,      /* z0 = pixel, c = julia_c */
    FRACTAL_KIND_MANDELBROT = 1  /* z0 = 0, c = pixel */
} fractal_kind;

/* Arithmetic of the iteration; values as in the proto's Precision. */
typedef enum fractal_precision {
    FRACTAL_PRECISION_AUTO = 0,  /* the cheapest of the others that resolves the view */
    FRACTAL_PRECISION_FP32 = 1,
    FRACTAL_PRECISION_FP64 = 2,
    FRACTAL_PRECISION_PERTURB = 3,          /* deep zoom: perturbation, fp64 offsets (CPU only) */
    FRACTAL_PRECISION_PERTURB_EXTENDED = 4  /* deep zoom: perturbation, extended exponent */
} fractal_precision;

/* Encoding of the image; values as in the proto's Format. */
typedef enum fractal_format {
    FRACTAL_FORMAT_PNG = 0,      /* 8-bit RGB PNG, coloured by the palette */
    FRACTAL_FORMAT_PNG16 = 1,    /* 16-bit greyscale PNG of the smooth value's palette coordinate */
    FRACTAL_FORMAT_RAW_U32 = 2,  /* escape count per pixel, u32 little-endian, row-major, no header */
    FRACTAL_FORMAT_RAW_F32 = 3   /* smooth value per pixel, f32 little-endian; interior -1 */
} fractal_format;

typedef struct fractal_complex {
    double re;
    double im;
} fractal_complex;

/* An sRGB colour. Channels are 0..255; wider values are sent as they are and refused by the
 * server, exactly like the proto's Color. */
typedef struct fractal_color {
    uint32_t r;
    uint32_t g;
    uint32_t b;
} fractal_color;

/* A colour at a position 0..1 along a custom palette. */
typedef struct fractal_color_stop {
    double position;
    fractal_color color;
} fractal_color_stop;

/* A sub-rectangle of the full image, in full-image pixel coordinates. */
typedef struct fractal_region {
    uint32_t x;
    uint32_t y;
    uint32_t width;
    uint32_t height;
} fractal_region;

/* Version 2 appended rect_fill, version 3 the deep view's text. Version 1 structs (every field
 * up to device) and version 2 structs (up to rect_fill) are still accepted, and render with the
 * server's defaults for what they lack (no rectangle fill, the doubles' view). */
#define FRACTAL_RENDER_OPTIONS_VERSION 3
#define FRACTAL_DECIMAL_MAX 8192    /* size of each *_text field of the options, NUL included */
#define FRACTAL_PALETTE_MAX 64      /* size of fractal_render_options.palette, NUL included */
#define FRACTAL_DEVICE_NAME_MAX 128 /* size of fractal_render_options.device, NUL included */
#define FRACTAL_STOPS_MAX 256       /* capacity of fractal_render_options.stops */

/* What to render: the fields of the proto's RenderRequest, with the server's documented defaults in
 * FRACTAL_RENDER_OPTIONS_INIT. Every field is sent to the server as it is (so an explicit width of 0
 * reaches the server and is refused there with FRACTAL_EINVALID_ARGUMENT), except view_width == 0,
 * which means "the server's default, 2 * width / height". The struct owns no memory: strings are
 * fixed arrays, so it can be copied, filled from JSON or kept on the stack freely. */
typedef struct fractal_render_options {
    unsigned version;               /* FRACTAL_RENDER_OPTIONS_VERSION */
    fractal_kind kind;              /* default FRACTAL_KIND_JULIA */
    fractal_complex julia_c;        /* Julia constant; default -0.8 + 0.156i; unused for Mandelbrot */
    fractal_complex center;         /* centre of the view; default 0 + 0i */
    double view_width;              /* span of the real axis across the full image; 0 = server default */
    uint32_t width;                 /* full image width in pixels; default 600 */
    uint32_t height;                /* full image height in pixels; default 400 */
    uint32_t max_iter;              /* default 256 */
    double escape_radius;           /* default 2 */
    fractal_precision precision;    /* default FRACTAL_PRECISION_AUTO */
    fractal_format format;          /* default FRACTAL_FORMAT_PNG */
    char palette[FRACTAL_PALETTE_MAX]; /* built-in palette name, NUL-terminated; default "inferno" */
    size_t n_stops;                 /* custom palette stops in use, 0..FRACTAL_STOPS_MAX; default 0 */
    fractal_color_stop stops[FRACTAL_STOPS_MAX]; /* custom palette; overrides palette when n_stops > 0 */
    double cycle;                   /* iterations per palette cycle; 0 = the server's default: one
                                     * log-scaled pass, but for views narrower than 1e-10, which
                                     * cycle every 4 sqrt(max_iter) iterations. Default 0 */
    double offset;                  /* palette coordinate shift, 0..1 (cycling only). Default 0 */
    fractal_color interior;         /* colour of points that never escape; default black */
    int reverse;                    /* nonzero: run the palette backwards. Default 0 */
    uint32_t supersample;           /* n x n samples per pixel; default 1 */
    int has_region;                 /* nonzero: render only `region` of the full image. Default 0 */
    fractal_region region;
    char device[FRACTAL_DEVICE_NAME_MAX]; /* "" any, "cpu", "gpu", "opencl" or a device id; default "" */
    /* Since version 2. Nonzero: the server may fill a box whose whole border is interior as
     * interior (Mariani-Silver), which may be wrong on rare pixels. The exact interior shortcuts
     * are always on. Default 0 (every sample computed). */
    int rect_fill;
    /* Since version 3: the view exactly, for deep zooms past what doubles hold (the proto's
     * View.center_re_text, center_im_text, width_text): decimal text such as
     * "-1.749998410993740817490024831624283" or "1.5e-400", NUL-terminated; "" (the default)
     * leaves the double above in charge. Each one set overrides center.re, center.im or
     * view_width. The server checks the syntax and its digit limit (fractald --deep-max-digits). */
    char center_re_text[FRACTAL_DECIMAL_MAX];
    char center_im_text[FRACTAL_DECIMAL_MAX];
    char view_width_text[FRACTAL_DECIMAL_MAX];
} fractal_render_options;

/* Positional, so that it compiles as C and as C++. */
#define FRACTAL_RENDER_OPTIONS_INIT                                                                 \
    { FRACTAL_RENDER_OPTIONS_VERSION, FRACTAL_KIND_JULIA, { -0.8, 0.156 }, { 0.0, 0.0 }, 0.0,        \
      600u, 400u, 256u, 2.0, FRACTAL_PRECISION_AUTO, FRACTAL_FORMAT_PNG, "inferno", 0u,             \
      { { 0.0, { 0u, 0u, 0u } } }, 0.0, 0.0, { 0u, 0u, 0u }, 0, 1u, 0, { 0u, 0u, 0u, 0u }, "", 0,   \
      "", "", "" }

/**
 * Fills `opts` with the defaults of FRACTAL_RENDER_OPTIONS_INIT.
 *
 * @param opts     the struct to fill
 * @param version  FRACTAL_RENDER_OPTIONS_VERSION, or 1 or 2 to fill a struct of that version
 *                 (only its fields are written)
 * @return 0, or FRACTAL_EINVAL if opts is NULL or the version is not supported.
 */
FRACTAL_API int fractal_render_options_init(fractal_render_options *opts, unsigned version);

/* Statistics of one render, as reported by the server. */
typedef struct fractal_render_stats {
    uint64_t iterations;            /* sum of escape counts over all samples */
    uint64_t samples;               /* samples computed (pixels x supersample^2) */
    double queue_ms;
    double compute_ms;
    double encode_ms;
    double total_ms;
    fractal_precision precision;    /* the precision actually used */
    uint32_t tiles;
    size_t n_devices;
    const char *const *devices;     /* ids of the devices that computed tiles (n_devices of them) */
} fractal_render_stats;

/* A rendered image. Every field, and everything it points to, belongs to the image and is freed by
 * fractal_image_free; treat it as read-only. */
typedef struct fractal_image {
    const unsigned char *data;      /* the encoded image (PNG file bytes, or raw samples) */
    size_t size;                    /* bytes in data */
    const char *content_type;       /* "image/png" or "application/octet-stream"; never NULL */
    fractal_format format;
    uint32_t width;                 /* size of the image in data (the region's, if one was asked) */
    uint32_t height;
    fractal_render_stats stats;
} fractal_image;

/**
 * Renders one image with the Render RPC and returns it whole.
 *
 * @param out     receives the image; free it with fractal_image_free. NULL on failure.
 * @param client  the client
 * @param opts    what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT. Not kept after the call.
 * @return 0; FRACTAL_EINVAL (NULL out or client, unsupported version, a string field without its
 *         NUL, n_stops over FRACTAL_STOPS_MAX); FRACTAL_ENOMEM; FRACTAL_EPROTOCOL (reply that does
 *         not decode or whose size does not match); or the server's refusal, among them
 *         FRACTAL_EINVALID_ARGUMENT (a field out of range), FRACTAL_ERESOURCE_EXHAUSTED (over the
 *         server's budget, or an image too large for one reply), FRACTAL_EFAILED_PRECONDITION (a
 *         view too deep for fp64), FRACTAL_EUNAVAILABLE, FRACTAL_EDEADLINE. The message is in
 *         fractal_client_last_error.
 */
FRACTAL_API int fractal_render(fractal_image **out, fractal_client *client,
                               const fractal_render_options *opts);

/**
 * Frees an image and everything it points to. Accepts NULL.
 */
FRACTAL_API void fractal_image_free(fractal_image *image);

/**
 * Writes an image's bytes to a file atomically: into a temporary file next to `path`, flushed to
 * disk, then renamed over `path`. Readers never see a partial file; on failure `path` is untouched
 * and the temporary file is removed.
 *
 * @param image   the image
 * @param path    destination file name
 * @param err     buffer for a one-line message on failure (may be NULL)
 * @param errlen  size of err
 * @return 0; FRACTAL_EINVAL (NULL image or path); FRACTAL_ENOMEM; FRACTAL_EIO.
 */
FRACTAL_API int fractal_image_save(const fractal_image *image, const char *path, char *err,
                                   size_t errlen);

/**
 * Renders one image (as fractal_render) and writes it to `path` (as fractal_image_save).
 *
 * @param client  the client
 * @param opts    what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT
 * @param path    destination file name
 * @return 0, any code of fractal_render, or FRACTAL_EIO when writing fails (path untouched).
 *         The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_render_to_file(fractal_client *client, const fractal_render_options *opts,
                                       const char *path);

/**
 * Reads the request an image was rendered from, out of its PNG text chunk with keyword
 * "fractal.v1.RenderRequest" (tEXt, zTXt or iTXt, as fractald writes it), into render options.
 * Fields the stored request does not set keep the defaults of FRACTAL_RENDER_OPTIONS_INIT.
 * Chunk CRCs are checked. No connection is needed.
 *
 * @param out       receives the options (left at the defaults on failure): a whole struct of this
 *                  header's FRACTAL_RENDER_OPTIONS_VERSION, so a program built against an older
 *                  header must be rebuilt before it calls this one
 * @param png_path  the PNG file
 * @param err       buffer for a one-line message on failure (may be NULL)
 * @param errlen    size of err
 * @return 0; FRACTAL_EINVAL (NULL out or png_path); FRACTAL_ENOMEM; FRACTAL_EIO (cannot open or
 *         read the file); FRACTAL_EFORMAT (not a PNG, damaged, no such chunk, or the stored request
 *         is not valid JSON for a RenderRequest, or does not fit the options' fixed arrays).
 */
FRACTAL_API int fractal_render_options_from_png(fractal_render_options *out, const char *png_path,
                                                char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------------- */
/* Streaming                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

/* Where a stream (or a job) stands. Values the server has not reported yet are 0. */
typedef struct fractal_progress {
    uint32_t rows_done;             /* image rows finished */
    uint32_t rows_total;
    uint64_t samples_done;
    uint64_t samples_total;
    uint32_t queue_position;        /* renders ahead of this one; 0 once it runs */
    uint64_t bytes_received;        /* image bytes received so far (streams only) */
} fractal_progress;

/**
 * Called with each progress report of a stream (and, for streams, after each image chunk, with
 * bytes_received updated). Rows only grow within one attempt; a stream retried before its first
 * image byte starts again from 0.
 *
 * @param progress  where the render stands; borrowed for the duration of the call
 * @param payload   the caller's pointer, as given
 * @return 0 to go on; nonzero to cancel the call, which then returns FRACTAL_ECANCELLED.
 */
typedef int (*fractal_progress_cb)(const fractal_progress *progress, void *payload);

/* One piece of a streamed image. Pieces arrive in order, without gaps: offset is the number of
 * bytes delivered before this one. */
typedef struct fractal_chunk {
    uint64_t offset;                /* byte offset of data in the encoded image */
    const unsigned char *data;      /* size bytes, at most 1 MiB; borrowed for the callback's duration */
    size_t size;
    const char *content_type;       /* "image/png" or "application/octet-stream"; never NULL */
    uint32_t width;                 /* size of the image (the region's, if one was asked) */
    uint32_t height;
} fractal_chunk;

/**
 * Called with each piece of a streamed image, in order.
 *
 * @param chunk    the piece; borrowed for the duration of the call
 * @param payload  the caller's pointer, as given
 * @return 0 to go on; nonzero to cancel the call, which then returns FRACTAL_ECANCELLED.
 */
typedef int (*fractal_write_cb)(const fractal_chunk *chunk, void *payload);

#define FRACTAL_STREAM_CALLBACKS_VERSION 1

/* What a stream calls back. */
typedef struct fractal_stream_callbacks {
    unsigned version;               /* FRACTAL_STREAM_CALLBACKS_VERSION */
    fractal_write_cb write;         /* receives the image; required */
    fractal_progress_cb progress;   /* NULL for none */
    void *payload;                  /* handed to both */
} fractal_stream_callbacks;

#define FRACTAL_STREAM_CALLBACKS_INIT { FRACTAL_STREAM_CALLBACKS_VERSION, NULL, NULL, NULL }

/* What a finished stream delivered: the image's description, without its bytes. Everything
 * belongs to the result and is freed by fractal_stream_result_free; read-only. */
typedef struct fractal_stream_result {
    uint64_t size;                  /* bytes of the encoded image (the sum of the chunks) */
    const char *content_type;       /* never NULL */
    uint32_t width;
    uint32_t height;
    fractal_render_stats stats;     /* from the server's final event */
} fractal_stream_result;

/**
 * Renders one image with the RenderStream RPC, handing it over in pieces as the server encodes
 * rows, so that neither side holds the whole image. The stream is checked as it arrives: chunk
 * offsets must follow on without gaps and the server's final event must come; a raw image must
 * have 4 bytes per pixel. The handle's deadline covers the whole stream.
 *
 * @param out     receives the result (may be NULL when not wanted); free it with
 *                fractal_stream_result_free. NULL on failure.
 * @param client  the client
 * @param opts    what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT. Not kept after the call.
 * @param cbs     the callbacks; cbs->write is required
 * @return 0; FRACTAL_EINVAL (NULL client or cbs, no write callback, unsupported version, bad
 *         options as for fractal_render); FRACTAL_ENOMEM; FRACTAL_EPROTOCOL (a chunk out of order,
 *         no final event, an undecodable message); FRACTAL_ECANCELLED (a callback returned
 *         nonzero, or fractal_client_cancel); or the server's refusal, as for fractal_render.
 *         The message is in fractal_client_last_error. After a failure the bytes already handed
 *         to the write callback are not a whole image.
 */
FRACTAL_API int fractal_render_stream(fractal_stream_result **out, fractal_client *client,
                                      const fractal_render_options *opts,
                                      const fractal_stream_callbacks *cbs);

/**
 * Renders one image with the RenderStream RPC straight into a file: the chunks go to a temporary
 * file next to `path`, which is flushed and renamed over `path` once the whole image has arrived.
 * Memory use does not depend on the image's size. On failure `path` is untouched and the
 * temporary file is removed.
 *
 * @param out       receives the result (may be NULL); free it with fractal_stream_result_free
 * @param client    the client
 * @param opts      what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT
 * @param path      destination file name
 * @param progress  progress callback, or NULL
 * @param payload   handed to progress
 * @return 0, any code of fractal_render_stream, or FRACTAL_EIO when writing fails.
 *         The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_render_stream_to_file(fractal_stream_result **out, fractal_client *client,
                                              const fractal_render_options *opts, const char *path,
                                              fractal_progress_cb progress, void *payload);

/**
 * Frees a stream result. Accepts NULL.
 */
FRACTAL_API void fractal_stream_result_free(fractal_stream_result *result);

/* ---------------------------------------------------------------------------------------------- */
/* Fan-out: one big render over several servers                                                   */
/* ---------------------------------------------------------------------------------------------- */

/* fractal_render_fanout cuts the image (or opts->region) into bands of whole rows, renders each
 * band on one of the servers (the proto's Render with a Region) and hands the image over in order,
 * as one stream: the same bytes as a single server's raw image, and for PNG the same pixels and
 * request text chunk as a single server's PNG (the encoding, and so the file's bytes, may differ:
 * the bands come as PNG and the image is encoded again here).
 *
 * Scheduling: one thread and one fractal_client per connection, `per_server` connections per
 * server; each takes the next band as soon as it is free (work stealing: a fast server does more
 * bands). Bands are written in order through a reorder window of `window` bands: a connection
 * that runs ahead of the first unfinished band waits rather than buffer more, so memory stays
 * near window x band size whatever the image's size.
 * Failures: a band whose server fails (UNAVAILABLE, a timeout, RESOURCE_EXHAUSTED, a cut
 * connection) is sent again, to another server while one is left; a server that fails three
 * bands in a row, or lets one time out, is dropped. The render fails when a band failed `max_resends` times more, when
 * every server is dropped, or at once on a refusal that another server would repeat
 * (INVALID_ARGUMENT and the like). */

#define FRACTAL_FANOUT_OPTIONS_VERSION 1

typedef struct fractal_fanout_options {
    unsigned version;               /* FRACTAL_FANOUT_OPTIONS_VERSION */
    uint32_t band_rows;             /* rows per band; 0 = about 2 MiB of pixels per band, and at
                                       least 4 bands per connection. Default 0 */
    unsigned per_server;            /* bands in flight per server (one connection each), 1..16.
                                       Default 2: one computes while the other's reply travels */
    unsigned window;                /* bands rendered ahead of the one being written, 0 = 2 x the
                                       connections. Default 0 */
    uint32_t band_timeout_ms;       /* a band not back after this long is sent to another server;
                                       0 = the client options' deadline_ms. Default 0 */
    unsigned max_resends;           /* sends of one band after its first. Default 4 */
} fractal_fanout_options;

#define FRACTAL_FANOUT_OPTIONS_INIT { FRACTAL_FANOUT_OPTIONS_VERSION, 0u, 2u, 0u, 0u, 4u }

/* What one server did in a fan-out render. */
typedef struct fractal_fanout_server {
    const char *address;            /* "a.b.c.d:port" or "[v6]:port"; never NULL */
    uint32_t bands;                 /* bands it rendered */
    uint32_t failures;              /* bands it failed (each sent again elsewhere) */
    int dropped;                    /* nonzero: given up after repeated failures */
} fractal_fanout_server;

/* What a finished fan-out render delivered. Everything belongs to the result and is freed by
 * fractal_fanout_result_free; read-only. */
typedef struct fractal_fanout_result {
    uint64_t size;                  /* bytes handed to the write callback (the file's size) */
    const char *content_type;       /* "image/png" or "application/octet-stream"; never NULL */
    uint32_t width;                 /* size of the image (the region's, if one was asked) */
    uint32_t height;
    uint32_t bands;                 /* bands the image was cut into */
    uint32_t resent;                /* bands sent again after a failure */
    uint64_t iterations;            /* sums over the bands of the servers' statistics */
    uint64_t samples;
    double compute_ms;              /* sum over the bands: server time, not wall time */
    size_t n_servers;
    const fractal_fanout_server *servers; /* n_servers entries, in the order of the target */
} fractal_fanout_result;

/**
 * Renders one image over every server `servers` names (see above), handing it to cbs->write in
 * order, in pieces of one band (offset counts the bytes before each); cbs->progress, when set,
 * gets rows_done / rows_total (bands written so far) after each band and about 5 times a second,
 * and cancels the render by returning nonzero, as does a nonzero return of cbs->write.
 *
 * What fan-out cannot split is refused with FRACTAL_EINVAL: deep views (precision perturb or
 * perturb-extended, or any *_text field: each band would choose its own reference orbit) and
 * rect_fill (boxes would follow the band edges). A band the server renders with perturbation
 * under precision auto fails the render with FRACTAL_EFAILED_PRECONDITION for the same reason.
 *
 * @param out      receives the result (may be NULL when not wanted); free it with
 *                 fractal_fanout_result_free. NULL on failure.
 * @param servers  a target naming the servers: a comma-separated host:port list, an ipv4:/ipv6:
 *                 address list, or "dns:///name:port" or "host:port" (every address the name has,
 *                 resolved now). One server works too (its bands go over per_server connections).
 * @param copts    connection options of every server (TLS, token, deadline_ms: the default band
 *                 timeout), or NULL for FRACTAL_CLIENT_OPTIONS_INIT. Retries and balance are the
 *                 fan-out's own: each connection tries a band once.
 * @param opts     what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT. A region is rendered by
 *                 bands of itself.
 * @param fopts    scheduling options, or NULL for FRACTAL_FANOUT_OPTIONS_INIT
 * @param cbs      the callbacks; cbs->write is required
 * @param err      buffer for a one-line message on failure (may be NULL)
 * @param errlen   size of err
 * @return 0; FRACTAL_EINVAL (NULL servers or cbs, no write callback, a version or option out of
 *         range, what fan-out cannot split, a malformed target); FRACTAL_ENOMEM; FRACTAL_ECANCELLED
 *         (a callback returned nonzero); FRACTAL_EPROTOCOL (a band that does not decode); the
 *         error of the last failure when every server is dropped or a band ran out of resends
 *         (FRACTAL_EUNAVAILABLE, FRACTAL_EDEADLINE, ...); or a server's refusal, as for
 *         fractal_render. After a failure the bytes already written are not a whole image.
 */
FRACTAL_API int fractal_render_fanout(fractal_fanout_result **out, const char *servers,
                                      const fractal_client_options *copts,
                                      const fractal_render_options *opts,
                                      const fractal_fanout_options *fopts,
                                      const fractal_stream_callbacks *cbs, char *err, size_t errlen);

/**
 * fractal_render_fanout into a file, atomically: the image goes to a temporary file next to
 * `path`, which is flushed and renamed over `path` once whole; on failure `path` is untouched.
 *
 * @param path      destination file name
 * @param progress  progress callback (as in fractal_render_fanout), or NULL
 * @param payload   handed to progress
 * Other parameters and the return codes are those of fractal_render_fanout, and FRACTAL_EIO
 * when writing fails.
 */
FRACTAL_API int fractal_render_fanout_to_file(fractal_fanout_result **out, const char *servers,
                                              const fractal_client_options *copts,
                                              const fractal_render_options *opts,
                                              const fractal_fanout_options *fopts, const char *path,
                                              fractal_progress_cb progress, void *payload, char *err,
                                              size_t errlen);

/**
 * Frees a fan-out result. Accepts NULL.
 */
FRACTAL_API void fractal_fanout_result_free(fractal_fanout_result *result);

/* ---------------------------------------------------------------------------------------------- */
/* Jobs: submit, poll, fetch                                                                      */
/* ---------------------------------------------------------------------------------------------- */

/* Where a job is; values as in the proto's JobState. */
typedef enum fractal_job_state {
    FRACTAL_JOB_UNSPECIFIED = 0,    /* as a filter: any state */
    FRACTAL_JOB_QUEUED = 1,
    FRACTAL_JOB_RUNNING = 2,
    FRACTAL_JOB_SUCCEEDED = 3,
    FRACTAL_JOB_FAILED = 4,
    FRACTAL_JOB_CANCELLED = 5
} fractal_job_state;

/* A render job as the server reports it (the proto's Job). Everything, strings and the request
 * included, belongs to the job (or to the list holding it) and is freed with it; read-only.
 * Strings are never NULL. Times are Unix milliseconds, 0 when the event has not happened. */
typedef struct fractal_job {
    const char *id;
    fractal_job_state state;
    fractal_progress progress;      /* bytes_received is 0 */
    int has_stats;                  /* nonzero when stats holds the server's figures (finished jobs) */
    fractal_render_stats stats;
    int error;                      /* FAILED jobs: the failure as a FRACTAL_E* code; else 0 */
    const char *error_message;      /* FAILED jobs: the server's one-line message; else "" */
    int64_t created_unix_ms;
    int64_t started_unix_ms;
    int64_t finished_unix_ms;
    int64_t expires_unix_ms;        /* when the result is deleted (SUCCEEDED jobs) */
    uint64_t result_bytes;          /* size of the encoded result */
    const char *content_type;       /* of the result; "" until known */
    uint32_t width;                 /* size of the result image (the region's, if one was asked) */
    uint32_t height;
    /* The request the job renders, when the server sent it and it fits the options' fixed arrays;
     * else NULL. */
    const fractal_render_options *request;
} fractal_job;

/* Jobs of a server, newest first. Everything belongs to the list; read-only. */
typedef struct fractal_job_list {
    size_t count;
    const fractal_job *jobs;        /* count entries */
} fractal_job_list;

/**
 * The lower-case name of a job state: "queued", "running", "succeeded", "failed", "cancelled",
 * "unspecified".
 *
 * @return a static string; "unknown" for values not in the enum. Never NULL.
 */
FRACTAL_API const char *fractal_job_state_name(fractal_job_state state);

/**
 * Whether a job in this state will change no more (succeeded, failed or cancelled).
 *
 * @return 1 or 0.
 */
FRACTAL_API int fractal_job_state_is_final(fractal_job_state state);

/**
 * Queues a render on the server (SubmitJob RPC), which returns at once with the new job. Never
 * retried automatically (see Retries above): on FRACTAL_EUNAVAILABLE or FRACTAL_EDEADLINE the job
 * may or may not exist; fractal_job_list tells.
 *
 * @param out     receives the job (state FRACTAL_JOB_QUEUED, or later); free it with
 *                fractal_job_free. NULL on failure.
 * @param client  the client
 * @param opts    what to render; NULL for FRACTAL_RENDER_OPTIONS_INIT. Not kept after the call.
 * @return 0; FRACTAL_EINVAL; FRACTAL_ENOMEM; FRACTAL_EPROTOCOL; or the server's refusal, among
 *         them FRACTAL_EINVALID_ARGUMENT and FRACTAL_ERESOURCE_EXHAUSTED (queue full or over the
 *         limits). The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_job_submit(fractal_job **out, fractal_client *client,
                                   const fractal_render_options *opts);

/**
 * Gets a job's state, progress, timings, statistics and error (GetJob RPC).
 *
 * @param out     receives the job; free it with fractal_job_free. NULL on failure.
 * @param client  the client
 * @param id      the job's id (copied for the call)
 * @return 0; FRACTAL_EINVAL (NULL out, client or id); FRACTAL_ENOMEM; FRACTAL_EPROTOCOL;
 *         FRACTAL_ENOT_FOUND (no such job, or it has expired); other server refusals.
 *         The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_job_get(fractal_job **out, fractal_client *client, const char *id);

/**
 * Cancels a job (CancelJob RPC): a queued job never runs, a running one stops within the server's
 * bound and frees its devices. Cancelling a finished job changes nothing.
 *
 * @param out     receives the job as it is after the cancel (may be NULL when not wanted); free it
 *                with fractal_job_free
 * @param client  the client
 * @param id      the job's id
 * @return 0; the codes of fractal_job_get. The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_job_cancel(fractal_job **out, fractal_client *client, const char *id);

/**
 * Waits until a job is finished (succeeded, failed or cancelled), polling GetJob: first after
 * 50 ms, then backing off by half each time to one poll every 2 s. Each poll is one call, with the
 * handle's deadline and retries. fractal_client_cancel interrupts the wait.
 *
 * @param out         receives the finished job; free it with fractal_job_free. NULL on failure.
 * @param client      the client
 * @param id          the job's id
 * @param timeout_ms  give up after this long; 0 = wait as long as it takes
 * @param progress    called with the job's progress after each poll, or NULL; nonzero cancels
 * @param payload     handed to progress
 * @return 0 once the job is finished, whatever its state (look at (*out)->state and error);
 *         FRACTAL_EDEADLINE when timeout_ms passed first; FRACTAL_ECANCELLED; the codes of
 *         fractal_job_get. The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_job_wait(fractal_job **out, fractal_client *client, const char *id,
                                 uint32_t timeout_ms, fractal_progress_cb progress, void *payload);

/**
 * Streams a succeeded job's image (FetchJobResult RPC), as fractal_render_stream does.
 *
 * @param out     receives the result (may be NULL); free it with fractal_stream_result_free
 * @param client  the client
 * @param id      the job's id
 * @param cbs     the callbacks; cbs->write is required
 * @return 0; the codes of fractal_render_stream; FRACTAL_ENOT_FOUND (no such job, or its result
 *         expired); FRACTAL_EFAILED_PRECONDITION (the job has not succeeded: the message says its
 *         state). The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_job_fetch(fractal_stream_result **out, fractal_client *client, const char *id,
                                  const fractal_stream_callbacks *cbs);

/**
 * Streams a succeeded job's image into a file, atomically, as fractal_render_stream_to_file does.
 *
 * @param out       receives the result (may be NULL); free it with fractal_stream_result_free
 * @param client    the client
 * @param id        the job's id
 * @param path      destination file name
 * @param progress  progress callback, or NULL
 * @param payload   handed to progress
 * @return 0; the codes of fractal_job_fetch; FRACTAL_EIO. The message is in
 *         fractal_client_last_error.
 */
FRACTAL_API int fractal_job_fetch_to_file(fractal_stream_result **out, fractal_client *client,
                                          const char *id, const char *path,
                                          fractal_progress_cb progress, void *payload);

/**
 * Lists the server's jobs, newest first (ListJobs RPC).
 *
 * @param out     receives the list; free it with fractal_job_list_free. NULL on failure.
 * @param client  the client
 * @param limit   most jobs to return; 0 = the server's default (100)
 * @param state   only jobs in this state; FRACTAL_JOB_UNSPECIFIED for all
 * @return 0; FRACTAL_EINVAL; FRACTAL_ENOMEM; FRACTAL_EPROTOCOL; or the server's refusal.
 *         The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_list_jobs(fractal_job_list **out, fractal_client *client, uint32_t limit,
                                  fractal_job_state state);

/**
 * Frees a job. Accepts NULL.
 */
FRACTAL_API void fractal_job_free(fractal_job *job);

/**
 * Frees a job list. Accepts NULL.
 */
FRACTAL_API void fractal_job_list_free(fractal_job_list *list);

/* ---------------------------------------------------------------------------------------------- */
/* Server statistics                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/* Requests answered by one method with one status. */
typedef struct fractal_method_stats {
    const char *method;             /* e.g. "Render"; never NULL */
    int grpc_status;                /* google.rpc.Code, 0 = OK */
    uint64_t count;
} fractal_method_stats;

/* Work done by one device since the server started. */
typedef struct fractal_device_stats {
    const char *id;                 /* never NULL */
    double busy_ms;
    uint64_t tiles;
    uint64_t iterations;
    double giter_per_s;             /* iterations / busy time */
} fractal_device_stats;

/* The server's counters (the proto's ServerStats). Everything belongs to it; read-only. */
typedef struct fractal_server_stats {
    double uptime_s;
    size_t n_requests;
    const fractal_method_stats *requests;
    uint32_t queue_depth;           /* renders and jobs waiting for a worker */
    uint32_t running;               /* renders and jobs being computed */
    uint32_t jobs_held;             /* jobs in the store, any state */
    size_t n_devices;
    const fractal_device_stats *devices;
    uint64_t spool_bytes;           /* disk used by job results */
    /* The deep-zoom reference cache (the proto's DeepRefStats; 0 from a server without one). */
    uint64_t deep_ref_hits;         /* renders that found their view's reference orbit */
    uint64_t deep_ref_misses;       /* renders that built it */
    uint32_t deep_refs;             /* references held */
    uint64_t deep_ref_bytes;        /* bytes they hold */
} fractal_server_stats;

/**
 * Gets the server's counters (GetStats RPC).
 *
 * @param out     receives the stats; free them with fractal_server_stats_free. NULL on failure.
 * @param client  the client
 * @return 0; FRACTAL_EINVAL; FRACTAL_ENOMEM; FRACTAL_EPROTOCOL; or the server's refusal.
 *         The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_stats_get(fractal_server_stats **out, fractal_client *client);

/**
 * Frees server stats. Accepts NULL.
 */
FRACTAL_API void fractal_server_stats_free(fractal_server_stats *stats);

/* ---------------------------------------------------------------------------------------------- */
/* Devices                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef enum fractal_device_type {
    FRACTAL_DEVICE_UNSPECIFIED = 0,
    FRACTAL_DEVICE_CPU = 1,
    FRACTAL_DEVICE_GPU = 2,
    FRACTAL_DEVICE_ACCELERATOR = 3
} fractal_device_type;

/* One compute device of the server, used or excluded (the proto's Device). Strings are never NULL. */
typedef struct fractal_device {
    const char *id;                 /* stable across restarts; usable as fractal_render_options.device */
    const char *name;
    const char *vendor;
    const char *platform;           /* OpenCL platform, or "fractald" for the built-in CPU engine */
    fractal_device_type type;
    const char *engine;             /* "cpu" or "opencl" */
    int fp64;                       /* nonzero: has double precision */
    uint32_t compute_units;
    uint64_t memory_bytes;
    int enabled;                    /* nonzero: the server renders on it */
    const char *disabled_reason;
    const char *status;             /* "ok" or "failed" */
    const char *status_reason;
    double giter_per_s;             /* measured throughput, 0 when not measured */
    uint64_t tiles_done;
    uint64_t iterations_done;
} fractal_device;

/* The devices of a server. Everything belongs to the list; read-only. */
typedef struct fractal_device_list {
    size_t count;
    const fractal_device *devices;  /* count entries */
} fractal_device_list;

/**
 * Lists every device of the server (ListDevices RPC).
 *
 * @param out     receives the list; free it with fractal_device_list_free. NULL on failure.
 * @param client  the client
 * @return 0; FRACTAL_EINVAL; FRACTAL_ENOMEM; FRACTAL_EPROTOCOL; or the server's refusal
 *         (e.g. FRACTAL_EUNAVAILABLE). The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_list_devices(fractal_device_list **out, fractal_client *client);

/**
 * Frees a device list. Accepts NULL.
 */
FRACTAL_API void fractal_device_list_free(fractal_device_list *list);

/* ---------------------------------------------------------------------------------------------- */
/* Health                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* Serving status, as in grpc.health.v1.HealthCheckResponse.ServingStatus. */
typedef enum fractal_health_status {
    FRACTAL_HEALTH_UNKNOWN = 0,
    FRACTAL_HEALTH_SERVING = 1,
    FRACTAL_HEALTH_NOT_SERVING = 2,
    FRACTAL_HEALTH_SERVICE_UNKNOWN = 3
} fractal_health_status;

/**
 * Asks the server whether a service is serving (grpc.health.v1.Health/Check).
 *
 * @param out      receives the status (FRACTAL_HEALTH_UNKNOWN on failure)
 * @param client   the client
 * @param service  service name, "" or NULL for the server as a whole, e.g. "fractal.v1.Renderer"
 * @return 0 (whatever the status); FRACTAL_EINVAL; FRACTAL_EPROTOCOL; FRACTAL_ENOT_FOUND when the
 *         server does not know the service; FRACTAL_EUNAVAILABLE when it cannot be reached; other
 *         server refusals. The message is in fractal_client_last_error.
 */
FRACTAL_API int fractal_health_check(fractal_health_status *out, fractal_client *client,
                                     const char *service);

#ifdef __cplusplus
}
#endif

#endif
