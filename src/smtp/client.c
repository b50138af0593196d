/*
 * client.c - the SMTP client state machine (see client.h).
 *
 * A session: greeting, EHLO (HELO when EHLO gets 500 or 502), then one
 * transaction per message: [RSET] MAIL, one RCPT per recipient, DATA, the
 * dot-stuffed body, the final dot; then QUIT, or another message.  With
 * CHUNKING (RFC 3030) and a message that asks for it, DATA and the body
 * give way to BDAT chunks: the first one takes DATA's place in the
 * envelope, each later one goes out when the one before got its 250.
 *
 * Commands of a transaction are numbered in order ([RSET], MAIL, RCPTs,
 * DATA or the first BDAT).  With PIPELINING (RFC 2920) they go out in
 * groups of at most CLIENT_WINDOW commands ahead of their replies, DATA (or
 * BDAT, which RFC 3030 §4.2 lets us pipeline) last; so a message with up to
 * CLIENT_WINDOW - 2 recipients is one write, and a server that stops
 * reading while its replies pile up cannot deadlock us.  Without PIPELINING
 * (or when the message says no_pipelining), one command at a time, and no
 * RCPT after a refused MAIL and no DATA or BDAT when no recipient was
 * accepted.  Later BDAT chunks are never pipelined: each waits for the
 * reply to the one before, so no chunk follows a refused one (RFC 3030 §3).
 *
 * A BDAT chunk's octet count must be known before it goes out, so the body
 * is staged with its line ends made CRLF (as for DATA, without stuffing)
 * until a chunk is full or the body ends.  A chunk is cut after its last
 * CRLF: the server sees whole lines per chunk, as with DATA's dot, unless a
 * line is longer than a chunk.
 *
 * STARTTLS (RFC 3207) sits between EHLO and the first transaction: sent
 * when offered and the mode allows; on 220 the state is ST_TLS, where input
 * is dropped until the driver says the handshake is done; then EHLO again
 * (RFC 3207 §4.2: the client must forget what it learnt in plaintext).
 * AUTH (RFC 4954), when the driver asked for it, comes after that last EHLO
 * (so under TLS when there is TLS) and before the first MAIL: PLAIN with its
 * initial response in one line, LOGIN only when PLAIN is not offered.  One
 * command at a time, never pipelined (RFC 4954 §4: AUTH is not pipelinable).
 *
 * Why some replies mean "next host": 421 says this server cannot serve now
 * (RFC 5321 §3.8), and a greeting or EHLO/HELO refusal says nothing about
 * the recipients, so another MX may well take the message (as Postfix does
 * with smtp_skip_5xx_greeting).  A reply of the wrong kind (a 3xx to RCPT, a
 * 2xx to DATA) or a malformed one means the dialogue is out of step: the
 * connection is closed without QUIT and the open recipients go elsewhere.
 * A 4xx or 5xx to MAIL, RCPT, DATA or the dot is the server's word on the
 * recipients and is kept as their outcome.
 */
#include "smtp/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/replyparse.h"
#include "util/base64.h"
#include "util/buf.h"

#define CLIENT_AUTH_PLAIN 0x1u
#define CLIENT_AUTH_LOGIN 0x2u

#define CLIENT_WINDOW 100  /* commands written ahead of their replies (RFC 2920 §3.1) */
#define CLIENT_CHUNK 16384 /* body octets asked of the driver at once */
/* staged BDAT body: a full chunk, then one more read made CRLF (2 octets each), and a CRLF */
#define CLIENT_STAGE_MAX (SMTP_CLIENT_BDAT_MAX + 2 * CLIENT_CHUNK + 2)
#define CLIENT_OUT_MAX (1u << 20)

enum client_state {
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,  /* STARTTLS sent: waiting for its reply */
    ST_TLS,       /* 220 to STARTTLS: the driver does the handshake; input is dropped */
    ST_AUTH,      /* AUTH PLAIN (or LOGIN's password) sent: waiting for 235 */
    ST_AUTH_USER, /* AUTH LOGIN sent: waiting for the 334 that asks for the user name */
    ST_AUTH_PASS, /* LOGIN's user name sent: waiting for the 334 that asks for the password */
    ST_ENVELOPE,  /* [RSET] MAIL RCPT... DATA, with replies outstanding */
    ST_BODY,      /* 354 received: the body goes out */
    ST_DOT,       /* the final dot sent: waiting for its reply */
    ST_CHUNK,     /* a BDAT after the first (with its chunk) sent: waiting for its reply */
    ST_IDLE,      /* between transactions */
    ST_QUIT,      /* QUIT sent */
    ST_DONE,
};

enum client_cmd { CMD_RSET, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_BDAT };

struct smtp_client {
    char helo[256];
    enum client_state st;
    enum smtp_client_tls tls;
    bool tls_active;
    unsigned ext;
    unsigned auth_mechs; /* CLIENT_AUTH_*: what the last EHLO's AUTH keyword offered */
    bool auth;           /* smtp_client_set_auth() was called: AUTH before the first MAIL */
    bool authed;         /* 235 */
    const char *auth_mech;
    char auth_user[SMTP_CLIENT_AUTH_MAX + 1], auth_pass[SMTP_CLIENT_AUTH_MAX + 1];
    uint64_t size_limit;
    struct replyparse rp;
    struct buf out;
    size_t outoff; /* octets of out already written */

    /* the message */
    const struct smtp_client_msg *m;
    struct smtp_client_outcome *oc; /* m->nrcpts */
    size_t noc;                     /* outcomes of the current message in oc: m->nrcpts, kept
                                       here so that a failure after the transaction (QUIT) needs
                                       nothing from m, which may be gone by then */
    bool *accepted;                 /* 2xx to its RCPT, final reply pending */
    size_t *send;                   /* recipients sent a RCPT, in order */
    size_t cap, nsend, naccepted;

