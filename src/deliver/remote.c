/*
 * remote.c - delivery to other mail servers over SMTP; see remote.h.
 *
 * The dialogue is smtp/client's pure state machine; this file is its
 * blocking driver on a worker thread, built like lmtp.c: a non-blocking
 * socket, every connect, read and write waiting in poll() up to the
 * timeout of the step (RFC 5321 §4.5.3.2), the body read from the spool
 * with pread as the client asks for it.  Promises:
 *   - every recipient of the message gets an outcome;
 *   - a recipient decided by one server is never offered to the next one;
 *     only those the connection left open (421, refused greeting or EHLO,
 *     malformed reply, lost connection, timeout) are, so a message is sent
 *     twice only when a server broke off after taking it without saying so;
 *   - when every host failed, a recipient keeps the last reply a server
 *     gave it, else the last connection failure, always as TEMP: a 5xx
 *     greeting says nothing final about the recipient (like Postfix's
 *     smtp_skip_5xx_greeting), and the queue lifetime bounds the retries;
 *   - only CRLF is sent (smtp/client's promise).
 *
 * Connection reuse (remote_conn): a connection left idle after a message
 * carries the next one (MAIL FROM right after the previous transaction
 * ended, as RFC 5321 §3.3 allows; RSET only when smtp/client needs it after
 * a refused transaction).  A reused connection that turns out to be dead
 * (it said something or closed while idle; or a 421, a lost connection or a
 * malformed reply before the message was taken) costs the message nothing:
 * its recipients still open are tried once more on a fresh connection to
 * the same host before the next host.  Recipients a server accepted are
 * never offered again.  A host that could not be connected to is not tried
 * again for the later messages of the same remote_conn (they get the same
 * outcome at once, not after another connect timeout).  The caller bounds
 * how many messages one connection carries and how long it stays idle.
 *
 * BODY=8BITMIME and the RFC 3461 parameters (NOTIFY/ORCPT/RET/ENVID) come
 * from the queue through delivery_msg and are passed on when the next hop
 * offers them.  SMTPUTF8 is needed when an envelope address has a non-ASCII
 * octet.
 */
#include "deliver/remote.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "smtp/client.h"
#include "util/io.h"
#include "util/log.h"

#define REMOTE_IN_MAX 4096
/* A safety bound; the scheduler hands a connection fewer (max_messages_per_connection). */
#define REMOTE_CONN_MESSAGES_MAX 10000

struct remote_conn {
    const struct remote_conf *c;
    const struct remote_host *hosts;
    size_t nhosts;
    /* the open connection, if any */
    int fd;
    struct smtp_client *cl; /* idle between messages; NULL when no connection is open */
    size_t h;               /* its host: hosts[h] */
    bool heard;             /* the server of this session sent something */
    unsigned connections;   /* opened so far */
    char (*refused)[200];   /* per host: why connecting failed during this remote_conn ("": not
                               tried, or it worked); later messages do not wait for it again */
    unsigned messages;      /* transactions on the open connection */
    const struct remote_host *hp;
    char desc[340]; /* "name[ip]:port", for our messages */
    char mta[300];  /* name, or ip: for remote_mta */
    struct remote_tls *tls; /* after STARTTLS: every octet of the connection goes through it */
    /* the message being delivered (msg: the client's view of it) */
    struct smtp_client_msg msg;
    struct delivery_msg *m;
    uint64_t body_pos;
    bool *open;      /* per recipient: not decided yet */
    bool *had_reply; /* per recipient: its reply is a server's, not a connection failure */
    char in[REMOTE_IN_MAX];
};

static int
remote_secs(int v, int dflt)
{
    if (v <= 0)
        v = dflt;
    return v > 86400 ? 86400 : v; /* a day is more than any step needs; keeps ms in an int */
}

