/*
 * test_explain.c - the tables behind `tern explain` / `tern compare` are
 * complete and consistent, pasted reply lines are understood, and a
 * comparison says the right things (the seed's 421 vs 501).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* open_memstream */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/explain.h"

static void
test_every_code_resolves(void **state)
{
    struct explain_result r;
    char in[16], err[256];
    size_t i, j;

    assert_true(explain_ncodes >= 30);
    for (i = 0; i < explain_ncodes; i++) {
        const struct explain_code *c = &explain_codes[i];
        snprintf(in, sizeof(in), "%u", c->number);
        if (explain_lookup(in, &r, err, sizeof(err)) != 0)
            fail_msg("%s: %s", in, err);
        assert_ptr_equal(r.basic, c);
        assert_int_equal(r.code, c->number);
        assert_false(r.has_esc);
        assert_true(c->number >= 200 && c->number <= 599);
        /* every text present; codes.def's meaning names the class */
        assert_true(strlen(c->name) > 3 && strlen(c->meaning) > 30 && strlen(c->when) > 10 &&
                    strlen(c->resolve) > 10 && strlen(c->send) > 20);
        switch (c->number / 100) {
        case 2:
            assert_true(strncmp(c->meaning, "Positive", 8) == 0);
            break;
        case 3:
            assert_true(strncmp(c->meaning, "Intermediate", 12) == 0);
            break;
        case 4:
            assert_true(strncmp(c->meaning, "Transient", 9) == 0);
            break;
        case 5:
            assert_true(strncmp(c->meaning, "Permanent", 9) == 0);
            break;
        }
        /* numeric order, no duplicate */
        for (j = 0; j < i; j++)
            assert_true(explain_codes[j].number < c->number);
        /* every negative code says who must act; every code what tern does on receipt */
        assert_non_null(explain_actor(c->number, EXPLAIN_EN));
        assert_non_null(explain_actor(c->number, EXPLAIN_FR));
        assert_non_null(explain_on_receive(&r, EXPLAIN_EN));
        assert_non_null(explain_on_receive(&r, EXPLAIN_FR));
    }
    /* RFC 5321 4.2.3's codes are all there */
    {
        static const unsigned rfc5321[] = {211, 214, 220, 221, 250, 251, 252, 354, 421, 450, 451,
            452, 455, 500, 501, 502, 503, 504, 550, 551, 552, 553, 554, 555};
        for (i = 0; i < sizeof(rfc5321) / sizeof(rfc5321[0]); i++)
            assert_non_null(explain_code_find(rfc5321[i]));
    }
}

static void
test_every_esc_resolves(void **state)
{
    struct explain_result r;
    char in[32], err[256];
    size_t i, j;
    static const char cls[] = {'2', '4', '5', 'X'};

    assert_true(explain_nescs >= 60);
    for (i = 0; i < EXPLAIN_NSUBJECTS; i++)
        assert_non_null(explain_subjects[i]);
    for (i = 0; i < explain_nescs; i++) {
        const struct explain_esc *e = &explain_escs[i];
        assert_true(e->subject < EXPLAIN_NSUBJECTS);
        assert_true(strlen(e->title) > 3 && strlen(e->description) > 30);
        assert_true(strncmp(e->reference, "RFC ", 4) == 0 || strcmp(e->reference, "IANA") == 0);
        for (j = 0; j < i; j++) {
            const struct explain_esc *p = &explain_escs[j];
            /* subject then detail order, no duplicate */
            assert_true(
                p->subject < e->subject || (p->subject == e->subject && p->detail < e->detail));
        }
        for (j = 0; j < sizeof(cls); j++) {
            snprintf(in, sizeof(in), "%c.%u.%u", cls[j], e->subject, e->detail);
            if (explain_lookup(in, &r, err, sizeof(err)) != 0)
                fail_msg("%s: %s", in, err);
            assert_ptr_equal(r.enhanced, e);
            assert_null(r.basic);
            assert_int_equal(r.esc_class, cls[j] == 'X' ? 0 : cls[j] - '0');
            assert_string_equal(r.esc, in);
        }
    }
    /* lower-case x is read as X */
    assert_int_equal(explain_lookup("x.7.1", &r, err, sizeof(err)), 0);
    assert_string_equal(r.esc, "X.7.1");
    /* X matches tern's 550 5.7.1 replies, 4.7.1 matches none of them */
    assert_true(r.nsent >= 1);
    assert_int_equal(explain_lookup("4.7.1", &r, err, sizeof(err)), 0);
    for (i = 0; i < r.nsent; i++)
        assert_string_equal(r.sent[i]->esc, "4.7.1");
}

