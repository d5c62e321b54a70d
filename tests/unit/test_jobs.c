/* test_jobs.c: the job store: lifecycle, durability across reopen and across a SIGKILL mid-way,
 * retention, disk budget and job limits, damaged results, and four threads at once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

#include "err.h"
#include "jobs.h"
#include "log.h"

/* A fresh spool directory per test, removed afterwards. */
struct fixture {
    char dir[256];
    char spool[300];
    char results[320];
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/fractald-jobs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    /* A spool below a folder that does not exist yet: jobs_open creates the parents. */
    snprintf(f->spool, sizeof(f->spool), "%s/a/spool", f->dir);
    snprintf(f->results, sizeof(f->results), "%s/results", f->spool);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int saved_log_level;

static int group_setup(void **state)
{
    (void)state;
    saved_log_level = log_min_level;
    log_min_level = LOG_OFF;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    log_min_level = saved_log_level;
    return 0;
}

static jobs_store *open_store(struct fixture *f, struct jobs_options *opts)
{
    struct jobs_options o = JOBS_OPTIONS_INIT;
    jobs_store *s = NULL;
    char msg[512] = "";

    if (opts)
        o = *opts;
    o.spool_dir = f->spool;
    if (jobs_open(&s, &o, msg, sizeof(msg)) != 0)
        fail_msg("jobs_open: %s", msg);
    return s;
}

static void submit(jobs_store *s, const char *request, char id[JOBS_ID_SIZE])
{
    char msg[256] = "";

    if (jobs_submit(s, request, strlen(request), id, msg, sizeof(msg)) != 0)
        fail_msg("jobs_submit: %s", msg);
    assert_int_equal(strlen(id), JOBS_ID_LEN);
}

static enum jobs_state state_of(jobs_store *s, const char *id)
{
    struct jobs_info info;
    enum jobs_state st;

    assert_int_equal(jobs_get(&info, s, id), 0);
    st = info.state;
    jobs_info_dispose(&info);
    return st;
}

/* Takes the next job, checks it is `id`, and returns it (caller disposes). */
static struct jobs_work take(jobs_store *s, const char *id)
{
    struct jobs_work w;
    char msg[256] = "";

    if (jobs_next_queued(&w, s, 0, msg, sizeof(msg)) != 0)
        fail_msg("jobs_next_queued: %s", msg);
    if (id)
        assert_string_equal(w.id, id);
    return w;
}

/* Writes `data` as job id's result (in pieces of 7 bytes, to exercise appends) and publishes it. */
static void finish_with(jobs_store *s, const char *id, const void *data, size_t len)
{
    jobs_result *w = NULL;
    char msg[256] = "";

    if (jobs_result_open(&w, s, id, msg, sizeof(msg)) != 0)
        fail_msg("jobs_result_open: %s", msg);
    for (size_t off = 0; off < len; off += 7)
        assert_int_equal(jobs_result_sink(w, (const char *)data + off, len - off < 7 ? len - off : 7), 0);
    if (jobs_finish_ok(w, "stats!", 6, "image/png", 30, 20, msg, sizeof(msg)) != 0)
        fail_msg("jobs_finish_ok: %s", msg);
    jobs_result_free(w);
}

/* Reads a whole result; returns the reader's status and the bytes in *out (malloc'd). */
static int read_all(jobs_store *s, const char *id, char **out, size_t *len)
{
    jobs_reader *r = NULL;
    char *buf = NULL;
    size_t n, got = 0;
    int err;

    *out = NULL;
    *len = 0;
    if ((err = jobs_reader_open(&r, s, id, NULL, 0)) < 0)
        return err;
    buf = malloc(jobs_reader_size(r) + 1);
    assert_non_null(buf);
    do {
        /* Odd chunk sizes, as FetchJobResult's 1 MiB chunks would be for a big image. */
        if ((err = jobs_reader_read(r, buf + got, 5, &n, NULL, 0)) < 0)
            break;
        got += n;
    } while (n > 0);
    jobs_reader_free(r);
    buf[got] = '\0';
    if (err < 0) {
        free(buf);
        return err;
    }
    *out = buf;
    *len = got;
    return 0;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), sl = suffix ? strlen(suffix) : 0;

        if (e->d_name[0] == '.')
            continue;
        if (!suffix || (len >= sl && strcmp(e->d_name + len - sl, suffix) == 0))
            n++;
    }
    closedir(d);
    return n;
}

