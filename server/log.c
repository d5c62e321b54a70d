/* log.c: timestamped, leveled logfmt lines on stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Longest line written; a longer message is cut (and still closed). */
#define LINE_MAX_BYTES 2048

int log_parse_level(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

static bool needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

size_t log_quote(char *out, size_t outlen, const char *value)
{
    size_t n = 0;

    if (outlen == 0)
        return 0;
    if (!value)
        value = "";
    if (!needs_quotes(value)) {
        n = strlen(value);
        if (n >= outlen)
            n = outlen - 1;
        memcpy(out, value, n);
        out[n] = '\0';
        return n;
    }
    /* Room for the opening and closing quote and the NUL. */
    if (outlen < 3) {
        out[0] = '\0';
        return 0;
    }
    out[n++] = '"';
    for (const char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[5];
        size_t k;
        if (c == '"' || c == '\\')
            k = (size_t)snprintf(esc, sizeof(esc), "\\%c", c);
        else if (c == '\n')
            k = (size_t)snprintf(esc, sizeof(esc), "\\n");
        else if (c == '\r')
            k = (size_t)snprintf(esc, sizeof(esc), "\\r");
        else if (c == '\t')
            k = (size_t)snprintf(esc, sizeof(esc), "\\t");
        else if (c < ' ' || c == 0x7f)
            k = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", c);
        else {
            esc[0] = (char)c;
            esc[1] = '\0';
            k = 1;
        }
        if (n + k + 2 > outlen)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

void log_kv(char *buf, size_t cap, const char *key, const char *value)
{
    size_t len = strlen(buf), klen = strlen(key);
    char quoted[1024];
    size_t qlen;

    if (len + 1 + klen + 1 >= cap)
        return;
    qlen = log_quote(quoted, sizeof(quoted), value);
    if (len + 1 + klen + 1 + qlen >= cap)
        return;
    buf[len++] = ' ';
    memcpy(buf + len, key, klen);
    len += klen;
    buf[len++] = '=';
    memcpy(buf + len, quoted, qlen + 1);
}

void log_kvf(char *buf, size_t cap, const char *key, const char *fmt, ...)
{
    char value[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    log_kv(buf, cap, key, value);
}

/* "ts=<UTC> level=<level>" into line; returns its length. */
static size_t line_start(char *line, size_t cap, int level)
{
    struct timespec now;
    struct tm tm;

    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_ERROR;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    return (size_t)snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s",
                            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                            tm.tm_sec, now.tv_nsec / 1000000, level_names[level]);
}

/* Ends the line and writes it with one fputs: stdio locks the stream, so lines from threads
 * never interleave. line has room for the newline (cap - 1 used at most before it). */
static void line_emit(char *line, size_t cap)
{
    size_t n = strlen(line);

    if (n + 2 > cap)
        n = cap - 2;
    line[n] = '\n';
    line[n + 1] = '\0';
    fputs(line, stderr);
}

void log_write(int level, const char *fmt, ...)
{
    char line[LINE_MAX_BYTES], text[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    line_start(line, sizeof(line) - 1, level);
    log_kv(line, sizeof(line) - 1, "msg", text);
    line_emit(line, sizeof(line));
}

void log_event(int level, const char *event, const char *fields)
{
    char line[LINE_MAX_BYTES];
    size_t n = line_start(line, sizeof(line) - 1, level);

    log_kv(line, sizeof(line) - 1, "event", event);
    n = strlen(line);
    if (fields && n + strlen(fields) < sizeof(line) - 1)
        memcpy(line + n, fields, strlen(fields) + 1);
    line_emit(line, sizeof(line));
}
