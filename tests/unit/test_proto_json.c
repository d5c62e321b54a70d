/* test_proto_json.c: the proto3 JSON mapping of proto/proto_json.c: exact text, round trips that
 * keep oneof presence and every bit of a double, and the errors a hand-edited request gets. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

#include "fractal/v1/fractal.pb-c.h"
#include "proto_json.h"
#include "proto_wire.h"

static char *encode_ok(const ProtobufCMessage *msg)
{
    char *json = NULL;

    assert_int_equal(pjson_encode(&json, msg), 0);
    assert_non_null(json);
    return json;
}

static ProtobufCMessage *decode_ok(const ProtobufCMessageDescriptor *desc, const char *json)
{
    ProtobufCMessage *msg = NULL;
    char err[256] = "";
    int rc = pjson_decode(&msg, desc, json, err, sizeof err);

    if (rc != 0)
        print_error("pjson_decode(%s) = %d: %s\n", json, rc, err);
    assert_int_equal(rc, 0);
    assert_non_null(msg);
    assert_ptr_equal(msg->descriptor, desc);
    return msg;
}

/* Both messages pack to the same bytes: the same fields, values and oneof cases. */
static void assert_same_wire(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a);
    size_t nb = protobuf_c_message_get_packed_size(b);
    uint8_t *wa = malloc(na + 1), *wb = malloc(nb + 1);

    assert_non_null(wa);
    assert_non_null(wb);
    assert_int_equal(na, nb);
    assert_int_equal(protobuf_c_message_pack(a, wa), na);
    assert_int_equal(protobuf_c_message_pack(b, wb), nb);
    assert_memory_equal(wa, wb, na);
    free(wa);
    free(wb);
}

/* Encodes msg, checks the text, decodes it, checks the wire bytes and that it encodes to the same
 * text again. Returns the decoded message for further checks; the caller frees it. */
static ProtobufCMessage *round_trip(const ProtobufCMessage *msg, const char *expect)
{
    char *json = encode_ok(msg), *again;
    ProtobufCMessage *back;

    if (expect != NULL)
        assert_string_equal(json, expect);
    back = decode_ok(msg->descriptor, json);
    assert_same_wire(msg, back);
    again = encode_ok(back);
    assert_string_equal(again, json);
    free(again);
    free(json);
    return back;
}

/* pjson_decode fails with PJSON_ERR_INVALID, leaves *out NULL and says `expect` somewhere. */
static void assert_decode_fails(const ProtobufCMessageDescriptor *desc, const char *json,
                                const char *expect)
{
    ProtobufCMessage *msg = (ProtobufCMessage *)&msg; /* not NULL, to see it cleared */
    char err[256] = "";
    int rc = pjson_decode(&msg, desc, json, err, sizeof err);

    if (rc != PJSON_ERR_INVALID || strstr(err, expect) == NULL)
        print_error("pjson_decode(%s) = %d \"%s\"; wanted %d \"%s\"\n", json, rc, err,
                    PJSON_ERR_INVALID, expect);
    assert_int_equal(rc, PJSON_ERR_INVALID);
    assert_null(msg);
    assert_non_null(strstr(err, expect));
    assert_null(strchr(err, '\n'));
}

