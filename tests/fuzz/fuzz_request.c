/* fuzz_request.c: what a Render, RenderStream or SubmitJob call does with the bytes of its request
 * (rpc_unpack, then request_to_spec against the default limits and a device list holding the CPU
 * engine), and the resolved request written into PNGs (JSON) and the job store (bytes), which must
 * validate again into the same render_spec. The same bytes are also read as the JobRef and
 * ListJobsRequest of the job calls. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "devices.h"
#include "err.h"
#include "fractal/v1/fractal.pb-c.h"
#include "fuzz_util.h"
#include "log.h"
#include "proto_json.h"
#include "proto_wire.h"
#include "request.h"

static struct config cfg;
static struct devices devs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_min_level = LOG_OFF;
    config_defaults(&cfg);
    /* The CPU engine's description only: no engine, no OpenCL discovery. */
    if (devices_init(&devs, 2) < 0)
        abort();
    return 0;
}

/* rpc_unpack: the message, or NULL when it does not parse or holds a string with a NUL byte. */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size, data);
    char path[128];
    int nul = pwire_find_nul_string(desc, data, size, path, sizeof(path));

    /* proto_wire.h: -1 only for bytes that protobuf-c refuses too. */
    FUZZ_CHECK(!(m && nul < 0), "pwire_find_nul_string calls malformed a %s that protobuf-c reads", desc->name);
    FUZZ_CHECK(nul != 1 || path[0] != '\0', "a NUL string with no path in a %s", desc->name);
    if (m && nul != 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
    }
    return m;
}

/* What spec.h promises of every render_spec request_to_spec makes. */
static void check_spec(const struct render_spec *s, int device_index)
{
    const struct spec_coloring *c = &s->coloring;

    FUZZ_CHECK(device_index >= 0 && (size_t)device_index < devs.count, "device index %d", device_index);
    FUZZ_CHECK(s->width >= 1 && s->width <= cfg.limits.max_side && s->height >= 1 &&
               s->height <= cfg.limits.max_side, "size %ux%u", s->width, s->height);
    FUZZ_CHECK(s->region.width >= 1 && s->region.height >= 1 &&
               (uint64_t)s->region.x + s->region.width <= s->width &&
               (uint64_t)s->region.y + s->region.height <= s->height, "region outside the image");
    FUZZ_CHECK(s->max_iter >= 1 && s->max_iter <= cfg.limits.max_iter, "max_iter %u", s->max_iter);
    FUZZ_CHECK(isfinite(s->escape_radius) && s->escape_radius > 1.0, "escape_radius %g", s->escape_radius);
    /* A deep view's width may round to 0 as a double: its text holds it. */
    FUZZ_CHECK(isfinite(s->view_width) && (s->view_width > 0.0 || s->deep), "view_width %g", s->view_width);
    FUZZ_CHECK(isfinite(s->center_re) && isfinite(s->center_im) && isfinite(s->c_re) && isfinite(s->c_im),
               "a coordinate is not finite");
    FUZZ_CHECK(s->precision == SPEC_FP32 || s->precision == SPEC_FP64 || spec_precision_is_deep(s->precision),
               "precision %d", (int)s->precision);
    FUZZ_CHECK(!spec_precision_is_deep(s->precision) || s->deep, "a perturbation spec without its deep view");
    FUZZ_CHECK(!s->deep || (s->deep->center_re[0] && s->deep->center_im[0] && s->deep->width[0]),
               "a deep view with an empty string");
    FUZZ_CHECK((unsigned)s->format <= SPEC_RAW_F32, "format %d", (int)s->format);
    FUZZ_CHECK(s->supersample >= 1 && s->supersample <= 8, "supersample %u", s->supersample);
    FUZZ_CHECK(c->nstops >= 2 && c->nstops <= SPEC_MAX_STOPS, "nstops %u", c->nstops);
    FUZZ_CHECK(c->pos[0] == 0.0f && c->pos[c->nstops - 1] == 1.0f, "palette not over 0..1");
    for (uint32_t i = 1; i < c->nstops; i++)
        FUZZ_CHECK(c->pos[i] >= c->pos[i - 1], "stop %u below the one before", i);
    FUZZ_CHECK(isfinite(c->cycle) && c->cycle >= 0.0 && c->offset >= 0.0 && c->offset <= 1.0, "cycle, offset");
    FUZZ_CHECK(memchr(s->device, 0, sizeof(s->device)) != NULL, "device not terminated");
}

/* Whether two specs describe the same render. Numbers compare with ==, so -0.0 equals 0.0: protobuf-c
 * does not write a proto3 plain double that equals 0, so a -0.0 (a centre, an offset) comes back from
 * the packed bytes as 0, the same number, where the JSON keeps "-0.0". */
