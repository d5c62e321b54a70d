/* cli_render.c: `fractal render` and `fractal submit`: render options from flags (and --from),
 * whole or streamed renders into a file or stdout, the progress bar and render statistics. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdbool.h>
#include <unistd.h>

/* Images above this many pixels are streamed to disk by `fractal render` (RenderStream) unless
 * --unary is given: 4 Mpixel is 12 MiB of RGB, beyond which holding the whole reply in memory and
 * waiting for its last byte starts to hurt. */
#define STREAM_PIXELS ((uint64_t)4 << 20)

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
    "  --center RE,IM         centre of the view (default 0,0); deep zooms: decimals of any\n"
    "                         length, sent exactly (View.center_re_text, center_im_text)\n"
    "  --view-width W         span of the real axis across the image (default 2*W/H);\n"
    "                         any decimal, 1e-400 too (View.width_text)\n"
    "  --size WxH             image size in pixels (default 600x400)\n"
    "  --max-iter N           iteration limit (default 256)\n"
    "  --escape-radius R      escape radius (default 2)\n"
    "  --precision P          auto | fp32 | fp64 | perturb | perturb-extended (default auto:\n"
    "                         the cheapest that resolves the view)\n"
    "  --region X,Y,W,H       render only this rectangle of the full image\n"
    "  --no-region            render the whole image (undoes a region from --from)\n"
    "  --device ID            \"\" any, cpu, gpu, opencl, or an id from 'fractal devices'\n"
    "  --rect-fill            let the server fill boxes whose border is all interior (may be\n"
    "                         wrong on rare pixels; off by default); --no-rect-fill undoes it\n"
    "\n"
    "Colour:\n"
    "  --palette NAME         built-in palette (default inferno); drops custom stops\n"
    "  --stops LIST           custom palette, e.g. \"0:#000000,0.5:#ff8800,1:#ffffff\"\n"
    "                         (up to 256 stops; \"\" drops them)\n"
    "  --cycle N              iterations per palette cycle; 0 = one log-scaled pass (default 0;\n"
    "                         for views narrower than 1e-10, 4*sqrt(max-iter))\n"
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
    "  --deadline MS          give up after MS milliseconds; 0 = none (default 60000); with\n"
    "                         several servers, the limit of each band\n"
    "\n"
    "Several servers (--server H1:P,H2:P,...): the image is cut into bands of rows, each\n"
    "rendered by whichever server is free (two bands in flight per server), a band whose\n"
    "server fails or times out is sent to another, and the bands are written in order:\n"
    "the same bytes (raw) or pixels and request text (PNG) as one server's render.\n"
    "Not for deep views or --rect-fill (refused).\n"
    "  --band-rows N          rows per band (default: about 2 MiB of pixels, and at least 4\n"
    "                         bands per connection)\n"
    "  --per-server N         bands in flight per server, 1..16 (default 2)\n"
    "  --no-fanout            one render call instead, balanced round-robin over the servers\n"
    "                         (as --stream and --unary do)\n"
    "\n";

static const char submit_help[] =
    "Usage: fractal submit [RENDER OPTIONS] [--server HOST:PORT] [--deadline MS]\n"
    "\n"
    "Queues a render on the server (SubmitJob) and prints the new job's id on stdout.\n"
    "Takes the 'What' and 'Colour' options of 'fractal render', --format and --from.\n"
    "Follow it with 'fractal wait ID -o FILE'. Never retried automatically.\n"
    "\n";

/* Render's own: where and how the image goes. */
static const opt_def render_opts[] = {
    { "output", 'o', 1, OPT_OUTPUT },
    { "stats", 0, 0, OPT_STATS },
    { "quiet", 'q', 0, OPT_QUIET },
    { "stream", 0, 0, OPT_STREAM },
    { "unary", 0, 0, OPT_UNARY },
    { "no-fanout", 0, 0, OPT_NO_FANOUT },
    { "band-rows", 0, 1, OPT_BAND_ROWS },
    { "per-server", 0, 1, OPT_PER_SERVER },
    { NULL, 0, 0, 0 },
};

static const char *precision_name(fractal_precision p)
{
    switch (p) {
    case FRACTAL_PRECISION_AUTO: return "auto";
    case FRACTAL_PRECISION_FP32: return "fp32";
    case FRACTAL_PRECISION_FP64: return "fp64";
    case FRACTAL_PRECISION_PERTURB: return "perturb";
    case FRACTAL_PRECISION_PERTURB_EXTENDED: return "perturb-extended";
    }
    return "?";
}

