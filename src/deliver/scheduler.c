/*
 * scheduler.c - dispatching due messages to transports on worker threads,
 * and applying their outcomes (see scheduler.h).
 *
 * Threads: the loop thread owns the queue; workers own nothing but the job
 * they hold.  A job carries copies of everything a transport needs (ID,
 * sender, recipients, where the body lies), so a message deleted by the
 * operator while its attempt is in flight is simply not found when the
 * outcome comes back.  Workers take every Maildir job waiting (up to
 * SCHED_BATCH_MAX) in one go, so concurrent deliveries share their syncs.
 *
 * Remote mail goes through outbound connections (JOB_CONN), each run by a
 * thread of its own (a pool that grows up to max_outbound): the loop routes
 * a message's recipients for one destination (relay_host, or a domain) into
 * a JOB_REMOTE job and hands it to a connection to that destination: an
 * idle one, else a new one while max_outbound and max_outbound_per_domain
 * allow, else the least loaded one (the message waits its turn).  The
 * connection's thread delivers its jobs one after another on one SMTP
 * session (remote_conn), reports each as soon as it is done, waits up to
 * SCHED_CONN_IDLE_MS for more, and closes after max_messages_per_connection
 * messages.  A connection counts as one against the limits from its
 * creation (DNS phase included) until it is closed.
 */
#include "deliver/scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <limits.h>
#include <unistd.h>

#include <netdb.h>
#include <strings.h>

#include "deliver/bounce.h"
#include "deliver/delivery.h"
#include "deliver/lmtp.h"
#include "deliver/maildir.h"
#include "deliver/remote.h"
#include "net/dns.h"
#include "smtp/dsn.h"
#include "util/buf.h"
#include "util/log.h"

#define SCHED_BATCH_MAX 64
#define SCHED_MAILDIR_THREADS 4
#define SCHED_LMTP_THREADS_MAX 64
#define SCHED_MAINT_SECONDS 5
#define SCHED_LMTP_TIMEOUT 300 /* seconds per LMTP step, as RFC 5321 §4.5.3.2 for MAIL/RCPT */

enum job_kind { JOB_MAILDIR, JOB_LMTP, JOB_REMOTE, JOB_CLEANUP, JOB_CONN };

#define SCHED_CONN_IDLE_MS 1000 /* an outbound connection waits this long for more mail */

#define SCHED_DOMTAB 256
#define SCHED_HOSTS_MAX 20

/*
 * Messages the scheduler writes itself (DSNs) go through the spool like any
 * other; their commits may finish after the scheduler is gone (spool_close
 * runs the last callbacks), so they hold this, not the scheduler.
 */
struct injector {
    struct scheduler *s; /* NULL once the scheduler is freed */
    unsigned refs;       /* commits in flight, plus one for the scheduler */
};

/* One delivery attempt of one message: its jobs (local, one per remote domain). */
#define SCHED_BOUNCE_MAX 64

struct attempt {
    char id[SPOOL_ID_LEN + 1];
    unsigned jobs; /* not yet back */
    /* recipients failed in this attempt, reported in one DSN when all jobs are back */
    unsigned failed[SCHED_BOUNCE_MAX];
    char mta[SCHED_BOUNCE_MAX][128];
    unsigned nfailed;
};

/* Outbound connections per destination (max_outbound_per_domain). */
struct domcount {
    struct domcount *next;
    unsigned n;
    struct job *conns; /* the JOB_CONN jobs, linked by conn_next */
    char domain[];
};

struct job {
    struct job *next;
    enum job_kind kind;
    char id[SPOOL_ID_LEN + 1];
    char *sender;
    uint64_t seg;
    struct delivery_msg dm;
    struct delivery_rcpt *rcpts;
    unsigned *index;           /* rcpts[i] is the message's recipient index[i] */
    unsigned n;
    struct attempt *att;
    /* RFC 3461 parameters passed on by a remote job */
    char (*notify)[32];
    char (*orcpt)[DSN_ORCPT_MAX + 1];
    char ret[8];
    char envid[DSN_ENVID_MAX + 1];
    /* JOB_REMOTE and JOB_CONN */
    char domain[256];          /* the destination: a domain, or "relay_host" */
    /* JOB_REMOTE */
    struct job *conn;          /* the connection that carries it */
    /* JOB_CONN */
    struct remote_host *hosts;
    size_t nhosts;
    bool relay;                /* via relay_host, resolved on the worker */
    struct scheduler *s;       /* for the DNS callback */
    struct job *dns_prev, *dns_next; /* waiting for DNS */
    struct job *conn_next;     /* the destination's connections (loop thread) */
    bool started;              /* its route asked for, or handed to a thread (loop thread) */
    unsigned connections;      /* TCP connections it opened (set by its thread at the end) */
    /* under the scheduler's mutex: */
    struct job *waiting, **waiting_tail; /* JOB_REMOTE jobs handed over, not started */
    unsigned nwaiting;
    unsigned reserved;         /* routed to it, not yet handed over */
    unsigned assigned;         /* messages given to it in all */
    bool busy;                 /* its thread is delivering one */
    bool closing;              /* takes no more */
    bool has_cv;
    pthread_cond_t cv;         /* a job was handed over, or the scheduler stops */
};

struct scheduler {
    struct event_base *base;
    const struct config *cfg;
    struct queue *q;
    struct spool *sp;
    struct local *local;
    struct lmtp_conf lmtp;
    bool use_lmtp;
    char lmtp_target[512];

    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *todo, **todo_tail;
    struct job *done, **done_tail;
    bool stopping;
    /* outbound connections: their own threads, created as needed up to max_outbound */
    pthread_t *rthreads;
    unsigned nrthreads, rthreads_max, ridle, nrtodo;
    pthread_cond_t rcv;
    struct job *rtodo, **rtodo_tail;

    int efd;
    struct event *ev_done;
    struct event *ev_timer;
    struct event *ev_maint;    /* segment reclamation and compaction */
    struct dns *dns;           /* NULL until a remote domain needs one */
    bool dane_asked;           /* dns_set_dane() done on it */
    struct remote_conf rconf;
    unsigned outbound;         /* outbound connections open (DNS phase included) */
    struct domcount *domtab[SCHED_DOMTAB];
    struct job *dns_wait;      /* remote jobs waiting for their route */
    bool blocked;              /* the last dispatch stopped at an outbound limit */
    struct injector *inj;
    unsigned long maint_ticks;
    unsigned inflight;
    unsigned max_inflight;
    uint64_t rng;
    struct scheduler_stats stats;
};

/* ---- policy: backoff ---------------------------------------------------------- */

time_t
scheduler_backoff(long min_backoff, long max_backoff, unsigned attempts, double r)
{
    double d = (double)min_backoff;
    unsigned i;

    for (i = 1; i < attempts && d < (double)max_backoff; i++)
        d *= 2;
    if (d > (double)max_backoff)
        d = (double)max_backoff;
    /* +-10% so that messages deferred together do not come back together */
    d *= 0.9 + 0.2 * r;
    return d < 1 ? 1 : (time_t)d;
}

enum scheduler_verdict
scheduler_decide(const struct scheduler_policy *p, time_t arrival, time_t now, int status,
    unsigned attempts, double r, time_t *next)
{
    *next = 0;
    if (status == DLV_OK)
        return SCHED_V_DELIVERED;
    if (status != DLV_TEMP)
        return SCHED_V_FAILED;
    if (now - arrival >= p->max_queue_lifetime)
        return SCHED_V_EXPIRED;
    *next = now + scheduler_backoff(p->min_backoff, p->max_backoff, attempts, r);
    return SCHED_V_DEFERRED;
}

