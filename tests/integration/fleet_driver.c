/* fleet_driver.c: tile traffic from libfractal through one balanced target, for test_fleet.py and
 * bench_fleet.py: COUNT unary Render calls of small tiles over THREADS threads, each with its own
 * fractal_client (so its own channel, balanced round-robin over the target's servers).
 * Usage: fleet_driver TARGET COUNT THREADS [SIZE [MAX_ITER]]
 * Prints one line: "fleet_driver ok=N failed=N seconds=S calls_per_s=R first_error=..." and exits
 * 0 when every call succeeded, 1 otherwise. Every call is a view of its own (a mix of zoom levels
 * and places), so no server answers from its image cache. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fractal/fractal.h"

static const char *target;
static unsigned count, size = 256, max_iter = 200;
static atomic_uint next_call, ok, failed;
static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[512];

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One thread: its own handle, calls taken from the shared counter until COUNT are made. */
static void *run(void *arg)
{
    fractal_render_options *opts = malloc(sizeof *opts);
    fractal_client *client = NULL;
    fractal_image *img = NULL;
    unsigned i;
    int err;

    (void)arg;
    if (opts == NULL || (err = fractal_client_new(&client, target, NULL)) < 0) {
        atomic_fetch_add(&failed, 1);
        free(opts);
        return NULL;
    }
    fractal_render_options_init(opts, FRACTAL_RENDER_OPTIONS_VERSION);
    while ((i = atomic_fetch_add(&next_call, 1)) < count) {
        /* Zoom 0..3 over the default Julia set, the tile of that zoom picked by i, nudged by i so
         * that no two calls ask for the same view. */
        unsigned zoom = i % 4, n = 1u << zoom, tx = (i / 4) % n, ty = (i / 16) % n;
        double w = 3.0 / n;

        opts->width = opts->height = size;
        opts->max_iter = max_iter;
        opts->view_width = w;
        opts->center.re = -1.5 + w * (tx + 0.5) + (double)i * 1e-9;
        opts->center.im = -1.5 + w * (ty + 0.5);
        if ((err = fractal_render(&img, client, opts)) == 0) {
            atomic_fetch_add(&ok, 1);
        } else {
            atomic_fetch_add(&failed, 1);
            pthread_mutex_lock(&error_lock);
            if (first_error[0] == '\0')
                snprintf(first_error, sizeof first_error, "%s: %s", fractal_strerror(err),
                         fractal_client_last_error(client));
            pthread_mutex_unlock(&error_lock);
        }
        fractal_image_free(img);
        img = NULL;
    }
    fractal_client_free(client);
    free(opts);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t threads[64];
    unsigned n_threads, t;
    double start, seconds;
    char *p;

    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: fleet_driver TARGET COUNT THREADS [SIZE [MAX_ITER]]\n");
        return 2;
    }
    target = argv[1];
    count = (unsigned)strtoul(argv[2], NULL, 10);
    n_threads = (unsigned)strtoul(argv[3], NULL, 10);
    if (argc > 4)
        size = (unsigned)strtoul(argv[4], NULL, 10);
    if (argc > 5)
        max_iter = (unsigned)strtoul(argv[5], NULL, 10);
    if (count == 0 || n_threads == 0 || n_threads > 64 || size == 0) {
        fprintf(stderr, "fleet_driver: COUNT >= 1, THREADS 1..64, SIZE >= 1\n");
        return 2;
    }
    start = now_s();
    for (t = 0; t < n_threads; t++)
        if (pthread_create(&threads[t], NULL, run, NULL) != 0) {
            fprintf(stderr, "fleet_driver: cannot start a thread\n");
            return 2;
        }
    for (t = 0; t < n_threads; t++)
        pthread_join(threads[t], NULL);
    seconds = now_s() - start;
    for (p = first_error; *p; p++)
        if (*p == '\n')
            *p = ' ';
    printf("fleet_driver ok=%u failed=%u seconds=%.3f calls_per_s=%.1f first_error=%s\n", atomic_load(&ok),
           atomic_load(&failed), seconds, atomic_load(&ok) / seconds, first_error[0] ? first_error : "-");
    return atomic_load(&failed) == 0 ? 0 : 1;
}
