/* proto_json.c: any protobuf-c message to and from proto3-mapping JSON, driven by the message
 * descriptors alone (so every message of the proto works); cJSON parses and prints the text.
 * This file holds the shared helpers and the encoder; proto_json_decode.c the decoder. */
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

/* Bytes one value of `type` takes in a message or a repeated field's array; protobuf-c stores
 * enums as int-sized and bool as protobuf_c_boolean. */
size_t pjson_value_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(uint32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

char *pjson_dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);

    if (copy != NULL)
        memcpy(copy, s, n);
    return copy;
}

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* The lowerCamelCase JSON name of a proto field name, derived as protoc derives json_name (drop
 * each '_' and upper-case the character after it); protobuf-c 1.4 descriptors do not carry it.
 * Returns a malloc'd string, or NULL when out of memory. */
static char *json_name(const char *name)
{
    char *out = malloc(strlen(name) + 1), *p = out;
    bool upper = false;

    if (out == NULL)
        return NULL;
    for (; *name != '\0'; name++) {
        if (*name == '_') {
            upper = true;
            continue;
        }
        *p++ = upper ? ascii_upper(*name) : *name;
        upper = false;
    }
    *p = '\0';
    return out;
}

/* Whether `key` is the JSON name (see json_name()) of the proto field name `name`. */
bool pjson_is_json_name(const char *name, const char *key)
{
    bool upper = false;

    for (; *name != '\0'; name++) {
        if (*name == '_') {
            upper = true;
            continue;
        }
        if (*key++ != (upper ? ascii_upper(*name) : *name))
            return false;
        upper = false;
    }
    return *key == '\0';
}

/* Whether s is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
 * which proto3 requires of every string field. */
bool pjson_utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s != '\0') {
        uint32_t cp, min;
        size_t n;

        if (*s < 0x80) {
            s++;
            continue;
        }
        if ((*s & 0xE0) == 0xC0) {
            n = 1, cp = *s & 0x1F, min = 0x80;
        } else if ((*s & 0xF0) == 0xE0) {
            n = 2, cp = *s & 0x0F, min = 0x800;
        } else if ((*s & 0xF8) == 0xF0) {
            n = 3, cp = *s & 0x07, min = 0x10000;
        } else {
            return false;
        }
        /* A NUL terminator fails the continuation test, so this never reads past the end. */
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += n + 1;
    }
    return true;
}

/* Writes the shortest "%.*g" form of a finite v that reads back to the same value (as a float when
 * is_float), always with '.' as the decimal point: 0.1 is "0.1", not "0.10000000000000001". */
static void format_real_uncached(char *buf, size_t len, double v, bool is_float)
{
    /* 9 (float) and 17 (double) significant digits always read back exactly. Fewer suffice for
     * most values, down to 1 for the smallest subnormal (5e-324), so try from 1 up. */
    int max = is_float ? 9 : 17;
    char *w = buf;

    for (int prec = 1;; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (prec >= max)
            break;
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            break;
    }
    /* printf and strtod follow LC_NUMERIC, which a program may have set to a locale with a
     * decimal comma. The output holds only digits, sign, exponent and the decimal point, so any
     * other run of bytes is the decimal point: replace it with '.'. */
    for (const char *r = buf; *r != '\0';) {
        if (strchr("0123456789+-eE", *r) != NULL) {
            *w++ = *r++;
            continue;
        }
        *w++ = '.';
        while (*r != '\0' && strchr("0123456789+-eE", *r) == NULL)
            r++;
    }
    *w = '\0';
}

/* Recently formatted reals, per thread: a server writes the same resolved palette positions into
 * every request it records (65 stops for a built-in palette), and printf/strtod made the request
 * JSON cost ~140 us, most of a PNG tile's bookkeeping. Direct-mapped by the value's bits. */
#define REAL_MEMO_BITS 8
#define REAL_MEMO_SLOTS (1u << REAL_MEMO_BITS)
#define REAL_MEMO_TEXT 32

struct real_memo {
    uint64_t bits;                      /* of the value as a double */
    bool used, is_float;
    char text[REAL_MEMO_TEXT];
};

static _Thread_local struct real_memo real_memo[REAL_MEMO_SLOTS];