bool
scheduler_delay_due(
    const struct scheduler_policy *p, time_t arrival, time_t now, bool warned, bool deferred)
{
    return deferred && !warned && p->delay_warning > 0 && now - arrival >= p->delay_warning &&
           p->delay_warning < p->max_queue_lifetime;
}

static struct scheduler_policy
sched_policy(const struct scheduler *s)
{
    return (struct scheduler_policy){.min_backoff = s->cfg->min_backoff,
        .max_backoff = s->cfg->max_backoff,
        .max_queue_lifetime = s->cfg->max_queue_lifetime,
        .delay_warning = s->cfg->delay_warning};
}

static double
sched_random(struct scheduler *s)
{
    /* xorshift64*: jitter needs spread, not secrecy */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* ---- jobs ----------------------------------------------------------------------- */

static void
job_free(struct job *j)
{
    unsigned i;

    if (j == NULL)
        return;
    for (i = 0; i < j->n; i++)
        free((char *)j->rcpts[i].addr);
    free(j->rcpts);
    free(j->index);
    free(j->sender);
    for (i = 0; j->hosts != NULL && i < j->nhosts; i++) {
        dane_rrset_clear((struct dane_rrset *)j->hosts[i].dane);
        free((struct dane_rrset *)j->hosts[i].dane);
    }
    free(j->hosts);
    free(j->notify);
    free(j->orcpt);
    if (j->has_cv)
        pthread_cond_destroy(&j->cv);
    free(j);
}

static struct job *
job_new(struct scheduler *s, const struct queue_msg *m)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->rcpts = calloc(m->nrcpts, sizeof(*j->rcpts));
    j->index = calloc(m->nrcpts, sizeof(*j->index));
    j->sender = strdup(m->sender);
    if (j->rcpts == NULL || j->index == NULL || j->sender == NULL) {
        job_free(j);
        return NULL;
    }
    j->kind = s->use_lmtp ? JOB_LMTP : JOB_MAILDIR;
    snprintf(j->id, sizeof(j->id), "%s", m->id);
    j->seg = m->seg;
    j->dm.id = j->id;
    j->dm.sender = j->sender;
    j->dm.arrival = m->arrival;
    j->dm.body_fd = -1;
    j->dm.body_off = m->body_off;
    j->dm.body_len = m->body_len;
    j->dm.rcpts = j->rcpts;
    j->dm.arg = j;
    return j;
}

static const char *sched_param(const struct queue_msg *m, const char *key, size_t keylen);
static void sched_rcpt_dsn(const struct queue_msg *m, unsigned idx, struct dsn_rcpt_params *p);

/* What a remote job passes on to the next hop: BODY=8BITMIME and the DSN parameters. */
static bool
job_remote_params(struct job *j, const struct queue_msg *m)
{
    struct dsn_msg_params mp = {0};
    const char *t;

    j->dm.eightbit = sched_param(m, "BODY=8BITMIME", 13) != NULL;
    if ((t = sched_param(m, "dsn=", 4)) != NULL && dsn_msg_parse_text(t, strlen(t), &mp) == 0) {
        if (mp.ret == DSN_RET_FULL || mp.ret == DSN_RET_HDRS) {
            snprintf(j->ret, sizeof(j->ret), "%s", mp.ret == DSN_RET_FULL ? "FULL" : "HDRS");
            j->dm.dsn_ret = j->ret;
        }
        if (mp.envid[0]) {
            snprintf(j->envid, sizeof(j->envid), "%s", mp.envid);
            j->dm.dsn_envid = j->envid;
        }
    }
    j->notify = calloc(m->nrcpts, sizeof(*j->notify));
    j->orcpt = calloc(m->nrcpts, sizeof(*j->orcpt));
    return j->notify != NULL && j->orcpt != NULL;
}

/* ---- worker threads ------------------------------------------------------------- */

/* Take the next unit of work: every waiting Maildir job (bounded), or one LMTP job. */
static struct job *
sched_take(struct scheduler *s)
{
    struct job *batch = NULL, **bt = &batch, **pp = &s->todo;
    unsigned n = 0;

    if (s->todo->kind != JOB_MAILDIR) {
        batch = s->todo;
        s->todo = batch->next;
        batch->next = NULL;
    } else {
        while (*pp != NULL && n < SCHED_BATCH_MAX) {
            struct job *j = *pp;
            if (j->kind != JOB_MAILDIR) {
                pp = &j->next;
                continue;
            }
            *pp = j->next;
            j->next = NULL;
            *bt = j;
            bt = &j->next;
            n++;
        }
    }
    /* re-derive the tail */
    s->todo_tail = &s->todo;
    while (*s->todo_tail != NULL)
        s->todo_tail = &(*s->todo_tail)->next;
    return batch;
}

/*
 * relay_host "HOST:PORT" or "[V6]:PORT": resolved here, on the worker, so a
 * slow resolver never stalls the loop (no MX lookup: the operator named the host).
 */
static size_t
sched_resolve_relay(const char *relay, struct remote_host *hosts, size_t max, char *why,
    size_t whylen)
{
    char host[256], port[16];
    const char *colon = strrchr(relay, ':');
    struct addrinfo hints = {0}, *res = NULL, *ai;
    size_t n = 0, hl;
    int e;

    if (colon == NULL || (hl = (size_t)(colon - relay)) == 0 || hl >= sizeof(host)) {
        snprintf(why, whylen, "bad relay_host %s", relay);
        return 0;
    }
    memcpy(host, relay, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    snprintf(port, sizeof(port), "%s", colon + 1);
    hints.ai_socktype = SOCK_STREAM;
    if ((e = getaddrinfo(host, port, &hints, &res)) != 0) {
        snprintf(why, whylen, "%s: %s", host, gai_strerror(e));
        return 0;
    }
    for (ai = res; ai != NULL && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(hosts[n].addr))
            continue;
        memset(&hosts[n], 0, sizeof(hosts[n]));
        snprintf(hosts[n].name, sizeof(hosts[n].name), "%s", host);
        memcpy(&hosts[n].addr, ai->ai_addr, ai->ai_addrlen);
        hosts[n].addrlen = ai->ai_addrlen;
        /* no DNSSEC status from getaddrinfo: under tls_policy = dane, a relay_host is
         * `may` (remote_dane_state(): NULL is insecure) */
        hosts[n].dane = NULL;
        n++;
    }
    freeaddrinfo(res);
    if (n == 0)
        snprintf(why, whylen, "%s: no usable address", host);
    return n;
}

static void
sched_run_batch(struct scheduler *s, struct job *batch)
{
    struct delivery_msg *msgs[SCHED_BATCH_MAX];
    size_t n = 0, i;
    struct job *j;

    for (j = batch; j != NULL; j = j->next) {
        if (j->kind == JOB_CLEANUP) {
            maildir_cleanup(local_maildir(s->local));
            continue;
        }
        j->dm.body_fd = spool_segment_open(s->sp, j->seg);
        if (j->dm.body_fd == -1) {
            char why[128];
            snprintf(why, sizeof(why), "cannot read the queued message: %s", strerror(errno));
            for (i = 0; i < j->n; i++)
                delivery_set(&j->rcpts[i], R_DLV_MAILDIR_ERROR, why);
            continue;
        }
        if (j->kind == JOB_LMTP)
            lmtp_deliver(&s->lmtp, &j->dm);
        else
            msgs[n++] = &j->dm;
    }
    if (n > 0)
        maildir_deliver(local_maildir(s->local), msgs, n);
    for (j = batch; j != NULL; j = j->next)
        if (j->dm.body_fd != -1)
            close(j->dm.body_fd);
}

