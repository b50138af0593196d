/*
 * spool.h - the spool: the one component that writes the queue.
 *
 * Messages are appended to segment files (spool_dir/seg/NNNNNNNNNNNNNNNN.seg)
 * by one committer thread.  Sessions hand over finished messages with
 * spool_commit(); the committer takes everything that has arrived while the
 * previous batch was syncing, appends each record, calls fdatasync(2) once
 * for the whole batch (and fsyncs the directory when a new segment was
 * created), then reports every message of the batch back to the event loop.
 * So many concurrent sessions share one sync (group commit), and the event
 * loop never waits for the disk.  The record format is in docs/queue.md.
 *
 * Threading: every function here except the committer's own is called from
 * the event-loop thread.  Completions are delivered on that thread by
 * spool_reap(), which the loop calls when spool_event_fd() is readable.
 *
 * Promise: the done callback is called with err == 0 only after the message's
 * record (envelope and body) is on stable storage.  Otherwise err is an errno
 * (ENOSPC, EDQUOT, EIO, ...) and nothing of the message will ever be
 * recovered as committed.
 */
#ifndef TERN_QUEUE_SPOOL_H
#define TERN_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SPOOL_ID_LEN 16 /* queue IDs: 16 characters [0-9A-Z] */

struct spool;
struct spool_msg;

struct spool_stats {
    uint64_t committed;  /* records acknowledged durable (messages, state records, copies) */
    uint64_t failed;     /* records whose commit failed */
    uint64_t batches;    /* fdatasync calls */
    uint64_t bytes;      /* record bytes written */
};

/*
 * Open (creating if needed) the spool under dir and start the committer
 * thread.  spill_threshold: bodies larger than this go to a temporary file
 * under dir/tmp instead of memory (bounded memory per session).  NULL with a
 * reason in err on failure.
 */
struct spool *spool_open(const char *dir, size_t spill_threshold, char *err, size_t errlen);

/* Finish committing what is in flight, stop the thread, close files. */
void spool_close(struct spool *sp);

/* An fd that becomes readable when completions are waiting for spool_reap(). */
int spool_event_fd(struct spool *sp);
/* Run the done callbacks of finished commits (event-loop thread). */
void spool_reap(struct spool *sp);

/* A fresh queue ID (unique across restarts: time-based plus a counter). */
void spool_new_id(struct spool *sp, char id[SPOOL_ID_LEN + 1]);

/* Start a message; the ID is the one given (from spool_new_id). NULL if out of memory. */
struct spool_msg *spool_msg_new(struct spool *sp, const char *id);

/* Envelope (copied). Call before spool_commit; recipients in the order accepted. */
int spool_msg_set_sender(struct spool_msg *m, const char *sender);
int spool_msg_add_rcpt(struct spool_msg *m, const char *rcpt);
/* ESMTP parameters and facts kept with the envelope, e.g. "BODY=8BITMIME", "SMTPUTF8",
   "client=[127.0.0.1]", "helo=..." : free-form "key=value" lines, no CR/LF. */
int spool_msg_add_param(struct spool_msg *m, const char *kv);
void spool_msg_set_arrival(struct spool_msg *m, time_t t);

/* Append body bytes: -1 with errno on failure (then the message can only be aborted). */
int spool_msg_write(struct spool_msg *m, const void *p, size_t n);
size_t spool_msg_size(const struct spool_msg *m);
const char *spool_msg_id(const struct spool_msg *m);

/* Drop a message that will not be committed (RSET, error, disconnect). */
void spool_msg_abort(struct spool_msg *m);

typedef void (*spool_done_fn)(void *arg, int err, const char *id);

/*
 * Hand the message to the committer; ownership passes to the spool.  done is
 * called once, from spool_reap() on the loop thread, with 0 or an errno.
 * To cancel interest (the client went away), the caller keeps arg alive or
 * uses spool_commit_detach().
 */
void spool_commit(struct spool *sp, struct spool_msg *m, spool_done_fn done, void *arg);

/* The caller of spool_commit() will not be there for done: drop the callback. */
void spool_commit_detach(struct spool *sp, void *arg);

void spool_get_stats(struct spool *sp, struct spool_stats *st);

/*
 * Test hooks (never set in production): make the committer fail the next
 * batch with errno err; or skip fdatasync (the negative control of the
 * crash tests).  Also settable by env TERN_SPOOL_NOSYNC=1 in test builds.
 */
void spool_test_fail_next(struct spool *sp, int err);
/* Rotate the active segment once it holds this many bytes (tests: small segments). */
void spool_test_set_segment_max(struct spool *sp, uint64_t bytes);

