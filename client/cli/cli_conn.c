/* cli_conn.c: what every command of the `fractal` tool does around its call: connection options,
 * connecting, Ctrl-C, and turning a failed call into one line on stderr and an exit code. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char exit_codes_help[] =
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
    "  8  the server refused the credentials (UNAUTHENTICATED, PERMISSION_DENIED)\n"
    "  128+N  interrupted by signal N (130 for Ctrl-C); a file being written is not created\n"
    "wait: a job that failed exits with the class of its error (3, 4, 1, ...).\n";

int is_conn_opt(enum opt_id id)
{
    return id == OPT_SERVER || id == OPT_DEADLINE || id == OPT_TLS || id == OPT_CA || id == OPT_CERT ||
           id == OPT_KEY || id == OPT_TOKEN_FILE;
}

/* Applies a connection option (--server, --deadline, --tls, --ca, --cert, --key, --token-file).
 * Returns 0 or EXIT_USAGE (message printed). */
int apply_conn_opt(conn_opts *c, const parsed_opt *o)
{
    if (o->value && o->value[0] == '\0')
        return usage_error("--%s: empty value", o->name);
    switch (o->id) {
    case OPT_SERVER: c->server = o->value; break;
    case OPT_DEADLINE:
        if (parse_u32(o->value, &c->deadline_ms) < 0)
            return usage_error("--deadline: '%s' is not a number of milliseconds", o->value);
        break;
    case OPT_TLS: c->tls = 1; break;
    case OPT_CA: c->ca = o->value; c->tls = 1; break;
    case OPT_CERT: c->cert = o->value; break;
    case OPT_KEY: c->key = o->value; break;
    case OPT_TOKEN_FILE: c->token_file = o->value; break;
    default: break;
    }
    return 0;
}

void conn_defaults(conn_opts *c)
{
    const char *env = getenv("FRACTAL_SERVER");
    fractal_client_options defaults = FRACTAL_CLIENT_OPTIONS_INIT;

    memset(c, 0, sizeof *c);
    c->server = env && env[0] ? env : DEFAULT_SERVER;
    c->deadline_ms = defaults.deadline_ms;
}

/* The token of a --token-file: its first line that is neither blank nor a '#' comment, without
 * surrounding blanks and without a "NAME:" in front (the server's file format, so one file can
 * serve both). Returns 0 with the token in buf, or EXIT_USAGE / EXIT_OTHER (message printed). */
static int read_token_file(char *buf, size_t cap, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;

    if (f == NULL) {
        fprintf(stderr, "fractal: --token-file %s: cannot read: %s\n", path, strerror(errno));
        return EXIT_OTHER;
    }
    while (!found && fgets(line, sizeof line, f) != NULL) {
        char *p = line, *end, *colon;

        while (*p && isspace((unsigned char)*p))
            p++;
        end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        if ((colon = strchr(p, ':')) != NULL)
            p = colon + 1;
        snprintf(buf, cap, "%s", p);
        found = 1;
    }
    memset(line, 0, sizeof line);
    fclose(f);
    if (!found) {
        fprintf(stderr, "fractal: --token-file %s: no token in it\n", path);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- Ctrl-C: cancel the call in flight, so that files being written are cleaned up ---------- */

/* SIGINT and SIGTERM are blocked in every thread (gRPC's included, which inherit the mask) and
 * taken by one watcher thread with sigwait, which may then use mutexes and the library: it cancels
 * the client's call in flight, and the command unwinds as from any failed call, removing its
 * temporary file. With no client open, or on a second signal, it exits at once. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static fractal_client *live_client;
static int armed; /* a command without one client (fan-out) polls `interrupted` itself */
atomic_int interrupted; /* the signal number, once one came */

static void *signal_watcher(void *arg)
{
    sigset_t *set = arg;
    int sig;

    for (;;) {
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&live_lock);
        if (atomic_exchange(&interrupted, sig) != 0 || (live_client == NULL && !armed))
            _exit(128 + sig);
        if (live_client)
            fractal_client_cancel(live_client);
        pthread_mutex_unlock(&live_lock);
    }
    return NULL;
}

/* Starts the watcher; without it (thread creation failed) signals keep their default action. */
void watch_signals(void)
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

/* The server of the command's connection, for messages (a command opens one). */
static const char *server_target = "";

/* Whether --server names several servers (a comma-separated list, or a gRPC address list). */
int server_is_list(const char *server)
{
    return strchr(server, ',') != NULL;
}

/* Fills the client options from the connection flags; `token` (token_cap bytes) holds a
 * --token-file's token, which *out points to: the caller wipes it after use. Returns 0 or an exit
 * code (message printed). */
int client_options(fractal_client_options *out, char *token, size_t token_cap, const conn_opts *c)
{
    const char *env_token = getenv("FRACTAL_TOKEN");
    int rc;

    fractal_client_options_init(out, FRACTAL_CLIENT_OPTIONS_VERSION);
    token[0] = '\0';
    if (!c->cert != !c->key)
        return usage_error("--cert and --key go together");
    if (c->cert && !c->tls)
        return usage_error("--cert needs TLS: give --ca FILE or --tls too");
    if (c->token_file && (rc = read_token_file(token, token_cap, c->token_file)) != 0)
        return rc;
    out->deadline_ms = c->deadline_ms;
    out->tls = c->tls;
    out->ca_file = c->ca;
    out->cert_file = c->cert;
    out->key_file = c->key;
    out->token = token[0] ? token : env_token && env_token[0] ? env_token : NULL;
    return 0;
}

int connect_client(fractal_client **out, const conn_opts *c)
{
    fractal_client_options copts;
    char token[1024];
    int err, rc;

    *out = NULL;
    if ((rc = client_options(&copts, token, sizeof token, c)) != 0)
        return rc;
    err = fractal_client_new(out, c->server, &copts);
    memset(token, 0, sizeof token);
    if (err == FRACTAL_EIO) {
        fprintf(stderr, "fractal: cannot read a PEM certificate or key from%s%s%s%s%s%s\n", c->ca ? " --ca " : "",
                c->ca ? c->ca : "", c->cert ? " --cert " : "", c->cert ? c->cert : "", c->key ? " --key " : "",
                c->key ? c->key : "");
        return EXIT_OTHER;
    }
    if (err == FRACTAL_EINVAL && copts.token) {
        fprintf(stderr, "fractal: the token (%s) must be 1..512 characters of A-Z a-z 0-9 - . _ ~ + / "
                "(then '=')\n", c->token_file ? "--token-file" : "FRACTAL_TOKEN");
        return EXIT_USAGE;
    }
    if (err == FRACTAL_EINVAL && server_is_list(c->server)) {
        fprintf(stderr, "fractal: --server %s: not a list of HOST:PORT ([ADDRESS]:PORT for IPv6)\n", c->server);
        return EXIT_USAGE;
    }
    if (err < 0) {
        fprintf(stderr, "fractal: %s: %s\n", c->server, fractal_strerror(err));
        return err == FRACTAL_EUNAVAILABLE ? EXIT_UNAVAILABLE : EXIT_OTHER;
    }
    server_target = c->server;
    pthread_mutex_lock(&live_lock);
    live_client = *out;
    pthread_mutex_unlock(&live_lock);
    return 0;
}

/* While armed, a first signal only sets `interrupted`, which the command polls, to stop and
 * clean up; the second still exits at once. */
void arm_interrupt(int on)
{
    pthread_mutex_lock(&live_lock);
    armed = on;
    pthread_mutex_unlock(&live_lock);
}

void close_client(fractal_client *client)
{
    pthread_mutex_lock(&live_lock);
    if (live_client == client)
        live_client = NULL;
    pthread_mutex_unlock(&live_lock);
    fractal_client_free(client);
}

int exit_code_for(int err)
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
    case FRACTAL_EUNAUTHENTICATED:
    case FRACTAL_EPERMISSION_DENIED:
        return EXIT_AUTH;
    default:
        return EXIT_OTHER;
    }
}

