/* jobs.c: the job store: opening and recovery, the state machine over the jobs, and the public API
 * of jobs.h; the index, the journal and the result files are jobs_index.c's, jobs_journal.c's and
 * jobs_results.c's. */
#include "jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "jobs_index.h"
#include "jobs_internal.h"
#include "jobs_journal.h"
#include "jobs_pg.h"
#include "jobs_results.h"
#include "log.h"

#define JOBS_MAX_JOBS_LIMIT 10000000u
#define JOBS_MESSAGE_MAX 1024

/* ---- helpers the job store's files share (jobs_internal.h) ---- */

void jobs_set_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;

    if (!msg || msglen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

int64_t jobs_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void *jobs_memdup(const void *data, size_t len)
{
    void *p = malloc(len ? len : 1);

    if (p && len)
        memcpy(p, data, len);
    return p;
}

void jobs_job_free(struct job *j)
{
    if (!j)
        return;
    free(j->request);
    free(j->stats);
    free(j->error_message);
    free(j);
}

void jobs_log_fields(char *buf, size_t cap, const char *id, const char *state)
{
    buf[0] = '\0';
    log_kv(buf, cap, "job", id);
    log_kv(buf, cap, "state", state);
}

void jobs_deadline(struct timespec *out, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (long)(ms % 1000) * 1000000;
    if (out->tv_nsec >= 1000000000) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000;
    }
}

void jobs_log_running(const char *id, uint32_t attempt, int64_t queued_ms, const char *extra)
{
    char fields[512];

    if (LOG_INFO < log_min_level)
        return;
    jobs_log_fields(fields, sizeof(fields), id, "RUNNING");
    log_kvf(fields, sizeof(fields), "attempt", "%u", attempt);
    log_kvf(fields, sizeof(fields), "queued_ms", "%lld", (long long)queued_ms);
    if (extra && strlen(fields) + strlen(extra) < sizeof(fields))
        strcat(fields, extra);
    log_event(LOG_INFO, "job", fields);
}

void jobs_log_succeeded(const char *id, uint64_t bytes, const char *content_type, uint32_t width, uint32_t height)
{
    char fields[256];

    if (LOG_INFO < log_min_level)
        return;
    jobs_log_fields(fields, sizeof(fields), id, "SUCCEEDED");
    log_kvf(fields, sizeof(fields), "bytes", "%llu", (unsigned long long)bytes);
    log_kv(fields, sizeof(fields), "content_type", content_type ? content_type : "");
    log_kvf(fields, sizeof(fields), "size", "%ux%u", width, height);
    log_event(LOG_INFO, "job", fields);
}

void jobs_log_job(int level, const char *id, const char *state, const char *key, const char *value)
{
    char fields[256];

    if (level < log_min_level)
        return;
    jobs_log_fields(fields, sizeof(fields), id, state);
    log_kv(fields, sizeof(fields), key, value);
    log_event(level, "job", fields);
}

void jobs_log_finish(int level, const char *id, enum jobs_state state, int32_t code, const char *error,
                     const char *extra)
{
    char fields[1536];

    if (level < log_min_level)
        return;
    jobs_log_fields(fields, sizeof(fields), id, jobs_state_name(state));
    if (code >= 0 && code <= 16)
        log_kv(fields, sizeof(fields), "code", err_status_name(code));
    else
        log_kvf(fields, sizeof(fields), "code", "%d", (int)code);
    log_kv(fields, sizeof(fields), "error", error);
    if (extra && strlen(fields) + strlen(extra) < sizeof(fields))
        strcat(fields, extra);
    log_event(level, "job", fields);
}

/* ---- states ---- */

const char *jobs_state_name(enum jobs_state state)
{
    switch (state) {
    case JOBS_ANY: return "ANY";
    case JOBS_QUEUED: return "QUEUED";
    case JOBS_RUNNING: return "RUNNING";
    case JOBS_SUCCEEDED: return "SUCCEEDED";
    case JOBS_FAILED: return "FAILED";
    case JOBS_CANCELLED: return "CANCELLED";
    }
    return "?";
}

/* ---- opening: directories, lock, database, recovery ---- */

static int mkdir_p(const char *path, char *msg, size_t msglen)
{
    char buf[PATH_MAX];

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;

        *p = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
            jobs_set_msg(msg, msglen, "spool directory %s: cannot create %s: %s", path, buf, strerror(errno));
            return ERR_IO;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        jobs_set_msg(msg, msglen, "spool directory %s is not a directory", path);
        return ERR_IO;
    }
    return 0;
}

/* Decides what becomes of a job loaded from the journal (see jobs_open) and records the change
 * in the open transaction. Returns 1 when the job is to be deleted, 0 to keep it, or an error. */
