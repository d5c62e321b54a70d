/* jobs.h: the job store: submitted renders, their states, progress and results, journaled in a
 * spool directory (SQLite for the records, one file per result) so no accepted job is lost, or
 * shared by a fleet of servers in a PostgreSQL database (jobs_pg.h says how that differs). */
#ifndef FRACTALD_JOBS_H
#define FRACTALD_JOBS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The store is engine- and gRPC-neutral: a job's request and stats are opaque blobs (the RPC layer
 * stores serialized fractal.v1.RenderRequest and RenderStats there), error codes are google.rpc.Code
 * values, and the result is whatever bytes the worker writes (an encoded image).
 *
 * Threads. Every function but jobs_open and jobs_close may be called from any thread at once.
 * Two locks: one guards the in-memory index (held for microseconds), the other the SQLite
 * connection (held across a commit). Reads (jobs_get, jobs_list, jobs_stats, jobs_queue_position)
 * and jobs_progress take only the first, never touch the disk and never wait for a commit, so
 * the RPC completion-queue thread may call them. Functions that change a job's state commit to
 * disk before they return; with sync_full that is an fsync (about a millisecond on an SSD,
 * more on a busy disk). jobs_next_queued may block (see its timeout). The PostgreSQL store
 * (opts->job_store) keeps this API but not these costs: every call is a round trip to the
 * database, bounded by its statement timeout (jobs_pg.h).
 *
 * Lifecycle of a job:
 *     jobs_submit -> QUEUED -> jobs_next_queued -> RUNNING -> jobs_finish_ok    -> SUCCEEDED
 *                     |                              |    -> jobs_finish_error -> FAILED / CANCELLED
 *                     +-- jobs_cancel -> CANCELLED    +--> jobs_requeue (drain) -> QUEUED
 * Finished jobs (SUCCEEDED, FAILED, CANCELLED) are kept until retention_ms after they finish,
 * then jobs_expire deletes them and their result files. */

typedef struct jobs_store jobs_store;
typedef struct jobs_result jobs_result;
typedef struct jobs_reader jobs_reader;

/* Values match fractal.v1.JobState; JOBS_ANY (JOB_STATE_UNSPECIFIED) filters nothing. */
enum jobs_state {
    JOBS_ANY = 0,
    JOBS_QUEUED = 1,
    JOBS_RUNNING = 2,
    JOBS_SUCCEEDED = 3,
    JOBS_FAILED = 4,
    JOBS_CANCELLED = 5,
};

/* google.rpc.Code values the store itself records as a job's error_code. */
#define JOBS_CODE_CANCELLED 1
#define JOBS_CODE_ABORTED 10
#define JOBS_CODE_DATA_LOSS 15

/* A job id: 26 characters of lowercase RFC 4648 base32 (a-z, 2-7) for 128 random bits from
 * getrandom(); URL- and file-name-safe. JOBS_ID_SIZE includes the terminating NUL. */
#define JOBS_ID_LEN 26
#define JOBS_ID_SIZE (JOBS_ID_LEN + 1)
#define JOBS_CONTENT_TYPE_SIZE 64

#define JOBS_OPTIONS_VERSION 1

struct jobs_options {
    unsigned version;           /* JOBS_OPTIONS_VERSION */
    const char *spool_dir;      /* required; created (with parents, mode 0750) if missing */
    int64_t retention_ms;       /* how long a finished job and its result are kept; >= 0 */
    uint64_t disk_budget;       /* bytes of result files the spool may hold, > 0 */
    uint32_t max_jobs;          /* jobs held in any state, 1..10000000 */
    uint32_t max_attempts;      /* starts a job gets across restarts before it is FAILED (ABORTED)
                                 * instead of run again, so a job that kills the server cannot
                                 * keep killing it; 0 = no limit */
    bool sync_full;             /* true: every commit is fsynced (SQLite synchronous=FULL) and
                                 * survives a power loss; false: synchronous=NORMAL, commits
                                 * survive a crash or kill -9 of the process but the last ones
                                 * may be lost in a power loss */
    const char *job_store;      /* NULL or "": the SQLite spool above; else a libpq connection
                                 * string (postgresql:// URI or key=value) of a PostgreSQL database
                                 * the servers of a fleet share; spool_dir and sync_full are then
                                 * unused and disk_budget bounds the results held there */
    int64_t lease_ms;           /* PostgreSQL: a RUNNING job whose server renews nothing for this
                                 * long is taken over by another; 0 = JOBS_DEFAULT_LEASE_MS */
};