static int
remote_timeout_ms(const struct remote_conf *c, enum smtp_client_wait w)
{
    switch (w) {
    case SMTP_CLIENT_W_GREETING:
        return remote_secs(c->timeout_greeting, 300) * 1000;
    case SMTP_CLIENT_W_HELLO:
    case SMTP_CLIENT_W_STARTTLS:
        return remote_secs(c->timeout_helo, 300) * 1000;
    case SMTP_CLIENT_W_MAIL:
        return remote_secs(c->timeout_mail, 300) * 1000;
    case SMTP_CLIENT_W_RCPT:
        return remote_secs(c->timeout_rcpt, 300) * 1000;
    case SMTP_CLIENT_W_DATA:
        return remote_secs(c->timeout_data, 120) * 1000;
    case SMTP_CLIENT_W_BLOCK:
        return remote_secs(c->timeout_block, 180) * 1000;
    case SMTP_CLIENT_W_DOT:
        return remote_secs(c->timeout_dot, 600) * 1000;
    case SMTP_CLIENT_W_QUIT:
        return remote_secs(c->timeout_quit, 10) * 1000;
    default:
        return 300 * 1000;
    }
}

static void
remote_describe(struct remote_conn *r)
{
    const struct sockaddr_storage *ss = &r->hp->addr;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(r->desc, sizeof(r->desc), "%.255s[%s]:%u", r->hp->name, ip, port);
    snprintf(r->mta, sizeof(r->mta), "%s", r->hp->name[0] ? r->hp->name : ip);
}

