/*
 * test_replyparse.c - unit tests for smtp/replyparse.c: reading replies as a
 * client.
 *
 * Every input is also fed split at every pair of positions (three pieces,
 * each copied to a buffer of its exact size, so ASan sees any overread) and
 * byte by byte: the parser promises the same replies, errors and offsets for
 * any split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* cmocka hands every test a state it may not need (meson builds with -Wno-unused-parameter). */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#include "smtp/replyparse.h"

#define EVENTS_MAX 8

/* What one complete reply or error looked like, and where in the input it ended. */
struct event {
    enum replyparse_status st;
    size_t end;
    unsigned code;
    char esc[16];
    char text[REPLYPARSE_TEXT_MAX];
    unsigned lines;
    const char *error;
};

struct run {
    struct event ev[EVENTS_MAX];
    unsigned nev;
    enum replyparse_status last; /* the status of the last call */
};

static struct replyparse rp;

static void
run_piece(struct run *out, const char *p, size_t n, size_t *base)
{
    char *copy = malloc(n > 0 ? n : 1);
    size_t off = 0, used;

    assert_non_null(copy);
    memcpy(copy, p, n);
    do {
        enum replyparse_status st = replyparse_feed(&rp, copy + off, n - off, &used);

        assert_true(used <= n - off);
        out->last = st;
        off += used;
        if (st == REPLYPARSE_MORE) {
            assert_int_equal(off, n);
            break;
        }
        if (st == REPLYPARSE_ERROR && out->nev > 0 &&
            out->ev[out->nev - 1].st == REPLYPARSE_ERROR) {
            assert_int_equal(used, 0); /* the error is sticky and uses nothing */
            break;
        }
        assert_true(out->nev < EVENTS_MAX);
        struct event *e = &out->ev[out->nev++];
        e->st = st;
        e->end = *base + off;
        e->code = rp.code;
        e->lines = rp.lines;
        e->error = rp.error;
        memcpy(e->esc, rp.esc, sizeof(e->esc));
        memcpy(e->text, rp.text, sizeof(e->text));
        assert_true(used > 0);
        if (st == REPLYPARSE_ERROR)
            break;
    } while (off < n);
    *base += n;
    free(copy);
}

/* Feed in[0..n) as pieces [0,a) [a,b) [b,n). */
static void
run_split(struct run *out, const char *in, size_t n, size_t a, size_t b)
{
    size_t base = 0;

    memset(out, 0, sizeof(*out));
    replyparse_init(&rp);
    run_piece(out, in, a, &base);
    run_piece(out, in + a, b - a, &base);
    run_piece(out, in + b, n - b, &base);
}

static void
same_run(const struct run *x, const struct run *y)
{
    unsigned i;

    assert_int_equal(x->nev, y->nev);
    for (i = 0; i < x->nev; i++) {
        const struct event *a = &x->ev[i], *b = &y->ev[i];

        assert_int_equal(a->st, b->st);
        assert_int_equal(a->end, b->end);
        if (a->st == REPLYPARSE_DONE) {
            assert_int_equal(a->code, b->code);
            assert_int_equal(a->lines, b->lines);
            assert_string_equal(a->esc, b->esc);
            assert_string_equal(a->text, b->text);
        } else {
            assert_ptr_equal(a->error, b->error);
        }
    }
}

/* Parse in one piece; check every split and byte by byte give the same. */
static struct run whole;

static const struct run *
parse_n(const char *in, size_t n)
{
    struct run other;
    size_t a, b, base = 0, i;

    run_split(&whole, in, n, n, n);
    if (n <= 160) {
        for (a = 0; a <= n; a++)
            for (b = a; b <= n; b++) {
                run_split(&other, in, n, a, b);
                same_run(&whole, &other);
            }
    } else {
        for (a = 0; a <= n; a += 7) {
            run_split(&other, in, n, a, n);
            same_run(&whole, &other);
        }
    }
    memset(&other, 0, sizeof(other));
    replyparse_init(&rp);
    for (i = 0; i < n; i++)
        run_piece(&other, in + i, 1, &base);
    same_run(&whole, &other);
    return &whole;
}

static const struct run *
parse(const char *in)
{
    return parse_n(in, strlen(in));
}

