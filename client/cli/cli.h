/* cli.h: what the files of the `fractal` tool share: exit codes, the option tables and the parsed
 * command line, connection options, and each file's functions. The tool is one program on
 * libfractal's public header; these names are its own and stay unprefixed, as in curl's tool. */
#ifndef FRACTAL_CLI_H
#define FRACTAL_CLI_H

/* Every file of the tool includes this header first, so that the system headers are all read at
 * this POSIX level. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask, sigwait, isatty, clock_gettime, gmtime_r */
#endif

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fractal/fractal.h"

#if defined(__GNUC__)
#define CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF(fmt, args)
#endif

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
    EXIT_CANCELLED = 7,   /* the job was cancelled, or the server cancelled the call */
    EXIT_AUTH = 8         /* the server refused the credentials (no token, a wrong one) */
};

/* ---- the command line (cli_options.c) -------------------------------------------------------- */

enum opt_id {
    OPT_HELP = 1, OPT_SERVER, OPT_DEADLINE, OPT_QUIET, OPT_JSON,
    OPT_JULIA, OPT_MANDELBROT, OPT_CENTER, OPT_VIEW_WIDTH, OPT_SIZE, OPT_MAX_ITER, OPT_ESCAPE_RADIUS,
    OPT_PRECISION, OPT_REGION, OPT_NO_REGION, OPT_DEVICE, OPT_PALETTE, OPT_STOPS, OPT_CYCLE,
    OPT_OFFSET, OPT_INTERIOR, OPT_REVERSE, OPT_NO_REVERSE, OPT_SUPERSAMPLE, OPT_FORMAT, OPT_OUTPUT,
    OPT_FROM, OPT_STATS, OPT_STREAM, OPT_UNARY, OPT_TIMEOUT, OPT_STATE, OPT_LIMIT, OPT_VERSION,
    OPT_NO_RECT_FILL, OPT_RECT_FILL, OPT_START_WIDTH, OPT_FRAMES_PER_HALVING,
    OPT_TLS, OPT_CA, OPT_CERT, OPT_KEY, OPT_TOKEN_FILE,
    OPT_NO_FANOUT, OPT_BAND_ROWS, OPT_PER_SERVER
};

/* One row of an option table; a table ends with a row whose name is NULL. */
typedef struct opt_def {
    const char *name;    /* long name, without "--" */
    char short_name;     /* 0 for none */
    int has_arg;
    enum opt_id id;
} opt_def;

/* One parsed option, in command-line order. value is NULL for flags. */
typedef struct parsed_opt {
    enum opt_id id;
    const char *name;    /* as the user spelled it, for messages */
    const char *value;
} parsed_opt;

extern const opt_def spec_opts[];  /* what to render: render and submit */
extern const opt_def no_opts[];    /* none beyond the common ones */
extern const opt_def quiet_opts[]; /* -q, --quiet alone */

/* The running command's name, for "Try 'fractal NAME --help'"; "" before one is chosen. */
extern const char *command_name;

/* Prints "fractal: MESSAGE" and where to find help on stderr. Returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) CLI_PRINTF(1, 2);

int parse_args(int argc, char **argv, const opt_def *table, const opt_def *more, parsed_opt *opts,
               size_t *n_opts, const char **positional, size_t *n_pos);
int parse_leading(int argc, char **argv, parsed_opt *opts, size_t *n_opts, int *command);
int has_help(const parsed_opt *parsed, size_t n_parsed);

/* Strict value parsers: 0 on success, -1 on anything but a whole, in-range value (parse_stops
 * and copy_string print their usage error and return EXIT_USAGE instead). */
