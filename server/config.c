/* config.c: fractald's settings: defaults, the [server] section of the config file, then
 * command-line flags, all through one table, so a flag and its file key take the same values and
 * give the same messages. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <getopt.h>
#include <ini.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    out->job_lease_ms = 10000;
    out->job_runners = CONFIG_JOB_RUNNERS_AUTO;
    out->io_workers = 2;
    out->stream_write_timeout_ms = 30000;
    out->max_watchers = 1024;
    out->image_cache = (uint64_t)64 << 20;
    out->log_level = LOG_INFO;
    /* Half each: with two clients active neither can starve the other, and a client alone is
     * not limited at all (the shares apply only while more than one client is active). */
    out->client_queue_share = 0.5;
    out->client_cost_share = 0.5;
    out->limits.max_side = 65536;
    /* 2^28 samples: 16384 x 16384 pixels, or 2048 x 2048 at supersample 8. */
    out->limits.max_samples = (uint64_t)1 << 28;
    out->limits.max_iter = 10000000;
    /* 2.5e11 iterations: about ten seconds of a 2-core AVX2 machine on escaping pixels. */
    out->limits.max_cost = 2.5e11;
    out->limits.max_message_bytes = 64u << 20;
    out->limits.max_request_bytes = 64u << 10;
    /* 4096 digits: zooms of 1e-4000 and more, where a reference orbit of 10^5 iterations takes
     * seconds; the request-size limit would allow about 20000 per field. */
    out->limits.deep_max_digits = 4096;
    out->limits.deep_ref_cache = (uint64_t)256 << 20;
}

static void print_usage(const struct config *d)
{
    printf("usage: fractald [options]\n"
           "Escape-time fractal render server (gRPC, package fractal.v1).\n\n"
           "  --listen ADDR            address to serve on (default %s; port 0 picks a free one)\n"
           "  --http-listen ADDR       also serve HTTP (tiles, REST jobs, /metrics, the viewer at /) on\n"
           "                           HOST:PORT (default off; port 0 picks a free one)\n"
           "  --image-cache N          bytes of encoded images kept for repeated requests, 0 = off\n"
           "                           (default 64M)\n"
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
           "  --deep-max-digits N      deep zoom: most significant digits in a view's *_text fields, and\n"
           "                           most digits a view may need to resolve its pixels (default %u)\n"
           "  --deep-ref-cache N       bytes of deep-zoom reference orbits kept for reuse (default %llu)\n"
           "  --grace-ms N             time in-flight calls get after SIGTERM (default %u)\n"
           "  --drain-notice-ms N      after SIGTERM, keep listening this long (health NOT_SERVING,\n"
           "                           new work UNAVAILABLE) before the listener closes (default 0)\n"
           "  --spool-dir DIR          job journal and results (default %s; \"\" disables jobs)\n"
           "  --job-retention-ms N     how long finished jobs and results are kept (default %llu)\n"
           "  --job-disk-budget N      bytes of job results kept at most (default %llu)\n"
           "  --max-jobs N             jobs held in any state (default %u)\n"
           "  --job-store URI          share jobs with a fleet in PostgreSQL (postgresql://... or\n"
           "                           libpq key=value); replaces --spool-dir (README: Fleet)\n"
           "  --job-lease-ms N         with --job-store: a job whose server stops renewing its lease\n"
           "                           this long is taken over by another server (default 10000)\n"
           "  --job-runners N          render workers that may run jobs at once (default: workers - 1;\n"
           "                           0: accept and answer jobs but run none)\n"
           "  --io-workers N           threads for job submission and result streaming (default %u)\n"
           "  --stream-write-timeout-ms N  cancel a stream whose reader takes nothing for this long (default %u)\n"
           "  --max-watchers N         Health.Watch streams open at once (default %u)\n"
           "  --log-level LEVEL        debug, info, warn, error or off (default info)\n"
           "  --tls-cert FILE          serve TLS with this PEM certificate chain (needs --tls-key)\n"
           "  --tls-key FILE           the PEM private key of --tls-cert\n"
           "  --tls-client-ca FILE     require client certificates signed by these PEM CAs (mutual TLS)\n"
           "  --token-file FILE        require 'authorization: Bearer TOKEN'; tokens one per line,\n"
           "                           NAME:TOKEN to name one, '#' comments; reread on SIGHUP\n"
           "  --auth-health            health checks need a token too (default: open, for probes)\n"
           "  --insecure               allow a non-loopback --listen without TLS or tokens\n"
           "  --client-queue-share F   most of the render queue one client may hold while others are\n"
           "                           active, 0..1 (default %.2g; 1 = no per-client limit)\n"
           "  --client-cost-share F    most of --max-inflight-cost one client may hold while others\n"
           "                           are active, 0..1 (default %.2g; 1 = no per-client limit)\n"
           "  --list-devices           print the devices fractald would use, and exit\n"
           "  --config FILE            device-selection config, an INI file (README: Choosing devices)\n"
           "  --devices SPEC           device config in one line, \"key = value; ...\" (overrides\n"
           "                           FRACTALD_DEVICES, which overrides the file)\n"
           "  --cpu-engine on|off      use the built-in CPU engine (default on)\n"
           "  --cache-dir DIR          OpenCL program cache (default ~/.cache/fractald; \"\" = none)\n"
           "  --help, -h, --version, -V\n\n"
           "Every setting but --config, --list-devices and the device flags may also be given in the\n"
           "[server] section of the --config file, as the flag's name with '_' for '-'\n"
           "(listen = 127.0.0.1:50051, max_message_bytes = 64M); flags win over the file. Sizes\n"
           "take K, M, G or T (x1024) suffixes.\n",
           d->listen, d->render_workers, d->queue_length, d->limits.max_side,
           (unsigned long long)d->limits.max_samples, d->limits.max_iter, d->limits.max_cost,
           d->limits.max_message_bytes, d->limits.max_request_bytes, d->max_inflight_cost,
           d->limits.deep_max_digits, (unsigned long long)d->limits.deep_ref_cache, d->grace_ms,
           d->spool_dir, (unsigned long long)d->job_retention_ms, (unsigned long long)d->job_disk_budget,
           d->max_jobs, d->io_workers, d->stream_write_timeout_ms, d->max_watchers, d->client_queue_share,
           d->client_cost_share);
}


