/* jobs_pg.c: the job store in PostgreSQL, for a fleet: the schema, opening, submitting, reading and
 * cancelling. The claims, finishes and expiry of the lease protocol are jobs_pg_work.c's, the
 * connections jobs_pg_conn.c's, the NOTIFY listener and the heartbeat jobs_pg_threads.c's, the
 * result chunks jobs_pg_results.c's.
 *
 * Ownership. A RUNNING job has an owner (this process's random id with host and pid) and a lease,
 * lease_expires in the database's clock, so servers need not agree on time. The claim takes the
 * oldest QUEUED job, or a RUNNING one whose lease expired, with FOR UPDATE SKIP LOCKED (two claims
 * never wait on or take the same row), counts the attempt and sets owner and lease. The heartbeat
 * renews the leases of this process's jobs; a process that dies stops renewing and its jobs are
 * claimed again after the lease. Each claim also draws a number from a sequence (claim), unique
 * across the fleet even where a requeue uncounts an attempt. Every change a worker makes to its job
 * names owner and claim in the UPDATE's WHERE, so a late finish by a server whose lease was taken
 * changes nothing and gets ERR_PRECONDITION. The workers' side of that protocol is jobs_pg_work.c's.
 *
 * Fleet limits. max_jobs is counted in the submit's transaction under an advisory lock, so it holds
 * exactly across servers; the result budget is checked per chunk (jobs_pg_results.c). */
#include "jobs_pg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "jobs_index.h"
#include "jobs_internal.h"
#include "jobs_pg_internal.h"
#include "log.h"

#define SCHEMA_VERSION 1
/* pg_advisory_xact_lock keys: one serialises schema creation, one the submit count (max_jobs). */
#define LOCK_SCHEMA 0x66726163746c01
#define LOCK_SUBMIT 0x66726163746c02

/* Created at open when missing. seq orders the queue; leases use the database's clock. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS fractald_schema (version integer NOT NULL);"
    "CREATE SEQUENCE IF NOT EXISTS fractald_claims;"
    "CREATE TABLE IF NOT EXISTS fractald_jobs ("
    "  seq bigserial PRIMARY KEY,"
    "  id text NOT NULL UNIQUE,"
    "  state smallint NOT NULL,"
    "  request bytea NOT NULL,"
    "  created_ms bigint NOT NULL,"
    "  started_ms bigint NOT NULL DEFAULT 0,"
    "  finished_ms bigint NOT NULL DEFAULT 0,"
    "  expires_ms bigint NOT NULL DEFAULT 0,"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  cancel_requested boolean NOT NULL DEFAULT false,"
    "  owner text,"
    "  lease_expires timestamptz,"
    "  error_code integer NOT NULL DEFAULT 0,"
    "  error_message text NOT NULL DEFAULT '',"
    "  stats bytea,"
    "  content_type text NOT NULL DEFAULT '',"
    "  width bigint NOT NULL DEFAULT 0,"
    "  height bigint NOT NULL DEFAULT 0,"
    "  result_bytes bigint NOT NULL DEFAULT 0,"
    "  result_crc bigint NOT NULL DEFAULT 0,"
    "  claim bigint NOT NULL DEFAULT 0,"
    "  result_claim bigint NOT NULL DEFAULT 0,"
    "  rows_done bigint NOT NULL DEFAULT 0,"
    "  rows_total bigint NOT NULL DEFAULT 0,"
    "  samples_done bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS fractald_jobs_queued ON fractald_jobs (seq) WHERE state = 1;"
    "CREATE INDEX IF NOT EXISTS fractald_jobs_running ON fractald_jobs (lease_expires) WHERE state = 2;"
    "CREATE INDEX IF NOT EXISTS fractald_jobs_done ON fractald_jobs (expires_ms) WHERE state >= 3;"
    "CREATE TABLE IF NOT EXISTS fractald_job_result_chunks ("
    "  job_seq bigint NOT NULL REFERENCES fractald_jobs (seq) ON DELETE CASCADE,"
    "  claim bigint NOT NULL,"
    "  chunk integer NOT NULL,"
    "  len integer NOT NULL,"
    "  data bytea NOT NULL,"
    "  PRIMARY KEY (job_seq, claim, chunk));";

/* The columns a jobs_info is filled from (fill_info), in order; the queue position comes last. */
#define INFO_COLUMNS                                                                                        \
    "id, state, cancel_requested, attempts, rows_done, rows_total, samples_done, created_ms, started_ms, " \
    "finished_ms, expires_ms, error_code, error_message, request, stats, content_type, width, height, "   \
    "result_bytes, seq"

