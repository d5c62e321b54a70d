/* proto_json_decode.c: proto3-mapping JSON into any protobuf-c message, driven by its
 * descriptor: names, numbers (64-bit ones as strings too), enums by name or number, base64
 * bytes, nested and repeated fields, with an error naming the path of the first bad value. */
#include "proto_json.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto_json_internal.h"

/* One decoded value of any field type; decode_value() fills the member that matches the type and
 * the caller copies pjson_value_size(type) bytes of it into the message, so all live at offset 0. */
union value {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float flt;
    double dbl;
    protobuf_c_boolean boolean;
    char *str;
    ProtobufCBinaryData bytes;
    ProtobufCMessage *msg;
};

/* Decoder state: the path of the value being read ("view.center.re", "coloring.stops[1]") and the
 * caller's error buffer. */
struct dec {
    char path[256];
    size_t len;
    char *err;
    size_t errlen;
};

/* ---- decoding ---- */

/* Records "<path>: <message>" in the caller's buffer and returns code. */
PJSON_PRINTF(3, 4)
static int fail(struct dec *d, int code, const char *fmt, ...)
{
    va_list ap;
    int n = 0;

    if (d->errlen == 0)
        return code;
    if (d->len > 0)
        n = snprintf(d->err, d->errlen, "%s: ", d->path);
    if (n < 0 || (size_t)n >= d->errlen)
        return code;
    va_start(ap, fmt);
    vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* Appends a component to the path and returns the length to restore with path_pop(). A path too
 * long for the buffer is cut short; it only ever feeds an error message. */
PJSON_PRINTF(2, 3)
static size_t path_push(struct dec *d, const char *fmt, ...)
{
    size_t mark = d->len, room = sizeof d->path - d->len;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(d->path + d->len, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        d->len += (size_t)n < room ? (size_t)n : room - 1;
    return mark;
}

static void path_pop(struct dec *d, size_t mark)
{
    d->len = mark;
    d->path[mark] = '\0';
}

/* A short description of a JSON value for "got ..." in error messages, written into buf. */
static const char *describe(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v) ? "true" : "false";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsNumber(v)) {
        pjson_format_real(buf, len, v->valuedouble, false);
        return buf;
    }
    if (cJSON_IsString(v) && len >= 8) {
        /* Quoted, cut at 40 bytes, control characters replaced, to keep the message one line. */
        const char *s = v->valuestring;
        size_t i = 0, max = len - 6 < 40 ? len - 6 : 40;

        buf[i++] = '"';
        for (; *s != '\0' && i <= max; s++)
            buf[i++] = (unsigned char)*s < 0x20 ? '?' : *s;
        if (*s != '\0') {
            memcpy(buf + i, "...", 3);
            i += 3;
        }
        buf[i++] = '"';
        buf[i] = '\0';
        return buf;
    }
    return "an unsupported value";
}

/* Parses a string that holds a JSON number ("1.5", "1e3"): proto3 JSON lets numbers arrive quoted.
 * cJSON does the parsing so that it follows JSON's grammar and ignores the C locale. Returns
 * whether s was a number, with the value in *out. */
static bool parse_number_string(const char *s, double *out)
{
    cJSON *num = cJSON_ParseWithOpts(s, NULL, true);
    bool ok = cJSON_IsNumber(num);

    if (ok)
        *out = num->valuedouble;
    cJSON_Delete(num);
    return ok;
}

/* Parses a plain decimal integer string ("-12", "18446744073709551615") as a sign and a
 * magnitude. Returns 1 on success, 0 when s is not one, -1 when it overflows 64 bits. */
static int parse_decimal(const char *s, bool *neg, uint64_t *mag)
{
    uint64_t m = 0;

    *neg = *s == '-';
    if (*neg)
        s++;
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        unsigned digit;

        if (*s < '0' || *s > '9')
            return 0;
        digit = (unsigned)(*s - '0');
        if (m > (UINT64_MAX - digit) / 10) {
            /* Keep checking the rest: "99999999999999999999x" is not a number at all. */
            while (*++s != '\0')
                if (*s < '0' || *s > '9')
                    return 0;
            return -1;
        }
        m = m * 10 + digit;
    }
    *mag = m;
    return 1;
}

/* Reads an integer in [min, max] from a JSON number or a numeric string into *out (as int64_t
 * when min < 0, else as uint64_t). A sign and a magnitude carry the value so that both the
 * int64 and the uint64 ranges fit. Returns 0 or PJSON_ERR_INVALID with the error recorded. */