static void
expect_done(const char *in, unsigned code, const char *esc, const char *text, unsigned lines)
{
    const struct run *r = parse(in);

    assert_int_equal(r->nev, 1);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);
    assert_int_equal(r->ev[0].end, strlen(in));
    assert_int_equal(r->ev[0].code, code);
    assert_string_equal(r->ev[0].esc, esc);
    assert_string_equal(r->ev[0].text, text);
    assert_int_equal(r->ev[0].lines, lines);
}

/* An error, detected at the octet ending at offset end. */
static void
expect_error_n(const char *in, size_t n, size_t end)
{
    const struct run *r = parse_n(in, n);

    assert_int_equal(r->nev, 1);
    assert_int_equal(r->ev[0].st, REPLYPARSE_ERROR);
    assert_int_equal(r->ev[0].end, end);
    assert_non_null(r->ev[0].error);
}

static void
expect_error(const char *in, size_t end)
{
    expect_error_n(in, strlen(in), end);
}

static void
test_single_line(void **state)
{
    expect_done("250 2.1.5 Ok\r\n", 250, "2.1.5", "Ok", 1);
    expect_done("220 mx.example.org ESMTP ready\r\n", 220, "", "mx.example.org ESMTP ready", 1);
    expect_done(
        "354 End data with <CR><LF>.<CR><LF>\r\n", 354, "", "End data with <CR><LF>.<CR><LF>", 1);
    expect_done("452 4.2.2 Mailbox full\r\n", 452, "4.2.2", "Mailbox full", 1);
    expect_done("599 x\r\n", 599, "", "x", 1);
    expect_done("200 x\r\n", 200, "", "x", 1);
}

static void
test_code_alone(void **state)
{
    expect_done("250\r\n", 250, "", "", 1);
    expect_done("250 \r\n", 250, "", "", 1);
    expect_done("250 2.0.0\r\n", 250, "2.0.0", "", 1);
    expect_done("250 2.0.0 \r\n", 250, "2.0.0", "", 1);
}

static void
test_multi_line(void **state)
{
    expect_done(
        "250-mx.example.org\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n", 250,
        "", "mx.example.org; PIPELINING; 8BITMIME; ENHANCEDSTATUSCODES", 4);
    /* RFC 2034 servers repeat the enhanced code on every line: it goes once */
    expect_done(
        "550-5.1.1 first\r\n550-5.1.1\r\n550 5.1.1 second\r\n", 550, "5.1.1", "first; second", 3);
    /* a different one on a later line is text */
    expect_done("450-4.2.0 a\r\n450 4.2.1 b\r\n", 450, "4.2.0", "a; 4.2.1 b", 2);
    expect_done("450-4.2.0 a\r\n450 4.2.00 b\r\n", 450, "4.2.0", "a; 4.2.00 b", 2);
    /* the first line decides: without one there, later ones are text */
    expect_done("250-a\r\n250 2.0.0 b\r\n", 250, "", "a; 2.0.0 b", 2);
    /* empty texts add nothing */
    expect_done("250-\r\n250-\r\n250 ok\r\n", 250, "", "ok", 3);
    expect_done("250-a\r\n250\r\n", 250, "", "a", 2);
    /* a hyphen later in the text is just text */
    expect_done("250 a-b - c\r\n", 250, "", "a-b - c", 1);
}

static void
test_enhanced_code_syntax(void **state)
{
    expect_done("250 2.100.100 ok\r\n", 250, "2.100.100", "ok", 1);
    expect_done("550 5.7.1\r\n", 550, "5.7.1", "", 1);
    expect_done("250 2.1234.5 x\r\n", 250, "", "2.1234.5 x", 1);
    expect_done("250 2.1.1234 x\r\n", 250, "", "2.1.1234 x", 1);
    expect_done("250 2.1.5x\r\n", 250, "", "2.1.5x", 1);
    expect_done("250 2..5 x\r\n", 250, "", "2..5 x", 1);
    expect_done("250 2.1. x\r\n", 250, "", "2.1. x", 1);
    expect_done("250 2.1\r\n", 250, "", "2.1", 1);
    expect_done("250 2.1.5.6 x\r\n", 250, "", "2.1.5.6 x", 1);
    expect_done("250  2.1.5 x\r\n", 250, "", " 2.1.5 x", 1);
    /* the class must be the reply's */
    expect_done("250 5.0.0 x\r\n", 250, "", "5.0.0 x", 1);
    expect_done("451 5.0.0 x\r\n", 451, "", "5.0.0 x", 1);
    expect_done("354 3.0.0 go\r\n", 354, "", "3.0.0 go", 1);
    expect_done("550 5.1.1\tx\r\n", 550, "", "5.1.1\tx", 1);
}

