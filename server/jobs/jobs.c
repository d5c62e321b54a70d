/* jobs.c: the job store: an in-memory index of every job, journaled to SQLite (WAL) in the spool
 * directory, with each result in its own file there. The only file that includes sqlite3.h. */
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "err.h"
#include "log.h"

/* Version of the database layout, kept in PRAGMA user_version. A spool written by a newer
 * layout is refused rather than misread. */
#define JOBS_SCHEMA_VERSION 1

#define JOBS_MAX_JOBS_LIMIT 10000000u
#define JOBS_MESSAGE_MAX 1024

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

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

struct jobs_store {
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
    sqlite3 *db;
    sqlite3_stmt *st_insert, *st_start, *st_requeue, *st_cancel, *st_finish, *st_delete;

    pthread_mutex_t lock;
    pthread_cond_t queued;          /* a job was queued, or jobs_stop was called */
    struct job **buckets;           /* chained hash on id; nbuckets is a power of two */
    size_t nbuckets;
    struct job *all_head, *all_tail;
    struct job *queue_head, *queue_tail;
    struct job *done_head, *done_tail;   /* finished jobs by expires_ms, oldest first */
    uint32_t counts[6];             /* by enum jobs_state */
    uint32_t held;
    uint64_t spool_bytes;           /* published results plus bytes reserved by open writers */
    int64_t next_seq;
    uint64_t next_tmp;              /* makes each writer's temporary file name unique */
    bool stopping;
};

struct jobs_result {
    jobs_store *store;
    char id[JOBS_ID_SIZE];
    int fd;
    char *tmp_path, *final_path;
    uint64_t bytes;                 /* written, and reserved in store->spool_bytes */
    uint32_t crc;
    bool published;
    char message[256];
};

struct jobs_reader {
    jobs_store *store;
    char id[JOBS_ID_SIZE];
    int fd;
    uint64_t size, offset;
    uint32_t crc_expected, crc;
};

static void set_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;

    if (!msg || msglen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CRC-32 (IEEE 802.3, as zlib's crc32), table-driven; enough to tell a damaged result from a
 * good one at disk speed. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;

        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;

    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static bool id_valid(const char *id)
{
    size_t n = 0;

    if (!id)
        return false;
    for (; id[n]; n++)
        if (n >= JOBS_ID_LEN || !strchr(base32_alphabet, id[n]))
            return false;
    return n == JOBS_ID_LEN;
}

/* 128 bits from getrandom() in base32: 26 characters of 5 bits, the last one carrying 3. */
static int id_generate(char id[JOBS_ID_SIZE])
{
    uint8_t raw[17] = {0};
    size_t got = 0;

    while (got < 16) {
        ssize_t n = getrandom(raw + got, 16 - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ERR_INTERNAL;
        got += (size_t)n;
    }
    for (int i = 0; i < JOBS_ID_LEN; i++) {
        int bit = i * 5, byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)raw[byte] << 8 | raw[byte + 1]) >> (11 - shift);

        id[i] = base32_alphabet[v & 31];
    }
    id[JOBS_ID_LEN] = '\0';
    return 0;
}

static size_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603u;

    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211u;
    return (size_t)h;
}

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

static bool state_finished(enum jobs_state state)
{
    return state == JOBS_SUCCEEDED || state == JOBS_FAILED || state == JOBS_CANCELLED;
}

/* ---- the in-memory index (callers hold store->lock) ---- */