    /* the transaction */
    bool need_rset; /* the previous transaction may still be open at the server */
    bool rset;      /* this one starts with RSET */
    bool bdat;      /* the body goes with BDAT (the message asks, the server offers) */
    size_t ncmd, sent, answered;
    bool mail_failed;

    /* the body */
    bool bol, cr;
    bool chunk_due;   /* BDAT: the next chunk goes out at the next smtp_client_next() */
    bool chunk_last;  /* BDAT: the chunk sent last was marked LAST */
    bool body_end;    /* BDAT: the body callback said the end; stage has all the rest */
    struct buf stage; /* BDAT: body octets with CRLF line ends, not sent yet */
    char chunk[CLIENT_CHUNK];
};

/* ---- outcomes ---------------------------------------------------------- */

static void
client_set(
    struct smtp_client *c, size_t i, enum smtp_client_result res, unsigned code, const char *text)
{
    struct smtp_client_outcome *o = &c->oc[i];

    size_t n = text != NULL ? strlen(text) : 0;

    o->result = res;
    o->code = code;
    /* cut to fit: an outcome keeps at most sizeof(o->text) - 1 octets of the reply */
    if (n >= sizeof(o->text))
        n = sizeof(o->text) - 1;
    if (n > 0)
        memcpy(o->text, text, n);
    o->text[n] = '\0';
}

/* The reply just parsed, as kept in an outcome: "ESC text" without the code. */
static void
client_reply_text(const struct smtp_client *c, char *s, size_t n)
{
    const struct replyparse *r = &c->rp;

    size_t k, tl = strlen(r->text);
    int w = snprintf(s, n, "%s%s", r->esc, r->esc[0] && r->text[0] ? " " : "");

    /* the text is cut to fit (a reply's text can be longer than an outcome keeps) */
    if (w < 0 || (size_t)w >= n)
        return;
    k = (size_t)w;
    if (tl > n - k - 1)
        tl = n - k - 1;
    memcpy(s + k, r->text, tl);
    s[k + tl] = '\0';
}

/* Every recipient still pending (only the accepted ones, if accepted_only) gets the reply. */
static void
client_reply_pending(struct smtp_client *c, enum smtp_client_result res, bool accepted_only)
{
    char text[SMTP_CLIENT_TEXT_MAX];
    size_t i;

    client_reply_text(c, text, sizeof(text));
    for (i = 0; c->m != NULL && i < c->m->nrcpts; i++) {
        if (c->oc[i].result != SMTP_CLIENT_PENDING || (accepted_only && !c->accepted[i]))
            continue;
        client_set(c, i, res, c->rp.code, text);
    }
}

static void
client_set_pending(struct smtp_client *c, enum smtp_client_result res, const char *why)
{
    size_t i;

    for (i = 0; i < c->noc; i++)
        if (c->oc[i].result == SMTP_CLIENT_PENDING)
            client_set(c, i, res, 0, why);
}

/* The end: nothing more is sent, unsent output is dropped. */
static void
client_done(struct smtp_client *c)
{
    c->st = ST_DONE;
    c->chunk_due = false;
    buf_reset(&c->out);
    c->outoff = 0;
}

/* The dialogue is out of step: close without QUIT; open recipients go to the next host. */
static void
client_protocol(struct smtp_client *c, const char *what)
{
    char why[SMTP_CLIENT_TEXT_MAX + 64]; /* client_set() truncates */
    char text[SMTP_CLIENT_TEXT_MAX];

    client_reply_text(c, text, sizeof(text));
    snprintf(why, sizeof(why), "%s: %u %s", what, c->rp.code, text);
    client_set_pending(c, SMTP_CLIENT_NEXT_HOST, why);
    client_done(c);
}

/* 421 (or a session-level refusal when quit): open recipients go to the next host. */
static void
client_next_host(struct smtp_client *c, bool quit)
{
    client_reply_pending(c, SMTP_CLIENT_NEXT_HOST, false);
    if (!quit || c->rp.code == 421) {
        client_done(c);
        return;
    }
    if (buf_puts(&c->out, "QUIT\r\n") < 0) {
        client_done(c);
        return;
    }
    c->st = ST_QUIT;
}

/* ---- commands ---------------------------------------------------------- */

/* Text we put in a command: printable, no angle brackets; 8-bit octets only when allowed. */
static bool
client_text_ok(const char *s, bool path, bool eightbit)
{
    const unsigned char *p = (const unsigned char *)s;

    for (; *p; p++) {
        if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && !eightbit))
            return false;
        if (path && (*p == '<' || *p == '>'))
            return false;
        if (!path && *p == ' ')
            return false;
    }
    return true;
}

/* An ESMTP parameter value worth sending: non-empty xtext-ish, no space, no control. */
static bool
client_param_ok(const char *s, bool utf8)
{
    return s != NULL && *s != '\0' && strlen(s) < 500 && client_text_ok(s, false, utf8);
}

static enum client_cmd
client_cmd_kind(const struct smtp_client *c, size_t k)
{
    if (c->rset) {
        if (k == 0)
            return CMD_RSET;
        k--;
    }
    if (k == 0)
        return CMD_MAIL;
    if (k <= c->nsend)
        return CMD_RCPT;
    return c->bdat ? CMD_BDAT : CMD_DATA;
}

/* The recipient command k (a RCPT) is for. */
static size_t
client_cmd_rcpt(const struct smtp_client *c, size_t k)
{
    return c->send[k - (c->rset ? 2 : 1)];
}

