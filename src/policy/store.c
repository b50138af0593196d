/*
 * store.c - the state store's dispatcher: one interface, two backends (see store.h).
 *
 * Answers are never given from inside the call that asked: each finished operation goes
 * to a queue that one libevent event drains.  So an LMDB lookup, done on the spot, reaches
 * its caller in the same way as a Redis reply, and a caller may record that it waits after
 * starting the operation.
 */
#include "policy/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/store_impl.h"
#include "util/log.h"

int64_t
store_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
store_op_unref(struct store_op *op)
{
    if (--op->refs == 0)
        free(op);
}

static void
store_deliver(struct store_op *op)
{
    if (op->cb != NULL)
        op->cb(op->arg, &op->res);
    store_op_unref(op);
}

static void
store_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct store *st = arg;
    struct store_op *op, *last = st->done_tail;

    /* Only what is queued now: an answer may start another operation. */
    while ((op = st->done_head) != NULL) {
        st->done_head = op->next;
        if (st->done_head == NULL)
            st->done_tail = NULL;
        store_deliver(op);
        if (op == last)
            break;
    }
    if (st->done_head != NULL)
        event_active(st->ev_done, 0, 0);
}

void
store_answer(struct store_op *op)
{
    struct store *st = op->st;

    op->answered = true;
    op->next = NULL;
    if (st->done_tail)
        st->done_tail->next = op;
    else
        st->done_head = op;
    st->done_tail = op;
    event_active(st->ev_done, 0, 0);
}

void
store_fail(struct store_op *op, int err)
{
    op->res.err = err ? err : EIO;
    store_answer(op);
}

static struct store_op *
store_op_new(struct store *st, enum store_kind kind, store_cb cb, void *arg)
{
    struct store_op *op = calloc(1, sizeof(*op));

    if (op == NULL)
        return NULL;
    op->st = st;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    op->refs = 1;
    return op;
}

/* Out of memory for the operation itself: no answer will come; the caller is told now. */
#define STORE_OP_OR_RETURN(op)                                                                     \
    do {                                                                                           \
        if ((op) == NULL) {                                                                        \
            log_warn(NULL, "event=state-store-error reason=\"out of memory\"");                    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

int
store_get(struct store *st, const char *key, store_cb cb, void *arg)
{
    struct store_op *op = store_op_new(st, STORE_GET, cb, arg);

    STORE_OP_OR_RETURN(op);
    if (st->closing)
        store_fail(op, ECANCELED);
    else
        st->be->get(st, op, key);
    return 0;
}

int
store_set(struct store *st, const char *key, int64_t value, int64_t ttl_ms, store_cb cb, void *arg)
{
    struct store_op *op = store_op_new(st, STORE_SET, cb, arg);

    STORE_OP_OR_RETURN(op);
    if (st->closing)
        store_fail(op, ECANCELED);
    else
        st->be->set(st, op, key, value, ttl_ms);
    return 0;
}

int
store_incr(
    struct store *st, const char *key, int64_t ttl_ms, const char *other, store_cb cb, void *arg)
{
    struct store_op *op = store_op_new(st, STORE_INCR, cb, arg);

    STORE_OP_OR_RETURN(op);
    if (st->closing)
        store_fail(op, ECANCELED);
    else
        st->be->incr(st, op, key, ttl_ms, other);
    return 0;
}

struct store *
store_open(const char *spec, struct event_base *base, char *err, size_t errlen)
{
    struct store *st = calloc(1, sizeof(*st));

    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->base = base;
    snprintf(st->name, sizeof(st->name), "%s", spec);
    if ((st->ev_done = event_new(base, -1, 0, store_on_done, st)) == NULL) {
        snprintf(err, errlen, "cannot create an event");
        free(st);
        return NULL;
    }
    if (strncmp(spec, "lmdb:", 5) == 0) {
        st->be = &store_lmdb_backend;
        st->impl = store_lmdb_open(st, spec + 5, err, errlen);
    } else if (strncmp(spec, "redis://", 8) == 0) {
        st->be = &store_redis_backend;
        st->impl = store_redis_open(st, spec + 8, err, errlen);
    } else {
        snprintf(err, errlen, "'%s' is neither 'lmdb:PATH' nor 'redis://HOST:PORT'", spec);
    }
    if (st->impl == NULL) {
        event_free(st->ev_done);
        free(st);
        return NULL;
    }
    return st;
}

void
store_free(struct store *st)
{
    struct store_op *op;

    if (st == NULL)
        return;
    st->be->free(st->impl); /* fails what is in flight: it lands in the done queue */
    st->closing = true;     /* and what an answer starts now fails at once */
    while ((op = st->done_head) != NULL) {
        st->done_head = op->next;
        store_deliver(op);
    }
    event_free(st->ev_done);
    free(st);
}
