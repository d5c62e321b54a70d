/* log.h: the server's logging. One line per event, to stderr, in logfmt (key=value pairs, values
 * with spaces, quotes or control bytes quoted and escaped), the level checked before the
 * arguments are evaluated (Redis serverLog). Every line starts `ts=... level=...`; free-text
 * events (log_at) carry their text as msg="...", structured events (log_event) carry event=NAME
 * and the fields their caller built with log_kv. */
#ifndef FRACTALD_LOG_H
#define FRACTALD_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

extern int log_min_level;

/* Parses "debug", "info", "warn", "error" or "off". Returns the level, or -1 if unknown. */
int log_parse_level(const char *name);

/* Writes `ts=<UTC time> level=<level> msg="<formatted text>"`, the text escaped, as one line that
 * never interleaves with other threads' lines. Use log_at, which skips the call (and its
 * arguments) below the level. */
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                    \
    do {                                      \
        if ((level) >= log_min_level)         \
            log_write((level), __VA_ARGS__);  \
    } while (0)

/* Writes `ts=... level=... event=<event><fields>`, where fields is a string of " key=value" pairs
 * built with log_kv/log_kvf (or NULL). Check log_min_level before building the fields. */
void log_event(int level, const char *event, const char *fields);

/* Appends " key=value" to the NUL-terminated string buf (capacity cap), the value in logfmt form:
 * bare when it is a non-empty run of printable bytes without space, '"', '=' or '\', otherwise
 * quoted with '"', '\' escaped by '\' and control bytes as \n, \r, \t or \xNN. A NULL value is
 * written as "". Never overflows: a pair that does not fit whole is dropped, and buf stays valid
 * logfmt. key must be a bare word. */
void log_kv(char *buf, size_t cap, const char *key, const char *value);

/* log_kv with the value formatted printf-style first. */
void log_kvf(char *buf, size_t cap, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Writes value in logfmt form (as log_kv does) into out, capacity outlen, truncating a quoted
 * value at a character boundary and still closing the quote. Returns the length written. */
size_t log_quote(char *out, size_t outlen, const char *value);

#endif