static void test_open_options(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    jobs_store *s = NULL, *s2 = NULL;
    char msg[256] = "";

    o.spool_dir = f->spool;
    o.version = 99;
    assert_int_equal(jobs_open(&s, &o, msg, sizeof(msg)), ERR_INVALID);
    o.version = JOBS_OPTIONS_VERSION;
    o.max_jobs = 0;
    assert_int_equal(jobs_open(&s, &o, msg, sizeof(msg)), ERR_INVALID);
    assert_non_null(strstr(msg, "max jobs"));
    assert_null(s);

    s = open_store(f, NULL);
    /* The spool is locked: a second store on it, even in this process, is refused. */
    o.max_jobs = 10;
    assert_int_equal(jobs_open(&s2, &o, msg, sizeof(msg)), ERR_UNAVAILABLE);
    assert_non_null(strstr(msg, "in use"));
    jobs_close(s);
    assert_int_equal(jobs_open(&s2, &o, msg, sizeof(msg)), 0);
    jobs_close(s2);
}

static void test_lifecycle(void **state)
{
    struct fixture *f = *state;
    jobs_store *s = open_store(f, NULL);
    char a[JOBS_ID_SIZE], b[JOBS_ID_SIZE], c[JOBS_ID_SIZE], msg[256];
    struct jobs_info info, *list = NULL;
    struct jobs_stats st;
    struct jobs_work w;
    size_t n;
    char *bytes;
    size_t len;

    submit(s, "request-a", a);
    submit(s, "request-b", b);
    submit(s, "request-c", c);
    assert_string_not_equal(a, b);
    for (const char *p = a; *p; p++)
        assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz234567", *p));

    assert_int_equal(jobs_get(&info, s, b), 0);
    assert_int_equal(info.state, JOBS_QUEUED);
    assert_int_equal(info.queue_position, 2);
    assert_int_equal(info.request_len, 9);
    assert_memory_equal(info.request, "request-b", 9);
    assert_true(info.created_ms > 0);
    assert_string_equal(info.error_message, "");
    jobs_info_dispose(&info);
    assert_int_equal(jobs_get(&info, s, "nope"), ERR_NOT_FOUND);
    assert_int_equal(jobs_get(&info, s, "aaaaaaaaaaaaaaaaaaaaaaaaaa"), ERR_NOT_FOUND);
    jobs_info_dispose(&info);

    /* Newest first, with queue positions. */
    assert_int_equal(jobs_list(&list, &n, s, JOBS_ANY, 0), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].id, c);
    assert_int_equal(list[0].queue_position, 3);
    assert_string_equal(list[2].id, a);
    assert_int_equal(list[2].queue_position, 1);
    jobs_info_free_array(list, n);
    assert_int_equal(jobs_list(&list, &n, s, JOBS_ANY, 2), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[1].id, b);
    jobs_info_free_array(list, n);

    /* A queued job is cancelled at once and leaves the queue. */
    assert_int_equal(jobs_cancel(s, b, msg, sizeof(msg)), 0);
    assert_int_equal(jobs_get(&info, s, b), 0);
    assert_int_equal(info.state, JOBS_CANCELLED);
    assert_int_equal(info.error_code, JOBS_CODE_CANCELLED);
    assert_int_equal(info.queue_position, 0);
    assert_true(info.expires_ms >= info.finished_ms + 3600 * 1000 - 1);
    jobs_info_dispose(&info);
    assert_int_equal(jobs_queue_position(s, c), 2);
    assert_int_equal(jobs_cancel(s, "zzzzzzzzzzzzzzzzzzzzzzzzzz", msg, sizeof(msg)), ERR_NOT_FOUND);

    /* The worker gets the oldest queued job, reports progress and a result. */
    w = take(s, a);
    assert_int_equal(w.request_len, 9);
    assert_memory_equal(w.request, "request-a", 9);
    assert_int_equal(w.attempts, 1);
    assert_int_equal(atomic_load(w.cancel), 0);
    assert_int_equal(jobs_queue_position(s, c), 1);
    assert_int_equal(jobs_progress(s, a, 5, 20, 1500), 0);
    assert_int_equal(jobs_get(&info, s, a), 0);
    assert_int_equal(info.state, JOBS_RUNNING);
    assert_int_equal(info.rows_done, 5);
    assert_int_equal(info.rows_total, 20);
    assert_int_equal(info.samples_done, 1500);
    assert_true(info.started_ms >= info.created_ms);
    jobs_info_dispose(&info);
    assert_int_equal(jobs_reader_open(&(jobs_reader *){NULL}, s, a, NULL, 0), ERR_PRECONDITION);

    finish_with(s, a, "the encoded image bytes", 23);
    jobs_work_dispose(&w);
    assert_int_equal(jobs_get(&info, s, a), 0);
    assert_int_equal(info.state, JOBS_SUCCEEDED);
    assert_int_equal(info.result_bytes, 23);
    assert_string_equal(info.content_type, "image/png");
    assert_int_equal(info.width, 30);
    assert_int_equal(info.height, 20);
    assert_int_equal(info.stats_len, 6);
    assert_memory_equal(info.stats, "stats!", 6);
    jobs_info_dispose(&info);
    assert_int_equal(read_all(s, a, &bytes, &len), 0);
    assert_int_equal(len, 23);
    assert_string_equal(bytes, "the encoded image bytes");
    free(bytes);
    /* Cancelling a finished job changes nothing. */
    assert_int_equal(jobs_cancel(s, a, msg, sizeof(msg)), 0);
    assert_int_equal(state_of(s, a), JOBS_SUCCEEDED);

    w = take(s, c);
    assert_int_equal(jobs_finish_error(s, c, 13, "device lost", msg, sizeof(msg)), 0);
    assert_int_equal(jobs_finish_error(s, c, 13, "again", msg, sizeof(msg)), ERR_PRECONDITION);
    jobs_work_dispose(&w);
    assert_int_equal(jobs_get(&info, s, c), 0);
    assert_int_equal(info.state, JOBS_FAILED);
    assert_int_equal(info.error_code, 13);
    assert_string_equal(info.error_message, "device lost");
    jobs_info_dispose(&info);

    assert_int_equal(jobs_next_queued(&w, s, 0, msg, sizeof(msg)), ERR_NOT_FOUND);
    assert_int_equal(jobs_list(&list, &n, s, JOBS_FAILED, 0), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, c);
    jobs_info_free_array(list, n);
    jobs_get_stats(&st, s);
    assert_int_equal(st.held, 3);
    assert_int_equal(st.succeeded, 1);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.queued + st.running, 0);
    assert_int_equal(st.spool_bytes, 23);
    jobs_close(s);
}

