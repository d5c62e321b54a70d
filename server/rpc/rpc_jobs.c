/* rpc_jobs.c: the submit-and-poll flow: SubmitJob, GetJob, CancelJob, ListJobs, FetchJobResult,
 * and running a job on a render worker. Reads answer inline from the store's memory; anything that
 * commits to disk or streams a result runs on an I/O worker, never on the completion-queue
 * thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encode.h"
#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "log.h"
#include "request.h"
#include "rpc_call.h"
#include "rpc_handlers.h"

#define CHUNK_BYTES (1u << 20)
#define LIST_DEFAULT 100
#define LIST_MAX 1000

/* Protobuf pieces of one Job reply, so they can be freed after packing. */
struct job_msg {
    Fractal__V1__Job job;
    Fractal__V1__Progress progress;
    Fractal__V1__RenderRequest *request;
    Fractal__V1__RenderStats *stats;
};

/* Fills m from a snapshot; m borrows strings from info. Release with job_msg_dispose. */
static void job_msg_init(struct job_msg *m, const struct jobs_info *info)
{
    fractal__v1__job__init(&m->job);
    fractal__v1__progress__init(&m->progress);
    m->request = info->request ? (Fractal__V1__RenderRequest *)protobuf_c_message_unpack(
                                     &fractal__v1__render_request__descriptor, NULL, info->request_len, info->request)
                               : NULL;
    m->stats = info->stats ? (Fractal__V1__RenderStats *)protobuf_c_message_unpack(
                                 &fractal__v1__render_stats__descriptor, NULL, info->stats_len, info->stats)
                           : NULL;
    m->progress.rows_done = info->rows_done;
    m->progress.rows_total = info->rows_total;
    m->progress.samples_done = info->samples_done;
    m->progress.queue_position = info->queue_position;
    m->job.id = (char *)info->id;
    m->job.state = (Fractal__V1__JobState)info->state;
    m->job.progress = &m->progress;
    m->job.stats = m->stats;
    m->job.error_code = info->error_code;
    m->job.error_message = info->error_message ? info->error_message : "";
    m->job.request = m->request;
    m->job.created_unix_ms = info->created_ms;
    m->job.started_unix_ms = info->started_ms;
    m->job.finished_unix_ms = info->finished_ms;
    m->job.expires_unix_ms = info->expires_ms;
    m->job.result_bytes = info->result_bytes;
    m->job.content_type = (char *)info->content_type;
    m->job.width = info->width;
    m->job.height = info->height;
}

static void job_msg_dispose(struct job_msg *m)
{
    if (m->request)
        protobuf_c_message_free_unpacked(&m->request->base, NULL);
    if (m->stats)
        protobuf_c_message_free_unpacked(&m->stats->base, NULL);
}

/* Answers c with job `id` as it is now (or NOT_FOUND), logging `what`. */
/* The message for a store read (jobs_get, jobs_list) that failed with err, which carries none:
 * a shared store (--job-store) can be unreachable as well as out of memory. */
static void store_read_failure(char *msg, size_t len, int err, const char *id)
{
    if (err == ERR_NOT_FOUND)
        snprintf(msg, len, "no job \"%.64s\" (unknown, or expired)", id ? id : "");
    else if (err == ERR_UNAVAILABLE)
        snprintf(msg, len, "the job store is unavailable; retry later");
    else if (err == ERR_NOMEM)
        snprintf(msg, len, "out of memory");
    else
        snprintf(msg, len, "the job store failed (%s)", err_name(err));
}

static void reply_job(struct call *c, const char *id, const char *what)
{
    struct jobs_info info;
    struct job_msg m;
    char msg[160] = "", extra[96];
    int err = jobs_get(&info, c->srv->jobs, id);

    if (err < 0) {
        store_read_failure(msg, sizeof(msg), err, id);
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, 0);
        return;
    }
    job_msg_init(&m, &info);
    extra[0] = '\0';
    log_kv(extra, sizeof(extra), "op", what);
    log_kv(extra, sizeof(extra), "state", jobs_state_name(info.state));
    rpc_log_call(c, 0, NULL, extra);
    rpc_finish(c, 0, NULL, rpc_pack(&m.job.base), 0);
    job_msg_dispose(&m);
    jobs_info_dispose(&info);
}

