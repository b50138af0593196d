/*
 * test_parse.c - unit tests for smtp/parse.c: verbs, HTTP detection, the
 * FROM:/TO: prefix, ESMTP parameters and the BDAT argument.
 *
 * Inputs are copied into heap blocks of exactly their length so that
 * AddressSanitizer catches a read past the end: lines are not C strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/parse.h"

/* Exact-length heap copies; freed at the end of each test by free_copies(). */
static char *copies[64];
static size_t ncopies;

static const char *
dup_n(const char *s, size_t n)
{
    char *c = malloc(n ? n : 1);

    assert_non_null(c);
    assert_true(ncopies < sizeof(copies) / sizeof(copies[0]));
    memcpy(c, s, n);
    copies[ncopies++] = c;
    return c;
}

static int
free_copies(void **state)
{
    (void)state;
    while (ncopies > 0)
        free(copies[--ncopies]);
    return 0;
}

static void
cmd_n(const char *s, size_t n, struct smtp_cmd *cmd)
{
    smtp_parse_command(dup_n(s, n), n, cmd);
}

static void
cmd(const char *s, struct smtp_cmd *c)
{
    cmd_n(s, strlen(s), c);
}

static enum smtp_verb
verb_of(const char *s)
{
    struct smtp_cmd c;

    cmd(s, &c);
    return c.verb;
}

static void
assert_arg(const struct smtp_cmd *c, const char *want)
{
    assert_non_null(c->arg);
    assert_int_equal(c->arglen, strlen(want));
    assert_memory_equal(c->arg, want, c->arglen);
}

static void
test_verbs(void **state)
{
    static const struct {
        const char *s;
        enum smtp_verb v;
    } t[] = {
        {"HELO", VERB_HELO},
        {"EHLO", VERB_EHLO},
        {"MAIL", VERB_MAIL},
        {"RCPT", VERB_RCPT},
        {"DATA", VERB_DATA},
        {"BDAT", VERB_BDAT},
        {"RSET", VERB_RSET},
        {"NOOP", VERB_NOOP},
        {"QUIT", VERB_QUIT},
        {"VRFY", VERB_VRFY},
        {"HELP", VERB_HELP},
        {"EXPN", VERB_EXPN},
        {"TURN", VERB_TURN},
        {"ETRN", VERB_ETRN},
        {"STARTTLS", VERB_STARTTLS},
        {"AUTH", VERB_AUTH},
    };
    struct smtp_cmd c;
    char lower[16];
    size_t i, j;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cmd(t[i].s, &c);
        assert_int_equal(c.verb, t[i].v);
        assert_null(c.arg);
        assert_int_equal(c.arglen, 0);
        assert_string_equal(smtp_verb_name(t[i].v), t[i].s);

        for (j = 0; t[i].s[j] != '\0'; j++)
            lower[j] = (char)(t[i].s[j] - 'A' + 'a');
        lower[j] = '\0';
        assert_int_equal(verb_of(lower), t[i].v);
    }
    assert_int_equal(verb_of("mAiL"), VERB_MAIL);
    assert_int_equal(verb_of("StartTls"), VERB_STARTTLS);
}

static void
test_arguments(void **state)
{
    struct smtp_cmd c;

    (void)state;
    cmd("MAIL FROM:<a@b>", &c);
    assert_int_equal(c.verb, VERB_MAIL);
    assert_arg(&c, "FROM:<a@b>");

    cmd("EHLO client.example", &c);
    assert_int_equal(c.verb, VERB_EHLO);
    assert_arg(&c, "client.example");

    /* One SP is the separator; the rest is the argument's problem. */
    cmd("NOOP ", &c);
    assert_int_equal(c.verb, VERB_NOOP);
    assert_arg(&c, "");
    cmd("MAIL  FROM:<a@b>", &c);
    assert_int_equal(c.verb, VERB_MAIL);
    assert_arg(&c, " FROM:<a@b>");
    cmd("NOOP\t", &c);
    assert_int_equal(c.verb, VERB_NOOP);
    assert_arg(&c, "\t");
    cmd_n("DATA\0x", 6, &c);
    assert_int_equal(c.verb, VERB_DATA);
    assert_int_equal(c.arglen, 2);
    assert_int_equal(c.arg[0], '\0');
}

