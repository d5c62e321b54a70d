/* jobs_pg_threads.c: the PostgreSQL backend's two threads: the listener, which wakes this server's
 * workers when any server queues a job (LISTEN/NOTIFY, with a periodic poll for leases that expire
 * silently) and delivers cancels; and the heartbeat, which renews this process's leases. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "jobs_internal.h"
#include "jobs_pg_internal.h"
#include "log.h"

/* How often the listener looks for work no NOTIFY announced: a lease that ran out. A quarter of
 * the lease, within 0.1..1 s, so a dead server's job waits at most about lease + 1 s. */
static int poll_interval_ms(const struct jobs_pg *pg)
{
    int64_t ms = pg->lease_ms / 4;

    return (int)(ms < 100 ? 100 : ms > 1000 ? 1000 : ms);
}

/* Whether any job can be claimed now; on a failed query, true (the claim will tell). */
static bool claimable(PGconn *c, const struct jobs_pg *pg)
{
    struct pg_params p = {0};
    PGresult *r;
    bool yes;
    int err;

    jobs_pg_p_int(&p, pg->opts.max_attempts);
    jobs_pg_p_text(&p, pg->owner);
    /* The claim's condition (jobs_pg_work.c), without the locks. */
    r = jobs_pg_exec(c, "SELECT EXISTS (SELECT 1 FROM fractald_jobs WHERE state = 1 OR (state = 2 AND "
                        "lease_expires < now() AND NOT cancel_requested AND ($1 = 0 OR attempts < $1) AND "
                        "owner IS DISTINCT FROM $2))",
                     &p, 0, &err, NULL, 0);
    yes = !r || PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return yes;
}

/* Sets the cancel flag of this process's run of job `id`, if it has one. */
static void deliver_cancel(struct jobs_pg *pg, const char *id)
{
    struct pg_run *run;

    pthread_mutex_lock(&pg->lock);
    if ((run = jobs_pg_find_run(pg, id)))
        atomic_store(&run->cancel, 1);
    pthread_mutex_unlock(&pg->lock);
}

/* Opens the listener's own connection (a LISTENing connection cannot be shared) and LISTENs.
 * Returns it, or NULL when the database cannot be reached (logged once per outage). */
static PGconn *listen_connect(struct jobs_pg *pg, bool *warned)
{
    char msg[300];
    PGconn *c = NULL;

    if (jobs_pg_connect(&c, pg->conninfo, msg, sizeof(msg)) == 0 &&
        jobs_pg_run(c, "LISTEN " JOBS_PG_CHANNEL, NULL, msg, sizeof(msg)) == 0) {
        if (*warned)
            log_at(LOG_INFO, "job store: listening for jobs again");
        *warned = false;
        return c;
    }
    if (!*warned)
        log_at(LOG_WARN, "job store: cannot listen for jobs: %s; retrying", msg);
    *warned = true;
    PQfinish(c);
    return NULL;
}

