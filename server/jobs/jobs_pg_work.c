/* jobs_pg_work.c: the workers' side of the PostgreSQL store's lease protocol (jobs_pg.c's header
 * describes it): claiming a job, finishing or requeueing it only while this process owns it, and
 * expiry, which also ends jobs whose dead server may not get another attempt. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "jobs_internal.h"
#include "jobs_pg.h"
#include "jobs_pg_internal.h"
#include "log.h"

/* ---- workers ---- */

/* One claim: the oldest QUEUED job or RUNNING one whose lease expired (and that may still run).
 * Returns 0 with *out filled, ERR_NOT_FOUND when there is none, or an error. */
static int claim(struct jobs_pg *pg, struct jobs_work *out, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    struct pg_run *run = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t started = jobs_now_ms();
    bool takeover;
    int err;

    if (!(run = calloc(1, sizeof(*run)))) {
        jobs_set_msg(msg, msglen, "out of memory starting a job");
        return ERR_NOMEM;
    }
    if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) < 0)
        goto done;
    jobs_pg_p_text(&p, pg->owner);
    jobs_pg_p_int(&p, pg->lease_ms);
    jobs_pg_p_int(&p, started);
    jobs_pg_p_int(&p, pg->opts.max_attempts);
    /* The attempt is committed before the render starts, so a job that kills its server is
     * counted (max_attempts) even though its render never reports. A lapsed lease of this very
     * process is left to other servers: its worker still runs the job, and two runs of one id
     * here could not be told apart by the id-keyed calls of jobs.h. */
    r = jobs_pg_exec(c,
        "UPDATE fractald_jobs j SET state = 2, owner = $1, lease_expires = now() + $2 * interval '1 millisecond',"
        "  attempts = j.attempts + 1, claim = nextval('fractald_claims'), started_ms = $3,"
        "  rows_done = 0, rows_total = 0, samples_done = 0 "
        "FROM (SELECT seq, state, owner FROM fractald_jobs WHERE state = 1 OR (state = 2 AND lease_expires < now() "
        "      AND NOT cancel_requested AND ($4 = 0 OR attempts < $4) AND owner IS DISTINCT FROM $1) "
        "      ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) c "
        "WHERE j.seq = c.seq RETURNING j.id, j.seq, j.request, j.created_ms, j.attempts, c.state, c.owner, j.claim",
        &p, 0, &err, msg, msglen);
    if (!r)
        goto done;
    if (PQntuples(r) == 0) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job is queued");
        goto done;
    }
    snprintf(run->id, sizeof(run->id), "%s", PQgetvalue(r, 0, 0));
    run->seq = jobs_pg_int(r, 0, 1);
    run->attempt = (uint32_t)jobs_pg_int(r, 0, 4);
    run->claim = jobs_pg_int(r, 0, 7);
    takeover = jobs_pg_int(r, 0, 5) == JOBS_RUNNING;
    if (!(out->request = jobs_pg_cell_bytes(r, 0, 2, &out->request_len))) {
        /* The claim stands; its lease runs out and another worker takes the job. */
        err = ERR_NOMEM;
        jobs_set_msg(msg, msglen, "out of memory starting job %s", run->id);
        goto done;
    }
    memcpy(out->id, run->id, sizeof(out->id));
    out->created_ms = jobs_pg_int(r, 0, 3);
    out->started_ms = started;
    out->attempts = run->attempt;
    out->cancel = &run->cancel;
    pthread_mutex_lock(&pg->lock);
    run->next = pg->running;
    pg->running = run;
    pthread_mutex_unlock(&pg->lock);
    if (LOG_INFO >= log_min_level) {
        char extra[384] = "";
        log_kv(extra, sizeof(extra), "owner", pg->owner);
        if (takeover) {
            log_kv(extra, sizeof(extra), "reason", "lease expired");
            log_kv(extra, sizeof(extra), "previous_owner", PQgetvalue(r, 0, 6));
        }
        jobs_log_running(out->id, run->attempt, started - out->created_ms, extra);
    }
    run = NULL;
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    free(run);
    return err;
}

