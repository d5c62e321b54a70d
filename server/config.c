/* config.c: fractald's defaults and command-line flags. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

#ifndef FRACTALD_VERSION
#define FRACTALD_VERSION "0.0.0"
#endif

/* $XDG_STATE_HOME/fractald/spool, else ~/.local/state/fractald/spool, else ./fractald-spool. */
static void default_spool_dir(char *out, size_t outlen)
{
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

    if (state && state[0] == '/')
        snprintf(out, outlen, "%s/fractald/spool", state);
    else if (home && home[0] == '/')
        snprintf(out, outlen, "%s/.local/state/fractald/spool", home);
    else
        snprintf(out, outlen, "fractald-spool");
}

void config_defaults(struct config *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->listen, sizeof(out->listen), "%s", CONFIG_DEFAULT_LISTEN);
    out->engine_threads = 0;
    out->render_workers = 4;
    out->queue_length = 64;
    out->grace_ms = 10000;
    out->max_inflight_cost = 1e12;
    default_spool_dir(out->spool_dir, sizeof(out->spool_dir));
    out->job_retention_ms = 3600 * 1000;
    out->job_disk_budget = (uint64_t)1 << 30;
    out->max_jobs = 10000;
    out->io_workers = 2;
    out->stream_write_timeout_ms = 30000;
    out->max_watchers = 1024;
    out->log_level = LOG_INFO;
    out->limits.max_side = 65536;
    /* 2^28 samples: 16384 x 16384 pixels, or 2048 x 2048 at supersample 8. */
    out->limits.max_samples = (uint64_t)1 << 28;
    out->limits.max_iter = 10000000;
    /* 2.5e11 iterations: about ten seconds of a 2-core AVX2 machine on escaping pixels. */
    out->limits.max_cost = 2.5e11;
    out->limits.max_message_bytes = 64u << 20;
    out->limits.max_request_bytes = 64u << 10;
}

static void print_usage(const struct config *d)
{
    printf("usage: fractald [options]\n"
           "Escape-time fractal render server (gRPC, package fractal.v1).\n\n"
           "  --listen ADDR            address to serve on (default %s; port 0 picks a free one)\n"
           "  --threads N              CPU engine threads, 0 = one per CPU (default 0)\n"
           "  --workers N              renders computed at once (default %u)\n"
           "  --queue N                renders waiting beyond those before RESOURCE_EXHAUSTED (default %u)\n"
           "  --max-side N             largest image width or height, 1..65536 (default %u)\n"
           "  --max-samples N          most samples (pixels x supersample^2) per request (default %llu)\n"
           "  --max-iter N             largest max_iter (default %u)\n"
           "  --max-cost N             most iterations (samples x max_iter) per request (default %.3g)\n"
           "  --max-message-bytes N    largest reply; bigger images need RenderStream (default %u)\n"
           "  --max-request-bytes N    largest request message accepted (default %u)\n"
           "  --max-inflight-cost N    most iterations queued and running at once (default %.3g)\n"
           "  --grace-ms N             time in-flight calls get after SIGTERM (default %u)\n"
           "  --spool-dir DIR          job journal and results (default %s; \"\" disables jobs)\n"
           "  --job-retention-ms N     how long finished jobs and results are kept (default %llu)\n"
           "  --job-disk-budget N      bytes of job results kept at most (default %llu)\n"
           "  --max-jobs N             jobs held in any state (default %u)\n"
           "  --io-workers N           threads for job submission and result streaming (default %u)\n"
           "  --stream-write-timeout-ms N  cancel a stream whose reader takes nothing for this long (default %u)\n"
           "  --max-watchers N         Health.Watch streams open at once (default %u)\n"
           "  --log-level LEVEL        debug, info, warn, error or off (default info)\n"
           "  --list-devices           print the devices fractald would use, and exit\n"
           "  --config FILE            device-selection config, an INI file (README: Choosing devices)\n"
           "  --devices SPEC           device config in one line, \"key = value; ...\" (overrides\n"
           "                           FRACTALD_DEVICES, which overrides the file)\n"
           "  --cpu-engine on|off      use the built-in CPU engine (default on)\n"
           "  --cache-dir DIR          OpenCL program cache (default ~/.cache/fractald; \"\" = none)\n"
           "  --help, --version\n",
           d->listen, d->render_workers, d->queue_length, d->limits.max_side,
           (unsigned long long)d->limits.max_samples, d->limits.max_iter, d->limits.max_cost,
           d->limits.max_message_bytes, d->limits.max_request_bytes, d->max_inflight_cost, d->grace_ms,
           d->spool_dir, (unsigned long long)d->job_retention_ms, (unsigned long long)d->job_disk_budget,
           d->max_jobs, d->io_workers, d->stream_write_timeout_ms, d->max_watchers);
}

