/* imgcache.c: the shared LRU of encoded images: a chained hash table over the key text and one
 * recency list, under one mutex held for a lookup or an insert (microseconds, never for I/O). */
#include "imgcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Bookkeeping charged per entry on top of its key and image, so a budget counts what the
 * entries really take (a million tiny entries must not hide behind a tiny byte count). */
#define ENTRY_OVERHEAD 128

struct entry {
    char *key;
    uint64_t hash;
    uint8_t *data;
    size_t len;
    struct imgcache_meta meta;
    unsigned refs;              /* hits not yet released */
    bool cached;                /* still in the table; when false the last release frees it */
    struct entry *chain;        /* next in the bucket */
    struct entry *newer, *older;
};

struct imgcache {
    pthread_mutex_t lock;
    uint64_t budget;
    struct entry **buckets;
    size_t nbuckets;            /* a power of two */
    struct entry *newest, *oldest;
    struct imgcache_stats st;
};

/* FNV-1a, 64 bits: keys are short JSON texts, and a collision costs only a string compare. */
static uint64_t hash_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static size_t entry_cost(const struct entry *e)
{
    return strlen(e->key) + 1 + e->len + ENTRY_OVERHEAD;
}

int imgcache_new(imgcache **out, uint64_t budget)
{
    imgcache *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (!c)
        return ERR_NOMEM;
    c->budget = budget;
    c->st.budget = budget;
    /* About one bucket per 16 KiB of budget (a PNG tile is 20-100 KiB), at least 64. */
    c->nbuckets = 64;
    while (c->nbuckets < budget / 16384 && c->nbuckets < ((size_t)1 << 20))
        c->nbuckets *= 2;
    if (!(c->buckets = calloc(c->nbuckets, sizeof(*c->buckets)))) {
        free(c);
        return ERR_NOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

static void entry_free(struct entry *e)
{
    free(e->key);
    free(e->data);
    free(e);
}

/* Unlinks e from its bucket and the recency list; lock held. */
static void unlink_entry(imgcache *c, struct entry *e)
{
    struct entry **link = &c->buckets[e->hash & (c->nbuckets - 1)];

    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = e->chain = NULL;
    e->cached = false;
    c->st.bytes -= entry_cost(e);
    c->st.entries--;
}

/* Removes e from the cache, freeing it unless a hit still holds it; lock held. */
static void drop_entry(imgcache *c, struct entry *e)
{
    unlink_entry(c, e);
    if (e->refs == 0)
        entry_free(e);
}

void imgcache_free(imgcache *c)
{
    if (!c)
        return;
    while (c->newest)
        drop_entry(c, c->newest);
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int imgcache_enabled(const imgcache *c)
{
    return c && c->budget > 0;
}

static struct entry *find(imgcache *c, const char *key, uint64_t h)
{
    for (struct entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->chain)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* Makes e the most recently used; lock held. */
static void touch(imgcache *c, struct entry *e)
{
    if (c->newest == e)
        return;
    /* Out of its place... */
    e->newer->older = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    /* ...and to the front. */
    e->older = c->newest;
    e->newer = NULL;
    c->newest->newer = e;
    c->newest = e;
}

int imgcache_get(imgcache *c, struct imgcache_hit *out, const char *key)
{
    uint64_t h;
    struct entry *e;

    memset(out, 0, sizeof(*out));
    if (!imgcache_enabled(c))
        return 0;
    h = hash_key(key);
    pthread_mutex_lock(&c->lock);
    if (!(e = find(c, key, h))) {
        c->st.misses++;
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    touch(c, e);
    e->refs++;
    c->st.hits++;
    pthread_mutex_unlock(&c->lock);
    out->data = e->data;
    out->len = e->len;
    out->meta = e->meta;
    out->entry = e;
    return 1;
}

void imgcache_release(imgcache *c, struct imgcache_hit *hit)
{
    struct entry *e = hit->entry;

    if (!c || !e)
        return;
    pthread_mutex_lock(&c->lock);
    if (--e->refs == 0 && !e->cached)
        entry_free(e);
    pthread_mutex_unlock(&c->lock);
    memset(hit, 0, sizeof(*hit));
}

int imgcache_put(imgcache *c, const char *key, const void *data, size_t len, const struct imgcache_meta *meta)
{
    struct entry *e, *old;
    size_t cost;

    if (!imgcache_enabled(c))
        return 0;
    cost = strlen(key) + 1 + len + ENTRY_OVERHEAD;
    if (cost > c->budget / 8)
        return 0;
    if (!(e = calloc(1, sizeof(*e))) || !(e->key = strdup(key)) || !(e->data = malloc(len ? len : 1))) {
        if (e)
            free(e->key);
        free(e);
        return ERR_NOMEM;
    }
    memcpy(e->data, data, len);
    e->len = len;
    e->meta = *meta;
    e->hash = hash_key(key);
    e->cached = true;
    pthread_mutex_lock(&c->lock);
    if ((old = find(c, key, e->hash)) != NULL)
        drop_entry(c, old);
    while (c->oldest && c->st.bytes + cost > c->budget) {
        drop_entry(c, c->oldest);
        c->st.evictions++;
    }
    e->chain = c->buckets[e->hash & (c->nbuckets - 1)];
    c->buckets[e->hash & (c->nbuckets - 1)] = e;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->st.bytes += cost;
    c->st.entries++;
    c->st.insertions++;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

void imgcache_get_stats(struct imgcache_stats *out, imgcache *c)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    pthread_mutex_unlock(&c->lock);
}