/*
 * Recovery: walk the segments under dir/seg in order and call cb for every
 * valid message record: its queue ID, its envelope (envlen bytes, also
 * NUL-terminated: "S sender", "R rcpt"..., "P key=value"..., "T time" lines)
 * and where its body lies (body_len bytes at body_off in the file segpath).
 * Each record is checked (magic, lengths, crc32); the first invalid or
 * truncated one ends that segment (the unacknowledged tail of a crash) and is
 * logged.  Needs no open spool (on a spool in use, a batch being written at
 * that moment looks torn and is skipped).  Returns 0 when all was walked, cb's nonzero
 * return value when cb stopped the walk, or -1 with errno on an I/O error.
 */
int spool_scan(const char *dir, int (*cb)(void *arg, const char *id, const char *envelope,
    size_t envlen, uint64_t body_off, uint64_t body_len, const char *segpath), void *arg);

/* ---- issue 3: state records, locations, reclamation --------------------- */

/*
 * Record types.  A message record holds the envelope and the body; a state
 * record holds a snapshot of a message's per-recipient state (the text
 * written by queue.c, see docs/queue.md); the newest state record of an ID
 * supersedes older ones and the message record's initial "all pending".  A
 * message record of an ID seen before (a copy moved forward by compaction)
 * supersedes the older copy.
 */
#define SPOOL_REC_MESSAGE 1
#define SPOOL_REC_STATE 2

struct spool_record {
    unsigned type;         /* SPOOL_REC_* */
    const char *id;        /* NUL-terminated */
    const char *data;      /* envelope (message) or state text (state), NUL-terminated */
    size_t datalen;
    uint64_t seg;          /* segment number (its file: spool_dir/seg/%016llx.seg) */
    uint64_t off;          /* offset of the record header in the segment */
    uint64_t body_off;     /* message records: where the body lies in the segment */
    uint64_t body_len;
};

/*
 * Walk every valid record of every segment in order (same validation and
 * torn-tail rule as spool_scan), message and state records alike; r and its
 * strings are valid only during the call.  0, cb's nonzero return, or -1
 * with errno.
 */
int spool_scan_records(const char *dir, int (*cb)(void *arg, const struct spool_record *r),
    void *arg);

/*
 * Like spool_commit, but done also receives the record as stored (its
 * segment and offsets, and the envelope text), so the queue can index it
 * without re-reading.  rec is NULL when err != 0; it is valid only during
 * the call.  Until that callback has run, the record's segment cannot be
 * removed (spool_segment_remove says EBUSY).
 */
typedef void (*spool_done_rec_fn)(void *arg, int err, const struct spool_record *rec);
void spool_commit_rec(struct spool *sp, struct spool_msg *m, spool_done_rec_fn done, void *arg);

/*
 * Append a state record for id (text: no NUL; any bytes otherwise; at most
 * 16 MiB), group committed with everything else; done (may be NULL) is
 * called on the loop thread with 0 once it is durable, or an errno.
 * Detachable like commits (spool_commit_detach with the same arg).  Records
 * are durable in the order they were handed over, whatever their kind.
 */
void spool_commit_state(struct spool *sp, const char *id, const char *text, size_t len,
    spool_done_rec_fn done, void *arg);

/*
 * Copy a message forward: append a new message record with the same ID,
 * envelope and body (read from segment seg at off, its crc checked again) to
 * the active segment, followed by a state record with text, in one batch.
 * Used to free an old segment that a few long-lived messages still pin.
 * done receives the new message record (err EIO if the old one is invalid).
 * The copy's header carries a flag (docs/queue.md) so that recovery does not
 * take its old ID for the newest.
 */
void spool_copy_forward(struct spool *sp, uint64_t seg, uint64_t off, const char *text,
    size_t len, spool_done_rec_fn done, void *arg);

/* The segment new records go to now (never removable), or 0 if none is open. */
uint64_t spool_active_segment(struct spool *sp);
/*
 * All segment numbers present, ascending, without those whose removal was
 * asked for (a failed unlink puts its segment back); caller frees *segs.
 * Count, or -1.  No I/O: the spool keeps the list.
 */
int spool_segments(struct spool *sp, uint64_t **segs);
/*
 * Delete a segment that holds nothing live any more (the queue decides).
 * -1 with EBUSY for the active segment or one holding records whose done
 * callbacks have not run yet, ENOENT if not listed; else 0, and the unlink
 * runs on the committer thread in FIFO order with records: after every
 * record handed over before this call is durable, and seg/ is fsynced before
 * anything of that batch is reported.  A failed unlink is logged and the
 * segment listed again (removals after it in the same batch are not tried).
 */
int spool_segment_remove(struct spool *sp, uint64_t seg);

/* Open a segment read-only (O_CLOEXEC) for reading bodies: an fd, or -1 with errno. */
int spool_segment_open(struct spool *sp, uint64_t seg);
const char *spool_dir(const struct spool *sp);

#endif
