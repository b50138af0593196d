/*
 * server.c - listeners, connections, limits, timeouts and shutdown on the
 * libevent loop (see server.h).
 *
 * A connection reads into one shared buffer and feeds the session directly;
 * only bytes the session could not take yet (it waits for a commit, or its
 * output is full) are copied aside, and reading stops until they are used.
 * So an idle connection holds no buffer at all, and a peer can never make
 * tern hold more than one read's worth of its input.
 *
 * Limits at accept: over max_connections -> 421 4.3.2; over
 * max_connections_per_ip -> 421 4.7.0; while shutting down -> 421 4.3.2.
 * These are written straight to the new socket and the socket is closed;
 * no session is created (on an implicit-TLS listener the socket is just
 * closed: a TLS client could not read a plaintext reply).  Over
 * rate_connections -> 421 4.7.0 instead of the greeting, once the store has
 * answered (policy/policy.h).  On an implicit-TLS listener the check starts
 * at accept, while the handshake runs, so a client that aborts its handshake
 * is counted all the same: over the limit before the ClientHello is read, the
 * socket is closed (no handshake work, no reply); later, the 421 comes under
 * TLS once the handshake is done.
 *
 * TLS (RFC 3207 STARTTLS, RFC 8314 implicit TLS) keeps the same design: the
 * raw non-blocking fd stays on the loop and OpenSSL reads and writes it
 * (SSL_set_fd); no bufferevent_openssl, whose buffers would stay allocated
 * for every idle connection (docs/design.md).  So SSL_read/SSL_write may
 * answer WANT_READ/WANT_WRITE: a read that needs the socket writable (a TLS
 * 1.3 key update) waits for the write event, a write that needs it readable
 * for the read event, and records OpenSSL has already decrypted
 * (SSL_has_pending) are fed without waiting for the fd, which may never
 * become readable again for them.  After STARTTLS every byte received
 * before the handshake is discarded (CVE-2011-0411).
 *
 * AUTH: the session decodes the exchange; the password is checked by
 * policy/auth's worker threads and the verdict comes back through its
 * eventfd (server_on_auth), like a commit's.  Failures are counted per
 * address (auth_limit); the one that reaches auth_max_failures ends the
 * session with 421 4.7.0.  An authenticated session may relay and may send
 * only as its own addresses.  SIGHUP rereads auth_users too.
 *
 * Policy checks at MAIL and RCPT may answer later (REPLY_PENDING): the
 * connection is suspended like for a commit, and conn_free() cancels a check
 * still in flight so its answer is dropped.
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "net/tls.h"
#include "policy/auth.h"
#include "policy/policy.h"
#include "policy/relay.h"
#include "smtp/session.h"
#include "util/log.h"

#define IPTAB_SIZE 4096 /* buckets of the per-IP connection count table */
#define READ_CHUNK 65536
#define LINGER_SECONDS 2 /* after the last reply: wait this long for the client's EOF */

struct ipcount {
    struct ipcount *next;
    unsigned char key[17]; /* family byte + 16 address bytes */
    unsigned count;
};

/*
 * A commit in flight.  The spool's callback always comes back here, so a
 * message whose client went away is still handed to the queue; conn is
 * cleared when the connection goes first.
 */
struct commit_ticket {
    struct server *srv;
    struct conn *conn;
    char id[SPOOL_ID_LEN + 1];
};

/*
 * An AUTH check in flight: like a commit ticket, conn is cleared if the connection goes.
 * It holds the address so the check leaves auth_limit's in-flight count either way.
 */
struct auth_ticket {
    struct server *srv;
    struct conn *conn;
    unsigned char ipkey[17];
};

/* One listener and the session configuration of its connections. */
struct listener {
    struct server *srv;
    struct smtp_session_conf sconf;
    bool implicit_tls; /* RFC 8314: handshake first, then the greeting */
    const char *text;
};

struct conn {
    struct server *srv;
    const struct listener *lst;
    struct conn *prev, *next;
    int fd;
    struct event *ev_read;
    struct event *ev_write;
    struct event *ev_timer;
    struct smtp_session *sess;
    struct smtp_peer peer;
    unsigned char ipkey[17];
    bool may_relay;
    struct policy_client pcl;  /* who the client is, for the policy checks */
    struct policy_req *preq;   /* a policy check in flight (cancelled if we go first) */
    struct smtp_txn *preq_txn; /* MAIL: the transaction to open once the check passes */
    const struct smtp_path *preq_rcpt; /* RCPT: the session's copy, valid until the verdict */
    bool greeting_wait; /* the greeting waits for the connection rate check */
    struct buf refusal; /* implicit TLS: the rate check's 421, said once the handshake is done */
    bool suspended;   /* waiting for a commit or a policy verdict */
    bool closing;     /* flush the output, then close */
    bool reading;     /* ev_read is armed */
    bool writing;     /* ev_write is armed */
    bool lingering;   /* last reply sent, write side shut: draining input until EOF */
    bool out_blocked; /* replies wait for the peer to read: the timer measures write progress */
    SSL *ssl;               /* once TLS has started */
    bool starttls;          /* 220 to STARTTLS queued: flush it, then the handshake */
    bool handshaking;       /* TLS handshake in progress: no SMTP until it is done */
    bool tls_read_wants_write;  /* SSL_read needs the socket writable */
    bool tls_write_wants_read;  /* SSL_write needs the socket readable */
    bool tls_broken;            /* a fatal TLS error: no SSL_shutdown (OpenSSL forbids it) */
    struct buf pending; /* input the session has not taken yet */
    struct spool_msg *msg;
    struct commit_ticket *ticket; /* while suspended */
    struct auth_ticket *auth_ticket; /* while an AUTH check runs */
    unsigned long long msgs; /* messages accepted on this connection */
    char *commit_from;       /* for the log line once the commit is done */
    unsigned commit_nrcpt;
    size_t commit_size;
};

struct server {
    const struct config *cfg;
    struct spool *spool;
    struct event_base *base;
    struct evconnlistener **listeners;
    struct listener *lst; /* parallel to listeners */
    size_t nlisteners;
    struct tls_server *tls; /* NULL without tls_cert */
    struct auth *auth;      /* NULL unless auth_users is set */
    struct auth_limit *auth_limit;
    struct event *ev_auth;
    struct event *ev_term, *ev_int, *ev_spool, *ev_shutdown, *ev_hup;
    const struct timeval *tv_command, *tv_data;
    struct smtp_session_conf sconf; /* the common part of every listener's */
    struct smtp_callbacks cb;
    struct server_hooks hooks;
    struct conn *conns;
    long nconns;
    struct ipcount *iptab[IPTAB_SIZE];
    struct policy *policy;
    bool shutting_down;
    bool test_early_ack;  /* TERN_TEST_EARLY_ACK: deliberately wrong, for the crash tests */
    uint64_t session_seq;
    uint64_t start_us;
};

