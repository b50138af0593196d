/*
 * test_client.c - smtp/client.c against scripted server replies.
 *
 * Each scenario is a list of server replies, one handed over each time the
 * client asks to read (a list that runs out is a lost connection).  The
 * dialogue is recorded as the client's output with "~" where it read, so a
 * test sees both what was sent and what went out in one write (PIPELINING).
 * Every scenario runs with each reply fed whole, split at every offset, and
 * byte by byte, with the output taken in pieces and the body pulled in
 * small chunks: the dialogue and every outcome must be the same each time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/client.h"

#define MAXR 8

struct body_src {
    const char *p;
    size_t len, off, chunk;
    bool fail; /* -1 after the first chunk */
};

static ssize_t
body_read(void *arg, char *buf, size_t n)
{
    struct body_src *b = arg;
    size_t k = b->len - b->off;

    if (b->fail && b->off > 0)
        return -1;
    if (k > n)
        k = n;
    if (b->chunk > 0 && k > b->chunk)
        k = b->chunk;
    memcpy(buf, b->p + b->off, k);
    b->off += k;
    return (ssize_t)k;
}

struct run {
    char seq[200000]; /* the client's output, "~" where it read (room for BDAT chunks) */
    size_t len;
    struct smtp_client_outcome oc[MAXR];  /* the (first) message's */
    struct smtp_client_outcome oc2[MAXR]; /* the second message's, when there is one */
    unsigned ext;
    uint64_t size_limit;
    size_t nreplies_used;
    bool tls; /* smtp_client_tls_active() at the end */
};

/* STARTTLS in drive(): the client's mode, and how the "handshake" goes ("TLS~" in seq). */
static enum smtp_client_tls drive_tls = SMTP_CLIENT_TLS_NONE;
static bool drive_tls_ok = true;
/* AUTH in drive(): smtp_client_set_auth() when drive_auth_user is not NULL. */
static const char *drive_auth_user, *drive_auth_pass;
static bool drive_authed; /* smtp_client_authenticated() at the end */

static void
seq_add(struct run *r, const char *p, size_t n)
{
    assert_true(r->len + n < sizeof(r->seq));
    memcpy(r->seq + r->len, p, n);
    r->len += n;
    r->seq[r->len] = '\0';
}

/* The output so far is whole CRLF lines and has no bare CR or LF. */
static void
assert_crlf_lines(const struct run *r)
{
    size_t i;

    for (i = 0; i < r->len; i++) {
        if (r->seq[i] == '\r')
            assert_true(i + 1 < r->len && r->seq[i + 1] == '\n');
        if (r->seq[i] == '\n')
            assert_true(i > 0 && r->seq[i - 1] == '\r');
    }
    assert_true(r->len == 0 || r->seq[r->len - 1] == '\n' || r->seq[r->len - 1] == '~');
}

static void
snapshot(struct smtp_client *c, const struct smtp_client_msg *m, struct smtp_client_outcome *oc)
{
    size_t i;

    assert_true(m->nrcpts <= MAXR);
    for (i = 0; i < m->nrcpts; i++) {
        oc[i] = *smtp_client_outcome(c, i);
        assert_int_not_equal(oc[i].result, SMTP_CLIENT_PENDING);
    }
}

/*
 * Run a scenario: split 0 feeds each reply whole, SIZE_MAX byte by byte, k
 * in two pieces at k.  With m2, the second message follows on the same
 * connection.
 */
static void
drive(const struct smtp_client_msg *m, const struct smtp_client_msg *m2, const char *const *replies,
    size_t split, struct run *r)
{
    struct smtp_client *c;
    size_t ri = 0, steps, n, k;
    const char *p;
    int idles = 0;

    memset(r, 0, sizeof(*r));
    ((struct body_src *)m->arg)->off = 0;
    if (m2 != NULL)
        ((struct body_src *)m2->arg)->off = 0;
    c = smtp_client_new("client.test", m);
    assert_non_null(c);
    smtp_client_set_tls(c, drive_tls);
    if (drive_auth_user != NULL)
        assert_int_equal(smtp_client_set_auth(c, drive_auth_user, drive_auth_pass), 0);
    for (steps = 0; steps < 100000; steps++) {
        switch (smtp_client_next(c)) {
        case SMTP_CLIENT_SEND:
            p = smtp_client_output(c, &n);
            assert_true(n > 0);
            /* a short write now and then */
            k = (split % 2 == 1 && n > 1) ? n / 2 : n;
            seq_add(r, p, k);
            smtp_client_sent(c, k);
            break;
        case SMTP_CLIENT_READ:
            assert_crlf_lines(r);
            seq_add(r, "~", 1);
            if (replies[ri] == NULL) {
                smtp_client_fail(c, "connection closed");
                break;
            }
            p = replies[ri++];
            n = strlen(p);
            if (split == SIZE_MAX) {
                for (k = 0; k < n; k++)
                    smtp_client_input(c, p + k, 1);
            } else {
                k = split > 0 && split < n ? split : n;
                smtp_client_input(c, p, k);
                smtp_client_input(c, p + k, n - k);
            }
            break;
        case SMTP_CLIENT_STARTTLS:
            assert_crlf_lines(r);
            seq_add(r, "TLS~", 4);
            smtp_client_tls_done(c, drive_tls_ok, "handshake failed: test");
            break;
        case SMTP_CLIENT_IDLE:
            assert_crlf_lines(r);
            if (idles++ == 0) {
                snapshot(c, m, r->oc);
                if (m2 != NULL) {
                    assert_int_equal(smtp_client_next_message(c, m2), 0);
                    break;
                }
            } else {
                snapshot(c, m2, r->oc2);
            }
            smtp_client_quit(c);
            break;
        case SMTP_CLIENT_CLOSE:
            assert_crlf_lines(r);
            if (idles == 0)
                snapshot(c, m, r->oc);
            else if (idles == 1 && m2 != NULL)
                snapshot(c, m2, r->oc2);
            /* closed means closed */
            assert_int_equal(smtp_client_next(c), SMTP_CLIENT_CLOSE);
            p = smtp_client_output(c, &n);
            assert_int_equal(n, 0);
            r->ext = smtp_client_extensions(c);
            r->size_limit = smtp_client_size_limit(c);
            r->nreplies_used = ri;
            r->tls = smtp_client_tls_active(c);
            drive_authed = smtp_client_authenticated(c, NULL);
            smtp_client_free(c);
            return;
        }
    }
    fail_msg("the client did not finish");
}

static void
assert_same_outcomes(
    const struct smtp_client_outcome *a, const struct smtp_client_outcome *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        assert_int_equal(a[i].result, b[i].result);
        assert_int_equal(a[i].code, b[i].code);
        assert_string_equal(a[i].text, b[i].text);
    }
}

/* drive() every way; all must agree; r gets the first. */
static void
run_all(const struct smtp_client_msg *m, const struct smtp_client_msg *m2,
    const char *const *replies, struct run *r)
{
    static struct run other;
    size_t i, maxlen = 0, split;

    for (i = 0; replies[i] != NULL; i++)
        if (strlen(replies[i]) > maxlen)
            maxlen = strlen(replies[i]);
    drive(m, m2, replies, 0, r);
    for (split = 1; split <= maxlen + 1; split++) {
        drive(m, m2, replies, split, &other);
        if (strcmp(r->seq, other.seq) != 0)
            fail_msg("split %zu: dialogue\n%s\ninstead of\n%s", split, other.seq, r->seq);
        assert_same_outcomes(r->oc, other.oc, m->nrcpts);
        if (m2 != NULL)
            assert_same_outcomes(r->oc2, other.oc2, m2->nrcpts);
    }
    drive(m, m2, replies, SIZE_MAX, &other);
    assert_string_equal(r->seq, other.seq);
    assert_same_outcomes(r->oc, other.oc, m->nrcpts);
}

