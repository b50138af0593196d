/*
 * test_dsn.c - unit tests of the DSN parameters (smtp/dsn.c): NOTIFY lists,
 * RET, ORCPT and ENVID validation, xtext both ways, duplicates, and the
 * envelope text round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/dsn.h"

static unsigned
notify_of(const char *s, int *rc, const char **why)
{
    unsigned n = 0xdead;

    *why = NULL;
    *rc = dsn_parse_notify(s, strlen(s), &n, why);
    return n;
}

static void
test_notify_ok(void **state)
{
    const char *why;
    int rc;

    (void)state;
    assert_int_equal(notify_of("NEVER", &rc, &why), DSN_NOTIFY_NEVER);
    assert_int_equal(rc, 0);
    assert_int_equal(notify_of("never", &rc, &why), DSN_NOTIFY_NEVER);
    assert_int_equal(notify_of("SUCCESS", &rc, &why), DSN_NOTIFY_SUCCESS);
    assert_int_equal(notify_of("failure,Delay", &rc, &why), DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY);
    assert_int_equal(rc, 0);
    assert_int_equal(notify_of("DELAY,SUCCESS,FAILURE", &rc, &why),
        DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY | DSN_NOTIFY_SUCCESS);
    assert_int_equal(rc, 0);
}

static void
test_notify_bad(void **state)
{
    static const char *const bad[] = {"", "NEVER,FAILURE", "FAILURE,NEVER", "FAILURE,FAILURE",
        "FAILURE,", ",FAILURE", "FAILURE,,DELAY", "FAIL", "FAILURES", "FAILURE DELAY",
        "NEVER,NEVER", "SUCCESS;DELAY"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why;
        int rc;

        notify_of(bad[i], &rc, &why);
        assert_int_equal(rc, -1);
        assert_non_null(why);
        assert_true(strlen(why) > 5 && strlen(why) < 80);
    }
    {
        const char *why;
        int rc;

        notify_of("NEVER,SUCCESS", &rc, &why);
        assert_non_null(strstr(why, "NEVER"));
        notify_of("DELAY,delay", &rc, &why);
        assert_non_null(strstr(why, "twice"));
    }
}

static void
test_ret(void **state)
{
    const char *why = NULL;
    int ret = 0;

    (void)state;
    assert_int_equal(dsn_parse_ret("full", 4, &ret, &why), 0);
    assert_int_equal(ret, DSN_RET_FULL);
    assert_int_equal(dsn_parse_ret("HDRS", 4, &ret, &why), 0);
    assert_int_equal(ret, DSN_RET_HDRS);
    assert_int_equal(dsn_parse_ret("HEADERS", 7, &ret, &why), -1);
    assert_non_null(why);
    assert_int_equal(dsn_parse_ret("", 0, &ret, &why), -1);
}

static void
test_xtext(void **state)
{
    char out[64];
    const char raw[] = "a+b=c d\001\377~";
    int n;

    (void)state;
    assert_true(dsn_xtext_valid("", 0));
    assert_true(dsn_xtext_valid("abc+2B+3D", 9));
    assert_false(dsn_xtext_valid("a+2b", 4)); /* lower-case hex */
    assert_false(dsn_xtext_valid("a+2", 3));  /* short */
    assert_false(dsn_xtext_valid("a+", 2));
    assert_false(dsn_xtext_valid("a+G0", 4));
    assert_false(dsn_xtext_valid("a=b", 3));   /* '=' must be encoded */
    assert_false(dsn_xtext_valid("a b", 3));   /* space */
    assert_false(dsn_xtext_valid("a\x7f", 2)); /* DEL */
    assert_false(dsn_xtext_valid("a\xc3\xa9", 3));

    n = dsn_xtext_encode(raw, sizeof(raw) - 1, out, sizeof(out));
    assert_int_equal(n, (int)strlen("a+2Bb+3Dc+20d+01+FF~"));
    assert_string_equal(out, "a+2Bb+3Dc+20d+01+FF~");
    n = dsn_xtext_decode(out, (size_t)n, out, sizeof(out)); /* in place works: never grows */
    assert_int_equal(n, (int)sizeof(raw) - 1);
    assert_memory_equal(out, raw, sizeof(raw) - 1);

    /* too small: -1, never a write past outlen */
    assert_int_equal(dsn_xtext_encode("a b", 3, out, 5), -1);
    assert_int_equal(dsn_xtext_encode("a b", 3, out, 6), 5);
    assert_int_equal(dsn_xtext_decode("abc", 3, out, 3), -1);
    assert_int_equal(dsn_xtext_decode("abc", 3, out, 4), 3);
    assert_int_equal(dsn_xtext_decode("a+zz", 4, out, sizeof(out)), -1);
}

