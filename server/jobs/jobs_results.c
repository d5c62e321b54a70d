/* jobs_results.c: the job store's result files: written to a temporary file against the disk
 * budget, fsynced and renamed into place, read back against their CRC-32, swept and deleted. */
#include "jobs_results.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "jobs_index.h"
#include "jobs_internal.h"
#include "jobs_pg.h"
#include "log.h"

/* A result being written, by one thread at a time. The temporary file is the writer's until
 * jobs_finish_ok renames it to final_path and the job owns it (published). */
struct jobs_result {
    jobs_store *store;
    struct jobs_pg_writer *pg;      /* the PostgreSQL store's writer; then nothing below is used */
    char id[JOBS_ID_SIZE];
    int fd;
    char *tmp_path, *final_path;
    uint64_t bytes;                 /* written, and reserved in store->spool_bytes */
    uint32_t crc;
    bool published;
    char message[256];
};

/* A result being read. It holds the file open, so it reads on even if the job expires. */
struct jobs_reader {
    jobs_store *store;
    struct jobs_pg_reader *pg;      /* the PostgreSQL store's reader; then nothing below is used */
    char id[JOBS_ID_SIZE];
    int fd;
    uint64_t size, offset;
    uint32_t crc_expected, crc;
};

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

/* <results>/<id>, malloc'ed; NULL when out of memory. */
static char *result_path(const jobs_store *s, const char *id)
{
    size_t n = strlen(s->results_dir) + 1 + JOBS_ID_LEN + 1;
    char *p = malloc(n);

    if (p)
        snprintf(p, n, "%s/%s", s->results_dir, id);
    return p;
}

/* ---- what jobs.c calls: the CRC table, the recovery check, deletion, the sweep ---- */

void jobs_results_init(void)
{
    pthread_once(&crc_once, crc_init);
}

int jobs_results_check(const jobs_store *s, const char *id, uint64_t size, char *why, size_t whylen)
{
    char *path = result_path(s, id);
    struct stat stb;

    if (!path)
        return ERR_NOMEM;
    if (stat(path, &stb) == 0 && S_ISREG(stb.st_mode) && (uint64_t)stb.st_size == size) {
        free(path);
        return 0;
    }
    if (stat(path, &stb) != 0)
        snprintf(why, whylen, "result file %s is missing after a restart", path);
    else
        snprintf(why, whylen, "result file %s has %lld bytes after a restart, expected %llu", path,
                 (long long)stb.st_size, (unsigned long long)size);
    free(path);
    return 1;
}

uint32_t jobs_results_crc(uint32_t crc, const void *data, size_t len)
{
    return crc_update(crc, data, len);
}

void jobs_results_delete(const jobs_store *s, const char *id)
{
    char *path = result_path(s, id);

    if (path)
        unlink(path);
    free(path);
}

