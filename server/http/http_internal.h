/* http_internal.h: what the files of server/http share: the listener's state, one request as the
 * routes see it (parsed by http_mhd.c, the only file that knows libmicrohttpd) and the reply they
 * fill in. */
#ifndef FRACTALD_HTTP_INTERNAL_H
#define FRACTALD_HTTP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fractal/v1/fractal.pb-c.h"
#include "http.h"
#include "latency.h"

/* The routes, for the counters, the metrics and the log. */
enum http_route {
    R_TILE, R_RENDER, R_JOB_SUBMIT, R_JOB_GET, R_JOB_RESULT, R_JOB_CANCEL, R_JOBS_LIST, R_DEVICES,
    R_STATS, R_HEALTHZ, R_READYZ, R_METRICS, R_VIEWER, R_OTHER, R_COUNT
};
extern const char *const http_route_names[R_COUNT];

/* Statuses counted one by one; any other is counted as the last ("other"). */
#define HTTP_STATUSES {200, 201, 304, 400, 401, 404, 405, 409, 412, 413, 429, 499, 500, 501, 503, 504}
#define HTTP_NSTATUS 17

/* Query arguments kept per request; more is refused (400). */
#define HTTP_MAX_ARGS 32

/* Bytes of a POST body beyond which it is refused with 413 (a RenderRequest is well under 64 KiB
 * unless it carries 256 colour stops); --max-request-bytes when that is smaller. */
#define HTTP_MAX_BODY (64u << 10)

struct http_kv {
    const char *key, *value;
};

/* One request, as http_mhd.c parsed it. Every pointer is borrowed for the request's lifetime. */
struct http_req {
    const char *method;             /* "GET", "POST", ... */
    const char *path;               /* the URL path, query removed, not unescaped */
    struct http_kv args[HTTP_MAX_ARGS];
    size_t nargs;
    bool too_many_args;
    const char *authorization;      /* the header's value, or NULL */
    const char *if_none_match;
    const char *body;               /* NUL-terminated; body_len bytes before the NUL */
    size_t body_len;
    bool body_too_large;
    char peer[80];                  /* "1.2.3.4:5555" */
    char client_key[96];            /* who the per-client shares count it against */
    char client_id[RPC_FRONT_ID_MAX]; /* the token's name, when tokens are on */
    const char *auth;               /* "token" or "none", for the log */
    /* Whether the client has gone (closed its side of the connection): polled while a render
     * waits, so that a closed connection cancels it. */
    bool (*gone)(void *ctx);
    void *gone_ctx;
    enum http_route route;
    bool rpc_left;                  /* http_render left the rpc stretch before waiting */
    double t0;                      /* render_now_ms when the request arrived */
};

/* The reply a route fills in; http_mhd.c sends it and frees what it owns. Exactly one of body,
 * hit and reader carries the content (or none: an empty body). */
struct http_reply {
    int status;
    int err;                        /* the server error code behind a failure, 0 for success */
    const char *content_type;       /* static */
    uint8_t *body;                  /* malloc'd unless body_static */
    size_t len;
    bool body_static;
    struct imgcache_hit hit;        /* a cached image, released after sending */
    jobs_reader *reader;            /* a job result streamed from the spool, freed after */
    uint64_t reader_len;
    char etag[48];                  /* with its quotes; "" for none */
    const char *cache_control;      /* static; NULL for none */
    unsigned retry_after_s;         /* 429: Retry-After */
    const char *allow;              /* 405: Allow */
    char location[96];              /* 201: Location */
    const char *cache;              /* "hit" or "miss" for the log; NULL when no cache was asked */
    char msg[512];                  /* the error message (also in the body) */
};

struct http_server {
    const struct config *cfg;
    rpc_server *rpc;
    struct devices *devs;
    jobs_store *jobs;
    sched *sched;
    imgcache *cache;
    void *daemon;                   /* struct MHD_Daemon, known only to http_mhd.c */
    char *tls_cert, *tls_key;       /* PEM text, kept while the daemon runs */
    int port;
    double t_start;
    atomic_int draining;
    atomic_llong drain_deadline_ms; /* renders still running then are cancelled */
    atomic_int rpc_users;           /* requests inside an rpc_server_* call right now */
    atomic_int requests_open;       /* requests begun and not yet completed (reply sent or failed) */
    atomic_uint_least64_t answered[R_COUNT][HTTP_NSTATUS];
    atomic_uint_least64_t latency[R_COUNT][LATENCY_NBUCKETS];
    atomic_uint_least64_t latency_us_sum[R_COUNT];
    atomic_uint_least64_t disconnect_cancels; /* renders cancelled because their client left */
};

/* ---- http_api.c ---- */

/* Routes, authenticates and answers one request into *out (zeroed by the caller). Blocks while a
 * render it queued is computed (the connection's own thread). */
void http_handle(http_server *h, struct http_req *req, struct http_reply *out);

/* The one mapping from server error codes to HTTP statuses (and the code named in the error
 * body): 400 INVALID, 401, 404, 409, 412 PRECONDITION, 413, 429 EXHAUSTED, 499 CANCELLED,
 * 503 UNAVAILABLE, 504, 500 for the rest. */
int http_status_of(int err);

/* Fills out as an error: the status of err, body {"code": "...", "message": "..."}. */
void http_error(struct http_reply *out, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* HTTP-only conditions that have no code of their own in err.h, for http_status_of. */
#define HTTP_ERR_CONFLICT (-101)    /* 409: the job has no result yet */
#define HTTP_ERR_TOO_LARGE (-102)   /* 413: the request body is over the limit */
#define HTTP_ERR_METHOD (-103)      /* 405: the path does not take that method */

/* Enter/leave a stretch that calls into the gRPC server; enter fails (false) once the drain has
 * begun, and the drain waits for every stretch to leave. */
bool http_rpc_enter(http_server *h);
void http_rpc_leave(http_server *h);

/* The value of query argument key, or NULL. */
const char *http_arg(const struct http_req *req, const char *key);

/* ---- http_render.c ---- */

/* Renders a request through request_to_spec, the image cache and the shared render queue, into
 * out: the image with a strong ETag (304 when If-None-Match has it), or the error. `tile` adds
 * the immutable Cache-Control of map tiles. Takes ownership of nothing. */
void http_render(http_server *h, struct http_req *req, const Fractal__V1__RenderRequest *rr, bool tile,
                 struct http_reply *out);

/* ---- http_tiles.c ---- */

/* Parses "/v1/tiles/{z}/{x}/{y}.png" and the query into a RenderRequest for that tile (freed with
 * http_tile_request_free). Returns 0, or ERR_INVALID / ERR_NOT_FOUND with the message in msg. */
int http_tile_request(Fractal__V1__RenderRequest **out, const struct http_req *req, char *msg, size_t msglen);
void http_tile_request_free(Fractal__V1__RenderRequest *rr);

/* ---- http_metrics.c ---- */

/* The Prometheus text exposition of every counter, into *out (malloc'd, caller frees). Returns 0
 * or ERR_NOMEM. Call inside http_rpc_enter. */
int http_metrics_text(char **out, size_t *len, http_server *h);

/* ---- http_assets.c (generated from viewer/ by embed_assets.cmake) ---- */

struct http_asset {
    const char *path;               /* "/", "/viewer.js", "/leaflet/leaflet.js", ... */
    const char *content_type;
    const unsigned char *data;
    size_t len;
};
extern const struct http_asset http_assets[];
extern const size_t http_nassets;

#endif
