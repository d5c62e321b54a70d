/* deep_cache.c: the bounded, shared cache of deep-zoom reference orbits: a list in least recently
 * used order under one lock (entries are few: each holds megabytes), with waiting for a reference
 * that another render is building. */
#include "deep_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"

/* How often a call waiting for another's reference looks at its own cancel flag. */
#define WAIT_POLL_MS 5

struct deep_cache_entry {
    deep_cache *cache;
    /* The key: what deep_ref_new's result depends on besides the grid and width. */
    enum spec_fractal fractal;
    double c_re, c_im;
    char *center_re, *center_im;
    enum deep_mode mode;
    uint32_t max_iter;
    double escape_radius;

    deep_ref *ref;              /* NULL while building or after a failure */
    size_t bytes;               /* deep_ref_bytes(ref), counted in the cache's bytes */
    bool building;
    bool failed;
    int err;                    /* the builder's error when failed */
    char msg[256];
    bool listed;                /* in the LRU list (findable); unlisted entries go once unused */
    unsigned users;             /* acquires holding or waiting for it */
    struct deep_cache_entry *prev, *next;   /* most recently used at the head */
};

struct deep_cache {
    pthread_mutex_t lock;
    pthread_cond_t changed;     /* a build finished */
    struct deep_cache_entry *head, *tail;
    uint64_t budget, bytes;
    uint32_t entries;
    uint64_t hits, misses, evictions;
};

int deep_cache_new(deep_cache **out, uint64_t budget)
{
    struct deep_cache *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (!c)
        return ERR_NOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    c->budget = budget;
    *out = c;
    return 0;
}

