/*
 * delivery.h - one delivery attempt, as the scheduler hands it to a
 * transport (maildir.c, lmtp.c, later remote.c) and gets it back.
 *
 * A transport runs on a worker thread, reads the body from the spool
 * segment (pread on body_fd), and reports per recipient: delivered,
 * transient (with the reply), or permanent (with the reply).  It never
 * decides what happens next: that is the scheduler's (STYLE.md rule 7).
 */
#ifndef TERN_DELIVER_DELIVERY_H
#define TERN_DELIVER_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "smtp/reply.h"

enum delivery_status {
    DLV_OK,    /* delivered */
    DLV_TEMP,  /* transient: retry later */
    DLV_PERM,  /* permanent: give up (DSN) */
};

#define DELIVERY_REPLY_MAX 512

struct delivery_rcpt {
    const char *addr;              /* the envelope recipient, as accepted */
    const char *const *targets;    /* local mailboxes after alias expansion (NULL: addr itself) */
    unsigned ntargets;
    const char *dsn_notify;        /* RFC 3461 NOTIFY to pass on ("FAILURE,DELAY"), or NULL */
    const char *dsn_orcpt;         /* RFC 3461 ORCPT to pass on (xtext), or NULL */
    enum delivery_status status;   /* set by the transport */
    char reply[DELIVERY_REPLY_MAX]; /* one reply line, no CRLF: ours from the catalogue, or
                                       the remote/LMTP server's verbatim (multi-line replies
                                       joined with "; ") */
    char remote_mta[300];          /* remote delivery: the server that gave the reply, its
                                      host name (its IP address when it has none), for the
                                      DSN's "Remote-MTA: dns; ..."; "" when none answered */
};

struct delivery_msg {
    const char *id;
    const char *sender;            /* "" for the null reverse-path */
    time_t arrival;
    int body_fd;                   /* the spool segment, read-only */
    uint64_t body_off;
    uint64_t body_len;
    struct delivery_rcpt *rcpts;
    unsigned nrcpts;
    bool eightbit;                 /* received with BODY=8BITMIME */
    const char *dsn_ret;           /* RFC 3461 RET to pass on ("FULL"/"HDRS"), or NULL */
    const char *dsn_envid;         /* RFC 3461 ENVID to pass on (xtext), or NULL */
    void *arg;                     /* the scheduler's */
};

/*
 * Set a recipient's outcome from a catalogue entry (R_DLV_*), with its %s
 * arguments; the status follows the entry's class (2xx OK, 4xx TEMP, 5xx PERM).
 */
void delivery_set(struct delivery_rcpt *r, enum reply_id id, ...);

/* Set a recipient's outcome from a reply received from a server (LMTP/SMTP), verbatim. */
void delivery_set_received(struct delivery_rcpt *r, unsigned code, const char *text);

#endif
