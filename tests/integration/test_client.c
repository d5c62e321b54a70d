/* test_client.c: libfractal against a real fractald over gRPC: the server's bytes equal an
 * in-process render of the same spec, files and --from round trips, error mapping, devices,
 * health, deadlines and an absent server.
 *   integration_tests [FILTER]   runs the tests whose name matches FILTER (a cmocka glob). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices.h"
#include "err.h"
#include "fractal/fractal.h"
#include "render.h"
#include "request.h"
#include "server_proc.h"

static struct server_proc server;
static fractal_client *client;

static int start_server(void **state)
{
    (void)state;
    if (server_proc_start(&server, FRACTALD_BIN, NULL) != 0)
        return -1;
    return fractal_client_new(&client, server.target, NULL) == 0 ? 0 : -1;
}

static int stop_server(void **state)
{
    (void)state;
    fractal_client_free(client);
    return server_proc_stop(&server) == 0 ? 0 : -1;
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

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_render_matches_in_process_render),
        cmocka_unit_test(file_and_from_png_round_trip),
        cmocka_unit_test(server_refusal_maps_to_code_and_message),
        cmocka_unit_test(devices_and_health),
        cmocka_unit_test(deadline_is_reported),
        cmocka_unit_test(absent_server_is_unavailable),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests_name("integration", tests, start_server, stop_server);
}
