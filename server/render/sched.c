/* sched.c: the multi-device scheduler: per-device worker threads pulling row-strip tiles from the
 * requests in flight, round-robin between requests, with re-runs of the tiles of failed devices. */
#include "sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_cl_deep.h"
#include "err.h"
#include "host_threads.h"
#include "log.h"
#include "rect_fill.h"
#include "render_deep.h"

/* No tile is cut smaller than this (unless the band is): below it the per-tile overhead of a
 * device (a queue round trip, a kernel launch) outweighs the work. */
#define MIN_TILE_SAMPLES 4096u
/* Largest tile of a spare-cycles device (share_host_cpu): PoCL's VECTOR kernel keeps about 900
 * samples in flight on 2 cores, so this still fills it while bounding the tail it can leave. */
#define SPARE_TILE_SAMPLES 16384u
/* How often a waiting sched_compute looks at its caller's cancel flag. */
#define CANCEL_POLL_MS 5
#define DEFAULT_CALIBRATE_MS 80u

/* Rows [y, y + height) of a request's rectangle, relative to its top. */
struct strip {
    uint32_t y, height;
};

/* One sched_compute call in flight. Everything but the constant inputs is guarded by the
 * scheduler's lock. */
struct request {
    const struct render_spec *spec;
    struct spec_rect rect;
    uint32_t *counts;
    float *smooth;
    bool need_fp64;
    /* What the tiles poll: set when the caller cancels or the request fails, so devices let go of
     * its tiles within one engine poll. */
    atomic_int abort;
    double share_den;           /* sum of the effective weights of the devices that may serve it */
    bool host_primary;          /* a CPU-type device that is not spare-cycles may serve it */
    uint32_t next_row;          /* rows [0, next_row) have been handed out at least once */
    struct strip *retry;        /* strips whose device failed, handed out before new rows */
    size_t nretry, retry_cap;
    uint32_t rows_done;
    unsigned inflight;
    bool stopped;               /* hand out nothing more: cancelled or failed */
    int err;
    char msg[256];
    uint64_t iterations, used;
    uint32_t tiles;
    pthread_cond_t changed;     /* rows_done, inflight or stopped changed */
    struct request *prev, *next;
};

struct worker {
    struct sched *sched;
    size_t index;               /* into devs->list */
    pthread_t thread;
    bool started;
    int64_t tiles_run;          /* tiles this device finished, for fault injection */
    /* A spare-cycles device's tile of a request that a primary device also serves is computed from
     * private copies of the spec and into private outputs, so that when the request has nothing
     * else left, a primary device can take the tile over (take_tile) and the request need not wait
     * for a device that may be starved of cycles. Guarded by the lock, but for the copies, which
     * only this worker touches. */
    struct request *holding;    /* the request whose tile it computes privately; NULL if none */
    struct strip held;
    bool stolen;                /* a primary device took the tile over: drop the result */
    atomic_int tile_abort;      /* what the engine polls for such a tile */
    struct render_spec spec;
    uint32_t *counts;
    float *smooth;
    size_t cap;                 /* samples counts and smooth hold */
    bool want_counts, want_smooth;  /* which outputs the request asked for */
};