static void
test_unknown(void **state)
{
    struct smtp_cmd c;

    (void)state;
    cmd("DATAX", &c);
    assert_int_equal(c.verb, VERB_UNKNOWN);
    assert_null(c.arg);
    assert_int_equal(verb_of("DATA:"), VERB_UNKNOWN);
    assert_int_equal(verb_of("DAT"), VERB_UNKNOWN);
    assert_int_equal(verb_of("XYZZY"), VERB_UNKNOWN);
    assert_int_equal(verb_of(""), VERB_UNKNOWN);
    assert_int_equal(verb_of(" "), VERB_UNKNOWN);
    assert_int_equal(verb_of(" MAIL FROM:<a@b>"), VERB_UNKNOWN);
    assert_int_equal(verb_of("MAILFROM:<a@b>"), VERB_UNKNOWN);
    assert_int_equal(verb_of("HELO\xc3\xa9"), VERB_UNKNOWN);
    assert_int_equal(verb_of("HTTP"), VERB_UNKNOWN);
    assert_int_equal(verb_of("UNKNOWN"), VERB_UNKNOWN);
    assert_int_equal(verb_of("STARTTLSX"), VERB_UNKNOWN);
    cmd_n("", 0, &c);
    assert_int_equal(c.verb, VERB_UNKNOWN);
}

static void
test_http(void **state)
{
    (void)state;
    assert_int_equal(verb_of("GET / HTTP/1.1"), VERB_HTTP);
    assert_int_equal(verb_of("POST /x HTTP/1.0"), VERB_HTTP);
    assert_int_equal(verb_of("HEAD / HTTP/1.1"), VERB_HTTP);
    assert_int_equal(verb_of("PUT /f HTTP/1.1"), VERB_HTTP);
    assert_int_equal(verb_of("CONNECT mx.example:25 HTTP/1.1"), VERB_HTTP);
    assert_int_equal(verb_of("OPTIONS * HTTP/1.1"), VERB_HTTP);
    assert_int_equal(verb_of("Host: example.com"), VERB_HTTP);
    assert_int_equal(verb_of("host:example.com"), VERB_HTTP);
    assert_int_equal(verb_of("User-Agent: curl/8"), VERB_HTTP);
    assert_int_equal(verb_of("USER-AGENT:x"), VERB_HTTP);
    assert_int_equal(verb_of("get /"), VERB_HTTP);

    assert_int_equal(verb_of("GET"), VERB_UNKNOWN);
    assert_int_equal(verb_of("GETX /"), VERB_UNKNOWN);
    assert_int_equal(verb_of("Hostname: x"), VERB_UNKNOWN);
    assert_int_equal(verb_of("Host"), VERB_UNKNOWN);
    assert_int_equal(verb_of("HEAD"), VERB_UNKNOWN);
    /* Near misses that are SMTP. */
    assert_int_equal(verb_of("HELP"), VERB_HELP);
    assert_int_equal(verb_of("HELO host"), VERB_HELO);
}