static int get_integer(struct dec *d, const cJSON *v, int64_t min, uint64_t max, union value *out)
{
    char got[64], range[64];
    bool neg = false;
    uint64_t mag = 0;
    double num;
    int r = 0;

    if (min < 0)
        snprintf(range, sizeof range, "%" PRId64 "..%" PRIu64, min, max);
    else
        snprintf(range, sizeof range, "0..%" PRIu64, max);
    if (cJSON_IsString(v) && (r = parse_decimal(v->valuestring, &neg, &mag)) != 0) {
        if (r < 0)
            goto out_of_range;
        goto check_range;
    }
    if (cJSON_IsNumber(v))
        num = v->valuedouble;
    else if (!cJSON_IsString(v) || !parse_number_string(v->valuestring, &num))
        return fail(d, PJSON_ERR_INVALID, "expected an integer, got %s",
                    describe(v, got, sizeof got));
    if (!isfinite(num))
        goto out_of_range;
    if (num != trunc(num))
        return fail(d, PJSON_ERR_INVALID, "expected an integer, got %s",
                    describe(v, got, sizeof got));
    if (fabs(num) >= EXACT_INT_LIMIT) {
        if (max < (uint64_t)EXACT_INT_LIMIT)
            goto out_of_range;
        return fail(d, PJSON_ERR_INVALID,
                    "integer %s is beyond 2^53 and may have been rounded; write its digits as a string",
                    describe(v, got, sizeof got));
    }
    neg = num < 0;
    mag = (uint64_t)fabs(num);
check_range:
    if (neg && mag > 0) {
        /* -(min + 1) + 1 is |min| computed without overflowing INT64_MIN. */
        if (min >= 0 || mag > (uint64_t)(-(min + 1)) + 1)
            goto out_of_range;
        out->i64 = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
        return 0;
    }
    if (mag > max)
        goto out_of_range;
    if (min < 0)
        out->i64 = (int64_t)mag;
    else
        out->u64 = mag;
    return 0;
out_of_range:
    return fail(d, PJSON_ERR_INVALID, "expected an integer in %s, got %s", range,
                describe(v, got, sizeof got));
}

/* Reads a double (or a float, when is_float) from a JSON number, a numeric string or one of
 * "NaN", "Infinity", "-Infinity". Returns 0 or PJSON_ERR_INVALID with the error recorded. */
static int get_real(struct dec *d, const cJSON *v, bool is_float, double *out)
{
    char got[64];
    double num;

    if (cJSON_IsString(v) && strcmp(v->valuestring, "NaN") == 0) {
        *out = NAN;
        return 0;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, "Infinity") == 0) {
        *out = INFINITY;
        return 0;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, "-Infinity") == 0) {
        *out = -INFINITY;
        return 0;
    }
    if (cJSON_IsNumber(v))
        num = v->valuedouble;
    else if (!cJSON_IsString(v) || !parse_number_string(v->valuestring, &num))
        return fail(d, PJSON_ERR_INVALID, "expected a number, got %s",
                    describe(v, got, sizeof got));
    /* A literal too large for a double reaches us as an infinity: refuse it rather than turn
     * 1e999 into Infinity. Likewise a float field refuses what a float cannot hold. */
    if (!isfinite(num) || (is_float && fabs(num) > FLT_MAX))
        return fail(d, PJSON_ERR_INVALID, "number out of range for a %s",
                    is_float ? "float" : "double");
    *out = num;
    return 0;
}

