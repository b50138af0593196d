/*
 * dsn.c - the SMTP DSN extension's parameters (see dsn.h).
 *
 * Promises: pure (no I/O, no clock, no malloc); never reads past the counted
 * input; every output NUL-terminated within the size given.  A value is
 * refused rather than repaired: the client learns at MAIL or RCPT time, with
 * a 501, instead of getting a DSN that misquotes what it asked for.
 */
#include "smtp/dsn.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(((struct dsn_rcpt_params *)0)->orcpt) > DSN_ORCPT_MAX, "orcpt too small");
_Static_assert(sizeof(((struct dsn_msg_params *)0)->envid) > DSN_ENVID_MAX, "envid too small");

static bool
dsn_word_is(const char *v, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(v, word, len) == 0;
}

static int
dsn_hexval(char c)
{
    /* Upper case only: RFC 3461 §4 spells hexchar with "A".."F". */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool
dsn_xchar(unsigned char c)
{
    return c >= '!' && c <= '~' && c != '+' && c != '=';
}

/* RFC 5322 atext. */
static bool
dsn_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

bool
dsn_xtext_valid(const char *v, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (v[i] == '+') {
            if (i + 2 >= len || dsn_hexval(v[i + 1]) < 0 || dsn_hexval(v[i + 2]) < 0)
                return false;
            i += 2;
        } else if (!dsn_xchar((unsigned char)v[i])) {
            return false;
        }
    }
    return true;
}

int
dsn_xtext_encode(const char *v, size_t len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];

        if (dsn_xchar(c)) {
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= outlen)
                return -1;
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return (int)o;
}

