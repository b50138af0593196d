/*
 * maildrop.h - local submission: the payload that sendmail(8) hands to ternd,
 * and the maildrop directory where it waits while ternd is not running.
 *
 * The payload (the control socket's SUBMIT body and a maildrop file alike):
 *
 *   S <sender>\n          exactly one, first; "S \n" is the null sender
 *   R <recipient>\n       one or more (at most MAILDROP_MAX_RCPTS)
 *   \n                    a blank line ends the envelope
 *   <message>             the message, LF or CRLF line ends
 *
 * Addresses are bare (no angle brackets), at most MAILDROP_LINE_MAX octets, no
 * control characters.  The message's line ends are made CRLF by
 * maildrop_crlf() (a bare CR becomes CRLF too) when it goes into the spool.
 *
 * The directory (spool_dir/maildrop): sendmail writes a file under a name
 * starting with '.', fsyncs it, renames it to its final name and fsyncs the
 * directory (maildrop_deposit), so ternd never sees half a file.  ternd scans
 * the directory at start and every few seconds (maildrop_scan), hands each
 * file to the same submit path as SUBMIT, and unlinks it only once the
 * message is durable in the spool: a crash in between delivers it twice,
 * never zero times.  A file that does not parse is renamed NAME.bad and
 * left for the operator.
 */
#ifndef TERN_QUEUE_MAILDROP_H
#define TERN_QUEUE_MAILDROP_H

#include <stddef.h>

#include "util/buf.h"

#define MAILDROP_LINE_MAX 1000  /* one envelope line, "S "/"R " and newline included */
#define MAILDROP_MAX_RCPTS 1000 /* recipients of one payload */

struct maildrop_env {
    char *sender; /* "" for the null sender */
    char **rcpts; /* nrcpts strings */
    size_t nrcpts;
    const char *msg; /* into the parsed input */
    size_t msglen;
};

/*
 * Parse a payload.  0, or -1 with a one-line reason in err.  The env owns its
 * strings (maildrop_env_free), but msg points into p.
 */
int maildrop_parse(const char *p, size_t len, struct maildrop_env *env, char *err, size_t errlen);
void maildrop_env_free(struct maildrop_env *env);

/* Append a payload to b.  -1 when b is full or an address has a newline or control octet. */
int maildrop_format(struct buf *b, const char *sender, const char *const *rcpts, size_t nrcpts,
    const char *msg, size_t len);

/*
 * Append p[0..n) to b with every line end as CRLF: CRLF stays, a bare LF or
 * a bare CR becomes CRLF.  A CR at the end of p is taken as a line end.
 * -1 when b is full.
 */
int maildrop_crlf(struct buf *b, const char *p, size_t n);

/*
 * sendmail's side: write payload into dir under a temporary name, fsync,
 * rename to its final name, fsync dir.  0 with the final path in path, or -1
 * with errno (nothing is left behind).
 */
int maildrop_deposit(const char *dir, const char *payload, size_t len, char *path, size_t pathlen);

/* ternd's side. */
typedef void maildrop_done_fn(void *donearg, int err, const char *id);
typedef int maildrop_submit_fn(void *arg, const char *sender, const char *const *rcpts,
    size_t nrcpts, const char *msg, size_t len, maildrop_done_fn *done, void *donearg);

struct maildrop;

/*
 * Watch dir (created mode 0700 if missing); files larger than max_size are
 * set aside as .bad.  submit is called on the caller's (loop) thread and
 * returns 0 when done will be called (exactly once, maybe before submit
 * returns), or an errno when the message was not taken.  done gets 0 and the
 * queue ID once the message is durable, or an errno and a reason (or NULL).
 * EINVAL, EPERM and EFBIG (an invalid address, a refused recipient, too big)
 * set the file aside as .bad; any other error leaves it for the next scan.
 * NULL with a reason in err.
 */
struct maildrop *maildrop_open(const char *dir, size_t max_size, maildrop_submit_fn *submit,
    void *arg, char *err, size_t errlen);

/*
 * Hand every file not already in flight to submit.  How many were handed
 * over.  XXX: the files are read on the calling (loop) thread; they are
 * small and local, and this runs every few seconds at most.
 */
size_t maildrop_scan(struct maildrop *md);

/* Stop; commits still in flight unlink their files when they complete. */
void maildrop_close(struct maildrop *md);

#endif