/* ---- helpers the backend's files share ---- */

struct pg_run *jobs_pg_find_run(struct jobs_pg *pg, const char *id)
{
    for (struct pg_run *r = pg->running; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

void jobs_pg_wake(struct jobs_pg *pg)
{
    pthread_mutex_lock(&pg->lock);
    pthread_cond_broadcast(&pg->queued);
    pthread_mutex_unlock(&pg->lock);
    pthread_mutex_lock(&pg->wake_lock);
    if (pg->wake)
        pg->wake(pg->wake_ctx);
    pthread_mutex_unlock(&pg->wake_lock);
}

void jobs_pg_drop_run(struct jobs_pg *pg, struct pg_run *r)
{
    pthread_mutex_lock(&pg->lock);
    for (struct pg_run **p = &pg->running; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&pg->lock);
    free(r);
}

/* ---- opening ---- */

/* Creates the tables if missing and checks the schema version, in one transaction that holds an
 * advisory lock, so servers starting together do not race on CREATE TABLE IF NOT EXISTS. */
static int ensure_schema(PGconn *c, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    int64_t version;
    int err;

    jobs_pg_p_int(&p, LOCK_SCHEMA);
    if ((err = jobs_pg_run(c, "BEGIN", NULL, msg, msglen)) < 0 ||
        (err = jobs_pg_run(c, "SELECT pg_advisory_xact_lock($1)", &p, msg, msglen)) < 0 ||
        (err = jobs_pg_run(c, schema_sql, NULL, msg, msglen)) < 0)
        goto done;
    if (!(r = jobs_pg_exec(c, "SELECT max(version) FROM fractald_schema", NULL, 0, &err, msg, msglen)))
        goto done;
    version = PQgetisnull(r, 0, 0) ? 0 : jobs_pg_int(r, 0, 0);
    if (version > SCHEMA_VERSION) {
        jobs_set_msg(msg, msglen, "the job store database has schema version %" PRId64 ", from a newer fractald "
                     "(this one knows %d)", version, SCHEMA_VERSION);
        err = ERR_PRECONDITION;
        goto done;
    }
    if (version == 0) {
        struct pg_params v = {0};
        jobs_pg_p_int(&v, SCHEMA_VERSION);
        if ((err = jobs_pg_run(c, "INSERT INTO fractald_schema (version) VALUES ($1)", &v, msg, msglen)) < 0)
            goto done;
    }
    err = jobs_pg_run(c, "COMMIT", NULL, msg, msglen);
done:
    PQclear(r);
    if (err < 0) {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    return err;
}

int jobs_pg_open(struct jobs_pg **out, const struct jobs_options *opts, char *msg, size_t msglen)
{
    struct jobs_pg *pg = NULL;
    PGconn *c = NULL;
    uint64_t rnd = 0;
    char host[64] = "?";
    int err = 0;

    *out = NULL;
    if (opts->lease_ms < 0 || (opts->lease_ms > 0 && opts->lease_ms < 100)) {
        jobs_set_msg(msg, msglen, "job lease must be at least 100 ms, got %lld", (long long)opts->lease_ms);
        return ERR_INVALID;
    }
    if (!(pg = calloc(1, sizeof(*pg))) || !(pg->conninfo = strdup(opts->job_store))) {
        free(pg);
        jobs_set_msg(msg, msglen, "out of memory opening the job store");
        return ERR_NOMEM;
    }
    pg->opts = *opts;
    pg->opts.job_store = pg->conninfo;
    pg->opts.spool_dir = NULL;
    pg->lease_ms = opts->lease_ms > 0 ? opts->lease_ms : JOBS_DEFAULT_LEASE_MS;
    pg->stop_pipe[0] = pg->stop_pipe[1] = -1;
    pthread_mutex_init(&pg->pool_lock, NULL);
    pthread_cond_init(&pg->pool_freed, NULL);
    pthread_mutex_init(&pg->wake_lock, NULL);
    pthread_mutex_init(&pg->lock, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&pg->queued, &ca);
        pthread_cond_init(&pg->tick, &ca);
        pthread_condattr_destroy(&ca);
    }
    /* 64 random bits tell two processes apart even with the same host and pid (containers). */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    gethostname(host, sizeof(host) - 1);
    snprintf(pg->owner, sizeof(pg->owner), "%016" PRIx64 "@%s/%d", rnd, host, (int)getpid());

    /* Connected directly, not through the pool, so a malformed conninfo stays ERR_INVALID (the
     * user's to fix) rather than an outage; the connection then joins the pool. */
    if ((err = jobs_pg_connect(&c, pg->conninfo, msg, msglen)) < 0 || (err = ensure_schema(c, msg, msglen)) < 0)
        goto done;
    pg->conns[0] = c;
    c = NULL;
    if ((err = jobs_pg_threads_start(pg, msg, msglen)) < 0)
        goto done;
    log_at(LOG_INFO, "job store: PostgreSQL, owner %s, lease %lld ms", pg->owner, (long long)pg->lease_ms);
    *out = pg;
    pg = NULL;
done:
    PQfinish(c);
    jobs_pg_close(pg);
    return err;
}

void jobs_pg_close(struct jobs_pg *pg)
{
    if (!pg)
        return;
    jobs_pg_threads_stop(pg);
    /* Leases of jobs this process still holds end now, so another server takes them over at once
     * instead of after the lease (as after a crash, the attempt stays counted). */
    if (pg->running) {
        PGconn *c;
        struct pg_params p = {0};
        jobs_pg_p_text(&p, pg->owner);
        if (jobs_pg_acquire(pg, &c, NULL, 0) == 0) {
            jobs_pg_run(c, "UPDATE fractald_jobs SET lease_expires = now() WHERE state = 2 AND owner = $1", &p,
                        NULL, 0);
            jobs_pg_release(pg, c);
        }
    }
    while (pg->running) {
        struct pg_run *r = pg->running;
        pg->running = r->next;
        free(r);
    }
    jobs_pg_pool_dispose(pg);
    pthread_cond_destroy(&pg->queued);
    pthread_cond_destroy(&pg->tick);
    pthread_cond_destroy(&pg->pool_freed);
    pthread_mutex_destroy(&pg->lock);
    pthread_mutex_destroy(&pg->pool_lock);
    pthread_mutex_destroy(&pg->wake_lock);
    free(pg->conninfo);
    free(pg);
}

void jobs_pg_set_wake(struct jobs_pg *pg, void (*wake)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&pg->wake_lock);
    pg->wake = wake;
    pg->wake_ctx = ctx;
    pthread_mutex_unlock(&pg->wake_lock);
}

/* ---- submitting ---- */

int jobs_pg_submit(struct jobs_pg *pg, const void *request, size_t len, char id_out[JOBS_ID_SIZE], char *msg,
                   size_t msglen)
{
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    char id[JOBS_ID_SIZE];
    int64_t held, bytes;
    bool stopping;
    int err;

    id_out[0] = '\0';
    if (!request && len > 0) {
        jobs_set_msg(msg, msglen, "jobs_submit: request is NULL with %zu bytes", len);
        return ERR_INVALID;
    }
    pthread_mutex_lock(&pg->lock);
    stopping = pg->stopping;
    pthread_mutex_unlock(&pg->lock);
    if (stopping) {
        jobs_set_msg(msg, msglen, "the server is shutting down and takes no new jobs");
        return ERR_UNAVAILABLE;
    }
    if ((err = jobs_pg_expire(pg, jobs_now_ms())) < 0) {
        jobs_set_msg(msg, msglen, "job store: cannot delete expired jobs (%s)", err_name(err));
        return err;
    }
    if ((err = jobs_id_generate(id)) < 0) {
        jobs_set_msg(msg, msglen, "getrandom failed: %s", strerror(errno));
        return err;
    }
    if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) < 0)
        return err;
    /* The advisory lock makes the count and the insert one step across the fleet, so max_jobs is
     * exact; it serialises submissions, which cost a millisecond or two each. */
    jobs_pg_p_int(&p, LOCK_SUBMIT);
    if ((err = jobs_pg_run(c, "BEGIN", NULL, msg, msglen)) < 0 ||
        (err = jobs_pg_run(c, "SELECT pg_advisory_xact_lock($1)", &p, msg, msglen)) < 0)
        goto done;
    if (!(r = jobs_pg_exec(c, "SELECT (SELECT count(*) FROM fractald_jobs), "
                              "(SELECT coalesce(sum(len), 0) FROM fractald_job_result_chunks)",
                           NULL, 0, &err, msg, msglen)))
        goto done;
    held = jobs_pg_int(r, 0, 0);
    bytes = jobs_pg_int(r, 0, 1);
    if (held >= (int64_t)pg->opts.max_jobs) {
        err = ERR_EXHAUSTED;
        jobs_set_msg(msg, msglen, "the job store holds %" PRId64 " jobs, its limit; finished jobs are deleted %lld s "
                     "after they finish", held, (long long)(pg->opts.retention_ms / 1000));
        goto done;
    }
    if ((uint64_t)bytes >= pg->opts.disk_budget) {
        err = ERR_EXHAUSTED;
        jobs_set_msg(msg, msglen, "job results fill the job store's budget (%" PRId64 " of %llu bytes); they are "
                     "deleted %lld s after they finish", bytes, (unsigned long long)pg->opts.disk_budget,
                     (long long)(pg->opts.retention_ms / 1000));
        goto done;
    }
    memset(&p, 0, sizeof(p));
    jobs_pg_p_text(&p, id);
    jobs_pg_p_bytes(&p, request, len);
    jobs_pg_p_int(&p, jobs_now_ms());
    /* The NOTIFY is delivered at commit, to every server's listener. */
    if ((err = jobs_pg_run(c, "INSERT INTO fractald_jobs (id, state, request, created_ms) VALUES ($1, 1, $2, $3)",
                           &p, msg, msglen)) < 0 ||
        (err = jobs_pg_run(c, "NOTIFY " JOBS_PG_CHANNEL ", 'queued'", NULL, msg, msglen)) < 0 ||
        (err = jobs_pg_run(c, "COMMIT", NULL, msg, msglen)) < 0)
        goto done;
    memcpy(id_out, id, sizeof(id));
    if (LOG_INFO >= log_min_level) {
        char fields[256];
        jobs_log_fields(fields, sizeof(fields), id, "QUEUED");
        log_kvf(fields, sizeof(fields), "request_bytes", "%zu", len);
        log_event(LOG_INFO, "job", fields);
    }
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    return err;
}