static unsigned
remote_port(const struct remote_conn *r)
{
    const struct sockaddr_storage *ss = &r->hp->addr;

    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* ---- the I/O layer: plaintext, or TLS after STARTTLS ---- */

static ssize_t
remote_io_send(struct remote_conn *r, const char *p, size_t n, long long deadline)
{
    if (r->tls != NULL)
        return remote_tls_write(r->tls, p, n, deadline);
    return send(r->fd, p, n, MSG_NOSIGNAL);
}

/* deadline 0: do not wait (what has arrived already, if anything) */
static ssize_t
remote_io_recv(struct remote_conn *r, char *p, size_t n, long long deadline)
{
    if (r->tls != NULL)
        return remote_tls_read(r->tls, p, n, deadline == 0 ? io_now_ms() : deadline);
    return recv(r->fd, p, n, deadline == 0 ? MSG_DONTWAIT : 0);
}

/* The DANE state of the current host under tls_policy = dane (OFF otherwise). */
static enum dane_state
remote_dane_state(const struct remote_conn *r)
{
    if (r->c->tls_policy != REMOTE_TLS_DANE)
        return DANE_OFF;
    return r->hp->dane != NULL ? r->hp->dane->state : DANE_INSECURE;
}

/* The policy for the current host: tls_policy, except that dane becomes what the host's
 * DNSSEC-validated TLSA records say (RFC 7672 §2.2). */
static enum remote_tls_policy
remote_host_policy(const struct remote_conn *r)
{
    switch (remote_dane_state(r)) {
    case DANE_OFF:
        return r->c->tls_policy;
    case DANE_USABLE:
        return REMOTE_TLS_DANE;
    case DANE_UNUSABLE:
        return REMOTE_TLS_ENCRYPT; /* mandatory TLS, not authenticated */
    default:
        return REMOTE_TLS_MAY; /* insecure, no TLSA (FAILED hosts are never connected to) */
    }
}

/* For R_DLV_TLS_REQUIRED: why TLS was required. */
static const char *
remote_policy_words(const struct remote_conn *r)
{
    switch (remote_dane_state(r)) {
    case DANE_USABLE:
        return "dane, and the host has DNSSEC-validated TLSA records";
    case DANE_UNUSABLE:
        return "dane, and the host has DNSSEC-validated TLSA records, none usable";
    default:
        return remote_tls_policy_name(r->c->tls_policy);
    }
}

/* " dane=verified" and the like for the log lines of a host, "" without dane. */
static const char *
remote_dane_log(const struct remote_conn *r, bool verified)
{
    switch (remote_dane_state(r)) {
    case DANE_OFF:
        return "";
    case DANE_USABLE:
        return verified ? " dane=verified" : " dane=failed";
    case DANE_UNUSABLE:
        return " dane=unusable";
    case DANE_NO_TLSA:
        return " dane=no-tlsa";
    case DANE_FAILED:
        return " dane=failed";
    default:
        return " dane=insecure";
    }
}

/* The server said 220 to STARTTLS: the handshake, and the client told how it went. */
static void
remote_starttls(struct remote_conn *r, struct smtp_client *cl)
{
    long long deadline = io_now_ms() + remote_secs(r->c->timeout_helo, 300) * 1000LL;
    enum remote_tls_policy p = remote_host_policy(r);
    char why[300], desc[128], match[96] = "";

    r->tls = remote_tls_start(r->fd, p, r->c->tls_ca_file,
        p == REMOTE_TLS_DANE ? r->hp->dane : NULL, r->hp->name, deadline, why, sizeof(why));
    if (r->tls == NULL) {
        if (p == REMOTE_TLS_DANE)
            log_warn(NULL, "event=tls-failed host=%s policy=dane dane=failed reason=\"%s\"",
                r->desc, why);
        if (p == REMOTE_TLS_MAY) {
            /* plaintext for this host at the next attempt, rather than never delivering */
            remote_tls_fallback_note(r->desc, time(NULL));
            log_warn(NULL, "event=tls-failed host=%s policy=may reason=\"%s\" next=\"plaintext "
                           "for %d s\"",
                r->desc, why, REMOTE_TLS_FALLBACK_SECS);
        }
        smtp_client_tls_done(cl, false, why);
        return;
    }
    if (p == REMOTE_TLS_DANE) {
        char m[80];

        /* authenticated by DNSSEC: worth a line at the default level, as Postfix's
         * "Verified TLS connection established" */
        snprintf(
            match, sizeof(match), " match=\"%s\"", remote_tls_dane_describe(r->tls, m, sizeof(m)));
        log_info(NULL, "event=tls host=%s tls=\"%s\" policy=dane%s%s", r->desc,
            remote_tls_describe(r->tls, desc, sizeof(desc)), remote_dane_log(r, true), match);
    } else {
        log_debug(NULL, "event=tls host=%s tls=\"%s\" policy=%s%s", r->desc,
            remote_tls_describe(r->tls, desc, sizeof(desc)),
            remote_tls_policy_name(r->c->tls_policy), remote_dane_log(r, true));
    }
    smtp_client_tls_done(cl, true, NULL);
}

/* The client's TLS mode for this host: may falls back to plaintext after a failure. */
static enum smtp_client_tls
remote_tls_mode(const struct remote_conn *r)
{
    switch (remote_host_policy(r)) {
    case REMOTE_TLS_NONE:
        return SMTP_CLIENT_TLS_NONE;
    case REMOTE_TLS_MAY:
        if (remote_tls_fallback_active(r->desc, time(NULL))) {
            log_info(NULL, "event=tls-skipped host=%s policy=may reason=\"a TLS handshake with "
                           "it failed within %d s: plaintext\"",
                r->desc, REMOTE_TLS_FALLBACK_SECS);
            return SMTP_CLIENT_TLS_NONE;
        }
        return SMTP_CLIENT_TLS_MAY;
    case REMOTE_TLS_ENCRYPT:
    case REMOTE_TLS_VERIFY:
    case REMOTE_TLS_DANE:
        return SMTP_CLIENT_TLS_REQUIRE;
    }
    return SMTP_CLIENT_TLS_NONE;
}

/* Connect with the connect timeout.  0, or -1 with why. */
static int
remote_connect(struct remote_conn *r, const char **why)
{
    int err = 0;
    socklen_t errlen = sizeof(err);

    r->fd = io_socket_stream(r->hp->addr.ss_family);
    if (r->fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    if (connect(r->fd, (const struct sockaddr *)&r->hp->addr, r->hp->addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        *why = strerror(errno);
        return -1;
    }
    if (io_wait(r->fd, POLLOUT,
            io_now_ms() + remote_secs(r->c->timeout_connect, 30) * 1000LL) < 0) {
        *why = errno == ETIMEDOUT ? "timeout" : strerror(errno);
        return -1;
    }
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
        err = errno;
    if (err != 0) {
        *why = strerror(err);
        return -1;
    }
    return 0;
}

/* The body, as smtp/client asks for it: the next octets from the spool. */
static ssize_t
remote_body(void *arg, char *buf, size_t n)
{
    struct remote_conn *r = arg;
    uint64_t left = r->m->body_len - r->body_pos;
    ssize_t got;

    if (left == 0)
        return 0;
    if (n > left)
        n = (size_t)left;
    do
        got = pread(r->m->body_fd, buf, n, (off_t)(r->m->body_off + r->body_pos));
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return -1; /* an error, or a spool shorter than the envelope says */
    r->body_pos += (uint64_t)got;
    return got;
}

/* Whatever the server said before it went away (a 421 as it closes, say): feed it. */
static void
remote_last_words(struct remote_conn *r, struct smtp_client *cl)
{
    ssize_t got = remote_io_recv(r, r->in, sizeof(r->in), 0);

    if (got > 0) {
        r->heard = true;
        smtp_client_input(cl, r->in, (size_t)got);
    }
}

static void
remote_fail(struct smtp_client *cl, enum smtp_client_wait w, const char *what)
{
    char why[200];

    snprintf(why, sizeof(why), "%s %s", what, smtp_client_wait_name(w));
    smtp_client_fail(cl, why);
}

/* Write the client's output.  -1 when the connection failed (the client knows). */
static int
remote_send(struct remote_conn *r, struct smtp_client *cl)
{
    enum smtp_client_wait w = smtp_client_waiting(cl);
    long long deadline = io_now_ms() + remote_timeout_ms(r->c, w);
    const char *p;
    size_t n;
    ssize_t sent;

    p = smtp_client_output(cl, &n);
    while (n > 0) {
        sent = remote_io_send(r, p, n, deadline);
        if (sent > 0) {
            smtp_client_sent(cl, (size_t)sent);
            p = smtp_client_output(cl, &n);
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            io_wait(r->fd, POLLOUT, deadline) == 0)
            continue;
        if (errno == ETIMEDOUT) {
            remote_fail(cl, w, "timeout writing, waiting for");
        } else {
            remote_last_words(r, cl);
            remote_fail(cl, w, "connection lost while sending, waiting for");
        }
        return -1;
    }
    return 0;
}

/* Read what the server sent and feed it.  -1 when the connection failed (the client knows). */
static int
remote_read(struct remote_conn *r, struct smtp_client *cl)
{
    enum smtp_client_wait w = smtp_client_waiting(cl);
    long long deadline = io_now_ms() + remote_timeout_ms(r->c, w);
    ssize_t got;

    for (;;) {
        got = remote_io_recv(r, r->in, sizeof(r->in), deadline);
        if (got > 0) {
            r->heard = true;
            smtp_client_input(cl, r->in, (size_t)got);
            return 0;
        }
        if (got == 0) {
            remote_fail(cl, w, "connection closed by the server while waiting for");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && io_wait(r->fd, POLLIN, deadline) == 0)
            continue;
        remote_fail(cl, w, errno == ETIMEDOUT ? "timeout waiting for" : "read error waiting for");
        return -1;
    }
}

/* The outcome of recipient k (m->rcpts[map[k]]) from this host. */
static void
remote_record(struct remote_conn *r, const struct smtp_client *cl, size_t k, size_t i, bool heard,
    const char *limit)
{
    const struct smtp_client_outcome *o = smtp_client_outcome(cl, k);
    struct delivery_rcpt *d = &r->m->rcpts[i];

    switch (o->result) {
    case SMTP_CLIENT_DELIVERED:
    case SMTP_CLIENT_REFUSED:
        delivery_set_received(d, o->code, o->text);
        break;
    case SMTP_CLIENT_NEED_SMTPUTF8:
        delivery_set(d, R_DLV_NEED_SMTPUTF8, r->desc);
        break;
    case SMTP_CLIENT_TOO_BIG:
        delivery_set(d, R_SIZE_MAIL, limit);
        break;
    case SMTP_CLIENT_LOCAL:
        delivery_set(d, R_LOCAL_ERROR);
        d->remote_mta[0] = '\0';
        r->open[i] = false;
        return;
    case SMTP_CLIENT_TLS_MISSING:
    case SMTP_CLIENT_TLS_FAILED:
        /* not this host; another one (or a later attempt) may do TLS */
        if (o->result == SMTP_CLIENT_TLS_MISSING)
            delivery_set(d, R_DLV_TLS_REQUIRED, remote_policy_words(r), r->desc, o->text);
        else
            delivery_set(d, R_DLV_TLS_FAILED, r->desc, o->text);
        d->status = DLV_TEMP;
        r->had_reply[i] = true;
        snprintf(d->remote_mta, sizeof(d->remote_mta), "%s", r->mta);
        return; /* still open */
    case SMTP_CLIENT_PENDING: /* cannot happen: the client decides every recipient */
    case SMTP_CLIENT_AUTH_FAILED: /* cannot happen: the relay does not AUTH */
    case SMTP_CLIENT_NEXT_HOST:
        if (o->code != 0) {
            delivery_set_received(d, o->code, o->text);
            d->status = DLV_TEMP; /* another host, or a later attempt, may take it */
            r->had_reply[i] = true;
        } else if (!heard) {
            if (r->had_reply[i])
                return; /* an earlier server's reply says more than "no answer here" */
            delivery_set(d, R_DLV_CONNECT_FAILED, r->desc, o->text[0] ? o->text : "no greeting");
            d->remote_mta[0] = '\0';
            return;
        } else {
            delivery_set(d, R_DLV_REMOTE_PROTOCOL, r->desc, o->text[0] ? o->text : "?");
            d->status = DLV_TEMP;
            r->had_reply[i] = true;
        }
        snprintf(d->remote_mta, sizeof(d->remote_mta), "%s", r->mta);
        return; /* still open */
    }
    snprintf(d->remote_mta, sizeof(d->remote_mta), "%s", r->mta);
    r->open[i] = false;
}

/* Close the connection: QUIT (its reply waited for timeout_quit at most) when it is idle. */
static void
remote_close(struct remote_conn *r)
{
    if (r->cl != NULL) {
        enum smtp_client_action a;

        smtp_client_quit(r->cl); /* nothing when the session is not idle */
        while ((a = smtp_client_next(r->cl)) != SMTP_CLIENT_CLOSE) {
            if (a == SMTP_CLIENT_SEND)
                (void)remote_send(r, r->cl);
            else if (a == SMTP_CLIENT_READ)
                (void)remote_read(r, r->cl);
            else
                smtp_client_fail(r->cl, "idle after QUIT"); /* cannot happen */
        }
        smtp_client_free(r->cl);
        r->cl = NULL;
    }
    remote_tls_close(r->tls); /* close_notify, after QUIT */
    r->tls = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->messages = 0;
}

/*
 * Can the idle connection take another message?  Not when the server spoke
 * or closed while it was idle (a 421 on its way out, an idle timeout): a
 * command sent now would only meet the close.
 */
static bool
remote_reusable(struct remote_conn *r, size_t h)
{
    struct pollfd p = {.fd = r->fd, .events = POLLIN};

    if (r->cl == NULL || r->h != h)
        return false;
    if (r->messages >= REMOTE_CONN_MESSAGES_MAX)
        return false;
    return poll(&p, 1, 0) == 0;
}

/*
 * One host: reuse the idle connection to it or connect, run the dialogue
 * for msg, record the outcomes.  The connection stays open when the
 * transaction ended with the session idle.  True when a reused connection
 * failed with recipients still open (they deserve a fresh connection).
 */
static bool
remote_session(
    struct remote_conn *r, size_t h, const struct smtp_client_msg *msg, const size_t *map)
{
    const char *why = NULL;
    bool local = false, reused = false, retry = false;
    enum smtp_client_action a = SMTP_CLIENT_CLOSE;
    char limit[32];
    size_t k;

    r->body_pos = 0;
    if (remote_reusable(r, h) && smtp_client_next_message(r->cl, msg) == 0) {
        reused = true;
    } else {
        remote_close(r);
        r->h = h;
        r->hp = &r->hosts[h];
        remote_describe(r);
        r->heard = false;
        if (remote_dane_state(r) == DANE_FAILED) {
            /* RFC 7672 §2.2.1: a secure MX host whose TLSA records cannot be had may have
             * them and an attacker hiding them: not this host, never in plaintext. */
            char what[300];

            snprintf(what, sizeof(what), "_%u._tcp.%s TLSA", remote_port(r), r->hp->name);
            log_warn(NULL, "event=dane-failed host=%s reason=\"%s\" effect=\"host not used\"",
                r->desc, r->hp->dane->why);
            for (k = 0; k < msg->nrcpts; k++) {
                struct delivery_rcpt *d = &r->m->rcpts[map[k]];

                delivery_set(d, R_DLV_DNS_TEMP, what, r->hp->dane->why);
                d->status = DLV_TEMP;
                d->remote_mta[0] = '\0';
                r->had_reply[map[k]] = true;
            }
            goto out;
        }
        if (r->refused != NULL && r->refused[h][0] != '\0')
            why = r->refused[h]; /* moments ago: a connect timeout is not worth waiting again */
        else
            r->connections++;
        if (why != NULL || remote_connect(r, &why) < 0) {
            if (r->refused != NULL && why != r->refused[h])
                snprintf(r->refused[h], sizeof(r->refused[h]), "%s", why);
            for (k = 0; k < msg->nrcpts; k++) {
                struct delivery_rcpt *d = &r->m->rcpts[map[k]];

                if (r->had_reply[map[k]])
                    continue;
                delivery_set(d, R_DLV_CONNECT_FAILED, r->desc, why);
                d->remote_mta[0] = '\0';
            }
            goto out;
        }
        r->cl = smtp_client_new(r->c->hostname, msg);
        if (r->cl == NULL) {
            local = true;
            goto out;
        }
        smtp_client_set_tls(r->cl, remote_tls_mode(r));
    }
    r->messages++;
    for (;;) {
        a = smtp_client_next(r->cl);
        if (a == SMTP_CLIENT_CLOSE || a == SMTP_CLIENT_IDLE)
            break;
        if (a == SMTP_CLIENT_SEND)
            (void)remote_send(r, r->cl);
        else if (a == SMTP_CLIENT_STARTTLS)
            remote_starttls(r, r->cl);
        else
            (void)remote_read(r, r->cl);
    }
    snprintf(limit, sizeof(limit), "%llu", (unsigned long long)smtp_client_size_limit(r->cl));
    for (k = 0; k < msg->nrcpts; k++) {
        remote_record(r, r->cl, k, map[k], r->heard, limit);
        retry = retry || (reused && r->open[map[k]]);
    }
    if (a == SMTP_CLIENT_IDLE)
        return false; /* kept for the next message */
out:
    if (local) {
        /* our EHLO name or memory: no other host would fare better */
        for (k = 0; k < msg->nrcpts; k++) {
            delivery_set(&r->m->rcpts[map[k]], R_LOCAL_ERROR);
            r->open[map[k]] = false;
        }
    }
    remote_close(r);
    return retry;
}

static bool
remote_8bit(const char *s)
{
    for (; s != NULL && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

struct remote_conn *
remote_conn_new(const struct remote_conf *c, const struct remote_host *hosts, size_t nhosts)
{
    struct remote_conn *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->c = c;
    r->hosts = hosts;
    r->nhosts = nhosts;
    r->fd = -1;
    r->refused = calloc(nhosts ? nhosts : 1, sizeof(*r->refused)); /* NULL: no memory of it */
    return r;
}

unsigned
remote_conn_connections(const struct remote_conn *r)
{
    return r->connections;
}

void
remote_conn_free(struct remote_conn *r)
{
    if (r == NULL)
        return;
    remote_close(r);
    free(r->refused);
    free(r);
}

void
remote_conn_deliver(struct remote_conn *r, struct delivery_msg *m)
{
    struct smtp_client_rcpt *rc;
    struct smtp_client_msg *msg = &r->msg;
    size_t *map, i, h, n;
    bool utf8, retried = false;

    r->m = m;
    rc = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*rc));
    map = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*map));
    r->open = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*r->open));
    r->had_reply = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*r->had_reply));
    if (rc == NULL || map == NULL || r->open == NULL || r->had_reply == NULL) {
        for (i = 0; i < m->nrcpts; i++) {
            delivery_set(&m->rcpts[i], R_LOCAL_ERROR);
            m->rcpts[i].remote_mta[0] = '\0';
        }
        goto out;
    }
    utf8 = remote_8bit(m->sender);
    for (i = 0; i < m->nrcpts; i++) {
        r->open[i] = true;
        m->rcpts[i].remote_mta[0] = '\0';
        utf8 = utf8 || remote_8bit(m->rcpts[i].addr);
        delivery_set(&m->rcpts[i], R_DLV_CONNECT_FAILED, "(no host)", "no address to connect to");
    }
    /* Hosts before the one of the open connection failed moments ago: start there. */
    for (h = r->cl != NULL && r->h < r->nhosts ? r->h : 0; h < r->nhosts; h++) {
        for (i = n = 0; i < m->nrcpts; i++) {
            if (!r->open[i])
                continue;
            memset(&rc[n], 0, sizeof(rc[n]));
            rc[n].addr = m->rcpts[i].addr;
            rc[n].notify = m->rcpts[i].dsn_notify;
            rc[n].orcpt = m->rcpts[i].dsn_orcpt;
            map[n++] = i;
        }
        if (n == 0)
            break;
        memset(msg, 0, sizeof(*msg));
        msg->sender = m->sender != NULL ? m->sender : "";
        msg->rcpts = rc;
        msg->nrcpts = n;
        msg->size = m->body_len;
        msg->smtputf8 = utf8;
        msg->eightbit = m->eightbit;
        msg->chunking = true; /* BDAT when the server offers CHUNKING (RFC 3030): no stuffing */
        msg->ret = m->dsn_ret;
        msg->envid = m->dsn_envid;
        msg->body = remote_body;
        msg->arg = r;
        if (remote_session(r, h, msg, map) && !retried) {
            retried = true; /* the same host once more, on a fresh connection */
            h--;
        }
    }
    /* Every host failed them: retry later, with the last word we have. */
    for (i = 0; i < m->nrcpts; i++)
        if (r->open[i])
            m->rcpts[i].status = DLV_TEMP;
out:
    free(rc);
    free(map);
    free(r->open);
    free(r->had_reply);
    r->open = r->had_reply = NULL;
    r->m = NULL;
    /* the client may still look at the count, never at the recipients or the body */
    msg->rcpts = NULL;
    msg->body = NULL;
}

void
remote_deliver(const struct remote_conf *c, const struct remote_host *hosts, size_t nhosts,
    struct delivery_msg *m)
{
    struct remote_conn *r = remote_conn_new(c, hosts, nhosts);
    unsigned i;

    if (r == NULL) {
        for (i = 0; i < m->nrcpts; i++) {
            delivery_set(&m->rcpts[i], R_LOCAL_ERROR);
            m->rcpts[i].remote_mta[0] = '\0';
        }
        return;
    }
    remote_conn_deliver(r, m);
    remote_conn_free(r);
}
