/* fuzz_journal.c: the job store's load of its journal: rows of <spool>/jobs.db made from the input
 * (every column: ids well formed or not, any state, counts, times, sizes and CRCs, request and
 * stats blobs, with or without a result file), then jobs_open, which decodes each row
 * (jobs_journal.c, job_from_row) and recovers it (jobs.c, recover_job), and what the server does
 * with the jobs it loaded: GetJob / ListJobs (unpack the stored request and stats, pack the Job),
 * FetchJobResult (read the result and check its CRC), a worker taking the next job, expiry.
 *
 * The input is read as a sequence of fields; when it runs out, the rest are zero. The database
 * starts from one jobs_open made (the real schema), copied in before each run. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "fuzz_util.h"
#include "jobs.h"
#include "log.h"

static char spool[PATH_MAX], results[PATH_MAX + 16], db_path[PATH_MAX + 16];
static uint8_t *template_db;
static size_t template_len;

/* ---- reading the input ---- */

struct input {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t u64(struct input *in, unsigned bytes)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | u8(in);
    return v;
}

/* A length-prefixed run of at most max bytes, borrowed from the input. */
static const uint8_t *span(struct input *in, size_t max, size_t *len)
{
    const uint8_t *p = in->p;

    *len = u8(in);
    if (*len > max)
        *len = max;
    if (*len > in->n)
        *len = in->n;
    p = in->p;
    in->p += *len;
    in->n -= *len;
    return p;
}

/* A time: raw, or near now (the recovery rules compare expiry with the clock). */
static int64_t when(struct input *in, int64_t now)
{
    uint8_t how = u8(in);

    switch (how % 4) {
    case 0:
        return 0;
    case 1:
        return now - (int64_t)u64(in, 3);
    case 2:
        return now + (int64_t)u64(in, 3) * 1000;
    default:
        return (int64_t)u64(in, 8);
    }
}

/* ---- the spool ---- */

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    const uint8_t *p = data;

    if (fd < 0)
        abort();
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            abort();
        p += n;
        len -= (size_t)n;
    }
    close(fd);
}

