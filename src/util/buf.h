/*
 * buf.h - counted byte buffers with a hard limit.
 *
 * A buf grows on demand up to its limit and never past it: buf_append()
 * returns -1 instead of growing beyond buf->max, so a peer can never drive an
 * unbounded realloc.  All sizes are in bytes.
 */
#ifndef TERN_UTIL_BUF_H
#define TERN_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t len;  /* bytes in use */
    size_t cap;  /* bytes allocated */
    size_t max;  /* hard limit on cap; 0 means "no limit" (only for internal data) */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
/* Append n bytes; -1 (and nothing appended) when that would pass b->max or malloc fails. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);

#endif