static void
test_verb_name(void **state)
{
    int v;

    (void)state;
    for (v = 0; v < VERB__COUNT; v++) {
        assert_non_null(smtp_verb_name((enum smtp_verb)v));
        assert_true(strlen(smtp_verb_name((enum smtp_verb)v)) > 0);
    }
    assert_string_equal(smtp_verb_name(VERB_MAIL), "MAIL");
    assert_string_equal(smtp_verb_name(VERB_HTTP), "HTTP");
    assert_string_equal(smtp_verb_name(VERB_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(VERB__COUNT), "UNKNOWN");
    assert_string_equal(smtp_verb_name((enum smtp_verb)(-1)), "UNKNOWN");
}

static enum smtp_prefix_err
prefix(const char *s, const char *kw, size_t *off)
{
    size_t n = strlen(s);

    return smtp_parse_prefix(dup_n(s, n), n, kw, off);
}

static void
test_prefix(void **state)
{
    size_t off = 99;

    (void)state;
    assert_int_equal(prefix("FROM:<a@b>", "FROM", &off), PREFIX_OK);
    assert_int_equal(off, 5);
    assert_int_equal(prefix("from:<a@b>", "FROM", &off), PREFIX_OK);
    assert_int_equal(off, 5);
    assert_int_equal(prefix("FROM:   <a@b>", "FROM", &off), PREFIX_OK);
    assert_int_equal(off, 8);
    assert_int_equal(prefix("FROM:<a@b>", "FROM:", &off), PREFIX_OK);
    assert_int_equal(off, 5);
    assert_int_equal(prefix("To:<a@b>", "TO", &off), PREFIX_OK);
    assert_int_equal(off, 3);
    assert_int_equal(prefix("TO:", "TO:", &off), PREFIX_OK);
    assert_int_equal(off, 3);
    assert_int_equal(prefix("TO:  ", "TO", &off), PREFIX_OK);
    assert_int_equal(off, 5);

    assert_int_equal(prefix("FROM :<a@b>", "FROM", &off), PREFIX_SPACE_BEFORE_COLON);
    assert_int_equal(off, 0);
    assert_int_equal(prefix("FROM   : <a@b>", "FROM", &off), PREFIX_SPACE_BEFORE_COLON);
    assert_int_equal(prefix("FROM <a@b>", "FROM", &off), PREFIX_NO_COLON);
    assert_int_equal(prefix("FROM", "FROM", &off), PREFIX_NO_COLON);
    assert_int_equal(prefix("FROM<a@b>", "FROM", &off), PREFIX_NO_COLON);
    assert_int_equal(prefix("FROM  ", "FROM", &off), PREFIX_NO_COLON);
    assert_int_equal(prefix("TO=<a@b>", "TO", &off), PREFIX_NO_COLON);

    assert_int_equal(prefix("<a@b>", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix("", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix("FRO", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix(" FROM:<a@b>", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix("FROMAGE:<a@b>", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix("TO:<a@b>", "FROM", &off), PREFIX_MISSING);
    assert_int_equal(prefix("FROM:<a@b>", "TO", &off), PREFIX_MISSING);
    assert_int_equal(smtp_parse_prefix(NULL, 0, "FROM", &off), PREFIX_MISSING);
}

struct pres {
    enum param_err e;
    const char *bad;
    size_t badlen;
    struct smtp_mail_params mp;
};

static struct pres
mail_n(const char *s, size_t n)
{
    struct pres r;
    const char *p = dup_n(s, n);

    r.bad = (const char *)&r; /* must be overwritten */
    r.badlen = 999;
    r.e = smtp_parse_mail_params(p, n, &r.mp, &r.bad, &r.badlen);
    /* Report the bad token as an offset-independent copy. */
    if (r.bad != NULL) {
        assert_true(r.bad >= p && r.bad + r.badlen <= p + n);
        r.bad = s + (r.bad - p);
    }
    return r;
}

static struct pres
mail(const char *s)
{
    return mail_n(s, strlen(s));
}

static void
assert_bad(const struct pres *r, const char *want)
{
    assert_non_null(r->bad);
    assert_int_equal(r->badlen, strlen(want));
    assert_memory_equal(r->bad, want, r->badlen);
}

static void
test_mail_params_ok(void **state)
{
    struct pres r;

    (void)state;
    r = mail("");
    assert_int_equal(r.e, PARAM_OK);
    assert_false(r.mp.has_size);
    assert_int_equal(r.mp.body, BODY_UNSPECIFIED);
    assert_false(r.mp.smtputf8);
    assert_null(r.bad);
    assert_int_equal(r.badlen, 0);

    r = mail(" SIZE=1000");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.has_size);
    assert_int_equal(r.mp.size, 1000);

    r = mail(" size=0");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.has_size);
    assert_int_equal(r.mp.size, 0);

    r = mail(" BODY=8bitmime");
    assert_int_equal(r.e, PARAM_OK);
    assert_int_equal(r.mp.body, BODY_8BITMIME);
    assert_false(r.mp.has_size);

    r = mail(" body=7BIT");
    assert_int_equal(r.e, PARAM_OK);
    assert_int_equal(r.mp.body, BODY_7BIT);

    r = mail(" SMTPUTF8");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.smtputf8);

    r = mail(" smtputf8 Body=8BITMIME SiZe=12345");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.smtputf8);
    assert_int_equal(r.mp.body, BODY_8BITMIME);
    assert_int_equal(r.mp.size, 12345);
}

static void
test_mail_params_size(void **state)
{
    struct pres r;

    (void)state;
    r = mail(" SIZE=18446744073709551615");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.size == 18446744073709551615ULL);
    r = mail(" SIZE=00000000000000000042"); /* 20 digits */
    assert_int_equal(r.e, PARAM_OK);
    assert_int_equal(r.mp.size, 42);

    r = mail(" SIZE=18446744073709551616");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    assert_bad(&r, "SIZE");
    r = mail(" SIZE=000000000000000000042"); /* 21 digits */
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" SIZE=99999999999999999999");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" SIZE=abc");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" SIZE=12k");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" SIZE=-1");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" SIZE=+1");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    r = mail(" BODY=7BIT size");
    assert_int_equal(r.e, PARAM_ERR_SIZE_VALUE);
    assert_bad(&r, "size");
}

