/*
 * test_session.c - the session state machine without sockets: transcripts
 * in, exact replies out (codes and enhanced codes), fed whole and byte by
 * byte (the session must not care how the stream is split).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/session.h"
#include "util/base64.h"

struct harness {
    struct smtp_session_conf conf;
    struct smtp_callbacks cb;
    struct smtp_peer peer;
    struct smtp_session *s;
    char body[65536];
    size_t bodylen;
    int commits, aborts, mails;
    bool fail_body;
    bool auto_commit;   /* answer commits at once with R_QUEUED */
    enum reply_id commit_reply;
    bool relay_denied_for_remote;
    bool pending;       /* mail and rcpt answer REPLY_PENDING */
    int rcpts;
    int auths;          /* auth callback calls */
    char auth_user[300], auth_pass[300]; /* what it was given */
    enum reply_id mail_reply; /* what mail answers when not pending (0: R_MAIL_OK) */
};

static enum reply_id
h_mail(void *ctx, struct smtp_txn *t)
{
    struct harness *h = ctx;

    h->mails++;
    h->bodylen = 0;
    snprintf(t->id, sizeof(t->id), "QID%d", h->mails);
    if (h->pending)
        return REPLY_PENDING;
    return h->mail_reply ? h->mail_reply : R_MAIL_OK;
}

/* alice/secret is good; "slow" answers later; "blocked" is over the failure limit. */
static enum reply_id
h_auth(void *ctx, const char *user, const char *pass)
{
    struct harness *h = ctx;

    h->auths++;
    snprintf(h->auth_user, sizeof(h->auth_user), "%s", user);
    snprintf(h->auth_pass, sizeof(h->auth_pass), "%s", pass);
    if (strcmp(user, "slow") == 0)
        return REPLY_PENDING;
    if (strcmp(user, "blocked") == 0)
        return R_AUTH_TOO_MANY;
    if (strcmp(user, "alice") == 0 && strcmp(pass, "secret") == 0)
        return R_AUTH_OK;
    return R_AUTH_FAILED;
}

static enum reply_id
h_rcpt(void *ctx, const struct smtp_txn *t, const struct smtp_path *r)
{
    struct harness *h = ctx;

    h->rcpts++;
    if (h->pending)
        return REPLY_PENDING;
    if (h->relay_denied_for_remote && strstr(r->addr, "@remote.example") != NULL)
        return R_RELAY_DENIED;
    return R_RCPT_OK;
}

static int
h_body(void *ctx, const char *p, size_t n)
{
    struct harness *h = ctx;

    if (h->fail_body)
        return -1;
    if (h->bodylen + n < sizeof(h->body)) {
        memcpy(h->body + h->bodylen, p, n);
        h->bodylen += n;
    }
    return 0;
}

static void
h_commit(void *ctx, struct smtp_txn *t)
{
    struct harness *h = ctx;

    h->commits++;
}

static void
h_abort(void *ctx, struct smtp_txn *t)
{
    struct harness *h = ctx;

    h->aborts++;
}

static void
h_init(struct harness *h)
{
    memset(h, 0, sizeof(*h));
    h->conf.hostname = "mx.test";
    h->conf.max_line_length = 512;
    h->conf.max_message_size = 4096;
    h->conf.max_recipients = 3;
    h->conf.max_errors = 5;
    h->cb.mail = h_mail;
    h->cb.rcpt = h_rcpt;
    h->cb.body = h_body;
    h->cb.commit = h_commit;
    h->cb.abort = h_abort;
    h->cb.auth = h_auth;
    h->conf.auth_offer = true;
    snprintf(h->peer.addr, sizeof(h->peer.addr), "192.0.2.1");
    snprintf(h->peer.id, sizeof(h->peer.id), "S1");
    h->auto_commit = true;
    h->commit_reply = R_QUEUED;
}

/*
 * Feed input in pieces of `step` bytes (0 = all at once), answering commits
 * at once; collect all output.  Returns the final status.
 */
static enum smtp_status
h_run(struct harness *h, const char *in, size_t len, size_t step, char *out, size_t outcap)
{
    enum smtp_status st = SMTP_OK;
    size_t off = 0, outlen = 0;
    struct buf *b;

    h->s = smtp_session_new(&h->conf, &h->cb, h, &h->peer);
    assert_non_null(h->s);
    smtp_session_greet(h->s);
    while (off < len && st != SMTP_CLOSE && st != SMTP_STARTTLS) {
        size_t n = step ? (len - off < step ? len - off : step) : len - off;
        size_t used = smtp_session_input(h->s, in + off, n, 1700000000, &st);
        off += used;
        if (st == SMTP_SUSPEND) {
            assert_true(h->auto_commit);
            st = smtp_session_commit_done(h->s, h->commit_reply);
        }
        b = smtp_session_output(h->s);
        assert_true(outlen + b->len < outcap);
        memcpy(out + outlen, b->data, b->len);
        outlen += b->len;
        buf_reset(b);
        if (used == 0 && st == SMTP_OK && n > 0 && b->len == 0 && off < len)
            continue;
    }
    b = smtp_session_output(h->s);
    memcpy(out + outlen, b->data, b->len);
    outlen += b->len;
    buf_reset(b);
    out[outlen] = '\0';
    return st;
}

/*
 * Reduce output to its final reply lines' "CODE ESC" (or "CODE" when no
 * enhanced code), '|'-separated, so expectations read like a transcript.
 */
static void
h_codes(const char *out, char *codes, size_t cap)
{
    const char *p = out;
    size_t n = 0;

    codes[0] = '\0';
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        assert_non_null(eol);
        if (eol - p >= 4 && p[3] == ' ') {
            char one[32];
            int k;
            if (eol - p >= 9 && p[4] >= '2' && p[4] <= '5' && p[5] == '.')
                k = snprintf(one, sizeof(one), "%.3s %.*s", p,
                    (int)(strcspn(p + 4, " \r")), p + 4);
            else
                k = snprintf(one, sizeof(one), "%.3s", p);
            n += (size_t)snprintf(codes + n, cap - n, "%s%.*s", n ? "|" : "", k, one);
        }
        p = eol + 2;
    }
}