int jobs_pg_next_queued(struct jobs_work *out, struct jobs_pg *pg, int timeout_ms, char *msg, size_t msglen)
{
    struct timespec deadline;
    int err;

    memset(out, 0, sizeof(*out));
    jobs_deadline(&deadline, timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        bool stopping, timed_out = false;

        pthread_mutex_lock(&pg->lock);
        stopping = pg->stopping;
        pthread_mutex_unlock(&pg->lock);
        if (stopping) {
            jobs_set_msg(msg, msglen, "the job store is stopping");
            return ERR_UNAVAILABLE;
        }
        if ((err = claim(pg, out, msg, msglen)) != ERR_NOT_FOUND || timeout_ms == 0)
            return err;
        /* Woken by a NOTIFY, by the listener's periodic poll (a lease that expired sends no
         * NOTIFY) or by jobs_pg_stop. */
        pthread_mutex_lock(&pg->lock);
        if (!pg->stopping) {
            if (timeout_ms > 0)
                timed_out = pthread_cond_timedwait(&pg->queued, &pg->lock, &deadline) == ETIMEDOUT;
            else
                pthread_cond_wait(&pg->queued, &pg->lock);
        }
        pthread_mutex_unlock(&pg->lock);
        if (timed_out) {
            jobs_set_msg(msg, msglen, "no job is queued");
            return ERR_NOT_FOUND;
        }
    }
}

void jobs_pg_stop(struct jobs_pg *pg)
{
    pthread_mutex_lock(&pg->lock);
    pg->stopping = true;
    pthread_cond_broadcast(&pg->queued);
    pthread_mutex_unlock(&pg->lock);
}

int jobs_pg_progress(struct jobs_pg *pg, const char *id, uint32_t rows_done, uint32_t rows_total,
                     uint64_t samples_done)
{
    struct pg_run *run;

    /* In memory only; the heartbeat takes it to the database with the next renewal. */
    pthread_mutex_lock(&pg->lock);
    if ((run = jobs_pg_find_run(pg, id))) {
        run->rows_done = rows_done;
        run->rows_total = rows_total;
        run->samples_done = samples_done;
    }
    pthread_mutex_unlock(&pg->lock);
    return run ? 0 : ERR_NOT_FOUND;
}

int jobs_pg_not_mine(struct jobs_pg *pg, PGconn *c, const char *id, bool *cancelled, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    PGresult *r;
    int err;

    if (cancelled)
        *cancelled = false;
    jobs_pg_p_text(&p, id);
    if (!(r = jobs_pg_exec(c, "SELECT state, owner, cancel_requested FROM fractald_jobs WHERE id = $1", &p, 0, &err,
                           msg, msglen)))
        return err;
    if (PQntuples(r) == 0) {
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id);
        err = ERR_NOT_FOUND;
    } else if (jobs_pg_int(r, 0, 0) != JOBS_RUNNING) {
        jobs_set_msg(msg, msglen, "job %s is %s, not RUNNING", id,
                     jobs_state_name((enum jobs_state)jobs_pg_int(r, 0, 0)));
        err = ERR_PRECONDITION;
    } else if (strcmp(PQgetvalue(r, 0, 1), pg->owner) == 0 && PQgetvalue(r, 0, 2)[0] == 't') {
        jobs_set_msg(msg, msglen, "job %s is being cancelled", id);
        err = ERR_PRECONDITION;
        if (cancelled)
            *cancelled = true;
    } else {
        jobs_set_msg(msg, msglen, "job %s was taken over by %s after this server's lease expired; its result is "
                     "dropped", id, PQgetvalue(r, 0, 1));
        err = ERR_PRECONDITION;
    }
    PQclear(r);
    return err;
}

/* The record of job `id` if this process runs it, else NULL, marked as finishing. It stays listed
 * (so the heartbeat keeps renewing its lease) until the finish is done with the database and calls
 * jobs_pg_drop_run. */