const char *format_name(fractal_format f)
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
void print_stats(uint32_t width, uint32_t height, const char *format, const char *content_type,
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
    case OPT_CENTER: {
        /* Deep centres have thousands of digits: split in place, no fixed buffer. */
        const char *comma = strchr(v, ',');
        char *re = NULL;
        int bad = 1;
        if (comma && !strchr(comma + 1, ',') && (re = malloc((size_t)(comma - v) + 1))) {
            memcpy(re, v, (size_t)(comma - v));
            re[comma - v] = '\0';
            bad = parse_view_number(re, &opts->center.re, opts->center_re_text, sizeof opts->center_re_text) < 0 ||
                  parse_view_number(comma + 1, &opts->center.im, opts->center_im_text,
                                    sizeof opts->center_im_text) < 0;
        }
        free(re);
        if (bad)
            return usage_error("--center: '%.80s%s' is not RE,IM (numbers, up to %d characters each)", v,
                               strlen(v) > 80 ? "..." : "", FRACTAL_DECIMAL_MAX - 1);
        return 0;
    }
    case OPT_VIEW_WIDTH:
        if (parse_view_number(v, &opts->view_width, opts->view_width_text, sizeof opts->view_width_text) < 0)
            return usage_error("--view-width: '%.80s%s' is not a number", v, strlen(v) > 80 ? "..." : "");
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
        else if (strcmp(v, "perturb") == 0)
            opts->precision = FRACTAL_PRECISION_PERTURB;
        else if (strcmp(v, "perturb-extended") == 0)
            opts->precision = FRACTAL_PRECISION_PERTURB_EXTENDED;
        else
            return usage_error("--precision: '%s' is not auto, fp32, fp64, perturb or perturb-extended", v);
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
    case OPT_RECT_FILL:
        opts->rect_fill = 1;
        return 0;
    case OPT_NO_RECT_FILL:
        opts->rect_fill = 0;
        return 0;
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

#define BAR_WIDTH 30

/* A fractal_progress_cb: redraws the progress_bar that `payload` points to. Returns 0. */
int draw_progress(const fractal_progress *p, void *payload)
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

void end_progress(progress_bar *bar)
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
int stream_out(fractal_stream_result **out, fractal_client *client, const fractal_render_options *opts,
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
           id == OPT_FROM || id == OPT_HELP || id == OPT_NO_FANOUT || id == OPT_BAND_ROWS || id == OPT_PER_SERVER;
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

/* The start render and submit share: parses the command line (the command's own options and the
 * spec's), answers --help, refuses positional arguments, and loads the spec into a heap-allocated
 * options struct (some 6 KiB with its 256 stops: kept off the stack). Returns true with *opts set
 * (the caller frees it) to go on; false with the exit code in *rc (help printed: EXIT_OK) and
 * nothing to free. */
static bool begin_spec_command(int *rc, fractal_render_options **opts, conn_opts *conn, int argc, char **argv,
                               const opt_def *own, const char *help, parsed_opt *parsed, size_t *n_parsed,
                               const char **pos)
{
    size_t n_pos;

    *opts = NULL;
    if ((*rc = parse_args(argc, argv, own, spec_opts, parsed, n_parsed, pos, &n_pos)) != 0)
        return false;
    if (has_help(parsed, *n_parsed)) {
        fputs(help, stdout);
        fputs(exit_codes_help, stdout);
        *rc = EXIT_OK;
        return false;
    }
    if (n_pos > 0) {
        *rc = usage_error("unexpected argument '%s'", pos[0]);
        return false;
    }
    if ((*opts = malloc(sizeof **opts)) == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        *rc = EXIT_OTHER;
        return false;
    }
    if ((*rc = load_spec(*opts, conn, parsed, *n_parsed)) != 0) {
        free(*opts);
        *opts = NULL;
        return false;
    }
    return true;
}

/* `fractal render`: builds the options, renders (streamed or whole, see render_help), and writes
 * the image to a file (atomically) or stdout. Returns the exit code. */
int cmd_render(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    enum { MODE_AUTO, MODE_STREAM, MODE_UNARY } mode = MODE_AUTO;
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    fractal_image *image = NULL;
    fractal_stream_result *result = NULL;
    progress_bar bar = { 0, 0 };
    conn_opts conn;
    fanout_flags fan = { 0, 0, 0, 0 };
    const char *output = NULL;
    char err_buf[512];
    size_t n_parsed, i;
    uint64_t pixels;
    int rc, err, quiet = 0, stats = 0, use_stream, show_bar, fanout = 1;

    command_name = "render";
    conn_defaults(&conn);
    if (!begin_spec_command(&rc, &opts, &conn, argc, argv, render_opts, render_help, parsed, &n_parsed, pos))
        return rc;
    for (i = 0; i < n_parsed; i++) {
        switch (parsed[i].id) {
        case OPT_OUTPUT: output = parsed[i].value; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_STATS: stats = 1; break;
        case OPT_STREAM: mode = MODE_STREAM; break;
        case OPT_UNARY: mode = MODE_UNARY; break;
        case OPT_NO_FANOUT: fanout = 0; break;
        case OPT_BAND_ROWS:
            if (parse_u32(parsed[i].value, &fan.band_rows) < 0 || fan.band_rows == 0) {
                rc = usage_error("--band-rows: '%s' is not a whole number >= 1", parsed[i].value);
                goto done;
            }
            break;
        case OPT_PER_SERVER:
            if (parse_u32(parsed[i].value, &fan.per_server) < 0 || fan.per_server < 1 || fan.per_server > 16) {
                rc = usage_error("--per-server: '%s' is not a whole number 1..16", parsed[i].value);
                goto done;
            }
            break;
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
    /* A list of servers splits the image over them, unless one call is asked for. */
    if (fanout && server_is_list(conn.server) && mode == MODE_AUTO) {
        fan.quiet = quiet;
        fan.stats = stats;
        rc = render_fanout(opts, &conn, output, &fan);
        goto done;
    }

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
int cmd_submit(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    conn_opts conn;
    size_t n_parsed;
    int rc, err;

    command_name = "submit";
    conn_defaults(&conn);
    if (!begin_spec_command(&rc, &opts, &conn, argc, argv, no_opts, submit_help, parsed, &n_parsed, pos))
        return rc;
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

/* ---- zoom ------------------------------------------------------------------------------------ */

static const char zoom_help[] =
    "Usage: fractal zoom [RENDER OPTIONS] [--start-width W] [--frames-per-halving N] [-o DIR]\n"
    "\n"
    "Renders the frames of a zoom video into DIR/frame-00000.png, frame-00001.png, ...:\n"
    "every frame centred on --center (decimals of any length, sent exactly), frame k\n"
    "W / 2^(k/N) wide, down to --view-width (any decimal, 1e-400 too), which the last\n"
    "frame has exactly. Takes the 'What' and 'Colour' options of 'fractal render' and\n"
    "--from; precision auto climbs fp32 -> fp64 -> perturbation on the way down. Frames\n"
    "already in DIR are not rendered again, so an interrupted zoom resumes where it\n"
    "stopped; each frame is written atomically (a partial frame never appears).\n"
    "\n"
    "Zoom:\n"
    "  --start-width W        width of the first frame (default 4)\n"
    "  --frames-per-halving N frames for each halving of the width, 1..10000 (default 30)\n"
    "  -o, --output DIR       where the frames go, an existing directory (default .)\n"
    "  -q, --quiet            print nothing but errors\n"
    "\n";

static const opt_def zoom_opts[] = {
    { "start-width", 0, 1, OPT_START_WIDTH },
    { "frames-per-halving", 0, 1, OPT_FRAMES_PER_HALVING },
    { "output", 'o', 1, OPT_OUTPUT },
    { "quiet", 'q', 0, OPT_QUIET },
    { NULL, 0, 0, 0 },
};

/* 10^log10_width as decimal text with 15 significant digits ("1.23456789012346e-40"): far below
 * double's range too, and the same text for the same frame on every run. Fifteen, because the
 * logarithm's own rounding (about 1e-16 relative) would show in a sixteenth ("4.999...e-13"). */
static void width_text(char *out, size_t cap, double log10_width)
{
    double e = floor(log10_width), m = pow(10.0, log10_width - e);

    if (m >= 10.0 - 5e-14) {
        m /= 10.0;
        e += 1.0;
    }
    snprintf(out, cap, "%.14fe%.0f", m, e);
}

/* `fractal zoom`: the frames from --start-width down to --view-width at --center, skipping the
 * ones already on disk. Returns the exit code. */
int cmd_zoom(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_render_options *opts = NULL;
    fractal_client *client = NULL;
    conn_opts conn;
    const char *dir = ".", *start = "4";
    char end_text[FRACTAL_DECIMAL_MAX], path[4096];
    double log_start, log_end, step;
    uint32_t per_halving = 30, frames, k;
    size_t n_parsed, i;
    int rc, err, quiet = 0, rendered = 0, skipped = 0;

    command_name = "zoom";
    conn_defaults(&conn);
    if (!begin_spec_command(&rc, &opts, &conn, argc, argv, zoom_opts, zoom_help, parsed, &n_parsed, pos))
        return rc;
    for (i = 0; i < n_parsed; i++) {
        const char *v = parsed[i].value;
        switch (parsed[i].id) {
        case OPT_OUTPUT: dir = v; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_START_WIDTH: start = v; break;
        case OPT_FRAMES_PER_HALVING:
            if (parse_u32(v, &per_halving) < 0 || per_halving < 1 || per_halving > 10000) {
                rc = usage_error("--frames-per-halving: '%s' is not a whole number 1..10000", v);
                goto done;
            }
            break;
        default: break;
        }
    }
    if (opts->format != FRACTAL_FORMAT_PNG && opts->format != FRACTAL_FORMAT_PNG16) {
        rc = usage_error("--format: zoom frames are PNG files (png or png16), got %s", format_name(opts->format));
        goto done;
    }
    if (opts->view_width_text[0])
        snprintf(end_text, sizeof end_text, "%s", opts->view_width_text);
    else if (opts->view_width != 0.0)
        snprintf(end_text, sizeof end_text, "%.17g", opts->view_width);
    else {
        rc = usage_error("zoom needs --view-width: the width of the deepest frame");
        goto done;
    }
    if (decimal_log10(start, &log_start) < 0) {
        rc = usage_error("--start-width: '%.80s' is not a number > 0", start);
        goto done;
    }
    if (decimal_log10(end_text, &log_end) < 0) {
        rc = usage_error("--view-width: '%.80s' is not a number > 0", end_text);
        goto done;
    }
    if (!(log_end < log_start)) {
        rc = usage_error("--view-width (%.40s) must be narrower than --start-width (%.40s)", end_text, start);
        goto done;
    }
    /* Frame k is start / 2^(k / N) wide, and the last one is exactly the end width. */
    step = log10(2.0) / per_halving;
    if ((log_start - log_end) / step > 10000000.0) {
        rc = usage_error("the zoom would take more than 10000000 frames");
        goto done;
    }
    frames = (uint32_t)ceil((log_start - log_end) / step - 1e-9) + 1;
    if ((rc = connect_client(&client, &conn)) != 0)
        goto done;
    for (k = 0; k < frames && !atomic_load(&interrupted); k++) {
        snprintf(path, sizeof path, "%s/frame-%05u.png", dir, k);
        if (access(path, F_OK) == 0) {
            skipped++;
            continue;
        }
        if (k + 1 == frames)
            snprintf(opts->view_width_text, sizeof opts->view_width_text, "%s", end_text);
        else
            width_text(opts->view_width_text, sizeof opts->view_width_text, log_start - k * step);
        /* The text is what counts; the double only where it holds the width (it underflows deep). */
        opts->view_width = strtod(opts->view_width_text, NULL);
        if (!(opts->view_width > 0.0))
            opts->view_width = 0.0;
        if ((err = fractal_render_stream_to_file(NULL, client, opts, path, NULL, NULL)) < 0) {
            rc = call_failed(client, err);
            goto done;
        }
        rendered++;
        if (!quiet)
            fprintf(stderr, "wrote %s (width %s, %u of %u)\n", path, opts->view_width_text, k + 1, frames);
    }
    if (!quiet)
        fprintf(stderr, "zoom: %u frames in %s, %d rendered, %d already there\n", frames, dir, rendered, skipped);
    rc = atomic_load(&interrupted) ? 128 + atomic_load(&interrupted) : EXIT_OK;
done:
    close_client(client);
    free(opts);
    return rc;
}
