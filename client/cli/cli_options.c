/* cli_options.c: the `fractal` tool's command line: the shared option tables, the parser over
 * them, strict value parsers, usage errors, and the map from request fields to flags. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const opt_def common_opts[] = {
    { "help", 'h', 0, OPT_HELP },
    { "server", 0, 1, OPT_SERVER },
    { "deadline", 0, 1, OPT_DEADLINE },
    { "tls", 0, 0, OPT_TLS },
    { "ca", 0, 1, OPT_CA },
    { "cert", 0, 1, OPT_CERT },
    { "key", 0, 1, OPT_KEY },
    { "token-file", 0, 1, OPT_TOKEN_FILE },
    { NULL, 0, 0, 0 },
};

/* What to render: shared by render and submit. */
const opt_def spec_opts[] = {
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
    { "no-rect-fill", 0, 0, OPT_NO_RECT_FILL },
    { "rect-fill", 0, 0, OPT_RECT_FILL },
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

/* The request fields the server names at the start of its INVALID_ARGUMENT messages
 * (server/render/request.c; "device" also in devices.c), each with the flag of spec_opts that
 * sets it, so that a refusal speaks of what the user typed: "width must be 1..65536, got 0"
 * becomes "the width of --size must be 1..65536, got 0". Every field of the request has a flag;
 * a message that starts with anything else is left as it is. "[]" in a path stands for an index
 * ("coloring.stops[3].color"), and '#' in the text for that index counted from 1, as the user
 * counts the stops of --stops. */
static const struct field_flag {
    const char *path;
    const char *flag;
} field_flags[] = {
    { "julia.c.re", "the real part of --julia" },
    { "julia.c.im", "the imaginary part of --julia" },
    { "view.center.re", "the real part of --center" },
    { "view.center.im", "the imaginary part of --center" },
    { "view.width", "--view-width" },
    { "view.center_re_text", "the real part of --center" },
    { "view.center_im_text", "the imaginary part of --center" },
    { "view.width_text", "--view-width" },
    { "width", "the width of --size" },
    { "height", "the height of --size" },
    { "region", "--region" },
    { "max_iter", "--max-iter" },
    { "escape_radius", "--escape-radius" },
    { "precision", "--precision" },
    { "device", "--device" },
    { "format", "--format" },
    { "supersample", "--supersample" },
    { "coloring.palette", "--palette" },
    { "coloring.stops", "--stops" },
    { "coloring.stops[].position", "the position of stop # of --stops" },
    { "coloring.stops[].color", "the colour of stop # of --stops" },
    { "coloring.cycle", "--cycle" },
    { "coloring.offset", "--offset" },
    { "coloring.interior", "--interior" },
};

const opt_def no_opts[] = {
    { NULL, 0, 0, 0 },
};

const opt_def quiet_opts[] = {
    { "quiet", 'q', 0, OPT_QUIET },
    { NULL, 0, 0, 0 },
};

/* Before the command: main answers these itself (the common options are looked up too). */
static const opt_def leading_opts[] = {
    { "version", 'V', 0, OPT_VERSION },
    { NULL, 0, 0, 0 },
};

const char *command_name = "";

int usage_error(const char *fmt, ...)
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
 * "--" ends the options. The arrays have room for argc entries. When `command` is not NULL, stops
 * at the first positional argument (or "--") instead and sets *command to its index (argc when
 * there is none); positional may then be NULL. Returns 0 or EXIT_USAGE (message printed). */
static int parse_opts(int argc, char **argv, const opt_def *table, const opt_def *more, parsed_opt *opts,
                      size_t *n_opts, const char **positional, size_t *n_pos, int *command)
{
    int i, only_positional = 0;

    *n_opts = *n_pos = 0;
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        const opt_def *def = NULL;

        if (command && (arg[0] != '-' || arg[1] == '\0' || strcmp(arg, "--") == 0))
            break;
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
    if (command)
        *command = i;
    return 0;
}

int parse_args(int argc, char **argv, const opt_def *table, const opt_def *more, parsed_opt *opts,
               size_t *n_opts, const char **positional, size_t *n_pos)
{
    return parse_opts(argc, argv, table, more, opts, n_opts, positional, n_pos, NULL);
}

/* Parses the options that stand before the command in argv (the program name left out): the
 * common ones, which main hands on to the command, and --version. *command gets the index of the
 * command (argc when none is given). The array has room for argc entries. Returns 0 or
 * EXIT_USAGE (message printed). */
int parse_leading(int argc, char **argv, parsed_opt *opts, size_t *n_opts, int *command)
{
    size_t n_pos;

    /* No positional argument is collected: the first one is the command, where parsing stops. */
    return parse_opts(argc, argv, leading_opts, NULL, opts, n_opts, NULL, &n_pos, command);
}

/* ---- strict value parsers: 0 on success, -1 on anything but a whole, in-range value ---------- */

int parse_double(const char *s, double *out)
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

int parse_u32(const char *s, uint32_t *out)
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

int parse_complex(const char *s, fractal_complex *out)
{
    char buf[256], *parts[2] = {NULL, NULL};

    if (split(s, ',', buf, sizeof buf, parts, 2) < 0 || parse_double(parts[0], &out->re) < 0 ||
        parse_double(parts[1], &out->im) < 0)
        return -1;
    return 0;
}

/* The significant digits of decimal text (no leading or trailing zeros; "" for zero) into digits
 * (cap bytes) and the power of ten of the first one into *exp10. Returns 0, or -1 when s is not
 * [+-]DIGITS[.DIGITS][e[+-]DIGITS] (or .DIGITS) or the digits do not fit. */
static int decimal_digits(const char *s, char *digits, size_t cap, long *exp10, int *negative)
{
    const char *p = s;
    size_t n = 0, mantissa = 0, int_digits = 0, lead = 0;
    long e = 0;
    int seen_point = 0, exp_digits = 0, eneg = 0;

    *negative = 0;
    if (*p == '+' || *p == '-')
        *negative = *p++ == '-';
    for (; isdigit((unsigned char)*p) || (*p == '.' && !seen_point); p++) {
        if (*p == '.') {
            seen_point = 1;
            continue;
        }
        mantissa++;
        if (!seen_point)
            int_digits++;
        if (n == 0 && *p == '0') {
            lead++;
            continue;
        }
        if (n + 1 >= cap)
            return -1;
        digits[n++] = *p;
    }
    if (mantissa == 0)
        return -1;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; isdigit((unsigned char)*p); p++)
            if (++exp_digits <= 9)
                e = e * 10 + (*p - '0');
        if (exp_digits == 0 || exp_digits > 9)
            return -1;
    }
    if (*p != '\0')
        return -1;
    while (n > 0 && digits[n - 1] == '0')
        n--;
    digits[n] = '\0';
    *exp10 = (long)int_digits - 1 - (long)lead + (eneg ? -e : e);
    return 0;
}