/* format_real_uncached's text for v, from the memo when it holds it. */
void pjson_format_real(char *buf, size_t len, double v, bool is_float)
{
    uint64_t bits;
    struct real_memo *m;

    memcpy(&bits, &v, sizeof bits);
    /* Multiplicative hash of the bits: floats widened to doubles differ only in their high bits. */
    m = &real_memo[(bits * 0x9e3779b97f4a7c15ull) >> (64 - REAL_MEMO_BITS)];
    if (!(m->used && m->bits == bits && m->is_float == is_float)) {
        format_real_uncached(m->text, sizeof m->text, v, is_float);
        m->bits = bits;
        m->is_float = is_float;
        m->used = true;
    }
    snprintf(buf, len, "%s", m->text);
}

/* ---- encoding ---- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Padded standard base64 of data, malloc'd; NULL when out of memory. */
static char *base64_encode(const uint8_t *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t n = (uint32_t)data[i] << 16;
        size_t left = len - i;

        if (left > 1)
            n |= (uint32_t)data[i + 1] << 8;
        if (left > 2)
            n |= data[i + 2];
        *p++ = b64_alphabet[(n >> 18) & 63];
        *p++ = b64_alphabet[(n >> 12) & 63];
        *p++ = left > 1 ? b64_alphabet[(n >> 6) & 63] : '=';
        *p++ = left > 2 ? b64_alphabet[n & 63] : '=';
    }
    *p = '\0';
    return out;
}

/* Whether field f of msg appears in the JSON; the rules are pjson_encode()'s. */
static bool field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    const void *member = CMEMBER(msg, f->offset);
    bool pointer = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE;

    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)CMEMBER(msg, f->quantifier_offset) > 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which;

        /* protobuf-c reads the case field as uint32_t too (the enum is int-sized). */
        memcpy(&which, CMEMBER(msg, f->quantifier_offset), sizeof which);
        if (which != f->id)
            return false;
        /* The selected member is written whatever its value: that is how presence survives.
         * A NULL pointer is skipped, as protobuf_c_message_pack skips it. */
        return !pointer || *(void *const *)member != NULL;
    }
    if (pointer) {
        const void *p = *(void *const *)member;

        /* Same test as protobuf_c_message_pack: a proto2 optional string still pointing at its
         * default was never set. */
        if (p == NULL)
            return false;
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
            return p != f->default_value;
        if (f->label == PROTOBUF_C_LABEL_NONE && f->type == PROTOBUF_C_TYPE_STRING)
            return *(const char *)p != '\0';
        return true;
    }
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(const protobuf_c_boolean *)CMEMBER(msg, f->quantifier_offset) != 0;
    if (f->type == PROTOBUF_C_TYPE_BYTES)
        return ((const ProtobufCBinaryData *)member)->len > 0;
    /* A proto3 scalar is written when not all-bits-zero: 0, false, the first enum value and +0.0
     * are omitted, -0.0 is kept. */
    static const unsigned char zero[sizeof(uint64_t)];
    return memcmp(member, zero, pjson_value_size(f->type)) != 0;
}

static int encode_message(cJSON **out, const ProtobufCMessage *msg);

/* Converts one value of field f (the singular member, or one element of a repeated field's
 * array) into a new cJSON item in *out. Returns 0, PJSON_ERR_INVALID or PJSON_ERR_NOMEM. */
static int encode_value(cJSON **out, const ProtobufCFieldDescriptor *f, const void *value)
{
    char buf[64];
    char *text = NULL;
    int err = 0;

    *out = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
        int32_t v;
        memcpy(&v, value, sizeof v);
        snprintf(buf, sizeof buf, "%" PRId32, v);
        *out = cJSON_CreateRaw(buf);
        break;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint32_t v;
        memcpy(&v, value, sizeof v);
        snprintf(buf, sizeof buf, "%" PRIu32, v);
        *out = cJSON_CreateRaw(buf);
        break;
    }
    /* 64-bit integers are strings: JavaScript and many JSON parsers hold numbers as doubles. */
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t v;
        memcpy(&v, value, sizeof v);
        snprintf(buf, sizeof buf, "%" PRId64, v);
        *out = cJSON_CreateString(buf);
        break;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v;
        memcpy(&v, value, sizeof v);
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        *out = cJSON_CreateString(buf);
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v;

        if (f->type == PROTOBUF_C_TYPE_FLOAT) {
            float fv;
            memcpy(&fv, value, sizeof fv);
            v = fv;
        } else {
            memcpy(&v, value, sizeof v);
        }
        /* cJSON would print the number itself, but as null for NaN, and without the sign of -0
         * or the shortest digits; a raw item prints our text verbatim. */
        if (isnan(v)) {
            *out = cJSON_CreateString("NaN");
        } else if (isinf(v)) {
            *out = cJSON_CreateString(v > 0 ? "Infinity" : "-Infinity");
        } else if (v == 0 && signbit(v)) {
            /* Not "-0": Python's json module reads that as the integer 0 and loses the sign. */
            *out = cJSON_CreateRaw("-0.0");
        } else {
            pjson_format_real(buf, sizeof buf, v, f->type == PROTOBUF_C_TYPE_FLOAT);
            *out = cJSON_CreateRaw(buf);
        }
        break;
    }
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean v;
        memcpy(&v, value, sizeof v);
        *out = cJSON_CreateBool(v != 0);
        break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev;
        int v;

        memcpy(&v, value, sizeof v);
        /* An open proto3 enum may hold a number with no name: write the number. */
        ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev != NULL) {
            *out = cJSON_CreateString(ev->name);
        } else {
            snprintf(buf, sizeof buf, "%d", v);
            *out = cJSON_CreateRaw(buf);
        }
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)value;

        if (s == NULL || !pjson_utf8_valid(s))
            return PJSON_ERR_INVALID;
        *out = cJSON_CreateString(s);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = value;

        if (bd->len > 0 && bd->data == NULL)
            return PJSON_ERR_INVALID;
        if ((text = base64_encode(bd->data, bd->len)) == NULL)
            return PJSON_ERR_NOMEM;
        *out = cJSON_CreateString(text);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)value;

        if (sub == NULL)
            return PJSON_ERR_INVALID;
        err = encode_message(out, sub);
        goto done;
    }
    default:
        return PJSON_ERR_INVALID;
    }
    if (*out == NULL)
        err = PJSON_ERR_NOMEM;