/* ---- reading ---- */

void *jobs_pg_cell_bytes(const PGresult *r, int row, int col, size_t *len)
{
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    void *copy;

    *len = 0;
    if (!raw)
        return NULL;
    copy = jobs_memdup(raw, n);
    PQfreemem(raw);
    if (copy)
        *len = n;
    return copy;
}

/* Fills *out from row `row` of a result with INFO_COLUMNS, then the queue position. Overlays the
 * live progress of a job this process runs. Returns 0 or ERR_NOMEM (*out zeroed). */
static int fill_info(struct jobs_pg *pg, struct jobs_info *out, const PGresult *r, int row)
{
    struct pg_run *run;

    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", PQgetvalue(r, row, 0));
    out->state = (enum jobs_state)jobs_pg_int(r, row, 1);
    out->cancel_requested = PQgetvalue(r, row, 2)[0] == 't';
    out->attempts = (uint32_t)jobs_pg_int(r, row, 3);
    out->rows_done = (uint32_t)jobs_pg_int(r, row, 4);
    out->rows_total = (uint32_t)jobs_pg_int(r, row, 5);
    out->samples_done = (uint64_t)jobs_pg_int(r, row, 6);
    out->created_ms = jobs_pg_int(r, row, 7);
    out->started_ms = jobs_pg_int(r, row, 8);
    out->finished_ms = jobs_pg_int(r, row, 9);
    out->expires_ms = jobs_pg_int(r, row, 10);
    out->error_code = (int32_t)jobs_pg_int(r, row, 11);
    out->error_message = strdup(PQgetvalue(r, row, 12));
    out->request = jobs_pg_cell_bytes(r, row, 13, &out->request_len);
    if (!PQgetisnull(r, row, 14) && !(out->stats = jobs_pg_cell_bytes(r, row, 14, &out->stats_len)))
        goto nomem;
    snprintf(out->content_type, sizeof(out->content_type), "%s", PQgetvalue(r, row, 15));
    out->width = (uint32_t)jobs_pg_int(r, row, 16);
    out->height = (uint32_t)jobs_pg_int(r, row, 17);
    out->result_bytes = (uint64_t)jobs_pg_int(r, row, 18);
    out->queue_position = out->state == JOBS_QUEUED ? (uint32_t)jobs_pg_int(r, row, 20) : 0;
    if (!out->error_message || !out->request)
        goto nomem;
    if (out->state == JOBS_RUNNING) {
        pthread_mutex_lock(&pg->lock);
        if ((run = jobs_pg_find_run(pg, out->id)) && !run->lost) {
            out->rows_done = run->rows_done;
            out->rows_total = run->rows_total;
            out->samples_done = run->samples_done;
        }
        pthread_mutex_unlock(&pg->lock);
    }
    return 0;
nomem:
    jobs_info_dispose(out);
    return ERR_NOMEM;
}

