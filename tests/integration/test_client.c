/* test_client.c: libfractal against a real fractald over gRPC: the server's bytes equal an
 * in-process render of the same spec, files and --from round trips, error mapping, devices,
 * health, deadlines and an absent server; streamed images equal unary ones byte for byte, progress,
 * cancellation from a callback and from another thread, the submit-poll-fetch flow, NOT_FOUND,
 * job cancel, ListJobs, GetStats, and retries on RESOURCE_EXHAUSTED with the server's hint.
 *   integration_tests [FILTER]   runs the tests whose name matches FILTER (a cmocka glob). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devices.h"
#include "err.h"
#include "fractal/fractal.h"
#include "render.h"
#include "request.h"
#include "server_proc.h"

static struct server_proc server;
static fractal_client *client;
static char spool_dir[] = "/tmp/fractald-test-spool-XXXXXX";

static int start_server(void **state)
{
    const char *args[] = {"--spool-dir", spool_dir, NULL};
    (void)state;
    if (mkdtemp(spool_dir) == NULL)
        return -1;
    if (server_proc_start(&server, FRACTALD_BIN, args) != 0)
        return -1;
    return fractal_client_new(&client, server.target, NULL) == 0 ? 0 : -1;
}

static int stop_server(void **state)
{
    char cmd[128];
    int rc;
    (void)state;
    fractal_client_free(client);
    rc = server_proc_stop(&server);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool_dir);
    if (system(cmd) != 0)
        return -1;
    return rc == 0 ? 0 : -1;
}

struct buffer {
    unsigned char *data;
    size_t len;
};

static int buffer_sink(void *ctx, const void *data, size_t len)
{
    struct buffer *b = ctx;
    b->data = realloc(b->data, b->len + len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Renders in this process exactly what fractald renders for an empty request. */
static struct buffer render_in_process(void)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    struct config cfg;
    struct devices devs;
    struct render_spec spec;
    struct render_stats st;
    struct buffer out = {0};
    engine_cpu *engine = NULL;
    char msg[512], *json = NULL;
    int dev;

    config_defaults(&cfg);
    assert_int_equal(engine_cpu_new(&engine, 2), 0);
    assert_int_equal(devices_init(&devs, 2), 0);
    assert_int_equal(request_to_spec(&spec, &dev, &req, &cfg.limits, &devs, false, msg, sizeof(msg)), 0);
    assert_int_equal(request_json_from_spec(&json, &spec), 0);
    {
        struct render_cpu cpu = {engine, NULL};
        struct render_io io = {render_compute_cpu, &cpu, buffer_sink, &out, NULL, NULL, NULL, 0};
        assert_int_equal(render_run(&st, &io, &spec, json, msg, sizeof(msg)), 0);
    }
    free(json);
    devices_dispose(&devs);
    engine_cpu_free(engine);
    return out;
}

static void default_render_matches_in_process_render(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_image *img = NULL;
    struct buffer expected;
    (void)state;

    assert_int_equal(fractal_render(&img, client, &opts), 0);
    assert_string_equal(img->content_type, "image/png");
    assert_int_equal(img->width, 600);
    assert_int_equal(img->height, 400);
    assert_int_equal(img->stats.precision, FRACTAL_PRECISION_FP32);
    assert_int_equal(img->stats.samples, 600 * 400);
    expected = render_in_process();
    assert_int_equal(img->size, expected.len);
    assert_memory_equal(img->data, expected.data, expected.len);
    free(expected.data);
    fractal_image_free(img);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return data;
}