static int
client_put_cmd(struct smtp_client *c, size_t k)
{
    const struct smtp_client_msg *m = c->m;
    struct buf *b = &c->out;
    bool dsn = (c->ext & SMTP_CLIENT_EXT_DSN) != 0, u = m->smtputf8;
    int rc = 0;

    switch (client_cmd_kind(c, k)) {
    case CMD_RSET:
        return buf_puts(b, "RSET\r\n");
    case CMD_MAIL:
        rc |= buf_printf(b, "MAIL FROM:<%s>", m->sender);
        if (c->ext & SMTP_CLIENT_EXT_SIZE)
            rc |= buf_printf(b, " SIZE=%llu", (unsigned long long)m->size);
        /* XXX: an 8-bit body to a server without 8BITMIME goes as it is: RFC 6152 says
           downgrade or bounce; like Postfix by default, we pass it through. */
        if (m->eightbit && (c->ext & SMTP_CLIENT_EXT_8BITMIME))
            rc |= buf_puts(b, " BODY=8BITMIME");
        if (m->smtputf8)
            rc |= buf_puts(b, " SMTPUTF8");
        if (dsn && client_param_ok(m->ret, false))
            rc |= buf_printf(b, " RET=%s", m->ret);
        if (dsn && client_param_ok(m->envid, false))
            rc |= buf_printf(b, " ENVID=%s", m->envid);
        return rc | buf_puts(b, "\r\n");
    case CMD_RCPT: {
        const struct smtp_client_rcpt *r = &m->rcpts[client_cmd_rcpt(c, k)];

        rc |= buf_printf(b, "RCPT TO:<%s>", r->addr);
        if (dsn && client_param_ok(r->notify, false))
            rc |= buf_printf(b, " NOTIFY=%s", r->notify);
        if (dsn && client_param_ok(r->orcpt, u))
            rc |= buf_printf(b, " ORCPT=%s", r->orcpt);
        return rc | buf_puts(b, "\r\n");
    }
    case CMD_DATA:
        return buf_puts(b, "DATA\r\n");
    case CMD_BDAT:
        /* its size is known once the chunk is staged: smtp_client_next() puts it out */
        c->chunk_due = true;
        return 0;
    }
    return -1;
}

/* Transaction over, every recipient decided: the session waits for the driver. */
static void
client_idle(struct smtp_client *c)
{
    c->st = ST_IDLE;
}

/* Write the commands the window allows; end the transaction when nothing is left to do. */
static void
client_advance(struct smtp_client *c)
{
    bool pipe = (c->ext & SMTP_CLIENT_EXT_PIPELINING) && !c->m->no_pipelining;
    size_t win = pipe ? CLIENT_WINDOW : 1;

    if (c->st != ST_ENVELOPE)
        return;
    while (!c->mail_failed && c->sent < c->ncmd && c->sent - c->answered < win) {
        enum client_cmd kind = client_cmd_kind(c, c->sent);

        /* Without a reply outstanding and no recipient accepted, DATA or BDAT is pointless. */
        if ((kind == CMD_DATA || kind == CMD_BDAT) && c->naccepted == 0 && c->sent == c->answered)
            break;
        if (client_put_cmd(c, c->sent) < 0) {
            client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for commands");
            client_done(c);
            return;
        }
        c->sent++;
    }
    if (c->sent == c->answered) {
        /* MAIL refused, no recipient accepted, or DATA refused: over. */
        c->need_rset = true;
        client_idle(c);
    }
}

static void
client_begin(struct smtp_client *c)
{
    const struct smtp_client_msg *m = c->m;
    size_t i;

    c->nsend = c->naccepted = 0;
    c->sent = c->answered = 0;
    c->mail_failed = false;
    for (i = 0; i < m->nrcpts; i++) {
        c->accepted[i] = false;
        c->oc[i].result = SMTP_CLIENT_PENDING;
        c->oc[i].code = 0;
        c->oc[i].text[0] = '\0';
    }
    if (m->sender == NULL || !client_text_ok(m->sender, true, m->smtputf8)) {
        client_set_pending(c, SMTP_CLIENT_LOCAL, "sender address cannot be sent as it is");
        client_idle(c);
        return;
    }
    for (i = 0; i < m->nrcpts; i++) {
        const char *a = m->rcpts[i].addr;

        if (a == NULL || *a == '\0' || !client_text_ok(a, true, m->smtputf8))
            client_set(c, i, SMTP_CLIENT_LOCAL, 0, "recipient address cannot be sent as it is");
        else
            c->send[c->nsend++] = i;
    }
    if (c->nsend == 0) {
        client_idle(c);
        return;
    }
    if (m->smtputf8 && !(c->ext & SMTP_CLIENT_EXT_SMTPUTF8)) {
        client_set_pending(c, SMTP_CLIENT_NEED_SMTPUTF8, "SMTPUTF8 not offered");
        client_idle(c);
        return;
    }
    if ((c->ext & SMTP_CLIENT_EXT_SIZE) && c->size_limit > 0 && m->size > c->size_limit) {
        client_set_pending(c, SMTP_CLIENT_TOO_BIG, "message larger than the server's SIZE");
        client_idle(c);
        return;
    }
    c->rset = c->need_rset;
    c->need_rset = false;
    c->bdat = m->chunking && (c->ext & SMTP_CLIENT_EXT_CHUNKING);
    c->chunk_due = c->chunk_last = c->body_end = false;
    c->bol = true;
    c->cr = false;
    buf_reset(&c->stage);
    c->ncmd = (c->rset ? 1 : 0) + 1 + c->nsend + 1;
    c->st = ST_ENVELOPE;
    client_advance(c);
}

/* Room for m's recipients.  -1 when memory is short. */
static int
client_alloc(struct smtp_client *c, size_t n)
{
    void *p;

    if (n <= c->cap && c->oc != NULL)
        return 0;
    if (n == 0)
        n = 1;
    if ((p = realloc(c->oc, n * sizeof(*c->oc))) == NULL)
        return -1;
    c->oc = p;
    if ((p = realloc(c->accepted, n * sizeof(*c->accepted))) == NULL)
        return -1;
    c->accepted = p;
    if ((p = realloc(c->send, n * sizeof(*c->send))) == NULL)
        return -1;
    c->send = p;
    c->cap = n;
    return 0;
}