static void test_exact_text(void **state)
{
    Fractal__V1__Complex center = FRACTAL__V1__COMPLEX__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__RenderResponse resp = FRACTAL__V1__RENDER_RESPONSE__INIT;
    uint8_t bytes[] = {0x00, 0xff, 0x10, 0x41};
    ProtobufCMessage *back;
    (void)state;

    /* Shortest digits that read back exactly; a set oneof member is written. */
    center.re = -0.75;
    center.im = 0.1;
    view.center = &center;
    view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    view.width = 3.5;
    back = round_trip(&view.base, "{\"center\":{\"re\":-0.75,\"im\":0.1},\"width\":3.5}");
    protobuf_c_message_free_unpacked(back, NULL);

    /* An empty message is {}; proto3 zero scalars and "" are left out. */
    back = round_trip(&req.base, "{}");
    protobuf_c_message_free_unpacked(back, NULL);

    /* camelCase keys, enum names, a oneof holding an empty message. */
    req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
    Fractal__V1__Mandelbrot mandel = FRACTAL__V1__MANDELBROT__INIT;
    req.mandelbrot = &mandel;
    req.opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
    req.max_iter = 1000;
    req.format = FRACTAL__V1__FORMAT__FORMAT_RAW_F32;
    req.device = "cpu";
    back = round_trip(&req.base,
                      "{\"mandelbrot\":{},\"maxIter\":1000,\"format\":\"FORMAT_RAW_F32\",\"device\":\"cpu\"}");
    assert_int_equal(((Fractal__V1__RenderRequest *)back)->fractal_case,
                     FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT);
    protobuf_c_message_free_unpacked(back, NULL);

    /* Bytes as padded standard base64, uint32 as numbers, escapes in strings. */
    resp.data.data = bytes;
    resp.data.len = 3;
    resp.content_type = "a\"b\\c\n\xc3\xa9";
    resp.width = 4294967295u;
    back = round_trip(&resp.base,
                      "{\"data\":\"AP8Q\",\"contentType\":\"a\\\"b\\\\c\\n\xc3\xa9\",\"width\":4294967295}");
    protobuf_c_message_free_unpacked(back, NULL);
    resp.data.len = 4;
    back = round_trip(&resp.base, NULL);
    assert_int_equal(((Fractal__V1__RenderResponse *)back)->data.len, 4);
    assert_memory_equal(((Fractal__V1__RenderResponse *)back)->data.data, bytes, 4);
    protobuf_c_message_free_unpacked(back, NULL);
}

/* Reals are formatted through a per-thread memo of recent values: values that share a memo
 * slot, or that differ only in their last bits, must never get each other's text. */
static void test_real_memo(void **state)
{
    Fractal__V1__Complex z = FRACTAL__V1__COMPLEX__INIT;
    char expect[128], *json;
    (void)state;

    for (int round = 0; round < 2; round++) {
        z.re = 0.1;
        z.im = (double)0.1f;
        json = encode_ok(&z.base);
        assert_string_equal(json, "{\"re\":0.1,\"im\":0.10000000149011612}");
        free(json);
        z.re = nextafter(0.1, 1.0);
        z.im = 0.1;
        json = encode_ok(&z.base);
        assert_string_equal(json, "{\"re\":0.10000000000000002,\"im\":0.1}");
        free(json);
    }
    /* 1278 values through 256 slots, twice: every text must be the value's own. Multiples of
     * 1/64 below 10 print their exact digits under %.17g, which are also the shortest. */
    z.im = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = -639; i <= 639; i++) {
            if (i == 0)
                continue;
            z.re = i / 64.0;
            json = encode_ok(&z.base);
            snprintf(expect, sizeof expect, "{\"re\":%.17g}", i / 64.0);
            assert_string_equal(json, expect);
            free(json);
        }
    }
}