/* Run a transcript whole and byte by byte; both must give `expect`. */
static void
expect_codes(struct harness *h0, const char *in, size_t len, const char *expect)
{
    static char out[262144], codes[4096], out1[262144];
    static struct harness whole; /* large (a body buffer): not on the stack */
    struct harness h;

    h = *h0;
    h_run(&h, in, len, 0, out, sizeof(out));
    h_codes(out, codes, sizeof(codes));
    if (strcmp(codes, expect) != 0)
        fail_msg("whole: got %s\nexpected %s\noutput:\n%s", codes, expect, out);
    smtp_session_free(h.s);
    whole = h;

    h = *h0;
    h_run(&h, in, len, 1, out1, sizeof(out1));
    if (strcmp(out, out1) != 0)
        fail_msg("byte by byte differs:\n%s\n---\n%s", out, out1);
    smtp_session_free(h.s);
    /* the callbacks' counts of the whole run, for the caller to check */
    h0->mails = whole.mails;
    h0->rcpts = whole.rcpts;
    h0->commits = whole.commits;
    h0->aborts = whole.aborts;
    h0->auths = whole.auths;
}

#define T(h, in, expect) expect_codes(h, in, sizeof(in) - 1, expect)

static void
test_basic_flow(void **state)
{
    struct harness h;
    static char out[8192];

    h_init(&h);
    T(&h, "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.org>\r\n"
          "DATA\r\nSubject: x\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
        "220|250|250 2.1.0|250 2.1.5|354|250 2.0.0|221 2.0.0");
    assert_int_equal(h.commits, 1);
    h_init(&h);
    {
        static const char in[] = "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n"
                                 "hi\r\n..x\r\n.\r\n";
        h_run(&h, in, sizeof(in) - 1, 0, out, sizeof(out));
    }
    assert_int_equal(h.commits, 1);
    assert_non_null(strstr(out, "250 2.0.0 Ok: queued as QID1\r\n"));
    assert_non_null(strstr(h.body, "Received: from c ([192.0.2.1])\r\n\tby mx.test (tern) with SMTP id QID1\r\n\tfor <u@example.org>;"));
    assert_non_null(strstr(h.body, "\r\nhi\r\n.x\r\n"));
    assert_null(strstr(h.body, "..x"));
    smtp_session_free(h.s);
}

static void
test_greeting_and_ehlo(void **state)
{
    struct harness h;
    static char out[8192];

    h_init(&h);
    h_run(&h, "EHLO c.example\r\n", 16, 0, out, sizeof(out));
    assert_string_equal(out, "220 mx.test ESMTP tern\r\n"
                             "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 4096\r\n250-8BITMIME\r\n"
                             "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 DSN\r\n");
    smtp_session_free(h.s);
}

static void
test_sequence_errors(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "MAIL FROM:<a@b.example>\r\n", "220|503 5.5.1");
    T(&h, "HELO c\r\nRCPT TO:<u@example.org>\r\n", "220|250|503 5.5.1");
    T(&h, "HELO c\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n",
        "220|250|250 2.1.0|503 5.5.1");
    T(&h, "HELO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n", "220|250|250 2.1.0|503 5.5.1");
    T(&h, "HELO c\r\nDATA\r\n", "220|250|503 5.5.1");
    T(&h, "DATA\r\n", "220|503 5.5.1");
}

static void
test_command_errors(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "FOO\r\n", "220|500 5.5.2");
    T(&h, "DATAX\r\n", "220|500 5.5.2");
    T(&h, "EXPN list\r\n", "220|502 5.5.1");
    T(&h, "HELO c\r\nDATA x\r\n", "220|250|501 5.5.4");
    T(&h, "RSET x\r\n", "220|501 5.5.4");
    T(&h, "QUIT x\r\n", "220|501 5.5.4");
    T(&h, "HELO\r\n", "220|501 5.5.4");
    T(&h, "EHLO\r\n", "220|501 5.5.4");
    T(&h, "EHLO bad..name\r\n", "220|501 5.5.4");
    T(&h, "NOOP\r\nNOOP hello\r\nRSET\r\nVRFY x\r\nVRFY\r\nHELP\r\n",
        "220|250 2.0.0|250 2.0.0|250 2.0.0|252 2.5.0|501 5.5.4|214 2.0.0");
    T(&h, "NO\0OP\r\n", "220|500 5.5.2");
    T(&h, "NOOP a\0b\r\n", "220|501 5.5.4");
}

static void
test_501_family(void **state)
{
    struct harness h;

    h_init(&h);
#define M(cmd, code) T(&h, "EHLO c\r\n" cmd "\r\n", "220|250|" code)
    M("MAIL FROM:user@example.org", "501 5.1.7");
    M("MAIL FROM:<user@example.org", "501 5.1.7");
    M("MAIL FROM:<us er@example.org>", "501 5.1.7");
    M("MAIL FROM:<a..b@example.org>", "501 5.1.7");
    M("MAIL FROM:<a@b..org>", "501 5.1.7");
    M("MAIL FROM:<a\0@b.org>", "501 5.1.7");
    M("MAIL FROM <a@b.org>", "501 5.5.4");
    M("MAIL FROM :<a@b.org>", "501 5.5.4");
    M("MAIL <a@b.org>", "501 5.5.4");
    M("MAIL", "501 5.5.4");
    M("MAIL FROM:<a@b.org> SIZE=abc", "501 5.5.4");
    M("MAIL FROM:<a@b.org> BODY=9BIT", "501 5.5.4");
    M("MAIL FROM:<a@b.org> FOO=bar", "555 5.5.4");
    M("MAIL FROM:<a@b.org> SIZE=4097", "552 5.3.4");
    M("MAIL FROM:<a@b.org> SIZE=4096", "250 2.1.0");
    M("MAIL FROM:<j\xc3\xb6rg@example.org>", "553 5.6.7");
    M("MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", "250 2.1.0");
    M("MAIL FROM: <a@b.org>", "250 2.1.0");
    M("MAIL FROM:<>", "250 2.1.0");
    M("mail from:<a@[192.0.2.1]> body=8bitmime", "250 2.1.0");
#undef M
#define R(cmd, code) T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\n" cmd "\r\n", "220|250|250 2.1.0|" code)
    R("RCPT TO:<bad address@example.org>", "501 5.1.3");
    R("RCPT TO:<>", "501 5.1.3");
    R("RCPT TO:u@example.org", "501 5.1.3");
    R("RCPT TO <u@example.org>", "501 5.5.4");
    R("RCPT TO:<u@example.org> NOTIFY=NEVER", "250 2.1.5");
    R("RCPT TO:<u@example.org> NOTIFY=NEVER,SUCCESS", "501 5.5.4");
    R("RCPT TO:<u@example.org> FOO=1", "555 5.5.4");
    R("RCPT TO:<u@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40example.org", "250 2.1.5");
    R("RCPT TO:<j\xc3\xb6rg@example.org>", "553 5.6.7");
    R("RCPT TO:<postmaster>", "250 2.1.5");
    R("RCPT TO:<@x.org,@y.org:u@example.org>", "250 2.1.5");
    R("RCPT TO:<\"john doe\"@example.org>", "250 2.1.5");
#undef R
}

