/* jobs_internal.h: what the job store's files share: the job record, the store itself and the few
 * helpers more than one of them calls. Only the files of server/jobs/ include it; every other
 * folder sees the store through jobs.h alone. */
#ifndef FRACTALD_JOBS_INTERNAL_H
#define FRACTALD_JOBS_INTERNAL_H

#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs.h"

struct jobs_journal;

/* One job. Immutable once inserted: id, seq, request, created_ms. Everything else is guarded by
 * store->lock, except `cancel`, which workers poll without it. */
struct job {
    char id[JOBS_ID_SIZE];
    int64_t seq;                    /* submission order; the database's primary key */
    enum jobs_state state;
    struct job *hash_next;
    struct job *all_prev, *all_next;     /* every job, by seq */
    struct job *list_prev, *list_next;   /* the queue (QUEUED) or the done list (finished) */
    void *request;
    size_t request_len;
    void *stats;
    size_t stats_len;
    char *error_message;            /* NULL = "" */
    int32_t error_code;
    char content_type[JOBS_CONTENT_TYPE_SIZE];
    uint32_t width, height;
    uint64_t result_bytes;
    uint32_t result_crc;
    int64_t created_ms, started_ms, finished_ms, expires_ms;
    uint32_t attempts;
    bool cancel_requested;
    atomic_int cancel;
    uint32_t rows_done, rows_total;
    uint64_t samples_done;
    uint32_t queue_position;        /* scratch for jobs_list, valid only under the lock */
};

/* What finishing a job changes: written to its journal row by jobs_journal_finish and applied to
 * the job in memory by jobs_index_apply_finish. Every pointer is borrowed for the call. */
struct finish_row {
    enum jobs_state state;
    int64_t finished_ms, expires_ms;
    int32_t error_code;
    const char *error_message;
    const void *stats;
    size_t stats_len;
    const char *content_type;
    uint32_t width, height;
    uint64_t result_bytes;
    uint32_t result_crc;
};

struct jobs_store {
    /* Set when the store is the PostgreSQL one (opts.job_store): then every public function
     * forwards to jobs_pg.h and nothing below is used. */
    struct jobs_pg *pg;
    struct jobs_options opts;
    char *spool_dir;
    char *results_dir;
    int lock_fd;                    /* holds the flock on <spool>/lock */
    int results_fd;                 /* the results folder, fsynced after each rename */

    /* Lock order: db_lock, then lock. Every change of a job's state holds db_lock from before
     * it reads the job until its memory update is done, so changes reach the database and the
     * index in the same order and a job picked under db_lock cannot change underneath. Readers
     * take only `lock`, which is never held across disk I/O. */
    pthread_mutex_t db_lock;
    struct jobs_journal *journal;   /* used only under db_lock (jobs_journal.h) */

    pthread_mutex_t lock;
    pthread_cond_t queued;          /* a job was queued, or jobs_stop was called */
    /* The index, from buckets to held: jobs_index.c's (jobs_index.h). */
    struct job **buckets;           /* chained hash on id; nbuckets is a power of two */
    size_t nbuckets;
    struct job *all_head, *all_tail;
    struct job *queue_head, *queue_tail;
    struct job *done_head, *done_tail;   /* finished jobs by expires_ms, oldest first */
    uint32_t counts[6];             /* by enum jobs_state */
    uint32_t held;
    uint64_t spool_bytes;           /* published results (counted by jobs_index.c as jobs become and
                                     * stop being SUCCEEDED) plus bytes reserved by open writers
                                     * (counted by jobs_results.c) */
    int64_t next_seq;
    uint64_t next_tmp;              /* makes each writer's temporary file name unique */
    bool stopping;
};

/* ---- helpers of jobs.c that the other files call ---- */

/* Formats one line into msg; does nothing when msg is NULL or msglen is 0. */
void jobs_set_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Wall-clock time in Unix ms, as the store records it. */
int64_t jobs_now_ms(void);

/* A malloc'ed copy of len bytes (at least one byte is allocated, so a copy of nothing is not
 * NULL); the caller frees it. NULL when out of memory. */
void *jobs_memdup(const void *data, size_t len);

/* Frees a job and everything it owns. Accepts NULL. The job must not be in the index. */
void jobs_job_free(struct job *j);

/* Starts the fields of an event=job log line, which every change of a job's state writes (one
 * line each): sets buf (capacity cap) to " job=<id> state=<state>", state being jobs_state_name's
 * or DELETED for a job that leaves the store. The caller appends the change's own fields with
 * log_kv and writes the line with log_event(level, "job", buf), having checked log_min_level
 * first. */
void jobs_log_fields(char *buf, size_t cap, const char *id, const char *state);

/* Writes the event=job line of a change that carries one more field, key=value. */
void jobs_log_job(int level, const char *id, const char *state, const char *key, const char *value);

/* Writes the event=job line of a job that finished without a result: its state, code=<the gRPC
 * status name> (every code the store records is a google.rpc.Code, JOBS_CODE_CANCELLED being
 * CANCELLED; any other is written as its number, not as UNKNOWN), error=<its message>, then
 * extra, ready-made " key=value" pairs (or NULL). */
void jobs_log_finish(int level, const char *id, enum jobs_state state, int32_t code, const char *error,
                     const char *extra);

/* The event=job lines (at info) of a job a worker took, with extra " key=value" pairs (or NULL),
 * and of a job that SUCCEEDED. */
void jobs_log_running(const char *id, uint32_t attempt, int64_t queued_ms, const char *extra);
void jobs_log_succeeded(const char *id, uint64_t bytes, const char *content_type, uint32_t width, uint32_t height);

/* *out = CLOCK_MONOTONIC now + ms, for pthread_cond_timedwait on the store's conditions. */
void jobs_deadline(struct timespec *out, int64_t ms);

/* Finishes RUNNING job `id` as SUCCEEDED with row r (whose result file is already in place) and
 * commits it: the r->result_bytes an open writer had reserved in spool_bytes become the job's.
 * Takes stats, the job's own copy of r->stats (NULL for none), when it returns 0; otherwise it
 * stays the caller's. Returns 0,
 * ERR_NOT_FOUND, ERR_PRECONDITION (not RUNNING any more), or the journal's error (jobs_journal.h);
 * on an error nothing changed. msg (may be NULL) gets one line on failure. Takes db_lock, then
 * lock; the caller holds neither. */
int jobs_commit_success(jobs_store *s, const char *id, const struct finish_row *r, void *stats, char *msg,
                        size_t msglen);

/* Marks SUCCEEDED job `id` FAILED with DATA_LOSS (message `why`, copied), commits it and then deletes
 * its result file, after a reader found the file missing or damaged. Does nothing when the job is
 * gone or not SUCCEEDED any more, when memory runs out, or when the commit fails (the job then
 * stays SUCCEEDED, and the next reader finds the damage again). Takes db_lock, then lock; the
 * caller holds neither. */
void jobs_mark_data_loss(jobs_store *s, const char *id, const char *why);

#endif