static void test_render_request_round_trip(void **state)
{
    Fractal__V1__Complex c = FRACTAL__V1__COMPLEX__INIT, center = FRACTAL__V1__COMPLEX__INIT;
    Fractal__V1__Julia julia = FRACTAL__V1__JULIA__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__Coloring col = FRACTAL__V1__COLORING__INIT;
    Fractal__V1__Color colors[3] = {FRACTAL__V1__COLOR__INIT, FRACTAL__V1__COLOR__INIT,
                                    FRACTAL__V1__COLOR__INIT};
    Fractal__V1__Color interior = FRACTAL__V1__COLOR__INIT;
    Fractal__V1__ColorStop stops[3] = {FRACTAL__V1__COLOR_STOP__INIT, FRACTAL__V1__COLOR_STOP__INIT,
                                       FRACTAL__V1__COLOR_STOP__INIT};
    Fractal__V1__ColorStop *stop_ptrs[3] = {&stops[0], &stops[1], &stops[2]};
    Fractal__V1__Region region = FRACTAL__V1__REGION__INIT;
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__RenderRequest *back;
    char *json;
    (void)state;

    c.re = -0.8;
    c.im = 0.156;
    julia.c = &c;
    req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA;
    req.julia = &julia;
    /* A value that needs all 17 significant digits, and the smallest subnormal, which needs 1. */
    center.re = -(0.1 + 0.2);
    center.im = 4.9406564584124654e-324;
    view.center = &center;
    view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    view.width = 0.0;
    req.view = &view;
    /* Every presence oneof set to zero: each must survive as set. */
    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req.width = 0;
    req.opt_height_case = FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT;
    req.height = 0;
    req.opt_max_iter_case = FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER;
    req.max_iter = 0;
    req.opt_escape_radius_case = FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS;
    req.escape_radius = 0.0;
    req.opt_supersample_case = FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE;
    req.supersample = 0;
    req.precision = FRACTAL__V1__PRECISION__PRECISION_FP64;
    req.format = FRACTAL__V1__FORMAT__FORMAT_PNG16;
    for (int i = 0; i < 3; i++) {
        colors[i].r = (uint32_t)(i * 100);
        colors[i].g = 255;
        colors[i].b = (uint32_t)(7 * i);
        stops[i].position = i / 2.0;
        stops[i].color = &colors[i];
    }
    col.palette = "twilight";
    col.n_stops = 3;
    col.stops = stop_ptrs;
    col.opt_cycle_case = FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE;
    col.cycle = 0.0;
    col.offset = 0.25;
    interior.r = 1;
    interior.g = 2;
    interior.b = 3;
    col.interior = &interior;
    col.reverse = 1;
    req.coloring = &col;
    region.x = 1;
    region.y = 2;
    region.width = 3;
    region.height = 4;
    req.region = &region;
    req.device = "gpu:0";

    json = encode_ok(&req.base);
    assert_string_equal(
        json,
        "{\"julia\":{\"c\":{\"re\":-0.8,\"im\":0.156}},"
        "\"view\":{\"center\":{\"re\":-0.30000000000000004,\"im\":5e-324},\"width\":0},"
        "\"width\":0,\"height\":0,\"maxIter\":0,\"escapeRadius\":0,\"precision\":\"PRECISION_FP64\","
        "\"format\":\"FORMAT_PNG16\",\"coloring\":{\"palette\":\"twilight\",\"stops\":["
        "{\"color\":{\"g\":255}},{\"position\":0.5,\"color\":{\"r\":100,\"g\":255,\"b\":7}},"
        "{\"position\":1,\"color\":{\"r\":200,\"g\":255,\"b\":14}}],\"cycle\":0,\"offset\":0.25,"
        "\"interior\":{\"r\":1,\"g\":2,\"b\":3},\"reverse\":true},\"supersample\":0,"
        "\"region\":{\"x\":1,\"y\":2,\"width\":3,\"height\":4},\"device\":\"gpu:0\"}");
    free(json);

    back = (Fractal__V1__RenderRequest *)round_trip(&req.base, NULL);
    assert_int_equal(back->fractal_case, FRACTAL__V1__RENDER_REQUEST__FRACTAL_JULIA);
    assert_true(back->julia->c->re == -0.8 && back->julia->c->im == 0.156);
    assert_true(back->view->center->re == center.re && back->view->center->im == center.im);
    assert_int_equal(back->view->opt_width_case, FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH);
    assert_int_equal(back->opt_width_case, FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH);
    assert_int_equal(back->opt_height_case, FRACTAL__V1__RENDER_REQUEST__OPT_HEIGHT_HEIGHT);
    assert_int_equal(back->opt_max_iter_case, FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER);
    assert_int_equal(back->opt_escape_radius_case,
                     FRACTAL__V1__RENDER_REQUEST__OPT_ESCAPE_RADIUS_ESCAPE_RADIUS);
    assert_int_equal(back->opt_supersample_case,
                     FRACTAL__V1__RENDER_REQUEST__OPT_SUPERSAMPLE_SUPERSAMPLE);
    assert_int_equal(back->coloring->opt_cycle_case, FRACTAL__V1__COLORING__OPT_CYCLE_CYCLE);
    assert_int_equal(back->coloring->n_stops, 3);
    assert_int_equal(back->coloring->stops[2]->color->b, 14);
    assert_true(back->coloring->stops[1]->position == 0.5);
    assert_string_equal(back->coloring->palette, "twilight");
    assert_true(back->coloring->reverse);
    assert_int_equal(back->region->height, 4);
    assert_string_equal(back->device, "gpu:0");
    protobuf_c_message_free_unpacked(&back->base, NULL);

    /* An unset presence oneof stays unset. */
    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH__NOT_SET;
    back = (Fractal__V1__RenderRequest *)round_trip(&req.base, NULL);
    assert_int_equal(back->opt_width_case, FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH__NOT_SET);
    protobuf_c_message_free_unpacked(&back->base, NULL);
}