static struct pg_run *take_run(struct jobs_pg *pg, const char *id)
{
    struct pg_run *run;

    pthread_mutex_lock(&pg->lock);
    if ((run = id ? jobs_pg_find_run(pg, id) : NULL))
        run->finishing = true;
    pthread_mutex_unlock(&pg->lock);
    return run;
}

/* Starts a worker's change to its job `id`: a connection in *c, the run in *run, and the
 * parameters that name the job and prove ownership in p ($1 seq, $2 owner, $3 claim). Returns 0,
 * or the error (with msg) of a job this process does not run or of the pool; *c and *run may be
 * set even then, for the caller's cleanup. */
static int start_change(struct jobs_pg *pg, const char *id, struct pg_run **run, PGconn **c, struct pg_params *p,
                        char *msg, size_t msglen)
{
    int err;

    *run = take_run(pg, id);
    if ((err = jobs_pg_acquire(pg, c, msg, msglen)) < 0)
        return err;
    if (!*run)
        return jobs_pg_not_mine(pg, *c, id ? id : "", NULL, msg, msglen);
    jobs_pg_p_int(p, (*run)->seq);
    jobs_pg_p_text(p, pg->owner);
    jobs_pg_p_int(p, (*run)->claim);
    return 0;
}

int jobs_pg_finish_error(struct jobs_pg *pg, const char *id, int32_t code, const char *message, char *msg,
                         size_t msglen)
{
    struct pg_params p = {0};
    struct pg_run *run = NULL;
    enum jobs_state state = code == JOBS_CODE_CANCELLED ? JOBS_CANCELLED : JOBS_FAILED;
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t now = jobs_now_ms();
    int err;

    if ((err = start_change(pg, id, &run, &c, &p, msg, msglen)) < 0)
        goto done;
    jobs_pg_p_int(&p, state);
    jobs_pg_p_int(&p, code);
    jobs_pg_p_text(&p, message ? message : "");
    jobs_pg_p_int(&p, now);
    jobs_pg_p_int(&p, now + pg->opts.retention_ms);
    jobs_pg_p_int(&p, run->rows_done);
    jobs_pg_p_int(&p, run->rows_total);
    jobs_pg_p_int(&p, (int64_t)run->samples_done);
    if (!(r = jobs_pg_exec(c, "UPDATE fractald_jobs SET state = $4, error_code = $5, error_message = $6,"
                              "  finished_ms = $7, expires_ms = $8, owner = NULL, lease_expires = NULL,"
                              "  rows_done = $9, rows_total = $10, samples_done = $11 "
                              "WHERE seq = $1 AND state = 2 AND owner = $2 AND claim = $3 RETURNING 1",
                           &p, 0, &err, msg, msglen)))
        goto done;
    if (PQntuples(r) == 0) {
        err = jobs_pg_not_mine(pg, c, id, NULL, msg, msglen);
        goto done;
    }
    jobs_log_finish(LOG_INFO, id, state, code, message ? message : "", NULL);
done:
    /* A job without a result keeps no chunks, whoever wrote them. */
    if (c && run)
        jobs_pg_drop_chunks(c, run->seq, run->claim);
    PQclear(r);
    jobs_pg_release(pg, c);
    /* The job leaves this process even if the database did not hear of it: its lease then runs
     * out and another worker runs it again. */
    if (run)
        jobs_pg_drop_run(pg, run);
    return err;
}

