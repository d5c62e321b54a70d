/* server_proc.c: fractald child processes for integration tests. */
#include "server_proc.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int server_proc_start(struct server_proc *out, const char *fractald_path, const char *const *extra_args)
{
    const char *argv[32] = {fractald_path, "--listen", "127.0.0.1:0", "--log-level", "warn", "--spool-dir", NULL};
    int argc = 7, fds[2];
    char line[256];
    size_t len = 0;
    pid_t pid;

    memset(out, 0, sizeof(*out));
    snprintf(out->spool, sizeof(out->spool), "/tmp/fractald-test-spool-XXXXXX");
    if (!mkdtemp(out->spool))
        return -1;
    argv[6] = out->spool;
    for (; extra_args && *extra_args && argc < 31; extra_args++)
        argv[argc++] = *extra_args;
    argv[argc] = NULL;
    if (pipe(fds) != 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Dies with the test runner, whatever happens to it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(fractald_path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    out->pid = pid;
    /* Read the ready line: "fractald listening on 127.0.0.1:PORT". */
    while (len < sizeof(line) - 1) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        ssize_t n;
        /* A cold start compiles the OpenCL kernels first: seconds, more under sanitizers. */
        if (poll(&pfd, 1, 90000) <= 0)
            break;
        n = read(fds[0], line + len, 1);
        if (n <= 0 || line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]);
    if (sscanf(line, "fractald listening on 127.0.0.1:%d", &out->port) != 1) {
        fprintf(stderr, "server_proc: fractald did not start (read '%s')\n", line);
        server_proc_stop(out);
        return -1;
    }
    snprintf(out->target, sizeof(out->target), "127.0.0.1:%d", out->port);
    return 0;
}

int server_proc_stop(struct server_proc *p)
{
    int status = 0;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 1500; i++) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            server_proc_remove_spool(p);
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &status, 0);
    p->pid = 0;
    return -1;
}

void server_proc_remove_spool(struct server_proc *p)
{
    char cmd[300];

    /* The spool is ours, under /tmp, named by mkdtemp: safe to remove recursively. */
    if (strncmp(p->spool, "/tmp/fractald-test-spool-", 25) == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->spool);
        if (system(cmd) != 0)
            fprintf(stderr, "server_proc: could not remove %s\n", p->spool);
    }
}
