/*
 * test_data.c - unit tests for smtp/data.c: DATA/BDAT framing.
 *
 * Besides the plain cases, every SMTP smuggling sequence is fed and must stay
 * body content, and every input is fed again byte by byte and split at every
 * position: the machine promises the same result for any split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/data.h"

#define BODY_MAX 300000

struct collect {
    char body[BODY_MAX];
    size_t len;
    int calls;
    int fail_at;            /* return -1 on this call (1-based); 0: never */
};

struct result {
    unsigned flags;
    unsigned long long size;
    unsigned long lines;
    unsigned long first_bad_line;
    bool done;
    size_t consumed;
    int sink_err;
    size_t body_len;
    char body[4096];
};

static struct collect col;

static int
collect_sink(void *ctx, const char *p, size_t n)
{
    struct collect *c = ctx;

    c->calls++;
    if (c->fail_at != 0 && c->calls == c->fail_at)
        return -1;
    assert_true(n > 0);
    assert_true(c->len + n <= sizeof(c->body));
    memcpy(c->body + c->len, p, n);
    c->len += n;
    return 0;
}

static void
collect_reset(void)
{
    memset(&col, 0, sizeof(col));
}

static void
result_take(struct result *r, const struct smtp_data *d, size_t consumed, int sink_err)
{
    memset(r, 0, sizeof(*r));
    r->flags = d->flags;
    r->size = d->size;
    r->lines = d->lines;
    r->first_bad_line = d->first_bad_line;
    r->done = d->done;
    r->consumed = consumed;
    r->sink_err = sink_err;
    assert_true(col.len <= sizeof(r->body));
    r->body_len = col.len;
    memcpy(r->body, col.body, col.len);
}

static void
result_equal(const struct result *a, const struct result *b)
{
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->lines, b->lines);
    assert_int_equal(a->first_bad_line, b->first_bad_line);
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->sink_err, b->sink_err);
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
}

/*
 * Feed in[0..n) as DATA in pieces ending at cuts[] (ascending); once done, the
 * remaining pieces must consume nothing.
 */
static void
feed_split(const char *in, size_t n, const size_t *cuts, size_t ncuts, unsigned long long max,
    struct result *r)
{
    struct smtp_data d;
    size_t from = 0, consumed = 0, k, to, got;
    bool was_done;
    int err = 0;

    collect_reset();
    smtp_data_init(&d, max);
    for (k = 0; k <= ncuts; k++) {
        to = k < ncuts ? cuts[k] : n;
        was_done = d.done;
        got = smtp_data_feed(&d, in + from, to - from, collect_sink, &col, &err);
        assert_true(got <= to - from);
        if (was_done)
            assert_int_equal(got, 0);
        if (got < to - from)
            assert_true(d.done);
        consumed += got;
        from = to;
    }
    result_take(r, &d, consumed, err);
}

static void
bdat_split(const char *in, size_t n, const size_t *cuts, size_t ncuts, unsigned long long max,
    struct result *r)
{
    struct smtp_data d;
    size_t from = 0, k, to;
    int err = 0;

    collect_reset();
    smtp_data_init(&d, max);
    for (k = 0; k <= ncuts; k++) {
        to = k < ncuts ? cuts[k] : n;
        smtp_data_bdat(&d, in + from, to - from, collect_sink, &col, &err);
        from = to;
    }
    smtp_data_bdat_end(&d);
    result_take(r, &d, n, err);
}

typedef void (*split_fn)(const char *, size_t, const size_t *, size_t, unsigned long long,
    struct result *);

