/*
 * session.c - the SMTP server state machine (see session.h).
 *
 * One command table (smtp_commands[]) drives everything: for each verb, the
 * argument rule, the reply when an argument is missing, a check that may
 * only refuse (state, sequence), and a proceed step that changes the
 * transaction.  Every reply comes from the catalogue via reply_write().
 *
 * Framing promises (RFC 5321 §2.3.8, §4.1.1.4; SMTP smuggling):
 *  - a command line ends only at CRLF; a bare LF or CR inside it makes the
 *    whole line (up to the next CRLF) one refused line, never two commands;
 *  - a line longer than max_line_length is refused at its CRLF, and only
 *    max_line_length octets of it are ever held in memory;
 *  - message data ends only at CRLF.CRLF (data.c).
 */
#include "smtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/data.h"
#include "util/base64.h"
#include "util/date.h"
#include "util/log.h"

enum smtp_state {
    S_CONNECTED, /* greeted, no HELO/EHLO yet */
    S_READY,     /* HELO/EHLO done, no transaction */
    S_MAIL,      /* MAIL accepted, collecting recipients */
    S_DATA,      /* reading DATA */
    S_BDAT,      /* reading a BDAT chunk */
    S_COMMIT,    /* waiting for the commit */
    S_WAIT,      /* waiting for a callback's verdict (wait_verb) */
    S_AUTH,      /* AUTH sent a 334: the next line is a response, not a command */
    S_TLS,       /* 220 to STARTTLS queued: waiting for smtp_session_tls_started() */
    S_CLOSED,
};

/* Stop consuming input once this much output is waiting (pipelining batches). */
#define SESSION_OUT_SOFT 8192
#define SESSION_OUT_MAX 65536
#define SESSION_HELO_MAX 255
#define SESSION_AUTH_USER_MAX 255 /* octets of an AUTH user name (authcid) */

enum auth_mech { AUTH_PLAIN, AUTH_LOGIN };

struct smtp_session {
    const struct smtp_session_conf *conf;
    const struct smtp_callbacks *cb;
    void *ctx;
    struct smtp_peer peer;
    enum smtp_state state;
    bool esmtp;
    bool txn_open;     /* MAIL accepted; abort callback owed if it ends badly */
    bool bdat_failed;  /* a BDAT transfer failed: refuse further chunks until RSET/MAIL */
    bool shutdown;     /* server shutting down: 421 at the next command */
    bool body_err;     /* the body callback failed */
    enum reply_id body_reply; /* and the reply that failure deserves */
    unsigned errors;
    char helo[SESSION_HELO_MAX + 1];
    time_t now;
    char tls_version[16]; /* for the Received header, once TLS is active */
    char tls_cipher[64];

    /* command line assembly across reads */
    char *line;
    size_t linelen;
    bool line_overflow;
    bool line_bare_lf;
    bool line_last_cr;

    /* message data */
    struct smtp_data data;
    unsigned long long bdat_left;
    bool bdat_last;
    bool bdat_discard;

    struct smtp_txn txn;
    struct buf out;

    /* a verdict in waiting (S_WAIT) */
    enum smtp_verb wait_verb;
    enum smtp_state wait_from; /* the state to return to */
    /*
     * The recipient being judged: the rcpt callback's path lives here until
     * the verdict.  Allocated at the first RCPT (780 octets an idle session
     * need not carry), freed with the session.
     */
    struct session_rcpt {
        struct smtp_path path;
        struct dsn_rcpt_params dsn;
    } *wait_rcpt;

    /* AUTH (RFC 4954) */
    bool auth_done;           /* 235 sent: authenticated as auth_user */
    bool auth_bad_user;       /* LOGIN: the user name given cannot be valid */
    enum auth_mech auth_mech; /* in S_AUTH */
    unsigned auth_step;       /* LOGIN in S_AUTH: 0 user name awaited, 1 password */
    char auth_user[SESSION_AUTH_USER_MAX + 1]; /* authenticated, or being checked */
    const char *const *verdict_args; /* a refusal's own %s arguments (verdict_args) */
};

typedef enum reply_id (*cmd_check_fn)(struct smtp_session *, const struct smtp_cmd *);
typedef void (*cmd_proceed_fn)(struct smtp_session *, const struct smtp_cmd *);

enum cmd_arg { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };

struct smtp_command {
    enum smtp_verb verb;
    enum cmd_arg arg;
    enum reply_id missing; /* reply when a required argument is missing */
    cmd_check_fn check;    /* may only refuse: returns REPLY__COUNT to go on */
    cmd_proceed_fn proceed;
    bool before_tls; /* allowed before STARTTLS where TLS is required (RFC 3207 §4) */
};

/* ---- replies ------------------------------------------------------------ */

static void
session_close(struct smtp_session *s)
{
    s->state = S_CLOSED;
}

/* Count an error reply; past max_errors, add the 421 and close. */
static void
session_error_sent(struct smtp_session *s)
{
    s->errors++;
    if (s->errors > s->conf->max_errors && s->state != S_CLOSED) {
        reply_write(&s->out, R_TOO_MANY_ERRORS, s->conf->hostname);
        session_close(s);
    }
}

#define REPLY0(s, id) session_reply(s, id, reply_write(&(s)->out, id))
#define REPLY1(s, id, a) session_reply(s, id, reply_write(&(s)->out, id, a))
#define REPLY2(s, id, a, b) session_reply(s, id, reply_write(&(s)->out, id, a, b))
#define REPLYV(s, id, v) session_reply(s, id, reply_write(&(s)->out, id, v[0], v[1], v[2], v[3]))