int parse_double(const char *s, double *out);
int parse_u32(const char *s, uint32_t *out);
int parse_complex(const char *s, fractal_complex *out);
/* A coordinate of the view (--center's parts, --view-width): *out gets it as a double, and text
 * (cap bytes) the decimal as typed when the double is not exactly it (more digits than a double
 * holds, a fraction binary cannot hold, or beyond double's range), else "". What a double holds
 * goes as a double, so the server's messages about it stay those of the double field. Returns 0,
 * or -1 when s is neither a number strtod reads nor decimal text. */
int parse_view_number(const char *s, double *out, char *text, size_t cap);
/* log10 of a positive number given as decimal text of any length and exponent ("1e-4000").
 * Returns 0, or -1 when s is not decimal text of a number > 0. */
int decimal_log10(const char *s, double *out);
int parse_size(const char *s, uint32_t *w, uint32_t *h);
int parse_region(const char *s, fractal_region *out);
int parse_color(const char *s, fractal_color *out);
int parse_stops(const char *s, fractal_render_options *opts);
int copy_string(char *dst, size_t cap, const char *src, const char *flag);

void field_to_flag(char *buf, size_t len, const char *msg);

/* ---- around each call (cli_conn.c) ----------------------------------------------------------- */

typedef struct conn_opts {
    const char *server;
    uint32_t deadline_ms;
    int tls;                /* --tls, or implied by --ca */
    const char *ca;         /* --ca FILE */
    const char *cert;       /* --cert FILE */
    const char *key;        /* --key FILE */
    const char *token_file; /* --token-file FILE; else $FRACTAL_TOKEN */
} conn_opts;

extern const char exit_codes_help[];
extern atomic_int interrupted; /* the signal number, once one came; else 0 */

int is_conn_opt(enum opt_id id);
int apply_conn_opt(conn_opts *c, const parsed_opt *o);
void conn_defaults(conn_opts *c);
int parse_simple(int argc, char **argv, const char *name, const char *help, const opt_def *table,
                 parsed_opt *parsed, size_t *n_parsed, const char **pos, size_t want_pos,
                 int pos_optional, size_t *n_pos_out, conn_opts *conn, int *done);
void watch_signals(void);
int client_options(fractal_client_options *out, char *token, size_t token_cap, const conn_opts *c);
int connect_client(fractal_client **out, const conn_opts *c);
void arm_interrupt(int on);
int server_is_list(const char *server);
void close_client(fractal_client *client);
int exit_code_for(int err);
int call_failed(const fractal_client *client, int err);
const char *grpc_status_name(int status);

/* ---- output shared by the commands (cli_render.c, cli_jobs.c) -------------------------------- */

/* A one-line bar on stderr, redrawn at most 10 times a second; only ever used when stderr is a
 * terminal. */
typedef struct progress_bar {
    int drawn;
    uint64_t last_ms;
} progress_bar;

int draw_progress(const fractal_progress *p, void *payload);
void end_progress(progress_bar *bar);
int stream_out(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
               const char *id, const char *output, progress_bar *bar);

/* ---- fan-out render over several servers (cli_fanout.c) --------------------------------------- */

typedef struct fanout_flags {
    uint32_t band_rows;     /* --band-rows; 0 = the library's choice */
    unsigned per_server;    /* --per-server; 0 = the library's default */
    int quiet, stats;
} fanout_flags;

int render_fanout(const fractal_render_options *opts, const conn_opts *conn, const char *output,
                  const fanout_flags *flags);
const char *format_name(fractal_format f);
void print_stats(uint32_t width, uint32_t height, const char *format, const char *content_type,
                 uint64_t size, const fractal_render_stats *st);
void format_size(char *buf, size_t len, uint64_t bytes);

/* ---- the commands: each takes the arguments after its name and arrays with room for argc
 * entries, and returns the exit code ---------------------------------------------------------- */

int cmd_render(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_submit(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_zoom(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_job(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_wait(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_cancel(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_jobs(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_stats(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_devices(int argc, char **argv, parsed_opt *parsed, const char **pos);
int cmd_health(int argc, char **argv, parsed_opt *parsed, const char **pos);

#endif
