/*
 * log.h - logging and the three kinds of failure.
 *
 * Every line is "LEVEL ID key=value ...": the session or queue ID first, so
 * an operator can grep one ID across receive, queue and delivery.
 *   log_fatal()  the environment or the configuration is unusable: exit(1).
 *   log_panic()  a bug (an invariant broke): abort().
 *   log_warn()   something failed and was handled.
 * A peer's misbehaviour is never fatal: it gets a reply.
 */
#ifndef TERN_UTIL_LOG_H
#define TERN_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_init(const char *progname, enum log_level level);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * A value from a peer, made safe for a key=value log line: at most len-1
 * octets, anything but printable ASCII other than '"' and '=' (and space)
 * replaced with '?'.  Returns buf, or "-" for NULL.
 */
const char *log_token(const char *s, char *buf, size_t len);
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define log_debug(id, ...)                                                                     \
    do {                                                                                       \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                      \
            log_msg(LOG_LEVEL_DEBUG, id, __VA_ARGS__);                                         \
    } while (0)
#define log_info(id, ...) log_msg(LOG_LEVEL_INFO, id, __VA_ARGS__)
#define log_warn(id, ...) log_msg(LOG_LEVEL_WARN, id, __VA_ARGS__)
#define log_error(id, ...) log_msg(LOG_LEVEL_ERROR, id, __VA_ARGS__)

/* An assertion that stays in release builds. */
#define tern_assert(c)                                                                         \
    do {                                                                                       \
        if (!(c))                                                                              \
            log_panic("assertion failed: %s (%s:%d)", #c, __FILE__, __LINE__);               \
    } while (0)

#endif
