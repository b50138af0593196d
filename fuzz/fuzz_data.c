/*
 * fuzz_data.c - libFuzzer target for smtp/data.c (DATA/BDAT framing).
 *
 * Input: byte 0 picks the mode (bit 0: BDAT) and max_size (bits 1-3), byte 1
 * seeds the split pattern, the rest is the stream.  Checked, abort() on any
 * difference:
 *   - one piece against a naive octet-at-a-time model of the rules written
 *     here from data.h, independently of data.c;
 *   - one piece against byte-by-byte, against pseudo-random pieces from the
 *     seed, and against 2-splits (all of them for short inputs): flags, size,
 *     lines, first_bad_line, done, consumed and the body must not change;
 *   - DATA round trip: with no bare CR/LF and nothing cut off, stuffing the
 *     body again and appending ".\r\n" must give back the same body;
 *   - a failing sink: counts unchanged, sink_err set, never called again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
    unsigned flags;
    unsigned long long size;
    unsigned long lines;
    unsigned long first_bad_line;
    bool done;
    size_t consumed;
    int sink_err;
    char *body;
    size_t body_len;
};

struct sink_ctx {
    char *buf;
    size_t len, cap;
    unsigned calls;
    unsigned fail_at;       /* fail this call (1-based); 0: never */
    bool called_after_fail;
};

static int
fuzz_sink(void *ctx, const char *p, size_t n)
{
    struct sink_ctx *c = ctx;

    if (c->fail_at != 0 && c->calls >= c->fail_at)
        c->called_after_fail = true;
    c->calls++;
    if (n == 0)
        abort();
    if (c->fail_at != 0 && c->calls == c->fail_at)
        return -1;
    if (c->len + n > c->cap)
        abort();
    memcpy(c->buf + c->len, p, n);
    c->len += n;
    return 0;
}

/*
 * Feed p[0..n) in pieces: pattern 0 one piece, 1 byte by byte, 2 pseudo-random
 * lengths from seed (0 included), k >= 3 a first piece of k - 3 and the rest.
 */
static void
run(bool bdat, const char *p, size_t n, unsigned long long max, uint32_t seed, int pattern,
    unsigned fail_at, struct result *r)
{
    struct smtp_data d;
    struct sink_ctx c = {0};
    size_t from = 0, piece, got;
    uint32_t x = seed * 2654435761u + 1;
    int err = 0;

    c.cap = n + 1;
    c.buf = malloc(c.cap);
    c.fail_at = fail_at;
    if (c.buf == NULL)
        abort();
    smtp_data_init(&d, max);
    r->consumed = 0;
    if (x == 0)
        x = 1;          /* xorshift stays at 0 */
    do {
        switch (pattern) {
        case 0:
            piece = n - from;
            break;
        case 1:
            piece = 1;
            break;
        case 2:
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            piece = x % ((seed & 0x3f) + 2); /* may be 0: empty calls are legal */
            break;
        default:
            piece = (size_t)pattern - 3;
            break;
        }
        if (piece > n - from)
            piece = n - from;
        if (bdat) {
            smtp_data_bdat(&d, p + from, piece, fuzz_sink, &c, &err);
            got = piece;
        } else {
            bool was_done = d.done;

            got = smtp_data_feed(&d, p + from, piece, fuzz_sink, &c, &err);
            if (got > piece || (got < piece && !d.done) || (was_done && got != 0))
                abort();
        }
        r->consumed += got;
        from += piece;
        if (pattern >= 3)
            pattern = 0;        /* a 2-split: the rest in one piece */
    } while (from < n);
    if (bdat)
        smtp_data_bdat_end(&d);
    if (c.called_after_fail)
        abort();
    r->flags = d.flags;
    r->size = d.size;
    r->lines = d.lines;
    r->first_bad_line = d.first_bad_line;
    r->done = d.done;
    r->sink_err = err;
    r->body = c.buf;
    r->body_len = c.len;
}

static void
same(const struct result *a, const struct result *b, bool body)
{
    if (a->flags != b->flags || a->size != b->size || a->lines != b->lines
        || a->first_bad_line != b->first_bad_line || a->done != b->done
        || a->consumed != b->consumed)
        abort();
    if (body && (a->body_len != b->body_len || memcmp(a->body, b->body, a->body_len) != 0))
        abort();
}

static void
model_bad(struct result *r, unsigned flag)
{
    r->flags |= flag;
    if (r->first_bad_line == 0)
        r->first_bad_line = r->lines + 1;
}