int
dsn_xtext_decode(const char *v, size_t len, char *out, size_t outlen)
{
    size_t i, o = 0;

    if (!dsn_xtext_valid(v, len))
        return -1;
    for (i = 0; i < len; i++) {
        if (o + 1 >= outlen)
            return -1;
        if (v[i] == '+') {
            out[o++] = (char)(dsn_hexval(v[i + 1]) << 4 | dsn_hexval(v[i + 2]));
            i += 2;
        } else {
            out[o++] = v[i];
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return (int)o;
}

/*
 * RFC 3461 §4.2: the decoded value must be printable US-ASCII ("graphic and
 * white space"), since a DSN has to show it in a header field.  A NUL, CR or
 * LF hidden behind "+00" / "+0D" would otherwise end up there.
 */
static bool
dsn_xtext_printable(const char *v, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (v[i] == '+') {
            int c = dsn_hexval(v[i + 1]) << 4 | dsn_hexval(v[i + 2]);

            if (c != '\t' && (c < ' ' || c > '~'))
                return false;
            i += 2;
        }
    }
    return true;
}

int
dsn_parse_notify(const char *v, size_t len, unsigned *notify, const char **why)
{
    unsigned bits = 0, bit;
    size_t i = 0, j;

    if (len == 0) {
        *why = "NOTIFY needs a value";
        return -1;
    }
    while (i <= len) {
        for (j = i; j < len && v[j] != ','; j++)
            ;
        if (dsn_word_is(v + i, j - i, "NEVER"))
            bit = DSN_NOTIFY_NEVER;
        else if (dsn_word_is(v + i, j - i, "SUCCESS"))
            bit = DSN_NOTIFY_SUCCESS;
        else if (dsn_word_is(v + i, j - i, "FAILURE"))
            bit = DSN_NOTIFY_FAILURE;
        else if (dsn_word_is(v + i, j - i, "DELAY"))
            bit = DSN_NOTIFY_DELAY;
        else {
            *why = "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY";
            return -1;
        }
        if (bits & bit) {
            *why = "NOTIFY lists a keyword twice";
            return -1;
        }
        bits |= bit;
        if ((bits & DSN_NOTIFY_NEVER) && bits != DSN_NOTIFY_NEVER) {
            *why = "NOTIFY=NEVER cannot be combined with other keywords";
            return -1;
        }
        i = j + 1;
    }
    *notify = bits;
    return 0;
}

int
dsn_parse_ret(const char *v, size_t len, int *ret, const char **why)
{
    if (dsn_word_is(v, len, "FULL"))
        *ret = DSN_RET_FULL;
    else if (dsn_word_is(v, len, "HDRS"))
        *ret = DSN_RET_HDRS;
    else {
        *why = "RET must be FULL or HDRS";
        return -1;
    }
    return 0;
}

int
dsn_check_orcpt(const char *v, size_t len, const char **why)
{
    size_t i;

    if (len > DSN_ORCPT_MAX) {
        *why = "ORCPT longer than 500 characters";
        return -1;
    }
    for (i = 0; i < len && v[i] != ';'; i++) {
        if (!dsn_atext((unsigned char)v[i])) {
            *why = "ORCPT address type is not an atom";
            return -1;
        }
    }
    if (i == len) {
        *why = "ORCPT must be addr-type;address";
        return -1;
    }
    if (i == 0) {
        *why = "ORCPT address type is empty";
        return -1;
    }
    i++;
    if (i == len) {
        *why = "ORCPT address is empty";
        return -1;
    }
    if (!dsn_xtext_valid(v + i, len - i)) {
        *why = "ORCPT address is not valid xtext";
        return -1;
    }
    if (!dsn_xtext_printable(v + i, len - i)) {
        *why = "ORCPT address is not printable ASCII";
        return -1;
    }
    return 0;
}

int
dsn_check_envid(const char *v, size_t len, const char **why)
{
    if (len == 0) {
        *why = "ENVID is empty";
        return -1;
    }
    if (len > DSN_ENVID_MAX) {
        *why = "ENVID longer than 100 characters";
        return -1;
    }
    if (!dsn_xtext_valid(v, len)) {
        *why = "ENVID is not valid xtext";
        return -1;
    }
    if (!dsn_xtext_printable(v, len)) {
        *why = "ENVID is not printable ASCII";
        return -1;
    }
    return 0;
}

enum dsn_param_result
dsn_mail_param(struct dsn_msg_params *p, const char *key, size_t keylen, const char *val,
    size_t vallen, const char **why)
{
    if (dsn_word_is(key, keylen, "RET")) {
        if (p->ret != DSN_RET_UNSPEC) {
            *why = "RET given twice";
            return DSN_PARAM_ERR;
        }
        if (val == NULL) {
            *why = "RET needs a value";
            return DSN_PARAM_ERR;
        }
        return dsn_parse_ret(val, vallen, &p->ret, why) == 0 ? DSN_PARAM_OK : DSN_PARAM_ERR;
    }
    if (dsn_word_is(key, keylen, "ENVID")) {
        if (p->envid[0] != '\0') {
            *why = "ENVID given twice";
            return DSN_PARAM_ERR;
        }
        if (val == NULL) {
            *why = "ENVID needs a value";
            return DSN_PARAM_ERR;
        }
        if (dsn_check_envid(val, vallen, why) == -1)
            return DSN_PARAM_ERR;
        memcpy(p->envid, val, vallen);
        p->envid[vallen] = '\0';
        return DSN_PARAM_OK;
    }
    return DSN_PARAM_NOT_MINE;
}

enum dsn_param_result
dsn_rcpt_param(struct dsn_rcpt_params *p, const char *key, size_t keylen, const char *val,
    size_t vallen, const char **why)
{
    if (dsn_word_is(key, keylen, "NOTIFY")) {
        if (p->notify != 0) {
            *why = "NOTIFY given twice";
            return DSN_PARAM_ERR;
        }
        if (val == NULL) {
            *why = "NOTIFY needs a value";
            return DSN_PARAM_ERR;
        }
        return dsn_parse_notify(val, vallen, &p->notify, why) == 0 ? DSN_PARAM_OK : DSN_PARAM_ERR;
    }
    if (dsn_word_is(key, keylen, "ORCPT")) {
        if (p->orcpt[0] != '\0') {
            *why = "ORCPT given twice";
            return DSN_PARAM_ERR;
        }
        if (val == NULL) {
            *why = "ORCPT needs a value";
            return DSN_PARAM_ERR;
        }
        if (dsn_check_orcpt(val, vallen, why) == -1)
            return DSN_PARAM_ERR;
        memcpy(p->orcpt, val, vallen);
        p->orcpt[vallen] = '\0';
        return DSN_PARAM_OK;
    }
    return DSN_PARAM_NOT_MINE;
}

int
dsn_orcpt_decode(const char *orcpt, char *out, size_t outlen)
{
    const char *semi = strchr(orcpt, ';');
    size_t tl;
    int n;

    if (semi == NULL)
        return -1;
    tl = (size_t)(semi - orcpt) + 1;
    if (tl >= outlen)
        return -1;
    memcpy(out, orcpt, tl);
    n = dsn_xtext_decode(semi + 1, strlen(semi + 1), out + tl, outlen - tl);
    return n < 0 ? -1 : (int)tl + n;
}

int
dsn_notify_format(unsigned notify, char *out, size_t outlen)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {DSN_NOTIFY_NEVER, "NEVER"},
        {DSN_NOTIFY_SUCCESS, "SUCCESS"},
        {DSN_NOTIFY_FAILURE, "FAILURE"},
        {DSN_NOTIFY_DELAY, "DELAY"},
    };
    size_t i, o = 0;

    if (outlen == 0)
        return -1;
    out[0] = '\0';
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t nl = strlen(names[i].name);

        if (!(notify & names[i].bit))
            continue;
        if (o + (o > 0) + nl >= outlen)
            return -1;
        if (o > 0)
            out[o++] = ',';
        memcpy(out + o, names[i].name, nl + 1);
        o += nl;
    }
    return (int)o;
}

