/* fuzz_json.c: the proto3 JSON mapping (proto/proto_json.h) on arbitrary text: pjson_decode into
 * RenderRequest (what `fractal render --from` reads out of a PNG) and into the messages around it
 * that carry the mapping's other types (int64, bytes, repeated strings and messages), then back
 * with pjson_encode. Whatever decodes must encode (decoding checks UTF-8), and from then on the
 * round trip is stable: the encoded text decodes to the same message (same wire bytes) and
 * encodes to the same text, and its wire bytes survive protobuf-c's unpack and pack unchanged. */
#include <stdlib.h>
#include <string.h>

#include "fractal/v1/fractal.pb-c.h"
#include "fuzz_util.h"
#include "proto_json.h"

static const ProtobufCMessageDescriptor *const descriptors[] = {
    &fractal__v1__render_request__descriptor,   /* the PNG's request */
    &fractal__v1__list_jobs_response__descriptor, /* jobs: int64, enums, nested requests and stats */
    &fractal__v1__render_event__descriptor,     /* oneof of messages, bytes (ImageChunk.data) */
    &fractal__v1__server_stats__descriptor,     /* repeated messages, doubles */
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    uint8_t *buf;

    *len = protobuf_c_message_get_packed_size(m);
    if (!(buf = malloc(*len ? *len : 1)))
        abort();
    FUZZ_CHECK(protobuf_c_message_pack(m, buf) == *len, "pack wrote another size than it computed");
    return buf;
}

static void round_trip(const ProtobufCMessageDescriptor *desc, const ProtobufCMessage *m1)
{
    ProtobufCMessage *m2 = NULL, *m3 = NULL;
    char *j1 = NULL, *j2 = NULL, *j3 = NULL, err[256];
    uint8_t *b1, *b2;
    size_t n1, n2;
    int e;

    e = pjson_encode(&j1, m1);
    FUZZ_CHECK(e == 0 && j1, "%s decodes but does not encode (%d)", desc->name, e);
    e = pjson_decode(&m2, desc, j1, err, sizeof(err));
    FUZZ_CHECK(e == 0, "%s: encoded text does not decode: %s: %s", desc->name, err, j1);
    b1 = pack(m1, &n1);
    b2 = pack(m2, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: decode(encode(m)) is another message: %s", desc->name,
               j1);
    e = pjson_encode(&j2, m2);
    FUZZ_CHECK(e == 0 && strcmp(j1, j2) == 0, "%s: encode is not stable: %s then %s", desc->name, j1,
               j2 ? j2 : "(failed)");

    /* The wire form is stable too (what the job store and the RPCs carry). It is compared as
     * bytes, not as JSON text: protobuf-c does not write a proto3 plain double or float that
     * equals 0, so a -0.0 that the JSON keeps ("-0.0" counts as set) comes back from the wire as
     * 0, which is protobuf-c's rule and the same number. */
    m3 = protobuf_c_message_unpack(desc, NULL, n1, b1);
    FUZZ_CHECK(m3 != NULL, "%s: packed bytes do not unpack: %s", desc->name, j1);
    free(b2);
    b2 = pack(m3, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: pack/unpack/pack is not stable: %s", desc->name, j1);
    e = pjson_encode(&j3, m3);
    FUZZ_CHECK(e == 0 && j3, "%s: an unpacked message does not encode (%d)", desc->name, e);

    protobuf_c_message_free_unpacked(m3, NULL);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(b1);
    free(b2);
    free(j1);
    free(j2);
    free(j3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size), err[256];

    for (size_t i = 0; i < sizeof(descriptors) / sizeof(descriptors[0]); i++) {
        ProtobufCMessage *m = NULL;
        int e;

        err[0] = '\0';
        e = pjson_decode(&m, descriptors[i], text, err, sizeof(err));
        if (e == 0) {
            FUZZ_CHECK(m != NULL, "pjson_decode succeeded without a message");
            round_trip(descriptors[i], m);
            protobuf_c_message_free_unpacked(m, NULL);
        } else {
            FUZZ_CHECK(m == NULL, "pjson_decode failed but left a message");
            FUZZ_CHECK(e == PJSON_ERR_INVALID || e == PJSON_ERR_NOMEM, "pjson_decode returned %d", e);
            FUZZ_CHECK(e != PJSON_ERR_INVALID || err[0] != '\0', "pjson_decode refused without a message");
        }
    }
    free(text);
    return 0;
}