enum setting_kind {
    SET_UINT,       /* unsigned integer in lo..hi */
    SET_SIZE,       /* unsigned integer in lo..hi, K/M/G/T suffix (x1024^n) allowed */
    SET_COST,       /* a number >= 1 ("1e12" allowed) */
    SET_LISTEN,     /* HOST:PORT, [V6]:PORT or unix:PATH, port 0..65535 */
    SET_TCP_LISTEN, /* HOST:PORT or [V6]:PORT, port 0..65535, or "" for off */
    SET_PATH,       /* a string that fits the field; "" allowed */
    SET_LEVEL,      /* a log level name */
    SET_FLAG,       /* a flag without a value; in the file true/false, yes/no, on/off, 1/0 */
    SET_SHARE       /* a fraction, 0 < F <= 1 */
};

/* One server setting: the flag's name (the file key is the same with '_' for '-'), where it lives
 * in struct config, its kind and range. */
struct setting {
    const char *name;
    enum setting_kind kind;
    size_t offset;
    size_t size;                /* of the field: 4 or 8 for integers, the buffer for strings */
    uint64_t lo, hi;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static const struct setting settings[] = {
    {"listen", SET_LISTEN, FIELD(listen), 0, 0},
    {"http-listen", SET_TCP_LISTEN, FIELD(http_listen), 0, 0},
    {"image-cache", SET_SIZE, FIELD(image_cache), 0, (uint64_t)1 << 40},
    {"threads", SET_UINT, FIELD(engine_threads), 0, 1024},
    {"workers", SET_UINT, FIELD(render_workers), 1, 1024},
    {"queue", SET_UINT, FIELD(queue_length), 0, 1000000},
    {"max-side", SET_UINT, FIELD(limits.max_side), 1, 65536},
    {"max-samples", SET_SIZE, FIELD(limits.max_samples), 1, (uint64_t)1 << 40},
    {"max-iter", SET_UINT, FIELD(limits.max_iter), 1, UINT32_MAX - 1},
    {"max-cost", SET_COST, FIELD(limits.max_cost), 0, 0},
    {"max-inflight-cost", SET_COST, FIELD(max_inflight_cost), 0, 0},
    {"deep-max-digits", SET_UINT, FIELD(limits.deep_max_digits), 17, 1000000},
    {"deep-ref-cache", SET_SIZE, FIELD(limits.deep_ref_cache), 1 << 20, UINT64_MAX / 2},
    {"max-message-bytes", SET_SIZE, FIELD(limits.max_message_bytes), 1024, INT32_MAX},
    {"max-request-bytes", SET_SIZE, FIELD(limits.max_request_bytes), 1024, INT32_MAX},
    {"grace-ms", SET_UINT, FIELD(grace_ms), 0, 3600000},
    {"drain-notice-ms", SET_UINT, FIELD(drain_notice_ms), 0, 3600000},
    {"log-level", SET_LEVEL, FIELD(log_level), 0, 0},
    {"spool-dir", SET_PATH, FIELD(spool_dir), 0, 0},
    {"job-retention-ms", SET_UINT, FIELD(job_retention_ms), 0, (uint64_t)365 * 24 * 3600 * 1000},
    {"job-disk-budget", SET_SIZE, FIELD(job_disk_budget), 1, UINT64_MAX / 2},
    {"max-jobs", SET_UINT, FIELD(max_jobs), 1, 10000000},
    {"job-store", SET_PATH, FIELD(job_store), 0, 0},
    {"job-lease-ms", SET_UINT, FIELD(job_lease_ms), 100, 3600000},
    {"job-runners", SET_UINT, FIELD(job_runners), 0, 1023},
    {"io-workers", SET_UINT, FIELD(io_workers), 1, 64},
    {"stream-write-timeout-ms", SET_UINT, FIELD(stream_write_timeout_ms), 100, 3600000},
    {"max-watchers", SET_UINT, FIELD(max_watchers), 0, 1000000},
    {"tls-cert", SET_PATH, FIELD(tls_cert), 0, 0},
    {"tls-key", SET_PATH, FIELD(tls_key), 0, 0},
    {"tls-client-ca", SET_PATH, FIELD(tls_client_ca), 0, 0},
    {"token-file", SET_PATH, FIELD(token_file), 0, 0},
    {"auth-health", SET_FLAG, FIELD(auth_health), 0, 0},
    {"insecure", SET_FLAG, FIELD(insecure), 0, 0},
    {"client-queue-share", SET_SHARE, FIELD(client_queue_share), 0, 0},
    {"client-cost-share", SET_SHARE, FIELD(client_cost_share), 0, 0},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

int config_parse_size(uint64_t *out, const char *what, const char *text, uint64_t lo, uint64_t hi,
                      char *msg, size_t msglen)
{
    char *end = NULL;
    unsigned long long v;
    unsigned shift = 0;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (end != text && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        default: shift = 64; break;
        }
        end++;
    }
    if (!isdigit((unsigned char)text[0]) || *end || errno || shift == 64 || (shift && v > (hi >> shift)) ||
        ((uint64_t)v << shift) < lo || ((uint64_t)v << shift) > hi) {
        snprintf(msg, msglen, "%s must be an integer %llu..%llu (K, M, G, T suffixes allowed), got '%s'",
                 what, (unsigned long long)lo, (unsigned long long)hi, text);
        return ERR_INVALID;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

/* Parses an unsigned integer in [lo, hi], all of `text`, into *out; else writes the message. */
static int parse_u64(uint64_t *out, const char *what, const char *text, uint64_t lo, uint64_t hi,
                     char *msg, size_t msglen)
{
    char *end = NULL;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (!isdigit((unsigned char)text[0]) || *end != '\0' || errno != 0 || v < lo || v > hi) {
        snprintf(msg, msglen, "%s must be an integer %llu..%llu, got '%s'", what,
                 (unsigned long long)lo, (unsigned long long)hi, text);
        return ERR_INVALID;
    }
    *out = v;
    return 0;
}

/* Parses an iteration count (a number >= 1, "1e12" allowed) into *out. */
static int parse_cost(double *out, const char *what, const char *text, char *msg, size_t msglen)
{
    char *end = NULL;
    double d = strtod(text, &end);

    if (*end != '\0' || end == text || !isfinite(d) || d < 1) {
        snprintf(msg, msglen, "%s must be a number >= 1, got '%s'", what, text);
        return ERR_INVALID;
    }
    *out = d;
    return 0;
}

int config_check_listen(const char *what, const char *addr, char *msg, size_t msglen)
{
    const char *port, *host_end;
    uint64_t v;

    if (strncmp(addr, "unix:", 5) == 0) {
        if (addr[5] == '\0') {
            snprintf(msg, msglen, "%s must name a socket path after unix:, got '%s'", what, addr);
            return ERR_INVALID;
        }
        return 0;
    }
    if (addr[0] == '[') {
        host_end = strchr(addr, ']');
        if (!host_end || host_end[1] != ':') {
            snprintf(msg, msglen, "%s must be [IPV6]:PORT, got '%s'", what, addr);
            return ERR_INVALID;
        }
        port = host_end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || memchr(addr, ':', (size_t)(colon - addr))) {
            snprintf(msg, msglen, "%s must be HOST:PORT, [IPV6]:PORT or unix:PATH, got '%s'", what, addr);
            return ERR_INVALID;
        }
        port = colon + 1;
    }
    if (parse_u64(&v, "port", port, 0, 65535, msg, msglen) < 0) {
        snprintf(msg, msglen, "%s: the port must be 0..65535 (0 picks a free one), got '%s'", what, port);
        return ERR_INVALID;
    }
    return 0;
}

int config_listen_is_loopback(const char *addr)
{
    char host[256];
    const char *end;
    struct in_addr v4;
    struct in6_addr v6;
    size_t len;

    if (strncmp(addr, "unix:", 5) == 0)
        return 1;
    if (addr[0] == '[') {
        addr++;
        end = strchr(addr, ']');
    } else {
        end = strrchr(addr, ':');
    }
    if (!end || (len = (size_t)(end - addr)) >= sizeof(host))
        return 0;
    memcpy(host, addr, len);
    host[len] = '\0';
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6) ||
               (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
    return 0;
}

/* Sets one setting from text; `what` names it in messages ("--workers", "FILE:3: workers"). */
static int apply_setting(struct config *cfg, const struct setting *s, const char *what, const char *text,
                         char *msg, size_t msglen)
{
    char *field = (char *)cfg + s->offset;
    uint64_t v = 0;
    int err, level;

    switch (s->kind) {
    case SET_UINT:
    case SET_SIZE:
        err = s->kind == SET_SIZE ? config_parse_size(&v, what, text, s->lo, s->hi, msg, msglen)
                                  : parse_u64(&v, what, text, s->lo, s->hi, msg, msglen);
        if (err < 0)
            return err;
        if (s->size == sizeof(uint64_t))
            memcpy(field, &v, sizeof(uint64_t));
        else {
            uint32_t v32 = (uint32_t)v;
            memcpy(field, &v32, sizeof(v32));
        }
        return 0;
    case SET_COST:
        return parse_cost((double *)(void *)field, what, text, msg, msglen);
    case SET_LISTEN:
        if (strlen(text) == 0 || strlen(text) >= s->size) {
            snprintf(msg, msglen, "%s must be a non-empty address under %zu bytes", what, s->size);
            return ERR_INVALID;
        }
        if ((err = config_check_listen(what, text, msg, msglen)) < 0)
            return err;
        snprintf(field, s->size, "%s", text);
        return 0;
    case SET_TCP_LISTEN:
        /* The HTTP listener is a TCP socket of libmicrohttpd's: no unix: form. A bad port keeps
         * config_check_listen's message, which names the port. */
        if (strlen(text) >= s->size || strncmp(text, "unix:", 5) == 0 ||
            (text[0] && (err = config_check_listen(what, text, msg, msglen)) < 0 && !strstr(msg, "the port"))) {
            snprintf(msg, msglen, "%s must be HOST:PORT or [IPV6]:PORT under %zu bytes, or \"\" for off, got '%s'",
                     what, s->size, text);
            return ERR_INVALID;
        }
        if (text[0] && (err = config_check_listen(what, text, msg, msglen)) < 0)
            return err;
        snprintf(field, s->size, "%s", text);
        return 0;
    case SET_PATH:
        if (strlen(text) >= s->size) {
            snprintf(msg, msglen, "%s must be under %zu bytes", what, s->size);
            return ERR_INVALID;
        }
        snprintf(field, s->size, "%s", text);
        return 0;
    case SET_LEVEL:
        if ((level = log_parse_level(text)) < 0) {
            snprintf(msg, msglen, "%s must be debug, info, warn, error or off, got '%s'", what, text);
            return ERR_INVALID;
        }
        memcpy(field, &level, sizeof(level));
        return 0;
    case SET_FLAG: {
        /* A flag on the command line comes without a value (text NULL). */
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        int on = -1;
        if (!text)
            on = 1;
        for (size_t i = 0; text && i < 4; i++) {
            if (strcasecmp(text, yes[i]) == 0)
                on = 1;
            if (strcasecmp(text, no[i]) == 0)
                on = 0;
        }
        if (on < 0) {
            snprintf(msg, msglen, "%s must be true or false, got '%s'", what, text);
            return ERR_INVALID;
        }
        memcpy(field, &on, sizeof(on));
        return 0;
    }
    case SET_SHARE: {
        char *end = NULL;
        double d = strtod(text, &end);
        if (end == text || *end != '\0' || !isfinite(d) || d <= 0 || d > 1) {
            snprintf(msg, msglen, "%s must be a fraction 0 < F <= 1 (1 = no per-client limit), got '%s'", what, text);
            return ERR_INVALID;
        }
        memcpy(field, &d, sizeof(d));
        return 0;
    }
    }
    return ERR_INTERNAL;
}

/* ---- the [server] section of the config file ---- */

struct file_parse {
    struct config *cfg;
    const char *path;
    int line;                   /* the line inih is on (INI_HANDLER_LINENO is not in every inih) */
    FILE *file;
    int failed;
    char msg[512];
};

/* inih's reader, counting lines so that messages can name them. */
static char *file_reader(char *buf, int size, void *user)
{
    struct file_parse *fp = user;
    char *line = fgets(buf, size, fp->file);

    if (line)
        fp->line++;
    return line;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
    struct file_parse *fp = user;
    char what[320], key[64];
    size_t i;

    if (fp->failed || strcmp(section, "server") != 0)
        return 1;   /* other sections are the device config's (devconf.c) */
    for (i = 0; i < NSETTINGS; i++) {
        size_t k;
        for (k = 0; settings[i].name[k] && k + 1 < sizeof(key); k++)
            key[k] = settings[i].name[k] == '-' ? '_' : settings[i].name[k];
        key[k] = '\0';
        if (strcmp(key, name) == 0)
            break;
    }
    snprintf(what, sizeof(what), "%s:%d: %s", fp->path, fp->line, name);
    if (i == NSETTINGS) {
        snprintf(fp->msg, sizeof(fp->msg), "%s:%d: unknown key '%s' in [server] (keys are the flags of "
                 "fractald --help, with '_' for '-')", fp->path, fp->line, name);
        fp->failed = 1;
        return 1;
    }
    if (apply_setting(fp->cfg, &settings[i], what, value, fp->msg, sizeof(fp->msg)) < 0)
        fp->failed = 1;
    return 1;
}

int config_load_file(struct config *cfg, const char *path, char *msg, size_t msglen)
{
    struct file_parse fp;

    memset(&fp, 0, sizeof(fp));
    fp.cfg = cfg;
    fp.path = path;
    if (!(fp.file = fopen(path, "r"))) {
        snprintf(msg, msglen, "%s: cannot read: %s", path, strerror(errno));
        return ERR_INVALID;
    }
    /* Syntax errors are left to the device config's reader, which reads the same file next and
     * reports the first bad line whatever its section. */
    ini_parse_stream(file_reader, &fp, file_handler, &fp);
    fclose(fp.file);
    if (fp.failed) {
        snprintf(msg, msglen, "%s", fp.msg);
        return ERR_INVALID;
    }
    return 0;
}

/* The settings that only make sense together, and the refusal of a listener anyone on the
 * network could use. */
static int check_exposure(const struct config *cfg, char *msg, size_t msglen)
{
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(msg, msglen, "--tls-cert and --tls-key go together: give both or neither");
        return ERR_INVALID;
    }
    if (cfg->tls_client_ca[0] && !cfg->tls_cert[0]) {
        snprintf(msg, msglen, "--tls-client-ca needs TLS: give --tls-cert and --tls-key too");
        return ERR_INVALID;
    }
    if (cfg->auth_health && !cfg->token_file[0]) {
        snprintf(msg, msglen, "--auth-health needs --token-file");
        return ERR_INVALID;
    }
    if (!cfg->insecure && !cfg->tls_cert[0] && !cfg->token_file[0] && !config_listen_is_loopback(cfg->listen)) {
        snprintf(msg, msglen, "refusing to listen on %s without TLS or tokens: anyone who can reach it could use it "
                 "(give --tls-cert/--tls-key or --token-file, or --insecure to serve it anyway)", cfg->listen);
        return ERR_INVALID;
    }
    /* The HTTP listener serves the same renders: the same rule, and the same ways past it. */
    if (cfg->http_listen[0] && !cfg->insecure && !cfg->tls_cert[0] && !cfg->token_file[0] &&
        !config_listen_is_loopback(cfg->http_listen)) {
        snprintf(msg, msglen, "refusing to serve HTTP on %s without TLS or tokens: anyone who can reach it could use it "
                 "(give --tls-cert/--tls-key or --token-file, or --insecure to serve it anyway)", cfg->http_listen);
        return ERR_INVALID;
    }
    if (cfg->http_listen[0] && cfg->tls_client_ca[0]) {
        snprintf(msg, msglen, "--tls-client-ca is not supported on --http-listen (the HTTP listener does not check "
                 "client certificates): use --token-file there, or serve HTTP from another fractald");
        return ERR_INVALID;
    }
    return 0;
}

/* ---- flags ---- */

enum { O_SETTING = 256, O_LIST = O_SETTING + 64, O_HELP, O_VERSION, O_CONFIG, O_DEVICES, O_CPU_ENGINE,
       O_CACHE_DIR };

int config_parse_args(struct config *cfg, int argc, char **argv, char *msg, size_t msglen)
{
    static struct option options[NSETTINGS + 9];
    static const struct option extra[] = {
        {"list-devices", no_argument, NULL, O_LIST},
        {"config", required_argument, NULL, O_CONFIG},
        {"devices", required_argument, NULL, O_DEVICES},
        {"cpu-engine", required_argument, NULL, O_CPU_ENGINE},
        {"cache-dir", required_argument, NULL, O_CACHE_DIR},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct config defaults;
    int opt, err = 0;

    for (size_t i = 0; i < NSETTINGS; i++)
        options[i] = (struct option){settings[i].name, settings[i].kind == SET_FLAG ? no_argument : required_argument,
                                     NULL, O_SETTING + (int)i};
    memcpy(options + NSETTINGS, extra, sizeof(extra));
    config_defaults(&defaults);

    /* First pass: only --config, so the file's [server] section applies before the flags. */
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hV", options, NULL)) != -1)
        if (opt == O_CONFIG)
            cfg->config_file = optarg;
    if (cfg->config_file && (err = config_load_file(cfg, cfg->config_file, msg, msglen)) < 0)
        return err;

    optind = 1;
    while ((opt = getopt_long(argc, argv, ":hV", options, NULL)) != -1) {
        const char *flag = optind > 1 ? argv[optind - 1] : "?";
        if (opt >= O_SETTING && opt < O_SETTING + (int)NSETTINGS) {
            const struct setting *s = &settings[opt - O_SETTING];
            char what[64];
            snprintf(what, sizeof(what), "--%s", s->name);
            if ((err = apply_setting(cfg, s, what, optarg, msg, msglen)) < 0)
                return err;
            continue;
        }
        switch (opt) {
        case O_LIST:
            cfg->list_devices = 1;
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
        case 'h':
        case O_HELP:
            print_usage(&defaults);
            return 1;
        case 'V':
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
    if (cfg->job_runners != CONFIG_JOB_RUNNERS_AUTO && cfg->job_runners >= cfg->render_workers) {
        snprintf(msg, msglen, "--job-runners must be below --workers (one worker stays free for interactive "
                 "renders), got %u with %u workers", cfg->job_runners, cfg->render_workers);
        return ERR_INVALID;
    }
    if ((cfg->spool_dir[0] || cfg->job_store[0]) && cfg->render_workers < 2) {
        snprintf(msg, msglen, "--workers must be at least 2 when jobs are enabled (one stays free for "
                 "interactive renders), got %u; or disable jobs with --spool-dir \"\"", cfg->render_workers);
        return ERR_INVALID;
    }
    if (optind < argc) {
        snprintf(msg, msglen, "unexpected argument '%s' (see fractald --help)", argv[optind]);
        return ERR_INVALID;
    }
    return check_exposure(cfg, msg, msglen);
}
