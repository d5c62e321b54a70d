/* jobs_pg_results.c: results in the PostgreSQL store, as rows of fractald_job_result_chunks of up
 * to 1 MiB each, written as the render encodes and read back one chunk at a time.
 *
 * Why in the database and not in files: a fleet then needs no shared file system (any server
 * answers FetchJobResult for a job another server rendered, with only the database in common);
 * results are written and deleted in the same transactions as the jobs they belong to (ON DELETE
 * CASCADE at expiry); and chunking keeps memory bounded on both sides: a writer buffers one chunk,
 * a reader holds one chunk, however large the image. disk_budget is the budget of bytes held in
 * the table, finished and being written. Chunks are keyed by (job, claim, chunk), so a server
 * that lost its lease and writes on cannot mix its bytes with the new owner's; the finish that
 * publishes one claim's chunks deletes those of every other. As the file store does, opening a
 * reader reads every chunk once to check the CRC-32 before the first byte goes out, so a fetch
 * reads its result from the database twice; results are images of a few MiB, and a damaged one is
 * then refused up front rather than ending a stream in an error. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jobs_index.h"
#include "jobs_internal.h"
#include "jobs_pg.h"
#include "jobs_pg_internal.h"
#include "jobs_results.h"
#include "log.h"

struct jobs_pg_writer {
    struct jobs_pg *pg;
    char id[JOBS_ID_SIZE];
    int64_t seq;
    int64_t claim;
    uint8_t *buf;                   /* JOBS_PG_CHUNK bytes, fill of them used */
    size_t fill;
    int64_t next_chunk;
    uint64_t bytes;                 /* written (flushed or buffered) */
    uint32_t crc;
    bool published, closed;
    char message[256];
};

struct jobs_pg_reader {
    struct jobs_pg *pg;
    char id[JOBS_ID_SIZE];
    int64_t seq;
    int64_t claim;
    uint64_t size, offset;
    uint32_t crc_expected, crc;
    int64_t next_chunk;
    uint8_t *buf;                   /* the current chunk, len bytes, off of them read */
    size_t len, off;
};

/* ---- the writer ---- */

int jobs_pg_writer_open(struct jobs_pg_writer **out, struct jobs_pg *pg, const char *id, char *msg, size_t msglen)
{
    struct jobs_pg_writer *w = NULL;
    struct pg_run *run;
    PGconn *c = NULL;
    int err = 0;

    *out = NULL;
    if (!(w = calloc(1, sizeof(*w))) || !(w->buf = malloc(JOBS_PG_CHUNK))) {
        if (w)
            free(w);
        jobs_set_msg(msg, msglen, "out of memory starting a result");
        return ERR_NOMEM;
    }
    w->pg = pg;
    pthread_mutex_lock(&pg->lock);
    if ((run = id ? jobs_pg_find_run(pg, id) : NULL)) {
        w->seq = run->seq;
        w->claim = run->claim;
        memcpy(w->id, run->id, sizeof(w->id));
    }
    pthread_mutex_unlock(&pg->lock);
    if (!run) {
        if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) == 0)
            err = jobs_pg_not_mine(pg, c, id ? id : "", NULL, msg, msglen);
        jobs_pg_release(pg, c);
        goto done;
    }
    *out = w;
    w = NULL;
done:
    jobs_pg_writer_free(w);
    return err;
}

/* Stores the buffered bytes as the next chunk, if it fits the budget. Returns 0, ERR_EXHAUSTED,
 * or the database's error; w->message says which. */
static int flush(struct jobs_pg_writer *w)
{
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    int err;

    if (w->fill == 0)
        return 0;
    if ((err = jobs_pg_acquire(w->pg, &c, w->message, sizeof(w->message))) < 0)
        return err;
    jobs_pg_p_int(&p, w->seq);
    jobs_pg_p_int(&p, w->claim);
    jobs_pg_p_int(&p, w->next_chunk);
    jobs_pg_p_int(&p, (int64_t)w->fill);
    jobs_pg_p_bytes(&p, w->buf, w->fill);
    jobs_pg_p_int(&p, (int64_t)(w->pg->opts.disk_budget > INT64_MAX ? INT64_MAX : w->pg->opts.disk_budget));
    /* The budget test and the insert are one statement; writers on several servers may still pass
     * the budget together by at most a chunk each, which is the documented slack. */
    r = jobs_pg_exec(c, "INSERT INTO fractald_job_result_chunks (job_seq, claim, chunk, len, data) "
                        "SELECT $1::bigint, $2::bigint, $3::integer, $4::integer, $5::bytea WHERE "
                        "(SELECT coalesce(sum(len), 0) FROM fractald_job_result_chunks) + $4::integer <= $6::bigint "
                        "RETURNING 1",
                     &p, 0, &err, w->message, sizeof(w->message));
    if (r && PQntuples(r) == 0) {
        err = ERR_EXHAUSTED;
        snprintf(w->message, sizeof(w->message), "result of job %s would pass the job store's budget of %llu bytes",
                 w->id, (unsigned long long)w->pg->opts.disk_budget);
    } else if (r) {
        w->next_chunk++;
        w->fill = 0;
    }
    PQclear(r);
    jobs_pg_release(w->pg, c);
    return err;
}

