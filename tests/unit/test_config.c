/* test_config.c: the server's settings parser (config.c: flags, the [server] section, size
 * suffixes, listen addresses) and the logfmt writer it reports through (log.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

#include "config.h"
#include "err.h"
#include "log.h"

static int parse(struct config *cfg, char *msg, size_t msglen, int argc, const char **argv)
{
    config_defaults(cfg);
    return config_parse_args(cfg, argc, (char **)argv, msg, msglen);
}

static void size_suffixes_are_binary_and_range_checked(void **state)
{
    uint64_t v = 0;
    char msg[256];

    (void)state;
    assert_int_equal(config_parse_size(&v, "x", "64M", 1, UINT64_MAX, msg, sizeof(msg)), 0);
    assert_true(v == (uint64_t)64 << 20);
    assert_int_equal(config_parse_size(&v, "x", "1g", 1, UINT64_MAX, msg, sizeof(msg)), 0);
    assert_true(v == (uint64_t)1 << 30);
    assert_int_equal(config_parse_size(&v, "x", "4096", 1, UINT64_MAX, msg, sizeof(msg)), 0);
    assert_true(v == 4096);
    /* 2G is over INT32_MAX: refused, not wrapped. */
    assert_int_equal(config_parse_size(&v, "--max-message-bytes", "2G", 1024, INT32_MAX, msg, sizeof(msg)),
                     ERR_INVALID);
    assert_string_equal(msg, "--max-message-bytes must be an integer 1024..2147483647 (K, M, G, T "
                             "suffixes allowed), got '2G'");
    /* A shift that would overflow 64 bits is refused too. */
    assert_int_equal(config_parse_size(&v, "x", "17000000000T", 1, UINT64_MAX, msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_parse_size(&v, "x", "1MB", 1, UINT64_MAX, msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_parse_size(&v, "x", "-1", 0, UINT64_MAX, msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_parse_size(&v, "x", "", 0, UINT64_MAX, msg, sizeof(msg)), ERR_INVALID);
}

static void listen_addresses(void **state)
{
    char msg[256];

    (void)state;
    assert_int_equal(config_check_listen("--listen", "127.0.0.1:0", msg, sizeof(msg)), 0);
    assert_int_equal(config_check_listen("--listen", "localhost:65535", msg, sizeof(msg)), 0);
    assert_int_equal(config_check_listen("--listen", "[::1]:50051", msg, sizeof(msg)), 0);
    assert_int_equal(config_check_listen("--listen", "unix:/tmp/fractald.sock", msg, sizeof(msg)), 0);
    assert_int_equal(config_check_listen("--listen", "127.0.0.1:65536", msg, sizeof(msg)), ERR_INVALID);
    assert_string_equal(msg, "--listen: the port must be 0..65535 (0 picks a free one), got '65536'");
    assert_int_equal(config_check_listen("--listen", "::1:80", msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_check_listen("--listen", "[::1]", msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_check_listen("--listen", ":80", msg, sizeof(msg)), ERR_INVALID);
    assert_int_equal(config_check_listen("--listen", "unix:", msg, sizeof(msg)), ERR_INVALID);
}

static void flags_fill_every_kind_of_setting(void **state)
{
    struct config cfg;
    char msg[256] = "";
    const char *argv[] = {"fractald", "--workers", "7", "--max-samples", "1M", "--max-cost", "1e9",
                          "--job-disk-budget", "3G", "--log-level", "warn", "--spool-dir", "",
                          "--listen", "[::1]:7000", "--job-retention-ms", "5000"};

    (void)state;
    assert_int_equal(parse(&cfg, msg, sizeof(msg), (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
    assert_int_equal(cfg.render_workers, 7);
    assert_true(cfg.limits.max_samples == (uint64_t)1 << 20);
    assert_true(cfg.limits.max_cost == 1e9);
    assert_true(cfg.job_disk_budget == (uint64_t)3 << 30);
    assert_int_equal(cfg.log_level, LOG_WARN);
    assert_string_equal(cfg.spool_dir, "");
    assert_string_equal(cfg.listen, "[::1]:7000");
    assert_true(cfg.job_retention_ms == 5000);
    /* Settings not given keep their defaults. */
    assert_int_equal(cfg.queue_length, 64);
}

static void file_then_flags(void **state)
{
    char dir[] = "/tmp/config-test-XXXXXX", path[64], msg[512] = "";
    struct config cfg;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fractald.ini", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[devices]\ncpu_engine = on\n\n[server]\nworkers = 5\nqueue = 9\nmax_request_bytes = 8K\n", f);
    fclose(f);
    {
        const char *argv[] = {"fractald", "--queue", "3", "--config", path};
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 5, argv), 0);
    }
    assert_int_equal(cfg.render_workers, 5);
    assert_int_equal(cfg.queue_length, 3);  /* the flag wins, wherever it stands */
    assert_int_equal(cfg.limits.max_request_bytes, 8192);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[server]\nworkers = 5\nmax_side = 70000\n", f);
    fclose(f);
    {
        const char *argv[] = {"fractald", "--config", path};
        char want[256];
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 3, argv), ERR_INVALID);
        snprintf(want, sizeof(want), "%s:3: max_side must be an integer 1..65536, got '70000'", path);
        assert_string_equal(msg, want);
    }
    unlink(path);
    rmdir(dir);
}

static void deep_zoom_settings(void **state)
{
    char dir[] = "/tmp/config-deep-XXXXXX", path[64], msg[512] = "";
    struct config cfg;
    FILE *f;

    (void)state;
    config_defaults(&cfg);
    assert_int_equal(cfg.limits.deep_max_digits, 4096);
    assert_true(cfg.limits.deep_ref_cache == (uint64_t)256 << 20);
    {
        const char *argv[] = {"fractald", "--deep-max-digits", "100", "--deep-ref-cache", "1G"};
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 5, argv), 0);
        assert_int_equal(cfg.limits.deep_max_digits, 100);
        assert_true(cfg.limits.deep_ref_cache == (uint64_t)1 << 30);
    }
    {
        const char *argv[] = {"fractald", "--deep-max-digits", "16"};
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 3, argv), ERR_INVALID);
        assert_string_equal(msg, "--deep-max-digits must be an integer 17..1000000, got '16'");
    }
    {
        const char *argv[] = {"fractald", "--deep-ref-cache", "512K"};
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 3, argv), ERR_INVALID);
        assert_string_equal(msg, "--deep-ref-cache must be an integer 1048576..9223372036854775807 (K, M, G, T "
                                 "suffixes allowed), got '512K'");
    }
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fractald.ini", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[server]\ndeep_max_digits = 300\ndeep_ref_cache = 64M\n", f);
    fclose(f);
    {
        const char *argv[] = {"fractald", "--config", path};
        assert_int_equal(parse(&cfg, msg, sizeof(msg), 3, argv), 0);
        assert_int_equal(cfg.limits.deep_max_digits, 300);
        assert_true(cfg.limits.deep_ref_cache == (uint64_t)64 << 20);
    }
    unlink(path);
    rmdir(dir);
}

