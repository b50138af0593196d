/*
 * lmtp.c - local delivery over LMTP (RFC 2033); see lmtp.h.
 *
 * One connection per message: greeting (220), LHLO, MAIL FROM, one RCPT TO
 * per mailbox, DATA, the dot-stuffed body, then one reply per accepted
 * mailbox in RCPT order, then QUIT.  Promises:
 *   - every recipient of the message gets an outcome (status and reply);
 *   - the server's replies are passed on verbatim (4xx TEMP, 5xx PERM), with
 *     two exceptions that protect the mail from a misconfigured server: a
 *     5xx to the greeting or to LHLO (talking LMTP to an SMTP port, say) and
 *     a reply of the wrong kind (a 3xx to RCPT, anything but 354 to DATA that
 *     is not 4xx/5xx) are R_DLV_LMTP_PROTOCOL, transient, not a bounce;
 *   - a broken connection or a timeout before a mailbox's final reply is
 *     R_DLV_LMTP_UNREACHABLE for it, a malformed reply R_DLV_LMTP_PROTOCOL
 *     for every mailbox still without an outcome (the stream can no longer
 *     be trusted), both transient;
 *   - only CRLF is sent: the stored body already has CRLF line ends, but a
 *     bare LF found in it is sent as CRLF and a bare CR as CRLF too, so a
 *     message taken in by some other path (sendmail) cannot smuggle a line
 *     end past the LMTP server; a '.' starting a line is doubled, and a body
 *     not ending in a line end gets CRLF before the final ".\r\n";
 *   - blocking in spirit (it runs on a worker thread) but every connect,
 *     read and write waits in poll() with the configured timeout, so a stuck
 *     server costs at most timeout seconds a step.  The body is one step per
 *     chunk written: a large message on a slow but live socket is not cut off.
 *
 * Recipients with targets (alias expansion): one RCPT TO per target, and the
 * recipient's outcome is the worst of its targets'.  "Worst" ranks TEMP
 * above PERM above OK: if one target is deferred the recipient is retried,
 * so that target still gets its copy (a message may arrive twice, never zero
 * times); a PERM is reported once nothing is left to retry.
 * XXX: a retry delivers again to the targets that already took the message;
 * the envelope records outcomes per recipient, not per target.
 *
 * With PIPELINING advertised, MAIL, the RCPTs and DATA go in one write and
 * the replies are read in order (RFC 2920).  A window of at most
 * LMTP_WINDOW commands bounds what is written before reading, so a server
 * that stops reading while its replies pile up cannot deadlock us.
 */
#include "deliver/lmtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "smtp/replyparse.h"
#include "util/buf.h"
#include "util/io.h"

#define LMTP_DEFAULT_TIMEOUT 300 /* seconds, when the configuration gives none */
#define LMTP_WINDOW 64           /* commands written before their replies are read */
#define LMTP_CHUNK 16384         /* body octets read from the spool at once */
#define LMTP_IN_MAX 4096

/* One RCPT TO: a recipient's address or one of its targets. */
struct lmtp_unit {
    struct delivery_rcpt *rcpt;
    const char *addr;
    bool accepted; /* 2xx to RCPT: owes a reply after the dot */
    bool done;     /* has its outcome */
    enum delivery_status status;
    char reply[DELIVERY_REPLY_MAX];
};

struct lmtp {
    const struct lmtp_conf *c;
    struct delivery_msg *m;
    const char *target;
    int fd;
    int timeout_ms;
    struct lmtp_unit *units;
    unsigned nunits;
    unsigned *send; /* indexes of the units sent a RCPT TO, in order */
    unsigned nsend;
    unsigned naccepted;
    char in[LMTP_IN_MAX];
    size_t inoff, inlen;
    struct replyparse rp;
    char chunk[LMTP_CHUNK];
    char out[3 * LMTP_CHUNK + 8];
};

/* Why the connection failed, to tell the units still without an outcome. */
enum lmtp_fail { LMTP_FAIL_IO, LMTP_FAIL_PROTOCOL, LMTP_FAIL_LOCAL };