struct sched {
    struct devices *devs;
    pthread_mutex_t lock;
    pthread_cond_t work;        /* a request arrived, a tile was re-queued, or stop */
    struct request *head, *tail;  /* requests in flight, served from the head */
    bool stop;
    struct worker *workers;
    size_t nworkers;
    int colocated_nice;
    deep_cache *deep_cache;     /* references of deep views, shared by every render */
    unsigned deep_threads;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

uint64_t sched_tile_samples(const struct device *d)
{
    uint64_t n, cu = d->compute_units ? d->compute_units : 1;

    /* GPUs and accelerators need millions of work-items in flight to fill and amortise a launch;
     * CPU-type devices are full with a few thousand samples per core, and smaller tiles there
     * keep the tail of a band short. */
    if (d->type == DEVICE_GPU || d->type == DEVICE_ACCELERATOR)
        n = (uint64_t)1 << 22;
    else if (strcmp(d->engine, "cpu") == 0)
        n = clamp_u64(cu * 16384, (uint64_t)1 << 16, (uint64_t)1 << 22);
    else
        n = clamp_u64(cu * 32768, (uint64_t)1 << 18, (uint64_t)1 << 22);
    if (d->max_tile_samples)
        n = min_u64(n, d->max_tile_samples);
    /* A tile holds a count and a smooth value (4 + 4 bytes) per sample on the device. */
    if (d->max_memory_bytes)
        n = min_u64(n, d->max_memory_bytes / 8);
    if (d->max_alloc_bytes)
        n = min_u64(n, d->max_alloc_bytes / 4);
    return n ? n : 1;
}

static double effective_weight(const struct device *d)
{
    return (d->giter_per_s > 0 ? d->giter_per_s : 1.0) * (d->weight > 0 ? d->weight : 1.0);
}

static bool can_serve(const struct device *d, const struct request *r)
{
    return devices_usable(d) && devices_match(d, r->spec->device) && (d->fp64 || !r->need_fp64);
}

static bool has_work(const struct request *r)
{
    return !r->stopped && (r->nretry > 0 || r->next_row < r->rect.height);
}

/* Rows of the request a device takes at once (guided self-scheduling): its tile size, but at most
 * half its share (by effective weight) of the rows not yet handed out, and no less than
 * MIN_TILE_SAMPLES. Tiles thus shrink as the request nears its end, so whichever device takes the
 * last ones, the others wait at most a small tile for it: with shares of the whole request
 * instead, a slow device could hold a last tile of an eighth of the frame while a fast one idled. */
static uint32_t rows_for(const struct device *d, const struct request *r)
{
    uint64_t left = (uint64_t)r->rect.width * (r->rect.height - r->next_row);
    uint64_t fair = (uint64_t)((double)left * effective_weight(d) / r->share_den / 2);
    uint64_t samples = min_u64(sched_tile_samples(d), fair > MIN_TILE_SAMPLES ? fair : MIN_TILE_SAMPLES);
    uint64_t rows;

    /* A spare-cycles device progresses only while the faster one idles, so whatever it holds may
     * be left to it alone at the end of the request: keep that small. */
    if (d->spare_cycles && r->host_primary)
        samples = min_u64(samples, SPARE_TILE_SAMPLES);
    rows = samples / r->rect.width;
    /* A tile is at least one full row, whatever the limits say: rows are never split. */
    return rows < 1 ? 1 : rows > r->rect.height ? r->rect.height : (uint32_t)rows;
}

/* With rectangle fill, a strip ends on a multiple of RECT_FILL_BAND_ROWS rows of the grid (or at
 * the end of the request), so that no fill box straddles two strips and needs its border rows
 * computed by both (rect_fill.h). */
static uint32_t band_aligned(const struct request *r, uint32_t rows)
{
    uint32_t start = r->rect.y + r->next_row, left = r->rect.height - r->next_row;
    uint32_t end = (start + rows) / RECT_FILL_BAND_ROWS * RECT_FILL_BAND_ROWS;

    if (end <= start)
        end = (start / RECT_FILL_BAND_ROWS + 1) * RECT_FILL_BAND_ROWS;
    return end - start < left ? end - start : left;
}

static void list_append(struct sched *s, struct request *r)
{
    r->prev = s->tail;
    r->next = NULL;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
}

static void list_remove(struct sched *s, struct request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        s->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->tail = r->prev;
    r->prev = r->next = NULL;
}

static void stop_request(struct sched *s, struct request *r, int err, const char *msg)
{
    if (r->stopped)
        return;
    r->stopped = true;
    r->err = err;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    atomic_store(&r->abort, 1);
    for (size_t k = 0; k < s->nworkers; k++)
        if (s->workers[k].holding == r)
            atomic_store(&s->workers[k].tile_abort, 1);
    pthread_cond_broadcast(&r->changed);
}

/* For a primary device (not spare-cycles) asking for work: a request that has no rows left to hand
 * out but waits on a tile a spare-cycles device computes privately, which this device may serve.
 * The tile moves to the caller (the request's inflight count with it); the spare device is told
 * to let go and will drop its result. Finishing a request that waits only on a device which may
 * be starved of cycles comes before new tiles of any request. Called with the lock held. */
static struct request *steal_tile(struct sched *s, const struct device *d, struct strip *out)
{
    if (d->spare_cycles)
        return NULL;
    for (size_t k = 0; k < s->nworkers; k++) {
        struct worker *v = &s->workers[k];
        struct request *r = v->holding;
        if (!r || v->stolen || r->stopped || has_work(r) || !can_serve(d, r))
            continue;
        v->stolen = true;
        v->holding = NULL;
        atomic_store(&v->tile_abort, 1);
        *out = v->held;
        return r;
    }
    return NULL;
}

/* Takes the next tile for device `index`: the first request from the head of the list it may
 * serve, retried strips before new rows. The request then goes to the tail, so requests take
 * turns (round-robin) whichever device asks. Called with the lock held; NULL when none. */
static struct request *take_tile(struct sched *s, size_t index, struct strip *out)
{
    const struct device *d = &s->devs->list[index];
    struct request *stolen = steal_tile(s, d, out);

