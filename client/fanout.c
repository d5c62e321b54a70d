/* fanout.c: one render over several servers (fractal_render_fanout): the image cut into bands of
 * rows, one thread and fractal_client per connection taking the next free band, bands re-sent to
 * another server when theirs fails, and a reorder window through which the caller's thread hands
 * the bands over in order (raw bytes as they come, PNG bands decoded and encoded again). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread_condattr_setclock, strdup */
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "proto_json.h"

/* Automatic band size: about this many bytes of raw pixels (4 per pixel), and at least
 * BANDS_PER_CONN bands per connection so that work stealing has something to even out. */
#define AUTO_BAND_BYTES ((size_t)2 << 20)
#define BANDS_PER_CONN 4
/* A server that fails this many bands in a row is dropped (one that lets a band time out, at once). */
#define DROP_AFTER 3
/* How often the writing thread wakes without news, to call the progress callback (which may
 * cancel). */
#define TICK_MS 200
/* Largest piece handed to the write callback (fractal_chunk's promise). */
#define CHUNK_MAX ((size_t)1 << 20)
#define PER_SERVER_MAX 16

enum band_state { BAND_TODO, BAND_BUSY, BAND_DONE };

typedef struct band {
    uint32_t y, rows;            /* full-image rows y .. y + rows - 1 */
    enum band_state state;
    unsigned sends;
    int avoid;                   /* the server that failed it last, or -1 */
    fractal_image *image;        /* BAND_DONE, until written: the server's reply */
} band;

typedef struct server_slot {
    fractal_fanout_server pub;
    unsigned fails_in_row;
} server_slot;

struct fanout;

typedef struct conn {
    struct fanout *f;
    int server;
    fractal_client *client;
    pthread_t thread;
    int started;
} conn;

typedef struct fanout {
    pthread_mutex_t lock;
    pthread_cond_t cond;         /* a band finished or failed, the window moved, or a failure */
    const fractal_render_options *opts;
    fractal_region area;         /* what is rendered: the region asked for, or the whole image */
    band *bands;
    uint32_t n_bands;
    uint32_t next_new;           /* first band never taken */
    uint32_t next_write;         /* first band not yet handed to the caller */
    uint32_t n_done;             /* bands rendered (written or waiting in the window) */
    uint32_t window;
    unsigned max_resends;
    server_slot *servers;
    size_t n_servers;
    size_t servers_left;         /* not dropped */
    uint32_t resent;
    uint64_t iterations, samples; /* sums of the bands' statistics */
    double compute_ms;
    int failed;                  /* the render's error once it must stop; else 0 */
    int last_err;                /* the last band failure, for when every server is gone */
    char last_msg[FR_ERROR_MAX];
    char *err;                   /* the caller's buffer */
    size_t errlen;
} fanout;

/* ---- the workers ----------------------------------------------------------------------------- */

/* Records the render's failure (the first one wins) and wakes everyone. Under f->lock. */
static void fail_locked(fanout *f, int err, const char *fmt, ...) FR_PRINTF(3, 4);
static void fail_locked(fanout *f, int err, const char *fmt, ...)
{
    va_list ap;
    char msg[FR_ERROR_MAX];

    if (f->failed == 0) {
        f->failed = err;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fr_errorf(f->err, f->errlen, err, "%s", msg);
    }
    pthread_cond_broadcast(&f->cond);
}

/* The band a connection to `server` should render next, or NULL when none may be taken now.
 * Bands sent back after a failure come first (the writer is waiting for the oldest), except to
 * the server that failed them while another is left; then a new band, if it lies inside the
 * window. Under f->lock. */
static band *take_band(fanout *f, int server)
{
    uint32_t i;

    for (i = f->next_write; i < f->next_new; i++) {
        band *b = &f->bands[i];
        if (b->state == BAND_TODO && (b->avoid != server || f->servers_left == 1))
            return b;
    }
    if (f->next_new < f->n_bands && f->next_new < f->next_write + f->window)
        return &f->bands[f->next_new++];
    return NULL;
}

