/* host_threads.h: the process's own threads as the kernel lists them, so that fractald can find
 * the threads an OpenCL runtime starts for a CPU device and run them at a lower priority. */
#ifndef FRACTALD_HOST_THREADS_H
#define FRACTALD_HOST_THREADS_H

#include <stddef.h>
#include <sys/types.h>

/* The ids of the process's threads at this moment, in *out (free() it), *count of them. Returns 0,
 * or ERR_NOMEM / ERR_UNAVAILABLE when the list cannot be read (no /proc): callers then go without. */
int host_threads_list(pid_t **out, size_t *count);

/* Keeps in after[] only the ids not in before[] (threads started in between) and returns how many
 * are left. Orders nothing; n is small. */
size_t host_threads_new_since(const pid_t *before, size_t nbefore, pid_t *after, size_t nafter);

/* Raises the nice value of each listed thread of this process to `nice` (0..19) where it is lower:
 * such threads then get only the cycles that threads of normal priority leave. A thread that has
 * exited meanwhile is skipped. Returns how many threads were changed. Lowering a priority needs no
 * privilege; nothing here ever raises one. */
size_t host_threads_lower_priority(const pid_t *tids, size_t count, int nice);

/* The same for the calling thread; threads it starts from now on inherit the value. Returns 0, or
 * -1 if the kernel refused. */
int host_thread_lower_own_priority(int nice);

#endif
