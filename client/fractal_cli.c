/* fractal_cli.c: the `fractal` command-line tool (render, devices, health). It sits on libfractal's
 * public header only, as curl's tool sits on libcurl. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fractal/fractal.h"

#define DEFAULT_SERVER "127.0.0.1:50051"

/* Exit codes, one per class of failure a script may want to tell apart (listed in --help). */
enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,       /* anything else: local I/O, unreadable --from file, server internal error */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_INVALID = 3,     /* the server refused the request as invalid */
    EXIT_EXHAUSTED = 4,   /* over the server's limits, or a precondition (e.g. too deep for fp64) */
    EXIT_UNAVAILABLE = 5  /* server unreachable or deadline exceeded */
};

static const char exit_codes_help[] =
    "Exit status:\n"
    "  0  success (health: the service is SERVING)\n"
    "  1  other failure (local I/O, unreadable --from file, server internal error;\n"
    "     health: not SERVING)\n"
    "  2  usage error (unknown flag, malformed number)\n"
    "  3  the server refused the request as invalid (INVALID_ARGUMENT, OUT_OF_RANGE)\n"
    "  4  over the server's limits (RESOURCE_EXHAUSTED) or FAILED_PRECONDITION\n"
    "     (e.g. a view too deep for fp64)\n"
    "  5  server unavailable or deadline exceeded (UNAVAILABLE, DEADLINE_EXCEEDED)\n";

static const char main_help[] =
    "Usage: fractal COMMAND [OPTIONS]\n"
    "       fractal --help | --version\n"
    "\n"
    "Client of fractald, the escape-time fractal render server.\n"
    "\n"
    "Commands:\n"
    "  render    render an image and write it to a file or stdout\n"
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
    "Renders one image with the Render RPC. Every option maps to a RenderRequest field;\n"
    "values are checked for syntax here and for range by the server.\n"
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
    "  -q, --quiet            print nothing but errors\n"
    "\n"
    "Connection:\n"
    "  --server HOST:PORT     server address (default $FRACTAL_SERVER, else " DEFAULT_SERVER ")\n"
    "  --deadline MS          give up after MS milliseconds; 0 = none (default 60000)\n"
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
    OPT_FROM, OPT_STATS
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

static const opt_def render_opts[] = {
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
    { "output", 'o', 1, OPT_OUTPUT },
    { "from", 0, 1, OPT_FROM },
    { "stats", 0, 0, OPT_STATS },
    { "quiet", 'q', 0, OPT_QUIET },
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

/* Splits argv into options (looked up in the command's table, then the common one) and positional
 * arguments. Accepts --name VALUE, --name=VALUE, -o VALUE, -oVALUE; "--" ends the options. The
 * arrays have room for argc entries. Returns 0 or EXIT_USAGE (message printed). */
static int parse_args(int argc, char **argv, const opt_def *table, parsed_opt *opts, size_t *n_opts,
                      const char **positional, size_t *n_pos)
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

            if ((def = find_long(table, arg + 2, len)) == NULL)
                def = find_long(common_opts, arg + 2, len);
            if (def == NULL)
                return usage_error("unknown option '%.*s'", (int)len + 2, arg);
            if (eq) {
                if (!def->has_arg)
                    return usage_error("option '--%s' takes no value", def->name);
                value = eq + 1;
            }
        } else {
            if ((def = find_short(table, arg[1])) == NULL)
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
    char buf[256], *parts[2];

    if (split(s, ',', buf, sizeof buf, parts, 2) < 0 || parse_double(parts[0], &out->re) < 0 ||
        parse_double(parts[1], &out->im) < 0)
        return -1;
    return 0;
}

static int parse_size(const char *s, uint32_t *w, uint32_t *h)
{
    char buf[64], *parts[2];

    if (split(s, 'x', buf, sizeof buf, parts, 2) < 0 || parse_u32(parts[0], w) < 0 ||
        parse_u32(parts[1], h) < 0)
        return -1;
    return 0;
}

static int parse_region(const char *s, fractal_region *out)
{
    char buf[128], *parts[4];

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
        char item[128], buf[128], *parts[2];

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

static int connect_client(fractal_client **out, const conn_opts *c)
{
    fractal_client_options copts = FRACTAL_CLIENT_OPTIONS_INIT;
    int err;

    copts.deadline_ms = c->deadline_ms;
    if ((err = fractal_client_new(out, c->server, &copts)) < 0) {
        fprintf(stderr, "fractal: %s: %s\n", c->server, fractal_strerror(err));
        return EXIT_OTHER;
    }
    return 0;
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
    default:
        return EXIT_OTHER;
    }
}