static char server_rbuf[READ_CHUNK];

static void conn_process(struct conn *c);
static void conn_free(struct conn *c);
static void conn_handle_status(struct conn *c, enum smtp_status st);
static void conn_handshake(struct conn *c);
static void conn_starttls(struct conn *c);

/* ---- per-IP counting -------------------------------------------------------- */

static void
ip_key(const struct sockaddr *sa, unsigned char key[17])
{
    memset(key, 0, 17);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            key[0] = 4;
            memcpy(key + 1, &a->s6_addr[12], 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a->s6_addr, 16);
        }
    }
}

static unsigned
ip_hash(const unsigned char key[17])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    int i;

    for (i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % IPTAB_SIZE;
}

static struct ipcount **
ip_find(struct server *srv, const unsigned char key[17])
{
    struct ipcount **pp = &srv->iptab[ip_hash(key)];

    while (*pp != NULL && memcmp((*pp)->key, key, 17) != 0)
        pp = &(*pp)->next;
    return pp;
}

static unsigned
ip_get(struct server *srv, const unsigned char key[17])
{
    struct ipcount **pp = ip_find(srv, key);

    return *pp ? (*pp)->count : 0;
}

static int
ip_inc(struct server *srv, const unsigned char key[17])
{
    struct ipcount **pp = ip_find(srv, key);

    if (*pp == NULL) {
        if ((*pp = calloc(1, sizeof(**pp))) == NULL)
            return -1;
        memcpy((*pp)->key, key, 17);
    }
    (*pp)->count++;
    return 0;
}