    if (stolen)
        return stolen;
    for (struct request *r = s->head; r; r = r->next) {
        uint32_t rows;
        if (!has_work(r) || !can_serve(d, r))
            continue;
        rows = rows_for(d, r);
        if (r->nretry > 0) {
            struct strip *st = &r->retry[r->nretry - 1];
            out->y = st->y;
            out->height = rows < st->height ? rows : st->height;
            st->y += out->height;
            st->height -= out->height;
            if (st->height == 0)
                r->nretry--;
        } else {
            if (r->spec->rect_fill)
                rows = band_aligned(r, rows);
            out->y = r->next_row;
            out->height = rows < r->rect.height - r->next_row ? rows : r->rect.height - r->next_row;
            r->next_row += out->height;
        }
        r->inflight++;
        list_remove(s, r);
        list_append(s, r);
        return r;
    }
    return NULL;
}

/* After device `index` failed: every request that still has rows to hand out and no device left
 * to take them fails with ERR_DEVICE. Called with the lock held. */
static void fail_orphans(struct sched *s, size_t index)
{
    const struct device *failed = &s->devs->list[index];

    for (struct request *r = s->head; r; r = r->next) {
        bool served = false;
        char msg[256];
        if (!has_work(r))
            continue;
        for (size_t i = 0; i < s->devs->count && !served; i++)
            served = can_serve(&s->devs->list[i], r);
        if (served)
            continue;
        snprintf(msg, sizeof(msg), "device %.60s failed (%.120s) and no other device can take the work",
                 failed->id, failed->failed_reason);
        stop_request(s, r, ERR_DEVICE, msg);
    }
}

/* Marks a device failed with its reason, once. Called with the lock held. */
static void mark_failed(struct device *d, const char *reason)
{
    if (atomic_load(&d->failed))
        return;
    snprintf(d->failed_reason, sizeof(d->failed_reason), "%.250s", reason[0] ? reason : "device error");
    atomic_store(&d->failed, true);
    log_at(LOG_WARN, "device %s failed: %s; its work goes to the other devices", d->id, d->failed_reason);
}

/* Prepares a spare-cycles device's tile of request r for computing privately (struct worker):
 * copies the spec and sizes the private outputs. Returns false, and the tile is computed in place
 * as any other, when memory is short. Called with the lock held, just after take_tile. */
static bool hold_privately(struct worker *w, struct request *r, const struct strip *tile)
{
    size_t samples = (size_t)r->rect.width * tile->height;

    if (samples > w->cap) {
        uint32_t *counts = realloc(w->counts, samples * sizeof(*counts));
        float *smooth;
        if (counts)
            w->counts = counts;
        smooth = counts ? realloc(w->smooth, samples * sizeof(*smooth)) : NULL;
        if (!smooth)
            return false;
        w->smooth = smooth;
        w->cap = samples;
    }
    w->spec = *r->spec;
    w->want_counts = r->counts != NULL;
    w->want_smooth = r->smooth != NULL;
    w->holding = r;
    w->held = *tile;
    w->stolen = false;
    atomic_store(&w->tile_abort, 0);
    return true;
}

/* A request's strip on device d: through the rectangle-fill layer when the request allows it
 * (rect_fill.h), else one call of the device. */
static int device_render(struct device *d, const struct render_spec *spec, const struct spec_rect *rect,
                         uint32_t *counts, float *smooth, const atomic_int *cancel,
                         struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    struct rect_fill rf;

    if (!spec->rect_fill)
        return d->ops->render(d->backend, spec, rect, counts, smooth, cancel, stats, msg, msglen);
    rect_fill_init(&rf, d->ops, d->backend);
    return rect_fill_render(&rf, spec, rect, counts, smooth, cancel, stats, msg, msglen);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sched *s = w->sched;
    struct device *d = &s->devs->list[w->index];

    /* This thread launches the device's work and computes its smooth values on the host: it is
     * part of the device, and threads a runtime starts from it inherit its priority. */
    if (d->spare_cycles)
        host_thread_lower_own_priority(s->colocated_nice);
    pthread_mutex_lock(&s->lock);
    while (!s->stop && !atomic_load(&d->failed)) {
        struct strip tile;
        struct request *r = take_tile(s, w->index, &tile);
        struct engine_cpu_stats st = {0, 0};
        struct spec_rect rect;
        char msg[256] = "";
        size_t offset;
        bool private;
        double t0;
        int err;

        if (!r) {
            pthread_cond_wait(&s->work, &s->lock);
            continue;
        }
        private = d->spare_cycles && r->host_primary && hold_privately(w, r, &tile);
        /* Under the lock: once it is let go of, a privately held tile's request may be finished by
         * another device and gone. */
        rect = (struct spec_rect){r->rect.x, r->rect.y + tile.y, r->rect.width, tile.height};
        offset = (size_t)tile.y * r->rect.width;
        pthread_mutex_unlock(&s->lock);

        t0 = now_ms();
        if (d->fault_after >= 0 && w->tiles_run >= d->fault_after) {
            snprintf(msg, sizeof(msg), "fault injected after %lld tiles", (long long)w->tiles_run);
            err = ERR_DEVICE;
        } else if (private) {
            /* Until the lock is taken again, r may be gone: only the worker's copies are used. */
            err = device_render(d, &w->spec, &rect, w->want_counts ? w->counts : NULL,
                                w->want_smooth ? w->smooth : NULL, &w->tile_abort, &st, msg, sizeof(msg));
        } else {
            err = device_render(d, r->spec, &rect, r->counts ? r->counts + offset : NULL,
                                r->smooth ? r->smooth + offset : NULL, &r->abort, &st, msg, sizeof(msg));
        }
        atomic_fetch_add(&d->busy_us, (uint64_t)((now_ms() - t0) * 1e3));

        pthread_mutex_lock(&s->lock);
        if (private) {
            bool stolen = w->stolen;
            w->holding = NULL;
            w->stolen = false;
            if (stolen) {
                /* A primary device took the tile over; its count of r moved with it. */
                if (err == ERR_DEVICE) {
                    mark_failed(d, msg);
                    fail_orphans(s, w->index);
                }
                continue;
            }
            if (err == 0) {
                size_t n = (size_t)rect.width * rect.height;
                if (r->counts)
                    memcpy(r->counts + offset, w->counts, n * sizeof(*w->counts));
                if (r->smooth)
                    memcpy(r->smooth + offset, w->smooth, n * sizeof(*w->smooth));
            }
        }
        r->inflight--;
        if (err == 0) {
            w->tiles_run++;
            r->rows_done += tile.height;
            r->iterations += st.iterations;
            r->tiles++;
            if (w->index < 64)
                r->used |= (uint64_t)1 << w->index;
            atomic_fetch_add(&d->tiles_done, 1);
            atomic_fetch_add(&d->iterations_done, st.iterations);
        } else if (err == ERR_DEVICE) {
            /* The strip goes back to the request, ahead of new rows, for another device; the
             * retry list has room for one strip per device, and a device fails only once. */
            r->retry[r->nretry++] = tile;
            mark_failed(d, msg);
            fail_orphans(s, w->index);
            pthread_cond_broadcast(&s->work);
        } else if (err == ERR_CANCELLED && atomic_load(&r->abort)) {
            /* The request was stopped already (cancelled or failed): nothing to record. */
        } else {
            char line[256];
            snprintf(line, sizeof(line), "device %.64s: %.180s", d->id, msg[0] ? msg : err_name(err));
            stop_request(s, r, err, line);
        }
        pthread_cond_broadcast(&r->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Measures a device's throughput on a Mandelbrot overview in fp32 (a mix of fast-escaping and
 * interior samples, like real work), doubling the grid until a run takes a fair part of the
 * budget, and keeps the best rate, since the first run pays for warm-up (thread start, first
 * launch). Returns 0, or ERR_DEVICE (etc.) with the reason in msg. */
static int calibrate(struct device *d, unsigned budget_ms, char *msg, size_t msglen)
{
    struct render_spec spec;
    uint32_t side = 64, *counts = NULL;
    double start = now_ms(), best = 0;
    int err = 0;

    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_MANDELBROT;
    spec.center_re = -0.5;
    spec.view_width = 3;
    spec.max_iter = 256;
    spec.escape_radius = 2;
    spec.precision = SPEC_FP32;
    spec.format = SPEC_RAW_U32;
    spec.supersample = 1;
    counts = malloc((size_t)1024 * 1024 * sizeof(*counts));
    if (!counts) {
        snprintf(msg, msglen, "out of memory");
        err = ERR_NOMEM;
        goto done;
    }
    for (;;) {
        struct engine_cpu_stats st = {0, 0};
        struct spec_rect rect = {0, 0, side, side};
        double t0 = now_ms(), t;
        spec.width = spec.height = side;
        spec.region = rect;
        if ((err = d->ops->render(d->backend, &spec, &rect, counts, NULL, NULL, &st, msg, msglen)) < 0)
            goto done;
        t = now_ms() - t0;
        if (t > 0 && st.iterations / (t * 1e6) > best)
            best = st.iterations / (t * 1e6);
        if (now_ms() - start > budget_ms / 2.0)
            break;
        /* Grow while a run is short next to the budget, so timer and launch overheads fade. */
        if (t < budget_ms / 8.0 && side < 1024)
            side *= 2;
    }
    d->giter_per_s = best;

done:
    free(counts);
    return err;
}

/* CPU-type devices (the CPU engine, an OpenCL CPU device such as PoCL's) are all the host's
 * cores. Run side by side at equal priority they time-share those cores, so a render on all of them
 * goes at a blend of their speeds, below the fastest alone (30 % below on workload B on a 2-core
 * host). So every CPU-type device measured slower than the fastest becomes a spare-cycles device: its
 * threads run at nice `nice`, taking the cores only when the fastest leaves them idle (between its
 * tiles, at the end of a band, or when the request is not for it). It still takes tiles of every
 * render: they run when cycles are spare, and at full speed once the fastest device has none left.
 * Devices of other types (GPUs) are left alone, and so is a platform that also drives a GPU. */
static void share_host_cpu(struct devices *devs, int nice)   /* nice 0: none, all equal */
{
    const struct device *fastest = NULL;

    for (size_t i = 0; i < devs->count; i++) {
        const struct device *d = &devs->list[i];
        if (devices_usable(d) && d->type == DEVICE_CPU && (!fastest || d->giter_per_s > fastest->giter_per_s))
            fastest = d;
    }
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        size_t changed = 0;
        d->spare_cycles = false;
        /* Only a device measured slower: without calibration nothing is known to be faster. */
        if (nice <= 0 || !fastest || !devices_usable(d) || d->type != DEVICE_CPU || !(d->giter_per_s < fastest->giter_per_s))
            continue;
        d->spare_cycles = true;
        if (d->ops->lower_priority)
            changed = d->ops->lower_priority(d->backend, nice);
        log_at(LOG_INFO, "device %s shares the host's cores with the faster %s: it runs at nice %d, on "
               "the cycles %s leaves (%zu runtime thread%s lowered)", d->id, fastest->id, nice, fastest->id,
               changed, changed == 1 ? "" : "s");
    }
}

int sched_new(sched **out, struct devices *devs, const struct sched_options *opts, char *msg,
              size_t msglen)
{
    struct sched_options defaults = SCHED_OPTIONS_INIT;
    struct sched *s = NULL;
    size_t usable = 0;
    int err = 0;

    *out = NULL;
    if (!opts)
        opts = &defaults;
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        char reason[256] = "";
        int cerr;
        if (!devices_usable(d) || !opts->calibrate || d->giter_per_s > 0)
            continue;
        if ((cerr = calibrate(d, opts->calibrate_ms ? opts->calibrate_ms : DEFAULT_CALIBRATE_MS, reason,
                              sizeof(reason))) < 0) {
            char line[300];
            snprintf(line, sizeof(line), "calibration: %s", reason[0] ? reason : err_name(cerr));
            mark_failed(d, line);
            continue;
        }
        log_at(LOG_INFO, "device %s: %.3f Giter/s (calibration)", d->id, d->giter_per_s);
    }
    share_host_cpu(devs, opts->colocated_nice);
    for (size_t i = 0; i < devs->count; i++)
        usable += devices_usable(&devs->list[i]);
    if (usable == 0) {
        snprintf(msg, msglen, "no usable device: every device is disabled or failed (see --list-devices)");
        return ERR_PRECONDITION;
    }

    if (!(s = calloc(1, sizeof(*s))) || !(s->workers = calloc(usable, sizeof(*s->workers)))) {
        snprintf(msg, msglen, "out of memory");
        err = ERR_NOMEM;
        goto done;
    }
    s->devs = devs;
    s->colocated_nice = opts->colocated_nice;
    s->deep_threads = opts->deep_threads;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    if ((err = deep_cache_new(&s->deep_cache, opts->deep_ref_cache ? opts->deep_ref_cache
                                                                    : SCHED_DEFAULT_DEEP_REF_CACHE)) < 0) {
        snprintf(msg, msglen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < devs->count; i++) {
        struct worker *w;
        if (!devices_usable(&devs->list[i]))
            continue;
        w = &s->workers[s->nworkers];
        w->sched = s;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(msg, msglen, "cannot start a worker thread for device %s", devs->list[i].id);
            err = ERR_NOMEM;
            goto done;
        }
        w->started = true;
        s->nworkers++;
    }
    *out = s;
    s = NULL;

done:
    sched_free(s);
    return err;
}

void sched_free(sched *s)
{
    if (!s)
        return;
    if (s->workers) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->work);
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; i < s->nworkers; i++) {
            if (s->workers[i].started)
                pthread_join(s->workers[i].thread, NULL);
            free(s->workers[i].counts);
            free(s->workers[i].smooth);
        }
        pthread_cond_destroy(&s->work);
        pthread_mutex_destroy(&s->lock);
    }
    deep_cache_free(s->deep_cache);
    free(s->workers);
    free(s);
}