int jobs_pg_writer_write(struct jobs_pg_writer *w, const void *data, size_t len)
{
    const uint8_t *p = data;
    int err;

    if (w->closed) {
        snprintf(w->message, sizeof(w->message), "result of job %s is already closed", w->id);
        return ERR_PRECONDITION;
    }
    while (len > 0) {
        size_t n = JOBS_PG_CHUNK - w->fill < len ? JOBS_PG_CHUNK - w->fill : len;

        memcpy(w->buf + w->fill, p, n);
        w->fill += n;
        w->crc = jobs_results_crc(w->crc, p, n);
        w->bytes += n;
        p += n;
        len -= n;
        if (w->fill == JOBS_PG_CHUNK && (err = flush(w)) < 0)
            return err;
    }
    return 0;
}

const char *jobs_pg_writer_message(const struct jobs_pg_writer *w)
{
    return w->message;
}

int jobs_pg_writer_finish(struct jobs_pg_writer *w, const void *stats, size_t stats_len, const char *content_type,
                          uint32_t width, uint32_t height, char *msg, size_t msglen)
{
    struct jobs_pg *pg = w->pg;
    struct pg_params p = {0};
    struct pg_run *run;
    uint32_t rows_done = 0, rows_total = 0;
    uint64_t samples = 0;
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t now = jobs_now_ms();
    int err;

    if (w->closed || w->published) {
        jobs_set_msg(msg, msglen, "result of job %s is already closed", w->id);
        return ERR_PRECONDITION;
    }
    /* jobs_finish_ok has checked content_type. */
    if ((err = flush(w)) < 0) {
        jobs_set_msg(msg, msglen, "%s", w->message);
        return err;
    }
    pthread_mutex_lock(&pg->lock);
    if ((run = jobs_pg_find_run(pg, w->id))) {
        run->finishing = true;
        rows_done = run->rows_done;
        rows_total = run->rows_total;
        samples = run->samples_done;
    }
    pthread_mutex_unlock(&pg->lock);
    if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) < 0)
        return err;
    jobs_pg_p_int(&p, w->seq);
    jobs_pg_p_text(&p, pg->owner);
    jobs_pg_p_int(&p, w->claim);
    jobs_pg_p_int(&p, now);
    jobs_pg_p_int(&p, now + pg->opts.retention_ms);
    if (stats)
        jobs_pg_p_bytes(&p, stats, stats_len);
    else
        jobs_pg_p_text(&p, NULL);
    jobs_pg_p_text(&p, content_type ? content_type : "");
    jobs_pg_p_int(&p, width);
    jobs_pg_p_int(&p, height);
    jobs_pg_p_int(&p, (int64_t)w->bytes);
    jobs_pg_p_int(&p, w->crc);
    jobs_pg_p_int(&p, rows_done);
    jobs_pg_p_int(&p, rows_total);
    jobs_pg_p_int(&p, (int64_t)samples);
    if ((err = jobs_pg_run(c, "BEGIN", NULL, msg, msglen)) < 0)
        goto done;
    /* Ours only if owner and claim still match: a server whose lease was taken publishes nothing. */
    if (!(r = jobs_pg_exec(c, "UPDATE fractald_jobs SET state = 3, owner = NULL, lease_expires = NULL,"
                              "  finished_ms = $4, expires_ms = $5, stats = $6, content_type = $7, width = $8,"
                              "  height = $9, result_bytes = $10, result_crc = $11, result_claim = $3,"
                              "  rows_done = $12, rows_total = $13, samples_done = $14, error_code = 0,"
                              "  error_message = '' "
                              "WHERE seq = $1 AND state = 2 AND owner = $2 AND claim = $3 RETURNING 1",
                           &p, 0, &err, msg, msglen)))
        goto done;
    if (PQntuples(r) == 0) {
        jobs_pg_run(c, "ROLLBACK", NULL, NULL, 0);
        err = jobs_pg_not_mine(pg, c, w->id, NULL, msg, msglen);
        if (err == 0)
            err = ERR_PRECONDITION;
        goto done;
    }
    {
        struct pg_params d = {0};
        jobs_pg_p_int(&d, w->seq);
        jobs_pg_p_int(&d, w->claim);
        if ((err = jobs_pg_run(c, "DELETE FROM fractald_job_result_chunks WHERE job_seq = $1 AND claim <> $2", &d,
                               msg, msglen)) < 0 ||
            (err = jobs_pg_run(c, "COMMIT", NULL, msg, msglen)) < 0)
            goto done;
    }
    w->published = true;
    jobs_log_succeeded(w->id, w->bytes, content_type, width, height);
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    if (w->published) {
        pthread_mutex_lock(&pg->lock);
        run = jobs_pg_find_run(pg, w->id);
        pthread_mutex_unlock(&pg->lock);
        if (run)
            jobs_pg_drop_run(pg, run);
    }
    return err;
}