static void *
sched_worker(void *arg)
{
    struct scheduler *s = arg;
    struct job *batch, *last;
    uint64_t one = 1;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->todo == NULL && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->todo == NULL || s->stopping)
            break; /* on stop, jobs not started stay queued: the queue still has them */
        batch = sched_take(s);
        pthread_mutex_unlock(&s->mu);

        sched_run_batch(s, batch);

        pthread_mutex_lock(&s->mu);
        for (last = batch; last->next != NULL; last = last->next)
            ;
        *s->done_tail = batch;
        s->done_tail = &last->next;
        s->stats.batches++;
        if (write(s->efd, &one, sizeof(one)) < 0) {
            /* eventfd full cannot happen at these counts; the loop reaps anyway */
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- outbound connections (their threads) ----------------------------------------- */

/* A job or a closed connection is back: the loop takes it from the done list. */
static void
sched_done_locked(struct scheduler *s, struct job *j)
{
    uint64_t one = 1;

    j->next = NULL;
    *s->done_tail = j;
    s->done_tail = &j->next;
    if (write(s->efd, &one, sizeof(one)) < 0) {
        /* eventfd full cannot happen at these counts; the loop reaps anyway */
    }
}

/*
 * The connection's next message: one handed over already, or one that comes
 * within SCHED_CONN_IDLE_MS (linger).  NULL: the connection is closing (it
 * takes no more; on stop, jobs not started stay in c->waiting).
 */
static struct job *
sched_conn_take(struct scheduler *s, struct job *c, bool linger)
{
    struct timespec until;
    struct job *j = NULL;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (SCHED_CONN_IDLE_MS % 1000) * 1000000L;
    until.tv_sec += SCHED_CONN_IDLE_MS / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&s->mu);
    c->busy = false;
    while (c->waiting == NULL && !s->stopping && !c->closing) {
        if (c->reserved > 0) {
            pthread_cond_wait(&c->cv, &s->mu); /* being handed over right now */
            continue;
        }
        if (!linger || c->assigned >= (unsigned)s->cfg->max_messages_per_connection ||
            pthread_cond_timedwait(&c->cv, &s->mu, &until) != 0)
            break;
    }
    if (c->waiting != NULL && !s->stopping) {
        j = c->waiting;
        c->waiting = j->next;
        if (c->waiting == NULL)
            c->waiting_tail = &c->waiting;
        c->nwaiting--;
        j->next = NULL;
        c->busy = true;
    } else {
        c->closing = true;
    }
    pthread_mutex_unlock(&s->mu);
    return j;
}

/* A connection's thread: its messages one after another, each reported when done. */
static void
sched_run_conn(struct scheduler *s, struct job *c)
{
    struct remote_host relay[SCHED_HOSTS_MAX] = {0};
    const struct remote_host *hosts = c->hosts;
    size_t nhosts = c->nhosts;
    struct remote_conn *rc = NULL;
    char why[300] = "";
    struct job *j;
    unsigned i;

    if (c->relay) {
        nhosts = sched_resolve_relay(s->cfg->relay_host, relay, SCHED_HOSTS_MAX, why, sizeof(why));
        hosts = relay;
    }
    if (nhosts > 0)
        rc = remote_conn_new(&s->rconf, hosts, nhosts);
    while ((j = sched_conn_take(s, c, rc != NULL)) != NULL) {
        if (nhosts == 0) {
            for (i = 0; i < j->n; i++)
                delivery_set(&j->rcpts[i], R_DLV_DNS_TEMP, s->cfg->relay_host, why);
        } else if (rc == NULL) {
            for (i = 0; i < j->n; i++)
                delivery_set(&j->rcpts[i], R_DLV_MAILDIR_ERROR, "out of memory");
        } else if ((j->dm.body_fd = spool_segment_open(s->sp, j->seg)) == -1) {
            snprintf(why, sizeof(why), "cannot read the queued message: %s", strerror(errno));
            for (i = 0; i < j->n; i++)
                delivery_set(&j->rcpts[i], R_DLV_MAILDIR_ERROR, why);
        } else {
            remote_conn_deliver(rc, &j->dm);
            close(j->dm.body_fd);
            j->dm.body_fd = -1;
        }
        pthread_mutex_lock(&s->mu);
        sched_done_locked(s, j);
        pthread_mutex_unlock(&s->mu);
    }
    c->connections = rc != NULL ? remote_conn_connections(rc) : 0;
    remote_conn_free(rc);
}

