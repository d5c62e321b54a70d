/* jobs.c: the submit-and-poll flow (SubmitJob, GetJob, CancelJob, ListJobs, waiting for a job) and
 * the server's statistics (GetStats), as plain data owned by the caller. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* What the job calls hand out: the public job, then what it borrows from. */
typedef struct job_impl {
    fractal_job pub;
    fractal_render_options *request;
    Fractal__V1__Job *msg;
} job_impl;

typedef struct job_list_impl {
    fractal_job_list pub;
    fractal_job *jobs;
    fractal_render_options **requests;   /* one per job, NULL where absent */
    Fractal__V1__ListJobsResponse *reply;
} job_list_impl;

typedef struct stats_impl {
    fractal_server_stats pub;
    fractal_method_stats *requests;
    fractal_device_stats *devices;
    Fractal__V1__ServerStats *reply;
} stats_impl;

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

const char *fractal_job_state_name(fractal_job_state state)
{
    switch (state) {
    case FRACTAL_JOB_UNSPECIFIED: return "unspecified";
    case FRACTAL_JOB_QUEUED: return "queued";
    case FRACTAL_JOB_RUNNING: return "running";
    case FRACTAL_JOB_SUCCEEDED: return "succeeded";
    case FRACTAL_JOB_FAILED: return "failed";
    case FRACTAL_JOB_CANCELLED: return "cancelled";
    }
    return "unknown";
}

int fractal_job_state_is_final(fractal_job_state state)
{
    return state == FRACTAL_JOB_SUCCEEDED || state == FRACTAL_JOB_FAILED || state == FRACTAL_JOB_CANCELLED;
}

/* Fills the public job from the wire's; strings stay borrowed from j. The request is converted
 * into a new options struct (*request_out, caller frees), or left NULL when absent or when it does
 * not fit the options' fixed arrays (a job is still worth showing without it). */
static int job_from_wire(fractal_job *out, fractal_render_options **request_out, const Fractal__V1__Job *j)
{
    char ignored[128];

    memset(out, 0, sizeof *out);
    *request_out = NULL;
    out->id = str_or_empty(j->id);
    out->state = (fractal_job_state)j->state;
    if (j->progress) {
        out->progress.rows_done = j->progress->rows_done;
        out->progress.rows_total = j->progress->rows_total;
        out->progress.samples_done = j->progress->samples_done;
        out->progress.samples_total = j->progress->samples_total;
        out->progress.queue_position = j->progress->queue_position;
    }
    if (j->stats) {
        out->has_stats = 1;
        fr_stats_from_wire(&out->stats, j->stats);
    }
    out->error = j->error_code ? fr_error_from_status(j->error_code) : 0;
    out->error_message = str_or_empty(j->error_message);
    out->created_unix_ms = j->created_unix_ms;
    out->started_unix_ms = j->started_unix_ms;
    out->finished_unix_ms = j->finished_unix_ms;
    out->expires_unix_ms = j->expires_unix_ms;
    out->result_bytes = j->result_bytes;
    out->content_type = str_or_empty(j->content_type);
    out->width = j->width;
    out->height = j->height;
    if (j->request) {
        if ((*request_out = malloc(sizeof **request_out)) == NULL)
            return FRACTAL_ENOMEM;
        if (opts_from_request(*request_out, j->request, ignored, sizeof ignored) < 0) {
            free(*request_out);
            *request_out = NULL;
        }
    }
    out->request = *request_out;
    return 0;
}

/* Makes a call whose reply is a Job and hands it out as a fractal_job (or frees it when out is
 * NULL). */
static int job_call(fractal_job **out, fractal_client *client, enum fr_method method, const ProtobufCMessage *req,
                    int retry)
{
    ProtobufCMessage *msg = NULL;
    job_impl *job = NULL;
    int err;

    if ((err = fr_call_unary(&msg, client, method, req, &fractal__v1__job__descriptor, retry)) < 0)
        return err;
    if (out == NULL)
        goto done;
    if ((job = calloc(1, sizeof *job)) == NULL ||
        job_from_wire(&job->pub, &job->request, (Fractal__V1__Job *)msg) < 0) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        free(job);
        goto done;
    }
    job->msg = (Fractal__V1__Job *)msg;
    msg = NULL;
    *out = &job->pub;
done:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

