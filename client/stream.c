/* stream.c: streamed images (RenderStream and FetchJobResult): the events checked as they arrive
 * and handed to the caller's callbacks, or written straight into an atomically renamed file. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* strdup */
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* What fractal_render_stream hands out: the public result, then what it borrows from. */
typedef struct stream_result_impl {
    fractal_stream_result pub;
    char *content_type;
    Fractal__V1__RenderEvent *done;   /* the final event, holding the stats */
} stream_result_impl;

/* The state of one streamed image, across the attempts of one call. */
typedef struct stream_state {
    fr_stream_handler h;              /* h.ctx points back here */
    fractal_client *client;
    const fractal_stream_callbacks *cbs;
    const char *what;                 /* "write callback" etc., for the cancel message */
    fractal_progress progress;
    char *content_type;               /* from the first chunk */
    uint32_t width, height;
    Fractal__V1__RenderEvent *done;   /* kept once it arrives */
} stream_state;

static void state_reset(void *ctx)
{
    stream_state *s = ctx;

    memset(&s->progress, 0, sizeof s->progress);
    free(s->content_type);
    s->content_type = NULL;
    s->width = s->height = 0;
    if (s->done)
        protobuf_c_message_free_unpacked(&s->done->base, NULL);
    s->done = NULL;
}

static int report_progress(stream_state *s)
{
    if (s->cbs->progress && s->cbs->progress(&s->progress, s->cbs->payload) != 0)
        return client_error(s->client, FRACTAL_ECANCELLED, "cancelled by the progress callback");
    return 0;
}

static int on_chunk(stream_state *s, const Fractal__V1__ImageChunk *ch)
{
    fractal_client *c = s->client;
    fractal_chunk pub;
    const char *ctype = ch->content_type ? ch->content_type : "";

    if (ch->offset != s->progress.bytes_received)
        return client_error(c, FRACTAL_EPROTOCOL, "image chunk at byte %llu, expected one at byte %llu",
                            (unsigned long long)ch->offset, (unsigned long long)s->progress.bytes_received);
    if (s->content_type == NULL) {
        if ((s->content_type = strdup(ctype)) == NULL)
            return client_error(c, FRACTAL_ENOMEM, "out of memory");
        s->width = ch->width;
        s->height = ch->height;
    } else if (strcmp(s->content_type, ctype) != 0 || s->width != ch->width || s->height != ch->height) {
        return client_error(c, FRACTAL_EPROTOCOL, "image chunk at byte %llu describes another image "
                            "(%s %ux%u, not %s %ux%u)", (unsigned long long)ch->offset, ctype, ch->width,
                            ch->height, s->content_type, s->width, s->height);
    }
    pub.offset = ch->offset;
    pub.data = ch->data.data;
    pub.size = ch->data.len;
    pub.content_type = s->content_type;
    pub.width = s->width;
    pub.height = s->height;
    /* From here on the caller holds part of the image: the call can no longer be repeated. */
    s->h.committed = 1;
    if (s->cbs->write(&pub, s->cbs->payload) != 0) {
        /* The file sink leaves its own, more precise message and code. */
        if (s->what == NULL)
            return FRACTAL_EIO;
        return client_error(c, FRACTAL_ECANCELLED, "cancelled by the %s", s->what);
    }
    s->progress.bytes_received += ch->data.len;
    return report_progress(s);
}

static int on_event(void *ctx, Fractal__V1__RenderEvent *ev, int *keep)
{
    stream_state *s = ctx;
    fractal_client *c = s->client;
    const Fractal__V1__Progress *p;

    if (s->done)
        return client_error(c, FRACTAL_EPROTOCOL, "server sent an event after the final one");
    switch (ev->event_case) {
    case FRACTAL__V1__RENDER_EVENT__EVENT_PROGRESS:
        p = ev->progress;
        s->progress.rows_done = p->rows_done;
        s->progress.rows_total = p->rows_total;
        s->progress.samples_done = p->samples_done;
        s->progress.samples_total = p->samples_total;
        s->progress.queue_position = p->queue_position;
        return report_progress(s);
    case FRACTAL__V1__RENDER_EVENT__EVENT_CHUNK:
        return on_chunk(s, ev->chunk);
    case FRACTAL__V1__RENDER_EVENT__EVENT_DONE:
        s->done = ev;
        *keep = 1;
        return 0;
    default:
        /* An event kind newer than this library: skip it, as proto3 readers do. */
        return 0;
    }
}