static void
ip_dec(struct server *srv, const unsigned char key[17])
{
    struct ipcount **pp = ip_find(srv, key), *e = *pp;

    if (e == NULL)
        return;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

/* ---- session callbacks (the glue between session and spool) ---------------- */

static void conn_on_policy(void *arg, enum reply_id verdict, const char *const args[4]);

/* The MAIL checks passed: open the spool message. */
static enum reply_id
conn_mail_open(struct conn *c, struct smtp_txn *t)
{
    char id[SPOOL_ID_LEN + 1];
    const char *user = smtp_session_auth_user(c->sess);

    if (user != NULL && !auth_sender_owned(c->srv->cfg, user, t->sender.addr)) {
        log_info(c->peer.id, "event=mail-refused client=%s user=%s from=<%s> reply=%s",
            c->peer.addr, user, t->sender.addr, reply_get(R_SENDER_NOT_OWNED)->name);
        return R_SENDER_NOT_OWNED;
    }
    spool_new_id(c->srv->spool, id);
    if ((c->msg = spool_msg_new(c->srv->spool, id)) == NULL) {
        log_warn(c->peer.id, "event=mail-refused reason=\"out of memory\"");
        return R_LOCAL_ERROR;
    }
    snprintf(t->id, sizeof(t->id), "%s", id);
    return R_MAIL_OK;
}

static enum reply_id
conn_cb_mail(void *ctx, struct smtp_txn *t)
{
    struct conn *c = ctx;
    enum reply_id r;

    r = policy_mail(c->srv->policy, &c->pcl, smtp_session_auth_user(c->sess) != NULL,
        t->sender.addr, conn_on_policy, c, &c->preq);
    if (r == REPLY_PENDING) {
        c->suspended = true;
        c->preq_txn = t;
        return r;
    }
    if (r != R_MAIL_OK) {
        log_info(c->peer.id, "event=mail-refused client=%s from=<%s> reply=%s", c->peer.addr,
            t->sender.addr, reply_get(r)->name);
        return r;
    }
    return conn_mail_open(c, t);
}

static enum reply_id
conn_cb_rcpt(void *ctx, const struct smtp_txn *t, const struct smtp_path *rcpt)
{
    struct conn *c = ctx;
    bool may_relay = c->may_relay || smtp_session_auth_user(c->sess) != NULL;
    enum reply_id r = relay_check_rcpt(c->srv->cfg, may_relay, rcpt);

    if (r == R_RCPT_OK && c->srv->hooks.local_rcpt != NULL &&
        relay_domain_is_local(c->srv->cfg, rcpt))
        r = c->srv->hooks.local_rcpt(c->srv->hooks.arg, rcpt->addr,
            t->params.has_size ? t->params.size : 0);
    if (r == R_RCPT_OK) {
        r = policy_rcpt(c->srv->policy, &c->pcl, smtp_session_auth_user(c->sess) != NULL,
            t->sender.addr, rcpt->addr,
            conn_on_policy, c, &c->preq);
        if (r == REPLY_PENDING) {
            c->suspended = true;
            c->preq_rcpt = rcpt;
            return r;
        }
    }
    if (r != R_RCPT_OK)
        log_info(t->id, "event=rcpt-refused client=%s to=<%s> reply=%s", c->peer.addr,
            rcpt->addr, reply_get(r)->name);
    return r;
}

/*
 * A policy verdict (never called once the request is cancelled): the greeting or its
 * 421, or the reply to the MAIL or RCPT that waited.
 */
static void
conn_on_policy(void *arg, enum reply_id verdict, const char *const args[4])
{
    struct conn *c = arg;
    enum smtp_status st;

    c->preq = NULL;
    c->suspended = false;
    if (c->greeting_wait && c->handshaking) {
        /* implicit TLS: the check ran in parallel with the handshake, which goes on */
        c->greeting_wait = false;
        if (verdict == R_GREETING)
            return; /* greeted once the handshake is done */
        log_info(c->peer.id, "event=refused client=%s reply=%s handshake=%s", c->peer.addr,
            reply_get(verdict)->name,
            SSL_get_state(c->ssl) == TLS_ST_BEFORE ? "none" : "finishing");
        if (SSL_get_state(c->ssl) == TLS_ST_BEFORE) {
            conn_free(c); /* no ClientHello read yet: no signature, and no reply (server_refuse) */
            return;
        }
        buf_init(&c->refusal, 1024);
        if (reply_write(&c->refusal, verdict, args[0], args[1], args[2], args[3]) != 0 ||
            c->refusal.len == 0) {
            conn_free(c);
            return;
        }
        return;
    }
    if (c->greeting_wait) {
        c->greeting_wait = false;
        if (verdict == R_GREETING) {
            smtp_session_greet(c->sess);
        } else {
            reply_write(smtp_session_output(c->sess), verdict, args[0], args[1], args[2],
                args[3]);
            log_info(c->peer.id, "event=refused client=%s reply=%s", c->peer.addr,
                reply_get(verdict)->name);
            c->closing = true;
        }
        conn_process(c);
        return;
    }
    if (verdict == R_MAIL_OK && c->preq_txn != NULL)
        verdict = conn_mail_open(c, c->preq_txn);
    if (verdict != R_MAIL_OK && verdict != R_RCPT_OK)
        log_info(c->peer.id, "event=%s-refused client=%s %s=<%s> reply=%s",
            c->preq_rcpt ? "rcpt" : "mail", c->peer.addr, c->preq_rcpt ? "to" : "from",
            c->preq_rcpt ? c->preq_rcpt->addr
                         : c->preq_txn ? c->preq_txn->sender.addr : "",
            reply_get(verdict)->name);
    c->preq_txn = NULL;
    c->preq_rcpt = NULL;
    st = smtp_session_verdict_args(c->sess, verdict, args);
    if (st == SMTP_CLOSE)
        c->closing = true;
    conn_process(c);
}

static int
conn_cb_body(void *ctx, const char *p, size_t n)
{
    struct conn *c = ctx;
    int err;

    if (c->msg == NULL)
        return -1;
    if (spool_msg_write(c->msg, p, n) == 0)
        return 0;
    err = errno;
    smtp_session_body_failed(c->sess, err == ENOSPC || err == EDQUOT ? R_SPOOL_FULL
                                                                   : R_SPOOL_ERROR);
    log_warn(spool_msg_id(c->msg), "event=body-write-failed session=%s error=\"%s\"",
        c->peer.id, strerror(err));
    return -1;
}

static void
conn_cb_abort(void *ctx, struct smtp_txn *t)
{
    struct conn *c = ctx;

    if (c->msg != NULL) {
        spool_msg_abort(c->msg);
        c->msg = NULL;
    }
}

static void
conn_commit_done(struct conn *c, int err, const char *id)
{
    enum reply_id r;
    enum smtp_status st;

    c->suspended = false;
    c->ticket = NULL;
    if (err == 0) {
        r = R_QUEUED;
        c->msgs++;
    } else if (err == ENOSPC || err == EDQUOT) {
        r = R_SPOOL_FULL;
    } else {
        r = R_SPOOL_ERROR;
    }
    if (err)
        log_warn(id, "event=commit-failed session=%s client=%s from=<%s> error=\"%s\" reply=%s",
            c->peer.id, c->peer.addr, c->commit_from ? c->commit_from : "", strerror(err),
            reply_get(r)->name);
    else
        log_info(id, "event=queued session=%s client=%s from=<%s> nrcpt=%u size=%zu%s%s%s%s%s%s",
            c->peer.id, c->peer.addr, c->commit_from ? c->commit_from : "", c->commit_nrcpt,
            c->commit_size, c->ssl ? " tls=" : "", c->ssl ? SSL_get_version(c->ssl) : "",
            c->ssl ? " cipher=" : "", c->ssl ? SSL_get_cipher_name(c->ssl) : "",
            smtp_session_auth_user(c->sess) ? " user=" : "",
            smtp_session_auth_user(c->sess) ? smtp_session_auth_user(c->sess) : "");
    free(c->commit_from);
    c->commit_from = NULL;
    st = smtp_session_commit_done(c->sess, r);
    if (st == SMTP_CLOSE)
        c->closing = true;
    conn_process(c);
}

static void
server_on_committed(void *arg, int err, const struct spool_record *rec)
{
    struct commit_ticket *t = arg;
    struct server *srv = t->srv;
    struct conn *c = t->conn;
    char id[SPOOL_ID_LEN + 1];

    snprintf(id, sizeof(id), "%s", t->id);
    free(t);
    if (err == 0 && rec != NULL && srv->hooks.committed != NULL)
        srv->hooks.committed(srv->hooks.arg, rec);
    if (c != NULL)
        conn_commit_done(c, err, id);
}

static void
conn_cb_commit(void *ctx, struct smtp_txn *t)
{
    struct conn *c = ctx;
    struct spool_msg *m = c->msg;
    char kv[320];
    unsigned i;

    c->msg = NULL;
    if (m == NULL) {
        log_panic("commit without a message");
    }
    spool_msg_set_arrival(m, time(NULL));
    spool_msg_set_sender(m, t->sender.addr);
    for (i = 0; i < t->nrcpts; i++)
        spool_msg_add_rcpt(m, t->rcpts[i].addr);
    if (t->params.body == BODY_8BITMIME)
        spool_msg_add_param(m, "BODY=8BITMIME");
    else if (t->params.body == BODY_7BIT)
        spool_msg_add_param(m, "BODY=7BIT");
    if (t->params.smtputf8)
        spool_msg_add_param(m, "SMTPUTF8");
    /* RFC 3461: kept xtext-encoded, as received, for the DSN and the next hop. */
    if (dsn_msg_format(&t->params.dsn, kv + 4, sizeof(kv) - 4) > 0) {
        memcpy(kv, "dsn=", 4);
        spool_msg_add_param(m, kv);
    }
    for (i = 0; i < t->nrcpts; i++) {
        char text[DSN_TEXT_MAX];
        if (dsn_rcpt_format(&t->rcpt_dsn[i], text, sizeof(text)) > 0) {
            char line[DSN_TEXT_MAX + 32];
            snprintf(line, sizeof(line), "dsnrcpt=%u %s", i, text);
            spool_msg_add_param(m, line);
        }
    }
    snprintf(kv, sizeof(kv), "client=%s", c->peer.addr);
    spool_msg_add_param(m, kv);
    snprintf(kv, sizeof(kv), "helo=%s", smtp_session_helo(c->sess));
    spool_msg_add_param(m, kv);
    if (smtp_session_auth_user(c->sess) != NULL) {
        snprintf(kv, sizeof(kv), "auth=%s", smtp_session_auth_user(c->sess));
        spool_msg_add_param(m, kv);
    }
    c->commit_from = strdup(t->sender.addr);
    c->commit_nrcpt = t->nrcpts;
    c->commit_size = spool_msg_size(m);
    if ((c->ticket = malloc(sizeof(*c->ticket))) == NULL) {
        free(c->commit_from);
        c->commit_from = NULL;
        spool_msg_abort(m);
        smtp_session_commit_done(c->sess, R_LOCAL_ERROR);
        return; /* the caller's conn_process() sends the reply */
    }
    c->ticket->srv = c->srv;
    c->ticket->conn = c;
    snprintf(c->ticket->id, sizeof(c->ticket->id), "%s", spool_msg_id(m));
    c->suspended = true;
    spool_commit_rec(c->srv->spool, m, server_on_committed, c->ticket);
    if (c->srv->test_early_ack) {
        /* The negative control of the crash tests: acknowledge before the disk has it. */
        c->ticket->conn = NULL;
        c->ticket = NULL;
        c->suspended = false;
        smtp_session_commit_done(c->sess, R_QUEUED);
    }
}

/* ---- AUTH --------------------------------------------------------------------- */

static void
server_on_auth_done(void *arg, enum auth_result res)
{
    struct auth_ticket *t = arg;
    struct conn *c = t->conn;
    const char *user;
    bool blocked;

    /* A wrong password counts even when its session has gone: it was a guess all the same. */
    blocked = auth_limit_end(t->srv->auth_limit, t->ipkey, time(NULL), res == AUTH_RESULT_FAIL);
    free(t);
    if (c == NULL || res == AUTH_RESULT_CANCELLED)
        return;
    c->auth_ticket = NULL;
    c->suspended = false;
    if (!smtp_session_waiting(c->sess)) {
        /* The session ended meanwhile (a shutdown's 421): nobody logs in any more. */
        log_info(c->peer.id, "event=auth client=%s result=%s after=closed", c->peer.addr,
            res == AUTH_RESULT_OK ? "ok" : "failed");
        conn_process(c);
        return;
    }
    conn_handle_status(c, smtp_session_verdict(c->sess,
                              res == AUTH_RESULT_OK ? R_AUTH_OK : R_AUTH_FAILED));
    user = smtp_session_auth_user(c->sess);
    if (res == AUTH_RESULT_OK)
        log_info(c->peer.id, "event=auth client=%s user=%s result=ok", c->peer.addr,
            user ? user : "?");
    else
        log_info(c->peer.id, "event=auth client=%s result=failed blocked=%d", c->peer.addr,
            blocked);
    if (blocked && !c->closing)
        conn_handle_status(c, smtp_session_drop(c->sess, R_AUTH_TOO_MANY));
    conn_process(c);
}

static enum reply_id
conn_cb_auth(void *ctx, const char *user, const char *pass)
{
    struct conn *c = ctx;
    struct auth *a = c->srv->auth;

    if (a == NULL)
        return R_NOT_IMPLEMENTED;
    if ((c->auth_ticket = malloc(sizeof(*c->auth_ticket))) == NULL)
        return R_LOCAL_ERROR;
    /* Failures and checks in flight together: parallel AUTHs get no more guesses. */
    if (!auth_limit_begin(c->srv->auth_limit, c->ipkey, time(NULL))) {
        free(c->auth_ticket);
        c->auth_ticket = NULL;
        log_info(c->peer.id, "event=auth client=%s result=blocked reply=%s", c->peer.addr,
            reply_get(R_AUTH_TOO_MANY)->name);
        return R_AUTH_TOO_MANY;
    }
    c->auth_ticket->srv = c->srv;
    c->auth_ticket->conn = c;
    memcpy(c->auth_ticket->ipkey, c->ipkey, sizeof(c->ipkey));
    if (auth_check(a, user, pass, server_on_auth_done, c->auth_ticket) == -1) {
        auth_limit_end(c->srv->auth_limit, c->ipkey, time(NULL), false);
        free(c->auth_ticket);
        c->auth_ticket = NULL;
        return R_LOCAL_ERROR;
    }
    return REPLY_PENDING;
}

static void
server_on_auth(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    auth_reap(srv->auth);
}

/* ---- connection I/O --------------------------------------------------------- */

static void
conn_set_reading(struct conn *c, bool on)
{
    if (on == c->reading)
        return;
    if (on)
        event_add(c->ev_read, NULL);
    else
        event_del(c->ev_read);
    c->reading = on;
}

static void
conn_set_writing(struct conn *c, bool on)
{
    if (on == c->writing)
        return;
    if (on)
        event_add(c->ev_write, NULL);
    else
        event_del(c->ev_write);
    c->writing = on;
}

static void
conn_arm_timer(struct conn *c)
{
    event_add(c->ev_timer, smtp_session_in_data(c->sess) && !c->out_blocked ? c->srv->tv_data
                                                                            : c->srv->tv_command);
}

/*
 * The output cannot be written now (the peer does not read, or TLS waits for
 * its input).  Reading has stopped, so no command re-arms the timer: from here
 * it measures how long the output makes no progress (timeout_command, re-armed
 * each time some of it goes out), and conn_on_timer() drops a peer that reads
 * nothing for that long, closing or not.  A slow reader of a long pipelined
 * batch is never cut while it reads.
 */
static void
conn_out_blocked(struct conn *c, bool progress)
{
    if (progress || !c->out_blocked)
        event_add(c->ev_timer, c->srv->tv_command);
    c->out_blocked = true;
}

/*
 * One SSL_write: bytes written (> 0), 0 when it must wait (the event it
 * needs is armed or flagged), -1 when the connection is broken.
 */
static ssize_t
conn_tls_write(struct conn *c, const char *p, size_t len)
{
    int n;

    ERR_clear_error();
    n = SSL_write(c->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_WRITE:
        conn_set_writing(c, true);
        return 0;
    case SSL_ERROR_WANT_READ:
        c->tls_write_wants_read = true; /* conn_process keeps the read event armed */
        return 0;
    default:
        c->tls_broken = true;
        ERR_clear_error();
        return -1;
    }
}

/* Write what the session has to say; false if the socket is full (write event armed). */
static bool
conn_flush(struct conn *c)
{
    struct buf *out = smtp_session_output(c->sess);
    bool progress = false;
    ssize_t n;

    while (out->len > 0) {
        if (c->ssl != NULL) {
            n = conn_tls_write(c, out->data, out->len);
            if (n > 0) {
                buf_consume(out, (size_t)n);
                progress = true;
                continue;
            }
            if (n == 0) {
                conn_out_blocked(c, progress);
                return false;
            }
            buf_reset(out);
            c->closing = true;
            return true;
        }
        n = send(c->fd, out->data, out->len, MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(out, (size_t)n);
            progress = true;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_set_writing(c, true);
            conn_out_blocked(c, progress);
            return false;
        }
        /* The peer is gone: nothing more can be said to it. */
        buf_reset(out);
        c->closing = true;
        return true;
    }
    if (c->writing && !c->tls_read_wants_write) {
        event_del(c->ev_write);
        c->writing = false;
    }
    if (c->out_blocked) {
        c->out_blocked = false;
        conn_arm_timer(c); /* the peer has read it all: idle from now */
    }
    return true;
}

static void
conn_handle_status(struct conn *c, enum smtp_status st)
{
    if (st == SMTP_CLOSE)
        c->closing = true;
    else if (st == SMTP_SUSPEND)
        c->suspended = true; /* a commit or a verdict in flight; its callback resumes */
    if (st == SMTP_STARTTLS) {
        /* Sent before the handshake, so never to be read as commands under TLS. */
        buf_reset(&c->pending);
        c->starttls = true;
    }
}

/*
 * The session is over and its last reply is written.  Closing a socket that
 * still has unread input makes the kernel send RST, which can destroy that
 * last reply (a 421) before the client reads it.  So shut the write side,
 * read and discard until the client closes, and only then close; bounded
 * by LINGER_SECONDS.
 */
static void
conn_linger(struct conn *c)
{
    struct timeval tv = {LINGER_SECONDS, 0};

    if (c->lingering)
        return;
    c->lingering = true;
    if (c->ssl != NULL && !c->handshaking && !c->tls_broken) {
        /* close_notify, best effort: the socket's buffer has room, or the peer loses it */
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    conn_set_writing(c, false);
    if (shutdown(c->fd, SHUT_WR) == -1) {
        conn_free(c);
        return;
    }
    buf_free(&c->pending);
    event_add(c->ev_timer, &tv);
    conn_set_reading(c, true);
}

/* Feed kept input, flush output, and decide whether to read more. */
static void
conn_process(struct conn *c)
{
    enum smtp_status st;
    size_t used;

    if (c->handshaking)
        return; /* conn_handshake() calls back once TLS is up */
    c->tls_write_wants_read = false;
    for (;;) {
        if (c->pending.len > 0 && !c->suspended && !c->closing && !c->starttls) {
            used = smtp_session_input(c->sess, c->pending.data, c->pending.len, time(NULL), &st);
            buf_consume(&c->pending, used);
            conn_handle_status(c, st);
        }
        if (!conn_flush(c))
            break; /* resumed from the write event */
        if (c->closing) {
            if (!c->suspended) {
                conn_linger(c);
                return;
            }
            break;
        }
        if (c->starttls) {
            conn_starttls(c); /* the 220 is out */
            return;
        }
        if (c->pending.len > 0 && !c->suspended)
            continue;
        break;
    }
    if (c->pending.len == 0 && c->pending.cap > 0)
        buf_free(&c->pending); /* idle connections hold no input buffer */
    conn_set_reading(c, c->tls_write_wants_read || (!c->suspended && !c->closing && !c->writing &&
                                                       !c->starttls && c->pending.len == 0));
    /* Decrypted input OpenSSL already holds will not make the fd readable: feed it now. */
    if (c->reading && c->ssl != NULL && !c->tls_write_wants_read && SSL_has_pending(c->ssl))
        event_active(c->ev_read, EV_READ, 0);
}

/* Read into server_rbuf: bytes read (> 0), 0 at EOF or on an error, -1 when nothing now. */
static ssize_t
conn_read(struct conn *c)
{
    ssize_t n;
    int r;

    if (c->ssl == NULL) {
        n = recv(c->fd, server_rbuf, sizeof(server_rbuf), 0);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return -1;
        return n > 0 ? n : 0;
    }
    ERR_clear_error();
    r = SSL_read(c->ssl, server_rbuf, sizeof(server_rbuf));
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return -1;
    case SSL_ERROR_WANT_WRITE:
        c->tls_read_wants_write = true;
        conn_set_reading(c, false);
        conn_set_writing(c, true);
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        return 0;
    default:
        if (log_enabled(LOG_LEVEL_DEBUG)) {
            char e[256];
            log_debug(c->peer.id, "event=tls-read-error reason=\"%s\"",
                tls_error_string(e, sizeof(e)));
        }
        ERR_clear_error();
        return 0;
    }
}

static void
conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    enum smtp_status st;
    ssize_t n;
    size_t used;

    if (c->lingering) {
        /* raw, even under TLS: input after the last reply is discarded unread */
        n = recv(fd, server_rbuf, sizeof(server_rbuf), 0);
        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_free(c);
        return;
    }
    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    if (c->tls_write_wants_read) {
        conn_process(c); /* the write it waited for goes on */
        return;
    }
    n = conn_read(c);
    if (n == 0) {
        log_debug(c->peer.id, "event=peer-closed");
        conn_free(c);
        return;
    }
    if (n < 0)
        return;
    used = smtp_session_input(c->sess, server_rbuf, (size_t)n, time(NULL), &st);
    conn_handle_status(c, st);
    if (used < (size_t)n && !c->starttls &&
        buf_append(&c->pending, server_rbuf + used, (size_t)n - used) == -1) {
        log_warn(c->peer.id, "event=close reason=\"out of memory\"");
        conn_free(c);
        return;
    }
    if (!c->closing)
        conn_arm_timer(c);
    conn_process(c);
}