int fractal_job_submit(fractal_job **out, fractal_client *client, const fractal_render_options *opts)
{
    const fractal_render_options defaults = FRACTAL_RENDER_OPTIONS_INIT;
    opts_wire *wire;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_job_submit: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if ((err = opts_check(opts, fr_client_errbuf(client), FR_ERROR_MAX)) < 0)
        return err;
    if ((wire = malloc(sizeof *wire)) == NULL)
        return client_error(client, FRACTAL_ENOMEM, "out of memory");
    opts_to_request(wire, opts);
    /* Not retried: the server may have queued the job before the reply was lost. */
    err = job_call(out, client, FR_M_SUBMIT_JOB, &wire->req.base, 0);
    free(wire);
    return err;
}

/* GetJob and CancelJob: a JobRef in, a Job out. Cancelling is idempotent (a second cancel finds
 * the job cancelled or finished), so both are retried. */
static int job_ref_call(fractal_job **out, fractal_client *client, const char *id, enum fr_method method,
                        const char *fn)
{
    Fractal__V1__JobRef ref = FRACTAL__V1__JOB_REF__INIT;

    if (out)
        *out = NULL;
    if (client == NULL)
        return FRACTAL_EINVAL;
    if (id == NULL)
        return client_error(client, FRACTAL_EINVAL, "%s: id is NULL", fn);
    ref.id = (char *)id; /* read only by the packer */
    return job_call(out, client, method, &ref.base, 1);
}