static void
test_mail_params_errors(void **state)
{
    struct pres r;

    (void)state;
    r = mail(" BODY=BINARYMIME");
    assert_int_equal(r.e, PARAM_ERR_BODY_VALUE);
    assert_bad(&r, "BODY");
    r = mail(" BODY");
    assert_int_equal(r.e, PARAM_ERR_BODY_VALUE);
    r = mail(" BODY=7BITX");
    assert_int_equal(r.e, PARAM_ERR_BODY_VALUE);

    r = mail(" SMTPUTF8=yes");
    assert_int_equal(r.e, PARAM_ERR_VALUE_NOT_ALLOWED);
    assert_bad(&r, "SMTPUTF8");

    r = mail(" SIZE=1 BODY=7BIT size=2");
    assert_int_equal(r.e, PARAM_ERR_DUPLICATE);
    assert_bad(&r, "size");
    r = mail(" SMTPUTF8 SMTPUTF8");
    assert_int_equal(r.e, PARAM_ERR_DUPLICATE);

    r = mail(" SIZE=1 FOO=bar");
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    assert_bad(&r, "FOO");
    r = mail(" X-ORIG=<>");
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    assert_bad(&r, "X-ORIG");
    r = mail(" X-B2");
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    assert_bad(&r, "X-B2");
}

/* RFC 4954 §5: AUTH=<> or AUTH=xtext, checked and noted. */
static void
test_mail_params_auth(void **state)
{
    struct pres r;

    r = mail(" AUTH=<>");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.has_auth);
    r = mail(" AUTH=alice+40example.org SIZE=10");
    assert_int_equal(r.e, PARAM_OK);
    assert_true(r.mp.has_auth);
    r = mail(" SIZE=10");
    assert_false(r.mp.has_auth);
    r = mail(" AUTH=bad+4");     /* "+" must be followed by two hex digits */
    assert_int_equal(r.e, PARAM_ERR_AUTH_VALUE);
    assert_bad(&r, "AUTH");
    r = mail(" AUTH=a+zzb");
    assert_int_equal(r.e, PARAM_ERR_AUTH_VALUE);
    r = mail(" AUTH");
    assert_int_equal(r.e, PARAM_ERR_AUTH_VALUE);
    r = mail(" AUTH=<> AUTH=<>");
    assert_int_equal(r.e, PARAM_ERR_DUPLICATE);
}

