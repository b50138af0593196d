/*
 * fuzz_client.c - libFuzzer target for smtp/client.c: arbitrary server bytes.
 *
 * Input: byte 0 chooses the message (1-4 recipients, SMTPUTF8 needed or not,
 * 8-bit, DSN parameters, a second message on the same connection, BDAT
 * when CHUNKING is offered), byte 1 seeds the sizes of the pieces fed at
 * each read and chooses no_pipelining (bit 0) and, with chunking, a body
 * of several BDAT chunks (bit 1); the rest is what the server says.  When it runs out, the
 * connection is "lost".  Checked, abort() on any violation:
 *   - the output has no bare CR or LF, and is whole CRLF lines whenever the
 *     client reads, idles or closes;
 *   - nothing is output once the client said CLOSE;
 *   - a recipient's outcome, once set, never changes; every recipient has
 *     one when the client idles or closes;
 *   - the client finishes (a bounded number of steps).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct body_src {
    const char *p;
    size_t len, off, piece;
};

static ssize_t
body_read(void *arg, char *buf, size_t n)
{
    struct body_src *b = arg;
    size_t k = b->len - b->off;

    if (k > n)
        k = n;
    if (k > b->piece)
        k = b->piece; /* small pieces: stuffing state crosses calls */
    memcpy(buf, b->p + b->off, k);
    b->off += k;
    return (ssize_t)k;
}

struct out_check {
    char last, prev; /* the last two octets output */
    size_t total;
};

static void
out_add(struct out_check *o, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (o->last == '\r' && p[i] != '\n')
            abort(); /* bare CR */
        if (p[i] == '\n' && o->last != '\r')
            abort(); /* bare LF */
        o->prev = o->last;
        o->last = p[i];
    }
    o->total += n;
}

static void
out_whole_lines(const struct out_check *o)
{
    if (o->total > 0 && (o->prev != '\r' || o->last != '\n'))
        abort();
}

static void
check_outcomes(
    struct smtp_client *c, const struct smtp_client_msg *m, enum smtp_client_result *seen, bool all)
{
    size_t i;

    for (i = 0; i < m->nrcpts; i++) {
        const struct smtp_client_outcome *oc = smtp_client_outcome(c, i);

        if (seen[i] != SMTP_CLIENT_PENDING && oc->result != seen[i])
            abort();
        if (all && oc->result == SMTP_CLIENT_PENDING)
            abort();
        if (memchr(oc->text, '\0', sizeof(oc->text)) == NULL)
            abort();
        seen[i] = oc->result;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const addrs[] = {
        "a@example.org", "b@example.org", "c@example.org", "d@example.org"};
    static const char *const uaddrs[] = {
        "\xc3\xa4@example.org", "b@example.org", "c@example.org", "d@example.org"};
    static const char body[] = ".a\r\nb\n\r.\r\n..c\rd";
    struct smtp_client_rcpt rc[4];
    struct smtp_client_msg m, m2;
    static char big[150000]; /* lines of 0-200 octets, bare LF and CR, some '.' */
    struct body_src b = {body, sizeof(body) - 1, 0, 7}, b2 = {"x\r\n", 3, 0, 7};
    enum smtp_client_result seen[4] = {0}, seen2[4] = {0};
    struct out_check oc = {0, 0, 0};
    struct smtp_client *c;
    const struct smtp_client_msg *cur;
    enum smtp_client_result *cur_seen;
    const char *p;
    size_t n, i, off, steps;
    uint32_t x;
    uint8_t flags, opts;
    bool closed = false, second = false;

    if (size < 2)
        return 0;
    flags = data[0];
    opts = data[1];
    x = (uint32_t)data[1] * 2654435761u + 1;
    if ((flags & 0x80) && (opts & 0x02)) {
        if (big[0] == '\0') {
            uint32_t y = 1;

            for (i = 0; i < sizeof(big); i++) {
                y = y * 1103515245u + 12345u;
                big[i] = (y >> 16) % 100 == 0 ? '\n' : (y >> 16) % 211 == 0 ? '\r' : 'x';
                if (i > 0 && big[i - 1] == '\n' && (y >> 8) % 5 == 0)
                    big[i] = '.';
            }
        }
        b.p = big;
        b.len = sizeof(big);
        b.piece = 5000;
    }
    data += 2;
    size -= 2;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < 4; i++) {
        rc[i].addr = (flags & 0x04) ? uaddrs[i] : addrs[i];
        rc[i].notify = (flags & 0x10) ? "SUCCESS,FAILURE" : NULL;
        rc[i].orcpt = (flags & 0x10) ? "rfc822;a@example.org" : NULL;
    }
    m.sender = (flags & 0x40) ? "" : "s@example.net";
    m.rcpts = rc;
    m.nrcpts = (size_t)(flags & 0x03) + 1;
    m.size = b.len;
    m.smtputf8 = (flags & 0x04) != 0;
    m.eightbit = (flags & 0x08) != 0;
    m.ret = (flags & 0x10) ? "HDRS" : NULL;
    m.envid = (flags & 0x10) ? "ID1" : NULL;
    m.chunking = (flags & 0x80) != 0;
    m.no_pipelining = (opts & 0x01) != 0;
    m.body = body_read;
    m.arg = &b;
    m2 = m;
    m2.nrcpts = 1;
    m2.smtputf8 = false;
    m2.rcpts = rc + 1;
    m2.size = 3;
    m2.arg = &b2;