static void
session_reply(struct smtp_session *s, enum reply_id id, int written)
{
    (void)written; /* the output buffer is far larger than SESSION_OUT_SOFT */
    /*
     * max_errors is for clients that misbehave.  Greylisting and a state
     * store that does not answer are our own choices, made per recipient: a
     * legitimate MTA with many new recipients must not be cut off by them.
     */
    if (id == R_GREYLISTED || id == R_POLICY_UNAVAILABLE)
        return;
    if (reply_get(id)->code >= 400 && reply_get(id)->code != 421)
        session_error_sent(s);
}

/* ---- transactions --------------------------------------------------------- */

static void
txn_reset(struct smtp_session *s, bool aborted)
{
    if (s->txn_open && aborted && s->cb->abort != NULL)
        s->cb->abort(s->ctx, &s->txn);
    s->txn_open = false;
    s->txn.id[0] = '\0';
    s->txn.nrcpts = 0;
    s->txn.bdat = false;
    memset(&s->txn.params, 0, sizeof(s->txn.params));
    s->txn.sender.addr[0] = '\0';
    s->txn.sender.len = 0;
    s->body_err = false;
    s->body_reply = R_SPOOL_ERROR;
    if (s->state != S_CLOSED)
        s->state = s->helo[0] ? S_READY : S_CONNECTED;
}

static int
session_body(void *arg, const char *p, size_t n)
{
    struct smtp_session *s = arg;

    if (s->body_err)
        return -1;
    if (s->cb->body(s->ctx, p, n) == -1) {
        s->body_err = true;
        return -1;
    }
    return 0;
}

/* RFC 5321 §4.4 trace field, first thing in the stored message. */
static void
session_received(struct smtp_session *s)
{
    /* helo 255, address 64, hostname 255, tls ~128, id 24, path SMTP_PATH_MAX, date 64 */
    char date[64], hdr[1024 + SMTP_PATH_MAX], tls[128] = "";
    const char *proto;
    int n;

    date_rfc5322(s->now, date, sizeof(date));
    /* RFC 3848 / RFC 6531: a trailing A says AUTH succeeded; the user is not named. */
    if (s->txn.params.smtputf8)
        proto = s->peer.tls ? (s->auth_done ? "UTF8SMTPSA" : "UTF8SMTPS")
                            : (s->auth_done ? "UTF8SMTPA" : "UTF8SMTP");
    else if (s->esmtp)
        proto = s->peer.tls ? (s->auth_done ? "ESMTPSA" : "ESMTPS")
                            : (s->auth_done ? "ESMTPA" : "ESMTP");
    else
        proto = s->peer.tls ? "SMTPS" : "SMTP";
    /* A comment after the protocol name says which TLS, as sendmail and Exim do. */
    if (s->peer.tls)
        snprintf(tls, sizeof(tls), "\r\n\t(version=%s cipher=%s)", s->tls_version, s->tls_cipher);
    n = -1;
    if (s->txn.nrcpts == 1)
        n = snprintf(hdr, sizeof(hdr),
            "Received: from %s ([%s])\r\n\tby %s (tern) with %s%s id %s\r\n\tfor <%s>; %s\r\n",
            s->helo, s->peer.addr, s->conf->hostname, proto, tls, s->txn.id, s->txn.rcpts[0].addr,
            date);
    if (n < 0 || (size_t)n >= sizeof(hdr)) /* several recipients, or no room to name one */
        n = snprintf(hdr, sizeof(hdr),
            "Received: from %s ([%s])\r\n\tby %s (tern) with %s%s id %s;\r\n\t%s\r\n", s->helo,
            s->peer.addr, s->conf->hostname, proto, tls, s->txn.id, date);
    if (n > 0 && (size_t)n < sizeof(hdr))
        session_body(s, hdr, (size_t)n);
}

static void
session_begin_body(struct smtp_session *s)
{
    smtp_data_init(&s->data, s->conf->max_message_size);
    session_received(s);
}

/* The message is complete: refuse it, or hand it over for commit. */
static void
session_end_body(struct smtp_session *s)
{
    char num[32];

    if (s->data.flags & (DATA_BARE_LF | DATA_BARE_CR)) {
        snprintf(num, sizeof(num), "%lu", s->data.first_bad_line);
        if (s->data.flags & DATA_BARE_LF)
            REPLY1(s, R_BARE_LF_DATA, num);
        else
            REPLY1(s, R_BARE_CR_DATA, num);
    } else if (s->data.flags & DATA_TOO_BIG) {
        snprintf(num, sizeof(num), "%llu", s->conf->max_message_size);
        REPLY1(s, R_SIZE_DATA, num);
    } else if (s->body_err) {
        REPLY0(s, s->body_reply == R_SPOOL_FULL ? R_SPOOL_FULL : R_SPOOL_ERROR);
    } else {
        s->state = S_COMMIT;
        s->cb->commit(s->ctx, &s->txn);
        return;
    }
    txn_reset(s, true);
}

/* ---- checks --------------------------------------------------------------- */

static enum reply_id
check_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->state == S_CONNECTED)
        return R_NEED_HELO;
    if (s->txn_open)
        return R_NESTED_MAIL;
    return REPLY__COUNT;
}

/* On a submission listener (RFC 6409) mail comes only from authenticated users. */
static enum reply_id
check_mail_submission(struct smtp_session *s, const struct smtp_cmd *c)
{
    enum reply_id r = check_mail(s, c);

    if (r == REPLY__COUNT && s->conf->submission && !s->auth_done)
        return R_AUTH_REQUIRED;
    return r;
}

static enum reply_id
check_in_txn(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->state == S_CONNECTED)
        return R_NEED_HELO;
    if (!s->txn_open)
        return R_NEED_MAIL;
    return REPLY__COUNT;
}

static enum reply_id
check_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    enum reply_id r = check_in_txn(s, c);

    if (r != REPLY__COUNT)
        return r;
    if (s->txn.bdat)
        return R_BDAT_THEN_DATA;
    if (s->txn.nrcpts == 0)
        return R_NEED_RCPT;
    return REPLY__COUNT;
}