#define JOBS_DEFAULT_LEASE_MS 10000
#define JOBS_OPTIONS_INIT {JOBS_OPTIONS_VERSION, NULL, 3600 * 1000, UINT64_C(1) << 30, 10000, 3, true, NULL, 0}

/* A snapshot of one job, copied out under the lock. Everything it points to belongs to the
 * caller: release it with jobs_info_dispose (or jobs_info_free_array for jobs_list). */
struct jobs_info {
    char id[JOBS_ID_SIZE];
    enum jobs_state state;
    bool cancel_requested;          /* RUNNING, and jobs_cancel asked the worker to stop */
    uint32_t queue_position;        /* QUEUED: 1 = next to start; 0 when not queued */
    uint32_t attempts;              /* times a worker has started it, across restarts */
    uint32_t rows_done, rows_total; /* progress as the worker last reported it (RUNNING, or
                                     * final values once finished; not kept across restarts) */
    uint64_t samples_done;
    int64_t created_ms, started_ms, finished_ms, expires_ms;   /* Unix ms; 0 = not yet */
    int32_t error_code;             /* google.rpc.Code, FAILED or CANCELLED; 0 otherwise */
    char *error_message;            /* never NULL once filled ("" if none) */
    void *request;                  /* the submitted bytes, request_len of them */
    size_t request_len;
    void *stats;                    /* the blob given to jobs_finish_ok; NULL if none */
    size_t stats_len;
    char content_type[JOBS_CONTENT_TYPE_SIZE];  /* SUCCEEDED */
    uint32_t width, height;         /* SUCCEEDED */
    uint64_t result_bytes;          /* SUCCEEDED: size of the result file */
};

/* What jobs_next_queued hands a worker. request belongs to the caller (jobs_work_dispose frees
 * it). cancel is borrowed: it points into the store's record of the job, stays valid until the
 * worker's jobs_finish_ok / jobs_finish_error / jobs_requeue for this job returns, and becomes
 * nonzero when jobs_cancel asks the job to stop (poll it, e.g. as render_io.cancel). */
struct jobs_work {
    char id[JOBS_ID_SIZE];
    void *request;
    size_t request_len;
    atomic_int *cancel;
    int64_t created_ms, started_ms;
    uint32_t attempts;              /* this start included */
};

struct jobs_stats {
    uint32_t held;                  /* jobs in any state */
    uint32_t queued, running, succeeded, failed, cancelled;
    uint32_t max_jobs;
    uint64_t spool_bytes;           /* result files, finished and being written */
    uint64_t disk_budget;
};