    c = smtp_client_new("client.test", &m);
    if (c == NULL)
        abort();
    /* STARTTLS: the mode from opts bits 2-3, the handshake's result from bit 4 */
    smtp_client_set_tls(c, (enum smtp_client_tls)(((opts >> 2) & 0x03) % 3));
    /* AUTH (PLAIN or LOGIN, whatever EHLO offers) when opts bit 5 says so */
    if ((opts & 0x20) && smtp_client_set_auth(c, "user", "pass") != 0)
        abort();
    cur = &m;
    cur_seen = seen;
    off = 0;
    for (steps = 0;; steps++) {
        enum smtp_client_action a;

        if (steps > 100000)
            abort(); /* it must finish */
        a = smtp_client_next(c);
        check_outcomes(c, cur, cur_seen, a == SMTP_CLIENT_IDLE || a == SMTP_CLIENT_CLOSE);
        if (closed && a != SMTP_CLIENT_CLOSE)
            abort();
        switch (a) {
        case SMTP_CLIENT_SEND:
            p = smtp_client_output(c, &n);
            if (n == 0)
                abort();
            out_add(&oc, p, n);
            smtp_client_sent(c, n);
            break;
        case SMTP_CLIENT_READ:
            out_whole_lines(&oc);
            if (off >= size) {
                smtp_client_fail(c, "connection lost");
                break;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            n = x % 64 + 1;
            if (n > size - off)
                n = size - off;
            {
                /* exact-size copy, so ASan sees any read past it */
                char *piece = malloc(n);

                if (piece == NULL)
                    abort();
                memcpy(piece, data + off, n);
                smtp_client_input(c, piece, n);
                free(piece);
            }
            off += n;
            break;
        case SMTP_CLIENT_STARTTLS:
            out_whole_lines(&oc);
            smtp_client_tls_done(c, (opts & 0x10) == 0, "handshake failed: fuzz");
            break;
        case SMTP_CLIENT_IDLE:
            out_whole_lines(&oc);
            if ((flags & 0x20) && !second) {
                second = true;
                if (smtp_client_next_message(c, &m2) != 0)
                    abort();
                cur = &m2;
                cur_seen = seen2;
                break;
            }
            smtp_client_quit(c);
            break;
        case SMTP_CLIENT_CLOSE:
            out_whole_lines(&oc);
            if (closed) {
                smtp_client_output(c, &n);
                if (n != 0)
                    abort();
                smtp_client_free(c);
                return 0;
            }
            closed = true; /* once more round the loop: it must stay closed */
            break;
        }
    }
}