int jobs_pg_requeue(struct jobs_pg *pg, const char *id, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    struct pg_run *run = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    bool cancelled = false;
    int err;

    if ((err = start_change(pg, id, &run, &c, &p, msg, msglen)) < 0)
        goto done;
    if (!(r = jobs_pg_exec(c, "UPDATE fractald_jobs SET state = 1, attempts = greatest(attempts - 1, 0),"
                              "  started_ms = 0, rows_done = 0, rows_total = 0, samples_done = 0, owner = NULL,"
                              "  lease_expires = NULL "
                              "WHERE seq = $1 AND state = 2 AND owner = $2 AND claim = $3 AND NOT cancel_requested "
                              "RETURNING 1", &p, 0, &err, msg, msglen)))
        goto done;
    if (PQntuples(r) == 0) {
        /* Still ours and RUNNING but its cancel was requested: that wins over the requeue. */
        err = jobs_pg_not_mine(pg, c, id, &cancelled, msg, msglen);
        goto done;
    }
    jobs_pg_run(c, "NOTIFY " JOBS_PG_CHANNEL ", 'queued'", NULL, NULL, 0);
    jobs_log_job(LOG_INFO, id, "QUEUED", "reason", "requeued by its worker");
done:
    if (c && run && !cancelled)
        jobs_pg_drop_chunks(c, run->seq, run->claim);
    PQclear(r);
    jobs_pg_release(pg, c);
    if (cancelled)
        return jobs_pg_finish_error(pg, id, JOBS_CODE_CANCELLED, "cancelled", msg, msglen);
    if (run)
        jobs_pg_drop_run(pg, run);
    return err;
}

/* ---- expiry ---- */

int jobs_pg_expire(struct jobs_pg *pg, int64_t now_ms)
{
    struct pg_params p = {0}, q = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    char text[160];
    int err, n = 0;

    if ((err = jobs_pg_acquire(pg, &c, NULL, 0)) < 0)
        return err;
    /* Jobs whose server died and that may not run again end here: cancelled ones CANCELLED, those
     * started max_attempts times FAILED (ABORTED), as a restart of the SQLite store ends them. */
    snprintf(text, sizeof(text), "its server stopped during each of its attempts; not run again");
    jobs_pg_p_int(&q, now_ms);
    jobs_pg_p_int(&q, now_ms + pg->opts.retention_ms);
    jobs_pg_p_int(&q, pg->opts.max_attempts);
    jobs_pg_p_text(&q, text);
    if (!(r = jobs_pg_exec(c, "UPDATE fractald_jobs SET state = CASE WHEN cancel_requested THEN 5 ELSE 4 END,"
                              "  error_code = CASE WHEN cancel_requested THEN 1 ELSE 10 END,"
                              "  error_message = CASE WHEN cancel_requested THEN "
                              "    'cancelled; its server stopped before the render did' ELSE $4 END,"
                              "  finished_ms = $1, expires_ms = $2, owner = NULL, lease_expires = NULL "
                              "WHERE state = 2 AND lease_expires < now() AND (cancel_requested OR "
                              "  ($3 > 0 AND attempts >= $3)) RETURNING id, state, error_code, error_message",
                           &q, 0, &err, NULL, 0)))
        goto done;
    for (int i = 0; i < PQntuples(r); i++)
        jobs_log_finish(LOG_WARN, PQgetvalue(r, i, 0), (enum jobs_state)jobs_pg_int(r, i, 1),
                        (int32_t)jobs_pg_int(r, i, 2), PQgetvalue(r, i, 3), " at=expiry");
    PQclear(r);

    /* SKIP LOCKED: servers expiring at once each delete different rows, none waits for another.
     * The chunks of the results go with their jobs (ON DELETE CASCADE). */
    jobs_pg_p_int(&p, now_ms);
    if (!(r = jobs_pg_exec(c, "DELETE FROM fractald_jobs WHERE seq IN (SELECT seq FROM fractald_jobs WHERE "
                              "state >= 3 AND expires_ms <= $1 ORDER BY expires_ms LIMIT 1000 FOR UPDATE SKIP LOCKED) "
                              "RETURNING id", &p, 0, &err, NULL, 0)))
        goto done;
    n = PQntuples(r);
    for (int i = 0; i < n; i++)
        jobs_log_job(LOG_INFO, PQgetvalue(r, i, 0), "DELETED", "reason", "expired");
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    return err < 0 ? err : n;
}