static struct job *find(jobs_store *s, const char *id)
{
    if (!id_valid(id))
        return NULL;
    for (struct job *j = s->buckets[id_hash(id) & (s->nbuckets - 1)]; j; j = j->hash_next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

static void list_unlink(struct job **head, struct job **tail, struct job *j)
{
    if (j->list_prev)
        j->list_prev->list_next = j->list_next;
    else
        *head = j->list_next;
    if (j->list_next)
        j->list_next->list_prev = j->list_prev;
    else
        *tail = j->list_prev;
    j->list_prev = j->list_next = NULL;
}

/* Inserts j after the last element `before` says precedes it, searching from the tail: both
 * lists almost always grow at the tail (new submissions, jobs finishing now). */
static void list_insert_sorted(struct job **head, struct job **tail, struct job *j,
                               bool (*before)(const struct job *a, const struct job *b))
{
    struct job *p = *tail;

    while (p && !before(p, j))
        p = p->list_prev;
    j->list_prev = p;
    j->list_next = p ? p->list_next : *head;
    if (j->list_next)
        j->list_next->list_prev = j;
    else
        *tail = j;
    if (p)
        p->list_next = j;
    else
        *head = j;
}

static bool seq_before(const struct job *a, const struct job *b)
{
    return a->seq <= b->seq;
}

static bool expiry_before(const struct job *a, const struct job *b)
{
    return a->expires_ms <= b->expires_ms;
}

static void queue_add(jobs_store *s, struct job *j)
{
    list_insert_sorted(&s->queue_head, &s->queue_tail, j, seq_before);
}

static void done_add(jobs_store *s, struct job *j)
{
    list_insert_sorted(&s->done_head, &s->done_tail, j, expiry_before);
}

/* Adds a job to the hash, the seq-ordered list of all jobs and the list its state belongs to. */
static void index_add(jobs_store *s, struct job *j)
{
    size_t b = id_hash(j->id) & (s->nbuckets - 1);

    j->hash_next = s->buckets[b];
    s->buckets[b] = j;
    j->all_prev = s->all_tail;
    j->all_next = NULL;
    if (s->all_tail)
        s->all_tail->all_next = j;
    else
        s->all_head = j;
    s->all_tail = j;
    if (j->state == JOBS_QUEUED)
        queue_add(s, j);
    else if (state_finished(j->state))
        done_add(s, j);
    s->counts[j->state]++;
    s->held++;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes += j->result_bytes;
}

static void index_remove(jobs_store *s, struct job *j)
{
    struct job **pp = &s->buckets[id_hash(j->id) & (s->nbuckets - 1)];

    while (*pp != j)
        pp = &(*pp)->hash_next;
    *pp = j->hash_next;
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else
        s->all_head = j->all_next;
    if (j->all_next)
        j->all_next->all_prev = j->all_prev;
    else
        s->all_tail = j->all_prev;
    if (j->state == JOBS_QUEUED)
        list_unlink(&s->queue_head, &s->queue_tail, j);
    else if (state_finished(j->state))
        list_unlink(&s->done_head, &s->done_tail, j);
    s->counts[j->state]--;
    s->held--;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes -= j->result_bytes;
}

/* Moves a job between states, keeping the lists and counts right. */
static void set_state(jobs_store *s, struct job *j, enum jobs_state state)
{
    if (j->state == JOBS_QUEUED)
        list_unlink(&s->queue_head, &s->queue_tail, j);
    else if (state_finished(j->state))
        list_unlink(&s->done_head, &s->done_tail, j);
    s->counts[j->state]--;
    j->state = state;
    s->counts[state]++;
    if (state == JOBS_QUEUED) {
        queue_add(s, j);
        pthread_cond_signal(&s->queued);
    } else if (state_finished(state)) {
        done_add(s, j);
    }
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->request);
    free(j->stats);
    free(j->error_message);
    free(j);
}

static char *result_path(const jobs_store *s, const char *id)
{
    size_t n = strlen(s->results_dir) + 1 + JOBS_ID_LEN + 1;
    char *p = malloc(n);

    if (p)
        snprintf(p, n, "%s/%s", s->results_dir, id);
    return p;
}

static void *memdup(const void *data, size_t len)
{
    void *p = malloc(len ? len : 1);

    if (p && len)
        memcpy(p, data, len);
    return p;
}

/* ---- the journal (callers hold store->db_lock) ---- */

/* Turns a failed SQLite call into an error code and a line naming what was being done. */
static int sql_fail(jobs_store *s, int rc, const char *what, char *msg, size_t msglen)
{
    int err = rc == SQLITE_FULL ? ERR_EXHAUSTED : rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_IO;

    set_msg(msg, msglen, "job store %s/jobs.db: %s while %s", s->spool_dir, sqlite3_errmsg(s->db), what);
    return err;
}

/* Steps a bound statement that returns no rows and resets it for the next use. */
static int sql_run(jobs_store *s, sqlite3_stmt *st, const char *what, char *msg, size_t msglen)
{
    int rc = sqlite3_step(st);
    int err = 0;

    if (rc != SQLITE_DONE)
        err = sql_fail(s, rc, what, msg, msglen);
    else if (sqlite3_changes(s->db) != 1 && st != s->st_insert) {
        set_msg(msg, msglen, "job store %s/jobs.db: a job's row is missing while %s", s->spool_dir, what);
        err = ERR_INTERNAL;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int sql_exec(jobs_store *s, const char *sql, const char *what, char *msg, size_t msglen)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sql_fail(s, rc, what, msg, msglen);
}

/* A zero-length blob must be bound with a non-NULL pointer, or SQLite stores NULL. */
static void bind_blob(sqlite3_stmt *st, int col, const void *data, size_t len)
{
    sqlite3_bind_blob64(st, col, len ? data : "", len, SQLITE_STATIC);
}

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

static int journal_finish(jobs_store *s, int64_t seq, const struct finish_row *r, char *msg, size_t msglen)
{
    sqlite3_stmt *st = s->st_finish;

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
    return sql_run(s, st, "recording a finished job", msg, msglen);
}

/* Applies a finish_row to the job in memory. Takes ownership of stats and message (either may
 * be NULL). Caller holds store->lock. */
static void apply_finish(jobs_store *s, struct job *j, const struct finish_row *r, void *stats, char *message)
{
    free(j->stats);
    j->stats = stats;
    j->stats_len = stats ? r->stats_len : 0;
    free(j->error_message);
    j->error_message = message;
    j->error_code = r->error_code;
    j->finished_ms = r->finished_ms;
    j->expires_ms = r->expires_ms;
    snprintf(j->content_type, sizeof(j->content_type), "%s", r->content_type ? r->content_type : "");
    j->width = r->width;
    j->height = r->height;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes -= j->result_bytes;
    j->result_bytes = r->result_bytes;
    j->result_crc = r->result_crc;
    if (r->state == JOBS_SUCCEEDED)
        s->spool_bytes += j->result_bytes;
    set_state(s, j, r->state);
}

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

static int prepare(jobs_store *s, sqlite3_stmt **st, const char *sql, char *msg, size_t msglen)
{
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);

    return rc == SQLITE_OK ? 0 : sql_fail(s, rc, "preparing statements", msg, msglen);
}

/* Runs a one-value PRAGMA and returns its text result in buf. */
static int pragma(jobs_store *s, const char *sql, char *buf, size_t buflen, char *msg, size_t msglen)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    buf[0] = '\0';
    if ((rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL)) != SQLITE_OK) {
        err = sql_fail(s, rc, "setting up the database", msg, msglen);
        goto done;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);

        snprintf(buf, buflen, "%s", t ? (const char *)t : "");
    } else if (rc != SQLITE_DONE) {
        err = sql_fail(s, rc, "setting up the database", msg, msglen);
    }
done:
    sqlite3_finalize(st);
    return err;
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
            set_msg(msg, msglen, "spool directory %s: cannot create %s: %s", path, buf, strerror(errno));
            return ERR_IO;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        set_msg(msg, msglen, "spool directory %s is not a directory", path);
        return ERR_IO;
    }
    return 0;
}

