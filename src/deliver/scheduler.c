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
 */
#include "deliver/scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "deliver/delivery.h"
#include "deliver/lmtp.h"
#include "deliver/maildir.h"
#include "util/log.h"

#define SCHED_BATCH_MAX 64
#define SCHED_MAILDIR_THREADS 4
#define SCHED_LMTP_THREADS_MAX 64
#define SCHED_MAINT_SECONDS 5
#define SCHED_LMTP_TIMEOUT 300 /* seconds per LMTP step, as RFC 5321 §4.5.3.2 for MAIL/RCPT */

enum job_kind { JOB_MAILDIR, JOB_LMTP, JOB_CLEANUP };

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

    int efd;
    struct event *ev_done;
    struct event *ev_timer;
    struct event *ev_maint;    /* segment reclamation and compaction */
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

/* ---- outcomes (loop thread) ----------------------------------------------------- */

/* Apply one recipient's outcome; the scheduler's decision lives here only. */
static void
sched_apply(struct scheduler *s, struct queue_msg *m, unsigned idx,
    const struct delivery_rcpt *d, time_t now, const char *relay)
{
    struct queue_rcpt *r = &m->rcpts[idx];
    const char *event;

    r->attempts++;
    switch (d->status) {
    case DLV_OK:
        queue_rcpt_set(r, QR_DELIVERED, d->reply, 0);
        s->stats.delivered++;
        event = "delivered";
        break;
    case DLV_TEMP:
        if (now - m->arrival >= s->cfg->max_queue_lifetime) {
            /* XXX the DSN to the sender arrives with the relaying work (issue 4) */
            queue_rcpt_set(r, QR_FAILED, d->reply, 0);
            s->stats.failed++;
            event = "expired";
        } else {
            queue_rcpt_set(r, QR_DEFERRED, d->reply,
                now + scheduler_backoff(s->cfg->min_backoff, s->cfg->max_backoff, r->attempts,
                          sched_random(s)));
            s->stats.deferred++;
            event = "deferred";
        }
        break;
    default:
        queue_rcpt_set(r, QR_FAILED, d->reply, 0);
        s->stats.failed++;
        event = "failed";
        break;
    }
    s->stats.attempts++;
    log_info(m->id, "event=%s to=<%s> relay=%s attempts=%u delay=%lds reply=\"%s\"", event,
        r->addr, relay, r->attempts, (long)(now - m->arrival), d->reply);
}

static void sched_dispatch(struct scheduler *s);
static void sched_arm(struct scheduler *s);

static void
sched_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct scheduler *s = arg;
    struct job *list, *j, *next;
    struct queue_msg *m;
    uint64_t v;
    time_t now = time(NULL);
    unsigned i;

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
        s->inflight--;
        if ((m = queue_find(s->q, j->id)) != NULL) {
            for (i = 0; i < j->n; i++)
                sched_apply(s, m, j->index[i], &j->rcpts[i], now,
                    j->kind == JOB_LMTP ? s->lmtp_target : "maildir");
            queue_set_busy(s->q, m, false);
            queue_update(s->q, m); /* may free m */
        }
        job_free(j);
    }
    sched_dispatch(s);
}

/* ---- dispatch (loop thread) ----------------------------------------------------- */

/*
 * Route the due recipients of m: those that need no transport (remote, or
 * no longer existing) are decided now; the rest become one job.  Returns the
 * job (NULL if none is needed or memory ran out; then m was updated).
 */
static struct job *
sched_route(struct scheduler *s, struct queue_msg *m, time_t now, bool *changed)
{
    struct job *j = job_new(s, m);
    struct delivery_rcpt now_rcpt;
    const char *const *targets;
    size_t ntargets;
    unsigned i;

    *changed = false;
    for (i = 0; i < m->nrcpts; i++) {
        struct queue_rcpt *r = &m->rcpts[i];

        if ((r->state != QR_PENDING && r->state != QR_DEFERRED) || r->next_attempt > now)
            continue;
        memset(&now_rcpt, 0, sizeof(now_rcpt));
        now_rcpt.addr = r->addr;
        if (!local_is_local(s->local, r->addr)) {
            delivery_set(&now_rcpt, R_DLV_NO_REMOTE);
            sched_apply(s, m, i, &now_rcpt, now, "none");
            *changed = true;
            continue;
        }
        if (!local_resolve(s->local, r->addr, &targets, &ntargets)) {
            delivery_set(&now_rcpt, R_DLV_NO_SUCH_USER, r->addr);
            sched_apply(s, m, i, &now_rcpt, now, "local");
            *changed = true;
            continue;
        }
        if (j == NULL || (j->rcpts[j->n].addr = strdup(r->addr)) == NULL) {
            /* Out of memory: try again later rather than lose track. */
            delivery_set(&now_rcpt, R_DLV_MAILDIR_ERROR, "out of memory");
            sched_apply(s, m, i, &now_rcpt, now, "local");
            *changed = true;
            continue;
        }
        j->rcpts[j->n].targets = targets;
        j->rcpts[j->n].ntargets = (unsigned)ntargets;
        j->index[j->n] = i;
        j->n++;
    }
    if (j != NULL && j->n == 0) {
        job_free(j);
        j = NULL;
    }
    if (j != NULL)
        j->dm.nrcpts = j->n;
    return j;
}

static void
sched_dispatch(struct scheduler *s)
{
    time_t now = time(NULL);
    struct queue_msg *m;
    struct job *j;
    bool changed, submitted = false;

    while (!s->stopping && s->inflight < s->max_inflight &&
           (m = queue_next_due(s->q, now)) != NULL) {
        j = sched_route(s, m, now, &changed);
        if (j != NULL) {
            queue_set_busy(s->q, m, true);
            pthread_mutex_lock(&s->mu);
            *s->todo_tail = j;
            s->todo_tail = &j->next;
            pthread_mutex_unlock(&s->mu);
            s->inflight++;
            submitted = true;
        }
        if (changed)
            queue_update(s->q, m); /* may free m when nothing is left to do */
        else if (j == NULL)
            break; /* due but nothing routable: cannot happen; do not spin */
    }
    if (submitted)
        pthread_cond_broadcast(&s->cv);
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
    s->rng = (uint64_t)time(NULL) * 6364136223846793005ull + (uint64_t)getpid();
    s->todo_tail = &s->todo;
    s->done_tail = &s->done;
    s->use_lmtp = strncmp(cfg->local_delivery, "lmtp:", 5) == 0;
    if (s->use_lmtp) {
        snprintf(s->lmtp_target, sizeof(s->lmtp_target), "%s", cfg->local_delivery + 5);
        s->lmtp.target = s->lmtp_target;
        s->lmtp.hostname = cfg->hostname;
        s->lmtp.timeout = SCHED_LMTP_TIMEOUT;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
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
    sched_submit_cleanup(s);
    scheduler_kick(s);
    return s;
fail:
    scheduler_free(s);
    return NULL;
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
    pthread_mutex_unlock(&s->mu);
    for (i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    /* Attempts that finished: record their outcomes (the spool is still open). */
    if (s->ev_done != NULL)
        sched_on_done(s->efd, EV_READ, s);
    /* Attempts never started: the messages stay in the queue as they were. */
    for (j = s->todo; j != NULL; j = next) {
        next = j->next;
        job_free(j);
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
    free(s->threads);
    free(s);
}

void
scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *st)
{
    *st = s->stats;
}