/* One piece, then byte by byte, then every 2-split and (for short inputs) every 3-split. */
static void
check_splits(split_fn fn, const char *in, size_t n, unsigned long long max, struct result *whole)
{
    static size_t cuts[8192];
    struct result other;
    size_t i, j;

    assert_true(n <= sizeof(cuts) / sizeof(cuts[0]));
    fn(in, n, NULL, 0, max, whole);
    for (i = 0; i < n; i++)
        cuts[i] = i;
    fn(in, n, cuts, n, max, &other);
    result_equal(whole, &other);
    for (i = 0; i <= n; i++) {
        cuts[0] = i;
        fn(in, n, cuts, 1, max, &other);
        result_equal(whole, &other);
    }
    if (n > 64)
        return;
    for (i = 0; i <= n; i++) {
        for (j = i; j <= n; j++) {
            cuts[0] = i;
            cuts[1] = j;
            fn(in, n, cuts, 2, max, &other);
            result_equal(whole, &other);
        }
    }
}

static void
data_whole(const char *in, size_t n, unsigned long long max, struct result *r)
{
    check_splits(feed_split, in, n, max, r);
}

static void
body_is(const struct result *r, const char *want, size_t n)
{
    assert_int_equal(r->body_len, n);
    assert_memory_equal(r->body, want, n);
}

#define S(lit) (lit), (sizeof(lit) - 1)

