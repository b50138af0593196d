/*
 * queue.h - the queue in memory: every message not yet finished, with its
 * per-recipient state, rebuilt from the spool alone at start.
 *
 * The spool (spool.c) is the only writer of the disk; this module decides
 * what to write: a message record when a message is accepted (via the
 * session's commit), then state records (snapshots of every recipient's
 * state) as deliveries progress.  It also decides when a segment holds
 * nothing live and can be removed (oldest first, with compaction: a
 * segment pinned by a few long-lived messages gets them copied forward).
 *
 * Everything here runs on the event-loop thread.
 *
 * State text (the body of a state record), one line per recipient in
 * envelope order, then flags; see docs/queue.md:
 *   r <index> <state> <attempts> <next_attempt> <last reply or ->\n
 *   h <0|1>\n                          held
 *   w 1\n                              a delay notice was sent (delay_warning)
 *   d\n                                deleted by the operator (no more delivery)
 * where state is one of p (pending), q (deferred), D (delivered), F (failed).
 */
#ifndef TERN_QUEUE_QUEUE_H
#define TERN_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "queue/spool.h"

enum queue_rcpt_state {
    QR_PENDING = 0, /* not tried yet */
    QR_DEFERRED,    /* tried, transient failure: retry at next_attempt */
    QR_DELIVERED,   /* done */
    QR_FAILED,      /* permanent failure: done (a DSN is owed, issue 4) */
};

struct queue_rcpt {
    char *addr;
    enum queue_rcpt_state state;
    unsigned attempts;
    time_t next_attempt;  /* for PENDING/DEFERRED: not before this time (0: now) */
    char *last_reply;     /* "452 4.2.2 Mailbox full" (one line, no CRLF), or NULL */
};

struct queue_msg {
    char id[SPOOL_ID_LEN + 1];
    char *sender;                /* "" for the null reverse-path */
    struct queue_rcpt *rcpts;
    unsigned nrcpts;
    char **params;               /* "BODY=8BITMIME", "client=...", ... */
    unsigned nparams;
    time_t arrival;
    uint64_t seg;                /* where the message record lies */
    uint64_t off;
    uint64_t body_off;
    uint64_t body_len;
    bool held;                   /* by the operator: not delivered until released */
    bool warned;                 /* a delay notice (DSN, action delayed) went to the sender */
    bool busy;                   /* a delivery attempt is in flight (not persisted) */
    /* private to queue.c */
    void *priv;
};

struct queue;

/*
 * Build the queue from the spool (spool_scan_records): messages whose
 * recipients are all DELIVERED/FAILED, or deleted, are dropped; segments
 * holding nothing live are removed.  NULL with a reason on failure.
 */
struct queue *queue_open(struct spool *sp, char *err, size_t errlen);
void queue_close(struct queue *q);

/* A message was just committed (from spool_commit_rec's done): index it. */
struct queue_msg *queue_add(struct queue *q, const struct spool_record *rec);

/*
 * Housekeeping, to be called periodically (every few seconds) from the loop:
 * removes segments that hold nothing live, and when the oldest segment is
 * pinned by a few long-lived messages, copies them forward (a bounded step
 * per call; see docs/queue.md for the trigger).  A delivery should open its
 * message's segment (spool_segment_open(m->seg)) when the attempt starts: a
 * copy may move m->seg meanwhile, and the old file stays readable through
 * that descriptor after it is removed.
 */
void queue_maintain(struct queue *q);

/* The message with the earliest due recipient that is due at or before now and is
   neither held nor busy; NULL if none. */
struct queue_msg *queue_next_due(struct queue *q, time_t now);
/* Earliest time a not-held, not-busy message becomes due; 0 if the queue has none (a
   message due "at 0", i.e. now, gives 1: a time in the past). */
time_t queue_next_wakeup(struct queue *q);

void queue_set_busy(struct queue *q, struct queue_msg *m, bool busy);

/*
 * The caller changed recipients' state/attempts/next_attempt/last_reply
 * (use queue_rcpt_set for the reply).  Writes a state record; when no
 * recipient is pending or deferred any more the message leaves the queue
 * (m is freed: do not use it after this call) and segments may be removed.
 */
void queue_update(struct queue *q, struct queue_msg *m);
void queue_rcpt_set(struct queue_rcpt *r, enum queue_rcpt_state st, const char *reply,
    time_t next_attempt);

/* Operator actions by ID: 0, or -1 if there is no such message.  Each writes a state record.
   Deleting a message whose attempt is in flight (busy) takes it out of the queue's view at
   once; m stays valid until that attempt's queue_update, which frees it. */
struct queue_msg *queue_find(struct queue *q, const char *id);
int queue_hold(struct queue *q, const char *id);
int queue_release(struct queue *q, const char *id);
int queue_delete(struct queue *q, const char *id);
/* Make every deferred recipient of id (or of all messages if id is NULL) due now. */
int queue_flush(struct queue *q, const char *id);

/* Visit every message in arrival order (ID order: IDs sort by creation time); stop when
   cb returns nonzero.  cb must not change the queue. */
void queue_foreach(struct queue *q, int (*cb)(void *arg, const struct queue_msg *m), void *arg);
size_t queue_count(const struct queue *q);

/* Parse an envelope text (the message record's data) into m's sender/rcpts/params/arrival.
   0 or -1 (malformed). Exposed for tests.  Everything it allocates is one block starting
   at m->rcpts (recipients, parameters, strings): free(m->rcpts) releases it, after
   freeing any rcpts[i].last_reply. */
int queue_parse_envelope(struct queue_msg *m, const char *text, size_t len);

const char *queue_rcpt_state_name(enum queue_rcpt_state s);

#endif