static void
model_out(struct result *r, unsigned long long max, char ch)
{
    if (max == 0 || r->size < max)
        r->body[r->body_len++] = ch;
    else
        r->flags |= DATA_TOO_BIG;
    r->size++;
}

/*
 * The rules of data.h, one octet at a time over the whole input: only CRLF
 * ends a line; at a line start "." CRLF ends the data and "." is dropped
 * otherwise; a CR whose next octet is not LF is bare (one at the very end is
 * undecided: DATA holds it, BDAT ends it at smtp_data_bdat_end).
 */
static void
model(bool bdat, const char *p, size_t n, unsigned long long max, struct result *r)
{
    size_t i = 0;
    bool bol = true;
    unsigned char ch;

    memset(r, 0, sizeof(*r));
    r->body = malloc(n + 1);
    if (r->body == NULL)
        abort();
    while (i < n) {
        if (!bdat && bol && p[i] == '.') {
            if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
                r->done = true;
                i += 3;
                break;
            }
            if (i + 2 == n && p[i + 1] == '\r') {
                i = n;          /* ".\r" held back */
                break;
            }
            i++;
            bol = false;
            continue;
        }
        bol = false;
        ch = (unsigned char)p[i];
        model_out(r, max, (char)ch);
        if (ch == 0)
            r->flags |= DATA_NUL;
        if (ch >= 0x80)
            r->flags |= DATA_8BIT;
        if (ch == '\r') {
            if (i + 1 < n && p[i + 1] == '\n') {
                model_out(r, max, '\n');
                r->lines++;
                bol = true;
                i += 2;
                continue;
            }
            if (i + 1 < n || bdat)
                model_bad(r, DATA_BARE_CR);
        } else if (ch == '\n') {
            model_bad(r, DATA_BARE_LF);
        }
        i++;
    }
    if (bdat)
        r->done = true;
    r->consumed = i;
}

/* Stuff body again, append ".\r\n", feed it: the same body must come back. */
static void
round_trip(const struct result *a)
{
    char *in = malloc(a->body_len * 2 + 3);
    size_t n = 0, i;
    bool bol = true;
    struct result b;

    if (in == NULL)
        abort();
    for (i = 0; i < a->body_len; i++) {
        if (bol && a->body[i] == '.')
            in[n++] = '.';
        in[n++] = a->body[i];
        bol = a->body[i] == '\n';
    }
    memcpy(in + n, ".\r\n", 3);
    n += 3;
    run(false, in, n, 0, 0, 0, 0, &b);
    if (!b.done || b.consumed != n || b.flags != a->flags || b.lines != a->lines
        || b.body_len != a->body_len || memcmp(b.body, a->body, a->body_len) != 0)
        abort();
    free(b.body);
    free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned long long maxes[8] = {0, 1, 2, 3, 5, 8, 64, 1000};
    struct result whole, m, other;
    const char *p;
    size_t n, k;
    bool bdat;
    unsigned long long max;
    uint32_t seed;

    if (size < 2)
        return 0;
    bdat = data[0] & 1;
    max = maxes[(data[0] >> 1) & 7];
    seed = data[1];
    p = (const char *)data + 2;
    n = size - 2;

    run(bdat, p, n, max, 0, 0, 0, &whole);
    model(bdat, p, n, max, &m);
    same(&whole, &m, true);
    free(m.body);

    run(bdat, p, n, max, 0, 1, 0, &other);
    same(&whole, &other, true);
    free(other.body);

    run(bdat, p, n, max, seed, 2, 0, &other);
    same(&whole, &other, true);
    free(other.body);

    if (n <= 64) {
        for (k = 0; k <= n; k++) {
            run(bdat, p, n, max, seed, (int)k + 3, 0, &other);
            same(&whole, &other, true);
            free(other.body);
        }
    } else {
        run(bdat, p, n, max, seed, (int)((seed * 7919u) % (n + 1)) + 3, 0, &other);
        same(&whole, &other, true);
        free(other.body);
    }

    /* A sink that fails on some call: everything but the body stays the same. */
    run(bdat, p, n, max, seed, 2, (seed & 3) + 1, &other);
    same(&whole, &other, false);
    if (other.body_len > whole.body_len || memcmp(other.body, whole.body, other.body_len) != 0)
        abort();
    if (other.sink_err != (other.body_len < whole.body_len))
        abort();
    free(other.body);

    if (!bdat && whole.done && !(whole.flags & (DATA_BARE_CR | DATA_BARE_LF | DATA_TOO_BIG)))
        round_trip(&whole);

    free(whole.body);
    return 0;
}