static void
conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    if (c->tls_read_wants_write) {
        c->tls_read_wants_write = false;
        conn_set_writing(c, false);
        conn_on_read(fd, EV_READ, c); /* the read it waited for goes on */
        return;
    }
    conn_process(c);
}

/* ---- TLS -------------------------------------------------------------------- */

/*
 * Drive the handshake; on success the session starts over under TLS (and an
 * implicit-TLS connection gets its greeting now).  A failed handshake is
 * logged and the connection closed without a reply: there is no channel to
 * send one on.
 */
/* Start the connection rate check: true when its verdict comes later (conn_on_policy). */
static bool
conn_greet_check(struct conn *c)
{
    /* Nobody has authenticated before the greeting. */
    if (policy_connect(c->srv->policy, &c->pcl, false, conn_on_policy, c, &c->preq) !=
        REPLY_PENDING)
        return false; /* passed at once (no limit, exempt, or no store) */
    c->greeting_wait = true; /* input waits too: nothing is read before the greeting */
    c->suspended = true;
    return true;
}

/*
 * The greeting, once the connection rate check allows it (an implicit-TLS
 * connection asks at accept, in parallel with its handshake: conn_tls_open).
 */
static void
conn_greet(struct conn *c)
{
    if (!conn_greet_check(c))
        smtp_session_greet(c->sess);
}

