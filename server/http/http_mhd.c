/* http_mhd.c: the HTTP listener on libmicrohttpd, the only code that includes <microhttpd.h>:
 * the daemon's lifecycle, each request read into a struct http_req (bounded headers, body and
 * arguments), the reply sent from a struct http_reply, the counters and the per-request log
 * line. A thread per connection, so a request waiting for its render blocks only itself. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "http_internal.h"
#include "log.h"
#include "render.h"

/* Connections open at once (each is a thread); past it new ones are refused at accept. */
#define MAX_CONNECTIONS 512
/* Connections from one address at once, so one client cannot take every connection (16 for a
 * map view, a few for scripts; proxies in front should keep connections alive). */
#define MAX_CONNECTIONS_PER_IP 128
/* A connection that sends nothing for this long is closed (idle keep-alive, slow headers). */
#define IDLE_TIMEOUT_S 60
/* Per-connection memory for the request line and headers (libmicrohttpd answers 431 past it). */
#define HEADER_MEMORY (32u << 10)
/* Result files go out in blocks of this size. */
#define STREAM_BLOCK (256u << 10)

/* The per-request state libmicrohttpd keeps for us between calls of the handler. */
struct conn_req {
    double t0;
    char *body;
    size_t len, cap;
    bool too_large;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    (void)cls;
    if (LOG_DEBUG < log_min_level)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_at(LOG_DEBUG, "http: %s", line);
}

static size_t body_limit(const http_server *h)
{
    return h->cfg->limits.max_request_bytes < HTTP_MAX_BODY ? h->cfg->limits.max_request_bytes : HTTP_MAX_BODY;
}

/* Appends an upload chunk, or counts the body as too large (and drops what it had). */
static void take_body(const http_server *h, struct conn_req *r, const char *data, size_t n)
{
    if (r->too_large)
        return;
    if (r->len + n > body_limit(h)) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        char *p;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (!(p = realloc(r->body, cap))) {
            r->too_large = true;
            return;
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct http_req *req = cls;

    (void)kind;
    if (req->nargs == HTTP_MAX_ARGS) {
        req->too_many_args = true;
        return MHD_NO;
    }
    req->args[req->nargs++] = (struct http_kv){key ? key : "", value ? value : ""};
    return MHD_YES;
}

/* Whether the client closed its side of the connection (a FIN, a reset): polled while its render
 * waits. A client that pipelines its next request only makes the socket readable. */
static bool conn_gone(void *ctx)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(ctx, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;

    if (!ci)
        return false;
    p.fd = ci->connect_fd;
    p.events = POLLRDHUP;
    p.revents = 0;
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* The peer as "ADDR:PORT" and the client key the per-client shares use ("ipv4:ADDR"). */
static void peer_of(struct http_req *req, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    bool v6 = false;

    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)sa;
            inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
            port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
            port = ntohs(in6->sin6_port);
            v6 = true;
        }
    }
    snprintf(req->peer, sizeof(req->peer), v6 ? "[%s]:%u" : "%s:%u", addr, port);
    snprintf(req->client_key, sizeof(req->client_key), v6 ? "ipv6:[%s]" : "ipv4:%s", addr);
}

/* ---- replies ---- */

struct hit_box {
    imgcache *cache;
    struct imgcache_hit hit;
};

static void free_hit(void *cls)
{
    struct hit_box *b = cls;
    imgcache_release(b->cache, &b->hit);
    free(b);
}