int parse_view_number(const char *s, double *out, char *text, size_t cap)
{
    char typed[1024], exact[1024];
    long typed_exp = 0, exact_exp = 0;
    int typed_neg = 0, exact_neg = 0, as_double = parse_double(s, out) == 0;
    int decimal;

    text[0] = '\0';
    /* A double has at most 767 significant digits: longer text cannot be one. */
    decimal = decimal_digits(s, typed, sizeof typed, &typed_exp, &typed_neg) == 0;
    if (!decimal) {
        int long_decimal = 0;
        char *big = malloc(strlen(s) + 1);
        if (big) {
            long_decimal = decimal_digits(s, big, strlen(s) + 1, &typed_exp, &typed_neg) == 0;
            free(big);
        }
        if (!long_decimal)
            return as_double ? 0 : -1;
    } else if (as_double) {
        /* The double's exact decimal expansion, compared digit by digit with what was typed. */
        char buf[1100];
        snprintf(buf, sizeof buf, "%.780e", *out);
        if (decimal_digits(buf, exact, sizeof exact, &exact_exp, &exact_neg) == 0 &&
            strcmp(typed, exact) == 0 && (typed[0] == '\0' || (typed_exp == exact_exp && typed_neg == exact_neg)))
            return 0;
    }
    if (strlen(s) >= cap)
        return -1;
    strcpy(text, s);
    if (!as_double) {
        /* Past double's range: the double is only informative (the text overrides it). */
        *out = strtod(s, NULL);
    }
    return 0;
}

