/* rpc_reflection.c: gRPC server reflection (grpc.reflection.v1 and v1alpha, the same messages on
 * the wire), so grpcurl-style clients list and describe the services with no .proto at hand. It
 * answers from the descriptor set protoc wrote at build time (every proto fractald serves, with
 * its imports), embedded in the binary. The bidi stream runs on the completion-queue thread: each
 * reply goes out in one batch with the read of the next request, so nothing ever waits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "log.h"
#include "rpc_call.h"
#include "rpc_handlers.h"

extern const unsigned char rpc_reflection_descriptors[];
extern const size_t rpc_reflection_descriptors_len;

/* google.rpc.Code values of ErrorResponse. */
#define CODE_INVALID_ARGUMENT 3
#define CODE_NOT_FOUND 5
#define CODE_UNIMPLEMENTED 12

/* ---- the descriptor set, indexed once ---- */

/* A slice of the embedded bytes. */
struct span {
    const uint8_t *p;
    size_t len;
};

struct file {
    struct span bytes;          /* one serialized FileDescriptorProto, as protoc wrote it */
    struct span name;
    struct span deps[32];       /* its imports, by file name */
    size_t ndeps;
};

struct symbol {
    char *name;                 /* fully qualified: "fractal.v1.RenderRequest", "fractal.v1.Renderer" */
    size_t file;
    bool service;
};

static struct {
    struct file *files;
    size_t nfiles;
    struct symbol *symbols;
    size_t nsymbols, symbols_cap;
    bool ok;
} idx;

static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

/* One field of protobuf wire data: its number and either a varint or a length-delimited span. */
struct wire_field {
    uint32_t number;
    int type;                   /* 0 varint, 2 length-delimited; 1 and 5 fixed, skipped */
    struct span data;
};

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* The next field of [*p, end); false at the end or on malformed data. */
static bool next_field(const uint8_t **p, const uint8_t *end, struct wire_field *f)
{
    uint64_t key, v;

    if (*p >= end || !read_varint(p, end, &key))
        return false;
    f->number = (uint32_t)(key >> 3);
    f->type = (int)(key & 7);
    f->data = (struct span){NULL, 0};
    switch (f->type) {
    case 0: return read_varint(p, end, &v);
    case 1: if (end - *p < 8) return false; *p += 8; return true;
    case 5: if (end - *p < 4) return false; *p += 4; return true;
    case 2:
        if (!read_varint(p, end, &v) || v > (uint64_t)(end - *p))
            return false;
        f->data = (struct span){*p, (size_t)v};
        *p += v;
        return true;
    }
    return false;
}

static void add_symbol(const char *prefix, struct span name, size_t file, bool service)
{
    char *full;

    if (idx.nsymbols == idx.symbols_cap) {
        size_t cap = idx.symbols_cap ? idx.symbols_cap * 2 : 256;
        struct symbol *grown = realloc(idx.symbols, cap * sizeof(*grown));
        if (!grown)
            return;
        idx.symbols = grown;
        idx.symbols_cap = cap;
    }
    if (!(full = malloc(strlen(prefix) + name.len + 2)))
        return;
    sprintf(full, "%s%s%.*s", prefix, prefix[0] ? "." : "", (int)name.len, (const char *)name.p);
    idx.symbols[idx.nsymbols++] = (struct symbol){full, file, service};
}

/* The name (field 1) of a DescriptorProto, EnumDescriptorProto, ServiceDescriptorProto or
 * MethodDescriptorProto. */
static struct span name_of(struct span msg)
{
    const uint8_t *p = msg.p;
    struct wire_field f;

    while (next_field(&p, msg.p + msg.len, &f))
        if (f.number == 1 && f.type == 2)
            return f.data;
    return (struct span){(const uint8_t *)"", 0};
}

/* A message (DescriptorProto) and its nested messages and enums; depth-bounded. */
static void index_message(const char *prefix, struct span msg, size_t file, int depth)
{
    const uint8_t *p = msg.p;
    struct wire_field f;
    char full[512];

    add_symbol(prefix, name_of(msg), file, false);
    if (depth > 16 || idx.nsymbols == 0)
        return;
    snprintf(full, sizeof(full), "%s", idx.symbols[idx.nsymbols - 1].name);
    while (next_field(&p, msg.p + msg.len, &f)) {
        if (f.type != 2)
            continue;
        if (f.number == 3)              /* nested_type */
            index_message(full, f.data, file, depth + 1);
        else if (f.number == 4)         /* enum_type */
            add_symbol(full, name_of(f.data), file, false);
    }
}