static ssize_t read_result(void *cls, uint64_t pos, char *buf, size_t max)
{
    size_t n = 0;

    (void)pos;
    if (jobs_reader_read(cls, buf, max, &n, NULL, 0) < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

static void free_result(void *cls)
{
    jobs_reader_free(cls);
}

/* The libmicrohttpd response for a reply; what the reply owned passes to it. NULL when out of
 * memory (the reply's resources are freed then). */
static struct MHD_Response *response_of(http_server *h, struct http_reply *out)
{
    struct MHD_Response *resp = NULL;

    if (out->reader) {
        resp = MHD_create_response_from_callback(out->reader_len, STREAM_BLOCK, read_result, out->reader, free_result);
        if (!resp)
            jobs_reader_free(out->reader);
        out->reader = NULL;
    } else if (out->hit.entry) {
        struct hit_box *b = malloc(sizeof(*b));
        if (b) {
            b->cache = h->cache;
            b->hit = out->hit;
            resp = MHD_create_response_from_buffer_with_free_callback_cls(b->hit.len, (void *)b->hit.data, free_hit, b);
            if (!resp)
                free_hit(b);
        } else {
            imgcache_release(h->cache, &out->hit);
        }
        memset(&out->hit, 0, sizeof(out->hit));
    } else if (out->status == 304 || !out->body) {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        free(out->body_static ? NULL : out->body);
        out->body = NULL;
    } else if (out->body_static) {
        resp = MHD_create_response_from_buffer(out->len, out->body, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(out->len, out->body, free);
        if (!resp)
            free(out->body);
        out->body = NULL;
    }
    if (!resp)
        return NULL;
    if (out->content_type && out->status != 304)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, out->content_type);
    if (out->etag[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, out->etag);
    if (out->cache_control)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, out->cache_control);
    if (out->retry_after_s) {
        char v[16];
        snprintf(v, sizeof(v), "%u", out->retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (out->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, out->allow);
    if (out->location[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, out->location);
    if (out->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return resp;
}

/* Counts the reply, and writes its log line (event=http). */
static void account(http_server *h, const struct http_req *req, const struct http_reply *out, uint64_t bytes)
{
    static const int statuses[HTTP_NSTATUS - 1] = HTTP_STATUSES;
    double ms = render_now_ms() - req->t0;
    int s = 0, level = out->status < 400 ? LOG_INFO : LOG_WARN;

    while (s < HTTP_NSTATUS - 1 && statuses[s] != out->status)
        s++;
    atomic_fetch_add(&h->answered[req->route][s], 1);
    atomic_fetch_add(&h->latency[req->route][latency_bucket(ms / 1000.0)], 1);
    atomic_fetch_add(&h->latency_us_sum[req->route], (uint_least64_t)(ms * 1000.0));
    if (level < log_min_level)
        return;
    {
        char fields[1536] = "";
        log_kv(fields, sizeof(fields), "method", req->method);
        log_kv(fields, sizeof(fields), "path", req->path);
        log_kv(fields, sizeof(fields), "route", http_route_names[req->route]);
        log_kv(fields, sizeof(fields), "peer", req->peer);
        log_kv(fields, sizeof(fields), "auth", req->auth ? req->auth : "none");
        if (req->client_id[0])
            log_kv(fields, sizeof(fields), "client", req->client_id);
        log_kvf(fields, sizeof(fields), "status", "%d", out->status);
        if (out->err)
            log_kv(fields, sizeof(fields), "code", err_name(out->err));
        if (out->cache)
            log_kv(fields, sizeof(fields), "cache", out->cache);
        log_kvf(fields, sizeof(fields), "bytes", "%llu", (unsigned long long)bytes);
        if (out->msg[0])
            log_kv(fields, sizeof(fields), "error", out->msg);
        log_kvf(fields, sizeof(fields), "ms", "%.2f", ms);
        log_event(level, "http", fields);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
    http_server *h = cls;
    struct conn_req *r = *req_cls;
    struct http_req req;
    struct http_reply out;
    struct MHD_Response *resp;
    uint64_t bytes;
    enum MHD_Result ret;

    (void)version;
    if (!r) {
        /* The headers are in; the body (if any) comes in the next calls. A declared length over
         * the limit is answered at once, without reading the body. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        r->t0 = render_now_ms();
        *req_cls = r;
        atomic_fetch_add(&h->requests_open, 1);
        if (!cl || strtoull(cl, NULL, 10) <= body_limit(h))
            return MHD_YES;
        r->too_large = true;
    } else if (*upload_size) {
        take_body(h, r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }

    memset(&req, 0, sizeof(req));
    memset(&out, 0, sizeof(out));
    req.method = method;
    req.path = url;
    req.t0 = r->t0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, &req);
    req.authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    req.if_none_match = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    req.body = r->body ? r->body : "";
    req.body_len = r->len;
    req.body_too_large = r->too_large;
    req.gone = conn_gone;
    req.gone_ctx = conn;
    peer_of(&req, conn);

    http_handle(h, &req, &out);
    if (!out.status)
        http_error(&out, ERR_INTERNAL, "no reply");
    bytes = out.reader ? out.reader_len : out.hit.entry ? out.hit.len : out.status == 304 ? 0 : out.len;
    account(h, &req, &out, bytes);
    if (!(resp = response_of(h, &out)))
        return MHD_NO;
    ret = MHD_queue_response(conn, (unsigned)out.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    http_server *h = cls;
    struct conn_req *r = *req_cls;

    (void)conn;
    (void)toe;
    if (r) {
        free(r->body);
        free(r);
        atomic_fetch_sub(&h->requests_open, 1);
    }
    *req_cls = NULL;
}

/* ---- start and stop ---- */

/* Reads a PEM file (at most 1 MiB) into a NUL-terminated string (caller frees), or NULL. */
static char *read_pem(const char *flag, const char *path, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len;

    if (!f) {
        snprintf(msg, msglen, "%s %s: cannot read: %s", flag, path, strerror(errno));
        return NULL;
    }
    if ((buf = malloc((1u << 20) + 1)) != NULL) {
        len = fread(buf, 1, 1u << 20, f);
        buf[len] = '\0';
        if (len == 1u << 20 || !strstr(buf, "-----BEGIN ")) {
            snprintf(msg, msglen, "%s %s: not a PEM file of at most 1 MiB", flag, path);
            free(buf);
            buf = NULL;
        }
    } else {
        snprintf(msg, msglen, "out of memory");
    }
    fclose(f);
    return buf;
}

/* cfg->http_listen as a socket address; returns 0, or ERR_UNAVAILABLE with msg. */
static int resolve(struct sockaddr_storage *out, const char *listen, char *msg, size_t msglen)
{
    char host[256];
    const char *port, *end;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (listen[0] == '[') {
        end = strchr(listen, ']');
        snprintf(host, sizeof(host), "%.*s", (int)(end - listen - 1), listen + 1);
        port = end + 2;
    } else {
        end = strrchr(listen, ':');
        snprintf(host, sizeof(host), "%.*s", (int)(end - listen), listen);
        port = end + 1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0 || !res) {
        snprintf(msg, msglen, "--http-listen %s: cannot resolve '%s': %s", listen, host, gai_strerror(rc));
        return ERR_UNAVAILABLE;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int http_server_start(http_server **out, int *port, const struct http_deps *deps, char *msg, size_t msglen)
{
    const struct config *cfg = deps->cfg;
    http_server *h = calloc(1, sizeof(*h));
    struct sockaddr_storage addr;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;
    struct MHD_Daemon *d;
    int err;

    *out = NULL;
    if (!h) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    h->cfg = cfg;
    h->rpc = deps->rpc;
    h->devs = deps->devs;
    h->jobs = deps->jobs;
    h->sched = deps->sched;
    h->cache = deps->cache;
    h->t_start = render_now_ms();
    if ((err = resolve(&addr, cfg->http_listen, msg, msglen)) < 0)
        goto fail;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (cfg->tls_cert[0]) {
        err = ERR_INVALID;
        if (!(h->tls_cert = read_pem("--tls-cert", cfg->tls_cert, msg, msglen)) ||
            !(h->tls_key = read_pem("--tls-key", cfg->tls_key, msg, msglen)))
            goto fail;
        flags |= MHD_USE_TLS;
    }
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS_PER_IP,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MEMORY,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                         h->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->tls_cert,
                         MHD_OPTION_HTTPS_MEM_KEY, h->tls_key,
                         MHD_OPTION_END);
    if (!d) {
        snprintf(msg, msglen, "cannot serve HTTP on %s (address in use or not local%s)", cfg->http_listen,
                 h->tls_cert ? ", or the TLS certificate and key do not match" : "");
        err = ERR_UNAVAILABLE;
        goto fail;
    }
    h->daemon = d;
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    *port = h->port;
    *out = h;
    return 0;

fail:
    free(h->tls_cert);
    free(h->tls_key);
    free(h);
    return err;
}

void http_server_drain(http_server *h, unsigned grace_ms)
{
    if (!h)
        return;
    atomic_store(&h->drain_deadline_ms, (long long)(render_now_ms() + grace_ms));
    atomic_store(&h->draining, 1);
    /* The stretches inside the gRPC server are short (a lookup, a queue, a journal commit). */
    while (atomic_load(&h->rpc_users) > 0)
        usleep(1000);
}

void http_server_stop(http_server *h)
{
    if (!h)
        return;
    atomic_store(&h->draining, 1);
    while (atomic_load(&h->rpc_users) > 0)
        usleep(1000);
    /* MHD_stop_daemon closes every connection, a reply half sent included: a render that finished
     * inside the grace period would reach its client truncated. Let the replies in flight go out
     * first, until the drain deadline (none when the stop is not a drain). */
    while (atomic_load(&h->requests_open) > 0 && render_now_ms() < (double)atomic_load(&h->drain_deadline_ms))
        usleep(2000);
    MHD_stop_daemon(h->daemon);
    if (h->tls_key) {
        /* The private key: do not leave it in freed memory. */
        volatile char *p = h->tls_key;
        for (size_t i = 0; p[i]; i++)
            p[i] = 0;
    }
    free(h->tls_key);
    free(h->tls_cert);
    free(h);
}
