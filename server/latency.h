/* latency.h: the fixed buckets of the request latency histograms both front ends keep (gRPC per
 * method, HTTP per route), so /metrics can show them side by side with the same `le` bounds. */
#ifndef FRACTALD_LATENCY_H
#define FRACTALD_LATENCY_H

#include <stddef.h>

/* Upper bounds in seconds; a final +Inf bucket follows them. From a cached tile (well under a
 * millisecond) to a large render (tens of seconds). */
#define LATENCY_BOUNDS_S {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
#define LATENCY_NBOUNDS 15
#define LATENCY_NBUCKETS (LATENCY_NBOUNDS + 1)

/* The bucket (0..LATENCY_NBOUNDS, the last one +Inf) of a latency of `seconds`. */
static inline size_t latency_bucket(double seconds)
{
    static const double bounds[LATENCY_NBOUNDS] = LATENCY_BOUNDS_S;
    size_t i = 0;

    while (i < LATENCY_NBOUNDS && seconds > bounds[i])
        i++;
    return i;
}

#endif