/* ---- EHLO ---------------------------------------------------------------- */

/* The EHLO reply's keywords: its lines after the first, joined with "; " by replyparse. */
static void
client_ehlo_keywords(struct smtp_client *c)
{
    const char *p = c->rp.text, *next, *sp;
    size_t len, kl;

    c->ext = 0;
    c->size_limit = 0;
    c->auth_mechs = 0;
    if (c->rp.lines < 2)
        return;
    p = strstr(p, "; ");
    while (p != NULL) {
        p += 2;
        next = strstr(p, "; ");
        len = next != NULL ? (size_t)(next - p) : strlen(p);
        sp = memchr(p, ' ', len);
        kl = sp != NULL ? (size_t)(sp - p) : len;
#define KW(s) (kl == sizeof(s) - 1 && strncasecmp(p, s, kl) == 0)
        if (KW("PIPELINING"))
            c->ext |= SMTP_CLIENT_EXT_PIPELINING;
        else if (KW("8BITMIME"))
            c->ext |= SMTP_CLIENT_EXT_8BITMIME;
        else if (KW("SMTPUTF8"))
            c->ext |= SMTP_CLIENT_EXT_SMTPUTF8;
        else if (KW("DSN"))
            c->ext |= SMTP_CLIENT_EXT_DSN;
        else if (KW("CHUNKING"))
            c->ext |= SMTP_CLIENT_EXT_CHUNKING;
        else if (KW("STARTTLS"))
            c->ext |= SMTP_CLIENT_EXT_STARTTLS;
        else if (KW("AUTH") || (kl > 5 && strncasecmp(p, "AUTH=", 5) == 0)) {
            /* "AUTH PLAIN LOGIN" (RFC 4954), or the old "AUTH=PLAIN LOGIN" some still send */
            size_t i = kl > 5 && p[4] == '=' ? 5 : kl + 1, w;

            c->ext |= SMTP_CLIENT_EXT_AUTH;
            while (i < len) {
                for (w = i; w < len && p[w] != ' '; w++)
                    ;
                if (w - i == 5 && strncasecmp(p + i, "PLAIN", 5) == 0)
                    c->auth_mechs |= CLIENT_AUTH_PLAIN;
                else if (w - i == 5 && strncasecmp(p + i, "LOGIN", 5) == 0)
                    c->auth_mechs |= CLIENT_AUTH_LOGIN;
                i = w + 1;
            }
        } else if (KW("SIZE")) {
            uint64_t v = 0;
            size_t i;

            c->ext |= SMTP_CLIENT_EXT_SIZE;
            /* "SIZE", "SIZE 0" or a number too big for us: no limit we must respect. */
            for (i = kl + 1; sp != NULL && i < len && p[i] >= '0' && p[i] <= '9'; i++) {
                if (v > (UINT64_MAX - 9) / 10) {
                    v = 0;
                    break;
                }
                v = v * 10 + (uint64_t)(p[i] - '0');
            }
            c->size_limit = v;
        }
#undef KW
        p = next;
    }
}

/* ---- replies ------------------------------------------------------------- */

/* 250 to a BDAT: after LAST the message is delivered; before it, the next chunk is due. */
static void
client_chunk_accepted(struct smtp_client *c)
{
    if (c->chunk_last) {
        client_reply_pending(c, SMTP_CLIENT_DELIVERED, true);
        c->need_rset = false; /* BDAT LAST ended the transaction */
        client_idle(c);
        return;
    }
    c->st = ST_CHUNK;
    c->chunk_due = true;
}

static void
client_envelope_reply(struct smtp_client *c)
{
    unsigned code = c->rp.code, cls = code / 100;
    size_t k = c->answered++;

    if (code == 421) {
        client_next_host(c, false);
        return;
    }
    switch (client_cmd_kind(c, k)) {
    case CMD_RSET:
        if (cls != 2) {
            /* The server cannot even reset: this session is of no use. */
            if (cls == 3)
                client_protocol(c, "RSET answered");
            else
                client_next_host(c, true);
            return;
        }
        break;
    case CMD_MAIL:
        if (cls == 3) {
            client_protocol(c, "MAIL FROM answered");
            return;
        }
        if (cls != 2) {
            c->mail_failed = true;
            client_reply_pending(c, SMTP_CLIENT_REFUSED, false);
        }
        break;
    case CMD_RCPT: {
        size_t i = client_cmd_rcpt(c, k);

        if (c->mail_failed)
            break; /* it has MAIL's reply; this one is likely a 503 */
        if (cls == 3) {
            client_protocol(c, "RCPT TO answered");
            return;
        }
        if (cls == 2) {
            c->accepted[i] = true;
            c->naccepted++;
        } else {
            char text[SMTP_CLIENT_TEXT_MAX];

            client_reply_text(c, text, sizeof(text));
            client_set(c, i, SMTP_CLIENT_REFUSED, code, text);
        }
        break;
    }
    case CMD_DATA:
        if (code == 354) {
            if (c->mail_failed || c->naccepted == 0) {
                /* RFC 2920 §3.1 says the server must refuse DATA here; it did not.  Close
                   without sending anything: every recipient already has its outcome. */
                client_done(c);
                return;
            }
            c->st = ST_BODY;
            c->bol = true;
            c->cr = false;
            return;
        }
        if (cls == 2 || cls == 3) {
            client_protocol(c, "DATA answered");
            return;
        }
        if (!c->mail_failed && c->naccepted > 0)
            client_reply_pending(c, SMTP_CLIENT_REFUSED, true);
        break;
    case CMD_BDAT:
        if (c->chunk_due) {
            /* a reply to a chunk not yet sent: the server is out of step */
            client_protocol(c, "BDAT answered before its chunk");
            return;
        }
        if (cls == 3) {
            client_protocol(c, "BDAT answered");
            return;
        }
        if (cls == 2) {
            if (c->mail_failed || c->naccepted == 0) {
                /* The server took a chunk with no transaction to put it in: as for a 354
                   to DATA here, close; every recipient already has its outcome. */
                client_done(c);
                return;
            }
            client_chunk_accepted(c);
            return;
        }
        /* refused: the transaction failed (RFC 3030 §3); client_advance() goes idle, and
           the next transaction starts with RSET */
        if (!c->mail_failed && c->naccepted > 0)
            client_reply_pending(c, SMTP_CLIENT_REFUSED, true);
        break;
    }
    client_advance(c);
}

