/*
 * bounce.c - delivery status notifications (see bounce.h).
 *
 * Promises: every line written ends in CRLF and holds at most 998 octets
 * (RFC 5322 §2.1.1) whatever the input; header fields longer than 78
 * columns are folded at whitespace (§2.2.3); the MIME boundary occurs in
 * none of the parts (it is checked, not hoped for); nothing is read but
 * through the caller's callback, and no clock or random source is used.
 *
 * The message is built in pieces (explanation, report, attachment) in
 * scratch buffers first, so the boundary can be chosen knowing all content.
 */
#include "deliver/bounce.h"


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "smtp/dsn.h"
#include "util/date.h"

#define BOUNCE_LINE_MAX 998 /* octets before CRLF (RFC 5322 §2.1.1) */
#define BOUNCE_FOLD_AT 78   /* preferred line width of header fields */
#define BOUNCE_TEXT_WIDTH 72
#define BOUNCE_BOUNDARY_MAX 70 /* RFC 2046 §5.1.1 */

bool
bounce_wanted(const char *sender, unsigned notify, enum bounce_action action)
{
    if (sender == NULL || sender[0] == '\0')
        return false;
    if (notify & DSN_NOTIFY_NEVER)
        return false;
    switch (action) {
    case BOUNCE_FAILED:
        return notify == 0 || (notify & DSN_NOTIFY_FAILURE);
    case BOUNCE_DELAYED:
        return notify == 0 || (notify & DSN_NOTIFY_DELAY);
    case BOUNCE_DELIVERED:
    case BOUNCE_RELAYED:
        return (notify & DSN_NOTIFY_SUCCESS) != 0;
    }
    return false;
}

ssize_t
bounce_read_fd(void *arg, uint64_t off, char *p, size_t n)
{
    const struct bounce_fd_source *src = arg;
    ssize_t r;

    do
        r = pread(src->fd, p, n, (off_t)(src->base + off));
    while (r == -1 && errno == EINTR);
    return r;
}

static bool
bounce_digit(char c)
{
    return c >= '0' && c <= '9';
}

void
bounce_status(const char *reply, enum bounce_action action, char out[12])
{
    char cls;
    size_t i, k, start;
    int part;

    if (reply != NULL && reply[0] >= '2' && reply[0] <= '5' && bounce_digit(reply[1]) &&
        bounce_digit(reply[2]) && (reply[3] == '\0' || reply[3] == ' ' || reply[3] == '-')) {
        cls = reply[0];
        /* An enhanced code counts only with the reply's class, as in replyparse.c. */
        start = reply[3] == '\0' ? 3 : 4;
        i = start;
        if (reply[i] == cls && reply[i + 1] == '.') {
            i += 2;
            for (part = 0; part < 2; part++) {
                for (k = 0; k < 3 && bounce_digit(reply[i]); k++)
                    i++;
                if (k == 0)
                    break;
                if (part == 0) {
                    if (reply[i] != '.') {
                        k = 0;
                        break;
                    }
                    i++;
                }
            }
            if (k > 0 && (reply[i] == '\0' || reply[i] == ' ')) {
                memcpy(out, reply + start, i - start);
                out[i - start] = '\0';
                return;
            }
        }
        snprintf(out, 12, "%c.0.0", cls);
        return;
    }
    switch (action) {
    case BOUNCE_FAILED:
        strcpy(out, "5.0.0");
        break;
    case BOUNCE_DELAYED:
        strcpy(out, "4.0.0");
        break;
    default:
        strcpy(out, "2.0.0");
        break;
    }
}