static void logfmt_values_are_quoted_and_escaped(void **state)
{
    char buf[256] = "", small[16];

    (void)state;
    log_kv(buf, sizeof(buf), "a", "plain");
    log_kv(buf, sizeof(buf), "b", "two words");
    log_kv(buf, sizeof(buf), "c", "q\"b\\n\nt\t\x01");
    log_kv(buf, sizeof(buf), "d", "");
    log_kv(buf, sizeof(buf), "e", "k=v");
    log_kv(buf, sizeof(buf), "f", NULL);
    assert_string_equal(buf, " a=plain b=\"two words\" c=\"q\\\"b\\\\n\\nt\\t\\x01\" d=\"\" e=\"k=v\" f=\"\"");
    /* A quoted value cut short still closes its quote, and never splits an escape. */
    assert_int_equal(log_quote(small, sizeof(small), "aaaa\"bbbbbbbbbbbbbbbb"), 15);
    assert_string_equal(small, "\"aaaa\\\"bbbbbbb\"");
    assert_int_equal(log_quote(small, 8, "ab\"\"\"\"\"\""), 6);
    assert_string_equal(small, "\"ab\\\"\"");
    /* A pair that does not fit whole is dropped: the buffer stays valid logfmt. */
    strcpy(small, " x=1");
    log_kv(small, sizeof(small), "long", "0123456789");
    assert_string_equal(small, " x=1");
}

int test_config_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(size_suffixes_are_binary_and_range_checked),
        cmocka_unit_test(listen_addresses),
        cmocka_unit_test(flags_fill_every_kind_of_setting),
        cmocka_unit_test(file_then_flags),
        cmocka_unit_test(deep_zoom_settings),
        cmocka_unit_test(logfmt_values_are_quoted_and_escaped),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