static void
client_hello(struct smtp_client *c, const char *verb)
{
    if (buf_printf(&c->out, "%s %s\r\n", verb, c->helo) < 0) {
        client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for commands");
        client_done(c);
    }
}

/* REQUIRE and no TLS: every pending recipient gets TLS_MISSING; QUIT politely. */
static void
client_no_tls(struct smtp_client *c, const char *why)
{
    client_set_pending(c, SMTP_CLIENT_TLS_MISSING, why);
    if (buf_puts(&c->out, "QUIT\r\n") < 0) {
        client_done(c);
        return;
    }
    c->st = ST_QUIT;
}

/* After EHLO: STARTTLS when the mode says so.  true when the session went that way. */
static bool
client_starttls(struct smtp_client *c)
{
    if (c->tls == SMTP_CLIENT_TLS_NONE || c->tls_active)
        return false;
    if (c->ext & SMTP_CLIENT_EXT_STARTTLS) {
        if (buf_puts(&c->out, "STARTTLS\r\n") < 0) {
            client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for commands");
            client_done(c);
            return true;
        }
        c->st = ST_STARTTLS;
        return true;
    }
    if (c->tls == SMTP_CLIENT_TLS_REQUIRE) {
        client_no_tls(c, "STARTTLS not offered");
        return true;
    }
    return false;
}

/* AUTH could not be done: every pending recipient gets AUTH_FAILED; QUIT unless 421. */
static void
client_auth_failed(struct smtp_client *c, unsigned code, const char *why)
{
    size_t i;

    for (i = 0; i < c->noc; i++)
        if (c->oc[i].result == SMTP_CLIENT_PENDING)
            client_set(c, i, SMTP_CLIENT_AUTH_FAILED, code, why);
    if (code == 421 || buf_puts(&c->out, "QUIT\r\n") < 0) {
        client_done(c);
        return;
    }
    c->st = ST_QUIT;
}

/* One base64 line of s (and CRLF) into out, after prefix.  -1 when memory is short. */
static int
client_auth_line(struct smtp_client *c, const char *prefix, const unsigned char *s, size_t n)
{
    char enc[BASE64_ENCODED_LEN(2 * SMTP_CLIENT_AUTH_MAX + 2) + 1];
    int rc;

    base64_encode(s, n, enc);
    rc = buf_printf(&c->out, "%s%s\r\n", prefix, enc);
    explicit_bzero(enc, sizeof(enc));
    return rc;
}

/* After the last EHLO: AUTH PLAIN (with the initial response), else AUTH LOGIN. */
static void
client_auth_start(struct smtp_client *c)
{
    unsigned char resp[2 * SMTP_CLIENT_AUTH_MAX + 2];
    size_t ul = strlen(c->auth_user), pl = strlen(c->auth_pass);
    int rc;

    if (c->tls == SMTP_CLIENT_TLS_MAY && !c->tls_active) {
        client_auth_failed(c, 0,
            "AUTH not attempted: STARTTLS failed and the password would "
            "go in plaintext");
        return;
    }
    if (!(c->ext & SMTP_CLIENT_EXT_AUTH)) {
        client_auth_failed(c, 0, "AUTH not offered");
        return;
    }
    if (c->auth_mechs & CLIENT_AUTH_PLAIN) {
        /* RFC 4616: authzid (empty) NUL authcid NUL passwd */
        resp[0] = '\0';
        memcpy(resp + 1, c->auth_user, ul);
        resp[1 + ul] = '\0';
        memcpy(resp + 2 + ul, c->auth_pass, pl);
        rc = client_auth_line(c, "AUTH PLAIN ", resp, 2 + ul + pl);
        explicit_bzero(resp, sizeof(resp));
        c->auth_mech = "PLAIN";
        c->st = ST_AUTH;
    } else if (c->auth_mechs & CLIENT_AUTH_LOGIN) {
        rc = buf_puts(&c->out, "AUTH LOGIN\r\n");
        c->auth_mech = "LOGIN";
        c->st = ST_AUTH_USER;
    } else {
        client_auth_failed(c, 0, "no AUTH mechanism offered that we speak (PLAIN, LOGIN)");
        return;
    }
    if (rc < 0) {
        client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for commands");
        client_done(c);
    }
}

/* The EHLO (or HELO) is done and TLS settled: AUTH when asked, then the first transaction. */
static void
client_ready(struct smtp_client *c)
{
    if (c->auth && !c->authed)
        client_auth_start(c);
    else
        client_begin(c);
}

/* A reply in the AUTH exchange (RFC 4954 §4). */
static void
client_auth_reply(struct smtp_client *c)
{
    unsigned code = c->rp.code, cls = code / 100;
    char why[SMTP_CLIENT_TEXT_MAX];

    if (c->st == ST_AUTH && cls == 2) {
        c->authed = true;
        client_begin(c);
        return;
    }
    if (c->st != ST_AUTH && code == 334) {
        /* LOGIN: the challenges are "Username:" and "Password:", in that order */
        const char *s = c->st == ST_AUTH_USER ? c->auth_user : c->auth_pass;

        if (client_auth_line(c, "", (const unsigned char *)s, strlen(s)) < 0) {
            client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for commands");
            client_done(c);
            return;
        }
        c->st = c->st == ST_AUTH_USER ? ST_AUTH_PASS : ST_AUTH;
        return;
    }
    if (cls == 2 || cls == 3) {
        /* a 334 to PLAIN's initial response, or 235 before the password: out of step.
           Closing without a word is what RFC 4954 allows short of "*". */
        client_protocol(c, "AUTH answered");
        return;
    }
    client_reply_text(c, why, sizeof(why));
    client_auth_failed(c, code, why);
}