static void *
sched_rworker(void *arg)
{
    struct scheduler *s = arg;
    struct job *c;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->rtodo == NULL && !s->stopping) {
            s->ridle++;
            pthread_cond_wait(&s->rcv, &s->mu);
            s->ridle--;
        }
        if (s->stopping)
            break; /* connections not started stay queued (scheduler_free) */
        c = s->rtodo;
        s->rtodo = c->next;
        if (s->rtodo == NULL)
            s->rtodo_tail = &s->rtodo;
        s->nrtodo--;
        c->next = NULL;
        pthread_mutex_unlock(&s->mu);

        sched_run_conn(s, c);

        pthread_mutex_lock(&s->mu);
        sched_done_locked(s, c); /* after its last message: the loop closes the books */
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* A connection with its route: to a thread (a new one when none is free). */
static void
sched_submit_conn(struct scheduler *s, struct job *c)
{
    pthread_mutex_lock(&s->mu);
    c->next = NULL;
    *s->rtodo_tail = c;
    s->rtodo_tail = &c->next;
    s->nrtodo++;
    if (s->nrtodo > s->ridle && s->nrthreads < s->rthreads_max) {
        if (pthread_create(&s->rthreads[s->nrthreads], NULL, sched_rworker, s) == 0)
            s->nrthreads++;
        else
            log_warn(NULL, "event=thread-failed error=\"%s\" threads=%u", strerror(errno),
                s->nrthreads); /* the running ones take it in turn */
    }
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- outcomes (loop thread) ----------------------------------------------------- */

/*
 * Apply one recipient's outcome; the scheduler's decision lives here only.
 * True if the recipient has now failed for good (a DSN is owed).
 */
static bool
sched_apply(struct scheduler *s, struct queue_msg *m, unsigned idx,
    const struct delivery_rcpt *d, time_t now, const char *relay)
{
    struct queue_rcpt *r = &m->rcpts[idx];
    const char *event;
    bool failed = false;

    struct scheduler_policy pol = sched_policy(s);
    time_t next;

    r->attempts++;
    switch (
        scheduler_decide(&pol, m->arrival, now, d->status, r->attempts, sched_random(s), &next)) {
    case SCHED_V_DELIVERED:
        queue_rcpt_set(r, QR_DELIVERED, d->reply, 0);
        s->stats.delivered++;
        event = "delivered";
        break;
    case SCHED_V_EXPIRED: {
        struct delivery_rcpt x = {0};
        char age[32];
        long t = (long)(now - m->arrival);
        if (t >= 2 * 86400)
            snprintf(age, sizeof(age), "%ld days", t / 86400);
        else if (t >= 2 * 3600)
            snprintf(age, sizeof(age), "%ld hours", t / 3600);
        else if (t >= 120)
            snprintf(age, sizeof(age), "%ld minutes", t / 60);
        else
            snprintf(age, sizeof(age), "%ld seconds", t);
        delivery_set(&x, R_DLV_EXPIRED, age, d->reply);
        queue_rcpt_set(r, QR_FAILED, x.reply, 0);
        s->stats.failed++;
        event = "expired";
        failed = true;
        break;
    }
    case SCHED_V_DEFERRED:
        queue_rcpt_set(r, QR_DEFERRED, d->reply, next);
        s->stats.deferred++;
        event = "deferred";
        break;
    default:
        queue_rcpt_set(r, QR_FAILED, d->reply, 0);
        s->stats.failed++;
        event = "failed";
        failed = true;
        break;
    }
    s->stats.attempts++;
    log_info(m->id, "event=%s to=<%s> relay=%s attempts=%u delay=%lds reply=\"%s\"", event,
        r->addr, relay, r->attempts, (long)(now - m->arrival), r->last_reply ? r->last_reply : "");
    return failed;
}

static void sched_dispatch(struct scheduler *s);
static void sched_arm(struct scheduler *s);
static void sched_conn_closed(struct scheduler *s, struct job *c, time_t now);
static void job_abandon(struct job *j);

/* ---- bounces (RFC 3464), written into the queue like any message ------------------- */

static void
injector_unref(struct injector *inj)
{
    if (--inj->refs == 0)
        free(inj);
}

static void
sched_on_injected(void *arg, int err, const struct spool_record *rec)
{
    struct injector *inj = arg;
    struct scheduler *s = inj->s;

    if (err != 0)
        log_error(NULL, "event=bounce-not-queued error=\"%s\"", strerror(err));
    else if (s != NULL && queue_add(s->q, rec) != NULL)
        scheduler_kick(s);
    /* else: the DSN is on disk and is delivered after the next start */
    injector_unref(inj);
}

/* The value of parameter key= in m's envelope facts (NULL if absent). */
static const char *
sched_param(const struct queue_msg *m, const char *key, size_t keylen)
{
    unsigned i;

    for (i = 0; i < m->nparams; i++)
        if (strncmp(m->params[i], key, keylen) == 0)
            return m->params[i] + keylen;
    return NULL;
}

static void
sched_rcpt_dsn(const struct queue_msg *m, unsigned idx, struct dsn_rcpt_params *p)
{
    char prefix[32];
    size_t plen;
    unsigned i;

    memset(p, 0, sizeof(*p));
    plen = (size_t)snprintf(prefix, sizeof(prefix), "dsnrcpt=%u ", idx);
    for (i = 0; i < m->nparams; i++)
        if (strncmp(m->params[i], prefix, plen) == 0) {
            const char *t = m->params[i] + plen;
            if (dsn_rcpt_parse_text(t, strlen(t), p) != 0)
                memset(p, 0, sizeof(*p));
            return;
        }
}

/*
 * Recipients of m failed for good in this attempt: send one DSN listing them
 * to the envelope sender (never for a null sender: a double bounce goes to
 * the postmaster instead, and never for a double bounce itself).
 */
static void
sched_bounce(struct scheduler *s, const struct queue_msg *m, const unsigned *idx,
    const char *const *remote_mta, size_t n, time_t now, enum bounce_action action)
{
    struct bounce_rcpt br[64];
    char orcpt[64][512], postmaster[320], salt[24], err[200], id[SPOOL_ID_LEN + 1];
    struct dsn_msg_params mp = {0};
    struct dsn_rcpt_params rp;
    struct bounce_fd_source src = {-1, m->body_off};
    struct bounce_msg bm = {0};
    struct bounce_info info;
    struct spool_msg *msg;
    const char *to = m->sender, *t;
    bool dbl = m->sender[0] == '\0';
    struct buf b;
    size_t i, k = 0;

    if (dbl && action == BOUNCE_DELAYED)
        return; /* no delay notices about mail that has nobody to tell */
    if (dbl) {
        if (sched_param(m, "bounce=", 7) != NULL) {
            log_warn(m->id, "event=bounce-dropped reason=\"a double bounce cannot be returned\"");
            return;
        }
        snprintf(postmaster, sizeof(postmaster), "postmaster@%s",
            s->cfg->local_domains.n ? s->cfg->local_domains.items[0] : s->cfg->hostname);
        to = postmaster;
    }
    for (i = 0; i < n && k < sizeof(br) / sizeof(*br); i++) {
        const struct queue_rcpt *r = &m->rcpts[idx[i]];
        sched_rcpt_dsn(m, idx[i], &rp);
        if (!dbl && !bounce_wanted(m->sender, rp.notify, action))
            continue;
        memset(&br[k], 0, sizeof(br[k]));
        br[k].addr = r->addr;
        br[k].orcpt = rp.orcpt[0] && dsn_orcpt_decode(rp.orcpt, orcpt[k], sizeof(orcpt[k])) >= 0
                          ? orcpt[k]
                          : NULL;
        br[k].action = action;
        if (action == BOUNCE_DELAYED)
            br[k].retry_until = m->arrival + s->cfg->max_queue_lifetime;
        br[k].reply = r->last_reply;
        br[k].remote_mta = remote_mta ? remote_mta[i] : NULL;
        br[k].last_attempt = now;
        k++;
    }
    if (k == 0)
        return;
    if ((t = sched_param(m, "dsn=", 4)) != NULL && dsn_msg_parse_text(t, strlen(t), &mp) != 0)
        memset(&mp, 0, sizeof(mp));
    snprintf(salt, sizeof(salt), "%08llx", (unsigned long long)(sched_random(s) * 4e9));
    bm.hostname = s->cfg->hostname;
    bm.queue_id = m->id;
    bm.sender = to;
    bm.arrival = m->arrival;
    bm.now = now;
    bm.envid = NULL;
    if (mp.envid[0]) {
        static char envid[DSN_ENVID_MAX + 1];
        if (dsn_xtext_decode(mp.envid, strlen(mp.envid), envid, sizeof(envid)) >= 0)
            bm.envid = envid;
    }
    bm.ret = mp.ret;
    bm.smtputf8 = sched_param(m, "SMTPUTF8", 8) != NULL; /* RFC 6533 report */
    bm.boundary_salt = salt;
    bm.rcpts = br;
    bm.nrcpts = k;
    /* XXX the original is read here, on the loop thread: at most its headers and 64 KiB
       of body, from a segment that is usually still in the page cache. */
    if ((src.fd = spool_segment_open(s->sp, m->seg)) >= 0) {
        bm.read = bounce_read_fd;
        bm.read_arg = &src;
        bm.msg_len = m->body_len;
    }
    buf_init(&b, 0);
    if (bounce_build(&bm, &b, &info, err, sizeof(err)) != 0) {
        log_error(m->id, "event=bounce-failed error=\"%s\"", err);
        goto out;
    }
    spool_new_id(s->sp, id);
    if ((msg = spool_msg_new(s->sp, id)) == NULL || spool_msg_set_sender(msg, "") != 0 ||
        spool_msg_add_rcpt(msg, to) != 0 || spool_msg_add_param(msg, "client=localhost") != 0 ||
        (dbl && spool_msg_add_param(msg, "bounce=double") != 0) ||
        (info.eightbit && spool_msg_add_param(msg, "BODY=8BITMIME") != 0) ||
        spool_msg_write(msg, b.data, b.len) != 0) {
        log_error(m->id, "event=bounce-failed error=\"cannot spool the DSN\"");
        if (msg != NULL)
            spool_msg_abort(msg);
        goto out;
    }
    spool_msg_set_arrival(msg, now);
    s->inj->refs++;
    spool_commit_rec(s->sp, msg, sched_on_injected, s->inj);
    log_info(m->id, "event=%s dsn=%s to=<%s> recipients=%zu",
        action == BOUNCE_DELAYED ? "delay-notice" : "bounce", id, to, k);
out:
    if (src.fd >= 0)
        close(src.fd);
    buf_free(&b);
}

/*
 * delay_warning after arrival, with recipients still deferred: tell the
 * sender once (RFC 3464 Action: delayed, Will-Retry-Until); the flag is kept
 * in the message's state record, so a restart does not repeat it.
 */
static void
sched_delay_notice(struct scheduler *s, struct queue_msg *m, time_t now)
{
    struct scheduler_policy pol = sched_policy(s);
    unsigned idx[SCHED_BOUNCE_MAX], i;
    size_t n = 0;

    for (i = 0; i < m->nrcpts && n < SCHED_BOUNCE_MAX; i++)
        if (m->rcpts[i].state == QR_DEFERRED)
            idx[n++] = i;
    if (!scheduler_delay_due(&pol, m->arrival, now, m->warned, n > 0))
        return;
    m->warned = true; /* persisted by the queue_update that follows */
    sched_bounce(s, m, idx, NULL, n, now, BOUNCE_DELAYED);
}

/* ---- per-domain accounting ------------------------------------------------------ */

static struct domcount **
sched_dom_find(struct scheduler *s, const char *domain)
{
    uint32_t h = 2166136261u;
    const char *p;
    struct domcount **pp;

    for (p = domain; *p; p++)
        h = (h ^ (unsigned char)(*p | 0x20)) * 16777619u;
    for (pp = &s->domtab[h % SCHED_DOMTAB]; *pp != NULL; pp = &(*pp)->next)
        if (strcasecmp((*pp)->domain, domain) == 0)
            break;
    return pp;
}

static void
sched_dom_add(struct scheduler *s, const char *domain, int delta)
{
    struct domcount **pp = sched_dom_find(s, domain), *e = *pp;
    size_t len = strlen(domain);

    if (e == NULL) {
        if (delta < 0 || (e = calloc(1, sizeof(*e) + len + 1)) == NULL)
            return;
        memcpy(e->domain, domain, len + 1);
        *pp = e;
    }
    e->n += (unsigned)delta;
    if (e->n == 0) {
        *pp = e->next;
        free(e);
    }
}

/* ---- outcomes (loop thread) ----------------------------------------------------- */

static const char *
sched_relay_label(const struct scheduler *s, const struct job *j, const struct delivery_rcpt *r)
{
    if (j->kind == JOB_LMTP)
        return s->lmtp_target;
    if (j->kind == JOB_REMOTE)
        return r->remote_mta[0] ? r->remote_mta : j->domain;
    return "maildir";
}

/* A job is back (or was decided without a worker): apply it, release the message. */
static void
sched_job_finished(struct scheduler *s, struct job *j, time_t now)
{
    struct queue_msg *m = queue_find(s->q, j->id);
    struct attempt *att = j->att;
    unsigned i;

    s->inflight--;
    if (m != NULL) {
        unsigned failed[SCHED_BOUNCE_MAX];
        const char *mta[SCHED_BOUNCE_MAX];
        size_t nf = 0;
        for (i = 0; i < j->n; i++) {
            const char *rm = j->kind == JOB_REMOTE && j->rcpts[i].remote_mta[0]
                                 ? j->rcpts[i].remote_mta
                                 : NULL;
            if (!sched_apply(s, m, j->index[i], &j->rcpts[i], now,
                    sched_relay_label(s, j, &j->rcpts[i])))
                continue;
            if (att != NULL && att->nfailed < SCHED_BOUNCE_MAX) {
                /* one DSN per message: collect until the attempt's last job is back */
                snprintf(att->mta[att->nfailed], sizeof(att->mta[0]), "%.127s", rm ? rm : "");
                att->failed[att->nfailed++] = j->index[i];
            } else if (nf < SCHED_BOUNCE_MAX) {
                mta[nf] = rm;
                failed[nf++] = j->index[i];
            }
        }
        if (nf > 0)
            sched_bounce(s, m, failed, mta, nf, now, BOUNCE_FAILED);
    }
    if (att != NULL && --att->jobs == 0) {
        if (m != NULL && att->nfailed > 0) {
            const char *mta[SCHED_BOUNCE_MAX];
            for (i = 0; i < att->nfailed; i++)
                mta[i] = att->mta[i][0] ? att->mta[i] : NULL;
            sched_bounce(s, m, att->failed, mta, att->nfailed, now, BOUNCE_FAILED);
        }
        if (m != NULL)
            sched_delay_notice(s, m, now);
        if (m != NULL)
            queue_set_busy(s->q, m, false);
        free(att);
    }
    if (m != NULL)
        queue_update(s->q, m); /* may free m */
    job_free(j);
}

static void
sched_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct scheduler *s = arg;
    struct job *list, *j, *next;
    uint64_t v;
    time_t now = time(NULL);

    if (read(s->efd, &v, sizeof(v)) < 0) {
    }
    pthread_mutex_lock(&s->mu);
    list = s->done;
    s->done = NULL;
    s->done_tail = &s->done;
    pthread_mutex_unlock(&s->mu);

    for (j = list; j != NULL; j = next) {
        next = j->next;
        if (j->kind == JOB_CLEANUP) {
            job_free(j);
            continue;
        }
        if (j->kind == JOB_CONN) {
            sched_conn_closed(s, j, now);
            continue;
        }
        sched_job_finished(s, j, now);
    }
    sched_dispatch(s);
}