static int recover_job(jobs_store *s, struct job *j, int64_t now, char *msg, size_t msglen)
{
    struct finish_row r = {0};
    char text[JOBS_MESSAGE_MAX];
    int err;

    if (j->state == JOBS_QUEUED || j->state == JOBS_RUNNING) {
        bool was_running = j->state == JOBS_RUNNING;

        j->started_ms = 0;
        if (j->cancel_requested) {
            r.state = JOBS_CANCELLED;
            r.error_code = JOBS_CODE_CANCELLED;
            r.error_message = "cancelled; the server stopped before the render did";
        } else if (s->opts.max_attempts > 0 && j->attempts >= s->opts.max_attempts) {
            snprintf(text, sizeof(text), "the server stopped during each of its %u attempts; not run again",
                     j->attempts);
            r.state = JOBS_FAILED;
            r.error_code = JOBS_CODE_ABORTED;
            r.error_message = text;
        } else {
            j->state = JOBS_QUEUED;
            if (was_running) {
                if (LOG_INFO >= log_min_level) {
                    char fields[256];
                    jobs_log_fields(fields, sizeof(fields), j->id, "QUEUED");
                    log_kvf(fields, sizeof(fields), "attempt", "%u", j->attempts);
                    log_kv(fields, sizeof(fields), "reason", "interrupted by a restart");
                    log_event(LOG_INFO, "job", fields);
                }
                return jobs_journal_requeue(s->journal, j->seq, j->attempts, "requeueing interrupted jobs", msg,
                                            msglen);
            }
            return 0;
        }
        r.finished_ms = now;
        r.expires_ms = now + s->opts.retention_ms;
    } else if (jobs_state_finished(j->state)) {
        if (j->expires_ms <= now)
            return 1;
        if (j->state != JOBS_SUCCEEDED)
            return 0;
        /* 0: the file is as recorded; 1: it is not, and text says how. */
        if ((err = jobs_results_check(s, j->id, j->result_bytes, text, sizeof(text))) <= 0)
            return err;
        r = (struct finish_row){.state = JOBS_FAILED, .finished_ms = j->finished_ms, .expires_ms = j->expires_ms,
                                .error_code = JOBS_CODE_DATA_LOSS, .error_message = text};
    } else {
        if (LOG_WARN >= log_min_level) {
            char fields[256];
            jobs_log_fields(fields, sizeof(fields), j->id, "DELETED");
            log_kv(fields, sizeof(fields), "at", "start");
            log_kvf(fields, sizeof(fields), "reason", "unknown state %d in the journal", (int)j->state);
            log_event(LOG_WARN, "job", fields);
        }
        return 1;
    }
    if ((err = jobs_journal_finish(s->journal, j->seq, &r, msg, msglen)) < 0)
        return err;
    jobs_log_finish(r.state == JOBS_CANCELLED ? LOG_INFO : LOG_WARN, j->id, r.state, r.error_code, r.error_message,
               " at=start");
    j->state = r.state;
    j->error_code = r.error_code;
    free(j->error_message);
    j->error_message = strdup(r.error_message);
    j->finished_ms = r.finished_ms;
    j->expires_ms = r.expires_ms;
    j->result_bytes = 0;
    j->content_type[0] = '\0';
    return j->error_message ? 0 : ERR_NOMEM;
}

/* What load_job carries from row to row of the load. */
struct load_ctx {
    jobs_store *store;
    struct job *doomed;             /* deleted rows, chained through hash_next, freed at the end */
    int64_t now;
    char *msg;
    size_t msglen;
};

/* The journal's visitor at open: takes job j, loaded from its row, and either indexes it or deletes
 * its row in the load's transaction and keeps it on the doomed chain, whose files go only once the
 * load has committed. Returns 0, or an error that ends the load (j is then freed). */
static int load_job(void *ctx, struct job *j)
{
    struct load_ctx *c = ctx;
    jobs_store *s = c->store;
    int keep, err;

    if (!jobs_id_valid(j->id)) {
        /* Never build a path from a malformed id; the row is dropped. */
        log_at(LOG_WARN, "job store: row %lld has a malformed id; dropped", (long long)j->seq);
        j->id[0] = '\0';
        keep = 1;
    } else if ((keep = recover_job(s, j, c->now, c->msg, c->msglen)) < 0) {
        jobs_job_free(j);
        return keep;
    }
    if (keep == 1) {
        if ((err = jobs_journal_delete(s->journal, j->seq, c->msg, c->msglen)) < 0) {
            jobs_job_free(j);
            return err;
        }
        j->hash_next = c->doomed;
        c->doomed = j;
        return 0;
    }
    jobs_index_add(s, j);
    return 0;
}

/* Loads every row, recovers each job inside one transaction, then deletes the files of jobs
 * that went. */
