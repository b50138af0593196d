/*
 * test_policy.c - greylisting's decisions and rate windows under a fake clock, the keys
 * (/24, /64, case), and the LMDB store (answers later, expiry, counters).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "policy/greylist.h"
#include "policy/ratelimit.h"
#include "policy/store.h"

/* ---- a fake store with expiry, driven by the test's clock ---- */

struct fake_rec {
    char key[STORE_KEY_MAX];
    int64_t value, expires;
};

struct fake {
    struct fake_rec r[64];
    int n;
};

static struct fake_rec *
fake_find(struct fake *f, const char *key, int64_t now)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->r[i].key, key) == 0)
            return f->r[i].expires > now ? &f->r[i] : NULL;
    return NULL;
}

static void
fake_set(struct fake *f, const char *key, int64_t value, int64_t now, int64_t ttl)
{
    int i;

    for (i = 0; i < f->n && strcmp(f->r[i].key, key) != 0; i++)
        ;
    if (i == f->n) {
        assert_true(f->n < 64);
        f->n++;
        snprintf(f->r[i].key, sizeof(f->r[i].key), "%s", key);
    }
    f->r[i].value = value;
    f->r[i].expires = now + ttl;
}

static const struct greylist_params GP = {
    .delay = 300, .retry_window = 2 * 86400, .expire = 35 * 86400, .auto_allow = 2};

/* One RCPT through greylisting as policy.c runs it, on the fake store. */
static struct greylist_decision
gl_rcpt(struct fake *f, const struct greylist_params *p, const char *net, const char *sender,
    const char *rcpt, int64_t now)
{
    char tkey[STORE_KEY_MAX], nkey[STORE_KEY_MAX];
    struct fake_rec *t, *n;
    struct greylist_decision d;

    greylist_triplet_key(net, sender, rcpt, tkey, sizeof(tkey));
    greylist_network_key(net, nkey, sizeof(nkey));
    t = fake_find(f, tkey, now);
    n = fake_find(f, nkey, now);
    greylist_decide(p, t != NULL, t ? t->value : 0, n ? n->value : 0, now, &d);
    if (d.write)
        fake_set(f, tkey, d.value, now, d.ttl);
    if (d.count_network)
        fake_set(f, nkey, (n ? n->value : 0) + 1, now, p->expire);
    return d;
}

static void
test_greylist_sequence(void **state)
{
    struct fake f = {0};
    struct greylist_decision d;
    int64_t t0 = 1700000000;

    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0);
    assert_false(d.pass);
    assert_int_equal(d.why, GREYLIST_NEW);
    assert_int_equal(d.retry_in, 300);
    /* early retry: still greylisted, and told how long is left; the clock is not reset */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0 + 100);
    assert_false(d.pass);
    assert_int_equal(d.why, GREYLIST_EARLY);
    assert_int_equal(d.retry_in, 200);
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0 + 299);
    assert_false(d.pass);
    assert_int_equal(d.retry_in, 1);
    /* after the delay: passes, and the network counts one */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "A@B.example", "U@example.org", t0 + 300);
    assert_true(d.pass);
    assert_int_equal(d.why, GREYLIST_RETRIED);
    assert_true(d.count_network);
    /* from then on at once */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0 + 301);
    assert_true(d.pass);
    assert_int_equal(d.why, GREYLIST_PASSED);
    assert_false(d.write); /* no write per RCPT */
    /* another recipient is another triplet */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "v@example.org", t0 + 301);
    assert_false(d.pass);
    /* the null sender is keyed like any sender */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "", "u@example.org", t0 + 301);
    assert_false(d.pass);
    assert_int_equal(d.why, GREYLIST_NEW);
}

static void
test_greylist_auto_allow(void **state)
{
    struct fake f = {0};
    struct greylist_decision d;
    int64_t t0 = 1700000000;

    gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0);
    gl_rcpt(&f, &GP, "192.0.2.0/24", "c@d.example", "u@example.org", t0);
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0 + 400);
    assert_true(d.pass);
    /* one passed triplet is not enough (auto_allow = 2) */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "new@x.example", "u@example.org", t0 + 400);
    assert_false(d.pass);
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "c@d.example", "u@example.org", t0 + 400);
    assert_true(d.pass);
    /* two: the whole network passes, for any sender and recipient */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "other@y.example", "w@example.org", t0 + 401);
    assert_true(d.pass);
    assert_int_equal(d.why, GREYLIST_NETWORK);
    /* but not the neighbour network */
    d = gl_rcpt(&f, &GP, "192.0.3.0/24", "other@y.example", "w@example.org", t0 + 401);
    assert_false(d.pass);
    /* auto_allow = 0: never */
    {
        struct greylist_params p = GP;
        p.auto_allow = 0;
        d = gl_rcpt(&f, &p, "192.0.2.0/24", "z@y.example", "w@example.org", t0 + 402);
        assert_false(d.pass);
    }
}