static void
test_bare_lf_ends_line(void **state)
{
    expect_done("250 ok\n", 250, "", "ok", 1);
    expect_done("250-a\n250-b\r\n250 c\n", 250, "", "a; b; c", 3);
}

static void
test_bad_codes(void **state)
{
    expect_error("199 x\r\n", 7);
    expect_error("600 x\r\n", 7);
    expect_error("099 x\r\n", 7);
    expect_error("2x0 x\r\n", 7);
    expect_error("abc\r\n", 5);
    expect_error("25O ok\r\n", 8);
    expect_error("+OK pop3\r\n", 10);
    expect_error("250x ok\r\n", 9);
    expect_error("250\tok\r\n", 8);
}

static void
test_too_short(void **state)
{
    expect_error("25\r\n", 4);
    expect_error("2\n", 2);
    expect_error("\r\n", 2);
    expect_error("\n", 1);
    expect_error("250-a\r\n\r\n", 9);
}

static void
test_mixed_codes(void **state)
{
    expect_error("250-a\r\n251 b\r\n", 14);
    expect_error("550-5.1.1 a\r\n450 4.1.1 b\r\n", 26);
}

static void
test_bare_cr(void **state)
{
    expect_error("250 a\rb\r\n", 7);
    expect_error("250 a\r\r\n", 7);
    expect_error("\r250 ok\r\n", 2);
    /* a CR at the end of the input is undecided */
    const struct run *r = parse("250 a\r");
    assert_int_equal(r->nev, 0);
    assert_int_equal(r->last, REPLYPARSE_MORE);
}

static void
test_nul(void **state)
{
    expect_error_n("250 a\0b\r\n", 9, 6);
}

static void
test_line_length(void **state)
{
    char in[REPLYPARSE_LINE_MAX + 8];

    /* exactly the limit of content is fine, with CRLF or a bare LF */
    memcpy(in, "250 ", 4);
    memset(in + 4, 'x', REPLYPARSE_LINE_MAX - 4);
    memcpy(in + REPLYPARSE_LINE_MAX, "\r\n", 3);
    const struct run *r = parse(in);
    assert_int_equal(r->nev, 1);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);
    assert_int_equal(strlen(r->ev[0].text), REPLYPARSE_LINE_MAX - 4);
    memcpy(in + REPLYPARSE_LINE_MAX, "\n", 2);
    r = parse(in);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);

    /* one more octet is an error, as soon as it arrives */
    memcpy(in + REPLYPARSE_LINE_MAX, "y\r\n", 4);
    expect_error(in, REPLYPARSE_LINE_MAX + 1);
}

static void
test_line_count(void **state)
{
    static char in[200 * 8];
    size_t n = 0;
    int i;

    for (i = 0; i < 99; i++)
        n += (size_t)sprintf(in + n, "250-%02d\r\n", i);
    n += (size_t)sprintf(in + n, "250 99\r\n");
    const struct run *r = parse_n(in, n);
    assert_int_equal(r->nev, 1);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);
    assert_int_equal(r->ev[0].lines, 100);
    assert_int_equal(strncmp(r->ev[0].text, "00; 01; 02", 10), 0);

    n = 0;
    for (i = 0; i < 100; i++)
        n += (size_t)sprintf(in + n, "250-%02d\r\n", i);
    n += (size_t)sprintf(in + n, "250 end\r\n");
    expect_error_n(in, n, n);
}

static void
test_text_truncated(void **state)
{
    static char in[8 * 1000];
    size_t n = 0;
    int i;

    for (i = 0; i < 4; i++) {
        n += (size_t)sprintf(in + n, "250-");
        memset(in + n, 'a' + i, 900);
        n += 900;
        n += (size_t)sprintf(in + n, "\r\n");
    }
    n += (size_t)sprintf(in + n, "250 end\r\n");
    const struct run *r = parse_n(in, n);
    assert_int_equal(r->nev, 1);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);
    assert_int_equal(r->ev[0].lines, 5);
    assert_int_equal(strlen(r->ev[0].text), REPLYPARSE_TEXT_MAX - 1);
    assert_int_equal(r->ev[0].text[900], ';');
    assert_int_equal(r->ev[0].text[902], 'b');
    assert_int_equal(r->ev[0].text[REPLYPARSE_TEXT_MAX - 2], 'c');
}

