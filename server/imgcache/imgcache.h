/* imgcache.h: a bounded in-memory LRU cache of encoded images, keyed by the resolved request
 * (request_json_from_spec's text), shared by every front end. Thread-safe. */
#ifndef FRACTALD_IMGCACHE_H
#define FRACTALD_IMGCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct imgcache imgcache;

/* What the render that made an entry reported, kept with its bytes so a hit can say what the
 * image cost (it costs nothing now). */
struct imgcache_meta {
    uint64_t iterations;
    uint64_t samples;
    uint32_t tiles;
    uint32_t width, height;     /* of the encoded image */
    int precision;              /* spec_precision */
    int format;                 /* spec_format */
};

/* A hit: a reference to an entry's bytes, valid until imgcache_release, even if the entry is
 * evicted meanwhile (the bytes are reference counted). */
struct imgcache_hit {
    const uint8_t *data;
    size_t len;
    struct imgcache_meta meta;
    void *entry;                /* private */
};

struct imgcache_stats {
    uint64_t hits, misses, insertions, evictions;
    uint64_t bytes;             /* held now: keys and images */
    uint64_t entries;
    uint64_t budget;
};

/* A cache holding at most `budget` bytes (keys and images together). budget 0 gives a cache that
 * holds nothing (every lookup misses and is not counted). Returns 0 and the cache in *out
 * (free with imgcache_free), or ERR_NOMEM. */
int imgcache_new(imgcache **out, uint64_t budget);

/* Frees the cache. Every hit must be released first. Accepts NULL. */
void imgcache_free(imgcache *c);

/* Whether the cache may hold anything (a NULL cache or budget 0 does not). */
int imgcache_enabled(const imgcache *c);

/* Looks key up. On a hit fills *out, marks the entry most recently used and returns 1; the caller
 * must imgcache_release(out). Returns 0 on a miss (counted). Accepts a NULL cache (a miss, not
 * counted). */
int imgcache_get(imgcache *c, struct imgcache_hit *out, const char *key);

/* Drops a hit's reference. Accepts a zeroed hit. */
void imgcache_release(imgcache *c, struct imgcache_hit *hit);

/* Stores a copy of key and data. An image larger than an eighth of the budget is not kept (one
 * huge image would flush every tile); older entries are evicted until the new one fits. A key
 * already present is replaced. Returns 0, or ERR_NOMEM (nothing stored). Accepts a NULL cache. */
int imgcache_put(imgcache *c, const char *key, const void *data, size_t len, const struct imgcache_meta *meta);

/* Counters, under the lock. A NULL cache gives zeros. */
void imgcache_get_stats(struct imgcache_stats *out, imgcache *c);

#endif
