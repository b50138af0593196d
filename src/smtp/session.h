/*
 * session.h - the SMTP server state machine (RFC 5321, 1870, 2920, 3030,
 * 6152, 6531, 2034, 3207).
 *
 * Pure: bytes in, replies out, and requests to the caller through callbacks
 * (start a transaction, judge a recipient, take body bytes, commit).  No
 * sockets, no clock (the caller passes the time), no disk.  AUTH (RFC 4954
 * PLAIN and LOGIN) is decoded here; the password check is the caller's.  One command table
 * (session.c) says for each verb where it is allowed, what may refuse it and
 * what it changes.
 *
 * Flow: the caller feeds whatever it read with smtp_session_input(), then
 * writes out whatever is in smtp_session_output().  Input stops being
 * consumed when the session must wait (commit in flight: SMTP_SUSPEND), when
 * the output buffer is full (SMTP_OK with bytes left: flush, then call again
 * with the rest), or when the session is over (SMTP_CLOSE: flush, close).
 * Pipelined commands (RFC 2920) are thus answered in order and in batches.
 */
#ifndef TERN_SMTP_SESSION_H
#define TERN_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "smtp/addr.h"
#include "smtp/parse.h"
#include "smtp/reply.h"
#include "util/buf.h"

struct smtp_session;

struct smtp_session_conf {
    const char *hostname;               /* ours: greeting, Received */
    size_t max_line_length;             /* command line octets including CRLF */
    unsigned long long max_message_size; /* octets; SIZE advertised and enforced */
    unsigned max_recipients;
    unsigned max_errors;                /* more than this: 421 4.7.0 and close */
    bool auth_offer;                    /* AUTH PLAIN LOGIN under TLS (auth_users is set) */
    bool tls_offer;                     /* advertise and accept STARTTLS (RFC 3207) */
    bool tls_required;                  /* 530 5.7.0 to mail commands before TLS */
    bool submission;                    /* a submission listener (RFC 6409) */
};

struct smtp_txn {
    char id[24];                        /* queue ID, set by the mail callback */
    struct smtp_path sender;
    struct smtp_mail_params params;
    struct smtp_path *rcpts;            /* accepted recipients */
    struct dsn_rcpt_params *rcpt_dsn;   /* their RFC 3461 NOTIFY/ORCPT, parallel to rcpts */
    unsigned nrcpts;
    unsigned rcpts_cap;
    bool bdat;                          /* BDAT used in this transaction */
};

/*
 * A mail or rcpt callback may answer REPLY_PENDING when its verdict needs
 * something that takes time (a state store, a password hash): the session
 * suspends (SMTP_SUSPEND, no input consumed) until the caller passes the
 * verdict to smtp_session_verdict().  The rcpt callback's path is the
 * session's own copy and stays valid until then; the txn too.  If the
 * session is freed, times out or is shut down meanwhile (it closes), the
 * verdict must not be given.
 */
#define REPLY_PENDING ((enum reply_id)(REPLY__COUNT + 1))

struct smtp_callbacks {
    /*
     * MAIL was accepted by syntax: open a transaction, put a queue ID in
     * t->id.  Return R_MAIL_OK to go on, a refusal (R_LOCAL_ERROR, ...), or
     * REPLY_PENDING (then t->id must be set before the R_MAIL_OK verdict).
     */
    enum reply_id (*mail)(void *ctx, struct smtp_txn *t);
    /*
     * Judge one recipient: R_RCPT_OK, the refusal to send (relay, unknown
     * user...), or REPLY_PENDING.
     */
    enum reply_id (*rcpt)(void *ctx, const struct smtp_txn *t, const struct smtp_path *rcpt);
    /* Body octets as they arrive (unstuffed, CRLF kept); -1 on a write failure. */
    int (*body)(void *ctx, const char *p, size_t n);
    /*
     * The message is complete and clean: make it durable, then call
     * smtp_session_commit_done().  Until then the session is suspended.
     */
    void (*commit)(void *ctx, struct smtp_txn *t);
    /* The transaction ended without a commit (RSET, error, close). */
    void (*abort)(void *ctx, struct smtp_txn *t);
    /*
     * AUTH: check a user name and password (NUL-terminated, any octets but
     * NUL and controls in the name).  The session wipes the password as soon
     * as this returns, so copy what a later check needs.  Return R_AUTH_OK,
     * R_AUTH_FAILED, R_AUTH_TOO_MANY (421: the session closes),
     * R_LOCAL_ERROR, or REPLY_PENDING.  NULL: AUTH is not offered.
     */
    enum reply_id (*auth)(void *ctx, const char *user, const char *pass);
};