static void
lmtp_unit_set(struct lmtp_unit *u, enum reply_id id, const char *a1, const char *a2)
{
    struct delivery_rcpt tmp;

    delivery_set(&tmp, id, a1, a2);
    u->status = tmp.status;
    memcpy(u->reply, tmp.reply, sizeof(u->reply));
    u->done = true;
}

static void
lmtp_unit_received(struct lmtp_unit *u, unsigned code, const char *text)
{
    struct delivery_rcpt tmp;

    delivery_set_received(&tmp, code, text);
    u->status = tmp.status;
    memcpy(u->reply, tmp.reply, sizeof(u->reply));
    u->done = true;
}

/* The last reply read, as "CODE ESC TEXT", for our own messages about it. */
static void
lmtp_reply_str(const struct lmtp *l, const char *what, char *s, size_t n)
{
    snprintf(s, n, "%s answered %u%s%s %s", what, l->rp.code, l->rp.esc[0] ? " " : "", l->rp.esc,
        l->rp.text);
}

/* The server's reply, verbatim: code, enhanced code when it sent one, text. */
static void
lmtp_unit_reply(struct lmtp_unit *u, const struct replyparse *rp)
{
    char text[REPLYPARSE_TEXT_MAX + 20];

    if (rp->esc[0] != '\0')
        snprintf(text, sizeof(text), "%s%s%s", rp->esc, rp->text[0] ? " " : "", rp->text);
    else
        snprintf(text, sizeof(text), "%s", rp->text);
    lmtp_unit_received(u, rp->code, text);
}

/* Every unit without an outcome gets the reply just read, verbatim. */
static void
lmtp_reply_all(struct lmtp *l)
{
    unsigned i;

    for (i = 0; i < l->nunits; i++)
        if (!l->units[i].done)
            lmtp_unit_reply(&l->units[i], &l->rp);
}

/* Every unit without an outcome gets this one. */
static void
lmtp_fail_all(struct lmtp *l, enum lmtp_fail why, const char *reason)
{
    unsigned i;

    for (i = 0; i < l->nunits; i++) {
        if (l->units[i].done)
            continue;
        if (why == LMTP_FAIL_IO)
            lmtp_unit_set(&l->units[i], R_DLV_LMTP_UNREACHABLE, l->target, reason);
        else if (why == LMTP_FAIL_PROTOCOL)
            lmtp_unit_set(&l->units[i], R_DLV_LMTP_PROTOCOL, l->target, reason);
        else
            lmtp_unit_set(&l->units[i], R_LOCAL_ERROR, NULL, NULL);
    }
}

static const char *
lmtp_errstr(int err)
{
    return err == ETIMEDOUT ? "timeout" : strerror(err);
}

/* Parse c->target into a socket address.  -1 when it is not one we take. */
static int
lmtp_address(const char *target, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon, *h;
    size_t hlen;
    char *end;
    unsigned long port;

    memset(ss, 0, sizeof(*ss));
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        size_t n = strlen(target + 5);

        if (n == 0 || n >= sizeof(sun->sun_path))
            return -1;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, target + 5, n + 1);
        *len = (socklen_t)sizeof(*sun);
        return 0;
    }
    colon = strrchr(target, ':');
    if (colon == NULL)
        return -1;
    h = target;
    hlen = (size_t)(colon - target);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host) || colon[1] < '0' || colon[1] > '9')
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port == 0 || port > 65535)
        return -1;
    if (h != target) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = (socklen_t)sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return -1;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = (socklen_t)sizeof(*s4);
    }
    return 0;
}

/* Connect, non-blocking with a deadline.  -1 with every unit set. */
static int
lmtp_connect(struct lmtp *l)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err = 0;
    socklen_t errlen = sizeof(err);

    if (lmtp_address(l->target, &ss, &len) < 0) {
        lmtp_fail_all(l, LMTP_FAIL_IO, "not an address (unix:/path, IP:PORT or [IPv6]:PORT)");
        return -1;
    }
    l->fd = io_socket_stream(ss.ss_family);
    if (l->fd < 0) {
        lmtp_fail_all(l, LMTP_FAIL_IO, strerror(errno));
        return -1;
    }
    if (connect(l->fd, (struct sockaddr *)&ss, len) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        lmtp_fail_all(l, LMTP_FAIL_IO, strerror(errno));
        return -1;
    }
    if (io_wait(l->fd, POLLOUT, io_now_ms() + l->timeout_ms) < 0) {
        lmtp_fail_all(l, LMTP_FAIL_IO, lmtp_errstr(errno));
        return -1;
    }
    if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
        err = errno;
    if (err != 0) {
        lmtp_fail_all(l, LMTP_FAIL_IO, strerror(err));
        return -1;
    }
    return 0;
}

