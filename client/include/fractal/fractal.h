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
 * and one error buffer); use one handle per thread for concurrent calls. Different handles, even to
 * the same server, are independent. Results (images, device lists) are plain data owned by the
 * caller and may be passed between threads. fractal_strerror and the option initialisers are
 * thread-safe.
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

/* Version of this header (and of the library it came with). */
#define FRACTAL_VERSION_MAJOR 0
#define FRACTAL_VERSION_MINOR 1
#define FRACTAL_VERSION_PATCH 0
#define FRACTAL_VERSION "0.1.0"

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

/* A connection to one fractald (or to a load-balanced set of them: the target is a gRPC target). */
typedef struct fractal_client fractal_client;

#define FRACTAL_CLIENT_OPTIONS_VERSION 1

/* Options of fractal_client_new. */
typedef struct fractal_client_options {
    unsigned version;            /* FRACTAL_CLIENT_OPTIONS_VERSION */
    uint32_t deadline_ms;        /* deadline of each call in milliseconds; 0 = none. Default 60000 */
    size_t max_receive_bytes;    /* largest reply accepted, 1..INT_MAX. Default 256 MiB */
} fractal_client_options;

#define FRACTAL_CLIENT_OPTIONS_INIT { FRACTAL_CLIENT_OPTIONS_VERSION, 60000u, (size_t)256 << 20 }

/**
 * Fills `opts` with the defaults of FRACTAL_CLIENT_OPTIONS_INIT.
 *
 * @param opts     the struct to fill
 * @param version  FRACTAL_CLIENT_OPTIONS_VERSION
 * @return 0, or FRACTAL_EINVAL if opts is NULL or the version is not supported.
 */
FRACTAL_API int fractal_client_options_init(fractal_client_options *opts, unsigned version);

/**
 * Creates a client for the server at `target`. No connection is made yet: the first call connects,
 * so an unreachable server shows up there (FRACTAL_EUNAVAILABLE), not here. Calls fail fast when
 * the server cannot be reached; they do not wait for it to come up.
 *
 * @param out     receives the new client; free it with fractal_client_free. NULL on failure.
 * @param target  a gRPC target: "host:port", "ipv4:127.0.0.1:50051", "dns:///name:port",
 *                "unix:/path". Copied; the caller keeps ownership.
 * @param opts    options, or NULL for FRACTAL_CLIENT_OPTIONS_INIT. Copied.
 * @return 0; FRACTAL_EINVAL if out or target is NULL, target is empty, or an option is out of
 *         range or of an unsupported version; FRACTAL_ENOMEM. No handle exists on failure, so use
 *         fractal_strerror for the message.
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
    FRACTAL_PRECISION_AUTO = 0,  /* fp32 while the pixel spacing allows it, else fp64 */
    FRACTAL_PRECISION_FP32 = 1,
    FRACTAL_PRECISION_FP64 = 2
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

#define FRACTAL_RENDER_OPTIONS_VERSION 1
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
    double cycle;                   /* iterations per palette cycle; 0 = one log-scaled pass. Default 0 */
    double offset;                  /* palette coordinate shift, 0..1 (cycling only). Default 0 */
    fractal_color interior;         /* colour of points that never escape; default black */
    int reverse;                    /* nonzero: run the palette backwards. Default 0 */
    uint32_t supersample;           /* n x n samples per pixel; default 1 */
    int has_region;                 /* nonzero: render only `region` of the full image. Default 0 */
    fractal_region region;
    char device[FRACTAL_DEVICE_NAME_MAX]; /* "" any, "cpu", "gpu", "opencl" or a device id; default "" */
} fractal_render_options;

/* Positional, so that it compiles as C and as C++. */
#define FRACTAL_RENDER_OPTIONS_INIT                                                                 \
    { FRACTAL_RENDER_OPTIONS_VERSION, FRACTAL_KIND_JULIA, { -0.8, 0.156 }, { 0.0, 0.0 }, 0.0,        \
      600u, 400u, 256u, 2.0, FRACTAL_PRECISION_AUTO, FRACTAL_FORMAT_PNG, "inferno", 0u,             \
      { { 0.0, { 0u, 0u, 0u } } }, 0.0, 0.0, { 0u, 0u, 0u }, 0, 1u, 0, { 0u, 0u, 0u, 0u }, "" }

/**
 * Fills `opts` with the defaults of FRACTAL_RENDER_OPTIONS_INIT.
 *
 * @param opts     the struct to fill
 * @param version  FRACTAL_RENDER_OPTIONS_VERSION
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
 * @param out       receives the options (left at the defaults on failure)
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
