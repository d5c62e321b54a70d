/* rpc_render.c: Render (one image in one reply) and RenderStream (progress events and the image in
 * chunks of at most 1 MiB, emitted as row bands finish). Both are validated on the completion-queue
 * thread and computed on a render worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "log.h"
#include "request.h"
#include "rpc_call.h"
#include "rpc_handlers.h"

/* Largest ImageChunk payload (the contract's bound). */
#define CHUNK_BYTES (1u << 20)

/* Bands of a stream: about a million samples, so the first chunk leaves long before the last row
 * of a big image is computed, while each band still keeps every engine thread busy. */
#define STREAM_BAND_SAMPLES (1u << 20)

static void run_render(struct call *c);
static void run_stream(struct call *c);
static bool reply_from_cache(struct call *c);

void rpc_render_accept(struct call *c)
{
    rpc_server *srv = c->srv;
    Fractal__V1__RenderRequest *req = NULL;
    char msg[512] = "";
    unsigned retry_after = 0;
    int err;

    req = (Fractal__V1__RenderRequest *)rpc_unpack(&fractal__v1__render_request__descriptor, c->payload, msg,
                                                   sizeof(msg));
    if (!req) {
        err = ERR_INVALID;
        goto fail;
    }
    err = request_to_spec(&c->spec, &c->device_index, req, &srv->cfg->limits, srv->devs,
                          c->method == M_RENDER_STREAM, msg, sizeof(msg));
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (err < 0)
        goto fail;
    rpc_spec_summary(c->summary, sizeof(c->summary), &c->spec);
    if (c->method == M_RENDER && reply_from_cache(c))
        return;
    c->run = c->method == M_RENDER_STREAM ? run_stream : run_render;
    /* Samples x max_iter, plus a deep view's reference orbit. */
    if ((err = rpc_queue_work(c, request_cost(&c->spec), msg, sizeof(msg), &retry_after)) < 0)
        goto fail;
    return;

fail:
    rpc_log_call(c, err, msg, c->summary);
    rpc_finish(c, err, msg, NULL, retry_after);
}

/* Fills stats from a finished render; device_ids (room for 64) receives the devices' ids. */
static void fill_stats(Fractal__V1__RenderStats *stats, char **device_ids, const struct call *c,
                       const struct render_stats *st, uint64_t devices_used, double queue_ms)
{
    stats->iterations = st->iterations;
    stats->queue_ms = queue_ms;
    stats->compute_ms = st->compute_ms;
    stats->encode_ms = st->encode_ms;
    stats->total_ms = render_now_ms() - c->t_accept;
    stats->n_devices = rpc_device_ids(device_ids, 64, c->srv->devs, devices_used);
    stats->devices = device_ids;
    stats->precision = (Fractal__V1__Precision)c->spec.precision;
    stats->tiles = st->tiles;
    stats->samples = st->samples;
}

/* ---- Render ---- */

/* The image cache (imgcache.h), shared with the HTTP front end: the key is the resolved request,
 * so every request for the same image finds it whatever defaults it left out. A hit is answered
 * here, on the completion-queue thread, without a queue place; returns whether it was. */
static bool reply_from_cache(struct call *c)
{
    struct imgcache_hit hit;
    bool found;

    if (!imgcache_enabled(c->srv->cache) || request_json_from_spec(&c->cache_key, &c->spec) < 0)
        return false;
    found = imgcache_get(c->srv->cache, &hit, c->cache_key) == 1;
    if (!found)
        return false;
    {
        Fractal__V1__RenderResponse resp = FRACTAL__V1__RENDER_RESPONSE__INIT;
        Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
        char extra[512];

        /* What the render that made it did; nothing was computed now. */
        stats.iterations = hit.meta.iterations;
        stats.samples = hit.meta.samples;
        stats.tiles = hit.meta.tiles;
        stats.precision = (Fractal__V1__Precision)c->spec.precision;
        stats.total_ms = render_now_ms() - c->t_accept;
        resp.data.data = (uint8_t *)hit.data;
        resp.data.len = hit.len;
        resp.content_type = (char *)encode_content_type(c->spec.format);
        resp.width = c->spec.region.width;
        resp.height = c->spec.region.height;
        resp.stats = &stats;
        resp.format = (Fractal__V1__Format)c->spec.format;
        snprintf(extra, sizeof(extra), "%s", c->summary);
        log_kv(extra, sizeof(extra), "cache", "hit");
        log_kvf(extra, sizeof(extra), "bytes", "%zu", hit.len);
        rpc_log_call(c, 0, NULL, extra);
        rpc_finish(c, 0, NULL, rpc_pack(&resp.base), 0);
    }
    imgcache_release(c->srv->cache, &hit);
    return true;
}

/* Keeps a finished unary render's image for the next identical request. */
static void store_in_cache(struct call *c, const uint8_t *data, size_t len, const struct render_stats *st)
{
    struct imgcache_meta meta = {st->iterations, st->samples, st->tiles, c->spec.region.width,
                                 c->spec.region.height, (int)c->spec.precision, (int)c->spec.format};
    if (!imgcache_enabled(c->srv->cache) || !c->cache_key)
        return;
    imgcache_put(c->srv->cache, c->cache_key, data, len, &meta);
}

