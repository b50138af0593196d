/*
 * store_redis.c - the shared state store: Redis through hiredis's asynchronous API, on the
 * libevent loop (its libevent adapter).  Keys are "tern:" + the caller's key.
 *
 * Health: connected at open (in the background) and reconnected after any failure with a
 * backoff (REDIS_BACKOFF_MIN_MS doubling to REDIS_BACKOFF_MAX_MS).  While the connection
 * is down an operation fails at once; while connecting or up it is sent, and if Redis has
 * not answered it within STORE_TIMEOUT_MS the connection is dropped (every operation on
 * it fails) and a new one is made.  So no caller ever waits more than STORE_TIMEOUT_MS.
 * One log line when the store goes down (with the reason) and one when it is back.
 *
 * XXX: hiredis resolves a host name with getaddrinfo() inside redisAsyncConnect(), which
 * blocks the loop while DNS answers; give state_store an address (or a name in /etc/hosts).
 *
 * The counter (store_incr) is one Lua script, so INCR, PEXPIRE and the read of the other
 * key are one atomic step even with several nodes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "policy/store_impl.h"
#include "util/log.h"

#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
#define REDIS_CHECK_MS 50 /* how often deadlines are looked at while commands are out */

static const char redis_incr_script[] =
    "local c = redis.call('INCR', KEYS[1]) "
    "redis.call('PEXPIRE', KEYS[1], ARGV[1]) "
    "local o = 0 "
    "if #KEYS > 1 then o = tonumber(redis.call('GET', KEYS[2])) or 0 end "
    "return {c, o}";

enum redis_health { HEALTH_UNKNOWN, HEALTH_UP, HEALTH_DOWN };

struct store_redis {
    struct store *st;
    char host[256];
    int port;
    redisAsyncContext *ac;        /* NULL while down */
    bool connected;               /* ac is connected (not just connecting) */
    enum redis_health health;     /* what the log last said */
    struct store_op *head, *tail; /* sent, not answered: oldest first */
    struct event *ev_check;
    struct event *ev_retry;
    long backoff_ms;
    struct store_op *ping; /* the PING in flight or queued; its answer says "up" */
};

static void redis_connect(struct store_redis *r);

static void
redis_unlink(struct store_redis *r, struct store_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        r->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        r->tail = op->prev;
    op->next = op->prev = NULL;
}

static void
redis_fail_inflight(struct store_redis *r)
{
    struct store_op *op;

    while ((op = r->head) != NULL) {
        redis_unlink(r, op);
        store_fail(op, ENOTCONN); /* hiredis keeps its reference until it calls back */
    }
}

static void
redis_set_health(struct store_redis *r, enum redis_health h, const char *reason)
{
    if (h == r->health)
        return;
    if (h == HEALTH_DOWN)
        log_warn(NULL,
            "event=state-store-down store=%s reason=\"%s\" effect=\"policy checks "
            "follow policy_on_error until it is back\"",
            r->st->name, reason);
    else
        log_info(NULL, "event=state-store-up store=%s", r->st->name);
    r->health = h;
}

static void
redis_on_retry(evutil_socket_t fd, short what, void *arg)
{
    redis_connect(arg);
}

static void
redis_schedule_retry(struct store_redis *r)
{
    struct timeval tv;

    if (evtimer_pending(r->ev_retry, NULL))
        return;
    tv.tv_sec = r->backoff_ms / 1000;
    tv.tv_usec = (r->backoff_ms % 1000) * 1000;
    evtimer_add(r->ev_retry, &tv);
    r->backoff_ms *= 2;
    if (r->backoff_ms > REDIS_BACKOFF_MAX_MS)
        r->backoff_ms = REDIS_BACKOFF_MAX_MS;
}

/* The connection is gone or useless: fail what is out, say so once, try again later. */
static void
redis_down(struct store_redis *r, const char *reason, bool free_it)
{
    redisAsyncContext *ac = r->ac;

    r->ac = NULL;
    r->connected = false;
    redis_fail_inflight(r);
    redis_set_health(r, HEALTH_DOWN, reason);
    if (ac != NULL && free_it)
        redisAsyncFree(ac); /* calls back every command with NULL; we answered them */
    redis_schedule_retry(r);
}