static void
expect(const struct smtp_client_outcome *o, enum smtp_client_result res, unsigned code,
    const char *text_prefix)
{
    if (o->result != res || o->code != code ||
        strncmp(o->text, text_prefix, strlen(text_prefix)) != 0)
        fail_msg("outcome %d %u \"%s\"; wanted %d %u \"%s...\"", o->result, o->code, o->text, res,
            code, text_prefix);
}

static void
expect_seq(const struct run *r, const char *want)
{
    if (strcmp(r->seq, want) != 0)
        fail_msg("dialogue\n%s\nwanted\n%s", r->seq, want);
}

/* ---- the message ----------------------------------------------------------- */

static const char body1[] = "Subject: hi\r\n\r\nHello.\r\n";

struct fixture {
    struct smtp_client_rcpt rcpts[MAXR];
    struct smtp_client_msg m;
    struct body_src b;
};

static void
fixture_init(struct fixture *f, const char *const *addrs, const char *body, size_t chunk)
{
    size_t i;

    memset(f, 0, sizeof(*f));
    for (i = 0; addrs[i] != NULL; i++)
        f->rcpts[i].addr = addrs[i];
    f->b.p = body;
    f->b.len = strlen(body);
    f->b.chunk = chunk;
    f->m.sender = "s@example.net";
    f->m.rcpts = f->rcpts;
    f->m.nrcpts = i;
    f->m.size = f->b.len;
    f->m.body = body_read;
    f->m.arg = &f->b;
}

static const char *const ab[] = {"a@example.org", "b@example.org", NULL};
static const char *const abc[] = {"a@example.org", "b@example.org", "c@example.org", NULL};

#define GREET "220 mx.test ESMTP\r\n"
#define EHLO_PIPE "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250 8BITMIME\r\n"
#define EHLO_PLAIN "250-mx.test\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_CHUNK "250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 1000000\r\n"

/* ---- the tests ------------------------------------------------------------- */

static void
test_pipelined_delivery(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PIPE,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 <b@example.org>: no\r\n550 5.1.1 such user\r\n"
        "354 go\r\n",
        "250 2.0.0 Ok: queued as X\r\n", "221 2.0.0 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 5);
    run_all(&f.m, NULL, replies, &r);
    /* MAIL, the RCPTs and DATA in one write, DATA last (RFC 2920) */
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                   "~Subject: hi\r\n\r\nHello.\r\n.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued as X");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 <b@example.org>: no; such user");
    assert_int_equal(
        r.ext, SMTP_CLIENT_EXT_PIPELINING | SMTP_CLIENT_EXT_SIZE | SMTP_CLIENT_EXT_8BITMIME);
    assert_int_equal(r.size_limit, 10000);
}

static void
test_one_by_one(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PLAIN, "250 2.1.0 Ok\r\n", "450 4.2.1 later\r\n",
        "250 2.1.5 Ok\r\n", "354 go\r\n", "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n~RCPT TO:<a@example.org>\r\n"
                   "~RCPT TO:<b@example.org>\r\n~DATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 450, "4.2.1 later");
    expect(&r.oc[1], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
}

static void
test_no_data_when_all_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PLAIN, "250 Ok\r\n", "550 5.1.1 no\r\n",
        "553 5.1.3 bad\r\n", "221 Bye\r\n", NULL};
    const char *piped[] = {GREET, EHLO_PIPE,
        "250 Ok\r\n550 5.1.1 no\r\n553 5.1.3 bad\r\n554 5.5.1 No valid recipients\r\n",
        "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n~RCPT TO:<a@example.org>\r\n"
                   "~RCPT TO:<b@example.org>\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 553, "5.1.3 bad");

    run_all(&f.m, NULL, piped, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 553, "5.1.3 bad");
    assert_non_null(strstr(r.seq, "DATA\r\n~QUIT\r\n~"));
}