/* Whether another server may well render a band this one failed: the server was unreachable,
 * busy, timed out, cut the call or sent something broken. A refusal of the request itself would
 * come back from every server. */
static int band_retryable(int err)
{
    switch (err) {
    case FRACTAL_EUNAVAILABLE:
    case FRACTAL_EDEADLINE:
    case FRACTAL_ERESOURCE_EXHAUSTED:
    case FRACTAL_ECANCELLED:
    case FRACTAL_EABORTED:
    case FRACTAL_EINTERNAL:
    case FRACTAL_EUNKNOWN:
    case FRACTAL_EDATA_LOSS:
    case FRACTAL_EPROTOCOL:
        return 1;
    default:
        return 0;
    }
}

/* Checks a band's reply against what was asked. Returns 0, FRACTAL_EPROTOCOL or
 * FRACTAL_EFAILED_PRECONDITION (rendered with perturbation, which bands cannot share), message on
 * the client. */
static int check_band(fractal_client *c, const fanout *f, const fractal_image *img, const band *b)
{
    if (img->stats.precision == FRACTAL_PRECISION_PERTURB || img->stats.precision == FRACTAL_PRECISION_PERTURB_EXTENDED)
        return client_error(c, FRACTAL_EFAILED_PRECONDITION,
                            "the server renders this view with perturbation (a deep view), which fan-out "
                            "cannot split: each band would have its own reference orbit");
    if (img->width != f->area.width || img->height != b->rows || img->format != f->opts->format)
        return client_error(c, FRACTAL_EPROTOCOL, "band of rows %u..%u came back as a %ux%u image of format %d",
                            b->y, b->y + b->rows - 1, img->width, img->height, (int)img->format);
    return 0;
}

/* Waits on f->cond for up to ms milliseconds. Under f->lock. */
static void wait_ms(fanout *f, uint32_t ms)
{
    struct timespec until;

    fr_monotonic_after(&until, ms);
    pthread_cond_timedwait(&f->cond, &f->lock, &until);
}

/* One connection's thread: takes bands until every band is rendered, the render failed, or its
 * server is dropped. */