static void
test_recipient_limit_and_relay(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
          "RCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\n",
        "220|250|250 2.1.0|250 2.1.5|250 2.1.5|250 2.1.5|452 4.5.3");
    h.relay_denied_for_remote = true;
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<a@remote.example>\r\nDATA\r\n",
        "220|250|250 2.1.0|550 5.7.1|503 5.5.1");
}

static void
test_framing_commands(void **state)
{
    struct harness h;
    char big[700];

    h_init(&h);
    /* A bare LF never splits a command: one refusal for the whole thing. */
    T(&h, "NOOP\nNOOP\r\n", "220|500 5.5.2");
    T(&h, "NOOP\rNOOP\r\n", "220|500 5.5.2");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\nRCPT TO:<u@example.org>\r\nNOOP\r\n",
        "220|250|500 5.5.2|250 2.0.0");
    /* Over-long line: refused at its CRLF, then the session resynchronises. */
    memset(big, 'A', sizeof(big));
    memcpy(big, "NOOP ", 5);
    memcpy(big + sizeof(big) - 8, "\r\nNOOP\r\n", 8);
    expect_codes(&h, big, sizeof(big), "220|500 5.5.2|250 2.0.0");
    /* Exactly max_line_length (512) octets including CRLF is fine; 513 is not. */
    {
        char l[600];
        memset(l, 'x', sizeof(l));
        memcpy(l, "NOOP ", 5);
        memcpy(l + 510, "\r\n", 2);
        expect_codes(&h, l, 512, "220|250 2.0.0");
        memset(l, 'x', sizeof(l));
        memcpy(l, "NOOP ", 5);
        memcpy(l + 511, "\r\n", 2);
        expect_codes(&h, l, 513, "220|500 5.5.2");
    }
}

static void
test_http(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "220|421 4.7.0");
    T(&h, "EHLO c\r\nPOST /x HTTP/1.0\r\nNOOP\r\n", "220|250|421 4.7.0");
}

static void
test_smuggling(void **state)
{
    static const char *seqs[] = {"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r\n.\r", "\r.\r\n",
        "\n.\r", "\r\r\n.\r\r\n", "\r\n.\r\r\n"};
    struct harness h;
    size_t i;

    for (i = 0; i < sizeof(seqs) / sizeof(*seqs); i++) {
        char in[1024];
        int n = snprintf(in, sizeof(in),
            "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n"
            "Subject: s\r\n\r\nbody%sMAIL FROM:<evil@x.org>\r\nRCPT TO:<u@example.org>\r\n"
            "DATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
            seqs[i]);
        h_init(&h);
        expect_codes(&h, in, (size_t)n, "220|250|250 2.1.0|250 2.1.5|354|554 5.6.0|221 2.0.0");
        assert_int_equal(h.commits, 0);
    }
    /* NUL around the dot: not an end either; one message, accepted whole. */
    h_init(&h);
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n\0.\r\n"
          "MAIL FROM:<e@x.org>\r\n.\r\nQUIT\r\n",
        "220|250|250 2.1.0|250 2.1.5|354|250 2.0.0|221 2.0.0");
}

static void
test_message_size(void **state)
{
    static char in[12000];
    struct harness h;
    size_t n;

    h_init(&h);
    n = (size_t)snprintf(in, sizeof(in), "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n");
    while (n < 9000) {
        memcpy(in + n, "0123456789012345678901234567890123456789\r\n", 42);
        n += 42;
    }
    memcpy(in + n, ".\r\nNOOP\r\n", 9);
    n += 9;
    expect_codes(&h, in, n, "220|250|250 2.1.0|250 2.1.5|354|552 5.3.4|250 2.0.0");
    assert_int_equal(h.commits, 0);
}

static void
test_bdat(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nBDAT 10\r\n0123456789"
          "BDAT 4 LAST\r\nab\r\nQUIT\r\n",
        "220|250|250 2.1.0|250 2.1.5|250 2.0.0|250 2.0.0|221 2.0.0");
    T(&h, "EHLO c\r\nBDAT abc\r\n", "220|250|501 5.5.4");
    /* Refused chunks are still read: their bytes never become commands. */
    T(&h, "EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n", "220|250|503 5.5.1|250 2.0.0");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n",
        "220|250|250 2.1.0|503 5.5.1|250 2.0.0");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nBDAT 4\r\nab\r\nDATA\r\n",
        "220|250|250 2.1.0|250 2.1.5|250 2.0.0|503 5.5.1");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nBDAT 4 LAST\r\na\nb\r\n",
        "220|250|250 2.1.0|250 2.1.5|554 5.6.0");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nBDAT 0 LAST\r\n",
        "220|250|250 2.1.0|250 2.1.5|250 2.0.0");
}

static void
test_bdat_too_big(void **state)
{
    static char in[12000];
    struct harness h;
    size_t n;

    h_init(&h);
    n = (size_t)snprintf(in, sizeof(in),
        "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nBDAT 5000\r\n");
    memset(in + n, 'x', 5000);
    n += 5000;
    n += (size_t)snprintf(in + n, sizeof(in) - n, "BDAT 3 LAST\r\nabcNOOP\r\n");
    expect_codes(&h, in, n, "220|250|250 2.1.0|250 2.1.5|552 5.3.4|503 5.5.1|250 2.0.0");
}

static void
test_too_many_errors(void **state)
{
    struct harness h;

    h_init(&h);
    T(&h, "A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nNOOP\r\n",
        "220|500 5.5.2|500 5.5.2|500 5.5.2|500 5.5.2|500 5.5.2|500 5.5.2|421 4.7.0");
}

static void
test_commit_failure(void **state)
{
    struct harness h;

    h_init(&h);
    h.commit_reply = R_SPOOL_ERROR;
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n"
          "MAIL FROM:<a@b.org>\r\n",
        "220|250|250 2.1.0|250 2.1.5|354|451 4.3.0|250 2.1.0");
    h_init(&h);
    h.fail_body = true;
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n",
        "220|250|250 2.1.0|250 2.1.5|354|451 4.3.0");
}