/*
 * Implicit TLS, handshake done: the greeting, or the rate check's 421 under TLS; or, while
 * the check has not answered, nothing yet (conn_on_policy greets as for plain connections).
 */
static void
conn_tls_open(struct conn *c)
{
    if (c->greeting_wait)
        return;
    if (c->refusal.len > 0) {
        if (buf_append(smtp_session_output(c->sess), c->refusal.data, c->refusal.len) == -1)
            buf_reset(smtp_session_output(c->sess));
        buf_free(&c->refusal);
        c->closing = true;
        return;
    }
    smtp_session_greet(c->sess);
}

static void
conn_handshake(struct conn *c)
{
    const char *version, *cipher, *sni;
    char e[256], sbuf[256];
    int r;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaking = false;
        version = SSL_get_version(c->ssl);
        cipher = SSL_get_cipher_name(c->ssl);
        sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        log_info(c->peer.id, "event=tls client=%s version=%s cipher=%s sni=%s implicit=%d",
            c->peer.addr, version, cipher, log_token(sni, sbuf, sizeof(sbuf)),
            c->lst->implicit_tls);
        smtp_session_tls_started(c->sess, version, cipher);
        if (c->lst->implicit_tls)
            conn_tls_open(c);
        conn_set_writing(c, false);
        conn_arm_timer(c);
        conn_process(c);
        return;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        conn_set_writing(c, false);
        conn_set_reading(c, true);
        return;
    case SSL_ERROR_WANT_WRITE:
        conn_set_reading(c, false);
        conn_set_writing(c, true);
        return;
    default:
        log_info(c->peer.id, "event=tls-failed client=%s reason=\"%s\"", c->peer.addr,
            ERR_peek_error() ? tls_error_string(e, sizeof(e)) : "connection closed");
        conn_free(c);
        return;
    }
}

