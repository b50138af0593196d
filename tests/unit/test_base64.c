/*
 * test_base64.c - strict RFC 4648 base64: round trips, and every kind of
 * sloppy input refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/base64.h"

static long
dec(const char *in, unsigned char *out)
{
    return base64_decode(in, strlen(in), out);
}

static void
test_round_trip(void **state)
{
    unsigned char in[64], out[64];
    char enc[BASE64_ENCODED_LEN(64) + 1];
    size_t n, i;

    for (n = 0; n <= sizeof(in); n++) {
        for (i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 37 + n);
        base64_encode(in, n, enc);
        assert_int_equal(strlen(enc), BASE64_ENCODED_LEN(n));
        assert_int_equal(base64_decode(enc, strlen(enc), out), (long)n);
        assert_memory_equal(in, out, n);
    }
}

static void
test_known(void **state)
{
    unsigned char out[64];
    char enc[64];

    assert_int_equal(dec("", out), 0);
    assert_int_equal(dec("Zg==", out), 1);
    assert_int_equal(dec("Zm8=", out), 2);
    assert_int_equal(dec("Zm9v", out), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(dec("AGFsaWNlAHNlY3JldA==", out), 13);
    assert_memory_equal(out, "\0alice\0secret", 13);
    base64_encode((const unsigned char *)"Password:", 9, enc);
    assert_string_equal(enc, "UGFzc3dvcmQ6");
}

static void
test_strict(void **state)
{
    unsigned char out[64];

    assert_int_equal(dec("Zg", out), -1); /* missing padding */
    assert_int_equal(dec("Zg=", out), -1);
    assert_int_equal(dec("Zg===", out), -1);
    assert_int_equal(dec("Z===", out), -1); /* too much padding */
    assert_int_equal(dec("=Zg=", out), -1);
    assert_int_equal(dec("Zg==Zg==", out), -1); /* padding in the middle */
    assert_int_equal(dec("Zh==", out), -1);     /* non-zero bits before the padding */
    assert_int_equal(dec("Zm9=", out), -1);
    assert_int_equal(dec("Zm 9", out), -1); /* whitespace */
    assert_int_equal(dec("Zm9v\r\n", out), -1);
    assert_int_equal(dec("Zm-_", out), -1); /* the URL-safe alphabet is not this one */
    assert_int_equal(base64_decode("Zm\0v", 4, out), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_known),
        cmocka_unit_test(test_strict),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