/* A deep view: thousands of digits, an exponent past double's range, and the new precisions,
 * through JSON and back, byte for byte on the wire. */
static void test_deep_view_round_trip(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__RenderRequest *back;
    char *re = malloc(4100), *json;
    (void)state;

    re[0] = '-';
    re[1] = '0';
    re[2] = '.';
    for (int i = 3; i < 4099; i++)
        re[i] = (char)('0' + (i * 7) % 10);
    re[4099] = '\0';
    view.center_re_text = re;
    view.center_im_text = "1.25e-4000";
    view.width_text = "3.5e-3000";
    req.view = &view;
    req.precision = FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED;
    json = encode_ok(&req.base);
    assert_non_null(strstr(json, "\"precision\":\"PRECISION_PERTURB_EXTENDED\""));
    assert_non_null(strstr(json, "\"centerImText\":\"1.25e-4000\",\"widthText\":\"3.5e-3000\""));
    assert_non_null(strstr(json, re));
    free(json);
    back = (Fractal__V1__RenderRequest *)round_trip(&req.base, NULL);
    assert_string_equal(back->view->center_re_text, re);
    assert_string_equal(back->view->center_im_text, "1.25e-4000");
    assert_string_equal(back->view->width_text, "3.5e-3000");
    assert_int_equal(back->precision, FRACTAL__V1__PRECISION__PRECISION_PERTURB_EXTENDED);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    /* The proto field names are accepted too, and the JSON names of the new enum values. */
    back = (Fractal__V1__RenderRequest *)decode_ok(&fractal__v1__render_request__descriptor,
        "{\"view\":{\"center_re_text\":\"-1.5\",\"width_text\":\"1e-400\"},\"precision\":\"PRECISION_PERTURB\"}");
    assert_string_equal(back->view->center_re_text, "-1.5");
    assert_string_equal(back->view->width_text, "1e-400");
    assert_int_equal(back->precision, FRACTAL__V1__PRECISION__PRECISION_PERTURB);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    free(re);
}

static void test_nan_infinity(void **state)
{
    Fractal__V1__Complex center = FRACTAL__V1__COMPLEX__INIT;
    Fractal__V1__View view = FRACTAL__V1__VIEW__INIT;
    Fractal__V1__View *back;
    (void)state;

    center.re = NAN;
    center.im = -INFINITY;
    view.center = &center;
    view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH_WIDTH;
    view.width = INFINITY;
    back = (Fractal__V1__View *)round_trip(
        &view.base, "{\"center\":{\"re\":\"NaN\",\"im\":\"-Infinity\"},\"width\":\"Infinity\"}");
    assert_true(isnan(back->center->re));
    assert_true(isinf(back->center->im) && back->center->im < 0);
    assert_true(isinf(back->width) && back->width > 0);
    protobuf_c_message_free_unpacked(&back->base, NULL);

    /* -0 is not the proto3 default (+0) and keeps its sign, written so that parsers which read
     * "-0" as an integer keep it too. */
    center.re = -0.0;
    center.im = 0.0;
    view.opt_width_case = FRACTAL__V1__VIEW__OPT_WIDTH__NOT_SET;
    back = (Fractal__V1__View *)round_trip(&view.base, "{\"center\":{\"re\":-0.0}}");
    assert_true(back->center->re == 0 && signbit(back->center->re));
    protobuf_c_message_free_unpacked(&back->base, NULL);
}