static void
test_greylist_expiry(void **state)
{
    struct fake f = {0};
    struct greylist_decision d;
    int64_t t0 = 1700000000;

    /* a first sight not retried within the retry window is forgotten: greylisted anew */
    gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0);
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t0 + GP.retry_window + 1);
    assert_false(d.pass);
    assert_int_equal(d.why, GREYLIST_NEW);
    /* even if the store still had the record (no TTL), the decision says so */
    d.pass = true;
    greylist_decide(&GP, true, t0, 0, t0 + GP.retry_window + 1, &d);
    assert_false(d.pass);
    assert_int_equal(d.why, GREYLIST_NEW);
    /* a passed triplet lives greylist_expire after its last confirmation */
    int64_t t1 = t0 + GP.retry_window + 1;
    gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t1 + 300);
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t1 + 300 + 20 * 86400);
    assert_true(d.pass);
    assert_true(d.write); /* refreshed (older than expire/10) */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t1 + 300 + 50 * 86400);
    assert_true(d.pass); /* 30 days after the refresh: still there */
    d = gl_rcpt(&f, &GP, "192.0.2.0/24", "a@b.example", "u@example.org", t1 + 300 + 90 * 86400);
    assert_false(d.pass); /* 35 days without mail: expired, greylisted again */
    assert_int_equal(d.why, GREYLIST_NEW);
}

static void
test_keys(void **state)
{
    unsigned char a[16] = {0}, b[16] = {0};
    char net[64], k1[STORE_KEY_MAX], k2[STORE_KEY_MAX];

    inet_pton(AF_INET, "192.0.2.77", a);
    greylist_network(AF_INET, a, net, sizeof(net));
    assert_string_equal(net, "192.0.2.0/24");
    rate_client(AF_INET, a, net, sizeof(net));
    assert_string_equal(net, "192.0.2.77");
    inet_pton(AF_INET6, "2001:db8:1:2:3:4:5:6", b);
    greylist_network(AF_INET6, b, net, sizeof(net));
    assert_string_equal(net, "2001:db8:1:2::/64");
    rate_client(AF_INET6, b, net, sizeof(net));
    assert_string_equal(net, "2001:db8:1:2::/64");
    inet_pton(AF_INET6, "2001:db8:1:3::1", b);
    greylist_network(AF_INET6, b, net, sizeof(net));
    assert_string_equal(net, "2001:db8:1:3::/64");

    greylist_triplet_key("192.0.2.0/24", "a@b.example", "u@example.org", k1, sizeof(k1));
    greylist_triplet_key("192.0.2.0/24", "A@B.EXAMPLE", "U@Example.Org", k2, sizeof(k2));
    assert_string_equal(k1, k2);
    assert_int_equal(strlen(k1), 5 + 16);
    assert_memory_equal(k1, "gl:t:", 5);
    greylist_triplet_key("192.0.3.0/24", "a@b.example", "u@example.org", k2, sizeof(k2));
    assert_string_not_equal(k1, k2);
    /* the separator keeps ("ab", "c") apart from ("a", "bc") */
    greylist_triplet_key("n", "ab", "c", k1, sizeof(k1));
    greylist_triplet_key("n", "a", "bc", k2, sizeof(k2));
    assert_string_not_equal(k1, k2);

    rate_keys("m", "192.0.2.77", 60000, 120500, k1, k2, sizeof(k1));
    assert_string_equal(k1, "rl:m:192.0.2.77:60:2");
    assert_string_equal(k2, "rl:m:192.0.2.77:60:1");
}

static void
test_rate_window(void **state)
{
    int64_t w = 60000, t0 = 1700000000LL * 1000 / w * w; /* the start of a window */
    int64_t retry = 0;
    int i;

    /* a fresh window: exactly the limit passes, one more is refused */
    for (i = 1; i <= 3; i++)
        assert_true(rate_check(3, w, t0 + 1000, i, 0, &retry));
    assert_false(rate_check(3, w, t0 + 1000, 4, 0, &retry));
    /* the next window, half-way: 4 hits last window weigh 2; one more = 3 passes */
    assert_int_equal(retry, 59 + 30); /* 59 s to the next window, then half of it */
    assert_true(rate_check(3, w, t0 + w + 30000, 1, 4, &retry));
    assert_false(rate_check(3, w, t0 + w + 30000, 2, 4, &retry));
    /* two hits here and 4 before: one more fits once 4*(w-e)/w <= 0: at the window's end */
    assert_int_equal(retry, 30);
    /* at the told time (a new window: 2 before, this one) it passes; a second earlier not */
    assert_true(rate_check(3, w, t0 + 2 * w, 1, 2, &retry));
    assert_false(rate_check(3, w, t0 + 2 * w - 1000, 3, 4, &retry));
    /* limit 1: a second hit waits for the window after next */
    assert_false(rate_check(1, w, t0, 2, 0, &retry));
    assert_int_equal(retry, 120);
    /* a retry time is never 0 */
    assert_false(rate_check(3, w, t0 + w - 1, 4, 0, &retry));
    assert_true(retry >= 1);
}

