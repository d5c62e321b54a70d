/* fractal_cli.c: the `fractal` command-line tool (render, submit, job, wait, cancel, jobs, stats,
 * devices, health). It sits on libfractal's public header only, as curl's tool sits on libcurl. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask, sigwait, isatty, clock_gettime, gmtime_r */
#endif

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fractal/fractal.h"

#define DEFAULT_SERVER "127.0.0.1:50051"

/* Exit codes, one per class of failure a script may want to tell apart (listed in --help). */
enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,       /* anything else: local I/O, unreadable --from file, server internal error */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_INVALID = 3,     /* the server refused the request as invalid */
    EXIT_EXHAUSTED = 4,   /* over the server's limits, or a precondition (e.g. too deep for fp64) */
    EXIT_UNAVAILABLE = 5, /* server unreachable or deadline exceeded */
    EXIT_NOT_FOUND = 6,   /* no such job (or its result expired) */
    EXIT_CANCELLED = 7    /* the job was cancelled, or the server cancelled the call */
};

/* Images above this many pixels are streamed to disk by `fractal render` (RenderStream) unless
 * --unary is given: 4 Mpixel is 12 MiB of RGB, beyond which holding the whole reply in memory and
 * waiting for its last byte starts to hurt. */
#define STREAM_PIXELS ((uint64_t)4 << 20)

static const char exit_codes_help[] =
    "Exit status:\n"
    "  0  success (health: the service is SERVING)\n"
    "  1  other failure (local I/O, unreadable --from file, server internal error;\n"
    "     health: not SERVING)\n"
    "  2  usage error (unknown flag, malformed number)\n"
    "  3  the server refused the request as invalid (INVALID_ARGUMENT, OUT_OF_RANGE)\n"
    "  4  over the server's limits (RESOURCE_EXHAUSTED) or FAILED_PRECONDITION\n"
    "     (e.g. a view too deep for fp64)\n"
    "  5  server unavailable or deadline exceeded (UNAVAILABLE, DEADLINE_EXCEEDED;\n"
    "     wait: --timeout passed)\n"
    "  6  no such job, or its result has expired (NOT_FOUND)\n"
    "  7  the job was cancelled (wait), or the call was (CANCELLED)\n"
    "  128+N  interrupted by signal N (130 for Ctrl-C); a file being written is not created\n"
    "wait: a job that failed exits with the class of its error (3, 4, 1, ...).\n";

static const char main_help[] =
    "Usage: fractal COMMAND [OPTIONS]\n"
    "       fractal --help | --version\n"
    "\n"
    "Client of fractald, the escape-time fractal render server.\n"
    "\n"
    "Commands:\n"
    "  render    render an image and write it to a file or stdout\n"
    "  submit    queue a render as a job; prints the job id\n"
    "  job       show a job's state, progress, timings and error\n"
    "  wait      wait for a job to finish, then write its image\n"
    "  cancel    cancel a job\n"
    "  jobs      list the server's jobs, newest first\n"
    "  stats     show the server's counters\n"
    "  devices   list the server's compute devices\n"
    "  health    ask whether the server (or one service) is serving\n"
    "\n"
    "Run 'fractal COMMAND --help' for a command's options.\n"
    "\n"
    "Common options:\n"
    "  --server HOST:PORT   server address, any gRPC target (default $FRACTAL_SERVER,\n"
    "                       else " DEFAULT_SERVER ")\n"
    "  --deadline MS        give up after MS milliseconds; 0 = no deadline (default 60000)\n"
    "\n";

static const char render_help[] =
    "Usage: fractal render [OPTIONS]\n"
    "\n"
    "Renders one image. Every option maps to a RenderRequest field; values are checked\n"
    "for syntax here and for range by the server. Images over 4 Mpixel, and every image\n"
    "while a progress bar is shown, are streamed (RenderStream) straight to disk; the\n"
    "others come whole in one reply (Render). Both give the same bytes.\n"
    "\n"
    "What:\n"
    "  --julia RE,IM          Julia set with constant c = RE + IM i (default -0.8,0.156)\n"
    "  --mandelbrot           Mandelbrot set\n"
    "  --center RE,IM         centre of the view (default 0,0)\n"
    "  --view-width W         span of the real axis across the image (default 2*W/H)\n"
    "  --size WxH             image size in pixels (default 600x400)\n"
    "  --max-iter N           iteration limit (default 256)\n"
    "  --escape-radius R      escape radius (default 2)\n"
    "  --precision P          auto | fp32 | fp64 (default auto)\n"
    "  --region X,Y,W,H       render only this rectangle of the full image\n"
    "  --no-region            render the whole image (undoes a region from --from)\n"
    "  --device ID            \"\" any, cpu, gpu, opencl, or an id from 'fractal devices'\n"
    "\n"
    "Colour:\n"
    "  --palette NAME         built-in palette (default inferno); drops custom stops\n"
    "  --stops LIST           custom palette, e.g. \"0:#000000,0.5:#ff8800,1:#ffffff\"\n"
    "                         (up to 256 stops; \"\" drops them)\n"
    "  --cycle N              iterations per palette cycle; 0 = one log-scaled pass (default 0)\n"
    "  --offset F             palette shift 0..1 when cycling (default 0)\n"
    "  --interior #RRGGBB     colour of interior points (default #000000)\n"
    "  --reverse              run the palette backwards (--no-reverse undoes it)\n"
    "  --supersample N        N x N samples per pixel, 1..8 (default 1)\n"
    "\n"
    "Output:\n"
    "  --format F             png | png16 | raw-u32 | raw-f32 (default png)\n"
    "  -o, --output FILE      where to write: FILE (written atomically) or - for stdout\n"
    "                         (default fractal.png; fractal.u32 / fractal.f32 for raw)\n"
    "  --from PNG             start from the request stored in a PNG made by fractald;\n"
    "                         every other option overrides it, wherever it stands\n"
    "  --stats                print the server's render statistics to stderr\n"
    "  -q, --quiet            print nothing but errors (and no progress bar)\n"
    "  --stream               always stream (RenderStream), whatever the size\n"
    "  --unary                never stream: one Render reply, held in memory\n"
    "                         A progress bar is drawn on stderr when it is a terminal.\n"
    "\n"
    "Connection:\n"
    "  --server HOST:PORT     server address (default $FRACTAL_SERVER, else " DEFAULT_SERVER ")\n"
    "  --deadline MS          give up after MS milliseconds; 0 = none (default 60000)\n"
    "\n";

static const char submit_help[] =
    "Usage: fractal submit [RENDER OPTIONS] [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Queues a render on the server (SubmitJob) and prints the new job's id on stdout.\n"
    "Takes the 'What' and 'Colour' options of 'fractal render', --format and --from.\n"
    "Follow it with 'fractal wait ID -o FILE'. Never retried automatically.\n"
    "\n";

static const char job_help[] =
    "Usage: fractal job ID [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Prints a job's state, progress, queue position, timings, result and error\n"
    "(GetJob), one 'key  value' line each. Exits 0 whatever the state.\n"
    "\n";

static const char wait_help[] =
    "Usage: fractal wait ID [-o FILE] [--timeout MS] [--stats] [-q] [--server HOST:PORT]\n"
    "\n"
    "Waits for a job to finish, polling GetJob (50 ms at first, backing off to every 2 s).\n"
    "If it succeeded and -o is given, streams its image (FetchJobResult) into FILE,\n"
    "written atomically, or to stdout for -o -. Without -o, prints the final state.\n"
    "  -o, --output FILE      where to write the image\n"
    "  --timeout MS           give up after MS milliseconds (exit 5); 0 = never (default)\n"
    "  --stats                print the job's render statistics to stderr\n"
    "  -q, --quiet            print nothing but errors (and no progress bar)\n"
    "--deadline applies to each call (each poll, and the fetch), not to the wait.\n"
    "\n";

static const char cancel_help[] =
    "Usage: fractal cancel ID [-q] [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Cancels a job (CancelJob) and prints its id and state afterwards. Cancelling a\n"
    "finished job changes nothing.\n"
    "  -q, --quiet            print nothing\n"
    "\n";

