/*
 * reply.h - the reply catalogue: every reply ternd can send.
 *
 * The table lives in reply.def (an X-macro): identifier, basic code, RFC 3463
 * enhanced status code (NULL where none is sent: the greeting and HELO/EHLO
 * replies, RFC 2034 §3), text, number of "%s" arguments in the text, and the
 * human explanation: what it means, when you see it, how to resolve it.
 * reply_write() is the only function that formats a reply; nothing else in
 * tern puts a reply on the wire.  The same table serves `tern explain`.
 */
#ifndef TERN_SMTP_REPLY_H
#define TERN_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

enum reply_id {
#define REPLY(id, code, esc, text, nargs, meaning, when, resolve) id,
#include "smtp/reply.def"
#undef REPLY
    REPLY__COUNT
};

enum reply_class {
    REPLY_CLASS_POSITIVE = 2,     /* 2xx: done */
    REPLY_CLASS_INTERMEDIATE = 3, /* 3xx: go on (354) */
    REPLY_CLASS_TRANSIENT = 4,    /* 4xx: not now; the client keeps the message, retries */
    REPLY_CLASS_PERMANENT = 5,    /* 5xx: never; the client gives up and bounces */
};

struct reply_def {
    const char *name;    /* "R_QUEUED" */
    unsigned short code; /* 250 */
    const char *esc;     /* "2.0.0", or NULL */
    const char *text;    /* "Ok: queued as %s" */
    unsigned char nargs; /* how many %s in text */
    const char *meaning;
    const char *when;
    const char *resolve;
};

extern const struct reply_def reply_table[REPLY__COUNT];

static inline const struct reply_def *
reply_get(enum reply_id id)
{
    return &reply_table[id];
}

enum reply_class reply_class_of(unsigned code);
const char *reply_class_name(enum reply_class c);

/*
 * Append "CODE ESC TEXT\r\n" to b.  The text's "%s" are replaced, in order, by
 * the nargs string arguments; control characters in arguments become '?', so
 * nothing a peer sent can break a reply line.  -1 if b is full.
 */
int reply_write(struct buf *b, enum reply_id id, ...);

/*
 * A multi-line reply (RFC 5321 §4.2.1): the first line is the catalogue entry
 * with its one argument, then each of lines[] as "CODE-line" / "CODE line"
 * (EHLO keywords, HELP topics).
 */
int reply_write_lines(struct buf *b, enum reply_id id, const char *arg, const char *const *lines,
    size_t n);

/* Find an entry by name ("R_QUEUED"), or REPLY__COUNT. */
enum reply_id reply_find(const char *name);

#endif