static int load_jobs(jobs_store *s, char *msg, size_t msglen)
{
    struct load_ctx c = {.store = s, .now = jobs_now_ms(), .msg = msg, .msglen = msglen};
    int64_t rows = 0, max_seq = 0;
    int err = 0;

    if ((err = jobs_journal_count(s->journal, &rows, &max_seq, msg, msglen)) < 0)
        goto done;
    /* Only a damaged or edited journal holds the largest seq: the next one would overflow. */
    if (max_seq == INT64_MAX) {
        jobs_set_msg(msg, msglen, "job store %s/jobs.db: a job's seq is %lld, the largest there can be; the "
                     "journal is damaged", s->spool_dir, (long long)max_seq);
        err = ERR_IO;
        goto done;
    }
    s->next_seq = max_seq + 1;

    if ((err = jobs_index_init(s, (uint64_t)rows)) < 0) {
        jobs_set_msg(msg, msglen, "out of memory loading the job store");
        goto done;
    }
    err = jobs_journal_load(s->journal, load_job, &c, msg, msglen);
done:
    while (c.doomed) {
        struct job *next = c.doomed->hash_next;

        /* After the commit only: a crash before it leaves the job and its file both in place. */
        if (err == 0 && c.doomed->state == JOBS_SUCCEEDED && c.doomed->id[0])
            jobs_results_delete(s, c.doomed->id);
        jobs_job_free(c.doomed);
        c.doomed = next;
    }
    return err;
}

/* jobs_open for opts->job_store: a store that only carries the PostgreSQL backend. */
static int open_pg(jobs_store **out, const struct jobs_options *opts, char *msg, size_t msglen)
{
    jobs_store *s = calloc(1, sizeof(*s));
    int err;

    if (!s) {
        jobs_set_msg(msg, msglen, "out of memory opening the job store");
        return ERR_NOMEM;
    }
    if ((err = jobs_pg_open(&s->pg, opts, msg, msglen)) < 0) {
        free(s);
        return err;
    }
    s->opts = *opts;
    *out = s;
    return 0;
}

int jobs_open(jobs_store **out, const struct jobs_options *opts, char *msg, size_t msglen)
{
    jobs_store *s = NULL;
    char path[PATH_MAX];
    bool locks_made = false;
    int err = 0;

    *out = NULL;
    if (!opts || opts->version != JOBS_OPTIONS_VERSION) {
        jobs_set_msg(msg, msglen, "jobs_options.version must be %d", JOBS_OPTIONS_VERSION);
        return ERR_INVALID;
    }
    if (opts->retention_ms < 0 || opts->disk_budget == 0 || opts->max_jobs == 0 ||
        opts->max_jobs > JOBS_MAX_JOBS_LIMIT) {
        jobs_set_msg(msg, msglen, "job store limits: retention must be >= 0 ms (got %lld), disk budget > 0 bytes "
                     "(got %llu), max jobs 1..%u (got %u)", (long long)opts->retention_ms,
                     (unsigned long long)opts->disk_budget, JOBS_MAX_JOBS_LIMIT, opts->max_jobs);
        return ERR_INVALID;
    }
    jobs_results_init();
    if (opts->job_store && opts->job_store[0])
        return open_pg(out, opts, msg, msglen);
    if (!opts->spool_dir || !opts->spool_dir[0] || strlen(opts->spool_dir) > PATH_MAX - 64) {
        jobs_set_msg(msg, msglen, "spool directory must be a path of 1..%d bytes", PATH_MAX - 64);
        return ERR_INVALID;
    }

    if (!(s = calloc(1, sizeof(*s)))) {
        err = ERR_NOMEM;
        goto done;
    }
    s->opts = *opts;
    s->lock_fd = s->results_fd = -1;
    s->spool_dir = strdup(opts->spool_dir);
    s->results_dir = malloc(strlen(opts->spool_dir) + sizeof("/results"));
    if (!s->spool_dir || !s->results_dir) {
        err = ERR_NOMEM;
        goto done;
    }
    s->opts.spool_dir = s->spool_dir;
    sprintf(s->results_dir, "%s/results", s->spool_dir);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->db_lock, NULL);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->queued, &ca);
    pthread_condattr_destroy(&ca);
    locks_made = true;

    if ((err = mkdir_p(s->spool_dir, msg, msglen)) < 0 || (err = mkdir_p(s->results_dir, msg, msglen)) < 0)
        goto done;
    snprintf(path, sizeof(path), "%s/lock", s->spool_dir);
    if ((s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) < 0) {
        jobs_set_msg(msg, msglen, "spool lock %s: %s", path, strerror(errno));
        err = ERR_IO;
        goto done;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        jobs_set_msg(msg, msglen, "spool directory %s is in use by another job store (flock %s: %s)", s->spool_dir,
                     path, strerror(errno));
        err = errno == EWOULDBLOCK ? ERR_UNAVAILABLE : ERR_IO;
        goto done;
    }
    if ((s->results_fd = open(s->results_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        jobs_set_msg(msg, msglen, "spool results folder %s: %s", s->results_dir, strerror(errno));
        err = ERR_IO;
        goto done;
    }
    if ((err = jobs_journal_open(&s->journal, s->spool_dir, s->opts.sync_full, msg, msglen)) < 0 ||
        (err = load_jobs(s, msg, msglen)) < 0 || (err = jobs_results_sweep(s, msg, msglen)) < 0)
        goto done;

    log_at(LOG_INFO, "job store %s: %u jobs (%u queued, %u succeeded), %llu bytes of results", s->spool_dir,
           s->held, s->counts[JOBS_QUEUED], s->counts[JOBS_SUCCEEDED], (unsigned long long)s->spool_bytes);
    *out = s;
    s = NULL;
done:
    if (err == ERR_NOMEM)
        jobs_set_msg(msg, msglen, "out of memory opening the job store");
    if (s && !locks_made) {
        free(s->spool_dir);
        free(s->results_dir);
        free(s);
    } else {
        jobs_close(s);
    }
    return err;
}

void jobs_set_wake(jobs_store *s, void (*wake)(void *ctx), void *ctx)
{
    /* The SQLite store's jobs are all submitted here, and its submit signals its own workers. */
    if (s->pg)
        jobs_pg_set_wake(s->pg, wake, ctx);
}

void jobs_close(jobs_store *s)
{
    if (!s)
        return;
    if (s->pg) {
        jobs_pg_close(s->pg);
        free(s);
        return;
    }
    jobs_journal_close(s->journal);
    jobs_index_dispose(s);
    if (s->results_fd >= 0)
        close(s->results_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);      /* releases the flock */
    pthread_cond_destroy(&s->queued);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->db_lock);
    free(s->spool_dir);
    free(s->results_dir);
    free(s);
}