static const char jobs_help[] =
    "Usage: fractal jobs [--state S] [--limit N] [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Lists the server's jobs, newest first (ListJobs), one per line.\n"
    "  --state S              only jobs in state S: queued, running, succeeded, failed,\n"
    "                         cancelled\n"
    "  --limit N              at most N jobs (default: the server's, 100)\n"
    "\n";

static const char stats_help[] =
    "Usage: fractal stats [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Prints the server's counters (GetStats): uptime, queue depth, running renders,\n"
    "jobs held, spool use, requests by method and status, and per-device busy time\n"
    "and throughput.\n"
    "\n";

static const char devices_help[] =
    "Usage: fractal devices [--json] [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Lists every compute device of the server, used or excluded, and why.\n"
    "  --json                 print a JSON array (fields as in the proto's Device message)\n"
    "\n";

static const char health_help[] =
    "Usage: fractal health [SERVICE] [--server HOST:PORT] [--deadline MS] [-q]\n"
    "\n"
    "Asks grpc.health.v1.Health/Check for SERVICE (default \"\": the whole server) and\n"
    "prints SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN. Exits 0 only when SERVING.\n"
    "  -q, --quiet            print nothing; use the exit status\n"
    "\n";

/* ---- command-line parsing -------------------------------------------------------------------- */

enum opt_id {
    OPT_HELP = 1, OPT_SERVER, OPT_DEADLINE, OPT_QUIET, OPT_JSON,
    OPT_JULIA, OPT_MANDELBROT, OPT_CENTER, OPT_VIEW_WIDTH, OPT_SIZE, OPT_MAX_ITER, OPT_ESCAPE_RADIUS,
    OPT_PRECISION, OPT_REGION, OPT_NO_REGION, OPT_DEVICE, OPT_PALETTE, OPT_STOPS, OPT_CYCLE,
    OPT_OFFSET, OPT_INTERIOR, OPT_REVERSE, OPT_NO_REVERSE, OPT_SUPERSAMPLE, OPT_FORMAT, OPT_OUTPUT,
    OPT_FROM, OPT_STATS, OPT_STREAM, OPT_UNARY, OPT_TIMEOUT, OPT_STATE, OPT_LIMIT
};

typedef struct opt_def {
    const char *name;    /* long name, without "--" */
    char short_name;     /* 0 for none */
    int has_arg;
    enum opt_id id;
} opt_def;

static const opt_def common_opts[] = {
    { "help", 'h', 0, OPT_HELP },
    { "server", 0, 1, OPT_SERVER },
    { "deadline", 0, 1, OPT_DEADLINE },
    { NULL, 0, 0, 0 },
};

/* What to render: shared by render and submit. */
static const opt_def spec_opts[] = {
    { "julia", 0, 1, OPT_JULIA },
    { "mandelbrot", 0, 0, OPT_MANDELBROT },
    { "center", 0, 1, OPT_CENTER },
    { "view-width", 0, 1, OPT_VIEW_WIDTH },
    { "size", 0, 1, OPT_SIZE },
    { "max-iter", 0, 1, OPT_MAX_ITER },
    { "escape-radius", 0, 1, OPT_ESCAPE_RADIUS },
    { "precision", 0, 1, OPT_PRECISION },
    { "region", 0, 1, OPT_REGION },
    { "no-region", 0, 0, OPT_NO_REGION },
    { "device", 0, 1, OPT_DEVICE },
    { "palette", 0, 1, OPT_PALETTE },
    { "stops", 0, 1, OPT_STOPS },
    { "cycle", 0, 1, OPT_CYCLE },
    { "offset", 0, 1, OPT_OFFSET },
    { "interior", 0, 1, OPT_INTERIOR },
    { "reverse", 0, 0, OPT_REVERSE },
    { "no-reverse", 0, 0, OPT_NO_REVERSE },
    { "supersample", 0, 1, OPT_SUPERSAMPLE },
    { "format", 0, 1, OPT_FORMAT },
    { "from", 0, 1, OPT_FROM },
    { NULL, 0, 0, 0 },
};

/* Render's own: where and how the image goes. */
static const opt_def render_opts[] = {
    { "output", 'o', 1, OPT_OUTPUT },
    { "stats", 0, 0, OPT_STATS },
    { "quiet", 'q', 0, OPT_QUIET },
    { "stream", 0, 0, OPT_STREAM },
    { "unary", 0, 0, OPT_UNARY },
    { NULL, 0, 0, 0 },
};

static const opt_def no_opts[] = {
    { NULL, 0, 0, 0 },
};

static const opt_def wait_opts[] = {
    { "output", 'o', 1, OPT_OUTPUT },
    { "timeout", 0, 1, OPT_TIMEOUT },
    { "stats", 0, 0, OPT_STATS },
    { "quiet", 'q', 0, OPT_QUIET },
    { NULL, 0, 0, 0 },
};

static const opt_def jobs_opts[] = {
    { "state", 0, 1, OPT_STATE },
    { "limit", 0, 1, OPT_LIMIT },
    { NULL, 0, 0, 0 },
};

static const opt_def devices_opts[] = {
    { "json", 0, 0, OPT_JSON },
    { NULL, 0, 0, 0 },
};

static const opt_def health_opts[] = {
    { "quiet", 'q', 0, OPT_QUIET },
    { NULL, 0, 0, 0 },
};

/* One parsed option, in command-line order. value is NULL for flags. */
typedef struct parsed_opt {
    enum opt_id id;
    const char *name;    /* as the user spelled it, for messages */
    const char *value;
} parsed_opt;

static const char *command_name = "";

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("fractal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'fractal%s%s --help'.\n", command_name[0] ? " " : "", command_name);
    return EXIT_USAGE;
}

static const opt_def *find_long(const opt_def *table, const char *name, size_t len)
{
    for (; table->name; table++)
        if (strlen(table->name) == len && strncmp(table->name, name, len) == 0)
            return table;
    return NULL;
}

static const opt_def *find_short(const opt_def *table, char c)
{
    for (; table->name; table++)
        if (table->short_name == c)
            return table;
    return NULL;
}

/* Splits argv into options (looked up in the command's table, then in `more` when not NULL, then
 * the common one) and positional arguments. Accepts --name VALUE, --name=VALUE, -o VALUE, -oVALUE;
 * "--" ends the options. The arrays have room for argc entries. Returns 0 or EXIT_USAGE (message
 * printed). */
static int parse_args(int argc, char **argv, const opt_def *table, const opt_def *more, parsed_opt *opts,
                      size_t *n_opts, const char **positional, size_t *n_pos)
{
    int i, only_positional = 0;

    *n_opts = *n_pos = 0;
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        const opt_def *def = NULL;

        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            positional[(*n_pos)++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (arg[1] == '-') {
            const char *eq = strchr(arg + 2, '=');
            size_t len = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);

            if ((def = find_long(table, arg + 2, len)) == NULL && more)
                def = find_long(more, arg + 2, len);
            if (def == NULL)
                def = find_long(common_opts, arg + 2, len);
            if (def == NULL)
                return usage_error("unknown option '%.*s'", (int)len + 2, arg);
            if (eq) {
                if (!def->has_arg)
                    return usage_error("option '--%s' takes no value", def->name);
                value = eq + 1;
            }
        } else {
            if ((def = find_short(table, arg[1])) == NULL && more)
                def = find_short(more, arg[1]);
            if (def == NULL)
                def = find_short(common_opts, arg[1]);
            if (def == NULL)
                return usage_error("unknown option '-%c'", arg[1]);
            if (arg[2] != '\0') {
                if (!def->has_arg)
                    return usage_error("option '-%c' takes no value", arg[1]);
                value = arg + 2;
            }
        }
        if (def->has_arg && value == NULL) {
            if (i + 1 >= argc)
                return usage_error("option '%s' needs a value", arg);
            value = argv[++i];
        }
        opts[*n_opts].id = def->id;
        opts[*n_opts].name = def->name;
        opts[*n_opts].value = value;
        (*n_opts)++;
    }
    return 0;
}

/* ---- strict value parsers: 0 on success, -1 on anything but a whole, in-range value ---------- */

