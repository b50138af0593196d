/*
 * replyparse.c - reading SMTP/LMTP replies as a client (see replyparse.h).
 *
 * Promises: pure (no I/O, no clock, no malloc); resumable at any byte, and the
 * result (status, *used, and every field) is the same however the input is
 * split; never reads p[n] or beyond; never writes past its own struct.
 *
 * Rules, octet by octet:
 *   - A line ends at CRLF or at a bare LF (RFC 5321 §4.2 asks clients to be
 *     liberal here).  A CR followed by anything but LF is an error: a server
 *     that sends one is broken or is being used to smuggle something, and
 *     guessing where its line ends is how smuggling starts.  A NUL is an error
 *     too: reply text is printable ASCII, and a NUL would cut our C string.
 *   - A line is "DDD" alone, "DDD text" (the last line of the reply) or
 *     "DDD-text" (more follow), with DDD in 200..599 and the same on every
 *     line; content longer than REPLYPARSE_LINE_MAX octets or a 101st line is
 *     an error, detected as soon as the offending octet or line arrives.
 *   - The first line's text may start with an enhanced status code of the
 *     reply's class ("X.Y.Z", Y and Z of 1-3 digits, then a space or the end):
 *     it goes to esc, without its space.  A later line that starts with the
 *     same code followed by a space or the end loses it too (RFC 2034 servers
 *     repeat it on every line); a different one stays in the text.
 *   - The texts are joined with "; " (empty ones add nothing) and truncated,
 *     silently, at REPLYPARSE_TEXT_MAX - 1 octets.
 *
 * A pending CR is kept as the last octet of line[], so a CRLF split across two
 * calls needs no extra state.  After ERROR the parser stays in error (each
 * call returns ERROR and uses nothing) until replyparse_init().
 */
#include "smtp/replyparse.h"

#include <string.h>

#define REPLYPARSE_LINES_MAX 100

void
replyparse_init(struct replyparse *r)
{
    memset(r, 0, sizeof(*r));
}

static enum replyparse_status
replyparse_fail(struct replyparse *r, const char *why)
{
    r->error = why;
    r->in_reply = false;
    return REPLYPARSE_ERROR;
}

static bool
replyparse_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of the enhanced status code of class cls at the start of s[0..n), or 0. */
static size_t
replyparse_esc_len(const char *s, size_t n, unsigned cls)
{
    size_t i = 2, k;
    int part;

    if ((cls != 2 && cls != 4 && cls != 5) || n < 5 || s[0] != (char)('0' + cls) || s[1] != '.')
        return 0;
    for (part = 0; part < 2; part++) {
        for (k = 0; i < n && k < 3 && replyparse_digit(s[i]); k++)
            i++;
        if (k == 0)
            return 0;
        if (part == 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < n && s[i] != ' ')
        return 0; /* a fourth digit, or "2.0.0x": not an enhanced code */
    return i;
}

static void
replyparse_append(struct replyparse *r, const char *s, size_t n)
{
    size_t len = strlen(r->text), room = REPLYPARSE_TEXT_MAX - 1 - len;

    if (n == 0)
        return;
    if (len > 0) {
        size_t sep = room < 2 ? room : 2;

        memcpy(r->text + len, "; ", sep);
        len += sep;
        room -= sep;
    }
    if (n > room)
        n = room;
    memcpy(r->text + len, s, n);
    r->text[len + n] = '\0';
}

/* One complete line, without its line end, is in r->line[0..r->linelen). */
static enum replyparse_status
replyparse_line(struct replyparse *r)
{
    const char *l = r->line, *text;
    size_t len = r->linelen, tlen, e;
    unsigned code;
    bool last;

    if (len < 3)
        return replyparse_fail(r, "reply line shorter than a reply code");
    if (!replyparse_digit(l[0]) || !replyparse_digit(l[1]) || !replyparse_digit(l[2]))
        return replyparse_fail(r, "reply line does not start with a three-digit code");
    code = (unsigned)(l[0] - '0') * 100 + (unsigned)(l[1] - '0') * 10 + (unsigned)(l[2] - '0');
    if (code < 200 || code > 599)
        return replyparse_fail(r, "reply code outside 200-599");
    if (len == 3 || l[3] == ' ')
        last = true;
    else if (l[3] == '-')
        last = false;
    else
        return replyparse_fail(r, "reply code not followed by a space or a hyphen");

    if (!r->in_reply) {
        r->code = code;
        r->esc[0] = '\0';
        r->text[0] = '\0';
        r->lines = 0;
        r->in_reply = true;
    } else if (code != r->code) {
        return replyparse_fail(r, "lines of one reply with different codes");
    }
    if (r->lines >= REPLYPARSE_LINES_MAX)
        return replyparse_fail(r, "reply longer than 100 lines");
    r->lines++;

    text = len > 3 ? l + 4 : l + 3;
    tlen = len > 3 ? len - 4 : 0;
    if (r->lines == 1) {
        e = replyparse_esc_len(text, tlen, code / 100);
        if (e > 0) {
            memcpy(r->esc, text, e);
            r->esc[e] = '\0';
        }
    } else {
        e = strlen(r->esc);
        if (e == 0 || tlen < e || memcmp(text, r->esc, e) != 0 || (tlen > e && text[e] != ' '))
            e = 0;
    }
    if (e > 0) {
        text += e;
        tlen -= e;
        if (tlen > 0) {
            text++; /* the space after the enhanced code */
            tlen--;
        }
    }
    replyparse_append(r, text, tlen);
    if (last) {
        r->in_reply = false;
        return REPLYPARSE_DONE;
    }
    return REPLYPARSE_MORE;
}

enum replyparse_status
replyparse_feed(struct replyparse *r, const char *p, size_t n, size_t *used)
{
    enum replyparse_status st;
    size_t i;

    *used = 0;
    if (r->error != NULL)
        return REPLYPARSE_ERROR;
    for (i = 0; i < n; i++) {
        char c = p[i];

        if (r->linelen > 0 && r->line[r->linelen - 1] == '\r') {
            if (c != '\n') {
                *used = i + 1;
                return replyparse_fail(r, "bare CR in reply line");
            }
            r->linelen--;
        } else if (c == '\r') {
            /* Held as the last octet; the content before it is at most LINE_MAX. */
            r->line[r->linelen++] = c;
            continue;
        } else if (c != '\n') {
            if (c == '\0' || r->linelen >= REPLYPARSE_LINE_MAX) {
                *used = i + 1;
                return replyparse_fail(
                    r, c == '\0' ? "NUL in reply line" : "reply line longer than 1000 octets");
            }
            r->line[r->linelen++] = c;
            continue;
        }
        /* c is the LF ending a line (after a CR or bare). */
        st = replyparse_line(r);
        r->linelen = 0;
        if (st != REPLYPARSE_MORE) {
            *used = i + 1;
            return st;
        }
    }
    *used = n;
    return REPLYPARSE_MORE;
}
