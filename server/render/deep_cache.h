/* deep_cache.h: the cache of deep-zoom reference orbits (deep.h's deep_ref), shared by every
 * render of the same view: Render, RenderStream, the tiles of one image and jobs. Bounded by a
 * byte budget, least recently used first out; an entry in use is never dropped, and a reference
 * that several renders ask for at once is computed once while the others wait. */
#ifndef FRACTALD_DEEP_CACHE_H
#define FRACTALD_DEEP_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "deep.h"

typedef struct deep_cache deep_cache;

/* One reference held for a render; deep_cache_release gives it back. */
typedef struct deep_cache_entry deep_cache_entry;

struct deep_cache_stats {
    uint64_t hits;              /* acquires that found the reference built or being built */
    uint64_t misses;            /* acquires that built it */
    uint64_t evictions;         /* entries dropped to stay within the budget */
    uint32_t entries;           /* entries held (built, or being built) */
    uint64_t bytes;             /* bytes the built ones hold */
    uint64_t budget;
};

/* A cache that keeps references of at most budget bytes together once no render uses them.
 * Returns 0 and *out (free with deep_cache_free), or ERR_NOMEM. */
int deep_cache_new(deep_cache **out, uint64_t budget);

/* Frees the cache and the references it holds. Accepts NULL. Every entry acquired must have been
 * released. */
void deep_cache_free(deep_cache *c);

/* The reference for `view`, keyed by what a reference depends on (fractal, c, centre text, mode,
 * max_iter, escape radius): found in the cache (a hit), or built now by deep_ref_new (a miss), or,
 * when another call is building it, waited for (a hit). While it waits or builds it polls
 * *cancel (may be NULL) every few milliseconds. A builder that is cancelled leaves the work to
 * one of the calls that waited. Returns 0 and *out, which the caller holds until
 * deep_cache_release, or ERR_CANCELLED, or deep_ref_new's error with its message in msg. */
int deep_cache_acquire(deep_cache_entry **out, deep_cache *c, const struct deep_view *view,
                       const atomic_int *cancel, char *msg, size_t msglen);

/* The reference an entry holds, borrowed until deep_cache_release. */
const deep_ref *deep_cache_entry_ref(const deep_cache_entry *e);

/* Gives an entry back: once no render uses it, it may be dropped to keep within the budget.
 * Accepts NULL. */
void deep_cache_release(deep_cache_entry *e);

void deep_cache_get_stats(deep_cache *c, struct deep_cache_stats *out);

#endif
