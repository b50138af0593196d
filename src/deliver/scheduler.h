/*
 * scheduler.h - what gets delivered when.
 *
 * The scheduler alone decides what happens after a delivery attempt
 * (STYLE.md rule 7): it takes due messages from the queue, routes each
 * recipient (local mailbox via Maildir or LMTP; remote: by MX or relay_host,
 * over outbound connections that carry several messages each), hands the
 * work to worker threads (so the event loop never waits for a disk or a
 * socket), and applies the per-recipient outcomes: delivered,
 * deferred with exponential backoff between min_backoff and max_backoff
 * (with jitter), or failed (permanent reply, or max_queue_lifetime passed).
 * Maildir deliveries in flight are batched so that they share syncs.
 */
#ifndef TERN_DELIVER_SCHEDULER_H
#define TERN_DELIVER_SCHEDULER_H

#include <event2/event.h>
#include <stdbool.h>
#include <time.h>

#include "deliver/local.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "util/config.h"

struct scheduler;

struct scheduler *scheduler_new(struct event_base *base, const struct config *cfg,
    struct queue *q, struct spool *sp, struct local *local, char *err, size_t errlen);

/* Something may be due now (a new message, a flush): look at the queue soon. */
void scheduler_kick(struct scheduler *s);

/* Stop dispatching; wait for attempts in flight and apply their outcomes. */
void scheduler_free(struct scheduler *s);

/*
 * The retry delay after the n-th failed attempt (n >= 1): min_backoff *
 * 2^(n-1), at most max_backoff, then +-10% jitter from r (0..1).  Exposed
 * for tests (a pure function of its arguments).
 */
time_t scheduler_backoff(long min_backoff, long max_backoff, unsigned attempts, double r);

/*
 * The decision after one attempt for one recipient, apart from threads,
 * clocks and the queue so that a test can drive it with a fake clock.  The
 * scheduler applies exactly this (sched_apply, sched_delay_notice).
 */
struct scheduler_policy {
    long min_backoff, max_backoff; /* seconds */
    long max_queue_lifetime;       /* seconds after arrival */
    long delay_warning;            /* seconds after arrival; <= 0: none */
};

enum scheduler_verdict {
    SCHED_V_DELIVERED, /* done */
    SCHED_V_DEFERRED,  /* retry at *next */
    SCHED_V_FAILED,    /* permanent reply: done, a DSN is owed, never retried */
    SCHED_V_EXPIRED,   /* transient, but max_queue_lifetime has passed: failed (5.4.7), DSN */
};

/*
 * Recipient with the status of its attempt (DLV_OK/TEMP/PERM from
 * deliver/delivery.h) that ended at now, its attempts counted including this
 * one (>= 1), r the jitter (0..1).  For SCHED_V_DEFERRED, *next = now +
 * scheduler_backoff(): from the time of the failure itself, to the second;
 * else *next = 0.
 */
enum scheduler_verdict scheduler_decide(const struct scheduler_policy *p, time_t arrival,
    time_t now, int status, unsigned attempts, double r, time_t *next);

/*
 * Is the one delay notice (RFC 3464 Action: delayed) due now for a message
 * that arrived at arrival, not warned yet, with recipients still deferred?
 * Only when delay_warning > 0, has passed, and is before max_queue_lifetime.
 */
bool scheduler_delay_due(
    const struct scheduler_policy *p, time_t arrival, time_t now, bool warned, bool deferred);

struct scheduler_stats {
    unsigned long long attempts, delivered, deferred, failed, batches;
};
void scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *st);

#endif