static void file_and_from_png_round_trip(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT, back;
    char dir[] = "/tmp/fractald-test-XXXXXX", a[256], b[256], err[256];
    char *da, *db;
    size_t la, lb;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/a.png", dir);
    snprintf(b, sizeof(b), "%s/b.png", dir);
    opts.kind = FRACTAL_KIND_MANDELBROT;
    opts.width = 160;
    opts.height = 100;
    opts.max_iter = 300;
    opts.supersample = 2;
    opts.center.re = -0.5;
    snprintf(opts.palette, sizeof(opts.palette), "magma");
    assert_int_equal(fractal_render_to_file(client, &opts, a), 0);
    assert_int_equal(fractal_render_options_from_png(&back, a, err, sizeof(err)), 0);
    assert_int_equal(back.kind, FRACTAL_KIND_MANDELBROT);
    assert_int_equal(back.width, 160);
    assert_int_equal(back.supersample, 2);
    assert_true(back.center.re == -0.5);
    assert_int_equal(fractal_render_to_file(client, &back, b), 0);
    da = read_file(a, &la);
    db = read_file(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
    unlink(a);
    unlink(b);
    rmdir(dir);
}

/* Version 3's deep view: text past what doubles hold goes out exactly, comes back from the PNG,
 * and renders the same bytes again; older structs never read it. */
static void deep_view_text_round_trip(void **state)
{
    fractal_render_options *opts = malloc(sizeof(*opts)), *back = malloc(sizeof(*back)), *v2 = malloc(sizeof(*v2));
    fractal_stream_result *again = NULL;
    fractal_image *img = NULL;
    char dir[] = "/tmp/fractald-test-XXXXXX", a[256], b[256], err[256];
    char *da, *db;
    size_t la, lb;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/deep.png", dir);
    snprintf(b, sizeof(b), "%s/again.png", dir);
    assert_int_equal(fractal_render_options_init(opts, FRACTAL_RENDER_OPTIONS_VERSION), 0);
    assert_string_equal(opts->view_width_text, "");
    opts->kind = FRACTAL_KIND_MANDELBROT;
    opts->width = 64;
    opts->height = 40;
    opts->max_iter = 40000;
    snprintf(opts->center_re_text, sizeof(opts->center_re_text), "-0.743643887037158704752191506114774");
    snprintf(opts->center_im_text, sizeof(opts->center_im_text), "0.131825904205311970493132056385139");
    snprintf(opts->view_width_text, sizeof(opts->view_width_text), "2.5e-25");
    assert_int_equal(fractal_render(&img, client, opts), 0);
    assert_int_equal(img->stats.precision, FRACTAL_PRECISION_PERTURB);
    assert_int_equal(fractal_image_save(img, a, err, sizeof(err)), 0);
    assert_int_equal(fractal_render_options_from_png(back, a, err, sizeof(err)), 0);
    assert_string_equal(back->center_re_text, opts->center_re_text);
    assert_string_equal(back->center_im_text, opts->center_im_text);
    assert_string_equal(back->view_width_text, "2.5e-25");
    assert_int_equal(back->precision, FRACTAL_PRECISION_AUTO);
    /* Streamed, so the server computes it again rather than answering from its image cache. */
    assert_int_equal(fractal_render_stream_to_file(&again, client, back, b, NULL, NULL), 0);
    assert_int_equal(again->stats.precision, FRACTAL_PRECISION_PERTURB);
    da = read_file(a, &la);
    db = read_file(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
    fractal_stream_result_free(again);
    fractal_image_free(img);

    /* A version 2 struct ends before the text: whatever lies beyond is not read. */
    memset(v2, 0x7f, sizeof(*v2));
    assert_int_equal(fractal_render_options_init(v2, 2), 0);
    assert_int_equal(v2->version, 2);
    assert_int_equal((unsigned char)v2->center_re_text[0], 0x7f);
    v2->width = v2->height = 16;
    img = NULL;
    assert_int_equal(fractal_render(&img, client, v2), 0);
    assert_int_equal(img->stats.precision, FRACTAL_PRECISION_FP32);
    fractal_image_free(img);
    unlink(a);
    unlink(b);
    rmdir(dir);
    free(opts);
    free(back);
    free(v2);
}

static void server_refusal_maps_to_code_and_message(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_image *img = NULL;
    (void)state;

    opts.width = 0;
    assert_int_equal(fractal_render(&img, client, &opts), FRACTAL_EINVALID_ARGUMENT);
    assert_null(img);
    assert_string_equal(fractal_client_last_error(client), "width must be 1..65536, got 0");
    opts = (fractal_render_options)FRACTAL_RENDER_OPTIONS_INIT;
    opts.max_iter = 10000000;
    opts.width = opts.height = 20000;
    assert_int_equal(fractal_render(&img, client, &opts), FRACTAL_ERESOURCE_EXHAUSTED);
    /* The handle still works after a refusal. */
    opts = (fractal_render_options)FRACTAL_RENDER_OPTIONS_INIT;
    opts.width = 8;
    opts.height = 8;
    assert_int_equal(fractal_render(&img, client, &opts), 0);
    fractal_image_free(img);
}

static void devices_and_health(void **state)
{
    fractal_device_list *list = NULL;
    fractal_health_status health;
    int found = 0;
    (void)state;

    assert_int_equal(fractal_list_devices(&list, client), 0);
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->devices[i].id, "cpu") == 0) {
            found = 1;
            assert_int_equal(list->devices[i].type, FRACTAL_DEVICE_CPU);
            assert_true(list->devices[i].enabled);
            assert_string_equal(list->devices[i].status, "ok");
        }
    assert_true(found);
    fractal_device_list_free(list);
    assert_int_equal(fractal_health_check(&health, client, ""), 0);
    assert_int_equal(health, FRACTAL_HEALTH_SERVING);
    assert_int_equal(fractal_health_check(&health, client, "no.such.Service"), FRACTAL_ENOT_FOUND);
}