static bool same_spec(const struct render_spec *a, const struct render_spec *b)
{
    const struct spec_coloring *x = &a->coloring, *y = &b->coloring;

    if (a->fractal != b->fractal || a->c_re != b->c_re || a->c_im != b->c_im || a->center_re != b->center_re ||
        a->center_im != b->center_im || a->view_width != b->view_width || a->width != b->width ||
        a->height != b->height || memcmp(&a->region, &b->region, sizeof(a->region)) != 0 ||
        a->max_iter != b->max_iter || a->escape_radius != b->escape_radius || a->precision != b->precision ||
        a->format != b->format || a->supersample != b->supersample || strcmp(a->device, b->device) != 0 ||
        a->rect_fill != b->rect_fill || a->precision_asked != b->precision_asked || !a->deep != !b->deep)
        return false;
    if (a->deep && (strcmp(a->deep->center_re, b->deep->center_re) != 0 ||
                    strcmp(a->deep->center_im, b->deep->center_im) != 0 || strcmp(a->deep->width, b->deep->width) != 0))
        return false;
    if (x->nstops != y->nstops || x->cycle != y->cycle || x->offset != y->offset || x->reverse != y->reverse ||
        memcmp(&x->interior, &y->interior, sizeof(x->interior)) != 0)
        return false;
    for (uint32_t i = 0; i < x->nstops; i++)
        if (x->pos[i] != y->pos[i] || memcmp(&x->rgb[i], &y->rgb[i], sizeof(x->rgb[i])) != 0)
            return false;
    return true;
}

/* The resolved request `req` (from JSON or bytes) must validate into the same spec as *want. */
static void check_again(const Fractal__V1__RenderRequest *req, const struct render_spec *want, bool streamed,
                        const char *how)
{
    struct render_spec again;
    char msg[1024];
    int device_index = -1;
    int err = request_to_spec(&again, &device_index, req, &cfg.limits, &devs, streamed, msg, sizeof(msg));

    FUZZ_CHECK(err == 0, "the resolved request (%s) is refused: %s", how, msg);
    FUZZ_CHECK(same_spec(&again, want), "the resolved request (%s) gives another spec", how);
    render_spec_dispose(&again);
}

static void round_trip(const struct render_spec *spec, bool streamed)
{
    char *json = NULL, *text = NULL, jerr[256];
    uint8_t *bytes = NULL;
    size_t len = 0;
    ProtobufCMessage *m = NULL;
    int err;

    err = request_json_from_spec(&json, spec);
    FUZZ_CHECK(err == 0 && json, "request_json_from_spec: %d", err);
    err = pjson_decode(&m, &fractal__v1__render_request__descriptor, json, jerr, sizeof(jerr));
    FUZZ_CHECK(err == 0, "the resolved request does not read back: %s: %s", jerr, json);
    check_again((const Fractal__V1__RenderRequest *)m, spec, streamed, "JSON");
    protobuf_c_message_free_unpacked(m, NULL);

    err = request_pack_from_spec(&bytes, &len, spec);
    FUZZ_CHECK(err == 0 && bytes, "request_pack_from_spec: %d", err);
    m = unpack(&fractal__v1__render_request__descriptor, bytes, len);
    FUZZ_CHECK(m != NULL, "the packed resolved request does not unpack");
    check_again((const Fractal__V1__RenderRequest *)m, spec, streamed, "bytes");
    protobuf_c_message_free_unpacked(m, NULL);

    err = request_text_for_image(&text, spec);
    FUZZ_CHECK(err == 0, "request_text_for_image: %d", err);
    FUZZ_CHECK((spec->format == SPEC_PNG || spec->format == SPEC_PNG16) == (text != NULL), "text for format %d",
               (int)spec->format);
    if (text)
        FUZZ_CHECK(strcmp(text, json) == 0, "the image's text is not the resolved request");
    free(text);
    free(bytes);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Fractal__V1__RenderRequest *req;
    Fractal__V1__JobRef *ref;
    Fractal__V1__ListJobsRequest *list;

    /* grpc refuses bigger messages before any handler sees them (max_request_bytes). */
    if (size > cfg.limits.max_request_bytes)
        return 0;

    if ((req = (Fractal__V1__RenderRequest *)unpack(&fractal__v1__render_request__descriptor, data, size))) {
        /* Unary Render, then RenderStream and jobs (no reply-size limit on raw images). */
        for (int streamed = 0; streamed < 2; streamed++) {
            struct render_spec spec;
            char msg[1024];
            int device_index = -1;
            int err = request_to_spec(&spec, &device_index, req, &cfg.limits, &devs, streamed, msg, sizeof(msg));

            if (err == 0) {
                check_spec(&spec, device_index);
                round_trip(&spec, streamed);
                render_spec_dispose(&spec);
            } else {
                FUZZ_CHECK(spec.deep == NULL, "a refused request left its deep view");
                FUZZ_CHECK(err == ERR_INVALID || err == ERR_EXHAUSTED || err == ERR_PRECONDITION,
                           "request_to_spec returned %d", err);
                FUZZ_CHECK(msg[0] != '\0', "a refusal without a message (%d)", err);
            }
        }
        protobuf_c_message_free_unpacked(&req->base, NULL);
    }

    /* read_job_ref and do_list. */
    if ((ref = (Fractal__V1__JobRef *)unpack(&fractal__v1__job_ref__descriptor, data, size))) {
        FUZZ_CHECK(ref->id != NULL, "JobRef.id is NULL");
        protobuf_c_message_free_unpacked(&ref->base, NULL);
    }
    if ((list = (Fractal__V1__ListJobsRequest *)unpack(&fractal__v1__list_jobs_request__descriptor, data, size)))
        protobuf_c_message_free_unpacked(&list->base, NULL);
    return 0;
}