/* ---- commands ------------------------------------------------------------- */

static const char *
session_ehlo_size(const struct smtp_session *s)
{
    static _Thread_local char size[40];

    snprintf(size, sizeof(size), "SIZE %llu", s->conf->max_message_size);
    return size;
}

static void
cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
    size_t n = 0;

    /* The first word is the client's name; real clients sometimes add more after it. */
    while (n < c->arglen && c->arg[n] != ' ')
        n++;
    if (n == 0 || n > SESSION_HELO_MAX || !smtp_addr_domain_valid(c->arg, n, true)) {
        REPLY1(s, R_HELO_SYNTAX, smtp_verb_name(c->verb));
        return;
    }
    txn_reset(s, true);
    memcpy(s->helo, c->arg, n);
    s->helo[n] = '\0';
    s->state = S_READY;
    s->esmtp = c->verb == VERB_EHLO;
    if (c->verb == VERB_HELO) {
        REPLY1(s, R_HELO, s->conf->hostname);
    } else {
        const char *ext[9] = {"PIPELINING", session_ehlo_size(s), "8BITMIME", "SMTPUTF8",
            "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"};
        size_t next = 7;

        if (s->conf->tls_offer && !s->peer.tls)
            ext[next++] = "STARTTLS";
        /* RFC 4954 §4 + §6: PLAIN and LOGIN send the password in clear, so only under TLS. */
        if (s->conf->auth_offer && s->cb->auth != NULL && s->peer.tls)
            ext[next++] = "AUTH PLAIN LOGIN";
        reply_write_lines(&s->out, R_EHLO, s->conf->hostname, ext, next);
    }
}

/*
 * The common head of MAIL and RCPT: "FROM:" or "TO:", then the path.  On
 * success rest and restlen give what follows the path (the parameters); on
 * failure the refusal has been sent, naming the part that is wrong.
 */
static bool
session_path(struct smtp_session *s, const struct smtp_cmd *c, unsigned flags,
    struct smtp_path *path, const char **rest, size_t *restlen)
{
    bool mail = c->verb == VERB_MAIL;
    enum reply_id syntax = mail ? R_MAIL_SYNTAX : R_RCPT_SYNTAX;
    enum addr_err ae;
    size_t off, used;

    switch (smtp_parse_prefix(c->arg, c->arglen, mail ? "FROM:" : "TO:", &off)) {
    case PREFIX_OK:
        break;
    case PREFIX_MISSING:
        REPLY1(s, syntax, mail ? "missing FROM:" : "missing TO:");
        return false;
    case PREFIX_NO_COLON:
        REPLY1(s, syntax, "missing colon");
        return false;
    case PREFIX_SPACE_BEFORE_COLON:
        REPLY1(s, syntax, "space before the colon");
        return false;
    }
    ae = smtp_addr_parse(c->arg + off, c->arglen - off, flags, path, &used);
    if (ae != ADDR_OK) {
        REPLY1(s, mail ? R_BAD_SENDER : R_BAD_RCPT, smtp_addr_strerror(ae));
        return false;
    }
    *rest = c->arg + off + used;
    *restlen = c->arglen - off - used;
    return true;
}

/* Refuse a bad ESMTP parameter with the keyword named in the reply. */
static void
session_param_error(struct smtp_session *s, enum param_err e, const char *bad, size_t badlen,
    const char *why)
{
    char kw[64];

    if (bad == NULL || badlen == 0) {
        bad = "";
        badlen = 0;
    }
    if (badlen >= sizeof(kw))
        badlen = sizeof(kw) - 1;
    memcpy(kw, bad, badlen);
    kw[badlen] = '\0';
    if (e == PARAM_ERR_UNKNOWN)
        REPLY1(s, R_PARAM_UNKNOWN, kw);
    else
        REPLY2(s, R_PARAM_SYNTAX, kw, e == PARAM_ERR_DSN && why ? why : smtp_param_strerror(e));
}

static void
session_wait(struct smtp_session *s, enum smtp_verb v)
{
    s->wait_verb = v;
    s->wait_from = s->state;
    s->state = S_WAIT;
}

static void
mail_finish(struct smtp_session *s, enum reply_id r)
{
    if (r != R_MAIL_OK) {
        if (s->verdict_args != NULL)
            REPLYV(s, r, s->verdict_args);
        else if (reply_get(r)->nargs == 1)
            REPLY1(s, r, s->txn.sender.addr); /* R_SENDER_NOT_OWNED */
        else
            REPLY0(s, r);
        return;
    }
    s->txn_open = true;
    s->state = S_MAIL;
    REPLY1(s, R_MAIL_OK, s->txn.sender.addr);
}

static void
rcpt_finish(struct smtp_session *s, enum reply_id r, const struct smtp_path *path,
    const struct dsn_rcpt_params *dsn)
{
    if (r != R_RCPT_OK) {
        if (s->verdict_args != NULL)
            REPLYV(s, r, s->verdict_args);
        else if (reply_get(r)->nargs == 1)
            REPLY1(s, r, path->addr);
        else
            REPLY0(s, r);
        return;
    }
    if (s->txn.nrcpts == s->txn.rcpts_cap) {
        unsigned cap = s->txn.rcpts_cap ? s->txn.rcpts_cap * 2 : 4;
        struct smtp_path *p;
        struct dsn_rcpt_params *d;
        if (cap > s->conf->max_recipients)
            cap = s->conf->max_recipients;
        p = realloc(s->txn.rcpts, cap * sizeof(*p));
        if (p != NULL)
            s->txn.rcpts = p;
        d = p ? realloc(s->txn.rcpt_dsn, cap * sizeof(*d)) : NULL;
        if (d != NULL)
            s->txn.rcpt_dsn = d;
        if (p == NULL || d == NULL) {
            REPLY0(s, R_LOCAL_ERROR);
            return;
        }
        s->txn.rcpts_cap = cap;
    }
    s->txn.rcpt_dsn[s->txn.nrcpts] = *dsn;
    s->txn.rcpts[s->txn.nrcpts++] = *path;
    REPLY1(s, R_RCPT_OK, path->addr);
}