static int b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decodes standard or URL-safe base64, padded or not, into out (data NULL when empty, else
 * malloc'd). Returns 0, PJSON_ERR_INVALID for bad text, or PJSON_ERR_NOMEM. */
static int base64_decode(const char *s, ProtobufCBinaryData *out)
{
    size_t len = strlen(s), pad = 0, n = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    uint8_t *data;

    out->len = 0;
    out->data = NULL;
    while (len > 0 && s[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
        return PJSON_ERR_INVALID;
    for (size_t i = 0; i < len; i++)
        if (b64_digit((unsigned char)s[i]) < 0)
            return PJSON_ERR_INVALID;
    if (len == 0)
        return 0;
    if ((data = malloc(len / 4 * 3 + 2)) == NULL)
        return PJSON_ERR_NOMEM;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 6) | (uint32_t)b64_digit((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            data[n++] = (uint8_t)(acc >> bits);
        }
    }
    out->data = data;
    out->len = n;
    return 0;
}

static int decode_message(struct dec *d, const ProtobufCMessageDescriptor *desc, const cJSON *obj,
                          ProtobufCMessage **out);

/* Reads one JSON value of field f into *out (the union member that matches f's type); strings,
 * bytes and messages are newly allocated and belong to the caller.
 * Returns 0, PJSON_ERR_INVALID or PJSON_ERR_NOMEM, with the error recorded. */
static int decode_value(struct dec *d, const ProtobufCFieldDescriptor *f, const cJSON *v,
                        union value *out)
{
    char got[64];
    double num;
    int err;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((err = get_integer(d, v, INT32_MIN, INT32_MAX, out)) < 0)
            return err;
        out->i32 = (int32_t)out->i64;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return get_integer(d, v, INT64_MIN, INT64_MAX, out);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((err = get_integer(d, v, 0, UINT32_MAX, out)) < 0)
            return err;
        out->u32 = (uint32_t)out->u64;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return get_integer(d, v, 0, UINT64_MAX, out);
    case PROTOBUF_C_TYPE_FLOAT:
        if ((err = get_real(d, v, true, &num)) < 0)
            return err;
        out->flt = (float)num;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return get_real(d, v, false, &out->dbl);
    case PROTOBUF_C_TYPE_BOOL:
        if (!cJSON_IsBool(v))
            return fail(d, PJSON_ERR_INVALID, "expected true or false, got %s",
                        describe(v, got, sizeof got));
        out->boolean = cJSON_IsTrue(v) ? 1 : 0;
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev;

        if (cJSON_IsString(v)) {
            if ((ev = protobuf_c_enum_descriptor_get_value_by_name(ed, v->valuestring)) == NULL)
                return fail(d, PJSON_ERR_INVALID, "unknown value %s for enum %s",
                            describe(v, got, sizeof got), ed->name);
            out->i32 = ev->value;
            return 0;
        }
        if (!cJSON_IsNumber(v))
            return fail(d, PJSON_ERR_INVALID, "expected a %s name or number, got %s", ed->name,
                        describe(v, got, sizeof got));
        /* A proto3 enum is open: any int32 is a valid value, named or not. */
        if ((err = get_integer(d, v, INT32_MIN, INT32_MAX, out)) < 0)
            return err;
        out->i32 = (int32_t)out->i64;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!cJSON_IsString(v))
            return fail(d, PJSON_ERR_INVALID, "expected a string, got %s",
                        describe(v, got, sizeof got));
        if (!pjson_utf8_valid(v->valuestring))
            return fail(d, PJSON_ERR_INVALID, "string is not valid UTF-8");
        if ((out->str = pjson_dup_string(v->valuestring)) == NULL)
            return fail(d, PJSON_ERR_NOMEM, "out of memory");
        return 0;
    case PROTOBUF_C_TYPE_BYTES:
        if (!cJSON_IsString(v))
            return fail(d, PJSON_ERR_INVALID, "expected a base64 string, got %s",
                        describe(v, got, sizeof got));
        if ((err = base64_decode(v->valuestring, &out->bytes)) == PJSON_ERR_NOMEM)
            return fail(d, err, "out of memory");
        if (err < 0)
            return fail(d, err, "invalid base64");
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return decode_message(d, f->descriptor, v, &out->msg);
    }
    return fail(d, PJSON_ERR_INTERNAL, "field type %d is not supported", (int)f->type);
}

/* Reads a JSON array into the empty repeated field f of msg. The array pointer goes into msg
 * first and the count grows one element at a time, so msg can be freed with
 * protobuf_c_message_free_unpacked() at any point. Returns 0 or a negative error. */
static int decode_repeated(struct dec *d, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                           const cJSON *v)
{
    size_t *count = MEMBER(msg, f->quantifier_offset);
    size_t size = pjson_value_size(f->type), n = 0;
    char got[64];
    char *arr;
    int err;

    if (!cJSON_IsArray(v))
        return fail(d, PJSON_ERR_INVALID, "expected an array, got %s",
                    describe(v, got, sizeof got));
    for (const cJSON *e = v->child; e != NULL; e = e->next)
        n++;
    if (n == 0)
        return 0;
    if ((arr = malloc(n * size)) == NULL)
        return fail(d, PJSON_ERR_NOMEM, "out of memory");
    memcpy(MEMBER(msg, f->offset), &arr, sizeof arr);
    for (const cJSON *e = v->child; e != NULL; e = e->next) {
        size_t mark = path_push(d, "[%zu]", *count);
        union value val;

        if (cJSON_IsNull(e))
            return fail(d, PJSON_ERR_INVALID, "null is not allowed in a repeated field");
        if ((err = decode_value(d, f, e, &val)) < 0)
            return err;
        memcpy(arr + *count * size, &val, size);
        (*count)++;
        path_pop(d, mark);
    }
    return 0;
}

