/*
 * data.c - DATA/BDAT framing: end-of-data detection, dot-unstuffing, line checks.
 *
 * A resumable state machine over the octets that follow the 354 reply (DATA) or
 * make up BDAT chunks.  It promises that any split of the input into calls
 * gives the same flags, counts, consumed total and body octets as one call: the
 * only state carried between calls is d->state (where in a line we are, and
 * whether the sink has failed); in DATA mode that includes one held-back CR
 * (".\r" at the start of a line may yet be the end marker).
 *
 * Lines end only at CRLF.  A bare LF or bare CR is recorded and is otherwise
 * line content: it neither ends the message nor starts a line whose leading dot
 * would be removed.  This is what keeps "\n.\n", "\r.\r" and the other SMTP
 * smuggling sequences (CVE-2023-51764 and kin) from ending the data here while
 * some other MTA on the path sees an end.  d->lines counts CRLF-ended lines of
 * the body, so first_bad_line (lines + 1 when the first bad octet is seen) is
 * the line number an editor would show too: before the first bad octet every
 * line ended in CRLF.
 *
 * The hot path works per line: memchr for the LF, then memchr for stray CRs and
 * NULs and a word-at-a-time test for 8-bit octets within it, each test skipped
 * once its flag is set.  Body octets are handed to the sink in runs that only
 * break at a removed dot or at the end of a call.
 */
#include "smtp/data.h"

#include <stdint.h>
#include <string.h>

/* d->state: the machine state in the low bits, sticky conditions above them. */
enum {
    DS_BOL = 0, /* at the start of a line (DATA only: a dot here is special) */
    DS_MID,     /* inside a line, last octet not CR */
    DS_CR,      /* inside a line, last octet a CR (already passed on as body) */
    DS_DOT,     /* DATA: a dot at the start of a line, removed */
    DS_DOT_CR,  /* DATA: ".\r" at the start of a line; the CR is held back */
    DS_MASK = 0xff,
    /* The sink failed once: it is not called again for this message. */
    DS_SINK_FAILED = 0x100,
};

/* Where one call sends its body octets. */
struct data_out {
    struct smtp_data *d;
    smtp_data_sink sink;
    void *ctx;
    int *sink_err;
};

static void
data_bad(struct smtp_data *d, unsigned flag)
{
    d->flags |= flag;
    if (d->first_bad_line == 0)
        d->first_bad_line = d->lines + 1;
}

/*
 * Account for n body octets and hand on those that fit under max_size.  Cutting
 * at exactly max_size (rather than dropping the whole run) keeps the octets
 * passed on independent of how the input was split.
 */
static void
data_emit(struct data_out *o, const char *p, size_t n)
{
    struct smtp_data *d = o->d;
    unsigned long long before = d->size;

    if (n == 0)
        return;
    d->size += n;
    if (d->max_size > 0 && d->size > d->max_size) {
        d->flags |= DATA_TOO_BIG;
        n = before < d->max_size ? (size_t)(d->max_size - before) : 0;
    }
    if (n == 0 || o->sink == NULL || (d->state & DS_SINK_FAILED))
        return;
    if (o->sink(o->ctx, p, n) == -1) {
        d->state |= DS_SINK_FAILED;
        if (o->sink_err != NULL)
            *o->sink_err = 1;
    }
}

/* Is any octet of p[0..n) >= 0x80?  Eight at a time: this runs over every body octet. */
static bool
data_has_8bit(const char *p, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= (unsigned char)p[i];
    return (acc & UINT64_C(0x8080808080808080)) != 0;
}

/* Record NUL, 8-bit and stray CRs in p[0..n); a CR at p[n-1] is the caller's to judge. */
static void
data_check(struct smtp_data *d, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (!(d->flags & DATA_BARE_CR) && memchr(p, '\r', n - 1) != NULL)
        data_bad(d, DATA_BARE_CR);
    if (!(d->flags & DATA_NUL) && memchr(p, '\0', n) != NULL)
        d->flags |= DATA_NUL;
    if (!(d->flags & DATA_8BIT) && data_has_8bit(p, n))
        d->flags |= DATA_8BIT;
}