static void *conn_main(void *arg)
{
    conn *c = arg;
    fanout *f = c->f;
    server_slot *s = &f->servers[c->server];
    fractal_render_options *o = malloc(sizeof *o);
    fractal_image *img;
    band *b;
    int err;

    pthread_mutex_lock(&f->lock);
    if (o == NULL)
        fail_locked(f, FRACTAL_ENOMEM, "out of memory");
    else
        *o = *f->opts;
    for (;;) {
        if (f->failed || s->pub.dropped || f->n_done == f->n_bands)
            break;
        if ((b = take_band(f, c->server)) == NULL) {
            pthread_cond_wait(&f->cond, &f->lock);
            continue;
        }
        b->state = BAND_BUSY;
        b->sends++;
        pthread_mutex_unlock(&f->lock);

        img = NULL;
        o->has_region = 1;
        o->region.x = f->area.x;
        o->region.y = b->y;
        o->region.width = f->area.width;
        o->region.height = b->rows;
        if ((err = fractal_render(&img, c->client, o)) == 0)
            err = check_band(c->client, f, img, b);

        pthread_mutex_lock(&f->lock);
        if (err == 0) {
            b->image = img;
            b->state = BAND_DONE;
            f->n_done++;
            s->pub.bands++;
            s->fails_in_row = 0;
            f->iterations += img->stats.iterations;
            f->samples += img->stats.samples;
            f->compute_ms += img->stats.compute_ms;
            pthread_cond_broadcast(&f->cond);
            continue;
        }
        fractal_image_free(img);
        b->state = BAND_TODO;
        if (f->failed)
            break; /* the writer stopped the render and cancelled this call */
        if (!band_retryable(err)) {
            fail_locked(f, err, "%s: %s", s->pub.address, fractal_client_last_error(c->client));
            break;
        }
        b->avoid = c->server;
        s->pub.failures++;
        f->resent++;
        f->last_err = err;
        snprintf(f->last_msg, sizeof f->last_msg, "%s: %s", s->pub.address, fractal_client_last_error(c->client));
        if (b->sends > f->max_resends) {
            fail_locked(f, err, "band of rows %u..%u failed %u times; the last time %s", b->y, b->y + b->rows - 1,
                        b->sends, f->last_msg);
            break;
        }
        /* A band that timed out says the server hangs (or is far too slow for the timeout): every
         * band it took next would hold the writer that long again, so it is dropped at once. */
        s->fails_in_row += err == FRACTAL_EDEADLINE ? DROP_AFTER : 1;
        if (s->fails_in_row >= DROP_AFTER && !s->pub.dropped) {
            s->pub.dropped = 1;
            if (--f->servers_left == 0)
                fail_locked(f, err, "every server failed; the last, %s", f->last_msg);
        }
        pthread_cond_broadcast(&f->cond);
        /* A server that just failed is given a moment before its next band, so that one which
         * refuses at once does not take every band the others free. */
        wait_ms(f, 50u * s->fails_in_row);
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    free(o);
    return NULL;
}

/* ---- the writer: the caller's thread -------------------------------------------------------- */

typedef struct writer {
    fanout *f;
    const fractal_stream_callbacks *cbs;
    const char *content_type;
    uint64_t offset;             /* bytes handed over */
    fr_png_writer *png;
    fractal_progress progress;
} writer;

/* Hands bytes to the caller's write callback, in pieces of at most CHUNK_MAX. */
static int emit(void *ctx, const unsigned char *data, size_t len)
{
    writer *w = ctx;
    fractal_chunk ch;

    while (len > 0) {
        ch.offset = w->offset;
        ch.data = data;
        ch.size = len < CHUNK_MAX ? len : CHUNK_MAX;
        ch.content_type = w->content_type;
        ch.width = w->f->area.width;
        ch.height = w->f->area.height;
        if (w->cbs->write(&ch, w->cbs->payload) != 0)
            return fr_errorf(w->f->err, w->f->errlen, FRACTAL_ECANCELLED, "cancelled by the write callback");
        w->offset += ch.size;
        w->progress.bytes_received = w->offset;
        data += ch.size;
        len -= ch.size;
    }
    return 0;
}

/* The request text of the whole image from a band's: the same resolved request, with the region
 * of the whole (none, when that is the full image), written by the same JSON encoder the server
 * uses, so that the text is the one a single server would have stored. */
static int whole_text(char **out, const fanout *f, const char *band_text)
{
    ProtobufCMessage *msg = NULL;
    Fractal__V1__RenderRequest *req;
    Fractal__V1__Region region = FRACTAL__V1__REGION__INIT;
    Fractal__V1__Region *band_region;
    int rc;

    *out = NULL;
    if (pjson_decode(&msg, &fractal__v1__render_request__descriptor, band_text, NULL, 0) != 0)
        return fr_errorf(f->err, f->errlen, FRACTAL_EPROTOCOL, "a band's request text chunk is not a RenderRequest");
    req = (Fractal__V1__RenderRequest *)msg;
    band_region = req->region;
    req->region = NULL;
    if (f->area.x != 0 || f->area.y != 0 || f->area.width != f->opts->width || f->area.height != f->opts->height) {
        region.x = f->area.x;
        region.y = f->area.y;
        region.width = f->area.width;
        region.height = f->area.height;
        req->region = &region;
    }
    rc = pjson_encode(out, msg);
    req->region = band_region; /* back, so that the free below frees what it allocated */
    protobuf_c_message_free_unpacked(msg, NULL);
    if (rc != 0)
        return fr_errorf(f->err, f->errlen, rc == PJSON_ERR_NOMEM ? FRACTAL_ENOMEM : FRACTAL_EPROTOCOL,
                         "cannot write the request text chunk");
    return 0;
}

/* Hands one band to the caller: raw bytes as they are; a PNG band decoded and its rows encoded
 * into the one PNG (started with the first band, whose text chunk gives the image's). */
static int write_band(writer *w, const band *b, const fractal_image *img)
{
    fanout *f = w->f;
    fr_png_band png;
    char *text = NULL;
    int err;

    if (f->opts->format == FRACTAL_FORMAT_RAW_U32 || f->opts->format == FRACTAL_FORMAT_RAW_F32)
        return emit(w, img->data, img->size);
    if ((err = fr_png_decode(&png, img->data, img->size, w->png == NULL)) < 0)
        return fr_errorf(f->err, f->errlen, err, "the band of rows %u..%u is not a PNG this client reads", b->y,
                         b->y + b->rows - 1);
    if (png.width != f->area.width || png.height != b->rows ||
        png.grey16 != (f->opts->format == FRACTAL_FORMAT_PNG16)) {
        err = fr_errorf(f->err, f->errlen, FRACTAL_EPROTOCOL, "the band of rows %u..%u is a %ux%u PNG", b->y,
                        b->y + b->rows - 1, png.width, png.height);
        goto done;
    }
    if (w->png == NULL) {
        if (png.text == NULL) {
            err = fr_errorf(f->err, f->errlen, FRACTAL_EPROTOCOL, "the first band has no request text chunk");
            goto done;
        }
        if ((err = whole_text(&text, f, png.text)) < 0)
            goto done;
        if ((err = fr_png_begin(&w->png, f->area.width, f->area.height, png.grey16, text, emit, w)) < 0)
            goto done;
    }
    err = fr_png_rows(w->png, png.rows, png.height);
done:
    if (err == FRACTAL_ENOMEM && f->err && f->errlen && f->err[0] == '\0')
        fr_errorf(f->err, f->errlen, err, "out of memory");
    free(text);
    fr_png_band_dispose(&png);
    return err;
}

static int report(writer *w)
{
    if (w->cbs->progress && w->cbs->progress(&w->progress, w->cbs->payload) != 0)
        return fr_errorf(w->f->err, w->f->errlen, FRACTAL_ECANCELLED, "cancelled by the progress callback");
    return 0;
}

/* Writes the bands in order as they finish, until all are written or the render failed. Returns 0
 * or the error (message in f->err). */
static int write_all(writer *w)
{
    fanout *f = w->f;
    fractal_image *img;
    band *b;
    int err = 0;

    w->progress.rows_total = f->area.height;
    pthread_mutex_lock(&f->lock);
    while (!f->failed && f->next_write < f->n_bands) {
        b = &f->bands[f->next_write];
        if (b->state != BAND_DONE) {
            wait_ms(f, TICK_MS);
            if (b->state == BAND_DONE || f->failed)
                continue;
            pthread_mutex_unlock(&f->lock);
            err = report(w);
            pthread_mutex_lock(&f->lock);
            if (err < 0)
                break;
            continue;
        }
        img = b->image;
        b->image = NULL;
        pthread_mutex_unlock(&f->lock);
        err = write_band(w, b, img);
        fractal_image_free(img);
        w->progress.rows_done += b->rows;
        if (err == 0)
            err = report(w);
        pthread_mutex_lock(&f->lock);
        if (err < 0)
            break;
        f->next_write++;
        pthread_cond_broadcast(&f->cond); /* the window moved on */
    }
    if (err < 0 && !f->failed) {
        f->failed = err; /* the message is in f->err already */
        pthread_cond_broadcast(&f->cond);
    }
    err = f->failed;
    pthread_mutex_unlock(&f->lock);
    if (err == 0 && w->png)
        err = fr_png_end(w->png);
    return err;
}

/* ---- setting up --------------------------------------------------------------------------- */

/* The client options of every connection: the caller's connection fields, one attempt per band
 * (re-sending is the scheduler's), one address each, the band timeout as the deadline. */
static int conn_options(fractal_client_options *out, const fractal_client_options *copts, uint32_t timeout_ms)
{
    fractal_client_options_init(out, FRACTAL_CLIENT_OPTIONS_VERSION);
    if (copts) {
        if (copts->version < 1 || copts->version > FRACTAL_CLIENT_OPTIONS_VERSION)
            return FRACTAL_EINVAL;
        out->deadline_ms = copts->deadline_ms;
        out->max_receive_bytes = copts->max_receive_bytes;
        if (copts->version >= 3) {
            out->tls = copts->tls;
            out->ca_file = copts->ca_file;
            out->cert_file = copts->cert_file;
            out->key_file = copts->key_file;
            out->token = copts->token;
        }
    }
    if (timeout_ms)
        out->deadline_ms = timeout_ms;
    out->max_attempts = 1;
    out->balance = FRACTAL_BALANCE_PICK_FIRST;
    return 0;
}

/* What fan-out refuses: what the library refuses anyway, and what bands cannot reproduce. */
static int check_fanout_opts(const fractal_render_options *opts, char *err, size_t errlen)
{
    int e;

    if ((e = opts_check(opts, err, errlen)) < 0)
        return e;
    if (opts->precision == FRACTAL_PRECISION_PERTURB || opts->precision == FRACTAL_PRECISION_PERTURB_EXTENDED ||
        (opts->version >= 3 && (opts->center_re_text[0] || opts->center_im_text[0] || opts->view_width_text[0])))
        return fr_errorf(err, errlen, FRACTAL_EINVAL,
                         "fan-out cannot split a deep view (perturbation, or a view given as text): each band "
                         "would have its own reference orbit; render it on one server");
    if (opts->version >= 2 && opts->rect_fill)
        return fr_errorf(err, errlen, FRACTAL_EINVAL,
                         "fan-out cannot split a render with rect_fill: its boxes would follow the band edges");
    if (opts->width == 0 || opts->height == 0)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "image size must be at least 1x1, got %ux%u", opts->width,
                         opts->height);
    if (opts->has_region && (opts->region.width == 0 || opts->region.height == 0 ||
                             (uint64_t)opts->region.x + opts->region.width > opts->width ||
                             (uint64_t)opts->region.y + opts->region.height > opts->height))
        return fr_errorf(err, errlen, FRACTAL_EINVAL,
                         "region (x=%u, y=%u, width=%u, height=%u) must be at least 1x1 and lie inside the %ux%u image",
                         opts->region.x, opts->region.y, opts->region.width, opts->region.height, opts->width,
                         opts->height);
    return 0;
}