/* Opens (creating if needed) the spool directory opts->spool_dir and loads every job into
 * memory. Recovery, in this order:
 *   - jobs that were QUEUED or RUNNING when the last process ended are QUEUED again, in their
 *     original submission order; those whose cancel had been requested become CANCELLED, and
 *     those already started max_attempts times become FAILED (ABORTED);
 *   - finished jobs past their expiry are deleted with their results;
 *   - a SUCCEEDED job whose result file is missing or has the wrong size becomes FAILED
 *     (DATA_LOSS); corrupted contents of the right size are caught by jobs_reader_read;
 *   - every file in the results folder that is not a SUCCEEDED job's result (half-written
 *     temporaries, a result renamed into place just before a crash) is deleted.
 * Takes an exclusive lock on the spool (flock), so a second process (or a second open in this
 * process) gets ERR_UNAVAILABLE. Returns 0 and the store in *out (free with jobs_close),
 * ERR_INVALID (bad options), ERR_UNAVAILABLE, ERR_PRECONDITION (a spool from a newer fractald),
 * ERR_IO (the directory or database cannot be used; a corrupt database is left untouched for
 * a person to look at) or ERR_NOMEM; msg (may be NULL) gets one line on failure.
 * With opts->job_store it opens the PostgreSQL store instead: it creates the tables if missing
 * and starts its listener and heartbeat threads; nothing is recovered, since other servers may be
 * running those jobs (a dead server's are taken over when their lease runs out). Then
 * ERR_INVALID means the connection string does not parse, ERR_UNAVAILABLE that the database
 * cannot be reached, ERR_PRECONDITION that its schema is from a newer fractald. */
int jobs_open(jobs_store **out, const struct jobs_options *opts, char *msg, size_t msglen);

/* Sets the function the store calls, from a thread of its own, when jobs this process did not
 * submit may be ready to run: queued through another server of the fleet, or left by a server
 * whose lease ran out. The SQLite store, whose jobs all come through this process, never calls it.
 * NULL clears it; once that returns, the callback is not running and will not run. */
void jobs_set_wake(jobs_store *store, void (*wake)(void *ctx), void *ctx);

/* Closes the database and frees the store. Accepts NULL. No other call may be in flight and
 * every jobs_result and jobs_reader must be freed. Jobs still RUNNING (their workers must have
 * stopped: their cancel pointers die here) run again at the next open, as after a crash; for a
 * drain that should not count as an attempt, jobs_requeue them first. */
void jobs_close(jobs_store *store);

/* Accepts a job: copies `request` (len bytes; NULL only when len is 0), journals it and commits before it
 * returns, so once this returns 0 the job survives a crash (and a power loss with sync_full).
 * Expires due jobs first. Writes the new id to id_out. Returns 0, ERR_EXHAUSTED when the store
 * already holds max_jobs jobs or the results fill disk_budget (or the disk is full), ERR_IO,
 * ERR_NOMEM, ERR_INVALID or ERR_UNAVAILABLE (after jobs_stop). msg (may be NULL) gets one line on failure. */
int jobs_submit(jobs_store *store, const void *request, size_t len, char id_out[JOBS_ID_SIZE],
                char *msg, size_t msglen);

/* Fills *out with a snapshot of job `id` (from memory; no disk access). Returns 0,
 * ERR_NOT_FOUND (unknown, expired, or not an id) or ERR_NOMEM. On error *out is left zeroed so
 * jobs_info_dispose is still safe. */
int jobs_get(struct jobs_info *out, jobs_store *store, const char *id);

/* Frees what a jobs_info points to and zeroes it. Accepts NULL and zeroed structs. */
void jobs_info_dispose(struct jobs_info *info);

/* Snapshots of the jobs in `state` (JOBS_ANY for all), newest first, at most `limit` of them
 * (0 = all). Returns 0 with a caller-owned array in *out (NULL when empty) and its length in
 * *count, or ERR_NOMEM. Free with jobs_info_free_array. */
int jobs_list(struct jobs_info **out, size_t *count, jobs_store *store, enum jobs_state state,
              size_t limit);
void jobs_info_free_array(struct jobs_info *infos, size_t count);

/* 1-based place of a QUEUED job in the queue (1 = next to start), 0 when the job is not queued,
 * or ERR_NOT_FOUND. Costs a walk of the queue up to the job. */
int jobs_queue_position(jobs_store *store, const char *id);

/* Asks job `id` to stop. QUEUED: it becomes CANCELLED at once (committed). RUNNING: its cancel
 * flag is set and the request is journaled (a crash before the worker reports makes it
 * CANCELLED, not re-run); it stays RUNNING until its worker calls jobs_finish_error (with
 * JOBS_CODE_CANCELLED) or, if the render completed first, jobs_finish_ok: cancellation is
 * best-effort, as for google.longrunning operations. Finished jobs are left as they are.
 * Returns 0 in all three cases, ERR_NOT_FOUND, or ERR_IO / ERR_EXHAUSTED when the commit
 * fails (the job is then unchanged). msg (may be NULL) gets one line on failure. */