int fractal_job_get(fractal_job **out, fractal_client *client, const char *id)
{
    if (out == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_job_get: out is NULL") : FRACTAL_EINVAL;
    return job_ref_call(out, client, id, FR_M_GET_JOB, "fractal_job_get");
}

int fractal_job_cancel(fractal_job **out, fractal_client *client, const char *id)
{
    return job_ref_call(out, client, id, FR_M_CANCEL_JOB, "fractal_job_cancel");
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls start at 50 ms, so that a small job is picked up at once, and grow by half each time to
 * 2 s, so that a long one costs the server one cheap call every 2 s. */
#define WAIT_FIRST_MS 50u
#define WAIT_MAX_MS 2000u

int fractal_job_wait(fractal_job **out, fractal_client *client, const char *id, uint32_t timeout_ms,
                     fractal_progress_cb progress, void *payload)
{
    fractal_job *job = NULL;
    uint64_t start, elapsed;
    uint32_t interval = WAIT_FIRST_MS, nap;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_job_wait: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if (id == NULL)
        return client_error(client, FRACTAL_EINVAL, "fractal_job_wait: id is NULL");
    start = monotonic_ms();
    fr_op_begin(client);
    for (;;) {
        if ((err = fractal_job_get(&job, client, id)) < 0)
            break;
        if (fractal_job_state_is_final(job->state)) {
            *out = job;
            job = NULL;
            break;
        }
        if (progress && progress(&job->progress, payload) != 0) {
            err = client_error(client, FRACTAL_ECANCELLED, "cancelled by the progress callback");
            break;
        }
        elapsed = monotonic_ms() - start;
        if (timeout_ms && elapsed >= timeout_ms) {
            err = client_error(client, FRACTAL_EDEADLINE, "job %s is still %s after %u ms", id,
                               fractal_job_state_name(job->state), timeout_ms);
            break;
        }
        nap = interval;
        if (timeout_ms && nap > timeout_ms - elapsed)
            nap = (uint32_t)(timeout_ms - elapsed);
        fractal_job_free(job);
        job = NULL;
        if ((err = fr_sleep(client, nap)) < 0)
            break;
        interval += interval / 2;
        if (interval > WAIT_MAX_MS)
            interval = WAIT_MAX_MS;
    }
    fr_op_end(client);
    fractal_job_free(job);
    return err;
}

void fractal_job_free(fractal_job *job)
{
    job_impl *impl = (job_impl *)job;

    if (impl == NULL)
        return;
    protobuf_c_message_free_unpacked(&impl->msg->base, NULL);
    free(impl->request);
    free(impl);
}

int fractal_list_jobs(fractal_job_list **out, fractal_client *client, uint32_t limit, fractal_job_state state)
{
    Fractal__V1__ListJobsRequest req = FRACTAL__V1__LIST_JOBS_REQUEST__INIT;
    Fractal__V1__ListJobsResponse *reply;
    ProtobufCMessage *msg = NULL;
    job_list_impl *list = NULL;
    size_t i;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_list_jobs: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    req.limit = limit;
    req.state = (Fractal__V1__JobState)state;
    if ((err = fr_call_unary(&msg, client, FR_M_LIST_JOBS, &req.base,
                             &fractal__v1__list_jobs_response__descriptor, 1)) < 0)
        return err;
    reply = (Fractal__V1__ListJobsResponse *)msg;
    if ((list = calloc(1, sizeof *list)) == NULL ||
        (reply->n_jobs && ((list->jobs = calloc(reply->n_jobs, sizeof *list->jobs)) == NULL ||
                           (list->requests = calloc(reply->n_jobs, sizeof *list->requests)) == NULL))) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < reply->n_jobs; i++) {
        if (job_from_wire(&list->jobs[i], &list->requests[i], reply->jobs[i]) < 0) {
            err = client_error(client, FRACTAL_ENOMEM, "out of memory");
            goto done;
        }
    }
    list->reply = reply;
    list->pub.count = reply->n_jobs;
    list->pub.jobs = list->jobs;
    *out = &list->pub;
    list = NULL;
    msg = NULL;
done:
    if (list) {
        for (i = 0; list->requests && i < reply->n_jobs; i++)
            free(list->requests[i]);
        free(list->requests);
        free(list->jobs);
        free(list);
    }
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_job_list_free(fractal_job_list *list)
{
    job_list_impl *impl = (job_list_impl *)list;
    size_t i;

    if (impl == NULL)
        return;
    for (i = 0; i < impl->pub.count; i++)
        free(impl->requests[i]);
    protobuf_c_message_free_unpacked(&impl->reply->base, NULL);
    free(impl->requests);
    free(impl->jobs);
    free(impl);
}

/* ---- stats ----------------------------------------------------------------------------------- */

int fractal_stats_get(fractal_server_stats **out, fractal_client *client)
{
    Fractal__V1__GetStatsRequest req = FRACTAL__V1__GET_STATS_REQUEST__INIT;
    Fractal__V1__ServerStats *reply;
    ProtobufCMessage *msg = NULL;
    stats_impl *st = NULL;
    size_t i;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_stats_get: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if ((err = fr_call_unary(&msg, client, FR_M_GET_STATS, &req.base, &fractal__v1__server_stats__descriptor, 1)) < 0)
        return err;
    reply = (Fractal__V1__ServerStats *)msg;
    if ((st = calloc(1, sizeof *st)) == NULL ||
        (reply->n_requests && (st->requests = calloc(reply->n_requests, sizeof *st->requests)) == NULL) ||
        (reply->n_devices && (st->devices = calloc(reply->n_devices, sizeof *st->devices)) == NULL)) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < reply->n_requests; i++) {
        st->requests[i].method = str_or_empty(reply->requests[i]->method);
        st->requests[i].grpc_status = reply->requests[i]->code;
        st->requests[i].count = reply->requests[i]->count;
    }
    for (i = 0; i < reply->n_devices; i++) {
        st->devices[i].id = str_or_empty(reply->devices[i]->id);
        st->devices[i].busy_ms = reply->devices[i]->busy_ms;
        st->devices[i].tiles = reply->devices[i]->tiles;
        st->devices[i].iterations = reply->devices[i]->iterations;
        st->devices[i].giter_per_s = reply->devices[i]->giter_per_s;
    }
    st->reply = reply;
    st->pub.uptime_s = reply->uptime_s;
    st->pub.n_requests = reply->n_requests;
    st->pub.requests = st->requests;
    st->pub.queue_depth = reply->queue_depth;
    st->pub.running = reply->running;
    st->pub.jobs_held = reply->jobs_held;
    st->pub.n_devices = reply->n_devices;
    st->pub.devices = st->devices;
    st->pub.spool_bytes = reply->spool_bytes;
    if (reply->deep_refs) {
        st->pub.deep_ref_hits = reply->deep_refs->hits;
        st->pub.deep_ref_misses = reply->deep_refs->misses;
        st->pub.deep_refs = reply->deep_refs->entries;
        st->pub.deep_ref_bytes = reply->deep_refs->bytes;
    }
    *out = &st->pub;
    st = NULL;
    msg = NULL;
done:
    if (st) {
        free(st->requests);
        free(st->devices);
        free(st);
    }
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_server_stats_free(fractal_server_stats *stats)
{
    stats_impl *impl = (stats_impl *)stats;

    if (impl == NULL)
        return;
    protobuf_c_message_free_unpacked(&impl->reply->base, NULL);
    free(impl->requests);
    free(impl->devices);
    free(impl);
}
