/*
 * lmtp.h - local delivery over LMTP (RFC 2033) to a unix socket or TCP.
 *
 * LHLO, MAIL FROM, one RCPT TO per recipient, DATA, and after the final dot
 * one reply per accepted recipient, in RCPT order.  Every reply is parsed
 * with smtp/replyparse (multi-line, bounded); each recipient's outcome is
 * the server's reply verbatim (2xx OK, 4xx TEMP, 5xx PERM).  A connection
 * that fails or breaks before a recipient's reply: R_DLV_LMTP_UNREACHABLE
 * (TEMP) for it; a malformed reply: R_DLV_LMTP_PROTOCOL (TEMP).  Only CRLF
 * is sent; the body is dot-stuffed.  Blocking I/O with a timeout on every
 * step; runs on a worker thread.
 */
#ifndef TERN_DELIVER_LMTP_H
#define TERN_DELIVER_LMTP_H

#include "deliver/delivery.h"

struct lmtp_conf {
    const char *target;   /* "unix:/path" or "HOST:PORT" / "[V6]:PORT" (no DNS: literal addresses) */
    const char *hostname; /* our LHLO name */
    int timeout;          /* seconds per step */
};

void lmtp_deliver(const struct lmtp_conf *c, struct delivery_msg *m);

#endif