static void test_job_int64(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
    Fractal__V1__Mandelbrot mandel = FRACTAL__V1__MANDELBROT__INIT;
    Fractal__V1__Job job = FRACTAL__V1__JOB__INIT;
    char *devices[2] = {"cpu", "opencl:0:1"};
    Fractal__V1__Job *back;
    (void)state;

    req.fractal_case = FRACTAL__V1__RENDER_REQUEST__FRACTAL_MANDELBROT;
    req.mandelbrot = &mandel;
    req.opt_width_case = FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH_WIDTH;
    req.width = 800;
    stats.iterations = 12345678901234ull;
    stats.samples = UINT64_MAX;
    stats.n_devices = 2;
    stats.devices = devices;
    stats.precision = FRACTAL__V1__PRECISION__PRECISION_FP32;
    job.id = "j-1";
    job.state = FRACTAL__V1__JOB_STATE__JOB_STATE_FAILED;
    job.stats = &stats;
    job.error_code = -3;
    job.request = &req;
    job.created_unix_ms = 1700000000123;
    job.started_unix_ms = INT64_MIN;
    job.finished_unix_ms = INT64_MAX;
    back = (Fractal__V1__Job *)round_trip(
        &job.base,
        "{\"id\":\"j-1\",\"state\":\"JOB_STATE_FAILED\",\"stats\":{\"iterations\":\"12345678901234\","
        "\"devices\":[\"cpu\",\"opencl:0:1\"],\"precision\":\"PRECISION_FP32\","
        "\"samples\":\"18446744073709551615\"},\"errorCode\":-3,"
        "\"request\":{\"mandelbrot\":{},\"width\":800},\"createdUnixMs\":\"1700000000123\","
        "\"startedUnixMs\":\"-9223372036854775808\",\"finishedUnixMs\":\"9223372036854775807\"}");
    assert_true(back->created_unix_ms == 1700000000123);
    assert_true(back->started_unix_ms == INT64_MIN);
    assert_true(back->stats->samples == UINT64_MAX);
    assert_int_equal(back->request->width, 800);
    protobuf_c_message_free_unpacked(&back->base, NULL);

    /* 64-bit integers are also accepted as JSON numbers, up to 2^53. */
    back = (Fractal__V1__Job *)decode_ok(
        &fractal__v1__job__descriptor,
        "{\"createdUnixMs\":1700000000123,\"started_unix_ms\":-9007199254740991,"
        "\"stats\":{\"iterations\":9007199254740991}}");
    assert_true(back->created_unix_ms == 1700000000123);
    assert_true(back->started_unix_ms == -9007199254740991);
    assert_true(back->stats->iterations == 9007199254740991ull);
    protobuf_c_message_free_unpacked(&back->base, NULL);
}