/* Refuses a job call when the server keeps no jobs; true if it did. */
static bool refuse_without_jobs(struct call *c)
{
    static const char msg[] = "jobs are disabled on this server (start fractald with --spool-dir or --job-store)";

    if (c->srv->jobs)
        return false;
    rpc_log_call(c, ERR_UNAVAILABLE, msg, NULL);
    rpc_finish(c, ERR_UNAVAILABLE, msg, NULL, 0);
    return true;
}

/* Decodes a JobRef into c->job_id; answers INVALID_ARGUMENT and returns false if it cannot. */
static bool read_job_ref(struct call *c)
{
    char why[160];
    Fractal__V1__JobRef *ref =
        (Fractal__V1__JobRef *)rpc_unpack(&fractal__v1__job_ref__descriptor, c->payload, why, sizeof(why));
    const char *msg = NULL;

    if (!ref)
        msg = why;
    else if (ref->id[0] == '\0' || strlen(ref->id) >= sizeof(c->job_id))
        msg = "id must be a job id from SubmitJob";
    else
        snprintf(c->job_id, sizeof(c->job_id), "%s", ref->id);
    if (ref)
        protobuf_c_message_free_unpacked(&ref->base, NULL);
    if (msg) {
        rpc_log_call(c, ERR_INVALID, msg, NULL);
        rpc_finish(c, ERR_INVALID, msg, NULL, 0);
        return false;
    }
    return true;
}

static void queue_io_or_refuse(struct call *c, void (*run)(struct call *c))
{
    char msg[256];
    unsigned retry_after = 0;
    int err;

    c->run = run;
    if ((err = rpc_queue_io(c, msg, sizeof(msg), &retry_after)) < 0) {
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, retry_after);
    }
}

/* ---- SubmitJob ---- */

static void do_submit(struct call *c)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    char msg[256], id[JOBS_ID_SIZE];
    int err;

    /* The store keeps the resolved request, not the client's bytes: it is small whatever the
     * client padded its message with (unknown fields), and it renders the same image even if the
     * server's defaults change before the job runs. */
    if ((err = request_pack_from_spec(&bytes, &len, &c->spec)) < 0) {
        rpc_log_call(c, err, "out of memory", NULL);
        rpc_finish(c, err, "out of memory", NULL, 0);
        return;
    }
    /* Journaled and committed before the reply: once the client holds an id, the job survives
     * a crash. */
    err = jobs_submit(c->srv->jobs, bytes, len, id, msg, sizeof(msg));
    free(bytes);
    if (err < 0) {
        rpc_log_call(c, err, msg, c->summary);
        rpc_finish(c, err, msg, NULL, err == ERR_EXHAUSTED ? 1000 : 0);
        return;
    }
    snprintf(c->job_id, sizeof(c->job_id), "%s", id);
    rpc_jobs_wake(c->srv);
    reply_job(c, id, "submitted");
}

void rpc_jobs_submit(struct call *c)
{
    Fractal__V1__RenderRequest *req;
    char msg[512] = "";
    int err;

    if (refuse_without_jobs(c))
        return;
    /* Validated now, so a bad request is refused at once rather than failing later as a job. */
    req = (Fractal__V1__RenderRequest *)rpc_unpack(&fractal__v1__render_request__descriptor, c->payload, msg,
                                                   sizeof(msg));
    if (!req) {
        err = ERR_INVALID;
    } else {
        err = request_to_spec(&c->spec, &c->device_index, req, &c->srv->cfg->limits, c->srv->devs, true, msg,
                              sizeof(msg));
        protobuf_c_message_free_unpacked(&req->base, NULL);
    }
    if (err < 0) {
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, 0);
        return;
    }
    rpc_spec_summary(c->summary, sizeof(c->summary), &c->spec);
    queue_io_or_refuse(c, do_submit);
}

