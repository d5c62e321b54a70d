/* http_api.c: the routes of the HTTP listener: dispatch by method and path, bearer tokens, the
 * error mapping and body, the REST jobs flow, devices, stats, health and the viewer's files.
 * Replies are proto3 JSON of the contract's messages (proto_json.h), built by the same code as
 * the gRPC replies (rpc.h's packed builders). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "http_internal.h"
#include "log.h"
#include "proto_json.h"
#include "request.h"

const char *const http_route_names[R_COUNT] = {
    [R_TILE] = "tile", [R_RENDER] = "render", [R_JOB_SUBMIT] = "job_submit", [R_JOB_GET] = "job_get",
    [R_JOB_RESULT] = "job_result", [R_JOB_CANCEL] = "job_cancel", [R_JOBS_LIST] = "jobs_list",
    [R_DEVICES] = "devices", [R_STATS] = "stats", [R_HEALTHZ] = "healthz", [R_READYZ] = "readyz",
    [R_METRICS] = "metrics", [R_VIEWER] = "viewer", [R_OTHER] = "other",
};

/* ---- errors ---- */

/* The one table: server error code -> HTTP status, and the gRPC status named in the body. */
static const struct {
    int err, status, grpc;
} status_table[] = {
    {ERR_INVALID, 400, 3},
    {ERR_UNAUTHENTICATED, 401, 16},
    {ERR_NOT_FOUND, 404, 5},
    {HTTP_ERR_METHOD, 405, 12},
    {HTTP_ERR_CONFLICT, 409, 9},
    {ERR_PRECONDITION, 412, 9},
    {HTTP_ERR_TOO_LARGE, 413, 8},
    {ERR_EXHAUSTED, 429, 8},
    {ERR_CANCELLED, 499, 1},     /* nginx's "client closed request": nobody reads it but the log */
    {ERR_UNIMPLEMENTED, 501, 12},
    {ERR_UNAVAILABLE, 503, 14},
    {ERR_NOMEM, 503, 8},         /* the server is short of memory now, not the request too big */
    {ERR_DEADLINE, 504, 4},
    {ERR_DEVICE, 500, 13},
    {ERR_IO, 500, 13},
    {ERR_INTERNAL, 500, 13},
    {ERR_DATA_LOSS, 500, 15},
};

static size_t status_row(int err)
{
    for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
        if (status_table[i].err == err)
            return i;
    return SIZE_MAX;
}

int http_status_of(int err)
{
    size_t i = status_row(err);
    return err == 0 ? 200 : i == SIZE_MAX ? 500 : status_table[i].status;
}

/* The gRPC status code named in the error body. */
static int grpc_code_of(int err)
{
    size_t i = status_row(err);
    return i == SIZE_MAX ? 2 : status_table[i].grpc;
}

/* Appends s to out (capacity cap, NUL-terminated) as the inside of a JSON string: every byte
 * outside printable ASCII is escaped, so the text is valid JSON whatever bytes came in. */
static void json_escape(char *out, size_t cap, const char *s)
{
    size_t n = strlen(out);

    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
}