void sched_deep_stats(sched *s, struct deep_cache_stats *out)
{
    deep_cache_get_stats(s->deep_cache, out);
}

/* Whether device d can take a deep spec now: the built-in CPU engine always; an OpenCL device for
 * fp64 deltas (PRECISION_PERTURB) when it has fp64 and its perturbation kernel has not failed. */
static bool deep_capable(const struct device *d, const struct render_spec *spec)
{
    if (!devices_usable(d))
        return false;
    if (strcmp(d->engine, "cpu") == 0)
        return true;
    return strcmp(d->engine, "opencl") == 0 && spec->precision == SPEC_PERTURB && d->fp64 &&
           engine_cl_deep_usable(d->backend);
}

/* A deep spec goes to one device for the whole band. The selector "" prefers a GPU (the
 * perturbation kernel there is many times the host's cores) and otherwise the built-in CPU engine
 * (a CPU-type OpenCL device such as PoCL would share the same cores); "gpu", "opencl" or a device
 * id name an OpenCL device; "cpu" the CPU engine. Extended deltas run on the CPU only
 * (request_to_spec refuses a selector that names only OpenCL devices for them). */
static int compute_deep(struct sched *s, struct sched_call *call, const struct render_spec *spec,
                        const struct spec_rect *rect, uint32_t *counts, float *smooth, const atomic_int *cancel,
                        struct engine_cpu_stats *stats)
{
    struct render_deep rd = {s->deep_cache, s->deep_threads, NULL, NULL, false, ""};
    size_t index = 0, pick = s->devs->count;
    int err;