static void test_decode_accepts(void **state)
{
    Fractal__V1__RenderRequest *req;
    Fractal__V1__RenderResponse *resp;
    (void)state;

    /* Proto field names, enum numbers, numeric strings, null for "unset", whitespace. */
    req = (Fractal__V1__RenderRequest *)decode_ok(
        &fractal__v1__render_request__descriptor,
        " {\"max_iter\": \"500\", \"escape_radius\": \"1e3\", \"format\": 3, \"precision\": null,\n"
        "  \"view\": {\"center\": {\"re\": \"-0.5\", \"im\": 1E-3}}, \"height\": 1.0,"
        "  \"coloring\": {\"stops\": [], \"palette\": null, \"cycle\": null}} ");
    assert_int_equal(req->opt_max_iter_case, FRACTAL__V1__RENDER_REQUEST__OPT_MAX_ITER_MAX_ITER);
    assert_int_equal(req->max_iter, 500);
    assert_true(req->escape_radius == 1000.0);
    assert_int_equal(req->format, FRACTAL__V1__FORMAT__FORMAT_RAW_F32);
    assert_int_equal(req->precision, FRACTAL__V1__PRECISION__PRECISION_AUTO);
    assert_true(req->view->center->re == -0.5 && req->view->center->im == 0.001);
    assert_int_equal(req->height, 1);
    assert_int_equal(req->opt_width_case, FRACTAL__V1__RENDER_REQUEST__OPT_WIDTH__NOT_SET);
    assert_int_equal(req->coloring->n_stops, 0);
    assert_string_equal(req->coloring->palette, "");
    assert_int_equal(req->coloring->opt_cycle_case, FRACTAL__V1__COLORING__OPT_CYCLE__NOT_SET);
    protobuf_c_message_free_unpacked(&req->base, NULL);

    /* URL-safe and unpadded base64. */
    resp = (Fractal__V1__RenderResponse *)decode_ok(&fractal__v1__render_response__descriptor,
                                                     "{\"data\":\"-_8\"}");
    assert_int_equal(resp->data.len, 2);
    assert_int_equal(resp->data.data[0], 0xfb);
    assert_int_equal(resp->data.data[1], 0xff);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_decode_errors(void **state)
{
    const ProtobufCMessageDescriptor *rr = &fractal__v1__render_request__descriptor;
    const ProtobufCMessageDescriptor *job = &fractal__v1__job__descriptor;
    (void)state;

    assert_decode_fails(rr, "{\"bogus\":1}", "unknown field \"bogus\" in fractal.v1.RenderRequest");
    assert_decode_fails(rr, "{\"view\":{\"centre\":{}}}", "view.centre: unknown field");
    assert_decode_fails(rr, "{\"view\":{\"center\":{\"re\":\"abc\"}}}",
                        "view.center.re: expected a number, got \"abc\"");
    assert_decode_fails(rr, "{\"view\":{\"center\":{\"im\":true}}}",
                        "view.center.im: expected a number");
    assert_decode_fails(rr, "{\"view\":{\"center\":{\"im\":\"nan\"}}}",
                        "view.center.im: expected a number");
    assert_decode_fails(rr, "{\"escapeRadius\":1e999}", "escapeRadius: number out of range");
    assert_decode_fails(rr, "{\"width\":-1}",
                        "width: expected an integer in 0..4294967295, got -1");
    assert_decode_fails(rr, "{\"width\":4294967296}", "width: expected an integer in 0..4294967295");
    assert_decode_fails(rr, "{\"width\":\"4294967296\"}", "expected an integer in 0..4294967295");
    assert_decode_fails(rr, "{\"max_iter\":1.5}", "max_iter: expected an integer, got 1.5");
    assert_decode_fails(rr, "{\"width\":\"12px\"}", "width: expected an integer, got \"12px\"");
    assert_decode_fails(rr, "{\"width\":true}", "width: expected an integer, got true");
    assert_decode_fails(rr, "{\"format\":\"FORMAT_JPG\"}",
                        "format: unknown value \"FORMAT_JPG\" for enum fractal.v1.Format");
    assert_decode_fails(rr, "{\"format\":1.5}", "format: expected an integer");
    assert_decode_fails(rr, "{\"format\":{}}", "format: expected a fractal.v1.Format name or number");
    assert_decode_fails(rr, "{\"device\":5}", "device: expected a string, got 5");
    assert_decode_fails(rr, "{\"coloring\":{\"reverse\":1}}",
                        "coloring.reverse: expected true or false, got 1");
    assert_decode_fails(rr, "{\"coloring\":{\"stops\":{}}}",
                        "coloring.stops: expected an array, got an object");
    assert_decode_fails(rr, "{\"coloring\":{\"stops\":[{\"position\":0},{\"position\":\"x\"}]}}",
                        "coloring.stops[1].position: expected a number");
    assert_decode_fails(rr, "{\"coloring\":{\"stops\":[{},null]}}",
                        "coloring.stops[1]: null is not allowed");
    assert_decode_fails(rr, "{\"coloring\":{\"stops\":[{\"color\":{\"r\":-1}}]}}",
                        "coloring.stops[0].color.r: expected an integer in 0..4294967295, got -1");
    assert_decode_fails(rr, "{\"view\":5}", "view: expected an object (fractal.v1.View), got 5");
    assert_decode_fails(rr, "{\"julia\":{},\"mandelbrot\":{}}",
                        "mandelbrot: julia and mandelbrot are both set");
    assert_decode_fails(rr, "{\"maxIter\":1,\"max_iter\":2}", "max_iter: field max_iter given twice");
    assert_decode_fails(rr, "{\"width\":1,\"width\":1}", "given twice");
    assert_decode_fails(rr, "{\"device\":\"\\udc00\"}", "malformed JSON");
    assert_decode_fails(rr, "{\"device\":\"\xff\"}", "device: string is not valid UTF-8");
    assert_decode_fails(rr, "{\"width\":", "malformed JSON at byte 9");
    assert_decode_fails(rr, "{\"width\":1} x", "malformed JSON at byte 12");
    assert_decode_fails(rr, "{'width':1}", "malformed JSON at byte");
    assert_decode_fails(rr, "", "malformed JSON");
    assert_decode_fails(rr, "{\"width\":NaN}", "malformed JSON");
    assert_decode_fails(rr, "[{}]", "expected an object (fractal.v1.RenderRequest), got an array");
    assert_decode_fails(&fractal__v1__render_response__descriptor, "{\"data\":\"AP8Q!\"}",
                        "data: invalid base64");
    assert_decode_fails(&fractal__v1__render_response__descriptor, "{\"data\":\"A\"}",
                        "data: invalid base64");
    assert_decode_fails(job, "{\"createdUnixMs\":\"12x\"}", "createdUnixMs: expected an integer");
    assert_decode_fails(job, "{\"createdUnixMs\":1e17}", "createdUnixMs: integer 1e+17 is beyond 2^53");
    assert_decode_fails(job, "{\"createdUnixMs\":\"9223372036854775808\"}",
                        "expected an integer in -9223372036854775808..9223372036854775807");
    assert_decode_fails(job, "{\"errorCode\":2147483648}",
                        "errorCode: expected an integer in -2147483648..2147483647");
    assert_decode_fails(job, "{\"stats\":{\"samples\":\"-1\"}}",
                        "stats.samples: expected an integer in 0..18446744073709551615");
    assert_decode_fails(job, "{\"stats\":{\"samples\":\"18446744073709551616\"}}",
                        "stats.samples: expected an integer in 0..18446744073709551615");
    assert_decode_fails(job, "{\"request\":{\"coloring\":{\"interior\":{\"g\":\"x\"}}}}",
                        "request.coloring.interior.g: expected an integer, got \"x\"");
}

static void test_encode_rejects(void **state)
{
    Fractal__V1__RenderRequest req = FRACTAL__V1__RENDER_REQUEST__INIT;
    Fractal__V1__RenderStats stats = FRACTAL__V1__RENDER_STATS__INIT;
    char *devices[1] = {NULL};
    char *json = (char *)&json;
    (void)state;

    assert_int_equal(pjson_encode(&json, NULL), PJSON_ERR_INVALID);
    assert_null(json);
    /* proto3 strings are UTF-8; a stray Latin-1 byte would make JSON no parser accepts. */
    req.device = "caf\xe9";
    assert_int_equal(pjson_encode(&json, &req.base), PJSON_ERR_INVALID);
    assert_null(json);
    stats.n_devices = 1;
    stats.devices = devices;
    assert_int_equal(pjson_encode(&json, &stats.base), PJSON_ERR_INVALID);
    assert_null(json);
}

/* proto_wire: a NUL inside any string field is found on the wire, with the field's path; bytes
 * that are not a message are told apart. */
static void test_wire_nul_strings(void **state)
{
    /* coloring (10) { palette (1) = "vir\0dis" }, then device (13) = "cpu" */
    static const uint8_t nested[] = {0x52, 0x09, 0x0a, 0x07, 'v', 'i', 'r', 0, 'd', 'i', 's',
                                     0x6a, 0x03, 'c', 'p', 'u'};
    /* device = "cpu", then an unknown length-delimited field 99 holding a NUL */
    static const uint8_t unknown[] = {0x6a, 0x03, 'c', 'p', 'u', 0x9a, 0x06, 0x02, 'a', 0};
    static const uint8_t cut[] = {0x6a, 0x05, 'c', 'p'};
    static const uint8_t group[] = {0x0b};
    char path[64];

    (void)state;
    assert_int_equal(pwire_find_nul_string(&fractal__v1__render_request__descriptor, nested, sizeof(nested), path,
                                           sizeof(path)), 1);
    assert_string_equal(path, "coloring.palette");
    assert_int_equal(pwire_find_nul_string(&fractal__v1__render_request__descriptor, unknown, sizeof(unknown), path,
                                           sizeof(path)), 0);
    assert_string_equal(path, "");
    assert_int_equal(pwire_find_nul_string(&fractal__v1__render_request__descriptor, cut, sizeof(cut), path,
                                           sizeof(path)), -1);
    assert_int_equal(pwire_find_nul_string(&fractal__v1__render_request__descriptor, group, sizeof(group), path,
                                           sizeof(path)), -1);
    assert_int_equal(pwire_find_nul_string(&fractal__v1__render_request__descriptor, nested, 0, path,
                                           sizeof(path)), 0);
}

int test_proto_json_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_real_memo),
        cmocka_unit_test(test_render_request_round_trip),
        cmocka_unit_test(test_deep_view_round_trip),
        cmocka_unit_test(test_nan_infinity),
        cmocka_unit_test(test_job_int64),
        cmocka_unit_test(test_decode_accepts),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_wire_nul_strings),
    };

    return cmocka_run_group_tests_name("proto_json", tests, NULL, NULL);
}