static void
cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct smtp_mail_params params;
    const char *bad = NULL, *rest;
    size_t restlen, badlen = 0;
    enum param_err pe;
    enum reply_id r;
    char num[32];

    if (!session_path(s, c, ADDR_UTF8 | ADDR_NULL_OK, &s->txn.sender, &rest, &restlen))
        return;
    memset(&params, 0, sizeof(params));
    pe = smtp_parse_mail_params(rest, restlen, &params, &bad, &badlen);
    if (pe != PARAM_OK) {
        session_param_error(s, pe, bad, badlen, params.why);
        return;
    }
    if (s->txn.sender.utf8 && !params.smtputf8) {
        REPLY0(s, R_UTF8_SENDER);
        return;
    }
    if (params.has_size && params.size > s->conf->max_message_size) {
        snprintf(num, sizeof(num), "%llu", s->conf->max_message_size);
        REPLY1(s, R_SIZE_MAIL, num);
        return;
    }
    s->txn.params = params;
    s->txn.nrcpts = 0;
    s->txn.bdat = false;
    s->bdat_failed = false;
    s->body_err = false;
    s->txn.id[0] = '\0';
    r = s->cb->mail(s->ctx, &s->txn);
    if (r == REPLY_PENDING) {
        session_wait(s, VERB_MAIL);
        return;
    }
    mail_finish(s, r);
}

static void
cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct smtp_path path;
    struct dsn_rcpt_params dsn;
    const char *bad = NULL, *rest, *why = NULL;
    size_t restlen, badlen = 0;
    enum param_err pe;
    enum reply_id r;
    char num[32];

    if (!session_path(s, c, ADDR_UTF8 | ADDR_NO_DOMAIN_OK, &path, &rest, &restlen))
        return;
    pe = smtp_parse_rcpt_params(rest, restlen, &dsn, &why, &bad, &badlen);
    if (pe != PARAM_OK) {
        session_param_error(s, pe, bad, badlen, why);
        return;
    }
    if (path.utf8 && !s->txn.params.smtputf8) {
        REPLY0(s, R_UTF8_RCPT);
        return;
    }
    if (s->txn.nrcpts >= s->conf->max_recipients) {
        snprintf(num, sizeof(num), "%u", s->conf->max_recipients);
        REPLY1(s, R_TOO_MANY_RCPTS, num);
        return;
    }
    if (s->wait_rcpt == NULL && (s->wait_rcpt = malloc(sizeof(*s->wait_rcpt))) == NULL) {
        REPLY0(s, R_LOCAL_ERROR);
        return;
    }
    s->wait_rcpt->path = path;
    s->wait_rcpt->dsn = dsn;
    r = s->cb->rcpt(s->ctx, &s->txn, &s->wait_rcpt->path);
    if (r == REPLY_PENDING) {
        session_wait(s, VERB_RCPT);
        return;
    }
    rcpt_finish(s, r, &path, &dsn);
}

static void
cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY0(s, R_DATA_GO);
    s->state = S_DATA;
    session_begin_body(s);
}

/* A BDAT chunk has been read (or discarded): answer it. */
static void
session_bdat_chunk_end(struct smtp_session *s)
{
    char num[32];

    s->state = s->txn_open ? S_MAIL : (s->helo[0] ? S_READY : S_CONNECTED);
    if (s->bdat_discard) {
        s->bdat_discard = false;
        return; /* the refusal was sent when the BDAT command was read */
    }
    if (s->data.flags & DATA_TOO_BIG) {
        snprintf(num, sizeof(num), "%llu", s->conf->max_message_size);
        REPLY1(s, R_SIZE_DATA, num);
        txn_reset(s, true);
        s->bdat_failed = true;
        return;
    }
    if (!s->bdat_last) {
        snprintf(num, sizeof(num), "%llu", s->data.size);
        REPLY1(s, R_BDAT_OK, num);
        return;
    }
    smtp_data_bdat_end(&s->data);
    session_end_body(s);
    if (s->state != S_COMMIT && s->state != S_CLOSED)
        s->bdat_failed = false; /* refused at LAST: the transaction is over */
}

static void
cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
    unsigned long long size;
    enum reply_id r;
    bool last;

    if (smtp_parse_bdat(c->arg, c->arglen, &size, &last) == -1) {
        REPLY0(s, R_BDAT_SYNTAX);
        return;
    }
    /* RFC 3030 §3: a refused chunk is still read, so its bytes never become commands. */
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_discard = false;
    if (s->bdat_failed)
        r = R_BDAT_AFTER_FAIL;
    else if ((r = check_in_txn(s, c)) == REPLY__COUNT && s->txn.nrcpts == 0)
        r = R_NEED_RCPT;
    if (r != REPLY__COUNT) {
        if (reply_get(r)->nargs == 1)
            REPLY1(s, r, "BDAT");
        else
            REPLY0(s, r);
        if (s->state == S_CLOSED)
            return;
        s->bdat_discard = true;
    } else if (!s->txn.bdat) {
        s->txn.bdat = true;
        session_begin_body(s);
    }
    s->state = S_BDAT;
    if (size == 0)
        session_bdat_chunk_end(s);
}

static void
cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
    txn_reset(s, true);
    s->bdat_failed = false;
    REPLY0(s, R_COMMAND_OK);
}

static void
cmd_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY0(s, R_COMMAND_OK);
}

static void
cmd_help(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY0(s, R_HELP);
}

static void
cmd_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY0(s, R_VRFY);
}