/* ---- submitting, reading, cancelling ---- */

int jobs_submit(jobs_store *s, const void *request, size_t len, char id_out[JOBS_ID_SIZE], char *msg,
                size_t msglen)
{
    if (s->pg)
        return jobs_pg_submit(s->pg, request, len, id_out, msg, msglen);

    struct job *j = NULL;
    char id[JOBS_ID_SIZE];
    bool locked = false;
    int err;

    id_out[0] = '\0';
    if (!request && len > 0) {
        jobs_set_msg(msg, msglen, "jobs_submit: request is NULL with %zu bytes", len);
        return ERR_INVALID;
    }
    /* jobs_expire returns how many jobs it deleted: a count, not a code, so it must not stay in
     * err (it once did, and the job was journaled with an id never generated). */
    if ((err = jobs_expire(s, jobs_now_ms())) < 0) {
        jobs_set_msg(msg, msglen, "job store %s: cannot delete expired jobs", s->spool_dir);
        return err;
    }
    err = 0;
    if (!(j = calloc(1, sizeof(*j))) || !(j->request = jobs_memdup(request, len))) {
        err = ERR_NOMEM;
        jobs_set_msg(msg, msglen, "out of memory queueing a job");
        goto done;
    }
    j->request_len = len;
    j->state = JOBS_QUEUED;
    j->error_message = NULL;
    j->created_ms = jobs_now_ms();

    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    locked = true;
    if (s->stopping) {
        err = ERR_UNAVAILABLE;
        jobs_set_msg(msg, msglen, "the server is shutting down and takes no new jobs");
    } else if (s->held >= s->opts.max_jobs) {
        err = ERR_EXHAUSTED;
        jobs_set_msg(msg, msglen, "the job store holds %u jobs, its limit; finished jobs are deleted %lld s after "
                     "they finish", s->held, (long long)(s->opts.retention_ms / 1000));
    } else if (s->spool_bytes >= s->opts.disk_budget) {
        err = ERR_EXHAUSTED;
        jobs_set_msg(msg, msglen, "job results fill the spool's disk budget (%llu of %llu bytes); they are deleted "
                     "%lld s after they finish", (unsigned long long)s->spool_bytes,
                     (unsigned long long)s->opts.disk_budget, (long long)(s->opts.retention_ms / 1000));
    }
    /* A duplicate of 128 random bits will not happen; looking costs nothing and rules it out. */
    do {
        if (err == 0 && (err = jobs_id_generate(id)) < 0)
            jobs_set_msg(msg, msglen, "getrandom failed: %s", strerror(errno));
    } while (err == 0 && jobs_find(s, id));
    j->seq = s->next_seq;
    pthread_mutex_unlock(&s->lock);
    if (err < 0)
        goto done;

    memcpy(j->id, id, sizeof(id));
    if ((err = jobs_journal_insert(s->journal, j, msg, msglen)) < 0)
        goto done;

    pthread_mutex_lock(&s->lock);
    s->next_seq++;
    jobs_index_add(s, j);
    pthread_cond_signal(&s->queued);
    pthread_mutex_unlock(&s->lock);
    if (LOG_INFO >= log_min_level) {
        char fields[256];
        jobs_log_fields(fields, sizeof(fields), id, "QUEUED");
        log_kvf(fields, sizeof(fields), "request_bytes", "%zu", len);
        log_event(LOG_INFO, "job", fields);
    }
    memcpy(id_out, id, sizeof(id));
    j = NULL;
done:
    if (locked)
        pthread_mutex_unlock(&s->db_lock);
    jobs_job_free(j);
    return err;
}
/* Copies a job into a jobs_info. Caller holds store->lock and sets queue_position. */
static int fill_info(struct jobs_info *out, const struct job *j)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->id, j->id, sizeof(out->id));
    out->state = j->state;
    out->cancel_requested = j->cancel_requested;
    out->attempts = j->attempts;
    out->rows_done = j->rows_done;
    out->rows_total = j->rows_total;
    out->samples_done = j->samples_done;
    out->created_ms = j->created_ms;
    out->started_ms = j->started_ms;
    out->finished_ms = j->finished_ms;
    out->expires_ms = j->expires_ms;
    out->error_code = j->error_code;
    out->error_message = strdup(j->error_message ? j->error_message : "");
    out->request = jobs_memdup(j->request, j->request_len);
    out->request_len = j->request_len;
    if (j->stats) {
        out->stats = jobs_memdup(j->stats, j->stats_len);
        out->stats_len = j->stats_len;
    }
    memcpy(out->content_type, j->content_type, sizeof(out->content_type));
    out->width = j->width;
    out->height = j->height;
    out->result_bytes = j->result_bytes;
    if (!out->error_message || !out->request || (j->stats && !out->stats)) {
        jobs_info_dispose(out);
        return ERR_NOMEM;
    }
    return 0;
}

