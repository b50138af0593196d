/*
 * test_addr.c - unit tests for smtp/addr.c: RFC 5321 paths, RFC 6531 UTF-8,
 * length limits, every error code, and HELO/EHLO domains.
 *
 * Every input is copied into a heap block of exactly its length, so that
 * AddressSanitizer catches any read past the end (the parser is handed bytes,
 * not C strings).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/addr.h"

static enum addr_err
parse_n(const char *s, size_t n, unsigned flags, struct smtp_path *out, size_t *consumed)
{
    char *copy = malloc(n ? n : 1);
    enum addr_err e;

    assert_non_null(copy);
    memcpy(copy, s, n);
    e = smtp_addr_parse(copy, n, flags, out, consumed);
    free(copy);
    return e;
}

static enum addr_err
parse(const char *s, unsigned flags, struct smtp_path *out, size_t *consumed)
{
    return parse_n(s, strlen(s), flags, out, consumed);
}

/* Parse s and expect error e (the output must then be the empty path). */
static void
expect_err(const char *s, unsigned flags, enum addr_err e)
{
    struct smtp_path out;
    size_t consumed = 99;
    enum addr_err got = parse(s, flags, &out, &consumed);

    if (got != e)
        fail_msg("\"%s\": got %d (%s), want %d (%s)", s, got, smtp_addr_strerror(got), e,
            smtp_addr_strerror(e));
    assert_int_equal(out.len, 0);
    assert_string_equal(out.addr, "");
    assert_int_equal(consumed, 0);
}

/* Parse s and expect success with the given mailbox. */
static void
expect_ok(const char *s, unsigned flags, const char *addr)
{
    struct smtp_path out;
    size_t consumed;
    enum addr_err got = parse(s, flags, &out, &consumed);

    if (got != ADDR_OK)
        fail_msg("\"%s\": got %d (%s)", s, got, smtp_addr_strerror(got));
    assert_string_equal(out.addr, addr);
    assert_int_equal(out.len, strlen(addr));
}

static bool
domain_ok(const char *s, bool utf8)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1);
    bool ok;

    assert_non_null(copy);
    memcpy(copy, s, n);
    ok = smtp_addr_domain_valid(copy, n, utf8);
    free(copy);
    return ok;
}