static int parse_double(const char *s, double *out)
{
    char *end;
    double v;

    /* strtod skips leading blanks; a value with them is not what the user meant to type. */
    if (s[0] == '\0' || isspace((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    /* ERANGE: overflow to infinity or underflow towards 0; either would send another number than
     * the one written. NaN and "inf" spelled out pass: the server judges them. */
    if (end == s || *end != '\0' || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v;

    /* strtoul would accept blanks, a sign and wrap "-1" around: demand a digit first. */
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Splits s at `sep` into exactly n parts copied into buf (cap bytes); parts[i] point into buf. */
static int split(const char *s, char sep, char *buf, size_t cap, char **parts, size_t n)
{
    size_t i = 0;
    char *p;

    if (strlen(s) >= cap)
        return -1;
    strcpy(buf, s);
    parts[i++] = buf;
    for (p = buf; *p; p++) {
        if (*p == sep) {
            if (i == n)
                return -1;
            *p = '\0';
            parts[i++] = p + 1;
        }
    }
    return i == n ? 0 : -1;
}

static int parse_complex(const char *s, fractal_complex *out)
{
    char buf[256], *parts[2] = {NULL, NULL};

    if (split(s, ',', buf, sizeof buf, parts, 2) < 0 || parse_double(parts[0], &out->re) < 0 ||
        parse_double(parts[1], &out->im) < 0)
        return -1;
    return 0;
}

static int parse_size(const char *s, uint32_t *w, uint32_t *h)
{
    char buf[64], *parts[2] = {NULL, NULL};

    if (split(s, 'x', buf, sizeof buf, parts, 2) < 0 || parse_u32(parts[0], w) < 0 ||
        parse_u32(parts[1], h) < 0)
        return -1;
    return 0;
}

static int parse_region(const char *s, fractal_region *out)
{
    char buf[128], *parts[4] = {NULL, NULL, NULL, NULL};

    if (split(s, ',', buf, sizeof buf, parts, 4) < 0 || parse_u32(parts[0], &out->x) < 0 ||
        parse_u32(parts[1], &out->y) < 0 || parse_u32(parts[2], &out->width) < 0 ||
        parse_u32(parts[3], &out->height) < 0)
        return -1;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "#RRGGBB" or "RRGGBB". */
static int parse_color(const char *s, fractal_color *out)
{
    uint32_t v[3];
    int i, hi, lo;

    if (s[0] == '#')
        s++;
    if (strlen(s) != 6)
        return -1;
    for (i = 0; i < 3; i++) {
        if ((hi = hex_digit(s[2 * i])) < 0 || (lo = hex_digit(s[2 * i + 1])) < 0)
            return -1;
        v[i] = (uint32_t)(hi * 16 + lo);
    }
    out->r = v[0];
    out->g = v[1];
    out->b = v[2];
    return 0;
}

/* "POS:#RRGGBB,POS:#RRGGBB,..." into opts->stops; "" clears them. Returns 0 or EXIT_USAGE. */
static int parse_stops(const char *s, fractal_render_options *opts)
{
    size_t n = 0;
    const char *p = s;

    if (s[0] == '\0') {
        opts->n_stops = 0;
        return 0;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[128], buf[128], *parts[2] = {NULL, NULL};

        if (n == FRACTAL_STOPS_MAX)
            return usage_error("--stops: more than %d stops", FRACTAL_STOPS_MAX);
        if (len >= sizeof item)
            return usage_error("--stops: malformed stop '%.*s'", (int)len, p);
        memcpy(item, p, len);
        item[len] = '\0';
        if (split(item, ':', buf, sizeof buf, parts, 2) < 0 ||
            parse_double(parts[0], &opts->stops[n].position) < 0 ||
            parse_color(parts[1], &opts->stops[n].color) < 0)
            return usage_error("--stops: malformed stop '%.*s' (want POSITION:#RRGGBB)", (int)len, p);
        n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    opts->n_stops = n;
    return 0;
}

static int copy_string(char *dst, size_t cap, const char *src, const char *flag)
{
    if (strlen(src) >= cap)
        return usage_error("--%s: value longer than %zu bytes", flag, cap - 1);
    strcpy(dst, src);
    return 0;
}

/* ---- shared by the commands ------------------------------------------------------------------ */

typedef struct conn_opts {
    const char *server;
    uint32_t deadline_ms;
} conn_opts;

static int is_conn_opt(enum opt_id id)
{
    return id == OPT_SERVER || id == OPT_DEADLINE;
}

/* Applies --server or --deadline. Returns 0 or EXIT_USAGE (message printed). */
static int apply_conn_opt(conn_opts *c, const parsed_opt *o)
{
    if (o->id == OPT_SERVER) {
        if (o->value[0] == '\0')
            return usage_error("--server: empty address");
        c->server = o->value;
    } else if (o->id == OPT_DEADLINE) {
        if (parse_u32(o->value, &c->deadline_ms) < 0)
            return usage_error("--deadline: '%s' is not a number of milliseconds", o->value);
    }
    return 0;
}

static void conn_defaults(conn_opts *c)
{
    const char *env = getenv("FRACTAL_SERVER");
    fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;

    c->server = env && env[0] ? env : DEFAULT_SERVER;
    c->deadline_ms = defaults.deadline_ms;
}

/* ---- Ctrl-C: cancel the call in flight, so that files being written are cleaned up ---------- */

/* SIGINT and SIGTERM are blocked in every thread (gRPC's included, which inherit the mask) and
 * taken by one watcher thread with sigwait, which may then use mutexes and the library: it cancels
 * the client's call in flight, and the command unwinds as from any failed call, removing its
 * temporary file. With no client open, or on a second signal, it exits at once. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static fractal_client *live_client;
static atomic_int interrupted; /* the signal number, once one came */

static void *signal_watcher(void *arg)
{
    sigset_t *set = arg;
    int sig;

    for (;;) {
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&live_lock);
        if (atomic_exchange(&interrupted, sig) != 0 || live_client == NULL)
            _exit(128 + sig);
        fractal_client_cancel(live_client);
        pthread_mutex_unlock(&live_lock);
    }
    return NULL;
}

/* Starts the watcher; without it (thread creation failed) signals keep their default action. */
static void watch_signals(void)
{
    static sigset_t set;
    pthread_t thread;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return;
    if (pthread_create(&thread, NULL, signal_watcher, &set) != 0) {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return;
    }
    pthread_detach(thread);
}

static int connect_client(fractal_client **out, const conn_opts *c)
{
    fractal_client_options copts = FRACTAL_CLIENT_OPTIONS_INIT;
    int err;

    copts.deadline_ms = c->deadline_ms;
    if ((err = fractal_client_new(out, c->server, &copts)) < 0) {
        fprintf(stderr, "fractal: %s: %s\n", c->server, fractal_strerror(err));
        return EXIT_OTHER;
    }
    pthread_mutex_lock(&live_lock);
    live_client = *out;
    pthread_mutex_unlock(&live_lock);
    return 0;
}

static void close_client(fractal_client *client)
{
    pthread_mutex_lock(&live_lock);
    if (live_client == client)
        live_client = NULL;
    pthread_mutex_unlock(&live_lock);
    fractal_client_free(client);
}

static int exit_code_for(int err)
{
    switch (err) {
    case FRACTAL_OK:
        return EXIT_OK;
    case FRACTAL_EINVALID_ARGUMENT:
    case FRACTAL_EOUT_OF_RANGE:
        return EXIT_INVALID;
    case FRACTAL_ERESOURCE_EXHAUSTED:
    case FRACTAL_EFAILED_PRECONDITION:
        return EXIT_EXHAUSTED;
    case FRACTAL_EUNAVAILABLE:
    case FRACTAL_EDEADLINE:
        return EXIT_UNAVAILABLE;
    case FRACTAL_ENOT_FOUND:
        return EXIT_NOT_FOUND;
    case FRACTAL_ECANCELLED:
        return EXIT_CANCELLED;
    default:
        return EXIT_OTHER;
    }
}

/* Prints the client's message for a failed call and returns the exit code of its class. */
static int call_failed(const fractal_client *client, int err)
{
    const char *msg = fractal_client_last_error(client);
    int sig = atomic_load(&interrupted);

    if (sig != 0) {
        fprintf(stderr, "fractal: interrupted\n");
        return 128 + sig;
    }
    fprintf(stderr, "fractal: %s\n", msg[0] ? msg : fractal_strerror(err));
    return exit_code_for(err);
}

/* ---- render ---------------------------------------------------------------------------------- */

static const char *precision_name(fractal_precision p)
{
    switch (p) {
    case FRACTAL_PRECISION_AUTO: return "auto";
    case FRACTAL_PRECISION_FP32: return "fp32";
    case FRACTAL_PRECISION_FP64: return "fp64";
    }
    return "?";
}

static const char *format_name(fractal_format f)
{
    switch (f) {
    case FRACTAL_FORMAT_PNG: return "png";
    case FRACTAL_FORMAT_PNG16: return "png16";
    case FRACTAL_FORMAT_RAW_U32: return "raw-u32";
    case FRACTAL_FORMAT_RAW_F32: return "raw-f32";
    }
    return "?";
}

/* Prints render statistics to stderr. `format` may be NULL when not known (a fetched job without
 * its request). */
static void print_stats(uint32_t width, uint32_t height, const char *format, const char *content_type,
                        uint64_t size, const fractal_render_stats *st)
{
    size_t i;

    fprintf(stderr, "image       %ux%u %s (%s), %llu bytes\n", width, height, format ? format : "-",
            content_type, (unsigned long long)size);
    fprintf(stderr, "precision   %s\n", precision_name(st->precision));
    fprintf(stderr, "iterations  %llu\n", (unsigned long long)st->iterations);
    fprintf(stderr, "samples     %llu\n", (unsigned long long)st->samples);
    fprintf(stderr, "tiles       %u\n", st->tiles);
    fprintf(stderr, "devices     ");
    for (i = 0; i < st->n_devices; i++)
        fprintf(stderr, "%s%s", i ? ", " : "", st->devices[i]);
    fprintf(stderr, "%s\n", st->n_devices ? "" : "-");
    fprintf(stderr, "time        queue %.3f ms, compute %.3f ms, encode %.3f ms, total %.3f ms\n",
            st->queue_ms, st->compute_ms, st->encode_ms, st->total_ms);
}

/* Applies one render option to opts. Returns 0 or EXIT_USAGE. */
static int apply_render_opt(fractal_render_options *opts, const parsed_opt *o)
{
    const char *v = o->value;

    switch (o->id) {
    case OPT_JULIA:
        if (parse_complex(v, &opts->julia_c) < 0)
            return usage_error("--julia: '%s' is not RE,IM", v);
        opts->kind = FRACTAL_KIND_JULIA;
        return 0;
    case OPT_MANDELBROT:
        opts->kind = FRACTAL_KIND_MANDELBROT;
        return 0;
    case OPT_CENTER:
        if (parse_complex(v, &opts->center) < 0)
            return usage_error("--center: '%s' is not RE,IM", v);
        return 0;
    case OPT_VIEW_WIDTH:
        if (parse_double(v, &opts->view_width) < 0)
            return usage_error("--view-width: '%s' is not a number", v);
        return 0;
    case OPT_SIZE:
        if (parse_size(v, &opts->width, &opts->height) < 0)
            return usage_error("--size: '%s' is not WIDTHxHEIGHT (whole numbers)", v);
        return 0;
    case OPT_MAX_ITER:
        if (parse_u32(v, &opts->max_iter) < 0)
            return usage_error("--max-iter: '%s' is not a whole number 0..4294967295", v);
        return 0;
    case OPT_ESCAPE_RADIUS:
        if (parse_double(v, &opts->escape_radius) < 0)
            return usage_error("--escape-radius: '%s' is not a number", v);
        return 0;
    case OPT_PRECISION:
        if (strcmp(v, "auto") == 0)
            opts->precision = FRACTAL_PRECISION_AUTO;
        else if (strcmp(v, "fp32") == 0)
            opts->precision = FRACTAL_PRECISION_FP32;
        else if (strcmp(v, "fp64") == 0)
            opts->precision = FRACTAL_PRECISION_FP64;
        else
            return usage_error("--precision: '%s' is not auto, fp32 or fp64", v);
        return 0;
    case OPT_REGION:
        if (parse_region(v, &opts->region) < 0)
            return usage_error("--region: '%s' is not X,Y,WIDTH,HEIGHT (whole numbers)", v);
        opts->has_region = 1;
        return 0;
    case OPT_NO_REGION:
        opts->has_region = 0;
        return 0;
    case OPT_DEVICE:
        return copy_string(opts->device, sizeof opts->device, v, o->name);
    case OPT_PALETTE:
        /* Stops override the palette on the server: asking for a palette by name means these. */
        opts->n_stops = 0;
        return copy_string(opts->palette, sizeof opts->palette, v, o->name);
    case OPT_STOPS:
        return parse_stops(v, opts);
    case OPT_CYCLE:
        if (parse_double(v, &opts->cycle) < 0)
            return usage_error("--cycle: '%s' is not a number", v);
        return 0;
    case OPT_OFFSET:
        if (parse_double(v, &opts->offset) < 0)
            return usage_error("--offset: '%s' is not a number", v);
        return 0;
    case OPT_INTERIOR:
        if (parse_color(v, &opts->interior) < 0)
            return usage_error("--interior: '%s' is not #RRGGBB", v);
        return 0;
    case OPT_REVERSE:
        opts->reverse = 1;
        return 0;
    case OPT_NO_REVERSE:
        opts->reverse = 0;
        return 0;
    case OPT_SUPERSAMPLE:
        if (parse_u32(v, &opts->supersample) < 0)
            return usage_error("--supersample: '%s' is not a whole number", v);
        return 0;
    case OPT_FORMAT:
        if (strcmp(v, "png") == 0)
            opts->format = FRACTAL_FORMAT_PNG;
        else if (strcmp(v, "png16") == 0)
            opts->format = FRACTAL_FORMAT_PNG16;
        else if (strcmp(v, "raw-u32") == 0)
            opts->format = FRACTAL_FORMAT_RAW_U32;
        else if (strcmp(v, "raw-f32") == 0)
            opts->format = FRACTAL_FORMAT_RAW_F32;
        else
            return usage_error("--format: '%s' is not png, png16, raw-u32 or raw-f32", v);
        return 0;
    default:
        return 0;
    }
}

static const char *default_output(fractal_format f)
{
    switch (f) {
    case FRACTAL_FORMAT_RAW_U32: return "fractal.u32";
    case FRACTAL_FORMAT_RAW_F32: return "fractal.f32";
    default: return "fractal.png";
    }
}

static int write_stdout(const fractal_image *img)
{
    if (fwrite(img->data, 1, img->size, stdout) != img->size || fflush(stdout) != 0) {
        fprintf(stderr, "fractal: writing to stdout: %s\n", strerror(errno));
        return EXIT_OTHER;
    }
    return 0;
}

/* ---- progress bar ---------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A one-line bar on stderr, redrawn at most 10 times a second; only ever used when stderr is a
 * terminal. */
typedef struct progress_bar {
    int drawn;
    uint64_t last_ms;
} progress_bar;

#define BAR_WIDTH 30

static int draw_progress(const fractal_progress *p, void *payload)
{
    progress_bar *bar = payload;
    uint64_t now = now_ms();
    char cells[BAR_WIDTH + 1], bytes[32] = "";
    int filled, i, whole = p->rows_total && p->rows_done >= p->rows_total;

    if (bar->drawn && now - bar->last_ms < 100 && !whole)
        return 0;
    bar->drawn = 1;
    bar->last_ms = now;
    if (p->bytes_received >= ((uint64_t)1 << 20))
        snprintf(bytes, sizeof bytes, "  %.1f MiB", (double)p->bytes_received / (double)((uint64_t)1 << 20));
    else if (p->bytes_received > 0)
        snprintf(bytes, sizeof bytes, "  %.1f KiB", (double)p->bytes_received / 1024.0);
    if (p->rows_total == 0) {
        if (p->queue_position > 0)
            fprintf(stderr, "\rqueued, position %u%s\033[K", p->queue_position, bytes);
        else
            fprintf(stderr, "\rwaiting%s\033[K", bytes);
        return 0;
    }
    filled = (int)((uint64_t)p->rows_done * BAR_WIDTH / p->rows_total);
    for (i = 0; i < BAR_WIDTH; i++)
        cells[i] = i < filled ? '#' : '-';
    cells[BAR_WIDTH] = '\0';
    fprintf(stderr, "\r[%s] %3u%%  %u/%u rows%s\033[K", cells,
            (unsigned)((uint64_t)p->rows_done * 100 / p->rows_total), p->rows_done, p->rows_total, bytes);
    return 0;
}

static void end_progress(progress_bar *bar)
{
    if (bar->drawn)
        fputs("\r\033[K", stderr);
    bar->drawn = 0;
}

/* ---- streaming to stdout --------------------------------------------------------------------- */

typedef struct stdout_sink {
    int error;                    /* errno of a failed write, else 0 */
    progress_bar *bar;            /* NULL: no bar */
} stdout_sink;

static int stdout_write(const fractal_chunk *chunk, void *payload)
{
    stdout_sink *s = payload;

    if (fwrite(chunk->data, 1, chunk->size, stdout) != chunk->size) {
        s->error = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

static int stdout_progress(const fractal_progress *p, void *payload)
{
    stdout_sink *s = payload;

    return s->bar ? draw_progress(p, s->bar) : 0;
}

/* Runs a stream into `output` (a file, written atomically, or "-" for stdout): a render when id is
 * NULL, else a job's result. Returns the exit code; *out gets the result on success. */
static int stream_out(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
                      const char *id, const char *output, progress_bar *bar)
{
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    stdout_sink sink = { 0, bar };
    int err;

    if (strcmp(output, "-") == 0) {
        cbs.write = stdout_write;
        cbs.progress = stdout_progress;
        cbs.payload = &sink;
        err = id ? fractal_job_fetch(out, client, id, &cbs) : fractal_render_stream(out, client, opts, &cbs);
        if (err == 0 && fflush(stdout) != 0)
            sink.error = errno ? errno : EIO;
    } else {
        err = id ? fractal_job_fetch_to_file(out, client, id, output, bar ? draw_progress : NULL, bar)
                 : fractal_render_stream_to_file(out, client, opts, output, bar ? draw_progress : NULL, bar);
    }
    if (bar)
        end_progress(bar);
    if (sink.error) {
        fractal_stream_result_free(*out);
        *out = NULL;
        fprintf(stderr, "fractal: writing to stdout: %s\n", strerror(sink.error));
        return EXIT_OTHER;
    }
    if (err < 0)
        return err; /* the caller reports it: it may want to fall back */
    return 0;
}

/* ---- render and submit ----------------------------------------------------------------------- */

static int is_render_output_opt(enum opt_id id)
{
    return id == OPT_OUTPUT || id == OPT_QUIET || id == OPT_STATS || id == OPT_STREAM || id == OPT_UNARY ||
           id == OPT_FROM || id == OPT_HELP;
}

/* Builds render options from the command line: defaults, then --from wherever it stands (so that
 * every other flag overrides what it loads), then the flags in order; also applies --server and
 * --deadline. Render's own output flags are left to the caller. Returns 0 or an exit code. */
static int load_spec(fractal_render_options *opts, conn_opts *conn, const parsed_opt *parsed, size_t n_parsed)
{
    const char *from = NULL;
    char err_buf[512];
    size_t i;
    int rc;

    fractal_render_options_init(opts, FRACTAL_RENDER_OPTIONS_VERSION);
    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_FROM)
            from = parsed[i].value;
    if (from && fractal_render_options_from_png(opts, from, err_buf, sizeof err_buf) < 0) {
        fprintf(stderr, "fractal: %s\n", err_buf);
        return EXIT_OTHER;
    }
    for (i = 0; i < n_parsed; i++) {
        const parsed_opt *o = &parsed[i];

        if (is_conn_opt(o->id)) {
            if ((rc = apply_conn_opt(conn, o)) != 0)
                return rc;
        } else if (!is_render_output_opt(o->id)) {
            if ((rc = apply_render_opt(opts, o)) != 0)
                return rc;
        }
    }
    return 0;
}

static int has_help(const parsed_opt *parsed, size_t n_parsed)
{
    size_t i;

    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_HELP)
            return 1;
    return 0;
}

/* `fractal render`: builds the options, renders (streamed or whole, see render_help), and writes
 * the image to a file (atomically) or stdout. Returns the exit code. */
static int cmd_render(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    enum { MODE_AUTO, MODE_STREAM, MODE_UNARY } mode = MODE_AUTO;
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    fractal_image *image = NULL;
    fractal_stream_result *result = NULL;
    progress_bar bar = { 0, 0 };
    conn_opts conn;
    const char *output = NULL;
    char err_buf[512];
    size_t n_parsed, n_pos, i;
    uint64_t pixels;
    int rc, err, quiet = 0, stats = 0, use_stream, show_bar;

    command_name = "render";
    conn_defaults(&conn);
    if ((rc = parse_args(argc, argv, render_opts, spec_opts, parsed, &n_parsed, pos, &n_pos)) != 0)
        return rc;
    if (has_help(parsed, n_parsed)) {
        fputs(render_help, stdout);
        fputs(exit_codes_help, stdout);
        return EXIT_OK;
    }
    if (n_pos > 0)
        return usage_error("unexpected argument '%s'", pos[0]);
    /* The options struct is some 6 KiB (256 stops): keep it off the stack. */
    if ((opts = malloc(sizeof *opts)) == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        return EXIT_OTHER;
    }
    if ((rc = load_spec(opts, &conn, parsed, n_parsed)) != 0)
        goto done;
    for (i = 0; i < n_parsed; i++) {
        switch (parsed[i].id) {
        case OPT_OUTPUT: output = parsed[i].value; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_STATS: stats = 1; break;
        case OPT_STREAM: mode = MODE_STREAM; break;
        case OPT_UNARY: mode = MODE_UNARY; break;
        default: break;
        }
    }
    if (output == NULL)
        output = default_output(opts->format);
    if (output[0] == '\0') {
        rc = usage_error("-o: empty file name");
        goto done;
    }
    pixels = opts->has_region ? (uint64_t)opts->region.width * opts->region.height
                              : (uint64_t)opts->width * opts->height;
    show_bar = !quiet && isatty(STDERR_FILENO);
    use_stream = mode == MODE_STREAM || (mode == MODE_AUTO && (pixels > STREAM_PIXELS || show_bar));

    if ((rc = connect_client(&client, &conn)) != 0)
        goto done;
    if (use_stream) {
        err = stream_out(&result, client, opts, NULL, output, show_bar ? &bar : NULL);
        /* A server without RenderStream still renders: fall back, unless streaming was asked for. */
        if (err == FRACTAL_EUNIMPLEMENTED && mode == MODE_AUTO && !atomic_load(&interrupted)) {
            use_stream = 0;
        } else if (err < 0) {
            rc = call_failed(client, err);
            goto done;
        } else if (err > 0) {
            rc = err;
            goto done;
        } else {
            if (!quiet && strcmp(output, "-") != 0)
                fprintf(stderr, "wrote %s (%ux%u, %llu bytes)\n", output, result->width, result->height,
                        (unsigned long long)result->size);
            if (stats)
                print_stats(result->width, result->height, format_name(opts->format), result->content_type,
                            result->size, &result->stats);
        }
    }
    if (!use_stream) {
        if ((err = fractal_render(&image, client, opts)) < 0) {
            rc = call_failed(client, err);
            goto done;
        }
        if (strcmp(output, "-") == 0) {
            if ((rc = write_stdout(image)) != 0)
                goto done;
        } else if (fractal_image_save(image, output, err_buf, sizeof err_buf) < 0) {
            fprintf(stderr, "fractal: %s\n", err_buf);
            rc = EXIT_OTHER;
            goto done;
        } else if (!quiet) {
            fprintf(stderr, "wrote %s (%ux%u, %zu bytes)\n", output, image->width, image->height,
                    image->size);
        }
        if (stats)
            print_stats(image->width, image->height, format_name(image->format), image->content_type,
                        image->size, &image->stats);
    }
    rc = atomic_load(&interrupted) ? 128 + atomic_load(&interrupted) : EXIT_OK;
done:
    fractal_stream_result_free(result);
    fractal_image_free(image);
    close_client(client);
    free(opts);
    return rc;
}

/* `fractal submit`: queues the render as a job and prints its id. */
static int cmd_submit(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    conn_opts conn;
    size_t n_parsed, n_pos;
    int rc, err;

    command_name = "submit";
    conn_defaults(&conn);
    if ((rc = parse_args(argc, argv, no_opts, spec_opts, parsed, &n_parsed, pos, &n_pos)) != 0)
        return rc;
    if (has_help(parsed, n_parsed)) {
        fputs(submit_help, stdout);
        fputs(exit_codes_help, stdout);
        return EXIT_OK;
    }
    if (n_pos > 0)
        return usage_error("unexpected argument '%s'", pos[0]);
    if ((opts = malloc(sizeof *opts)) == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        return EXIT_OTHER;
    }
    if ((rc = load_spec(opts, &conn, parsed, n_parsed)) != 0)
        goto done;
    if ((rc = connect_client(&client, &conn)) != 0)
        goto done;
    if ((err = fractal_job_submit(&job, client, opts)) < 0) {
        rc = call_failed(client, err);
        goto done;
    }
    printf("%s\n", job->id);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
done:
    fractal_job_free(job);
    close_client(client);
    free(opts);
    return rc;
}

/* ---- jobs ------------------------------------------------------------------------------------ */

/* Parses the options of a command that takes connection options, the flags of `table` (handed
 * back through *parsed) and `want_pos` positional arguments: exactly that many (a job id, which
 * may not be empty), or at most that many when `pos_optional` (their count in *n_pos_out, if not
 * NULL). Prints help when asked (*done set). Returns 0 or an exit code. */
static int parse_simple(int argc, char **argv, const char *name, const char *help, const opt_def *table,
                        parsed_opt *parsed, size_t *n_parsed, const char **pos, size_t want_pos,
                        int pos_optional, size_t *n_pos_out, conn_opts *conn, int *done)
{
    size_t n_pos, i;
    int rc;

    command_name = name;
    *done = 0;
    conn_defaults(conn);
    if ((rc = parse_args(argc, argv, table, NULL, parsed, n_parsed, pos, &n_pos)) != 0)
        return rc;
    if (has_help(parsed, *n_parsed)) {
        fputs(help, stdout);
        fputs(exit_codes_help, stdout);
        *done = 1;
        return EXIT_OK;
    }
    for (i = 0; i < *n_parsed; i++)
        if (is_conn_opt(parsed[i].id) && (rc = apply_conn_opt(conn, &parsed[i])) != 0)
            return rc;
    if (n_pos > want_pos)
        return usage_error("unexpected argument '%s'", pos[want_pos]);
    if (n_pos_out)
        *n_pos_out = n_pos;
    if (pos_optional)
        return 0;
    if (n_pos < want_pos)
        return usage_error("missing job id");
    if (want_pos && pos[0][0] == '\0')
        return usage_error("empty job id");
    return 0;
}

/* "2026-11-22 08:25:35.123 UTC", or "-" for 0. */
static void format_time(char *buf, size_t len, int64_t unix_ms)
{
    struct tm tm;
    time_t secs;

    if (unix_ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    secs = (time_t)(unix_ms / 1000);
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, len, "%lld ms", (long long)unix_ms);
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d.%03d UTC", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
}

static void format_size(char *buf, size_t len, uint64_t bytes)
{
    if (bytes >= (uint64_t)1 << 30)
        snprintf(buf, len, "%.1f GiB", (double)bytes / (double)((uint64_t)1 << 30));
    else if (bytes >= (uint64_t)1 << 20)
        snprintf(buf, len, "%.1f MiB", (double)bytes / (double)((uint64_t)1 << 20));
    else if (bytes >= 1024)
        snprintf(buf, len, "%.1f KiB", (double)bytes / 1024.0);
    else
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
}

/* Short progress: "42%", "queued #3", or "-". */
static void format_progress(char *buf, size_t len, const fractal_job *job)
{
    if (job->state == FRACTAL_JOB_SUCCEEDED)
        snprintf(buf, len, "100%%");
    else if (job->state == FRACTAL_JOB_QUEUED && job->progress.queue_position > 0)
        snprintf(buf, len, "queued #%u", job->progress.queue_position);
    else if (job->progress.rows_total > 0)
        snprintf(buf, len, "%u%%", (unsigned)((uint64_t)job->progress.rows_done * 100 / job->progress.rows_total));
    else
        snprintf(buf, len, "-");
}

static const char *const grpc_status_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

static const char *grpc_status_name(int status)
{
    if (status >= 0 && (size_t)status < sizeof grpc_status_names / sizeof grpc_status_names[0])
        return grpc_status_names[status];
    return "?";
}

static void print_job(const fractal_job *job)
{
    char buf[64], size[32];

    printf("id          %s\n", job->id);
    printf("state       %s\n", fractal_job_state_name(job->state));
    if (job->state == FRACTAL_JOB_QUEUED)
        printf("queue       position %u\n", job->progress.queue_position);
    if (job->progress.rows_total > 0)
        printf("progress    %.1f%% (%u/%u rows)\n", 100.0 * job->progress.rows_done / job->progress.rows_total,
               job->progress.rows_done, job->progress.rows_total);
    format_time(buf, sizeof buf, job->created_unix_ms);
    printf("created     %s\n", buf);
    format_time(buf, sizeof buf, job->started_unix_ms);
    printf("started     %s\n", buf);
    format_time(buf, sizeof buf, job->finished_unix_ms);
    printf("finished    %s\n", buf);
    if (job->started_unix_ms > 0 && job->created_unix_ms > 0)
        printf("waited      %.3f s\n", (double)(job->started_unix_ms - job->created_unix_ms) / 1000.0);
    if (job->finished_unix_ms > 0 && job->started_unix_ms > 0)
        printf("ran         %.3f s\n", (double)(job->finished_unix_ms - job->started_unix_ms) / 1000.0);
    if (job->state == FRACTAL_JOB_SUCCEEDED) {
        format_time(buf, sizeof buf, job->expires_unix_ms);
        printf("expires     %s\n", buf);
        format_size(size, sizeof size, job->result_bytes);
        printf("result      %ux%u %s, %llu bytes (%s)\n", job->width, job->height, job->content_type,
               (unsigned long long)job->result_bytes, size);
    }
    if (job->has_stats)
        printf("stats       %llu iterations, %u tiles, queue %.3f ms, compute %.3f ms, encode %.3f ms, "
               "total %.3f ms\n", (unsigned long long)job->stats.iterations, job->stats.tiles,
               job->stats.queue_ms, job->stats.compute_ms, job->stats.encode_ms, job->stats.total_ms);
    if (job->state == FRACTAL_JOB_FAILED || job->error_message[0])
        printf("error       %s: %s\n", grpc_status_name(fractal_error_grpc_status(job->error)),
               job->error_message[0] ? job->error_message : fractal_strerror(job->error));
    if (job->request)
        printf("request     %s %ux%u, max_iter %u, %s\n",
               job->request->kind == FRACTAL_KIND_MANDELBROT ? "mandelbrot" : "julia", job->request->width,
               job->request->height, job->request->max_iter, format_name(job->request->format));
}

/* `fractal job ID`: prints the job. */
static int cmd_job(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    conn_opts conn;
    size_t n_parsed;
    int rc, err, done;

    if ((rc = parse_simple(argc, argv, "job", job_help, no_opts, parsed, &n_parsed, pos, 1, 0, NULL, &conn, &done)) != 0 ||
        done)
        return rc;
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_job_get(&job, client, pos[0])) < 0) {
        rc = call_failed(client, err);
    } else {
        print_job(job);
        rc = EXIT_OK;
    }
    fractal_job_free(job);
    close_client(client);
    return rc;
}

/* `fractal cancel ID`: cancels the job and prints its state afterwards. */
static int cmd_cancel(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    conn_opts conn;
    size_t n_parsed, i;
    int rc, err, done, quiet = 0;

    if ((rc = parse_simple(argc, argv, "cancel", cancel_help, health_opts, parsed, &n_parsed, pos, 1, 0, NULL, &conn,
                           &done)) != 0 || done)
        return rc;
    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_QUIET)
            quiet = 1;
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_job_cancel(&job, client, pos[0])) < 0) {
        rc = call_failed(client, err);
    } else {
        if (!quiet)
            printf("%s %s\n", job->id, fractal_job_state_name(job->state));
        rc = EXIT_OK;
    }
    fractal_job_free(job);
    close_client(client);
    return rc;
}

/* `fractal wait ID [-o FILE]`: waits for the job, then writes its image. */
static int cmd_wait(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    fractal_stream_result *result = NULL;
    progress_bar bar = { 0, 0 };
    conn_opts conn;
    const char *output = NULL, *id;
    size_t n_parsed, i;
    uint32_t timeout_ms = 0;
    int rc, err, done, quiet = 0, stats = 0, show_bar;

    if ((rc = parse_simple(argc, argv, "wait", wait_help, wait_opts, parsed, &n_parsed, pos, 1, 0, NULL, &conn, &done)) != 0 ||
        done)
        return rc;
    id = pos[0];
    for (i = 0; i < n_parsed; i++) {
        switch (parsed[i].id) {
        case OPT_OUTPUT: output = parsed[i].value; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_STATS: stats = 1; break;
        case OPT_TIMEOUT:
            if (parse_u32(parsed[i].value, &timeout_ms) < 0)
                return usage_error("--timeout: '%s' is not a number of milliseconds", parsed[i].value);
            break;
        default: break;
        }
    }
    if (output && output[0] == '\0')
        return usage_error("-o: empty file name");
    show_bar = !quiet && isatty(STDERR_FILENO);
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    err = fractal_job_wait(&job, client, id, timeout_ms, show_bar ? draw_progress : NULL, &bar);
    end_progress(&bar);
    if (err < 0) {
        rc = call_failed(client, err);
        goto done;
    }
    if (job->state == FRACTAL_JOB_FAILED) {
        fprintf(stderr, "fractal: job %s failed: %s\n", job->id,
                job->error_message[0] ? job->error_message : fractal_strerror(job->error));
        rc = job->error ? exit_code_for(job->error) : EXIT_OTHER;
        if (rc == EXIT_OK)
            rc = EXIT_OTHER;
        goto done;
    }
    if (job->state == FRACTAL_JOB_CANCELLED) {
        fprintf(stderr, "fractal: job %s was cancelled\n", job->id);
        rc = EXIT_CANCELLED;
        goto done;
    }
    if (output == NULL) {
        if (!quiet)
            printf("%s %s\n", job->id, fractal_job_state_name(job->state));
        if (stats && job->has_stats)
            print_stats(job->width, job->height, job->request ? format_name(job->request->format) : NULL,
                        job->content_type, job->result_bytes, &job->stats);
        rc = EXIT_OK;
        goto done;
    }
    if ((err = stream_out(&result, client, NULL, id, output, show_bar ? &bar : NULL)) != 0) {
        rc = err < 0 ? call_failed(client, err) : err;
        goto done;
    }
    if (!quiet && strcmp(output, "-") != 0)
        fprintf(stderr, "wrote %s (%ux%u, %llu bytes)\n", output, result->width, result->height,
                (unsigned long long)result->size);
    if (stats)
        print_stats(result->width, result->height, job->request ? format_name(job->request->format) : NULL,
                    result->content_type, result->size, &result->stats);
    rc = atomic_load(&interrupted) ? 128 + atomic_load(&interrupted) : EXIT_OK;
done:
    fractal_stream_result_free(result);
    fractal_job_free(job);
    close_client(client);
    return rc;
}

static int parse_state(const char *s, fractal_job_state *out)
{
    int st;

    for (st = FRACTAL_JOB_QUEUED; st <= FRACTAL_JOB_CANCELLED; st++) {
        if (strcmp(s, fractal_job_state_name((fractal_job_state)st)) == 0) {
            *out = (fractal_job_state)st;
            return 0;
        }
    }
    return -1;
}

/* `fractal jobs`: one line per job, newest first. */
static int cmd_jobs(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_job_list *list = NULL;
    fractal_job_state state = FRACTAL_JOB_UNSPECIFIED;
    conn_opts conn;
    size_t n_parsed, i, id_w = 2;
    uint32_t limit = 0;
    int rc, err, done;
    char created[64], progress[32], size[32];

    if ((rc = parse_simple(argc, argv, "jobs", jobs_help, jobs_opts, parsed, &n_parsed, pos, 0, 0, NULL, &conn, &done)) != 0 ||
        done)
        return rc;
    for (i = 0; i < n_parsed; i++) {
        if (parsed[i].id == OPT_STATE && parse_state(parsed[i].value, &state) < 0)
            return usage_error("--state: '%s' is not queued, running, succeeded, failed or cancelled",
                               parsed[i].value);
        if (parsed[i].id == OPT_LIMIT && parse_u32(parsed[i].value, &limit) < 0)
            return usage_error("--limit: '%s' is not a whole number", parsed[i].value);
    }
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_list_jobs(&list, client, limit, state)) < 0) {
        rc = call_failed(client, err);
        goto done;
    }
    for (i = 0; i < list->count; i++)
        if (strlen(list->jobs[i].id) > id_w)
            id_w = strlen(list->jobs[i].id);
    printf("%-*s  %-9s  %-9s  %-27s  %s\n", (int)id_w, "ID", "STATE", "PROGRESS", "CREATED", "RESULT");
    for (i = 0; i < list->count; i++) {
        const fractal_job *job = &list->jobs[i];

        format_time(created, sizeof created, job->created_unix_ms);
        format_progress(progress, sizeof progress, job);
        printf("%-*s  %-9s  %-9s  %-27s  ", (int)id_w, job->id, fractal_job_state_name(job->state), progress,
               created);
        if (job->state == FRACTAL_JOB_SUCCEEDED) {
            format_size(size, sizeof size, job->result_bytes);
            printf("%ux%u %s\n", job->width, job->height, size);
        } else if (job->state == FRACTAL_JOB_FAILED) {
            printf("%s\n", job->error_message[0] ? job->error_message : fractal_strerror(job->error));
        } else {
            printf("-\n");
        }
    }
    rc = EXIT_OK;
