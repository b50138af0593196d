/*
 * client.h - the SMTP client as a pure state machine (RFC 5321, for relaying).
 *
 * No I/O, no clock: the driver (deliver/remote.c) connects, then loops on
 * smtp_client_next(), which says what to do: write the pending output,
 * read server bytes and feed them in, start another message or quit on an
 * idle session, or close.  The driver picks each read's timeout from
 * smtp_client_waiting() and reports a timeout or a lost connection with
 * smtp_client_fail().  The body is pulled from the driver through the
 * message's callback (only from smtp_client_next()) and dot-stuffed here,
 * or sent in BDAT chunks (RFC 3030) when the message asks for chunking and
 * the server offers CHUNKING.
 *
 * Promises:
 *   - only CRLF is sent: commands are checked (no control characters, no
 *     angle brackets in a path), and a bare CR or LF in the body goes out as
 *     CRLF; a body not ending in a line end gets CRLF;
 *   - with DATA, a '.' starting a body line is doubled and the body ends
 *     with CRLF "." CRLF; with BDAT, the body goes as it is (after the line
 *     ends are made CRLF) in chunks of at most SMTP_CLIENT_BDAT_MAX octets,
 *     each cut after a CRLF when there is one in it (never between CR and
 *     LF), the last one marked LAST ("BDAT 0 LAST" for an empty body), and
 *     no BDAT follows a refused one;
 *   - every recipient of a message gets exactly one outcome before
 *     smtp_client_next() returns SMTP_CLIENT_IDLE or SMTP_CLIENT_CLOSE, and
 *     it never changes afterwards (until smtp_client_next_message());
 *   - nothing is output once SMTP_CLIENT_CLOSE was returned;
 *   - replies are read with smtp/replyparse (multi-line, bounded); a
 *     malformed one ends the connection (the stream can no longer be trusted);
 *   - STARTTLS (RFC 3207): with a TLS mode other than NONE, STARTTLS is sent
 *     after EHLO when offered; its 220 makes smtp_client_next() return
 *     SMTP_CLIENT_STARTTLS, and every octet that came after the 220 before
 *     the handshake is dropped (a man in the middle cannot inject replies
 *     that would be read as coming through TLS); after the handshake all
 *     knowledge from the plaintext EHLO is forgotten and EHLO is sent again.
 *     With MAY, a server that does not offer STARTTLS or refuses it (4xx/5xx)
 *     gets the message in plaintext; with REQUIRE it gets QUIT.
 *   - AUTH (RFC 4954, only when smtp_client_set_auth() was called: tern send;
 *     the relay never authenticates): after the last EHLO (the one through TLS
 *     when there was STARTTLS), before the first MAIL, one command at a time:
 *     PLAIN (RFC 4616, initial response) when offered, else LOGIN.  Under MAY,
 *     when STARTTLS did not happen, no AUTH is sent (the password would go in
 *     plaintext).  Whether plaintext AUTH is acceptable at all (mode NONE on a
 *     plaintext connection) is the driver's decision; with implicit TLS the
 *     driver sets mode NONE.  The password is wiped from memory on free.
 *
 * Outcomes (rule 7 of STYLE.md: the scheduler decides what happens next):
 *   DELIVERED   the final reply to the dot (or to BDAT LAST) was 2xx (the
 *               reply is kept);
 *   REFUSED     this server answered 4xx or 5xx for the recipient: to its
 *               RCPT, to MAIL, or to DATA / the dot / any BDAT (the reply
 *               is kept);
 *   NEXT_HOST   this connection could not decide: 421 at any point, a 4xx
 *               or 5xx greeting, EHLO or HELO refused, a malformed reply,
 *               a lost connection or a timeout.  The reply is kept when
 *               there was one (code != 0), else text says what happened;
 *   NEED_SMTPUTF8  the message needs SMTPUTF8 and the server lacks it;
 *   TLS_MISSING the TLS mode is SMTP_CLIENT_TLS_REQUIRE and the server does
 *               not offer STARTTLS, or refuses it (text says which; QUIT is
 *               sent); like NEXT_HOST, another host may do better;
 *   TLS_FAILED  the TLS handshake failed (smtp_client_tls_done() with ok
 *               false; text is the driver's why); like NEXT_HOST;
 *   AUTH_FAILED AUTH was asked for and did not succeed: the server's 4xx/5xx
 *               to it (the reply is kept: 535 bad credentials, 454 transient),
 *               or (code 0) AUTH or a mechanism we speak was not offered, or
 *               it would have gone in plaintext under MAY; QUIT is sent
 *               (not after 421);
 *   TOO_BIG     the server's SIZE limit (smtp_client_size_limit()) is
 *               smaller than the message;
 *   LOCAL       our side failed: the body could not be read, or an address
 *               cannot be sent as it is (text says which).
 */
