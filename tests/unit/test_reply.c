/*
 * test_reply.c - the catalogue is complete and consistent, and reply_write
 * formats exactly "CODE ESC TEXT\r\n" with safe arguments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/reply.h"

static void
test_table_consistent(void **state)
{
    size_t i, j;

    for (i = 0; i < REPLY__COUNT; i++) {
        const struct reply_def *r = &reply_table[i];
        const char *p;
        unsigned n = 0;

        assert_non_null(r->name);
        assert_true(r->code >= 200 && r->code <= 599);
        /* the enhanced code's class digit matches the basic code's (RFC 3463 §2) */
        if (r->esc != NULL) {
            assert_int_equal(r->esc[0] - '0', r->code / 100);
            assert_int_equal(r->esc[1], '.');
        } else {
            /* only the greeting, HELO/EHLO and 354 go without one (RFC 2034 §3), and
               AUTH's 334, whose text is the base64 challenge alone (RFC 4954 §4) */
            assert_true(r->code == 220 || r->code == 250 || r->code == 354 || r->code == 334);
        }
        for (p = r->text; (p = strstr(p, "%s")) != NULL; p += 2)
            n++;
        if (n != r->nargs)
            fail_msg("%s: text has %u %%s, nargs says %u", r->name, n, r->nargs);
        assert_null(strchr(r->text, '\r'));
        assert_null(strchr(r->text, '\n'));
        if (strlen(r->meaning) < 20 || strlen(r->when) < 20 || strlen(r->resolve) < 10)
            fail_msg("%s: explanation missing", r->name);
        for (j = 0; j < i; j++)
            assert_string_not_equal(reply_table[j].name, r->name);
        assert_int_equal(reply_find(r->name), i);
    }
    assert_int_equal(reply_find("R_NO_SUCH"), REPLY__COUNT);
}

static void
test_421_and_501(void **state)
{
    /* the seed's two codes: 421 transient and closing, 501 permanent syntax */
    assert_int_equal(reply_get(R_SHUTDOWN)->code, 421);
    assert_int_equal(reply_class_of(421), REPLY_CLASS_TRANSIENT);
    assert_int_equal(reply_get(R_BAD_SENDER)->code, 501);
    assert_string_equal(reply_get(R_BAD_SENDER)->esc, "5.1.7");
    assert_string_equal(reply_get(R_BAD_RCPT)->esc, "5.1.3");
    assert_int_equal(reply_class_of(501), REPLY_CLASS_PERMANENT);
    assert_string_equal(reply_class_name(REPLY_CLASS_TRANSIENT), "transient negative");
}

static void
test_write(void **state)
{
    struct buf b;

    buf_init(&b, 4096);
    assert_int_equal(reply_write(&b, R_QUEUED, "ABC"), 0);
    assert_int_equal(reply_write(&b, R_GREETING, "mx.test"), 0);
    assert_int_equal(reply_write(&b, R_BAD_SENDER, "evil\r\n250 ok"), 0);
    b.data[b.len] = '\0';
    assert_string_equal(b.data, "250 2.0.0 Ok: queued as ABC\r\n"
                                "220 mx.test ESMTP tern\r\n"
                                "501 5.1.7 Bad sender address syntax: evil??250 ok\r\n");
    buf_reset(&b);
    {
        const char *ext[] = {"PIPELINING", "SIZE 10"};
        assert_int_equal(reply_write_lines(&b, R_EHLO, "mx", ext, 2), 0);
        assert_int_equal(b.len, strlen("250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n"));
        assert_memory_equal(b.data, "250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n", b.len);
    }
    buf_free(&b);
    /* a full buffer leaves no partial reply behind */
    buf_init(&b, 16);
    assert_int_equal(reply_write(&b, R_QUEUED, "ABCDEFGHIJ"), -1);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_consistent),
        cmocka_unit_test(test_421_and_501),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