int jobs_get(struct jobs_info *out, jobs_store *s, const char *id)
{
    if (s->pg)
        return jobs_pg_get(out, s->pg, id);

    struct job *j;
    int err = ERR_NOT_FOUND;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    if ((j = jobs_find(s, id)) && (err = fill_info(out, j)) == 0 && j->state == JOBS_QUEUED)
        out->queue_position = jobs_index_position(s, j);
    pthread_mutex_unlock(&s->lock);
    return err;
}

void jobs_info_dispose(struct jobs_info *info)
{
    if (!info)
        return;
    free(info->error_message);
    free(info->request);
    free(info->stats);
    memset(info, 0, sizeof(*info));
}

void jobs_info_free_array(struct jobs_info *infos, size_t count)
{
    if (!infos)
        return;
    for (size_t i = 0; i < count; i++)
        jobs_info_dispose(&infos[i]);
    free(infos);
}

int jobs_list(struct jobs_info **out, size_t *count, jobs_store *s, enum jobs_state state, size_t limit)
{
    if (s->pg)
        return jobs_pg_list(out, count, s->pg, state, limit);

    struct jobs_info *infos = NULL;
    size_t n = 0, cap;
    uint32_t pos = 1;
    int err = 0;

    *out = NULL;
    *count = 0;
    pthread_mutex_lock(&s->lock);
    cap = state == JOBS_ANY ? s->held : state < 6 ? s->counts[state] : 0;
    if (limit && limit < cap)
        cap = limit;
    if (cap == 0)
        goto done;
    if (!(infos = calloc(cap, sizeof(*infos)))) {
        err = ERR_NOMEM;
        goto done;
    }
    /* One walk of the queue numbers every queued job, so listing the queue costs O(n), not O(n^2). */
    for (struct job *j = s->queue_head; j; j = j->list_next)
        j->queue_position = pos++;
    for (struct job *j = s->all_tail; j && n < cap; j = j->all_prev) {
        if (state != JOBS_ANY && j->state != state)
            continue;
        if ((err = fill_info(&infos[n], j)) < 0)
            goto done;
        if (j->state == JOBS_QUEUED)
            infos[n].queue_position = j->queue_position;
        n++;
    }
done:
    pthread_mutex_unlock(&s->lock);
    if (err < 0) {
        jobs_info_free_array(infos, n);
        return err;
    }
    *out = infos;
    *count = n;
    return 0;
}

int jobs_queue_position(jobs_store *s, const char *id)
{
    if (s->pg)
        return jobs_pg_queue_position(s->pg, id);

    struct job *j;
    int pos = ERR_NOT_FOUND;

    pthread_mutex_lock(&s->lock);
    if ((j = jobs_find(s, id)))
        pos = j->state == JOBS_QUEUED ? (int)jobs_index_position(s, j) : 0;
    pthread_mutex_unlock(&s->lock);
    return pos;
}