done:
    fractal_job_list_free(list);
    close_client(client);
    return rc;
}

/* `fractal stats`: the server's counters. */
static int cmd_stats(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_server_stats *st = NULL;
    conn_opts conn;
    size_t n_parsed, i, w = 6;
    int rc, err, done;
    char size[32];

    if ((rc = parse_simple(argc, argv, "stats", stats_help, no_opts, parsed, &n_parsed, pos, 0, 0, NULL, &conn, &done)) != 0 ||
        done)
        return rc;
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_stats_get(&st, client)) < 0) {
        rc = call_failed(client, err);
        goto done;
    }
    format_size(size, sizeof size, st->spool_bytes);
    printf("uptime       %.1f s\n", st->uptime_s);
    printf("queue depth  %u\n", st->queue_depth);
    printf("running      %u\n", st->running);
    printf("jobs held    %u\n", st->jobs_held);
    printf("spool        %llu bytes (%s)\n", (unsigned long long)st->spool_bytes, size);
    for (i = 0; i < st->n_requests; i++)
        if (strlen(st->requests[i].method) > w)
            w = strlen(st->requests[i].method);
    printf("\n%-*s  %-19s  %10s\n", (int)w, "METHOD", "STATUS", "COUNT");
    for (i = 0; i < st->n_requests; i++)
        printf("%-*s  %-19s  %10llu\n", (int)w, st->requests[i].method,
               grpc_status_name(st->requests[i].grpc_status), (unsigned long long)st->requests[i].count);
    w = 6;
    for (i = 0; i < st->n_devices; i++)
        if (strlen(st->devices[i].id) > w)
            w = strlen(st->devices[i].id);
    printf("\n%-*s  %12s  %10s  %16s  %8s\n", (int)w, "DEVICE", "BUSY MS", "TILES", "ITERATIONS", "GITER/S");
    for (i = 0; i < st->n_devices; i++)
        printf("%-*s  %12.1f  %10llu  %16llu  %8.2f\n", (int)w, st->devices[i].id, st->devices[i].busy_ms,
               (unsigned long long)st->devices[i].tiles, (unsigned long long)st->devices[i].iterations,
               st->devices[i].giter_per_s);
    rc = EXIT_OK;
