/* fractal_cli.c: the `fractal` command-line tool's entry: common options before the command,
 * dispatch to the commands (cli_render.c, cli_jobs.c, cli_info.c), help and version. It sits on
 * libfractal's public header only, as curl's tool sits on libcurl. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char main_help[] =
    "Usage: fractal [COMMON OPTIONS] COMMAND [OPTIONS]\n"
    "       fractal help [COMMAND]\n"
    "       fractal --help | --version\n"
    "\n"
    "Client of fractald, the escape-time fractal render server.\n"
    "\n"
    "Commands:\n"
    "  render    render an image and write it to a file or stdout\n"
    "  submit    queue a render as a job; prints the job id\n"
    "  zoom      render the numbered frames of a zoom video into a point, at any depth\n"
    "  job       show a job's state, progress, timings and error\n"
    "  wait      wait for a job to finish, then write its image\n"
    "  cancel    cancel a job\n"
    "  jobs      list the server's jobs, newest first\n"
    "  stats     show the server's counters\n"
    "  devices   list the server's compute devices\n"
    "  health    ask whether the server (or one service) is serving\n"
    "  help      show a command's options, as 'fractal COMMAND --help' does\n"
    "\n"
    "Run 'fractal help COMMAND' for a command's options.\n"
    "\n"
    "Common options, before or after the command:\n"
    "  --server HOST:PORT   server address, any gRPC target (default $FRACTAL_SERVER,\n"
    "                       else " DEFAULT_SERVER "); several servers, H1:P,H2:P,... or\n"
    "                       dns:///NAME:PORT, share the calls round-robin, skipping one that\n"
    "                       is down or draining ('fractal render' splits its image over a list)\n"
    "  --deadline MS        give up after MS milliseconds; 0 = no deadline (default 60000)\n"
    "  --tls                connect with TLS, verifying the server against the system's CAs\n"
    "  --ca FILE            connect with TLS, verifying the server against the PEM CAs in FILE\n"
    "  --cert FILE          client certificate (PEM), for servers that require one (mutual TLS)\n"
    "  --key FILE           the private key (PEM) of --cert\n"
    "  --token-file FILE    send the bearer token in FILE (its first line that is not a comment;\n"
    "                       default $FRACTAL_TOKEN) with every call\n"
    "  -h, --help           show this help (after a command: that command's)\n"
    "  -V, --version        print the version and exit\n"
    "\n";

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv, parsed_opt *parsed, const char **pos);
} command;

static int cmd_help(int argc, char **argv, parsed_opt *parsed, const char **pos);

static const command commands[] = {
    { "render", cmd_render },
    { "submit", cmd_submit },
    { "zoom", cmd_zoom },
    { "job", cmd_job },
    { "wait", cmd_wait },
    { "cancel", cmd_cancel },
    { "jobs", cmd_jobs },
    { "stats", cmd_stats },
    { "devices", cmd_devices },
    { "health", cmd_health },
    { "help", cmd_help },
};

static const command *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int print_main_help(void)
{
    fputs(main_help, stdout);
    fputs(exit_codes_help, stdout);
    return EXIT_OK;
}

/* `fractal help [COMMAND]`: the overview, or a command's help, got by running the command with
 * --help so that both spellings print the very same text. Returns the exit code. */
static int cmd_help(int argc, char **argv, parsed_opt *parsed, const char **pos)
{
    static char help_flag[] = "--help";
    char *help_argv[] = { help_flag, NULL };
    const command *cmd;

    /* "fractal help help" runs this with --help, which asks for the overview too. */
    if (argc == 0 || (argc == 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)))
        return print_main_help();
    if (argc > 1)
        return usage_error("unexpected argument '%s'", argv[1]);
    if ((cmd = find_command(argv[0])) == NULL)
        return usage_error("unknown command '%s'", argv[0]);
    return cmd->run(1, help_argv, parsed, pos);
}

/* `fractal --version`: the version of the libfractal that runs, which the tool ships with. A
 * header from another release than the library (fractal.h's advice to compare) gets a note on
 * stderr, so that stdout stays one line. */
static int print_version(void)
{
    printf("fractal %s\n", fractal_version());
    if (strcmp(fractal_version(), FRACTAL_VERSION) != 0)
        fprintf(stderr, "fractal: built with the libfractal %s header, running libfractal %s\n",
                FRACTAL_VERSION, fractal_version());
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* ---- main ------------------------------------------------------------------------------------ */

/* Reads the common options before the command, then runs the command with them put in front of
 * its own arguments: options apply in command-line order, so one given again after the command
 * still wins, as it would with both after it. */
int main(int argc, char **argv)
{
    parsed_opt *parsed = NULL;
    const char **pos = NULL;
    char **cmd_argv = NULL;
    const command *cmd;
    size_t n_lead, i;
    int first, cmd_argc = 0, rc;

    if (argc < 2)
        return usage_error("no command given");
    parsed = calloc((size_t)argc, sizeof *parsed);
    pos = calloc((size_t)argc, sizeof *pos);
    cmd_argv = calloc((size_t)argc, sizeof *cmd_argv);
    if (parsed == NULL || pos == NULL || cmd_argv == NULL) {
        fprintf(stderr, "fractal: out of memory\n");
        rc = EXIT_OTHER;
        goto done;
    }
    if ((rc = parse_leading(argc - 1, argv + 1, parsed, &n_lead, &first)) != 0)
        goto done;
    first++; /* an index into argv, past the program name */
    for (i = 0; i < n_lead; i++) {
        if (parsed[i].id == OPT_HELP) {
            rc = print_main_help();
            goto done;
        }
        if (parsed[i].id == OPT_VERSION) {
            rc = print_version();
            goto done;
        }
    }
    if (first >= argc) {
        rc = usage_error("no command given");
        goto done;
    }
    if ((cmd = find_command(argv[first])) == NULL) {
        rc = usage_error("unknown command '%s'", argv[first]);
        goto done;
    }
    /* Help connects to nothing: the common options before it are dropped. */
    if (cmd->run != cmd_help) {
        for (i = 1; i < (size_t)first; i++)
            cmd_argv[cmd_argc++] = argv[i];
        watch_signals();
    }
    for (i = (size_t)first + 1; i < (size_t)argc; i++)
        cmd_argv[cmd_argc++] = argv[i];
    rc = cmd->run(cmd_argc, cmd_argv, parsed, pos);
done:
    free(cmd_argv);
    free(parsed);
    free(pos);
    return rc;
}