void http_error(struct http_reply *out, int err, const char *fmt, ...)
{
    char body[1400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(out->msg, sizeof(out->msg), fmt, ap);
    va_end(ap);
    free(out->body);
    out->err = err;
    out->status = http_status_of(err);
    snprintf(body, sizeof(body), "{\"code\": \"%s\", \"message\": \"", err_status_name(grpc_code_of(err)));
    json_escape(body, sizeof(body) - 3, out->msg);
    strcat(body, "\"}\n");
    out->body = (uint8_t *)strdup(body);
    out->len = out->body ? strlen(body) : 0;
    out->body_static = false;
    out->content_type = "application/json";
}

/* ---- helpers ---- */

bool http_rpc_enter(http_server *h)
{
    atomic_fetch_add(&h->rpc_users, 1);
    if (atomic_load(&h->draining)) {
        atomic_fetch_sub(&h->rpc_users, 1);
        return false;
    }
    return true;
}

void http_rpc_leave(http_server *h)
{
    atomic_fetch_sub(&h->rpc_users, 1);
}

const char *http_arg(const struct http_req *req, const char *key)
{
    for (size_t i = 0; i < req->nargs; i++)
        if (strcmp(req->args[i].key, key) == 0)
            return req->args[i].value;
    return NULL;
}

/* Takes a malloc'd JSON text as the reply body. */
static void reply_json(struct http_reply *out, int status, char *json)
{
    out->status = status;
    out->content_type = "application/json";
    out->body = (uint8_t *)json;
    out->len = strlen(json);
}

/* Packed bytes of a message of type desc (freed here) -> its proto3 JSON as the reply. */
static void reply_packed(struct http_reply *out, int status, const ProtobufCMessageDescriptor *desc,
                         uint8_t *bytes, size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, bytes);
    char *json = NULL;

    free(bytes);
    if (!m || pjson_encode(&json, m) < 0) {
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        http_error(out, ERR_INTERNAL, "cannot write the %s reply", desc->name);
        return;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    reply_json(out, status, json);
}

static void reply_static(struct http_reply *out, int status, const char *content_type, const char *text)
{
    out->status = status;
    out->content_type = content_type;
    out->body = (uint8_t *)text;
    out->len = strlen(text);
    out->body_static = true;
}

/* Whether the body holds a JSON \u0000 escape: it would reach a string field as a NUL that cuts
 * it ("cpu\u0000evil" read as "cpu"), which the gRPC path refuses too. */
static bool json_has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 6 <= len; i++) {
        size_t backslashes = 0;
        if (s[i] != '\\' || strncasecmp(s + i + 1, "u0000", 5) != 0)
            continue;
        while (backslashes < i && s[i - 1 - backslashes] == '\\')
            backslashes++;
        if (backslashes % 2 == 0)
            return true;
    }
    return false;
}

/* The POST body as a RenderRequest (freed with protobuf_c_message_free_unpacked), or NULL with
 * out filled as the error. */
static Fractal__V1__RenderRequest *read_request_body(const struct http_req *req, struct http_reply *out)
{
    ProtobufCMessage *m = NULL;
    char why[300];

    if (req->body_too_large) {
        http_error(out, HTTP_ERR_TOO_LARGE, "request body is larger than %u bytes", HTTP_MAX_BODY);
        return NULL;
    }
    if (req->body_len == 0) {
        http_error(out, ERR_INVALID, "missing request body: POST a fractal.v1.RenderRequest as JSON ({} for the default image)");
        return NULL;
    }
    if (memchr(req->body, '\0', req->body_len) || json_has_nul_escape(req->body, req->body_len)) {
        http_error(out, ERR_INVALID, "request body must not contain a NUL byte");
        return NULL;
    }
    if (pjson_decode(&m, &fractal__v1__render_request__descriptor, req->body, why, sizeof(why)) < 0) {
        http_error(out, ERR_INVALID, "request is not a valid fractal.v1.RenderRequest: %s", why);
        return NULL;
    }
    return (Fractal__V1__RenderRequest *)m;
}

/* ---- jobs ---- */

/* The {id} of /v1/jobs/{id}[/result] into id (cap JOBS_ID_SIZE); false (out filled) for one that
 * cannot be a job id, answered as gRPC answers an unknown id. */
static bool job_id_of(char *id, const char *segment, size_t seglen, struct http_reply *out)
{
    if (seglen != JOBS_ID_LEN) {
        http_error(out, ERR_NOT_FOUND, "no job \"%.*s\" (unknown, or expired)", (int)(seglen > 64 ? 64 : seglen), segment);
        return false;
    }
    memcpy(id, segment, seglen);
    id[seglen] = '\0';
    return true;
}

