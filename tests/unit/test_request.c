/* test_request.c: request validation into render_spec (defaults, ranges, precision policy) and
 * the resolved-request JSON round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "decimal.h"
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
    /* Past fp64: an explicit fp64 is refused, AUTO climbs to perturbation. */
    req.precision = FRACTAL__V1__PRECISION__PRECISION_FP64;
    view.width = 1e-13;
    assert_int_equal(to_spec(&s, &req, msg), ERR_PRECONDITION);
    assert_non_null(strstr(msg, "view too deep"));
    req.precision = FRACTAL__V1__PRECISION__PRECISION_AUTO;
    assert_int_equal(to_spec(&s, &req, msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB);
    render_spec_dispose(&s);
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

/* A request for the default image at the given deep view (NULL leaves a field unset). */
struct deep_req {
    Fractal__V1__RenderRequest req;
    Fractal__V1__View view;
    Fractal__V1__Mandelbrot mandel;
};

static Fractal__V1__RenderRequest *deep_request(struct deep_req *d, const char *re, const char *im,
                                                const char *width)
{
    fractal__v1__render_request__init(&d->req);
    fractal__v1__view__init(&d->view);
    fractal__v1__mandelbrot__init(&d->mandel);
    d->req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
    d->req.mandelbrot = &d->mandel;
    d->view.center_re_text = (char *)(re ? re : "");
    d->view.center_im_text = (char *)(im ? im : "");
    d->view.width_text = (char *)(width ? width : "");
    d->req.view = &d->view;
    return &d->req;
}

static void deep_text_is_validated_with_exact_messages(void **state)
{
    struct deep_req d;
    struct render_spec s;
    char msg[512] = "", *many;
    (void)state;

    assert_int_equal(to_spec(&s, deep_request(&d, "0.25x", NULL, NULL), msg), ERR_INVALID);
    assert_string_equal(msg, "view.center_re_text must be a decimal number such as -1.25, 0.3e-2 or 1e-400, "
                             "got \"0.25x\"");
    assert_null(s.deep);
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, " 1", NULL), msg), ERR_INVALID);
    assert_string_equal(msg, "view.center_im_text must be a decimal number such as -1.25, 0.3e-2 or 1e-400, "
                             "got \" 1\"");
    for (const char *bad = "1e|.|-|1e+|1e1000000000|inf|nan|0x10|1,5|1.5e-4.2"; *bad;) {
        char text[32];
        size_t n = strcspn(bad, "|");
        memcpy(text, bad, n);
        text[n] = '\0';
        bad += n + (bad[n] == '|');
        assert_int_equal(to_spec(&s, deep_request(&d, text, NULL, "1e-20"), msg), ERR_INVALID);
        assert_non_null(strstr(msg, "view.center_re_text must be a decimal number"));
    }
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, NULL, "0"), msg), ERR_INVALID);
    assert_string_equal(msg, "view.width_text must be a decimal number in (0, 1e6], got \"0\"");
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, NULL, "-1e-300"), msg), ERR_INVALID);
    assert_string_equal(msg, "view.width_text must be a decimal number in (0, 1e6], got \"-1e-300\"");
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, NULL, "0.000e5"), msg), ERR_INVALID);
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, NULL, "1000001"), msg), ERR_INVALID);
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, NULL, "1e6"), msg), 0);
    render_spec_dispose(&s);
    assert_int_equal(to_spec(&s, deep_request(&d, "1e301", NULL, NULL), msg), ERR_INVALID);
    assert_string_equal(msg, "view.center_re_text must be a decimal number of magnitude at most 1e300, "
                             "got \"1e301\"");

    /* Too many digits: the limit counts every mantissa digit, the leading 0 of "0.1111" too. */
    many = malloc(lim.deep_max_digits + 8);
    memset(many, '1', lim.deep_max_digits + 1);
    many[0] = '0';
    many[1] = '.';
    many[lim.deep_max_digits + 1] = '\0';  /* 4096 digits */
    assert_int_equal(to_spec(&s, deep_request(&d, many, NULL, "1e-30"), msg), 0);
    render_spec_dispose(&s);
    strcpy(many + lim.deep_max_digits + 1, "55e-3");  /* 4098 */
    assert_int_equal(to_spec(&s, deep_request(&d, NULL, many, "1e-30"), msg), ERR_INVALID);
    assert_string_equal(msg, "view.center_im_text must have at most 4096 digits (--deep-max-digits), got 4098");
    free(many);
}