static void
test_pipelined_replies(void **state)
{
    const char *in =
        "250 2.1.0 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n250 2.1.5 Ok\n354 go\r\n25";
    const struct run *r = parse(in);

    assert_int_equal(r->nev, 4);
    assert_int_equal(r->ev[0].code, 250);
    assert_int_equal(r->ev[0].end, 14);
    assert_string_equal(r->ev[0].esc, "2.1.0");
    assert_int_equal(r->ev[1].code, 550);
    assert_string_equal(r->ev[1].text, "no; such user");
    assert_int_equal(r->ev[1].lines, 2);
    assert_int_equal(r->ev[2].code, 250);
    assert_string_equal(r->ev[2].esc, "2.1.5");
    assert_int_equal(r->ev[2].lines, 1);
    assert_int_equal(r->ev[3].code, 354);
    assert_string_equal(r->ev[3].esc, "");
    assert_string_equal(r->ev[3].text, "go");
    assert_int_equal(r->last, REPLYPARSE_MORE);
}

static void
test_error_after_reply(void **state)
{
    const struct run *r = parse("250 ok\r\n25\r\n250 ok\r\n");

    assert_int_equal(r->nev, 2);
    assert_int_equal(r->ev[0].st, REPLYPARSE_DONE);
    assert_int_equal(r->ev[1].st, REPLYPARSE_ERROR);
    assert_int_equal(r->ev[1].end, 12);
}

static void
test_sticky_error_and_init(void **state)
{
    size_t used = 99;

    replyparse_init(&rp);
    assert_int_equal(replyparse_feed(&rp, "xyz\r\n", 5, &used), REPLYPARSE_ERROR);
    assert_int_equal(used, 5);
    assert_non_null(rp.error);
    assert_int_equal(replyparse_feed(&rp, "250 ok\r\n", 8, &used), REPLYPARSE_ERROR);
    assert_int_equal(used, 0);
    replyparse_init(&rp);
    assert_null(rp.error);
    assert_int_equal(replyparse_feed(&rp, "250 ok\r\n", 8, &used), REPLYPARSE_DONE);
    assert_int_equal(used, 8);
}

static void
test_empty_feed(void **state)
{
    size_t used = 99;

    replyparse_init(&rp);
    assert_int_equal(replyparse_feed(&rp, "", 0, &used), REPLYPARSE_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(replyparse_feed(&rp, "250 o", 5, &used), REPLYPARSE_MORE);
    assert_int_equal(used, 5);
    assert_int_equal(replyparse_feed(&rp, "k\r", 2, &used), REPLYPARSE_MORE);
    assert_int_equal(replyparse_feed(&rp, NULL, 0, &used), REPLYPARSE_MORE);
    assert_int_equal(replyparse_feed(&rp, "\n", 1, &used), REPLYPARSE_DONE);
    assert_string_equal(rp.text, "ok");
}

/* A new reply starts with clean fields, whatever the previous one held. */
static void
test_fields_reset(void **state)
{
    const struct run *r = parse("550-5.1.1 a\r\n550 5.1.1 b\r\n220\r\n");

    assert_int_equal(r->nev, 2);
    assert_int_equal(r->ev[1].code, 220);
    assert_string_equal(r->ev[1].esc, "");
    assert_string_equal(r->ev[1].text, "");
    assert_int_equal(r->ev[1].lines, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_code_alone),
        cmocka_unit_test(test_multi_line),
        cmocka_unit_test(test_enhanced_code_syntax),
        cmocka_unit_test(test_bare_lf_ends_line),
        cmocka_unit_test(test_bad_codes),
        cmocka_unit_test(test_too_short),
        cmocka_unit_test(test_mixed_codes),
        cmocka_unit_test(test_bare_cr),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_line_count),
        cmocka_unit_test(test_text_truncated),
        cmocka_unit_test(test_pipelined_replies),
        cmocka_unit_test(test_error_after_reply),
        cmocka_unit_test(test_sticky_error_and_init),
        cmocka_unit_test(test_empty_feed),
        cmocka_unit_test(test_fields_reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