/* Append "K=v" (with a separating space when out is not empty). */
static int
dsn_text_item(char *out, size_t outlen, size_t *o, char key, const char *v)
{
    int n = snprintf(out + *o, outlen - *o, "%s%c=%s", *o ? " " : "", key, v);

    if (n < 0 || (size_t)n >= outlen - *o)
        return -1;
    *o += (size_t)n;
    return 0;
}

int
dsn_rcpt_format(const struct dsn_rcpt_params *p, char *out, size_t outlen)
{
    char notify[32];
    size_t o = 0;

    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (p->notify != 0) {
        if (dsn_notify_format(p->notify, notify, sizeof(notify)) < 0 ||
            dsn_text_item(out, outlen, &o, 'N', notify) == -1)
            return -1;
    }
    if (p->orcpt[0] != '\0' && dsn_text_item(out, outlen, &o, 'O', p->orcpt) == -1)
        return -1;
    return (int)o;
}

int
dsn_msg_format(const struct dsn_msg_params *p, char *out, size_t outlen)
{
    size_t o = 0;

    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (p->ret != DSN_RET_UNSPEC &&
        dsn_text_item(out, outlen, &o, 'R', p->ret == DSN_RET_HDRS ? "HDRS" : "FULL") == -1)
        return -1;
    if (p->envid[0] != '\0' && dsn_text_item(out, outlen, &o, 'E', p->envid) == -1)
        return -1;
    return (int)o;
}

/*
 * Split s[0..len) into space-separated "K=value" items and hand each to item().
 * Single spaces only, no leading or trailing space: format never writes them,
 * so anything else means the envelope was damaged.
 */
static int
dsn_text_split(const char *s, size_t len, void *arg,
    int (*item)(void *arg, char key, const char *v, size_t vlen))
{
    size_t i = 0, j;

    if (len == 0)
        return 0;
    while (i <= len) {
        for (j = i; j < len && s[j] != ' '; j++)
            ;
        if (j - i < 2 || s[i + 1] != '=' || item(arg, s[i], s + i + 2, j - i - 2) == -1)
            return -1;
        i = j + 1;
    }
    return 0;
}

static int
dsn_rcpt_item(void *arg, char key, const char *v, size_t vlen)
{
    struct dsn_rcpt_params *p = arg;
    const char *why;

    if (key == 'N' && p->notify == 0)
        return dsn_parse_notify(v, vlen, &p->notify, &why);
    if (key == 'O' && p->orcpt[0] == '\0') {
        if (dsn_check_orcpt(v, vlen, &why) == -1)
            return -1;
        memcpy(p->orcpt, v, vlen);
        p->orcpt[vlen] = '\0';
        return 0;
    }
    return -1;
}

static int
dsn_msg_item(void *arg, char key, const char *v, size_t vlen)
{
    struct dsn_msg_params *p = arg;
    const char *why;

    if (key == 'R' && p->ret == DSN_RET_UNSPEC)
        return dsn_parse_ret(v, vlen, &p->ret, &why);
    if (key == 'E' && p->envid[0] == '\0') {
        if (dsn_check_envid(v, vlen, &why) == -1)
            return -1;
        memcpy(p->envid, v, vlen);
        p->envid[vlen] = '\0';
        return 0;
    }
    return -1;
}

int
dsn_rcpt_parse_text(const char *s, size_t len, struct dsn_rcpt_params *p)
{
    memset(p, 0, sizeof(*p));
    if (dsn_text_split(s, len, p, dsn_rcpt_item) == -1) {
        memset(p, 0, sizeof(*p));
        return -1;
    }
    return 0;
}

int
dsn_msg_parse_text(const char *s, size_t len, struct dsn_msg_params *p)
{
    memset(p, 0, sizeof(*p));
    if (dsn_text_split(s, len, p, dsn_msg_item) == -1) {
        memset(p, 0, sizeof(*p));
        return -1;
    }
    return 0;
}