static void
test_mail_params_syntax(void **state)
{
    static const char *const bad[] = {
        " ",
        "  SIZE=1",
        " SIZE=1 ",
        " SIZE=1  BODY=7BIT",
        "SIZE=1",
        " =x",
        " -A",
        " A_B",
        " SIZE=",
        " X=a=b",
        " X=\x80",
        " X=a\tb",
        " \tX",
        " X=\x7f",
        "\tSIZE=1",
        " SIZE=1\t",
        " \xc3\xa9",
        " A.B=1",
    };
    struct pres r;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = mail(bad[i]);
        if (r.e != PARAM_ERR_SYNTAX)
            fail_msg("\"%s\": got %d, want syntax error", bad[i], r.e);
        assert_non_null(r.bad);
    }
    /* The offending token, for the reply. */
    r = mail(" SIZE=1 X=a=b BODY=7BIT");
    assert_bad(&r, "X=a=b");
    r = mail(" SIZE=1  BODY=7BIT");
    assert_int_equal(r.badlen, 0);
    /* Syntax is checked left to right: an earlier unknown keyword wins. */
    r = mail(" FOO=1 =x");
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    /* Values: any of %d33-60 / %d62-126. */
    r = mail(" FOO=!\"#<>~");
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
}

static void
test_mail_params_nul(void **state)
{
    struct pres r;

    (void)state;
    r = mail_n(" SIZE=1\0", 8);
    assert_int_equal(r.e, PARAM_ERR_NUL);
    assert_bad(&r, "SIZE=1");
    /* NUL wins even over an earlier syntax error. */
    r = mail_n("  x \0", 5);
    assert_int_equal(r.e, PARAM_ERR_NUL);
    assert_int_equal(r.badlen, 0);
    r = mail_n("\0", 1);
    assert_int_equal(r.e, PARAM_ERR_NUL);
}

static struct pres
rcpt_n(const char *s, size_t n)
{
    struct pres r;
    const char *p = dup_n(s, n);

    r.bad = (const char *)&r;
    r.badlen = 999;
    {
        struct dsn_rcpt_params dsn;
        const char *why;
        r.e = smtp_parse_rcpt_params(p, n, &dsn, &why, &r.bad, &r.badlen);
        if (r.e == PARAM_ERR_DSN)
            assert_non_null(why);
    }
    if (r.bad != NULL) {
        assert_true(r.bad >= p && r.bad + r.badlen <= p + n);
        r.bad = s + (r.bad - p);
    }
    return r;
}

static void
test_rcpt_params(void **state)
{
    struct pres r;

    (void)state;
    r = rcpt_n("", 0);
    assert_int_equal(r.e, PARAM_OK);
    assert_null(r.bad);
    r = rcpt_n(" NOTIFY=NEVER", 13);
    assert_int_equal(r.e, PARAM_OK); /* RFC 3461 */
    r = rcpt_n(" NOTIFY=NEVER,DELAY", 19);
    assert_int_equal(r.e, PARAM_ERR_DSN);
    assert_bad(&r, "NOTIFY");
    r = rcpt_n(" XNOTIFY=NEVER", 14);
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    assert_bad(&r, "XNOTIFY");
    r = rcpt_n(" SIZE=1", 7);
    assert_int_equal(r.e, PARAM_ERR_UNKNOWN);
    r = rcpt_n(" ", 1);
    assert_int_equal(r.e, PARAM_ERR_SYNTAX);
    r = rcpt_n(" =x", 3);
    assert_int_equal(r.e, PARAM_ERR_SYNTAX);
    r = rcpt_n("X", 1);
    assert_int_equal(r.e, PARAM_ERR_SYNTAX);
    r = rcpt_n(" ORCPT=", 7);
    assert_int_equal(r.e, PARAM_ERR_SYNTAX);
    r = rcpt_n(" ORCPT=rfc822;a+zz", 18);
    assert_int_equal(r.e, PARAM_ERR_DSN);
    r = rcpt_n(" A\0", 3);
    assert_int_equal(r.e, PARAM_ERR_NUL);
    assert_bad(&r, "A");
}