static void
test_pipelining_suspend(void **state)
{
    struct harness h;
    static const char in[] = "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\n"
                             "DATA\r\nx\r\n.\r\nQUIT\r\n";
    enum smtp_status st;
    size_t used;
    struct buf *b;

    h_init(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_greet(h.s);
    used = smtp_session_input(h.s, in, sizeof(in) - 1, 0, &st);
    assert_int_equal(st, SMTP_SUSPEND);
    assert_int_equal(sizeof(in) - 1 - used, 6); /* QUIT kept by the caller */
    assert_int_equal(smtp_session_commit_done(h.s, R_QUEUED), SMTP_OK);
    used = smtp_session_input(h.s, in + used, 6, 0, &st);
    assert_int_equal(st, SMTP_CLOSE);
    b = smtp_session_output(h.s);
    assert_non_null(strstr(b->data, "250 2.0.0 Ok: queued as QID1\r\n221 2.0.0"));
    smtp_session_free(h.s);
}

/* The session's output so far as a string (the buffer is not NUL-terminated). */
static const char *
h_out(struct harness *h)
{
    static char out[8192];
    struct buf *b = smtp_session_output(h->s);
    size_t n = b->len < sizeof(out) - 1 ? b->len : sizeof(out) - 1;

    memcpy(out, b->data, n);
    out[n] = '\0';
    return out;
}

/* Feed the rest of in[] from *off; return the status. */
static enum smtp_status
h_feed(struct harness *h, const char *in, size_t len, size_t *off)
{
    enum smtp_status st;

    *off += smtp_session_input(h->s, in + *off, len - *off, 0, &st);
    return st;
}

/*
 * Verdicts that come later (greylisting, rate limits): pipelined commands
 * wait, are answered in order, and each verdict lands on its own command.
 */
static void
test_pending_verdicts(void **state)
{
    struct harness h;
    static const char in[] = "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\n"
                             "RCPT TO:<v@example.org>\r\nRCPT TO:<w@example.org>\r\n"
                             "DATA\r\nx\r\n.\r\nQUIT\r\n";
    size_t off = 0;

    h_init(&h);
    h.pending = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_greet(h.s);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_true(smtp_session_waiting(h.s));
    assert_int_equal(h.mails, 1);
    assert_int_equal(h.rcpts, 0);                     /* nothing past MAIL was read */
    assert_null(strstr(h_out(&h), "250 2.1.0"));
    /* The txn id is the caller's to set before a positive verdict. */
    assert_int_equal(smtp_session_verdict(h.s, R_MAIL_OK), SMTP_OK);
    assert_false(smtp_session_waiting(h.s));
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(h.rcpts, 1);
    assert_int_equal(smtp_session_verdict(h.s, R_RCPT_OK), SMTP_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_RELAY_DENIED), SMTP_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_RCPT_OK), SMTP_OK);
    /* DATA, then the commit */
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_false(smtp_session_waiting(h.s));
    assert_int_equal(h.commits, 1);
    assert_int_equal(smtp_session_commit_done(h.s, R_QUEUED), SMTP_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_CLOSE);
    assert_int_equal(off, sizeof(in) - 1);
    assert_non_null(strstr(h_out(&h), "\r\n250 2.1.0 Sender <a@b.org> ok\r\n"
                                     "250 2.1.5 Recipient <u@example.org> ok\r\n"
                                     "550 5.7.1 "));
    assert_non_null(strstr(h_out(&h), "\r\n250 2.1.5 Recipient <w@example.org> ok\r\n354 "));
    assert_non_null(strstr(h_out(&h), "\r\n250 2.0.0 Ok: queued as QID1\r\n221 "));
    smtp_session_free(h.s);
    assert_int_equal(h.aborts, 0);
}

/* A refused MAIL verdict leaves no transaction; a session freed while waiting aborts. */
static void
test_pending_refusals(void **state)
{
    struct harness h;
    static const char in[] = "HELO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\n";
    size_t off = 0;

    h_init(&h);
    h.pending = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_LOCAL_ERROR), SMTP_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_OK);
    assert_non_null(strstr(h_out(&h), "\r\n451 4.3.0 "));
    assert_non_null(strstr(h_out(&h), "\r\n503 5.5.1 "));
    assert_int_equal(h.rcpts, 0);
    /* a verdict nobody waits for changes nothing */
    assert_int_equal(smtp_session_verdict(h.s, R_MAIL_OK), SMTP_OK);
    smtp_session_free(h.s);
    assert_int_equal(h.aborts, 0);

    off = 0;
    h_init(&h);
    h.pending = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    h_feed(&h, in, sizeof(in) - 1, &off);
    smtp_session_verdict(h.s, R_MAIL_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_shutdown(h.s), SMTP_CLOSE); /* 421 now, no verdict owed */
    assert_non_null(strstr(h_out(&h), "\r\n421 4.3.2 "));
    assert_int_equal(h.aborts, 1);
    smtp_session_free(h.s);
    assert_int_equal(h.aborts, 1);
}


/* ---- AUTH (RFC 4954) ------------------------------------------------------ */

/* base64 of "\0alice\0secret", "\0alice\0wrong", "alice", "secret" */
#define PLAIN_OK "AGFsaWNlAHNlY3JldA=="
#define PLAIN_BAD "AGFsaWNlAHdyb25n"
#define B64_ALICE "YWxpY2U="
#define B64_SECRET "c2VjcmV0"

static void
h_init_tls(struct harness *h)
{
    h_init(h);
    h->peer.tls = true;
}

/* Run in[] whole; return the full output (for texts the codes do not show). */
static const char *
h_whole(struct harness *h0, const char *in)
{
    static char out[65536];
    struct harness h = *h0;

    h_run(&h, in, strlen(in), 0, out, sizeof(out));
    smtp_session_free(h.s);
    return out;
}

static void
test_auth_offer(void **state)
{
    struct harness h;

    /* plain text: not advertised, and refused with 538 */
    h_init(&h);
    assert_null(strstr(h_whole(&h, "EHLO c\r\nQUIT\r\n"), "AUTH"));
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n", "220|250|538 5.7.11|221 2.0.0");
    T(&h, "EHLO c\r\nAUTH FOO\r\nQUIT\r\n", "220|250|538 5.7.11|221 2.0.0");
    /* under TLS: advertised */
    h_init_tls(&h);
    assert_non_null(strstr(h_whole(&h, "EHLO c\r\nQUIT\r\n"), "AUTH PLAIN LOGIN\r\n"));
    /* no credentials configured: as before, 502, even under TLS */
    h.conf.auth_offer = false;
    assert_null(strstr(h_whole(&h, "EHLO c\r\nQUIT\r\n"), "AUTH"));
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n", "220|250|502 5.5.1|221 2.0.0");
    h.conf.auth_offer = true;
    h.cb.auth = NULL;
    T(&h, "EHLO c\r\nAUTH PLAIN\r\nQUIT\r\n", "220|250|502 5.5.1|221 2.0.0");
}