/* Prints the client's message for a failed call and returns the exit code of its class. */
static int call_failed(const fractal_client *client, int err)
{
    const char *msg = fractal_client_last_error(client);

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

static void print_stats(const fractal_image *img)
{
    const fractal_render_stats *st = &img->stats;
    size_t i;

    fprintf(stderr, "image       %ux%u %s (%s), %zu bytes\n", img->width, img->height,
            format_name(img->format), img->content_type, img->size);
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

/* `fractal render`: builds the options (defaults, then --from, then every other flag in order),
 * renders, and writes the image to a file (atomically) or stdout. Returns the exit code. */
static int cmd_render(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    fractal_image *image = NULL;
    conn_opts conn;
    const char *output = NULL, *from = NULL;
    char err_buf[512];
    size_t n_parsed, n_pos, i;
    int rc, err, quiet = 0, stats = 0;

    command_name = "render";
    conn_defaults(&conn);
    if ((rc = parse_args(argc, argv, render_opts, parsed, &n_parsed, pos, &n_pos)) != 0)
        return rc;
    if (n_pos > 0)
        return usage_error("unexpected argument '%s'", pos[0]);
    /* The options struct is some 6 KiB (256 stops): keep it off the stack. */
    if ((opts = malloc(sizeof *opts)) == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        return EXIT_OTHER;
    }
    fractal_render_options_init(opts, FRACTAL_RENDER_OPTIONS_VERSION);

    /* --from first, wherever it stands, so that every other flag overrides what it loads. */
    for (i = 0; i < n_parsed; i++) {
        if (parsed[i].id == OPT_HELP) {
            fputs(render_help, stdout);
            fputs(exit_codes_help, stdout);
            rc = EXIT_OK;
            goto done;
        }
        if (parsed[i].id == OPT_FROM)
            from = parsed[i].value;
    }
    if (from && (err = fractal_render_options_from_png(opts, from, err_buf, sizeof err_buf)) < 0) {
        fprintf(stderr, "fractal: %s\n", err_buf);
        rc = EXIT_OTHER;
        goto done;
    }
    for (i = 0; i < n_parsed; i++) {
        const parsed_opt *o = &parsed[i];

        if (is_conn_opt(o->id)) {
            if ((rc = apply_conn_opt(&conn, o)) != 0)
                goto done;
            continue;
        }
        switch (o->id) {
        case OPT_OUTPUT: output = o->value; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_STATS: stats = 1; break;
        case OPT_FROM: break;
        default:
            if ((rc = apply_render_opt(opts, o)) != 0)
                goto done;
        }
    }
    if (output == NULL)
        output = default_output(opts->format);
    if (output[0] == '\0') {
        rc = usage_error("-o: empty file name");
        goto done;
    }

    if ((rc = connect_client(&client, &conn)) != 0)
        goto done;
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
        print_stats(image);
    rc = EXIT_OK;
done:
    fractal_image_free(image);
    fractal_client_free(client);
    free(opts);
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
    size_t n_parsed, n_pos, i;
    int rc, err, json = 0;

    command_name = "devices";
    conn_defaults(&conn);
    if ((rc = parse_args(argc, argv, devices_opts, parsed, &n_parsed, pos, &n_pos)) != 0)
        return rc;
    for (i = 0; i < n_parsed; i++) {
        if (parsed[i].id == OPT_HELP) {
            fputs(devices_help, stdout);
            fputs(exit_codes_help, stdout);
            return EXIT_OK;
        }
        if (is_conn_opt(parsed[i].id) && (rc = apply_conn_opt(&conn, &parsed[i])) != 0)
            return rc;
        if (parsed[i].id == OPT_JSON)
            json = 1;
    }
    if (n_pos > 0)
        return usage_error("unexpected argument '%s'", pos[0]);
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
    fractal_client_free(client);
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
    size_t n_parsed, n_pos, i;
    int rc, err, quiet = 0;

    command_name = "health";
    conn_defaults(&conn);
    if ((rc = parse_args(argc, argv, health_opts, parsed, &n_parsed, pos, &n_pos)) != 0)
        return rc;
    for (i = 0; i < n_parsed; i++) {
        if (parsed[i].id == OPT_HELP) {
            fputs(health_help, stdout);
            fputs(exit_codes_help, stdout);
            return EXIT_OK;
        }
        if (is_conn_opt(parsed[i].id) && (rc = apply_conn_opt(&conn, &parsed[i])) != 0)
            return rc;
        if (parsed[i].id == OPT_QUIET)
            quiet = 1;
    }
    if (n_pos > 1)
        return usage_error("unexpected argument '%s'", pos[1]);
    if ((rc = connect_client(&client, &conn)) != 0)
        return rc;
    if ((err = fractal_health_check(&status, client, n_pos ? pos[0] : "")) < 0) {
        rc = quiet ? exit_code_for(err) : call_failed(client, err);
    } else {
        if (!quiet)
            printf("%s\n", health_name(status));
        rc = status == FRACTAL_HEALTH_SERVING ? EXIT_OK : EXIT_OTHER;
    }
    fractal_client_free(client);
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
    parsed = calloc((size_t)argc, sizeof *parsed);
    pos = calloc((size_t)argc, sizeof *pos);
    if (parsed == NULL || pos == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        rc = EXIT_OTHER;
    } else if (strcmp(cmd, "render") == 0) {
        rc = cmd_render(argc - 2, argv + 2, parsed, pos);
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
