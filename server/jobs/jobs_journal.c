/* jobs_journal.c: the job store's journal: the jobs table in <spool>/jobs.db (SQLite, WAL), its
 * statements, and the encoding of a job to and from its row. The only file that includes sqlite3.h. */
#include "jobs_journal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "err.h"
#include "jobs_internal.h"
#include "log.h"

/* Version of the database layout, kept in PRAGMA user_version. A spool written by a newer
 * layout is refused rather than misread. */
#define JOBS_SCHEMA_VERSION 1

struct jobs_journal {
    sqlite3 *db;
    sqlite3_stmt *st_insert, *st_start, *st_requeue, *st_cancel, *st_finish, *st_delete;
    char spool_dir[];               /* for messages */
};

/* ---- statements and their errors ---- */

/* Turns a failed SQLite call into an error code and a line naming what was being done. */
static int sql_fail(jobs_journal *jj, int rc, const char *what, char *msg, size_t msglen)
{
    int err = rc == SQLITE_FULL ? ERR_EXHAUSTED : rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_IO;

    jobs_set_msg(msg, msglen, "job store %s/jobs.db: %s while %s", jj->spool_dir, sqlite3_errmsg(jj->db), what);
    return err;
}

/* Steps a bound statement that returns no rows and resets it for the next use. */
static int sql_run(jobs_journal *jj, sqlite3_stmt *st, const char *what, char *msg, size_t msglen)
{
    int rc = sqlite3_step(st);
    int err = 0;

    if (rc != SQLITE_DONE)
        err = sql_fail(jj, rc, what, msg, msglen);
    else if (sqlite3_changes(jj->db) != 1 && st != jj->st_insert) {
        jobs_set_msg(msg, msglen, "job store %s/jobs.db: a job's row is missing while %s", jj->spool_dir, what);
        err = ERR_INTERNAL;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int sql_exec(jobs_journal *jj, const char *sql, const char *what, char *msg, size_t msglen)
{
    int rc = sqlite3_exec(jj->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sql_fail(jj, rc, what, msg, msglen);
}

/* A zero-length blob must be bound with a non-NULL pointer, or SQLite stores NULL. */
static void bind_blob(sqlite3_stmt *st, int col, const void *data, size_t len)
{
    sqlite3_bind_blob64(st, col, len ? data : "", len, SQLITE_STATIC);
}

/* ---- opening: the schema, WAL, the prepared statements ---- */

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS jobs("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " state INTEGER NOT NULL,"
    " request BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0,"
    " expires_ms INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " error_code INTEGER NOT NULL DEFAULT 0,"
    " error_message TEXT NOT NULL DEFAULT '',"
    " stats BLOB,"
    " content_type TEXT NOT NULL DEFAULT '',"
    " width INTEGER NOT NULL DEFAULT 0,"
    " height INTEGER NOT NULL DEFAULT 0,"
    " result_bytes INTEGER NOT NULL DEFAULT 0,"
    " result_crc INTEGER NOT NULL DEFAULT 0)";

static int prepare(jobs_journal *jj, sqlite3_stmt **st, const char *sql, char *msg, size_t msglen)
{
    int rc = sqlite3_prepare_v3(jj->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);

    return rc == SQLITE_OK ? 0 : sql_fail(jj, rc, "preparing statements", msg, msglen);
}

/* Runs a one-value PRAGMA and returns its text result in buf. */
static int pragma(jobs_journal *jj, const char *sql, char *buf, size_t buflen, char *msg, size_t msglen)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    buf[0] = '\0';
    if ((rc = sqlite3_prepare_v2(jj->db, sql, -1, &st, NULL)) != SQLITE_OK) {
        err = sql_fail(jj, rc, "setting up the database", msg, msglen);
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);

        snprintf(buf, buflen, "%s", t ? (const char *)t : "");
    } else if (rc != SQLITE_DONE) {
        err = sql_fail(jj, rc, "setting up the database", msg, msglen);
    }
done:
    sqlite3_finalize(st);
    return err;
}

/* Opens the database, sets it up (see jobs_journal_open) and prepares the statements into jj.
 * On failure jj may hold an open connection and some statements: jobs_journal_close frees them. */
static int open_database(jobs_journal *jj, bool sync_full, char *msg, size_t msglen)
{
    char path[PATH_MAX], value[64];
    int err, rc;

    snprintf(path, sizeof(path), "%s/jobs.db", jj->spool_dir);
    rc = sqlite3_open_v2(path, &jj->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        jobs_set_msg(msg, msglen, "job store %s: %s", path, jj->db ? sqlite3_errmsg(jj->db) : sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_IO;
    }
    /* WAL: a commit appends to the log and, with synchronous=FULL, fsyncs it once; with NORMAL
     * it is written to the OS (safe from a process crash) and fsynced at checkpoints. Readers
     * never touch the database after open (the index is in memory), so WAL's concurrency is not
     * what we want from it: one fsync per commit instead of the rollback journal's three. */
    if ((err = pragma(jj, "PRAGMA journal_mode=WAL", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if (strcmp(value, "wal") != 0) {
        jobs_set_msg(msg, msglen, "job store %s: the file system does not support SQLite's WAL mode (got '%s')",
                     path, value);
        return ERR_IO;
    }
    if ((err = pragma(jj, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                      value, sizeof(value), msg, msglen)) < 0)
        return err;
    /* Keeps the log from staying large after a burst; checkpoints still run every 1000 pages. */
    if ((err = pragma(jj, "PRAGMA journal_size_limit=4194304", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if ((err = pragma(jj, "PRAGMA user_version", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if (atoi(value) > JOBS_SCHEMA_VERSION) {
        jobs_set_msg(msg, msglen, "job store %s has layout version %s; this fractald reads up to %d", path, value,
                     JOBS_SCHEMA_VERSION);
        return ERR_PRECONDITION;
    }
    if ((err = sql_exec(jj, schema_sql, "creating the jobs table", msg, msglen)) < 0 ||
        (err = sql_exec(jj, "PRAGMA user_version=1", "creating the jobs table", msg, msglen)) < 0)
        return err;
    if ((err = prepare(jj, &jj->st_insert,
                       "INSERT INTO jobs(seq, id, state, request, created_ms) VALUES(?1, ?2, 1, ?3, ?4)",
                       msg, msglen)) < 0 ||
        (err = prepare(jj, &jj->st_start, "UPDATE jobs SET state=2, started_ms=?1, attempts=?2 WHERE seq=?3",
                       msg, msglen)) < 0 ||
        (err = prepare(jj, &jj->st_requeue, "UPDATE jobs SET state=1, started_ms=0, attempts=?1 WHERE seq=?2",
                       msg, msglen)) < 0 ||
        (err = prepare(jj, &jj->st_cancel, "UPDATE jobs SET cancel_requested=1 WHERE seq=?1", msg, msglen)) < 0 ||
        (err = prepare(jj, &jj->st_finish,
                       "UPDATE jobs SET state=?1, finished_ms=?2, expires_ms=?3, error_code=?4,"
                       " error_message=?5, stats=?6, content_type=?7, width=?8, height=?9,"
                       " result_bytes=?10, result_crc=?11 WHERE seq=?12",
                       msg, msglen)) < 0 ||
        (err = prepare(jj, &jj->st_delete, "DELETE FROM jobs WHERE seq=?1", msg, msglen)) < 0)
        return err;
    return 0;
}

int jobs_journal_open(jobs_journal **out, const char *spool_dir, bool sync_full, char *msg, size_t msglen)
{
    jobs_journal *jj;
    int err;

    *out = NULL;
    if (!(jj = calloc(1, sizeof(*jj) + strlen(spool_dir) + 1))) {
        jobs_set_msg(msg, msglen, "out of memory opening the job store");
        return ERR_NOMEM;
    }
    strcpy(jj->spool_dir, spool_dir);
    if ((err = open_database(jj, sync_full, msg, msglen)) < 0) {
        jobs_journal_close(jj);
        return err;
    }
    *out = jj;
    return 0;
}

void jobs_journal_close(jobs_journal *jj)
{
    if (!jj)
        return;
    sqlite3_finalize(jj->st_insert);
    sqlite3_finalize(jj->st_start);
    sqlite3_finalize(jj->st_requeue);
    sqlite3_finalize(jj->st_cancel);
    sqlite3_finalize(jj->st_finish);
    sqlite3_finalize(jj->st_delete);
    if (jj->db && sqlite3_close(jj->db) != SQLITE_OK)
        log_at(LOG_WARN, "job store %s: closing the database: %s", jj->spool_dir, sqlite3_errmsg(jj->db));
    free(jj);
}

const char *jobs_journal_errmsg(jobs_journal *jj)
{
    return sqlite3_errmsg(jj->db);
}

/* ---- loading: rows to jobs ---- */

static char *column_text_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    return strdup(t ? (const char *)t : "");
}

/* Builds a job from a row of the load query. Returns NULL for ERR_NOMEM. */
static struct job *job_from_row(sqlite3_stmt *st)
{
    struct job *j = calloc(1, sizeof(*j));
    const unsigned char *t;

    if (!j)
        return NULL;
    j->seq = sqlite3_column_int64(st, 0);
    t = sqlite3_column_text(st, 1);
    snprintf(j->id, sizeof(j->id), "%s", t ? (const char *)t : "");
    j->state = (enum jobs_state)sqlite3_column_int(st, 2);
    j->request_len = (size_t)sqlite3_column_bytes(st, 3);
    j->request = jobs_memdup(sqlite3_column_blob(st, 3), j->request_len);
    j->created_ms = sqlite3_column_int64(st, 4);
    j->started_ms = sqlite3_column_int64(st, 5);
    j->finished_ms = sqlite3_column_int64(st, 6);
    j->expires_ms = sqlite3_column_int64(st, 7);
    j->attempts = (uint32_t)sqlite3_column_int64(st, 8);
    j->cancel_requested = sqlite3_column_int(st, 9) != 0;
    j->error_code = sqlite3_column_int(st, 10);
    j->error_message = column_text_dup(st, 11);
    if (sqlite3_column_type(st, 12) != SQLITE_NULL) {
        j->stats_len = (size_t)sqlite3_column_bytes(st, 12);
        j->stats = jobs_memdup(sqlite3_column_blob(st, 12), j->stats_len);
        if (!j->stats)
            goto fail;
    }
    t = sqlite3_column_text(st, 13);
    snprintf(j->content_type, sizeof(j->content_type), "%s", t ? (const char *)t : "");
    j->width = (uint32_t)sqlite3_column_int64(st, 14);
    j->height = (uint32_t)sqlite3_column_int64(st, 15);
    j->result_bytes = (uint64_t)sqlite3_column_int64(st, 16);
    j->result_crc = (uint32_t)sqlite3_column_int64(st, 17);
    if (!j->request || !j->error_message)
        goto fail;
    return j;
fail:
    jobs_job_free(j);
    return NULL;
}

int jobs_journal_count(jobs_journal *jj, int64_t *rows, int64_t *max_seq, char *msg, size_t msglen)
{
    sqlite3_stmt *st = NULL;
    int err = 0, rc;

    *rows = *max_seq = 0;
    if ((rc = sqlite3_prepare_v2(jj->db, "SELECT count(*), coalesce(max(seq), 0) FROM jobs", -1, &st, NULL)) !=
            SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_ROW) {
        err = sql_fail(jj, rc, "loading jobs", msg, msglen);
        goto done;
    }
    *rows = sqlite3_column_int64(st, 0);
    *max_seq = sqlite3_column_int64(st, 1);
done:
    sqlite3_finalize(st);
    return err;
}

int jobs_journal_load(jobs_journal *jj, int (*visit)(void *ctx, struct job *j), void *ctx, char *msg,
                      size_t msglen)
{
    sqlite3_stmt *st = NULL;
    bool in_tx = false;
    int err = 0, rc;

    if ((err = sql_exec(jj, "BEGIN IMMEDIATE", "loading jobs", msg, msglen)) < 0)
        goto done;
    in_tx = true;
    rc = sqlite3_prepare_v2(jj->db,
                            "SELECT seq, id, state, request, created_ms, started_ms, finished_ms, expires_ms,"
                            " attempts, cancel_requested, error_code, error_message, stats, content_type,"
                            " width, height, result_bytes, result_crc FROM jobs ORDER BY seq",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        err = sql_fail(jj, rc, "loading jobs", msg, msglen);
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct job *j = job_from_row(st);

        if (!j) {
            err = ERR_NOMEM;
            jobs_set_msg(msg, msglen, "out of memory loading the job store");
            goto done;
        }
        if ((err = visit(ctx, j)) < 0)
            goto done;
    }
    if (rc != SQLITE_DONE) {
        err = sql_fail(jj, rc, "loading jobs", msg, msglen);
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((err = sql_exec(jj, "COMMIT", "loading jobs", msg, msglen)) < 0)
        goto done;
    in_tx = false;
done:
    sqlite3_finalize(st);
    if (in_tx)
        sqlite3_exec(jj->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

/* ---- changes: one row each, or one transaction for a batch ---- */

int jobs_journal_insert(jobs_journal *jj, const struct job *j, char *msg, size_t msglen)
{
    sqlite3_bind_int64(jj->st_insert, 1, j->seq);
    sqlite3_bind_text(jj->st_insert, 2, j->id, -1, SQLITE_STATIC);
    bind_blob(jj->st_insert, 3, j->request, j->request_len);
    sqlite3_bind_int64(jj->st_insert, 4, j->created_ms);
    return sql_run(jj, jj->st_insert, "queueing a job", msg, msglen);
}

int jobs_journal_start(jobs_journal *jj, int64_t seq, int64_t started_ms, uint32_t attempts, char *msg,
                       size_t msglen)
{
    sqlite3_bind_int64(jj->st_start, 1, started_ms);
    sqlite3_bind_int64(jj->st_start, 2, attempts);
    sqlite3_bind_int64(jj->st_start, 3, seq);
    return sql_run(jj, jj->st_start, "starting a job", msg, msglen);
}

int jobs_journal_requeue(jobs_journal *jj, int64_t seq, uint32_t attempts, const char *what, char *msg,
                         size_t msglen)
{
    sqlite3_bind_int64(jj->st_requeue, 1, attempts);
    sqlite3_bind_int64(jj->st_requeue, 2, seq);
    return sql_run(jj, jj->st_requeue, what, msg, msglen);
}

int jobs_journal_cancel(jobs_journal *jj, int64_t seq, char *msg, size_t msglen)
{
    sqlite3_bind_int64(jj->st_cancel, 1, seq);
    return sql_run(jj, jj->st_cancel, "recording a cancel", msg, msglen);
}

int jobs_journal_finish(jobs_journal *jj, int64_t seq, const struct finish_row *r, char *msg, size_t msglen)
{
    sqlite3_stmt *st = jj->st_finish;

    sqlite3_bind_int(st, 1, r->state);
    sqlite3_bind_int64(st, 2, r->finished_ms);
    sqlite3_bind_int64(st, 3, r->expires_ms);
    sqlite3_bind_int(st, 4, r->error_code);
    sqlite3_bind_text(st, 5, r->error_message ? r->error_message : "", -1, SQLITE_STATIC);
    if (r->stats)
        bind_blob(st, 6, r->stats, r->stats_len);
    sqlite3_bind_text(st, 7, r->content_type ? r->content_type : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, r->width);
    sqlite3_bind_int64(st, 9, r->height);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)r->result_bytes);
    sqlite3_bind_int64(st, 11, r->result_crc);
    sqlite3_bind_int64(st, 12, seq);
    return sql_run(jj, st, "recording a finished job", msg, msglen);
}

int jobs_journal_delete(jobs_journal *jj, int64_t seq, char *msg, size_t msglen)
{
    sqlite3_bind_int64(jj->st_delete, 1, seq);
    return sql_run(jj, jj->st_delete, "deleting expired jobs", msg, msglen);
}

int jobs_journal_delete_expired(jobs_journal *jj, struct job *const *jobs, size_t n, char *msg, size_t msglen)
{
    bool in_tx = false;
    int err;

    if ((err = sql_exec(jj, "BEGIN IMMEDIATE", "deleting expired jobs", msg, msglen)) < 0)
        goto done;
    in_tx = true;
    for (size_t i = 0; i < n; i++)
        if ((err = jobs_journal_delete(jj, jobs[i]->seq, msg, msglen)) < 0)
            goto done;
    if ((err = sql_exec(jj, "COMMIT", "deleting expired jobs", msg, msglen)) < 0)
        goto done;
    in_tx = false;
done:
    if (in_tx)
        sqlite3_exec(jj->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}