static void redis_track(struct store_redis *r, struct store_op *op);
static void redis_sent(struct store_redis *r, struct store_op *op, int rc);
static void redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void
redis_on_pong(void *arg, const struct store_result *res)
{
    struct store_redis *r = arg;

    r->ping = NULL;
    if (res->err != 0 || r->ac == NULL)
        return; /* the failure was handled (and said) where it happened */
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    redis_set_health(r, HEALTH_UP, NULL);
}

/*
 * A connection is up only once Redis answers on it: a stopped (SIGSTOP) server still
 * completes TCP handshakes, and calling that "up" would make the log flap.
 */
static void
redis_ping(struct store_redis *r)
{
    struct store_op *op = calloc(1, sizeof(*op));

    if (op == NULL)
        return;
    op->st = r->st;
    op->kind = STORE_SET; /* a status reply */
    op->cb = redis_on_pong;
    op->arg = r;
    op->refs = 1;
    if (r->ping != NULL)
        r->ping->cb = NULL; /* an older one still queued: its answer no longer matters */
    r->ping = op;
    redis_track(r, op);
    redis_sent(r, op, redisAsyncCommand(r->ac, redis_on_reply, op, "PING"));
}

static void
redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct store_redis *r = ac->data;

    if (r->ac != ac)
        return; /* a context we already dropped */
    if (status != REDIS_OK) {
        char reason[160];
        snprintf(reason, sizeof(reason), "cannot connect: %s", ac->errstr);
        redis_down(r, reason, false); /* hiredis frees it after this call */
        return;
    }
    r->connected = true;
    redis_ping(r);
}

static void
redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct store_redis *r = ac->data;
    char reason[160];

    if (r->ac != ac)
        return;
    snprintf(
        reason, sizeof(reason), "connection lost: %s", status == REDIS_OK ? "closed" : ac->errstr);
    redis_down(r, reason, false);
}

static void
redis_connect(struct store_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    char reason[160];

    if (ac == NULL || ac->err) {
        snprintf(reason, sizeof(reason), "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        r->ac = NULL;
        redis_down(r, reason, false);
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->connected = false;
    if (redisLibeventAttach(ac, r->st->base) != REDIS_OK) {
        redis_down(r, "cannot attach to the event loop", true);
        return;
    }
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
}

static void
redis_on_check(evutil_socket_t fd, short what, void *arg)
{
    struct store_redis *r = arg;
    struct timeval tv = {0, REDIS_CHECK_MS * 1000};

    if (r->head != NULL && r->head->deadline_ms <= store_now_ms()) {
        char reason[96];
        snprintf(reason, sizeof(reason), "no answer within %d ms", STORE_TIMEOUT_MS);
        redis_down(r, reason, true);
    }
    if (r->head != NULL)
        evtimer_add(r->ev_check, &tv);
}

static void
redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct store_op *op = privdata;
    struct store_redis *r = op->st->impl;
    redisReply *rep = reply;

    if (!op->answered) {
        redis_unlink(r, op);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            if (rep != NULL)
                log_warn(
                    NULL, "event=state-store-error store=%s error=\"%s\"", r->st->name, rep->str);
            store_fail(op, EIO);
        } else if (op->kind == STORE_GET) {
            if (rep->type == REDIS_REPLY_STRING) {
                op->res.found = true;
                op->res.value = strtoll(rep->str, NULL, 10);
            }
            store_answer(op);
        } else if (op->kind == STORE_INCR) {
            if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                rep->element[0]->type == REDIS_REPLY_INTEGER &&
                rep->element[1]->type == REDIS_REPLY_INTEGER) {
                op->res.value = rep->element[0]->integer;
                op->res.other = rep->element[1]->integer;
                store_answer(op);
            } else {
                store_fail(op, EIO);
            }
        } else {
            store_answer(op);
        }
    }
    store_op_unref(op); /* hiredis's reference */
}

