/* http_metrics.c: /metrics in the Prometheus text exposition format (version 0.0.4): requests by
 * method and status for gRPC and by route and status for HTTP, their latency histograms, the
 * render queue, every device's busy time and iterations, the image cache and the jobs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http_internal.h"
#include "render.h"

struct text {
    char *s;
    size_t len, cap;
    bool failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        if (t->failed)
            return;
        va_start(ap, fmt);
        n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        {
            size_t cap = t->cap ? t->cap * 2 : 16384;
            char *p;
            while (cap < t->len + (size_t)n + 1)
                cap *= 2;
            if (!(p = realloc(t->s, cap))) {
                t->failed = true;
                return;
            }
            t->s = p;
            t->cap = cap;
        }
    }
}

/* A label value with '\', '"' and newlines escaped, as the format asks. Static buffer per call
 * site is not thread-safe, so the caller passes one. */
static const char *label(char *buf, size_t cap, const char *v)
{
    size_t n = 0;

    for (; *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            buf[n++] = '\\';
            buf[n++] = *v;
        } else if (*v == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *v;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* One histogram series from non-cumulative bucket counts. */
static void histogram(struct text *t, const char *name, const char *lname, const char *lvalue,
                      const uint64_t *buckets, double sum_s)
{
    static const double bounds[LATENCY_NBOUNDS] = LATENCY_BOUNDS_S;
    uint64_t cum = 0;

    for (int b = 0; b < LATENCY_NBUCKETS; b++) {
        cum += buckets[b];
        if (b < LATENCY_NBOUNDS)
            put(t, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, lname, lvalue, bounds[b], (unsigned long long)cum);
        else
            put(t, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, lname, lvalue, (unsigned long long)cum);
    }
    put(t, "%s_sum{%s=\"%s\"} %.6f\n", name, lname, lvalue, sum_s);
    put(t, "%s_count{%s=\"%s\"} %llu\n", name, lname, lvalue, (unsigned long long)cum);
}

static void grpc_part(struct text *t, const struct rpc_metrics *m)
{
    put(t, "# HELP fractald_grpc_requests_total gRPC calls answered, by method and status code.\n"
           "# TYPE fractald_grpc_requests_total counter\n");
    for (size_t i = 0; i < m->nmethods; i++)
        for (int code = 0; code < 17; code++)
            if (m->answered[i][code])
                put(t, "fractald_grpc_requests_total{method=\"%s\",code=\"%s\"} %llu\n", m->method[i],
                    err_status_name(code), (unsigned long long)m->answered[i][code]);
    put(t, "# HELP fractald_grpc_request_duration_seconds gRPC call latency, accept to status.\n"
           "# TYPE fractald_grpc_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->nmethods; i++) {
        uint64_t any = 0;
        for (int b = 0; b < LATENCY_NBUCKETS; b++)
            any += m->latency[i][b];
        if (any)
            histogram(t, "fractald_grpc_request_duration_seconds", "method", m->method[i], m->latency[i],
                      m->latency_sum_s[i]);
    }
}

static void http_part(struct text *t, http_server *h)
{
    static const int statuses[HTTP_NSTATUS - 1] = HTTP_STATUSES;

    put(t, "# HELP fractald_http_requests_total HTTP requests answered, by route and status.\n"
           "# TYPE fractald_http_requests_total counter\n");
    for (int r = 0; r < R_COUNT; r++)
        for (int s = 0; s < HTTP_NSTATUS; s++) {
            uint64_t n = atomic_load(&h->answered[r][s]);
            if (!n)
                continue;
            if (s < HTTP_NSTATUS - 1)
                put(t, "fractald_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", http_route_names[r],
                    statuses[s], (unsigned long long)n);
            else
                put(t, "fractald_http_requests_total{route=\"%s\",status=\"other\"} %llu\n", http_route_names[r],
                    (unsigned long long)n);
        }
    put(t, "# HELP fractald_http_request_duration_seconds HTTP request latency, headers in to reply queued.\n"
           "# TYPE fractald_http_request_duration_seconds histogram\n");
    for (int r = 0; r < R_COUNT; r++) {
        uint64_t b[LATENCY_NBUCKETS], any = 0;
        for (int k = 0; k < LATENCY_NBUCKETS; k++)
            any += b[k] = atomic_load(&h->latency[r][k]);
        if (any)
            histogram(t, "fractald_http_request_duration_seconds", "route", http_route_names[r], b,
                      (double)atomic_load(&h->latency_us_sum[r]) / 1e6);
    }
    put(t, "# HELP fractald_http_disconnect_cancels_total Renders cancelled because their HTTP client closed the connection.\n"
           "# TYPE fractald_http_disconnect_cancels_total counter\n"
           "fractald_http_disconnect_cancels_total %llu\n", (unsigned long long)atomic_load(&h->disconnect_cancels));
}

static void devices_part(struct text *t, http_server *h)
{
    struct devices *devs = h->devs;
    uint64_t total = 0;
    char id[256];

    put(t, "# HELP fractald_device_busy_seconds_total Time each device spent computing tiles.\n"
           "# TYPE fractald_device_busy_seconds_total counter\n");
    for (size_t i = 0; i < devs->count; i++)
        put(t, "fractald_device_busy_seconds_total{device=\"%s\"} %.6f\n", label(id, sizeof(id), devs->list[i].id),
            devices_busy_ms(&devs->list[i]) / 1000.0);
    put(t, "# HELP fractald_device_iterations_total Escape-time iterations each device computed.\n"
           "# TYPE fractald_device_iterations_total counter\n");
    for (size_t i = 0; i < devs->count; i++) {
        uint64_t n = atomic_load(&devs->list[i].iterations_done);
        total += n;
        put(t, "fractald_device_iterations_total{device=\"%s\"} %llu\n", label(id, sizeof(id), devs->list[i].id),
            (unsigned long long)n);
    }
    put(t, "# HELP fractald_device_tiles_total Tiles each device computed.\n"
           "# TYPE fractald_device_tiles_total counter\n");
    for (size_t i = 0; i < devs->count; i++)
        put(t, "fractald_device_tiles_total{device=\"%s\"} %llu\n", label(id, sizeof(id), devs->list[i].id),
            (unsigned long long)atomic_load(&devs->list[i].tiles_done));
    put(t, "# HELP fractald_device_giter_per_second Each device's throughput over its busy time (the calibration figure until it has worked).\n"
           "# TYPE fractald_device_giter_per_second gauge\n");
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        double busy = devices_busy_ms(d);
        double g = busy > 0 ? (double)atomic_load(&d->iterations_done) / (busy * 1e6) : d->giter_per_s;
        put(t, "fractald_device_giter_per_second{device=\"%s\"} %.6g\n", label(id, sizeof(id), d->id), g);
    }
    put(t, "# HELP fractald_iterations_total Escape-time iterations computed on every device.\n"
           "# TYPE fractald_iterations_total counter\n"
           "fractald_iterations_total %llu\n", (unsigned long long)total);
}

int http_metrics_text(char **out, size_t *len, http_server *h)
{
    struct text t = {0};
    struct rpc_metrics *m = malloc(sizeof(*m));
    struct imgcache_stats cs;

    *out = NULL;
    if (!m)
        return ERR_NOMEM;
    rpc_server_metrics(m, h->rpc);
    put(&t, "# HELP fractald_uptime_seconds Time since the HTTP listener started.\n"
            "# TYPE fractald_uptime_seconds gauge\n"
            "fractald_uptime_seconds %.3f\n", (render_now_ms() - h->t_start) / 1000.0);
    grpc_part(&t, m);
    http_part(&t, h);
    put(&t, "# HELP fractald_render_queue_depth Renders waiting for a render worker (gRPC and HTTP).\n"
            "# TYPE fractald_render_queue_depth gauge\n"
            "fractald_render_queue_depth %u\n"
            "# HELP fractald_renders_running Renders being computed (gRPC and HTTP), jobs not included.\n"
            "# TYPE fractald_renders_running gauge\n"
            "fractald_renders_running %u\n"
            "# HELP fractald_job_runners Render workers running a job.\n"
            "# TYPE fractald_job_runners gauge\n"
            "fractald_job_runners %u\n"
            "# HELP fractald_inflight_cost Iterations of the queued and running renders, against --max-inflight-cost.\n"
            "# TYPE fractald_inflight_cost gauge\n"
            "fractald_inflight_cost %.6g\n", m->queued, m->running, m->job_runners, m->inflight_cost);
    devices_part(&t, h);
    imgcache_get_stats(&cs, h->cache);
    put(&t, "# HELP fractald_image_cache_hits_total Lookups that found the encoded image.\n"
            "# TYPE fractald_image_cache_hits_total counter\n"
            "fractald_image_cache_hits_total %llu\n"
            "# HELP fractald_image_cache_misses_total Lookups that did not.\n"
            "# TYPE fractald_image_cache_misses_total counter\n"
            "fractald_image_cache_misses_total %llu\n"
            "# HELP fractald_image_cache_evictions_total Images dropped to make room.\n"
            "# TYPE fractald_image_cache_evictions_total counter\n"
            "fractald_image_cache_evictions_total %llu\n"
            "# HELP fractald_image_cache_bytes Bytes the cache holds (keys and images).\n"
            "# TYPE fractald_image_cache_bytes gauge\n"
            "fractald_image_cache_bytes %llu\n"
            "# HELP fractald_image_cache_entries Images the cache holds.\n"
            "# TYPE fractald_image_cache_entries gauge\n"
            "fractald_image_cache_entries %llu\n"
            "# HELP fractald_image_cache_budget_bytes The cache's budget (--image-cache).\n"
            "# TYPE fractald_image_cache_budget_bytes gauge\n"
            "fractald_image_cache_budget_bytes %llu\n",
        (unsigned long long)cs.hits, (unsigned long long)cs.misses, (unsigned long long)cs.evictions,
        (unsigned long long)cs.bytes, (unsigned long long)cs.entries, (unsigned long long)cs.budget);
    if (h->jobs) {
        struct jobs_stats js;
        jobs_get_stats(&js, h->jobs);
        put(&t, "# HELP fractald_jobs Jobs held, by state.\n"
                "# TYPE fractald_jobs gauge\n"
                "fractald_jobs{state=\"queued\"} %u\n"
                "fractald_jobs{state=\"running\"} %u\n"
                "fractald_jobs{state=\"succeeded\"} %u\n"
                "fractald_jobs{state=\"failed\"} %u\n"
                "fractald_jobs{state=\"cancelled\"} %u\n"
                "# HELP fractald_spool_bytes Disk used by job results.\n"
                "# TYPE fractald_spool_bytes gauge\n"
                "fractald_spool_bytes %llu\n",
            js.queued, js.running, js.succeeded, js.failed, js.cancelled, (unsigned long long)js.spool_bytes);
    }
    free(m);
    if (t.failed) {
        free(t.s);
        return ERR_NOMEM;
    }
    *out = t.s;
    *len = t.len;
    return 0;
}