/* How gRPC's messages for a server it never reached begin (grpc core 1.5x), the library's being
 * those as they come. fractald itself answers UNAVAILABLE too ("server is shutting down"): that
 * server was reached, and its message is shown as it is. */
static const char *const unreachable_prefixes[] = {
    "failed to connect to all addresses",
    "connections to all backends failing",
    "DNS resolution failed",
    "empty address list",
};

static int is_unreachable(int err, const char *msg)
{
    size_t i;

    if (err != FRACTAL_EUNAVAILABLE)
        return 0;
    for (i = 0; i < sizeof unreachable_prefixes / sizeof unreachable_prefixes[0]; i++)
        if (strncmp(msg, unreachable_prefixes[i], strlen(unreachable_prefixes[i])) == 0)
            return 1;
    return 0;
}

/* Prints "fractal: cannot reach fractald at SERVER: REASON", REASON being the last clause of
 * gRPC's message without the library's retry count ("failed to connect to all addresses; last
 * error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused (after 4
 * attempts)" gives "connection refused"). */
static void report_unreachable(const char *msg)
{
    const char *reason = msg, *p, *end;

    for (p = msg; (p = strstr(p, ": ")) != NULL; p += 2)
        reason = p + 2;
    end = reason + strlen(reason);
    if ((p = strstr(reason, " (after ")) != NULL)
        end = p;
    if (end == reason) {
        reason = fractal_strerror(FRACTAL_EUNAVAILABLE);
        end = reason + strlen(reason);
    }
    /* gRPC capitalises the reason as a sentence; in the middle of this line it is not one. An
     * acronym ("DNS") keeps its capitals. */
    fprintf(stderr, "fractal: cannot reach fractald at %s: %c%.*s\n", server_target,
            islower((unsigned char)reason[1]) ? tolower((unsigned char)reason[0]) : reason[0],
            (int)(end - reason - 1), reason + 1);
}

/* Prints the client's message for a failed call and returns the exit code of its class. A server
 * that could not be reached is named; an invalid request names the flag of the field the server
 * refused (field_to_flag). */
int call_failed(const fractal_client *client, int err)
{
    const char *msg = fractal_client_last_error(client);
    char named[1024];
    int sig = atomic_load(&interrupted);

    if (sig != 0) {
        fprintf(stderr, "fractal: interrupted\n");
        return 128 + sig;
    }
    if (is_unreachable(err, msg)) {
        report_unreachable(msg);
        return exit_code_for(err);
    }
    if (err == FRACTAL_EINVALID_ARGUMENT) {
        field_to_flag(named, sizeof named, msg);
        msg = named;
    }
    fprintf(stderr, "fractal: %s\n", msg[0] ? msg : fractal_strerror(err));
    return exit_code_for(err);
}

static const char *const grpc_status_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *grpc_status_name(int status)
{
    if (status >= 0 && (size_t)status < sizeof grpc_status_names / sizeof grpc_status_names[0])
        return grpc_status_names[status];
    return "?";
}

/* Parses the options of a command that takes connection options, the flags of `table` (handed
 * back through *parsed) and `want_pos` positional arguments: exactly that many (a job id, which
 * may not be empty), or at most that many when `pos_optional` (their count in *n_pos_out, if not
 * NULL). Prints help when asked (*done set). Returns 0 or an exit code. */
int parse_simple(int argc, char **argv, const char *name, const char *help, const opt_def *table,
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
