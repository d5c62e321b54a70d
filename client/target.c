/* target.c: what a client target names: one server, or several (a comma-separated host:port list,
 * an ipv4:/ipv6: address list, a dns:/// name), turned into the gRPC target of one balanced channel
 * (fractal_client_new) or into one address per server (the fan-out render). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getaddrinfo, strdup */
#endif

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* An entry longer than this (host:port) is refused: DNS names are 253 bytes at most. */
#define ENTRY_MAX 300

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Whether the target starts with a gRPC resolver scheme, so gRPC reads it and we leave it alone. */
static int has_scheme(const char *t)
{
    static const char *const schemes[] = { "dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:" };
    size_t i;

    for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (has_prefix(t, schemes[i]))
            return 1;
    return 0;
}

void fr_addrs_free(fr_addrs *a)
{
    size_t i;

    for (i = 0; i < a->count; i++) {
        free(a->addr[i]);
        free(a->authority[i]);
    }
    free(a->addr);
    free(a->authority);
    a->addr = NULL;
    a->authority = NULL;
    a->count = 0;
    a->v6 = 0;
}

/* Appends addr, resolved from the name `authority` (NULL for a numeric entry). */
static int addrs_push(fr_addrs *a, const char *addr, const char *authority)
{
    char **grown;
    size_t i;

    for (i = 0; i < a->count; i++)
        if (strcmp(a->addr[i], addr) == 0)
            return 0; /* a name listed twice, or resolving to an address listed too: one server */
    if ((grown = realloc(a->addr, (a->count + 1) * sizeof *grown)) == NULL)
        return FRACTAL_ENOMEM;
    a->addr = grown;
    if ((grown = realloc(a->authority, (a->count + 1) * sizeof *grown)) == NULL)
        return FRACTAL_ENOMEM;
    a->authority = grown;
    a->authority[a->count] = NULL;
    if ((a->addr[a->count] = strdup(addr)) == NULL ||
        (authority && (a->authority[a->count] = strdup(authority)) == NULL)) {
        free(a->addr[a->count]);
        return FRACTAL_ENOMEM;
    }
    a->count++;
    return 0;
}

/* Whether host is an IP address literal rather than a name. */
static int is_numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Splits "host:port" or "[v6]:port" into its parts (host without brackets). */
static int split_host_port(char *host, size_t cap, const char **port, const char *entry)
{
    const char *colon;
    size_t len;

    if (entry[0] == '[') {
        const char *close = strchr(entry, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        len = (size_t)(close - entry - 1);
        entry++;
        colon = close + 1;
    } else {
        colon = strrchr(entry, ':');
        if (colon == NULL || memchr(entry, ':', (size_t)(colon - entry)) != NULL)
            return -1; /* an IPv6 address must be in brackets, or its port is ambiguous */
        len = (size_t)(colon - entry);
    }
    if (len == 0 || len >= cap || colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -1;
    memcpy(host, entry, len);
    host[len] = '\0';
    *port = colon + 1;
    return 0;
}

/* Resolves one host:port into every address it names (numeric ones stay as they are), in the
 * resolver's order. */
static int resolve_entry(fr_addrs *v4, fr_addrs *v6, const char *entry, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[ENTRY_MAX], text[INET6_ADDRSTRLEN], addr[ENTRY_MAX + 8];
    const char *port, *name;
    int rc, e = 0;

    if (split_host_port(host, sizeof host, &port, entry) < 0)
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "'%.300s' is not HOST:PORT ([ADDRESS]:PORT for IPv6)", entry);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
        return fr_errorf(err, errlen, FRACTAL_EUNAVAILABLE, "cannot resolve %s: %s", host, gai_strerror(rc));
    name = is_numeric_host(host) ? NULL : entry;
    for (ai = res; ai != NULL && e == 0; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, text, sizeof text);
            snprintf(addr, sizeof addr, "%s:%s", text, port);
            e = addrs_push(v4, addr, name);
        } else if (ai->ai_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, text, sizeof text);
            snprintf(addr, sizeof addr, "[%s]:%s", text, port);
            e = addrs_push(v6, addr, name);
        }
    }
    freeaddrinfo(res);
    return e < 0 ? fr_errorf(err, errlen, e, "out of memory") : 0;
}

/* Resolves a comma-separated list of host:port (or one host:port) into one address family's
 * addresses: IPv4 when any entry gives one (a gRPC address list holds one family), else IPv6. */
