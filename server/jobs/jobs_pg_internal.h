/* jobs_pg_internal.h: what the PostgreSQL backend's files share: the store, this process's running
 * jobs, the connection pool and the query helpers. Only jobs_pg*.c include it (and so libpq). */
#ifndef FRACTALD_JOBS_PG_INTERNAL_H
#define FRACTALD_JOBS_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs.h"

#define JOBS_PG_POOL 8                  /* connections for workers, RPC threads and the heartbeat */
#define JOBS_PG_STATEMENT_TIMEOUT_MS 5000
#define JOBS_PG_CHUNK (1u << 20)        /* bytes per row of fractald_job_result_chunks */
#define JOBS_PG_CHANNEL "fractald_jobs" /* NOTIFY channel: "queued", or "cancel <id>" */

/* A job this process runs: from jobs_pg_next_queued until its finish or requeue returns. The
 * worker's jobs_work.cancel points at `cancel`. Guarded by jobs_pg.lock, but for `cancel`. */
struct pg_run {
    char id[JOBS_ID_SIZE];
    int64_t seq;
    uint32_t attempt;               /* the attempts count this claim set */
    int64_t claim;                  /* unique per claim, fleet-wide: part of the ownership test */
    atomic_int cancel;
    bool lost;                      /* the heartbeat found the lease taken by another server */
    bool finishing;                 /* a finish is under way: a row that stops matching is its doing */
    uint32_t rows_done, rows_total;
    uint64_t samples_done;
    struct pg_run *next;
};

struct jobs_pg {
    struct jobs_options opts;
    char *conninfo;
    char owner[128];                /* "<random hex>@<host>/<pid>": who holds a RUNNING job's lease */
    int64_t lease_ms;

    /* The pool: a connection is used by one thread at a time (libpq's rule). */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_freed;
    PGconn *conns[JOBS_PG_POOL];    /* NULL until first needed */
    bool busy[JOBS_PG_POOL];
    /* Bumped when a connection is found broken: the database went away, so every connection made
     * before is reopened at its next use instead of failing one more call each. */
    unsigned generation;
    unsigned conn_generation[JOBS_PG_POOL];

    pthread_mutex_t lock;
    pthread_cond_t queued;          /* NOTIFY or poll: there may be work; or jobs_pg_stop */
    pthread_cond_t tick;            /* wakes the heartbeat for close */
    struct pg_run *running;
    bool stopping, closing;

    pthread_mutex_t wake_lock;      /* held across the callback, so clearing it waits for a call */
    void (*wake)(void *ctx);
    void *wake_ctx;

    pthread_t listener, heartbeat;
    bool listener_started, heartbeat_started;
    int stop_pipe[2];               /* written at close, to end the listener's poll() */
};

/* Query parameters, text or binary, built up in order ($1, $2, ...). Values are borrowed except
 * numbers, which are formatted into buf. */
struct pg_params {
    int n;
    const char *v[20];
    int len[20], fmt[20];
    char buf[20][24];
};

void jobs_pg_p_int(struct pg_params *p, int64_t v);
void jobs_pg_p_text(struct pg_params *p, const char *s);
void jobs_pg_p_bytes(struct pg_params *p, const void *data, size_t len);

/* Opens a connection to conninfo (a URI or key=value string) with a connect timeout and this
 * backend's session settings (statement_timeout). Returns 0 and the connection in *out (the
 * caller PQfinish-es it), ERR_INVALID (conninfo does not parse) or ERR_UNAVAILABLE (cannot
 * connect). msg gets one line on failure. */
int jobs_pg_connect(PGconn **out, const char *conninfo, char *msg, size_t msglen);

/* Takes a connection from the pool, opening it or, when it broke, resetting it once (PQreset).
 * Waits while all are busy. Returns 0 with the connection in *out (give it back with
 * jobs_pg_release), or ERR_UNAVAILABLE with msg set. */
int jobs_pg_acquire(struct jobs_pg *pg, PGconn **out, char *msg, size_t msglen);
void jobs_pg_release(struct jobs_pg *pg, PGconn *c);
void jobs_pg_pool_dispose(struct jobs_pg *pg);

/* Runs one statement with parameters p (may be NULL); binary asks for binary results (used for
 * bytea columns read raw). Returns the result (the caller PQclear-s it) when it succeeded, else
 * NULL with *err set to ERR_UNAVAILABLE (connection lost, statement timeout, server shutting down,
 * serialization failure), ERR_EXHAUSTED (the database is out of disk or memory) or ERR_IO, and
 * one line in msg. */
PGresult *jobs_pg_exec(PGconn *c, const char *sql, const struct pg_params *p, int binary, int *err, char *msg,
                       size_t msglen);

/* jobs_pg_exec for statements whose result is not needed ("BEGIN", "COMMIT"). Returns 0 or the error. */
int jobs_pg_run(PGconn *c, const char *sql, const struct pg_params *p, char *msg, size_t msglen);

/* Integer value of a result cell (0 for NULL). */
int64_t jobs_pg_int(const PGresult *r, int row, int col);

/* The running job `id` of this process, or NULL. Caller holds pg->lock. */
struct pg_run *jobs_pg_find_run(struct jobs_pg *pg, const char *id);

/* Removes run r from pg->running and frees it. Takes pg->lock. */
void jobs_pg_drop_run(struct jobs_pg *pg, struct pg_run *r);

/* The error for a worker's change to job `id` that matched no row owned by this process (c is
 * the connection the change used): NOT_FOUND when the job is gone, PRECONDITION when it is not
 * RUNNING, another server took it over, or (then *cancelled is set, when not NULL) it is still this
 * process's but its cancel was requested. msg says which. */
int jobs_pg_not_mine(struct jobs_pg *pg, PGconn *c, const char *id, bool *cancelled, char *msg, size_t msglen);

/* Deletes the result chunks that claim `claim` of job seq wrote (jobs_pg_results.c): a result that
 * will not be published. Failures are left for the job's expiry, whose cascade deletes them. */
void jobs_pg_drop_chunks(PGconn *c, int64_t seq, int64_t claim);

/* A bytea cell (text format) unescaped into a malloc'ed copy; *len gets its size. NULL when out
 * of memory. */
void *jobs_pg_cell_bytes(const PGresult *r, int row, int col, size_t *len);

/* Calls the wake callback (if any) and wakes jobs_pg_next_queued waiters. */
void jobs_pg_wake(struct jobs_pg *pg);

/* The listener (LISTEN/NOTIFY plus a fallback poll) and heartbeat (lease renewal, cancel flags)
 * threads, jobs_pg_threads.c. Start returns 0 or ERR_NOMEM (msg set); stop joins them. */
int jobs_pg_threads_start(struct jobs_pg *pg, char *msg, size_t msglen);
void jobs_pg_threads_stop(struct jobs_pg *pg);

#endif