/* Write all of p[0..n).  -1 with every unit still open set. */
static int
lmtp_write(struct lmtp *l, const char *p, size_t n)
{
    long long deadline = io_now_ms() + l->timeout_ms;
    ssize_t w;

    while (n > 0) {
        w = send(l->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (io_wait(l->fd, POLLOUT, deadline) == 0)
                continue;
        }
        /* EPIPE/ECONNRESET: the server went away; its last words may still be readable. */
        lmtp_fail_all(l, LMTP_FAIL_IO, errno == EPIPE ? "connection closed" : lmtp_errstr(errno));
        return -1;
    }
    return 0;
}

/*
 * Read one complete reply into l->rp.  -1 with every unit still open set
 * (UNREACHABLE on EOF, error or timeout; PROTOCOL on a malformed reply).
 */
static int
lmtp_read_reply(struct lmtp *l)
{
    long long deadline = io_now_ms() + l->timeout_ms;
    enum replyparse_status st;
    size_t used;
    ssize_t r;
    char why[REPLYPARSE_TEXT_MAX];

    for (;;) {
        if (l->inoff < l->inlen) {
            st = replyparse_feed(&l->rp, l->in + l->inoff, l->inlen - l->inoff, &used);
            l->inoff += used;
            if (st == REPLYPARSE_DONE)
                return 0;
            if (st == REPLYPARSE_ERROR) {
                snprintf(why, sizeof(why), "malformed reply: %s", l->rp.error);
                lmtp_fail_all(l, LMTP_FAIL_PROTOCOL, why);
                return -1;
            }
        }
        l->inoff = l->inlen = 0;
        r = recv(l->fd, l->in, sizeof(l->in), 0);
        if (r > 0) {
            l->inlen = (size_t)r;
            continue;
        }
        if (r == 0) {
            lmtp_fail_all(l, LMTP_FAIL_IO, "connection closed");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && io_wait(l->fd, POLLIN, deadline) == 0)
            continue;
        lmtp_fail_all(l, LMTP_FAIL_IO, lmtp_errstr(errno));
        return -1;
    }
}

/* An address we put in a command: no control characters, so no command can be smuggled. */
static bool
lmtp_addr_ok(const char *a)
{
    for (; *a; a++)
        if ((unsigned char)*a < 0x20 || *a == 0x7f || *a == '<' || *a == '>')
            return false;
    return true;
}

/* Does the LHLO reply (its lines joined with "; ") advertise this keyword? */
static bool
lmtp_has_ext(const char *text, const char *kw)
{
    size_t k = strlen(kw);
    const char *p = text;

    while (*p) {
        if (strncasecmp(p, kw, k) == 0 && (p[k] == '\0' || p[k] == ' ' || p[k] == ';'))
            return true;
        p = strstr(p, "; ");
        if (p == NULL)
            break;
        p += 2;
    }
    return false;
}