/* ---- GetJob, CancelJob, ListJobs ---- */

void rpc_jobs_get(struct call *c)
{
    if (refuse_without_jobs(c) || !read_job_ref(c))
        return;
    reply_job(c, c->job_id, "get");
}

static void do_cancel(struct call *c)
{
    char msg[256];
    int err = jobs_cancel(c->srv->jobs, c->job_id, msg, sizeof(msg));

    if (err < 0) {
        if (err == ERR_NOT_FOUND)
            snprintf(msg, sizeof(msg), "no job \"%.64s\" (unknown, or expired)", c->job_id);
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, 0);
        return;
    }
    reply_job(c, c->job_id, "cancel");
}

void rpc_jobs_cancel(struct call *c)
{
    if (refuse_without_jobs(c) || !read_job_ref(c))
        return;
    queue_io_or_refuse(c, do_cancel);
}

/* ListJobs runs on an I/O worker: a thousand jobs with their requests take a while to pack. */
static void do_list(struct call *c)
{
    Fractal__V1__ListJobsRequest *req;
    Fractal__V1__ListJobsResponse resp = FRACTAL__V1__LIST_JOBS_RESPONSE__INIT;
    struct jobs_info *infos = NULL;
    struct job_msg *msgs = NULL;
    Fractal__V1__Job **ptrs = NULL;
    size_t count = 0, limit;
    unsigned state;
    char why[160];
    int err;

    req = (Fractal__V1__ListJobsRequest *)rpc_unpack(&fractal__v1__list_jobs_request__descriptor, c->payload,
                                                     why, sizeof(why));
    if (!req) {
        rpc_log_call(c, ERR_INVALID, why, NULL);
        rpc_finish(c, ERR_INVALID, why, NULL, 0);
        return;
    }
    limit = req->limit == 0 ? LIST_DEFAULT : req->limit > LIST_MAX ? LIST_MAX : req->limit;
    state = (unsigned)req->state;
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (state > JOBS_CANCELLED) {
        char msg[96];
        snprintf(msg, sizeof(msg), "state must be a JobState (0..5), got %u", state);
        rpc_log_call(c, ERR_INVALID, msg, NULL);
        rpc_finish(c, ERR_INVALID, msg, NULL, 0);
        return;
    }
    if ((err = jobs_list(&infos, &count, c->srv->jobs, (enum jobs_state)state, limit)) < 0) {
        char msg[96];
        store_read_failure(msg, sizeof(msg), err, NULL);
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, 0);
        goto done;
    }
    if (count && (!(msgs = calloc(count, sizeof(*msgs))) || !(ptrs = calloc(count, sizeof(*ptrs))))) {
        rpc_log_call(c, ERR_NOMEM, "out of memory", NULL);
        rpc_finish(c, ERR_NOMEM, "out of memory", NULL, 0);
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        job_msg_init(&msgs[i], &infos[i]);
        ptrs[i] = &msgs[i].job;
    }
    resp.n_jobs = count;
    resp.jobs = ptrs;
    rpc_log_call(c, 0, NULL, NULL);
    rpc_finish(c, 0, NULL, rpc_pack(&resp.base), 0);
done:
    for (size_t i = 0; msgs && i < count; i++)
        job_msg_dispose(&msgs[i]);
    free(ptrs);
    free(msgs);
    jobs_info_free_array(infos, count);
}

void rpc_jobs_list(struct call *c)
{
    if (refuse_without_jobs(c))
        return;
    queue_io_or_refuse(c, do_list);
}

/* ---- FetchJobResult ---- */