/* The catalogue of sent replies agrees with the code tables. */
static void
test_reply_table_consistent(void **state)
{
    size_t i;

    for (i = 0; i < REPLY__COUNT; i++) {
        const struct reply_def *d = &reply_table[i];
        const struct explain_code *c = explain_code_find(d->code);
        if (c == NULL)
            fail_msg("%s: code %u is not in codes.def", d->name, d->code);
        if (d->esc != NULL) {
            unsigned s, det;
            char cl;
            assert_int_equal(sscanf(d->esc, "%c.%u.%u", &cl, &s, &det), 3);
            /* codes.def's class digit is the enhanced code's class */
            assert_int_equal(cl - '0', d->code / 100);
            if (explain_esc_find(s, det) == NULL)
                fail_msg("%s: %s is not in esc.def", d->name, d->esc);
        }
    }
}

/* Each sent reply is found again by its code and by "code esc". */
static void
test_sent_lists(void **state)
{
    struct explain_result r;
    char in[64], err[256];
    size_t i, j;

    for (i = 0; i < REPLY__COUNT; i++) {
        const struct reply_def *d = &reply_table[i];
        bool found = false;
        snprintf(in, sizeof(in), "%u%s%s", d->code, d->esc ? " " : "", d->esc ? d->esc : "");
        assert_int_equal(explain_lookup(in, &r, err, sizeof(err)), 0);
        for (j = 0; j < r.nsent; j++) {
            found |= r.sent[j] == d;
            assert_int_equal(r.sent[j]->code, d->code);
        }
        if (!found)
            fail_msg("%s not listed for %s", d->name, in);
    }
    assert_int_equal(explain_lookup("421", &r, err, sizeof(err)), 0);
    assert_true(r.nsent >= 5);
    assert_int_equal(explain_lookup("211", &r, err, sizeof(err)), 0);
    assert_int_equal(r.nsent, 0);
}

static void
test_pasted_lines(void **state)
{
    struct explain_result r;
    char err[256];

    assert_int_equal(explain_lookup("550 5.1.1 <bob@example.org>: Recipient address rejected: "
                                    "User unknown",
                         &r, err, sizeof(err)),
        0);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.esc, "5.1.1");
    assert_int_equal(r.class_match, 1);
    assert_string_equal(r.text, "<bob@example.org>: Recipient address rejected: User unknown");

    assert_int_equal(
        explain_lookup("Diagnostic-Code: smtp; 550 5.7.1 Relay denied", &r, err, sizeof(err)), 0);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.esc, "5.7.1");
    assert_string_equal(r.text, "Relay denied");

    /* a Postfix log line: IP octets, ports, delays and dsn= come before the reply */
    assert_int_equal(
        explain_lookup("Jan 10 12:34:56 mx postfix/smtp[421]: 3F2A1: to=<bob@example.org>, "
                       "relay=mx.example.com[192.0.2.250]:25, delay=0.36, dsn=4.7.1, "
                       "status=deferred (host mx.example.com[192.0.2.250] said: 450 4.7.1 "
                       "<bob@example.org>: Recipient address rejected: Greylisted (in reply to "
                       "RCPT TO command))",
            &r, err, sizeof(err)),
        0);
    assert_int_equal(r.code, 450);
    assert_string_equal(r.esc, "4.7.1");
    assert_int_equal(r.class_match, 1);

    assert_int_equal(explain_lookup("host mx.example.com[1.2.3.4] said: 421 4.3.2 Try later", &r,
                         err, sizeof(err)),
        0);
    assert_int_equal(r.code, 421);
    assert_string_equal(r.esc, "4.3.2");

    /* a continuation line of a multi-line reply */
    assert_int_equal(
        explain_lookup("550-5.1.1 The email account does not exist.", &r, err, sizeof(err)), 0);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.esc, "5.1.1");
    assert_string_equal(r.text, "The email account does not exist.");

    /* no enhanced code: none invented; the code alone */
    assert_int_equal(explain_lookup("said: 554 Transaction failed", &r, err, sizeof(err)), 0);
    assert_int_equal(r.code, 554);
    assert_false(r.has_esc);
    assert_int_equal(r.class_match, -1);

    /* a DSN's Status: field alone */
    assert_int_equal(explain_lookup("Status: 5.2.2", &r, err, sizeof(err)), 0);
    assert_null(r.basic);
    assert_string_equal(r.esc, "5.2.2");

    /* class mismatch is reported, not refused */
    assert_int_equal(explain_lookup("550 4.7.1 odd", &r, err, sizeof(err)), 0);
    assert_int_equal(r.class_match, 0);
    /* an unregistered enhanced code in a line keeps the basic code */
    assert_int_equal(explain_lookup("550 5.7.99 custom", &r, err, sizeof(err)), 0);
    assert_true(r.has_esc);
    assert_null(r.enhanced);
    assert_int_equal(r.code, 550);
}