/* After status OK: the stream must have ended with its final event, and a raw image must be whole
 * (raw formats have no header, so the size is the only check). */
static int state_finish(void *ctx)
{
    stream_state *s = ctx;
    fractal_client *c = s->client;
    const char *ctype = s->content_type ? s->content_type : "";

    if (s->done == NULL)
        return client_error(c, FRACTAL_EPROTOCOL, "stream ended without its final event");
    if (s->done->done == NULL)
        return client_error(c, FRACTAL_EPROTOCOL, "final event without statistics");
    if (s->content_type == NULL)
        return client_error(c, FRACTAL_EPROTOCOL, "stream ended without any image data");
    if (strcmp(ctype, "application/octet-stream") == 0 &&
        (uint64_t)s->width * s->height * 4 != s->progress.bytes_received)
        return client_error(c, FRACTAL_EPROTOCOL, "raw image of %ux%u pixels arrived with %llu bytes, not %llu",
                            s->width, s->height, (unsigned long long)s->progress.bytes_received,
                            (unsigned long long)s->width * s->height * 4);
    return 0;
}

static void state_init(stream_state *s, fractal_client *c, const fractal_stream_callbacks *cbs,
                       const char *what)
{
    memset(s, 0, sizeof *s);
    s->h.event = on_event;
    s->h.reset = state_reset;
    s->h.finish = state_finish;
    s->h.ctx = s;
    s->client = c;
    s->cbs = cbs;
    s->what = what;
}

/* Hands the finished stream's description to *out (when wanted) and frees the state. */
static int state_result(fractal_stream_result **out, stream_state *s, int err)
{
    stream_result_impl *r;

    if (err == 0 && out) {
        if ((r = calloc(1, sizeof *r)) == NULL) {
            err = client_error(s->client, FRACTAL_ENOMEM, "out of memory");
        } else {
            r->content_type = s->content_type;
            r->done = s->done;
            s->content_type = NULL;
            s->done = NULL;
            r->pub.size = s->progress.bytes_received;
            r->pub.content_type = r->content_type;
            r->pub.width = s->width;
            r->pub.height = s->height;
            fr_stats_from_wire(&r->pub.stats, r->done->done);
            *out = &r->pub;
        }
    }
    state_reset(s);
    return err;
}

static int check_callbacks(fractal_client *client, const fractal_stream_callbacks *cbs, const char *fn)
{
    if (cbs == NULL || cbs->write == NULL)
        return client_error(client, FRACTAL_EINVAL, "%s: no write callback", fn);
    if (cbs->version != FRACTAL_STREAM_CALLBACKS_VERSION)
        return client_error(client, FRACTAL_EINVAL, "%s: callbacks version %u is not supported (this library: %u)",
                            fn, cbs->version, FRACTAL_STREAM_CALLBACKS_VERSION);
    return 0;
}

/* Streams `method` with req into cbs. `what` names the callback in cancel messages; NULL marks the
 * library's own file sink, whose failures are I/O errors with their own message. */
static int stream_to_callbacks(fractal_stream_result **out, fractal_client *client, enum fr_method method,
                               const ProtobufCMessage *req, const fractal_stream_callbacks *cbs, const char *what)
{
    stream_state s;
    int err;

    state_init(&s, client, cbs, what);
    err = fr_call_stream(client, method, req, &s.h, 1);
    return state_result(out, &s, err);
}

static int render_stream(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
                         const fractal_stream_callbacks *cbs, const char *what)
{
    const fractal_render_options defaults = FRACTAL_RENDER_OPTIONS_INIT;
    opts_wire *wire;
    int err;

    if (opts == NULL)
        opts = &defaults;
    if ((err = opts_check(opts, fr_client_errbuf(client), FR_ERROR_MAX)) < 0)
        return err;
    if ((wire = malloc(sizeof *wire)) == NULL)
        return client_error(client, FRACTAL_ENOMEM, "out of memory");
    opts_to_request(wire, opts);
    err = stream_to_callbacks(out, client, FR_M_RENDER_STREAM, &wire->req.base, cbs, what);
    free(wire);
    return err;
}

int fractal_render_stream(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
                          const fractal_stream_callbacks *cbs)
{
    int err;

    if (out)
        *out = NULL;
    if (client == NULL)
        return FRACTAL_EINVAL;
    if ((err = check_callbacks(client, cbs, "fractal_render_stream")) < 0)
        return err;
    return render_stream(out, client, opts, cbs, "write callback");
}

