/* host_threads.c: list the process's threads (/proc/self/task) and lower thread priorities
 * (Linux keeps a nice value per thread, inherited by the threads it starts). */
#include "host_threads.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "err.h"

int host_threads_list(pid_t **out, size_t *count)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    pid_t *list = NULL;
    size_t n = 0, cap = 0;

    *out = NULL;
    *count = 0;
    if (!dir)
        return ERR_UNAVAILABLE;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long tid = strtol(e->d_name, &end, 10);
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end != '\0' || tid <= 0)
            continue;
        if (n == cap) {
            pid_t *grown = realloc(list, (cap = cap ? cap * 2 : 32) * sizeof(*list));
            if (!grown) {
                free(list);
                closedir(dir);
                return ERR_NOMEM;
            }
            list = grown;
        }
        list[n++] = (pid_t)tid;
    }
    closedir(dir);
    *out = list;
    *count = n;
    return 0;
}

size_t host_threads_new_since(const pid_t *before, size_t nbefore, pid_t *after, size_t nafter)
{
    size_t kept = 0;

    for (size_t i = 0; i < nafter; i++) {
        size_t j = 0;
        while (j < nbefore && before[j] != after[i])
            j++;
        if (j == nbefore)
            after[kept++] = after[i];
    }
    return kept;
}

/* Raises one thread's nice value to `nice` unless it is already at least that. */
static int lower_one(pid_t tid, int nice)
{
    int now;

    errno = 0;
    now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno != 0)
        return -1;
    if (now >= nice)
        return 0;
    return setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0 ? 1 : -1;
}

size_t host_threads_lower_priority(const pid_t *tids, size_t count, int nice)
{
    size_t changed = 0;

    for (size_t i = 0; i < count; i++)
        changed += lower_one(tids[i], nice) == 1;
    return changed;
}

int host_thread_lower_own_priority(int nice)
{
    /* PRIO_PROCESS with a thread id: on Linux the nice value belongs to the thread. */
    return lower_one((pid_t)syscall(SYS_gettid), nice) < 0 ? -1 : 0;
}
