/*
 * maildir.h - local delivery into Maildirs (mailbox_dir/DOMAIN/LOCAL/).
 *
 * Each message is written to LOCAL/tmp/ under a unique name (the Maildir
 * convention: time.M<usec>P<pid>Q<counter>.host, plus ",S=size"), made
 * durable, then link()ed into new/ and the tmp name removed, and new/ made
 * durable; only then is the recipient DLV_OK.  The Return-Path (the envelope
 * sender) and Delivered-To (the mailbox) header fields are prepended; the
 * Received field is already in the stored message (added at reception).
 *
 * Syncs are shared across a batch: maildir_deliver() writes every file of
 * the batch, syncs them together, links them all, then syncs each new/
 * directory once.  A crash at any point leaves at most an orphan in tmp/
 * (reclaimed by maildir_cleanup) and never a partial file in new/; a
 * message may be delivered twice (crash after the link, before the queue
 * records it), never zero times.
 *
 * Runs on worker threads; functions are thread-safe.
 */
#ifndef TERN_DELIVER_MAILDIR_H
#define TERN_DELIVER_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/delivery.h"

struct maildir_conf {
    const char *mailbox_dir;
    const char *hostname;       /* for unique names */
    uint64_t size_limit;        /* bytes per mailbox; 0: none */
};

/*
 * Deliver every recipient (each of its targets) of every message in msgs[0..n)
 * and set each recipient's status and reply (R_DLV_OK, R_DLV_MAILBOX_FULL,
 * R_DLV_TOO_BIG, R_DLV_MAILDIR_ERROR).  A recipient with several targets is
 * DLV_OK only if every target was; otherwise the worst outcome.
 */
void maildir_deliver(const struct maildir_conf *c, struct delivery_msg **msgs, size_t n);

/*
 * The directory of addr's mailbox: mailbox_dir/DOMAIN/LOCAL with the domain
 * lower-cased and the local part made safe as a file name (lower-cased,
 * quotes removed, '/' and leading '.' and bytes < 0x20 escaped as %XX), so
 * no address can name a path outside mailbox_dir.  0, or -1 if it does not fit.
 */
int maildir_path(const struct maildir_conf *c, const char *addr, char *out, size_t outlen);

/* True if addr's mailbox is at or over size_limit (cached per mailbox; cheap). */
bool maildir_full(const struct maildir_conf *c, const char *addr);

/*
 * Remove from every tmp/ under mailbox_dir the files older than 36 hours
 * (Maildir convention) and those a killed tern process left (its pid in the
 * name, no longer running).  Walks every mailbox: run it off the loop.
 */
void maildir_cleanup(const struct maildir_conf *c);

#endif
