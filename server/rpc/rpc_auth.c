/* rpc_auth.c: the bearer-token store (--token-file, swapped whole on SIGHUP) and the check of a
 * call's authorization metadata in constant time per stored token. No token is ever logged. */
#include "rpc_auth.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"

#define TOKEN_MIN 16
#define TOKEN_MAX 512

struct token {
    char id[RPC_AUTH_ID_MAX];
    char *value;
    size_t len;
};

struct token_set {
    struct token *list;
    size_t count;
};

struct rpc_auth {
    char *path;
    pthread_mutex_t lock;        /* guards set: checks on the loop thread, reloads from main */
    struct token_set set;
};

static void set_dispose(struct token_set *s)
{
    for (size_t i = 0; i < s->count; i++) {
        /* Tokens are secrets: do not leave them in freed memory. */
        volatile char *p = s->list[i].value;
        for (size_t k = 0; k < s->list[i].len; k++)
            p[k] = 0;
        free(s->list[i].value);
    }
    free(s->list);
    s->list = NULL;
    s->count = 0;
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". */
static int b64token_ok(const char *t, size_t len)
{
    size_t i = 0;

    while (i < len && (isalnum((unsigned char)t[i]) || strchr("-._~+/", t[i])))
        i++;
    if (i == 0)
        return 0;
    while (i < len && t[i] == '=')
        i++;
    return i == len;
}

static int name_ok(const char *n, size_t len)
{
    if (len == 0 || len >= RPC_AUTH_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)n[i]) && !strchr("._-", n[i]))
            return 0;
    return 1;
}

/* Reads the file into *out. Returns 0, or ERR_INVALID / ERR_NOMEM with the message. */
static int set_load(struct token_set *out, const char *path, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "r");
    char line[TOKEN_MAX + RPC_AUTH_ID_MAX + 64];
    struct token_set s = {NULL, 0};
    size_t cap = 0;
    int lineno = 0, err = 0;

    if (!f) {
        snprintf(msg, msglen, "%s: cannot read: %s", path, strerror(errno));
        return ERR_INVALID;
    }
    while (fgets(line, sizeof(line), f)) {
        char *p = line, *end, *colon;
        size_t len;
        struct token *t;

        lineno++;
        len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f)) {
            snprintf(msg, msglen, "%s:%d: line too long (a token is at most %d characters)", path, lineno, TOKEN_MAX);
            err = ERR_INVALID;
            goto done;
        }
        while (*p && isspace((unsigned char)*p))
            p++;
        end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        if (s.count == cap) {
            struct token *grown = realloc(s.list, (cap ? cap * 2 : 8) * sizeof(*grown));
            if (!grown) {
                snprintf(msg, msglen, "out of memory");
                err = ERR_NOMEM;
                goto done;
            }
            s.list = grown;
            cap = cap ? cap * 2 : 8;
        }
        t = &s.list[s.count];
        memset(t, 0, sizeof(*t));
        /* ':' is not in the token alphabet, so the first one ends a name. */
        if ((colon = strchr(p, ':')) != NULL) {
            if (!name_ok(p, (size_t)(colon - p))) {
                snprintf(msg, msglen, "%s:%d: a name before ':' must be 1..%d letters, digits, '.', '_' or '-'",
                         path, lineno, RPC_AUTH_ID_MAX - 1);
                err = ERR_INVALID;
                goto done;
            }
            memcpy(t->id, p, (size_t)(colon - p));
            p = colon + 1;
        } else {
            snprintf(t->id, sizeof(t->id), "line%d", lineno);
        }
        len = strlen(p);
        if (len < TOKEN_MIN || len > TOKEN_MAX || !b64token_ok(p, len)) {
            snprintf(msg, msglen, "%s:%d: a token must be %d..%d characters of A-Z a-z 0-9 - . _ ~ + / (then '='), "
                     "got %zu characters%s", path, lineno, TOKEN_MIN, TOKEN_MAX, len,
                     b64token_ok(p, len) ? "" : " with others among them");
            err = ERR_INVALID;
            goto done;
        }
        for (size_t i = 0; i < s.count; i++) {
            if (strcmp(s.list[i].id, t->id) == 0) {
                snprintf(msg, msglen, "%s:%d: the name '%s' is given twice", path, lineno, t->id);
                err = ERR_INVALID;
                goto done;
            }
            if (s.list[i].len == len && memcmp(s.list[i].value, p, len) == 0) {
                snprintf(msg, msglen, "%s:%d: the same token as %s", path, lineno, s.list[i].id);
                err = ERR_INVALID;
                goto done;
            }
        }
        if (!(t->value = malloc(len + 1))) {
            snprintf(msg, msglen, "out of memory");
            err = ERR_NOMEM;
            goto done;
        }
        memcpy(t->value, p, len + 1);
        t->len = len;
        s.count++;
    }
    if (ferror(f)) {
        snprintf(msg, msglen, "%s: read error", path);
        err = ERR_INVALID;
    } else if (s.count == 0) {
        snprintf(msg, msglen, "%s: no tokens (one per line, '#' starts a comment)", path);
        err = ERR_INVALID;
    }
