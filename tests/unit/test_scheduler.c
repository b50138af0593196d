/*
 * test_scheduler.c - the retry schedule: exponential from min_backoff,
 * capped at max_backoff, with +-10% jitter, never zero, no quantisation;
 * and the scheduler's decision per attempt (scheduler_decide,
 * scheduler_delay_due) driven by a fake clock from the first failure to
 * expiry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "deliver/delivery.h"
#include "deliver/scheduler.h"

static void
test_backoff_doubles_then_caps(void **state)
{
    /* r = 0.5 is the middle of the jitter: the exact schedule */
    assert_int_equal(scheduler_backoff(300, 4000, 1, 0.5), 300);
    assert_int_equal(scheduler_backoff(300, 4000, 2, 0.5), 600);
    assert_int_equal(scheduler_backoff(300, 4000, 3, 0.5), 1200);
    assert_int_equal(scheduler_backoff(300, 4000, 4, 0.5), 2400);
    assert_int_equal(scheduler_backoff(300, 4000, 5, 0.5), 4000);
    assert_int_equal(scheduler_backoff(300, 4000, 50, 0.5), 4000);
    assert_int_equal(scheduler_backoff(300, 4000, 4000000, 0.5), 4000);
}

static void
test_backoff_jitter(void **state)
{
    /* +-10% around the nominal value, continuous in r (no quantisation) */
    assert_int_equal(scheduler_backoff(1000, 100000, 1, 0.0), 900);
    assert_int_equal(scheduler_backoff(1000, 100000, 1, 1.0), 1100);
    assert_int_equal(scheduler_backoff(1000, 100000, 1, 0.25), 950);
    assert_true(
        scheduler_backoff(1000, 100000, 1, 0.3) != scheduler_backoff(1000, 100000, 1, 0.31));
}

static void
test_backoff_never_zero(void **state)
{
    assert_int_equal(scheduler_backoff(1, 1, 1, 0.0), 1);
    assert_int_equal(scheduler_backoff(1, 2, 3, 0.5), 2);
}

/* A fixed stream of jitter values in [0, 1): the test is repeatable. */
static double
fake_random(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*x >> 11) / 9007199254740992.0;
}

static long
nominal(const struct scheduler_policy *p, unsigned attempts)
{
    long d = p->min_backoff;
    unsigned i;

    for (i = 1; i < attempts && d < p->max_backoff; i++)
        d *= 2;
    return d > p->max_backoff ? p->max_backoff : d;
}

/*
 * One recipient that always fails transiently, from arrival to expiry, with
 * the defaults (min 300 s, max 4000 s, 5 days, delay warning after 4 h).
 * Each attempt takes a few (odd) seconds; the clock jumps to the next
 * attempt time.  Every delay is the nominal one +-10%, counted from the
 * failure itself; the delay notice is due exactly once; expiry comes with
 * the first failure at or after max_queue_lifetime, as a 554 5.4.7.
 */