/* Collects the encoded image for a unary reply, refusing to grow past the message limit. */
struct reply_buffer {
    uint8_t *data;
    size_t len, cap, limit;
    char msg[256];
};

static int reply_sink(void *ctx, const void *data, size_t len)
{
    struct reply_buffer *b = ctx;

    if (b->len + len > b->limit) {
        snprintf(b->msg, sizeof(b->msg),
                 "the encoded image exceeds the %zu-byte message limit; use RenderStream, a region, "
                 "or a smaller image", b->limit);
        return ERR_EXHAUSTED;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        uint8_t *p;
        while (cap < b->len + len)
            cap *= 2;
        if (!(p = realloc(b->data, cap)))
            return ERR_NOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Appends the outcome of a finished render to the call's summary fields (extra holds the summary). */
static void render_log_fields(char *extra, size_t cap, size_t n_devices, double queue_ms,
                              const struct render_stats *st, uint64_t bytes)
{
    log_kvf(extra, cap, "devices", "%zu", n_devices);
    log_kvf(extra, cap, "queue_ms", "%.2f", queue_ms);
    log_kvf(extra, cap, "compute_ms", "%.2f", st->compute_ms);
    log_kvf(extra, cap, "encode_ms", "%.2f", st->encode_ms);
    log_kvf(extra, cap, "bytes", "%llu", (unsigned long long)bytes);
    log_kvf(extra, cap, "iter", "%llu", (unsigned long long)st->iterations);
}

static void run_render(struct call *c)
{
    rpc_server *srv = c->srv;
    struct sched_call call = {srv->sched, 0, ""};
    struct reply_buffer buf = {0};
    struct render_stats st;
    char msg[512] = "", extra[512];
    char *json = NULL;
    bool png;
    double queue_ms = render_now_ms() - c->t_accept;
    grpc_byte_buffer *reply = NULL;
    int err;

    /* Reserve room for the RenderResponse around the image bytes. */
    buf.limit = srv->cfg->limits.max_message_bytes > 4096 ? srv->cfg->limits.max_message_bytes - 4096 : 0;
    snprintf(extra, sizeof(extra), "%s", c->summary);
    if (atomic_load(&c->cancelled)) {
        err = ERR_CANCELLED;
        snprintf(msg, sizeof(msg), "cancelled while queued");
        goto done;
    }
    /* The cache key is the very JSON request_text_for_image writes for a PNG: one, not two. */
    png = c->spec.format == SPEC_PNG || c->spec.format == SPEC_PNG16;
    if (!(png && c->cache_key) && (err = request_text_for_image(&json, &c->spec)) < 0) {
        snprintf(msg, sizeof(msg), "cannot write the request chunk: %s", err_name(err));
        goto done;
    }
    {
        struct render_io io = {sched_compute, &call, reply_sink, &buf, NULL, NULL, &c->cancelled, 0};
        const char *text = png && c->cache_key ? c->cache_key : json;
        if ((err = render_run(&st, &io, &c->spec, text, msg, sizeof(msg))) < 0) {
            if (buf.msg[0])
                snprintf(msg, sizeof(msg), "%s", buf.msg);
            else if (call.msg[0])
                snprintf(msg, sizeof(msg), "%s", call.msg);
            goto done;
        }
    }
    {
        Fractal__V1__RenderResponse resp = FRACTAL__V1__RENDER_RESPONSE__INIT;
        Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
        char *device_ids[64];

        fill_stats(&stats, device_ids, c, &st, call.devices_used, queue_ms);
        resp.data.data = buf.data;
        resp.data.len = buf.len;
        resp.content_type = (char *)encode_content_type(c->spec.format);
        resp.width = c->spec.region.width;
        resp.height = c->spec.region.height;
        resp.stats = &stats;
        resp.format = (Fractal__V1__Format)c->spec.format;
        reply = rpc_pack(&resp.base);
        store_in_cache(c, buf.data, buf.len, &st);
        if (LOG_INFO >= log_min_level) /* the line is only written at info */
            render_log_fields(extra, sizeof(extra), stats.n_devices, queue_ms, &st, buf.len);
    }
done:
    rpc_log_call(c, err, msg, extra);
    rpc_finish(c, err, msg, reply, 0);
    free(json);
    free(buf.data);
}

/* ---- RenderStream ---- */

/* Batches encoded bytes into chunks of at most CHUNK_BYTES and sends them; also sends progress. */
struct stream_state {
    struct call *call;
    uint8_t *chunk;
    size_t len;
    uint64_t offset;            /* of chunk[0] in the encoded image */
    int err;                    /* first send failure */
};

static int send_chunk(struct stream_state *s)
{
    Fractal__V1__RenderEvent ev = FRACTAL__V1__RENDER_EVENT__INIT;
    Fractal__V1__ImageChunk chunk = FRACTAL__V1__IMAGE_CHUNK__INIT;
    const struct render_spec *spec = &s->call->spec;
    int err;

    if (s->len == 0)
        return 0;
    chunk.offset = s->offset;
    chunk.data.data = s->chunk;
    chunk.data.len = s->len;
    chunk.content_type = (char *)encode_content_type(spec->format);
    chunk.width = spec->region.width;
    chunk.height = spec->region.height;
    ev.event_case = FRACTAL__V1__RENDER_EVENT__EVENT_CHUNK;
    ev.chunk = &chunk;
    /* rpc_stream_send packs the message into its own buffer before returning, so the chunk
     * buffer can be refilled at once. */
    if ((err = rpc_stream_send(s->call, &ev.base)) < 0)
        return s->err = err;
    s->offset += s->len;
    s->len = 0;
    return 0;
}

static int stream_sink(void *ctx, const void *data, size_t len)
{
    struct stream_state *s = ctx;
    const uint8_t *p = data;
    int err;

    while (len > 0) {
        size_t n = CHUNK_BYTES - s->len < len ? CHUNK_BYTES - s->len : len;
        memcpy(s->chunk + s->len, p, n);
        s->len += n;
        p += n;
        len -= n;
        if (s->len == CHUNK_BYTES && (err = send_chunk(s)) < 0)
            return err;
    }
    return 0;
}

/* After each band: what the encoder produced so far goes out, then a progress event, so a client
 * sees bytes and progress as rows finish, not when the image is done. */
static void stream_progress(void *ctx, uint32_t rows_done, uint32_t rows_total, uint64_t samples_done)
{
    struct stream_state *s = ctx;
    const struct render_spec *spec = &s->call->spec;
    Fractal__V1__RenderEvent ev = FRACTAL__V1__RENDER_EVENT__INIT;
    Fractal__V1__Progress progress = FRACTAL__V1__PROGRESS__INIT;

    if (s->err || send_chunk(s) < 0)
        return;
    progress.rows_done = rows_done;
    progress.rows_total = rows_total;
    progress.samples_done = samples_done;
    progress.samples_total = (uint64_t)spec->region.width * spec->region.height * spec->supersample *
                             spec->supersample;
    ev.event_case = FRACTAL__V1__RENDER_EVENT__EVENT_PROGRESS;
    ev.progress = &progress;
    if (rpc_stream_send(s->call, &ev.base) < 0)
        s->err = ERR_CANCELLED;
}

static void run_stream(struct call *c)
{
    rpc_server *srv = c->srv;
    struct sched_call call = {srv->sched, 0, ""};
    struct stream_state s = {c, NULL, 0, 0, 0};
    struct render_stats st;
    char msg[512] = "", extra[512];
    char *json = NULL;
    double queue_ms = render_now_ms() - c->t_accept;
    int err;

    snprintf(extra, sizeof(extra), "%s", c->summary);
    if (atomic_load(&c->cancelled)) {
        err = ERR_CANCELLED;
        snprintf(msg, sizeof(msg), "cancelled while queued");
        goto done;
    }
    if (!(s.chunk = malloc(CHUNK_BYTES))) {
        err = ERR_NOMEM;
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }
    if ((err = request_text_for_image(&json, &c->spec)) < 0) {
        snprintf(msg, sizeof(msg), "cannot write the request chunk: %s", err_name(err));
        goto done;
    }
    {
        struct render_io io = {sched_compute, &call, stream_sink, &s, stream_progress, &s,
                               &c->cancelled, STREAM_BAND_SAMPLES};
        err = render_run(&st, &io, &c->spec, json, msg, sizeof(msg));
        if (err < 0 && call.msg[0])
            snprintf(msg, sizeof(msg), "%s", call.msg);
    }
    if (err == 0)
        err = send_chunk(&s);
    if (err == 0 && s.err)
        err = s.err;
    if (err < 0) {
        if (!msg[0])
            snprintf(msg, sizeof(msg), "%s", err == ERR_CANCELLED ? "render cancelled" : err_name(err));
        goto done;
    }
    {
        Fractal__V1__RenderEvent ev = FRACTAL__V1__RENDER_EVENT__INIT;
        Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
        char *device_ids[64];

        fill_stats(&stats, device_ids, c, &st, call.devices_used, queue_ms);
        ev.event_case = FRACTAL__V1__RENDER_EVENT__EVENT_DONE;
        ev.done = &stats;
        if ((err = rpc_stream_send(c, &ev.base)) < 0) {
            snprintf(msg, sizeof(msg), "stream cancelled");
            goto done;
        }
        if (LOG_INFO >= log_min_level)
            render_log_fields(extra, sizeof(extra), stats.n_devices, queue_ms, &st, s.offset);
    }
done:
    rpc_log_call(c, err, msg, extra);
    rpc_finish(c, err, msg, NULL, 0);
    free(json);
    free(s.chunk);
}