    for (index = 0; index < s->devs->count && pick == s->devs->count; index++) {
        struct device *d = &s->devs->list[index];
        if (strcmp(d->engine, "opencl") == 0 && devices_match(d, spec->device) && deep_capable(d, spec) &&
            (spec->device[0] || d->type == DEVICE_GPU))
            pick = index;
    }
    for (index = 0; index < s->devs->count && pick == s->devs->count; index++) {
        struct device *d = &s->devs->list[index];
        if (strcmp(d->engine, "cpu") == 0 && devices_match(d, spec->device) && deep_capable(d, spec))
            pick = index;
    }
    if (pick == s->devs->count) {
        snprintf(call->msg, sizeof(call->msg), "no enabled, working device that runs deep zoom (%s) matches "
                 "device \"%.64s\"", spec->precision == SPEC_PERTURB ? "PRECISION_PERTURB"
                 : "PRECISION_PERTURB_EXTENDED", spec->device);
        return ERR_PRECONDITION;
    }
    rd.device = &s->devs->list[pick];
    if (strcmp(rd.device->engine, "opencl") == 0)
        rd.cl = rd.device->backend;
    if ((err = render_compute_deep(&rd, spec, rect, counts, smooth, cancel, stats)) < 0) {
        snprintf(call->msg, sizeof(call->msg), "%s", rd.msg);
        return err;
    }
    if (pick < 64)
        call->devices_used |= (uint64_t)1 << pick;
    return 0;
}