static void test_cancel_running_and_requeue(void **state)
{
    struct fixture *f = *state;
    jobs_store *s = open_store(f, NULL);
    char a[JOBS_ID_SIZE], b[JOBS_ID_SIZE], c[JOBS_ID_SIZE], msg[256];
    struct jobs_info info;
    struct jobs_work w;
    jobs_result *res = NULL;

    submit(s, "a", a);
    submit(s, "b", b);
    submit(s, "c", c);
    w = take(s, a);
    assert_int_equal(jobs_result_open(&res, s, a, msg, sizeof(msg)), 0);
    assert_int_equal(jobs_result_write(res, "partial", 7), 0);
    assert_int_equal(count_files(f->results, ".tmp"), 1);

    /* A running job gets its flag raised and stays RUNNING until the worker says so. */
    assert_int_equal(jobs_cancel(s, a, msg, sizeof(msg)), 0);
    assert_int_equal(atomic_load(w.cancel), 1);
    assert_int_equal(jobs_get(&info, s, a), 0);
    assert_int_equal(info.state, JOBS_RUNNING);
    assert_true(info.cancel_requested);
    jobs_info_dispose(&info);
    jobs_result_free(res);
    assert_int_equal(count_files(f->results, NULL), 0);
    assert_int_equal(jobs_finish_error(s, a, JOBS_CODE_CANCELLED, "cancelled by client", msg, sizeof(msg)), 0);
    assert_int_equal(state_of(s, a), JOBS_CANCELLED);
    jobs_work_dispose(&w);

    /* Requeue (a drain) puts the job back at its place and does not count the attempt. */
    w = take(s, b);
    assert_int_equal(jobs_queue_position(s, c), 1);
    assert_int_equal(jobs_requeue(s, b, msg, sizeof(msg)), 0);
    jobs_work_dispose(&w);
    assert_int_equal(jobs_queue_position(s, b), 1);
    assert_int_equal(jobs_queue_position(s, c), 2);
    w = take(s, b);
    assert_int_equal(w.attempts, 1);
    jobs_work_dispose(&w);
    jobs_close(s);
}