#ifndef TERN_SMTP_CLIENT_H
#define TERN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SMTP_CLIENT_TEXT_MAX 512
#define SMTP_CLIENT_BDAT_MAX 65536 /* body octets in one BDAT chunk */

/* EHLO keywords understood (smtp_client_extensions()). */
#define SMTP_CLIENT_EXT_PIPELINING 0x01u
#define SMTP_CLIENT_EXT_SIZE 0x02u
#define SMTP_CLIENT_EXT_8BITMIME 0x04u
#define SMTP_CLIENT_EXT_SMTPUTF8 0x08u
#define SMTP_CLIENT_EXT_DSN 0x10u
#define SMTP_CLIENT_EXT_CHUNKING 0x20u
#define SMTP_CLIENT_EXT_STARTTLS 0x40u
#define SMTP_CLIENT_EXT_AUTH 0x80u

#define SMTP_CLIENT_AUTH_MAX 255 /* octets of a user name or a password for AUTH */

struct smtp_client_rcpt {
    const char *addr;   /* without angle brackets */
    const char *notify; /* DSN NOTIFY value ("SUCCESS,FAILURE", "NEVER"), or NULL */
    const char *orcpt;  /* DSN ORCPT value ("rfc822;a@example.org", xtext), or NULL */
};

/*
 * One message.  It and everything it points to must stay valid until the
 * transaction ends (smtp_client_next() returns IDLE or CLOSE); after that
 * the client no longer looks at it (QUIT, a failure while idle).
 */
struct smtp_client_msg {
    const char *sender; /* "" for the null reverse-path */
    const struct smtp_client_rcpt *rcpts;
    size_t nrcpts;
    uint64_t size;      /* body octets, announced with SIZE= */
    bool smtputf8;      /* UTF-8 in the envelope: needs SMTPUTF8 */
    bool eightbit;      /* received with BODY=8BITMIME */
    const char *ret;    /* DSN RET (FULL or HDRS), or NULL */
    const char *envid;  /* DSN ENVID (xtext), or NULL */
    bool no_pipelining; /* one command at a time even when PIPELINING is offered */
    bool chunking;      /* BDAT (RFC 3030) when CHUNKING is offered; else DATA */
    /*
     * The next body octets into buf (at most n): how many (0 at the end of
     * the body), or -1 when they cannot be read (the connection is then
     * closed without the final dot or BDAT LAST, so the server drops the
     * message).
     */
    ssize_t (*body)(void *arg, char *buf, size_t n);
    void *arg;
};

enum smtp_client_result {
    SMTP_CLIENT_PENDING,
    SMTP_CLIENT_DELIVERED,
    SMTP_CLIENT_REFUSED,
    SMTP_CLIENT_NEXT_HOST,
    SMTP_CLIENT_NEED_SMTPUTF8,
    SMTP_CLIENT_TOO_BIG,
    SMTP_CLIENT_LOCAL,
    SMTP_CLIENT_TLS_MISSING,
    SMTP_CLIENT_TLS_FAILED,
    SMTP_CLIENT_AUTH_FAILED,
};

/* When to use STARTTLS (smtp_client_set_tls()); tls_policy none / may / encrypt and verify. */
enum smtp_client_tls {
    SMTP_CLIENT_TLS_NONE,    /* never (the default) */
    SMTP_CLIENT_TLS_MAY,     /* when offered; plaintext when not offered or refused */
    SMTP_CLIENT_TLS_REQUIRE, /* TLS or no message: TLS_MISSING when not offered or refused */
};

struct smtp_client_outcome {
    enum smtp_client_result result;
    unsigned code;                   /* the server's reply code, or 0 when there was none */
    char text[SMTP_CLIENT_TEXT_MAX]; /* with a code: the reply as received, without the code
                                        ("5.1.1 no such user", lines joined with "; "); without:
                                        what happened ("timeout waiting for the greeting") */
};

enum smtp_client_action {
    SMTP_CLIENT_SEND,     /* write smtp_client_output(), then smtp_client_sent() */
    SMTP_CLIENT_READ,     /* read; feed bytes to smtp_client_input(), or smtp_client_fail() */
    SMTP_CLIENT_IDLE,     /* the transaction is over: smtp_client_next_message() or _quit() */
    SMTP_CLIENT_CLOSE,    /* close the connection; the client is finished */
    SMTP_CLIENT_STARTTLS, /* the server said 220 to STARTTLS: handshake, then
                             smtp_client_tls_done() */
};