static void
cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY1(s, R_BYE, s->conf->hostname);
    txn_reset(s, true);
    session_close(s);
}

/* RFC 3207: not twice, not where it is not offered, not inside a transaction. */
static enum reply_id
check_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->peer.tls)
        return R_TLS_ACTIVE;
    if (!s->conf->tls_offer)
        return R_NOT_IMPLEMENTED;
    if (s->txn_open)
        return R_TLS_IN_TXN;
    return REPLY__COUNT;
}

/*
 * Input stops here (S_TLS): whatever the client sent after this line was
 * sent in plaintext before the handshake and must never be taken as a
 * command under TLS (CVE-2011-0411); the caller discards it.
 */
static void
cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY0(s, R_TLS_READY);
    s->state = S_TLS;
}

static void
cmd_not_implemented(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY1(s, R_NOT_IMPLEMENTED, smtp_verb_name(c->verb));
}

static void
cmd_http(struct smtp_session *s, const struct smtp_cmd *c)
{
    REPLY1(s, R_HTTP, s->conf->hostname);
    txn_reset(s, true);
    session_close(s);
}

/* ---- AUTH (RFC 4954; SASL PLAIN RFC 4616, LOGIN) ----------------------------
 *
 * The session decodes the exchange; the caller checks the password (off the
 * loop thread: a hash takes tens of milliseconds), answering at once or with
 * REPLY_PENDING and later smtp_session_verdict().  Response lines are read
 * with the command line reader, so the same framing rules and the same
 * max_line_length bound apply (PLAIN and LOGIN responses are a user name and
 * a password: the 2048 default holds about 1500 octets of them; RFC 4954's
 * 12288 is meant for mechanisms with big tokens, which tern does not offer).
 * Every buffer of the session's that held a password is wiped (a response
 * read whole is parsed in the caller's read buffer, which the next read
 * overwrites).
 */

static enum reply_id
check_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (!s->conf->auth_offer || s->cb->auth == NULL)
        return R_NOT_IMPLEMENTED;
    if (s->state == S_CONNECTED)
        return R_NEED_HELO;
    if (s->auth_done)
        return R_AUTH_ALREADY;
    if (s->txn_open)
        return R_AUTH_IN_TXN;
    if (!s->peer.tls)
        return R_AUTH_NEED_TLS;
    return REPLY__COUNT;
}

/* The exchange is over (answered, refused or cancelled): back to commands. */
static void
auth_end(struct smtp_session *s)
{
    if (s->state == S_AUTH)
        s->state = S_READY;
    s->auth_step = 0;
    s->auth_bad_user = false;
}

static void
auth_finish(struct smtp_session *s, enum reply_id r)
{
    auth_end(s);
    if (r == R_AUTH_OK) {
        s->auth_done = true;
        REPLY0(s, R_AUTH_OK);
        return;
    }
    s->auth_user[0] = '\0';
    if (r == R_AUTH_TOO_MANY) {
        smtp_session_drop(s, r);
        return;
    }
    REPLY0(s, r == R_LOCAL_ERROR ? R_LOCAL_ERROR : R_AUTH_FAILED);
}

/* A user name tern could hold: not empty, not too long, no NUL, no control. */
static bool
auth_user_ok(const unsigned char *u, size_t n)
{
    size_t i;

    if (n == 0 || n > SESSION_AUTH_USER_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
    return true;
}

/* Hand user and password (NUL-terminated, in the caller's buffer) to the caller. */
static void
auth_check(struct smtp_session *s, const unsigned char *user, size_t ulen, const char *pass)
{
    enum reply_id r;

    memcpy(s->auth_user, user, ulen);
    s->auth_user[ulen] = '\0';
    r = s->cb->auth(s->ctx, s->auth_user, pass);
    if (r == REPLY_PENDING) {
        auth_end(s);
        session_wait(s, VERB_AUTH);
        return;
    }
    auth_finish(s, r);
}

/* PLAIN: [authzid] NUL authcid NUL passwd (RFC 4616 §2); d is wiped by the caller. */
static void
auth_plain(struct smtp_session *s, unsigned char *d, size_t n)
{
    unsigned char *nul1, *nul2;
    size_t zlen, ulen;

    nul1 = memchr(d, '\0', n);
    nul2 = nul1 ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - d)) : NULL;
    if (nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - d)) != NULL) {
        auth_finish(s, R_AUTH_FAILED); /* not a PLAIN message: nothing to check */
        return;
    }
    zlen = (size_t)(nul1 - d);
    ulen = (size_t)(nul2 - nul1 - 1);
    /* Acting for someone else is not supported: authzid empty or the user itself. */
    if (!auth_user_ok(nul1 + 1, ulen) || (zlen != 0 && (zlen != ulen ||
                                                         memcmp(d, nul1 + 1, ulen) != 0))) {
        auth_finish(s, R_AUTH_FAILED);
        return;
    }
    d[n] = '\0'; /* the password is the tail; the buffer has room for this NUL */
    auth_check(s, nul1 + 1, ulen, (const char *)nul2 + 1);
}

/* One base64 response (an initial response, or a line after 334). */
static void
auth_response(struct smtp_session *s, const char *p, size_t len)
{
    unsigned char *d;
    long n;

    if (len == 1 && p[0] == '=')
        len = 0; /* RFC 4954 §4: "=" is an empty initial response */
    if ((d = malloc(BASE64_DECODED_MAX(len) + 1)) == NULL) {
        auth_end(s);
        REPLY0(s, R_LOCAL_ERROR);
        return;
    }
    if ((n = base64_decode(p, len, d)) < 0) {
        auth_end(s);
        REPLY0(s, R_AUTH_BAD_BASE64);
    } else if (s->auth_mech == AUTH_PLAIN) {
        auth_plain(s, d, (size_t)n);
    } else if (s->auth_step == 0) {
        /* LOGIN user name: remembered; a bad one fails only after the password. */
        s->auth_bad_user = !auth_user_ok(d, (size_t)n);
        if (!s->auth_bad_user) {
            memcpy(s->auth_user, d, (size_t)n);
            s->auth_user[n] = '\0';
        }
        s->auth_step = 1;
        s->state = S_AUTH;
        REPLY1(s, R_AUTH_CHALLENGE, "UGFzc3dvcmQ6"); /* "Password:" */
    } else if (s->auth_bad_user || memchr(d, '\0', (size_t)n) != NULL) {
        auth_finish(s, R_AUTH_FAILED);
    } else {
        d[n] = '\0';
        auth_check(s, (const unsigned char *)s->auth_user, strlen(s->auth_user),
            (const char *)d);
    }
    explicit_bzero(d, BASE64_DECODED_MAX(len) + 1);
    free(d);
}