/* Hints by code; "X" matches either failure class.  Plain words for the sender. */
static const struct {
    const char *code;
    const char *hint;
} bounce_hints[] = {
    {"X.1.1", "The address does not exist at that domain. Check it for typing mistakes."},
    {"X.1.2", "The recipient's domain does not exist or does not receive mail. Check the part "
              "after the @."},
    {"X.1.3", "The address is not written correctly. Check it for typing mistakes."},
    {"X.1.6", "The recipient has moved and left no forwarding address."},
    {"X.1.10", "The recipient's domain declares that it accepts no mail at all (null MX)."},
    {"X.2.1", "The recipient's mailbox is disabled and does not accept mail."},
    {"4.2.2", "The recipient's mailbox is full. Delivery will be retried; the recipient has "
              "to make room."},
    {"5.2.2", "The recipient's mailbox is full. Try again later, once they have made room, or "
              "reach them another way."},
    {"X.2.3", "The message is larger than the recipient accepts. Send a smaller message, or "
              "share large files as a link."},
    {"X.3.4", "The message is larger than the receiving system accepts. Send a smaller "
              "message, or share large files as a link."},
    {"X.3.2", "The receiving system is not accepting mail at the moment."},
    {"X.4.1", "The recipient's mail server could not be reached (no answer, or the connection "
              "was refused)."},
    {"X.4.2", "The connection to the recipient's mail server broke off."},
    {"X.4.3", "The recipient's domain could not be looked up in the DNS."},
    {"X.4.4", "No route to the recipient's domain was found (no usable mail server in the "
              "DNS)."},
    {"X.4.7", "The message could not be delivered within the time allowed, so the mail "
              "system gave up."},
    {"X.6.7", "The address needs internationalised mail (SMTPUTF8), which the receiving "
              "system does not support."},
    {"X.7.1", "The receiving system refused the message for policy reasons (for example, "
              "this sender or server is not allowed to send there)."},
    {"X.7.26", "The message failed the receiving system's sender authentication checks "
               "(SPF, DKIM, DMARC). Your mail administrator should check your domain's DNS "
               "records."},
};

const char *
bounce_hint(const char *status)
{
    size_t i, sl;

    if (status == NULL || (sl = strlen(status)) < 5)
        return NULL;
    for (i = 0; i < sizeof(bounce_hints) / sizeof(bounce_hints[0]); i++) {
        const char *c = bounce_hints[i].code;

        if (strcmp(c, status) == 0)
            return bounce_hints[i].hint;
        if (c[0] == 'X' && (status[0] == '4' || status[0] == '5') && strcmp(c + 1, status + 1) == 0)
            return bounce_hints[i].hint;
    }
    return NULL;
}

/* ---- output helpers --------------------------------------------------------------------- */

struct bounce_ctx {
    struct buf *b;
    bool failed; /* some append failed (out of room): reported once at the end */
    bool eightbit;
};

static void
bounce_put(struct bounce_ctx *c, const void *p, size_t n)
{
    if (!c->failed && buf_append(c->b, p, n) == -1)
        c->failed = true;
}

static void
bounce_puts(struct bounce_ctx *c, const char *s)
{
    bounce_put(c, s, strlen(s));
}

/*
 * A copy of s that is safe in a header field or a report: control characters
 * become a space (TAB, CR, LF) or '?', 8-bit octets become '?' unless keep8
 * (addresses we accepted ourselves, which may be UTF-8 under SMTPUTF8).
 * Trailing whitespace is dropped: a folded line must not be all blanks.
 */
static char *
bounce_clean(const char *s, bool keep8, bool *eightbit)
{
    size_t n = strlen(s), i;
    char *t = malloc(n + 1);

    if (t == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '\t' || ch == '\r' || ch == '\n')
            t[i] = ' ';
        else if (ch < 0x20 || ch == 0x7f)
            t[i] = '?';
        else if (ch >= 0x80 && !keep8)
            t[i] = '?';
        else {
            if (ch >= 0x80)
                *eightbit = true;
            t[i] = (char)ch;
        }
    }
    while (n > 0 && t[n - 1] == ' ')
        n--;
    t[n] = '\0';
    return t;
}

/*
 * "Name: value" CRLF, folded (RFC 5322 §2.2.3): a line break goes before
 * whitespace once a line would pass 78 columns.  A word that cannot fit
 * even in a 998-octet line is cut there and continued after CRLF SP.
 * XXX: that adds a space to the unfolded value; only a value with a run of
 * almost 1000 octets without whitespace gets it, and the limit is not ours
 * to bend.
 */