void jobs_get_stats(struct jobs_stats *out, jobs_store *s)
{
    if (s->pg) {
        jobs_pg_get_stats(out, s->pg);
        return;
    }
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    out->held = s->held;
    out->queued = s->counts[JOBS_QUEUED];
    out->running = s->counts[JOBS_RUNNING];
    out->succeeded = s->counts[JOBS_SUCCEEDED];
    out->failed = s->counts[JOBS_FAILED];
    out->cancelled = s->counts[JOBS_CANCELLED];
    out->max_jobs = s->opts.max_jobs;
    out->spool_bytes = s->spool_bytes;
    out->disk_budget = s->opts.disk_budget;
    pthread_mutex_unlock(&s->lock);
}

int jobs_cancel(jobs_store *s, const char *id, char *msg, size_t msglen)
{
    if (s->pg)
        return jobs_pg_cancel(s->pg, id, msg, msglen);

    struct job *j;
    enum jobs_state state = JOBS_ANY;
    bool already = false;
    int64_t seq = 0, now = jobs_now_ms();
    int err = 0;

    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    if ((j = jobs_find(s, id))) {
        state = j->state;
        seq = j->seq;
        already = j->cancel_requested;
    }
    pthread_mutex_unlock(&s->lock);
    if (!j) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        goto done;
    }
    if (state == JOBS_QUEUED) {
        struct finish_row r = {.state = JOBS_CANCELLED, .finished_ms = now, .expires_ms = now + s->opts.retention_ms,
                               .error_code = JOBS_CODE_CANCELLED, .error_message = "cancelled before it started"};
        char *text = strdup(r.error_message);

        if (!text) {
            err = ERR_NOMEM;
            jobs_set_msg(msg, msglen, "out of memory cancelling job %s", id);
            goto done;
        }
        if ((err = jobs_journal_finish(s->journal, seq, &r, msg, msglen)) < 0) {
            free(text);
            goto done;
        }
        pthread_mutex_lock(&s->lock);
        jobs_index_apply_finish(s, j, &r, NULL, text);
        pthread_mutex_unlock(&s->lock);
        jobs_log_finish(LOG_INFO, id, r.state, r.error_code, r.error_message, NULL);
    } else if (state == JOBS_RUNNING && !already) {
        if ((err = jobs_journal_cancel(s->journal, seq, msg, msglen)) < 0)
            goto done;
        pthread_mutex_lock(&s->lock);
        j->cancel_requested = true;
        atomic_store(&j->cancel, 1);
        pthread_mutex_unlock(&s->lock);
        jobs_log_job(LOG_INFO, id, "RUNNING", "cancel", "requested");
    }
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

/* ---- workers ---- */

int jobs_next_queued(struct jobs_work *out, jobs_store *s, int timeout_ms, char *msg, size_t msglen)
{
    if (s->pg)
        return jobs_pg_next_queued(out, s->pg, timeout_ms, msg, msglen);

    struct timespec deadline;
    struct job *j = NULL;
    void *request = NULL;
    int64_t started;
    uint32_t attempts = 0;
    int err = 0;

    memset(out, 0, sizeof(*out));
    if (timeout_ms > 0)
        jobs_deadline(&deadline, timeout_ms);
    for (;;) {
        /* Wait without db_lock, so a waiting worker holds up nobody. */
        pthread_mutex_lock(&s->lock);
        while (!s->stopping && !s->queue_head) {
            if (timeout_ms == 0 ||
                (timeout_ms > 0 && pthread_cond_timedwait(&s->queued, &s->lock, &deadline) == ETIMEDOUT))
                break;
            if (timeout_ms < 0)
                pthread_cond_wait(&s->queued, &s->lock);
        }
        err = s->stopping ? ERR_UNAVAILABLE : s->queue_head ? 0 : ERR_NOT_FOUND;
        pthread_mutex_unlock(&s->lock);
        if (err < 0) {
            jobs_set_msg(msg, msglen, err == ERR_UNAVAILABLE ? "the job store is stopping" : "no job is queued");
            return err;
        }
        /* Another worker may take the job between the two locks; then wait again. */
        pthread_mutex_lock(&s->db_lock);
        pthread_mutex_lock(&s->lock);
        j = s->stopping ? NULL : s->queue_head;
        if (j) {
            request = jobs_memdup(j->request, j->request_len);
            attempts = j->attempts + 1;
        }
        pthread_mutex_unlock(&s->lock);
        if (j)
            break;
        pthread_mutex_unlock(&s->db_lock);
    }
    if (!request) {
        err = ERR_NOMEM;
        jobs_set_msg(msg, msglen, "out of memory starting a job");
        goto done;
    }
    /* The attempt is committed before the render starts, so a job that kills the server is
     * counted (max_attempts) even though its render never reports. */
    started = jobs_now_ms();
    if ((err = jobs_journal_start(s->journal, j->seq, started, attempts, msg, msglen)) < 0)
        goto done;

    pthread_mutex_lock(&s->lock);
    jobs_index_set_state(s, j, JOBS_RUNNING);
    j->started_ms = started;
    j->attempts = attempts;
    j->rows_done = j->rows_total = 0;
    j->samples_done = 0;
    atomic_store(&j->cancel, 0);
    memcpy(out->id, j->id, sizeof(out->id));
    out->request = request;
    out->request_len = j->request_len;
    out->cancel = &j->cancel;
    out->created_ms = j->created_ms;
    out->started_ms = started;
    out->attempts = attempts;
    pthread_mutex_unlock(&s->lock);
    request = NULL;
    jobs_log_running(out->id, attempts, started - out->created_ms, NULL);
done:
    pthread_mutex_unlock(&s->db_lock);
    free(request);
    return err;
}