/* Greeting and LHLO; *pipelining from LHLO's reply.  0, or -1 with every unit set. */
static int
lmtp_hello(struct lmtp *l, bool *pipelining)
{
    char line[600], why[REPLYPARSE_TEXT_MAX + 64];
    const char *name = l->c->hostname != NULL && *l->c->hostname ? l->c->hostname : "localhost";
    int n;

    if (lmtp_read_reply(l) < 0)
        return -1;
    if (l->rp.code != 220) {
        if (l->rp.code / 100 == 4) {
            lmtp_reply_all(l);
        } else {
            lmtp_reply_str(l, "greeting", why, sizeof(why));
            lmtp_fail_all(l, LMTP_FAIL_PROTOCOL, why);
        }
        return -1;
    }
    n = snprintf(line, sizeof(line), "LHLO %s\r\n", name);
    if (n < 0 || (size_t)n >= sizeof(line) || !lmtp_addr_ok(name)) {
        lmtp_fail_all(l, LMTP_FAIL_LOCAL, NULL);
        return -1;
    }
    if (lmtp_write(l, line, (size_t)n) < 0 || lmtp_read_reply(l) < 0)
        return -1;
    if (l->rp.code / 100 != 2) {
        if (l->rp.code / 100 == 4) {
            lmtp_reply_all(l);
        } else {
            lmtp_reply_str(l, "LHLO", why, sizeof(why));
            lmtp_fail_all(l, LMTP_FAIL_PROTOCOL, why);
        }
        return -1;
    }
    *pipelining = lmtp_has_ext(l->rp.text, "PIPELINING");
    return 0;
}

/*
 * Commands are numbered 0 (MAIL), 1..nsend (RCPT for units[send[i - 1]]),
 * nsend + 1 (DATA).  Append command i to b.
 */
static int
lmtp_command(struct lmtp *l, unsigned i, struct buf *b)
{
    if (i == 0)
        return buf_printf(b, "MAIL FROM:<%s>\r\n", l->m->sender);
    if (i <= l->nsend)
        return buf_printf(b, "RCPT TO:<%s>\r\n", l->units[l->send[i - 1]].addr);
    return buf_puts(b, "DATA\r\n");
}

/*
 * The reply to command i is in l->rp: record what it means.  *mail_failed
 * when MAIL was refused (every unit then has that reply), *data_ok on 354.
 */
static void
lmtp_handle(struct lmtp *l, unsigned i, bool *mail_failed, bool *data_ok)
{
    unsigned cls = l->rp.code / 100, k;
    char why[REPLYPARSE_TEXT_MAX + 64];

    if (i == 0) {
        if (cls == 2)
            return;
        *mail_failed = true;
        for (k = 0; k < l->nunits; k++) {
            if (l->units[k].done)
                continue;
            if (cls == 4 || cls == 5) {
                lmtp_unit_reply(&l->units[k], &l->rp);
            } else {
                lmtp_reply_str(l, "MAIL FROM", why, sizeof(why));
                lmtp_unit_set(&l->units[k], R_DLV_LMTP_PROTOCOL, l->target, why);
            }
        }
        return;
    }
    if (i <= l->nsend) {
        struct lmtp_unit *u = &l->units[l->send[i - 1]];

        if (*mail_failed || u->done)
            return; /* already has MAIL's reply */
        if (cls == 2) {
            u->accepted = true;
            l->naccepted++;
        } else if (cls == 4 || cls == 5) {
            lmtp_unit_reply(u, &l->rp);
        } else {
            lmtp_reply_str(l, "RCPT TO", why, sizeof(why));
            lmtp_unit_set(u, R_DLV_LMTP_PROTOCOL, l->target, why);
        }
        return;
    }
    if (l->rp.code == 354) {
        *data_ok = true;
        return;
    }
    for (k = 0; k < l->nunits; k++) {
        if (!l->units[k].accepted || l->units[k].done)
            continue;
        if (cls == 4 || cls == 5) {
            lmtp_unit_reply(&l->units[k], &l->rp);
        } else {
            lmtp_reply_str(l, "DATA", why, sizeof(why));
            lmtp_unit_set(&l->units[k], R_DLV_LMTP_PROTOCOL, l->target, why);
        }
    }
}

/*
 * MAIL, RCPTs and DATA, in windows of LMTP_WINDOW commands with PIPELINING,
 * else one at a time.  Returns 1 when DATA got 354 with a mailbox accepted, 0
 * when the transaction ended without it, -1 when the connection failed.
 */
