/*
 * test_sendmail.c - unit tests for the pure parts of local submission:
 * cli/sendmail.c (dot end with and without -i, the header section, -t's
 * address lists, Bcc removal), queue/maildrop.c (the SUBMIT / maildrop
 * payload and CRLF normalisation) and cli/probe.c's verdict reasons.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include "cli/probe.h"
#include "cli/sendmail.h"
#include "queue/maildrop.h"
#include "util/buf.h"

#define NONE ((size_t)-1)

static size_t
dot(const char *s, bool eof)
{
    size_t from = 0;

    return cli_sendmail_dot_end(s, strlen(s), &from, eof);
}

static void
test_dot_end(void **state)
{
    assert_int_equal(dot("a\n.\nb\n", false), 2);
    assert_int_equal(dot("a\r\n.\r\nb\r\n", false), 3);
    assert_int_equal(dot(".\n", false), 0);
    assert_int_equal(dot("a\n..\nb\n", false), NONE); /* ".." is not the end */
    assert_int_equal(dot("a\n. \n", false), NONE);
    assert_int_equal(dot("a\n.x\n", false), NONE);
    assert_int_equal(dot("a\n.", false), NONE); /* might go on */
    assert_int_equal(dot("a\n.", true), 2);     /* at EOF it is a lone dot */
    assert_int_equal(dot("a.\nb\n", false), NONE);
    assert_int_equal(dot("", true), NONE);
}

/* Fed in pieces, the scan resumes where it stopped and finds the same end. */
static void
test_dot_end_incremental(void **state)
{
    const char *msg = "Subject: x\nline\n.\nrest\n";
    size_t n = strlen(msg), cut, from;

    for (cut = 0; cut <= n; cut++) {
        size_t r;

        from = 0;
        r = cli_sendmail_dot_end(msg, cut, &from, false);
        if (r == NONE)
            r = cli_sendmail_dot_end(msg, n, &from, false);
        assert_int_equal(r, 16);
    }
}

static void
test_header_end(void **state)
{
    size_t hl;
    const char *m1 = "From: a\nTo: b,\n c\n\nbody\n";
    const char *m2 = "just a body\nline\n";
    const char *m3 = "Subject: x\r\n\r\nbody";
    const char *m4 = "Subject: only header\n";

    assert_int_equal(cli_sendmail_header_end(m1, strlen(m1), &hl), 19);
    assert_int_equal(hl, 18);
    assert_int_equal(cli_sendmail_header_end(m2, strlen(m2), &hl), 0);
    assert_int_equal(hl, 0);
    assert_int_equal(cli_sendmail_header_end(m3, strlen(m3), &hl), 14);
    assert_int_equal(hl, 12);
    assert_int_equal(cli_sendmail_header_end(m4, strlen(m4), &hl), strlen(m4));
    assert_int_equal(hl, strlen(m4));
    assert_true(cli_sendmail_has_field(m1, 18, "to"));
    assert_false(cli_sendmail_has_field(m1, 18, "Cc"));
    assert_false(cli_sendmail_has_field(m1, 18, "Fro"));
}