static void deadline_is_reported(void **state)
{
    fractal_client_options copts = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_client *quick = NULL;
    fractal_image *img = NULL;
    (void)state;

    copts.deadline_ms = 200;
    assert_int_equal(fractal_client_new(&quick, server.target, &copts), 0);
    opts.width = opts.height = 8000;
    opts.max_iter = 3000;
    opts.view_width = 0.01;
    assert_int_equal(fractal_render(&img, quick, &opts), FRACTAL_EDEADLINE);
    fractal_client_free(quick);
}

static void absent_server_is_unavailable(void **state)
{
    fractal_client_options copts = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_health_status health;
    fractal_client *nobody = NULL;
    int rc;
    (void)state;

    copts.deadline_ms = 2000;
    /* Port 1 on loopback: nothing listens there. */
    assert_int_equal(fractal_client_new(&nobody, "127.0.0.1:1", &copts), 0);
    rc = fractal_health_check(&health, nobody, "");
    assert_true(rc == FRACTAL_EUNAVAILABLE || rc == FRACTAL_EDEADLINE);
    fractal_client_free(nobody);
}

/* ---- streaming ------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What a stream's callbacks saw. */
struct collected {
    struct buffer image;
    unsigned chunks;
    unsigned progress_calls;
    uint32_t last_rows, rows_total;
    int rows_went_back;
    int cancel_at_rows;        /* > 0: the progress callback cancels once rows reach it */
};

static int collect_chunk(const fractal_chunk *chunk, void *payload)
{
    struct collected *c = payload;
    assert_int_equal(chunk->offset, c->image.len);
    assert_true(chunk->size <= (1u << 20));
    c->chunks++;
    return buffer_sink(&c->image, chunk->data, chunk->size);
}

static int collect_progress(const fractal_progress *p, void *payload)
{
    struct collected *c = payload;
    c->progress_calls++;
    if (p->rows_done < c->last_rows)
        c->rows_went_back = 1;
    c->last_rows = p->rows_done;
    if (p->rows_total)
        c->rows_total = p->rows_total;
    return c->cancel_at_rows > 0 && p->rows_done >= (uint32_t)c->cancel_at_rows;
}

