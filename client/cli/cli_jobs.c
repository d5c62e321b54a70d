/* cli_jobs.c: the job commands of the `fractal` tool: `job`, `cancel`, `wait` (and fetch the
 * image) and `jobs`. */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* A byte count in its largest binary unit: "512 B", "1.5 MiB". */
void format_size(char *buf, size_t len, uint64_t bytes)
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
int cmd_job(int argc, char **argv, parsed_opt *parsed, const char **pos)
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
int cmd_cancel(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_job *job = NULL;
    conn_opts conn;
    size_t n_parsed, i;
    int rc, err, done, quiet = 0;

    if ((rc = parse_simple(argc, argv, "cancel", cancel_help, quiet_opts, parsed, &n_parsed, pos, 1, 0, NULL, &conn,
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
int cmd_wait(int argc, char **argv, parsed_opt *parsed, const char **pos)
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
int cmd_jobs(int argc, char **argv, parsed_opt *parsed, const char **pos)
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
