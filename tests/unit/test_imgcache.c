/* test_imgcache.c: the shared image cache (server/imgcache/): hits return the stored bytes and
 * metadata, the byte budget evicts the least recently used entry, a hit survives the eviction of
 * its entry, oversized images and a zero budget keep nothing, and a key is replaced in place. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgcache.h"
#include "unit.h"

static const struct imgcache_meta META = {1234, 56, 7, 256, 256, 2, 0};

static void put_bytes(imgcache *c, const char *key, size_t len, int fill)
{
    unsigned char *data = malloc(len);
    assert_non_null(data);
    memset(data, fill, len);
    assert_int_equal(imgcache_put(c, key, data, len, &META), 0);
    free(data);
}

static bool has(imgcache *c, const char *key)
{
    struct imgcache_hit hit;
    int found = imgcache_get(c, &hit, key);
    imgcache_release(c, &hit);
    return found == 1;
}

static void hit_returns_bytes_and_meta(void **state)
{
    imgcache *c = NULL;
    struct imgcache_hit hit;
    struct imgcache_stats st;
    (void)state;

    assert_int_equal(imgcache_new(&c, 1 << 20), 0);
    assert_int_equal(imgcache_get(c, &hit, "{\"width\":1}"), 0);
    put_bytes(c, "{\"width\":1}", 1000, 0xab);
    assert_int_equal(imgcache_get(c, &hit, "{\"width\":1}"), 1);
    assert_int_equal(hit.len, 1000);
    assert_int_equal(hit.data[0], 0xab);
    assert_int_equal(hit.data[999], 0xab);
    assert_int_equal(hit.meta.iterations, 1234);
    assert_int_equal(hit.meta.tiles, 7);
    imgcache_release(c, &hit);
    assert_int_equal(imgcache_get(c, &hit, "{\"width\":2}"), 0);
    imgcache_get_stats(&st, c);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    assert_true(st.bytes >= 1000 && st.bytes < 1000 + 512);
    imgcache_free(c);
}

static void budget_evicts_least_recently_used(void **state)
{
    imgcache *c = NULL;
    struct imgcache_stats st;
    char key[2] = "a";
    (void)state;

    /* Each entry costs a little over 10 KB (under an eighth of the budget): nine fit, not ten. */
    assert_int_equal(imgcache_new(&c, 100000), 0);
    for (key[0] = 'a'; key[0] <= 'i'; key[0]++)
        put_bytes(c, key, 10000, key[0]);
    imgcache_get_stats(&st, c);
    assert_int_equal(st.entries, 9);
    assert_int_equal(st.evictions, 0);
    put_bytes(c, "c", 10000, 'c');          /* replacing keeps one entry per key */
    imgcache_get_stats(&st, c);
    assert_int_equal(st.entries, 9);
    assert_true(has(c, "a"));               /* a is now the most recently used */
    put_bytes(c, "j", 10000, 'j');          /* out goes b, the least recently used */
    put_bytes(c, "k", 10000, 'k');          /* then d (c was replaced after it) */
    imgcache_get_stats(&st, c);
    assert_int_equal(st.evictions, 2);
    assert_true(st.bytes <= 100000);
    assert_false(has(c, "b"));
    assert_false(has(c, "d"));
    assert_true(has(c, "a"));
    assert_true(has(c, "c"));
    assert_true(has(c, "k"));
    imgcache_free(c);
}

static void hit_outlives_eviction(void **state)
{
    imgcache *c = NULL;
    struct imgcache_hit hit;
    (void)state;

    assert_int_equal(imgcache_new(&c, 80000), 0);
    put_bytes(c, "old", 9000, 0x11);
    assert_int_equal(imgcache_get(c, &hit, "old"), 1);
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        put_bytes(c, key, 9000, i);
    }
    assert_false(has(c, "old"));
    /* The hit's bytes are still whole (ASan would see a use after free). */
    assert_int_equal(hit.data[0], 0x11);
    assert_int_equal(hit.data[8999], 0x11);
    imgcache_release(c, &hit);
    imgcache_free(c);
}

static void oversized_and_disabled_keep_nothing(void **state)
{
    imgcache *c = NULL, *off = NULL;
    struct imgcache_stats st;
    (void)state;

    assert_int_equal(imgcache_new(&c, 80000), 0);
    put_bytes(c, "huge", 20000, 1);     /* over an eighth of the budget */
    assert_false(has(c, "huge"));
    imgcache_free(c);
    assert_int_equal(imgcache_new(&off, 0), 0);
    assert_false(imgcache_enabled(off));
    put_bytes(off, "a", 10, 1);
    assert_false(has(off, "a"));
    imgcache_get_stats(&st, off);
    assert_int_equal(st.misses, 0);
    assert_int_equal(st.entries, 0);
    imgcache_free(off);
    assert_false(imgcache_enabled(NULL));
}

int test_imgcache_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hit_returns_bytes_and_meta),
        cmocka_unit_test(budget_evicts_least_recently_used),
        cmocka_unit_test(hit_outlives_eviction),
        cmocka_unit_test(oversized_and_disabled_keep_nothing),
    };
    return cmocka_run_group_tests_name("imgcache", tests, NULL, NULL);
}
