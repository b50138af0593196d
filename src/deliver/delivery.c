/*
 * delivery.c - recording a delivery outcome (see delivery.h).  Our own
 * outcomes are formatted by reply_write(), like every reply tern sends.
 */
#include "deliver/delivery.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/buf.h"

static enum delivery_status
delivery_status_of(unsigned code)
{
    switch (reply_class_of(code)) {
    case REPLY_CLASS_POSITIVE:
        return DLV_OK;
    case REPLY_CLASS_TRANSIENT:
        return DLV_TEMP;
    default:
        return DLV_PERM;
    }
}

void
delivery_set(struct delivery_rcpt *r, enum reply_id id, ...)
{
    const struct reply_def *d = reply_get(id);
    const char *a[2] = {"", ""};
    struct buf b;
    va_list ap;
    unsigned i;

    va_start(ap, id);
    for (i = 0; i < d->nargs && i < 2; i++)
        a[i] = va_arg(ap, const char *);
    va_end(ap);
    buf_init(&b, DELIVERY_REPLY_MAX + 2);
    if (reply_write(&b, id, a[0], a[1]) == 0 && b.len >= 2) {
        b.len -= 2; /* the CRLF */
        snprintf(r->reply, sizeof(r->reply), "%.*s", (int)b.len, b.data);
    } else {
        snprintf(r->reply, sizeof(r->reply), "%u %s", d->code, d->esc ? d->esc : "");
    }
    buf_free(&b);
    r->status = delivery_status_of(d->code);
}

void
delivery_set_received(struct delivery_rcpt *r, unsigned code, const char *text)
{
    size_t i;

    snprintf(r->reply, sizeof(r->reply), "%u %s", code, text ? text : "");
    for (i = 0; r->reply[i]; i++)
        if ((unsigned char)r->reply[i] < 0x20 || r->reply[i] == 0x7f)
            r->reply[i] = ' ';
    r->status = delivery_status_of(code);
}