int jobs_cancel(jobs_store *store, const char *id, char *msg, size_t msglen);

/* Hands the oldest QUEUED job to a worker: marks it RUNNING, counts the attempt (committed) and
 * fills *out. Waits up to timeout_ms for one to be queued (0: don't wait; negative: until one is
 * or jobs_stop is called). Returns 0, ERR_NOT_FOUND when none was queued in time,
 * ERR_UNAVAILABLE after jobs_stop, ERR_IO / ERR_EXHAUSTED when the commit fails (the job stays
 * queued), or ERR_NOMEM. msg (may be NULL) gets one line on failure. */
int jobs_next_queued(struct jobs_work *out, jobs_store *store, int timeout_ms, char *msg, size_t msglen);

/* Frees out->request and zeroes *work. Accepts NULL. */
void jobs_work_dispose(struct jobs_work *work);

/* Stops handing out jobs: jobs_next_queued returns ERR_UNAVAILABLE from now on (waiting callers
 * wake at once), and jobs_submit refuses new jobs with ERR_UNAVAILABLE. For a graceful drain;
 * queued jobs stay journaled for the next start. */
void jobs_stop(jobs_store *store);

/* Records a RUNNING job's progress, in memory only (lost in a restart, as the render itself is).
 * Cheap enough to call after every band. Returns 0 or ERR_NOT_FOUND; ignored for jobs not
 * RUNNING. */
int jobs_progress(jobs_store *store, const char *id, uint32_t rows_done, uint32_t rows_total,
                  uint64_t samples_done);

/* Starts the result of RUNNING job `id`: a temporary file in the spool (a name unique to this
 * writer), invisible to readers and deleted at the next open if the process dies before
 * jobs_finish_ok. Its bytes count against disk_budget while it is written. The writer is used by
 * one thread at a time and must be freed before jobs_close. Returns 0 and the writer in *out
 * (caller frees with jobs_result_free), ERR_NOT_FOUND, ERR_PRECONDITION (not RUNNING),
 * ERR_EXHAUSTED (disk full), ERR_IO or ERR_NOMEM. msg (may be NULL) gets one line on failure. */
int jobs_result_open(jobs_result **out, jobs_store *store, const char *id, char *msg, size_t msglen);

/* Appends len bytes to the result. Returns 0, ERR_EXHAUSTED when the spool would pass its disk
 * budget or the disk is full, ERR_PRECONDITION after jobs_finish_ok, or ERR_IO;
 * jobs_result_message then says which. */
int jobs_result_write(jobs_result *w, const void *data, size_t len);

/* jobs_result_write as an encode_sink_fn (encode.h), so the writer can be the render's sink. */
int jobs_result_sink(void *w, const void *data, size_t len);

/* One line about the writer's last failure; "" if none. Borrowed for the writer's lifetime. */
const char *jobs_result_message(const jobs_result *w);

/* Publishes the result and finishes the job: fsyncs the file, renames it into place, fsyncs the
 * folder, then commits the job as SUCCEEDED with the stats blob (copied; may be NULL), content
 * type, size and a CRC-32 of the bytes; expiry is retention_ms from now. The disk work happens
 * outside the store's locks. The writer stays the caller's: free it with jobs_result_free
 * (which then deletes nothing). Returns 0, ERR_PRECONDITION (the job is not RUNNING any more),
 * ERR_IO / ERR_EXHAUSTED (the job stays RUNNING with no result; report it with
 * jobs_finish_error), ERR_INVALID (content type of 64 bytes or more) or ERR_NOMEM. msg (may be
 * NULL) gets one line on failure. */
