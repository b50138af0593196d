/*
 * addr.c - RFC 5321 paths and HELO/EHLO domains (see addr.h).
 *
 * smtp_addr_parse() works in two passes over p[0..len); neither reads past len
 * nor allocates:
 *
 *   1. addr_scan() finds the closing '>' (a '>' inside a quoted local part does
 *      not count) and notes any NUL, control character, 8-bit octet and
 *      unquoted space before it.  These get their own errors whatever grammar
 *      rule they also break, because "NUL character in the address" tells the
 *      sender more than "bad local part"; and the grammar pass then only sees
 *      printable ASCII, quoted spaces and well-formed UTF-8.
 *   2. addr_route(), addr_local() and addr_domain() walk the grammar left to
 *      right; the first error found is the one reported.  The overall length
 *      limit is checked last so that a too-long local part or domain gets the
 *      more specific error.
 *
 * The mailbox is copied to out->addr only once the path is known to be valid
 * and so no longer than SMTP_PATH_MAX - 2 octets.
 */
#include "smtp/addr.h"

#include <arpa/inet.h>
#include <string.h>

/* flags for addr_domain() */
#define DOM_UTF8 0x1       /* U-labels allowed (RFC 6531) */
#define DOM_UNDERSCORE 0x2 /* '_' allowed in labels: HELO names, as sent in the wild */
#define DOM_NO_LITERAL 0x4 /* a source route's At-domain: Domain only */

#define SMTP_LABEL_MAX 63 /* RFC 1035 §2.3.4 */

static const char *const addr_errors[ADDR_ERR__COUNT] = {
    [ADDR_OK] = "ok",
    [ADDR_ERR_EMPTY] = "empty address",
    [ADDR_ERR_NO_OPEN_BRACKET] = "address must start with '<'",
    [ADDR_ERR_NO_CLOSE_BRACKET] = "missing closing '>'",
    [ADDR_ERR_NULL_PATH] = "null path <> not allowed here",
    [ADDR_ERR_SPACE] = "space inside the address",
    [ADDR_ERR_CTRL] = "control character in the address",
    [ADDR_ERR_NUL] = "NUL character in the address",
    [ADDR_ERR_ROUTE] = "malformed source route",
    [ADDR_ERR_LOCAL_SYNTAX] = "invalid character or dot in the local part",
    [ADDR_ERR_LOCAL_EMPTY] = "empty local part",
    [ADDR_ERR_QUOTE_UNTERMINATED] = "unterminated quoted string",
    [ADDR_ERR_NO_AT] = "missing '@' and domain",
    [ADDR_ERR_DOMAIN_EMPTY] = "empty domain",
    [ADDR_ERR_DOMAIN_SYNTAX] = "invalid domain name",
    [ADDR_ERR_ADDR_LITERAL] = "invalid address literal",
    [ADDR_ERR_LOCAL_TOO_LONG] = "local part longer than 64 octets",
    [ADDR_ERR_DOMAIN_TOO_LONG] = "domain longer than 255 octets or label longer than 63",
    [ADDR_ERR_PATH_TOO_LONG] = "path longer than 256 octets",
    [ADDR_ERR_UTF8] = "8-bit characters need SMTPUTF8",
    [ADDR_ERR_BAD_UTF8] = "malformed UTF-8",
    [ADDR_ERR_TRAILING] = "unexpected characters after '>'",
};

