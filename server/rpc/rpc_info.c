/* rpc_info.c: ListDevices and GetStats, answered inline on the completion-queue thread from
 * counters, so they stay fast while every device is busy. */
#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "rpc_call.h"
#include "rpc_handlers.h"

/* Packs a message into a malloc'd buffer (*out, *len; caller frees). Returns 0 or ERR_NOMEM. */
static int pack_to(uint8_t **out, size_t *len, const ProtobufCMessage *m)
{
    *len = protobuf_c_message_get_packed_size(m);
    if (!(*out = malloc(*len ? *len : 1)))
        return ERR_NOMEM;
    protobuf_c_message_pack(m, *out);
    return 0;
}

/* Answers c with packed bytes (ERR_NOMEM when they could not be made), then frees them. */
static void reply_packed(struct call *c, int err, uint8_t *bytes, size_t len)
{
    if (err < 0) {
        rpc_log_call(c, ERR_NOMEM, "out of memory", NULL);
        rpc_finish(c, ERR_NOMEM, "out of memory", NULL, 0);
        return;
    }
    {
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, len);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        free(bytes);
        rpc_log_call(c, 0, NULL, NULL);
        rpc_finish(c, 0, NULL, bb, 0);
    }
}

void rpc_list_devices(struct call *c)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int err = rpc_server_devices_packed(c->srv, &bytes, &len);

    reply_packed(c, err, bytes, len);
}

void rpc_get_stats(struct call *c)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int err = rpc_server_stats_packed(c->srv, &bytes, &len);

    reply_packed(c, err, bytes, len);
}

int rpc_server_devices_packed(rpc_server *srv, uint8_t **out, size_t *len)
{
    struct devices *devs = srv->devs;
    Fractal__V1__ListDevicesResponse resp = FRACTAL__V1__LIST_DEVICES_RESPONSE__INIT;
    Fractal__V1__Device *items = calloc(devs->count ? devs->count : 1, sizeof(*items));
    Fractal__V1__Device **ptrs = calloc(devs->count ? devs->count : 1, sizeof(*ptrs));
    int err = ERR_NOMEM;

    *out = NULL;
    if (!items || !ptrs)
        goto done;
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        Fractal__V1__Device *m = &items[i];
        fractal__v1__device__init(m);
        m->id = d->id;
        m->name = d->name;
        m->vendor = d->vendor;
        m->platform = d->platform;
        m->type = (Fractal__V1__DeviceType)d->type;
        m->engine = d->engine;
        m->fp64 = d->fp64;
        m->compute_units = d->compute_units;
        m->memory_bytes = d->memory_bytes;
        m->enabled = d->enabled;
        m->disabled_reason = d->disabled_reason;
        m->status = atomic_load(&d->failed) ? "failed" : "ok";
        /* A working spare-cycles device says so: its low share of the work is by design. */
        m->status_reason = atomic_load(&d->failed) ? d->failed_reason
                           : d->spare_cycles ? "spare cycles: shares the host's cores with a faster CPU-type "
                                               "device and runs at low priority (share_cpu = priority)"
                                             : "";
        m->giter_per_s = d->giter_per_s;
        m->tiles_done = atomic_load(&d->tiles_done);
        m->iterations_done = atomic_load(&d->iterations_done);
        ptrs[i] = m;
    }
    resp.n_devices = devs->count;
    resp.devices = ptrs;
    err = pack_to(out, len, &resp.base);
done:
    free(ptrs);
    free(items);
    return err;
}

int rpc_server_stats_packed(rpc_server *srv, uint8_t **out, size_t *len)
{
    struct devices *devs = srv->devs;
    Fractal__V1__ServerStats resp = FRACTAL__V1__SERVER_STATS__INIT;
    Fractal__V1__DeepRefStats deep = FRACTAL__V1__DEEP_REF_STATS__INIT;
    struct deep_cache_stats ds;
    Fractal__V1__MethodStats method_items[(M_COUNT + 1) * 17], *method_ptrs[(M_COUNT + 1) * 17];
    Fractal__V1__DeviceStats *dev_items = calloc(devs->count ? devs->count : 1, sizeof(*dev_items));
    Fractal__V1__DeviceStats **dev_ptrs = calloc(devs->count ? devs->count : 1, sizeof(*dev_ptrs));
    size_t n = 0;
    int err = ERR_NOMEM;

    *out = NULL;
    if (!dev_items || !dev_ptrs)
        goto done;
    for (int m = 0; m <= M_COUNT; m++)
        for (int code = 0; code < 17; code++) {
            uint64_t count = atomic_load(&srv->answered[m][code]);
            if (count == 0)
                continue;
            fractal__v1__method_stats__init(&method_items[n]);
            method_items[n].method = (char *)(m == M_UNKNOWN ? "unknown" : rpc_method_names[m].name);
            method_items[n].code = code;
            method_items[n].count = count;
            method_ptrs[n] = &method_items[n];
            n++;
        }
    resp.n_requests = n;
    resp.requests = method_ptrs;
    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        Fractal__V1__DeviceStats *ds = &dev_items[i];
        fractal__v1__device_stats__init(ds);
        ds->id = d->id;
        ds->tiles = atomic_load(&d->tiles_done);
        ds->iterations = atomic_load(&d->iterations_done);
        ds->busy_ms = devices_busy_ms(d);
        /* Measured over the device's busy time since start; the calibration figure until then. */
        ds->giter_per_s = ds->busy_ms > 0 ? (double)ds->iterations / (ds->busy_ms * 1e6) : d->giter_per_s;
        dev_ptrs[i] = ds;
    }
    resp.n_devices = devs->count;
    resp.devices = dev_ptrs;
    resp.uptime_s = (render_now_ms() - srv->t_start) / 1000.0;
    pthread_mutex_lock(&srv->lock);
    resp.queue_depth = srv->renders.queued;
    resp.running = srv->renders.running + srv->job_runners;
    pthread_mutex_unlock(&srv->lock);
    if (srv->sched) {
        sched_deep_stats(srv->sched, &ds);
        deep.hits = ds.hits;
        deep.misses = ds.misses;
        deep.evictions = ds.evictions;
        deep.entries = ds.entries;
        deep.bytes = ds.bytes;
        deep.budget_bytes = ds.budget;
        resp.deep_refs = &deep;
    }
    if (srv->jobs) {
        struct jobs_stats js;
        jobs_get_stats(&js, srv->jobs);
        resp.jobs_held = js.held;
        resp.queue_depth += js.queued;
        resp.spool_bytes = js.spool_bytes;
    }
    {
        struct imgcache_stats cs;
        imgcache_get_stats(&cs, srv->cache);
        resp.image_cache_hits = cs.hits;
        resp.image_cache_misses = cs.misses;
        resp.image_cache_bytes = cs.bytes;
        resp.image_cache_entries = cs.entries;
    }
    err = pack_to(out, len, &resp.base);
done:
    free(dev_ptrs);
    free(dev_items);
    return err;
}