static void *wait_for_job(void *arg)
{
    jobs_store *s = arg;
    struct jobs_work w;
    intptr_t err = jobs_next_queued(&w, s, 5000, NULL, 0);

    jobs_work_dispose(&w);
    return (void *)err;
}

static void test_next_queued_waits(void **state)
{
    struct fixture *f = *state;
    jobs_store *s = open_store(f, NULL);
    char id[JOBS_ID_SIZE];
    struct jobs_work w;
    struct timespec t0, t1;
    pthread_t th;
    void *ret;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(jobs_next_queued(&w, s, 50, NULL, 0), ERR_NOT_FOUND);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 45);

    /* A waiting worker wakes for a submit... */
    assert_int_equal(pthread_create(&th, NULL, wait_for_job, s), 0);
    usleep(20 * 1000);
    submit(s, "x", id);
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
    assert_int_equal(state_of(s, id), JOBS_RUNNING);
    assert_int_equal(jobs_finish_error(s, id, 13, "x", NULL, 0), 0);

    /* ...and for jobs_stop, after which nothing is handed out or accepted. */
    assert_int_equal(pthread_create(&th, NULL, wait_for_job, s), 0);
    usleep(20 * 1000);
    jobs_stop(s);
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, ERR_UNAVAILABLE);
    assert_int_equal(jobs_submit(s, "y", 1, id, NULL, 0), ERR_UNAVAILABLE);
    jobs_close(s);
}

static void test_reopen_keeps_everything(void **state)
{
    struct fixture *f = *state;
    jobs_store *s = open_store(f, NULL);
    char id[6][JOBS_ID_SIZE], req[16], msg[256], *bytes;
    struct jobs_work w;
    struct jobs_info info;
    size_t len;

    for (int i = 0; i < 6; i++) {
        snprintf(req, sizeof(req), "req-%d", i);
        submit(s, req, id[i]);
    }
    w = take(s, id[0]);             /* 0: succeeds */
    finish_with(s, id[0], "result zero", 11);
    jobs_work_dispose(&w);
    w = take(s, id[1]);             /* 1: still running at close */
    jobs_work_dispose(&w);
    w = take(s, id[2]);             /* 2: fails */
    assert_int_equal(jobs_finish_error(s, id[2], 3, "bad", msg, sizeof(msg)), 0);
    jobs_work_dispose(&w);
    w = take(s, id[3]);             /* 3: running, cancel requested */
    assert_int_equal(jobs_cancel(s, id[3], msg, sizeof(msg)), 0);
    jobs_work_dispose(&w);
    jobs_close(s);                  /* 4 and 5 queued */

    s = open_store(f, NULL);
    assert_int_equal(state_of(s, id[0]), JOBS_SUCCEEDED);
    assert_int_equal(read_all(s, id[0], &bytes, &len), 0);
    assert_string_equal(bytes, "result zero");
    free(bytes);
    assert_int_equal(jobs_get(&info, s, id[2]), 0);
    assert_int_equal(info.state, JOBS_FAILED);
    assert_int_equal(info.error_code, 3);
    assert_string_equal(info.error_message, "bad");
    jobs_info_dispose(&info);
    assert_int_equal(state_of(s, id[3]), JOBS_CANCELLED);
    /* The interrupted job runs again, first, in submission order with the queued ones. */
    assert_int_equal(jobs_queue_position(s, id[1]), 1);
    assert_int_equal(jobs_queue_position(s, id[4]), 2);
    assert_int_equal(jobs_queue_position(s, id[5]), 3);
    w = take(s, id[1]);
    assert_int_equal(w.attempts, 2);
    assert_memory_equal(w.request, "req-1", 5);
    jobs_work_dispose(&w);

    /* Loaded finished jobs expire like any others. */
    assert_int_equal(jobs_expire(s, INT64_MAX), 3);
    assert_int_equal(jobs_get(&info, s, id[0]), ERR_NOT_FOUND);
    assert_int_equal(count_files(f->results, NULL), 0);
    jobs_close(s);
}

/* The child submits jobs and reports each id on the pipe only once jobs_submit has returned, as
 * the SubmitJob reply would; then it dies by SIGKILL in the middle of things. */