static void index_file(size_t i)
{
    struct file *fl = &idx.files[i];
    const uint8_t *p = fl->bytes.p, *end = fl->bytes.p + fl->bytes.len;
    struct wire_field f;
    char package[256] = "";

    /* The package (field 2) comes before the types in protoc's output, but look for it first
     * anyway: the names depend on it. */
    while (next_field(&p, end, &f))
        if (f.number == 2 && f.type == 2)
            snprintf(package, sizeof(package), "%.*s", (int)f.data.len, (const char *)f.data.p);
    for (p = fl->bytes.p; next_field(&p, end, &f);) {
        if (f.type != 2)
            continue;
        switch (f.number) {
        case 1: fl->name = f.data; break;
        case 3:
            if (fl->ndeps < sizeof(fl->deps) / sizeof(fl->deps[0]))
                fl->deps[fl->ndeps++] = f.data;
            break;
        case 4: index_message(package, f.data, i, 0); break;
        case 5: add_symbol(package, name_of(f.data), i, false); break;
        case 6: {
            const uint8_t *q = f.data.p;
            struct wire_field m;
            char service[512];
            add_symbol(package, name_of(f.data), i, true);
            snprintf(service, sizeof(service), "%s", idx.nsymbols ? idx.symbols[idx.nsymbols - 1].name : "");
            while (next_field(&q, f.data.p + f.data.len, &m))
                if (m.number == 2 && m.type == 2)    /* method */
                    add_symbol(service, name_of(m.data), i, false);
            break;
        }
        }
    }
}

/* Indexes the embedded FileDescriptorSet (field 1: repeated FileDescriptorProto). */
static void build_index(void)
{
    const uint8_t *p = rpc_reflection_descriptors, *end = p + rpc_reflection_descriptors_len;
    struct wire_field f;
    size_t n = 0;

    while (next_field(&p, end, &f))
        n += f.number == 1 && f.type == 2;
    if (!(idx.files = calloc(n ? n : 1, sizeof(*idx.files))))
        return;
    for (p = rpc_reflection_descriptors; next_field(&p, end, &f);)
        if (f.number == 1 && f.type == 2)
            idx.files[idx.nfiles++].bytes = f.data;
    for (size_t i = 0; i < idx.nfiles; i++)
        index_file(i);
    idx.ok = idx.nfiles > 0;
}

static bool span_is(struct span s, const char *text)
{
    return s.len == strlen(text) && memcmp(s.p, text, s.len) == 0;
}

static long file_named(const char *name)
{
    for (size_t i = 0; i < idx.nfiles; i++)
        if (span_is(idx.files[i].name, name))
            return (long)i;
    return -1;
}

/* The file defining a symbol; a field, enum value or method name is looked up by its parent. */
static long file_of_symbol(const char *symbol)
{
    char name[512];
    char *dot;

    snprintf(name, sizeof(name), "%s", symbol);
    for (int tries = 0; tries < 3; tries++) {
        for (size_t i = 0; i < idx.nsymbols; i++)
            if (strcmp(idx.symbols[i].name, name) == 0)
                return (long)idx.symbols[i].file;
        if (!(dot = strrchr(name, '.')))
            break;
        *dot = '\0';
    }
    return -1;
}

/* ---- answering ---- */

/* Appends file f and everything it imports, transitively, each once, dependencies after the file
 * (as grpc's C++ reflection sends them); out has room for every file. */
static void add_with_deps(long f, bool *sent, ProtobufCBinaryData *out, size_t *n)
{
    if (f < 0 || sent[f])
        return;
    sent[f] = true;
    out[(*n)++] = (ProtobufCBinaryData){idx.files[f].bytes.len, (uint8_t *)idx.files[f].bytes.p};
    for (size_t d = 0; d < idx.files[f].ndeps; d++) {
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)idx.files[f].deps[d].len, (const char *)idx.files[f].deps[d].p);
        add_with_deps(file_named(name), sent, out, n);
    }
}