/* Empties the spool but for its lock file: the database, its WAL and every result. */
static void clear_spool(void)
{
    char path[PATH_MAX * 2];
    DIR *d;
    struct dirent *e;

    for (const char *const *suffix = (const char *const[]){"", "-wal", "-shm", NULL}; *suffix; suffix++) {
        snprintf(path, sizeof(path), "%s%s", db_path, *suffix);
        unlink(path);
    }
    if ((d = opendir(results))) {
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') {
                snprintf(path, sizeof(path), "%s/%s", results, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
}

static void remove_spool(void)
{
    char path[PATH_MAX + 16];

    clear_spool();
    rmdir(results);
    snprintf(path, sizeof(path), "%s/lock", spool);
    unlink(path);
    rmdir(spool);
}

static jobs_store *open_store(uint32_t max_attempts, char *msg, size_t msglen, int *err)
{
    struct jobs_options opts = JOBS_OPTIONS_INIT;
    jobs_store *s = NULL;

    opts.spool_dir = spool;
    opts.max_attempts = max_attempts;
    opts.sync_full = false;
    opts.max_jobs = 64;
    opts.disk_budget = 1 << 20;
    *err = jobs_open(&s, &opts, msg, msglen);
    return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");
    char msg[512];
    struct stat st;
    jobs_store *s;
    FILE *f;
    int err;

    (void)argc;
    (void)argv;
    log_min_level = LOG_OFF;
    /* Memory-backed when there is /dev/shm: each run writes a small database and a few files. */
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        tmp = "/dev/shm";
    snprintf(spool, sizeof(spool), "%s/fractald-fuzz-journal-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(spool))
        abort();
    snprintf(results, sizeof(results), "%s/results", spool);
    snprintf(db_path, sizeof(db_path), "%s/jobs.db", spool);
    atexit(remove_spool);

    /* The template: the database of an empty store, as jobs_open creates it. */
    if (!(s = open_store(3, msg, sizeof(msg), &err)))
        FUZZ_CHECK(0, "jobs_open on an empty spool: %s", msg);
    jobs_close(s);
    if (!(f = fopen(db_path, "rb")) || fseek(f, 0, SEEK_END) != 0 || (template_len = (size_t)ftell(f)) == 0)
        abort();
    rewind(f);
    if (!(template_db = malloc(template_len)) || fread(template_db, 1, template_len, f) != template_len)
        abort();
    fclose(f);
    return 0;
}

/* ---- one run ---- */

static const char base32[] = "abcdefghijklmnopqrstuvwxyz234567";

/* Inserts one row made from the input; rows the schema refuses (a seq or id already taken) are
 * skipped, as they could not be in the journal. Writes the row's result file when asked. */
static void insert_row(sqlite3_stmt *st, struct input *in, int64_t now, int row)
{
    uint8_t flags = u8(in);
    char id[64];
    const uint8_t *p;
    size_t len;
    int64_t result_bytes;

    if (flags & 1) {
        /* A well-formed id, from 26 input bytes. */
        for (int i = 0; i < 26; i++)
            id[i] = base32[u8(in) & 31];
        id[26] = '\0';
    } else {
        p = span(in, 40, &len);
        memcpy(id, p, len);
        id[len] = '\0';
    }
    sqlite3_bind_int64(st, 1, flags & 2 ? (int64_t)u64(in, 8) : row + 1);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, flags & 4 ? (int64_t)u64(in, 4) : (int8_t)u8(in));
    p = span(in, 255, &len);
    sqlite3_bind_blob(st, 4, len ? (const void *)p : "", (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, when(in, now));
    sqlite3_bind_int64(st, 6, when(in, now));
    sqlite3_bind_int64(st, 7, when(in, now));
    sqlite3_bind_int64(st, 8, when(in, now));
    sqlite3_bind_int64(st, 9, flags & 8 ? (int64_t)u64(in, 8) : u8(in) % 8);
    sqlite3_bind_int64(st, 10, u8(in) % 3);
    sqlite3_bind_int64(st, 11, (int32_t)u64(in, 4));
    p = span(in, 80, &len);
    sqlite3_bind_text(st, 12, (const char *)p, (int)len, SQLITE_TRANSIENT);
    if (flags & 16) {
        p = span(in, 255, &len);
        sqlite3_bind_blob(st, 13, len ? (const void *)p : "", (int)len, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_null(st, 13);
    }
    p = span(in, 80, &len);
    sqlite3_bind_text(st, 14, (const char *)p, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 15, (int64_t)u64(in, flags & 8 ? 8 : 2));
    sqlite3_bind_int64(st, 16, (int64_t)u64(in, flags & 8 ? 8 : 2));
    result_bytes = flags & 8 ? (int64_t)u64(in, 8) : (int64_t)u64(in, 1);
    sqlite3_bind_int64(st, 17, result_bytes);
    sqlite3_bind_int64(st, 18, (int64_t)u64(in, flags & 8 ? 8 : 4));
    if (sqlite3_step(st) == SQLITE_DONE && (flags & 32) && (flags & 1)) {
        /* A result file: of the recorded size (bytes from the input, zeros past them), or not. */
        char path[PATH_MAX * 2];
        uint8_t body[256] = {0};
        size_t size = flags & 64 ? (size_t)(result_bytes & 0xff) : u8(in);

        p = span(in, sizeof(body), &len);
        memcpy(body, p, len);
        snprintf(path, sizeof(path), "%s/%s", results, id);
        write_file(path, body, size);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void make_journal(struct input *in, int64_t now)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rows = 1 + u8(in) % 4;

    write_file(db_path, template_db, template_len);
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA synchronous=OFF; BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO jobs(seq, id, state, request, created_ms, started_ms, finished_ms,"
                           " expires_ms, attempts, cancel_requested, error_code, error_message, stats,"
                           " content_type, width, height, result_bytes, result_crc)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                           -1, &st, NULL) != SQLITE_OK)
        FUZZ_CHECK(0, "cannot write the journal: %s", db ? sqlite3_errmsg(db) : "open failed");
    for (int i = 0; i < rows; i++)
        insert_row(st, in, now, i);
    sqlite3_finalize(st);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        abort();
    sqlite3_close(db);
}

/* GetJob and ListJobs: the stored request and stats are unpacked into the Job reply (rpc_jobs.c,
 * job_msg_init), which is packed. */
static void reply_job(const struct jobs_info *info)
{
    Fractal__V1__Job job = FRACTAL__V1__JOB__INIT;
    Fractal__V1__RenderRequest *req = NULL;
    Fractal__V1__RenderStats *stats = NULL;
    uint8_t *buf;
    size_t len;

    FUZZ_CHECK(info->state >= JOBS_QUEUED && info->state <= JOBS_CANCELLED, "a loaded job is in state %d",
               (int)info->state);
    FUZZ_CHECK(info->error_message != NULL, "a loaded job has no error message");
    FUZZ_CHECK(memchr(info->content_type, 0, sizeof(info->content_type)) != NULL, "content type not terminated");
    if (info->request)
        req = (Fractal__V1__RenderRequest *)protobuf_c_message_unpack(&fractal__v1__render_request__descriptor, NULL,
                                                                     info->request_len, info->request);
    if (info->stats)
        stats = (Fractal__V1__RenderStats *)protobuf_c_message_unpack(&fractal__v1__render_stats__descriptor, NULL,
                                                                     info->stats_len, info->stats);
    job.id = (char *)info->id;
    job.state = (Fractal__V1__JobState)info->state;
    job.request = req;
    job.stats = stats;
    job.error_code = info->error_code;
    job.error_message = info->error_message;
    job.created_unix_ms = info->created_ms;
    job.expires_unix_ms = info->expires_ms;
    job.result_bytes = info->result_bytes;
    job.content_type = (char *)info->content_type;
    job.width = info->width;
    job.height = info->height;
    len = protobuf_c_message_get_packed_size(&job.base);
    if (!(buf = malloc(len ? len : 1)))
        abort();
    FUZZ_CHECK(protobuf_c_message_pack(&job.base, buf) == len, "the Job packs to another size");
    free(buf);
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
    if (stats)
        protobuf_c_message_free_unpacked(&stats->base, NULL);
}

/* FetchJobResult: reads the whole result; the CRC check fails the last read of a damaged one. */
static void fetch(jobs_store *s, const struct jobs_info *info)
{
    jobs_reader *r = NULL;
    char msg[512], buf[97];
    size_t n, total = 0;
    int err;

    if (jobs_reader_open(&r, s, info->id, msg, sizeof(msg)) < 0)
        return;
    FUZZ_CHECK(jobs_reader_size(r) == info->result_bytes, "the reader's size is not the recorded one");
    while ((err = jobs_reader_read(r, buf, sizeof(buf), &n, msg, sizeof(msg))) == 0 && n > 0)
        total += n;
    FUZZ_CHECK(err < 0 || total == info->result_bytes, "read %zu bytes of a %llu-byte result", total,
               (unsigned long long)info->result_bytes);
    jobs_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    int64_t now;
    jobs_store *s;
    struct jobs_info *infos = NULL, one;
    struct jobs_stats st;
    struct jobs_work work;
    size_t count = 0;
    char msg[1024];
    uint32_t max_attempts;
    int err;

    clear_spool();
    max_attempts = u8(&in) % 4;
    now = (int64_t)time(NULL) * 1000;
    make_journal(&in, now);

    msg[0] = '\0';
    s = open_store(max_attempts, msg, sizeof(msg), &err);
    /* Every row the schema takes is loaded, repaired or dropped: the store opens, unless a row
     * holds the largest seq, which leaves no seq for the next job (refused as damaged). */
    if (err == ERR_IO && strstr(msg, "the largest there can be"))
        return 0;
    FUZZ_CHECK(err == 0 && s, "jobs_open: %d: %s", err, msg);

    jobs_get_stats(&st, s);
    FUZZ_CHECK(st.held == st.queued + st.running + st.succeeded + st.failed + st.cancelled,
               "held %u is not the sum of the states", st.held);
    FUZZ_CHECK(st.running == 0, "%u jobs RUNNING right after open", st.running);
    FUZZ_CHECK(jobs_list(&infos, &count, s, JOBS_ANY, 0) == 0, "jobs_list failed");
    FUZZ_CHECK(count == st.held, "jobs_list lists %zu of %u jobs", count, st.held);
    for (size_t i = 0; i < count; i++) {
        reply_job(&infos[i]);
        FUZZ_CHECK(jobs_get(&one, s, infos[i].id) == 0, "a listed job is not found");
        jobs_info_dispose(&one);
        if (infos[i].state == JOBS_SUCCEEDED)
            fetch(s, &infos[i]);
    }
    jobs_info_free_array(infos, count);

    /* A worker takes the next job and ends it in one of the ways rpc_jobs_run does. */
    if (jobs_next_queued(&work, s, 0, msg, sizeof(msg)) == 0) {
        uint8_t how = u8(&in) % 3;
        if (how == 0)
            err = jobs_requeue(s, work.id, msg, sizeof(msg));
        else
            err = jobs_finish_error(s, work.id, how == 1 ? 1 : 13, "fuzz", msg, sizeof(msg));
        FUZZ_CHECK(err == 0, "ending a job: %s", msg);
        jobs_work_dispose(&work);
    }
    err = jobs_expire(s, now + (int64_t)u64(&in, 4) * 1000);
    FUZZ_CHECK(err >= 0, "jobs_expire: %d", err);
    jobs_close(s);
    return 0;
}
