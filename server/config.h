/* config.h: fractald's settings: where it listens, how many threads it runs, and every limit on
 * what a request may ask for. Filled from defaults, then the [server] section of the --config
 * file, then command-line flags (flags win). */
#ifndef FRACTALD_CONFIG_H
#define FRACTALD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Limits a request is validated against. Every one is configurable (fractald --help). */
struct limits {
    uint32_t max_side;          /* width and height: 1..max_side pixels */
    uint64_t max_samples;       /* region pixels x supersample^2 in one request */
    uint32_t max_iter;          /* max_iter: 1..max_iter */
    double max_cost;            /* samples x max_iter in one request */
    uint32_t max_message_bytes; /* largest reply message (an encoded image in a unary reply) */
    uint32_t max_request_bytes; /* largest request message the server accepts */
    /* Deep zoom: the most significant digits in each of a view's *_text fields, and the most
     * digits a view may need to resolve its pixels (log10(max(|centre|, 1) / spacing)). */
    uint32_t deep_max_digits;
    uint64_t deep_ref_cache;    /* bytes of deep-zoom reference orbits kept for reuse */
};

struct config {
    char listen[256];           /* gRPC address, e.g. "127.0.0.1:50051" or "unix:/path" */
    char http_listen[256];      /* HTTP address (tiles, REST, metrics, viewer), HOST:PORT; "" = off */
    uint64_t image_cache;       /* bytes of encoded images kept for repeated requests; 0 = off */
    unsigned engine_threads;    /* CPU engine worker threads; 0 = one per online CPU */
    unsigned render_workers;    /* renders in progress at once */
    unsigned queue_length;      /* renders waiting for a worker before RESOURCE_EXHAUSTED */
    unsigned grace_ms;          /* how long in-flight calls may finish after SIGTERM */
    unsigned drain_notice_ms;   /* after SIGTERM, answer health NOT_SERVING at least this long
                                 * before the listener closes (within grace_ms) */
    double max_inflight_cost;   /* iterations of all queued and running renders together */
    /* Jobs (SubmitJob and friends): journal and results in spool_dir; "" disables jobs. */
    char spool_dir[512];
    uint64_t job_retention_ms;  /* how long finished jobs and results are kept */
    uint64_t job_disk_budget;   /* bytes of job results the spool may hold */
    uint32_t max_jobs;          /* jobs held in any state */
    /* A fleet's shared job store: a libpq connection string of PostgreSQL; "" = spool_dir. */
    char job_store[1024];
    uint32_t job_lease_ms;      /* --job-store: a silent server's running job is taken over after this */
    uint32_t job_runners;       /* render workers that may run jobs; CONFIG_JOB_RUNNERS_AUTO = workers - 1 */
#define CONFIG_JOB_RUNNERS_AUTO UINT32_MAX
    unsigned io_workers;        /* threads for job submission, cancellation and result streaming */
    unsigned stream_write_timeout_ms; /* a stream whose reader takes no message for this long is
                                       * cancelled, so stalled readers cannot hold workers */
    unsigned max_watchers;      /* Health.Watch streams open at once */
    int log_level;
    /* Exposure: TLS (the files are PEM), bearer tokens, and the override for a plain listener on
     * a non-loopback address. "" = not set. */
    char tls_cert[512];         /* server certificate chain */
    char tls_key[512];          /* its private key */
    char tls_client_ca[512];    /* CAs whose client certificates are required (mutual TLS) */
    char token_file[512];       /* bearer tokens, one per line, reloaded on SIGHUP */
    int auth_health;            /* health Check/Watch need a token too (default: open to probes) */
    int insecure;               /* allow a non-loopback listener without TLS or tokens */
    /* Per-client shares, 0..1, of the render queue (calls waiting and running) and of the
     * in-flight cost, enforced while more than one client is active; 1 = no per-client limit. */
    double client_queue_share;
    double client_cost_share;
    int list_devices;           /* print the devices and exit */
    /* Device selection (devconf.h); each points into argv, NULL when the flag was not given. */
    const char *config_file;    /* --config FILE: the INI file */
    const char *devices;        /* --devices "key = value; ...": the one-line form */
    const char *cpu_engine;     /* --cpu-engine on|off */
    const char *cache_dir;      /* --cache-dir DIR: OpenCL program cache ("" = none) */
    struct limits limits;
};

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:50051"

/* Fills *out with the defaults documented in `fractald --help`. */
void config_defaults(struct config *out);

/* Applies the [server] section of the --config file (if the flags name one), then the flags, over
 * the current values of *cfg. Returns 0 to run, 1 when the flags asked only for --help or
 * --version (already printed), or ERR_INVALID with a one-line message in msg naming the flag (or
 * FILE:LINE: key), the value and the allowed range. */
int config_parse_args(struct config *cfg, int argc, char **argv, char *msg, size_t msglen);

/* Applies the [server] section of the INI file at path over *cfg; every other section is left to
 * the device config (devconf.h). Keys are the flag names with '_' for '-'. Returns 0, or
 * ERR_INVALID with "PATH:LINE: ..." (or "PATH: cannot read: ...") in msg; *cfg may then be
 * partly updated. */
int config_load_file(struct config *cfg, const char *path, char *msg, size_t msglen);

/* Parses an integer lo..hi with an optional binary suffix K, M, G or T (x1024^n), all of text,
 * into *out. Returns 0, or ERR_INVALID with "<what> must be an integer lo..hi (...), got '...'". */
int config_parse_size(uint64_t *out, const char *what, const char *text, uint64_t lo, uint64_t hi,
                      char *msg, size_t msglen);

/* Whether a listen address is loopback only: 127.0.0.0/8, ::1, localhost, or a unix: socket. */
int config_listen_is_loopback(const char *addr);

/* Checks a listen address: HOST:PORT, [IPV6]:PORT or unix:PATH, with PORT 0..65535 (0 picks a
 * free port). Returns 0, or ERR_INVALID with a message naming `what`. */
int config_check_listen(const char *what, const char *addr, char *msg, size_t msglen);

#endif