done:
    fractal_server_stats_free(st);
    close_client(client);
    return rc;
}

/* ---- devices --------------------------------------------------------------------------------- */

static const char *device_type_name(fractal_device_type t)
{
    switch (t) {
    case FRACTAL_DEVICE_CPU: return "cpu";
    case FRACTAL_DEVICE_GPU: return "gpu";
    case FRACTAL_DEVICE_ACCELERATOR: return "accel";
    case FRACTAL_DEVICE_UNSPECIFIED: break;
    }
    return "-";
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_field_str(const char *key, const char *value, int last)
{
    printf("\"%s\": ", key);
    json_string(value);
    fputs(last ? "" : ", ", stdout);
}

static void print_devices_json(const fractal_device_list *list)
{
    size_t i;

    printf("[");
    for (i = 0; i < list->count; i++) {
        const fractal_device *d = &list->devices[i];

        printf("%s\n  {", i ? "," : "");
        json_field_str("id", d->id, 0);
        json_field_str("name", d->name, 0);
        json_field_str("vendor", d->vendor, 0);
        json_field_str("platform", d->platform, 0);
        json_field_str("type", device_type_name(d->type), 0);
        json_field_str("engine", d->engine, 0);
        printf("\"fp64\": %s, \"compute_units\": %u, \"memory_bytes\": %llu, \"enabled\": %s, ",
               d->fp64 ? "true" : "false", d->compute_units, (unsigned long long)d->memory_bytes,
               d->enabled ? "true" : "false");
        json_field_str("disabled_reason", d->disabled_reason, 0);
        json_field_str("status", d->status, 0);
        json_field_str("status_reason", d->status_reason, 0);
        if (isfinite(d->giter_per_s))
            printf("\"giter_per_s\": %.17g, ", d->giter_per_s);
        else
            printf("\"giter_per_s\": null, ");
        printf("\"tiles_done\": %llu, \"iterations_done\": %llu}", (unsigned long long)d->tiles_done,
               (unsigned long long)d->iterations_done);
    }
    printf("%s]\n", list->count ? "\n" : "");
}

static void format_bytes(char *buf, size_t len, uint64_t bytes)
{
    if (bytes == 0)
        snprintf(buf, len, "-");
    else if (bytes >= (uint64_t)1 << 30)
        snprintf(buf, len, "%.1f GiB", (double)bytes / (double)((uint64_t)1 << 30));
    else
        snprintf(buf, len, "%.1f MiB", (double)bytes / (double)((uint64_t)1 << 20));
}

static void print_devices_table(const fractal_device_list *list)
{
    size_t i, id_w = 2;
    char mem[32], state[512];

    for (i = 0; i < list->count; i++)
        if (strlen(list->devices[i].id) > id_w)
            id_w = strlen(list->devices[i].id);
    printf("%-*s  %-5s  %-6s  %-4s  %4s  %9s  %8s  %-24s  %s\n", (int)id_w, "ID", "TYPE", "ENGINE",
           "FP64", "CU", "MEMORY", "GITER/S", "STATE", "NAME");
    for (i = 0; i < list->count; i++) {
        const fractal_device *d = &list->devices[i];

        format_bytes(mem, sizeof mem, d->memory_bytes);
        if (!d->enabled)
            snprintf(state, sizeof state, "disabled%s%s", d->disabled_reason[0] ? ": " : "",
                     d->disabled_reason);
        else if (d->status[0] && strcmp(d->status, "ok") != 0)
            snprintf(state, sizeof state, "%s%s%s", d->status, d->status_reason[0] ? ": " : "",
                     d->status_reason);
        else if (!strncmp(d->status_reason, "spare cycles", 12))
            snprintf(state, sizeof state, "ok (spare cycles)");
        else
            snprintf(state, sizeof state, "ok");
        printf("%-*s  %-5s  %-6s  %-4s  %4u  %9s  %8.2f  %-24s  %s\n", (int)id_w, d->id,
               device_type_name(d->type), d->engine[0] ? d->engine : "-", d->fp64 ? "yes" : "no",
               d->compute_units, mem, d->giter_per_s, state, d->name);
    }
}

/* `fractal devices`: prints the server's devices as a table or JSON. Returns the exit code. */
static int cmd_devices(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_device_list *list = NULL;
    conn_opts conn;
    size_t n_parsed, i;
    int rc, err, done, json = 0;

    if ((rc = parse_simple(argc, argv, "devices", devices_help, devices_opts, parsed, &n_parsed, pos, 0, 0, NULL,
                           &conn, &done)) != 0 || done)
        return rc;
    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_JSON)
            json = 1;
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_list_devices(&list, client)) < 0) {
        rc = call_failed(client, err);
    } else {
        if (json)
            print_devices_json(list);
        else
            print_devices_table(list);
        rc = EXIT_OK;
    }
    fractal_device_list_free(list);
    close_client(client);
    return rc;
}