static void crash_child(struct fixture *f, int fd)
{
    struct jobs_options o = JOBS_OPTIONS_INIT;
    jobs_store *s = NULL;
    jobs_result *res = NULL;
    struct jobs_work w;
    char id[JOBS_ID_SIZE], req[32];

    o.spool_dir = f->spool;
    if (jobs_open(&s, &o, NULL, 0) != 0)
        _exit(2);
    for (int i = 0; i < 12; i++) {
        snprintf(req, sizeof(req), "crash-req-%02d", i);
        if (jobs_submit(s, req, strlen(req), id, NULL, 0) != 0)
            _exit(3);
        if (write(fd, id, JOBS_ID_LEN) != JOBS_ID_LEN)
            _exit(4);
    }
    /* Job 0 finishes with a result; job 1 is mid-way through writing one; job 2 just started. */
    if (jobs_next_queued(&w, s, 0, NULL, 0) != 0 || jobs_result_open(&res, s, w.id, NULL, 0) != 0 ||
        jobs_result_write(res, "complete result", 15) != 0 ||
        jobs_finish_ok(res, NULL, 0, "image/png", 1, 1, NULL, 0) != 0)
        _exit(5);
    jobs_result_free(res);
    if (jobs_next_queued(&w, s, 0, NULL, 0) != 0 || jobs_result_open(&res, s, w.id, NULL, 0) != 0 ||
        jobs_result_write(res, "half of a res", 13) != 0)
        _exit(6);
    if (jobs_next_queued(&w, s, 0, NULL, 0) != 0)
        _exit(7);
    kill(getpid(), SIGKILL);
    _exit(8);
}

static void test_crash_loses_nothing(void **state)
{
    struct fixture *f = *state;
    char ids[12][JOBS_ID_SIZE], path[512], *bytes;
    int fds[2], status;
    pid_t pid;
    size_t len;
    jobs_store *s;
    struct jobs_work w;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(f, fds[1]);
    }
    close(fds[1]);
    for (int i = 0; i < 12; i++) {
        size_t got = 0;

        while (got < JOBS_ID_LEN) {
            ssize_t n = read(fds[0], ids[i] + got, JOBS_ID_LEN - got);

            assert_true(n > 0);
            got += (size_t)n;
        }
        ids[i][JOBS_ID_LEN] = '\0';
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_int_equal(count_files(f->results, ".tmp"), 1);

    /* Strays the sweep must delete: a file named like a queued job's result (a rename that beat
     * its commit to the crash), one named like no job, and a temporary of no writer. */
    snprintf(path, sizeof(path), "%s/%s", f->results, ids[5]);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof(path), "%s/aaaaaaaaaaaaaaaaaaaaaaaaaa", f->results);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof(path), "%s/%s.99.tmp", f->results, ids[0]);
    fclose(fopen(path, "w"));

    s = open_store(f, NULL);
    assert_int_equal(state_of(s, ids[0]), JOBS_SUCCEEDED);
    assert_int_equal(read_all(s, ids[0], &bytes, &len), 0);
    assert_string_equal(bytes, "complete result");
    free(bytes);
    assert_int_equal(count_files(f->results, NULL), 1);
    /* Every other accepted job is queued again, in submission order. */
    for (int i = 1; i < 12; i++) {
        assert_int_equal(state_of(s, ids[i]), JOBS_QUEUED);
        assert_int_equal(jobs_queue_position(s, ids[i]), i);
        assert_int_equal(jobs_reader_open(&(jobs_reader *){NULL}, s, ids[i], NULL, 0), ERR_PRECONDITION);
    }
    w = take(s, ids[1]);
    assert_int_equal(w.attempts, 2);
    jobs_work_dispose(&w);
    jobs_close(s);
}

static void test_max_attempts(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    char id[JOBS_ID_SIZE];
    struct jobs_info info;
    struct jobs_work w;
    jobs_store *s;

    o.max_attempts = 2;
    s = open_store(f, &o);
    submit(s, "poison", id);
    for (int round = 0; round < 2; round++) {
        /* Closing with the job running stands in for the server dying during the render. */
        w = take(s, id);
        jobs_work_dispose(&w);
        jobs_close(s);
        s = open_store(f, &o);
    }
    assert_int_equal(jobs_get(&info, s, id), 0);
    assert_int_equal(info.state, JOBS_FAILED);
    assert_int_equal(info.error_code, JOBS_CODE_ABORTED);
    assert_non_null(strstr(info.error_message, "2 attempts"));
    jobs_info_dispose(&info);
    jobs_close(s);
}

