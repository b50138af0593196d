/*
 * test_remote_tls.c - deliver/remote_tls.c: the policy words and the memory of failed
 * handshakes under tls_policy = may (the handshake itself is exercised end to end by
 * tests/e2e/test_relay_tls.py against a real ternd).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include <stdio.h>
#include <string.h>

#include "deliver/remote_tls.h"

static void
test_policy_words(void **state)
{
    static const char *const words[] = {"none", "may", "encrypt", "verify", "dane"};

    for (int i = 0; i < 5; i++) {
        assert_int_equal(remote_tls_policy(words[i]), (enum remote_tls_policy)i);
        assert_string_equal(remote_tls_policy_name((enum remote_tls_policy)i), words[i]);
    }
    /* unset: the default of the tls_policy key */
    assert_int_equal(remote_tls_policy(NULL), REMOTE_TLS_MAY);
}

static void
test_fallback_window(void **state)
{
    const char *h = "mx.example.org[192.0.2.1]:25";
    time_t t0 = 1000000;

    assert_false(remote_tls_fallback_active(h, t0));
    remote_tls_fallback_note(h, t0);
    assert_true(remote_tls_fallback_active(h, t0));
    assert_true(remote_tls_fallback_active(h, t0 + REMOTE_TLS_FALLBACK_SECS - 1));
    assert_false(remote_tls_fallback_active(h, t0 + REMOTE_TLS_FALLBACK_SECS));
    /* per host: another port or address is another destination */
    assert_false(remote_tls_fallback_active("mx.example.org[192.0.2.1]:587", t0));
    assert_false(remote_tls_fallback_active("mx.example.org[192.0.2.2]:25", t0));
    /* a new failure starts the window again */
    remote_tls_fallback_note(h, t0 + 5000);
    assert_true(remote_tls_fallback_active(h, t0 + 5000 + REMOTE_TLS_FALLBACK_SECS - 1));
}

static void
test_fallback_table_full(void **state)
{
    char name[64];
    time_t t0 = 2000000;
    int i;

    /* more hosts than the table holds: the newest are remembered, the oldest give way */
    for (i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "h%d[192.0.2.1]:25", i);
        remote_tls_fallback_note(name, t0 + i);
    }
    assert_true(remote_tls_fallback_active("h999[192.0.2.1]:25", t0 + 1000));
    assert_true(remote_tls_fallback_active("h900[192.0.2.1]:25", t0 + 1000));
    assert_false(remote_tls_fallback_active("h0[192.0.2.1]:25", t0 + 1000));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_words),
        cmocka_unit_test(test_fallback_window),
        cmocka_unit_test(test_fallback_table_full),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