/* Character classes by hand: <ctype.h> depends on the locale, SMTP does not. */
static inline bool
is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool
is_letdig(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

static inline bool
is_ctrl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* RFC 5322 §3.2.3 atext, ASCII part; RFC 6531 adds UTF8-non-ascii. */
static bool
is_atext(unsigned char c)
{
    return is_letdig(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static inline unsigned char
to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Compare n octets of p with the lower-case ASCII string s, ignoring case. */
static bool
ascii_caseeq(const char *p, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (to_lower((unsigned char)p[i]) != (unsigned char)s[i])
            return false;
    return true;
}

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), or 0 if there is none
 * (RFC 3629 §4): the ranges of the second octet rule out overlong forms,
 * surrogates (U+D800..DFFF) and code points above U+10FFFF.
 */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t need, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        need = 1;
    else if (s[0] == 0xe0) {
        need = 2;
        lo = 0xa0;
    } else if (s[0] == 0xed) {
        need = 2;
        hi = 0x9f;
    } else if (s[0] >= 0xe1 && s[0] <= 0xef)
        need = 2;
    else if (s[0] == 0xf0) {
        need = 3;
        lo = 0x90;
    } else if (s[0] >= 0xf1 && s[0] <= 0xf3)
        need = 3;
    else if (s[0] == 0xf4) {
        need = 3;
        hi = 0x8f;
    } else
        return 0;
    if (n < need + 1 || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need + 1;
}

static bool
utf8_valid(const char *p, size_t len)
{
    size_t i, n;

    for (i = 0; i < len; i += n)
        if ((n = utf8_seq((const unsigned char *)p + i, len - i)) == 0)
            return false;
    return true;
}

/*
 * Address literal p[0..len), brackets included (RFC 5321 §4.1.3).  The text
 * is copied to a NUL-terminated buffer for inet_pton(), so it is first
 * checked to be short enough and to hold no NUL of its own.
 */
static enum addr_err
addr_literal(const char *p, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char bin[16];
    unsigned char c;
    size_t i;

    if (len < 3 || p[len - 1] != ']' || memchr(p, '\0', len) != NULL)
        return ADDR_ERR_ADDR_LITERAL;
    p++;
    len -= 2;

    if (len >= 5 && ascii_caseeq(p, "ipv6:", 5)) {
        p += 5;
        len -= 5;
        if (len == 0 || len >= sizeof(buf))
            return ADDR_ERR_ADDR_LITERAL;
        memcpy(buf, p, len);
        buf[len] = '\0';
        return inet_pton(AF_INET6, buf, bin) == 1 ? ADDR_OK : ADDR_ERR_ADDR_LITERAL;
    }

    for (i = 0; i < len && (is_digit((unsigned char)p[i]) || p[i] == '.'); i++)
        ;
    if (i == len) {
        if (len >= INET_ADDRSTRLEN)
            return ADDR_ERR_ADDR_LITERAL;
        memcpy(buf, p, len);
        buf[len] = '\0';
        return inet_pton(AF_INET, buf, bin) == 1 ? ADDR_OK : ADDR_ERR_ADDR_LITERAL;
    }

    /* General-address-literal = Standardized-tag ":" 1*dcontent; the tag is an Ldh-str. */
    for (i = 0; i < len && (is_letdig((unsigned char)p[i]) || p[i] == '-'); i++)
        ;
    if (i == 0 || i == len || p[i] != ':' || p[i - 1] == '-' || i + 1 == len)
        return ADDR_ERR_ADDR_LITERAL;
    for (i++; i < len; i++) {
        c = (unsigned char)p[i];
        if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']')
            return ADDR_ERR_ADDR_LITERAL;
    }
    return ADDR_OK;
}

/*
 * Domain or address literal at p[0..len).  Octets >= 0x80 are taken as parts
 * of U-labels when DOM_UTF8 is set; the caller has checked they form valid
 * UTF-8.
 */
static enum addr_err
addr_domain(const char *p, size_t len, unsigned dflags, bool *literal)
{
    size_t i, label = 0;
    bool ascii = true;
    unsigned char c;

    *literal = false;
    if (len == 0)
        return ADDR_ERR_DOMAIN_EMPTY;
    if (len > SMTP_DOMAIN_MAX)
        return ADDR_ERR_DOMAIN_TOO_LONG;
    if (p[0] == '[') {
        if (dflags & DOM_NO_LITERAL)
            return ADDR_ERR_ADDR_LITERAL;
        *literal = true;
        return addr_literal(p, len);
    }

    for (i = 0; i <= len; i++) {
        if (i == len || p[i] == '.') {
            /* Empty label: leading, doubled or trailing dot. */
            if (label == 0)
                return ADDR_ERR_DOMAIN_SYNTAX;
            /*
             * XXX The 63 limit is on the A-label (punycode) form, which we do
             * not compute: a U-label is held only to the 255 octets overall,
             * rather than refusing one whose UTF-8 is longer than its A-label.
             */
            if (ascii && label > SMTP_LABEL_MAX)
                return ADDR_ERR_DOMAIN_TOO_LONG;
            if (p[i - 1] == '-')
                return ADDR_ERR_DOMAIN_SYNTAX;
            label = 0;
            ascii = true;
            continue;
        }
        c = (unsigned char)p[i];
        if (c == '-') {
            if (label == 0)
                return ADDR_ERR_DOMAIN_SYNTAX;
        } else if (c >= 0x80) {
            if (!(dflags & DOM_UTF8))
                return ADDR_ERR_DOMAIN_SYNTAX;
            ascii = false;
        } else if (!is_letdig(c) && !(c == '_' && (dflags & DOM_UNDERSCORE)))
            return ADDR_ERR_DOMAIN_SYNTAX;
        label++;
    }
    return ADDR_OK;
}

/*
 * Pass 1: find the '>' that closes the path at p[0] == '<'.  A quoted string
 * can only start the local part, that is right after '<' or after the ':'
 * ending a source route; elsewhere '"' is just a bad character for pass 2.
 *
 * XXX A general address literal may contain '>' by the grammar (dcontent);
 * such a literal is cut short here.  No registered tag uses one.
 */
static enum addr_err
addr_scan(const char *p, size_t len, unsigned flags, size_t *end)
{
    bool found = false, quoted = false, space = false, in_route, nul = false, ctrl = false,
         high = false;
    size_t i, lstart = 1, lim;
    unsigned char c;

    in_route = len > 1 && p[1] == '@';
    for (i = 1; i < len; i++) {
        c = (unsigned char)p[i];
        if (quoted) {
            if (c == '\\')
                i++;
            else if (c == '"')
                quoted = false;
            continue;
        }
        if (c == '>') {
            found = true;
            break;
        }
        if (c == '"' && i == lstart)
            quoted = true;
        else if (c == ':' && in_route) {
            in_route = false;
            lstart = i + 1;
        } else if (c == ' ')
            space = true;
    }
    lim = found ? i : len;
    *end = lim;

    for (i = 1; i < lim; i++) {
        c = (unsigned char)p[i];
        if (c == '\0')
            nul = true;
        else if (is_ctrl(c))
            ctrl = true;
        else if (c >= 0x80)
            high = true;
    }

    if (nul)
        return ADDR_ERR_NUL;
    if (quoted)
        return ADDR_ERR_QUOTE_UNTERMINATED;
    if (!found)
        return ADDR_ERR_NO_CLOSE_BRACKET;
    if (ctrl)
        return ADDR_ERR_CTRL;
    if (high && !(flags & ADDR_UTF8))
        return ADDR_ERR_UTF8;
    if (high && !utf8_valid(p + 1, lim - 1))
        return ADDR_ERR_BAD_UTF8;
    if (space)
        return ADDR_ERR_SPACE;
    return ADDR_OK;
}

/*
 * Source route "@a,@b:" starting at p[*i] == '@' (RFC 5321 §4.1.1.3): checked
 * and skipped, never used.  "<@domain>" with no route after it is a mailbox
 * without its local part, and is reported as such.
 */
static enum addr_err
addr_route(const char *p, size_t end, unsigned flags, size_t *i)
{
    size_t j = *i, start, n;
    bool literal;
    unsigned dflags = DOM_NO_LITERAL | ((flags & ADDR_UTF8) ? DOM_UTF8 : 0);

    for (n = 0;; n++) {
        start = ++j; /* past '@' */
        while (j < end && p[j] != ',' && p[j] != ':')
            j++;
        if (j == end)
            return n == 0 ? ADDR_ERR_LOCAL_EMPTY : ADDR_ERR_ROUTE;
        if (addr_domain(p + start, j - start, dflags, &literal) != ADDR_OK)
            return ADDR_ERR_ROUTE;
        if (p[j] == ':')
            break;
        if (++j >= end || p[j] != '@')
            return ADDR_ERR_ROUTE;
    }
    *i = j + 1;
    return ADDR_OK;
}

/*
 * Local part from p[*i], up to the '@' or the end of the path; *i is left on
 * the '@' (or at end).
 */
static enum addr_err
addr_local(const char *p, size_t end, size_t *i)
{
    size_t j = *i, start = *i;
    unsigned char c;
    bool dot = true;

    if (p[j] == '"') {
        /* Quoted-string: qtextSMTP / quoted-pairSMTP (RFC 5321 §4.1.2). */
        for (j++;; j++) {
            if (j >= end)
                return ADDR_ERR_QUOTE_UNTERMINATED;
            c = (unsigned char)p[j];
            if (c == '"')
                break;
            if (c == '\\') {
                if (++j >= end)
                    return ADDR_ERR_QUOTE_UNTERMINATED;
                c = (unsigned char)p[j];
                if (c < 32 || c > 126)
                    return ADDR_ERR_LOCAL_SYNTAX;
            } else if (is_ctrl(c))
                return ADDR_ERR_LOCAL_SYNTAX;
        }
        j++;
        if (j < end && p[j] != '@')
            return ADDR_ERR_LOCAL_SYNTAX;
    } else {
        /* Dot-string: atoms separated by single dots. */
        for (; j < end && p[j] != '@'; j++) {
            c = (unsigned char)p[j];
            if (c == '.') {
                if (dot)
                    return ADDR_ERR_LOCAL_SYNTAX;
                dot = true;
            } else if (is_atext(c) || c >= 0x80)
                dot = false;
            else
                return ADDR_ERR_LOCAL_SYNTAX;
        }
        if (j == start)
            return ADDR_ERR_LOCAL_EMPTY;
        if (dot)
            return ADDR_ERR_LOCAL_SYNTAX;
    }
    if (j - start > SMTP_LOCAL_MAX)
        return ADDR_ERR_LOCAL_TOO_LONG;
    *i = j;
    return ADDR_OK;
}

enum addr_err
smtp_addr_parse(const char *p, size_t len, unsigned flags, struct smtp_path *out, size_t *consumed)
{
    size_t end, i, mbox, at, n;
    enum addr_err e;
    bool literal = false;

    out->addr[0] = '\0';
    out->len = 0;
    out->at = 0;
    out->utf8 = false;
    out->literal = false;
    *consumed = 0;

    if (len == 0)
        return ADDR_ERR_EMPTY;
    if (p[0] != '<')
        return ADDR_ERR_NO_OPEN_BRACKET;
    if ((e = addr_scan(p, len, flags, &end)) != ADDR_OK)
        return e;

    if (end == 1) {
        if (!(flags & ADDR_NULL_OK))
            return ADDR_ERR_NULL_PATH;
        at = 0;
        mbox = 1;
    } else {
        i = 1;
        if (p[1] == '@' && (e = addr_route(p, end, flags, &i)) != ADDR_OK)
            return e;
        mbox = i;
        if (mbox == end)
            return ADDR_ERR_ROUTE; /* "<@a:>": a route to nobody */
        if ((e = addr_local(p, end, &i)) != ADDR_OK)
            return e;
        if (i == end) {
            /* RFC 5321 §4.5.1: "<Postmaster>" needs no domain. */
            if (!(flags & ADDR_NO_DOMAIN_OK) || end - mbox != 10 ||
                !ascii_caseeq(p + mbox, "postmaster", 10))
                return ADDR_ERR_NO_AT;
            at = 0;
        } else {
            at = i - mbox;
            e = addr_domain(p + i + 1, end - i - 1, (flags & ADDR_UTF8) ? DOM_UTF8 : 0, &literal);
            if (e != ADDR_OK)
                return e;
        }
    }

    /* RFC 5321 §4.5.3.1.3 counts the route and the brackets too. */
    if (end + 1 > SMTP_PATH_MAX)
        return ADDR_ERR_PATH_TOO_LONG;
    if (end + 1 < len && p[end + 1] != ' ')
        return ADDR_ERR_TRAILING;

    n = end - mbox;
    memcpy(out->addr, p + mbox, n);
    out->addr[n] = '\0';
    out->len = (unsigned short)n;
    out->at = (unsigned short)at;
    out->literal = literal;
    for (i = 0; i < n; i++)
        if ((unsigned char)out->addr[i] >= 0x80)
            out->utf8 = true;
    *consumed = end + 1;
    return ADDR_OK;
}

const char *
smtp_addr_strerror(enum addr_err e)
{
    if ((unsigned)e >= ADDR_ERR__COUNT || addr_errors[e] == NULL)
        return "unknown address error";
    return addr_errors[e];
}

bool
smtp_addr_domain_valid(const char *p, size_t len, bool utf8)
{
    size_t i;
    unsigned char c;
    bool literal;

    if (p == NULL || len == 0)
        return false;
    for (i = 0; i < len; i++) {
        c = (unsigned char)p[i];
        if (is_ctrl(c) || c == ' ')
            return false;
        if (c >= 0x80 && !utf8)
            return false;
    }
    if (utf8 && !utf8_valid(p, len))
        return false;
    return addr_domain(p, len, DOM_UNDERSCORE | (utf8 ? DOM_UTF8 : 0), &literal) == ADDR_OK;
}