/* Start TLS on a connection: after the 220 to STARTTLS, or at accept (implicit TLS). */
static void
conn_tls_begin(struct conn *c)
{
    if ((c->ssl = tls_server_ssl(c->srv->tls, c->fd, c->peer.id)) == NULL) {
        char e[256];
        log_warn(c->peer.id, "event=close reason=\"cannot start TLS: %s\"",
            tls_error_string(e, sizeof(e)));
        conn_free(c);
        return;
    }
    c->handshaking = true;
    buf_free(&c->pending);
    /* The whole handshake within timeout_command; its progress does not re-arm it. */
    event_add(c->ev_timer, c->srv->tv_command);
    conn_handshake(c);
}

static void
conn_starttls(struct conn *c)
{
    c->starttls = false;
    conn_tls_begin(c);
}

static void
conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (c->lingering) {
        conn_free(c);
        return;
    }
    if (c->handshaking || c->starttls) {
        /* nothing can be said in the middle of a handshake */
        log_info(c->peer.id, "event=tls-timeout client=%s", c->peer.addr);
        conn_free(c);
        return;
    }
    if (c->out_blocked) {
        /* No reply has gone out for timeout_command: the peer does not read, so none of
           them (nor a 421) can reach it.  Also ends a closing session's flush, and so a
           shutdown, within timeout_command of the last progress. */
        log_info(c->peer.id, "event=timeout client=%s reason=\"output not read\" closing=%d",
            c->peer.addr, c->closing);
        conn_free(c);
        return;
    }
    if (c->suspended) {
        conn_arm_timer(c); /* a commit in flight is the disk's time, not the client's */
        return;
    }
    log_info(c->peer.id, "event=timeout client=%s in_data=%d", c->peer.addr,
        smtp_session_in_data(c->sess));
    conn_handle_status(c, smtp_session_timeout(c->sess));
    conn_process(c);
}

static void
conn_free(struct conn *c)
{
    struct server *srv = c->srv;

    if (c->ticket != NULL)
        c->ticket->conn = NULL; /* the commit goes on; its outcome reaches the queue only */
    if (c->auth_ticket != NULL)
        c->auth_ticket->conn = NULL; /* the check finishes; nobody hears of it */
    policy_cancel(c->preq);     /* its answer, when the store gives it, is dropped */
    log_debug(c->peer.id, "event=disconnect client=%s messages=%llu errors=%u", c->peer.addr,
        c->msgs, smtp_session_errors(c->sess));
    smtp_session_free(c->sess); /* aborts an open transaction through conn_cb_abort */
    if (c->msg != NULL)
        spool_msg_abort(c->msg);
    event_free(c->ev_read);
    event_free(c->ev_write);
    event_free(c->ev_timer);
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    close(c->fd);
    buf_free(&c->pending);
    buf_free(&c->refusal);
    free(c->commit_from);
    ip_dec(srv, c->ipkey);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    free(c);
    if (srv->shutting_down && srv->nconns == 0)
        event_base_loopexit(srv->base, NULL);
}

/* ---- accepting -------------------------------------------------------------- */

/* Refuse a connection before any session exists: one reply, then close. */
static void
server_refuse(const struct listener *lst, int fd, enum reply_id r, const char *addr)
{
    struct server *srv = lst->srv;
    struct buf b;

    buf_init(&b, 1024);
    if (!lst->implicit_tls && reply_write(&b, r, srv->sconf.hostname) == 0) {
        /* A fresh socket's send buffer always has room for one line. */
        if (send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        }
    }
    buf_free(&b);
    log_info(NULL, "event=refused client=%s reply=%s", addr, reply_get(r)->name);
    close(fd);
}

static void
server_session_id(struct server *srv, char *id, size_t len)
{
    snprintf(id, len, "%010llX%06llX", (unsigned long long)(srv->start_us & 0xFFFFFFFFFFull),
        (unsigned long long)(++srv->session_seq & 0xFFFFFF));
}