/* Why no device can take a request: ERR_DEVICE if a device would have but failed, else
 * ERR_PRECONDITION. Called with the lock held. */
static int unservable(const struct sched *s, const struct request *r, char *msg, size_t msglen)
{
    for (size_t i = 0; i < s->devs->count; i++) {
        const struct device *d = &s->devs->list[i];
        if (d->enabled && atomic_load(&d->failed) && devices_match(d, r->spec->device) &&
            (d->fp64 || !r->need_fp64)) {
            snprintf(msg, msglen, "every device that could take this work has failed (%.60s: %.120s)", d->id,
                     d->failed_reason);
            return ERR_DEVICE;
        }
    }
    snprintf(msg, msglen, "no enabled, working%s device matches device \"%.64s\"",
             r->need_fp64 ? " fp64" : "", r->spec->device);
    return ERR_PRECONDITION;
}

int sched_compute(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                  uint32_t *counts, float *smooth, const atomic_int *cancel,
                  struct engine_cpu_stats *stats)
{
    struct sched_call *call = ctx;
    struct sched *s = call->sched;
    struct request r;
    int err = 0;

    call->msg[0] = '\0';
    if (spec_precision_is_deep(spec->precision))
        return compute_deep(s, call, spec, rect, counts, smooth, cancel, stats);
    memset(&r, 0, sizeof(r));
    r.spec = spec;
    r.rect = *rect;
    r.counts = counts;
    r.smooth = smooth;
    r.need_fp64 = spec->precision == SPEC_FP64;
    atomic_init(&r.abort, 0);
    if (stats)
        *stats = (struct engine_cpu_stats){0, 0};
    if (rect->width == 0 || rect->height == 0)
        return 0;
    /* Room for one re-queued strip per device: each device fails at most once. */
    r.retry_cap = s->devs->count;
    if (!(r.retry = calloc(r.retry_cap, sizeof(*r.retry)))) {
        snprintf(call->msg, sizeof(call->msg), "out of memory");
        return ERR_NOMEM;
    }
    pthread_cond_init(&r.changed, NULL);

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->devs->count; i++) {
        const struct device *d = &s->devs->list[i];
        if (!can_serve(d, &r))
            continue;
        r.share_den += effective_weight(d);
        r.host_primary = r.host_primary || (d->type == DEVICE_CPU && !d->spare_cycles);
    }
    if (r.share_den == 0) {
        err = unservable(s, &r, call->msg, sizeof(call->msg));
        pthread_mutex_unlock(&s->lock);
        goto done;
    }
    list_append(s, &r);
    pthread_cond_broadcast(&s->work);
    while (r.rows_done < r.rect.height && !(r.stopped && r.inflight == 0)) {
        struct timespec until;
        if (cancel && atomic_load(cancel) && !r.stopped)
            stop_request(s, &r, ERR_CANCELLED, "render cancelled");
        /* Timed, because nothing signals the caller's cancel flag: it is polled. */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += CANCEL_POLL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r.changed, &s->lock, &until);
    }
    list_remove(s, &r);
    /* A request whose every row is done succeeded, even if a cancel arrived at the last moment. */
    if (r.rows_done < r.rect.height) {
        err = r.err ? r.err : ERR_INTERNAL;
        snprintf(call->msg, sizeof(call->msg), "%s", r.msg);
    }
    pthread_mutex_unlock(&s->lock);
    call->devices_used |= r.used;
    if (stats) {
        stats->iterations = r.iterations;
        stats->tiles = r.tiles;
    }

done:
    pthread_cond_destroy(&r.changed);
    free(r.retry);
    return err;
}