static void test_retention(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    char a[JOBS_ID_SIZE], b[JOBS_ID_SIZE];
    struct jobs_info info;
    struct jobs_stats st;
    struct jobs_work w;
    jobs_store *s;

    o.retention_ms = 1000;
    s = open_store(f, &o);
    submit(s, "a", a);
    submit(s, "b", b);
    w = take(s, a);
    finish_with(s, a, "0123456789", 10);
    jobs_work_dispose(&w);
    assert_int_equal(jobs_cancel(s, b, NULL, 0), 0);
    assert_int_equal(jobs_get(&info, s, a), 0);
    assert_int_equal(info.expires_ms, info.finished_ms + 1000);
    assert_int_equal(jobs_expire(s, info.finished_ms + 500), 0);
    assert_int_equal(jobs_expire(s, info.finished_ms + 1000 + 50), 2);
    jobs_info_dispose(&info);
    assert_int_equal(jobs_get(&info, s, a), ERR_NOT_FOUND);
    assert_int_equal(jobs_get(&info, s, b), ERR_NOT_FOUND);
    assert_int_equal(count_files(f->results, NULL), 0);
    jobs_get_stats(&st, s);
    assert_int_equal(st.held, 0);
    assert_int_equal(st.spool_bytes, 0);
    jobs_close(s);

    /* Expired while the server was down: gone at open, file and all. */
    o.retention_ms = 1;
    s = open_store(f, &o);
    submit(s, "a", a);
    w = take(s, a);
    finish_with(s, a, "0123456789", 10);
    jobs_work_dispose(&w);
    jobs_close(s);
    usleep(10 * 1000);
    s = open_store(f, &o);
    assert_int_equal(jobs_get(&info, s, a), ERR_NOT_FOUND);
    assert_int_equal(count_files(f->results, NULL), 0);
    jobs_close(s);
}

static void test_disk_budget(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    char a[JOBS_ID_SIZE], b[JOBS_ID_SIZE], c[JOBS_ID_SIZE], msg[256] = "";
    static char big[600];
    struct jobs_work wa, wb;
    jobs_result *ra = NULL, *rb = NULL;
    struct jobs_info info;
    jobs_store *s;

    o.disk_budget = 1000;
    o.retention_ms = 1000;
    s = open_store(f, &o);
    submit(s, "a", a);
    submit(s, "b", b);
    wa = take(s, a);
    wb = take(s, b);
    assert_int_equal(jobs_result_open(&ra, s, a, NULL, 0), 0);
    assert_int_equal(jobs_result_open(&rb, s, b, NULL, 0), 0);
    assert_int_equal(jobs_result_write(ra, big, sizeof(big)), 0);
    /* Two writers together may not pass the budget. */
    assert_int_equal(jobs_result_write(rb, big, sizeof(big)), ERR_EXHAUSTED);
    assert_non_null(strstr(jobs_result_message(rb), "disk budget"));
    assert_int_equal(jobs_result_write(rb, big, 400), 0);
    assert_int_equal(jobs_finish_ok(ra, NULL, 0, "image/png", 1, 1, NULL, 0), 0);
    assert_int_equal(jobs_finish_ok(rb, NULL, 0, "image/png", 1, 1, NULL, 0), 0);
    jobs_result_free(ra);
    jobs_result_free(rb);
    jobs_work_dispose(&wa);
    jobs_work_dispose(&wb);

    assert_int_equal(jobs_submit(s, "c", 1, c, msg, sizeof(msg)), ERR_EXHAUSTED);
    assert_non_null(strstr(msg, "disk budget (1000 of 1000 bytes)"));
    assert_int_equal(jobs_get(&info, s, a), 0);
    assert_true(jobs_expire(s, info.expires_ms) >= 1);
    jobs_info_dispose(&info);
    assert_int_equal(jobs_submit(s, "c", 1, c, msg, sizeof(msg)), 0);
    jobs_close(s);
}