static int open_database(jobs_store *s, char *msg, size_t msglen)
{
    char path[PATH_MAX], value[64];
    int err, rc;

    snprintf(path, sizeof(path), "%s/jobs.db", s->spool_dir);
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_msg(msg, msglen, "job store %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_IO;
    }
    /* WAL: a commit appends to the log and, with synchronous=FULL, fsyncs it once; with NORMAL
     * it is written to the OS (safe from a process crash) and fsynced at checkpoints. Readers
     * never touch the database after open (the index is in memory), so WAL's concurrency is not
     * what we want from it: one fsync per commit instead of the rollback journal's three. */
    if ((err = pragma(s, "PRAGMA journal_mode=WAL", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if (strcmp(value, "wal") != 0) {
        set_msg(msg, msglen, "job store %s: the file system does not support SQLite's WAL mode (got '%s')",
                path, value);
        return ERR_IO;
    }
    if ((err = pragma(s, s->opts.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                      value, sizeof(value), msg, msglen)) < 0)
        return err;
    /* Keeps the log from staying large after a burst; checkpoints still run every 1000 pages. */
    if ((err = pragma(s, "PRAGMA journal_size_limit=4194304", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if ((err = pragma(s, "PRAGMA user_version", value, sizeof(value), msg, msglen)) < 0)
        return err;
    if (atoi(value) > JOBS_SCHEMA_VERSION) {
        set_msg(msg, msglen, "job store %s has layout version %s; this fractald reads up to %d", path, value,
                JOBS_SCHEMA_VERSION);
        return ERR_PRECONDITION;
    }
    if ((err = sql_exec(s, schema_sql, "creating the jobs table", msg, msglen)) < 0 ||
        (err = sql_exec(s, "PRAGMA user_version=1", "creating the jobs table", msg, msglen)) < 0)
        return err;
    if ((err = prepare(s, &s->st_insert,
                       "INSERT INTO jobs(seq, id, state, request, created_ms) VALUES(?1, ?2, 1, ?3, ?4)",
                       msg, msglen)) < 0 ||
        (err = prepare(s, &s->st_start, "UPDATE jobs SET state=2, started_ms=?1, attempts=?2 WHERE seq=?3",
                       msg, msglen)) < 0 ||
        (err = prepare(s, &s->st_requeue, "UPDATE jobs SET state=1, started_ms=0, attempts=?1 WHERE seq=?2",
                       msg, msglen)) < 0 ||
        (err = prepare(s, &s->st_cancel, "UPDATE jobs SET cancel_requested=1 WHERE seq=?1", msg, msglen)) < 0 ||
        (err = prepare(s, &s->st_finish,
                       "UPDATE jobs SET state=?1, finished_ms=?2, expires_ms=?3, error_code=?4,"
                       " error_message=?5, stats=?6, content_type=?7, width=?8, height=?9,"
                       " result_bytes=?10, result_crc=?11 WHERE seq=?12",
                       msg, msglen)) < 0 ||
        (err = prepare(s, &s->st_delete, "DELETE FROM jobs WHERE seq=?1", msg, msglen)) < 0)
        return err;
    return 0;
}

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
    j->request = memdup(sqlite3_column_blob(st, 3), j->request_len);
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
        j->stats = memdup(sqlite3_column_blob(st, 12), j->stats_len);
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
    job_free(j);
    return NULL;
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
                log_at(LOG_INFO, "job %s: QUEUED again after a restart (attempt %u was interrupted)", j->id,
                       j->attempts);
                sqlite3_bind_int64(s->st_requeue, 1, j->attempts);
                sqlite3_bind_int64(s->st_requeue, 2, j->seq);
                return sql_run(s, s->st_requeue, "requeueing interrupted jobs", msg, msglen);
            }
            return 0;
        }
        r.finished_ms = now;
        r.expires_ms = now + s->opts.retention_ms;
    } else if (state_finished(j->state)) {
        if (j->expires_ms <= now)
            return 1;
        if (j->state != JOBS_SUCCEEDED)
            return 0;
        char *path = result_path(s, j->id);
        struct stat stb;

        if (!path)
            return ERR_NOMEM;
        if (stat(path, &stb) == 0 && S_ISREG(stb.st_mode) && (uint64_t)stb.st_size == j->result_bytes) {
            free(path);
            return 0;
        }
        if (stat(path, &stb) != 0)
            snprintf(text, sizeof(text), "result file %s is missing after a restart", path);
        else
            snprintf(text, sizeof(text), "result file %s has %lld bytes after a restart, expected %llu", path,
                     (long long)stb.st_size, (unsigned long long)j->result_bytes);
        free(path);
        r = (struct finish_row){.state = JOBS_FAILED, .finished_ms = j->finished_ms, .expires_ms = j->expires_ms,
                                .error_code = JOBS_CODE_DATA_LOSS, .error_message = text};
    } else {
        log_at(LOG_WARN, "job %s: unknown state %d in the journal; dropped", j->id, (int)j->state);
        return 1;
    }
    if ((err = journal_finish(s, j->seq, &r, msg, msglen)) < 0)
        return err;
    log_at(r.state == JOBS_CANCELLED ? LOG_INFO : LOG_WARN, "job %s: %s at start: %s", j->id,
           jobs_state_name(r.state), r.error_message);
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

/* Loads every row, recovers each job inside one transaction, then deletes the files of jobs
 * that went. */
static int load_jobs(jobs_store *s, char *msg, size_t msglen)
{
    sqlite3_stmt *st = NULL;
    struct job *doomed = NULL;      /* deleted rows, chained through hash_next, freed at the end */
    int64_t now = now_ms(), rows = 0;
    bool in_tx = false;
    int err = 0, rc;

    if ((rc = sqlite3_prepare_v2(s->db, "SELECT count(*), coalesce(max(seq), 0) FROM jobs", -1, &st, NULL)) !=
            SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_ROW) {
        err = sql_fail(s, rc, "loading jobs", msg, msglen);
        goto done;
    }
    rows = sqlite3_column_int64(st, 0);
    s->next_seq = sqlite3_column_int64(st, 1) + 1;
    sqlite3_finalize(st);
    st = NULL;

    s->nbuckets = 64;
    while (s->nbuckets < s->opts.max_jobs || s->nbuckets < (uint64_t)rows)
        s->nbuckets *= 2;
    if (!(s->buckets = calloc(s->nbuckets, sizeof(*s->buckets)))) {
        err = ERR_NOMEM;
        set_msg(msg, msglen, "out of memory loading the job store");
        goto done;
    }

    if ((err = sql_exec(s, "BEGIN IMMEDIATE", "loading jobs", msg, msglen)) < 0)
        goto done;
    in_tx = true;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT seq, id, state, request, created_ms, started_ms, finished_ms, expires_ms,"
                            " attempts, cancel_requested, error_code, error_message, stats, content_type,"
                            " width, height, result_bytes, result_crc FROM jobs ORDER BY seq",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        err = sql_fail(s, rc, "loading jobs", msg, msglen);
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct job *j = job_from_row(st);
        int keep;

        if (!j) {
            err = ERR_NOMEM;
            set_msg(msg, msglen, "out of memory loading the job store");
            goto done;
        }
        if (!id_valid(j->id)) {
            /* Never build a path from a malformed id; the row is dropped. */
            log_at(LOG_WARN, "job store: row %lld has a malformed id; dropped", (long long)j->seq);
            j->id[0] = '\0';
            keep = 1;
        } else if ((keep = recover_job(s, j, now, msg, msglen)) < 0) {
            err = keep;
            job_free(j);
            goto done;
        }
        if (keep == 1) {
            sqlite3_bind_int64(s->st_delete, 1, j->seq);
            if ((err = sql_run(s, s->st_delete, "deleting expired jobs", msg, msglen)) < 0) {
                job_free(j);
                goto done;
            }
            j->hash_next = doomed;
            doomed = j;
            continue;
        }
        index_add(s, j);
    }
    if (rc != SQLITE_DONE) {
        err = sql_fail(s, rc, "loading jobs", msg, msglen);
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((err = sql_exec(s, "COMMIT", "loading jobs", msg, msglen)) < 0)
        goto done;
    in_tx = false;

done:
    sqlite3_finalize(st);
    if (in_tx)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    while (doomed) {
        struct job *next = doomed->hash_next;

        /* After the commit only: a crash before it leaves the job and its file both in place. */
        if (err == 0 && doomed->state == JOBS_SUCCEEDED && doomed->id[0]) {
            char *path = result_path(s, doomed->id);

            if (path)
                unlink(path);
            free(path);
        }
        job_free(doomed);
        doomed = next;
    }
    return err;
}

/* Deletes every file in the results folder that is not the result of a SUCCEEDED job: temporary
 * files of renders the last process did not finish, and a result renamed into place by a
 * process that died before it committed the job (that job is queued again and will rewrite it). */
static int sweep_results(jobs_store *s, char *msg, size_t msglen)
{
    DIR *dir = opendir(s->results_dir);
    struct dirent *e;

    if (!dir) {
        set_msg(msg, msglen, "spool results folder %s: %s", s->results_dir, strerror(errno));
        return ERR_IO;
    }
    while ((e = readdir(dir))) {
        struct job *j;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        j = find(s, e->d_name);
        if (j && j->state == JOBS_SUCCEEDED)
            continue;
        if (unlinkat(dirfd(dir), e->d_name, 0) == 0)
            log_at(LOG_INFO, "job store: deleted %s/%s, not a finished result", s->results_dir, e->d_name);
        else
            log_at(LOG_WARN, "job store: cannot delete %s/%s: %s", s->results_dir, e->d_name, strerror(errno));
    }
    closedir(dir);
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
        set_msg(msg, msglen, "jobs_options.version must be %d", JOBS_OPTIONS_VERSION);
        return ERR_INVALID;
    }
    if (!opts->spool_dir || !opts->spool_dir[0] || strlen(opts->spool_dir) > PATH_MAX - 64) {
        set_msg(msg, msglen, "spool directory must be a path of 1..%d bytes", PATH_MAX - 64);
        return ERR_INVALID;
    }
    if (opts->retention_ms < 0 || opts->disk_budget == 0 || opts->max_jobs == 0 ||
        opts->max_jobs > JOBS_MAX_JOBS_LIMIT) {
        set_msg(msg, msglen, "job store limits: retention must be >= 0 ms (got %lld), disk budget > 0 bytes "
                "(got %llu), max jobs 1..%u (got %u)", (long long)opts->retention_ms,
                (unsigned long long)opts->disk_budget, JOBS_MAX_JOBS_LIMIT, opts->max_jobs);
        return ERR_INVALID;
    }
    pthread_once(&crc_once, crc_init);

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
        set_msg(msg, msglen, "spool lock %s: %s", path, strerror(errno));
        err = ERR_IO;
        goto done;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        set_msg(msg, msglen, "spool directory %s is in use by another job store (flock %s: %s)", s->spool_dir,
                path, strerror(errno));
        err = errno == EWOULDBLOCK ? ERR_UNAVAILABLE : ERR_IO;
        goto done;
    }
    if ((s->results_fd = open(s->results_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        set_msg(msg, msglen, "spool results folder %s: %s", s->results_dir, strerror(errno));
        err = ERR_IO;
        goto done;
    }
    if ((err = open_database(s, msg, msglen)) < 0 || (err = load_jobs(s, msg, msglen)) < 0 ||
        (err = sweep_results(s, msg, msglen)) < 0)
        goto done;

    log_at(LOG_INFO, "job store %s: %u jobs (%u queued, %u succeeded), %llu bytes of results", s->spool_dir,
           s->held, s->counts[JOBS_QUEUED], s->counts[JOBS_SUCCEEDED], (unsigned long long)s->spool_bytes);
    *out = s;
    s = NULL;
done:
    if (err == ERR_NOMEM)
        set_msg(msg, msglen, "out of memory opening the job store");
    if (s && !locks_made) {
        free(s->spool_dir);
        free(s->results_dir);
        free(s);
    } else {
        jobs_close(s);
    }
    return err;
}

void jobs_close(jobs_store *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->st_insert);
    sqlite3_finalize(s->st_start);
    sqlite3_finalize(s->st_requeue);
    sqlite3_finalize(s->st_cancel);
    sqlite3_finalize(s->st_finish);
    sqlite3_finalize(s->st_delete);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK)
        log_at(LOG_WARN, "job store %s: closing the database: %s", s->spool_dir, sqlite3_errmsg(s->db));
    for (struct job *j = s->all_head, *next; j; j = next) {
        next = j->all_next;
        job_free(j);
    }
    free(s->buckets);
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
    struct job *j = NULL;
    char id[JOBS_ID_SIZE];
    bool locked = false;
    int err;

    id_out[0] = '\0';
    if (!request && len > 0) {
        set_msg(msg, msglen, "jobs_submit: request is NULL with %zu bytes", len);
        return ERR_INVALID;
    }
    if ((err = jobs_expire(s, now_ms())) < 0) {
        set_msg(msg, msglen, "job store %s: cannot delete expired jobs", s->spool_dir);
        return err;
    }
    if (!(j = calloc(1, sizeof(*j))) || !(j->request = memdup(request, len))) {
        err = ERR_NOMEM;
        set_msg(msg, msglen, "out of memory queueing a job");
        goto done;
    }
    j->request_len = len;
    j->state = JOBS_QUEUED;
    j->error_message = NULL;
    j->created_ms = now_ms();

    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    locked = true;
    if (s->stopping) {
        err = ERR_UNAVAILABLE;
        set_msg(msg, msglen, "the server is shutting down and takes no new jobs");
    } else if (s->held >= s->opts.max_jobs) {
        err = ERR_EXHAUSTED;
        set_msg(msg, msglen, "the job store holds %u jobs, its limit; finished jobs are deleted %lld s after "
                "they finish", s->held, (long long)(s->opts.retention_ms / 1000));
    } else if (s->spool_bytes >= s->opts.disk_budget) {
        err = ERR_EXHAUSTED;
        set_msg(msg, msglen, "job results fill the spool's disk budget (%llu of %llu bytes); they are deleted "
                "%lld s after they finish", (unsigned long long)s->spool_bytes,
                (unsigned long long)s->opts.disk_budget, (long long)(s->opts.retention_ms / 1000));
    }
    /* A duplicate of 128 random bits will not happen; looking costs nothing and rules it out. */
    do {
        if (err == 0 && (err = id_generate(id)) < 0)
            set_msg(msg, msglen, "getrandom failed: %s", strerror(errno));
    } while (err == 0 && find(s, id));
    j->seq = s->next_seq;
    pthread_mutex_unlock(&s->lock);
    if (err < 0)
        goto done;

    memcpy(j->id, id, sizeof(id));
    sqlite3_bind_int64(s->st_insert, 1, j->seq);
    sqlite3_bind_text(s->st_insert, 2, j->id, -1, SQLITE_STATIC);
    bind_blob(s->st_insert, 3, j->request, len);
    sqlite3_bind_int64(s->st_insert, 4, j->created_ms);
    if ((err = sql_run(s, s->st_insert, "queueing a job", msg, msglen)) < 0)
        goto done;

    pthread_mutex_lock(&s->lock);
    s->next_seq++;
    index_add(s, j);
    pthread_cond_signal(&s->queued);
    pthread_mutex_unlock(&s->lock);
    log_at(LOG_INFO, "job %s: QUEUED, %zu request bytes", id, len);
    memcpy(id_out, id, sizeof(id));
    j = NULL;
done:
    if (locked)
        pthread_mutex_unlock(&s->db_lock);
    job_free(j);
    return err;
}

static uint32_t position_in_queue(const jobs_store *s, const struct job *target)
{
    uint32_t pos = 1;

    for (const struct job *j = s->queue_head; j; j = j->list_next, pos++)
        if (j == target)
            return pos;
    return 0;
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
    out->request = memdup(j->request, j->request_len);
    out->request_len = j->request_len;
    if (j->stats) {
        out->stats = memdup(j->stats, j->stats_len);
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
    struct job *j;
    int err = ERR_NOT_FOUND;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    if ((j = find(s, id)) && (err = fill_info(out, j)) == 0 && j->state == JOBS_QUEUED)
        out->queue_position = position_in_queue(s, j);
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
    struct job *j;
    int pos = ERR_NOT_FOUND;

    pthread_mutex_lock(&s->lock);
    if ((j = find(s, id)))
        pos = j->state == JOBS_QUEUED ? (int)position_in_queue(s, j) : 0;
    pthread_mutex_unlock(&s->lock);
    return pos;
}

int jobs_cancel(jobs_store *s, const char *id, char *msg, size_t msglen)
{
    struct job *j;
    enum jobs_state state = JOBS_ANY;
    bool already = false;
    int64_t seq = 0, now = now_ms();
    int err = 0;

    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    if ((j = find(s, id))) {
        state = j->state;
        seq = j->seq;
        already = j->cancel_requested;
    }
    pthread_mutex_unlock(&s->lock);
    if (!j) {
        err = ERR_NOT_FOUND;
        set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        goto done;
    }
    if (state == JOBS_QUEUED) {
        struct finish_row r = {.state = JOBS_CANCELLED, .finished_ms = now, .expires_ms = now + s->opts.retention_ms,
                               .error_code = JOBS_CODE_CANCELLED, .error_message = "cancelled before it started"};
        char *text = strdup(r.error_message);

        if (!text) {
            err = ERR_NOMEM;
            set_msg(msg, msglen, "out of memory cancelling job %s", id);
            goto done;
        }
        if ((err = journal_finish(s, seq, &r, msg, msglen)) < 0) {
            free(text);
            goto done;
        }
        pthread_mutex_lock(&s->lock);
        apply_finish(s, j, &r, NULL, text);
        pthread_mutex_unlock(&s->lock);
        log_at(LOG_INFO, "job %s: CANCELLED while queued", id);
    } else if (state == JOBS_RUNNING && !already) {
        sqlite3_bind_int64(s->st_cancel, 1, seq);
        if ((err = sql_run(s, s->st_cancel, "recording a cancel", msg, msglen)) < 0)
            goto done;
        pthread_mutex_lock(&s->lock);
        j->cancel_requested = true;
        atomic_store(&j->cancel, 1);
        pthread_mutex_unlock(&s->lock);
        log_at(LOG_INFO, "job %s: cancel requested while RUNNING", id);
    }
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

/* ---- workers ---- */

int jobs_next_queued(struct jobs_work *out, jobs_store *s, int timeout_ms, char *msg, size_t msglen)
{
    struct timespec deadline;
    struct job *j = NULL;
    void *request = NULL;
    int64_t started;
    uint32_t attempts = 0;
    int err = 0;

    memset(out, 0, sizeof(*out));
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
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
            set_msg(msg, msglen, err == ERR_UNAVAILABLE ? "the job store is stopping" : "no job is queued");
            return err;
        }
        /* Another worker may take the job between the two locks; then wait again. */
        pthread_mutex_lock(&s->db_lock);
        pthread_mutex_lock(&s->lock);
        j = s->stopping ? NULL : s->queue_head;
        if (j) {
            request = memdup(j->request, j->request_len);
            attempts = j->attempts + 1;
        }
        pthread_mutex_unlock(&s->lock);
        if (j)
            break;
        pthread_mutex_unlock(&s->db_lock);
    }
    if (!request) {
        err = ERR_NOMEM;
        set_msg(msg, msglen, "out of memory starting a job");
        goto done;
    }
    /* The attempt is committed before the render starts, so a job that kills the server is
     * counted (max_attempts) even though its render never reports. */
    started = now_ms();
    sqlite3_bind_int64(s->st_start, 1, started);
    sqlite3_bind_int64(s->st_start, 2, attempts);
    sqlite3_bind_int64(s->st_start, 3, j->seq);
    if ((err = sql_run(s, s->st_start, "starting a job", msg, msglen)) < 0)
        goto done;

    pthread_mutex_lock(&s->lock);
    set_state(s, j, JOBS_RUNNING);
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
    log_at(LOG_INFO, "job %s: RUNNING, attempt %u, queued %lld ms", out->id, attempts,
           (long long)(started - out->created_ms));
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
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->queued);
    pthread_mutex_unlock(&s->lock);
}