/*
 * The machine, for both modes.  dots: DATA (dot-unstuffing and the end marker);
 * otherwise BDAT, where DS_BOL is just DS_MID.  Returns octets consumed.
 */
static size_t
data_scan(struct smtp_data *d, const char *p, size_t n, bool dots, struct data_out *o)
{
    const char *run = p;    /* start of body octets not yet handed on */
    size_t i = 0;
    int st;

    while (i < n) {
        st = d->state & DS_MASK;
        switch (st) {
        case DS_BOL:
            if (dots && p[i] == '.') {
                data_emit(o, run, (size_t)(p + i - run));
                i++;
                run = p + i;
                d->state = (d->state & ~DS_MASK) | DS_DOT;
                continue;
            }
            break;
        case DS_DOT:
            if (p[i] == '\r') {
                /* Maybe the end: hold the CR back until we see what follows. */
                i++;
                run = p + i;
                d->state = (d->state & ~DS_MASK) | DS_DOT_CR;
                continue;
            }
            break;
        case DS_DOT_CR:
            if (p[i] == '\n') {
                /* ".\r\n" at the start of a line: the end; neither is body. */
                d->done = true;
                return i + 1;
            }
            /* ".\rX": the dot was stuffing, the CR is a bare CR of the body. */
            data_bad(d, DATA_BARE_CR);
            data_emit(o, "\r", 1);
            break;
        case DS_CR:
            if (p[i] == '\n') {
                d->lines++;
                i++;
                d->state = (d->state & ~DS_MASK) | DS_BOL;
                continue;
            }
            data_bad(d, DATA_BARE_CR);
            break;
        default:
            break;
        }

        /* Inside a line: everything up to and including the next LF, or to the end. */
        const char *s = p + i;
        const char *lf = memchr(s, '\n', n - i);
        size_t len = lf != NULL ? (size_t)(lf - s) : n - i;

        data_check(d, s, len);
        if (lf == NULL) {
            d->state = (d->state & ~DS_MASK) | (s[len - 1] == '\r' ? DS_CR : DS_MID);
            i = n;
            break;
        }
        if (len > 0 && s[len - 1] == '\r') {
            d->lines++;
            d->state = (d->state & ~DS_MASK) | DS_BOL;
        } else {
            /* The octet before is not a CR (DS_CR would have taken this LF). */
            data_bad(d, DATA_BARE_LF);
            d->state = (d->state & ~DS_MASK) | DS_MID;
        }
        i += len + 1;
    }
    data_emit(o, run, (size_t)(p + i - run));
    return i;
}

void
smtp_data_init(struct smtp_data *d, unsigned long long max_size)
{
    memset(d, 0, sizeof(*d));
    d->state = DS_BOL;
    d->max_size = max_size;
}

size_t
smtp_data_feed(struct smtp_data *d, const char *p, size_t n, smtp_data_sink sink, void *ctx,
    int *sink_err)
{
    struct data_out o = {d, sink, ctx, sink_err};

    if (d->done || n == 0)
        return 0;
    return data_scan(d, p, n, true, &o);
}

void
smtp_data_bdat(struct smtp_data *d, const char *p, size_t n, smtp_data_sink sink, void *ctx,
    int *sink_err)
{
    struct data_out o = {d, sink, ctx, sink_err};

    if (n == 0)
        return;
    (void)data_scan(d, p, n, false, &o);
}

void
smtp_data_bdat_end(struct smtp_data *d)
{
    /* The CR was passed on as body already; only now do we know no LF follows. */
    if ((d->state & DS_MASK) == DS_CR)
        data_bad(d, DATA_BARE_CR);
    d->state = (d->state & ~DS_MASK) | DS_BOL;
    d->done = true;
}