static void reply_job(http_server *h, const char *id, int status, struct http_reply *out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int err = rpc_server_job_packed(h->rpc, id, &bytes, &len);

    if (err == ERR_NOT_FOUND)
        http_error(out, err, "no job \"%s\" (unknown, or expired)", id);
    else if (err < 0)
        http_error(out, err, "cannot read job %s: %s", id, err_name(err));
    else
        reply_packed(out, status, &fractal__v1__job__descriptor, bytes, len);
}

static void job_submit(http_server *h, struct http_req *req, struct http_reply *out)
{
    Fractal__V1__RenderRequest *rr = read_request_body(req, out);
    struct render_spec spec;
    uint8_t *bytes = NULL;
    size_t len = 0;
    char msg[512] = "", id[JOBS_ID_SIZE];
    int err, device_index;

    if (!rr)
        return;
    /* Validated now, as SubmitJob does, so a bad request is refused at once. */
    err = request_to_spec(&spec, &device_index, rr, &h->cfg->limits, h->devs, true, msg, sizeof(msg));
    protobuf_c_message_free_unpacked(&rr->base, NULL);
    if (err < 0) {
        http_error(out, err, "%s", msg);
        return;
    }
    err = request_pack_from_spec(&bytes, &len, &spec);
    /* The packed request is what the job keeps; the spec (and a deep view it holds) goes here. */
    render_spec_dispose(&spec);
    if (err < 0) {
        http_error(out, err, "out of memory");
        return;
    }
    /* Committed before the reply, as SubmitJob: once the client holds an id the job survives a
     * crash. */
    err = jobs_submit(h->jobs, bytes, len, id, msg, sizeof(msg));
    free(bytes);
    if (err < 0) {
        http_error(out, err, "%s", msg);
        if (err == ERR_EXHAUSTED)
            out->retry_after_s = 1;
        return;
    }
    rpc_server_wake_jobs(h->rpc);
    snprintf(out->location, sizeof(out->location), "/v1/jobs/%s", id);
    reply_job(h, id, 201, out);
}

/* Streams a SUCCEEDED job's image from the spool. */
static void job_result(http_server *h, const char *id, struct http_reply *out)
{
    struct jobs_info info;
    char msg[256] = "";
    int err;

    if ((err = jobs_get(&info, h->jobs, id)) == ERR_NOT_FOUND) {
        http_error(out, err, "no job \"%s\" (unknown, or expired)", id);
        return;
    }
    if (err < 0) {
        /* A shared store (--job-store) can be unreachable; it says so as UNAVAILABLE (503). */
        http_error(out, err, "cannot read job %s: %s", id, err_name(err));
        return;
    }
    if (info.state != JOBS_SUCCEEDED) {
        /* The gRPC messages; a job that is still running is a conflict with its state (409), one
         * that failed will never have a result (412). */
        if (info.state == JOBS_FAILED || info.state == JOBS_CANCELLED)
            http_error(out, ERR_PRECONDITION, "job %s is %s and has no result: %.150s", id,
                       jobs_state_name(info.state), info.error_message ? info.error_message : "");
        else
            http_error(out, HTTP_ERR_CONFLICT, "job %s is %s (%u of %u rows); poll GET /v1/jobs/%s until SUCCEEDED",
                       id, jobs_state_name(info.state), info.rows_done, info.rows_total, id);
        jobs_info_dispose(&info);
        return;
    }
    if ((err = jobs_reader_open(&out->reader, h->jobs, id, msg, sizeof(msg))) < 0) {
        http_error(out, err, "%s", msg);
        jobs_info_dispose(&info);
        return;
    }
    out->status = 200;
    out->reader_len = jobs_reader_size(out->reader);
    /* The content type came from encode_content_type, a static string, but the snapshot's copy
     * dies with it: map it back to the static one. */
    out->content_type = strcmp(info.content_type, "image/png") == 0 ? "image/png" : "application/octet-stream";
    jobs_info_dispose(&info);
}

static void job_cancel(http_server *h, const char *id, struct http_reply *out)
{
    char msg[256] = "";
    int err = jobs_cancel(h->jobs, id, msg, sizeof(msg));

    if (err == ERR_NOT_FOUND)
        http_error(out, err, "no job \"%s\" (unknown, or expired)", id);
    else if (err < 0)
        http_error(out, err, "%s", msg);
    else
        reply_job(h, id, 200, out);
}

