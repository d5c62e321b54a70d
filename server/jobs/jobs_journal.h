/* jobs_journal.h: the job store's journal: one SQLite database (WAL) in the spool directory with
 * a row per job, written before the in-memory index changes. Internal to server/jobs/. */
#ifndef FRACTALD_JOBS_JOURNAL_H
#define FRACTALD_JOBS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The journal knows rows, not the store: it never takes the store's locks and never touches the
 * in-memory index. It is not thread-safe (the connection is opened SQLITE_OPEN_NOMUTEX): the caller
 * serialises every call, which jobs.c does by holding store->db_lock. Rows are keyed by a job's
 * seq. Each change below is its own transaction, committed (and with sync_full fsynced) before it
 * returns, except inside jobs_journal_load, where the visitor's changes join the load's one
 * transaction. Errors: ERR_EXHAUSTED (disk full), ERR_NOMEM, ERR_IO for anything else SQLite
 * reports, and ERR_INTERNAL when a change finds no row for its seq; msg (may be NULL) then gets
 * one line naming the database and what was being done. */

typedef struct jobs_journal jobs_journal;
struct job;
struct finish_row;

/* Opens (creating if needed) <spool_dir>/jobs.db, switches it to WAL with synchronous=FULL
 * (sync_full) or NORMAL, creates the jobs table and prepares the statements below. spool_dir is
 * copied. Returns 0 and the journal in *out (free with jobs_journal_close), ERR_PRECONDITION (the
 * database has a newer layout than this fractald reads), ERR_IO (including a file system without
 * WAL support) or ERR_NOMEM; on failure nothing is left open. */
int jobs_journal_open(jobs_journal **out, const char *spool_dir, bool sync_full, char *msg, size_t msglen);

/* Finalizes the statements and closes the database (a failure to close is logged). Accepts NULL. */
void jobs_journal_close(jobs_journal *jj);

/* SQLite's text for the connection's last error; borrowed until the next call on jj. */
const char *jobs_journal_errmsg(jobs_journal *jj);

/* Counts the rows (*rows) and finds the highest seq (*max_seq, 0 when there are none). */
int jobs_journal_count(jobs_journal *jj, int64_t *rows, int64_t *max_seq, char *msg, size_t msglen);

/* Reads every row in seq order inside one transaction (BEGIN IMMEDIATE ... COMMIT), decodes each
 * into a new job and hands it to visit, which takes ownership of it (whatever visit returns) and may
 * change rows (jobs_journal_requeue, _finish, _delete) inside the transaction. A negative return
 * from visit stops the load with that error. Commits once every row is visited; on any error the
 * whole transaction is rolled back, so the journal is as it was. Returns 0 or an error. */
int jobs_journal_load(jobs_journal *jj, int (*visit)(void *ctx, struct job *j), void *ctx, char *msg,
                      size_t msglen);

/* Records a new QUEUED job: j's seq, id, request and created_ms. */
int jobs_journal_insert(jobs_journal *jj, const struct job *j, char *msg, size_t msglen);

/* Records that job seq is RUNNING since started_ms, on its attempts'th start. */
int jobs_journal_start(jobs_journal *jj, int64_t seq, int64_t started_ms, uint32_t attempts, char *msg,
                       size_t msglen);

/* Records that job seq is QUEUED again with `attempts` starts so far; `what` names the occasion for
 * the message. */
int jobs_journal_requeue(jobs_journal *jj, int64_t seq, uint32_t attempts, const char *what, char *msg,
                         size_t msglen);

/* Records that a cancel of job seq was requested. */
int jobs_journal_cancel(jobs_journal *jj, int64_t seq, char *msg, size_t msglen);

/* Records a finish: every field of r (stats only when r->stats is non-NULL; NULL strings are
 * stored as ""). r and what it points to are borrowed for the call. */
int jobs_journal_finish(jobs_journal *jj, int64_t seq, const struct finish_row *r, char *msg, size_t msglen);

/* Deletes the row of job seq. */
int jobs_journal_delete(jobs_journal *jj, int64_t seq, char *msg, size_t msglen);

/* Deletes the rows of the n jobs in one transaction, so one commit covers the batch: either all of
 * them go or, on an error, none (the transaction is rolled back before this returns). The jobs are
 * borrowed; only their seq is read. */
int jobs_journal_delete_expired(jobs_journal *jj, struct job *const *jobs, size_t n, char *msg, size_t msglen);

#endif