static void
client_reply(struct smtp_client *c)
{
    unsigned code = c->rp.code, cls = code / 100;

    switch (c->st) {
    case ST_GREETING:
        if (cls == 2) {
            c->st = ST_EHLO;
            client_hello(c, "EHLO");
        } else if (cls == 3) {
            client_protocol(c, "greeting");
        } else {
            client_next_host(c, true);
        }
        return;
    case ST_EHLO:
    case ST_HELO:
        if (cls == 2) {
            if (c->st == ST_EHLO)
                client_ehlo_keywords(c);
            else
                c->ext = 0;
            if (!client_starttls(c))
                client_ready(c);
        } else if (c->st == ST_EHLO && (code == 500 || code == 502)) {
            c->st = ST_HELO;
            client_hello(c, "HELO");
        } else if (cls == 3) {
            client_protocol(c, c->st == ST_EHLO ? "EHLO answered" : "HELO answered");
        } else {
            client_next_host(c, true);
        }
        return;
    case ST_STARTTLS:
        if (code == 220) {
            c->st = ST_TLS;
        } else if (code == 421) {
            client_next_host(c, false);
        } else if (cls == 2 || cls == 3) {
            client_protocol(c, "STARTTLS answered");
        } else if (c->tls == SMTP_CLIENT_TLS_REQUIRE) {
            char why[SMTP_CLIENT_TEXT_MAX + 64], text[SMTP_CLIENT_TEXT_MAX];

            client_reply_text(c, text, sizeof(text));
            snprintf(why, sizeof(why), "STARTTLS refused: %u %s", code, text);
            client_no_tls(c, why);
        } else {
            client_ready(c); /* MAY: refused, so in plaintext; the server is still after EHLO */
        }
        return;
    case ST_TLS: /* not reached: input is dropped in this state */
        return;
    case ST_AUTH:
    case ST_AUTH_USER:
    case ST_AUTH_PASS:
        client_auth_reply(c);
        return;
    case ST_ENVELOPE:
        client_envelope_reply(c);
        return;
    case ST_DOT:
        if (code == 421) {
            client_next_host(c, false);
            return;
        }
        if (cls == 3) {
            client_protocol(c, "end of data answered");
            return;
        }
        client_reply_pending(c, cls == 2 ? SMTP_CLIENT_DELIVERED : SMTP_CLIENT_REFUSED, true);
        c->need_rset = false; /* the transaction ended with the dot, whatever its reply */
        client_idle(c);
        return;
    case ST_CHUNK:
        if (code == 421) {
            client_next_host(c, false);
            return;
        }
        if (c->chunk_due) {
            client_protocol(c, "BDAT answered before its chunk");
            return;
        }
        if (cls == 3) {
            client_protocol(c, "BDAT answered");
            return;
        }
        if (cls == 2) {
            client_chunk_accepted(c);
            return;
        }
        /* RFC 3030 §3: the transaction failed, no more BDAT; RSET before the next one */
        client_reply_pending(c, SMTP_CLIENT_REFUSED, true);
        c->need_rset = true;
        client_idle(c);
        return;
    case ST_BODY:
        /* A reply before the dot (the server gave up on the message): it is the
           message's outcome, but the dialogue cannot go on. */
        if (code == 421 || cls < 4) {
            if (code == 421)
                client_next_host(c, false);
            else
                client_protocol(c, "reply during the message data");
            return;
        }
        client_reply_pending(c, SMTP_CLIENT_REFUSED, true);
        client_done(c);
        return;
    case ST_IDLE:
        /* An idle server speaks only to say goodbye (421) or out of turn: either way, over. */
        client_done(c);
        return;
    case ST_QUIT:
    case ST_DONE:
        client_done(c);
        return;
    }
}

/* ---- body ---------------------------------------------------------------- */

/* in[0..n) into dst: CRLF for bare CR or LF; with stuff, '.' doubled at line starts. */
static int
client_stuff(struct smtp_client *c, struct buf *dst, const char *in, size_t n, bool stuff)
{
    char tmp[3 * 256];
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        char ch = in[i];

        if (o > sizeof(tmp) - 4) {
            if (buf_append(dst, tmp, o) < 0)
                return -1;
            o = 0;
        }
        if (c->cr) {
            /* CRLF, or a bare CR made into one */
            c->cr = false;
            tmp[o++] = '\n';
            c->bol = true;
            if (ch == '\n')
                continue;
        }
        if (ch == '\r') {
            tmp[o++] = '\r';
            c->cr = true;
            c->bol = false;
            continue;
        }
        if (ch == '\n') {
            tmp[o++] = '\r';
            tmp[o++] = '\n';
            c->bol = true;
            continue;
        }
        if (stuff && c->bol && ch == '.')
            tmp[o++] = '.';
        tmp[o++] = ch;
        c->bol = false;
    }
    return buf_append(dst, tmp, o);
}

/* The body's end: its last line ends with CRLF whatever its last octets were. */
static int
client_line_end(struct smtp_client *c, struct buf *dst)
{
    if (c->cr) {
        c->cr = false;
        c->bol = true;
        return buf_puts(dst, "\n");
    }
    if (!c->bol) {
        c->bol = true;
        return buf_puts(dst, "\r\n");
    }
    return 0;
}