/* GET /v1/jobs?state=S&limit=N: S a JobState by name (QUEUED or JOB_STATE_QUEUED, any case) or
 * number, N 1..1000 (default 100). */
static void jobs_list_route(http_server *h, const struct http_req *req, struct http_reply *out)
{
    static const char *const names[] = {"UNSPECIFIED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"};
    const char *state = http_arg(req, "state"), *limit = http_arg(req, "limit");
    unsigned st = 0;
    unsigned long n = 0;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int err;

    for (size_t i = 0; i < req->nargs; i++)
        if (strcmp(req->args[i].key, "state") != 0 && strcmp(req->args[i].key, "limit") != 0) {
            http_error(out, ERR_INVALID, "unknown query parameter '%.64s' (GET /v1/jobs takes state and limit)",
                       req->args[i].key);
            return;
        }
    if (state) {
        const char *name = strncasecmp(state, "JOB_STATE_", 10) == 0 ? state + 10 : state;
        bool found = false;
        for (unsigned i = 0; i < 6 && !found; i++)
            if (strcasecmp(name, names[i]) == 0) {
                st = i;
                found = true;
            }
        if (!found && (strlen(state) != 1 || state[0] < '0' || state[0] > '5')) {
            http_error(out, ERR_INVALID, "state must be a JobState (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or 0..5), got '%.64s'", state);
            return;
        }
        if (!found)
            st = (unsigned)(state[0] - '0');
    }
    if (limit) {
        char *end = NULL;
        n = strtoul(limit, &end, 10);
        if (!isdigit((unsigned char)limit[0]) || *end || n < 1 || n > 1000) {
            http_error(out, ERR_INVALID, "limit must be an integer 1..1000, got '%.64s'", limit);
            return;
        }
    }
    if ((err = rpc_server_jobs_list_packed(h->rpc, st, n, &bytes, &len)) < 0)
        http_error(out, err, "cannot list the jobs: %s", err_name(err));
    else
        reply_packed(out, 200, &fractal__v1__list_jobs_response__descriptor, bytes, len);
}

/* /v1/jobs[/{id}[/result]] with the method. */
static void jobs_route(http_server *h, struct http_req *req, const char *rest, struct http_reply *out)
{
    const char *slash;
    char id[JOBS_ID_SIZE];

    if (!h->jobs) {
        req->route = R_JOB_GET;
        http_error(out, ERR_UNAVAILABLE, "jobs are disabled on this server (start fractald with --spool-dir or --job-store)");
        return;
    }
    if (*rest == '\0') {
        if (strcmp(req->method, "POST") == 0) {
            req->route = R_JOB_SUBMIT;
            job_submit(h, req, out);
        } else if (strcmp(req->method, "GET") == 0) {
            req->route = R_JOBS_LIST;
            jobs_list_route(h, req, out);
        } else {
            http_error(out, HTTP_ERR_METHOD, "%s /v1/jobs: use POST to submit, GET to list", req->method);
            out->allow = "GET, HEAD, POST";
        }
        return;
    }
    slash = strchr(rest, '/');
    if (!job_id_of(id, rest, slash ? (size_t)(slash - rest) : strlen(rest), out)) {
        req->route = R_JOB_GET;
        return;
    }
    if (slash && strcmp(slash, "/result") == 0) {
        req->route = R_JOB_RESULT;
        if (strcmp(req->method, "GET") != 0) {
            http_error(out, HTTP_ERR_METHOD, "%s /v1/jobs/{id}/result: use GET", req->method);
            out->allow = "GET, HEAD";
        } else {
            job_result(h, id, out);
        }
        return;
    }
    if (slash) {
        req->route = R_OTHER;
        http_error(out, ERR_NOT_FOUND, "no such path: %.200s", req->path);
        return;
    }
    if (strcmp(req->method, "GET") == 0) {
        req->route = R_JOB_GET;
        reply_job(h, id, 200, out);
    } else if (strcmp(req->method, "DELETE") == 0) {
        req->route = R_JOB_CANCEL;
        job_cancel(h, id, out);
    } else {
        req->route = R_JOB_GET;
        http_error(out, HTTP_ERR_METHOD, "%s /v1/jobs/{id}: use GET to poll, DELETE to cancel", req->method);
        out->allow = "DELETE, GET, HEAD";
    }
}