static void do_fetch(struct call *c)
{
    struct jobs_info info;
    jobs_reader *reader = NULL;
    uint8_t *buf = NULL;
    uint64_t offset = 0;
    char msg[256] = "";
    int err;

    if ((err = jobs_get(&info, c->srv->jobs, c->job_id)) < 0) {
        snprintf(msg, sizeof(msg), "no job \"%.64s\" (unknown, or expired)", c->job_id);
        goto done;
    }
    if ((err = jobs_reader_open(&reader, c->srv->jobs, c->job_id, msg, sizeof(msg))) < 0)
        goto done;
    if (!(buf = malloc(CHUNK_BYTES))) {
        err = ERR_NOMEM;
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }
    for (;;) {
        Fractal__V1__RenderEvent ev = FRACTAL__V1__RENDER_EVENT__INIT;
        Fractal__V1__ImageChunk chunk = FRACTAL__V1__IMAGE_CHUNK__INIT;
        size_t n = 0;
        if ((err = jobs_reader_read(reader, buf, CHUNK_BYTES, &n, msg, sizeof(msg))) < 0)
            goto done;
        if (n == 0)
            break;
        chunk.offset = offset;
        chunk.data.data = buf;
        chunk.data.len = n;
        chunk.content_type = info.content_type;
        chunk.width = info.width;
        chunk.height = info.height;
        ev.event_case = FRACTAL__V1__RENDER_EVENT__EVENT_CHUNK;
        ev.chunk = &chunk;
        if ((err = rpc_stream_send(c, &ev.base)) < 0) {
            snprintf(msg, sizeof(msg), "stream cancelled");
            goto done;
        }
        offset += n;
    }
    {
        Fractal__V1__RenderEvent ev = FRACTAL__V1__RENDER_EVENT__INIT;
        Fractal__V1__RenderStats empty = FRACTAL__V1__RENDER_STATS__INIT, *stats = NULL;
        if (info.stats)
            stats = (Fractal__V1__RenderStats *)protobuf_c_message_unpack(&fractal__v1__render_stats__descriptor,
                                                                          NULL, info.stats_len, info.stats);
        ev.event_case = FRACTAL__V1__RENDER_EVENT__EVENT_DONE;
        ev.done = stats ? stats : &empty;
        err = rpc_stream_send(c, &ev.base);
        if (stats)
            protobuf_c_message_free_unpacked(&stats->base, NULL);
        if (err < 0)
            snprintf(msg, sizeof(msg), "stream cancelled");
    }
done:
    {
        char extra[64];
        extra[0] = '\0';
        log_kvf(extra, sizeof(extra), "bytes", "%llu", (unsigned long long)offset);
        rpc_log_call(c, err, msg, extra);
    }
    rpc_finish(c, err, msg, NULL, 0);
    free(buf);
    jobs_reader_free(reader);
    jobs_info_dispose(&info);
}

void rpc_jobs_fetch(struct call *c)
{
    struct jobs_info info;
    char msg[256];
    int err;

    if (refuse_without_jobs(c) || !read_job_ref(c))
        return;
    /* Refused inline when there is nothing to stream yet; the stream itself runs on I/O workers. */
    if ((err = jobs_get(&info, c->srv->jobs, c->job_id)) < 0) {
        snprintf(msg, sizeof(msg), "no job \"%.64s\" (unknown, or expired)", c->job_id);
    } else if (info.state != JOBS_SUCCEEDED) {
        err = ERR_PRECONDITION;
        if (info.state == JOBS_FAILED || info.state == JOBS_CANCELLED)
            snprintf(msg, sizeof(msg), "job %s is %s and has no result: %.150s", c->job_id,
                     jobs_state_name(info.state), info.error_message ? info.error_message : "");
        else
            snprintf(msg, sizeof(msg), "job %s is %s (%u of %u rows); poll GetJob until SUCCEEDED", c->job_id,
                     jobs_state_name(info.state), info.rows_done, info.rows_total);
    }
    jobs_info_dispose(&info);
    if (err < 0) {
        rpc_log_call(c, err, msg, NULL);
        rpc_finish(c, err, msg, NULL, 0);
        return;
    }
    queue_io_or_refuse(c, do_fetch);
}

