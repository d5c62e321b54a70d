/* proto_json.h: any protobuf-c message to and from JSON, following the proto3 JSON mapping
 * (https://protobuf.dev/programming-guides/proto3/#json). Shared by the server (the request an
 * image was made from goes into its PNG text chunk) and the client (`fractal render --from`). */
#ifndef FRACTALD_PROTO_JSON_H
#define FRACTALD_PROTO_JSON_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Failures. proto/ sits below server/ and client/, so it cannot use their codes; these take the
 * same values as the server's ERR_INVALID, ERR_NOMEM and ERR_INTERNAL so that a caller can pass
 * them up unchanged. */
enum pjson_err {
    PJSON_OK = 0,
    PJSON_ERR_INVALID = -1, /* the message or the JSON text is not valid; see the err buffer */
    PJSON_ERR_NOMEM = -4,   /* an allocation failed */
    PJSON_ERR_INTERNAL = -12
};

/* Writes `msg` as compact JSON text into *out: lowerCamelCase keys in field-number order, enums by
 * value name (a number where the value has no name), 64-bit integers as strings, doubles and floats
 * in the fewest digits that read back to the same bits, NaN and infinities as "NaN", "Infinity",
 * "-Infinity", bytes as padded standard base64, repeated fields as arrays.
 * Presence is kept: a set member of a oneof (including each `oneof opt_<name>`) is always written,
 * even when it is zero; a proto3 plain scalar is written only when it differs from zero / "" /
 * false (-0.0 counts as set, and is written "-0.0"); a message field is written when its pointer
 * is not NULL; a proto2 optional field when its has_ flag is set.
 * *out is allocated with malloc and belongs to the caller, who frees it with free(); it is NULL
 * on failure. Returns 0, PJSON_ERR_INVALID when msg is NULL, its descriptor is not a message
 * descriptor, a string is not valid UTF-8 or a repeated string element is NULL, or
 * PJSON_ERR_NOMEM. */
int pjson_encode(char **out, const ProtobufCMessage *msg);

/* Reads JSON text (NUL-terminated, one object, nothing but whitespace after it) into a new
 * message of type `desc`. Keys may be the lowerCamelCase JSON name or the proto field name; enums
 * may be value names or any int32 number (proto3 enums are open); 64-bit integers numbers or
 * strings (a number above 2^53 in magnitude is refused, since it may already have been rounded:
 * write it as a string); doubles numbers or "NaN" / "Infinity" / "-Infinity" / a numeric string;
 * null leaves a field unset.
 * Unknown and repeated keys, two members of one oneof, a value of the wrong type, an integer out
 * of its field's range or not integral, an unknown enum name, invalid base64 or UTF-8, a missing
 * proto2 required field and malformed JSON are all errors.
 * On success *out is a message that protobuf_c_message_free_unpacked(*out, NULL) frees (every part
 * is malloc'd, as protobuf_c_message_unpack does with the default allocator); it belongs to the
 * caller. On failure *out is NULL and, when errlen > 0, err holds one line naming the field path
 * and the problem, e.g. "view.center.re: expected a number, got \"abc\"".
 * Returns 0, PJSON_ERR_INVALID or PJSON_ERR_NOMEM. */
int pjson_decode(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *json,
                 char *err, size_t errlen);

#endif