static void unlink_entry(struct deep_cache *c, struct deep_cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(struct deep_cache *c, struct deep_cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Takes an entry out of the list: nothing finds it any more, and it goes once unused. */
static void unlist(struct deep_cache *c, struct deep_cache_entry *e)
{
    if (!e->listed)
        return;
    unlink_entry(c, e);
    e->listed = false;
    c->entries--;
}

static void entry_free(struct deep_cache *c, struct deep_cache_entry *e)
{
    if (e->ref) {
        c->bytes -= e->bytes;
        deep_ref_unref(e->ref);
    }
    free(e->center_re);
    free(e->center_im);
    free(e);
}

/* Frees an entry nothing finds or uses any more. Lock held. */
static void free_if_gone(struct deep_cache *c, struct deep_cache_entry *e)
{
    if (!e->listed && e->users == 0)
        entry_free(c, e);
}

/* Drops the least recently used unused references until the cache is within its budget (or only
 * references in use are left). Lock held. */
static void evict(struct deep_cache *c)
{
    struct deep_cache_entry *e = c->tail;

    while (c->bytes > c->budget && e) {
        struct deep_cache_entry *prev = e->prev;
        if (e->users == 0 && e->ref) {
            unlist(c, e);
            c->evictions++;
            entry_free(c, e);
        }
        e = prev;
    }
}

void deep_cache_free(deep_cache *c)
{
    if (!c)
        return;
    while (c->head) {
        struct deep_cache_entry *e = c->head;
        unlist(c, e);
        entry_free(c, e);
    }
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool key_matches(const struct deep_cache_entry *e, const struct deep_view *v)
{
    /* A Mandelbrot reference does not depend on c. */
    return e->fractal == v->fractal && e->mode == v->mode && e->max_iter == v->max_iter &&
           e->escape_radius == v->escape_radius &&
           (v->fractal == SPEC_MANDELBROT || (e->c_re == v->c_re && e->c_im == v->c_im)) &&
           strcmp(e->center_re, v->center_re) == 0 && strcmp(e->center_im, v->center_im) == 0;
}

static struct deep_cache_entry *find(struct deep_cache *c, const struct deep_view *v)
{
    for (struct deep_cache_entry *e = c->head; e; e = e->next)
        if (key_matches(e, v))
            return e;
    return NULL;
}

static struct deep_cache_entry *entry_new(struct deep_cache *c, const struct deep_view *v)
{
    struct deep_cache_entry *e = calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    e->cache = c;
    e->fractal = v->fractal;
    e->c_re = v->c_re;
    e->c_im = v->c_im;
    e->mode = v->mode;
    e->max_iter = v->max_iter;
    e->escape_radius = v->escape_radius;
    e->center_re = strdup(v->center_re);
    e->center_im = strdup(v->center_im);
    if (!e->center_re || !e->center_im) {
        free(e->center_re);
        free(e->center_im);
        free(e);
        return NULL;
    }
    return e;
}

static void wait_a_little(struct deep_cache *c)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += WAIT_POLL_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->changed, &c->lock, &until);
}

int deep_cache_acquire(deep_cache_entry **out, deep_cache *c, const struct deep_view *view,
                       const atomic_int *cancel, char *msg, size_t msglen)
{
    struct deep_cache_entry *e;
    deep_ref *ref = NULL;
    int err;

    *out = NULL;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        e = find(c, view);
        /* The key is all deep.h promises a reference depends on; should the engine still find
         * it unfit (its BLA tables' validity), a new one replaces it. */
        if (e && e->ref && !deep_ref_fits(e->ref, view)) {
            unlist(c, e);
            free_if_gone(c, e);
            e = NULL;
        }
        if (!e)
            break;
        e->users++;
        unlink_entry(c, e);
        push_front(c, e);
        while (e->building && !(cancel && atomic_load(cancel)))
            wait_a_little(c);
        if (e->building) {
            e->users--;
            free_if_gone(c, e);
            pthread_mutex_unlock(&c->lock);
            snprintf(msg, msglen, "render cancelled");
            return ERR_CANCELLED;
        }
        if (e->failed) {
            err = e->err;
            snprintf(msg, msglen, "%s", e->msg);
            e->users--;
            free_if_gone(c, e);
            /* The builder was cancelled, not this call: build it here. */
            if (err == ERR_CANCELLED && !(cancel && atomic_load(cancel)))
                continue;
            pthread_mutex_unlock(&c->lock);
            return err;
        }
        c->hits++;
        pthread_mutex_unlock(&c->lock);
        *out = e;
        return 0;
    }

    if (!(e = entry_new(c, view))) {
        pthread_mutex_unlock(&c->lock);
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    e->building = true;
    e->users = 1;
    e->listed = true;
    push_front(c, e);
    c->entries++;
    c->misses++;
    pthread_mutex_unlock(&c->lock);

    /* Built outside the lock: it takes long, and other views' renders go on meanwhile. */
    err = deep_ref_new(&ref, view, cancel, msg, msglen);

    pthread_mutex_lock(&c->lock);
    e->building = false;
    if (err < 0) {
        e->failed = true;
        e->err = err;
        snprintf(e->msg, sizeof(e->msg), "%s", msg);
        unlist(c, e);
        e->users--;
        pthread_cond_broadcast(&c->changed);
        free_if_gone(c, e);
        pthread_mutex_unlock(&c->lock);
        return err;
    }
    e->ref = ref;
    e->bytes = deep_ref_bytes(ref);
    c->bytes += e->bytes;
    evict(c);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    *out = e;
    return 0;
}

const deep_ref *deep_cache_entry_ref(const deep_cache_entry *e)
{
    return e->ref;
}

void deep_cache_release(deep_cache_entry *e)
{
    struct deep_cache *c;

    if (!e)
        return;
    c = e->cache;
    pthread_mutex_lock(&c->lock);
    e->users--;
    if (e->listed)
        evict(c);
    else
        free_if_gone(c, e);
    pthread_mutex_unlock(&c->lock);
}

void deep_cache_get_stats(deep_cache *c, struct deep_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    out->entries = c->entries;
    out->bytes = c->bytes;
    out->budget = c->budget;
    pthread_mutex_unlock(&c->lock);
}
