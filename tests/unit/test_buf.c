/*
 * test_buf.c - counted buffers never grow past their limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/buf.h"

static void
test_limit(void **state)
{
    struct buf b;
    char big[300];

    buf_init(&b, 300);
    memset(big, 'x', sizeof(big));
    assert_int_equal(buf_append(&b, big, 300), 0);
    assert_int_equal(b.len, 300);
    assert_int_equal(buf_append(&b, "y", 1), -1);
    assert_int_equal(b.len, 300);
    assert_true(b.cap <= 300);
    buf_consume(&b, 100);
    assert_int_equal(b.len, 200);
    assert_int_equal(buf_append(&b, big, 101), -1);
    assert_int_equal(buf_append(&b, big, 100), 0);
    buf_free(&b);
}

static void
test_printf_consume(void **state)
{
    struct buf b;

    buf_init(&b, 64);
    assert_int_equal(buf_printf(&b, "%s-%d", "abc", 42), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "abc-42", 6);
    assert_int_equal(buf_printf(&b, "%0100d", 1), -1); /* would pass the limit */
    assert_int_equal(b.len, 6);
    buf_consume(&b, 4);
    assert_memory_equal(b.data, "42", 2);
    buf_consume(&b, 10);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_printf_consume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
