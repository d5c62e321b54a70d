/* log.h: the server's one logging macro. One line per event, to stderr, level checked before the
 * arguments are evaluated (Redis serverLog). */
#ifndef FRACTALD_LOG_H
#define FRACTALD_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

extern int log_min_level;

/* Parses "debug", "info", "warn", "error" or "off". Returns the level, or -1 if unknown. */
int log_parse_level(const char *name);

/* Writes one line: "<UTC timestamp> <LEVEL> <message>\n", atomically with respect to other
 * threads' lines. Use log_at, which skips the call (and its arguments) below the level. */
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                    \
    do {                                      \
        if ((level) >= log_min_level)         \
            log_write((level), __VA_ARGS__);  \
    } while (0)

#endif
