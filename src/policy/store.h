/*
 * store.h - the policy state store: a few integer-valued keys with expiry, shared by the
 * greylist and the rate limits, answered asynchronously on the event loop.
 *
 * Two backends behind one interface:
 *   lmdb:PATH           embedded (the default, under spool_dir/policy): several ternd
 *                       processes on one host may share it; nothing to run.
 *   redis://HOST:PORT   shared by several nodes (hiredis on the loop, keys "tern:...").
 *
 * Promises:
 *   - Every operation that was started (0 returned) answers exactly once, through its
 *     callback, on the loop thread, and never from inside the call that started it (so a caller can
 * start an operation and only then record that it waits).  A NULL callback means "fire and forget".
 *   - An operation never waits forever: the Redis backend answers err != 0 after
 *     STORE_TIMEOUT_MS, at once while the server is known to be down, and reconnects by
 *     itself with a backoff.  One log line per change of the store's health, not one per
 *     operation.
 *   - Values are signed 64-bit integers; a key past its expiry reads as absent.
 *   - store_free() answers every operation still in flight with an error.
 *   - -1 from a call: out of memory, nothing was started and no answer will come.
 */
#ifndef TERN_POLICY_STORE_H
#define TERN_POLICY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#define STORE_TIMEOUT_MS 1000 /* a Redis command without an answer by then is an error */
#define STORE_KEY_MAX 128

struct store;

struct store_result {
    int err;       /* 0, or an errno-like code: the store could not answer */
    bool found;    /* get: the key exists and has not expired */
    int64_t value; /* get: the value; incr: the new count */
    int64_t other; /* incr: the value of the second key (0 when absent) */
};

typedef void (*store_cb)(void *arg, const struct store_result *r);

/*
 * Open the store named by spec ("lmdb:PATH" or "redis://HOST:PORT").  LMDB is opened (and
 * created) now, so a bad path fails here; Redis is connected in the background.  NULL with
 * a reason in err.
 */
struct store *store_open(const char *spec, struct event_base *base, char *err, size_t errlen);
void store_free(struct store *st);

int store_get(struct store *st, const char *key, store_cb cb, void *arg);

/* Set key to value; it expires ttl_ms from now. */
int store_set(
    struct store *st, const char *key, int64_t value, int64_t ttl_ms, store_cb cb, void *arg);

/*
 * Add one to key (absent: it becomes 1) and make it expire ttl_ms from now; answer the new
 * count in r->value and, when other is not NULL, the value of key other in r->other (0 when
 * absent) read in the same atomic step.  Rate windows use it as (this window, last window).
 */
int store_incr(
    struct store *st, const char *key, int64_t ttl_ms, const char *other, store_cb cb, void *arg);

/* Wall-clock milliseconds, the time base of expiries (shared by nodes, so not monotonic). */
int64_t store_now_ms(void);

#endif