int jobs_pg_get(struct jobs_info *out, struct jobs_pg *pg, const char *id)
{
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    int err;

    memset(out, 0, sizeof(*out));
    if (!jobs_id_valid(id))
        return ERR_NOT_FOUND;
    if ((err = jobs_pg_acquire(pg, &c, NULL, 0)) < 0)
        return err;
    jobs_pg_p_text(&p, id);
    r = jobs_pg_exec(c, "SELECT " INFO_COLUMNS ", CASE WHEN j.state = 1 THEN (SELECT count(*) FROM fractald_jobs q "
                        "WHERE q.state = 1 AND q.seq <= j.seq) ELSE 0 END FROM fractald_jobs j WHERE id = $1",
                     &p, 0, &err, NULL, 0);
    if (r && PQntuples(r) == 0)
        err = ERR_NOT_FOUND;
    else if (r)
        err = fill_info(pg, out, r, 0);
    PQclear(r);
    jobs_pg_release(pg, c);
    return err;
}

int jobs_pg_list(struct jobs_info **out, size_t *count, struct jobs_pg *pg, enum jobs_state state, size_t limit)
{
    struct pg_params p = {0};
    struct jobs_info *infos = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    size_t n = 0, rows;
    int err;

    *out = NULL;
    *count = 0;
    if ((err = jobs_pg_acquire(pg, &c, NULL, 0)) < 0)
        return err;
    jobs_pg_p_int(&p, (int64_t)state);
    jobs_pg_p_int(&p, limit ? (int64_t)limit : INT64_MAX);
    /* The window numbers the queue before ORDER BY and LIMIT apply; filtering by state first keeps
     * every QUEUED row whenever QUEUED rows are wanted at all, so the numbers are right. */
    r = jobs_pg_exec(c, "SELECT " INFO_COLUMNS ", count(*) FILTER (WHERE state = 1) OVER (ORDER BY seq) "
                        "FROM fractald_jobs WHERE $1 = 0 OR state = $1 ORDER BY seq DESC LIMIT $2",
                     &p, 0, &err, NULL, 0);
    if (!r)
        goto done;
    rows = (size_t)PQntuples(r);
    if (rows && !(infos = calloc(rows, sizeof(*infos)))) {
        err = ERR_NOMEM;
        goto done;
    }
    for (; n < rows; n++)
        if ((err = fill_info(pg, &infos[n], r, (int)n)) < 0)
            goto done;
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    if (err < 0) {
        jobs_info_free_array(infos, n);
        return err;
    }
    *out = infos;
    *count = n;
    return 0;
}