static void
test_empty_message(void **state)
{
    struct result r;

    (void)state;
    data_whole(S(".\r\nQUIT\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.consumed, 3);
    assert_int_equal(r.size, 0);
    assert_int_equal(r.lines, 0);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.body_len, 0);
}

static void
test_simple_message(void **state)
{
    struct result r;

    (void)state;
    data_whole(S("Subject: hi\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b>\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.consumed, 24);
    body_is(&r, S("Subject: hi\r\n\r\nbody\r\n"));
    assert_int_equal(r.size, 21);
    assert_int_equal(r.lines, 3);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.first_bad_line, 0);
}

static void
test_unstuffing(void **state)
{
    struct result r;

    (void)state;
    /* "..\r\n" is a stuffed lone dot; ".x" loses its dot too (§4.5.2). */
    data_whole(S("..a\r\n.b\r\n..\r\nc.d\r\n...\r\n.\r\n"), 0, &r);
    assert_true(r.done);
    body_is(&r, S(".a\r\nb\r\n.\r\nc.d\r\n..\r\n"));
    assert_int_equal(r.size, r.body_len);
    assert_int_equal(r.lines, 5);
    assert_int_equal(r.flags, 0);
}

static void
test_dot_only_at_line_start(void **state)
{
    struct result r;

    (void)state;
    data_whole(S("a.\r\n.\r\nx"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.consumed, 7);
    body_is(&r, S("a.\r\n"));
}

static void
test_unterminated(void **state)
{
    struct result r;

    (void)state;
    data_whole(S("a\r\n.\r"), 0, &r);
    assert_false(r.done);
    assert_int_equal(r.consumed, 5);
    /* The CR after the dot is held back: it may still be the end marker. */
    body_is(&r, S("a\r\n"));
    assert_int_equal(r.flags, 0);

    data_whole(S("a\r\nb\r"), 0, &r);
    assert_false(r.done);
    body_is(&r, S("a\r\nb\r"));
    assert_int_equal(r.flags, 0);
}

static void
test_cr_lf_across_calls(void **state)
{
    struct smtp_data d;
    int err = 0;

    (void)state;
    collect_reset();
    smtp_data_init(&d, 0);
    assert_int_equal(smtp_data_feed(&d, S("a\r"), collect_sink, &col, &err), 2);
    assert_int_equal(smtp_data_feed(&d, S("\n."), collect_sink, &col, &err), 2);
    assert_int_equal(smtp_data_feed(&d, S("\r"), collect_sink, &col, &err), 1);
    assert_false(d.done);
    assert_int_equal(smtp_data_feed(&d, S("\nRSET\r\n"), collect_sink, &col, &err), 1);
    assert_true(d.done);
    assert_int_equal(d.flags, 0);
    assert_int_equal(d.lines, 1);
    assert_int_equal(col.len, 3);
    assert_memory_equal(col.body, "a\r\n", 3);
    /* After the end nothing more is taken. */
    assert_int_equal(smtp_data_feed(&d, S("RSET\r\n"), collect_sink, &col, &err), 0);
    assert_int_equal(err, 0);
}

static void
test_dot_cr_then_other(void **state)
{
    struct smtp_data d;

    (void)state;
    collect_reset();
    smtp_data_init(&d, 0);
    assert_int_equal(smtp_data_feed(&d, S("a\r\n.\r"), collect_sink, &col, NULL), 5);
    assert_int_equal(smtp_data_feed(&d, S("x\r\n.\r\n"), collect_sink, &col, NULL), 6);
    assert_true(d.done);
    assert_int_equal(d.flags, DATA_BARE_CR);
    assert_int_equal(d.first_bad_line, 2);
    assert_int_equal(col.len, 7);
    assert_memory_equal(col.body, "a\r\n\rx\r\n", 7);
    assert_int_equal(d.size, 7);
}

/*
 * Each smuggling sequence, between "x" and "y", must leave the data open with
 * the expected flags and body; the genuine "\r\n.\r\n" after it then ends it.
 */
struct smuggle {
    const char *seq;
    size_t seq_len;
    unsigned flags;
    unsigned long bad_line;
    const char *body;       /* "x" seq "y" as passed on, before the final CRLF */
    size_t body_len;
};

#define SM(seq, flags, line, body) \
    {(seq), sizeof(seq) - 1, (flags), (line), (body), sizeof(body) - 1}

static const struct smuggle smuggles[] = {
    SM("\n.\n", DATA_BARE_LF, 1, "x\n.\ny"),
    SM("\n.\r\n", DATA_BARE_LF, 1, "x\n.\r\ny"),
    SM("\r\n.\n", DATA_BARE_LF, 2, "x\r\n\ny"),
    SM("\r.\r", DATA_BARE_CR, 1, "x\r.\ry"),
    SM("\r\n.\r", DATA_BARE_CR, 2, "x\r\n\ry"),
    SM("\r.\r\n", DATA_BARE_CR, 1, "x\r.\r\ny"),
    SM("\n.\r", DATA_BARE_LF | DATA_BARE_CR, 1, "x\n.\ry"),
    SM("\r\n\0.\r\n", DATA_NUL, 0, "x\r\n\0.\r\ny"),
    SM("\r\n.\0\r\n", DATA_NUL, 0, "x\r\n\0\r\ny"),
    SM("\r\r\n.\r\r\n", DATA_BARE_CR, 1, "x\r\r\n\r\r\ny"),
    SM("\r\n.\r\r\n", DATA_BARE_CR, 2, "x\r\n\r\r\ny"),
    SM("\n\n.\n\n", DATA_BARE_LF, 1, "x\n\n.\n\ny"),
    SM("\r\r.\r\r", DATA_BARE_CR, 1, "x\r\r.\r\ry"),
    SM("\n\r.\r\n", DATA_BARE_LF | DATA_BARE_CR, 1, "x\n\r.\r\ny"),
};

static void
test_smuggling(void **state)
{
    char in[64], want[64];
    size_t i, n, m;
    struct result r;

    (void)state;
    for (i = 0; i < sizeof(smuggles) / sizeof(smuggles[0]); i++) {
        const struct smuggle *sm = &smuggles[i];

        /* Open: the sequence alone does not end the data. */
        n = 0;
        in[n++] = 'x';
        memcpy(in + n, sm->seq, sm->seq_len);
        n += sm->seq_len;
        in[n++] = 'y';
        data_whole(in, n, 0, &r);
        assert_false(r.done);
        assert_int_equal(r.consumed, n);
        assert_int_equal(r.flags, sm->flags);
        assert_int_equal(r.first_bad_line, sm->bad_line);
        body_is(&r, sm->body, sm->body_len);

        /* Also with the sequence's own last octets ending the input. */
        data_whole(in, n - 1, 0, &r);
        assert_false(r.done);
        assert_int_equal(r.consumed, n - 1);

        /* Then the real end. */
        memcpy(in + n, "\r\n.\r\nQUIT\r\n", 11);
        data_whole(in, n + 11, 0, &r);
        assert_true(r.done);
        assert_int_equal(r.consumed, n + 5);
        assert_int_equal(r.flags, sm->flags);
        assert_int_equal(r.first_bad_line, sm->bad_line);
        m = sm->body_len;
        memcpy(want, sm->body, m);
        memcpy(want + m, "\r\n", 2);
        body_is(&r, want, m + 2);
        assert_int_equal(r.size, m + 2);
    }
}

/* The same sequences right after the 354, where the first line counts as a line start. */
static void
test_smuggling_at_start(void **state)
{
    struct result r;

    (void)state;
    data_whole(S(".\n"), 0, &r);
    assert_false(r.done);
    assert_int_equal(r.flags, DATA_BARE_LF);
    body_is(&r, S("\n"));

    data_whole(S("\n.\r\n"), 0, &r);
    assert_false(r.done);
    assert_int_equal(r.flags, DATA_BARE_LF);
    body_is(&r, S("\n.\r\n"));

    data_whole(S(".\r.\r\n.\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, DATA_BARE_CR);
    assert_int_equal(r.first_bad_line, 1);
    body_is(&r, S("\r.\r\n"));

    data_whole(S("\r.\r\n.\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, DATA_BARE_CR);
    body_is(&r, S("\r.\r\n"));

    data_whole(S(".\r\r\n.\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, DATA_BARE_CR);
    body_is(&r, S("\r\r\n"));
}

static void
test_first_bad_line(void **state)
{
    struct result r;

    (void)state;
    data_whole(S("one\r\ntwo\r\nth\nree\r\nfour\rx\r\n.\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, DATA_BARE_LF | DATA_BARE_CR);
    assert_int_equal(r.first_bad_line, 3);
    assert_int_equal(r.lines, 4);

    data_whole(S("one\r\ntwo\r\r\n\n.\r\n"), 0, &r);
    assert_false(r.done);
    assert_int_equal(r.flags, DATA_BARE_LF | DATA_BARE_CR);
    assert_int_equal(r.first_bad_line, 2);
}

static void
test_nul_and_8bit(void **state)
{
    struct result r;

    (void)state;
    data_whole(S("caf\xc3\xa9\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_8BIT);
    data_whole(S("a\0b\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_NUL);
    assert_int_equal(r.first_bad_line, 0);
    body_is(&r, S("a\0b\r\n"));
    data_whole(S("0123456789abcdef\x80\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_8BIT);
    data_whole(S("0123456789abcdef0123456\xff\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_8BIT);
    data_whole(S("0123456789abcdef0123456\x7f\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, 0);
    /* A stuffed dot in front of a NUL is still removed. */
    data_whole(S(".\0\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_NUL);
    body_is(&r, S("\0\r\n"));
}

static void
test_max_size(void **state)
{
    struct result r;

    (void)state;
    /* Exactly at the limit is fine. */
    data_whole(S("abc\r\n.\r\n"), 5, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, 0);
    body_is(&r, S("abc\r\n"));

    /* One over: counted in full, passed on up to the limit, framing unaffected. */
    data_whole(S("abcd\r\n..x\r\n.\r\n"), 5, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, DATA_TOO_BIG);
    assert_int_equal(r.size, 10);
    assert_int_equal(r.lines, 2);
    assert_int_equal(r.consumed, 14);
    body_is(&r, S("abcd\r"));

    /* 0: no limit. */
    data_whole(S("abcd\r\n.\r\n"), 0, &r);
    assert_int_equal(r.flags, 0);

    /* Flags found past the limit are still recorded. */
    data_whole(S("ab\r\ncd\ne\0\r\n.\r\n"), 2, &r);
    assert_int_equal(r.flags, DATA_TOO_BIG | DATA_BARE_LF | DATA_NUL);
    assert_int_equal(r.first_bad_line, 2);
    body_is(&r, S("ab"));
}

static void
test_sink_error(void **state)
{
    struct smtp_data d;
    int err = 0;

    (void)state;
    collect_reset();
    col.fail_at = 2;
    smtp_data_init(&d, 0);
    /* The stuffed dot breaks the run: the sink is called for "a\r\n", then fails. */
    assert_int_equal(smtp_data_feed(&d, S("a\r\n..b\r\n"), collect_sink, &col, &err), 8);
    assert_int_equal(err, 1);
    assert_int_equal(col.calls, 2);
    assert_int_equal(smtp_data_feed(&d, S("c\r\n.\r\nQUIT"), collect_sink, &col, &err), 6);
    assert_true(d.done);
    /* Never called again, even in a later call; everything still counted. */
    assert_int_equal(col.calls, 2);
    assert_int_equal(d.size, 10);
    assert_int_equal(d.lines, 3);
    assert_int_equal(col.len, 3);

    /* Without sink_err the failure is still remembered. */
    collect_reset();
    col.fail_at = 1;
    smtp_data_init(&d, 0);
    assert_int_equal(smtp_data_feed(&d, S("a\r\n"), collect_sink, &col, NULL), 3);
    assert_int_equal(smtp_data_feed(&d, S("b\r\n.\r\n"), collect_sink, &col, NULL), 6);
    assert_int_equal(col.calls, 1);
    assert_int_equal(d.size, 6);
}

static void
test_null_sink(void **state)
{
    struct smtp_data d;

    (void)state;
    smtp_data_init(&d, 0);
    assert_int_equal(smtp_data_feed(&d, S("a\r\n..\r\n.\r\n"), NULL, NULL, NULL), 10);
    assert_true(d.done);
    assert_int_equal(d.size, 6);
}

/* A long body without stuffed dots reaches the sink in one call, not per line. */
static void
test_long_runs(void **state)
{
    static char in[120000];
    size_t n = 0, i;
    struct smtp_data d;
    int err = 0;

    (void)state;
    for (i = 0; i < 1300; i++) {
        memset(in + n, 'a' + (int)(i % 26), 76);
        n += 76;
        in[n++] = '\r';
        in[n++] = '\n';
    }
    memcpy(in + n, ".\r\n", 3);
    n += 3;
    collect_reset();
    smtp_data_init(&d, 0);
    assert_int_equal(smtp_data_feed(&d, in, n, collect_sink, &col, &err), n);
    assert_true(d.done);
    assert_int_equal(col.calls, 1);
    assert_int_equal(col.len, n - 3);
    assert_memory_equal(col.body, in, n - 3);
    assert_int_equal(d.lines, 1300);
    assert_int_equal(d.flags, 0);
}

/* A corpus of awkward inputs, each fed byte by byte and split at every position. */
static void
test_split_corpus(void **state)
{
    static const struct {
        const char *p;
        size_t n;
    } corpus[] = {
        {S("")},
        {S(".")},
        {S(".\r")},
        {S(".\r\n")},
        {S("..\r\n.\r\n")},
        {S("\r\n.\r\n")},
        {S("\r\r\r\n\n\n.\r\n")},
        {S("a\r\n.\rb\r\n.\r\n")},
        {S("a\r\n.\r\r\n.\r\n")},
        {S("a\n.\r\n\r\n.\r\n")},
        {S("a\r.\r\n.\r\n.\r\n")},
        {S("\0\x80\r\n.\0\r\n.\r\nrest")},
        {S("x\r\n.\n.\r\n\r\n..\r\n.\r\n")},
        {S("line one\r\n..stuffed\r\n.\r\nMAIL FROM:<>\r\n")},
        {S("\r")},
        {S("\n")},
        {S("\r\n")},
        {S("a\r")},
    };
    struct result r;
    size_t i;
    unsigned long long max;

    (void)state;
    for (i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        for (max = 0; max < 8; max += 3)
            check_splits(feed_split, corpus[i].p, corpus[i].n, max, &r);
        check_splits(bdat_split, corpus[i].p, corpus[i].n, 0, &r);
        check_splits(bdat_split, corpus[i].p, corpus[i].n, 4, &r);
    }
}

static void
bdat_whole(const char *in, size_t n, unsigned long long max, struct result *r)
{
    check_splits(bdat_split, in, n, max, r);
}

static void
test_bdat(void **state)
{
    struct result r;

    (void)state;
    /* Raw: dots untouched, no end marker. */
    bdat_whole(S("..a\r\n.\r\nb\r\n"), 0, &r);
    assert_true(r.done);
    assert_int_equal(r.flags, 0);
    body_is(&r, S("..a\r\n.\r\nb\r\n"));
    assert_int_equal(r.size, 11);
    assert_int_equal(r.lines, 3);

    bdat_whole(S("a\nb\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_BARE_LF);
    assert_int_equal(r.first_bad_line, 1);

    bdat_whole(S("a\r\nb\rc\r\n"), 0, &r);
    assert_int_equal(r.flags, DATA_BARE_CR);
    assert_int_equal(r.first_bad_line, 2);

    /* A trailing CR is bare only once the last chunk is known. */
    bdat_whole(S("a\r\nb\r"), 0, &r);
    assert_int_equal(r.flags, DATA_BARE_CR);
    assert_int_equal(r.first_bad_line, 2);
    body_is(&r, S("a\r\nb\r"));

    bdat_whole(S("\xe2\x82\xac\0"), 2, &r);
    assert_int_equal(r.flags, DATA_8BIT | DATA_NUL | DATA_TOO_BIG);
    assert_int_equal(r.size, 4);
    body_is(&r, S("\xe2\x82"));
}

static void
test_bdat_chunks(void **state)
{
    struct smtp_data d;
    int err = 0;

    (void)state;
    collect_reset();
    smtp_data_init(&d, 0);
    smtp_data_bdat(&d, S("abc\r"), collect_sink, &col, &err);
    assert_int_equal(d.flags, 0);
    smtp_data_bdat(&d, S("\ndef\r"), collect_sink, &col, &err);
    assert_int_equal(d.flags, 0);
    assert_false(d.done);
    smtp_data_bdat(&d, S(""), collect_sink, &col, &err);
    smtp_data_bdat(&d, S("\n"), collect_sink, &col, &err);
    smtp_data_bdat_end(&d);
    assert_true(d.done);
    assert_int_equal(d.flags, 0);
    assert_int_equal(d.lines, 2);
    assert_int_equal(col.len, 10);
    assert_memory_equal(col.body, "abc\r\ndef\r\n", 10);

    /* CR then a chunk starting with something else: bare at once. */
    smtp_data_init(&d, 0);
    smtp_data_bdat(&d, S("abc\r"), NULL, NULL, NULL);
    smtp_data_bdat(&d, S("x"), NULL, NULL, NULL);
    assert_int_equal(d.flags, DATA_BARE_CR);
    assert_int_equal(d.first_bad_line, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_message),
        cmocka_unit_test(test_simple_message),
        cmocka_unit_test(test_unstuffing),
        cmocka_unit_test(test_dot_only_at_line_start),
        cmocka_unit_test(test_unterminated),
        cmocka_unit_test(test_cr_lf_across_calls),
        cmocka_unit_test(test_dot_cr_then_other),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_smuggling_at_start),
        cmocka_unit_test(test_first_bad_line),
        cmocka_unit_test(test_nul_and_8bit),
        cmocka_unit_test(test_max_size),
        cmocka_unit_test(test_sink_error),
        cmocka_unit_test(test_null_sink),
        cmocka_unit_test(test_long_runs),
        cmocka_unit_test(test_split_corpus),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_bdat_chunks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
