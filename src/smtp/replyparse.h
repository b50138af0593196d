/*
 * replyparse.h - reading SMTP/LMTP replies as a client (RFC 5321 §4.2).
 *
 * Pure and resumable: feed bytes, get complete replies.  A reply is one or
 * more lines "DDD-text" ending with "DDD text" (or "DDD" alone), all with
 * the same code, each ending in CRLF (a bare LF is tolerated on input, as
 * RFC 5321 §4.2 asks of clients... but only as a line end, never inside).
 * The enhanced status code (RFC 3463), when the first line's text starts
 * with one of the same class, is split out.  Limits: 1,000 octets a line
 * (more is an error), 100 lines a reply; never reads past the input.
 */
#ifndef TERN_SMTP_REPLYPARSE_H
#define TERN_SMTP_REPLYPARSE_H

#include <stdbool.h>
#include <stddef.h>

#define REPLYPARSE_LINE_MAX 1000
#define REPLYPARSE_TEXT_MAX 2048

enum replyparse_status {
    REPLYPARSE_MORE,   /* need more bytes */
    REPLYPARSE_DONE,   /* a complete reply is in the struct */
    REPLYPARSE_ERROR,  /* malformed: bad code, mixed codes, line too long, too many lines */
};

struct replyparse {
    /* result, valid after DONE */
    unsigned code;                  /* 200..599 */
    char esc[16];                   /* "4.7.1" or "" */
    char text[REPLYPARSE_TEXT_MAX]; /* lines' texts (after the enhanced code) joined with "; " */
    unsigned lines;
    const char *error;              /* after ERROR: what was wrong */
    /* private */
    char line[REPLYPARSE_LINE_MAX + 2];
    size_t linelen;
    bool in_reply;
};

void replyparse_init(struct replyparse *r);
/* Consume up to n bytes; *used says how many (stops right after a complete reply). */
enum replyparse_status replyparse_feed(struct replyparse *r, const char *p, size_t n,
    size_t *used);

#endif