int jobs_pg_queue_position(struct jobs_pg *pg, const char *id)
{
    struct jobs_info info;
    int err = jobs_pg_get(&info, pg, id);

    if (err < 0)
        return err;
    err = (int)info.queue_position;
    jobs_info_dispose(&info);
    return err;
}

void jobs_pg_get_stats(struct jobs_stats *out, struct jobs_pg *pg)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    int err;

    memset(out, 0, sizeof(*out));
    out->max_jobs = pg->opts.max_jobs;
    out->disk_budget = pg->opts.disk_budget;
    if (jobs_pg_acquire(pg, &c, NULL, 0) < 0)
        return;
    r = jobs_pg_exec(c, "SELECT count(*), count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2), "
                        "count(*) FILTER (WHERE state = 3), count(*) FILTER (WHERE state = 4), "
                        "count(*) FILTER (WHERE state = 5), "
                        "(SELECT coalesce(sum(len), 0) FROM fractald_job_result_chunks) FROM fractald_jobs",
                     NULL, 0, &err, NULL, 0);
    if (r) {
        out->held = (uint32_t)jobs_pg_int(r, 0, 0);
        out->queued = (uint32_t)jobs_pg_int(r, 0, 1);
        out->running = (uint32_t)jobs_pg_int(r, 0, 2);
        out->succeeded = (uint32_t)jobs_pg_int(r, 0, 3);
        out->failed = (uint32_t)jobs_pg_int(r, 0, 4);
        out->cancelled = (uint32_t)jobs_pg_int(r, 0, 5);
        out->spool_bytes = (uint64_t)jobs_pg_int(r, 0, 6);
    }
    PQclear(r);
    jobs_pg_release(pg, c);
}