int decimal_log10(const char *s, double *out)
{
    char *digits = malloc(strlen(s) + 1), lead[20];
    long exp10 = 0;
    int negative = 0, rc = -1;

    if (digits && decimal_digits(s, digits, strlen(s) + 1, &exp10, &negative) == 0 && digits[0] && !negative) {
        /* d.ddd... from the first 17 digits fixes the logarithm to a double's precision. */
        snprintf(lead, sizeof lead, "%c.%.16s", digits[0], digits + 1);
        *out = log10(strtod(lead, NULL)) + (double)exp10;
        rc = 0;
    }
    free(digits);
    return rc;
}

int parse_size(const char *s, uint32_t *w, uint32_t *h)
{
    char buf[64], *parts[2] = {NULL, NULL};

    if (split(s, 'x', buf, sizeof buf, parts, 2) < 0 || parse_u32(parts[0], w) < 0 ||
        parse_u32(parts[1], h) < 0)
        return -1;
    return 0;
}

int parse_region(const char *s, fractal_region *out)
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
int parse_color(const char *s, fractal_color *out)
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
int parse_stops(const char *s, fractal_render_options *opts)
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

int copy_string(char *dst, size_t cap, const char *src, const char *flag)
{
    if (strlen(src) >= cap)
        return usage_error("--%s: value longer than %zu bytes", flag, cap - 1);
    strcpy(dst, src);
    return 0;
}

int has_help(const parsed_opt *parsed, size_t n_parsed)
{
    size_t i;

    for (i = 0; i < n_parsed; i++)
        if (parsed[i].id == OPT_HELP)
            return 1;
    return 0;
}

/* Writes the server's message `msg` into buf (len bytes, truncated to fit), with the request
 * field path it starts with replaced by the flag that sets that field (field_flags). A message
 * that starts with no known path is copied as it is. */
void field_to_flag(char *buf, size_t len, const char *msg)
{
    char key[64];
    const char *p = msg, *idx = NULL, *hash;
    size_t k = 0, i, n = sizeof field_flags / sizeof field_flags[0];

    /* The path is the leading run of [a-z0-9_.] and "[N]" (the index is taken out of the key):
     * "coloring.stops[3].color must ..." gives "coloring.stops[].color" and "3". */
    while (*p && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' || *p == '.' ||
                  *p == '[')) {
        if (k + 3 > sizeof key)
            break;
        if (*p == '[') {
            idx = ++p;
            while (isdigit((unsigned char)*p))
                p++;
            if (*p != ']' || p == idx)
                break;
            p++;
            key[k++] = '[';
            key[k++] = ']';
            continue;
        }
        key[k++] = *p++;
    }
    key[k] = '\0';
    for (i = 0; i < n; i++)
        if (strcmp(field_flags[i].path, key) == 0)
            break;
    /* Only a whole path counts: "width must" is one, "widths" or "width[" are none. */
    if (i == n || (*p != ' ' && *p != '\0')) {
        snprintf(buf, len, "%s", msg);
        return;
    }
    if ((hash = strchr(field_flags[i].flag, '#')) != NULL && idx != NULL)
        snprintf(buf, len, "%.*s%lu%s%s", (int)(hash - field_flags[i].flag), field_flags[i].flag,
                 strtoul(idx, NULL, 10) + 1, hash + 1, p);
    else
        snprintf(buf, len, "%s%s", field_flags[i].flag, p);
}