/* The op is about to be sent: watch its deadline; hiredis holds a reference. */
static void
redis_track(struct store_redis *r, struct store_op *op)
{
    struct timeval tv = {0, REDIS_CHECK_MS * 1000};

    op->deadline_ms = store_now_ms() + STORE_TIMEOUT_MS;
    op->prev = r->tail;
    op->next = NULL;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    op->refs++; /* hiredis's */
    if (!evtimer_pending(r->ev_check, NULL))
        evtimer_add(r->ev_check, &tv);
}

static void
redis_sent(struct store_redis *r, struct store_op *op, int rc)
{
    if (rc == REDIS_OK)
        return;
    redis_unlink(r, op);
    op->refs--;
    store_fail(op, EIO);
}

static bool
redis_usable(struct store_redis *r, struct store_op *op)
{
    if (r->ac != NULL)
        return true;
    store_fail(op, ENOTCONN);
    return false;
}

static void
redis_get(struct store *st, struct store_op *op, const char *key)
{
    struct store_redis *r = st->impl;

    if (!redis_usable(r, op))
        return;
    redis_track(r, op);
    redis_sent(r, op, redisAsyncCommand(r->ac, redis_on_reply, op, "GET tern:%s", key));
}

static void
redis_set(struct store *st, struct store_op *op, const char *key, int64_t value, int64_t ttl_ms)
{
    struct store_redis *r = st->impl;

    if (!redis_usable(r, op))
        return;
    redis_track(r, op);
    redis_sent(r, op,
        redisAsyncCommand(r->ac, redis_on_reply, op, "SET tern:%s %lld PX %lld", key,
            (long long)value, (long long)(ttl_ms > 0 ? ttl_ms : 1)));
}

static void
redis_incr(
    struct store *st, struct store_op *op, const char *key, int64_t ttl_ms, const char *other)
{
    struct store_redis *r = st->impl;
    long long ttl = ttl_ms > 0 ? ttl_ms : 1;
    int rc;

    if (!redis_usable(r, op))
        return;
    redis_track(r, op);
    if (other != NULL)
        rc = redisAsyncCommand(r->ac, redis_on_reply, op, "EVAL %s 2 tern:%s tern:%s %lld",
            redis_incr_script, key, other, ttl);
    else
        rc = redisAsyncCommand(
            r->ac, redis_on_reply, op, "EVAL %s 1 tern:%s %lld", redis_incr_script, key, ttl);
    redis_sent(r, op, rc);
}

static void
redis_free(void *impl)
{
    struct store_redis *r = impl;
    redisAsyncContext *ac;

    if (r == NULL)
        return;
    ac = r->ac;
    r->ac = NULL;
    if (r->ping != NULL)
        r->ping->cb = NULL; /* answered after r is gone */
    redis_fail_inflight(r);
    if (ac != NULL)
        redisAsyncFree(ac);
    if (r->ev_check)
        event_free(r->ev_check);
    if (r->ev_retry)
        event_free(r->ev_retry);
    free(r);
}

void *
store_redis_open(struct store *st, const char *hostport, char *err, size_t errlen)
{
    struct store_redis *r = calloc(1, sizeof(*r));
    const char *colon = strrchr(hostport, ':');
    size_t hlen;

    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->st = st;
    if (colon == NULL || (hlen = (size_t)(colon - hostport)) == 0 || hlen >= sizeof(r->host)) {
        snprintf(err, errlen, "state_store redis://%s: want HOST:PORT", hostport);
        free(r);
        return NULL;
    }
    if (hostport[0] == '[' && hlen > 2 && hostport[hlen - 1] == ']') {
        memcpy(r->host, hostport + 1, hlen - 2); /* [::1]:6379 */
    } else {
        memcpy(r->host, hostport, hlen);
    }
    r->port = atoi(colon + 1);
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->ev_check = evtimer_new(st->base, redis_on_check, r);
    r->ev_retry = evtimer_new(st->base, redis_on_retry, r);
    if (r->ev_check == NULL || r->ev_retry == NULL) {
        snprintf(err, errlen, "cannot create an event");
        redis_free(r);
        return NULL;
    }
    st->impl = r; /* callbacks may run from redis_connect */
    redis_connect(r);
    return r;
}

const struct store_backend store_redis_backend = {
    .get = redis_get,
    .set = redis_set,
    .incr = redis_incr,
    .free = redis_free,
};