static void
bounce_field(struct bounce_ctx *c, const char *name, const char *value, bool keep8)
{
    char *v = bounce_clean(value, keep8, &c->eightbit);
    size_t col, i = 0, ws, wl, take;

    if (v == NULL) {
        c->failed = true;
        return;
    }
    bounce_puts(c, name);
    bounce_puts(c, ": ");
    col = strlen(name) + 2;
    while (v[i] == ' ')
        i++;
    while (v[i] != '\0') {
        for (ws = 0; v[i + ws] == ' '; ws++)
            ;
        for (wl = 0; v[i + ws + wl] != '\0' && v[i + ws + wl] != ' '; wl++)
            ;
        if (ws > 0 && col + ws + wl > BOUNCE_FOLD_AT) {
            bounce_puts(c, "\r\n");
            col = 0;
        }
        /* whitespace: at most the line limit minus one, so a word octet always follows */
        for (; ws > 0; ws--, i++) {
            if (col < BOUNCE_LINE_MAX - 1) {
                bounce_put(c, " ", 1);
                col++;
            }
        }
        while (wl > 0) {
            take = BOUNCE_LINE_MAX - col;
            if (take > wl)
                take = wl;
            bounce_put(c, v + i, take);
            col += take;
            i += take;
            wl -= take;
            if (wl > 0) {
                bounce_puts(c, "\r\n ");
                col = 1;
            }
        }
    }
    bounce_puts(c, "\r\n");
    free(v);
}

/* A field from a printf format, for short values only (dates, codes, host names). */
static void bounce_fieldf(struct bounce_ctx *c, const char *name, bool keep8, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
bounce_fieldf(struct bounce_ctx *c, const char *name, bool keep8, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    bounce_field(c, name, tmp, keep8);
}

/*
 * Plain text wrapped at 72 columns after indent, each line ending in CRLF;
 * a word too long for a line is cut.  The text is cleaned like a field.
 */
static void
bounce_wrap(struct bounce_ctx *c, const char *indent, const char *text, bool keep8)
{
    char *v = bounce_clean(text, keep8, &c->eightbit);
    size_t il = strlen(indent), width = BOUNCE_TEXT_WIDTH - il, col = 0, i = 0, wl;

    if (v == NULL) {
        c->failed = true;
        return;
    }
    for (;;) {
        while (v[i] == ' ')
            i++;
        if (v[i] == '\0')
            break;
        for (wl = 0; v[i + wl] != '\0' && v[i + wl] != ' '; wl++)
            ;
        while (wl > 0) {
            size_t take;

            if (col > 0 && col + 1 + wl > width) {
                bounce_puts(c, "\r\n");
                col = 0;
            }
            if (col == 0)
                bounce_puts(c, indent);
            else {
                bounce_put(c, " ", 1);
                col++;
            }
            take = wl < width - col ? wl : width - col;
            bounce_put(c, v + i, take);
            col += take;
            i += take;
            wl -= take;
            if (wl > 0) {
                bounce_puts(c, "\r\n");
                col = 0;
            }
        }
    }
    if (col > 0)
        bounce_puts(c, "\r\n");
    free(v);
}

/* RFC 5322 date-time in UTC (util/date.c). */
static void
bounce_date(time_t t, char out[40])
{
    date_rfc5322(t, out, 40);
}

/* ---- the attachment --------------------------------------------------------------------- */

struct bounce_attach {
    struct bounce_ctx *c;
    bool headers_only;
    size_t body_cap;
    char line[BOUNCE_LINE_MAX];
    size_t llen;
    bool in_headers;
    bool done;
    bool truncated;
    size_t hbytes, bbytes;
};

/* One complete line of the original: copy it with CRLF, or stop at a cap. */
static void
bounce_attach_line(struct bounce_attach *a)
{
    size_t n = a->llen + 2;

    a->llen = 0;
    if (a->in_headers && n == 2) {
        a->in_headers = false;
        if (a->headers_only) {
            a->done = true;
            return;
        }
        bounce_put(a->c, "\r\n", 2);
        return;
    }
    if (a->in_headers) {
        if (a->hbytes + n > BOUNCE_HEADERS_MAX) {
            a->truncated = a->done = true;
            return;
        }
        a->hbytes += n;
    } else {
        if (a->bbytes + n > a->body_cap) {
            a->truncated = a->done = true;
            return;
        }
        a->bbytes += n;
    }
    bounce_put(a->c, a->line, n - 2);
    bounce_put(a->c, "\r\n", 2);
}

/*
 * Copy the original (or its headers) with every line ending made CRLF: a
 * bare LF or bare CR ends a line too, and a line longer than 998 octets is
 * broken (in the headers as a fold, with a leading space, so the header
 * section stays parseable).  Such lines only exist in a message that broke
 * the rules already; the DSN must not.
 */
static int
bounce_copy_original(const struct bounce_msg *m, struct bounce_attach *a, char *err, size_t errlen)
{
    char chunk[16384];
    uint64_t off = 0;
    bool prev_cr = false;

    while (off < m->msg_len && !a->done) {
        size_t want = sizeof(chunk), i;
        ssize_t r;

        if (m->msg_len - off < want)
            want = (size_t)(m->msg_len - off);
        r = m->read(m->read_arg, off, chunk, want);
        if (r < 0) {
            snprintf(err, errlen, "reading the original message: %s", strerror(errno));
            return -1;
        }
        if (r == 0) {
            snprintf(err, errlen, "original message ends at %llu of %llu bytes",
                (unsigned long long)off, (unsigned long long)m->msg_len);
            return -1;
        }
        off += (uint64_t)r;
        for (i = 0; i < (size_t)r && !a->done; i++) {
            char ch = chunk[i];

            if (prev_cr) {
                prev_cr = false;
                bounce_attach_line(a);
                if (ch == '\n' || a->done)
                    continue;
            }
            if (ch == '\r') {
                prev_cr = true;
                continue;
            }
            if (ch == '\n') {
                bounce_attach_line(a);
                continue;
            }
            if (a->llen == BOUNCE_LINE_MAX) {
                bounce_attach_line(a);
                if (a->done)
                    break;
                if (a->in_headers)
                    a->line[a->llen++] = ' ';
            }
            if ((unsigned char)ch >= 0x80)
                a->c->eightbit = true;
            a->line[a->llen++] = ch;
        }
    }
    if (!a->done && (prev_cr || a->llen > 0))
        bounce_attach_line(a);
    return 0;
}

/* ---- the parts -------------------------------------------------------------------------- */

static const char *
bounce_action_name(enum bounce_action a)
{
    switch (a) {
    case BOUNCE_FAILED:
        return "failed";
    case BOUNCE_DELAYED:
        return "delayed";
    case BOUNCE_DELIVERED:
        return "delivered";
    case BOUNCE_RELAYED:
        return "relayed";
    }
    return "failed";
}

static bool
bounce_has(const struct bounce_msg *m, enum bounce_action a)
{
    size_t i;

    for (i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].action == a)
            return true;
    return false;
}