static void
server_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
    const struct listener *lst = arg;
    struct server *srv = lst->srv;
    unsigned char key[17];
    char addr[64] = "?";
    struct conn *c;
    int one = 1;

    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, addr, sizeof(addr));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof(addr));
    ip_key(sa, key);

    if (srv->shutting_down) {
        server_refuse(lst, fd, R_SHUTDOWN, addr);
        return;
    }
    if (srv->nconns >= srv->cfg->max_connections) {
        server_refuse(lst, fd, R_OVERLOAD_TOTAL, addr);
        return;
    }
    if (ip_get(srv, key) >= (unsigned)srv->cfg->max_connections_per_ip) {
        server_refuse(lst, fd, R_OVERLOAD_IP, addr);
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || ip_inc(srv, key) == -1) {
        free(c);
        server_refuse(lst, fd, R_LOCAL_ERROR, addr);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->srv = srv;
    c->lst = lst;
    c->fd = fd;
    memcpy(c->ipkey, key, sizeof(key));
    snprintf(c->peer.addr, sizeof(c->peer.addr), "%s", addr);
    server_session_id(srv, c->peer.id, sizeof(c->peer.id));
    policy_client_init(&c->pcl, srv->cfg, sa);
    c->may_relay = c->pcl.may_relay;
    buf_init(&c->pending, READ_CHUNK);
    c->ev_read = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->ev_write = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    c->ev_timer = evtimer_new(srv->base, conn_on_timer, c);
    c->sess = smtp_session_new(&lst->sconf, &srv->cb, c, &c->peer);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (c->ev_read == NULL || c->ev_write == NULL || c->ev_timer == NULL || c->sess == NULL) {
        log_warn(c->peer.id, "event=close reason=\"out of memory\"");
        conn_free(c);
        return;
    }
    log_debug(c->peer.id, "event=connect client=%s relay=%d listen=%s", addr, c->may_relay,
        lst->text);
    if (lst->implicit_tls) {
        /* The rate check starts now, so an aborted handshake counts; its verdict is said
           under TLS (conn_on_policy, conn_tls_open). */
        conn_greet_check(c);
        conn_tls_begin(c);
        return;
    }
    conn_greet(c);
    conn_arm_timer(c);
    conn_process(c);
}

static void
server_on_accept_error(struct evconnlistener *l, void *arg)
{
    /* EMFILE/ENFILE/ENOBUFS: logged; libevent keeps the listener. */
    log_warn(NULL, "event=accept-error error=\"%s\"", strerror(errno));
}

/* ---- shutdown --------------------------------------------------------------- */

static void
server_on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    struct conn *c, *next;

    log_warn(NULL, "event=shutdown-timeout sessions=%ld", srv->nconns);
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        conn_free(c);
    }
    event_base_loopexit(srv->base, NULL);
}

static void
server_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    struct conn *c, *next;
    struct timeval tv = {srv->cfg->shutdown_timeout, 0};

    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    log_info(NULL, "event=shutdown signal=%d sessions=%ld", (int)sig, srv->nconns);
    srv->ev_shutdown = evtimer_new(srv->base, server_on_shutdown_timeout, srv);
    evtimer_add(srv->ev_shutdown, &tv);
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->handshaking || c->starttls) {
            conn_free(c); /* no reply can be sent in the middle of a handshake */
            continue;
        }
        conn_handle_status(c, smtp_session_shutdown(c->sess));
        if (c->preq != NULL && smtp_session_closed(c->sess)) {
            policy_cancel(c->preq); /* the 421 is said; the verdict no longer matters */
            c->preq = NULL;
            c->suspended = false;
            c->greeting_wait = false;
        }
        conn_process(c);
    }
    if (srv->nconns == 0)
        event_base_loopexit(srv->base, NULL);
}

/*
 * SIGHUP: a new certificate and key from the same files; the old stay if they are bad.
 * auth_users is reread on a worker (same rule: a bad file keeps the old users).
 */
static void
server_on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    char err[512];

    if (srv->auth != NULL) {
        log_info(NULL, "event=reload auth_users=%s", srv->cfg->auth_users);
        auth_reload(srv->auth);
    }
    if (srv->tls == NULL) {
        log_info(NULL, "event=reload tls=none");
        return;
    }
    if (tls_server_reload(srv->tls, err, sizeof(err)) == 0)
        log_info(NULL, "event=reload tls=reloaded cert=%s", srv->cfg->tls_cert);
    else
        log_warn(NULL, "event=reload tls=kept-old error=\"%s\"", err);
}

static void
server_on_spool(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    spool_reap(srv->spool);
}

/* ---- setup ------------------------------------------------------------------ */