/* Reads one key/value pair of a JSON object into msg. seen[i] marks the fields already given, to
 * refuse a field named twice (say as "maxIter" and "max_iter").
 * Returns 0 or a negative error, with the error recorded. */
static int decode_field(struct dec *d, ProtobufCMessage *msg, unsigned char *seen, const cJSON *v)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    const ProtobufCFieldDescriptor *f = NULL;
    union value val;
    unsigned i;
    int err;

    for (i = 0; i < desc->n_fields; i++) {
        f = &desc->fields[i];
        if (strcmp(f->name, v->string) == 0 || pjson_is_json_name(f->name, v->string))
            break;
    }
    if (i == desc->n_fields)
        return fail(d, PJSON_ERR_INVALID, "unknown field \"%s\" in %s", v->string, desc->name);
    if (seen[i])
        return fail(d, PJSON_ERR_INVALID, "field %s given twice", f->name);
    seen[i] = 1;
    /* proto3 JSON: null means the field's default, i.e. leave it unset. */
    if (cJSON_IsNull(v))
        return 0;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return decode_repeated(d, msg, f, v);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which;

        memcpy(&which, CMEMBER(msg, f->quantifier_offset), sizeof which);
        if (which != 0 && which != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(desc, which);
            return fail(d, PJSON_ERR_INVALID,
                        "%s and %s are both set, but they are members of one oneof",
                        other != NULL ? other->name : "another field", f->name);
        }
    }
    if ((err = decode_value(d, f, v, &val)) < 0)
        return err;
    /* The member still holds its initial default (each field is read once, and a oneof only one
     * member), which the message does not own: overwrite it without freeing. */
    memcpy(MEMBER(msg, f->offset), &val, pjson_value_size(f->type));
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t id = f->id;
        memcpy(MEMBER(msg, f->quantifier_offset), &id, sizeof id);
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
        protobuf_c_boolean has = 1;
        memcpy(MEMBER(msg, f->quantifier_offset), &has, sizeof has);
    }
    return 0;
}

/* Reads a JSON object into a new message of type desc in *out, allocated piece by piece with
 * malloc as protobuf_c_message_unpack does, so protobuf_c_message_free_unpacked() frees it.
 * Returns 0 or a negative error, with the error recorded. */
static int decode_message(struct dec *d, const ProtobufCMessageDescriptor *desc, const cJSON *obj,
                          ProtobufCMessage **out)
{
    ProtobufCMessage *msg = NULL;
    unsigned char *seen = NULL;
    char got[64];
    int err;

    *out = NULL;
    if (!cJSON_IsObject(obj))
        return fail(d, PJSON_ERR_INVALID, "expected an object (%s), got %s", desc->name,
                    describe(obj, got, sizeof got));
    if ((msg = calloc(1, desc->sizeof_message)) == NULL ||
        (seen = calloc(desc->n_fields + 1, 1)) == NULL) {
        err = fail(d, PJSON_ERR_NOMEM, "out of memory");
        goto done;
    }
    desc->message_init(msg);
    for (const cJSON *v = obj->child; v != NULL; v = v->next) {
        size_t mark = path_push(d, "%s%s", d->len > 0 ? "." : "", v->string);

        if ((err = decode_field(d, msg, seen, v)) < 0)
            goto done;
        path_pop(d, mark);
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        if (desc->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
            err = fail(d, PJSON_ERR_INVALID, "missing required field %s", desc->fields[i].name);
            goto done;
        }
    }
    *out = msg;
    msg = NULL;
    err = 0;
done:
    free(seen);
    if (msg != NULL) {
        /* msg is complete enough to free at every step: see decode_repeated and decode_field. */
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return err;
}

int pjson_decode(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *json,
                 char *err, size_t errlen)
{
    struct dec d = {.len = 0, .err = err, .errlen = errlen};
    const char *end = NULL;
    cJSON *root = NULL;
    int rc;

    *out = NULL;
    d.path[0] = '\0';
    if (errlen > 0)
        err[0] = '\0';
    if (desc == NULL || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
        desc->message_init == NULL)
        return fail(&d, PJSON_ERR_INVALID, "not a protobuf-c message descriptor");
    if (json == NULL)
        return fail(&d, PJSON_ERR_INVALID, "no JSON text");
    if ((root = cJSON_ParseWithOpts(json, &end, true)) == NULL) {
        /* cJSON tells only where it stopped; running out of memory looks the same. */
        rc = fail(&d, PJSON_ERR_INVALID, "malformed JSON at byte %zu",
                  end != NULL ? (size_t)(end - json) : (size_t)0);
        goto done;
    }
    rc = decode_message(&d, desc, root, out);
done:
    cJSON_Delete(root);
    return rc;
}