static void deep_views_deeper_than_the_limit_are_refused(void **state)
{
    struct deep_req d;
    struct render_spec s;
    char msg[512] = "";
    struct limits saved = lim;
    (void)state;

    lim.deep_max_digits = 100;
    /* 600 pixels over 1e-95: spacing 1.67e-98, 98 digits: inside. */
    assert_int_equal(to_spec(&s, deep_request(&d, "-0.75", "0.1", "1e-95"), msg), 0);
    assert_true(spec_precision_is_deep(s.precision));
    render_spec_dispose(&s);
    assert_int_equal(to_spec(&s, deep_request(&d, "-0.75", "0.1", "1e-98"), msg), ERR_PRECONDITION);
    assert_string_equal(msg, "view too deep: a pixel spacing of 1.67e-101 at coordinates up to 0.75 needs 101 "
                             "digits, over this server's limit of 100 (--deep-max-digits)");
    assert_null(s.deep);
    lim = saved;
}

static void auto_climbs_to_perturbation_and_reports_it(void **state)
{
    struct deep_req d;
    struct render_spec s;
    char msg[512] = "";
    (void)state;

    /* Shallow text: the doubles do, rounded correctly, and the text is kept for the record. */
    assert_int_equal(to_spec(&s, deep_request(&d, "-0.75", "0.1", "0.5"), msg), 0);
    assert_int_equal(s.precision, SPEC_FP32);
    assert_true(s.center_re == -0.75 && s.view_width == 0.5);
    assert_non_null(s.deep);
    assert_string_equal(s.deep->width, "0.5");
    render_spec_dispose(&s);
    assert_int_equal(to_spec(&s, deep_request(&d, "-0.75", "0.1", "1e-9"), msg), 0);
    assert_int_equal(s.precision, SPEC_FP64);
    render_spec_dispose(&s);
    /* Past fp64: perturbation with fp64 offsets, then with an extended exponent. */
    assert_int_equal(to_spec(&s, deep_request(&d, "-1.74999841099374081749002483162428393", "0", "1e-30"), msg),
                     0);
    assert_int_equal(s.precision, SPEC_PERTURB);
    assert_int_equal(s.precision_asked, FRACTAL__V1__PRECISION__PRECISION_AUTO);
    assert_string_equal(s.deep->center_re, "-1.74999841099374081749002483162428393");
    assert_string_equal(s.deep->center_im, "0");
    assert_int_equal(s.device[0], '\0');
    render_spec_dispose(&s);
    assert_int_equal(to_spec(&s, deep_request(&d, "-1.75", "0", "1e-400"), msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB_EXTENDED);
    assert_true(s.deep->log2_spacing < -1300);
    render_spec_dispose(&s);
    /* An explicit PERTURB that its fp64 offsets cannot hold is refused; EXTENDED takes it. */
    deep_request(&d, "-1.75", "0", "1e-400");
    d.req.precision = FRACTAL__V1__PRECISION__PRECISION_PERTURB;
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_non_null(strstr(msg, "precision PRECISION_PERTURB cannot resolve a pixel spacing of 1.67e-403"));
    d.req.precision = FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED;
    assert_int_equal(to_spec(&s, &d.req, msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB_EXTENDED);
    render_spec_dispose(&s);
    /* An explicit fp64 past its depth is refused as before. */
    deep_request(&d, "-1.75", "0", "1e-30");
    d.req.precision = FRACTAL__V1__PRECISION__PRECISION_FP64;
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_non_null(strstr(msg, "view too deep: pixel spacing 1.67e-33 at coordinates up to 1.75 is below what "
                                "fp64 resolves"));
    /* Doubles alone past fp64 get their exact text from the doubles. */
    deep_request(&d, NULL, NULL, NULL);
    d.view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    d.view.width = 1e-14;
    assert_int_equal(to_spec(&s, &d.req, msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB);
    assert_string_equal(s.deep->width, "1e-14");
    render_spec_dispose(&s);
    /* ... in the normal form text gets ("e32", not printf's "e+32"), so the PNG's request, read
     * back, makes the same spec (found by fuzz_request: tests/fuzz/corpus/request/
     * deep_from_doubles_exponent.bin). */
    {
        Fractal__V1__Complex centre = FRACTAL__V1__COMPLEX__INIT;
        deep_request(&d, NULL, NULL, NULL);
        centre.re = -0.75;
        centre.im = 5.191504576909685e32;
        d.view.center = &centre;
        d.view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
        d.view.width = 3.0;
        assert_int_equal(to_spec(&s, &d.req, msg), 0);
        assert_int_equal(s.precision, SPEC_PERTURB);
        assert_string_equal(s.deep->center_re, "-0.75");
        assert_string_equal(s.deep->center_im, "5.1915045769096853e32");
        render_spec_dispose(&s);
        /* Past the text's bound of 1e300 such a view is refused (its text would be). */
        centre.re = -1.3482698511467369e308;
        assert_int_equal(to_spec(&s, &d.req, msg), ERR_INVALID);
        assert_string_equal(msg, "view.center must be of magnitude at most 1e300 for a view past fp64 (rendered "
                                 "by perturbation), got (-1.35e+308, 5.19e+32)");
    }
}

/* Deep views go to the CPU engine, or (fp64 deltas only) to an OpenCL device with fp64. */
static void deep_view_devices(void **state)
{
    struct deep_req d;
    struct render_spec s;
    struct device cl, *added = NULL;
    char msg[512] = "";
    (void)state;

    deep_request(&d, "-1.75", "0", "1e-30");
    /* The CPU engine alone: "gpu" and "opencl" name nothing. */
    d.req.device = "gpu";
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_string_equal(msg, "deep zoom (PRECISION_PERTURB) runs on the built-in CPU engine or an fp64 OpenCL "
                             "device, and no enabled, working one matches device \"gpu\" (see --list-devices "
                             "and --cpu-engine)");
    d.req.device = "opencl";
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    d.req.device = "nosuch";
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_INVALID);
    d.req.device = "cpu";
    assert_int_equal(to_spec(&s, &d.req, msg), 0);
    render_spec_dispose(&s);

    /* An OpenCL GPU with fp64 takes PRECISION_PERTURB, not the extended exponent. */
    memset(&cl, 0, sizeof(cl));
    snprintf(cl.id, sizeof(cl.id), "cl:test:gpu:0");
    snprintf(cl.engine, sizeof(cl.engine), "opencl");
    cl.type = DEVICE_GPU;
    cl.fp64 = true;
    cl.enabled = true;
    assert_int_equal(devices_add(&added, &devs, &cl), 0);
    d.req.device = "gpu";
    assert_int_equal(to_spec(&s, &d.req, msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB);
    render_spec_dispose(&s);
    d.req.precision = FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED;
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_string_equal(msg, "deep zoom with extended exponents (PRECISION_PERTURB_EXTENDED) runs on the CPU "
                             "engine only, so device \"gpu\" cannot take it; use device \"\" or \"cpu\"");
    d.req.precision = FRACTAL__V1__PRECISION__PRECISION_AUTO;
    /* Without fp64 it cannot. */
    devs.list[devs.count - 1].fp64 = false;
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_string_equal(msg, "deep zoom (PRECISION_PERTURB) needs fp64 on an OpenCL device, and no enabled, "
                             "working device \"gpu\" has it; use device \"\" or \"cpu\"");
    devs.count--;   /* drop the test device again (devices_add copied it to the end) */

    /* Without the built-in engine nothing can take it. */
    devs.list[0].enabled = false;
    d.req.device = "";
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_PRECONDITION);
    assert_string_equal(msg, "deep zoom (PRECISION_PERTURB) runs on the built-in CPU engine or an fp64 OpenCL "
                             "device, and no enabled, working one matches device \"\" (see --list-devices and "
                             "--cpu-engine)");
    devs.list[0].enabled = true;
}

static void deep_resolved_request_records_auto_and_the_text(void **state)
{
    struct deep_req d;
    ProtobufCMessage *back = NULL;
    struct render_spec s, again;
    char msg[512] = "", *json = NULL;
    (void)state;

    assert_int_equal(to_spec(&s, deep_request(&d, "-1.7499984109937408174900248316242839", "1e-40", "3.5e-330"),
                             msg), 0);
    assert_int_equal(s.precision, SPEC_PERTURB_EXTENDED);
    /* The deep view's default cycle, recorded like any cycle. */
    assert_true(s.coloring.cycle == request_default_cycle(256));
    assert_int_equal(request_json_from_spec(&json, &s), 0);
    assert_non_null(strstr(json, "\"centerReText\":\"-1.7499984109937408174900248316242839\""));
    assert_non_null(strstr(json, "\"widthText\":\"3.5e-330\""));
    assert_null(strstr(json, "\"precision\""));       /* AUTO is proto3's zero: not written */
    assert_int_equal(pjson_decode(&back, &fractal__v1__render_request__descriptor, json, msg, sizeof(msg)), 0);
    assert_int_equal(to_spec(&again, (Fractal__V1__RenderRequest *)back, msg), 0);
    assert_int_equal(again.precision, SPEC_PERTURB_EXTENDED);
    assert_string_equal(again.deep->center_re, s.deep->center_re);
    assert_string_equal(again.deep->center_im, s.deep->center_im);
    assert_string_equal(again.deep->width, s.deep->width);
    assert_true(again.coloring.cycle == s.coloring.cycle);
    assert_true(again.deep->log2_spacing == s.deep->log2_spacing);
    render_spec_dispose(&again);
    protobuf_c_message_free_unpacked(back, NULL);
    free(json);
    render_spec_dispose(&s);
}

static void deep_reference_counts_in_the_cost(void **state)
{
    struct deep_req d;
    struct render_spec s;
    char msg[512] = "";
    double shallow;
    (void)state;

    assert_int_equal(to_spec(&s, deep_request(&d, "-0.75", "0.1", "1"), msg), 0);
    shallow = request_cost(&s);
    assert_true(shallow == 600.0 * 400 * 256);
    render_spec_dispose(&s);
    assert_int_equal(to_spec(&s, deep_request(&d, "-1.75", "0", "1e-1000"), msg), 0);
    assert_true(request_reference_cost(&s) > 256 * REQUEST_REF_STEP_COST);
    assert_true(request_cost(&s) == shallow + request_reference_cost(&s));
    render_spec_dispose(&s);
    /* A reference too costly for --max-cost is refused before anything is computed. */
    deep_request(&d, "-1.75", "0", "1e-4000");
    d.req.opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
    d.req.max_iter = 10000000;
    d.req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    d.req.width = 1;
    d.req.opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    d.req.height = 1;
    assert_int_equal(to_spec(&s, &d.req, msg), ERR_EXHAUSTED);
    assert_non_null(strstr(msg, "for the reference orbit of a 4001-digit view), over the limit of 2.5e+11"));
    assert_null(s.deep);
}

static void decimal_text_helpers(void **state)
{
    struct decimal d;
    char out[64];
    (void)state;

    assert_int_equal(decimal_parse(&d, "+.5e+3"), 0);
    assert_false(d.negative);
    assert_int_equal(d.digits, 1);
    assert_true(fabs(d.log10_abs - log10(500.0)) < 1e-15);
    decimal_normalize(out, "+.5e+3");
    assert_string_equal(out, "0.5e3");
    decimal_normalize(out, "-12.E-07");
    assert_string_equal(out, "-12e-07");
    assert_int_equal(decimal_parse(&d, "-0.000"), 0);
    assert_true(d.zero && d.negative);
    assert_int_equal(d.digits, 4);
    assert_int_equal(decimal_parse(&d, "000123.4500e-2"), 0);
    assert_int_equal(d.digits, 10);
    assert_true(fabs(d.log10_abs - log10(1.2345)) < 1e-15);
    assert_int_equal(decimal_parse(&d, "1e-999999999"), 0);
    assert_true(d.log10_abs == -999999999.0);
    assert_int_equal(decimal_parse(&d, "1e-1000000000"), -1);
    assert_int_equal(decimal_parse(&d, ""), -1);
    assert_int_equal(decimal_parse(&d, "+"), -1);
    assert_int_equal(decimal_parse(&d, "1.2.3"), -1);
    assert_int_equal(decimal_parse(&d, "1e5 "), -1);
    decimal_format_pow10(out, sizeof(out), -400 + log10(1.5));
    assert_string_equal(out, "1.5e-400");
    /* Three digits round 9.9996 up to the next power. */
    decimal_format_pow10(out, sizeof(out), log10(9.9996));
    assert_string_equal(out, "1e+1");
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
        cmocka_unit_test(deep_text_is_validated_with_exact_messages),
        cmocka_unit_test(deep_views_deeper_than_the_limit_are_refused),
        cmocka_unit_test(auto_climbs_to_perturbation_and_reports_it),
        cmocka_unit_test(deep_view_devices),
        cmocka_unit_test(deep_resolved_request_records_auto_and_the_text),
        cmocka_unit_test(deep_reference_counts_in_the_cost),
        cmocka_unit_test(decimal_text_helpers),
    };
    return cmocka_run_group_tests_name("request", tests, setup, teardown);
}