/* ---- health ---------------------------------------------------------------------------------- */

static const char *health_name(fractal_health_status s)
{
    switch (s) {
    case FRACTAL_HEALTH_SERVING: return "SERVING";
    case FRACTAL_HEALTH_NOT_SERVING: return "NOT_SERVING";
    case FRACTAL_HEALTH_SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    case FRACTAL_HEALTH_UNKNOWN: break;
    }
    return "UNKNOWN";
}

/* `fractal health [SERVICE]`: prints the serving status; 0 only when SERVING. */
static int cmd_health(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_health_status status = FRACTAL_HEALTH_UNKNOWN;
    conn_opts conn;
    size_t n_parsed, n_pos = 0, i;
    int rc, err, done, quiet = 0;

    if ((rc = parse_simple(argc, argv, "health", health_help, health_opts, parsed, &n_parsed, pos, 1, 1, &n_pos,
                           &conn, &done)) != 0 || done)
        return rc;
    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_QUIET)
            quiet = 1;
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_health_check(&status, client, n_pos ? pos[0] : "")) < 0) {
        rc = quiet ? exit_code_for(err) : call_failed(client, err);
    } else {
        if (!quiet)
            printf("%s\n", health_name(status));
        rc = status == FRACTAL_HEALTH_SERVING ? EXIT_OK : EXIT_OTHER;
    }
    close_client(client);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    parsed_opt *parsed = NULL;
    const char **pos = NULL;
    const char *cmd;
    int rc;

    if (argc < 2)
        return usage_error("no command given");
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(main_help, stdout);
        fputs(exit_codes_help, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("fractal %s (libfractal %s)\n", FRACTAL_VERSION, fractal_version());
        return EXIT_OK;
    }
    watch_signals();
    parsed = calloc((size_t)argc, sizeof *parsed);
    pos = calloc((size_t)argc, sizeof *pos);
    if (parsed == NULL || pos == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        rc = EXIT_OTHER;
    } else if (strcmp(cmd, "render") == 0) {
        rc = cmd_render(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "submit") == 0) {
        rc = cmd_submit(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "job") == 0) {
        rc = cmd_job(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "wait") == 0) {
        rc = cmd_wait(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "cancel") == 0) {
        rc = cmd_cancel(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "jobs") == 0) {
        rc = cmd_jobs(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "stats") == 0) {
        rc = cmd_stats(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "devices") == 0) {
        rc = cmd_devices(argc - 2, argv + 2, parsed, pos);
    } else if (strcmp(cmd, "health") == 0) {
        rc = cmd_health(argc - 2, argv + 2, parsed, pos);
    } else {
        rc = usage_error("unknown command '%s'", cmd);
    }
    free(parsed);
    free(pos);
    return rc;
}