done:
    {
        /* The line buffer held a token. */
        volatile char *v = line;
        for (size_t k = 0; k < sizeof(line); k++)
            v[k] = 0;
    }
    fclose(f);
    if (err < 0) {
        set_dispose(&s);
        return err;
    }
    *out = s;
    return 0;
}

int rpc_auth_new(rpc_auth **out, const char *path, char *msg, size_t msglen)
{
    rpc_auth *a = calloc(1, sizeof(*a));
    int err;

    *out = NULL;
    if (!a || !(a->path = strdup(path))) {
        free(a);
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    if ((err = set_load(&a->set, path, msg, msglen)) < 0) {
        free(a->path);
        free(a);
        return err;
    }
    pthread_mutex_init(&a->lock, NULL);
    *out = a;
    return 0;
}

int rpc_auth_reload(rpc_auth *a, char *msg, size_t msglen)
{
    struct token_set fresh, old;
    int err;

    if ((err = set_load(&fresh, a->path, msg, msglen)) < 0)
        return err;
    pthread_mutex_lock(&a->lock);
    old = a->set;
    a->set = fresh;
    pthread_mutex_unlock(&a->lock);
    set_dispose(&old);
    snprintf(msg, msglen, "%zu token%s", fresh.count, fresh.count == 1 ? "" : "s");
    return 0;
}

void rpc_auth_free(rpc_auth *a)
{
    if (!a)
        return;
    set_dispose(&a->set);
    pthread_mutex_destroy(&a->lock);
    free(a->path);
    free(a);
}

/* Whether the presented token equals the stored one, in time that depends on the presented
 * length only: every byte is looked at, whatever matched before. */
static int same_token(const unsigned char *given, size_t len, const struct token *t)
{
    const unsigned char *stored = (const unsigned char *)t->value;
    unsigned diff = (unsigned)(len ^ t->len);

    for (size_t i = 0; i < len; i++)
        diff |= (unsigned)(given[i] ^ stored[i % t->len]);
    return diff == 0;
}

static int slice_is(grpc_slice s, const char *text)
{
    size_t n = strlen(text);
    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), text, n) == 0;
}

int rpc_auth_check(rpc_auth *a, const grpc_metadata_array *md, char *id, char *msg, size_t msglen)
{
    const grpc_metadata *found = NULL;
    const unsigned char *v;
    size_t len, matches = 0;
    int which = -1;

    id[0] = '\0';
    for (size_t i = 0; i < md->count; i++) {
        if (!slice_is(md->metadata[i].key, "authorization"))
            continue;
        if (found) {
            snprintf(msg, msglen, "more than one authorization metadata entry");
            return ERR_UNAUTHENTICATED;
        }
        found = &md->metadata[i];
    }
    if (!found) {
        snprintf(msg, msglen, "missing bearer token: this server needs 'authorization: Bearer TOKEN' metadata");
        return ERR_UNAUTHENTICATED;
    }
    v = GRPC_SLICE_START_PTR(found->value);
    len = GRPC_SLICE_LENGTH(found->value);
    /* The scheme is case-insensitive (RFC 7235); one space separates it from the token. */
    if (len < 7 || strncasecmp((const char *)v, "bearer ", 7) != 0) {
        snprintf(msg, msglen, "authorization metadata must be 'Bearer TOKEN'");
        return ERR_UNAUTHENTICATED;
    }
    v += 7;
    len -= 7;
    pthread_mutex_lock(&a->lock);
    if (len >= TOKEN_MIN && len <= TOKEN_MAX)
        for (size_t i = 0; i < a->set.count; i++)
            if (same_token(v, len, &a->set.list[i])) {
                matches++;
                which = (int)i;
            }
    if (matches == 1)
        snprintf(id, RPC_AUTH_ID_MAX, "%s", a->set.list[which].id);
    pthread_mutex_unlock(&a->lock);
    if (matches != 1) {
        snprintf(msg, msglen, "invalid bearer token");
        return ERR_UNAUTHENTICATED;
    }
    return 0;
}