/* What the client waits for, so the driver can choose the timeout (RFC 5321 §4.5.3.2). */
enum smtp_client_wait {
    SMTP_CLIENT_W_GREETING,
    SMTP_CLIENT_W_HELLO, /* EHLO or HELO */
    SMTP_CLIENT_W_MAIL,  /* MAIL (or RSET) */
    SMTP_CLIENT_W_RCPT,
    SMTP_CLIENT_W_DATA,  /* the 354 */
    SMTP_CLIENT_W_BLOCK, /* writing the body, or the reply to a BDAT chunk before LAST */
    SMTP_CLIENT_W_DOT,   /* the final reply (to the dot or BDAT LAST) */
    SMTP_CLIENT_W_QUIT,
    SMTP_CLIENT_W_NONE,     /* idle or closed */
    SMTP_CLIENT_W_STARTTLS, /* the reply to STARTTLS, then the handshake (EHLO's timeout) */
    SMTP_CLIENT_W_AUTH,     /* a reply in the AUTH exchange (the output is secret) */
};

struct smtp_client;

/*
 * A client for a new connection, which will greet with helo_name and send m
 * once the session is open.  NULL when helo_name is not a plain name (empty,
 * over 255 octets, a space or control character) or memory is short.
 */
struct smtp_client *smtp_client_new(const char *helo_name, const struct smtp_client_msg *m);
void smtp_client_free(struct smtp_client *c);

/* The TLS mode, set before the first smtp_client_next() (default SMTP_CLIENT_TLS_NONE). */
void smtp_client_set_tls(struct smtp_client *c, enum smtp_client_tls mode);

/*
 * AUTH with user and pass (copied; each 1 to SMTP_CLIENT_AUTH_MAX octets, any
 * octets but NUL), set before the first smtp_client_next().  0, or -1 when
 * too late or a length is wrong.  While smtp_client_waiting() says
 * SMTP_CLIENT_W_AUTH, the output carries the credentials: a driver that
 * prints its transcript must hide it.
 */
int smtp_client_set_auth(struct smtp_client *c, const char *user, const char *pass);
/* Whether AUTH succeeded (235); *mech (when not NULL): "PLAIN", "LOGIN" or NULL (not tried). */
bool smtp_client_authenticated(const struct smtp_client *c, const char **mech);

/*
 * After SMTP_CLIENT_STARTTLS: the handshake succeeded (ok: the session goes on
 * with EHLO, every later octet through TLS) or failed (every pending recipient
 * gets TLS_FAILED with why, and the connection is to be closed).
 */
void smtp_client_tls_done(struct smtp_client *c, bool ok, const char *why);

/* Whether the session runs over TLS (smtp_client_tls_done() said ok). */
bool smtp_client_tls_active(const struct smtp_client *c);

enum smtp_client_action smtp_client_next(struct smtp_client *c);
enum smtp_client_wait smtp_client_waiting(const struct smtp_client *c);
/* What is awaited, in words for logs and errors ("the reply to RCPT TO"). */
const char *smtp_client_wait_name(enum smtp_client_wait w);

/* The octets to write now (valid until the next call on c), and how many were written. */
const char *smtp_client_output(const struct smtp_client *c, size_t *n);
void smtp_client_sent(struct smtp_client *c, size_t n);

/* Server bytes; all are taken (bytes after the end of the session are ignored). */
void smtp_client_input(struct smtp_client *c, const char *p, size_t n);

/* The connection broke or timed out: every recipient still pending gets NEXT_HOST with why. */
void smtp_client_fail(struct smtp_client *c, const char *why);

/* On an idle session: send m on the same connection (0), or -1 (not idle, or no memory). */
int smtp_client_next_message(struct smtp_client *c, const struct smtp_client_msg *m);
/* On an idle session: send QUIT; its reply (or the driver's timeout) ends the session. */
void smtp_client_quit(struct smtp_client *c);

/* The current message's outcome for recipient i. */
const struct smtp_client_outcome *smtp_client_outcome(const struct smtp_client *c, size_t i);

unsigned smtp_client_extensions(const struct smtp_client *c);
/* The server's SIZE limit (0: none announced). */
uint64_t smtp_client_size_limit(const struct smtp_client *c);

#endif