/* Parses an unsigned integer in [lo, hi], all of `text`, into *out; else writes the message. */
static int parse_u64(uint64_t *out, const char *flag, const char *text, uint64_t lo, uint64_t hi,
                     char *msg, size_t msglen)
{
    char *end = NULL;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (text[0] == '-' || text[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        snprintf(msg, msglen, "%s must be an integer %llu..%llu, got '%s'", flag,
                 (unsigned long long)lo, (unsigned long long)hi, text);
        return ERR_INVALID;
    }
    *out = v;
    return 0;
}

/* Parses an iteration count (a number >= 1, "1e12" allowed) into *out. */
static int parse_cost(double *out, const char *flag, const char *text, char *msg, size_t msglen)
{
    char *end = NULL;
    double d = strtod(text, &end);

    if (*end != '\0' || end == text || !isfinite(d) || d < 1) {
        snprintf(msg, msglen, "%s must be a number >= 1, got '%s'", flag, text);
        return ERR_INVALID;
    }
    *out = d;
    return 0;
}

int config_parse_args(struct config *cfg, int argc, char **argv, char *msg, size_t msglen)
{
    enum { O_LISTEN = 256, O_THREADS, O_WORKERS, O_QUEUE, O_MAX_SIDE, O_MAX_SAMPLES, O_MAX_ITER,
           O_MAX_COST, O_MAX_INFLIGHT, O_MAX_MESSAGE, O_MAX_REQUEST, O_GRACE, O_LOG_LEVEL, O_LIST, O_HELP,
           O_VERSION, O_SPOOL, O_RETENTION, O_DISK_BUDGET, O_MAX_JOBS, O_IO_WORKERS, O_WRITE_TIMEOUT, O_MAX_WATCHERS, O_CONFIG, O_DEVICES, O_CPU_ENGINE, O_CACHE_DIR };
    static const struct option options[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"threads", required_argument, NULL, O_THREADS},
        {"workers", required_argument, NULL, O_WORKERS},
        {"queue", required_argument, NULL, O_QUEUE},
        {"max-side", required_argument, NULL, O_MAX_SIDE},
        {"max-samples", required_argument, NULL, O_MAX_SAMPLES},
        {"max-iter", required_argument, NULL, O_MAX_ITER},
        {"max-cost", required_argument, NULL, O_MAX_COST},
        {"max-inflight-cost", required_argument, NULL, O_MAX_INFLIGHT},
        {"max-message-bytes", required_argument, NULL, O_MAX_MESSAGE},
        {"max-request-bytes", required_argument, NULL, O_MAX_REQUEST},
        {"grace-ms", required_argument, NULL, O_GRACE},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"list-devices", no_argument, NULL, O_LIST},
        {"spool-dir", required_argument, NULL, O_SPOOL},
        {"job-retention-ms", required_argument, NULL, O_RETENTION},
        {"job-disk-budget", required_argument, NULL, O_DISK_BUDGET},
        {"max-jobs", required_argument, NULL, O_MAX_JOBS},
        {"io-workers", required_argument, NULL, O_IO_WORKERS},
        {"stream-write-timeout-ms", required_argument, NULL, O_WRITE_TIMEOUT},
        {"max-watchers", required_argument, NULL, O_MAX_WATCHERS},
        {"config", required_argument, NULL, O_CONFIG},
        {"devices", required_argument, NULL, O_DEVICES},
        {"cpu-engine", required_argument, NULL, O_CPU_ENGINE},
        {"cache-dir", required_argument, NULL, O_CACHE_DIR},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct config defaults;
    uint64_t v = 0;
    int opt, err = 0;

    config_defaults(&defaults);
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        const char *flag = optind > 1 ? argv[optind - 1] : "?";
        switch (opt) {
        case O_LISTEN:
            if (strlen(optarg) == 0 || strlen(optarg) >= sizeof(cfg->listen)) {
                snprintf(msg, msglen, "--listen must be a non-empty address under %zu bytes",
                         sizeof(cfg->listen));
                return ERR_INVALID;
            }
            snprintf(cfg->listen, sizeof(cfg->listen), "%s", optarg);
            break;
        case O_THREADS:
            if ((err = parse_u64(&v, "--threads", optarg, 0, 1024, msg, msglen)) < 0)
                return err;
            cfg->engine_threads = (unsigned)v;
            break;
        case O_WORKERS:
            if ((err = parse_u64(&v, "--workers", optarg, 1, 1024, msg, msglen)) < 0)
                return err;
            cfg->render_workers = (unsigned)v;
            break;
        case O_QUEUE:
            if ((err = parse_u64(&v, "--queue", optarg, 0, 1000000, msg, msglen)) < 0)
                return err;
            cfg->queue_length = (unsigned)v;
            break;
        case O_MAX_SIDE:
            if ((err = parse_u64(&v, "--max-side", optarg, 1, 65536, msg, msglen)) < 0)
                return err;
            cfg->limits.max_side = (uint32_t)v;
            break;
        case O_MAX_SAMPLES:
            if ((err = parse_u64(&v, "--max-samples", optarg, 1, (uint64_t)1 << 40, msg, msglen)) < 0)
                return err;
            cfg->limits.max_samples = v;
            break;
        case O_MAX_ITER:
            if ((err = parse_u64(&v, "--max-iter", optarg, 1, UINT32_MAX - 1, msg, msglen)) < 0)
                return err;
            cfg->limits.max_iter = (uint32_t)v;
            break;
        case O_MAX_COST:
            if ((err = parse_cost(&cfg->limits.max_cost, "--max-cost", optarg, msg, msglen)) < 0)
                return err;
            break;
        case O_MAX_INFLIGHT:
            if ((err = parse_cost(&cfg->max_inflight_cost, "--max-inflight-cost", optarg, msg, msglen)) < 0)
                return err;
            break;
        case O_MAX_MESSAGE:
            if ((err = parse_u64(&v, "--max-message-bytes", optarg, 1024, INT32_MAX, msg, msglen)) < 0)
                return err;
            cfg->limits.max_message_bytes = (uint32_t)v;
            break;
        case O_MAX_REQUEST:
            if ((err = parse_u64(&v, "--max-request-bytes", optarg, 1024, INT32_MAX, msg, msglen)) < 0)
                return err;
            cfg->limits.max_request_bytes = (uint32_t)v;
            break;
        case O_GRACE:
            if ((err = parse_u64(&v, "--grace-ms", optarg, 0, 3600000, msg, msglen)) < 0)
                return err;
            cfg->grace_ms = (unsigned)v;
            break;
        case O_LOG_LEVEL:
            if ((cfg->log_level = log_parse_level(optarg)) < 0) {
                snprintf(msg, msglen, "--log-level must be debug, info, warn, error or off, got '%s'",
                         optarg);
                return ERR_INVALID;
            }
            break;
        case O_LIST:
            cfg->list_devices = 1;
            break;
        case O_SPOOL:
            if (strlen(optarg) >= sizeof(cfg->spool_dir)) {
                snprintf(msg, msglen, "--spool-dir must be under %zu bytes", sizeof(cfg->spool_dir));
                return ERR_INVALID;
            }
            snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", optarg);
            break;
        case O_RETENTION:
            if ((err = parse_u64(&cfg->job_retention_ms, "--job-retention-ms", optarg, 0,
                                 (uint64_t)365 * 24 * 3600 * 1000, msg, msglen)) < 0)
                return err;
            break;
        case O_DISK_BUDGET:
            if ((err = parse_u64(&cfg->job_disk_budget, "--job-disk-budget", optarg, 1, UINT64_MAX / 2, msg,
                                 msglen)) < 0)
                return err;
            break;
        case O_MAX_JOBS:
            if ((err = parse_u64(&v, "--max-jobs", optarg, 1, 10000000, msg, msglen)) < 0)
                return err;
            cfg->max_jobs = (uint32_t)v;
            break;
        case O_IO_WORKERS:
            if ((err = parse_u64(&v, "--io-workers", optarg, 1, 64, msg, msglen)) < 0)
                return err;
            cfg->io_workers = (unsigned)v;
            break;
        case O_WRITE_TIMEOUT:
            if ((err = parse_u64(&v, "--stream-write-timeout-ms", optarg, 100, 3600000, msg, msglen)) < 0)
                return err;
            cfg->stream_write_timeout_ms = (unsigned)v;
            break;
        case O_MAX_WATCHERS:
            if ((err = parse_u64(&v, "--max-watchers", optarg, 0, 1000000, msg, msglen)) < 0)
                return err;
            cfg->max_watchers = (unsigned)v;
            break;
        /* Device-selection values are checked by devconf, which names the flag in its messages. */
        case O_CONFIG:
            cfg->config_file = optarg;
            break;
        case O_DEVICES:
            cfg->devices = optarg;
            break;
        case O_CPU_ENGINE:
            cfg->cpu_engine = optarg;
            break;
        case O_CACHE_DIR:
            cfg->cache_dir = optarg;
            break;
        case O_HELP:
            print_usage(&defaults);
            return 1;
        case O_VERSION:
            printf("fractald %s\n", FRACTALD_VERSION);
            return 1;
        case ':':
            snprintf(msg, msglen, "%s needs a value", flag);
            return ERR_INVALID;
        default:
            snprintf(msg, msglen, "unknown option '%s' (see fractald --help)", flag);
            return ERR_INVALID;
        }
    }
    /* Jobs run on all render workers but one, which stays free for interactive renders. */
    if (cfg->spool_dir[0] && cfg->render_workers < 2) {
        snprintf(msg, msglen, "--workers must be at least 2 when jobs are enabled (one stays free for "
                 "interactive renders), got %u; or disable jobs with --spool-dir \"\"", cfg->render_workers);
        return ERR_INVALID;
    }
    if (optind < argc) {
        snprintf(msg, msglen, "unexpected argument '%s' (see fractald --help)", argv[optind]);
        return ERR_INVALID;
    }
    return 0;
}
