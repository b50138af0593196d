/*
 * fuzz_reply.c - libFuzzer target for smtp/replyparse.c (client-side replies).
 *
 * Input: byte 0 seeds the split pattern, the rest is a stream of replies,
 * parsed one after the other until an error or the end.  Each piece is
 * copied to a buffer of its exact size, so ASan catches any read past it.
 * Checked, abort() on any violation:
 *   - split invariance: one piece, byte by byte, pseudo-random pieces and a
 *     2-split all give the same sequence of replies and errors, each ending
 *     at the same offset, with the same fields;
 *   - *used never exceeds what was given, is everything on MORE, at least
 *     one octet on DONE and on a first ERROR, and nothing once in error;
 *   - each reply is sane: code 200-599 matching the first three octets of
 *     its first line, 1-100 lines, ends right after an LF, no line longer
 *     than REPLYPARSE_LINE_MAX (+ CR), text shorter than REPLYPARSE_TEXT_MAX
 *     with no CR or LF, esc empty or "X.Y.Z" of the reply's class 2/4/5;
 *   - an error has a reason.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/replyparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct event {
    enum replyparse_status st;
    size_t end;
    unsigned code, lines;
    char esc[16];
    uint64_t text_hash;
    size_t text_len;
    const char *error;
};

struct run {
    struct event *ev;
    size_t nev, cap;
    bool failed;
};

static uint64_t
fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static bool
digits(const char *s, size_t n)
{
    size_t i;

    if (n < 1 || n > 3)
        return false;
    for (i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void
check_esc(const char *esc, unsigned code)
{
    const char *d1, *d2;
    size_t n = strnlen(esc, 16);

    if (n == 16)
        abort();
    if (n == 0)
        return;
    if (code / 100 != 2 && code / 100 != 4 && code / 100 != 5)
        abort();
    if (esc[0] != (char)('0' + code / 100) || esc[1] != '.')
        abort();
    d1 = strchr(esc + 2, '.');
    if (d1 == NULL || !digits(esc + 2, (size_t)(d1 - esc - 2)))
        abort();
    d2 = esc + n;
    if (!digits(d1 + 1, (size_t)(d2 - d1 - 1)))
        abort();
}

/* The reply in p[start..end) as the parser reported it in r. */
static void
check_reply(const struct replyparse *r, const char *p, size_t start, size_t end)
{
    size_t i, linestart = start, tl;

    if (r->code < 200 || r->code > 599 || r->lines < 1 || r->lines > 100)
        abort();
    if (end - start < 4 || p[end - 1] != '\n')
        abort();
    if ((unsigned)(p[start] - '0') * 100 + (unsigned)(p[start + 1] - '0') * 10 +
            (unsigned)(p[start + 2] - '0') !=
        r->code)
        abort();
    for (i = start; i < end; i++)
        if (p[i] == '\n') {
            if (i - linestart > REPLYPARSE_LINE_MAX + 1)
                abort();
            linestart = i + 1;
        }
    tl = strnlen(r->text, REPLYPARSE_TEXT_MAX);
    if (tl >= REPLYPARSE_TEXT_MAX || memchr(r->text, '\r', tl) || memchr(r->text, '\n', tl))
        abort();
    check_esc(r->esc, r->code);
}

static void
record(struct run *out, const struct replyparse *r, enum replyparse_status st, size_t end)
{
    struct event *e;

    if (out->nev == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 16;
        out->ev = realloc(out->ev, out->cap * sizeof(*out->ev));
        if (out->ev == NULL)
            abort();
    }
    e = &out->ev[out->nev++];
    memset(e, 0, sizeof(*e));
    e->st = st;
    e->end = end;
    if (st == REPLYPARSE_DONE) {
        e->code = r->code;
        e->lines = r->lines;
        memcpy(e->esc, r->esc, sizeof(e->esc));
        e->text_len = strlen(r->text);
        e->text_hash = fnv(r->text, e->text_len);
    } else {
        if (r->error == NULL)
            abort();
        e->error = r->error;
    }
}

/* Pattern 0: one piece; 1: byte by byte; 2: pseudo-random from seed; k >= 3: split at k - 3. */
static void
run(const char *p, size_t n, uint32_t seed, int pattern, struct run *out)
{
    static struct replyparse r;
    uint32_t x = seed * 2654435761u + 1;
    size_t from = 0, piece, off, used, start = 0;

    memset(out, 0, sizeof(*out));
    replyparse_init(&r);
    if (x == 0)
        x = 1;
    while (from < n) {
        char *copy;

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
            pattern = 0; /* then the rest in one piece */
            break;
        }
        if (piece > n - from)
            piece = n - from;
        copy = malloc(piece ? piece : 1);
        if (copy == NULL)
            abort();
        memcpy(copy, p + from, piece);
        off = 0;
        for (;;) {
            enum replyparse_status st = replyparse_feed(&r, copy + off, piece - off, &used);

            if (used > piece - off)
                abort();
            off += used;
            if (st == REPLYPARSE_MORE) {
                if (off != piece || out->failed)
                    abort();
                break;
            }
            if (st == REPLYPARSE_ERROR && out->failed) {
                if (used != 0)
                    abort();
                break;
            }
            if (used == 0)
                abort();
            record(out, &r, st, from + off);
            if (st == REPLYPARSE_ERROR) {
                out->failed = true;
                break;
            }
            check_reply(&r, p, start, from + off);
            start = from + off;
            if (off == piece)
                break;
        }
        free(copy);
        from += piece;
    }
}

static void
same(const struct run *a, const struct run *b)
{
    size_t i;

    if (a->nev != b->nev || a->failed != b->failed)
        abort();
    for (i = 0; i < a->nev; i++) {
        const struct event *x = &a->ev[i], *y = &b->ev[i];

        if (x->st != y->st || x->end != y->end || x->code != y->code || x->lines != y->lines ||
            strcmp(x->esc, y->esc) != 0 || x->text_hash != y->text_hash ||
            x->text_len != y->text_len || x->error != y->error)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run whole, other;
    const char *p;
    size_t n;
    uint32_t seed;

    if (size < 1)
        return 0;
    seed = data[0];
    p = (const char *)data + 1;
    n = size - 1;

    run(p, n, 0, 0, &whole);

    run(p, n, 0, 1, &other);
    same(&whole, &other);
    free(other.ev);

    run(p, n, seed, 2, &other);
    same(&whole, &other);
    free(other.ev);

    run(p, n, seed, (int)((seed * 7919u) % (n + 1)) + 3, &other);
    same(&whole, &other);
    free(other.ev);

    free(whole.ev);
    return 0;
}
