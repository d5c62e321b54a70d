/* jobs_pg.h: the PostgreSQL backend of the job store (--job-store URI): the same contract as jobs.h,
 * for a fleet of servers sharing one database. Internal to server/jobs/. */
#ifndef FRACTALD_JOBS_PG_H
#define FRACTALD_JOBS_PG_H

#include <stddef.h>
#include <stdint.h>

#include "jobs.h"

/* Dispatch. jobs_open opens this backend instead of the SQLite spool when opts->job_store is set;
 * the store then carries only `pg` (jobs_internal.h), and every public function of jobs.h in
 * jobs.c and jobs_results.c forwards to the function here of the same name with jobs_ replaced by
 * jobs_pg_. Each keeps the contract jobs.h writes down, with these differences, which come from
 * the state living in a database that other servers change too:
 *   - every call, reads included, is a round trip to the database (at most statement_timeout,
 *     5 s, so a stalled database cannot wedge the completion-queue thread); a database that cannot
 *     be reached gives ERR_UNAVAILABLE;
 *   - progress reaches the database with each lease renewal (every lease/3), so another server's
 *     jobs_get sees it that late; this server's own running jobs show their live progress;
 *   - a RUNNING job whose server stops renewing its lease is claimed again by any server after the
 *     lease (attempts counted, max_attempts honoured) instead of after a restart;
 *   - a worker's jobs_finish_ok, jobs_finish_error and jobs_requeue succeed only while this process
 *     still owns the job: after a takeover they return ERR_PRECONDITION and the result is dropped;
 *   - results are chunks in the database (jobs_pg_results.c), disk_budget is their byte budget;
 *     a reader does not pin them, so jobs_reader_read of a job that expired meanwhile returns
 *     ERR_NOT_FOUND (and ERR_UNAVAILABLE when the database is away).
 * The SQLite-only fields of jobs_options (spool_dir, sync_full) are ignored. */

struct jobs_pg;

int jobs_pg_open(struct jobs_pg **out, const struct jobs_options *opts, char *msg, size_t msglen);
void jobs_pg_close(struct jobs_pg *pg);
void jobs_pg_set_wake(struct jobs_pg *pg, void (*wake)(void *ctx), void *ctx);
int jobs_pg_submit(struct jobs_pg *pg, const void *request, size_t len, char id_out[JOBS_ID_SIZE], char *msg,
                   size_t msglen);
int jobs_pg_get(struct jobs_info *out, struct jobs_pg *pg, const char *id);
int jobs_pg_list(struct jobs_info **out, size_t *count, struct jobs_pg *pg, enum jobs_state state, size_t limit);
int jobs_pg_queue_position(struct jobs_pg *pg, const char *id);
int jobs_pg_cancel(struct jobs_pg *pg, const char *id, char *msg, size_t msglen);
int jobs_pg_next_queued(struct jobs_work *out, struct jobs_pg *pg, int timeout_ms, char *msg, size_t msglen);
void jobs_pg_stop(struct jobs_pg *pg);
int jobs_pg_progress(struct jobs_pg *pg, const char *id, uint32_t rows_done, uint32_t rows_total,
                     uint64_t samples_done);
int jobs_pg_finish_error(struct jobs_pg *pg, const char *id, int32_t code, const char *message, char *msg,
                         size_t msglen);
int jobs_pg_requeue(struct jobs_pg *pg, const char *id, char *msg, size_t msglen);
int jobs_pg_expire(struct jobs_pg *pg, int64_t now_ms);
void jobs_pg_get_stats(struct jobs_stats *out, struct jobs_pg *pg);

/* The writer and reader (jobs_pg_results.c). jobs_results.c wraps each in its jobs_result or
 * jobs_reader, so the public handles stay one type whichever backend made them. */
struct jobs_pg_writer;
struct jobs_pg_reader;

int jobs_pg_writer_open(struct jobs_pg_writer **out, struct jobs_pg *pg, const char *id, char *msg, size_t msglen);
int jobs_pg_writer_write(struct jobs_pg_writer *w, const void *data, size_t len);
const char *jobs_pg_writer_message(const struct jobs_pg_writer *w);
int jobs_pg_writer_finish(struct jobs_pg_writer *w, const void *stats, size_t stats_len, const char *content_type,
                          uint32_t width, uint32_t height, char *msg, size_t msglen);
void jobs_pg_writer_free(struct jobs_pg_writer *w);

int jobs_pg_reader_open(struct jobs_pg_reader **out, struct jobs_pg *pg, const char *id, char *msg, size_t msglen);
uint64_t jobs_pg_reader_size(const struct jobs_pg_reader *r);
int jobs_pg_reader_read(struct jobs_pg_reader *r, void *buf, size_t len, size_t *nread, char *msg, size_t msglen);
void jobs_pg_reader_free(struct jobs_pg_reader *r);

#endif
