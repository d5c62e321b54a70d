/* server_proc.h: starts a real fractald on 127.0.0.1 with an ephemeral port for a test, and stops
 * it, also if the test process dies (the child gets SIGTERM when its parent exits). */
#ifndef FRACTALD_TEST_SERVER_PROC_H
#define FRACTALD_TEST_SERVER_PROC_H

#include <sys/types.h>

struct server_proc {
    pid_t pid;
    int port;
    char target[64];        /* "127.0.0.1:PORT" */
    char spool[64];         /* the server's own job spool, a fresh temporary directory */
};

/* Starts `fractald_path --listen 127.0.0.1:0 --log-level warn` plus `extra_args` (NULL-terminated,
 * may be NULL) and waits up to 90 s for its ready line. Returns 0 or -1. */
int server_proc_start(struct server_proc *out, const char *fractald_path, const char *const *extra_args);

/* SIGTERM, then SIGKILL after 15 s; removes the spool after a clean exit. Returns the exit status
 * (0 for a clean exit), or -1. */
int server_proc_stop(struct server_proc *p);

/* Removes the server's temporary spool directory. */
void server_proc_remove_spool(struct server_proc *p);

#endif