/* A line read in S_AUTH. */
static void
session_auth_line(struct smtp_session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        auth_end(s);
        REPLY0(s, R_AUTH_CANCELLED);
        return;
    }
    if (len == 1 && line[0] == '=') {
        /* "=" means "empty" only as an initial response; here it is bad base64 */
        auth_end(s);
        REPLY0(s, R_AUTH_BAD_BASE64);
        return;
    }
    auth_response(s, line, len);
}

static void
cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    static const struct {
        const char *name;
        size_t len;
        enum auth_mech mech;
    } mechs[] = {{"PLAIN", 5, AUTH_PLAIN}, {"LOGIN", 5, AUTH_LOGIN}};
    const char *ir = NULL;
    size_t mlen = 0, irlen = 0, i;

    while (c->arg != NULL && mlen < c->arglen && c->arg[mlen] != ' ')
        mlen++;
    if (mlen == 0) {
        REPLY1(s, R_ARG_MISSING, "AUTH");
        return;
    }
    if (mlen < c->arglen) {
        ir = c->arg + mlen + 1;
        irlen = c->arglen - mlen - 1;
    }
    for (i = 0; i < sizeof(mechs) / sizeof(*mechs); i++)
        if (mlen == mechs[i].len && strncasecmp(c->arg, mechs[i].name, mlen) == 0)
            break;
    if (i == sizeof(mechs) / sizeof(*mechs)) {
        REPLY0(s, R_AUTH_MECH);
        return;
    }
    s->auth_mech = mechs[i].mech;
    s->auth_step = 0;
    s->auth_bad_user = false;
    s->auth_user[0] = '\0';
    if (ir != NULL) {
        auth_response(s, ir, irlen);
        return;
    }
    s->state = S_AUTH;
    /* PLAIN: an empty challenge; LOGIN: "Username:" */
    REPLY1(s, R_AUTH_CHALLENGE, s->auth_mech == AUTH_PLAIN ? "" : "VXNlcm5hbWU6");
}

static const struct smtp_command smtp_commands[] = {
    {VERB_HELO, ARG_REQUIRED, R_HELO_SYNTAX, NULL, cmd_helo, false},
    {VERB_EHLO, ARG_REQUIRED, R_HELO_SYNTAX, NULL, cmd_helo, true},
    {VERB_MAIL, ARG_REQUIRED, R_MAIL_SYNTAX, check_mail_submission, cmd_mail, false},
    {VERB_RCPT, ARG_REQUIRED, R_RCPT_SYNTAX, check_in_txn, cmd_rcpt, false},
    {VERB_DATA, ARG_NONE, REPLY__COUNT, check_data, cmd_data, false},
    /* BDAT checks after parsing the size, so a refused chunk is still read (never commands);
       before TLS it is refused for want of a transaction, as MAIL cannot be given */
    {VERB_BDAT, ARG_REQUIRED, R_BDAT_SYNTAX, NULL, cmd_bdat, true},
    {VERB_RSET, ARG_NONE, REPLY__COUNT, NULL, cmd_rset, false},
    {VERB_NOOP, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_noop, true},
    {VERB_QUIT, ARG_NONE, REPLY__COUNT, NULL, cmd_quit, true},
    {VERB_VRFY, ARG_REQUIRED, R_ARG_MISSING, NULL, cmd_vrfy, false},
    {VERB_HELP, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_help, false},
    {VERB_EXPN, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_not_implemented, false},
    {VERB_TURN, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_not_implemented, false},
    {VERB_ETRN, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_not_implemented, false},
    {VERB_STARTTLS, ARG_NONE, REPLY__COUNT, check_starttls, cmd_starttls, true},
    {VERB_AUTH, ARG_OPTIONAL, REPLY__COUNT, check_auth, cmd_auth, false},
    {VERB_HTTP, ARG_OPTIONAL, REPLY__COUNT, NULL, cmd_http, true},
};

static const struct smtp_command *
session_command(enum smtp_verb v)
{
    size_t i;

    for (i = 0; i < sizeof(smtp_commands) / sizeof(*smtp_commands); i++)
        if (smtp_commands[i].verb == v)
            return &smtp_commands[i];
    return NULL;
}