int jobs_finish_ok(jobs_result *w, const void *stats, size_t stats_len, const char *content_type,
                   uint32_t width, uint32_t height, char *msg, size_t msglen);

/* Closes the writer and, unless jobs_finish_ok published it, deletes the temporary file.
 * Accepts NULL. */
void jobs_result_free(jobs_result *w);

/* Finishes RUNNING job `id` without a result: CANCELLED when code is JOBS_CODE_CANCELLED,
 * FAILED otherwise. code is a google.rpc.Code; message (may be NULL) is copied. A writer of the
 * job still open stays harmless (jobs_result_free deletes its file; jobs_finish_ok on it gets
 * ERR_PRECONDITION). The job leaves RUNNING in memory even if the commit fails (it then runs
 * again after a restart, and the error is returned). Returns 0, ERR_NOT_FOUND, ERR_PRECONDITION
 * (not RUNNING), ERR_IO, ERR_EXHAUSTED or ERR_NOMEM. msg (may be NULL) gets one line on failure. */
int jobs_finish_error(jobs_store *store, const char *id, int32_t code, const char *message,
                      char *msg, size_t msglen);

/* Puts RUNNING job `id` back in the queue at its original place and uncounts the attempt, for a
 * drain that stops a render the next start should run again (a job whose cancel was requested
 * becomes CANCELLED instead). Returns 0, ERR_NOT_FOUND,
 * ERR_PRECONDITION, ERR_IO or ERR_EXHAUSTED (then nothing changed). */
int jobs_requeue(jobs_store *store, const char *id, char *msg, size_t msglen);

/* Deletes finished jobs whose expiry is at or before now_ms (Unix ms), and their result files.
 * jobs_submit does this too; call it periodically as well (e.g. once a second) so disk space
 * comes back while nobody submits. Returns how many jobs it deleted, or ERR_IO / ERR_EXHAUSTED
 * when the commit fails (nothing deleted). */
int jobs_expire(jobs_store *store, int64_t now_ms);

/* Opens the result of SUCCEEDED job `id` for reading from the start, after reading the whole
 * file once to check its size and CRC-32, so that a damaged result is refused before a byte of it
 * is sent. The reader keeps the file open, so it may finish even if the job expires meanwhile.
 * Returns 0 and the reader in *out (free with jobs_reader_free), ERR_NOT_FOUND, ERR_PRECONDITION
 * (the job has no result: not SUCCEEDED), ERR_DATA_LOSS (the file is gone, unreadable, of the
 * wrong size or damaged: the job becomes FAILED, DATA_LOSS) or ERR_NOMEM. msg (may be NULL) gets
 * one line on failure. */
int jobs_reader_open(jobs_reader **out, jobs_store *store, const char *id, char *msg, size_t msglen);

/* Size of the result in bytes. */
uint64_t jobs_reader_size(const jobs_reader *r);

/* Reads up to len bytes of the result, in order, into buf; *nread gets the count (0 at the end).
 * The bytes are checked against the CRC-32 recorded at finish again (the file could change after
 * the open's check): on the read that reaches the end a mismatch returns ERR_DATA_LOSS instead
 * of the last bytes and the job becomes FAILED (DATA_LOSS), so a stream never ends in a wrong
 * image that looks complete. Returns 0, ERR_DATA_LOSS, or ERR_NOMEM. Reads the disk: the page cache usually has it, but a cold
 * read may wait for the device. msg (may be NULL) gets one line on failure. */
int jobs_reader_read(jobs_reader *r, void *buf, size_t len, size_t *nread, char *msg, size_t msglen);

/* Closes the reader. Accepts NULL. */
void jobs_reader_free(jobs_reader *r);

/* Counts and sizes, from memory. */
void jobs_get_stats(struct jobs_stats *out, jobs_store *store);

/* Short upper-case name of a state ("QUEUED"); "ANY" for JOBS_ANY, "?" for others. Static. */
const char *jobs_state_name(enum jobs_state state);

#endif