/* The next piece of the body, or its end: the final dot. */
static void
client_body(struct smtp_client *c)
{
    ssize_t r = c->m->body != NULL ? c->m->body(c->m->arg, c->chunk, sizeof(c->chunk)) : 0;

    if (r > 0 && (size_t)r <= sizeof(c->chunk)) {
        if (client_stuff(c, &c->out, c->chunk, (size_t)r, true) < 0)
            r = -1;
        else
            return;
    }
    if (r < 0 || (size_t)r > sizeof(c->chunk)) {
        /* Close without the dot: the server must drop what it got. */
        client_set_pending(c, SMTP_CLIENT_LOCAL, "the message body could not be read");
        client_done(c);
        return;
    }
    if (client_line_end(c, &c->out) < 0 || buf_puts(&c->out, ".\r\n") < 0)
        goto oom;
    c->st = ST_DOT;
    return;
oom:
    client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for the body");
    client_done(c);
}

/*
 * The next BDAT chunk into out: stage the body until a chunk is full or the
 * body ended, then "BDAT n [LAST]" and n octets.  A chunk that is not the
 * last is cut after its last LF, else at SMTP_CLIENT_BDAT_MAX but never
 * between CR and LF (the stage has no bare CR or LF, so a CR is always
 * followed by its LF).
 */
static void
client_chunk(struct smtp_client *c)
{
    const char *p;
    size_t n;
    bool last;

    c->chunk_due = false;
    while (!c->body_end && c->stage.len <= SMTP_CLIENT_BDAT_MAX) {
        ssize_t r = c->m->body != NULL ? c->m->body(c->m->arg, c->chunk, sizeof(c->chunk)) : 0;

        if (r < 0 || (size_t)r > sizeof(c->chunk)) {
            /* Close without BDAT LAST: the server must drop what it got. */
            client_set_pending(c, SMTP_CLIENT_LOCAL, "the message body could not be read");
            client_done(c);
            return;
        }
        if (r == 0) {
            if (client_line_end(c, &c->stage) < 0)
                goto oom;
            c->body_end = true;
        } else if (client_stuff(c, &c->stage, c->chunk, (size_t)r, false) < 0) {
            goto oom;
        }
    }
    p = c->stage.data;
    last = c->body_end && c->stage.len <= SMTP_CLIENT_BDAT_MAX;
    n = c->stage.len;
    if (!last) {
        for (n = SMTP_CLIENT_BDAT_MAX; n > 0 && p[n - 1] != '\n'; n--)
            ;
        if (n == 0)
            n = SMTP_CLIENT_BDAT_MAX - (p[SMTP_CLIENT_BDAT_MAX - 1] == '\r' ? 1 : 0);
    }
    if (buf_printf(&c->out, "BDAT %zu%s\r\n", n, last ? " LAST" : "") < 0 ||
        buf_append(&c->out, p, n) < 0)
        goto oom;
    buf_consume(&c->stage, n);
    c->chunk_last = last;
    return;
oom:
    client_set_pending(c, SMTP_CLIENT_LOCAL, "out of memory for the body");
    client_done(c);
}

/* ---- the interface ------------------------------------------------------ */

struct smtp_client *
smtp_client_new(const char *helo_name, const struct smtp_client_msg *m)
{
    struct smtp_client *c;
    size_t n = helo_name != NULL ? strlen(helo_name) : 0;

    if (n == 0 || n >= sizeof(c->helo) || !client_text_ok(helo_name, false, false) || m == NULL)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    memcpy(c->helo, helo_name, n + 1);
    buf_init(&c->out, CLIENT_OUT_MAX);
    buf_init(&c->stage, CLIENT_STAGE_MAX);
    replyparse_init(&c->rp);
    if (client_alloc(c, m->nrcpts) < 0) {
        smtp_client_free(c);
        return NULL;
    }
    c->m = m;
    c->noc = m->nrcpts;
    memset(c->oc, 0, m->nrcpts * sizeof(*c->oc));
    memset(c->accepted, 0, m->nrcpts * sizeof(*c->accepted));
    c->st = ST_GREETING;
    return c;
}

void
smtp_client_free(struct smtp_client *c)
{
    if (c == NULL)
        return;
    explicit_bzero(c->auth_pass, sizeof(c->auth_pass));
    if (c->out.data != NULL)
        explicit_bzero(c->out.data, c->out.len); /* AUTH responses may be in it */
    buf_free(&c->out);
    buf_free(&c->stage);
    free(c->oc);
    free(c->accepted);
    free(c->send);
    free(c);
}

void
smtp_client_set_tls(struct smtp_client *c, enum smtp_client_tls mode)
{
    c->tls = mode;
}

int
smtp_client_set_auth(struct smtp_client *c, const char *user, const char *pass)
{
    size_t ul = user != NULL ? strlen(user) : 0, pl = pass != NULL ? strlen(pass) : 0;

    if (c->st != ST_GREETING || ul == 0 || ul > SMTP_CLIENT_AUTH_MAX || pl == 0 ||
        pl > SMTP_CLIENT_AUTH_MAX)
        return -1;
    memcpy(c->auth_user, user, ul + 1);
    memcpy(c->auth_pass, pass, pl + 1);
    c->auth = true;
    return 0;
}

bool
smtp_client_authenticated(const struct smtp_client *c, const char **mech)
{
    if (mech != NULL)
        *mech = c->auth_mech;
    return c->authed;
}

void
smtp_client_tls_done(struct smtp_client *c, bool ok, const char *why)
{
    if (c->st != ST_TLS)
        return;
    if (!ok) {
        client_set_pending(c, SMTP_CLIENT_TLS_FAILED, why != NULL ? why : "TLS handshake failed");
        client_done(c);
        return;
    }
    c->tls_active = true;
    c->ext = 0;
    c->size_limit = 0;
    replyparse_init(&c->rp);
    c->st = ST_EHLO;
    client_hello(c, "EHLO");
}

bool
smtp_client_tls_active(const struct smtp_client *c)
{
    return c->tls_active;
}