/* One complete command line, without CRLF, free of bare CR/LF and not over-long. */
static void
session_command_line(struct smtp_session *s, const char *line, size_t len)
{
    const struct smtp_command *cmd;
    struct smtp_cmd c;
    enum reply_id r;

    smtp_parse_command(line, len, &c);
    if (s->shutdown && c.verb != VERB_QUIT) {
        reply_write(&s->out, R_SHUTDOWN, s->conf->hostname);
        txn_reset(s, true);
        session_close(s);
        return;
    }
    if ((cmd = session_command(c.verb)) == NULL) {
        REPLY0(s, R_UNKNOWN_CMD);
        return;
    }
    /* NUL is never valid in a command; MAIL/RCPT name the part it broke (5.1.7 / 5.1.3). */
    if (c.verb != VERB_MAIL && c.verb != VERB_RCPT && c.verb != VERB_HTTP &&
        memchr(line, '\0', len) != NULL) {
        REPLY0(s, R_NUL_IN_CMD);
        return;
    }
    if (s->conf->tls_required && !s->peer.tls && !cmd->before_tls) {
        REPLY0(s, R_TLS_REQUIRED);
        return;
    }
    if (cmd->arg == ARG_NONE && c.arg != NULL) {
        REPLY1(s, R_ARG_NOT_ALLOWED, smtp_verb_name(c.verb));
        return;
    }
    if (cmd->arg == ARG_REQUIRED && (c.arg == NULL || c.arglen == 0)) {
        const struct reply_def *d = reply_get(cmd->missing);
        if (d->nargs == 1)
            REPLY1(s, cmd->missing,
                cmd->missing == R_MAIL_SYNTAX || cmd->missing == R_RCPT_SYNTAX
                    ? "missing argument"
                    : smtp_verb_name(c.verb));
        else
            REPLY0(s, cmd->missing);
        return;
    }
    if (cmd->check != NULL && (r = cmd->check(s, &c)) != REPLY__COUNT) {
        if (reply_get(r)->nargs == 1)
            REPLY1(s, r, smtp_verb_name(c.verb));
        else
            REPLY0(s, r);
        return;
    }
    cmd->proceed(s, &c);
}

/* A line ended at CRLF: refuse it whole, or run it. */
static void
session_line_done(struct smtp_session *s, const char *line, size_t len)
{
    char num[32];

    bool auth = s->state == S_AUTH;

    if (auth && (s->line_overflow || s->line_bare_lf || memchr(line, '\r', len) != NULL))
        auth_end(s); /* the exchange ends with the refusal below */
    if (s->line_overflow) {
        snprintf(num, sizeof(num), "%zu", s->conf->max_line_length);
        REPLY1(s, R_LINE_TOO_LONG, num);
    } else if (s->line_bare_lf) {
        REPLY0(s, R_BARE_LF_CMD);
    } else if (memchr(line, '\r', len) != NULL) {
        REPLY0(s, R_BARE_CR_CMD);
    } else if (auth) {
        session_auth_line(s, line, len);
    } else {
        session_command_line(s, line, len);
    }
    if (auth && s->line != NULL)
        explicit_bzero(s->line, s->conf->max_line_length); /* it held a credential */
    s->linelen = 0;
    s->line_overflow = s->line_bare_lf = s->line_last_cr = false;
}

/* Keep part of a line that continues in a later read (bounded by max_line_length). */
static void
session_line_append(struct smtp_session *s, const char *p, size_t n)
{
    size_t room = s->conf->max_line_length; /* content + CR held until LF decides */

    if (n == 0)
        return;
    s->line_last_cr = p[n - 1] == '\r';
    if (s->line_overflow)
        return;
    if (s->linelen + n > room) {
        s->line_overflow = true;
        return;
    }
    if (s->line == NULL && (s->line = malloc(room)) == NULL) {
        s->line_overflow = true; /* refused as too long: the safe side */
        return;
    }
    memcpy(s->line + s->linelen, p, n);
    s->linelen += n;
}

/* Command mode: consume up to one line; returns bytes consumed. */
static size_t
session_input_line(struct smtp_session *s, const char *p, size_t n)
{
    const char *lf = memchr(p, '\n', n);
    size_t seg, content_max = s->conf->max_line_length - 2;
    bool cr;

    if (lf == NULL) {
        session_line_append(s, p, n);
        return n;
    }
    seg = (size_t)(lf - p);
    cr = seg > 0 ? p[seg - 1] == '\r' : s->line_last_cr;
    if (!cr) {
        /* A bare LF does not end a command line; it poisons it up to the next CRLF. */
        s->line_bare_lf = true;
        session_line_append(s, p, seg + 1);
        return seg + 1;
    }
    if (s->linelen == 0 && !s->line_overflow && !s->line_bare_lf) {
        /* Fast path: the whole line is in this read. */
        if (seg - 1 > content_max)
            s->line_overflow = true;
        session_line_done(s, p, seg - 1);
        return seg + 1;
    }
    session_line_append(s, p, seg);
    if (!s->line_overflow) {
        s->linelen--; /* drop the CR */
        if (s->linelen > content_max)
            s->line_overflow = true;
    }
    session_line_done(s, s->line, s->linelen);
    return seg + 1;
}

size_t
smtp_session_input(struct smtp_session *s, const char *p, size_t n, time_t now,
    enum smtp_status *st)
{
    size_t used = 0, k;
    int err = 0;

    s->now = now;
    while (used < n) {
        if (s->state == S_CLOSED || s->state == S_COMMIT || s->state == S_WAIT || s->state == S_TLS)
            break;
        if (s->out.len >= SESSION_OUT_SOFT)
            break;
        switch (s->state) {
        case S_DATA:
            used += smtp_data_feed(&s->data, p + used, n - used, session_body, s, &err);
            if (s->data.done)
                session_end_body(s);
            break;
        case S_BDAT:
            k = n - used < s->bdat_left ? n - used : (size_t)s->bdat_left;
            if (!s->bdat_discard)
                smtp_data_bdat(&s->data, p + used, k, session_body, s, &err);
            used += k;
            s->bdat_left -= k;
            if (s->bdat_left == 0)
                session_bdat_chunk_end(s);
            break;
        default:
            used += session_input_line(s, p + used, n - used);
            break;
        }
    }
    if (s->state == S_CLOSED)
        *st = SMTP_CLOSE;
    else if (s->state == S_COMMIT || s->state == S_WAIT)
        *st = SMTP_SUSPEND;
    else if (s->state == S_TLS)
        *st = SMTP_STARTTLS;
    else
        *st = SMTP_OK;
    return used;
}

/* ---- lifecycle ------------------------------------------------------------ */