static void
test_param_strerror(void **state)
{
    int i, j;

    (void)state;
    for (i = 0; i < PARAM_ERR__COUNT; i++) {
        const char *s = smtp_param_strerror((enum param_err)i);

        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (j = 0; j < i; j++)
            assert_string_not_equal(s, smtp_param_strerror((enum param_err)j));
    }
    assert_non_null(smtp_param_strerror(PARAM_ERR__COUNT));
}

static int
bdat(const char *s, unsigned long long *size, bool *last)
{
    size_t n = strlen(s);

    *size = 12345;
    *last = true;
    return smtp_parse_bdat(dup_n(s, n), n, size, last);
}

static void
test_bdat(void **state)
{
    static const char *const bad[] = {
        "",
        " 100",
        "100 ",
        "100  LAST",
        "100 LAST ",
        "100 LASTX",
        "100 LAS",
        "abc",
        "-1",
        "+1",
        "1e3",
        "100\tLAST",
        "LAST",
        "100 LAST LAST",
        "000000000000000000001",
        "18446744073709551616",
    };
    unsigned long long size;
    bool last;
    size_t i;

    (void)state;
    assert_int_equal(bdat("100", &size, &last), 0);
    assert_int_equal(size, 100);
    assert_false(last);
    assert_int_equal(bdat("0 LAST", &size, &last), 0);
    assert_int_equal(size, 0);
    assert_true(last);
    assert_int_equal(bdat("7 last", &size, &last), 0);
    assert_int_equal(size, 7);
    assert_true(last);
    assert_int_equal(bdat("18446744073709551615 LaSt", &size, &last), 0);
    assert_true(size == 18446744073709551615ULL);
    assert_int_equal(bdat("00000000000000000001", &size, &last), 0);
    assert_int_equal(size, 1);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (bdat(bad[i], &size, &last) != -1)
            fail_msg("BDAT \"%s\" accepted", bad[i]);
        assert_int_equal(size, 0);
        assert_false(last);
    }
    assert_int_equal(smtp_parse_bdat(dup_n("100 LAST\0", 9), 9, &size, &last), -1);
    assert_int_equal(smtp_parse_bdat(NULL, 0, &size, &last), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_verbs, free_copies),
        cmocka_unit_test_teardown(test_arguments, free_copies),
        cmocka_unit_test_teardown(test_unknown, free_copies),
        cmocka_unit_test_teardown(test_http, free_copies),
        cmocka_unit_test_teardown(test_verb_name, free_copies),
        cmocka_unit_test_teardown(test_prefix, free_copies),
        cmocka_unit_test_teardown(test_mail_params_ok, free_copies),
        cmocka_unit_test_teardown(test_mail_params_size, free_copies),
        cmocka_unit_test_teardown(test_mail_params_errors, free_copies),
        cmocka_unit_test_teardown(test_mail_params_auth, free_copies),
        cmocka_unit_test_teardown(test_mail_params_syntax, free_copies),
        cmocka_unit_test_teardown(test_mail_params_nul, free_copies),
        cmocka_unit_test_teardown(test_rcpt_params, free_copies),
        cmocka_unit_test_teardown(test_param_strerror, free_copies),
        cmocka_unit_test_teardown(test_bdat, free_copies),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