void jobs_work_dispose(struct jobs_work *work)
{
    if (!work)
        return;
    free(work->request);
    memset(work, 0, sizeof(*work));
}

void jobs_stop(jobs_store *s)
{
    if (s->pg) {
        jobs_pg_stop(s->pg);
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->queued);
    pthread_mutex_unlock(&s->lock);
}

int jobs_progress(jobs_store *s, const char *id, uint32_t rows_done, uint32_t rows_total, uint64_t samples_done)
{
    if (s->pg)
        return jobs_pg_progress(s->pg, id, rows_done, rows_total, samples_done);

    struct job *j;
    int err = ERR_NOT_FOUND;

    pthread_mutex_lock(&s->lock);
    if ((j = jobs_find(s, id))) {
        err = 0;
        if (j->state == JOBS_RUNNING) {
            j->rows_done = rows_done;
            j->rows_total = rows_total;
            j->samples_done = samples_done;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* Looks up a job for a change: returns its seq (and state) under db_lock, or an error with a
 * message when it is missing or not in `want`. */
static int lookup_for_change(jobs_store *s, const char *id, enum jobs_state want, struct job **job, char *msg,
                             size_t msglen)
{
    struct job *j;
    enum jobs_state state = JOBS_ANY;

    pthread_mutex_lock(&s->lock);
    if ((j = jobs_find(s, id)))
        state = j->state;
    pthread_mutex_unlock(&s->lock);
    *job = j;
    if (!j) {
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        return ERR_NOT_FOUND;
    }
    if (state != want) {
        jobs_set_msg(msg, msglen, "job %s is %s, not %s", id, jobs_state_name(state), jobs_state_name(want));
        return ERR_PRECONDITION;
    }
    return 0;
}

int jobs_finish_error(jobs_store *s, const char *id, int32_t code, const char *message, char *msg, size_t msglen)
{
    if (s->pg)
        return jobs_pg_finish_error(s->pg, id, code, message, msg, msglen);

    struct finish_row r = {0};
    struct job *j;
    char *text = strdup(message ? message : "");
    int err, jerr;

    if (!text) {
        jobs_set_msg(msg, msglen, "out of memory finishing a job");
        return ERR_NOMEM;
    }
    r.state = code == JOBS_CODE_CANCELLED ? JOBS_CANCELLED : JOBS_FAILED;
    r.finished_ms = jobs_now_ms();
    r.expires_ms = r.finished_ms + s->opts.retention_ms;
    r.error_code = code;
    r.error_message = text;
    pthread_mutex_lock(&s->db_lock);
    if ((err = lookup_for_change(s, id, JOBS_RUNNING, &j, msg, msglen)) < 0) {
        free(text);
        goto done;
    }
    /* The job leaves RUNNING in memory even if the commit fails: its worker is gone, and nothing
     * else would ever finish it. On disk it stays RUNNING and runs again after a restart. */
    jerr = jobs_journal_finish(s->journal, j->seq, &r, msg, msglen);
    pthread_mutex_lock(&s->lock);
    jobs_index_apply_finish(s, j, &r, NULL, text);
    pthread_mutex_unlock(&s->lock);
    jobs_log_finish(jerr < 0 ? LOG_WARN : LOG_INFO, id, r.state, code, text,
               jerr < 0 ? " journaled=false note=\"it runs again after a restart\"" : NULL);
    err = jerr;
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

int jobs_requeue(jobs_store *s, const char *id, char *msg, size_t msglen)
{
    if (s->pg)
        return jobs_pg_requeue(s->pg, id, msg, msglen);

    struct job *j;
    bool cancelled;
    uint32_t attempts;
    int err;

    pthread_mutex_lock(&s->db_lock);
    if ((err = lookup_for_change(s, id, JOBS_RUNNING, &j, msg, msglen)) < 0)
        goto done;
    pthread_mutex_lock(&s->lock);
    cancelled = j->cancel_requested;
    attempts = j->attempts > 0 ? j->attempts - 1 : 0;
    pthread_mutex_unlock(&s->lock);
    if (cancelled) {
        pthread_mutex_unlock(&s->db_lock);
        return jobs_finish_error(s, id, JOBS_CODE_CANCELLED, "cancelled", msg, msglen);
    }
    if ((err = jobs_journal_requeue(s->journal, j->seq, attempts, "requeueing a job", msg, msglen)) < 0)
        goto done;
    pthread_mutex_lock(&s->lock);
    j->attempts = attempts;
    j->started_ms = 0;
    j->rows_done = j->rows_total = 0;
    j->samples_done = 0;
    jobs_index_set_state(s, j, JOBS_QUEUED);
    pthread_mutex_unlock(&s->lock);
    jobs_log_job(LOG_INFO, id, "QUEUED", "reason", "requeued by its worker");
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

int jobs_expire(jobs_store *s, int64_t now)
{
    if (s->pg)
        return jobs_pg_expire(s->pg, now);

    struct job **due = NULL;
    size_t n = 0, cap = 0;
    int err = 0;

    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    for (struct job *j = s->done_head; j && j->expires_ms <= now; j = j->list_next)
        cap++;
    if (cap && !(due = malloc(cap * sizeof(*due))))
        err = ERR_NOMEM;
    for (struct job *j = s->done_head; due && n < cap; j = j->list_next)
        due[n++] = j;
    pthread_mutex_unlock(&s->lock);
    if (n == 0)
        goto done;

    /* One transaction for the batch: one commit however many expire at once. */
    if ((err = jobs_journal_delete_expired(s->journal, due, n, NULL, 0)) < 0)
        goto done;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        jobs_index_remove(s, due[i]);
    pthread_mutex_unlock(&s->lock);
done:
    if (err < 0)
        log_at(LOG_WARN, "job store %s: cannot delete %zu expired jobs: %s (%s)", s->spool_dir, cap, err_name(err),
               jobs_journal_errmsg(s->journal));
    pthread_mutex_unlock(&s->db_lock);
    /* The rows are gone, so the jobs are unreachable; their files go after the commit (a crash
     * in between leaves files that the next open's sweep deletes). */
    for (size_t i = 0; err == 0 && i < n; i++) {
        jobs_log_job(LOG_INFO, due[i]->id, "DELETED", "reason", "expired");
        if (due[i]->state == JOBS_SUCCEEDED)
            jobs_results_delete(s, due[i]->id);
        jobs_job_free(due[i]);
    }
    free(due);
    return err < 0 ? err : (int)n;
}

/* ---- results: the state changes of jobs_results.c ---- */

int jobs_commit_success(jobs_store *s, const char *id, const struct finish_row *r, void *stats, char *msg,
                        size_t msglen)
{
    struct job *j;
    int err;

    pthread_mutex_lock(&s->db_lock);
    if ((err = lookup_for_change(s, id, JOBS_RUNNING, &j, msg, msglen)) == 0 &&
        (err = jobs_journal_finish(s->journal, j->seq, r, msg, msglen)) == 0) {
        pthread_mutex_lock(&s->lock);
        /* The writer's reservation becomes the job's result bytes. */
        s->spool_bytes -= r->result_bytes;
        jobs_index_apply_finish(s, j, r, stats, NULL);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

void jobs_mark_data_loss(jobs_store *s, const char *id, const char *why)
{
    struct job *j;
    char *text = strdup(why);
    struct finish_row r = {0};
    bool lost = false;
    int err;

    if (!text)
        return;
    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    j = jobs_find(s, id);
    if (j && j->state == JOBS_SUCCEEDED)
        r = (struct finish_row){.state = JOBS_FAILED, .finished_ms = j->finished_ms, .expires_ms = j->expires_ms,
                                .error_code = JOBS_CODE_DATA_LOSS, .error_message = text};
    else
        j = NULL;
    pthread_mutex_unlock(&s->lock);
    if (j && (err = jobs_journal_finish(s->journal, j->seq, &r, NULL, 0)) == 0) {
        pthread_mutex_lock(&s->lock);
        jobs_index_apply_finish(s, j, &r, NULL, text);
        pthread_mutex_unlock(&s->lock);
        text = NULL;
        lost = true;
        jobs_log_finish(LOG_WARN, id, r.state, r.error_code, why, NULL);
    }
    pthread_mutex_unlock(&s->db_lock);
    if (lost)
        jobs_results_delete(s, id);
    free(text);
}