/* What fractal_render_fanout hands out: the public result, then what it owns. */
typedef struct fanout_result_impl {
    fractal_fanout_result pub;
    fractal_fanout_server *servers;
    fr_addrs addrs;
} fanout_result_impl;

void fractal_fanout_result_free(fractal_fanout_result *result)
{
    fanout_result_impl *r = (fanout_result_impl *)result;

    if (r == NULL)
        return;
    free(r->servers);
    fr_addrs_free(&r->addrs);
    free(r);
}

int fractal_render_fanout(fractal_fanout_result **out, const char *servers, const fractal_client_options *copts,
                          const fractal_render_options *opts, const fractal_fanout_options *fopts,
                          const fractal_stream_callbacks *cbs, char *err, size_t errlen)
{
    const fractal_render_options render_defaults = FRACTAL_RENDER_OPTIONS_INIT;
    const fractal_fanout_options fanout_defaults = FRACTAL_FANOUT_OPTIONS_INIT;
    fractal_client_options conn_opts;
    fanout f;
    writer w;
    conn *conns = NULL;
    fanout_result_impl *res = NULL;
    fr_addrs addrs = { NULL, NULL, 0, 0 };
    pthread_condattr_t cond_attr;
    size_t n_conns = 0, i;
    uint32_t rows, y;
    int e = 0, sync_ready = 0;

    memset(&f, 0, sizeof f);
    memset(&w, 0, sizeof w);
    if (err && errlen)
        err[0] = '\0';
    if (out)
        *out = NULL;
    if (opts == NULL)
        opts = &render_defaults;
    if (fopts == NULL)
        fopts = &fanout_defaults;
    if (servers == NULL || servers[0] == '\0' || cbs == NULL || cbs->write == NULL || cbs->version != 1)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_render_fanout: %s",
                         servers == NULL || servers[0] == '\0' ? "no servers" : "no write callback");
    if (fopts->version != FRACTAL_FANOUT_OPTIONS_VERSION || fopts->per_server < 1 || fopts->per_server > PER_SERVER_MAX)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_render_fanout: per_server must be 1..%d, got %u",
                         PER_SERVER_MAX, fopts->per_server);
    if ((e = check_fanout_opts(opts, err, errlen)) < 0)
        return e;
    if ((e = conn_options(&conn_opts, copts, fopts->band_timeout_ms)) < 0)
        return fr_errorf(err, errlen, e, "fractal_render_fanout: unsupported client options version");
    if ((e = fr_target_addrs(&addrs, servers, err, errlen)) < 0)
        return e;

    f.opts = opts;
    f.err = err;
    f.errlen = errlen;
    f.max_resends = fopts->max_resends;
    if (opts->has_region)
        f.area = opts->region;
    else
        f.area = (fractal_region){ 0, 0, opts->width, opts->height };
    n_conns = addrs.count * fopts->per_server;
    rows = fopts->band_rows;
    if (rows == 0) {
        uint32_t most = (uint32_t)((f.area.height + BANDS_PER_CONN * n_conns - 1) / (BANDS_PER_CONN * n_conns));
        rows = (uint32_t)(AUTO_BAND_BYTES / ((size_t)f.area.width * 4));
        if (rows > most)
            rows = most;
        if (rows == 0)
            rows = 1;
    }
    f.n_bands = (uint32_t)((f.area.height + (uint64_t)rows - 1) / rows);
    f.window = fopts->window ? fopts->window : (uint32_t)(2 * n_conns);
    f.n_servers = f.servers_left = addrs.count;
    if ((f.bands = calloc(f.n_bands, sizeof *f.bands)) == NULL || (f.servers = calloc(addrs.count, sizeof *f.servers)) == NULL ||
        (conns = calloc(n_conns, sizeof *conns)) == NULL) {
        e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0, y = 0; i < f.n_bands; i++, y += rows) {
        f.bands[i].y = f.area.y + y;
        f.bands[i].rows = f.area.height - y < rows ? f.area.height - y : rows;
        f.bands[i].avoid = -1;
    }
    for (i = 0; i < addrs.count; i++)
        f.servers[i].pub.address = addrs.addr[i];

    /* The timed waits run on the monotonic clock, as the client's own do. */
    if (pthread_condattr_init(&cond_attr) != 0) {
        e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&f.lock, NULL) != 0 || pthread_cond_init(&f.cond, &cond_attr) != 0) {
        pthread_condattr_destroy(&cond_attr);
        e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    pthread_condattr_destroy(&cond_attr);
    sync_ready = 1;

    /* Every handle exists before any thread starts, so that a failure here leaves nothing running. */
    for (i = 0; i < n_conns; i++) {
        conns[i].f = &f;
        conns[i].server = (int)(i % addrs.count);
        if ((e = fr_client_new(&conns[i].client, addrs.addr[conns[i].server], addrs.authority[conns[i].server],
                               &conn_opts)) < 0) {
            fr_errorf(err, errlen, e, "%s: %s", addrs.addr[conns[i].server], fractal_strerror(e));
            goto done;
        }
    }
    /* Connections are started server by server in turn, so the first bands spread over all. */
    for (i = 0; i < n_conns; i++) {
        if (pthread_create(&conns[i].thread, NULL, conn_main, &conns[i]) != 0) {
            pthread_mutex_lock(&f.lock);
            fail_locked(&f, FRACTAL_ENOMEM, "cannot start a thread");
            pthread_mutex_unlock(&f.lock);
            break;
        }
        conns[i].started = 1;
    }

    w.f = &f;
    w.cbs = cbs;
    w.content_type = opts->format == FRACTAL_FORMAT_RAW_U32 || opts->format == FRACTAL_FORMAT_RAW_F32
                         ? "application/octet-stream"
                         : "image/png";
    e = write_all(&w);

done:
    if (sync_ready) {
        pthread_mutex_lock(&f.lock);
        if (e < 0 && !f.failed)
            f.failed = e;
        pthread_cond_broadcast(&f.cond);
        pthread_mutex_unlock(&f.lock);
    }
    /* A failed render cancels the calls still in flight, so that the joins below are quick. */
    for (i = 0; conns && i < n_conns; i++)
        if (e < 0 && conns[i].started)
            fractal_client_cancel(conns[i].client);
    for (i = 0; conns && i < n_conns; i++)
        if (conns[i].started)
            pthread_join(conns[i].thread, NULL);
    for (i = 0; conns && i < n_conns; i++)
        fractal_client_free(conns[i].client);
    free(conns);
    for (i = 0; f.bands && i < f.n_bands; i++)
        fractal_image_free(f.bands[i].image);
    fr_png_writer_free(w.png);
    if (e == 0 && out) {
        if ((res = calloc(1, sizeof *res)) == NULL) {
            e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        } else {
            res->servers = malloc(addrs.count * sizeof *res->servers);
            if (res->servers == NULL) {
                free(res);
                res = NULL;
                e = fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
            } else {
                for (i = 0; i < addrs.count; i++)
                    res->servers[i] = f.servers[i].pub;
                res->addrs = addrs; /* the servers' address strings move with it */
                addrs.addr = NULL;
                addrs.authority = NULL;
                addrs.count = 0;
                res->pub.size = w.offset;
                res->pub.content_type = w.content_type;
                res->pub.width = f.area.width;
                res->pub.height = f.area.height;
                res->pub.bands = f.n_bands;
                res->pub.resent = f.resent;
                res->pub.iterations = f.iterations;
                res->pub.samples = f.samples;
                res->pub.compute_ms = f.compute_ms;
                res->pub.n_servers = res->addrs.count;
                res->pub.servers = res->servers;
                *out = &res->pub;
            }
        }
    }
    if (sync_ready) {
        pthread_cond_destroy(&f.cond);
        pthread_mutex_destroy(&f.lock);
    }
    free(f.bands);
    free(f.servers);
    fr_addrs_free(&addrs);
    return e;
}