static int resolve_list(fr_addrs *out, const char *list, char *err, size_t errlen)
{
    fr_addrs v4 = { NULL, NULL, 0, 0 }, v6 = { NULL, NULL, 0, 0 };
    char entry[ENTRY_MAX];
    const char *p = list, *end;
    size_t len;
    int e = 0;

    while (e == 0) {
        end = strchr(p, ',');
        len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len >= sizeof entry) {
            e = fr_errorf(err, errlen, FRACTAL_EINVAL, "server list '%.300s': %s entry", list,
                          len ? "an over-long" : "an empty");
            break;
        }
        memcpy(entry, p, len);
        entry[len] = '\0';
        e = resolve_entry(&v4, &v6, entry, err, errlen);
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (e == 0 && v4.count == 0 && v6.count == 0)
        e = fr_errorf(err, errlen, FRACTAL_EUNAVAILABLE, "'%.300s' resolves to no address", list);
    if (e < 0) {
        fr_addrs_free(&v4);
        fr_addrs_free(&v6);
        return e;
    }
    if (v4.count > 0) {
        *out = v4;
        fr_addrs_free(&v6);
    } else {
        *out = v6;
        out->v6 = 1;
    }
    return 0;
}

int fr_target_addrs(fr_addrs *out, const char *target, char *err, size_t errlen)
{
    const char *p;

    memset(out, 0, sizeof *out);
    if (has_prefix(target, "ipv4:") || has_prefix(target, "ipv6:")) {
        /* Already addresses: split them as they are (gRPC takes "ipv6:[::1]:5,[::1]:6"). */
        char *copy = strdup(target + 5), *tok, *save = NULL;
        int e = 0;

        if (copy == NULL)
            return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        out->v6 = target[3] == '6';
        for (tok = strtok_r(copy, ",", &save); tok && e == 0; tok = strtok_r(NULL, ",", &save))
            e = addrs_push(out, tok, NULL);
        free(copy);
        if (e < 0 || out->count == 0) {
            fr_addrs_free(out);
            return fr_errorf(err, errlen, e < 0 ? e : FRACTAL_EINVAL, "%s", e < 0 ? "out of memory" : "empty address list");
        }
        return 0;
    }
    if (has_prefix(target, "dns:")) {
        /* dns:NAME:PORT, dns:///NAME:PORT or dns://AUTHORITY/NAME:PORT: the name is what follows the
         * last '/' (the system resolver answers, not the authority). */
        p = target + 4;
        if (has_prefix(p, "//"))
            p = strchr(p + 2, '/') ? strchr(p + 2, '/') + 1 : p + 2;
        return resolve_list(out, p, err, errlen);
    }
    if (has_scheme(target))
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "'%.300s': only host:port lists, ipv4:, ipv6: and dns: "
                         "targets name servers one by one", target);
    return resolve_list(out, target, err, errlen);
}

int fr_target_for_channel(char **out, int *balanced, char **authority, const char *target, char *err,
                          size_t errlen)
{
    fr_addrs addrs;
    size_t i, len;
    char *t;
    int e;

    *out = NULL;
    *balanced = 0;
    *authority = NULL;
    if (has_scheme(target) || strchr(target, ',') == NULL) {
        /* gRPC reads it. Several servers behind it: a dns: name (it may name several) or an
         * address list. */
        *balanced = has_prefix(target, "dns:") ||
                    ((has_prefix(target, "ipv4:") || has_prefix(target, "ipv6:")) && strchr(target, ',') != NULL);
        if ((*out = strdup(target)) == NULL)
            return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
        return 0;
    }
    /* A host:port list, which gRPC has no syntax for: resolved once, here, into an address list.
     * (A dns: target is resolved again by gRPC whenever its connections fail; this one is not.) */
    if ((e = resolve_list(&addrs, target, err, errlen)) < 0)
        return e;
    for (len = 6, i = 0; i < addrs.count; i++)
        len += strlen(addrs.addr[i]) + 1;
    if ((t = malloc(len)) == NULL) {
        fr_addrs_free(&addrs);
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
    }
    strcpy(t, addrs.v6 ? "ipv6:" : "ipv4:");
    for (i = 0; i < addrs.count; i++) {
        if (i)
            strcat(t, ",");
        strcat(t, addrs.addr[i]);
    }
    if (addrs.authority[0] && (*authority = strdup(addrs.authority[0])) == NULL) {
        free(t);
        fr_addrs_free(&addrs);
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
    }
    fr_addrs_free(&addrs);
    *out = t;
    *balanced = 1;
    return 0;
}
