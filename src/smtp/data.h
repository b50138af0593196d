/*
 * data.h - DATA framing: end-of-data detection, dot-unstuffing, line checks.
 *
 * Pure and resumable: feed any split of the byte stream, get the same result.
 * The message ends only at CRLF "." CRLF (RFC 5321 §4.1.1.4); the first line
 * may be ".\r\n" right after the 354 (an empty message).  A leading dot on a
 * line is removed (§4.5.2).  Every line must end in CRLF: a bare LF, or a CR
 * not followed by LF, anywhere in the data is recorded (DATA_BARE_LF /
 * DATA_BARE_CR) and never ends the message, so "\n.\n", "\n.\r\n",
 * "\r\n.\n", "\r.\r" and friends (the SMTP smuggling sequences) are plain
 * content; the session refuses the whole message at the real end.
 *
 * The body handed to the sink has CRLF line endings exactly as received
 * (minus the stuffed dots and the final ".\r\n").  Bytes past max_size are
 * counted but not handed on (DATA_TOO_BIG).
 */
#ifndef TERN_SMTP_DATA_H
#define TERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>

#define DATA_BARE_LF 0x1
#define DATA_BARE_CR 0x2
#define DATA_TOO_BIG 0x4
#define DATA_NUL 0x8        /* a NUL octet (recorded; RFC 5321 §4.1.1.4 forbids it) */
#define DATA_8BIT 0x10      /* an octet >= 0x80 */

typedef int (*smtp_data_sink)(void *ctx, const char *p, size_t n);

struct smtp_data {
    int state;              /* private */
    unsigned flags;         /* DATA_* seen so far */
    unsigned long long size; /* body octets after unstuffing (all of them, even past max) */
    unsigned long long max_size;
    unsigned long lines;
    unsigned long first_bad_line; /* 1-based line of the first bare CR/LF, 0 if none */
    bool done;
};

/* Start a message: the same state serves DATA (smtp_data_feed) or BDAT (smtp_data_bdat). */
void smtp_data_init(struct smtp_data *d, unsigned long long max_size);

/*
 * Consume up to n bytes of DATA input; returns how many were consumed (less
 * than n only when the end of data was reached: d->done is then set and the
 * rest belongs to the next command).  Unstuffed body bytes go to sink, in
 * pieces; if sink returns -1 the bytes are still consumed and counted, and
 * smtp_data_feed stops calling it (the caller remembers the failure).
 */
size_t smtp_data_feed(struct smtp_data *d, const char *p, size_t n, smtp_data_sink sink,
    void *ctx, int *sink_err);

/*
 * BDAT: check and pass on raw chunk bytes (no dot handling, no end marker);
 * bare CR/LF are recorded as for DATA.  A CR at the end of one chunk followed
 * by LF at the start of the next is a proper CRLF.  Call smtp_data_bdat_end()
 * after the LAST chunk: a trailing lone CR is then recorded as bare.
 */
void smtp_data_bdat(struct smtp_data *d, const char *p, size_t n, smtp_data_sink sink,
    void *ctx, int *sink_err);
void smtp_data_bdat_end(struct smtp_data *d);

#endif