static fractal_image *render_unary(const fractal_render_options *opts)
{
    fractal_image *img = NULL;
    assert_int_equal(fractal_render(&img, client, opts), 0);
    return img;
}

static void assert_stream_equals_unary(const fractal_render_options *opts)
{
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_stream_result *res = NULL;
    struct collected got = {0};
    fractal_image *img = render_unary(opts);

    cbs.write = collect_chunk;
    cbs.progress = collect_progress;
    cbs.payload = &got;
    assert_int_equal(fractal_render_stream(&res, client, opts, &cbs), 0);
    assert_int_equal(got.image.len, img->size);
    assert_memory_equal(got.image.data, img->data, img->size);
    assert_int_equal(res->size, img->size);
    assert_int_equal(res->width, img->width);
    assert_int_equal(res->height, img->height);
    assert_string_equal(res->content_type, img->content_type);
    assert_int_equal(res->stats.samples, img->stats.samples);
    assert_int_equal(res->stats.iterations, img->stats.iterations);
    /* Progress: called, rows never go back, and the last report is the whole image. */
    assert_true(got.progress_calls > 0);
    assert_false(got.rows_went_back);
    assert_int_equal(got.rows_total, img->height);
    assert_int_equal(got.last_rows, img->height);
    free(got.image.data);
    fractal_stream_result_free(res);
    fractal_image_free(img);
}