static int
lmtp_envelope(struct lmtp *l, bool pipelining)
{
    unsigned ncmd = l->nsend + 2, sent = 0, answered = 0, win = pipelining ? LMTP_WINDOW : 1;
    bool mail_failed = false, data_ok = false;
    struct buf b;
    int rc = 0;

    buf_init(&b, 0);
    while (answered < ncmd) {
        if (sent == answered) {
            if (mail_failed || (sent == ncmd - 1 && l->naccepted == 0))
                break; /* nothing left worth sending */
            buf_reset(&b);
            while (sent < ncmd && sent - answered < win) {
                if (lmtp_command(l, sent, &b) < 0) {
                    lmtp_fail_all(l, LMTP_FAIL_LOCAL, NULL);
                    rc = -1;
                    goto out;
                }
                sent++;
            }
            if (lmtp_write(l, b.data, b.len) < 0) {
                rc = -1;
                goto out;
            }
        }
        if (lmtp_read_reply(l) < 0) {
            rc = -1;
            goto out;
        }
        lmtp_handle(l, answered, &mail_failed, &data_ok);
        answered++;
    }
    /* A 354 after MAIL failed or with no mailbox accepted (a server ignoring RFC 2920 §3.1):
       nothing may be sent; the caller closes without the dot. */
    if (data_ok && !mail_failed && l->naccepted > 0)
        rc = 1;
    else if (data_ok)
        rc = -1;
out:
    buf_free(&b);
    return rc;
}

/* Dot-stuffing and line ends: state carried from one chunk to the next. */
struct lmtp_stuff {
    bool bol; /* at the start of a line */
    bool cr;  /* the last octet was a CR, its LF not yet seen */
};

/* Stuff in[0..n) into out (room for 3n); returns the length. */
static size_t
lmtp_stuff(struct lmtp_stuff *s, const char *in, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        char c = in[i];

        if (s->cr) {
            /* CRLF, or a bare CR made into one */
            s->cr = false;
            out[o++] = '\n';
            s->bol = true;
            if (c == '\n')
                continue;
        }
        if (c == '\r') {
            out[o++] = '\r';
            s->cr = true;
            s->bol = false;
            continue;
        }
        if (c == '\n') {
            /* a bare LF: sent as CRLF */
            out[o++] = '\r';
            out[o++] = '\n';
            s->bol = true;
            continue;
        }
        if (s->bol && c == '.')
            out[o++] = '.';
        out[o++] = c;
        s->bol = false;
    }
    return o;
}

/* The body and the final dot.  -1 with every unit still open set. */
static int
lmtp_body(struct lmtp *l)
{
    struct lmtp_stuff s = {.bol = true, .cr = false};
    uint64_t off = l->m->body_off, left = l->m->body_len;
    size_t want, o;
    ssize_t r;

    while (left > 0) {
        want = left < LMTP_CHUNK ? (size_t)left : LMTP_CHUNK;
        r = pread(l->m->body_fd, l->chunk, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* The spool failed us: close without the dot, so the server drops the message. */
            lmtp_fail_all(l, LMTP_FAIL_LOCAL, NULL);
            return -1;
        }
        o = lmtp_stuff(&s, l->chunk, (size_t)r, l->out);
        if (lmtp_write(l, l->out, o) < 0)
            return -1;
        off += (uint64_t)r;
        left -= (uint64_t)r;
    }
    o = 0;
    if (s.cr)
        l->out[o++] = '\n';
    else if (!s.bol) {
        memcpy(l->out, "\r\n", 2);
        o = 2;
    }
    memcpy(l->out + o, ".\r\n", 3);
    return lmtp_write(l, l->out, o + 3);
}

/*
 * After the dot: one reply per accepted mailbox, in RCPT order (RFC 2033
 * §4.2).  -1 when the connection failed first (the rest then have their
 * outcome).
 */
static int
lmtp_final_replies(struct lmtp *l)
{
    char why[REPLYPARSE_TEXT_MAX + 64];
    unsigned i;

    for (i = 0; i < l->nunits; i++) {
        struct lmtp_unit *u = &l->units[i];

        if (!u->accepted || u->done)
            continue;
        if (lmtp_read_reply(l) < 0)
            return -1;
        if (l->rp.code / 100 == 3) {
            lmtp_reply_str(l, "end of data", why, sizeof(why));
            lmtp_unit_set(u, R_DLV_LMTP_PROTOCOL, l->target, why);
        } else {
            lmtp_unit_reply(u, &l->rp);
        }
    }
    return 0;
}

static int
lmtp_rank(enum delivery_status s)
{
    return s == DLV_TEMP ? 2 : s == DLV_PERM ? 1 : 0;
}