static void
sched_submit(struct scheduler *s, struct job *j)
{
    pthread_mutex_lock(&s->mu);
    *s->todo_tail = j;
    s->todo_tail = &j->next;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- outbound connections (loop thread) ------------------------------------------- */

/* Forget a connection: it no longer counts against the limits. */
static void
sched_conn_release(struct scheduler *s, struct job *c)
{
    struct domcount *e = *sched_dom_find(s, c->domain);
    struct job **pp;

    for (pp = e != NULL ? &e->conns : NULL; pp != NULL && *pp != NULL; pp = &(*pp)->conn_next)
        if (*pp == c) {
            *pp = c->conn_next;
            break;
        }
    s->outbound--;
    sched_dom_add(s, c->domain, -1);
    job_free(c);
}

/* Its thread is done with it (or it never got one, at shutdown). */
static void
sched_conn_closed(struct scheduler *s, struct job *c, time_t now)
{
    struct job *j, *next;
    unsigned i;

    log_info(NULL, "event=connection-closed destination=%s messages=%u connections=%u", c->domain,
        c->assigned, c->connections);
    pthread_mutex_lock(&s->mu);
    j = c->waiting;
    c->waiting = NULL;
    c->waiting_tail = &c->waiting;
    c->nwaiting = 0;
    pthread_mutex_unlock(&s->mu);
    for (; j != NULL; j = next) {
        next = j->next;
        j->next = NULL;
        if (s->stopping) {
            job_abandon(j); /* the message stays in the queue as it was */
            continue;
        }
        /* XXX cannot happen (a connection closes with nothing waiting); never leave a
           message busy for ever */
        for (i = 0; i < j->n; i++)
            delivery_set(&j->rcpts[i], R_DLV_MAILDIR_ERROR, "outbound connection closed");
        sched_job_finished(s, j, now);
    }
    sched_conn_release(s, c);
}

/*
 * The connection for a message to dom: an idle one, else a new one while the
 * limits allow, else the least loaded one.  It is reserved for the message
 * (sched_conn_hand or sched_conn_unreserve follow).  NULL: every connection
 * to dom is full or closing and no new one is allowed (or no memory).
 */
static struct job *
sched_conn_pick(struct scheduler *s, const char *dom)
{
    struct domcount *e = *sched_dom_find(s, dom);
    struct job *c, *best = NULL;
    unsigned load, best_load = UINT_MAX;

    pthread_mutex_lock(&s->mu);
    for (c = e != NULL ? e->conns : NULL; c != NULL; c = c->conn_next) {
        if (c->closing || c->assigned >= (unsigned)s->cfg->max_messages_per_connection)
            continue;
        load = c->nwaiting + c->reserved + (c->busy ? 1u : 0u);
        if (load < best_load) {
            best = c;
            best_load = load;
        }
    }
    if (best != NULL && (best_load == 0 || s->outbound >= (unsigned)s->cfg->max_outbound ||
                            e->n >= (unsigned)s->cfg->max_outbound_per_domain)) {
        best->reserved++;
        best->assigned++;
        pthread_mutex_unlock(&s->mu);
        return best;
    }
    pthread_mutex_unlock(&s->mu);
    if (s->outbound >= (unsigned)s->cfg->max_outbound ||
        (e != NULL && e->n >= (unsigned)s->cfg->max_outbound_per_domain))
        return NULL;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->kind = JOB_CONN;
    c->s = s;
    c->relay = s->cfg->relay_host != NULL;
    c->dm.body_fd = -1;
    snprintf(c->domain, sizeof(c->domain), "%s", dom);
    c->waiting_tail = &c->waiting;
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        c->has_cv = pthread_cond_init(&c->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    sched_dom_add(s, dom, 1);
    if (!c->has_cv || (e = *sched_dom_find(s, dom)) == NULL) {
        if (e == NULL || c->has_cv)
            sched_dom_add(s, dom, -1);
        job_free(c);
        return NULL;
    }
    s->outbound++;
    c->conn_next = e->conns;
    e->conns = c;
    c->reserved = c->assigned = 1;
    return c;
}

/*
 * At max_outbound: connections idling for more mail close now, so that the
 * destination waiting for a slot gets one (their threads see closing).
 */
static void
sched_conn_nudge(struct scheduler *s)
{
    struct domcount *e;
    struct job *c;
    unsigned i;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < SCHED_DOMTAB; i++)
        for (e = s->domtab[i]; e != NULL; e = e->next)
            for (c = e->conns; c != NULL; c = c->conn_next)
                if (c->started && !c->busy && !c->closing && c->waiting == NULL &&
                    c->reserved == 0) {
                    c->closing = true;
                    pthread_cond_signal(&c->cv);
                }
    pthread_mutex_unlock(&s->mu);
}

/* A reservation not used after all (the message job could not be made). */
static void
sched_conn_unreserve(struct scheduler *s, struct job *c)
{
    bool unused;

    pthread_mutex_lock(&s->mu);
    c->reserved--;
    c->assigned--;
    unused = !c->started && c->reserved == 0 && c->waiting == NULL;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&s->mu);
    if (unused)
        sched_conn_release(s, c);
}