static void *listener_main(void *arg)
{
    struct jobs_pg *pg = arg;
    int interval = poll_interval_ms(pg);
    bool warned = false;
    PGconn *c = NULL;

    for (;;) {
        struct pollfd fds[2] = {{.fd = pg->stop_pipe[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
        bool work = false;
        int n;

        if (!c && (c = listen_connect(pg, &warned)))
            work = true; /* NOTIFYs sent while we were not listening are lost */
        fds[1].fd = c ? PQsocket(c) : -1;
        if (work)
            jobs_pg_wake(pg);
        n = poll(fds, 2, interval);
        if (n < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (!c)
            continue;
        if (fds[1].revents) {
            PGnotify *nf;

            if (!PQconsumeInput(c)) {
                log_at(LOG_WARN, "job store: the listener lost its connection; reconnecting");
                PQfinish(c);
                c = NULL;
                continue;
            }
            while ((nf = PQnotifies(c))) {
                if (strncmp(nf->extra, "cancel ", 7) == 0)
                    deliver_cancel(pg, nf->extra + 7);
                else
                    work = true;
                PQfreemem(nf);
            }
        } else if (n == 0) {
            work = claimable(c, pg);
            if (PQstatus(c) != CONNECTION_OK) {
                PQfinish(c);
                c = NULL;
            }
        }
        if (work)
            jobs_pg_wake(pg);
    }
    PQfinish(c);
    return NULL;
}

/* Appends "v," to a growing array literal. */
static void append_int(char *buf, size_t cap, size_t *used, int64_t v)
{
    int n = snprintf(buf + *used, cap - *used, "%s%" PRId64, *used > 1 ? "," : "", v);

    if (n > 0 && (size_t)n < cap - *used)
        *used += (size_t)n;
}

/* One renewal round: extends the lease of every job this process runs, writes their progress,
 * and in the same round trip reads their cancel flags. A job whose row no longer names this
 * process was taken over: its render is stopped, and its finish will be refused. */
static void renew(struct jobs_pg *pg)
{
    enum { COLS = 5 };
    char *arr[COLS] = {0};
    size_t used[COLS], cap, count = 0;
    struct pg_params p = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t *seqs = NULL;
    char msg[300];
    int err;

    pthread_mutex_lock(&pg->lock);
    for (struct pg_run *run = pg->running; run; run = run->next)
        count += !run->lost;
    cap = 24 * count + 4;
    seqs = count ? calloc(count, sizeof(*seqs)) : NULL;
    for (int k = 0; k < COLS; k++) {
        arr[k] = count ? malloc(cap) : NULL;
        used[k] = 1;
    }
    if (count == 0 || !seqs || !arr[0] || !arr[1] || !arr[2] || !arr[3] || !arr[4]) {
        pthread_mutex_unlock(&pg->lock);
        goto done;
    }
    count = 0;
    for (int k = 0; k < COLS; k++)
        arr[k][0] = '{';
    for (struct pg_run *run = pg->running; run; run = run->next) {
        if (run->lost)
            continue;
        seqs[count++] = run->seq;
        append_int(arr[0], cap, &used[0], run->seq);
        append_int(arr[1], cap, &used[1], run->claim);
        append_int(arr[2], cap, &used[2], run->rows_done);
        append_int(arr[3], cap, &used[3], run->rows_total);
        append_int(arr[4], cap, &used[4], (int64_t)run->samples_done);
    }
    pthread_mutex_unlock(&pg->lock);
    for (int k = 0; k < COLS; k++)
        snprintf(arr[k] + used[k], cap - used[k], "}");

    if (jobs_pg_acquire(pg, &c, msg, sizeof(msg)) < 0) {
        log_at(LOG_WARN, "job store: cannot renew the leases of %zu jobs: %s", count, msg);
        goto done;
    }
    jobs_pg_p_text(&p, pg->owner);
    jobs_pg_p_int(&p, pg->lease_ms);
    for (int k = 0; k < COLS; k++)
        jobs_pg_p_text(&p, arr[k]);
    r = jobs_pg_exec(c, "UPDATE fractald_jobs j SET lease_expires = now() + $2 * interval '1 millisecond',"
                        "  rows_done = u.rd, rows_total = u.rt, samples_done = u.sd "
                        "FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) "
                        "  AS u(seq, claim, rd, rt, sd) "
                        "WHERE j.seq = u.seq AND j.state = 2 AND j.owner = $1 AND j.claim = u.claim "
                        "RETURNING j.seq, j.cancel_requested",
                     &p, 0, &err, msg, sizeof(msg));
    if (!r) {
        log_at(LOG_WARN, "job store: cannot renew the leases of %zu jobs: %s", count, msg);
        goto done;
    }
    pthread_mutex_lock(&pg->lock);
    for (struct pg_run *run = pg->running; run; run = run->next) {
        bool sent = false, renewed = false, cancel = false;

        for (size_t i = 0; i < count && !sent; i++)
            sent = seqs[i] == run->seq;
        for (int i = 0; sent && i < PQntuples(r) && !renewed; i++)
            if (jobs_pg_int(r, i, 0) == run->seq) {
                renewed = true;
                cancel = PQgetvalue(r, i, 1)[0] == 't';
            }
        if (sent && !renewed && !run->lost && !run->finishing) {
            run->lost = true;
            atomic_store(&run->cancel, 1);
            if (LOG_WARN >= log_min_level) {
                char fields[256];
                jobs_log_fields(fields, sizeof(fields), run->id, "RUNNING");
                log_kv(fields, sizeof(fields), "lease", "lost");
                log_kv(fields, sizeof(fields), "note", "another server took the job over; render stopped");
                log_event(LOG_WARN, "job", fields);
            }
        } else if (cancel) {
            atomic_store(&run->cancel, 1);
        }
    }
    pthread_mutex_unlock(&pg->lock);
done:
    PQclear(r);
    jobs_pg_release(pg, c);
    for (int k = 0; k < COLS; k++)
        free(arr[k]);
    free(seqs);
}

static void *heartbeat_main(void *arg)
{
    struct jobs_pg *pg = arg;
    int64_t interval = pg->lease_ms / 3;

    pthread_mutex_lock(&pg->lock);
    while (!pg->closing) {
        struct timespec t;

        jobs_deadline(&t, interval);
        while (!pg->closing && pthread_cond_timedwait(&pg->tick, &pg->lock, &t) != ETIMEDOUT)
            ;
        if (pg->closing)
            break;
        pthread_mutex_unlock(&pg->lock);
        renew(pg);
        pthread_mutex_lock(&pg->lock);
    }
    pthread_mutex_unlock(&pg->lock);
    return NULL;
}

int jobs_pg_threads_start(struct jobs_pg *pg, char *msg, size_t msglen)
{
    if (pipe2(pg->stop_pipe, O_CLOEXEC) != 0) {
        pg->stop_pipe[0] = pg->stop_pipe[1] = -1;
        jobs_set_msg(msg, msglen, "job store: pipe: %s", strerror(errno));
        return ERR_IO;
    }
    if (pthread_create(&pg->listener, NULL, listener_main, pg) != 0) {
        jobs_set_msg(msg, msglen, "job store: cannot start the listener thread");
        return ERR_NOMEM;
    }
    pg->listener_started = true;
    if (pthread_create(&pg->heartbeat, NULL, heartbeat_main, pg) != 0) {
        jobs_set_msg(msg, msglen, "job store: cannot start the heartbeat thread");
        return ERR_NOMEM;
    }
    pg->heartbeat_started = true;
    return 0;
}

void jobs_pg_threads_stop(struct jobs_pg *pg)
{
    pthread_mutex_lock(&pg->lock);
    pg->closing = true;
    pthread_cond_broadcast(&pg->tick);
    pthread_mutex_unlock(&pg->lock);
    if (pg->stop_pipe[1] >= 0) {
        ssize_t w = write(pg->stop_pipe[1], "x", 1);
        (void)w;
    }
    if (pg->listener_started)
        pthread_join(pg->listener, NULL);
    if (pg->heartbeat_started)
        pthread_join(pg->heartbeat, NULL);
    pg->listener_started = pg->heartbeat_started = false;
    for (int k = 0; k < 2; k++)
        if (pg->stop_pipe[k] >= 0)
            close(pg->stop_pipe[k]);
    pg->stop_pipe[0] = pg->stop_pipe[1] = -1;
}
