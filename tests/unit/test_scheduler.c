/*
 * test_scheduler.c - the retry schedule: exponential from min_backoff,
 * capped at max_backoff, with +-10% jitter, never zero, no quantisation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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
    assert_true(scheduler_backoff(1000, 100000, 1, 0.3) != scheduler_backoff(1000, 100000, 1, 0.31));
}

static void
test_backoff_never_zero(void **state)
{
    assert_int_equal(scheduler_backoff(1, 1, 1, 0.0), 1);
    assert_int_equal(scheduler_backoff(1, 2, 3, 0.5), 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_then_caps),
        cmocka_unit_test(test_backoff_jitter),
        cmocka_unit_test(test_backoff_never_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