/* Everything waiting on a connection whose route failed gets that outcome. */
static void
sched_conn_fail(struct scheduler *s, struct job *c, const struct dns_route *r)
{
    struct job *j, *next;
    unsigned i;
    time_t now = time(NULL);

    pthread_mutex_lock(&s->mu);
    c->closing = true;
    j = c->waiting;
    c->waiting = NULL;
    c->waiting_tail = &c->waiting;
    c->nwaiting = 0;
    pthread_mutex_unlock(&s->mu);
    for (; j != NULL; j = next) {
        next = j->next;
        j->next = NULL;
        for (i = 0; i < j->n; i++) {
            if (r->status == DNS_NULL_MX)
                delivery_set(&j->rcpts[i], R_DLV_NULL_MX, c->domain);
            else if (r->status == DNS_NXDOMAIN)
                delivery_set(&j->rcpts[i], R_DLV_NO_DOMAIN, c->domain);
            else
                delivery_set(&j->rcpts[i], R_DLV_DNS_TEMP, c->domain,
                    r->error[0] ? r->error : "no usable address");
        }
        sched_job_finished(s, j, now);
    }
    sched_conn_release(s, c);
}

/* The route of a connection is known: hand it to a thread, or decide its messages now. */
static void
sched_on_route(void *arg, const struct dns_route *r)
{
    struct job *c = arg;
    struct scheduler *s = c->s;
    unsigned i;
    bool oom = false;

    if (c->dns_prev)
        c->dns_prev->dns_next = c->dns_next;
    else
        s->dns_wait = c->dns_next;
    if (c->dns_next)
        c->dns_next->dns_prev = c->dns_prev;
    c->dns_prev = c->dns_next = NULL;

    if (r->status == DNS_OK && r->nhosts > 0 &&
        (c->hosts = calloc(r->nhosts, sizeof(*c->hosts))) != NULL) {
        for (i = 0; i < r->nhosts; i++) {
            snprintf(c->hosts[i].name, sizeof(c->hosts[i].name), "%s", r->hosts[i].name);
            c->hosts[i].addr = r->hosts[i].addr;
            c->hosts[i].addrlen = r->hosts[i].addrlen;
            if (r->hosts[i].dane != DANE_OFF) {
                struct dane_rrset *ds = malloc(sizeof(*ds));

                if (ds == NULL) {
                    oom = true; /* never a host without its DANE state: that could downgrade */
                    continue;
                }
                if (r->hosts[i].tlsa != NULL) {
                    if (dane_rrset_copy(ds, r->hosts[i].tlsa) < 0)
                        oom = true;
                } else {
                    memset(ds, 0, sizeof(*ds));
                }
                ds->state = r->hosts[i].dane;
                c->hosts[i].dane = ds;
            }
        }
        c->nhosts = r->nhosts;
        if (!oom) {
            sched_submit_conn(s, c);
            return;
        }
        for (i = 0; i < c->nhosts; i++) {
            dane_rrset_clear((struct dane_rrset *)c->hosts[i].dane);
            free((struct dane_rrset *)c->hosts[i].dane);
        }
        free(c->hosts);
        c->hosts = NULL;
        c->nhosts = 0;
        sched_conn_fail(s, c, &(struct dns_route){.status = DNS_TEMP, .error = "out of memory"});
        scheduler_kick(s);
        return;
    }
    sched_conn_fail(s, c, r);
    scheduler_kick(s); /* never dispatch from here: this may run inside sched_dispatch */
}

