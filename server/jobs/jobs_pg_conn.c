/* jobs_pg_conn.c: the PostgreSQL backend's connections: a small pool shared by every thread (a libpq
 * connection is used by one thread at a time), reconnection, and the query helpers with one
 * mapping from SQLSTATE to the server's error codes. */
#include "jobs_pg_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jobs_internal.h"

void jobs_pg_p_int(struct pg_params *p, int64_t v)
{
    snprintf(p->buf[p->n], sizeof(p->buf[0]), "%" PRId64, v);
    p->v[p->n] = p->buf[p->n];
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

void jobs_pg_p_text(struct pg_params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

void jobs_pg_p_bytes(struct pg_params *p, const void *data, size_t len)
{
    /* A non-NULL pointer even for no bytes: NULL would be SQL NULL. */
    p->v[p->n] = data ? data : "";
    p->len[p->n] = (int)len;
    p->fmt[p->n] = 1;
    p->n++;
}

/* The first line of libpq's message, which often carries a second, indented detail line. */
static void first_line(char *out, size_t cap, const char *text)
{
    size_t n = strcspn(text ? text : "", "\n");

    snprintf(out, cap, "%.*s", (int)n, text ? text : "");
}

int jobs_pg_connect(PGconn **out, const char *conninfo, char *msg, size_t msglen)
{
    /* Our defaults first: with expand_dbname the conninfo's own settings override them. The TCP
     * settings notice a database host that vanished without closing the connection (the
     * statement timeout cannot: it runs on that host) within about 10 s, not the kernel's minutes. */
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"5", "fractald", "5", "2", "3", "10000", conninfo, NULL};
    char *perr = NULL, line[256];
    PQconninfoOption *parsed;
    PGconn *c;
    PGresult *r;
    char set[96];

    *out = NULL;
    /* Parsing first tells a malformed setting (the user's to fix) from an unreachable server. */
    if (!(parsed = PQconninfoParse(conninfo, &perr))) {
        first_line(line, sizeof(line), perr ? perr : "out of memory");
        jobs_set_msg(msg, msglen, "--job-store is not a valid libpq connection string: %s", line);
        PQfreemem(perr);
        return ERR_INVALID;
    }
    PQconninfoFree(parsed);
    c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        first_line(line, sizeof(line), c ? PQerrorMessage(c) : "out of memory");
        jobs_set_msg(msg, msglen, "cannot connect to the job store database: %s", line);
        PQfinish(c);
        return ERR_UNAVAILABLE;
    }
    snprintf(set, sizeof(set), "SET statement_timeout = %d", JOBS_PG_STATEMENT_TIMEOUT_MS);
    r = PQexec(c, set);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        first_line(line, sizeof(line), PQerrorMessage(c));
        jobs_set_msg(msg, msglen, "job store database: %s", line);
        PQclear(r);
        PQfinish(c);
        return ERR_UNAVAILABLE;
    }
    PQclear(r);
    *out = c;
    return 0;
}

int jobs_pg_acquire(struct jobs_pg *pg, PGconn **out, char *msg, size_t msglen)
{
    int slot = -1, err = 0;
    unsigned generation;
    bool stale;
    PGconn *c;

    *out = NULL;
    pthread_mutex_lock(&pg->pool_lock);
    for (;;) {
        for (int i = 0; i < JOBS_PG_POOL && slot < 0; i++)
            if (!pg->busy[i])
                slot = i;
        if (slot >= 0)
            break;
        pthread_cond_wait(&pg->pool_freed, &pg->pool_lock);
    }
    pg->busy[slot] = true;
    c = pg->conns[slot];
    stale = pg->conn_generation[slot] != pg->generation;
    generation = pg->generation;
    pthread_mutex_unlock(&pg->pool_lock);

    /* Outside the pool's lock: connecting may take up to the connect timeout. */
    if (c && (stale || PQstatus(c) == CONNECTION_BAD)) {
        PQfinish(c);
        c = NULL;
    }
    if (!c)
        err = jobs_pg_connect(&c, pg->conninfo, msg, msglen);
    pthread_mutex_lock(&pg->pool_lock);
    pg->conns[slot] = c;
    pg->conn_generation[slot] = generation;
    if (err < 0) {
        pg->busy[slot] = false;
        pthread_cond_signal(&pg->pool_freed);
    }
    pthread_mutex_unlock(&pg->pool_lock);
    if (err < 0)
        return err == ERR_INVALID ? ERR_UNAVAILABLE : err;
    *out = c;
    return 0;
}

void jobs_pg_release(struct jobs_pg *pg, PGconn *c)
{
    if (!c)
        return;
    /* A connection left inside a failed transaction would fail every later statement. */
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    pthread_mutex_lock(&pg->pool_lock);
    if (PQstatus(c) == CONNECTION_BAD)
        pg->generation++;
    for (int i = 0; i < JOBS_PG_POOL; i++)
        if (pg->conns[i] == c && pg->busy[i]) {
            pg->busy[i] = false;
            pthread_cond_signal(&pg->pool_freed);
            break;
        }
    pthread_mutex_unlock(&pg->pool_lock);
}

void jobs_pg_pool_dispose(struct jobs_pg *pg)
{
    for (int i = 0; i < JOBS_PG_POOL; i++) {
        PQfinish(pg->conns[i]);
        pg->conns[i] = NULL;
    }
}

/* Which of our codes a failed statement is. Class 08 (connection), 57 (operator intervention:
 * statement timeout, server shutdown) and 40 (serialization, deadlock) are the database being
 * unavailable for now; 53 is its resources (disk, memory, connections). */
static int error_of(PGconn *c, const PGresult *r)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(c) == CONNECTION_BAD || !st)
        return ERR_UNAVAILABLE;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57", 2) == 0 || strncmp(st, "40", 2) == 0 ||
        strcmp(st, "55P03") == 0)
        return ERR_UNAVAILABLE;
    if (strncmp(st, "53", 2) == 0)
        return strcmp(st, "53300") == 0 ? ERR_UNAVAILABLE : ERR_EXHAUSTED;
    return ERR_IO;
}

PGresult *jobs_pg_exec(PGconn *c, const char *sql, const struct pg_params *p, int binary, int *err, char *msg,
                       size_t msglen)
{
    /* Without parameters, the simple protocol, which also runs several statements (the schema). */
    PGresult *r = !p && !binary ? PQexec(c, sql)
                                : PQexecParams(c, sql, p ? p->n : 0, NULL, p ? p->v : NULL, p ? p->len : NULL,
                                               p ? p->fmt : NULL, binary);
    ExecStatusType st = PQresultStatus(r);
    char line[256];

    if (r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        *err = 0;
        return r;
    }
    *err = error_of(c, r);
    first_line(line, sizeof(line), PQerrorMessage(c));
    jobs_set_msg(msg, msglen, "job store database: %s", line[0] ? line : "no connection");
    PQclear(r);
    return NULL;
}

int jobs_pg_run(PGconn *c, const char *sql, const struct pg_params *p, char *msg, size_t msglen)
{
    int err;
    PGresult *r = jobs_pg_exec(c, sql, p, 0, &err, msg, msglen);

    PQclear(r);
    return err;
}

int64_t jobs_pg_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}