static void stream_equals_unary_byte_for_byte(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    (void)state;

    assert_stream_equals_unary(&opts);
    opts.kind = FRACTAL_KIND_MANDELBROT;
    opts.width = 1500;
    opts.height = 1100;
    opts.max_iter = 200;
    opts.center.re = -0.5;
    assert_stream_equals_unary(&opts);
    opts.format = FRACTAL_FORMAT_RAW_F32;
    opts.has_region = 1;
    opts.region = (fractal_region){100, 50, 700, 500};
    assert_stream_equals_unary(&opts);
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void stream_to_file_equals_unary(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_stream_result *res = NULL;
    struct collected got = {0};
    char dir[] = "/tmp/fractald-test-XXXXXX", path[256];
    fractal_image *img;
    char *data;
    size_t len;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s.png", dir);
    opts.width = 2400;
    opts.height = 1800; /* 4.3 MB of pixels: several chunks */
    opts.max_iter = 64;
    img = render_unary(&opts);
    assert_int_equal(fractal_render_stream_to_file(&res, client, &opts, path, collect_progress, &got), 0);
    data = read_file(path, &len);
    assert_int_equal(len, img->size);
    assert_memory_equal(data, img->data, len);
    assert_int_equal(res->size, len);
    assert_int_equal(got.last_rows, 1800);
    assert_int_equal(dir_entries(dir), 1); /* no temporary file left */
    free(data);
    fractal_stream_result_free(res);
    fractal_image_free(img);

    /* A progress callback that says stop: ECANCELLED, and the file is neither made nor left. */
    memset(&got, 0, sizeof(got));
    got.cancel_at_rows = 1;
    snprintf(path, sizeof(path), "%s/c.png", dir);
    assert_int_equal(fractal_render_stream_to_file(NULL, client, &opts, path, collect_progress, &got),
                     FRACTAL_ECANCELLED);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(dir_entries(dir), 1);
    /* The handle still works. */
    opts.width = opts.height = 16;
    assert_int_equal(fractal_render_stream_to_file(NULL, client, &opts, path, NULL, NULL), 0);
    unlink(path);
    snprintf(path, sizeof(path), "%s/s.png", dir);
    unlink(path);
    rmdir(dir);
}

static void stream_refusal_maps_to_code(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_stream_result *res = NULL;
    struct collected got = {0};
    (void)state;

    cbs.write = collect_chunk;
    cbs.payload = &got;
    opts.width = 0;
    assert_int_equal(fractal_render_stream(&res, client, &opts, &cbs), FRACTAL_EINVALID_ARGUMENT);
    assert_null(res);
    assert_string_equal(fractal_client_last_error(client), "width must be 1..65536, got 0");
    assert_int_equal(got.image.len, 0);
    cbs.write = NULL;
    assert_int_equal(fractal_render_stream(&res, client, &opts, &cbs), FRACTAL_EINVAL);
}

/* A render costing many seconds: 8000 x 8000 of workload B's deep view, where every pixel escapes
 * after about 1100 iterations (fp64), so no interior shortcut makes it short. */
static void huge_render(fractal_render_options *opts)
{
    *opts = (fractal_render_options)FRACTAL_RENDER_OPTIONS_INIT;
    opts->width = opts->height = 8000;
    opts->max_iter = 3000;
    opts->center.re = 0.17304;
    opts->center.im = 0.23854;
    opts->view_width = 0.0005;
}

struct canceller {
    fractal_client *client;
    unsigned delay_ms;
    double cancelled_at;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    usleep(c->delay_ms * 1000u);
    c->cancelled_at = now_s();
    fractal_client_cancel(c->client);
    return NULL;
}

static int discard_chunk(const fractal_chunk *chunk, void *payload)
{
    (void)chunk;
    (void)payload;
    return 0;
}

static void cancel_from_another_thread(void **state)
{
    fractal_client_options copts = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_render_options opts;
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_client *own = NULL;
    struct canceller c = {NULL, 300, 0};
    pthread_t thread;
    double t0, took;
    (void)state;

    copts.deadline_ms = 0;
    assert_int_equal(fractal_client_new(&own, server.target, &copts), 0);
    /* Nothing in flight: a cancel does nothing, and does not carry over. */
    fractal_client_cancel(own);
    assert_int_equal(fractal_health_check(&(fractal_health_status){0}, own, ""), 0);

    huge_render(&opts);
    cbs.write = discard_chunk;
    c.client = own;
    t0 = now_s();
    assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
    assert_int_equal(fractal_render_stream(NULL, own, &opts, &cbs), FRACTAL_ECANCELLED);
    took = now_s() - c.cancelled_at;
    pthread_join(thread, NULL);
    assert_true(c.cancelled_at - t0 >= 0.29);
    assert_true(took < 0.5); /* the client side returns at once; the server has its own bound */

    /* The unary path too, and the handle works afterwards. */
    c.cancelled_at = 0;
    assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
    assert_int_equal(fractal_render(&(fractal_image *){NULL}, own, &opts), FRACTAL_ECANCELLED);
    pthread_join(thread, NULL);
    assert_true(now_s() - c.cancelled_at < 0.5);
    assert_int_equal(fractal_health_check(&(fractal_health_status){0}, own, ""), 0);
    fractal_client_free(own);
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static void submit_wait_fetch_equals_unary(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_stream_result *res = NULL;
    fractal_job *job = NULL, *done = NULL, *again = NULL;
    struct collected got = {0};
    char dir[] = "/tmp/fractald-test-XXXXXX", path[256], *data;
    fractal_image *img;
    size_t len;
    (void)state;

    opts.kind = FRACTAL_KIND_MANDELBROT;
    opts.width = 900;
    opts.height = 700;
    opts.max_iter = 300;
    img = render_unary(&opts);

    assert_int_equal(fractal_job_submit(&job, client, &opts), 0);
    assert_true(strlen(job->id) > 0);
    assert_true(job->state == FRACTAL_JOB_QUEUED || job->state == FRACTAL_JOB_RUNNING ||
                job->state == FRACTAL_JOB_SUCCEEDED);
    assert_true(job->created_unix_ms > 0);
    assert_non_null(job->request);
    assert_int_equal(job->request->width, 900);
    assert_int_equal(job->request->kind, FRACTAL_KIND_MANDELBROT);

    assert_int_equal(fractal_job_wait(&done, client, job->id, 60000, NULL, NULL), 0);
    assert_int_equal(done->state, FRACTAL_JOB_SUCCEEDED);
    assert_string_equal(done->id, job->id);
    assert_int_equal(done->error, 0);
    assert_int_equal(done->result_bytes, img->size);
    assert_int_equal(done->width, 900);
    assert_int_equal(done->height, 700);
    assert_string_equal(done->content_type, "image/png");
    assert_true(done->started_unix_ms >= done->created_unix_ms);
    assert_true(done->finished_unix_ms >= done->started_unix_ms);
    assert_true(done->has_stats);
    assert_int_equal(done->stats.samples, 900 * 700);

    /* GetJob agrees. */
    assert_int_equal(fractal_job_get(&again, client, job->id), 0);
    assert_int_equal(again->state, FRACTAL_JOB_SUCCEEDED);

    /* Fetched through callbacks, and into a file: both the unary bytes. */
    cbs.write = collect_chunk;
    cbs.payload = &got;
    assert_int_equal(fractal_job_fetch(&res, client, job->id, &cbs), 0);
    assert_int_equal(got.image.len, img->size);
    assert_memory_equal(got.image.data, img->data, img->size);
    assert_int_equal(res->width, 900);
    fractal_stream_result_free(res);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/job.png", dir);
    assert_int_equal(fractal_job_fetch_to_file(NULL, client, job->id, path, NULL, NULL), 0);
    data = read_file(path, &len);
    assert_int_equal(len, img->size);
    assert_memory_equal(data, img->data, len);
    free(data);
    unlink(path);
    rmdir(dir);

    /* Cancelling a finished job changes nothing. */
    fractal_job_free(again);
    assert_int_equal(fractal_job_cancel(&again, client, job->id), 0);
    assert_int_equal(again->state, FRACTAL_JOB_SUCCEEDED);

    free(got.image.data);
    fractal_job_free(again);
    fractal_job_free(done);
    fractal_job_free(job);
    fractal_image_free(img);
}

static void unknown_job_is_not_found(void **state)
{
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_job *job = NULL;
    (void)state;

    cbs.write = discard_chunk;
    assert_int_equal(fractal_job_get(&job, client, "no-such-job"), FRACTAL_ENOT_FOUND);
    assert_null(job);
    assert_true(strlen(fractal_client_last_error(client)) > 0);
    assert_int_equal(fractal_job_cancel(&job, client, "no-such-job"), FRACTAL_ENOT_FOUND);
    assert_int_equal(fractal_job_fetch(NULL, client, "no-such-job", &cbs), FRACTAL_ENOT_FOUND);
    assert_int_equal(fractal_job_wait(&job, client, "no-such-job", 1000, NULL, NULL), FRACTAL_ENOT_FOUND);
    assert_int_equal(fractal_job_get(&job, client, NULL), FRACTAL_EINVAL);
}

static void cancel_job_stops_it(void **state)
{
    fractal_render_options opts;
    fractal_stream_callbacks cbs = FRACTAL_STREAM_CALLBACKS_INIT;
    fractal_job *job = NULL, *cancelled = NULL, *done = NULL;
    (void)state;

    huge_render(&opts);
    cbs.write = discard_chunk;
    assert_int_equal(fractal_job_submit(&job, client, &opts), 0);
    /* Not finished: nothing to fetch yet, and the message says why. */
    assert_int_equal(fractal_job_fetch(NULL, client, job->id, &cbs), FRACTAL_EFAILED_PRECONDITION);
    /* A short wait times out with EDEADLINE. */
    assert_int_equal(fractal_job_wait(&done, client, job->id, 200, NULL, NULL), FRACTAL_EDEADLINE);
    assert_null(done);
    assert_int_equal(fractal_job_cancel(&cancelled, client, job->id), 0);
    assert_string_equal(cancelled->id, job->id);
    assert_int_equal(fractal_job_wait(&done, client, job->id, 5000, NULL, NULL), 0);
    assert_int_equal(done->state, FRACTAL_JOB_CANCELLED);
    assert_int_equal(fractal_job_fetch(NULL, client, job->id, &cbs), FRACTAL_EFAILED_PRECONDITION);
    fractal_job_free(done);
    fractal_job_free(cancelled);
    fractal_job_free(job);
}

static void list_jobs_and_stats(void **state)
{
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_job *job = NULL, *done = NULL;
    fractal_job_list *list = NULL;
    fractal_server_stats *st = NULL;
    int found = 0, render_counted = 0;
    size_t i;
    (void)state;

    opts.width = opts.height = 32;
    assert_int_equal(fractal_job_submit(&job, client, &opts), 0);
    assert_int_equal(fractal_job_wait(&done, client, job->id, 30000, NULL, NULL), 0);
    assert_int_equal(fractal_list_jobs(&list, client, 0, FRACTAL_JOB_UNSPECIFIED), 0);
    assert_true(list->count >= 1);
    assert_string_equal(list->jobs[0].id, job->id); /* newest first */
    for (i = 1; i < list->count; i++)
        assert_true(list->jobs[i].created_unix_ms <= list->jobs[i - 1].created_unix_ms);
    fractal_job_list_free(list);
    assert_int_equal(fractal_list_jobs(&list, client, 1, FRACTAL_JOB_SUCCEEDED), 0);
    assert_int_equal(list->count, 1);
    for (i = 0; i < list->count; i++) {
        assert_int_equal(list->jobs[i].state, FRACTAL_JOB_SUCCEEDED);
        found |= strcmp(list->jobs[i].id, job->id) == 0;
    }
    assert_true(found);
    fractal_job_list_free(list);

    assert_int_equal(fractal_stats_get(&st, client), 0);
    assert_true(st->uptime_s > 0);
    assert_true(st->jobs_held >= 1);
    for (i = 0; i < st->n_requests; i++)
        if (strcmp(st->requests[i].method, "Render") == 0 && st->requests[i].grpc_status == 0 &&
            st->requests[i].count > 0)
            render_counted = 1;
    assert_true(render_counted);
    fractal_server_stats_free(st);
    fractal_job_free(done);
    fractal_job_free(job);
}

/* ---- retries --------------------------------------------------------------------------------- */

struct bg_render {
    fractal_client *client;
    fractal_render_options opts;
    int rc;
};

static void *render_in_background(void *arg)
{
    struct bg_render *b = arg;
    fractal_image *img = NULL;
    b->rc = fractal_render(&img, b->client, &b->opts);
    fractal_image_free(img);
    return NULL;
}

/* A server with a small in-flight budget: while a huge render holds it, a small render is refused
 * with RESOURCE_EXHAUSTED and a retry-after hint. Without retries the refusal comes back; with
 * them the call waits by the hint and succeeds once the huge render is cancelled. A refusal
 * without the hint (over the per-request limit) is not retried. */
static void busy_server_is_retried_by_its_hint(void **state)
{
    const char *args[] = {"--spool-dir", "", "--max-inflight-cost", "1e9", NULL};
    fractal_client_options no_retry = FRACTAL_CLIENT_OPTIONS_INIT, patient = FRACTAL_CLIENT_OPTIONS_INIT;
    fractal_render_options small = FRACTAL_RENDER_OPTIONS_INIT;
    struct server_proc busy;
    struct bg_render big = {0};
    struct canceller c = {NULL, 800, 0};
    fractal_client *quick = NULL, *waiter = NULL;
    fractal_image *img = NULL;
    pthread_t bg, canceller;
    double t0;
    (void)state;

    assert_int_equal(server_proc_start(&busy, FRACTALD_BIN, args), 0);
    no_retry.max_attempts = 1;
    patient.max_attempts = 50;
    patient.retry_max_ms = 300;
    assert_int_equal(fractal_client_new(&big.client, busy.target, NULL), 0);
    assert_int_equal(fractal_client_new(&quick, busy.target, &no_retry), 0);
    assert_int_equal(fractal_client_new(&waiter, busy.target, &patient), 0);
    huge_render(&big.opts);
    small.width = small.height = 64;

    assert_int_equal(pthread_create(&bg, NULL, render_in_background, &big), 0);
    usleep(300 * 1000);
    assert_int_equal(fractal_render(&img, quick, &small), FRACTAL_ERESOURCE_EXHAUSTED);
    assert_non_null(strstr(fractal_client_last_error(quick), "busy"));

    c.client = big.client;
    assert_int_equal(pthread_create(&canceller, NULL, cancel_later, &c), 0);
    t0 = now_s();
    assert_int_equal(fractal_render(&img, waiter, &small), 0);
    assert_true(now_s() - t0 >= 0.5); /* it did wait for the cancel */
    assert_int_equal(img->width, 64);
    fractal_image_free(img);
    pthread_join(canceller, NULL);
    pthread_join(bg, NULL);
    assert_int_equal(big.rc, FRACTAL_ECANCELLED);

    /* Over the per-request limit: no hint, so one attempt only, whatever max_attempts says. */
    small.max_iter = 10000000;
    small.width = small.height = 20000;
    t0 = now_s();
    assert_int_equal(fractal_render(&img, waiter, &small), FRACTAL_ERESOURCE_EXHAUSTED);
    assert_null(strstr(fractal_client_last_error(waiter), "attempts"));
    assert_true(now_s() - t0 < 0.25);

    fractal_client_free(waiter);
    fractal_client_free(quick);
    fractal_client_free(big.client);
    assert_int_equal(server_proc_stop(&busy), 0);
}

static void client_options_versions(void **state)
{
    fractal_client_options v1, v2;
    fractal_client *c = NULL;
    (void)state;

    memset(&v1, 0xff, sizeof(v1));
    assert_int_equal(fractal_client_options_init(&v1, 1), 0);
    assert_int_equal(v1.version, 1);
    assert_int_equal(v1.deadline_ms, 60000);
    assert_int_equal(v1.max_attempts, 0xffffffffu); /* a version 1 struct ends before it */
    assert_int_equal(fractal_client_options_init(&v2, FRACTAL_CLIENT_OPTIONS_VERSION), 0);
    assert_int_equal(v2.max_attempts, 4);
    assert_int_equal(fractal_client_options_init(&v2, 99), FRACTAL_EINVAL);
    assert_int_equal(fractal_client_new(&c, server.target, &v1), 0);
    assert_int_equal(fractal_health_check(&(fractal_health_status){0}, c, ""), 0);
    fractal_client_free(c);
    assert_string_equal(fractal_job_state_name(FRACTAL_JOB_CANCELLED), "cancelled");
    assert_true(fractal_job_state_is_final(FRACTAL_JOB_FAILED));
    assert_false(fractal_job_state_is_final(FRACTAL_JOB_RUNNING));
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_render_matches_in_process_render),
        cmocka_unit_test(file_and_from_png_round_trip),
        cmocka_unit_test(deep_view_text_round_trip),
        cmocka_unit_test(server_refusal_maps_to_code_and_message),
        cmocka_unit_test(devices_and_health),
        cmocka_unit_test(deadline_is_reported),
        cmocka_unit_test(absent_server_is_unavailable),
        cmocka_unit_test(stream_equals_unary_byte_for_byte),
        cmocka_unit_test(stream_to_file_equals_unary),
        cmocka_unit_test(stream_refusal_maps_to_code),
        cmocka_unit_test(cancel_from_another_thread),
        cmocka_unit_test(submit_wait_fetch_equals_unary),
        cmocka_unit_test(unknown_job_is_not_found),
        cmocka_unit_test(cancel_job_stops_it),
        cmocka_unit_test(list_jobs_and_stats),
        cmocka_unit_test(busy_server_is_retried_by_its_hint),
        cmocka_unit_test(client_options_versions),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests_name("integration", tests, start_server, stop_server);
}