/* A string of n copies of c, in a static buffer. */
static char *
rep(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void
test_simple(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<user@example.com>", 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "user@example.com");
    assert_int_equal(out.len, 16);
    assert_int_equal(out.at, 4);
    assert_int_equal(consumed, 18);
    assert_false(out.utf8);
    assert_false(out.literal);
    assert_string_equal(smtp_path_domain(&out), "example.com");
}

static void
test_params_follow(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<a@b.example> SIZE=100 BODY=8BITMIME", 0, &out, &consumed), ADDR_OK);
    assert_int_equal(consumed, 13);
    assert_string_equal(out.addr, "a@b.example");
    /* A lone trailing space is the parameter parser's business, not ours. */
    assert_int_equal(parse("<a@b> ", 0, &out, &consumed), ADDR_OK);
    assert_int_equal(consumed, 5);
}

static void
test_dot_string(void **state)
{
    (void)state;
    expect_ok("<first.last@example.com>", 0, "first.last@example.com");
    expect_ok("<!#$%&'*+-/=?^_`{|}~@example.com>", 0, "!#$%&'*+-/=?^_`{|}~@example.com");
    expect_ok("<a.b.c.d@x>", 0, "a.b.c.d@x");
    expect_ok("<A@B>", 0, "A@B");
    expect_ok("<1@2.3>", 0, "1@2.3");
}

static void
test_quoted(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<\"john doe\"@example.com>", 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "\"john doe\"@example.com");
    assert_int_equal(out.at, 10);
    assert_string_equal(smtp_path_domain(&out), "example.com");

    /* '@' and '>' inside quotes belong to the local part. */
    assert_int_equal(parse("<\"a@b>c\"@d.example> X", 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "\"a@b>c\"@d.example");
    assert_int_equal(out.at, 7);
    assert_int_equal(consumed, 19);

    expect_ok("<\"a\\\"b\"@c>", 0, "\"a\\\"b\"@c");
    expect_ok("<\"a\\\\\"@c>", 0, "\"a\\\\\"@c");
    expect_ok("<\"a..b.\"@c>", 0, "\"a..b.\"@c");
    expect_ok("<\"\"@c>", 0, "\"\"@c");
    expect_ok("<\"x\\ y\"@c>", 0, "\"x\\ y\"@c");
}

static void
test_quoted_errors(void **state)
{
    (void)state;
    expect_err("<\"abc@d>", 0, ADDR_ERR_QUOTE_UNTERMINATED);
    expect_err("<\"abc\\\"@d>", 0, ADDR_ERR_QUOTE_UNTERMINATED);
    expect_err("<\"abc\\", 0, ADDR_ERR_QUOTE_UNTERMINATED);
    expect_err("<\"a\"b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<\"a\".b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<\"a\">", 0, ADDR_ERR_NO_AT);
    expect_err("<a\"b\"@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<\"a\tb\"@c>", 0, ADDR_ERR_CTRL);
    /* quoted-pairSMTP is backslash then %d32-126: not an 8-bit octet. */
    expect_err("<\"a\\\xc3\xa9\"@c>", ADDR_UTF8, ADDR_ERR_LOCAL_SYNTAX);
}

static void
test_literals(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<a@[192.0.2.1]>", 0, &out, &consumed), ADDR_OK);
    assert_true(out.literal);
    assert_string_equal(smtp_path_domain(&out), "[192.0.2.1]");
    assert_int_equal(parse("<a@example.com>", 0, &out, &consumed), ADDR_OK);
    assert_false(out.literal);

    expect_ok("<a@[IPv6:2001:db8::1]>", 0, "a@[IPv6:2001:db8::1]");
    expect_ok("<a@[ipv6:::1]>", 0, "a@[ipv6:::1]");
    expect_ok("<a@[IPv6:::ffff:192.0.2.1]>", 0, "a@[IPv6:::ffff:192.0.2.1]");
    expect_ok("<a@[IPv6:1:2:3:4:5:6:7:8]>", 0, "a@[IPv6:1:2:3:4:5:6:7:8]");
    expect_ok("<a@[x-tag:any\"thing]> ", 0, "a@[x-tag:any\"thing]");
    expect_ok("<a@[tag:abc]>", 0, "a@[tag:abc]");
    expect_ok("<\"q\"@[10.0.0.1]>", 0, "\"q\"@[10.0.0.1]");

    expect_err("<a@[300.1.1.1]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[1.2.3]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[1.2.3.4.5]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[1111111111111111.1]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[IPv6:zz::1]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[IPv6:]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[IPv6:192.0.2.1]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[1.2.3.4>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[1.2.3.4]x>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[tag-:x]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[:x]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[tag:]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[tag:a\\b]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[tag:a[b]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[t_g:ab]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[nocolon]>", 0, ADDR_ERR_ADDR_LITERAL);
    expect_err("<a@[IPv6:::1\xc3\xa9]>", ADDR_UTF8, ADDR_ERR_ADDR_LITERAL);
}

static void
test_source_route(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<@a.example,@b.example:user@c.example>", 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "user@c.example");
    assert_int_equal(out.at, 4);
    assert_int_equal(consumed, 38);
    expect_ok("<@relay:\"x y\"@c>", 0, "\"x y\"@c");
    expect_ok("<@relay:\"x:y\"@c>", 0, "\"x:y\"@c");
    expect_ok("<@a:b@[1.2.3.4]>", 0, "b@[1.2.3.4]");

    expect_err("<@a,b:c@d>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a,@b>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a,>", 0, ADDR_ERR_ROUTE);
    expect_err("<@:a@b>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a,:c@d>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a..b:c@d>", 0, ADDR_ERR_ROUTE);
    expect_err("<@[1.2.3.4]:c@d>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a:>", 0, ADDR_ERR_ROUTE);
    expect_err("<@a:b>", 0, ADDR_ERR_NO_AT);
    expect_err("<@a:@b>", 0, ADDR_ERR_LOCAL_EMPTY);
    expect_err("<@a.example>", 0, ADDR_ERR_LOCAL_EMPTY);
    expect_err("<@>", 0, ADDR_ERR_LOCAL_EMPTY);
}

static void
test_utf8(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    expect_err("<pel\xc3\xa9@example.com>", 0, ADDR_ERR_UTF8);
    expect_err("<a@m\xc3\xbcnchen.example>", 0, ADDR_ERR_UTF8);
    expect_err("<\"\xc3\xa9\"@c>", 0, ADDR_ERR_UTF8);

    assert_int_equal(parse("<pel\xc3\xa9@example.com>", ADDR_UTF8, &out, &consumed), ADDR_OK);
    assert_true(out.utf8);
    assert_string_equal(out.addr, "pel\xc3\xa9@example.com");
    assert_int_equal(out.at, 5);

    assert_int_equal(parse("<plain@example.com>", ADDR_UTF8, &out, &consumed), ADDR_OK);
    assert_false(out.utf8);

    expect_ok("<a@m\xc3\xbcnchen.example>", ADDR_UTF8, "a@m\xc3\xbcnchen.example");
    expect_ok("<\"\xe4\xbd\xa0 \xe5\xa5\xbd\"@c>", ADDR_UTF8, "\"\xe4\xbd\xa0 \xe5\xa5\xbd\"@c");
    expect_ok("<\xf0\x9f\x98\x80@x>", ADDR_UTF8, "\xf0\x9f\x98\x80@x");
    expect_ok("<\xf4\x8f\xbf\xbf@x>", ADDR_UTF8, "\xf4\x8f\xbf\xbf@x");

    expect_err("<\xc0\xaf@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);         /* overlong '/' */
    expect_err("<\xe0\x80\xaf@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);     /* overlong, 3 octets */
    expect_err("<\xf0\x80\x80\xaf@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8); /* overlong, 4 octets */
    expect_err("<\xed\xa0\x80@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);     /* surrogate U+D800 */
    expect_err("<\xf4\x90\x80\x80@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8); /* U+110000 */
    expect_err("<\xf5\x80\x80\x80@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);
    expect_err("<a@x\xc3>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);     /* truncated */
    expect_err("<a\xe4\xbd@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8); /* truncated */
    expect_err("<\x80@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);      /* lone continuation */
    expect_err("<\xff@x>", ADDR_UTF8, ADDR_ERR_BAD_UTF8);
}

static void
test_postmaster(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<Postmaster>", ADDR_NO_DOMAIN_OK, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "Postmaster");
    assert_int_equal(out.at, 0);
    assert_int_equal(consumed, 12);
    assert_string_equal(smtp_path_domain(&out), "");
    expect_ok("<pOSTMASTER>", ADDR_NO_DOMAIN_OK, "pOSTMASTER");
    expect_ok("<postmaster@example.com>", ADDR_NO_DOMAIN_OK, "postmaster@example.com");

    expect_err("<Postmaster>", 0, ADDR_ERR_NO_AT);
    expect_err("<Postmaster>", ADDR_NULL_OK, ADDR_ERR_NO_AT);
    expect_err("<postmasters>", ADDR_NO_DOMAIN_OK, ADDR_ERR_NO_AT);
    expect_err("<postmaste>", ADDR_NO_DOMAIN_OK, ADDR_ERR_NO_AT);
    expect_err("<\"Postmaster\">", ADDR_NO_DOMAIN_OK, ADDR_ERR_NO_AT);
    expect_err("<abuse>", ADDR_NO_DOMAIN_OK, ADDR_ERR_NO_AT);
}

static void
test_null_path(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<>", ADDR_NULL_OK, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, "");
    assert_int_equal(out.len, 0);
    assert_int_equal(out.at, 0);
    assert_int_equal(consumed, 2);
    assert_int_equal(parse("<> SIZE=10", ADDR_NULL_OK, &out, &consumed), ADDR_OK);
    assert_int_equal(consumed, 2);

    expect_err("<>", 0, ADDR_ERR_NULL_PATH);
    expect_err("<>", ADDR_NO_DOMAIN_OK | ADDR_UTF8, ADDR_ERR_NULL_PATH);
    expect_err("<>x", ADDR_NULL_OK, ADDR_ERR_TRAILING);
}

static void
test_errors_basic(void **state)
{
    (void)state;
    expect_err("", 0, ADDR_ERR_EMPTY);
    expect_err("a@b", 0, ADDR_ERR_NO_OPEN_BRACKET);
    expect_err(" <a@b>", 0, ADDR_ERR_NO_OPEN_BRACKET);
    expect_err("a@b>", 0, ADDR_ERR_NO_OPEN_BRACKET);
    expect_err("<a@b", 0, ADDR_ERR_NO_CLOSE_BRACKET);
    expect_err("<", 0, ADDR_ERR_NO_CLOSE_BRACKET);
    expect_err("<a@b SIZE=10", 0, ADDR_ERR_NO_CLOSE_BRACKET);
    expect_err("<a @b>", 0, ADDR_ERR_SPACE);
    expect_err("< a@b>", 0, ADDR_ERR_SPACE);
    expect_err("<a@b >", 0, ADDR_ERR_SPACE);
    expect_err("<a@b c>", 0, ADDR_ERR_SPACE);
    expect_err("<a\tb@c>", 0, ADDR_ERR_CTRL);
    expect_err("<a@b\x7f>", 0, ADDR_ERR_CTRL);
    expect_err("<a@b\r>", 0, ADDR_ERR_CTRL);
    /* Controls are reported before spaces and 8-bit octets. */
    expect_err("<a \x01\xc3@b>", 0, ADDR_ERR_CTRL);
    expect_err("<a@b>x", 0, ADDR_ERR_TRAILING);
    expect_err("<a@b>>", 0, ADDR_ERR_TRAILING);
    expect_err("<a@b>\t", 0, ADDR_ERR_TRAILING);
    expect_err("<a@b>,<c@d>", 0, ADDR_ERR_TRAILING);
}

static void
test_nul(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse_n("<a\0@b>", 6, 0, &out, &consumed), ADDR_ERR_NUL);
    assert_int_equal(parse_n("<\0>", 3, ADDR_NULL_OK, &out, &consumed), ADDR_ERR_NUL);
    /* NUL wins over every other fault inside the brackets... */
    assert_int_equal(parse_n("< \t\xc3(\0@b>", 9, 0, &out, &consumed), ADDR_ERR_NUL);
    assert_int_equal(parse_n("<\"a\0\"@b>", 8, 0, &out, &consumed), ADDR_ERR_NUL);
    assert_int_equal(parse_n("<\"a\\\0\"@b>", 9, 0, &out, &consumed), ADDR_ERR_NUL);
    /* ...even when the bracket is never closed... */
    assert_int_equal(parse_n("<a@b\0", 5, 0, &out, &consumed), ADDR_ERR_NUL);
    assert_int_equal(parse_n("<\"a\0", 4, 0, &out, &consumed), ADDR_ERR_NUL);
    /* ...but after '>' it is just trailing junk. */
    assert_int_equal(parse_n("<a@b>\0", 6, 0, &out, &consumed), ADDR_ERR_TRAILING);
    assert_int_equal(out.len, 0);
}

static void
test_local_errors(void **state)
{
    (void)state;
    expect_err("<.a@b>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a.@b>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a..b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<.@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a(b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a,b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a:b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a<b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a\\b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<a[b@c>", 0, ADDR_ERR_LOCAL_SYNTAX);
    expect_err("<abc>", 0, ADDR_ERR_NO_AT);
    expect_err("<abc>", ADDR_NULL_OK | ADDR_UTF8, ADDR_ERR_NO_AT);
}

static void
test_domain_errors(void **state)
{
    (void)state;
    expect_err("<a@>", 0, ADDR_ERR_DOMAIN_EMPTY);
    expect_err("<a@b..c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@-b>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b->", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b-.c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b.-c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b_c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b.>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@.b>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b!c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@b@c>", 0, ADDR_ERR_DOMAIN_SYNTAX);
    expect_err("<a@\"b\">", 0, ADDR_ERR_DOMAIN_SYNTAX);
    /* Hyphens inside a label are fine, including the xn-- of A-labels. */
    expect_ok("<a@xn--bcher-kva.example>", 0, "a@xn--bcher-kva.example");
    expect_ok("<a@a-b--c.d>", 0, "a@a-b--c.d");
}

static void
test_local_length(void **state)
{
    char l[80], s[200], want[200];

    (void)state;
    snprintf(s, sizeof(s), "<%s@example.com>", rep(l, 'x', 65));
    expect_err(s, 0, ADDR_ERR_LOCAL_TOO_LONG);
    snprintf(s, sizeof(s), "<%s.@example.com>", rep(l, 'x', 64));
    expect_err(s, 0, ADDR_ERR_LOCAL_SYNTAX);

    /* Quotes count: 62 octets inside, 64 with them. */
    snprintf(s, sizeof(s), "<\"%s\"@example.com>", rep(l, 'q', 62));
    snprintf(want, sizeof(want), "\"%s\"@example.com", l);
    expect_ok(s, 0, want);
    snprintf(s, sizeof(s), "<\"%s\"@example.com>", rep(l, 'q', 63));
    expect_err(s, 0, ADDR_ERR_LOCAL_TOO_LONG);
}

static void
test_local_length_exact(void **state)
{
    char l[80], s[200], want[200];
    struct smtp_path out;
    size_t consumed;

    (void)state;
    rep(l, 'x', 64);
    snprintf(s, sizeof(s), "<%s@example.com>", l);
    snprintf(want, sizeof(want), "%s@example.com", l);
    assert_int_equal(parse(s, 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, want);
    assert_int_equal(out.at, 64);
}

static void
test_label_length(void **state)
{
    char l[80], s[200], want[200];

    (void)state;
    snprintf(s, sizeof(s), "<a@%s.example>", rep(l, 'd', 63));
    assert_int_equal(strlen(s), 1 + 2 + 63 + 8 + 1);
    snprintf(want, sizeof(want), "a@%s.example", l);
    expect_ok(s, 0, want);
    snprintf(s, sizeof(s), "<a@%s.example>", rep(l, 'd', 64));
    expect_err(s, 0, ADDR_ERR_DOMAIN_TOO_LONG);
    snprintf(s, sizeof(s), "<a@example.%s>", rep(l, 'd', 64));
    expect_err(s, 0, ADDR_ERR_DOMAIN_TOO_LONG);
}

/* A domain of n octets: labels of 63 'a' separated by dots, last one shorter. */
static void
make_domain(char *d, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        d[i] = (i % 64 == 63) ? '.' : 'a';
    d[n] = '\0';
    assert_true(d[n - 1] != '.');
}

static void
test_domain_length(void **state)
{
    char d[300], s[400];

    (void)state;
    make_domain(d, 255);
    assert_true(domain_ok(d, false));
    make_domain(d, 254);
    assert_true(domain_ok(d, false));
    /* 256 octets, no label over 63. */
    d[0] = 'b';
    d[1] = '.';
    make_domain(d + 2, 254);
    assert_int_equal(strlen(d), 256);
    assert_false(domain_ok(d, false));
    assert_true(domain_ok(d + 2, false));

    /* In a path, the specific error wins over the path length. */
    snprintf(s, sizeof(s), "<a@%s>", d);
    expect_err(s, 0, ADDR_ERR_DOMAIN_TOO_LONG);
    make_domain(d, 255);
    snprintf(s, sizeof(s), "<a@%s>", d);
    expect_err(s, 0, ADDR_ERR_PATH_TOO_LONG);
}

static void
test_path_length(void **state)
{
    char l[80], d[300], s[400], want[400];
    struct smtp_path out;
    size_t consumed;

    (void)state;
    /* 1 + 64 + 1 + 189 + 1 = 256 */
    rep(l, 'l', 64);
    make_domain(d, 189);
    snprintf(s, sizeof(s), "<%s@%s>", l, d);
    assert_int_equal(strlen(s), SMTP_PATH_MAX);
    snprintf(want, sizeof(want), "%s@%s", l, d);
    assert_int_equal(parse(s, 0, &out, &consumed), ADDR_OK);
    assert_string_equal(out.addr, want);
    assert_int_equal(out.len, 254);
    assert_int_equal(consumed, 256);

    make_domain(d, 190);
    snprintf(s, sizeof(s), "<%s@%s>", l, d);
    assert_int_equal(strlen(s), SMTP_PATH_MAX + 1);
    expect_err(s, 0, ADDR_ERR_PATH_TOO_LONG);

    /* The source route counts although it is stripped. */
    make_domain(d, 180);
    snprintf(s, sizeof(s), "<@relay.example:%s@%s>", rep(l, 'l', 59), d);
    assert_int_equal(strlen(s), 257);
    expect_err(s, 0, ADDR_ERR_PATH_TOO_LONG);
    snprintf(s, sizeof(s), "<@relay.example:%s@%s>", rep(l, 'l', 58), d);
    assert_int_equal(strlen(s), 256);
    assert_int_equal(parse(s, 0, &out, &consumed), ADDR_OK);
    assert_int_equal(out.len, 58 + 1 + 180);
}

/*
 * Every prefix of a valid command tail is refused with an "incomplete" error
 * (and read within bounds); from the '>' on, the path parses the same.
 */
static void
test_split_points(void **state)
{
    static const char *const inputs[] = {
        "<\"a b>\"@[IPv6:::1]> SIZE=1",
        "<@r.example,@s.example:u.v@w.example> BODY=7BIT",
        "<Postmaster>",
        "<>",
        "<p\xc3\xa9@\xc3\xbc.example>",
    };
    struct smtp_path out;
    size_t i, k, n, consumed, close;
    enum addr_err e;
    unsigned flags = ADDR_UTF8 | ADDR_NULL_OK | ADDR_NO_DOMAIN_OK;

    (void)state;
    for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        n = strlen(inputs[i]);
        assert_int_equal(parse_n(inputs[i], n, flags, &out, &consumed), ADDR_OK);
        close = consumed;
        for (k = 0; k <= n; k++) {
            e = parse_n(inputs[i], k, flags, &out, &consumed);
            if (k == 0)
                assert_int_equal(e, ADDR_ERR_EMPTY);
            else if (k < close) {
                if (e != ADDR_ERR_NO_CLOSE_BRACKET && e != ADDR_ERR_QUOTE_UNTERMINATED)
                    fail_msg("\"%s\" cut at %zu: got %d", inputs[i], k, e);
                assert_int_equal(out.len, 0);
            } else {
                assert_int_equal(e, ADDR_OK);
                assert_int_equal(consumed, close);
            }
        }
    }
}

static void
test_output_reset(void **state)
{
    struct smtp_path out;
    size_t consumed;

    (void)state;
    assert_int_equal(parse("<a@[1.2.3.4]>", 0, &out, &consumed), ADDR_OK);
    assert_true(out.literal);
    assert_int_equal(parse("<\xc3\xa9@[1.2.3.4]>", ADDR_UTF8, &out, &consumed), ADDR_OK);
    assert_true(out.utf8);
    assert_int_equal(parse("<a@b..c>", ADDR_UTF8, &out, &consumed), ADDR_ERR_DOMAIN_SYNTAX);
    assert_int_equal(out.len, 0);
    assert_int_equal(out.at, 0);
    assert_false(out.utf8);
    assert_false(out.literal);
    assert_string_equal(out.addr, "");
    assert_int_equal(consumed, 0);
}

static void
test_strerror(void **state)
{
    int i, j;

    (void)state;
    for (i = 0; i < ADDR_ERR__COUNT; i++) {
        const char *s = smtp_addr_strerror((enum addr_err)i);

        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (j = 0; j < i; j++)
            assert_string_not_equal(s, smtp_addr_strerror((enum addr_err)j));
    }
    assert_string_equal(smtp_addr_strerror(ADDR_ERR_NO_CLOSE_BRACKET), "missing closing '>'");
    assert_string_equal(smtp_addr_strerror(ADDR_ERR_SPACE), "space inside the address");
    assert_string_equal(smtp_addr_strerror(ADDR_ERR_NUL), "NUL character in the address");
    assert_string_equal(
        smtp_addr_strerror(ADDR_ERR_LOCAL_TOO_LONG), "local part longer than 64 octets");
    assert_non_null(smtp_addr_strerror(ADDR_ERR__COUNT));
    assert_non_null(smtp_addr_strerror((enum addr_err)(-1)));
}

static void
test_domain_valid(void **state)
{
    (void)state;
    assert_true(domain_ok("example.com", false));
    assert_true(domain_ok("localhost", false));
    assert_true(domain_ok("mail_1.example.com", false)); /* as sent in the wild */
    assert_true(domain_ok("_x", false));
    assert_true(domain_ok("1.2.3.4", false));
    assert_true(domain_ok("[192.0.2.1]", false));
    assert_true(domain_ok("[IPv6:2001:db8::1]", false));
    assert_true(domain_ok("[tag:x]", false));
    assert_true(domain_ok("m\xc3\xbcnchen.example", true));

    assert_false(domain_ok("", false));
    assert_false(smtp_addr_domain_valid(NULL, 0, false));
    assert_false(domain_ok(" ", false));
    assert_false(domain_ok("a b", false));
    assert_false(domain_ok("example.com ", false));
    assert_false(domain_ok("a\tb", false));
    assert_false(domain_ok("a\x7f", false));
    assert_false(smtp_addr_domain_valid("a\0b", 3, false));
    assert_false(smtp_addr_domain_valid("[::1\0]", 6, false));
    assert_false(domain_ok("a..b", false));
    assert_false(domain_ok(".a", false));
    assert_false(domain_ok("a.", false));
    assert_false(domain_ok("-a", false));
    assert_false(domain_ok("a-", false));
    assert_false(domain_ok("a!b", false));
    assert_false(domain_ok("<a>", false));
    assert_false(domain_ok("[300.0.0.1]", false));
    assert_false(domain_ok("[IPv6:::g]", false));
    assert_false(domain_ok("m\xc3\xbcnchen.example", false));
    assert_false(domain_ok("b\xc3.example", true));
    assert_false(domain_ok("\xed\xa0\x80", true));
}

static void
test_domain_valid_label(void **state)
{
    char l[80];

    (void)state;
    assert_true(domain_ok(rep(l, 'a', 63), false));
    assert_false(domain_ok(rep(l, 'a', 64), false));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_params_follow),
        cmocka_unit_test(test_dot_string),
        cmocka_unit_test(test_quoted),
        cmocka_unit_test(test_quoted_errors),
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_source_route),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_postmaster),
        cmocka_unit_test(test_null_path),
        cmocka_unit_test(test_errors_basic),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_local_errors),
        cmocka_unit_test(test_domain_errors),
        cmocka_unit_test(test_local_length),
        cmocka_unit_test(test_local_length_exact),
        cmocka_unit_test(test_label_length),
        cmocka_unit_test(test_domain_length),
        cmocka_unit_test(test_path_length),
        cmocka_unit_test(test_split_points),
        cmocka_unit_test(test_output_reset),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_domain_valid_label),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