static void
free_list(char **l, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void
test_parse_addrs(void **state)
{
    const char *s = "Ann Example <ann@example.org>, bob@example.org (Bob, really),"
                    " \"Smith, Carol\" <carol@example.org>, undisclosed:;"
                    " team: dave@example.org, <@relay.example:erin@example.org>;";
    char **l = NULL;
    size_t n = 0;

    assert_int_equal(cli_sendmail_parse_addrs(s, strlen(s), &l, &n, 100), 0);
    assert_int_equal(n, 5);
    assert_string_equal(l[0], "ann@example.org");
    assert_string_equal(l[1], "bob@example.org");
    assert_string_equal(l[2], "carol@example.org");
    assert_string_equal(l[3], "dave@example.org");
    assert_string_equal(l[4], "erin@example.org");
    free_list(l, n);

    l = NULL;
    n = 0;
    assert_int_equal(cli_sendmail_parse_addrs("a@x, b@x, c@x", 13, &l, &n, 2), -1);
    free_list(l, n);
}

static void
test_header_rcpts(void **state)
{
    const char *m = "From: me@example.org\r\n"
                    "To: Ann <ann@example.org>,\r\n"
                    "  bob@example.org\r\n"
                    "Cc: carol@example.org\r\n"
                    "BCC: hidden@example.org\r\n"
                    "Reply-To: not@example.org\r\n"
                    "Subject: To: nobody@example.org\r\n"
                    "\r\n"
                    "To: body@example.org\r\n";
    size_t hl;
    char **l = NULL;
    size_t n = 0;

    (void)cli_sendmail_header_end(m, strlen(m), &hl);
    assert_int_equal(cli_sendmail_header_rcpts(m, hl, &l, &n, 100), 0);
    assert_int_equal(n, 4);
    assert_string_equal(l[0], "ann@example.org");
    assert_string_equal(l[1], "bob@example.org");
    assert_string_equal(l[2], "carol@example.org");
    assert_string_equal(l[3], "hidden@example.org");
    free_list(l, n);
}

static void
test_strip_bcc(void **state)
{
    const char *m = "To: a@example.org\n"
                    "Bcc: secret@example.org,\n"
                    "\tmore@example.org\n"
                    "Subject: s\n"
                    "bcc: x@example.org\n"
                    "\n"
                    "Bcc: in the body stays\n";
    const char *want = "To: a@example.org\n"
                       "Subject: s\n"
                       "\n"
                       "Bcc: in the body stays\n";
    struct buf b;

    buf_init(&b, 0);
    assert_int_equal(cli_sendmail_strip_bcc(m, strlen(m), &b), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

static void
test_payload_roundtrip(void **state)
{
    const char *rcpts[] = {"a@example.org", "b@example.org"};
    const char *msg = "Subject: x\n\nbody\n";
    struct maildrop_env env;
    struct buf b;
    char err[128];

    buf_init(&b, 0);
    assert_int_equal(maildrop_format(&b, "me@example.org", rcpts, 2, msg, strlen(msg)), 0);
    assert_int_equal(maildrop_parse(b.data, b.len, &env, err, sizeof(err)), 0);
    assert_string_equal(env.sender, "me@example.org");
    assert_int_equal(env.nrcpts, 2);
    assert_string_equal(env.rcpts[1], "b@example.org");
    assert_int_equal(env.msglen, strlen(msg));
    assert_memory_equal(env.msg, msg, env.msglen);
    maildrop_env_free(&env);
    buf_reset(&b);
    /* the null sender */
    assert_int_equal(maildrop_format(&b, "", rcpts, 1, "", 0), 0);
    assert_int_equal(maildrop_parse(b.data, b.len, &env, err, sizeof(err)), 0);
    assert_string_equal(env.sender, "");
    assert_int_equal(env.msglen, 0);
    maildrop_env_free(&env);
    /* no control characters in an address */
    buf_reset(&b);
    {
        const char *bad[] = {"a@example.org\nR evil@example.org"};
        assert_int_equal(maildrop_format(&b, "me@example.org", bad, 1, "", 0), -1);
    }
    buf_free(&b);
}

static void
test_payload_bad(void **state)
{
    static const char *const bad[] = {
        "", "S a@b\n",             /* no blank line */
        "S a@b\n\nmsg",            /* no recipient */
        "R a@b\n\nmsg",            /* no sender */
        "S a@b\nS c@d\nR e@f\n\n", /* two senders */
        "S a@b\nX c@d\n\n",        /* unknown line */
        "S a@b\nR \n\n",           /* empty recipient */
        "S a@b\nR c\td@e\n\n",     /* control character */
        "S a@b\nR <c@d>\n\n",      /* brackets */
        "S a@b\nRc@d\n\n",         /* no space */
    };
    struct maildrop_env env;
    char err[128];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(maildrop_parse(bad[i], strlen(bad[i]), &env, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }
}

static void
test_crlf(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\nb\n", "a\r\nb\r\n"},
        {"a\r\nb\r\n", "a\r\nb\r\n"},
        {"a\rb", "a\r\nb"},
        {"a\r", "a\r\n"},
        {"\n\n", "\r\n\r\n"},
        {"a\r\r\nb", "a\r\n\r\nb"},
        {"", ""},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf b;

        buf_init(&b, 0);
        assert_int_equal(maildrop_crlf(&b, cases[i].in, strlen(cases[i].in)), 0);
        assert_int_equal(b.len, strlen(cases[i].out));
        if (b.len > 0)
            assert_memory_equal(b.data, cases[i].out, b.len);
        buf_free(&b);
    }
}

static void
test_probe_why(void **state)
{
    char why[300];

    cli_probe_why(450, "4.7.1", "Greylisted, try again in 5 minutes", why, sizeof(why));
    assert_non_null(strstr(why, "greylisting"));
    assert_non_null(strstr(why, "450 4.7.1"));
    cli_probe_why(421, "4.7.0", "Too busy", why, sizeof(why));
    assert_non_null(strstr(why, "overloaded"));
    cli_probe_why(451, "4.7.1", "Rate limit exceeded", why, sizeof(why));
    assert_non_null(strstr(why, "rate limit"));
    cli_probe_why(550, "5.1.1", "User unknown", why, sizeof(why));
    assert_non_null(strstr(why, "no such user"));
    cli_probe_why(452, "4.2.2", "Mailbox full", why, sizeof(why));
    assert_non_null(strstr(why, "mailbox is full"));
    cli_probe_why(550, "5.7.1", "Relaying denied", why, sizeof(why));
    assert_non_null(strstr(why, "relaying denied"));
    cli_probe_why(554, "", "", why, sizeof(why));
    assert_non_null(strstr(why, "(554)"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_end),
        cmocka_unit_test(test_dot_end_incremental),
        cmocka_unit_test(test_header_end),
        cmocka_unit_test(test_parse_addrs),
        cmocka_unit_test(test_header_rcpts),
        cmocka_unit_test(test_strip_bcc),
        cmocka_unit_test(test_payload_roundtrip),
        cmocka_unit_test(test_payload_bad),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_probe_why),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