static void
test_orcpt(void **state)
{
    const char *why;
    char big[600];
    char dec[600];

    (void)state;
#define OK(s) assert_int_equal(dsn_check_orcpt(s, strlen(s), &why), 0)
#define BAD(s)                                                                                     \
    do {                                                                                           \
        why = NULL;                                                                                \
        assert_int_equal(dsn_check_orcpt(s, strlen(s), &why), -1);                                 \
        assert_non_null(why);                                                                      \
    } while (0)
    OK("rfc822;bob@example.org");
    OK("RFC822;bob+2Bspam@example.org");
    OK("x-local;anything~goes");
    OK("utf-8;b+5Cx{E9}b@example.org");
    BAD("bob@example.org");              /* no type */
    BAD(";bob@example.org");             /* empty type */
    BAD("rfc822;");                      /* empty address */
    BAD("rfc 822;bob@example.org");      /* type not an atom */
    BAD("rfc822;bob@ex ample.org");      /* space in xtext */
    BAD("rfc822;bob=x@example.org");     /* '=' raw */
    BAD("rfc822;bob+2b@example.org");    /* lower-case hex */
    BAD("rfc822;bob+0D+0A@example.org"); /* decodes to CR LF */
    BAD("rfc822;bob+00@example.org");    /* NUL */
    BAD("rfc822;bob+C3+A9@example.org"); /* not ASCII */
#undef OK
#undef BAD
    /* length: 500 is fine, 501 is not */
    memcpy(big, "rfc822;", 7);
    memset(big + 7, 'a', sizeof(big) - 7);
    assert_int_equal(dsn_check_orcpt(big, 500, &why), 0);
    assert_int_equal(dsn_check_orcpt(big, 501, &why), -1);
    assert_non_null(strstr(why, "500"));

    assert_int_equal(dsn_orcpt_decode("rfc822;bob+2Bx+20y@a", dec, sizeof(dec)),
        (int)strlen("rfc822;bob+x y@a"));
    assert_string_equal(dec, "rfc822;bob+x y@a");
    assert_int_equal(dsn_orcpt_decode("rfc822;bob+2Bx@a", dec, 10), -1);
    assert_int_equal(dsn_orcpt_decode("nosemicolon", dec, sizeof(dec)), -1);
}

static void
test_envid(void **state)
{
    const char *why;
    char big[120];

    (void)state;
    assert_int_equal(dsn_check_envid("QQ314159", 8, &why), 0);
    assert_int_equal(dsn_check_envid("a+2Bb", 5, &why), 0);
    assert_int_equal(dsn_check_envid("", 0, &why), -1);
    assert_int_equal(dsn_check_envid("a b", 3, &why), -1);
    assert_int_equal(dsn_check_envid("a+0A", 4, &why), -1);
    memset(big, 'x', sizeof(big));
    assert_int_equal(dsn_check_envid(big, 100, &why), 0);
    assert_int_equal(dsn_check_envid(big, 101, &why), -1);
    assert_non_null(strstr(why, "100"));
}

static void
test_param_dispatch(void **state)
{
    struct dsn_rcpt_params r;
    struct dsn_msg_params m;
    const char *why;

    (void)state;
    memset(&r, 0, sizeof(r));
    memset(&m, 0, sizeof(m));
    assert_int_equal(dsn_rcpt_param(&r, "notify", 6, "FAILURE", 7, &why), DSN_PARAM_OK);
    assert_int_equal(r.notify, DSN_NOTIFY_FAILURE);
    assert_int_equal(dsn_rcpt_param(&r, "NOTIFY", 6, "DELAY", 5, &why), DSN_PARAM_ERR);
    assert_non_null(strstr(why, "twice"));
    assert_int_equal(dsn_rcpt_param(&r, "ORCPT", 5, NULL, 0, &why), DSN_PARAM_ERR);
    assert_int_equal(dsn_rcpt_param(&r, "ORCPT", 5, "rfc822;a@b", 10, &why), DSN_PARAM_OK);
    assert_string_equal(r.orcpt, "rfc822;a@b");
    assert_int_equal(dsn_rcpt_param(&r, "Orcpt", 5, "rfc822;c@d", 10, &why), DSN_PARAM_ERR);
    assert_string_equal(r.orcpt, "rfc822;a@b");
    assert_int_equal(dsn_rcpt_param(&r, "SIZE", 4, "10", 2, &why), DSN_PARAM_NOT_MINE);
    assert_int_equal(dsn_rcpt_param(&r, "NOTIFYX", 7, "NEVER", 5, &why), DSN_PARAM_NOT_MINE);
    assert_int_equal(dsn_rcpt_param(&r, "RET", 3, "FULL", 4, &why), DSN_PARAM_NOT_MINE);

    assert_int_equal(dsn_mail_param(&m, "ret", 3, "hdrs", 4, &why), DSN_PARAM_OK);
    assert_int_equal(m.ret, DSN_RET_HDRS);
    assert_int_equal(dsn_mail_param(&m, "RET", 3, "FULL", 4, &why), DSN_PARAM_ERR);
    assert_int_equal(dsn_mail_param(&m, "ENVID", 5, NULL, 0, &why), DSN_PARAM_ERR);
    assert_int_equal(dsn_mail_param(&m, "ENVID", 5, "bad id", 6, &why), DSN_PARAM_ERR);
    assert_string_equal(m.envid, "");
    assert_int_equal(dsn_mail_param(&m, "ENVID", 5, "id+2B1", 6, &why), DSN_PARAM_OK);
    assert_string_equal(m.envid, "id+2B1");
    assert_int_equal(dsn_mail_param(&m, "ENVID", 5, "id2", 3, &why), DSN_PARAM_ERR);
    assert_int_equal(dsn_mail_param(&m, "NOTIFY", 6, "NEVER", 5, &why), DSN_PARAM_NOT_MINE);
    assert_int_equal(dsn_mail_param(&m, "BODY", 4, "8BITMIME", 8, &why), DSN_PARAM_NOT_MINE);
}