/* The reply to one request, packed into a fresh byte buffer. */
static grpc_byte_buffer *answer(const Grpc__Reflection__V1__ServerReflectionRequest *req)
{
    Grpc__Reflection__V1__ServerReflectionResponse resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse files = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse list = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse exts = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse error = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ServiceResponse *services = calloc(idx.nsymbols + 1, sizeof(*services));
    Grpc__Reflection__V1__ServiceResponse **service_ptrs = calloc(idx.nsymbols + 1, sizeof(*service_ptrs));
    ProtobufCBinaryData *blobs = calloc(idx.nfiles + 1, sizeof(*blobs));
    bool *sent = calloc(idx.nfiles + 1, sizeof(*sent));
    char message[300] = "";
    grpc_byte_buffer *bb = NULL;
    long f;

    if (!services || !service_ptrs || !blobs || !sent)
        goto done;
    resp.valid_host = req->host;
    resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (size_t i = 0; i < idx.nsymbols; i++) {
            if (!idx.symbols[i].service)
                continue;
            grpc__reflection__v1__service_response__init(&services[list.n_service]);
            services[list.n_service].name = idx.symbols[i].name;
            service_ptrs[list.n_service] = &services[list.n_service];
            list.n_service++;
        }
        list.service = service_ptrs;
        resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &list;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        bool by_name = req->message_request_case ==
                       GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
        const char *what = by_name ? req->file_by_filename : req->file_containing_symbol;
        f = by_name ? file_named(what) : file_of_symbol(what);
        if (f < 0) {
            error.error_code = CODE_NOT_FOUND;
            snprintf(message, sizeof(message), "%s \"%.200s\" is not served here", by_name ? "file" : "symbol", what);
            break;
        }
        add_with_deps(f, sent, blobs, &files.n_file_descriptor_proto);
        files.file_descriptor_proto = blobs;
        resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &files;
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        /* None of the protos served declares an extension range: a known type has none. */
        if (file_of_symbol(req->all_extension_numbers_of_type) < 0) {
            error.error_code = CODE_NOT_FOUND;
            snprintf(message, sizeof(message), "type \"%.200s\" is not served here", req->all_extension_numbers_of_type);
            break;
        }
        exts.base_type_name = req->all_extension_numbers_of_type;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
        resp.all_extension_numbers_response = &exts;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        error.error_code = CODE_NOT_FOUND;
        snprintf(message, sizeof(message), "no extensions are served here");
        break;
    default:
        error.error_code = CODE_INVALID_ARGUMENT;
        snprintf(message, sizeof(message), "the request names no known message_request");
        break;
    }
    if (error.error_code) {
        error.error_message = message;
        resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &error;
    }
    bb = rpc_pack(&resp.base);
done:
    free(sent);
    free(blobs);
    free(service_ptrs);
    free(services);
    return bb;
}

/* Starts the next batch: the reply to the last request (if any) and the read of the next one,
 * taking a reference for it. Returns 0 or ERR_INTERNAL (the call is cancelled then). */
static int start_step(struct call *c, bool first)
{
    grpc_op ops[2];
    size_t n = 0;
    grpc_call_error e;

    memset(ops, 0, sizeof(ops));
    if (first) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    } else if (c->send_bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send_bb;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->read_bb;
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&c->lock);
    e = grpc_call_start_batch(c->call, ops, n, &c->tag_read, NULL);
    pthread_mutex_unlock(&c->lock);
    if (e != GRPC_CALL_OK) {
        log_at(LOG_ERROR, "rpc: reflection batch refused: %s", grpc_call_error_to_string(e));
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server could not read the stream", NULL);
        atomic_fetch_sub(&c->refs, 1);
        return ERR_INTERNAL;
    }
    return 0;
}

void rpc_reflection_info(struct call *c)
{
    pthread_once(&idx_once, build_index);
    if (!idx.ok) {
        rpc_log_call(c, ERR_INTERNAL, "the embedded descriptors cannot be read", NULL);
        rpc_finish(c, ERR_INTERNAL, "the embedded descriptors cannot be read", NULL, 0);
        return;
    }
    if (start_step(c, true) < 0) {
        rpc_log_call(c, ERR_INTERNAL, "server could not read the stream", NULL);
        rpc_finish(c, ERR_INTERNAL, "server could not read the stream", NULL, 0);
    }
}

void rpc_reflection_step(struct call *c, int ok)
{
    Grpc__Reflection__V1__ServerReflectionRequest *req = NULL;
    char msg[200] = "";
    int err = 0;

    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
    if (!ok || atomic_load(&c->cancelled)) {
        err = ERR_CANCELLED;
        snprintf(msg, sizeof(msg), "stream cancelled");
        goto finish;
    }
    if (!c->read_bb)
        goto finish;                    /* the client closed its side: the stream is done */
    req = (Grpc__Reflection__V1__ServerReflectionRequest *)rpc_unpack(
        &grpc__reflection__v1__server_reflection_request__descriptor, c->read_bb, msg, sizeof(msg));
    grpc_byte_buffer_destroy(c->read_bb);
    c->read_bb = NULL;
    if (!req) {
        err = ERR_INVALID;
        goto finish;
    }
    c->send_bb = answer(req);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (!c->send_bb) {
        err = ERR_NOMEM;
        snprintf(msg, sizeof(msg), "out of memory");
        goto finish;
    }
    if (start_step(c, false) < 0) {
        err = ERR_INTERNAL;
        snprintf(msg, sizeof(msg), "server could not answer the stream");
        goto finish;
    }
    rpc_call_release(c);                /* the completed batch's reference */
    return;

finish:
    rpc_log_call(c, err, msg, NULL);
    rpc_finish(c, err, msg, NULL, 0);
    rpc_call_release(c);
}
