/*
 * test_bounce.c - unit tests of delivery status notifications
 * (deliver/bounce.c): the exact structure of the message (headers, boundary
 * lines, the three parts, per-recipient blocks), status derivation, folding
 * of a long Diagnostic-Code, RET=HDRS, the attachment cap, CRLF-only output
 * with no line over 998 octets, a boundary collision, bounce_wanted's truth
 * table, and (when python3 is there) Python's email parser reading the result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/bounce.h"
#include "smtp/dsn.h"
#include "util/buf.h"

/* ---- helpers ---------------------------------------------------------------------------- */

struct mem_src {
    const char *p;
    size_t len;
    int reads;
};

static ssize_t
mem_read(void *arg, uint64_t off, char *p, size_t n)
{
    struct mem_src *s = arg;

    s->reads++;
    if (off >= s->len)
        return 0;
    if (n > s->len - off)
        n = s->len - (size_t)off;
    if (n > 1000) /* short reads: the copier must loop */
        n = 1000;
    memcpy(p, s->p + off, n);
    return (ssize_t)n;
}

static const char original[] = "Received: from client.example.net\r\n"
                               "From: Alice <alice@example.net>\r\n"
                               "To: bob@example.org\r\n"
                               "Subject: lunch\r\n"
                               "Message-ID: <abc@example.net>\r\n"
                               "\r\n"
                               "Shall we meet at noon?\r\n"
                               "BODY-MARKER\r\n";

static struct bounce_rcpt rcpts2[2];

static void
base_msg(struct bounce_msg *m, struct mem_src *src, const char *orig, size_t len)
{
    memset(m, 0, sizeof(*m));
    src->p = orig;
    src->len = len;
    src->reads = 0;
    m->hostname = "mx.tern.test";
    m->queue_id = "Q1A2B3C";
    m->sender = "alice@example.net";
    m->arrival = 1700000000; /* Tue, 14 Nov 2023 22:13:20 +0000 */
    m->now = 1700003600;
    m->boundary_salt = "k9Zx4";
    m->read = mem_read;
    m->read_arg = src;
    m->msg_len = len;
    memset(rcpts2, 0, sizeof(rcpts2));
    rcpts2[0].addr = "bob@example.org";
    rcpts2[0].orcpt = "rfc822;Bob@Example.org";
    rcpts2[0].action = BOUNCE_FAILED;
    rcpts2[0].reply = "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown";
    rcpts2[0].remote_mta = "mx1.example.org";
    rcpts2[0].last_attempt = 1700003500;
    rcpts2[1].addr = "carol@example.org";
    rcpts2[1].action = BOUNCE_FAILED;
    rcpts2[1].reply = "554 no thanks";
    m->rcpts = rcpts2;
    m->nrcpts = 2;
}

static char *
build(const struct bounce_msg *m, struct bounce_info *info)
{
    struct buf b;
    char err[256];
    char *s;

    buf_init(&b, 4 * 1024 * 1024);
    if (bounce_build(m, &b, info, err, sizeof(err)) != 0)
        fail_msg("bounce_build: %s", err);
    s = malloc(b.len + 1);
    assert_non_null(s);
    memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    assert_int_equal(strlen(s), b.len); /* no NUL inside */
    buf_free(&b);
    return s;
}

/* CRLF only, and no line longer than 998 octets. */
static void
check_lines(const char *s)
{
    size_t col = 0;

    for (; *s; s++) {
        if (*s == '\r') {
            assert_int_equal(s[1], '\n');
            assert_true(col <= 998);
            col = 0;
            s++;
        } else {
            assert_int_not_equal(*s, '\n'); /* a bare LF */
            col++;
        }
    }
    assert_int_equal(col, 0); /* ends with CRLF */
}

/* The value of header name in the section starting at s (ends at an empty line),
   unfolded; NULL if absent. Caller frees. */
