/*
 * test_relay.c - no open relay: remote recipients only from relay_networks,
 * routing tricks refused from everyone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/relay.h"

static struct smtp_path
path(const char *s)
{
    struct smtp_path p;
    size_t used;

    assert_int_equal(smtp_addr_parse(s, strlen(s), ADDR_UTF8 | ADDR_NO_DOMAIN_OK, &p, &used),
        ADDR_OK);
    return p;
}

static void
test_relay(void **state)
{
    struct config c;
    char err[256];
    struct smtp_path p;

    config_defaults(&c);
    assert_int_equal(config_load_string(&c, "t", "local_domains = example.org, Example.NET\n",
                         err, sizeof(err)),
        0);
    p = path("<u@example.org>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RCPT_OK);
    p = path("<u@EXAMPLE.net>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RCPT_OK);
    p = path("<Postmaster>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RCPT_OK);
    p = path("<u@remote.example>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RELAY_DENIED);
    assert_int_equal(relay_check_rcpt(&c, true, &p), R_RCPT_OK);
    p = path("<u@sub.example.org>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RELAY_DENIED);
    p = path("<@relay.example:u@example.org>"); /* source route stripped: local */
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_RCPT_OK);
    p = path("<u%remote.example@example.org>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_ROUTE_HACK);
    assert_int_equal(relay_check_rcpt(&c, true, &p), R_ROUTE_HACK);
    p = path("<remote!u@example.org>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_ROUTE_HACK);
    p = path("<\"u@remote.example\"@example.org>");
    assert_int_equal(relay_check_rcpt(&c, false, &p), R_ROUTE_HACK);
    config_free(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
