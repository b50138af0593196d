/*
 * bounce.h - delivery status notifications (RFC 3464) as complete messages,
 * and the rule for when one is owed (RFC 3461).
 *
 * bounce_build() writes one DSN for one message: an RFC 5322 message with
 * CRLF line endings and no line over 998 octets, of type multipart/report
 * (RFC 6522) with three parts: a plain-English explanation, the
 * message/delivery-status report (one block per recipient), and the original
 * message (message/rfc822) or only its headers (text/rfc822-headers).
 *
 * About mail that needed SMTPUTF8 (RFC 6531: m->smtputf8, or a reported
 * address with a non-ASCII octet), the DSN follows RFC 6533: the report is
 * message/global-delivery-status (report-type=global-delivery-status), a
 * non-ASCII address is written with the "utf-8" address type in its
 * utf-8-addr-unitext form (UTF-8 as it is; '\', '+', '=', space and
 * controls as \x{HEX}), and the original is message/global or its headers
 * message/global-headers.
 *
 * Pure but for the caller's read callback: no clock (every time is passed
 * in), no randomness (the boundary's random part comes from the caller), no
 * global state.  All output goes into the caller's struct buf, which bounds
 * it (a DSN is at most about the attachment cap plus the original headers
 * plus a few KiB per recipient).
 *
 * Text that came from a peer (replies, remote host names) is written as
 * printable US-ASCII: control characters and 8-bit octets become '?', so a
 * hostile reply can neither inject a header line nor break the report.
 */
#ifndef TERN_DELIVER_BOUNCE_H
#define TERN_DELIVER_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "util/buf.h"

enum bounce_action {
    BOUNCE_FAILED = 0, /* permanent failure, or gave up (expired) */
    BOUNCE_DELAYED,    /* still being retried (a delay warning) */
    BOUNCE_DELIVERED,  /* delivered, reported only for NOTIFY=SUCCESS */
    BOUNCE_RELAYED,    /* passed to a next hop that does not do DSN (NOTIFY=SUCCESS) */
};

/* Default cap on the body of an attached original (its headers come whole). */
#define BOUNCE_BODY_CAP (64 * 1024)
/* Headers longer than this are cut (they are never legitimately that large). */
#define BOUNCE_HEADERS_MAX (256 * 1024)

struct bounce_rcpt {
    const char *addr;  /* the final recipient, as in the envelope */
    const char *orcpt; /* Original-Recipient "rfc822;bob@example.org", decoded
                          (dsn_orcpt_decode), or NULL when ORCPT was not given */
    enum bounce_action action;
    const char *reply;      /* "550 5.1.1 User unknown": one line, verbatim; NULL if none */
    const char *status;     /* "5.4.7" to override the status taken from reply (e.g. when
                               the queue lifetime ran out after 4xx replies), or NULL */
    const char *remote_mta; /* the host that gave the reply, or NULL (local / unknown) */
    time_t last_attempt;    /* Last-Attempt-Date; 0 leaves the field out */
    time_t retry_until;     /* Will-Retry-Until, for BOUNCE_DELAYED; 0 leaves it out */
};

/*
 * Read up to n bytes of the original message (as stored: CRLF lines, maybe
 * a stray bare LF) at offset off from its start into p.  Returns the number
 * read (0 only at the end), or -1 on error.
 */
typedef ssize_t (*bounce_read_fn)(void *arg, uint64_t off, char *p, size_t n);

struct bounce_msg {
    const char *hostname;      /* ours: Reporting-MTA, From, Message-ID */
    const char *queue_id;      /* the original message's queue ID */
    const char *sender;        /* the original envelope sender: the DSN goes there (non-empty) */
    time_t arrival;            /* Arrival-Date */
    time_t now;                /* Date of the DSN */
    const char *envid;         /* decoded ENVID, or NULL */
    int ret;                   /* enum dsn_ret (smtp/dsn.h); 0 = not given */
    const char *boundary_salt; /* a few random-looking characters from the caller */
    const struct bounce_rcpt *rcpts;
    size_t nrcpts; /* at least 1 */
    /* The original message; read NULL: nothing attached (and the text says so). */
    bounce_read_fn read;
    void *read_arg;
    uint64_t msg_len;
    size_t body_cap; /* 0: BOUNCE_BODY_CAP */
    bool smtputf8;   /* the original was received with SMTPUTF8 (RFC 6533 report) */
};

struct bounce_info {
    bool global;    /* RFC 6533: message/global-delivery-status, utf-8 addresses */
    bool eightbit;  /* the DSN holds 8-bit octets (from the original or an address):
                       relay it with BODY=8BITMIME */
    bool truncated; /* the attached original was cut at the cap */
    bool full;      /* the whole original was attached (not only its headers) */
};

/*
 * Append the DSN to out.  Which original is attached: the whole message when
 * a recipient FAILED and RET is not HDRS; its headers otherwise (RFC 3461
 * §4.3: RET is about failure DSNs; delay and success reports carry headers
 * only).  0, or -1 with a reason in err (bad input, read error, out's limit);
 * on -1 out may hold a partial message: reset it.  info may be NULL.
 */
int bounce_build(const struct bounce_msg *m, struct buf *out, struct bounce_info *info, char *err,
    size_t errlen);

/*
 * The Status of a recipient: the enhanced code at the start of the reply's
 * text when its class matches the reply code's ("550 5.1.1 ..." -> "5.1.1"),
 * else "C.0.0" from the reply code's first digit ("451 busy" -> "4.0.0");
 * without a usable reply, from the action (failed 5.0.0, delayed 4.0.0,
 * delivered and relayed 2.0.0).  Writes at most 12 bytes with the NUL.
 */
void bounce_status(const char *reply, enum bounce_action action, char out[12]);

/* A short plain-English hint for an enhanced code ("5.1.1"), or NULL. */
const char *bounce_hint(const char *status);

/*
 * Is a DSN owed for a recipient with these NOTIFY bits (DSN_NOTIFY_*, 0 = not
 * given)?  Never for the null sender ("" or NULL; the caller sends one double
 * bounce to the postmaster instead) nor for NOTIFY=NEVER.  FAILED: NOTIFY
 * not given or including FAILURE.  DELAYED: not given or including DELAY
 * (RFC 3461 §4.1 allows assuming FAILURE,DELAY; Postfix does the same).
 * DELIVERED, RELAYED: only when NOTIFY includes SUCCESS.
 */
bool bounce_wanted(const char *sender, unsigned notify, enum bounce_action action);

/* A ready-made bounce_read_fn for a message stored at offset base of fd (pread). */
struct bounce_fd_source {
    int fd;
    uint64_t base;
};
ssize_t bounce_read_fd(void *arg, uint64_t off, char *p, size_t n);

#endif