static char *
header(const char *s, const char *name)
{
    size_t nl = strlen(name);
    const char *p = s;

    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");

        assert_non_null(eol);
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            char *v = malloc(strlen(p) + 1);
            size_t o = 0;
            const char *q = p + nl + 1;

            while (*q == ' ')
                q++;
            for (;;) {
                if (q[0] == '\r' && q[1] == '\n') {
                    if (q[2] == ' ' || q[2] == '\t') {
                        q += 2;
                        continue;
                    }
                    break;
                }
                v[o++] = *q++;
            }
            v[o] = '\0';
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static void
assert_header(const char *s, const char *name, const char *want)
{
    char *v = header(s, name);

    if (v == NULL)
        fail_msg("no %s header", name);
    if (strcmp(v, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", name, v, want);
    free(v);
}

/* The boundary from the top Content-Type, and the parts between boundary lines. */
struct parts {
    char boundary[100];
    const char *part[8]; /* start of each part (its headers) */
    size_t len[8];
    int n;
    bool closed;
};

static void
split(const char *s, struct parts *ps)
{
    char *ct = header(s, "Content-Type"), *b, delim[110];
    const char *p, *body;
    size_t dl;

    memset(ps, 0, sizeof(*ps));
    assert_non_null(ct);
    assert_non_null(strstr(ct, "multipart/report"));
    assert_true(strstr(ct, "report-type=delivery-status") != NULL ||
                strstr(ct, "report-type=global-delivery-status") != NULL);
    b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += 10;
    assert_non_null(strchr(b, '"'));
    *strchr(b, '"') = '\0';
    assert_true(strlen(b) >= 1 && strlen(b) <= 70);
    strcpy(ps->boundary, b);
    free(ct);
    snprintf(delim, sizeof(delim), "\r\n--%s", ps->boundary);
    dl = strlen(delim);
    body = strstr(s, "\r\n\r\n");
    assert_non_null(body);
    p = body + 2; /* keep the CRLF that belongs to the first delimiter */
    for (;;) {
        const char *d = strstr(p, delim);

        if (d == NULL)
            break;
        if (ps->n > 0)
            ps->len[ps->n - 1] = (size_t)(d - ps->part[ps->n - 1]);
        d += dl;
        if (d[0] == '-' && d[1] == '-') {
            assert_string_equal(d, "--\r\n");
            ps->closed = true;
            break;
        }
        assert_true(d[0] == '\r' && d[1] == '\n');
        assert_true(ps->n < 8);
        ps->part[ps->n++] = d + 2;
        p = d + 2;
    }
}

static char *
part_copy(const struct parts *ps, int i)
{
    char *s = malloc(ps->len[i] + 1);

    memcpy(s, ps->part[i], ps->len[i]);
    s[ps->len[i]] = '\0';
    return s;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void
test_structure(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    struct parts ps;
    char *s, *p, *report, *v;

    (void)state;
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.envid = "QQ314159";
    s = build(&m, &info);
    check_lines(s);
    assert_true(info.full);
    assert_false(info.truncated);
    assert_false(info.eightbit);

    assert_header(s, "From", "Mail Delivery System <MAILER-DAEMON@mx.tern.test>");
    assert_header(s, "To", "<alice@example.net>");
    assert_header(s, "Subject", "Undelivered Mail Returned to Sender");
    assert_header(s, "Date", "Tue, 14 Nov 2023 23:13:20 +0000");
    assert_header(s, "Message-ID", "<Q1A2B3C.1700003600.bounce@mx.tern.test>");
    assert_header(s, "Auto-Submitted", "auto-replied");
    assert_header(s, "MIME-Version", "1.0");

    split(s, &ps);
    assert_int_equal(ps.n, 3);
    assert_true(ps.closed);
    assert_non_null(strstr(ps.boundary, "Q1A2B3C"));
    assert_non_null(strstr(ps.boundary, "k9Zx4"));

    /* part 1: the explanation */
    p = part_copy(&ps, 0);
    assert_header(p, "Content-Type", "text/plain; charset=us-ascii");
    assert_non_null(strstr(p, "could not be delivered"));
    assert_non_null(strstr(p, "<bob@example.org>"));
    assert_non_null(strstr(p, "The mail server mx1.example.org said:"));
    assert_non_null(strstr(p, "550 5.1.1 <bob@example.org>: Recipient address rejected"));
    assert_non_null(strstr(p, "does not exist at that domain")); /* the 5.1.1 hint */
    assert_non_null(strstr(p, "<carol@example.org>"));
    assert_non_null(strstr(p, "Q1A2B3C"));
    assert_non_null(strstr(p, "Your original message is attached."));
    free(p);

    /* part 2: the report */
    p = part_copy(&ps, 1);
    assert_header(p, "Content-Type", "message/delivery-status");
    report = strstr(p, "\r\n\r\n");
    assert_non_null(report);
    report += 4;
    assert_header(report, "Reporting-MTA", "dns; mx.tern.test");
    assert_header(report, "Original-Envelope-Id", "QQ314159");
    assert_header(report, "Arrival-Date", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_null(header(report, "Final-Recipient")); /* per-message block only */
    report = strstr(report, "\r\n\r\n") + 4;        /* first recipient */
    assert_header(report, "Original-Recipient", "rfc822;Bob@Example.org");
    assert_header(report, "Final-Recipient", "rfc822; bob@example.org");
    assert_header(report, "Action", "failed");
    assert_header(report, "Status", "5.1.1");
    assert_header(report, "Remote-MTA", "dns; mx1.example.org");
    assert_header(report, "Diagnostic-Code",
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown");
    assert_header(report, "Last-Attempt-Date", "Tue, 14 Nov 2023 23:11:40 +0000");
    assert_null(header(report, "Will-Retry-Until"));
    report = strstr(report, "\r\n\r\n") + 4; /* second recipient */
    assert_header(report, "Final-Recipient", "rfc822; carol@example.org");
    assert_header(report, "Status", "5.0.0"); /* no enhanced code in "554 no thanks" */
    assert_header(report, "Diagnostic-Code", "smtp; 554 no thanks");
    assert_null(header(report, "Remote-MTA"));
    assert_null(header(report, "Original-Recipient"));
    assert_null(strstr(report, "\r\n\r\n")); /* nothing after the last block */
    free(p);

    /* part 3: the whole original */
    p = part_copy(&ps, 2);
    assert_header(p, "Content-Type", "message/rfc822");
    v = strstr(p, "\r\n\r\n");
    assert_non_null(v);
    assert_string_equal(v + 4, original);
    free(p);
    free(s);
}

static void
test_status(void **state)
{
    static const struct {
        const char *reply;
        enum bounce_action a;
        const char *want;
    } t[] = {
        {"550 5.1.1 no such user", BOUNCE_FAILED, "5.1.1"},
        {"552-5.2.2 mailbox full", BOUNCE_FAILED, "5.2.2"},
        {"452 4.2.2", BOUNCE_DELAYED, "4.2.2"},
        {"550 5.7.26 unauthenticated", BOUNCE_FAILED, "5.7.26"},
        {"550 user unknown", BOUNCE_FAILED, "5.0.0"},
        {"451 try later", BOUNCE_DELAYED, "4.0.0"},
        {"421", BOUNCE_DELAYED, "4.0.0"},
        {"550 4.1.1 class mismatch", BOUNCE_FAILED, "5.0.0"},
        {"550 5.1.1234 too many digits", BOUNCE_FAILED, "5.0.0"},
        {"550 5.1 short", BOUNCE_FAILED, "5.0.0"},
        {"550 5.1.1x", BOUNCE_FAILED, "5.0.0"},
        {"250 2.0.0 ok", BOUNCE_DELIVERED, "2.0.0"},
        {"250 2.1.5 ok", BOUNCE_DELIVERED, "2.1.5"},
        {NULL, BOUNCE_FAILED, "5.0.0"},
        {NULL, BOUNCE_DELAYED, "4.0.0"},
        {NULL, BOUNCE_DELIVERED, "2.0.0"},
        {"connection refused", BOUNCE_DELAYED, "4.0.0"},
        {"5501 x", BOUNCE_FAILED, "5.0.0"},
        {"650 x", BOUNCE_FAILED, "5.0.0"},
    };
    char out[12];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        bounce_status(t[i].reply, t[i].a, out);
        if (strcmp(out, t[i].want) != 0)
            fail_msg("\"%s\": got %s, want %s", t[i].reply ? t[i].reply : "(null)", out, t[i].want);
    }
    assert_non_null(bounce_hint("5.1.1"));
    assert_non_null(bounce_hint("4.4.1"));
    assert_non_null(strstr(bounce_hint("5.2.2"), "full"));
    assert_non_null(strstr(bounce_hint("5.4.7"), "time"));
    assert_null(bounce_hint("5.9.9"));
    assert_null(bounce_hint(NULL));
}

static void
test_status_override_and_delay(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    struct bounce_rcpt r = {0};
    struct parts ps;
    char *s, *p, *report;

    (void)state;
    base_msg(&m, &src, original, sizeof(original) - 1);
    r.addr = "dave@example.org";
    r.action = BOUNCE_DELAYED;
    r.reply = "451 4.4.1 connection timed out";
    r.remote_mta = "mx2.example.org";
    r.retry_until = 1700432000;
    m.rcpts = &r;
    m.nrcpts = 1;
    s = build(&m, &info);
    check_lines(s);
    assert_false(info.full); /* delay reports carry headers only */
    assert_header(s, "Subject", "Delayed Mail (still being retried)");
    split(s, &ps);
    assert_int_equal(ps.n, 3);
    p = part_copy(&ps, 0);
    assert_non_null(strstr(p, "not been delivered yet"));
    assert_non_null(strstr(p, "could not be reached")); /* the X.4.1 hint */
    assert_null(strstr(p, "What you can do"));
    free(p);
    p = part_copy(&ps, 1);
    report = strstr(strstr(p, "\r\n\r\n") + 4, "\r\n\r\n") + 4;
    assert_header(report, "Action", "delayed");
    assert_header(report, "Status", "4.4.1");
    assert_header(report, "Will-Retry-Until", "Sun, 19 Nov 2023 22:13:20 +0000");
    free(p);
    p = part_copy(&ps, 2);
    assert_header(p, "Content-Type", "text/rfc822-headers");
    assert_null(strstr(p, "BODY-MARKER"));
    free(p);
    free(s);

    /* expired after 4xx: the caller says 5.4.7; the reply stays verbatim */
    r.action = BOUNCE_FAILED;
    r.status = "5.4.7";
    s = build(&m, &info);
    assert_true(info.full);
    assert_non_null(strstr(s, "Status: 5.4.7\r\n"));
    assert_non_null(strstr(s, "Diagnostic-Code: smtp; 451 4.4.1 connection timed out\r\n"));
    assert_null(strstr(s, "Will-Retry-Until"));
    assert_non_null(strstr(s, "delivered within the time")); /* the X.4.7 hint */
    free(s);
}

static void
test_fold_long_diagnostic(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_rcpt r = {0};
    char reply[2100], *s, *v, *rep;
    size_t i;

    (void)state;
    base_msg(&m, &src, original, sizeof(original) - 1);
    /* 2,000 characters of words */
    strcpy(reply, "550 5.7.1");
    for (i = strlen(reply); i < 2000; i++)
        reply[i] = (i % 11 == 0) ? ' ' : (char)('a' + i % 26);
    reply[2000] = '\0';
    r.addr = "bob@example.org";
    r.action = BOUNCE_FAILED;
    r.reply = reply;
    m.rcpts = &r;
    m.nrcpts = 1;
    s = build(&m, NULL);
    check_lines(s);
    rep = strstr(s, "Content-Type: message/delivery-status");
    assert_non_null(rep);
    rep = strstr(strstr(rep, "\r\n\r\n") + 4, "\r\n\r\n") + 4;
    v = header(rep, "Diagnostic-Code");
    assert_non_null(v);
    assert_memory_equal(v, "smtp; ", 6);
    assert_string_equal(v + 6, reply); /* folding is undone by unfolding */
    free(v);
    /* folded: the field spans many lines, none over 78 columns */
    {
        const char *f = strstr(rep, "Diagnostic-Code:"), *e;
        int lines = 0;

        for (;;) {
            e = strstr(f, "\r\n");
            assert_true(e - f <= 78);
            lines++;
            if (e[2] != ' ')
                break;
            f = e + 2;
        }
        assert_true(lines >= 25);
    }
    free(s);

    /* 2,000 characters without a space: cut at 998 octets, never longer */
    memset(reply + 10, 'x', 1990);
    reply[2000] = '\0';
    s = build(&m, NULL);
    check_lines(s);
    rep = strstr(s, "Diagnostic-Code:");
    assert_non_null(rep);
    /* folded before the long word, which then fills a line to the limit */
    assert_int_equal(strstr(rep, "\r\n") - rep, strlen("Diagnostic-Code: smtp; 550"));
    rep = strstr(rep, "\r\n") + 2;
    assert_int_equal(strstr(rep, "\r\n") - rep, 998);
    rep = strstr(rep, "\r\n") + 2;
    assert_int_equal(rep[0], ' '); /* continued */
    free(s);

    /* a hostile reply: CR LF inside cannot start a new field */
    r.reply = "550 5.1.1 x\r\nAction: delivered\r\n\001\377";
    s = build(&m, NULL);
    check_lines(s);
    assert_null(strstr(s, "\r\nAction: delivered"));
    assert_non_null(strstr(s, "Diagnostic-Code: smtp; 550 5.1.1 x  Action: delivered  ??\r\n"));
    free(s);
}

static void
test_ret_hdrs(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    struct parts ps;
    char *s, *p, *body;

    (void)state;
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.ret = DSN_RET_HDRS;
    s = build(&m, &info);
    check_lines(s);
    assert_false(info.full);
    split(s, &ps);
    assert_int_equal(ps.n, 3);
    p = part_copy(&ps, 2);
    assert_header(p, "Content-Type", "text/rfc822-headers");
    body = strstr(p, "\r\n\r\n") + 4;
    assert_non_null(strstr(body, "Subject: lunch\r\n"));
    assert_non_null(strstr(body, "Message-ID: <abc@example.net>\r\n"));
    assert_null(strstr(body, "noon"));
    assert_null(strstr(s, "BODY-MARKER"));
    free(p);
    p = part_copy(&ps, 0);
    assert_non_null(strstr(p, "headers of your original message are attached"));
    free(p);
    free(s);

    /* RET=FULL is the default's behaviour */
    m.ret = DSN_RET_FULL;
    s = build(&m, &info);
    assert_true(info.full);
    assert_non_null(strstr(s, "BODY-MARKER"));
    free(s);

    /* no reader: two parts, and the text says so */
    m.read = NULL;
    s = build(&m, &info);
    check_lines(s);
    split(s, &ps);
    assert_int_equal(ps.n, 2);
    assert_true(ps.closed);
    assert_non_null(strstr(s, "original message is not attached"));
    free(s);
}

static void
test_size_cap(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    struct parts ps;
    size_t hl = strlen("Subject: big\r\n\r\n"), total = 200 * 1024, i;
    char *orig = malloc(total), *s, *p, *body;

    (void)state;
    memcpy(orig, "Subject: big\r\n\r\n", hl);
    for (i = hl; i < total; i++)
        orig[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'y';
    base_msg(&m, &src, orig, total);
    s = build(&m, &info);
    check_lines(s);
    assert_true(info.full);
    assert_true(info.truncated);
    split(s, &ps);
    p = part_copy(&ps, 2);
    body = strstr(strstr(p, "\r\n\r\n") + 4, "\r\n\r\n") + 4;
    assert_true(strlen(body) <= BOUNCE_BODY_CAP);
    assert_true(strlen(body) > BOUNCE_BODY_CAP - 200);
    free(p);
    assert_non_null(strstr(s, "cut short"));
    assert_non_null(strstr(s, "204800 bytes"));
    assert_true(src.reads < 100); /* stopped reading at the cap, not at the end */
    free(s);

    /* a smaller cap from the caller */
    m.body_cap = 1024;
    s = build(&m, &info);
    assert_true(info.truncated);
    split(s, &ps);
    p = part_copy(&ps, 2);
    body = strstr(strstr(p, "\r\n\r\n") + 4, "\r\n\r\n") + 4;
    assert_true(strlen(body) <= 1024);
    free(p);
    free(s);
    free(orig);
}

static void
test_bare_lf_and_long_lines(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    char orig[8000], *s;
    size_t n = 0;

    (void)state;
    n += (size_t)sprintf(orig + n, "Subject: bare\nX-Long: ");
    memset(orig + n, 'h', 1500);
    n += 1500;
    n += (size_t)sprintf(orig + n, "\r\n\nline one\nline two\rline three\r\n");
    memset(orig + n, 'b', 3000);
    n += 3000;
    n += (size_t)sprintf(orig + n, "\r\nété\r\nlast line without end");
    base_msg(&m, &src, orig, n);
    s = build(&m, &info);
    check_lines(s);
    assert_true(info.eightbit);
    assert_non_null(strstr(s, "Content-Transfer-Encoding: 8bit\r\n\r\nSubject: bare\r\n"));
    assert_non_null(strstr(s, "line one\r\nline two\r\nline three\r\n"));
    assert_non_null(strstr(s, "\r\nlast line without end\r\n"));
    /* the long header is continued as a fold, not as a new field */
    assert_non_null(strstr(s, "hhhh\r\n hhhh"));
    free(s);

    /* a boundary that happens to be in the original is not used */
    base_msg(&m, &src, "Subject: x\r\n\r\n--tern-Q1A2B3C-k9Zx4\r\n--tern-Q1A2B3C-k9Zx4.1\r\n",
        strlen("Subject: x\r\n\r\n--tern-Q1A2B3C-k9Zx4\r\n--tern-Q1A2B3C-k9Zx4.1\r\n"));
    s = build(&m, &info);
    assert_non_null(strstr(s, "boundary=\"tern-Q1A2B3C-k9Zx4.2\""));
    free(s);
}

static void
test_errors(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    struct buf b;
    char err[128];

    (void)state;
    buf_init(&b, 1 << 20);
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.sender = "";
    assert_int_equal(bounce_build(&m, &b, NULL, err, sizeof(err)), -1);
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.nrcpts = 0;
    assert_int_equal(bounce_build(&m, &b, NULL, err, sizeof(err)), -1);
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.hostname = "bad host";
    assert_int_equal(bounce_build(&m, &b, NULL, err, sizeof(err)), -1);
    /* the original is shorter than said */
    base_msg(&m, &src, original, sizeof(original) - 1);
    m.msg_len += 10;
    assert_int_equal(bounce_build(&m, &b, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ends at"));
    /* the output's limit */
    buf_free(&b);
    buf_init(&b, 1000);
    base_msg(&m, &src, original, sizeof(original) - 1);
    assert_int_equal(bounce_build(&m, &b, NULL, err, sizeof(err)), -1);
    buf_free(&b);
}

static void
test_wanted(void **state)
{
    static const unsigned N = DSN_NOTIFY_NEVER, S = DSN_NOTIFY_SUCCESS, F = DSN_NOTIFY_FAILURE,
                          D = DSN_NOTIFY_DELAY;
    static const struct {
        unsigned notify;
        bool failed, delayed, delivered, relayed;
    } t[] = {
        {0, true, true, false, false},
        {N, false, false, false, false},
        {S, false, false, true, true},
        {F, true, false, false, false},
        {D, false, true, false, false},
        {S | F, true, false, true, true},
        {F | D, true, true, false, false},
        {S | D, false, true, true, true},
        {S | F | D, true, true, true, true},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(bounce_wanted("a@b", t[i].notify, BOUNCE_FAILED), t[i].failed);
        assert_int_equal(bounce_wanted("a@b", t[i].notify, BOUNCE_DELAYED), t[i].delayed);
        assert_int_equal(bounce_wanted("a@b", t[i].notify, BOUNCE_DELIVERED), t[i].delivered);
        assert_int_equal(bounce_wanted("a@b", t[i].notify, BOUNCE_RELAYED), t[i].relayed);
        /* never to the null sender, whatever NOTIFY says */
        assert_false(bounce_wanted("", t[i].notify, BOUNCE_FAILED));
        assert_false(bounce_wanted(NULL, t[i].notify, BOUNCE_DELAYED));
        assert_false(bounce_wanted("", t[i].notify, BOUNCE_DELIVERED));
    }
}

static const char pycheck[] =
    "import email,sys\n"
    "m=email.message_from_binary_file(sys.stdin.buffer)\n"
    "assert m.get_content_type()=='multipart/report', m.get_content_type()\n"
    "assert m.get_param('report-type')=='delivery-status'\n"
    "assert not m.defects, m.defects\n"
    "p=m.get_payload()\n"
    "assert [x.get_content_type() for x in p]==['text/plain','message/delivery-status',"
    "'message/rfc822'], [x.get_content_type() for x in p]\n"
    "b=p[1].get_payload()\n"
    "assert b[0]['Reporting-MTA']=='dns; mx.tern.test', b[0]['Reporting-MTA']\n"
    "assert len(b)==3, len(b)\n"
    "assert b[1]['Action']=='failed' and b[1]['Status']=='5.1.1'\n"
    "assert b[2]['Final-Recipient']=='rfc822; carol@example.org'\n"
    "o=p[2].get_payload()[0]\n"
    "assert o['Subject']=='lunch', o['Subject']\n"
    "assert 'BODY-MARKER' in o.get_payload()\n"
    "assert m['Auto-Submitted']=='auto-replied'\n";

static void
test_python_parses(void **state)
{
    struct bounce_msg m;
    struct mem_src src;
    char *s, path[] = "/tmp/test_bounce_XXXXXX", cmd[256];
    FILE *f;
    int fd, rc;

    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0)
        skip();
    base_msg(&m, &src, original, sizeof(original) - 1);
    s = build(&m, NULL);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
    free(s);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c \"$TERN_PYCHECK\" < %s", path);
    setenv("TERN_PYCHECK", pycheck, 1);
    f = popen(cmd, "r");
    assert_non_null(f);
    rc = pclose(f);
    unlink(path);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 0);
}

/*
 * RFC 6533: a DSN about mail that needed SMTPUTF8 is a global report, names a
 * UTF-8 recipient with the utf-8 address type in unitext form (the ORCPT
 * given in utf-8-addr-xtext form comes back as UTF-8), keeps rfc822 for an
 * ASCII recipient, and returns message/global or message/global-headers.
 */
static void
test_utf8_global(void **state)
{
    static const char orig8[] = "From: Jürgen <jürgen@bücher.example>\r\n"
                                "Subject: grüße\r\n"
                                "\r\n"
                                "Hallo.\r\n";
    struct bounce_msg m;
    struct mem_src src;
    struct bounce_info info;
    struct parts ps;
    char *s, *p, *ct;

    (void)state;
    base_msg(&m, &src, orig8, sizeof(orig8) - 1);
    m.sender = "jürgen@bücher.example";
    m.smtputf8 = true;
    rcpts2[0].addr = "mäx+tag=1@bücher.example";
    rcpts2[0].orcpt = "utf-8;m\\x{E4}x\\x{2B}tag\\x{3D}1@b\\x{FC}cher.example";
    s = build(&m, &info);
    check_lines(s);
    assert_true(info.global);
    assert_true(info.eightbit);
    ct = header(s, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "multipart/report; report-type=global-delivery-status; "));
    free(ct);
    split(s, &ps);
    assert_int_equal(ps.n, 3);
    p = part_copy(&ps, 1);
    assert_header(p, "Content-Type", "message/global-delivery-status");
    assert_non_null(strstr(p, "\r\nFinal-Recipient: utf-8; mäx\\x{2B}tag\\x{3D}1@"
                              "bücher.example\r\n"));
    assert_non_null(strstr(p, "\r\nOriginal-Recipient: utf-8; mäx\\x{2B}tag\\x{3D}1@"
                              "bücher.example\r\n"));
    assert_non_null(strstr(p, "\r\nFinal-Recipient: rfc822; carol@example.org\r\n"));
    assert_null(strstr(p, "rfc822; m"));
    free(p);
    p = part_copy(&ps, 2);
    assert_header(p, "Content-Type", "message/global");
    assert_non_null(strstr(p, "Subject: grüße\r\n"));
    free(p);
    free(s);

    /* headers only: message/global-headers */
    m.ret = DSN_RET_HDRS;
    s = build(&m, &info);
    split(s, &ps);
    p = part_copy(&ps, 2);
    assert_header(p, "Content-Type", "message/global-headers");
    free(p);
    free(s);

    /* a UTF-8 recipient without the SMTPUTF8 flag still makes a global report */
    base_msg(&m, &src, original, sizeof(original) - 1);
    rcpts2[1].addr = "désirée@example.org";
    s = build(&m, &info);
    assert_true(info.global);
    assert_non_null(strstr(s, "Final-Recipient: utf-8; désirée@example.org\r\n"));
    assert_non_null(strstr(s, "Original-Recipient: rfc822;Bob@Example.org\r\n"));
    assert_non_null(strstr(s, "Content-Type: message/global\r\n"));
    free(s);

    /* all ASCII, no SMTPUTF8: the RFC 3464 types, unchanged */
    base_msg(&m, &src, original, sizeof(original) - 1);
    s = build(&m, &info);
    assert_false(info.global);
    assert_null(strstr(s, "global"));
    assert_null(strstr(s, "utf-8;"));
    assert_non_null(strstr(s, "Content-Type: message/delivery-status\r\n"));
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_status_override_and_delay),
        cmocka_unit_test(test_fold_long_diagnostic),
        cmocka_unit_test(test_ret_hdrs),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_bare_lf_and_long_lines),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_python_parses),
        cmocka_unit_test(test_utf8_global),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