enum smtp_client_action
smtp_client_next(struct smtp_client *c)
{
    if (c->st == ST_DONE)
        return SMTP_CLIENT_CLOSE;
    if (c->chunk_due && (c->st == ST_ENVELOPE || c->st == ST_CHUNK)) {
        /* appended after what is still unwritten: BDAT is the last command out */
        client_chunk(c);
        if (c->st == ST_DONE)
            return SMTP_CLIENT_CLOSE;
    }
    if (c->outoff < c->out.len)
        return SMTP_CLIENT_SEND;
    buf_reset(&c->out);
    c->outoff = 0;
    if (c->st == ST_BODY) {
        client_body(c);
        if (c->st == ST_DONE)
            return SMTP_CLIENT_CLOSE;
        return SMTP_CLIENT_SEND;
    }
    if (c->st == ST_IDLE)
        return SMTP_CLIENT_IDLE;
    if (c->st == ST_TLS)
        return SMTP_CLIENT_STARTTLS;
    return SMTP_CLIENT_READ;
}

enum smtp_client_wait
smtp_client_waiting(const struct smtp_client *c)
{
    switch (c->st) {
    case ST_GREETING:
        return SMTP_CLIENT_W_GREETING;
    case ST_EHLO:
    case ST_HELO:
        return SMTP_CLIENT_W_HELLO;
    case ST_STARTTLS:
    case ST_TLS:
        return SMTP_CLIENT_W_STARTTLS;
    case ST_AUTH:
    case ST_AUTH_USER:
    case ST_AUTH_PASS:
        return SMTP_CLIENT_W_AUTH;
    case ST_ENVELOPE:
        switch (client_cmd_kind(c, c->answered)) {
        case CMD_RCPT:
            return SMTP_CLIENT_W_RCPT;
        case CMD_DATA:
            return SMTP_CLIENT_W_DATA;
        case CMD_BDAT:
            return c->chunk_last ? SMTP_CLIENT_W_DOT : SMTP_CLIENT_W_BLOCK;
        default:
            return SMTP_CLIENT_W_MAIL;
        }
    case ST_BODY:
        return SMTP_CLIENT_W_BLOCK;
    case ST_DOT:
        return SMTP_CLIENT_W_DOT;
    case ST_CHUNK:
        return c->chunk_last ? SMTP_CLIENT_W_DOT : SMTP_CLIENT_W_BLOCK;
    case ST_QUIT:
        return SMTP_CLIENT_W_QUIT;
    default:
        return SMTP_CLIENT_W_NONE;
    }
}

const char *
smtp_client_output(const struct smtp_client *c, size_t *n)
{
    *n = c->out.len - c->outoff;
    return *n > 0 ? c->out.data + c->outoff : "";
}

void
smtp_client_sent(struct smtp_client *c, size_t n)
{
    if (n > c->out.len - c->outoff)
        n = c->out.len - c->outoff;
    c->outoff += n;
    if (c->outoff == c->out.len) {
        buf_reset(&c->out);
        c->outoff = 0;
    }
}

void
smtp_client_input(struct smtp_client *c, const char *p, size_t n)
{
    enum replyparse_status st;
    size_t used;

    while (n > 0 && c->st != ST_DONE && c->st != ST_TLS) {
        st = replyparse_feed(&c->rp, p, n, &used);
        p += used;
        n -= used;
        if (st == REPLYPARSE_MORE)
            return;
        if (st == REPLYPARSE_ERROR) {
            char why[SMTP_CLIENT_TEXT_MAX];

            snprintf(
                why, sizeof(why), "malformed reply: %s", c->rp.error != NULL ? c->rp.error : "?");
            client_set_pending(c, SMTP_CLIENT_NEXT_HOST, why);
            client_done(c);
            return;
        }
        client_reply(c);
    }
}

void
smtp_client_fail(struct smtp_client *c, const char *why)
{
    client_set_pending(c, SMTP_CLIENT_NEXT_HOST, why != NULL ? why : "connection lost");
    client_done(c);
}

int
smtp_client_next_message(struct smtp_client *c, const struct smtp_client_msg *m)
{
    if (c->st != ST_IDLE || m == NULL || client_alloc(c, m->nrcpts) < 0)
        return -1;
    c->m = m;
    c->noc = m->nrcpts;
    client_begin(c);
    return 0;
}

void
smtp_client_quit(struct smtp_client *c)
{
    if (c->st != ST_IDLE)
        return;
    if (buf_puts(&c->out, "QUIT\r\n") < 0) {
        client_done(c);
        return;
    }
    c->st = ST_QUIT;
}

const struct smtp_client_outcome *
smtp_client_outcome(const struct smtp_client *c, size_t i)
{
    return &c->oc[i];
}

unsigned
smtp_client_extensions(const struct smtp_client *c)
{
    return c->ext;
}

uint64_t
smtp_client_size_limit(const struct smtp_client *c)
{
    return c->size_limit;
}

const char *
smtp_client_wait_name(enum smtp_client_wait w)
{
    switch (w) {
    case SMTP_CLIENT_W_GREETING:
        return "the greeting";
    case SMTP_CLIENT_W_HELLO:
        return "the reply to EHLO/HELO";
    case SMTP_CLIENT_W_MAIL:
        return "the reply to MAIL FROM";
    case SMTP_CLIENT_W_RCPT:
        return "the reply to RCPT TO";
    case SMTP_CLIENT_W_DATA:
        return "the reply to DATA";
    case SMTP_CLIENT_W_BLOCK:
        return "the message data";
    case SMTP_CLIENT_W_DOT:
        return "the reply to the end of data";
    case SMTP_CLIENT_W_QUIT:
        return "the reply to QUIT";
    case SMTP_CLIENT_W_STARTTLS:
        return "the reply to STARTTLS";
    case SMTP_CLIENT_W_AUTH:
        return "the reply to AUTH";
    default:
        return "the session";
    }
}