/* Hand message job j to its connection; the first one starts the connection. */
static void
sched_conn_hand(struct scheduler *s, struct job *j)
{
    struct job *c = j->conn;
    char err[256];

    pthread_mutex_lock(&s->mu);
    c->reserved--;
    j->next = NULL;
    *c->waiting_tail = j;
    c->waiting_tail = &j->next;
    c->nwaiting++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&s->mu);
    if (c->started)
        return;
    c->started = true;
    if (c->relay) {
        sched_submit_conn(s, c);
        return;
    }
    c->dns_next = s->dns_wait;
    if (s->dns_wait)
        s->dns_wait->dns_prev = c;
    s->dns_wait = c;
    if (s->dns == NULL &&
        (s->dns = dns_open(s->base, s->cfg->dns_config, err, sizeof(err))) == NULL) {
        struct dns_route r = {.status = DNS_TEMP};

        log_error(NULL, "event=dns-unavailable error=\"%s\"", err);
        snprintf(r.error, sizeof(r.error), "resolver unavailable: %.90s", err);
        sched_on_route(c, &r);
        return;
    }
    if (s->rconf.tls_policy == REMOTE_TLS_DANE && !s->dane_asked) {
        s->dane_asked = true;
        (void)dns_set_dane(s->dns, true); /* without a trust anchor it warns: all insecure */
    }
    dns_route(s->dns, c->domain, (unsigned short)s->cfg->remote_port, sched_on_route, c);
}

/* ---- dispatch (loop thread) ----------------------------------------------------- */

/* The domain of an address (after the last '@'), or "" */
static const char *
sched_domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');

    return at ? at + 1 : "";
}

/* Add recipient i of m to job j (false: out of memory). */
static bool
sched_job_add(struct job *j, const struct queue_rcpt *r, unsigned i, const char *const *targets,
    size_t ntargets)
{
    if ((j->rcpts[j->n].addr = strdup(r->addr)) == NULL)
        return false;
    j->rcpts[j->n].targets = targets;
    j->rcpts[j->n].ntargets = (unsigned)ntargets;
    j->index[j->n] = i;
    j->n++;
    j->dm.nrcpts = j->n;
    return true;
}

/*
 * Route the due recipients of m into jobs: one local job (Maildir or LMTP)
 * and one remote job per destination domain (or one for relay_host).  Those
 * that need no transport (no longer existing) are decided now.  A remote
 * domain at its connection limit is left for later (*blocked).
 */
static struct job *
sched_route(struct scheduler *s, struct queue_msg *m, time_t now, bool *changed, bool *blocked)
{
    struct job *local = NULL, *remote = NULL, *j, *list = NULL;
    struct delivery_rcpt now_rcpt;
    const char *const *targets;
    size_t ntargets;
    unsigned i;

    *changed = *blocked = false;
    for (i = 0; i < m->nrcpts; i++) {
        struct queue_rcpt *r = &m->rcpts[i];

        if ((r->state != QR_PENDING && r->state != QR_DEFERRED) || r->next_attempt > now)
            continue;
        memset(&now_rcpt, 0, sizeof(now_rcpt));
        now_rcpt.addr = r->addr;
        if (!local_is_local(s->local, r->addr)) {
            const char *dom = s->cfg->relay_host ? "relay_host" : sched_domain_of(r->addr);
            for (j = remote; j != NULL && strcasecmp(j->domain, dom) != 0; j = j->next)
                ;
            if (j == NULL) {
                struct job *c = sched_conn_pick(s, dom);
                if (c == NULL) {
                    if (!*blocked && s->outbound >= (unsigned)s->cfg->max_outbound)
                        sched_conn_nudge(s);
                    *blocked = true;
                    continue;
                }
                if ((j = job_new(s, m)) == NULL) {
                    sched_conn_unreserve(s, c);
                    goto oom;
                }
                j->kind = JOB_REMOTE;
                j->conn = c;
                snprintf(j->domain, sizeof(j->domain), "%s", dom);
                if (!job_remote_params(j, m)) {
                    sched_conn_unreserve(s, c);
                    job_free(j);
                    goto oom;
                }
                j->next = remote;
                remote = j;
            }
            if (!sched_job_add(j, r, i, NULL, 0))
                goto oom;
            {
                struct dsn_rcpt_params rp;
                unsigned k = j->n - 1;
                sched_rcpt_dsn(m, i, &rp);
                if (rp.notify && dsn_notify_format(rp.notify, j->notify[k], sizeof(j->notify[k])) >= 0)
                    j->rcpts[k].dsn_notify = j->notify[k];
                if (rp.orcpt[0]) {
                    snprintf(j->orcpt[k], sizeof(j->orcpt[k]), "%.500s", rp.orcpt);
                    j->rcpts[k].dsn_orcpt = j->orcpt[k];
                }
            }
            continue;
        }
        if (!local_resolve(s->local, r->addr, &targets, &ntargets)) {
            delivery_set(&now_rcpt, R_DLV_NO_SUCH_USER, r->addr);
            if (sched_apply(s, m, i, &now_rcpt, now, "local"))
                sched_bounce(s, m, &i, NULL, 1, now, BOUNCE_FAILED);
            *changed = true;
            continue;
        }
        if ((local == NULL && (local = job_new(s, m)) == NULL) ||
            !sched_job_add(local, r, i, targets, ntargets))
            goto oom;
        continue;
    oom:
        /* Out of memory: try again later rather than lose track. */
        delivery_set(&now_rcpt, R_DLV_MAILDIR_ERROR, "out of memory");
        sched_apply(s, m, i, &now_rcpt, now, "local");
        *changed = true;
    }
    for (j = remote; j != NULL; j = remote) {
        remote = j->next;
        if (j->n == 0) { /* every recipient of it hit out-of-memory */
            sched_conn_unreserve(s, j->conn);
            job_free(j);
            continue;
        }
        j->next = list;
        list = j;
    }
    if (local != NULL && local->n > 0) {
        local->next = list;
        list = local;
    } else {
        job_free(local);
    }
    return list;
}

static void
sched_dispatch(struct scheduler *s)
{
    time_t now = time(NULL);
    struct queue_msg *m;
    struct job *list, *j, *next;
    struct attempt *att;
    bool changed, blocked;

    s->blocked = false;
    while (!s->stopping && s->inflight < s->max_inflight &&
           (m = queue_next_due(s->q, now)) != NULL) {
        list = sched_route(s, m, now, &changed, &blocked);
        s->blocked = blocked;
        if (list == NULL) {
            if (changed)
                queue_update(s->q, m); /* may free m when nothing is left to do */
            if (blocked || !changed)
                break; /* XXX a destination at its limit holds up the messages behind it */
            continue;
        }
        {
            unsigned n = 0;
            for (j = list; j != NULL; j = j->next)
                n++;
            if ((att = calloc(1, sizeof(*att))) != NULL) {
                snprintf(att->id, sizeof(att->id), "%s", m->id);
                att->jobs = n;
            }
            queue_set_busy(s->q, m, true);
            if (changed)
                queue_update(s->q, m); /* busy with jobs pending: m stays */
            /* From here m may go away (a job can finish at once): do not touch it. */
            for (j = list; j != NULL; j = next) {
                next = j->next;
                j->next = NULL;
                j->att = att;
                s->inflight++;
                if (j->kind == JOB_REMOTE)
                    sched_conn_hand(s, j);
                else
                    sched_submit(s, j);
            }
        }
        if (blocked)
            break; /* XXX a destination at its connection limit holds up the messages behind it */
    }
    sched_arm(s);
}

static void
sched_on_timer(evutil_socket_t fd, short what, void *arg)
{
    sched_dispatch(arg);
}

