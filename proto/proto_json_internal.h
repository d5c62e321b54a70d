/* proto_json_internal.h: what the two halves of the JSON mapping share (proto_json.c encodes and
 * holds the helpers, proto_json_decode.c decodes): member access, number limits, and the helpers
 * below. Internal to proto/. */
#ifndef FRACTAL_PROTO_JSON_INTERNAL_H
#define FRACTAL_PROTO_JSON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#if defined(__GNUC__)
#define PJSON_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PJSON_PRINTF(fmt, args)
#endif

#define MEMBER(msg, offset) ((void *)((char *)(msg) + (offset)))
#define CMEMBER(msg, offset) ((const void *)((const char *)(msg) + (offset)))

/* 2^53: the largest magnitude below which every integer has an exact double. A JSON number above
 * it may already have been rounded by the parser, so a 64-bit field must receive it as a string. */
#define EXACT_INT_LIMIT 9007199254740992.0

/* Bytes one value of `type` takes in a message or a repeated field's array. */
size_t pjson_value_size(ProtobufCType type);

/* A malloc'ed copy of s, or NULL when out of memory. */
char *pjson_dup_string(const char *s);

/* Whether `key` is the JSON name (lowerCamelCase, as protoc derives json_name) of the proto field
 * name `name`. */
bool pjson_is_json_name(const char *name, const char *key);

/* Whether str is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF), which proto3 requires of every string field. */
bool pjson_utf8_valid(const char *str);

/* The shortest "%.*g" text of a finite v that reads back to the same value (as a float when
 * is_float), with '.' as the decimal point; memoised per thread. */
void pjson_format_real(char *buf, size_t len, double v, bool is_float);

#endif