static void
bounce_status_of(const struct bounce_rcpt *r, char out[12])
{
    if (r->status != NULL && strlen(r->status) < 12)
        strcpy(out, r->status);
    else
        bounce_status(r->reply, r->action, out);
}

/* The recipients with action a, each with what the server said and a hint. */
static void
bounce_text_group(
    struct bounce_ctx *c, const struct bounce_msg *m, enum bounce_action a, const char *intro)
{
    size_t i;
    char st[12], line[1200], date[40];

    if (!bounce_has(m, a))
        return;
    bounce_wrap(c, "", intro, false);
    bounce_puts(c, "\r\n");
    for (i = 0; i < m->nrcpts; i++) {
        const struct bounce_rcpt *r = &m->rcpts[i];
        const char *hint;

        if (r->action != a)
            continue;
        snprintf(line, sizeof(line), "<%s>", r->addr);
        bounce_wrap(c, "  ", line, true);
        if (r->reply != NULL) {
            if (r->remote_mta != NULL)
                snprintf(line, sizeof(line), "The mail server %s said:", r->remote_mta);
            else
                snprintf(line, sizeof(line), "The mail system said:");
            bounce_wrap(c, "    ", line, false);
            bounce_wrap(c, "        ", r->reply, false);
        }
        bounce_status_of(r, st);
        if ((a == BOUNCE_FAILED || a == BOUNCE_DELAYED) && (hint = bounce_hint(st)) != NULL) {
            snprintf(line, sizeof(line), "What this means: %s", hint);
            bounce_wrap(c, "    ", line, false);
        }
        if (a == BOUNCE_DELAYED && r->retry_until != 0) {
            bounce_date(r->retry_until, date);
            snprintf(line, sizeof(line), "Delivery will be tried until %s.", date);
            bounce_wrap(c, "    ", line, false);
        }
        bounce_puts(c, "\r\n");
    }
}