/* ---- cancelling ---- */

int jobs_pg_cancel(struct jobs_pg *pg, const char *id, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t now = jobs_now_ms();
    int err;

    if (!jobs_id_valid(id)) {
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        return ERR_NOT_FOUND;
    }
    if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) < 0)
        return err;
    jobs_pg_p_text(&p, id);
    jobs_pg_p_int(&p, now);
    jobs_pg_p_int(&p, now + pg->opts.retention_ms);
    /* One statement: a QUEUED job is CANCELLED, a RUNNING one gets the flag (its owner's heartbeat,
     * or the NOTIFY below, stops the render), a finished one is left alone. old tells which. */
    r = jobs_pg_exec(c,
        "WITH old AS (SELECT seq, state, cancel_requested FROM fractald_jobs WHERE id = $1 FOR UPDATE) "
        "UPDATE fractald_jobs j SET "
        "  state = CASE WHEN old.state = 1 THEN 5 ELSE j.state END,"
        "  cancel_requested = j.cancel_requested OR old.state = 2,"
        "  error_code = CASE WHEN old.state = 1 THEN 1 ELSE j.error_code END,"
        "  error_message = CASE WHEN old.state = 1 THEN 'cancelled before it started' ELSE j.error_message END,"
        "  finished_ms = CASE WHEN old.state = 1 THEN $2 ELSE j.finished_ms END,"
        "  expires_ms = CASE WHEN old.state = 1 THEN $3 ELSE j.expires_ms END "
        "FROM old WHERE j.seq = old.seq RETURNING old.state, old.cancel_requested",
        &p, 0, &err, msg, msglen);
    if (!r)
        goto done;
    if (PQntuples(r) == 0) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id);
        goto done;
    }
    if (jobs_pg_int(r, 0, 0) == JOBS_QUEUED) {
        jobs_log_finish(LOG_INFO, id, JOBS_CANCELLED, JOBS_CODE_CANCELLED, "cancelled before it started", NULL);
    } else if (jobs_pg_int(r, 0, 0) == JOBS_RUNNING && PQgetvalue(r, 0, 1)[0] != 't') {
        struct pg_params n = {0};
        char payload[64];
        struct pg_run *run;

        pthread_mutex_lock(&pg->lock);
        if ((run = jobs_pg_find_run(pg, id)))
            atomic_store(&run->cancel, 1);
        pthread_mutex_unlock(&pg->lock);
        /* Tells the owner at once rather than at its next renewal; losing it costs only that wait. */
        snprintf(payload, sizeof(payload), "cancel %s", id);
        jobs_pg_p_text(&n, payload);
        jobs_pg_run(c, "SELECT pg_notify('" JOBS_PG_CHANNEL "', $1)", &n, NULL, 0);
        jobs_log_job(LOG_INFO, id, "RUNNING", "cancel", "requested");
    }
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    return err;
}