int jobs_progress(jobs_store *s, const char *id, uint32_t rows_done, uint32_t rows_total, uint64_t samples_done)
{
    struct job *j;
    int err = ERR_NOT_FOUND;

    pthread_mutex_lock(&s->lock);
    if ((j = find(s, id))) {
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
    if ((j = find(s, id)))
        state = j->state;
    pthread_mutex_unlock(&s->lock);
    *job = j;
    if (!j) {
        set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        return ERR_NOT_FOUND;
    }
    if (state != want) {
        set_msg(msg, msglen, "job %s is %s, not %s", id, jobs_state_name(state), jobs_state_name(want));
        return ERR_PRECONDITION;
    }
    return 0;
}

int jobs_finish_error(jobs_store *s, const char *id, int32_t code, const char *message, char *msg, size_t msglen)
{
    struct finish_row r = {0};
    struct job *j;
    char *text = strdup(message ? message : "");
    int err, jerr;

    if (!text) {
        set_msg(msg, msglen, "out of memory finishing a job");
        return ERR_NOMEM;
    }
    r.state = code == JOBS_CODE_CANCELLED ? JOBS_CANCELLED : JOBS_FAILED;
    r.finished_ms = now_ms();
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
    jerr = journal_finish(s, j->seq, &r, msg, msglen);
    pthread_mutex_lock(&s->lock);
    apply_finish(s, j, &r, NULL, text);
    pthread_mutex_unlock(&s->lock);
    log_at(jerr < 0 ? LOG_WARN : LOG_INFO, "job %s: %s, code %d: %s%s", id, jobs_state_name(r.state), code, text,
           jerr < 0 ? " (not journaled; it runs again after a restart)" : "");
    err = jerr;
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

int jobs_requeue(jobs_store *s, const char *id, char *msg, size_t msglen)
{
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
    sqlite3_bind_int64(s->st_requeue, 1, attempts);
    sqlite3_bind_int64(s->st_requeue, 2, j->seq);
    if ((err = sql_run(s, s->st_requeue, "requeueing a job", msg, msglen)) < 0)
        goto done;
    pthread_mutex_lock(&s->lock);
    j->attempts = attempts;
    j->started_ms = 0;
    j->rows_done = j->rows_total = 0;
    j->samples_done = 0;
    set_state(s, j, JOBS_QUEUED);
    pthread_mutex_unlock(&s->lock);
    log_at(LOG_INFO, "job %s: QUEUED again (requeued by its worker)", id);
done:
    pthread_mutex_unlock(&s->db_lock);
    return err;
}

int jobs_expire(jobs_store *s, int64_t now)
{
    struct job **due = NULL;
    size_t n = 0, cap = 0;
    bool in_tx = false;
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
    if ((err = sql_exec(s, "BEGIN IMMEDIATE", "deleting expired jobs", NULL, 0)) < 0)
        goto done;
    in_tx = true;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(s->st_delete, 1, due[i]->seq);
        if ((err = sql_run(s, s->st_delete, "deleting expired jobs", NULL, 0)) < 0)
            goto done;
    }
    if ((err = sql_exec(s, "COMMIT", "deleting expired jobs", NULL, 0)) < 0)
        goto done;
    in_tx = false;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        index_remove(s, due[i]);
    pthread_mutex_unlock(&s->lock);
done:
    if (in_tx)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    if (err < 0)
        log_at(LOG_WARN, "job store %s: cannot delete %zu expired jobs: %s (%s)", s->spool_dir, cap, err_name(err),
               sqlite3_errmsg(s->db));
    pthread_mutex_unlock(&s->db_lock);
    /* The rows are gone, so the jobs are unreachable; their files go after the commit (a crash
     * in between leaves files that the next open's sweep deletes). */
    for (size_t i = 0; err == 0 && i < n; i++) {
        log_at(LOG_INFO, "job %s: deleted, expired", due[i]->id);
        if (due[i]->state == JOBS_SUCCEEDED) {
            char *path = result_path(s, due[i]->id);

            if (path)
                unlink(path);
            free(path);
        }
        job_free(due[i]);
    }
    free(due);
    return err < 0 ? err : (int)n;
}

/* ---- results ---- */

int jobs_result_open(jobs_result **out, jobs_store *s, const char *id, char *msg, size_t msglen)
{
    jobs_result *w = NULL;
    struct job *j;
    size_t n;
    uint64_t tmp;
    int err = 0;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    j = find(s, id);
    if (!j) {
        err = ERR_NOT_FOUND;
        set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
    } else if (j->state != JOBS_RUNNING) {
        err = ERR_PRECONDITION;
        set_msg(msg, msglen, "job %s is %s, not RUNNING", id, jobs_state_name(j->state));
    }
    tmp = s->next_tmp++;
    pthread_mutex_unlock(&s->lock);
    if (err < 0)
        return err;

    if (!(w = calloc(1, sizeof(*w)))) {
        err = ERR_NOMEM;
        goto done;
    }
    w->store = s;
    w->fd = -1;
    memcpy(w->id, id, sizeof(w->id));
    n = strlen(s->results_dir) + JOBS_ID_LEN + 32;
    /* Temporary names are unique per writer, so a stale writer of a job that was requeued and
     * restarted cannot delete its successor's file. */
    if (!(w->tmp_path = malloc(n)) || !(w->final_path = result_path(s, id))) {
        err = ERR_NOMEM;
        goto done;
    }
    snprintf(w->tmp_path, n, "%s/%s.%llu.tmp", s->results_dir, id, (unsigned long long)tmp);
    if ((w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) < 0) {
        err = errno == ENOSPC || errno == EDQUOT ? ERR_EXHAUSTED : ERR_IO;
        set_msg(msg, msglen, "result file %s: %s", w->tmp_path, strerror(errno));
        goto done;
    }
    *out = w;
    w = NULL;
done:
    if (err == ERR_NOMEM)
        set_msg(msg, msglen, "out of memory starting a result");
    jobs_result_free(w);
    return err;
}

int jobs_result_write(jobs_result *w, const void *data, size_t len)
{
    jobs_store *s = w->store;
    const uint8_t *p = data;
    size_t done = 0;
    int err = 0;

    if (w->fd < 0) {
        snprintf(w->message, sizeof(w->message), "result of job %s is already closed", w->id);
        return ERR_PRECONDITION;
    }
    /* Reserve first, so writers in parallel cannot together pass the budget. */
    pthread_mutex_lock(&s->lock);
    if (s->spool_bytes + len > s->opts.disk_budget) {
        err = ERR_EXHAUSTED;
        snprintf(w->message, sizeof(w->message),
                 "result of job %s would pass the spool's disk budget of %llu bytes (%llu in use)", w->id,
                 (unsigned long long)s->opts.disk_budget, (unsigned long long)s->spool_bytes);
    } else {
        s->spool_bytes += len;
    }
    pthread_mutex_unlock(&s->lock);
    if (err < 0)
        return err;
    while (done < len) {
        ssize_t n = write(w->fd, p + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno == ENOSPC || errno == EDQUOT ? ERR_EXHAUSTED : ERR_IO;
            snprintf(w->message, sizeof(w->message), "result file %s: %s", w->tmp_path, strerror(errno));
            break;
        }
        done += (size_t)n;
    }
    w->crc = crc_update(w->crc, p, done);
    w->bytes += done;
    pthread_mutex_lock(&s->lock);
    s->spool_bytes -= len - done;
    pthread_mutex_unlock(&s->lock);
    return err;
}

int jobs_result_sink(void *w, const void *data, size_t len)
{
    return jobs_result_write(w, data, len);
}

const char *jobs_result_message(const jobs_result *w)
{
    return w->message;
}

int jobs_finish_ok(jobs_result *w, const void *stats, size_t stats_len, const char *content_type, uint32_t width,
                   uint32_t height, char *msg, size_t msglen)
{
    jobs_store *s = w->store;
    struct finish_row r = {0};
    struct job *j;
    void *stats_copy = NULL;
    bool renamed = false;
    int err = 0;

    if (w->fd < 0 || w->published) {
        set_msg(msg, msglen, "result of job %s is already closed", w->id);
        return ERR_PRECONDITION;
    }
    if (content_type && strlen(content_type) >= JOBS_CONTENT_TYPE_SIZE) {
        set_msg(msg, msglen, "content type of job %s is longer than %d bytes", w->id, JOBS_CONTENT_TYPE_SIZE - 1);
        return ERR_INVALID;
    }
    if (stats && !(stats_copy = memdup(stats, stats_len))) {
        set_msg(msg, msglen, "out of memory finishing job %s", w->id);
        return ERR_NOMEM;
    }
    /* The file is on disk under its final name before the journal says SUCCEEDED; the disk work
     * runs without the store's locks, since fsyncing a large result can take a while. */
    int rc = fsync(w->fd), e = errno;

    if (close(w->fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    w->fd = -1;
    if (rc != 0) {
        err = e == ENOSPC || e == EDQUOT ? ERR_EXHAUSTED : ERR_IO;
        set_msg(msg, msglen, "result file %s: %s", w->tmp_path, strerror(e));
        goto done;
    }
    if (rename(w->tmp_path, w->final_path) != 0) {
        err = ERR_IO;
        set_msg(msg, msglen, "result file %s: rename to %s: %s", w->tmp_path, w->final_path, strerror(errno));
        goto done;
    }
    renamed = true;
    if (fsync(s->results_fd) != 0) {
        err = ERR_IO;
        set_msg(msg, msglen, "spool results folder %s: fsync: %s", s->results_dir, strerror(errno));
        goto done;
    }

    r.state = JOBS_SUCCEEDED;
    r.finished_ms = now_ms();
    r.expires_ms = r.finished_ms + s->opts.retention_ms;
    r.stats = stats;
    r.stats_len = stats_len;
    r.content_type = content_type;
    r.width = width;
    r.height = height;
    r.result_bytes = w->bytes;
    r.result_crc = w->crc;
    pthread_mutex_lock(&s->db_lock);
    if ((err = lookup_for_change(s, w->id, JOBS_RUNNING, &j, msg, msglen)) == 0 &&
        (err = journal_finish(s, j->seq, &r, msg, msglen)) == 0) {
        pthread_mutex_lock(&s->lock);
        /* The writer's reservation becomes the job's result bytes. */
        s->spool_bytes -= w->bytes;
        apply_finish(s, j, &r, stats_copy, NULL);
        pthread_mutex_unlock(&s->lock);
        stats_copy = NULL;
        w->published = true;
    }
    pthread_mutex_unlock(&s->db_lock);
    if (err == 0)
        log_at(LOG_INFO, "job %s: SUCCEEDED, %llu bytes %s %ux%u", w->id, (unsigned long long)w->bytes,
               content_type ? content_type : "", width, height);
done:
    if (err < 0 && renamed)
        unlink(w->final_path);
    free(stats_copy);
    return err;
}

void jobs_result_free(jobs_result *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->published) {
        if (w->tmp_path)
            unlink(w->tmp_path);
        pthread_mutex_lock(&w->store->lock);
        w->store->spool_bytes -= w->bytes;
        pthread_mutex_unlock(&w->store->lock);
    }
    free(w->tmp_path);
    free(w->final_path);
    free(w);
}

/* Marks SUCCEEDED job `id` FAILED with DATA_LOSS and deletes its file, after a reader found it
 * missing or damaged. */
static void mark_data_loss(jobs_store *s, const char *id, const char *why)
{
    struct job *j;
    char *text = strdup(why), *path = NULL;
    struct finish_row r = {0};
    int err;

    if (!text)
        return;
    pthread_mutex_lock(&s->db_lock);
    pthread_mutex_lock(&s->lock);
    j = find(s, id);
    if (j && j->state == JOBS_SUCCEEDED)
        r = (struct finish_row){.state = JOBS_FAILED, .finished_ms = j->finished_ms, .expires_ms = j->expires_ms,
                                .error_code = JOBS_CODE_DATA_LOSS, .error_message = text};
    else
        j = NULL;
    pthread_mutex_unlock(&s->lock);
    if (j && (err = journal_finish(s, j->seq, &r, NULL, 0)) == 0) {
        pthread_mutex_lock(&s->lock);
        apply_finish(s, j, &r, NULL, text);
        pthread_mutex_unlock(&s->lock);
        text = NULL;
        path = result_path(s, id);
        log_at(LOG_WARN, "job %s: FAILED, data loss: %s", id, why);
    }
    pthread_mutex_unlock(&s->db_lock);
    if (path)
        unlink(path);
    free(path);
    free(text);
}

int jobs_reader_open(jobs_reader **out, jobs_store *s, const char *id, char *msg, size_t msglen)
{
    jobs_reader *r = NULL;
    struct job *j;
    char *path = NULL, why[512];
    uint64_t size = 0;
    uint32_t crc = 0;
    int err = 0;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    j = find(s, id);
    if (!j) {
        err = ERR_NOT_FOUND;
        set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
    } else if (j->state != JOBS_SUCCEEDED) {
        err = ERR_PRECONDITION;
        set_msg(msg, msglen, "job %s is %s and has no result", id, jobs_state_name(j->state));
    } else {
        size = j->result_bytes;
        crc = j->result_crc;
    }
    pthread_mutex_unlock(&s->lock);
    if (err < 0)
        return err;
    if ((r = calloc(1, sizeof(*r))))
        r->fd = -1; /* not 0: the cleanup below must never close stdin */
    if (!r || !(path = result_path(s, id))) {
        err = ERR_NOMEM;
        set_msg(msg, msglen, "out of memory opening a result");
        goto done;
    }
    r->store = s;
    memcpy(r->id, id, sizeof(r->id));
    r->size = size;
    r->crc_expected = crc;
    if ((r->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(why, sizeof(why), "result file %s: %s", path, strerror(errno));
        err = ERR_IO;
        /* The job may have expired between the lookup and the open; that is not data loss. */
        pthread_mutex_lock(&s->lock);
        j = find(s, id);
        pthread_mutex_unlock(&s->lock);
        if (!j) {
            err = ERR_NOT_FOUND;
            set_msg(msg, msglen, "no job with id '%.64s'", id);
            goto done;
        }
        mark_data_loss(s, id, why);
        set_msg(msg, msglen, "%s", why);
        goto done;
    }
    *out = r;
    r = NULL;
done:
    if (r && r->fd >= 0)
        close(r->fd);
    free(r);
    free(path);
    return err;
}

uint64_t jobs_reader_size(const jobs_reader *r)
{
    return r->size;
}

int jobs_reader_read(jobs_reader *r, void *buf, size_t len, size_t *nread, char *msg, size_t msglen)
{
    uint8_t *p = buf;
    size_t got = 0;
    char why[512];

    *nread = 0;
    if (len > r->size - r->offset)
        len = (size_t)(r->size - r->offset);
    while (got < len) {
        ssize_t n = pread(r->fd, p + got, len - got, (off_t)(r->offset + got));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, sizeof(why), "result of job %s: %s at byte %llu of %llu", r->id,
                     n < 0 ? strerror(errno) : "file ends early", (unsigned long long)(r->offset + got),
                     (unsigned long long)r->size);
            goto fail;
        }
        got += (size_t)n;
    }
    r->crc = crc_update(r->crc, p, got);
    r->offset += got;
    if (got > 0 && r->offset == r->size && r->crc != r->crc_expected) {
        snprintf(why, sizeof(why), "result of job %s is damaged on disk (CRC-32 %08x, recorded %08x)", r->id,
                 (unsigned)r->crc, (unsigned)r->crc_expected);
        goto fail;
    }
    *nread = got;
    return 0;
fail:
    mark_data_loss(r->store, r->id, why);
    set_msg(msg, msglen, "%s", why);
    return ERR_IO;
}

void jobs_reader_free(jobs_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

void jobs_get_stats(struct jobs_stats *out, jobs_store *s)
{
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