/* ---- the rest ---- */

static void render_route(http_server *h, struct http_req *req, struct http_reply *out)
{
    Fractal__V1__RenderRequest *rr;

    if (strcmp(req->method, "POST") != 0) {
        http_error(out, HTTP_ERR_METHOD, "%s /v1/render: POST a fractal.v1.RenderRequest as JSON", req->method);
        out->allow = "POST";
        return;
    }
    if (!(rr = read_request_body(req, out)))
        return;
    http_render(h, req, rr, false, out);
    protobuf_c_message_free_unpacked(&rr->base, NULL);
}

static void tile_route(http_server *h, struct http_req *req, struct http_reply *out)
{
    Fractal__V1__RenderRequest *rr = NULL;
    char msg[300];
    int err;

    if (strcmp(req->method, "GET") != 0) {
        http_error(out, HTTP_ERR_METHOD, "%s %s: tiles take GET", req->method, "/v1/tiles/{z}/{x}/{y}.png");
        out->allow = "GET, HEAD";
        return;
    }
    if ((err = http_tile_request(&rr, req, msg, sizeof(msg))) < 0) {
        http_error(out, err, "%s", msg);
        return;
    }
    http_render(h, req, rr, true, out);
    http_tile_request_free(rr);
}

static void info_route(http_server *h, struct http_req *req, bool stats, struct http_reply *out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int err = stats ? rpc_server_stats_packed(h->rpc, &bytes, &len) : rpc_server_devices_packed(h->rpc, &bytes, &len);

    (void)req;
    if (err < 0)
        http_error(out, err, "out of memory");
    else
        reply_packed(out, 200, stats ? &fractal__v1__server_stats__descriptor : &fractal__v1__list_devices_response__descriptor,
                     bytes, len);
}

static void metrics_route(http_server *h, struct http_reply *out)
{
    char *text = NULL;
    size_t len = 0;

    if (http_metrics_text(&text, &len, h) < 0) {
        http_error(out, ERR_NOMEM, "out of memory");
        return;
    }
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    out->body = (uint8_t *)text;
    out->len = len;
}

static bool serve_asset(const struct http_req *req, struct http_reply *out)
{
    for (size_t i = 0; i < http_nassets; i++) {
        if (strcmp(http_assets[i].path, req->path) != 0)
            continue;
        out->status = 200;
        out->content_type = http_assets[i].content_type;
        out->body = (uint8_t *)http_assets[i].data;
        out->len = http_assets[i].len;
        out->body_static = true;
        /* The files change with the binary only; revalidation is cheap with an ETag of their
         * bytes (FNV-1a: a fraction of a millisecond for Leaflet's 150 KB). */
        {
            uint64_t hash = 0xcbf29ce484222325ull;
            for (size_t k = 0; k < http_assets[i].len; k++)
                hash = (hash ^ http_assets[i].data[k]) * 0x100000001b3ull;
            snprintf(out->etag, sizeof(out->etag), "\"%016llx\"", (unsigned long long)hash);
        }
        out->cache_control = "no-cache";
        if (req->if_none_match && strstr(req->if_none_match, out->etag)) {
            out->status = 304;
            out->len = 0;
        }
        return true;
    }
    return false;
}

/* Whether the path needs a token when tokens are on: everything but the probes and the viewer's
 * own files (which hold no data, and a browser cannot send a header when it opens a page). */
static bool needs_token(const struct http_req *req)
{
    return req->route != R_HEALTHZ && req->route != R_READYZ && req->route != R_VIEWER;
}