static int
server_listen(struct server *srv, const struct config_listen *ls, char *err, size_t errlen)
{
    struct listener *lst = &srv->lst[srv->nlisteners];
    struct evconnlistener *l;
    int fd, one = 1;

    fd = socket(ls->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "listen %s: socket: %s", ls->text, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&ls->addr, ls->addrlen) == -1 ||
        listen(fd, 4096) == -1) { /* the kernel caps it at net.core.somaxconn */
        snprintf(err, errlen, "listen %s: %s", ls->text, strerror(errno));
        close(fd);
        return -1;
    }
    /* backlog 0: already listening (a negative value would make libevent re-listen at 128) */
    lst->srv = srv;
    lst->text = ls->text;
    lst->implicit_tls = (ls->flags & CONFIG_LISTEN_TLS) != 0;
    lst->sconf = srv->sconf;
    lst->sconf.tls_offer = srv->tls != NULL && !lst->implicit_tls;
    lst->sconf.tls_required = (ls->flags & CONFIG_LISTEN_REQUIRE_TLS) != 0 && !lst->implicit_tls;
    lst->sconf.submission = (ls->flags & CONFIG_LISTEN_SUBMISSION) != 0;
    if (lst->implicit_tls && srv->tls == NULL) {
        snprintf(err, errlen, "listen %s: the tls option needs tls_cert and tls_key", ls->text);
        close(fd);
        return -1;
    }
    l = evconnlistener_new(srv->base, server_on_accept, lst,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (l == NULL) {
        snprintf(err, errlen, "listen %s: cannot create listener", ls->text);
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(l, server_on_accept_error);
    srv->listeners[srv->nlisteners++] = l;
    log_info(NULL, "event=listen address=%s tls=%s submission=%d", ls->text,
        lst->implicit_tls         ? "implicit"
        : lst->sconf.tls_required ? "required"
        : lst->sconf.tls_offer    ? "starttls"
                                  : "none",
        lst->sconf.submission);
    return 0;
}

struct event_base *
server_base(struct server *srv)
{
    return srv->base;
}

struct server *
server_new(const struct config *cfg, struct spool *sp, const struct server_hooks *hooks,
    char *err, size_t errlen)
{
    struct server *srv;
    struct timeval tv;
    struct timespec ts;
    size_t i;

    if ((srv = calloc(1, sizeof(*srv))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->cfg = cfg;
    srv->spool = sp;
    if (hooks != NULL)
        srv->hooks = *hooks;
    if (getenv("TERN_TEST_EARLY_ACK") != NULL && strcmp(getenv("TERN_TEST_EARLY_ACK"), "1") == 0) {
        srv->test_early_ack = true;
        log_warn(NULL, "event=test-hook TERN_TEST_EARLY_ACK=1 reason=\"250 is sent BEFORE the "
                       "message is on disk: acknowledged mail CAN BE LOST; tests only\"");
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    srv->start_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    srv->sconf.hostname = cfg->hostname;
    srv->sconf.max_line_length = (size_t)cfg->max_line_length;
    srv->sconf.max_message_size = (unsigned long long)cfg->max_message_size;
    srv->sconf.max_recipients = (unsigned)cfg->max_recipients;
    srv->sconf.max_errors = (unsigned)cfg->max_errors;
    /* the listeners copy sconf; the AUTH workers themselves start in server_start() */
    srv->sconf.auth_offer = cfg->auth_users != NULL;
    srv->cb.mail = conn_cb_mail;
    srv->cb.rcpt = conn_cb_rcpt;
    srv->cb.body = conn_cb_body;
    srv->cb.commit = conn_cb_commit;
    srv->cb.abort = conn_cb_abort;
    srv->cb.auth = conn_cb_auth;
    if ((srv->base = event_base_new()) == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    tv.tv_sec = cfg->timeout_command;
    tv.tv_usec = 0;
    srv->tv_command = event_base_init_common_timeout(srv->base, &tv);
    tv.tv_sec = cfg->timeout_data;
    srv->tv_data = event_base_init_common_timeout(srv->base, &tv);
    if (cfg->tls_cert != NULL && cfg->tls_key != NULL &&
        (srv->tls = tls_server_new(cfg->tls_cert, cfg->tls_key, err, errlen)) == NULL)
        goto fail;
    srv->listeners = calloc(cfg->nlisten ? cfg->nlisten : 1, sizeof(*srv->listeners));
    srv->lst = calloc(cfg->nlisten ? cfg->nlisten : 1, sizeof(*srv->lst));
    if (srv->listeners == NULL || srv->lst == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (i = 0; i < cfg->nlisten; i++)
        if (server_listen(srv, &cfg->listen[i], err, errlen) == -1)
            goto fail;
    srv->ev_term = evsignal_new(srv->base, SIGTERM, server_on_signal, srv);
    srv->ev_int = evsignal_new(srv->base, SIGINT, server_on_signal, srv);
    srv->ev_hup = evsignal_new(srv->base, SIGHUP, server_on_hup, srv);
    if (srv->ev_term == NULL || srv->ev_int == NULL || srv->ev_hup == NULL) {
        snprintf(err, errlen, "cannot set up events");
        goto fail;
    }
    evsignal_add(srv->ev_term, NULL);
    evsignal_add(srv->ev_int, NULL);
    evsignal_add(srv->ev_hup, NULL);
    if (sp != NULL && server_start(srv, sp, err, errlen) < 0)
        goto fail;
    return srv;
fail:
    server_free(srv);
    return NULL;
}

int
server_start(struct server *srv, struct spool *sp, char *err, size_t errlen)
{
    const struct config *cfg = srv->cfg;

    srv->spool = sp;
    srv->ev_spool = event_new(srv->base, spool_event_fd(sp), EV_READ | EV_PERSIST,
        server_on_spool, srv);
    if (srv->ev_spool == NULL || event_add(srv->ev_spool, NULL) < 0) {
        snprintf(err, errlen, "cannot set up events");
        return -1;
    }
    /* the state store (LMDB under spool_dir by default) is the user's: opened after the drop */
    if ((srv->policy = policy_new(cfg, srv->base, err, errlen)) == NULL)
        return -1;
    if (cfg->auth_users != NULL) {
        /* Two workers: a hash takes tens of ms; this is a small machine's share.  Started here,
           not in server_new(): threads must come after the privilege drop and the sandbox. */
        if ((srv->auth = auth_new(cfg->auth_users, 2, err, errlen)) == NULL)
            return -1;
        if ((srv->auth_limit = auth_limit_new((unsigned)cfg->auth_max_failures,
                 cfg->auth_failure_window)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        srv->ev_auth = event_new(srv->base, auth_event_fd(srv->auth), EV_READ | EV_PERSIST,
            server_on_auth, srv);
        if (srv->ev_auth == NULL || event_add(srv->ev_auth, NULL) < 0) {
            snprintf(err, errlen, "cannot set up events");
            return -1;
        }
    }
    return 0;
}

int
server_run(struct server *srv)
{
    signal(SIGPIPE, SIG_IGN);
    if (event_base_dispatch(srv->base) == -1)
        return -1;
    return 0;
}

void
server_free(struct server *srv)
{
    struct conn *c, *next;
    size_t i, j;

    if (srv == NULL)
        return;
    srv->shutting_down = false; /* no loopexit from conn_free now */
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        conn_free(c);
    }
    policy_free(srv->policy); /* after the connections: their requests are cancelled */
    for (i = 0; i < srv->nlisteners; i++)
        evconnlistener_free(srv->listeners[i]);
    free(srv->listeners);
    free(srv->lst);
    tls_server_free(srv->tls);
    auth_free(srv->auth); /* checks still in flight are cancelled */
    auth_limit_free(srv->auth_limit);
    if (srv->ev_auth)
        event_free(srv->ev_auth);
    if (srv->ev_hup)
        event_free(srv->ev_hup);
    if (srv->ev_term)
        event_free(srv->ev_term);
    if (srv->ev_int)
        event_free(srv->ev_int);
    if (srv->ev_spool)
        event_free(srv->ev_spool);
    if (srv->ev_shutdown)
        event_free(srv->ev_shutdown);
    for (j = 0; j < IPTAB_SIZE; j++) {
        struct ipcount *e, *n;
        for (e = srv->iptab[j]; e != NULL; e = n) {
            n = e->next;
            free(e);
        }
    }
    if (srv->base)
        event_base_free(srv->base);
    free(srv);
}