/* ---- running a job ---- */

struct job_progress {
    jobs_store *store;
    const char *id;
};

static void job_progress(void *ctx, uint32_t rows_done, uint32_t rows_total, uint64_t samples_done)
{
    struct job_progress *p = ctx;
    jobs_progress(p->store, p->id, rows_done, rows_total, samples_done);
}

void rpc_jobs_run(rpc_server *srv, struct jobs_work *work, unsigned slot)
{
    Fractal__V1__RenderRequest *req = NULL;
    struct render_spec spec = {.deep = NULL};
    struct render_stats st;
    struct sched_call call = {srv->sched, 0, ""};
    jobs_result *result = NULL;
    char msg[512] = "", *json = NULL;
    int err, device_index = 0;
    double t0 = render_now_ms();
    const char *outcome = "FAILED";
    (void)slot;

    /* The store logs the transition to RUNNING (event=job); the run's outcome and time follow. */
    req = (Fractal__V1__RenderRequest *)protobuf_c_message_unpack(&fractal__v1__render_request__descriptor, NULL,
                                                                 work->request_len, work->request);
    if (!req) {
        err = ERR_INVALID;
        snprintf(msg, sizeof(msg), "stored request is not a valid fractal.v1.RenderRequest");
        goto done;
    }
    /* Validated again: the limits or devices may have changed since the job was accepted. */
    if ((err = request_to_spec(&spec, &device_index, req, &srv->cfg->limits, srv->devs, true, msg, sizeof(msg))) < 0)
        goto done;
    if ((err = request_text_for_image(&json, &spec)) < 0) {
        snprintf(msg, sizeof(msg), "cannot write the request chunk: %s", err_name(err));
        goto done;
    }
    if ((err = jobs_result_open(&result, srv->jobs, work->id, msg, sizeof(msg))) < 0)
        goto done;
    {
        struct job_progress progress = {srv->jobs, work->id};
        struct render_io io = {sched_compute, &call, jobs_result_sink, result, job_progress, &progress,
                               work->cancel, 0};
        if ((err = render_run(&st, &io, &spec, json, msg, sizeof(msg))) < 0) {
            if (jobs_result_message(result)[0])
                snprintf(msg, sizeof(msg), "%s", jobs_result_message(result));
            else if (call.msg[0])
                snprintf(msg, sizeof(msg), "%s", call.msg);
            goto done;
        }
    }
    {
        Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
        char *device_ids[64];
        uint8_t *blob;
        size_t len;

        stats.iterations = st.iterations;
        stats.queue_ms = (double)(work->started_ms - work->created_ms);
        stats.compute_ms = st.compute_ms;
        stats.encode_ms = st.encode_ms;
        stats.total_ms = render_now_ms() - t0;
        stats.n_devices = rpc_device_ids(device_ids, 64, srv->devs, call.devices_used);
        stats.devices = device_ids;
        stats.precision = (Fractal__V1__Precision)spec.precision;
        stats.tiles = st.tiles;
        stats.samples = st.samples;
        len = protobuf_c_message_get_packed_size(&stats.base);
        if (!(blob = malloc(len ? len : 1))) {
            err = ERR_NOMEM;
            snprintf(msg, sizeof(msg), "out of memory");
            goto done;
        }
        protobuf_c_message_pack(&stats.base, blob);
        err = jobs_finish_ok(result, blob, len, encode_content_type(spec.format), spec.region.width,
                             spec.region.height, msg, sizeof(msg));
        free(blob);
        if (err == 0)
            outcome = "SUCCEEDED";
    }
done:
    if (err < 0) {
        char msg2[256];
        if (err == ERR_CANCELLED && atomic_load(&srv->shutting_down)) {
            /* The drain stopped it: back in the queue for the next start (or CANCELLED if a
             * client had asked for that meanwhile). */
            outcome = "QUEUED";
            if (jobs_requeue(srv->jobs, work->id, msg2, sizeof(msg2)) < 0)
                log_at(LOG_ERROR, "job %s cannot be requeued: %s", work->id, msg2);
        } else {
            int code = err == ERR_CANCELLED ? JOBS_CODE_CANCELLED : (int)rpc_status_of(err);
            outcome = err == ERR_CANCELLED ? "CANCELLED" : "FAILED";
            if (jobs_finish_error(srv->jobs, work->id, code, err == ERR_CANCELLED ? "cancelled" : msg, msg2,
                                  sizeof(msg2)) < 0)
                log_at(LOG_ERROR, "job %s cannot be finished: %s", work->id, msg2);
        }
    }
    if ((err == 0 ? LOG_INFO : LOG_WARN) >= log_min_level) {
        char fields[768] = "";
        log_kv(fields, sizeof(fields), "job", work->id);
        log_kv(fields, sizeof(fields), "state", outcome);
        if (err == ERR_CANCELLED && atomic_load(&srv->shutting_down))
            log_kv(fields, sizeof(fields), "reason", "drain");
        if (msg[0])
            log_kv(fields, sizeof(fields), "error", msg);
        log_kvf(fields, sizeof(fields), "ms", "%.2f", render_now_ms() - t0);
        log_event(err == 0 ? LOG_INFO : LOG_WARN, "job_run", fields);
    }
    jobs_result_free(result);
    free(json);
    render_spec_dispose(&spec);
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ---- for other front ends (rpc.h) ---- */

int rpc_server_job_packed(rpc_server *srv, const char *id, uint8_t **out, size_t *len)
{
    struct jobs_info info;
    struct job_msg m;
    int err;

    *out = NULL;
    if (!srv->jobs)
        return ERR_UNAVAILABLE;
    if ((err = jobs_get(&info, srv->jobs, id)) < 0)
        return err;
    job_msg_init(&m, &info);
    *len = protobuf_c_message_get_packed_size(&m.job.base);
    if ((*out = malloc(*len ? *len : 1)) != NULL)
        protobuf_c_message_pack(&m.job.base, *out);
    else
        err = ERR_NOMEM;
    job_msg_dispose(&m);
    jobs_info_dispose(&info);
    return err;
}

int rpc_server_jobs_list_packed(rpc_server *srv, unsigned state, size_t limit, uint8_t **out, size_t *len)
{
    Fractal__V1__ListJobsResponse resp = FRACTAL__V1__LIST_JOBS_RESPONSE__INIT;
    struct jobs_info *infos = NULL;
    struct job_msg *msgs = NULL;
    Fractal__V1__Job **ptrs = NULL;
    size_t count = 0;
    int err;

    *out = NULL;
    if (!srv->jobs)
        return ERR_UNAVAILABLE;
    if (state > JOBS_CANCELLED)
        return ERR_INVALID;
    limit = limit == 0 ? LIST_DEFAULT : limit > LIST_MAX ? LIST_MAX : limit;
    if ((err = jobs_list(&infos, &count, srv->jobs, (enum jobs_state)state, limit)) < 0)
        return err;
    err = ERR_NOMEM;
    if (count && (!(msgs = calloc(count, sizeof(*msgs))) || !(ptrs = calloc(count, sizeof(*ptrs)))))
        goto done;
    for (size_t i = 0; i < count; i++) {
        job_msg_init(&msgs[i], &infos[i]);
        ptrs[i] = &msgs[i].job;
    }
    resp.n_jobs = count;
    resp.jobs = ptrs;
    *len = protobuf_c_message_get_packed_size(&resp.base);
    if ((*out = malloc(*len ? *len : 1)) != NULL) {
        protobuf_c_message_pack(&resp.base, *out);
        err = 0;
    }
done:
    for (size_t i = 0; msgs && i < count; i++)
        job_msg_dispose(&msgs[i]);
    free(ptrs);
    free(msgs);
    jobs_info_free_array(infos, count);
    return err;
}
