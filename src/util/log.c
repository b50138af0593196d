/*
 * log.c - log lines to stderr, one write(2) each so that lines from the
 * committer thread and the event loop never interleave.
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "tern";
static enum log_level log_level = LOG_LEVEL_INFO;
static const char *const log_names[] = {"debug", "info", "warn", "error"};

void
log_init(const char *progname, enum log_level level)
{
    log_prog = progname;
    log_level = level;
}

void
log_set_level(enum log_level level)
{
    log_level = level;
}

bool
log_enabled(enum log_level level)
{
    return level >= log_level;
}

static void
log_vwrite(const char *level, const char *id, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s %s ", ts.tv_nsec / 1000000,
        log_prog, level, id ? id : "-");
    if (r > 0)
        n += (size_t)r;
    if (n < sizeof(line)) {
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (r > 0)
            n += (size_t)r;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    /*
     * One event, one line: a control character that a peer slipped into a
     * logged value (a TLS server name, an address) must not start a forged
     * line for the tools that read these logs.
     */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[n++] = '\n';
    /* One write per line; a short write to stderr is not worth a retry loop. */
    if (write(STDERR_FILENO, line, n) < 0) {
    }
}

void
log_msg(enum log_level level, const char *id, const char *fmt, ...)
{
    va_list ap;

    if (level < log_level)
        return;
    va_start(ap, fmt);
    log_vwrite(log_names[level], id, fmt, ap);
    va_end(ap);
}

void
log_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite("fatal", NULL, fmt, ap);
    va_end(ap);
    exit(1);
}

void
log_panic(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite("panic", NULL, fmt, ap);
    va_end(ap);
    abort();
}

const char *
log_token(const char *s, char *buf, size_t len)
{
    size_t i;

    if (s == NULL)
        return "-";
    if (len == 0)
        return "";
    for (i = 0; s[i] != '\0' && i < len - 1; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = ch > 0x20 && ch < 0x7f && ch != '"' && ch != '=' ? (char)ch : '?';
    }
    buf[i] = '\0';
    return buf;
}