struct smtp_session *
smtp_session_new(const struct smtp_session_conf *conf, const struct smtp_callbacks *cb,
    void *ctx, const struct smtp_peer *peer)
{
    struct smtp_session *s;

    if ((s = calloc(1, sizeof(*s))) == NULL)
        return NULL;
    s->conf = conf;
    s->cb = cb;
    s->ctx = ctx;
    s->peer = *peer;
    s->state = S_CONNECTED;
    s->body_reply = R_SPOOL_ERROR;
    buf_init(&s->out, SESSION_OUT_MAX);
    return s;
}

void
smtp_session_free(struct smtp_session *s)
{
    if (s == NULL)
        return;
    if (s->state != S_COMMIT)
        txn_reset(s, true);
    free(s->line);
    free(s->wait_rcpt);
    free(s->txn.rcpts);
    free(s->txn.rcpt_dsn);
    buf_free(&s->out);
    free(s);
}

enum smtp_status
smtp_session_greet(struct smtp_session *s)
{
    reply_write(&s->out, R_GREETING, s->conf->hostname);
    return SMTP_OK;
}

enum smtp_status
smtp_session_commit_done(struct smtp_session *s, enum reply_id reply)
{
    if (reply == R_QUEUED)
        REPLY1(s, R_QUEUED, s->txn.id);
    else
        REPLY0(s, reply);
    s->state = S_MAIL; /* so that txn_reset picks READY/CONNECTED */
    s->txn_open = false;
    txn_reset(s, false);
    if (s->shutdown) {
        reply_write(&s->out, R_SHUTDOWN, s->conf->hostname);
        session_close(s);
    }
    return s->state == S_CLOSED ? SMTP_CLOSE : SMTP_OK;
}

enum smtp_status
smtp_session_verdict(struct smtp_session *s, enum reply_id verdict)
{
    if (s->state != S_WAIT)
        return s->state == S_CLOSED ? SMTP_CLOSE : SMTP_OK;
    s->state = s->wait_from;
    switch (s->wait_verb) {
    case VERB_MAIL:
        mail_finish(s, verdict);
        break;
    case VERB_RCPT:
        rcpt_finish(s, verdict, &s->wait_rcpt->path, &s->wait_rcpt->dsn);
        break;
    case VERB_AUTH:
        auth_finish(s, verdict);
        break;
    default:
        break;
    }
    return s->state == S_CLOSED ? SMTP_CLOSE : SMTP_OK;
}

enum smtp_status
smtp_session_drop(struct smtp_session *s, enum reply_id reply)
{
    if (reply_get(reply)->nargs == 1)
        reply_write(&s->out, reply, s->conf->hostname);
    else
        reply_write(&s->out, reply);
    if (s->state != S_COMMIT)
        txn_reset(s, true);
    session_close(s);
    return SMTP_CLOSE;
}

const char *
smtp_session_auth_user(const struct smtp_session *s)
{
    return s->auth_done ? s->auth_user : NULL;
}

enum smtp_status
smtp_session_verdict_args(struct smtp_session *s, enum reply_id verdict,
    const char *const args[4])
{
    enum smtp_status st;

    s->verdict_args = args;
    st = smtp_session_verdict(s, verdict);
    s->verdict_args = NULL;
    return st;
}

bool
smtp_session_waiting(const struct smtp_session *s)
{
    return s->state == S_WAIT;
}

enum smtp_status
smtp_session_tls_started(struct smtp_session *s, const char *version, const char *cipher)
{
    /* RFC 3207 §4.2: discard all knowledge obtained from the client before TLS. */
    txn_reset(s, true);
    s->helo[0] = '\0';
    s->esmtp = false;
    s->bdat_failed = false;
    s->linelen = 0;
    s->line_overflow = s->line_bare_lf = s->line_last_cr = false;
    s->peer.tls = true;
    s->auth_done = false; /* cannot be set before TLS (AUTH needs it); cleared all the same */
    s->auth_user[0] = '\0';
    snprintf(s->tls_version, sizeof(s->tls_version), "%s", version ? version : "unknown");
    snprintf(s->tls_cipher, sizeof(s->tls_cipher), "%s", cipher ? cipher : "unknown");
    if (s->state != S_CLOSED)
        s->state = S_CONNECTED;
    return s->state == S_CLOSED ? SMTP_CLOSE : SMTP_OK;
}

enum smtp_status
smtp_session_timeout(struct smtp_session *s)
{
    bool data = smtp_session_in_data(s);

    reply_write(&s->out, data ? R_TIMEOUT_DATA : R_TIMEOUT, s->conf->hostname);
    if (s->state != S_COMMIT)
        txn_reset(s, true);
    session_close(s);
    return SMTP_CLOSE;
}

enum smtp_status
smtp_session_shutdown(struct smtp_session *s)
{
    s->shutdown = true;
    if (s->state == S_DATA || s->state == S_BDAT || s->state == S_COMMIT)
        return SMTP_OK;
    if (s->state == S_CLOSED)
        return SMTP_CLOSE;
    reply_write(&s->out, R_SHUTDOWN, s->conf->hostname);
    txn_reset(s, true);
    session_close(s);
    return SMTP_CLOSE;
}

void
smtp_session_body_failed(struct smtp_session *s, enum reply_id reply)
{
    s->body_reply = reply;
}

struct buf *
smtp_session_output(struct smtp_session *s)
{
    return &s->out;
}

bool
smtp_session_in_data(const struct smtp_session *s)
{
    return s->state == S_DATA || s->state == S_BDAT;
}

bool
smtp_session_closed(const struct smtp_session *s)
{
    return s->state == S_CLOSED;
}

const char *
smtp_session_helo(const struct smtp_session *s)
{
    return s->helo;
}

unsigned
smtp_session_errors(const struct smtp_session *s)
{
    return s->errors;
}
