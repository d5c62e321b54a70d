/* cli_fanout.c: `fractal render` over a list of servers: the image split into bands over all of
 * them (fractal_render_fanout), written to a file or stdout, with the progress bar, Ctrl-C and a
 * per-server account under --stats. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* What the callbacks share: the bar (NULL: none) and a failed write to stdout. */
typedef struct fanout_sink {
    progress_bar *bar;
    int write_errno;
} fanout_sink;

/* Progress of the fan-out: draws the bar, and stops the render once a signal came (the signal
 * watcher only records it while armed, so that the temporary file is removed). */
static int fanout_progress(const fractal_progress *p, void *payload)
{
    fanout_sink *s = payload;

    if (atomic_load(&interrupted))
        return 1;
    return s->bar ? draw_progress(p, s->bar) : 0;
}

static int fanout_stdout(const fractal_chunk *chunk, void *payload)
{
    fanout_sink *s = payload;

    if (fwrite(chunk->data, 1, chunk->size, stdout) != chunk->size) {
        s->write_errno = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

static void print_fanout_stats(const fractal_fanout_result *r, fractal_format format)
{
    size_t i;

    fprintf(stderr, "image       %ux%u %s (%s), %llu bytes\n", r->width, r->height, format_name(format),
            r->content_type, (unsigned long long)r->size);
    fprintf(stderr, "iterations  %llu\n", (unsigned long long)r->iterations);
    fprintf(stderr, "samples     %llu\n", (unsigned long long)r->samples);
    fprintf(stderr, "bands       %u, %u sent again\n", r->bands, r->resent);
    fprintf(stderr, "compute     %.3f ms (sum over the bands)\n", r->compute_ms);
    for (i = 0; i < r->n_servers; i++)
        fprintf(stderr, "server      %s: %u bands, %u failed%s\n", r->servers[i].address, r->servers[i].bands,
                r->servers[i].failures, r->servers[i].dropped ? ", dropped" : "");
}

/* Renders opts over the servers of conn->server into output ("-" for stdout). Returns the exit
 * code, with the failure on stderr. */
int render_fanout(const fractal_render_options *opts, const conn_opts *conn, const char *output,
                  const fanout_flags *flags)
{
    fractal_client_options copts;
    fractal_fanout_options fopts = FRACTAL_FANOUT_OPTIONS_INIT;
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_fanout_result *result = NULL;
    progress_bar bar = { 0, 0 };
    fanout_sink sink = { NULL, 0 };
    char token[1024], err_buf[512] = "";
    int rc, err, sig;

    if ((rc = client_options(&copts, token, sizeof token, conn)) != 0)
        return rc;
    if (flags->band_rows)
        fopts.band_rows = flags->band_rows;
    if (flags->per_server)
        fopts.per_server = flags->per_server;
    if (!flags->quiet && isatty(STDERR_FILENO))
        sink.bar = &bar;
    arm_interrupt(1);
    if (strcmp(output, "-") == 0) {
        cbs.write = fanout_stdout;
        cbs.progress = fanout_progress;
        cbs.payload = &sink;
        err = fractal_render_fanout(&result, conn->server, &copts, opts, &fopts, &cbs, err_buf, sizeof err_buf);
        if (err == 0 && fflush(stdout) != 0)
            sink.write_errno = errno ? errno : EIO;
    } else {
        err = fractal_render_fanout_to_file(&result, conn->server, &copts, opts, &fopts, output, fanout_progress,
                                            &sink, err_buf, sizeof err_buf);
    }
    arm_interrupt(0);
    memset(token, 0, sizeof token);
    end_progress(&bar);
    if ((sig = atomic_load(&interrupted)) != 0) {
        fprintf(stderr, "fractal: interrupted\n");
        rc = 128 + sig;
    } else if (sink.write_errno) {
        fprintf(stderr, "fractal: writing to stdout: %s\n", strerror(sink.write_errno));
        rc = EXIT_OTHER;
    } else if (err < 0) {
        fprintf(stderr, "fractal: %s\n", err_buf[0] ? err_buf : fractal_strerror(err));
        /* Refusals that are the command line's own (a deep view, a malformed list) are usage. */
        rc = err == FRACTAL_EINVAL ? EXIT_USAGE : exit_code_for(err);
    } else {
        if (!flags->quiet && strcmp(output, "-") != 0)
            fprintf(stderr, "wrote %s (%ux%u, %llu bytes, %u bands over %zu servers)\n", output, result->width,
                    result->height, (unsigned long long)result->size, result->bands, result->n_servers);
        if (flags->stats)
            print_fanout_stats(result, opts->format);
        rc = EXIT_OK;
    }
    fractal_fanout_result_free(result);
    return rc;
}
