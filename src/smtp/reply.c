/*
 * reply.c - formatting replies from the catalogue (reply.def).
 *
 * This is the only place in tern that puts an SMTP reply together.  Every
 * line ends in CRLF; arguments are sanitised so that nothing a peer sent
 * (an address, a HELO name) can inject a line break into a reply.
 */
#include "smtp/reply.h"

#include <stdarg.h>
#include <string.h>

const struct reply_def reply_table[REPLY__COUNT] = {
#define REPLY(id, code, esc, text, nargs, meaning, when, resolve)                              \
    [id] = {#id, code, esc, text, nargs, meaning, when, resolve},
#include "smtp/reply.def"
#undef REPLY
};

enum reply_class
reply_class_of(unsigned code)
{
    switch (code / 100) {
    case 2:
        return REPLY_CLASS_POSITIVE;
    case 3:
        return REPLY_CLASS_INTERMEDIATE;
    case 4:
        return REPLY_CLASS_TRANSIENT;
    default:
        return REPLY_CLASS_PERMANENT;
    }
}

const char *
reply_class_name(enum reply_class c)
{
    switch (c) {
    case REPLY_CLASS_POSITIVE:
        return "positive completion";
    case REPLY_CLASS_INTERMEDIATE:
        return "positive intermediate";
    case REPLY_CLASS_TRANSIENT:
        return "transient negative";
    case REPLY_CLASS_PERMANENT:
        return "permanent negative";
    }
    return "unknown";
}

/* Copy an argument, replacing control characters (and DEL) by '?'. */
static int
reply_put_arg(struct buf *b, const char *s)
{
    const char *p, *run;

    if (s == NULL)
        s = "";
    for (p = run = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) {
            if (buf_append(b, run, (size_t)(p - run)) == -1 || buf_append(b, "?", 1) == -1)
                return -1;
            run = p + 1;
        }
    }
    return buf_append(b, run, (size_t)(p - run));
}

/* Append the text of entry r with its arguments substituted. */
static int
reply_put_text(struct buf *b, const struct reply_def *r, const char *const *args, size_t nargs)
{
    const char *p = r->text, *pct;
    size_t i = 0;

    while ((pct = strstr(p, "%s")) != NULL) {
        if (buf_append(b, p, (size_t)(pct - p)) == -1)
            return -1;
        if (reply_put_arg(b, i < nargs ? args[i] : "") == -1)
            return -1;
        i++;
        p = pct + 2;
    }
    return buf_puts(b, p);
}

static int
reply_put_head(struct buf *b, const struct reply_def *r, char sep)
{
    char head[16];
    size_t n;

    head[0] = (char)('0' + r->code / 100);
    head[1] = (char)('0' + r->code / 10 % 10);
    head[2] = (char)('0' + r->code % 10);
    head[3] = sep;
    n = 4;
    if (buf_append(b, head, n) == -1)
        return -1;
    if (r->esc != NULL && (buf_puts(b, r->esc) == -1 || buf_append(b, " ", 1) == -1))
        return -1;
    return 0;
}

int
reply_write(struct buf *b, enum reply_id id, ...)
{
    const struct reply_def *r = reply_get(id);
    const char *args[4];
    size_t i, len0 = b->len;
    va_list ap;

    va_start(ap, id);
    for (i = 0; i < r->nargs && i < 4; i++)
        args[i] = va_arg(ap, const char *);
    va_end(ap);

    if (reply_put_head(b, r, ' ') == -1 || reply_put_text(b, r, args, i) == -1 ||
        buf_append(b, "\r\n", 2) == -1) {
        b->len = len0;
        return -1;
    }
    return 0;
}

int
reply_write_lines(struct buf *b, enum reply_id id, const char *arg, const char *const *lines,
    size_t n)
{
    const struct reply_def *r = reply_get(id);
    size_t i, len0 = b->len;

    if (reply_put_head(b, r, n ? '-' : ' ') == -1 || reply_put_text(b, r, &arg, 1) == -1 ||
        buf_append(b, "\r\n", 2) == -1)
        goto full;
    for (i = 0; i < n; i++) {
        struct reply_def line = *r;
        line.esc = NULL; /* continuation lines carry the keyword only (EHLO) */
        if (reply_put_head(b, &line, i + 1 < n ? '-' : ' ') == -1 ||
            reply_put_arg(b, lines[i]) == -1 || buf_append(b, "\r\n", 2) == -1)
            goto full;
    }
    return 0;
full:
    b->len = len0;
    return -1;
}

enum reply_id
reply_find(const char *name)
{
    size_t i;

    for (i = 0; i < REPLY__COUNT; i++)
        if (strcmp(reply_table[i].name, name) == 0)
            return (enum reply_id)i;
    return REPLY__COUNT;
}