static int fetch(fractal_stream_result **out, fractal_client *client, const char *id,
                 const fractal_stream_callbacks *cbs, const char *what)
{
    Fractal__V1__JobRef ref = FRACTAL__V1__JOB_REF__INIT;

    ref.id = (char *)id; /* read only by the packer */
    return stream_to_callbacks(out, client, FR_M_FETCH_JOB_RESULT, &ref.base, cbs, what);
}

int fractal_job_fetch(fractal_stream_result **out, fractal_client *client, const char *id,
                      const fractal_stream_callbacks *cbs)
{
    int err;

    if (out)
        *out = NULL;
    if (client == NULL)
        return FRACTAL_EINVAL;
    if (id == NULL)
        return client_error(client, FRACTAL_EINVAL, "fractal_job_fetch: id is NULL");
    if ((err = check_callbacks(client, cbs, "fractal_job_fetch")) < 0)
        return err;
    return fetch(out, client, id, cbs, "write callback");
}

/* ---- into a file ----------------------------------------------------------------------------- */

typedef struct file_sink {
    fractal_client *client;
    int fd;
    char *tmp;
    fractal_progress_cb progress;
    void *payload;
} file_sink;

static int file_write(const fractal_chunk *chunk, void *payload)
{
    file_sink *f = payload;

    if (fr_write_all(f->fd, chunk->data, chunk->size) < 0) {
        client_error(f->client, FRACTAL_EIO, "%s: %s", f->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

static int file_progress(const fractal_progress *progress, void *payload)
{
    file_sink *f = payload;

    return f->progress ? f->progress(progress, f->payload) : 0;
}

/* Runs a stream (a render when opts_or_null is set or id is NULL, else a job fetch) into a
 * temporary file beside path and renames it over path once whole. Retries of the stream happen
 * only before the first byte (see fr_call_stream), so the file never needs rewinding. */
static int stream_to_file(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
                          const char *id, const char *path, fractal_progress_cb progress, void *payload)
{
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_stream_result *result = NULL;
    file_sink f;
    int err;

    f.client = client;
    f.progress = progress;
    f.payload = payload;
    if ((err = fr_tmpfile_open(&f.fd, &f.tmp, path, fr_client_errbuf(client), FR_ERROR_MAX)) < 0)
        return err;
    cbs.write = file_write;
    cbs.progress = file_progress;
    cbs.payload = &f;
    if (id == NULL)
        err = render_stream(&result, client, opts, &cbs, NULL);
    else
        err = fetch(&result, client, id, &cbs, NULL);
    if (err < 0) {
        fr_tmpfile_abort(f.fd, f.tmp);
        return err;
    }
    if ((err = fr_tmpfile_commit(f.fd, f.tmp, path, fr_client_errbuf(client), FR_ERROR_MAX)) < 0) {
        fractal_stream_result_free(result);
        return err;
    }
    if (out)
        *out = result;
    else
        fractal_stream_result_free(result);
    return 0;
}

int fractal_render_stream_to_file(fractal_stream_result **out, fractal_client *client,
                                  const fractal_render_options *opts, const char *path,
                                  fractal_progress_cb progress, void *payload)
{
    if (out)
        *out = NULL;
    if (client == NULL)
        return FRACTAL_EINVAL;
    if (path == NULL || path[0] == '\0')
        return client_error(client, FRACTAL_EINVAL, "fractal_render_stream_to_file: no path");
    return stream_to_file(out, client, opts, NULL, path, progress, payload);
}

int fractal_job_fetch_to_file(fractal_stream_result **out, fractal_client *client, const char *id,
                              const char *path, fractal_progress_cb progress, void *payload)
{
    if (out)
        *out = NULL;
    if (client == NULL)
        return FRACTAL_EINVAL;
    if (id == NULL)
        return client_error(client, FRACTAL_EINVAL, "fractal_job_fetch_to_file: id is NULL");
    if (path == NULL || path[0] == '\0')
        return client_error(client, FRACTAL_EINVAL, "fractal_job_fetch_to_file: no path");
    return stream_to_file(out, client, NULL, id, path, progress, payload);
}

void fractal_stream_result_free(fractal_stream_result *result)
{
    stream_result_impl *r = (stream_result_impl *)result;

    if (r == NULL)
        return;
    free(r->content_type);
    if (r->done)
        protobuf_c_message_free_unpacked(&r->done->base, NULL);
    free(r);
}