/* The route of a path, before the method is looked at. */
static enum http_route route_of(const char *path)
{
    if (strncmp(path, "/v1/tiles/", 10) == 0)
        return R_TILE;
    if (strcmp(path, "/v1/render") == 0)
        return R_RENDER;
    if (strcmp(path, "/v1/jobs") == 0 || strncmp(path, "/v1/jobs/", 9) == 0)
        return R_JOB_GET; /* refined by jobs_route */
    if (strcmp(path, "/v1/devices") == 0)
        return R_DEVICES;
    if (strcmp(path, "/v1/stats") == 0)
        return R_STATS;
    if (strcmp(path, "/healthz") == 0)
        return R_HEALTHZ;
    if (strcmp(path, "/readyz") == 0)
        return R_READYZ;
    if (strcmp(path, "/metrics") == 0)
        return R_METRICS;
    for (size_t i = 0; i < http_nassets; i++)
        if (strcmp(http_assets[i].path, path) == 0)
            return R_VIEWER;
    return R_OTHER;
}

void http_handle(http_server *h, struct http_req *req, struct http_reply *out)
{
    bool head = strcmp(req->method, "HEAD") == 0;
    const char *method = req->method;
    char msg[200];
    int err;

    /* HEAD is answered as GET; the listener sends the headers only. */
    if (head)
        req->method = "GET";
    req->route = route_of(req->path);
    req->auth = "none";
    if (req->too_many_args) {
        http_error(out, ERR_INVALID, "too many query parameters (at most %d)", HTTP_MAX_ARGS);
        goto done;
    }
    switch (req->route) {
    case R_HEALTHZ:
        reply_static(out, 200, "application/json", "{\"status\": \"SERVING\"}\n");
        goto done;
    case R_READYZ:
        if (atomic_load(&h->draining))
            http_error(out, ERR_UNAVAILABLE, "server is shutting down");
        else
            reply_static(out, 200, "application/json", "{\"status\": \"SERVING\"}\n");
        goto done;
    case R_VIEWER:
        if (strcmp(req->method, "GET") != 0) {
            http_error(out, HTTP_ERR_METHOD, "%s %s: use GET", method, req->path);
            out->allow = "GET, HEAD";
        } else {
            serve_asset(req, out);
        }
        goto done;
    case R_OTHER:
        http_error(out, ERR_NOT_FOUND, "no such path: %.200s (see GET / for the viewer, /v1/... for the API)", req->path);
        goto done;
    default:
        break;
    }
    /* Everything below uses the gRPC server's state: refused once the drain has begun. */
    if (!http_rpc_enter(h)) {
        http_error(out, ERR_UNAVAILABLE, "server is shutting down");
        goto done;
    }
    if (needs_token(req)) {
        err = rpc_server_check_token(h->rpc, req->authorization, req->client_id, msg, sizeof(msg));
        if (err < 0) {
            http_rpc_leave(h);
            http_error(out, err, "%s", msg);
            goto done;
        }
        if (err == 0) {
            req->auth = "token";
            snprintf(req->client_key, sizeof(req->client_key), "token:%s", req->client_id);
        }
    }
    switch (req->route) {
    case R_TILE: tile_route(h, req, out); break;
    case R_RENDER: render_route(h, req, out); break;
    case R_JOB_GET: jobs_route(h, req, req->path + (strlen(req->path) > 8 ? 9 : 8), out); break;
    case R_DEVICES:
    case R_STATS:
    case R_METRICS:
        if (strcmp(req->method, "GET") != 0) {
            http_error(out, HTTP_ERR_METHOD, "%s %s: use GET", method, req->path);
            out->allow = "GET, HEAD";
        } else if (req->route == R_METRICS) {
            metrics_route(h, out);
        } else {
            info_route(h, req, req->route == R_STATS, out);
        }
        break;
    default:
        break;
    }
    if (!req->rpc_left)
        http_rpc_leave(h);
done:
    req->method = method;
}
