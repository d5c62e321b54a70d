/* proto_wire.c: a minimal walker over protobuf wire bytes, guided by protobuf-c's descriptors,
 * for the checks of proto_wire.h. */
#include "proto_wire.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 32

/* Reads a varint at *p (below end) into *out; returns 0, or -1 if it is cut or longer than 10 bytes. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;

    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b;
        if (*p >= end)
            return -1;
        b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static const ProtobufCFieldDescriptor *field_by_number(const ProtobufCMessageDescriptor *desc, uint64_t number)
{
    for (unsigned i = 0; i < desc->n_fields; i++)
        if (desc->fields[i].id == number)
            return &desc->fields[i];
    return NULL;
}

/* Appends ".name" (or "name" at the start) and, for repeated fields, "[index]" to path. */
static void path_push(char *path, size_t pathlen, size_t at, const char *name, int index)
{
    if (at >= pathlen)
        return;
    if (index >= 0)
        snprintf(path + at, pathlen - at, "%s%s[%d]", at ? "." : "", name, index);
    else
        snprintf(path + at, pathlen - at, "%s%s", at ? "." : "", name);
}

static int walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end, char *path,
                size_t pathlen, int depth)
{
    /* Occurrences so far of each repeated field, by field index, for the path's [index]. */
    int seen[64];
    size_t at = strlen(path);

    if (depth > MAX_DEPTH)
        return -1;
    memset(seen, 0, sizeof(seen));
    while (p < end) {
        uint64_t key, n;
        const ProtobufCFieldDescriptor *f;
        unsigned wire;

        if (read_varint(&p, end, &key) < 0)
            return -1;
        wire = (unsigned)(key & 7);
        f = field_by_number(desc, key >> 3);
        switch (wire) {
        case 0:
            if (read_varint(&p, end, &n) < 0)
                return -1;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2: {
            const uint8_t *body;
            int index = -1;
            if (read_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
                return -1;
            body = p;
            p += n;
            if (!f)
                break;
            if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                size_t k = (size_t)(f - desc->fields);
                index = k < 64 ? seen[k]++ : 0;
            }
            if (f->type == PROTOBUF_C_TYPE_STRING && memchr(body, 0, (size_t)n)) {
                path_push(path, pathlen, at, f->name, index);
                return 1;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int r;
                path_push(path, pathlen, at, f->name, index);
                r = walk((const ProtobufCMessageDescriptor *)f->descriptor, body, body + n, path, pathlen, depth + 1);
                if (r != 0)
                    return r;
                if (at < pathlen)
                    path[at] = '\0';
            }
            break;
        }
        default:
            /* Groups (3, 4) are not proto3; anything else is not protobuf. */
            return -1;
        }
    }
    return 0;
}

int pwire_find_nul_string(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                          char *path, size_t pathlen)
{
    if (pathlen)
        path[0] = '\0';
    return walk(desc, data, data + len, path, pathlen, 0);
}
