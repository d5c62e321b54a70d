/* cli_info.c: the server-information commands of the `fractal` tool: `stats`, `devices` (a table
 * or JSON) and `health`. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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

static const opt_def devices_opts[] = {
    { "json", 0, 0, OPT_JSON },
    { NULL, 0, 0, 0 },
};

/* `fractal stats`: the server's counters. */
int cmd_stats(int argc, char **argv, parsed_opt *parsed, const char **pos)
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
    format_size(size, sizeof size, st->deep_ref_bytes);
    printf("deep refs    %u held, %llu bytes (%s), %llu hits, %llu misses\n", st->deep_refs,
           (unsigned long long)st->deep_ref_bytes, size, (unsigned long long)st->deep_ref_hits,
           (unsigned long long)st->deep_ref_misses);
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
int cmd_devices(int argc, char **argv, parsed_opt *parsed, const char **pos)
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
int cmd_health(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    fractal_client *client = NULL;
    fractal_health_status status = FRACTAL_HEALTH_UNKNOWN;
    conn_opts conn;
    size_t n_parsed, n_pos = 0, i;
    int rc, err, done, quiet = 0;

    if ((rc = parse_simple(argc, argv, "health", health_help, quiet_opts, parsed, &n_parsed, pos, 1, 1, &n_pos,
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