void jobs_pg_drop_chunks(PGconn *c, int64_t seq, int64_t claim)
{
    struct pg_params d = {0};

    jobs_pg_p_int(&d, seq);
    jobs_pg_p_int(&d, claim);
    jobs_pg_run(c, "DELETE FROM fractald_job_result_chunks WHERE job_seq = $1 AND claim = $2", &d, NULL, 0);
}

void jobs_pg_writer_free(struct jobs_pg_writer *w)
{
    if (!w)
        return;
    /* An unpublished result's chunks go; only this writer wrote chunks of its (job, claim). */
    if (!w->published && w->next_chunk > 0) {
        PGconn *c;

        if (jobs_pg_acquire(w->pg, &c, NULL, 0) == 0) {
            jobs_pg_drop_chunks(c, w->seq, w->claim);
            jobs_pg_release(w->pg, c);
        }
    }
    free(w->buf);
    free(w);
}

/* ---- the reader ---- */

/* Marks SUCCEEDED job seq FAILED (DATA_LOSS) with message why and drops its chunks. */
static void mark_data_loss(PGconn *c, const struct jobs_pg_reader *r, const char *why)
{
    struct pg_params p = {0};
    PGresult *res;
    int err;

    jobs_pg_p_int(&p, r->seq);
    jobs_pg_p_text(&p, why);
    res = jobs_pg_exec(c, "UPDATE fractald_jobs SET state = 4, error_code = 15, error_message = $2, result_bytes = 0,"
                          "  content_type = '' WHERE seq = $1 AND state = 3 RETURNING 1", &p, 0, &err, NULL, 0);
    if (res && PQntuples(res) == 1) {
        struct pg_params d = {0};
        char fields[768];

        jobs_pg_p_int(&d, r->seq);
        jobs_pg_run(c, "DELETE FROM fractald_job_result_chunks WHERE job_seq = $1", &d, NULL, 0);
        if (LOG_WARN >= log_min_level) {
            jobs_log_fields(fields, sizeof(fields), r->id, "FAILED");
            log_kv(fields, sizeof(fields), "code", "DATA_LOSS");
            log_kv(fields, sizeof(fields), "error", why);
            log_event(LOG_WARN, "job", fields);
        }
    }
    PQclear(res);
}

/* Loads chunk r->next_chunk into r->buf. Returns 0, ERR_NOT_FOUND (the job is gone: it expired
 * while being read), ERR_DATA_LOSS (the chunk is missing or longer than the result; the job is
 * marked), or the database's error. msg gets one line on failure. */
static int load_chunk(struct jobs_pg_reader *r, char *msg, size_t msglen)
{
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *res = NULL;
    char why[300];
    int err;

    if ((err = jobs_pg_acquire(r->pg, &c, msg, msglen)) < 0)
        return err;
    jobs_pg_p_int(&p, r->seq);
    jobs_pg_p_int(&p, r->claim);
    jobs_pg_p_int(&p, r->next_chunk);
    /* Binary results: the bytea arrives as its bytes, not hex text of twice the size. */
    if (!(res = jobs_pg_exec(c, "SELECT data FROM fractald_job_result_chunks WHERE job_seq = $1 AND claim = $2 "
                                "AND chunk = $3", &p, 1, &err, msg, msglen)))
        goto done;
    if (PQntuples(res) == 0 || (uint64_t)PQgetlength(res, 0, 0) > r->size - r->offset ||
        PQgetlength(res, 0, 0) == 0) {
        struct pg_params q = {0};
        PGresult *alive;

        jobs_pg_p_int(&q, r->seq);
        alive = jobs_pg_exec(c, "SELECT 1 FROM fractald_jobs WHERE seq = $1 AND state = 3", &q, 0, &err, msg, msglen);
        if (alive && PQntuples(alive) == 0) {
            err = ERR_NOT_FOUND;
            jobs_set_msg(msg, msglen, "job %s expired while its result was read", r->id);
        } else if (alive) {
            snprintf(why, sizeof(why), "result of job %s: chunk %" PRId64 " is %s at byte %llu of %llu", r->id,
                     r->next_chunk, PQntuples(res) == 0 ? "missing" : "of the wrong size",
                     (unsigned long long)r->offset, (unsigned long long)r->size);
            mark_data_loss(c, r, why);
            jobs_set_msg(msg, msglen, "%s", why);
            err = ERR_DATA_LOSS;
        }
        PQclear(alive);
        goto done;
    }
    r->len = (size_t)PQgetlength(res, 0, 0);
    memcpy(r->buf, PQgetvalue(res, 0, 0), r->len);
    r->off = 0;
    r->next_chunk++;
done:
    PQclear(res);
    jobs_pg_release(r->pg, c);
    return err;
}