static void
test_errors(void **state)
{
    static const char *const bad[] = {"", "abc", "42", "4210", "599", "199", "600", "3.1.1",
        "1.2.3.4", "5.9.9", "5.1.1000", "relay=[192.0.2.250]:587", "size=421,"};
    struct explain_result r;
    char err[256];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (explain_lookup(bad[i], &r, err, sizeof(err)) != -1)
            fail_msg("%s: accepted as %u %s", bad[i], r.code, r.esc);
        assert_true(strlen(err) > 10);
    }
}

static char *
render_compare(const char *a, const char *b, enum explain_lang lang, bool json)
{
    struct explain_result ra, rb;
    char err[256], *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);

    assert_non_null(f);
    assert_int_equal(explain_lookup(a, &ra, err, sizeof(err)), 0);
    assert_int_equal(explain_lookup(b, &rb, err, sizeof(err)), 0);
    if (json)
        explain_compare_print_json(f, &ra, &rb, lang);
    else
        explain_compare_print(f, &ra, &rb, lang);
    fclose(f);
    return out;
}

static void
test_compare_421_501(void **state)
{
    struct explain_result a, b;
    struct explain_comparison c;
    char err[256], *out;

    assert_int_equal(explain_lookup("421", &a, err, sizeof(err)), 0);
    assert_int_equal(explain_lookup("501", &b, err, sizeof(err)), 0);
    explain_compare(&a, &b, EXPLAIN_EN, &c);
    assert_true(c.ndiff >= 4);
    assert_non_null(strstr(c.diff[0], "transient negative"));
    assert_non_null(strstr(c.diff[0], "permanent negative"));
    assert_non_null(strstr(c.diff[1], "Who must act"));
    assert_non_null(strstr(c.diff[1], "client software"));
    assert_non_null(strstr(c.diff[2], "421: yes"));
    assert_non_null(strstr(c.diff[2], "501: no"));
    assert_non_null(strstr(c.diff[3], "closes the connection"));
    assert_non_null(strstr(c.diff[3], "stays open"));

    out = render_compare("421", "501", EXPLAIN_EN, false);
    assert_non_null(strstr(out, "SMTP 421 Service not available vs 501"));
    assert_non_null(strstr(out, "\n  Description\n"));
    assert_non_null(strstr(out, "When you see it"));
    assert_non_null(strstr(out, "How to resolve"));
    assert_non_null(strstr(out, "\nKey differences\n"));
    assert_non_null(strstr(out, "\nWhen to use which\n"));
    free(out);

    out = render_compare("421", "501", EXPLAIN_FR, false);
    assert_non_null(strstr(out, "Quand vous le voyez"));
    assert_non_null(strstr(out, "Comment résoudre"));
    assert_non_null(strstr(out, "Différences clés"));
    assert_non_null(strstr(out, "Quand utiliser lequel"));
    assert_non_null(strstr(out, "négative transitoire"));
    free(out);

    /* enhanced codes: the subjects are compared */
    assert_int_equal(explain_lookup("5.1.1", &a, err, sizeof(err)), 0);
    assert_int_equal(explain_lookup("4.7.1", &b, err, sizeof(err)), 0);
    explain_compare(&a, &b, EXPLAIN_EN, &c);
    assert_non_null(strstr(c.diff[c.ndiff - 1], "Addressing Status"));
    assert_non_null(strstr(c.diff[c.ndiff - 1], "Security or Policy Status"));
}

static void
test_json_escaping(void **state)
{
    struct explain_result r;
    char err[256], *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);

    assert_int_equal(
        explain_lookup("550 5.1.1 \"quoted\" back\\slash\ttab \x01", &r, err, sizeof(err)), 0);
    explain_print_json(f, &r, EXPLAIN_EN);
    fclose(f);
    assert_non_null(strstr(out, "\\\"quoted\\\" back\\\\slash"));
    assert_null(strchr(out, '\x01'));
    assert_non_null(strstr(out, "\\u0001"));
    assert_non_null(strstr(out, "\"code\": 550"));
    free(out);
    free(render_compare("X.7.1", "250", EXPLAIN_FR, true));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_resolves),
        cmocka_unit_test(test_every_esc_resolves),
        cmocka_unit_test(test_reply_table_consistent),
        cmocka_unit_test(test_sent_lists),
        cmocka_unit_test(test_pasted_lines),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_compare_421_501),
        cmocka_unit_test(test_json_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