static void test_max_jobs(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    char id[4][JOBS_ID_SIZE], msg[256] = "";
    struct jobs_info info;
    jobs_store *s;

    o.max_jobs = 3;
    s = open_store(f, &o);
    for (int i = 0; i < 3; i++)
        submit(s, "r", id[i]);
    assert_int_equal(jobs_submit(s, "r", 1, id[3], msg, sizeof(msg)), ERR_EXHAUSTED);
    assert_non_null(strstr(msg, "holds 3 jobs"));
    assert_string_equal(id[3], "");
    /* A cancelled job is still held until it expires. */
    assert_int_equal(jobs_cancel(s, id[0], NULL, 0), 0);
    assert_int_equal(jobs_submit(s, "r", 1, id[3], msg, sizeof(msg)), ERR_EXHAUSTED);
    assert_int_equal(jobs_get(&info, s, id[0]), 0);
    assert_int_equal(jobs_expire(s, info.expires_ms), 1);
    jobs_info_dispose(&info);
    assert_int_equal(jobs_submit(s, "r", 1, id[3], msg, sizeof(msg)), 0);
    jobs_close(s);
}

static void test_damaged_results(void **state)
{
    struct fixture *f = *state;
    char id[5][JOBS_ID_SIZE], path[512], msg[256], *bytes;
    struct jobs_info info;
    struct jobs_work w;
    struct jobs_stats st;
    jobs_store *s = open_store(f, NULL);
    size_t len;
    FILE *fp;

    for (int i = 0; i < 5; i++) {
        submit(s, "r", id[i]);
        w = take(s, id[i]);
        finish_with(s, id[i], "abcdefghijklmnopqrstuvwxyz", 26);
        jobs_work_dispose(&w);
    }
    jobs_close(s);
    /* 0: deleted; 1: truncated; 2: same size, one byte changed; 3 and 4: untouched. */
    snprintf(path, sizeof(path), "%s/%s", f->results, id[0]);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/%s", f->results, id[1]);
    assert_int_equal(truncate(path, 10), 0);
    snprintf(path, sizeof(path), "%s/%s", f->results, id[2]);
    assert_non_null(fp = fopen(path, "r+"));
    fseek(fp, 25, SEEK_SET);
    fputc('Z', fp);
    fclose(fp);

    s = open_store(f, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jobs_get(&info, s, id[i]), 0);
        assert_int_equal(info.state, JOBS_FAILED);
        assert_int_equal(info.error_code, JOBS_CODE_DATA_LOSS);
        assert_non_null(strstr(info.error_message, i == 0 ? "missing" : "has 10 bytes"));
        jobs_info_dispose(&info);
    }
    /* Same size passes the store's open; the reader's open reads it all and refuses it before a
     * byte is handed out. */
    assert_int_equal(state_of(s, id[2]), JOBS_SUCCEEDED);
    assert_int_equal(jobs_reader_open(&(jobs_reader *){NULL}, s, id[2], msg, sizeof(msg)), ERR_DATA_LOSS);
    assert_non_null(strstr(msg, "damaged"));
    assert_int_equal(read_all(s, id[2], &bytes, &len), ERR_PRECONDITION);
    assert_int_equal(jobs_get(&info, s, id[2]), 0);
    assert_int_equal(info.state, JOBS_FAILED);
    assert_int_equal(info.error_code, JOBS_CODE_DATA_LOSS);
    assert_non_null(strstr(info.error_message, "damaged"));
    jobs_info_dispose(&info);
    assert_int_equal(read_all(s, id[3], &bytes, &len), 0);
    assert_string_equal(bytes, "abcdefghijklmnopqrstuvwxyz");
    free(bytes);
    /* Damaged after the reader's open checked it: the read that reaches the end refuses it. */
    {
        jobs_reader *r = NULL;
        char buf[32];
        size_t n = 0;
        assert_int_equal(jobs_reader_open(&r, s, id[3], msg, sizeof(msg)), 0);
        snprintf(path, sizeof(path), "%s/%s", f->results, id[3]);
        assert_non_null(fp = fopen(path, "r+"));
        fputc('Z', fp);
        fclose(fp);
        assert_int_equal(jobs_reader_read(r, buf, 10, &n, msg, sizeof(msg)), 0);
        assert_int_equal(n, 10);
        assert_int_equal(jobs_reader_read(r, buf, sizeof(buf), &n, msg, sizeof(msg)), ERR_DATA_LOSS);
        assert_non_null(strstr(msg, "damaged"));
        jobs_reader_free(r);
        assert_int_equal(state_of(s, id[3]), JOBS_FAILED);
    }
    /* Deleted under a running server: the reader's open finds it out. */
    snprintf(path, sizeof(path), "%s/%s", f->results, id[4]);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(jobs_reader_open(&(jobs_reader *){NULL}, s, id[4], msg, sizeof(msg)), ERR_DATA_LOSS);
    assert_int_equal(state_of(s, id[4]), JOBS_FAILED);
    jobs_get_stats(&st, s);
    assert_int_equal(st.spool_bytes, 0);
    assert_int_equal(st.failed, 5);
    jobs_close(s);
}