/* Reads up to len bytes at r's position into buf (NULL: only count and check them). */
static int read_bytes(struct jobs_pg_reader *r, uint8_t *buf, size_t len, size_t *nread, char *msg, size_t msglen)
{
    size_t got = 0;
    int err;

    *nread = 0;
    if (len > r->size - r->offset)
        len = (size_t)(r->size - r->offset);
    while (got < len) {
        size_t n;

        if (r->off == r->len && (err = load_chunk(r, msg, msglen)) < 0)
            return err;
        n = r->len - r->off < len - got ? r->len - r->off : len - got;
        if (buf)
            memcpy(buf + got, r->buf + r->off, n);
        r->crc = jobs_results_crc(r->crc, r->buf + r->off, n);
        r->off += n;
        got += n;
        r->offset += n;
    }
    *nread = got;
    if (got > 0 && r->offset == r->size && r->crc != r->crc_expected) {
        char why[200];
        PGconn *c;

        snprintf(why, sizeof(why), "result of job %s is damaged in the database (CRC-32 %08x, recorded %08x)", r->id,
                 (unsigned)r->crc, (unsigned)r->crc_expected);
        if (jobs_pg_acquire(r->pg, &c, NULL, 0) == 0) {
            mark_data_loss(c, r, why);
            jobs_pg_release(r->pg, c);
        }
        jobs_set_msg(msg, msglen, "%s", why);
        *nread = 0;
        return ERR_DATA_LOSS;
    }
    return 0;
}

int jobs_pg_reader_open(struct jobs_pg_reader **out, struct jobs_pg *pg, const char *id, char *msg, size_t msglen)
{
    struct jobs_pg_reader *r = NULL;
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *res = NULL;
    size_t n;
    int err;

    *out = NULL;
    if (!jobs_id_valid(id)) {
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id ? id : "");
        return ERR_NOT_FOUND;
    }
    if (!(r = calloc(1, sizeof(*r))) || !(r->buf = malloc(JOBS_PG_CHUNK))) {
        free(r);
        jobs_set_msg(msg, msglen, "out of memory opening a result");
        return ERR_NOMEM;
    }
    r->pg = pg;
    if ((err = jobs_pg_acquire(pg, &c, msg, msglen)) < 0)
        goto done;
    jobs_pg_p_text(&p, id);
    if (!(res = jobs_pg_exec(c, "SELECT seq, state, result_bytes, result_crc, result_claim FROM fractald_jobs "
                                "WHERE id = $1", &p, 0, &err, msg, msglen)))
        goto done;
    if (PQntuples(res) == 0) {
        err = ERR_NOT_FOUND;
        jobs_set_msg(msg, msglen, "no job with id '%.64s'", id);
        goto done;
    }
    if (jobs_pg_int(res, 0, 1) != JOBS_SUCCEEDED) {
        err = ERR_PRECONDITION;
        jobs_set_msg(msg, msglen, "job %s is %s and has no result", id,
                     jobs_state_name((enum jobs_state)jobs_pg_int(res, 0, 1)));
        goto done;
    }
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->seq = jobs_pg_int(res, 0, 0);
    r->size = (uint64_t)jobs_pg_int(res, 0, 2);
    r->crc_expected = (uint32_t)jobs_pg_int(res, 0, 3);
    r->claim = jobs_pg_int(res, 0, 4);
    PQclear(res);
    res = NULL;
    jobs_pg_release(pg, c);
    c = NULL;
    /* As the file store does, the whole result is checked before the first byte goes out, so a
     * damaged one is DATA_LOSS up front; then the reader starts again from the first chunk. */
    while (r->offset < r->size)
        if ((err = read_bytes(r, NULL, JOBS_PG_CHUNK, &n, msg, msglen)) < 0)
            goto done;
    r->offset = 0;
    r->crc = 0;
    r->next_chunk = 0;
    r->len = r->off = 0;
    *out = r;
    r = NULL;
done:
    PQclear(res);
    jobs_pg_release(pg, c);
    jobs_pg_reader_free(r);
    return err;
}

uint64_t jobs_pg_reader_size(const struct jobs_pg_reader *r)
{
    return r->size;
}

int jobs_pg_reader_read(struct jobs_pg_reader *r, void *buf, size_t len, size_t *nread, char *msg, size_t msglen)
{
    return read_bytes(r, buf, len, nread, msg, msglen);
}

void jobs_pg_reader_free(struct jobs_pg_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r);
}