static void
bounce_text_part(
    struct bounce_ctx *c, const struct bounce_msg *m, const struct bounce_info *in, bool attached)
{
    char line[600], date[40];

    snprintf(line, sizeof(line), "This is the mail system at %s.", m->hostname);
    bounce_wrap(c, "", line, false);
    bounce_puts(c, "\r\n");
    bounce_date(m->arrival, date);
    snprintf(line, sizeof(line),
        "This report is about the message you sent from <%s>, which arrived here on %s "
        "(queue ID %s).",
        m->sender, date, m->queue_id);
    bounce_wrap(c, "", line, true);
    bounce_puts(c, "\r\n");

    bounce_text_group(c, m, BOUNCE_FAILED,
        "Your message could not be delivered to the recipients below. The mail system has given "
        "up on them and will not try again.");
    bounce_text_group(c, m, BOUNCE_DELAYED,
        "Your message has not been delivered yet to the recipients below. This is only a "
        "warning: the mail system keeps trying, and you do not need to send the message again. "
        "You will hear again only if it finally fails.");
    bounce_text_group(c, m, BOUNCE_DELIVERED,
        "Your message was delivered to the recipients below, as you asked to be told.");
    bounce_text_group(c, m, BOUNCE_RELAYED,
        "Your message was passed on to a mail system that does not send delivery reports, for "
        "the recipients below. You will not hear more about them.");

    if (bounce_has(m, BOUNCE_FAILED)) {
        bounce_wrap(c, "",
            "What you can do: check each address above for mistakes. If an address looks right, "
            "reach the recipient another way or ask their mail administrator, quoting the reply "
            "above: it says why the message was refused. Sending the same message again to the "
            "same address will most likely fail the same way.",
            false);
        bounce_puts(c, "\r\n");
    }

    if (!attached)
        snprintf(line, sizeof(line), "The original message is not attached.");
    else if (in->full && in->truncated)
        snprintf(line, sizeof(line),
            "Your original message is attached, but cut short: it was %llu bytes long, and "
            "only its headers and the first %zu KiB of its body are included.",
            (unsigned long long)m->msg_len,
            (m->body_cap ? m->body_cap : (size_t)BOUNCE_BODY_CAP) / 1024);
    else if (in->full)
        snprintf(line, sizeof(line), "Your original message is attached.");
    else
        snprintf(line, sizeof(line), "The headers of your original message are attached%s.",
            in->truncated ? " (cut short: they were too long)" : "");
    bounce_wrap(c, "", line, false);
}

static bool
bounce_ascii(const char *s)
{
    for (; s != NULL && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/*
 * RFC 6533 §3 utf-8-addr-unitext: UTF-8 as it is, and each octet that is no
 * QUCHAR ('\', '+', '=', space, controls) as EmbeddedUnicodeChar "\x{HEX}".
 * NULL when memory is short.
 */
static char *
bounce_unitext(const char *addr)
{
    size_t n = strlen(addr), o = 0, i;
    char *t = malloc(n * 8 + 1);

    if (t == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)addr[i];

        if (ch <= 0x20 || ch == 0x7f || ch == '\\' || ch == '+' || ch == '=')
            o += (size_t)sprintf(t + o, "\\x{%X}", ch);
        else
            t[o++] = (char)ch;
    }
    t[o] = '\0';
    return t;
}

/* One hex digit's value, or -1. */
static int
bounce_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
        return (ch | 0x20) - 'a' + 10;
    return -1;
}

/*
 * An ORCPT "utf-8;" address as the client sent it (utf-8-addr-xtext, RFC 6533
 * §3: "\x{HEX}" for each non-ASCII character) made plain UTF-8 into out, for
 * writing again as unitext.  False when it is not that form (it is then
 * written as it came).
 */
