/*
 * control.h - the control socket: how `tern queue` (and `mailq`) talk to a
 * running ternd.
 *
 * A unix-domain stream socket at the `control_socket` path, mode 0600,
 * served on the daemon's event loop.  One request line per connection
 * (at most CONTROL_LINE_MAX bytes, LF or CRLF), then the response, then the
 * server closes:
 *
 *   LIST            mailq-style text (Postfix's format)
 *   LIST JSON       a JSON array of messages with their recipients
 *   COUNT           the number of messages in the queue
 *   FLUSH [ID]      make deferred recipients (of ID, or of all) due now
 *   DELETE ID       the message gets no more delivery attempts
 *   HOLD ID         no delivery until released
 *   RELEASE ID      undo HOLD
 *   SUBMIT LENGTH   local submission (sendmail): exactly LENGTH bytes follow
 *                   the request line, a payload in the format of
 *                   queue/maildrop.h (envelope lines, a blank line, the
 *                   message); the answer "OK <queue ID>" comes only once the
 *                   message is durable in the spool.  LENGTH is bounded by
 *                   the size given to control_set_submit() plus room for
 *                   the envelope; without a submit hook, "ERR ...".
 *
 * The response's first line is "OK" or "ERR <reason>"; the payload follows
 * an OK.  Verbs are case-insensitive.
 *
 * Promises: the loop never blocks on a control client; at most
 * CONTROL_MAX_CLIENTS at once (the next gets "ERR too many clients");
 * a client that sends no complete request within the read timeout gets
 * "ERR timeout"; a client that stops reading its response is dropped after
 * the write timeout without progress, or when more than CONTROL_OUT_MAX
 * bytes would be queued for it.  LIST output is produced as the client
 * reads it, from a snapshot of the queue IDs taken at the request, so its
 * size does not drive memory.
 */
#ifndef TERN_NET_CONTROL_H
#define TERN_NET_CONTROL_H

#include <stddef.h>

#define CONTROL_MAX_CLIENTS 16
#define CONTROL_LINE_MAX 1024               /* request line, terminator included */
#define CONTROL_OUT_MAX (16u * 1024 * 1024) /* output queued for one client */
#define CONTROL_READ_TIMEOUT_MS 5000        /* connect -> complete request line */
#define CONTROL_WRITE_TIMEOUT_MS 120000     /* no write progress for this long: drop */

struct event_base;
struct queue;
struct control;

/*
 * Listen on path and serve on base.  A stale socket file at path (nobody
 * answers) is replaced; a live one (another ternd) or a path that exists and
 * is not a socket is an error.  on_flush(arg), if not NULL, is called after
 * every successful FLUSH so the scheduler can look at the queue again.
 * NULL with a reason in err on failure.
 */
struct control *control_open(struct event_base *base, const char *path, struct queue *q,
    void (*on_flush)(void *arg), void *arg, char *err, size_t errlen);

/* Set the queue of a control socket opened (as root, before the queue) with q NULL. */
void control_set_queue(struct control *c, struct queue *q);

/* Drop every client, stop listening, remove the socket file (if still ours). */
void control_close(struct control *c);

/*
 * The SUBMIT hook.  submit() is called on the loop thread with the parsed
 * payload (the strings and msg are valid only during the call; msg's line
 * ends are as the client sent them) and returns 0 when done will be called
 * exactly once (maybe before submit returns), or an errno for an immediate
 * refusal.  done(donearg, 0, queue_id) once the message is durable, or
 * done(donearg, errno, reason-or-NULL).  The client may have gone by then:
 * control.c keeps donearg valid until done runs.
 */
typedef void control_submit_done_fn(void *donearg, int err, const char *id);
typedef int control_submit_fn(void *arg, const char *sender, const char *const *rcpts,
    size_t nrcpts, const char *msg, size_t len, control_submit_done_fn *done, void *donearg);

/* Enable SUBMIT: messages up to max_message_size octets (0: CONTROL_SUBMIT_MAX). */
void control_set_submit(
    struct control *c, control_submit_fn *submit, void *arg, size_t max_message_size);
#define CONTROL_SUBMIT_MAX (64u * 1024 * 1024)

/* Change the timeouts (milliseconds; for tests and tuning). */
void control_set_timeouts(struct control *c, unsigned read_ms, unsigned write_ms);

#endif