struct smtp_peer {
    char addr[64];                      /* "192.0.2.1" or "2001:db8::1" */
    char id[24];                        /* session ID for logs */
    bool tls;                           /* for the Received protocol name */
};

enum smtp_status {
    SMTP_OK,       /* go on; if input is left, flush output and call again */
    SMTP_SUSPEND,  /* waiting for smtp_session_commit_done() or smtp_session_verdict();
                      keep the rest of the input */
    SMTP_CLOSE,    /* flush the output, then close the connection */
    SMTP_STARTTLS, /* flush the output (the 220), DISCARD all input not consumed (it was
                      sent before the handshake: RFC 3207 §4.2), do the TLS handshake,
                      then call smtp_session_tls_started() */
};

struct smtp_session *smtp_session_new(const struct smtp_session_conf *conf,
    const struct smtp_callbacks *cb, void *ctx, const struct smtp_peer *peer);
void smtp_session_free(struct smtp_session *s);

/* Queue the greeting (220), or a 421 when refuse is a reply id (overload). */
enum smtp_status smtp_session_greet(struct smtp_session *s);

size_t smtp_session_input(struct smtp_session *s, const char *p, size_t n, time_t now,
    enum smtp_status *st);

/*
 * The commit finished: reply is R_QUEUED (with the queue ID) or a 4xx
 * (R_SPOOL_ERROR, R_SPOOL_FULL).  Returns SMTP_OK (go on with any input
 * kept), or SMTP_CLOSE if the session was asked to shut down meanwhile.
 */
enum smtp_status smtp_session_commit_done(struct smtp_session *s, enum reply_id reply);

/*
 * The verdict of a callback that answered REPLY_PENDING: for MAIL,
 * R_MAIL_OK or a refusal; for RCPT, R_RCPT_OK or a refusal; for AUTH,
 * R_AUTH_OK, R_AUTH_FAILED, R_AUTH_TOO_MANY (421, close) or R_LOCAL_ERROR.  The reply is
 * queued; returns SMTP_OK (go on with any input kept) or SMTP_CLOSE (too
 * many errors).
 */
enum smtp_status smtp_session_verdict(struct smtp_session *s, enum reply_id verdict);

/*
 * The same, for a refusal whose text has arguments of its own (a greylisting delay, a
 * rate limit): args[0..3] fill the reply's %s in order (unused ones may be NULL).
 */
enum smtp_status smtp_session_verdict_args(struct smtp_session *s, enum reply_id verdict,
    const char *const args[4]);

/* True while a callback's verdict is awaited. */
bool smtp_session_waiting(const struct smtp_session *s);

/*
 * Policy ends the session (e.g. too many failed AUTHs): the reply (a 421
 * taking the host name, or one without arguments) is queued, an open
 * transaction aborted; always SMTP_CLOSE.  Not while a commit is in flight.
 */
enum smtp_status smtp_session_drop(struct smtp_session *s, enum reply_id reply);

/* The user this session authenticated as (AUTH answered 235), or NULL. */
const char *smtp_session_auth_user(const struct smtp_session *s);

/*
 * The TLS handshake succeeded (after SMTP_STARTTLS, or before the greeting on
 * an implicit-TLS listener): the session starts over as right after the
 * greeting (no HELO, no transaction) with peer.tls set.  version and cipher
 * (e.g. "TLSv1.3", "TLS_AES_256_GCM_SHA384") go into the Received header.
 * Returns SMTP_OK.  After a failed handshake the caller closes; no reply.
 */
enum smtp_status smtp_session_tls_started(struct smtp_session *s, const char *version,
    const char *cipher);

/* The idle timer fired: 421 4.4.2 queued; always SMTP_CLOSE. */
enum smtp_status smtp_session_timeout(struct smtp_session *s);

/*
 * The server is shutting down.  An idle session gets 421 4.3.2 now
 * (SMTP_CLOSE); one in the middle of DATA/BDAT or a commit may finish its
 * message (SMTP_OK) and gets 421 4.3.2 at its next command.
 */
enum smtp_status smtp_session_shutdown(struct smtp_session *s);

/*
 * The body callback failed (it returned -1): say which reply the message
 * deserves at its end, R_SPOOL_ERROR (the default) or R_SPOOL_FULL.
 */
void smtp_session_body_failed(struct smtp_session *s, enum reply_id reply);

/* The output waiting to be written; the caller consumes what it wrote. */
struct buf *smtp_session_output(struct smtp_session *s);

/* True while message data is being received (the data timeout applies). */
bool smtp_session_in_data(const struct smtp_session *s);
bool smtp_session_closed(const struct smtp_session *s);
const char *smtp_session_helo(const struct smtp_session *s);
unsigned smtp_session_errors(const struct smtp_session *s);

#endif
