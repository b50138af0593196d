/*
 * scheduler.h - what gets delivered when.
 *
 * The scheduler alone decides what happens after a delivery attempt
 * (STYLE.md rule 7): it takes due messages from the queue, routes each
 * recipient (local mailbox via Maildir or LMTP; remote: not yet), hands the
 * work to a pool of worker threads (so the event loop never waits for a
 * disk or a socket), and applies the per-recipient outcomes: delivered,
 * deferred with exponential backoff between min_backoff and max_backoff
 * (with jitter), or failed (permanent reply, or max_queue_lifetime passed).
 * Maildir deliveries in flight are batched so that they share syncs.
 */
#ifndef TERN_DELIVER_SCHEDULER_H
#define TERN_DELIVER_SCHEDULER_H

#include <event2/event.h>
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

struct scheduler_stats {
    unsigned long long attempts, delivered, deferred, failed, batches;
};
void scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *st);

#endif