static void
test_helo_fallback(void **state)
{
    struct fixture f;
    struct run r;
    const char *r502[] = {GREET, "502 5.5.1 no EHLO\r\n", "250 mx.test\r\n", "250 Ok\r\n",
        "250 Ok\r\n", "354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};
    const char *r500[] = {GREET, "500 what\r\n", "250 mx.test\r\n", "250 Ok\r\n", "250 Ok\r\n",
        "354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 0);
    f.m.eightbit = true;
    run_all(&f.m, NULL, r502, &r);
    expect_seq(&r, "~EHLO client.test\r\n~HELO client.test\r\n~MAIL FROM:<s@example.net>\r\n"
                   "~RCPT TO:<a@example.org>\r\n~DATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
    assert_int_equal(r.ext, 0);
    run_all(&f.m, NULL, r500, &r);
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
    assert_non_null(strstr(r.seq, "~HELO client.test\r\n"));
}

static void
test_greeting_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *r421[] = {"421 4.3.2 busy\r\n", NULL};
    const char *r554[] = {"554-5.7.1 go\r\n554 5.7.1 away\r\n", "221 Bye\r\n", NULL};
    const char *r450[] = {"450 not now\r\n", NULL}; /* and no reply to QUIT */

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, r421, &r);
    expect_seq(&r, "~"); /* nothing sent after a 421 */
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 busy");
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 busy");
    run_all(&f.m, NULL, r554, &r);
    expect_seq(&r, "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 554, "5.7.1 go; away");
    run_all(&f.m, NULL, r450, &r);
    expect_seq(&r, "~QUIT\r\n~");
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 450, "not now");
}

static void
test_ehlo_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *r421[] = {GREET, "421 4.7.0 bye\r\n", NULL};
    const char *r554[] = {GREET, "554 5.7.1 not you\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, r421, &r);
    expect_seq(&r, "~EHLO client.test\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.7.0 bye");
    run_all(&f.m, NULL, r554, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 554, "5.7.1 not you");
}

/* 421 at each later stage: what was decided stays, everything else goes to the next host. */
static void
test_421_everywhere(void **state)
{
    struct fixture f;
    struct run r;
    const char *mail[] = {GREET, EHLO_PLAIN, "421 4.3.2 shutting down\r\n", NULL};
    const char *rcpt[] = {GREET, EHLO_PLAIN, "250 Ok\r\n", "550 5.1.1 no\r\n", "250 Ok\r\n",
        "421 4.3.2 shutting down\r\n", NULL};
    const char *data[] = {GREET, EHLO_PIPE,
        "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n250 Ok\r\n421 4.3.2 shutting down\r\n", NULL};
    const char *dot[] = {GREET, EHLO_PIPE,
        "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n250 Ok\r\n354 go\r\n", "421 4.3.2 shutting down\r\n",
        NULL};

    fixture_init(&f, abc, body1, 0);
    run_all(&f.m, NULL, mail, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 shutting down");
    expect(&r.oc[2], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 shutting down");

    run_all(&f.m, NULL, rcpt, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2"); /* accepted, not delivered */
    expect(&r.oc[2], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2");
    assert_true(strlen(r.seq) > 0 && strcmp(r.seq + strlen(r.seq) - 3, "\r\n~") == 0);
    assert_null(strstr(r.seq, "QUIT"));

    run_all(&f.m, NULL, data, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[2], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2");
    assert_null(strstr(r.seq, "QUIT"));

    run_all(&f.m, NULL, dot, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[2], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2");
    assert_non_null(strstr(r.seq, "Hello.\r\n.\r\n~"));
    assert_null(strstr(r.seq, "QUIT"));
}

static void
test_mail_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *r451[] = {GREET, EHLO_PLAIN, "451 4.3.0 try later\r\n", "221 Bye\r\n", NULL};
    const char *r553[] = {GREET, EHLO_PIPE,
        "553 5.1.8 bad sender\r\n503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first\r\n"
        "503 5.5.1 MAIL first\r\n",
        "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, r451, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 451, "4.3.0 try later");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 451, "4.3.0 try later");
    run_all(&f.m, NULL, r553, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 553, "5.1.8 bad sender");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 553, "5.1.8 bad sender");
    assert_non_null(strstr(r.seq, "DATA\r\n~QUIT\r\n~"));
}

static void
test_data_refusals(void **state)
{
    struct fixture f;
    struct run r;
    const char *at_data[] = {GREET, EHLO_PIPE,
        "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n554 5.3.0 no\r\n", "221 Bye\r\n", NULL};
    const char *at_end[] = {GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n354 go\r\n",
        "452 4.3.1 Insufficient system storage\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, at_data, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 554, "5.3.0 no");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    assert_non_null(strstr(r.seq, "DATA\r\n~QUIT\r\n~"));
    run_all(&f.m, NULL, at_end, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 452, "4.3.1 Insufficient system storage");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
}

static void
test_malformed_replies(void **state)
{
    struct fixture f;
    struct run r;
    const char *bad_rcpt[] = {GREET, EHLO_PLAIN, "250 Ok\r\n", "550 5.1.1 no\r\n",
        "25O 2.1.5 Ok\r\n", "221 Bye\r\n", NULL};
    const char *mixed[] = {GREET, "250-mx.test\r\n251 PIPELINING\r\n", NULL};
    const char *three_xx[] = {GREET, EHLO_PLAIN, "250 Ok\r\n", "354 what\r\n", NULL};
    const char *bare_cr[] = {"220 mx\rtest\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, bad_rcpt, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 0, "malformed reply: ");
    assert_int_equal(r.nreplies_used, 5);
    assert_null(strstr(r.seq, "QUIT")); /* the stream is out of step: just close */
    run_all(&f.m, NULL, mixed, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "malformed reply: lines of one reply");
    run_all(&f.m, NULL, three_xx, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "RCPT TO answered: 354 what");
    run_all(&f.m, NULL, bare_cr, &r);
    expect(&r.oc[1], SMTP_CLIENT_NEXT_HOST, 0, "malformed reply: bare CR");
}

static void
test_connection_lost(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {
        GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n354 go\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "connection closed");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
}

static void
test_dot_stuffing(void **state)
{
    static const char body[] = ".hi\r\nx\n.\r\n..y\rz\r\r\n.";
    struct fixture f;
    struct run r;
    const char *replies[] = {
        GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};
    size_t chunk;

    for (chunk = 0; chunk < 5; chunk++) {
        fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body, chunk);
        run_all(&f.m, NULL, replies, &r);
        assert_non_null(strstr(r.seq, "DATA\r\n~..hi\r\nx\r\n..\r\n...y\r\nz\r\n\r\n..\r\n.\r\n~"));
        expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
    }
    /* an empty body, and one ending in a bare CR */
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, "", 0);
    run_all(&f.m, NULL, replies, &r);
    assert_non_null(strstr(r.seq, "DATA\r\n~.\r\n~"));
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, "x\r", 0);
    run_all(&f.m, NULL, replies, &r);
    assert_non_null(strstr(r.seq, "DATA\r\n~x\r\n.\r\n~"));
}

static void
test_size_refusal(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {
        GREET, "250-mx.test\r\n250-SIZE 10\r\n250 PIPELINING\r\n", "221 Bye\r\n", NULL};
    const char *nolimit[] = {GREET, "250-mx.test\r\n250-SIZE\r\n250 PIPELINING\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_TOO_BIG, 0, "");
    expect(&r.oc[1], SMTP_CLIENT_TOO_BIG, 0, "");
    assert_int_equal(r.size_limit, 10);
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 0);
    run_all(&f.m, NULL, nolimit, &r);
    assert_non_null(strstr(r.seq, "MAIL FROM:<s@example.net> SIZE=23\r\n"));
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
}

static void
test_smtputf8(void **state)
{
    struct fixture f;
    struct run r;
    const char *without[] = {GREET, EHLO_PIPE, "221 Bye\r\n", NULL};
    const char *with[] = {GREET, "250-mx.test\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n", "250 Ok\r\n",
        "250 Ok\r\n", "354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, (const char *const[]){"j\xc3\xb6rg@example.org", NULL}, body1, 0);
    f.m.smtputf8 = true;
    f.m.eightbit = true;
    run_all(&f.m, NULL, without, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEED_SMTPUTF8, 0, "");
    run_all(&f.m, NULL, with, &r);
    assert_non_null(strstr(r.seq, "MAIL FROM:<s@example.net> BODY=8BITMIME SMTPUTF8\r\n"
                                  "~RCPT TO:<j\xc3\xb6rg@example.org>\r\n"));
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
    /* a UTF-8 address the message did not declare is not sent */
    f.m.smtputf8 = false;
    run_all(&f.m, NULL, with, &r);
    expect(&r.oc[0], SMTP_CLIENT_LOCAL, 0, "recipient address");
}

static void
test_8bitmime_and_dsn(void **state)
{
    struct fixture f;
    struct run r;
    const char *plain[] = {GREET, "250-mx.test\r\n250 PIPELINING\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};
    const char *dsn[] = {GREET, "250-mx.test\r\n250-DSN\r\n250 PIPELINING\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 0);
    f.m.eightbit = true;
    f.m.ret = "HDRS";
    f.m.envid = "QQ314159";
    f.rcpts[0].notify = "SUCCESS,FAILURE";
    f.rcpts[0].orcpt = "rfc822;a@example.org";
    run_all(&f.m, NULL, plain, &r);
    /* no BODY=8BITMIME without 8BITMIME (passed through: XXX in client.c), no DSN params */
    assert_non_null(strstr(r.seq, "~MAIL FROM:<s@example.net>\r\nRCPT TO:<a@example.org>\r\n"));
    run_all(&f.m, NULL, dsn, &r);
    assert_non_null(strstr(r.seq, "~MAIL FROM:<s@example.net> RET=HDRS ENVID=QQ314159\r\n"
                                  "RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE "
                                  "ORCPT=rfc822;a@example.org\r\n"));
    /* a parameter with a space would break the command: it is left out */
    f.m.envid = "a b";
    run_all(&f.m, NULL, dsn, &r);
    assert_non_null(strstr(r.seq, "~MAIL FROM:<s@example.net> RET=HDRS\r\n"));
}

static void
test_bad_addresses(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {
        GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};
    const char *bye[] = {GREET, EHLO_PIPE, "221 Bye\r\n", NULL};

    fixture_init(
        &f, (const char *const[]){"a@example.org\r\nRSET", "b@example.org", NULL}, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect(&r.oc[0], SMTP_CLIENT_LOCAL, 0, "recipient address");
    expect(&r.oc[1], SMTP_CLIENT_DELIVERED, 250, "Ok");
    assert_null(strstr(r.seq, "RSET"));
    f.m.sender = "x>@y";
    run_all(&f.m, NULL, bye, &r);
    expect(&r.oc[0], SMTP_CLIENT_LOCAL, 0, "");
    expect(&r.oc[1], SMTP_CLIENT_LOCAL, 0, "sender address");
    assert_null(strstr(r.seq, "MAIL"));
    assert_null(smtp_client_new("bad name", &f.m));
    assert_null(smtp_client_new("", &f.m));
}

static void
test_body_read_error(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 go\r\n", NULL};
    struct smtp_client *c;
    size_t n;

    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 4);
    f.b.fail = true;
    /* by hand: the output stops mid-line, which drive() would flag */
    c = smtp_client_new("client.test", &f.m);
    assert_non_null(c);
    (void)r;
    for (n = 0; replies[n] != NULL;) {
        enum smtp_client_action a = smtp_client_next(c);

        if (a == SMTP_CLIENT_SEND) {
            size_t k;

            (void)smtp_client_output(c, &k);
            smtp_client_sent(c, k);
        } else if (a == SMTP_CLIENT_READ) {
            smtp_client_input(c, replies[n], strlen(replies[n]));
            n++;
        } else {
            break;
        }
    }
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_SEND); /* the first 4 octets */
    (void)smtp_client_output(c, &n);
    assert_int_equal(n, 4);
    smtp_client_sent(c, n);
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_CLOSE); /* no dot */
    expect(smtp_client_outcome(c, 0), SMTP_CLIENT_LOCAL, 0, "the message body");
    smtp_client_free(c);
}

static void
test_connection_reuse(void **state)
{
    struct fixture f, g;
    struct run r;
    const char *replies[] = {GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok 1\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok 2\r\n", "221 Bye\r\n", NULL};
    const char *after_fail[] = {GREET, EHLO_PIPE, "550 5.7.1 no\r\n503 no\r\n503 no\r\n",
        "250 2.0.0 reset\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok 2\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 0);
    fixture_init(&g, (const char *const[]){"b@example.org", NULL}, "Two\r\n", 0);
    g.m.sender = "";
    run_all(&f.m, &g.m, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "RCPT TO:<a@example.org>\r\nDATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n"
                   "~MAIL FROM:<> SIZE=5\r\nRCPT TO:<b@example.org>\r\nDATA\r\n~Two\r\n.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok 1");
    expect(&r.oc2[0], SMTP_CLIENT_DELIVERED, 250, "Ok 2");
    /* after a refused MAIL, the next transaction starts with RSET */
    run_all(&f.m, &g.m, after_fail, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.7.1 no");
    expect(&r.oc2[0], SMTP_CLIENT_DELIVERED, 250, "Ok 2");
    assert_non_null(strstr(r.seq, "DATA\r\n~RSET\r\nMAIL FROM:<> SIZE=5\r\n"));
}

/* After the transaction, the message may be gone: QUIT and a failure need nothing from it. */
static void
test_message_gone_after_transaction(void **state)
{
    const char *replies[] = {GREET, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 go\r\n", "250 Ok 1\r\n"};
    struct smtp_client_msg *m = calloc(1, sizeof(*m));
    struct smtp_client_rcpt rc = {.addr = "a@example.org"};
    struct smtp_client *c;
    size_t i = 0, n;

    (void)state;
    assert_non_null(m);
    m->sender = "s@example.net";
    m->rcpts = &rc;
    m->nrcpts = 1;
    c = smtp_client_new("client.test", m);
    assert_non_null(c);
    for (;;) {
        enum smtp_client_action a = smtp_client_next(c);

        if (a == SMTP_CLIENT_IDLE)
            break;
        assert_int_not_equal(a, SMTP_CLIENT_CLOSE);
        if (a == SMTP_CLIENT_SEND) {
            smtp_client_output(c, &n);
            smtp_client_sent(c, n);
        } else {
            assert_true(i < sizeof(replies) / sizeof(*replies));
            smtp_client_input(c, replies[i], strlen(replies[i]));
            i++;
        }
    }
    assert_int_equal(smtp_client_outcome(c, 0)->result, SMTP_CLIENT_DELIVERED);
    /* the caller reuses or frees the message (ASan would see a read of it) */
    m->nrcpts = 50;
    free(m);
    smtp_client_quit(c);
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_SEND);
    smtp_client_output(c, &n);
    smtp_client_sent(c, n);
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_READ);
    smtp_client_fail(c, "connection lost");
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_CLOSE);
    assert_int_equal(smtp_client_outcome(c, 0)->result, SMTP_CLIENT_DELIVERED);
    smtp_client_free(c);
}

static void
test_many_recipients_window(void **state)
{
    /* 150 recipients: the pipelined window (100 commands) splits the envelope in two writes */
    static struct smtp_client_rcpt rc[150];
    static char names[150][32];
    static char replies_buf[150 * 16 + 64];
    struct smtp_client_msg m;
    struct body_src b = {.p = "x\r\n", .len = 3};
    struct smtp_client *c;
    size_t i, n, writes = 0, fed = 0, len;
    const char *p;
    int guard = 0;

    for (i = 0; i < 150; i++) {
        snprintf(names[i], sizeof(names[i]), "r%zu@example.org", i);
        rc[i].addr = names[i];
    }
    memset(&m, 0, sizeof(m));
    m.sender = "s@example.net";
    m.rcpts = rc;
    m.nrcpts = 150;
    m.size = 3;
    m.body = body_read;
    m.arg = &b;
    p = replies_buf;
    strcpy(replies_buf, "250 Ok\r\n");
    for (i = 0; i < 150; i++)
        strcat(replies_buf, i % 2 ? "250 Ok\r\n" : "450 4.2.1 later\r\n");
    strcat(replies_buf, "354 go\r\n250 done\r\n221 Bye\r\n");
    len = strlen(replies_buf);
    c = smtp_client_new("client.test", &m);
    assert_non_null(c);
    smtp_client_input(c, GREET, strlen(GREET));
    assert_int_equal(smtp_client_next(c), SMTP_CLIENT_SEND);
    (void)smtp_client_output(c, &n);
    smtp_client_sent(c, n);
    smtp_client_input(c, EHLO_PIPE, strlen(EHLO_PIPE));
    while (guard++ < 1000) {
        enum smtp_client_action a = smtp_client_next(c);

        if (a == SMTP_CLIENT_SEND) {
            const char *o = smtp_client_output(c, &n);

            if (writes == 0) { /* MAIL + 99 RCPTs */
                assert_non_null(memmem(o, n, "RCPT TO:<r98@example.org>\r\n", 27));
                assert_null(memmem(o, n, "RCPT TO:<r99@example.org>\r\n", 27));
            }
            writes++;
            smtp_client_sent(c, n);
        } else if (a == SMTP_CLIENT_READ) {
            /* one reply at a time */
            const char *e = strstr(p + fed, "\r\n");

            assert_non_null(e);
            smtp_client_input(c, p + fed, (size_t)(e + 2 - (p + fed)));
            fed = (size_t)(e + 2 - p);
            assert_true(fed <= len);
        } else if (a == SMTP_CLIENT_IDLE) {
            smtp_client_quit(c);
        } else {
            break;
        }
    }
    for (i = 0; i < 150; i++)
        expect(smtp_client_outcome(c, i), i % 2 ? SMTP_CLIENT_DELIVERED : SMTP_CLIENT_REFUSED,
            i % 2 ? 250 : 450, i % 2 ? "done" : "4.2.1 later");
    smtp_client_free(c);
}

/* ---- BDAT (RFC 3030) ----------------------------------------------------------- */

/*
 * The BDAT chunks of r's dialogue from its first "BDAT ": their sizes, their data
 * concatenated (NUL-terminated), and how many.  Each must be "BDAT n" CRLF, n
 * octets, then a read; only the last one LAST.
 */
static size_t
bdat_chunks(const char *seq, size_t *sizes, size_t max, char *data, size_t datamax)
{
    const char *p = strstr(seq, "BDAT ");
    size_t k = 0, dl = 0;
    bool last = false;

    assert_non_null(p);
    while (p != NULL && strncmp(p, "BDAT ", 5) == 0) {
        char *end;
        size_t n;

        assert_false(last);
        assert_true(k < max);
        n = (size_t)strtoul(p + 5, &end, 10);
        if (strncmp(end, " LAST\r\n", 7) == 0) {
            last = true;
            end += 7;
        } else {
            assert_true(strncmp(end, "\r\n", 2) == 0);
            end += 2;
        }
        assert_true(n <= SMTP_CLIENT_BDAT_MAX);
        assert_true(strlen(end) > n && end[n] == '~');
        assert_true(dl + n < datamax);
        memcpy(data + dl, end, n);
        dl += n;
        sizes[k++] = n;
        p = end + n + 1;
    }
    data[dl] = '\0';
    assert_true(last);
    return k;
}

static size_t
count_str(const char *s, const char *what)
{
    size_t k = 0;

    while ((s = strstr(s, what)) != NULL) {
        k++;
        s += strlen(what);
    }
    return k;
}

/* 1500 lines of 99 octets with bare LF ends (some start with '.'); and it made CRLF. */
static char big_body[1500 * 100 + 1], big_crlf[1500 * 101 + 1];

static void
big_init(void)
{
    size_t i, o = 0, c = 0;

    for (i = 0; i < 1500; i++) {
        memset(big_body + o, 'x', 99);
        memset(big_crlf + c, 'x', 99);
        if (i % 7 == 0)
            big_body[o] = big_crlf[c] = '.';
        big_body[o + 99] = '\n';
        memcpy(big_crlf + c + 99, "\r\n", 2);
        o += 100;
        c += 101;
    }
    big_body[o] = big_crlf[c] = '\0';
}

static void
test_bdat_one_chunk(void **state)
{
    struct fixture f;
    struct run r;
    const char *piped[] = {GREET, EHLO_CHUNK,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n250 2.0.0 Ok: queued as X\r\n",
        "221 2.0.0 Bye\r\n", NULL};
    const char *plain[] = {GREET, "250-mx.test\r\n250 CHUNKING\r\n", "250 Ok\r\n", "250 Ok\r\n",
        "250 Ok\r\n", "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};
    const char *stuffed[] = {
        GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 5);
    f.m.chunking = true;
    run_all(&f.m, NULL, piped, &r);
    /* MAIL, the RCPTs and the only chunk in one write (RFC 3030 §4.2) */
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                   "BDAT 23 LAST\r\nSubject: hi\r\n\r\nHello.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued as X");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no such user");
    assert_true(r.ext & SMTP_CLIENT_EXT_CHUNKING);

    /* without PIPELINING: BDAT waits for the RCPT replies, like DATA */
    run_all(&f.m, NULL, plain, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n~RCPT TO:<a@example.org>\r\n"
                   "~RCPT TO:<b@example.org>\r\n~BDAT 23 LAST\r\nSubject: hi\r\n\r\nHello.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[1], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");

    /* no dot-stuffing and no final dot with BDAT */
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, ".hi\r\n.\r\n", 3);
    f.m.chunking = true;
    run_all(&f.m, NULL, stuffed, &r);
    assert_non_null(strstr(r.seq, "RCPT TO:<a@example.org>\r\nBDAT 8 LAST\r\n.hi\r\n.\r\n~QUIT"));
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
}

static void
test_bdat_empty_body_and_line_ends(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {
        GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 Ok\r\n", "221 Bye\r\n", NULL};
    size_t chunk;

    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, "", 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, replies, &r);
    assert_non_null(strstr(r.seq, "RCPT TO:<a@example.org>\r\nBDAT 0 LAST\r\n~QUIT\r\n~"));
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");

    /* bare LF and CR become CRLF before they are counted; the last line gets its CRLF */
    for (chunk = 0; chunk < 5; chunk++) {
        fixture_init(&f, (const char *const[]){"a@example.org", NULL}, "a\nb\rc\r\n.d", chunk);
        f.m.chunking = true;
        run_all(&f.m, NULL, replies, &r);
        assert_non_null(strstr(r.seq, "\r\nBDAT 13 LAST\r\na\r\nb\r\nc\r\n.d\r\n~QUIT\r\n~"));
        expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "Ok");
        fixture_init(&f, (const char *const[]){"a@example.org", NULL}, "\n\rx\r", chunk);
        f.m.chunking = true;
        run_all(&f.m, NULL, replies, &r);
        assert_non_null(strstr(r.seq, "\r\nBDAT 7 LAST\r\n\r\n\r\nx\r\n~QUIT\r\n~"));
    }
}

static void
test_bdat_several_chunks(void **state)
{
    static char data[sizeof(big_crlf) + 1];
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 2.0.0 chunk 1\r\n",
        "250 2.0.0 chunk 2\r\n", "250 2.0.0 Ok: queued\r\n", "221 Bye\r\n", NULL};
    size_t sizes[8], k, i;

    big_init();
    for (i = 0; i < 2; i++) {
        fixture_init(&f, (const char *const[]){"a@example.org", NULL}, big_body, i ? 1000 : 0);
        f.m.chunking = true;
        run_all(&f.m, NULL, replies, &r);
        assert_non_null(strstr(r.seq, "~MAIL FROM:<s@example.net> SIZE=150000\r\n"
                                      "RCPT TO:<a@example.org>\r\nBDAT 65448\r\n"));
        k = bdat_chunks(r.seq, sizes, 8, data, sizeof(data));
        /* cut after the last CRLF that fits: 648 lines of 101 octets */
        assert_int_equal(k, 3);
        assert_int_equal(sizes[0], 65448);
        assert_int_equal(sizes[1], 65448);
        assert_int_equal(sizes[2], strlen(big_crlf) - 2 * 65448);
        assert_string_equal(data, big_crlf); /* no stuffing, every LF made CRLF */
        assert_non_null(strstr(r.seq, "\r\n~BDAT 20604 LAST\r\n"));
        expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued");
    }
}

/* Drive by hand, whole replies, no whole-line checks: for chunks cut inside a line. */
static size_t
drive_raw(const struct smtp_client_msg *m, const char *const *replies, char *out, size_t max)
{
    struct smtp_client *c = smtp_client_new("client.test", m);
    size_t len = 0, ri = 0, n;
    const char *p;
    int guard = 0;

    assert_non_null(c);
    ((struct body_src *)m->arg)->off = 0;
    while (guard++ < 10000) {
        enum smtp_client_action a = smtp_client_next(c);

        if (a == SMTP_CLIENT_SEND) {
            p = smtp_client_output(c, &n);
            assert_true(len + n + 1 < max);
            memcpy(out + len, p, n);
            len += n;
            smtp_client_sent(c, n);
        } else if (a == SMTP_CLIENT_READ) {
            assert_true(len + 2 < max);
            out[len++] = '~';
            if (replies[ri] == NULL)
                smtp_client_fail(c, "connection closed");
            else
                smtp_client_input(c, replies[ri], strlen(replies[ri])), ri++;
        } else if (a == SMTP_CLIENT_IDLE) {
            expect(smtp_client_outcome(c, 0), SMTP_CLIENT_DELIVERED, 250, "done");
            smtp_client_quit(c);
        } else {
            break;
        }
    }
    smtp_client_free(c);
    out[len] = '\0';
    return len;
}

static void
test_bdat_long_lines(void **state)
{
    static char body[70001], out[140000];
    struct fixture f;
    const char *replies[] = {
        GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 Ok\r\n", "250 done\r\n", "221 Bye\r\n", NULL};
    size_t len;

    /* no LF in the first 64 KiB, and a CRLF across the limit: cut before the CR */
    memset(body, 'x', 65535);
    strcpy(body + 65535, "\r\ny\n");
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body, 0);
    f.m.chunking = true;
    len = drive_raw(&f.m, replies, out, sizeof(out));
    assert_true(len > 65535);
    assert_non_null(strstr(out, "RCPT TO:<a@example.org>\r\nBDAT 65535\r\nxxx"));
    assert_non_null(strstr(out, "xxx~BDAT 5 LAST\r\n\r\ny\r\n~QUIT\r\n~"));

    /* one line longer than a chunk: cut at the limit */
    memset(body, 'x', 70000);
    body[70000] = '\0';
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body, 0);
    f.m.chunking = true;
    drive_raw(&f.m, replies, out, sizeof(out));
    assert_non_null(strstr(out, "RCPT TO:<a@example.org>\r\nBDAT 65536\r\nxxx"));
    assert_non_null(strstr(out, "xxx~BDAT 4466 LAST\r\nxxx"));
    assert_non_null(strstr(out, "xxx\r\n~QUIT\r\n~"));
}

static void
test_bdat_refusals(void **state)
{
    static char data[sizeof(big_crlf) + 1];
    struct fixture f, g;
    struct run r;
    const char *second[] = {GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 chunk 1\r\n",
        "552 5.3.4 message too big\r\n", "221 Bye\r\n", NULL};
    const char *reuse[] = {GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 chunk 1\r\n",
        "552 5.3.4 message too big\r\n",
        "250 2.0.0 reset\r\n250 Ok\r\n250 Ok\r\n250 2.0.0 Ok 2\r\n", "221 Bye\r\n", NULL};
    const char *first[] = {GREET, EHLO_CHUNK,
        "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n554 5.6.0 bad\r\n", "221 Bye\r\n", NULL};
    const char *none[] = {GREET, EHLO_CHUNK,
        "250 Ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 No valid recipients\r\n",
        "221 Bye\r\n", NULL};
    const char *out_of_step[] = {GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n354 what\r\n", NULL};
    const char *extra[] = {
        GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n250 chunk 1\r\n250 chunk 2?\r\n", NULL};
    size_t sizes[8];

    big_init();
    fixture_init(&f, ab, big_body, 0);
    f.m.chunking = true;
    /* 552 at the second chunk: every accepted recipient gets it; no third BDAT */
    run_all(&f.m, NULL, second, &r);
    assert_int_equal(count_str(r.seq, "BDAT "), 2);
    assert_non_null(strstr(r.seq, "~BDAT 65448\r\n"));
    assert_non_null(strstr(r.seq, "\r\n~QUIT\r\n~"));
    assert_null(strstr(r.seq, "LAST"));
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 552, "5.3.4 message too big");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 552, "5.3.4 message too big");

    /* the connection is reused: the next transaction starts with RSET (RFC 3030 §3) */
    fixture_init(&g, (const char *const[]){"b@example.org", NULL}, "Two\r\n", 0);
    g.m.sender = "";
    g.m.chunking = true;
    run_all(&f.m, &g.m, reuse, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 552, "5.3.4 message too big");
    expect(&r.oc2[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok 2");
    assert_int_equal(count_str(r.seq, "BDAT "), 3);
    assert_non_null(strstr(r.seq, "~RSET\r\nMAIL FROM:<> SIZE=5\r\nRCPT TO:<b@example.org>\r\n"
                                  "BDAT 5 LAST\r\nTwo\r\n~QUIT\r\n~"));

    /* refused at the first chunk, pipelined with the envelope */
    fixture_init(&f, ab, body1, 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, first, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 554, "5.6.0 bad");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    assert_int_equal(count_str(r.seq, "BDAT "), 1);
    assert_int_equal(bdat_chunks(r.seq, sizes, 8, data, sizeof(data)), 1);
    assert_non_null(strstr(r.seq, "Hello.\r\n~QUIT\r\n~"));

    /* every RCPT refused: the server refuses the chunk too, each keeps its RCPT reply */
    run_all(&f.m, NULL, none, &r);
    expect(&r.oc[0], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");

    /* a 3xx to BDAT, or a reply to a chunk not sent: out of step, closed without QUIT */
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, big_body, 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, out_of_step, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "BDAT answered: 354 what");
    run_all(&f.m, NULL, extra, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "BDAT answered before its chunk: 250");
    assert_null(strstr(r.seq, "QUIT"));
}

static void
test_bdat_421(void **state)
{
    struct fixture f;
    struct run r;
    const char *later[] = {GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n250 chunk 1\r\n",
        "421 4.3.2 shutting down\r\n", NULL};
    const char *at_first[] = {
        GREET, EHLO_CHUNK, "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n", NULL};

    big_init();
    fixture_init(&f, ab, big_body, 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, later, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 shutting down");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    assert_int_equal(count_str(r.seq, "BDAT "), 2);
    assert_null(strstr(r.seq, "QUIT"));
    assert_true(strcmp(r.seq + strlen(r.seq) - 3, "\r\n~") == 0);
    run_all(&f.m, NULL, at_first, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 shutting down");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    assert_int_equal(count_str(r.seq, "BDAT "), 1);
    assert_null(strstr(r.seq, "QUIT"));
}

static void
test_chunking_not_offered(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PIPE,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n354 go\r\n", "250 2.0.0 Ok\r\n",
        "221 Bye\r\n", NULL};
    const char *helo[] = {GREET, "502 5.5.1 no EHLO\r\n", "250 mx.test\r\n", "250 Ok\r\n",
        "250 Ok\r\n", "354 go\r\n", "250 Ok\r\n", "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                   "~Subject: hi\r\n\r\nHello.\r\n.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    fixture_init(&f, (const char *const[]){"a@example.org", NULL}, body1, 0);
    f.m.chunking = true;
    run_all(&f.m, NULL, helo, &r);
    assert_non_null(strstr(r.seq, "~DATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n~"));
    assert_null(strstr(r.seq, "BDAT"));
}

static void
test_no_pipelining(void **state)
{
    struct fixture f;
    struct run r;
    const char *data[] = {GREET, EHLO_PIPE, "250 Ok\r\n", "250 Ok\r\n", "550 5.1.1 no\r\n",
        "354 go\r\n", "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};
    const char *bdat[] = {GREET, EHLO_CHUNK, "250 Ok\r\n", "250 Ok\r\n", "550 5.1.1 no\r\n",
        "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};
    const char *none[] = {GREET, EHLO_CHUNK, "250 Ok\r\n", "550 5.1.1 no\r\n", "550 5.1.1 no\r\n",
        "221 Bye\r\n", NULL};

    fixture_init(&f, ab, body1, 0);
    f.m.no_pipelining = true;
    run_all(&f.m, NULL, data, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "~RCPT TO:<a@example.org>\r\n~RCPT TO:<b@example.org>\r\n~DATA\r\n"
                   "~Subject: hi\r\n\r\nHello.\r\n.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");
    assert_true(r.ext & SMTP_CLIENT_EXT_PIPELINING);

    f.m.chunking = true;
    run_all(&f.m, NULL, bdat, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "~RCPT TO:<a@example.org>\r\n~RCPT TO:<b@example.org>\r\n"
                   "~BDAT 23 LAST\r\nSubject: hi\r\n\r\nHello.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    expect(&r.oc[1], SMTP_CLIENT_REFUSED, 550, "5.1.1 no");

    /* one at a time: no BDAT when no recipient was accepted */
    run_all(&f.m, NULL, none, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "~RCPT TO:<a@example.org>\r\n~RCPT TO:<b@example.org>\r\n~QUIT\r\n~");
}

/* ---- STARTTLS (RFC 3207) ---------------------------------------------------- */

#define EHLO_TLS "250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 SIZE 10000\r\n"

static void
tls_mode(enum smtp_client_tls mode, bool ok)
{
    drive_tls = mode;
    drive_tls_ok = ok;
}

static void
test_starttls_may(void **state)
{
    struct fixture f;
    struct run r;
    /* After the 220 a man in the middle appends a reply in plaintext: it must be dropped, not
       taken as the answer to the EHLO sent through TLS.  The EHLO through TLS offers STARTTLS
       again: it is not sent twice. */
    const char *replies[] = {GREET, EHLO_TLS, "220 2.0.0 Ready to start TLS\r\n250 injected\r\n",
        "250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
        "354 go\r\n", "250 2.0.0 Ok: queued\r\n", "221 Bye\r\n", NULL};

    tls_mode(SMTP_CLIENT_TLS_MAY, true);
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
    expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~TLS~EHLO client.test\r\n"
                   "~MAIL FROM:<s@example.net>\r\n~RCPT TO:<b@example.org>\r\n~DATA\r\n"
                   "~Subject: hi\r\n\r\nHello.\r\n.\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued");
    assert_true(r.tls);
    /* what the plaintext EHLO said (PIPELINING, SIZE) is forgotten */
    assert_int_equal(r.ext, SMTP_CLIENT_EXT_STARTTLS | SMTP_CLIENT_EXT_8BITMIME);
}

static void
test_starttls_not_offered(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_PLAIN, "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
        "354 go\r\n", "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};
    const char *required[] = {GREET, EHLO_PLAIN, "221 Bye\r\n", NULL};
    const char *helo[] = {GREET, "502 5.5.1 no EHLO\r\n", "250 mx.test\r\n", "221 Bye\r\n", NULL};

    /* may: plaintext */
    tls_mode(SMTP_CLIENT_TLS_MAY, true);
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    expect_seq(&r, "~EHLO client.test\r\n~MAIL FROM:<s@example.net>\r\n"
                   "~RCPT TO:<b@example.org>\r\n~DATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    assert_false(r.tls);

    /* required: no MAIL at all, QUIT, and the outcome says why */
    tls_mode(SMTP_CLIENT_TLS_REQUIRE, true);
    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, required, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_TLS_MISSING, 0, "STARTTLS not offered");
    expect(&r.oc[1], SMTP_CLIENT_TLS_MISSING, 0, "STARTTLS not offered");

    /* required, and the server only knows HELO: no extensions, so no TLS */
    run_all(&f.m, NULL, helo, &r);
    expect_seq(&r, "~EHLO client.test\r\n~HELO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_TLS_MISSING, 0, "STARTTLS not offered");

    /* none: STARTTLS offered and not used */
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
    {
        const char *offered[] = {GREET, EHLO_TLS,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", "250 2.0.0 Ok\r\n",
            "221 Bye\r\n", NULL};

        run_all(&f.m, NULL, offered, &r);
        assert_non_null(strstr(r.seq, "~EHLO client.test\r\n~MAIL FROM:"));
        assert_null(strstr(r.seq, "STARTTLS"));
        expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    }
}

static void
test_starttls_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *may[] = {GREET, EHLO_TLS, "454 4.7.0 TLS not available now\r\n",
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", "250 2.0.0 Ok\r\n", "221 Bye\r\n", NULL};
    const char *req[] = {
        GREET, EHLO_TLS, "454 4.7.0 TLS not available now\r\n", "221 Bye\r\n", NULL};
    const char *busy[] = {GREET, EHLO_TLS, "421 4.3.2 going down\r\n", NULL};
    const char *odd[] = {GREET, EHLO_TLS, "250 2.0.0 what\r\n", NULL};

    /* may: the server is still after EHLO; the message goes in plaintext */
    tls_mode(SMTP_CLIENT_TLS_MAY, true);
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, may, &r);
    expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~MAIL FROM:<s@example.net> SIZE=23\r\n"
                   "RCPT TO:<b@example.org>\r\nDATA\r\n~Subject: hi\r\n\r\nHello.\r\n.\r\n"
                   "~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok");
    assert_false(r.tls);

    tls_mode(SMTP_CLIENT_TLS_REQUIRE, true);
    run_all(&f.m, NULL, req, &r);
    expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~QUIT\r\n~");
    expect(
        &r.oc[0], SMTP_CLIENT_TLS_MISSING, 0, "STARTTLS refused: 454 4.7.0 TLS not available now");

    /* 421: this server cannot serve now, whatever the mode */
    run_all(&f.m, NULL, busy, &r);
    expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 421, "4.3.2 going down");

    /* a 2xx is out of step */
    tls_mode(SMTP_CLIENT_TLS_MAY, true);
    run_all(&f.m, NULL, odd, &r);
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "STARTTLS answered: 250 2.0.0 what");
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
}

static void
test_starttls_handshake_fails(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, EHLO_TLS, "220 2.0.0 Ready\r\n", NULL};

    for (int mode = SMTP_CLIENT_TLS_MAY; mode <= SMTP_CLIENT_TLS_REQUIRE; mode++) {
        tls_mode((enum smtp_client_tls)mode, false);
        fixture_init(&f, ab, body1, 0);
        run_all(&f.m, NULL, replies, &r);
        /* nothing more is said: the connection cannot be trusted in either form */
        expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~TLS~");
        expect(&r.oc[0], SMTP_CLIENT_TLS_FAILED, 0, "handshake failed: test");
        expect(&r.oc[1], SMTP_CLIENT_TLS_FAILED, 0, "handshake failed: test");
        assert_false(r.tls);
    }
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
}

/* ---- AUTH (RFC 4954) ------------------------------------------------------------ */

#define EHLO_AUTH "250-mx.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
#define DIALOGUE_TLS "~EHLO client.test\r\n~STARTTLS\r\n~TLS~EHLO client.test\r\n"
#define DIALOGUE_REST                                                                              \
    "~MAIL FROM:<s@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"                            \
    "~~~Subject: hi\r\n\r\nHello.\r\n.\r\n~QUIT\r\n~"

static void
auth_as(const char *user, const char *pass)
{
    drive_auth_user = user;
    drive_auth_pass = pass;
}

static void
test_auth_plain_after_starttls(void **state)
{
    struct fixture f;
    struct run r;
    /* the plaintext EHLO offers no AUTH (as ternd does); the one through TLS does */
    const char *replies[] = {GREET, EHLO_TLS, "220 2.0.0 Ready\r\n", EHLO_AUTH,
        "235 2.7.0 Authentication successful\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
        "354 go\r\n", "250 2.0.0 Ok: queued\r\n", "221 Bye\r\n", NULL};

    tls_mode(SMTP_CLIENT_TLS_REQUIRE, true);
    auth_as("user", "pass");
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
    auth_as(NULL, NULL);
    /* AUTH alone (not pipelined with MAIL), base64 of "\0user\0pass" */
    expect_seq(&r, DIALOGUE_TLS "~AUTH PLAIN AHVzZXIAcGFzcw==\r\n" DIALOGUE_REST);
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued");
    assert_true(r.tls);
    assert_true(drive_authed);
    assert_int_not_equal(r.ext & SMTP_CLIENT_EXT_AUTH, 0);
}

static void
test_auth_login_only(void **state)
{
    struct fixture f;
    struct run r;
    /* the old "AUTH=" form, LOGIN only: user and password each after a 334 */
    const char *replies[] = {GREET, "250-mx.test\r\n250-PIPELINING\r\n250 AUTH=LOGIN\r\n",
        "334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n", "235 2.7.0 Ok\r\n", "250 2.1.0 Ok\r\n",
        "250 2.1.5 Ok\r\n", "354 go\r\n", "250 2.0.0 Ok: queued\r\n", "221 Bye\r\n", NULL};

    auth_as("user", "pass");
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    auth_as(NULL, NULL);
    expect_seq(&r, "~EHLO client.test\r\n~AUTH LOGIN\r\n~dXNlcg==\r\n~cGFzcw==\r\n" DIALOGUE_REST);
    expect(&r.oc[0], SMTP_CLIENT_DELIVERED, 250, "2.0.0 Ok: queued");
    assert_true(drive_authed);
}

static void
test_auth_refused(void **state)
{
    struct fixture f;
    struct run r;
    const char *bad[] = {
        GREET, EHLO_AUTH, "535 5.7.8 Authentication credentials invalid\r\n", "221 Bye\r\n", NULL};
    const char *later[] = {
        GREET, EHLO_AUTH, "454 4.7.0 Temporary authentication failure\r\n", "221 Bye\r\n", NULL};
    const char *closing[] = {GREET, EHLO_AUTH, "421 4.3.2 going down\r\n", NULL};
    const char *none[] = {GREET, EHLO_PLAIN, "221 Bye\r\n", NULL};
    const char *unknown[] = {
        GREET, "250-mx.test\r\n250 AUTH CRAM-MD5 XOAUTH2\r\n", "221 Bye\r\n", NULL};
    const char *step[] = {GREET, EHLO_AUTH, "334 \r\n", NULL};

    auth_as("user", "wrong");
    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, bad, &r);
    /* no MAIL after a refused AUTH: QUIT, and every recipient has the reply */
    expect_seq(&r, "~EHLO client.test\r\n~AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_AUTH_FAILED, 535, "5.7.8 Authentication credentials invalid");
    expect(&r.oc[1], SMTP_CLIENT_AUTH_FAILED, 535, "5.7.8 Authentication credentials invalid");
    assert_false(drive_authed);

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, later, &r);
    expect(&r.oc[0], SMTP_CLIENT_AUTH_FAILED, 454, "4.7.0 Temporary authentication failure");

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, closing, &r);
    expect_seq(&r, "~EHLO client.test\r\n~AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n~");
    expect(&r.oc[1], SMTP_CLIENT_AUTH_FAILED, 421, "4.3.2 going down");

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, none, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_AUTH_FAILED, 0, "AUTH not offered");

    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, unknown, &r);
    expect_seq(&r, "~EHLO client.test\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_AUTH_FAILED, 0, "no AUTH mechanism offered");

    /* a 334 to PLAIN with its initial response: out of step, closed without more */
    fixture_init(&f, ab, body1, 0);
    run_all(&f.m, NULL, step, &r);
    expect_seq(&r, "~EHLO client.test\r\n~AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_NEXT_HOST, 0, "AUTH answered: 334");
    auth_as(NULL, NULL);
}

static void
test_auth_not_in_plaintext_under_may(void **state)
{
    struct fixture f;
    struct run r;
    const char *replies[] = {GREET, "250-mx.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n",
        "454 4.7.0 TLS not available\r\n", "221 Bye\r\n", NULL};

    tls_mode(SMTP_CLIENT_TLS_MAY, true);
    auth_as("user", "pass");
    fixture_init(&f, ab + 1, body1, 0);
    run_all(&f.m, NULL, replies, &r);
    tls_mode(SMTP_CLIENT_TLS_NONE, true);
    auth_as(NULL, NULL);
    expect_seq(&r, "~EHLO client.test\r\n~STARTTLS\r\n~QUIT\r\n~");
    expect(&r.oc[0], SMTP_CLIENT_AUTH_FAILED, 0, "AUTH not attempted");
    assert_null(strstr(r.seq, "AHVz"));
}

static void
test_auth_set_checks(void **state)
{
    struct fixture f;
    struct smtp_client *c;
    char longer[SMTP_CLIENT_AUTH_MAX + 2];

    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    fixture_init(&f, ab, body1, 0);
    c = smtp_client_new("client.test", &f.m);
    assert_non_null(c);
    assert_int_equal(smtp_client_set_auth(c, "", "p"), -1);
    assert_int_equal(smtp_client_set_auth(c, "u", ""), -1);
    assert_int_equal(smtp_client_set_auth(c, longer, "p"), -1);
    assert_int_equal(smtp_client_set_auth(c, "u", longer), -1);
    longer[SMTP_CLIENT_AUTH_MAX] = '\0';
    assert_int_equal(smtp_client_set_auth(c, longer, longer), 0);
    smtp_client_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_delivery),
        cmocka_unit_test(test_one_by_one),
        cmocka_unit_test(test_no_data_when_all_refused),
        cmocka_unit_test(test_helo_fallback),
        cmocka_unit_test(test_greeting_refused),
        cmocka_unit_test(test_ehlo_refused),
        cmocka_unit_test(test_421_everywhere),
        cmocka_unit_test(test_mail_refused),
        cmocka_unit_test(test_data_refusals),
        cmocka_unit_test(test_malformed_replies),
        cmocka_unit_test(test_connection_lost),
        cmocka_unit_test(test_dot_stuffing),
        cmocka_unit_test(test_size_refusal),
        cmocka_unit_test(test_smtputf8),
        cmocka_unit_test(test_8bitmime_and_dsn),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_body_read_error),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_message_gone_after_transaction),
        cmocka_unit_test(test_many_recipients_window),
        cmocka_unit_test(test_bdat_one_chunk),
        cmocka_unit_test(test_bdat_empty_body_and_line_ends),
        cmocka_unit_test(test_bdat_several_chunks),
        cmocka_unit_test(test_bdat_long_lines),
        cmocka_unit_test(test_bdat_refusals),
        cmocka_unit_test(test_bdat_421),
        cmocka_unit_test(test_chunking_not_offered),
        cmocka_unit_test(test_no_pipelining),
        cmocka_unit_test(test_starttls_may),
        cmocka_unit_test(test_starttls_not_offered),
        cmocka_unit_test(test_starttls_refused),
        cmocka_unit_test(test_starttls_handshake_fails),
        cmocka_unit_test(test_auth_plain_after_starttls),
        cmocka_unit_test(test_auth_login_only),
        cmocka_unit_test(test_auth_refused),
        cmocka_unit_test(test_auth_not_in_plaintext_under_may),
        cmocka_unit_test(test_auth_set_checks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