/* Four threads: two submit and poll, two work. Each result is the job's id, checked afterwards. */
#define THREAD_JOBS 60

struct shared {
    jobs_store *store;
    atomic_int finished;
    char ids[2][THREAD_JOBS][JOBS_ID_SIZE];
};

static void *submitter(void *arg)
{
    struct shared *sh = ((void **)arg)[0];
    int k = (int)(intptr_t)((void **)arg)[1];
    struct jobs_info info, *list;
    size_t n;

    for (int i = 0; i < THREAD_JOBS; i++) {
        char req[32];

        snprintf(req, sizeof(req), "t%d-%d", k, i);
        if (jobs_submit(sh->store, req, strlen(req), sh->ids[k][i], NULL, 0) != 0)
            return (void *)1;
        if (jobs_get(&info, sh->store, sh->ids[k][i]) != 0)
            return (void *)2;
        jobs_info_dispose(&info);
        if (jobs_list(&list, &n, sh->store, JOBS_ANY, 10) != 0)
            return (void *)3;
        jobs_info_free_array(list, n);
        if (i % 10 == 0) {
            struct jobs_stats st;

            jobs_get_stats(&st, sh->store);
        }
    }
    return NULL;
}

static void *worker(void *arg)
{
    struct shared *sh = arg;

    while (atomic_load(&sh->finished) < 2 * THREAD_JOBS) {
        struct jobs_work w;
        jobs_result *r = NULL;

        if (jobs_next_queued(&w, sh->store, 20, NULL, 0) != 0)
            continue;
        jobs_progress(sh->store, w.id, 1, 2, 100);
        /* Every fifth job fails, the rest write their id as the result. */
        char last = ((const char *)w.request)[w.request_len - 1];

        if (last == '0' || last == '5') {
            if (jobs_finish_error(sh->store, w.id, 13, "planned", NULL, 0) != 0)
                return (void *)1;
        } else if (jobs_result_open(&r, sh->store, w.id, NULL, 0) != 0 ||
                   jobs_result_write(r, w.id, JOBS_ID_LEN) != 0 ||
                   jobs_finish_ok(r, w.request, w.request_len, "application/octet-stream", 1, 1, NULL, 0) != 0) {
            return (void *)2;
        }
        jobs_result_free(r);
        jobs_work_dispose(&w);
        atomic_fetch_add(&sh->finished, 1);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    struct jobs_options o = JOBS_OPTIONS_INIT;
    static struct shared sh;
    pthread_t th[4];
    void *args[2][2], *ret;
    struct jobs_stats st;

    /* NORMAL keeps 240 commits fast; the locking under test is the same. */
    o.sync_full = false;
    memset(&sh, 0, sizeof(sh));
    sh.store = open_store(f, &o);
    for (int k = 0; k < 2; k++) {
        args[k][0] = &sh;
        args[k][1] = (void *)(intptr_t)k;
        assert_int_equal(pthread_create(&th[k], NULL, submitter, args[k]), 0);
        assert_int_equal(pthread_create(&th[2 + k], NULL, worker, &sh), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], &ret);
        assert_null(ret);
    }
    jobs_get_stats(&st, sh.store);
    assert_int_equal(st.held, 2 * THREAD_JOBS);
    assert_int_equal(st.succeeded + st.failed, 2 * THREAD_JOBS);
    assert_true(st.failed > 0 && st.succeeded > 0);
    assert_int_equal(st.spool_bytes, (uint64_t)st.succeeded * JOBS_ID_LEN);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < THREAD_JOBS; i++) {
            struct jobs_info info;
            char *bytes;
            size_t len;

            assert_int_equal(jobs_get(&info, sh.store, sh.ids[k][i]), 0);
            if (info.state == JOBS_SUCCEEDED) {
                assert_int_equal(read_all(sh.store, sh.ids[k][i], &bytes, &len), 0);
                assert_string_equal(bytes, sh.ids[k][i]);
                free(bytes);
            } else {
                assert_int_equal(info.state, JOBS_FAILED);
            }
            jobs_info_dispose(&info);
        }
    jobs_close(sh.store);
}

int test_jobs_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_and_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_queued_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };

    return cmocka_run_group_tests_name("jobs", tests, group_setup, group_teardown);
}