/* ---- the LMDB store ---- */

struct answer {
    int calls;
    struct store_result r;
};

static void
on_answer(void *arg, const struct store_result *r)
{
    struct answer *a = arg;

    a->calls++;
    a->r = *r;
}

static void
run(struct event_base *base)
{
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_loop(base, EVLOOP_NONBLOCK);
}

static void
test_store_lmdb(void **state)
{
    char dir[] = "/tmp/tern-test-store-XXXXXX", spec[64], err[256], cmd[128];
    struct event_base *base = event_base_new();
    struct store *st;
    struct answer a = {0};
    int i;

    assert_non_null(mkdtemp(dir));
    snprintf(spec, sizeof(spec), "lmdb:%s/db", dir);
    st = store_open(spec, base, err, sizeof(err));
    assert_non_null(st);

    store_get(st, "k", on_answer, &a);
    assert_int_equal(a.calls, 0); /* never from inside the call */
    run(base);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.r.err, 0);
    assert_false(a.r.found);

    store_set(st, "k", -42, 60000, NULL, NULL);
    store_get(st, "k", on_answer, &a);
    run(base);
    assert_int_equal(a.calls, 2);
    assert_true(a.r.found);
    assert_int_equal(a.r.value, -42);

    for (i = 1; i <= 3; i++) {
        store_incr(st, "c:1", 60000, "c:0", on_answer, &a);
        run(base);
        assert_int_equal(a.r.value, i);
        assert_int_equal(a.r.other, 0);
    }
    store_incr(st, "c:2", 60000, "c:1", on_answer, &a);
    run(base);
    assert_int_equal(a.r.value, 1);
    assert_int_equal(a.r.other, 3);

    /* expiry: a record past its time reads as absent, and a counter starts over */
    store_set(st, "short", 7, 1, NULL, NULL);
    store_incr(st, "c:short", 1, NULL, NULL, NULL);
    run(base);
    usleep(5000);
    store_get(st, "short", on_answer, &a);
    run(base);
    assert_false(a.r.found);
    store_incr(st, "c:short", 60000, NULL, on_answer, &a);
    run(base);
    assert_int_equal(a.r.value, 1);

    /* reopened (a restart): the state is still there */
    store_free(st);
    st = store_open(spec, base, err, sizeof(err));
    assert_non_null(st);
    store_get(st, "k", on_answer, &a);
    run(base);
    assert_true(a.r.found);
    assert_int_equal(a.r.value, -42);

    /* a store left open during another boot (a system crash) is discarded at open */
    store_free(st);
    {
        char marker[128];
        FILE *f;

        snprintf(marker, sizeof(marker), "%s/db/boot_id", dir);
        f = fopen(marker, "r");
        assert_non_null(f);
        assert_non_null(fgets(marker, sizeof(marker), f));
        fclose(f);
        assert_string_equal(marker, "clean"); /* a clean close says so */
        snprintf(marker, sizeof(marker), "%s/db/boot_id", dir);
        f = fopen(marker, "w");
        assert_non_null(f);
        fputs("00000000-0000-0000-0000-000000000000\n", f);
        fclose(f);
    }
    st = store_open(spec, base, err, sizeof(err));
    assert_non_null(st);
    store_get(st, "k", on_answer, &a);
    run(base);
    assert_int_equal(a.r.err, 0);
    assert_false(a.r.found);

    /* freed with an operation in flight: it is answered (with its result or an error) */
    a.calls = 0;
    store_get(st, "k", on_answer, &a);
    store_free(st);
    assert_int_equal(a.calls, 1);
    event_base_free(base);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A Redis store with nothing listening: every operation fails, at once, never hangs. */
static void
test_store_redis_down(void **state)
{
    char err[256];
    struct event_base *base = event_base_new();
    struct store *st = store_open("redis://127.0.0.1:1", base, err, sizeof(err));
    struct answer a = {0};

    assert_non_null(st);
    run(base);
    store_get(st, "k", on_answer, &a);
    assert_int_equal(a.calls, 0);
    run(base);
    assert_int_equal(a.calls, 1);
    assert_int_not_equal(a.r.err, 0);
    store_free(st);
    event_base_free(base);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greylist_sequence),
        cmocka_unit_test(test_greylist_auto_allow),
        cmocka_unit_test(test_greylist_expiry),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_rate_window),
        cmocka_unit_test(test_store_lmdb),
        cmocka_unit_test(test_store_redis_down),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
