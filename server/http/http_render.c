/* http_render.c: an image over HTTP: the request validated as gRPC validates it, a strong ETag
 * from the resolved request (304 without rendering when the client has it), the shared image
 * cache, then the render queued on the gRPC server's render workers while the connection's thread
 * waits, cancelling it if the client closes the connection. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encode.h"
#include "err.h"
#include "http_internal.h"
#include "render.h"
#include "request.h"

/* How often a waiting request looks at its connection: a closed one cancels its render within
 * this, plus the tile the engines are on. */
#define WAIT_POLL_MS 20

/* Tiles are immutable (the URL names every input); a day is what browsers and proxies keep.
 * Behind tokens only the client's own cache may keep them: "public" would let a shared cache
 * hand an authenticated reply to anyone. */
#define TILE_CACHE_CONTROL "public, max-age=86400, immutable"
#define TILE_CACHE_CONTROL_PRIVATE "private, max-age=86400, immutable"

/* One render handed to a render worker; the waiting thread owns it and frees it once done. */
struct render_job {
    struct render_spec spec;
    sched *sched;
    atomic_int cancel;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int err;
    char msg[512];
    struct render_stats st;
    uint64_t devices_used;
    /* The PNG's request text: the cache key itself (request_text_for_image writes that very
     * JSON for the PNG formats), borrowed from http_render; NULL for the raw formats. */
    const char *text;
    /* The encoded image, at most `limit` bytes (--max-message-bytes, as a unary Render). */
    uint8_t *data;
    size_t len, cap, limit;
    bool over_limit;
};

static int job_sink(void *ctx, const void *data, size_t len)
{
    struct render_job *j = ctx;

    if (j->len + len > j->limit) {
        j->over_limit = true;
        return ERR_EXHAUSTED;
    }
    if (j->len + len > j->cap) {
        size_t cap = j->cap ? j->cap : 64 * 1024;
        uint8_t *p;
        while (cap < j->len + len)
            cap *= 2;
        if (!(p = realloc(j->data, cap)))
            return ERR_NOMEM;
        j->data = p;
        j->cap = cap;
    }
    memcpy(j->data + j->len, data, len);
    j->len += len;
    return 0;
}

/* On a render worker (rpc_server_queue_render): the render, then the waiting thread is told. */
static void run_job(void *ctx)
{
    struct render_job *j = ctx;
    struct sched_call call = {j->sched, 0, ""};
    int err;

    if (atomic_load(&j->cancel)) {
        err = ERR_CANCELLED;
        snprintf(j->msg, sizeof(j->msg), "cancelled while queued: the client closed the connection");
    } else {
        struct render_io io = {sched_compute, &call, job_sink, j, NULL, NULL, &j->cancel, 0};
        err = render_run(&j->st, &io, &j->spec, j->text, j->msg, sizeof(j->msg));
        if (err < 0 && j->over_limit)
            snprintf(j->msg, sizeof(j->msg), "the encoded image exceeds the %zu-byte reply limit "
                     "(--max-message-bytes); use a job (POST /v1/jobs), a region, or a smaller image", j->limit);
        else if (err < 0 && call.msg[0])
            snprintf(j->msg, sizeof(j->msg), "%s", call.msg);
        else if (err == ERR_CANCELLED)
            snprintf(j->msg, sizeof(j->msg), "render cancelled");
    }
    j->devices_used = call.devices_used;
    /* After the signal the waiting thread may free j: nothing of it is touched past the unlock. */
    pthread_mutex_lock(&j->lock);
    j->err = err;
    j->done = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
}

/* Waits for the render, polling the connection and the drain's deadline. */
static void wait_job(http_server *h, struct http_req *req, struct render_job *j)
{
    pthread_mutex_lock(&j->lock);
    while (!j->done) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += WAIT_POLL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->cond, &j->lock, &until);
        if (j->done || atomic_load(&j->cancel))
            continue;
        pthread_mutex_unlock(&j->lock);
        if (req->gone && req->gone(req->gone_ctx)) {
            atomic_store(&j->cancel, 1);
            atomic_fetch_add(&h->disconnect_cancels, 1);
        } else if (atomic_load(&h->draining) && render_now_ms() > (double)atomic_load(&h->drain_deadline_ms)) {
            atomic_store(&j->cancel, 1);
        }
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
}

/* 64-bit mix (the splitmix64 finaliser), so both halves of the tag depend on every input bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The strong ETag of an image: 128 bits over the resolved request and the renderer's version, so
 * the tag changes when either does and equal tags mean equal bytes. */
