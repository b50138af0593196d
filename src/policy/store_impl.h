/*
 * store_impl.h - what the store backends (store_lmdb.c, store_redis.c) share with the
 * dispatcher (store.c).  Not for users of the store: they include store.h.
 */
#ifndef TERN_POLICY_STORE_IMPL_H
#define TERN_POLICY_STORE_IMPL_H

#include "policy/store.h"

enum store_kind { STORE_GET, STORE_SET, STORE_INCR };

struct store_op {
    struct store_op *next, *prev; /* the backend's in-flight list, then the done queue */
    struct store *st;
    enum store_kind kind;
    store_cb cb;
    void *arg;
    struct store_result res;
    int refs;            /* the done queue's and the backend's (Redis) */
    bool answered;       /* the result is set: it goes to the caller once */
    int64_t deadline_ms; /* Redis: answer with an error at this time */
};

struct store_backend {
    void (*get)(struct store *st, struct store_op *op, const char *key);
    void (*set)(
        struct store *st, struct store_op *op, const char *key, int64_t value, int64_t ttl_ms);
    void (*incr)(
        struct store *st, struct store_op *op, const char *key, int64_t ttl_ms, const char *other);
    void (*free)(void *impl);
};

struct store {
    const struct store_backend *be;
    void *impl;
    struct event_base *base;
    struct event *ev_done;
    struct store_op *done_head, *done_tail;
    char name[256];
    bool closing; /* store_free() runs: fail every new operation */
};

/* Hand a result to its caller (later, from the loop).  Takes over one reference. */
void store_answer(struct store_op *op);
/* Fail an operation at once (store down): the caller hears err later, from the loop. */
void store_fail(struct store_op *op, int err);
void store_op_unref(struct store_op *op);

void *store_lmdb_open(struct store *st, const char *path, char *err, size_t errlen);
void *store_redis_open(struct store *st, const char *hostport, char *err, size_t errlen);
extern const struct store_backend store_lmdb_backend;
extern const struct store_backend store_redis_backend;

#endif
