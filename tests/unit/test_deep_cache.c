/* test_deep_cache.c: the cache of deep-zoom reference orbits (server/render/deep_cache.c) on the
 * real deep engine: hits and misses, the byte budget with least-recently-used eviction, entries in
 * use never dropped, one build for concurrent acquires, and cancellation of builders and waiters. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deep_cache.h"
#include "err.h"
#include "unit.h"

/* A Mandelbrot view 1e-20 wide; centre_re picks the key. Inside the main cardioid (-0.1) the
 * reference never escapes, so its orbit has all max_iter steps. */
static struct deep_view view_of(const char *centre_re, uint32_t max_iter)
{
    struct deep_view v;

    memset(&v, 0, sizeof(v));
    v.fractal = SPEC_MANDELBROT;
    v.center_re = centre_re;
    v.center_im = "0";
    v.width = "1e-20";
    v.grid_w = v.grid_h = 16;
    v.max_iter = max_iter;
    v.escape_radius = 2.0;
    v.mode = DEEP_FP64;
    return v;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void acquire_ok(deep_cache_entry **out, deep_cache *c, const struct deep_view *v)
{
    char msg[256] = "";
    int err = deep_cache_acquire(out, c, v, NULL, msg, sizeof(msg));

    if (err != 0)
        print_error("deep_cache_acquire: %d %s\n", err, msg);
    assert_int_equal(err, 0);
    assert_non_null(*out);
    assert_non_null(deep_cache_entry_ref(*out));
}

static void second_acquire_is_a_hit(void **state)
{
    deep_cache *c = NULL;
    deep_cache_entry *a = NULL, *b = NULL, *other = NULL;
    struct deep_view v = view_of("-0.1", 1000), w = view_of("-0.1", 1001);
    struct deep_cache_stats st;
    (void)state;

    assert_int_equal(deep_cache_new(&c, 64 << 20), 0);
    acquire_ok(&a, c, &v);
    acquire_ok(&b, c, &v);
    assert_ptr_equal(a, b);
    /* Another max_iter is another reference. */
    acquire_ok(&other, c, &w);
    assert_ptr_not_equal(other, a);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 2);
    assert_true(st.bytes >= deep_ref_bytes(deep_cache_entry_ref(a)) + deep_ref_bytes(deep_cache_entry_ref(other)));
    assert_int_equal(st.budget, 64 << 20);
    deep_cache_release(a);
    deep_cache_release(b);
    deep_cache_release(other);
    /* Released, still cached. */
    acquire_ok(&a, c, &v);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 2);
    deep_cache_release(a);
    deep_cache_free(c);
}

static void budget_evicts_least_recently_used_but_never_in_use(void **state)
{
    deep_cache *c = NULL;
    deep_cache_entry *a = NULL, *b = NULL, *d = NULL;
    struct deep_view va = view_of("-0.1", 20000), vb = view_of("-0.11", 20000), vd = view_of("-0.12", 20000);
    struct deep_cache_stats st;
    size_t one;
    (void)state;

    /* Measure one reference, then give the cache room for one and a half. */
    assert_int_equal(deep_cache_new(&c, UINT64_MAX / 4), 0);
    acquire_ok(&a, c, &va);
    one = deep_ref_bytes(deep_cache_entry_ref(a));
    deep_cache_release(a);
    deep_cache_free(c);
    assert_true(one > 0);

    assert_int_equal(deep_cache_new(&c, one + one / 2), 0);
    acquire_ok(&a, c, &va);
    acquire_ok(&b, c, &vb);
    /* Both in use: over the budget, and nothing is dropped. */
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 0);
    assert_true(st.bytes > st.budget);
    /* a is let go: the least recently used unused one goes. */
    deep_cache_release(a);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.evictions, 1);
    assert_true(st.bytes <= st.budget);
    /* d comes while b is held and is let go first: over the budget, d goes, the older b stays,
     * because it is in use. */
    acquire_ok(&d, c, &vd);
    deep_cache_release(d);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.evictions, 2);
    /* b let go within the budget: kept, and found again. */
    deep_cache_release(b);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.evictions, 2);
    acquire_ok(&b, c, &vb);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    deep_cache_release(b);
    acquire_ok(&a, c, &va);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.misses, 4);
    deep_cache_release(a);
    deep_cache_free(c);
}

