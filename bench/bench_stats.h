/* bench_stats.h: the clock, order statistics and machine description every benchmark of bench/
 * reports with. */
#ifndef FRACTALD_BENCH_STATS_H
#define FRACTALD_BENCH_STATS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The first "model name" of /proc/cpuinfo into buf, or "unknown": every benchmark prints it. */
static inline void bench_cpu_model(char *buf, size_t len)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");

    snprintf(buf, len, "unknown");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon += 1 + (colon[1] == ' ');
            snprintf(buf, len, "%s", colon);
            buf[strcspn(buf, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
}

/* Seconds on the monotonic clock. */
static inline double bench_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of v[0..n), n >= 1 (the mean of the middle two for even n). Sorts v. */
static inline double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The p-th percentile of v[0..n), n >= 1, as bench_service.py's pct() takes it: the sorted value
 * at the rounded rank. Sorts v. */
static inline double bench_pct(double *v, size_t n, double p)
{
    size_t k = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);

    qsort(v, n, sizeof(*v), bench_cmp_double);
    return v[k < n ? k : n - 1];
}

#endif