static void
test_auth_plain_login(void **state)
{
    struct harness h;

    h_init_tls(&h);
    /* PLAIN with an initial response, then a second AUTH */
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nAUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n",
        "220|250|235 2.7.0|503 5.5.1|221 2.0.0");
    /* PLAIN, empty challenge, then the response; mechanism names are case-insensitive */
    assert_non_null(strstr(h_whole(&h, "EHLO c\r\nauth plain\r\n" PLAIN_OK "\r\nQUIT\r\n"),
        "\r\n334 \r\n235 2.7.0 "));
    /* LOGIN: user name, then password */
    assert_non_null(strstr(h_whole(&h, "EHLO c\r\nAUTH LOGIN\r\n" B64_ALICE "\r\n" B64_SECRET
                                       "\r\nQUIT\r\n"),
        "\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 "));
    /* LOGIN with the user name as initial response */
    T(&h, "EHLO c\r\nAUTH LOGIN " B64_ALICE "\r\n" B64_SECRET "\r\nQUIT\r\n",
        "220|250|334|235 2.7.0|221 2.0.0");
    /* the caller got exactly the user and the password */
    h_whole(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\n");
    /* (h_whole works on a copy: check through a direct run) */
    {
        struct harness h2 = h;
        char out[4096];
        static const char in[] = "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\n";
        h_run(&h2, in, sizeof(in) - 1, 0, out, sizeof(out));
        assert_string_equal(h2.auth_user, "alice");
        assert_string_equal(h2.auth_pass, "secret");
        assert_string_equal(smtp_session_auth_user(h2.s), "alice");
        smtp_session_free(h2.s);
    }
    /* authzid equal to the user is fine; another one is not */
    T(&h, "EHLO c\r\nAUTH PLAIN YWxpY2UAYWxpY2UAc2VjcmV0\r\nQUIT\r\n",
        "220|250|235 2.7.0|221 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\nQUIT\r\n",
        "220|250|535 5.7.8|221 2.0.0");
}

static void
test_auth_failures(void **state)
{
    struct harness h;

    h_init_tls(&h);
    /* wrong password; the session stays unauthenticated and may try again */
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_BAD "\r\nAUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n",
        "220|250|535 5.7.8|235 2.7.0|221 2.0.0");
    T(&h, "EHLO c\r\nAUTH LOGIN\r\n" B64_ALICE "\r\nd3Jvbmc=\r\nQUIT\r\n",
        "220|250|334|334|535 5.7.8|221 2.0.0");
    /* "*" cancels, at either step */
    T(&h, "EHLO c\r\nAUTH PLAIN\r\n*\r\nNOOP\r\n", "220|250|334|501 5.0.0|250 2.0.0");
    T(&h, "EHLO c\r\nAUTH LOGIN\r\n" B64_ALICE "\r\n*\r\nNOOP\r\n",
        "220|250|334|334|501 5.0.0|250 2.0.0");
    /* bad base64: initial response, response line, padding, "=" after a 334 */
    T(&h, "EHLO c\r\nAUTH PLAIN AGFsaWNl!!!\r\nNOOP\r\n", "220|250|501 5.5.2|250 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA=\r\nNOOP\r\n",
        "220|250|334|501 5.5.2|250 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN YWxpY2U\r\nNOOP\r\n", "220|250|501 5.5.2|250 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN\r\n=\r\nNOOP\r\n", "220|250|334|501 5.5.2|250 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK " x\r\nNOOP\r\n", "220|250|501 5.5.2|250 2.0.0");
    /* "=" is an empty initial response: not a PLAIN message */
    T(&h, "EHLO c\r\nAUTH PLAIN =\r\nNOOP\r\n", "220|250|535 5.7.8|250 2.0.0");
    /* not a PLAIN message (one NUL), a control in the user name: refused unchecked */
    h.auths = 0;
    T(&h, "EHLO c\r\nAUTH PLAIN AGFsaWNl\r\nAUTH PLAIN AGFsAWNlAHNlY3JldA==\r\nQUIT\r\n",
        "220|250|535 5.7.8|535 5.7.8|221 2.0.0");
    assert_int_equal(h.auths, 0);
    /* the user name's bound: 255 octets are checked, 256 refused unchecked */
    for (size_t ulen = 255; ulen <= 256; ulen++) {
        unsigned char plain[300];
        char in[600];
        int n;

        plain[0] = '\0';
        memset(plain + 1, 'u', ulen);
        memcpy(plain + 1 + ulen, "\0pw", 3);
        n = snprintf(in, sizeof(in), "EHLO c\r\nAUTH PLAIN ");
        base64_encode(plain, ulen + 4, in + n);
        strcat(in, "\r\nQUIT\r\n");
        h.auths = 0;
        expect_codes(&h, in, strlen(in), "220|250|535 5.7.8|221 2.0.0");
        assert_int_equal(h.auths, ulen == 255 ? 1 : 0);
    }
    /* unknown mechanism, no mechanism */
    T(&h, "EHLO c\r\nAUTH CRAM-MD5\r\nAUTH\r\nNOOP\r\n", "220|250|504 5.5.4|501 5.5.4|250 2.0.0");
    /* sequence: before EHLO, in a transaction */
    T(&h, "AUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n", "220|503 5.5.1|221 2.0.0");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nAUTH PLAIN " PLAIN_OK "\r\nRSET\r\n"
          "AUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n",
        "220|250|250 2.1.0|503 5.5.1|250 2.0.0|235 2.7.0|221 2.0.0");
    /* over the failure limit: 421 and close, nothing more is read */
    T(&h, "EHLO c\r\nAUTH PLAIN AGJsb2NrZWQAcHc=\r\nNOOP\r\n", "220|250|421 4.7.0");
    /* an over-long response line ends the exchange with 500; the next line is a command */
    {
        static char in[2048];
        int n = snprintf(in, sizeof(in), "EHLO c\r\nAUTH PLAIN\r\n");
        memset(in + n, 'A', 600);
        snprintf(in + n + 600, sizeof(in) - (size_t)n - 600, "\r\nNOOP\r\n");
        expect_codes(&h, in, strlen(in), "220|250|334|500 5.5.2|250 2.0.0");
    }
    /* a bare LF inside a response line ends the exchange too */
    T(&h, "EHLO c\r\nAUTH PLAIN\r\nAGFs\naWNl\r\nNOOP\r\n", "220|250|334|500 5.5.2|250 2.0.0");
}