done:
    free(text);
    return err;
}

/* A repeated field of msg (with at least one element) as a new cJSON array in *out.
 * Returns 0, PJSON_ERR_INVALID or PJSON_ERR_NOMEM. */
static int encode_repeated(cJSON **out, const ProtobufCMessage *msg,
                           const ProtobufCFieldDescriptor *f)
{
    size_t n = *(const size_t *)CMEMBER(msg, f->quantifier_offset);
    const char *arr = *(const char *const *)CMEMBER(msg, f->offset);
    size_t size = pjson_value_size(f->type);
    cJSON *array = NULL, *item = NULL;
    int err;

    *out = NULL;
    if (arr == NULL)
        return PJSON_ERR_INVALID;
    if ((array = cJSON_CreateArray()) == NULL)
        return PJSON_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((err = encode_value(&item, f, arr + i * size)) < 0)
            goto done;
        if (!cJSON_AddItemToArray(array, item)) {
            err = PJSON_ERR_NOMEM;
            goto done;
        }
        item = NULL;
    }
    *out = array;
    array = NULL;
    err = 0;
done:
    cJSON_Delete(item);
    cJSON_Delete(array);
    return err;
}

/* msg as a new cJSON object in *out, fields in descriptor (field-number) order.
 * Returns 0, PJSON_ERR_INVALID or PJSON_ERR_NOMEM. */
static int encode_message(cJSON **out, const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    cJSON *obj = NULL, *item = NULL;
    char *key = NULL;
    int err;

    *out = NULL;
    if (desc == NULL || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return PJSON_ERR_INVALID;
    if ((obj = cJSON_CreateObject()) == NULL)
        return PJSON_ERR_NOMEM;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];

        if (!field_present(msg, f))
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            err = encode_repeated(&item, msg, f);
        else
            err = encode_value(&item, f, CMEMBER(msg, f->offset));
        if (err < 0)
            goto done;
        if ((key = json_name(f->name)) == NULL || !cJSON_AddItemToObject(obj, key, item)) {
            err = PJSON_ERR_NOMEM;
            goto done;
        }
        item = NULL;
        free(key);
        key = NULL;
    }
    *out = obj;
    obj = NULL;
    err = 0;
done:
    free(key);
    cJSON_Delete(item);
    cJSON_Delete(obj);
    return err;
}

int pjson_encode(char **out, const ProtobufCMessage *msg)
{
    cJSON *root = NULL;
    char *text = NULL;
    int err;

    *out = NULL;
    if (msg == NULL)
        return PJSON_ERR_INVALID;
    if ((err = encode_message(&root, msg)) < 0)
        goto done;
    if ((text = cJSON_PrintUnformatted(root)) == NULL) {
        err = PJSON_ERR_NOMEM;
        goto done;
    }
    /* cJSON allocates through hooks that a program may replace; the contract says free(), so the
     * caller gets a malloc'd copy. */
    if ((*out = pjson_dup_string(text)) == NULL)
        err = PJSON_ERR_NOMEM;
done:
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}
