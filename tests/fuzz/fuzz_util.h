/* fuzz_util.h: what the libFuzzer targets of tests/fuzz share: a check that stops the run with a
 * message (a failed property is a finding, as a crash is) and an in-memory file to hand readers
 * that take a path. Header-only: each target is one binary. */
#ifndef FRACTALD_FUZZ_UTIL_H
#define FRACTALD_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts (libFuzzer then saves the input as a crash) when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                         \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* An anonymous in-memory file (memfd) that readers open by path, /proc/self/fd/N, each with its
 * own offset. fuzz_file_init makes it once (returns 0, or -1); fuzz_file_set replaces its bytes. */
struct fuzz_file {
    int fd;
    char path[64];
};

static inline int fuzz_file_init(struct fuzz_file *f, const char *name)
{
    if ((f->fd = memfd_create(name, MFD_CLOEXEC)) < 0)
        return -1;
    snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
    return 0;
}

static inline void fuzz_file_set(struct fuzz_file *f, const void *data, size_t size)
{
    const char *p = data;

    if (ftruncate(f->fd, 0) != 0 || lseek(f->fd, 0, SEEK_SET) != 0)
        abort();
    while (size > 0) {
        ssize_t n = write(f->fd, p, size);
        if (n <= 0)
            abort();
        p += n;
        size -= (size_t)n;
    }
}

/* A copy of data with a NUL after it (libFuzzer's inputs are not terminated); caller frees. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s)
        abort();
    for (size_t i = 0; i < size; i++)
        s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#endif