struct acquirer {
    deep_cache *cache;
    struct deep_view view;
    atomic_int cancel;
    int err;
    deep_cache_entry *entry;
    double done_ms;
    pthread_t thread;
};

static void *acquire_thread(void *arg)
{
    struct acquirer *a = arg;
    char msg[256];

    a->err = deep_cache_acquire(&a->entry, a->cache, &a->view, &a->cancel, msg, sizeof(msg));
    a->done_ms = now_ms();
    return NULL;
}

static void start(struct acquirer *a, deep_cache *c, struct deep_view v)
{
    memset(a, 0, sizeof(*a));
    a->cache = c;
    a->view = v;
    atomic_init(&a->cancel, 0);
    assert_int_equal(pthread_create(&a->thread, NULL, acquire_thread, a), 0);
}

static void concurrent_acquires_build_once(void **state)
{
    deep_cache *c = NULL;
    struct acquirer a[4];
    struct deep_cache_stats st;
    (void)state;

    assert_int_equal(deep_cache_new(&c, 256 << 20), 0);
    for (int i = 0; i < 4; i++)
        start(&a[i], c, view_of("-0.1", 400000));
    for (int i = 0; i < 4; i++) {
        pthread_join(a[i].thread, NULL);
        assert_int_equal(a[i].err, 0);
        assert_ptr_equal(a[i].entry, a[0].entry);
    }
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.entries, 1);
    for (int i = 0; i < 4; i++)
        deep_cache_release(a[i].entry);
    deep_cache_free(c);
}

static void cancelled_waiter_and_builder(void **state)
{
    deep_cache *c = NULL;
    struct acquirer builder, waiter;
    struct deep_cache_stats st;
    double t;
    /* Slow enough to cancel in the middle: millions of steps of the reference. */
    struct deep_view slow = view_of("-0.1", 3000000);
    (void)state;

    assert_int_equal(deep_cache_new(&c, 1ull << 32), 0);
    start(&builder, c, slow);
    {
        struct timespec pause = {0, 30 * 1000000L};
        nanosleep(&pause, NULL);
    }
    start(&waiter, c, slow);
    {
        struct timespec pause = {0, 30 * 1000000L};
        nanosleep(&pause, NULL);
    }
    /* The waiter gives up on its own flag, within a few polls. */
    t = now_ms();
    atomic_store(&waiter.cancel, 1);
    pthread_join(waiter.thread, NULL);
    assert_int_equal(waiter.err, ERR_CANCELLED);
    assert_true(waiter.done_ms - t < 50);
    /* A new waiter, then the builder is cancelled: the waiter builds it instead. */
    start(&waiter, c, slow);
    {
        struct timespec pause = {0, 30 * 1000000L};
        nanosleep(&pause, NULL);
    }
    t = now_ms();
    atomic_store(&builder.cancel, 1);
    pthread_join(builder.thread, NULL);
    assert_int_equal(builder.err, ERR_CANCELLED);
    assert_true(builder.done_ms - t < 100);
    pthread_join(waiter.thread, NULL);
    assert_int_equal(waiter.err, 0);
    deep_cache_get_stats(c, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    deep_cache_release(waiter.entry);
    deep_cache_free(c);
}

int test_deep_cache_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(second_acquire_is_a_hit),
        cmocka_unit_test(budget_evicts_least_recently_used_but_never_in_use),
        cmocka_unit_test(concurrent_acquires_build_once),
        cmocka_unit_test(cancelled_waiter_and_builder),
    };
    return cmocka_run_group_tests_name("deep_cache", tests, NULL, NULL);
}