int jobs_results_sweep(jobs_store *s, char *msg, size_t msglen)
{
    DIR *dir = opendir(s->results_dir);
    struct dirent *e;

    if (!dir) {
        jobs_set_msg(msg, msglen, "spool results folder %s: %s", s->results_dir, strerror(errno));
        return ERR_IO;
    }
    while ((e = readdir(dir))) {
        struct job *j;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        j = jobs_find(s, e->d_name);
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

/* ---- the writer ---- */

/* jobs_result_open for the PostgreSQL store: a jobs_result around its writer. */
static int wrap_pg_writer(jobs_result **out, jobs_store *s, const char *id, char *msg, size_t msglen)
{
    jobs_result *w = calloc(1, sizeof(*w));
    int err;

    if (!w) {
        jobs_set_msg(msg, msglen, "out of memory starting a result");
        return ERR_NOMEM;
    }
    w->store = s;
    w->fd = -1;
    if ((err = jobs_pg_writer_open(&w->pg, s->pg, id, msg, msglen)) < 0) {
        free(w);
        return err;
    }
    *out = w;
    return 0;
}

int jobs_result_open(jobs_result **out, jobs_store *s, const char *id, char *msg, size_t msglen)
{
    jobs_result *w = NULL;
    struct job *j;
    size_t n;
    uint64_t tmp;
    int err = 0;

    *out = NULL;
    if (s->pg)
        return wrap_pg_writer(out, s, id, msg, msglen);
    pthread_mutex_lock(&s->lock);
    j = jobs_find(s, id);
    if (!j) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
    } else if (j->state != JOBS_RUNNING) {
        err = ERR_PRECONDITION;
        jobs_set_msg(msg, msglen, "job %s is %s, not RUNNING", id, jobs_state_name(j->state));
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
        jobs_set_msg(msg, msglen, "result file %s: %s", w->tmp_path, strerror(errno));
        goto done;
    }
    *out = w;
    w = NULL;
done:
    if (err == ERR_NOMEM)
        jobs_set_msg(msg, msglen, "out of memory starting a result");
    jobs_result_free(w);
    return err;
}

int jobs_result_write(jobs_result *w, const void *data, size_t len)
{
    jobs_store *s = w->store;
    const uint8_t *p = data;
    size_t done = 0;
    int err = 0;

    if (w->pg)
        return jobs_pg_writer_write(w->pg, data, len);
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
    if (w->pg)
        return jobs_pg_writer_message(w->pg);
    return w->message;
}

int jobs_finish_ok(jobs_result *w, const void *stats, size_t stats_len, const char *content_type, uint32_t width,
                   uint32_t height, char *msg, size_t msglen)
{
    jobs_store *s = w->store;
    struct finish_row r = {0};
    void *stats_copy = NULL;
    bool renamed = false;
    int err = 0;

    if (content_type && strlen(content_type) >= JOBS_CONTENT_TYPE_SIZE) {
        jobs_set_msg(msg, msglen, "content type of job %s is longer than %d bytes", w->id,
                     JOBS_CONTENT_TYPE_SIZE - 1);
        return ERR_INVALID;
    }
    if (w->pg)
        return jobs_pg_writer_finish(w->pg, stats, stats_len, content_type, width, height, msg, msglen);
    if (w->fd < 0 || w->published) {
        jobs_set_msg(msg, msglen, "result of job %s is already closed", w->id);
        return ERR_PRECONDITION;
    }
    if (stats && !(stats_copy = jobs_memdup(stats, stats_len))) {
        jobs_set_msg(msg, msglen, "out of memory finishing job %s", w->id);
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
        jobs_set_msg(msg, msglen, "result file %s: %s", w->tmp_path, strerror(e));
        goto done;
    }
    if (rename(w->tmp_path, w->final_path) != 0) {
        err = ERR_IO;
        jobs_set_msg(msg, msglen, "result file %s: rename to %s: %s", w->tmp_path, w->final_path, strerror(errno));
        goto done;
    }
    renamed = true;
    if (fsync(s->results_fd) != 0) {
        err = ERR_IO;
        jobs_set_msg(msg, msglen, "spool results folder %s: fsync: %s", s->results_dir, strerror(errno));
        goto done;
    }

    r.state = JOBS_SUCCEEDED;
    r.finished_ms = jobs_now_ms();
    r.expires_ms = r.finished_ms + s->opts.retention_ms;
    r.stats = stats;
    r.stats_len = stats_len;
    r.content_type = content_type;
    r.width = width;
    r.height = height;
    r.result_bytes = w->bytes;
    r.result_crc = w->crc;
    if ((err = jobs_commit_success(s, w->id, &r, stats_copy, msg, msglen)) < 0)
        goto done;
    stats_copy = NULL;
    w->published = true;
    jobs_log_succeeded(w->id, w->bytes, content_type, width, height);
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
    if (w->pg) {
        jobs_pg_writer_free(w->pg);
        free(w);
        return;
    }
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

/* ---- the reader ---- */

/* Reads r's whole file and checks its length and CRC-32 against those recorded at finish.
 * Returns 0, ERR_DATA_LOSS with the reason in why, or ERR_NOMEM. */
static int verify_whole(const jobs_reader *r, char *why, size_t whylen)
{
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    uint64_t off = 0;
    uint32_t crc = 0;
    struct stat st;

    if (!buf) {
        snprintf(why, whylen, "out of memory checking the result of job %s", r->id);
        return ERR_NOMEM;
    }
    if (fstat(r->fd, &st) == 0 && (uint64_t)st.st_size != r->size) {
        snprintf(why, whylen, "result of job %s has %llu bytes on disk, %llu recorded", r->id,
                 (unsigned long long)st.st_size, (unsigned long long)r->size);
        free(buf);
        return ERR_DATA_LOSS;
    }
    while (off < r->size) {
        size_t want = r->size - off < CHUNK ? (size_t)(r->size - off) : CHUNK;
        ssize_t n = pread(r->fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, whylen, "result of job %s: %s at byte %llu of %llu", r->id,
                     n < 0 ? strerror(errno) : "file ends early", (unsigned long long)off,
                     (unsigned long long)r->size);
            free(buf);
            return ERR_DATA_LOSS;
        }
        crc = crc_update(crc, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    if (crc != r->crc_expected) {
        snprintf(why, whylen, "result of job %s is damaged on disk (CRC-32 %08x, recorded %08x)", r->id,
                 (unsigned)crc, (unsigned)r->crc_expected);
        return ERR_DATA_LOSS;
    }
    return 0;
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
    if (s->pg) {
        if (!(r = calloc(1, sizeof(*r)))) {
            jobs_set_msg(msg, msglen, "out of memory opening a result");
            return ERR_NOMEM;
        }
        r->store = s;
        r->fd = -1;
        if ((err = jobs_pg_reader_open(&r->pg, s->pg, id, msg, msglen)) < 0) {
            free(r);
            return err;
        }
        *out = r;
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    j = jobs_find(s, id);
    if (!j) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
    } else if (j->state != JOBS_SUCCEEDED) {
        err = ERR_PRECONDITION;
        jobs_set_msg(msg, msglen, "job %s is %s and has no result", id, jobs_state_name(j->state));
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
        jobs_set_msg(msg, msglen, "out of memory opening a result");
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
        j = jobs_find(s, id);
        pthread_mutex_unlock(&s->lock);
        if (!j) {
            err = ERR_NOT_FOUND;
            jobs_set_msg(msg, msglen, "no job with id '%.64s'", id);
            goto done;
        }
        jobs_mark_data_loss(s, id, why);
        jobs_set_msg(msg, msglen, "%s", why);
        err = ERR_DATA_LOSS;
        goto done;
    }
    /* The whole file is checked against its size and CRC before the first byte goes to a
     * client: a damaged result is DATA_LOSS up front, never a stream of wrong bytes that ends in
     * an error. Reading it twice costs a pass over the page cache, small beside sending it. */
    if ((err = verify_whole(r, why, sizeof(why))) < 0) {
        jobs_mark_data_loss(s, id, why);
        jobs_set_msg(msg, msglen, "%s", why);
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
    if (r->pg)
        return jobs_pg_reader_size(r->pg);
    return r->size;
}

int jobs_reader_read(jobs_reader *r, void *buf, size_t len, size_t *nread, char *msg, size_t msglen)
{
    uint8_t *p = buf;
    size_t got = 0;
    char why[512];

    if (r->pg)
        return jobs_pg_reader_read(r->pg, buf, len, nread, msg, msglen);
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
    jobs_mark_data_loss(r->store, r->id, why);
    jobs_set_msg(msg, msglen, "%s", why);
    return ERR_DATA_LOSS;
}

void jobs_reader_free(jobs_reader *r)
{
    if (!r)
        return;
    jobs_pg_reader_free(r->pg);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}