static void etag_of(char *out, size_t cap, const char *key)
{
    uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
    const char *parts[3] = {key, "\n", FRACTALD_VERSION};

    for (int p = 0; p < 3; p++)
        for (const char *s = parts[p]; *s; s++) {
            a = (a ^ (unsigned char)*s) * 0x100000001b3ull;
            b = (b ^ (unsigned char)*s) * 0x00000100000001b3ull + 0x9e3779b97f4a7c15ull;
        }
    snprintf(out, cap, "\"%016llx%016llx\"", (unsigned long long)mix64(a), (unsigned long long)mix64(b ^ a));
}

/* Whether an If-None-Match value lists tag (or is "*"). Weak tags (W/"...") match too, as
 * RFC 9110 has If-None-Match compare weakly. */
static bool etag_matches(const char *header, const char *tag)
{
    const char *p = header;

    if (!header)
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strcmp(p, "*") == 0)
        return true;
    for (; (p = strstr(p, tag)) != NULL; p++) {
        const char *after = p + strlen(tag);
        if (*after == '\0' || *after == ',' || *after == ' ' || *after == '\t')
            return true;
    }
    return false;
}

void http_render(http_server *h, struct http_req *req, const Fractal__V1__RenderRequest *rr, bool tile,
                 struct http_reply *out)
{
    struct render_job *j = calloc(1, sizeof(*j));
    char msg[512] = "", *key = NULL;
    unsigned retry_ms = 0;
    int err, device_index;

    if (!j) {
        http_error(out, ERR_NOMEM, "out of memory");
        return;
    }
    pthread_mutex_init(&j->lock, NULL);
    {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&j->cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    if ((err = request_to_spec(&j->spec, &device_index, rr, &h->cfg->limits, h->devs, false, msg, sizeof(msg))) < 0) {
        http_error(out, err, "%s", msg);
        goto done;
    }
    if ((err = request_json_from_spec(&key, &j->spec)) < 0) {
        http_error(out, err, "cannot write the resolved request: %s", err_name(err));
        goto done;
    }
    etag_of(out->etag, sizeof(out->etag), key);
    if (strcmp(req->auth, "token") == 0)
        out->cache_control = tile ? TILE_CACHE_CONTROL_PRIVATE : "private, max-age=3600";
    else
        out->cache_control = tile ? TILE_CACHE_CONTROL : "public, max-age=3600";
    out->content_type = encode_content_type(j->spec.format);
    if (etag_matches(req->if_none_match, out->etag)) {
        out->status = 304;
        goto done;
    }
    if (imgcache_enabled(h->cache)) {
        out->cache = "miss";
        if (imgcache_get(h->cache, &out->hit, key) == 1) {
            out->cache = "hit";
            out->status = 200;
            goto done;
        }
    }
    j->sched = h->sched;
    j->limit = h->cfg->limits.max_message_bytes;
    /* The key is the resolved request's JSON: what a PNG carries (one JSON per tile, not two). */
    j->text = j->spec.format == SPEC_PNG || j->spec.format == SPEC_PNG16 ? key : NULL;
    /* The cost gRPC's Render charges: samples x max_iter, plus a deep view's reference orbit. */
    err = rpc_server_queue_render(h->rpc, req->client_key, request_cost(&j->spec), run_job, j, msg, sizeof(msg),
                                  &retry_ms);
    if (err < 0) {
        http_error(out, err, "%s", msg);
        if (err == ERR_EXHAUSTED)
            out->retry_after_s = retry_ms ? (retry_ms + 999) / 1000 : 1;
        goto done;
    }
    /* The wait uses nothing of the gRPC server: the drain need not wait for it (the render
     * workers finish the render, and rpc_server_stop waits for that). */
    http_rpc_leave(h);
    req->rpc_left = true;
    wait_job(h, req, j);
    if (j->err < 0) {
        http_error(out, j->err, "%s", j->msg);
        goto done;
    }
    {
        struct imgcache_meta meta = {j->st.iterations, j->st.samples, j->st.tiles, j->spec.region.width,
                                     j->spec.region.height, (int)j->spec.precision, (int)j->spec.format};
        imgcache_put(h->cache, key, j->data, j->len, &meta);
    }
    out->status = 200;
    out->body = j->data;
    out->len = j->len;
    j->data = NULL;
done:
    free(key);
    free(j->data);
    /* Releases a deep view and the reference orbit it holds attached (render_deep.c). */
    render_spec_dispose(&j->spec);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