/* Submission: AUTH before MAIL; the sender check is the caller's (mail callback). */
static void
test_auth_submission(void **state)
{
    struct harness h;
    const char *out;

    h_init_tls(&h);
    h.conf.submission = true;
    T(&h, "EHLO c\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<u@example.org>\r\nQUIT\r\n",
        "220|250|530 5.7.0|503 5.5.1|221 2.0.0");
    T(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nMAIL FROM:<alice@example.org>\r\nQUIT\r\n",
        "220|250|235 2.7.0|250 2.1.0|221 2.0.0");
    /* the mail callback refuses a sender the user does not own: the reply names it */
    h.mail_reply = R_SENDER_NOT_OWNED;
    out = h_whole(&h, "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nMAIL FROM:<bob@example.org>\r\n");
    assert_non_null(strstr(out, "\r\n553 5.7.1 <bob@example.org>: Sender address not owned"));
    /* not a submission listener: MAIL without AUTH is fine */
    h_init_tls(&h);
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nQUIT\r\n", "220|250|250 2.1.0|221 2.0.0");
    /* plain text submission: still 530 (and AUTH would be 538) */
    h_init(&h);
    h.conf.submission = true;
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org>\r\nAUTH PLAIN " PLAIN_OK "\r\nQUIT\r\n",
        "220|250|530 5.7.0|538 5.7.11|221 2.0.0");
    /* MAIL's AUTH= parameter is accepted */
    h_init_tls(&h);
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.org> AUTH=<>\r\nRSET\r\nMAIL FROM:<a@b.org> AUTH=a+2Bb\r\n"
          "RSET\r\nMAIL FROM:<a@b.org> AUTH=a+b\r\nQUIT\r\n",
        "220|250|250 2.1.0|250 2.0.0|250 2.1.0|250 2.0.0|501 5.5.4|221 2.0.0");
}

/* The Received header says ESMTPSA (RFC 3848) after AUTH, and does not name the user. */
static void
test_auth_received(void **state)
{
    struct harness h;
    char out[8192];
    static const char in[] = "EHLO c\r\nAUTH PLAIN " PLAIN_OK "\r\nMAIL FROM:<a@b.org>\r\n"
                             "RCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n";

    h_init_tls(&h);
    h_run(&h, in, sizeof(in) - 1, 0, out, sizeof(out));
    h.body[h.bodylen] = '\0';
    assert_non_null(strstr(h.body, " with ESMTPSA"));
    assert_non_null(strstr(h.body, " id QID1"));
    assert_null(strstr(h.body, "alice"));
    smtp_session_free(h.s);
}

/* A pending verdict: pipelined input waits, then is read in order. */
static void
test_auth_pending(void **state)
{
    struct harness h;
    /* base64 of "\0slow\0pw" */
    static const char in[] = "EHLO c\r\nAUTH PLAIN AHNsb3cAcHc=\r\nMAIL FROM:<slow@b.org>\r\n"
                             "QUIT\r\n";
    size_t off = 0;

    h_init_tls(&h);
    h.conf.submission = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_greet(h.s);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_true(smtp_session_waiting(h.s));
    assert_int_equal(h.mails, 0);
    assert_null(smtp_session_auth_user(h.s));
    assert_int_equal(smtp_session_verdict(h.s, R_AUTH_OK), SMTP_OK);
    assert_string_equal(smtp_session_auth_user(h.s), "slow");
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_CLOSE);
    assert_int_equal(h.mails, 1);
    assert_non_null(strstr(h_out(&h), "\r\n235 2.7.0 Authentication successful\r\n"
                                      "250 2.1.0 Sender <slow@b.org> ok\r\n221 "));
    smtp_session_free(h.s);

    /* a failed verdict: 535, and MAIL then gets 530 */
    off = 0;
    h_init_tls(&h);
    h.conf.submission = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_AUTH_FAILED), SMTP_OK);
    assert_null(smtp_session_auth_user(h.s));
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_CLOSE);
    assert_non_null(strstr(h_out(&h), "\r\n535 5.7.8 Authentication credentials invalid\r\n"
                                      "530 5.7.0 Authentication required\r\n221 "));
    smtp_session_free(h.s);

    /* the failure that reaches the limit: 535 from the verdict, then the caller drops */
    off = 0;
    h_init_tls(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_AUTH_FAILED), SMTP_OK);
    assert_int_equal(smtp_session_drop(h.s, R_AUTH_TOO_MANY), SMTP_CLOSE);
    assert_true(smtp_session_closed(h.s));
    assert_non_null(strstr(h_out(&h), "\r\n535 5.7.8 Authentication credentials invalid\r\n"
                                      "421 4.7.0 mx.test Too many failed"));
    smtp_session_free(h.s);

    /* shut down while the verdict is pending: 421 now, a late verdict changes nothing */
    off = 0;
    h_init_tls(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_shutdown(h.s), SMTP_CLOSE);
    assert_int_equal(smtp_session_verdict(h.s, R_AUTH_OK), SMTP_CLOSE);
    assert_null(smtp_session_auth_user(h.s));
    smtp_session_free(h.s);
}

/* A refusal with arguments of its own (greylisting's delay, a rate limit's numbers). */
static void
test_pending_verdict_args(void **state)
{
    struct harness h;
    static const char in[] = "HELO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.org>\r\n"
                             "RCPT TO:<v@example.org>\r\n";
    const char *grey[4] = {"u@example.org", "300", NULL, NULL};
    const char *rate[4] = {"5", "60", "42", NULL};
    size_t off = 0;

    h_init(&h);
    h.pending = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict_args(h.s, R_RATE_MESSAGES, rate), SMTP_OK);
    assert_non_null(strstr(h_out(&h), "\r\n450 4.7.1 Too many messages from your address: "
                                      "over 5 per 60 seconds (rate_messages); try again in 42 "
                                      "seconds\r\n"));
    smtp_session_free(h.s);

    off = 0;
    h_init(&h);
    h.pending = true;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    h_feed(&h, in, sizeof(in) - 1, &off);
    assert_int_equal(smtp_session_verdict_args(h.s, R_MAIL_OK, grey), SMTP_OK); /* args unused */
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict_args(h.s, R_GREYLISTED, grey), SMTP_OK);
    assert_int_equal(h_feed(&h, in, sizeof(in) - 1, &off), SMTP_SUSPEND);
    assert_int_equal(smtp_session_verdict(h.s, R_RCPT_OK), SMTP_OK);
    assert_non_null(strstr(h_out(&h), "\r\n250 2.1.0 Sender <a@b.org> ok\r\n"
                                      "451 4.7.1 <u@example.org>: Greylisted: "));
    assert_non_null(strstr(h_out(&h), "try again in 300 seconds\r\n"
                                      "250 2.1.5 Recipient <v@example.org> ok\r\n"));
    assert_int_equal(smtp_session_errors(h.s), 0); /* greylisting is not the client's error */
    smtp_session_free(h.s);

    /* More greylisted recipients than max_errors: no 421, every one answered. */
    off = 0;
    h_init(&h);
    h.pending = true;
    h.conf.max_recipients = 50;
    h.conf.max_errors = 2;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    h_feed(&h, in, sizeof(in) - 1, &off); /* HELO, MAIL */
    assert_int_equal(smtp_session_verdict(h.s, R_MAIL_OK), SMTP_OK);
    for (int i = 0; i < 6; i++) {
        static const char rcpt[] = "RCPT TO:<u@example.org>\r\n";
        size_t roff = 0;
        assert_int_equal(h_feed(&h, rcpt, sizeof(rcpt) - 1, &roff), SMTP_SUSPEND);
        assert_int_equal(smtp_session_verdict_args(h.s, i % 2 ? R_POLICY_UNAVAILABLE :
            R_GREYLISTED, grey), SMTP_OK);
    }
    assert_false(smtp_session_closed(h.s));
    assert_null(strstr(h_out(&h), "421 "));
    assert_int_equal(smtp_session_errors(h.s), 0);
    smtp_session_free(h.s);
}