static void
test_text_roundtrip(void **state)
{
    struct dsn_rcpt_params r, r2;
    struct dsn_msg_params m, m2;
    char text[DSN_TEXT_MAX];
    int n;

    (void)state;
    memset(&r, 0, sizeof(r));
    assert_int_equal(dsn_rcpt_format(&r, text, sizeof(text)), 0);
    assert_string_equal(text, "");
    assert_int_equal(dsn_rcpt_parse_text("", 0, &r2), 0);
    assert_int_equal(r2.notify, 0);
    assert_string_equal(r2.orcpt, "");

    r.notify = DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE | DSN_NOTIFY_SUCCESS;
    strcpy(r.orcpt, "rfc822;bob+2Bx@example.org");
    n = dsn_rcpt_format(&r, text, sizeof(text));
    assert_string_equal(text, "N=SUCCESS,FAILURE,DELAY O=rfc822;bob+2Bx@example.org");
    assert_int_equal(n, (int)strlen(text));
    assert_int_equal(dsn_rcpt_parse_text(text, strlen(text), &r2), 0);
    assert_int_equal(r2.notify, r.notify);
    assert_string_equal(r2.orcpt, r.orcpt);
    assert_int_equal(dsn_rcpt_parse_text("O=rfc822;a@b N=NEVER", 20, &r2), 0);
    assert_int_equal(r2.notify, DSN_NOTIFY_NEVER);
    assert_string_equal(r2.orcpt, "rfc822;a@b");
    /* too small an output */
    assert_int_equal(dsn_rcpt_format(&r, text, 10), -1);

    /* the longest ORCPT fits in DSN_TEXT_MAX */
    memset(r.orcpt, 'a', DSN_ORCPT_MAX);
    memcpy(r.orcpt, "rfc822;", 7);
    r.orcpt[DSN_ORCPT_MAX] = '\0';
    assert_true(dsn_rcpt_format(&r, text, sizeof(text)) > DSN_ORCPT_MAX);
    assert_int_equal(dsn_rcpt_parse_text(text, strlen(text), &r2), 0);
    assert_string_equal(r2.orcpt, r.orcpt);

    static const char *const bad[] = {"N=", "N=MAYBE", "X=1", "N=NEVER  O=rfc822;a@b", " N=NEVER",
        "N=NEVER ", "N=NEVER N=DELAY", "O=a@b", "N", "=NEVER"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r2.notify = 7;
        assert_int_equal(dsn_rcpt_parse_text(bad[i], strlen(bad[i]), &r2), -1);
        assert_int_equal(r2.notify, 0);
    }

    memset(&m, 0, sizeof(m));
    assert_int_equal(dsn_msg_format(&m, text, sizeof(text)), 0);
    m.ret = DSN_RET_HDRS;
    strcpy(m.envid, "QQ+2B314");
    dsn_msg_format(&m, text, sizeof(text));
    assert_string_equal(text, "R=HDRS E=QQ+2B314");
    assert_int_equal(dsn_msg_parse_text(text, strlen(text), &m2), 0);
    assert_int_equal(m2.ret, DSN_RET_HDRS);
    assert_string_equal(m2.envid, "QQ+2B314");
    assert_int_equal(dsn_msg_parse_text("R=FULL", 6, &m2), 0);
    assert_int_equal(m2.ret, DSN_RET_FULL);
    assert_string_equal(m2.envid, "");
    assert_int_equal(dsn_msg_parse_text("R=ALL", 5, &m2), -1);
    assert_int_equal(dsn_msg_parse_text("E=a b", 5, &m2), -1);
    assert_int_equal(dsn_msg_parse_text("E=a E=b", 7, &m2), -1);
}

static void
test_notify_format(void **state)
{
    char out[32];

    (void)state;
    assert_int_equal(dsn_notify_format(0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    dsn_notify_format(DSN_NOTIFY_NEVER, out, sizeof(out));
    assert_string_equal(out, "NEVER");
    dsn_notify_format(DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE, out, sizeof(out));
    assert_string_equal(out, "FAILURE,DELAY");
    assert_int_equal(dsn_notify_format(DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE, out, 13), -1);
    assert_int_equal(dsn_notify_format(DSN_NOTIFY_DELAY | DSN_NOTIFY_FAILURE, out, 14), 13);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_ok),
        cmocka_unit_test(test_notify_bad),
        cmocka_unit_test(test_ret),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_orcpt),
        cmocka_unit_test(test_envid),
        cmocka_unit_test(test_param_dispatch),
        cmocka_unit_test(test_text_roundtrip),
        cmocka_unit_test(test_notify_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
