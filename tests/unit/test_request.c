/* test_request.c: request validation into render_spec (defaults, ranges, precision policy) and
 * the resolved-request JSON round trip. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "devices.h"
#include "err.h"
#include "proto_json.h"
#include "request.h"
#include "unit.h"

static struct devices devs;
static struct limits lim;

static int setup(void **state)
{
    struct config cfg;
    (void)state;
    config_defaults(&cfg);
    lim = cfg.limits;
    return devices_init(&devs, 2);
}

static int teardown(void **state)
{
    (void)state;
    devices_dispose(&devs);
    return 0;
}

static int to_spec(struct render_spec *s, const Fractal__V1__RenderRequest *req, char *msg)
{
    int dev = -1;
    return request_to_spec(s, &dev, req, &lim, &devs, false, msg, 512);
}

static void empty_request_gets_the_demo_defaults(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    struct render_spec s, inferno;
    char msg[512] = "";
    (void)state;

    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.fractal, SPEC_JULIA);
    assert_true(s.c_re == -0.8 && s.c_im == 0.156);
    assert_int_equal(s.width, 600);
    assert_int_equal(s.height, 400);
    assert_true(s.view_width == 3.0);
    assert_true(s.center_re == 0.0 && s.center_im == 0.0);
    assert_int_equal(s.max_iter, 256);
    assert_true(s.escape_radius == 2.0);
    assert_int_equal(s.precision, SPEC_FP32);
    assert_int_equal(s.format, SPEC_PNG);
    assert_int_equal(s.supersample, 1);
    assert_int_equal(s.region.x, 0);
    assert_int_equal(s.region.width, 600);
    assert_int_equal(s.region.height, 400);
    memset(&inferno, 0, sizeof(inferno));
    assert_int_equal(color_palette_load(&inferno.coloring, "inferno"), 0);
    assert_int_equal(s.coloring.nstops, inferno.coloring.nstops);
    assert_memory_equal(s.coloring.rgb, inferno.coloring.rgb, s.coloring.nstops * sizeof(struct spec_rgb));
}

static void explicit_zero_is_validated_not_defaulted(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    struct render_spec s;
    char msg[512] = "";
    (void)state;

    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req.width = 0;
    assert_int_equal(to_spec(&s, &req, msg), ERR_INVALID);
    assert_string_equal(msg, "width must be 1..65536, got 0");
}

static void view_width_defaults_to_the_aspect_ratio(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    struct render_spec s;
    char msg[512] = "";
    (void)state;

    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req.width = 1920;
    req.opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    req.height = 1080;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_true(fabs(s.view_width - 2.0 * 1920 / 1080) < 1e-15);
}

static void precision_policy_thresholds(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__Complex center = FRACTAL__V1__COMPLEX__INIT;
    struct render_spec s;
    char msg[512] = "";
    double fp32_min = request_min_spacing(SPEC_FP32, 1.0);
    (void)state;

    assert_true(fp32_min == ldexp(1.0, -16));
    assert_true(request_min_spacing(SPEC_FP64, 4.0) == ldexp(4.0, -45));
    req.view = &view;
    view.center = &center;
    view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    /* Just coarse enough for fp32, then just too fine. */
    view.width = fp32_min * 600 * 1.01;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.precision, SPEC_FP32);
    view.width = fp32_min * 600 * 0.99;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.precision, SPEC_FP64);
    /* Workload B's view needs fp64; workload A's does not. */
    center.re = 0.17304;
    center.im = 0.23854;
    view.width = 0.0005;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.precision, SPEC_FP64);
    req.precision = FRACTAL__V1__PRECISION__PRECISION_FP32;
    assert_int_equal(to_spec(&s, &req, msg), ERR_PRECONDITION);
    assert_non_null(strstr(msg, "PRECISION_FP32 cannot resolve"));
    req.precision = FRACTAL__V1__PRECISION__PRECISION_AUTO;
    view.width = 1e-13;
    assert_int_equal(to_spec(&s, &req, msg), ERR_PRECONDITION);
    assert_non_null(strstr(msg, "view too deep"));
    /* Supersampling makes the spacing finer, so it counts too. */
    view.width = fp32_min * 600 * 1.5;
    center.re = center.im = 0;
    req.opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
    req.supersample = 2;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.precision, SPEC_FP64);
}

static void custom_stops_are_extended_to_the_ends(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__Coloring col = FRACTAL__V1__COLORING__INIT;
    Fractal__V1__ColorStop stop = FRACTAL__V1__COLOR_STOP__INIT, *stops[1] = {&stop};
    Fractal__V1__Color red = FRACTAL__V1__COLOR__INIT;
    struct render_spec s;
    char msg[512] = "";
    (void)state;

    red.r = 255;
    stop.position = 0.5;
    stop.color = &red;
    col.n_stops = 1;
    col.stops = stops;
    req.coloring = &col;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.coloring.nstops, 3);
    assert_true(s.coloring.pos[0] == 0.0f && s.coloring.pos[1] == 0.5f && s.coloring.pos[2] == 1.0f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s.coloring.rgb[i].r, 255);
}

static void resolved_json_reproduces_the_spec(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__Mandelbrot mandel = FRACTAL__V1__MANDELBROT__INIT;
    Fractal__V1__Region region = FRACTAL__V1__REGION__INIT;
    Fractal__V1__Coloring col = FRACTAL__V1__COLORING__INIT;
    ProtobufCMessage *back = NULL;
    struct render_spec s, again;
    char msg[512] = "", *json = NULL;
    (void)state;

    req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
    req.mandelbrot = &mandel;
    region.x = 3;
    region.y = 4;
    region.width = 50;
    region.height = 60;
    req.region = &region;
    col.palette = "viridis";
    col.opt_cycle_case = FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE;
    col.cycle = 17.5;
    col.offset = 0.25;
    col.reverse = 1;
    req.coloring = &col;
    req.opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
    req.supersample = 3;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(request_json_from_spec(&json, &s), 0);
    assert_int_equal(pjson_decode(&back, &fractal__v1__render_request__descriptor, json, msg, sizeof(msg)), 0);
    assert_int_equal(to_spec(&again, (Fractal__V1__RenderRequest *)back, msg), 0);
    assert_memory_equal(&s, &again, sizeof(s));
    protobuf_c_message_free_unpacked(back, NULL);
    free(json);
}

int test_request_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_request_gets_the_demo_defaults),
        cmocka_unit_test(explicit_zero_is_validated_not_defaulted),
        cmocka_unit_test(view_width_defaults_to_the_aspect_ratio),
        cmocka_unit_test(precision_policy_thresholds),
        cmocka_unit_test(custom_stops_are_extended_to_the_ends),
        cmocka_unit_test(resolved_json_reproduces_the_spec),
    };
    return cmocka_run_group_tests_name("request", tests, setup, teardown);
}