/* The longest names there can be still make a whole Received header, naming the recipient. */
static void
test_received_longest(void **state)
{
    struct harness h;
    char helo[256], host[254], local[65], dom[190], in[4096];
    const char *end;
    size_t off = 0;

    for (int i = 0; i < 255; i++)
        helo[i] = i % 60 == 59 ? '.' : 'h';
    helo[255] = '\0';
    for (int i = 0; i < 253; i++)
        host[i] = i % 60 == 59 ? '.' : 'm';
    host[253] = '\0';
    memset(local, 'l', 64);
    local[64] = '\0';
    for (int i = 0; i < 189; i++)
        dom[i] = i % 60 == 59 ? '.' : 'd';
    dom[189] = '\0';
    h_init(&h);
    h.conf.hostname = host;
    h.conf.tls_offer = true;
    h.conf.max_message_size = 65536;
    snprintf(h.peer.addr, sizeof(h.peer.addr), "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_greet(h.s);
    snprintf(in, sizeof(in), "STARTTLS\r\n");
    assert_int_equal(h_feed(&h, in, strlen(in), &off), SMTP_STARTTLS);
    smtp_session_tls_started(h.s, "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256");
    snprintf(in, sizeof(in), "EHLO %s\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<%s@%s>\r\nDATA\r\n"
        "x\r\n.\r\n", helo, local, dom);
    off = 0;
    assert_int_equal(h_feed(&h, in, strlen(in), &off), SMTP_SUSPEND);
    h.body[h.bodylen] = '\0';
    assert_true(strncmp(h.body, "Received: from hhh", 18) == 0);
    end = strstr(h.body, "\r\nx\r\n");
    assert_non_null(end);
    assert_non_null(strstr(h.body, local));
    assert_non_null(strstr(h.body, "cipher=TLS_CHACHA20_POLY1305_SHA256"));
    /* the header (about 960 octets here: every name at its longest) is whole */
    assert_true(end - h.body > 900);
    assert_non_null(strstr(h.body, "\r\n\tfor <llll"));
    assert_non_null(strstr(h.body, "with UTF8SMTPS"));
    smtp_session_free(h.s);
}

static void
test_shutdown_and_timeout(void **state)
{
    struct harness h;
    enum smtp_status st;
    struct buf *b;

    h_init(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_greet(h.s);
    assert_int_equal(smtp_session_shutdown(h.s), SMTP_CLOSE);
    b = smtp_session_output(h.s);
    assert_non_null(strstr(b->data, "\r\n421 4.3.2 mx.test"));
    smtp_session_free(h.s);

    /* In DATA: the message may finish, then 250 and 421. */
    h_init(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_input(h.s, "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nab", 55,
        0, &st);
    assert_true(smtp_session_in_data(h.s));
    assert_int_equal(smtp_session_shutdown(h.s), SMTP_OK);
    smtp_session_input(h.s, "\r\n.\r\n", 5, 0, &st);
    assert_int_equal(st, SMTP_SUSPEND);
    assert_int_equal(smtp_session_commit_done(h.s, R_QUEUED), SMTP_CLOSE);
    b = smtp_session_output(h.s);
    assert_non_null(strstr(b->data, "250 2.0.0 Ok: queued as QID1\r\n421 4.3.2 "));
    smtp_session_free(h.s);

    h_init(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    assert_int_equal(smtp_session_timeout(h.s), SMTP_CLOSE);
    assert_non_null(strstr(smtp_session_output(h.s)->data, "421 4.4.2 "));
    smtp_session_free(h.s);

    h_init(&h);
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    smtp_session_input(h.s, "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nab", 55,
        0, &st);
    assert_int_equal(smtp_session_timeout(h.s), SMTP_CLOSE);
    assert_non_null(strstr(smtp_session_output(h.s)->data, "421 4.4.2 mx.test Timeout: no message data"));
    assert_int_equal(h.aborts, 1);
    smtp_session_free(h.s);
}

static void
test_output_backpressure(void **state)
{
    /* 10,000 pipelined NOOPs: the session stops taking input while output waits. */
    static char in[60000];
    struct harness h;
    enum smtp_status st;
    size_t off = 0, used, replies = 0, i;
    struct buf *b;

    for (i = 0; i < 10000; i++)
        memcpy(in + i * 6, "NOOP\r\n", 6);
    h_init(&h);
    h.conf.max_errors = 100000;
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    while (off < sizeof(in)) {
        used = smtp_session_input(h.s, in + off, sizeof(in) - off, 0, &st);
        b = smtp_session_output(h.s);
        assert_true(b->len <= 9000);
        for (i = 0; i + 3 < b->len; i++)
            if (memcmp(b->data + i, "250 ", 4) == 0)
                replies++;
        buf_reset(b);
        off += used;
    }
    assert_int_equal(replies, 10000);
    smtp_session_free(h.s);
}

/* Feed all of `in`; return the bytes consumed and the status; output appended to out. */
static size_t
tls_feed(struct smtp_session *s, const char *in, size_t len, size_t step, enum smtp_status *st,
    char *out, size_t cap)
{
    size_t off = 0, olen = strlen(out);
    struct buf *b;

    *st = SMTP_OK;
    while (off < len && *st == SMTP_OK) {
        size_t n = step ? (len - off < step ? len - off : step) : len - off;
        off += smtp_session_input(s, in + off, n, 1700000000, st);
        b = smtp_session_output(s);
        assert_true(olen + b->len < cap);
        memcpy(out + olen, b->data, b->len);
        olen += b->len;
        out[olen] = '\0';
        buf_reset(b);
    }
    return off;
}

static void
test_starttls_refusals(void **state)
{
    struct harness h;
    static char out[8192];

    h_init(&h);
    /* not offered: not listed, 502 */
    h_run(&h, "EHLO c\r\n", 8, 0, out, sizeof(out));
    assert_null(strstr(out, "STARTTLS"));
    smtp_session_free(h.s);
    T(&h, "STARTTLS\r\n", "220|502 5.5.1");
    h.conf.tls_offer = true;
    h_run(&h, "EHLO c\r\n", 8, 0, out, sizeof(out));
    assert_non_null(strstr(out, "\r\n250 STARTTLS\r\n"));
    smtp_session_free(h.s);
    T(&h, "STARTTLS now\r\n", "220|501 5.5.4");
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nRSET\r\n",
        "220|250|250 2.1.0|503 5.5.1|250 2.0.0");
    /* already under TLS (implicit TLS listener, or after STARTTLS) */
    h.peer.tls = true;
    h_run(&h, "EHLO c\r\n", 8, 0, out, sizeof(out));
    assert_null(strstr(out, "STARTTLS"));
    smtp_session_free(h.s);
    T(&h, "EHLO c\r\nSTARTTLS\r\n", "220|250|554 5.5.1");
}

/*
 * STARTTLS ends the input the session takes: what follows in the same read
 * (CVE-2011-0411) is not consumed and never answered; after the handshake
 * the session starts over, knows TLS, and the Received header says which.
 */
static void
test_starttls_injection(void **state)
{
    static const char in[] = "EHLO c\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.example>\r\n";
    static char out[8192], codes[256];
    size_t steps[] = {0, 1}, i, used;
    struct harness h;
    enum smtp_status st;

    for (i = 0; i < 2; i++) {
        h_init(&h);
        h.conf.tls_offer = true;
        h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
        out[0] = '\0';
        smtp_session_greet(h.s);
        used = tls_feed(h.s, in, sizeof(in) - 1, steps[i], &st, out, sizeof(out));
        assert_int_equal(st, SMTP_STARTTLS);
        assert_int_equal(used, strlen("EHLO c\r\nSTARTTLS\r\n"));
        h_codes(out, codes, sizeof(codes));
        assert_string_equal(codes, "220|250|220 2.0.0");
        assert_non_null(strstr(out, "220 2.0.0 Ready to start TLS\r\n"));
        /* more input before the handshake is refused, not read */
        assert_int_equal(smtp_session_input(h.s, "RSET\r\n", 6, 1700000000, &st), 0);
        assert_int_equal(st, SMTP_STARTTLS);
        assert_int_equal(smtp_session_output(h.s)->len, 0);

        assert_int_equal(smtp_session_tls_started(h.s, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
            SMTP_OK);
        assert_int_equal(smtp_session_output(h.s)->len, 0);
        out[0] = '\0';
        tls_feed(h.s,
            "MAIL FROM:<a@b.example>\r\nEHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.example>\r\n"
            "RCPT TO:<u@example.org>\r\nDATA\r\nhi\r\n.\r\n",
            strlen("MAIL FROM:<a@b.example>\r\nEHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.example>\r\n"
                   "RCPT TO:<u@example.org>\r\nDATA\r\nhi\r\n.\r\n"),
            steps[i], &st, out, sizeof(out));
        assert_int_equal(st, SMTP_SUSPEND);
        h_codes(out, codes, sizeof(codes));
        /* HELO forgotten (503), STARTTLS not listed and refused (554) */
        assert_string_equal(codes, "503 5.5.1|250|554 5.5.1|250 2.1.0|250 2.1.5|354");
        assert_null(strstr(out, "STARTTLS"));
        assert_non_null(strstr(h.body, "by mx.test (tern) with ESMTPS\r\n"
                                       "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384) id QID1"));
        smtp_session_commit_done(h.s, R_QUEUED);
        smtp_session_free(h.s);
    }
}

/* RFC 3207 §4: where TLS is required, only EHLO, STARTTLS, NOOP and QUIT come first. */
static void
test_tls_required(void **state)
{
    struct harness h;
    static char out[8192], codes[256];
    enum smtp_status st;

    h_init(&h);
    h.conf.tls_offer = true;
    h.conf.tls_required = true;
    T(&h, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.org>\r\nNOOP\r\nQUIT\r\n",
        "220|250|530 5.7.0|530 5.7.0|250 2.0.0|221 2.0.0");
    T(&h, "HELO c\r\nRSET\r\nVRFY x\r\n", "220|530 5.7.0|530 5.7.0|530 5.7.0");
    /* a refused BDAT's chunk is still read, never taken as commands */
    T(&h, "EHLO c\r\nBDAT 6\r\nRSET\r\nQUIT\r\n", "220|250|503 5.5.1|221 2.0.0");
    h.s = smtp_session_new(&h.conf, &h.cb, &h, &h.peer);
    out[0] = '\0';
    tls_feed(h.s, "EHLO c\r\nSTARTTLS\r\n", 18, 0, &st, out, sizeof(out));
    assert_int_equal(st, SMTP_STARTTLS);
    smtp_session_tls_started(h.s, "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384");
    out[0] = '\0';
    tls_feed(h.s, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n", 33, 0, &st, out, sizeof(out));
    h_codes(out, codes, sizeof(codes));
    assert_string_equal(codes, "250|250 2.1.0");
    smtp_session_free(h.s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_flow),
        cmocka_unit_test(test_greeting_and_ehlo),
        cmocka_unit_test(test_sequence_errors),
        cmocka_unit_test(test_command_errors),
        cmocka_unit_test(test_501_family),
        cmocka_unit_test(test_recipient_limit_and_relay),
        cmocka_unit_test(test_framing_commands),
        cmocka_unit_test(test_http),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_message_size),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_bdat_too_big),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_commit_failure),
        cmocka_unit_test(test_pipelining_suspend),
        cmocka_unit_test(test_pending_verdicts),
        cmocka_unit_test(test_pending_refusals),
        cmocka_unit_test(test_pending_verdict_args),
        cmocka_unit_test(test_received_longest),
        cmocka_unit_test(test_shutdown_and_timeout),
        cmocka_unit_test(test_output_backpressure),
        cmocka_unit_test(test_auth_offer),
        cmocka_unit_test(test_auth_plain_login),
        cmocka_unit_test(test_auth_failures),
        cmocka_unit_test(test_auth_submission),
        cmocka_unit_test(test_auth_received),
        cmocka_unit_test(test_auth_pending),
        cmocka_unit_test(test_starttls_refusals),
        cmocka_unit_test(test_starttls_injection),
        cmocka_unit_test(test_tls_required),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