static void
test_schedule_to_expiry(void **state)
{
    const struct scheduler_policy p = {300, 4000, 432000, 14400};
    const time_t arrival = 1700000000;
    time_t now = arrival + 7, next = 0, last_delay = 0;
    uint64_t seed = 42;
    unsigned attempts = 0, warnings = 0, capped = 0, distinct = 0;
    enum scheduler_verdict v;
    bool warned = false, seen[900] = {false};

    for (;;) {
        double r = fake_random(&seed);
        long want;
        time_t delay;

        attempts++;
        v = scheduler_decide(&p, arrival, now, DLV_TEMP, attempts, r, &next);
        if (now - arrival >= p.max_queue_lifetime)
            break;
        assert_int_equal(v, SCHED_V_DEFERRED);
        delay = next - now;
        /* from the real failure time, to the second: exactly the backoff, no tick */
        assert_int_equal(delay, scheduler_backoff(p.min_backoff, p.max_backoff, attempts, r));
        want = nominal(&p, attempts);
        assert_true(delay >= (time_t)(0.9 * (double)want) - 1);
        assert_true(delay <= (time_t)(1.1 * (double)want) + 1);
        assert_true(delay >= 1);
        if (want < p.max_backoff && attempts > 1)
            assert_true(delay > last_delay); /* still doubling: +-10% cannot undo that */
        if (want == p.max_backoff) {
            capped++;
            if (!seen[delay - 3600]) {
                seen[delay - 3600] = true;
                distinct++;
            }
        }
        last_delay = delay;
        if (scheduler_delay_due(&p, arrival, now, warned, true)) {
            assert_true(now - arrival >= p.delay_warning);
            warned = true;
            warnings++;
        } else {
            assert_true(warned || now - arrival < p.delay_warning);
        }
        now = next + 3 + (time_t)(attempts % 5); /* the attempt itself takes a few seconds */
    }
    assert_int_equal(v, SCHED_V_EXPIRED);
    assert_int_equal(next, 0);
    assert_int_equal(warnings, 1);
    /* expired at the first failure after the lifetime: late by less than one retry */
    assert_true(now - arrival - p.max_queue_lifetime < (time_t)(1.1 * 4000) + 8);
    /* 300, 600, 1200, 2400, then ~4000 s apart for 5 days: about 108 attempts */
    assert_in_range(attempts, 100, 125);
    assert_true(capped > 90);
    assert_true(distinct > 50); /* the jitter spreads the retries, it is not a few steps */
    {
        struct delivery_rcpt x = {0};
        delivery_set(&x, R_DLV_EXPIRED, "5 days", "451 4.4.1 Connection refused");
        assert_int_equal(x.status, DLV_PERM);
        assert_memory_equal(x.reply, "554 5.4.7 ", 10);
    }
}

/* A permanent reply is final at once: never a retry time, before or after the lifetime. */
static void
test_permanent_never_retried(void **state)
{
    const struct scheduler_policy p = {300, 4000, 432000, 14400};
    time_t next = 123;
    unsigned a;

    for (a = 1; a < 20; a++) {
        assert_int_equal(
            scheduler_decide(&p, 1000, 1000 + (time_t)a * 1000, DLV_PERM, a, 0.5, &next),
            SCHED_V_FAILED);
        assert_int_equal(next, 0);
    }
    /* after the lifetime a permanent reply stays itself (its own code, not 5.4.7) */
    assert_int_equal(
        scheduler_decide(&p, 1000, 1000 + 432000 * 2, DLV_PERM, 3, 0.5, &next), SCHED_V_FAILED);
    assert_int_equal(next, 0);
    /* delivered is done, even late */
    assert_int_equal(
        scheduler_decide(&p, 1000, 1000 + 432000 * 2, DLV_OK, 3, 0.5, &next), SCHED_V_DELIVERED);
    assert_int_equal(next, 0);
}

/* The lifetime boundary, to the second. */
static void
test_expiry_boundary(void **state)
{
    const struct scheduler_policy p = {1, 2, 100, 0};
    time_t next;

    assert_int_equal(scheduler_decide(&p, 5000, 5099, DLV_TEMP, 1, 0.5, &next), SCHED_V_DEFERRED);
    assert_int_equal(next, 5100);
    assert_int_equal(scheduler_decide(&p, 5000, 5100, DLV_TEMP, 1, 0.5, &next), SCHED_V_EXPIRED);
    assert_int_equal(next, 0);
}

/* The delay notice: once, after delay_warning, only while something is deferred. */
static void
test_delay_notice_rule(void **state)
{
    const struct scheduler_policy p = {300, 4000, 432000, 14400};
    struct scheduler_policy q = p;

    assert_false(scheduler_delay_due(&p, 0, 14399, false, true));
    assert_true(scheduler_delay_due(&p, 0, 14400, false, true));
    assert_false(scheduler_delay_due(&p, 0, 20000, true, true));   /* already warned */
    assert_false(scheduler_delay_due(&p, 0, 20000, false, false)); /* nothing deferred */
    q.delay_warning = 0;
    assert_false(scheduler_delay_due(&q, 0, 400000, false, true));
    q.delay_warning = 432000; /* not before the lifetime: the bounce says it all */
    assert_false(scheduler_delay_due(&q, 0, 432001, false, true));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_then_caps),
        cmocka_unit_test(test_backoff_jitter),
        cmocka_unit_test(test_backoff_never_zero),
        cmocka_unit_test(test_schedule_to_expiry),
        cmocka_unit_test(test_permanent_never_retried),
        cmocka_unit_test(test_expiry_boundary),
        cmocka_unit_test(test_delay_notice_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