/* Each recipient's outcome: its only unit's, or the worst of its targets'. */
static void
lmtp_report(struct lmtp *l)
{
    unsigned i, j = 0;

    for (i = 0; i < l->m->nrcpts; i++) {
        struct delivery_rcpt *r = &l->m->rcpts[i];
        const struct lmtp_unit *worst = NULL;

        for (; j < l->nunits && l->units[j].rcpt == r; j++)
            if (worst == NULL || lmtp_rank(l->units[j].status) > lmtp_rank(worst->status))
                worst = &l->units[j];
        if (worst == NULL)
            continue; /* cannot happen: every recipient has a unit */
        r->status = worst->status;
        memcpy(r->reply, worst->reply, sizeof(r->reply));
    }
}

void
lmtp_deliver(const struct lmtp_conf *c, struct delivery_msg *m)
{
    struct lmtp *l;
    bool pipelining = false;
    unsigned i, t, n = 0;
    int rc;

    for (i = 0; i < m->nrcpts; i++)
        n += m->rcpts[i].ntargets > 0 && m->rcpts[i].targets != NULL ? m->rcpts[i].ntargets : 1;
    l = calloc(1, sizeof(*l));
    if (l != NULL) {
        l->units = calloc(n ? n : 1, sizeof(*l->units));
        l->send = calloc(n ? n : 1, sizeof(*l->send));
    }
    if (l == NULL || l->units == NULL || l->send == NULL) {
        for (i = 0; i < m->nrcpts; i++)
            delivery_set(&m->rcpts[i], R_LOCAL_ERROR);
        if (l != NULL) {
            free(l->units);
            free(l->send);
        }
        free(l);
        return;
    }
    l->c = c;
    l->m = m;
    l->target = c->target != NULL ? c->target : "(none)";
    l->fd = -1;
    /* A day is more than any step needs, and keeps the milliseconds within an int. */
    if (c->timeout <= 0)
        l->timeout_ms = LMTP_DEFAULT_TIMEOUT * 1000;
    else
        l->timeout_ms = (c->timeout > 86400 ? 86400 : c->timeout) * 1000;
    replyparse_init(&l->rp);
    for (i = 0; i < m->nrcpts; i++) {
        struct delivery_rcpt *r = &m->rcpts[i];

        if (r->ntargets > 0 && r->targets != NULL) {
            for (t = 0; t < r->ntargets; t++) {
                l->units[l->nunits].rcpt = r;
                l->units[l->nunits++].addr = r->targets[t];
            }
        } else {
            l->units[l->nunits].rcpt = r;
            l->units[l->nunits++].addr = r->addr;
        }
    }
    for (i = 0; i < l->nunits; i++)
        if (l->units[i].addr == NULL || !lmtp_addr_ok(l->units[i].addr))
            lmtp_unit_set(&l->units[i], R_DLV_LMTP_PROTOCOL, l->target,
                "address with a control character or angle bracket not sent");
    if (m->sender == NULL || !lmtp_addr_ok(m->sender))
        lmtp_fail_all(l, LMTP_FAIL_PROTOCOL, "sender with a control character not sent");

    for (i = 0; i < l->nunits; i++)
        if (!l->units[i].done)
            l->send[l->nsend++] = i;
    if (l->nsend == 0)
        goto out; /* nothing to send */
    if (lmtp_connect(l) < 0 || lmtp_hello(l, &pipelining) < 0)
        goto out;
    rc = lmtp_envelope(l, pipelining);
    if (rc < 0)
        goto out;
    if (rc == 1) {
        if (lmtp_body(l) < 0 || lmtp_final_replies(l) < 0)
            goto out;
    }
    /* Every outcome is known: QUIT is a courtesy; its reply changes nothing. */
    if (lmtp_write(l, "QUIT\r\n", 6) == 0)
        (void)lmtp_read_reply(l);

out:
    lmtp_fail_all(l, LMTP_FAIL_IO, "connection closed"); /* (none should be left) */
    lmtp_report(l);
    if (l->fd >= 0)
        close(l->fd);
    free(l->units);
    free(l->send);
    free(l);
}