/* ---- into a file ----------------------------------------------------------------------------- */

typedef struct fanout_file {
    int fd;
    char *tmp;
    int io_errno;                /* errno of a failed write, else 0 */
    fractal_progress_cb progress;
    void *payload;
} fanout_file;

static int fanout_file_write(const fractal_chunk *chunk, void *payload)
{
    fanout_file *ff = payload;

    if (fr_write_all(ff->fd, chunk->data, chunk->size) < 0) {
        ff->io_errno = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

static int fanout_file_progress(const fractal_progress *p, void *payload)
{
    fanout_file *ff = payload;

    return ff->progress ? ff->progress(p, ff->payload) : 0;
}

int fractal_render_fanout_to_file(fractal_fanout_result **out, const char *servers,
                                  const fractal_client_options *copts, const fractal_render_options *opts,
                                  const fractal_fanout_options *fopts, const char *path, fractal_progress_cb progress,
                                  void *payload, char *err, size_t errlen)
{
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_fanout_result *result = NULL;
    fanout_file ff;
    int e;

    if (out)
        *out = NULL;
    if (path == NULL || path[0] == '\0')
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_render_fanout_to_file: no path");
    memset(&ff, 0, sizeof ff);
    ff.progress = progress;
    ff.payload = payload;
    if ((e = fr_tmpfile_open(&ff.fd, &ff.tmp, path, err, errlen)) < 0)
        return e;
    cbs.write = fanout_file_write;
    cbs.progress = fanout_file_progress;
    cbs.payload = &ff;
    e = fractal_render_fanout(&result, servers, copts, opts, fopts, &cbs, err, errlen);
    if (e < 0) {
        if (ff.io_errno)
            e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", ff.tmp, strerror(ff.io_errno));
        fr_tmpfile_abort(ff.fd, ff.tmp);
        return e;
    }
    if ((e = fr_tmpfile_commit(ff.fd, ff.tmp, path, err, errlen)) < 0) {
        fractal_fanout_result_free(result);
        return e;
    }
    if (out)
        *out = result;
    else
        fractal_fanout_result_free(result);
    return 0;
}