/* Maildir tmp/ cleanup, on a worker: at start (a killed tern's orphans) and hourly. */
static void
sched_submit_cleanup(struct scheduler *s)
{
    struct job *j;

    if (s->use_lmtp || (j = calloc(1, sizeof(*j))) == NULL)
        return;
    j->kind = JOB_CLEANUP;
    j->dm.body_fd = -1;
    pthread_mutex_lock(&s->mu);
    *s->todo_tail = j;
    s->todo_tail = &j->next;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void
sched_on_maint(evutil_socket_t fd, short what, void *arg)
{
    struct scheduler *s = arg;

    queue_maintain(s->q);
    if (++s->maint_ticks % (3600 / SCHED_MAINT_SECONDS) == 0)
        sched_submit_cleanup(s);
}

/* Wake up when the next message becomes due (busy ones come back through on_done). */
static void
sched_arm(struct scheduler *s)
{
    time_t next = queue_next_wakeup(s->q), now = time(NULL);
    struct timeval tv = {0, 0};

    if (next == 0 || s->stopping || s->inflight >= s->max_inflight) {
        evtimer_del(s->ev_timer);
        return;
    }
    tv.tv_sec = next > now ? next - now : 0;
    if (tv.tv_sec == 0)
        tv.tv_usec = 1000; /* due now: soon, but after the current event */
    if (s->blocked && tv.tv_sec == 0)
        tv = (struct timeval){1, 0}; /* at an outbound limit: a finishing job kicks us sooner */
    evtimer_add(s->ev_timer, &tv);
}

void
scheduler_kick(struct scheduler *s)
{
    struct timeval tv = {0, 0};

    if (s->inflight < s->max_inflight && !s->stopping)
        evtimer_add(s->ev_timer, &tv);
}

/* ---- lifecycle ------------------------------------------------------------------ */

struct scheduler *
scheduler_new(struct event_base *base, const struct config *cfg, struct queue *q,
    struct spool *sp, struct local *local, char *err, size_t errlen)
{
    struct scheduler *s;
    unsigned i;

    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->cfg = cfg;
    s->q = q;
    s->sp = sp;
    s->local = local;
    s->max_inflight = (unsigned)cfg->delivery_concurrency;
    if ((s->inj = calloc(1, sizeof(*s->inj))) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->inj->s = s;
    s->inj->refs = 1;
    s->rng = (uint64_t)time(NULL) * 6364136223846793005ull + (uint64_t)getpid();
    s->todo_tail = &s->todo;
    s->done_tail = &s->done;
    s->rtodo_tail = &s->rtodo;
    s->use_lmtp = strncmp(cfg->local_delivery, "lmtp:", 5) == 0;
    if (s->use_lmtp) {
        snprintf(s->lmtp_target, sizeof(s->lmtp_target), "%s", cfg->local_delivery + 5);
        s->lmtp.target = s->lmtp_target;
        s->lmtp.hostname = cfg->hostname;
        s->lmtp.timeout = SCHED_LMTP_TIMEOUT;
    }
    /* RFC 5321 §4.5.3.2 client timeouts */
    s->rconf = (struct remote_conf){.hostname = cfg->hostname,
        .timeout_connect = (int)cfg->remote_timeout_connect,
        .timeout_greeting = (int)cfg->remote_timeout_command,
        .timeout_helo = (int)cfg->remote_timeout_command,
        .timeout_mail = (int)cfg->remote_timeout_command,
        .timeout_rcpt = (int)cfg->remote_timeout_command,
        .timeout_data = (int)cfg->remote_timeout_data_init,
        .timeout_block = (int)cfg->remote_timeout_data_block,
        .timeout_dot = (int)cfg->remote_timeout_data_done,
        .timeout_quit = 10,
        .tls_policy = remote_tls_policy(cfg->tls_policy),
        .tls_ca_file = cfg->tls_ca_file};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->rcv, NULL);
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->ev_done = s->efd >= 0 ? event_new(base, s->efd, EV_READ | EV_PERSIST, sched_on_done, s)
                             : NULL;
    s->ev_timer = evtimer_new(base, sched_on_timer, s);
    s->ev_maint = event_new(base, -1, EV_PERSIST, sched_on_maint, s);
    if (s->ev_done == NULL || s->ev_timer == NULL || s->ev_maint == NULL) {
        snprintf(err, errlen, "cannot set up the scheduler's events");
        goto fail;
    }
    event_add(s->ev_done, NULL);
    {
        struct timeval tv = {SCHED_MAINT_SECONDS, 0};
        event_add(s->ev_maint, &tv);
    }
    s->nthreads = s->use_lmtp ? s->max_inflight : SCHED_MAILDIR_THREADS;
    if (s->nthreads > SCHED_LMTP_THREADS_MAX)
        s->nthreads = SCHED_LMTP_THREADS_MAX;
    if (s->nthreads > s->max_inflight)
        s->nthreads = s->max_inflight;
    if ((s->threads = calloc(s->nthreads, sizeof(*s->threads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (i = 0; i < s->nthreads; i++)
        if (pthread_create(&s->threads[i], NULL, sched_worker, s) != 0) {
            snprintf(err, errlen, "cannot start delivery threads: %s", strerror(errno));
            s->nthreads = i;
            goto fail;
        }
    /* one thread per outbound connection, started as connections need them */
    s->rthreads_max = (unsigned)cfg->max_outbound;
    if ((s->rthreads = calloc(s->rthreads_max, sizeof(*s->rthreads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    sched_submit_cleanup(s);
    scheduler_kick(s);
    return s;
fail:
    scheduler_free(s);
    return NULL;
}

/* At shutdown: a job that will not run (its attempt is forgotten with it). */
static void
job_abandon(struct job *j)
{
    if (j->att != NULL && --j->att->jobs == 0)
        free(j->att);
    job_free(j);
}

void
scheduler_free(struct scheduler *s)
{
    struct job *j, *next;
    unsigned i;

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_cond_broadcast(&s->rcv);
    for (i = 0; i < SCHED_DOMTAB; i++) {
        struct domcount *e;
        for (e = s->domtab[i]; e != NULL; e = e->next)
            for (j = e->conns; j != NULL; j = j->conn_next)
                if (j->has_cv)
                    pthread_cond_broadcast(&j->cv); /* an idle connection: close now */
    }
    pthread_mutex_unlock(&s->mu);
    for (i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    for (i = 0; i < s->nrthreads; i++)
        pthread_join(s->rthreads[i], NULL);
    /* Attempts that finished, connections closed: record them (the spool is still open). */
    if (s->ev_done != NULL)
        sched_on_done(s->efd, EV_READ, s);
    /* Routes still being looked up: cancelled; those messages are tried at the next start. */
    if (s->dns != NULL)
        dns_close(s->dns);
    for (j = s->dns_wait; j != NULL; j = next) {
        next = j->dns_next;
        sched_conn_closed(s, j, time(NULL));
    }
    /* Connections no thread took: their messages stay in the queue as they were. */
    for (j = s->rtodo; j != NULL; j = next) {
        next = j->next;
        sched_conn_closed(s, j, time(NULL));
    }
    for (i = 0; i < SCHED_DOMTAB; i++) {
        struct domcount *e, *en;
        for (e = s->domtab[i]; e != NULL; e = en) {
            en = e->next;
            free(e);
        }
    }
    /* Attempts never started: the messages stay in the queue as they were. */
    for (j = s->todo; j != NULL; j = next) {
        next = j->next;
        job_abandon(j);
    }
    if (s->ev_done)
        event_free(s->ev_done);
    if (s->ev_timer)
        event_free(s->ev_timer);
    if (s->ev_maint)
        event_free(s->ev_maint);
    if (s->efd >= 0)
        close(s->efd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->rcv);
    free(s->threads);
    free(s->rthreads);
    s->inj->s = NULL;
    injector_unref(s->inj);
    free(s);
}

void
scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *st)
{
    *st = s->stats;
}