static bool
bounce_xtext_utf8(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    while (*in) {
        unsigned long cp = 0;
        int d, k = 0;

        if (in[0] != '\\' || in[1] != 'x' || in[2] != '{') {
            if (o + 1 >= outlen)
                return false;
            out[o++] = *in++;
            continue;
        }
        for (in += 3; (d = bounce_hex(*in)) >= 0 && k < 6; in++, k++)
            cp = cp * 16 + (unsigned long)d;
        if (*in++ != '}' || k == 0 || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
            o + 5 >= outlen)
            return false;
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xc0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xe0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    out[o] = '\0';
    return true;
}

/*
 * A recipient address field: "rfc822; addr" for an ASCII address; in an RFC
 * 6533 report a non-ASCII one is "utf-8; " and its unitext.  value is the
 * whole field value for Original-Recipient ("type;address"), else the address.
 */
static void
bounce_addr_field(
    struct bounce_ctx *c, const char *name, const char *value, bool typed, bool global)
{
    char plain[1024];
    const char *addr = value, *semi;
    char *u;

    if (typed) {
        if (!global || (semi = strchr(value, ';')) == NULL) {
            bounce_field(c, name, value, true);
            return;
        }
        addr = semi + 1;
        while (*addr == ' ')
            addr++;
        if (strncasecmp(value, "utf-8;", 6) == 0 && bounce_xtext_utf8(addr, plain, sizeof(plain)))
            addr = plain;
        else if (strncasecmp(value, "rfc822;", 7) != 0 || bounce_ascii(addr)) {
            bounce_field(c, name, value, true); /* ASCII, or a type we do not know */
            return;
        }
    }
    if (!global || bounce_ascii(addr)) {
        bounce_fieldf(c, name, true, "rfc822; %s", addr);
        return;
    }
    if ((u = bounce_unitext(addr)) == NULL) {
        c->failed = true;
        return;
    }
    bounce_fieldf(c, name, true, "utf-8; %s", u);
    free(u);
}

/* An RFC 6533 report: the original needed SMTPUTF8, or an address it names is not ASCII. */
static bool
bounce_global(const struct bounce_msg *m)
{
    size_t i;

    if (m->smtputf8 || !bounce_ascii(m->sender))
        return true;
    for (i = 0; i < m->nrcpts; i++)
        if (!bounce_ascii(m->rcpts[i].addr) || !bounce_ascii(m->rcpts[i].orcpt))
            return true;
    return false;
}

static void
bounce_report_part(struct bounce_ctx *c, const struct bounce_msg *m, bool global)
{
    char date[40], st[12];
    size_t i;

    bounce_fieldf(c, "Reporting-MTA", false, "dns; %s", m->hostname);
    bounce_field(c, "X-Tern-Queue-ID", m->queue_id, false);
    if (m->envid != NULL)
        bounce_field(c, "Original-Envelope-Id", m->envid, false);
    bounce_date(m->arrival, date);
    bounce_field(c, "Arrival-Date", date, false);
    for (i = 0; i < m->nrcpts; i++) {
        const struct bounce_rcpt *r = &m->rcpts[i];

        bounce_puts(c, "\r\n");
        if (r->orcpt != NULL)
            bounce_addr_field(c, "Original-Recipient", r->orcpt, true, global);
        bounce_addr_field(c, "Final-Recipient", r->addr, false, global);
        bounce_field(c, "Action", bounce_action_name(r->action), false);
        bounce_status_of(r, st);
        bounce_field(c, "Status", st, false);
        if (r->remote_mta != NULL)
            bounce_fieldf(c, "Remote-MTA", false, "dns; %s", r->remote_mta);
        if (r->reply != NULL) {
            /* built here, not with bounce_fieldf: a reply may be longer than its buffer */
            size_t rl = strlen(r->reply);
            char *d = malloc(rl + 7);

            if (d == NULL) {
                c->failed = true;
                return;
            }
            memcpy(d, "smtp; ", 6);
            memcpy(d + 6, r->reply, rl + 1);
            bounce_field(c, "Diagnostic-Code", d, false);
            free(d);
        }
        if (r->last_attempt != 0) {
            bounce_date(r->last_attempt, date);
            bounce_field(c, "Last-Attempt-Date", date, false);
        }
        if (r->action == BOUNCE_DELAYED && r->retry_until != 0) {
            bounce_date(r->retry_until, date);
            bounce_field(c, "Will-Retry-Until", date, false);
        }
    }
}

/* ---- the whole ------------------------------------------------------------------------- */

static bool
bounce_contains(const struct buf *b, const char *s)
{
    return b->len > 0 && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

static bool
bounce_bad_name(const char *s)
{
    size_t i;

    if (s == NULL || s[0] == '\0')
        return true;
    for (i = 0; s[i] != '\0'; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] == 0x7f)
            return true;
    return false;
}

/*
 * "tern-<queue ID>-<salt>": only letters and digits from the caller, so it
 * needs no quoting care; then, if by chance it occurs in some part, ".1",
 * ".2"... until it does not.
 */
static int
bounce_boundary(const struct bounce_msg *m, const struct buf *parts[3], char out[80])
{
    char base[64];
    size_t n, i;
    unsigned k;

    n = (size_t)snprintf(base, sizeof(base), "tern-");
    for (i = 0; m->queue_id[i] != '\0' && n < 36; i++)
        if ((m->queue_id[i] >= '0' && m->queue_id[i] <= '9') ||
            ((m->queue_id[i] | 0x20) >= 'a' && (m->queue_id[i] | 0x20) <= 'z'))
            base[n++] = m->queue_id[i];
    base[n++] = '-';
    for (i = 0; m->boundary_salt != NULL && m->boundary_salt[i] != '\0' && n < 60; i++)
        if ((m->boundary_salt[i] >= '0' && m->boundary_salt[i] <= '9') ||
            ((m->boundary_salt[i] | 0x20) >= 'a' && (m->boundary_salt[i] | 0x20) <= 'z'))
            base[n++] = m->boundary_salt[i];
    base[n] = '\0';
    for (k = 0; k < 1000; k++) {
        if (k == 0)
            snprintf(out, 80, "%s", base);
        else
            snprintf(out, 80, "%s.%u", base, k);
        if (!bounce_contains(parts[0], out) && !bounce_contains(parts[1], out) &&
            !bounce_contains(parts[2], out))
            return 0;
    }
    return -1;
}

int
bounce_build(
    const struct bounce_msg *m, struct buf *out, struct bounce_info *info, char *err, size_t errlen)
{
    struct buf text, report, orig;
    struct bounce_ctx c = {.b = out};
    struct bounce_ctx ct = {.b = &text}, cr = {.b = &report}, co = {.b = &orig};
    struct bounce_attach *a = NULL;
    struct bounce_info in = {0};
    const struct buf *parts[3] = {&text, &report, &orig};
    char boundary[80], date[40];
    const char *subject;
    bool attached = m->read != NULL, global;
    int rc = -1;
    size_t i;

    if (bounce_bad_name(m->hostname) || bounce_bad_name(m->queue_id) || m->sender == NULL ||
        m->sender[0] == '\0' || m->nrcpts == 0 || m->rcpts == NULL) {
        snprintf(err, errlen, "bounce: missing hostname, queue ID, sender or recipients");
        return -1;
    }
    for (i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].addr == NULL || m->rcpts[i].addr[0] == '\0') {
            snprintf(err, errlen, "bounce: recipient %zu has no address", i);
            return -1;
        }
    }
    /* scratch buffers bounded like the output: together they become it */
    buf_init(&text, out->max);
    buf_init(&report, out->max);
    buf_init(&orig, out->max);

    in.full = bounce_has(m, BOUNCE_FAILED) && m->ret != DSN_RET_HDRS;
    if (attached) {
        if ((a = calloc(1, sizeof(*a))) == NULL) {
            snprintf(err, errlen, "bounce: out of memory");
            goto out;
        }
        a->c = &co;
        a->headers_only = !in.full;
        a->body_cap = m->body_cap ? m->body_cap : BOUNCE_BODY_CAP;
        a->in_headers = true;
        if (bounce_copy_original(m, a, err, errlen) == -1)
            goto out;
        in.truncated = a->truncated;
    }
    global = in.global = bounce_global(m);
    bounce_text_part(&ct, m, &in, attached);
    bounce_report_part(&cr, m, global);
    if (ct.failed || cr.failed || co.failed) {
        snprintf(err, errlen, "bounce: message larger than the limit or out of memory");
        goto out;
    }
    in.eightbit = ct.eightbit || cr.eightbit || co.eightbit;
    if (bounce_boundary(m, parts, boundary) == -1) {
        snprintf(err, errlen, "bounce: no usable MIME boundary");
        goto out;
    }

    if (bounce_has(m, BOUNCE_FAILED))
        subject = "Undelivered Mail Returned to Sender";
    else if (bounce_has(m, BOUNCE_DELAYED))
        subject = "Delayed Mail (still being retried)";
    else
        subject = "Successful Mail Delivery Report";

    bounce_date(m->now, date);
    bounce_field(&c, "Date", date, false);
    bounce_fieldf(&c, "From", false, "Mail Delivery System <MAILER-DAEMON@%s>", m->hostname);
    bounce_fieldf(&c, "To", true, "<%s>", m->sender);
    bounce_field(&c, "Subject", subject, false);
    /* The time keeps a delay warning and the later bounce apart: mail stores drop
       duplicates by Message-ID. */
    bounce_fieldf(&c, "Message-ID", false, "<%s.%lld.bounce@%s>", m->queue_id, (long long)m->now,
        m->hostname);
    bounce_field(&c, "Auto-Submitted", "auto-replied", false);
    bounce_field(&c, "MIME-Version", "1.0", false);
    bounce_fieldf(&c, "Content-Type", false, "multipart/report; report-type=%s; boundary=\"%s\"",
        global ? "global-delivery-status" : "delivery-status", boundary);
    bounce_puts(&c, "\r\nThis is a MIME-encapsulated message.\r\n");

    bounce_puts(&c, "\r\n--");
    bounce_puts(&c, boundary);
    bounce_puts(&c, "\r\nContent-Description: Notification\r\n");
    bounce_puts(&c, ct.eightbit ? "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Transfer-Encoding: 8bit\r\n"
                                : "Content-Type: text/plain; charset=us-ascii\r\n");
    bounce_puts(&c, "\r\n");
    bounce_put(&c, text.data, text.len);

    bounce_puts(&c, "\r\n--");
    bounce_puts(&c, boundary);
    bounce_puts(&c, global ? "\r\nContent-Description: Delivery report\r\n"
                             "Content-Type: message/global-delivery-status\r\n"
                           : "\r\nContent-Description: Delivery report\r\n"
                             "Content-Type: message/delivery-status\r\n");
    if (cr.eightbit)
        bounce_puts(&c, "Content-Transfer-Encoding: 8bit\r\n");
    bounce_puts(&c, "\r\n");
    bounce_put(&c, report.data, report.len);

    if (attached) {
        bounce_puts(&c, "\r\n--");
        bounce_puts(&c, boundary);
        bounce_puts(&c, in.full ? "\r\nContent-Description: Undelivered Message\r\n"
                                : "\r\nContent-Description: Message Headers\r\n");
        if (global)
            bounce_puts(&c, in.full ? "Content-Type: message/global\r\n"
                                    : "Content-Type: message/global-headers\r\n");
        else
            bounce_puts(&c, in.full ? "Content-Type: message/rfc822\r\n"
                                    : "Content-Type: text/rfc822-headers\r\n");
        if (co.eightbit)
            bounce_puts(&c, "Content-Transfer-Encoding: 8bit\r\n");
        bounce_puts(&c, "\r\n");
        bounce_put(&c, orig.data, orig.len);
    }
    bounce_puts(&c, "\r\n--");
    bounce_puts(&c, boundary);
    bounce_puts(&c, "--\r\n");
    if (c.failed) {
        snprintf(err, errlen, "bounce: message larger than the limit or out of memory");
        goto out;
    }
    in.eightbit = in.eightbit || c.eightbit;
    if (info != NULL)
        *info = in;
    rc = 0;
out:
    free(a);
    buf_free(&text);
    buf_free(&report);
    buf_free(&orig);
    return rc;
}
