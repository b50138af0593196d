/*
 * parse.c - SMTP command lines and ESMTP parameters (see parse.h).
 *
 * Pure and bounded: every function reads only its [p, p+len) and never
 * expects a terminating NUL, since a peer may send one.
 *
 * A verb is the leading run of printable non-space octets.  It is recognised
 * only when that run is exactly a known verb, so "DATAX" is unknown; what
 * ends the run decides the argument: a single SP is dropped, any other octet
 * (TAB, a control) starts the argument, where the command's own checks
 * refuse it with a precise reply.
 */
#include "smtp/parse.h"

#include <limits.h>
#include <string.h>

struct name {
    const char *s;
    size_t len;
};

#define NAME(s) (s), sizeof(s) - 1

/* The verb table: the only place a verb is spelled, for matching and for logs. */
static const struct name verbs[VERB__COUNT] = {
    [VERB_UNKNOWN] = {NAME("UNKNOWN")},
    [VERB_HELO] = {NAME("HELO")},
    [VERB_EHLO] = {NAME("EHLO")},
    [VERB_MAIL] = {NAME("MAIL")},
    [VERB_RCPT] = {NAME("RCPT")},
    [VERB_DATA] = {NAME("DATA")},
    [VERB_BDAT] = {NAME("BDAT")},
    [VERB_RSET] = {NAME("RSET")},
    [VERB_NOOP] = {NAME("NOOP")},
    [VERB_QUIT] = {NAME("QUIT")},
    [VERB_VRFY] = {NAME("VRFY")},
    [VERB_HELP] = {NAME("HELP")},
    [VERB_EXPN] = {NAME("EXPN")},
    [VERB_TURN] = {NAME("TURN")},
    [VERB_ETRN] = {NAME("ETRN")},
    [VERB_STARTTLS] = {NAME("STARTTLS")},
    [VERB_AUTH] = {NAME("AUTH")},
    [VERB_HTTP] = {NAME("HTTP")},
};

/*
 * Starts of HTTP requests and headers: a browser or a proxy abuse attempt
 * talking to the SMTP port (cross-protocol attacks) is cut off at once
 * rather than answered line by line.
 */
static const struct name http_starts[] = {
    {NAME("GET ")},
    {NAME("POST ")},
    {NAME("HEAD ")},
    {NAME("PUT ")},
    {NAME("CONNECT ")},
    {NAME("OPTIONS ")},
    {NAME("Host:")},
    {NAME("User-Agent:")},
};

static const char *const param_errors[PARAM_ERR__COUNT] = {
    [PARAM_OK] = "ok",
    [PARAM_ERR_SYNTAX] = "syntax error in parameters",
    [PARAM_ERR_UNKNOWN] = "unsupported parameter",
    [PARAM_ERR_SIZE_VALUE] = "SIZE value must be 1 to 20 digits",
    [PARAM_ERR_BODY_VALUE] = "BODY value must be 7BIT or 8BITMIME",
    [PARAM_ERR_AUTH_VALUE] = "AUTH value must be an xtext mailbox or <>",
    [PARAM_ERR_VALUE_NOT_ALLOWED] = "parameter takes no value",
    [PARAM_ERR_DUPLICATE] = "parameter given twice",
    [PARAM_ERR_NUL] = "NUL character in parameters",
    [PARAM_ERR_DSN] = "invalid DSN parameter",
};

/* One parameter split off a parameter list. */
struct param {
    const char *tok; /* the whole KEY[=VALUE] */
    size_t toklen;
    const char *kw;
    size_t kwlen;
    const char *val; /* NULL when there is no '=' */
    size_t vallen;
};

static enum param_err param_size(const struct param *, struct smtp_mail_params *);
static enum param_err param_body(const struct param *, struct smtp_mail_params *);
static enum param_err param_smtputf8(const struct param *, struct smtp_mail_params *);
static enum param_err param_auth(const struct param *, struct smtp_mail_params *);

/* MAIL parameters: one table, one parser each; the index is the bit for duplicates. */
static const struct {
    struct name name;
    enum param_err (*parse)(const struct param *, struct smtp_mail_params *);
} mail_params[] = {
    {{NAME("SIZE")}, param_size},
    {{NAME("BODY")}, param_body},
    {{NAME("SMTPUTF8")}, param_smtputf8},
    {{NAME("AUTH")}, param_auth},
};

static inline unsigned char
to_upper(unsigned char c)
{
    return (c >= 'a' && c <= 'z') ? (unsigned char)(c - ('a' - 'A')) : c;
}

static inline bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool
is_letdig(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* p[0..n) equals s[0..n), ignoring ASCII case. */
static bool
caseeq(const char *p, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (to_upper((unsigned char)p[i]) != to_upper((unsigned char)s[i]))
            return false;
    return true;
}

static bool
name_eq(const char *p, size_t len, const struct name *n)
{
    return len == n->len && caseeq(p, n->s, len);
}

/*
 * 1 to 20 decimal digits (RFC 1870 / RFC 3030), into *v.  -1 when there are
 * none, too many, or the value does not fit.
 */
static int
parse_number(const char *p, size_t len, size_t *used, unsigned long long *v)
{
    unsigned long long n = 0;
    unsigned d;
    size_t i;

    for (i = 0; i < len && is_digit((unsigned char)p[i]); i++) {
        if (i == 20)
            return -1;
        d = (unsigned)(p[i] - '0');
        if (n > (ULLONG_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    if (i == 0)
        return -1;
    *used = i;
    *v = n;
    return 0;
}

void
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
    size_t i, w;
    unsigned char c;

    cmd->verb = VERB_UNKNOWN;
    cmd->arg = NULL;
    cmd->arglen = 0;

    for (i = 0; i < sizeof(http_starts) / sizeof(http_starts[0]); i++) {
        if (len >= http_starts[i].len && caseeq(line, http_starts[i].s, http_starts[i].len)) {
            cmd->verb = VERB_HTTP;
            cmd->arg = line + http_starts[i].len;
            cmd->arglen = len - http_starts[i].len;
            return;
        }
    }

    for (w = 0; w < len; w++) {
        c = (unsigned char)line[w];
        if (c <= ' ' || c == 0x7f)
            break;
    }
    for (i = VERB_UNKNOWN + 1; i < VERB_HTTP; i++)
        if (name_eq(line, w, &verbs[i]))
            break;
    if (i == VERB_HTTP)
        return;

    cmd->verb = (enum smtp_verb)i;
    if (w == len)
        return;
    if (line[w] == ' ')
        w++;
    cmd->arg = line + w;
    cmd->arglen = len - w;
}

const char *
smtp_verb_name(enum smtp_verb v)
{
    if ((unsigned)v >= VERB__COUNT)
        v = VERB_UNKNOWN;
    return verbs[v].s;
}

enum smtp_prefix_err
smtp_parse_prefix(const char *arg, size_t len, const char *keyword, size_t *off)
{
    size_t kl = strlen(keyword), i, j;

    *off = 0;
    /* Take "FROM" or "FROM:" alike. */
    if (kl > 0 && keyword[kl - 1] == ':')
        kl--;
    if (arg == NULL || len < kl || !caseeq(arg, keyword, kl))
        return PREFIX_MISSING;

    i = kl;
    if (i < len && arg[i] == ':') {
        for (i++; i < len && arg[i] == ' '; i++)
            ;
        *off = i;
        return PREFIX_OK;
    }
    for (j = i; j < len && arg[j] == ' '; j++)
        ;
    if (j > i && j < len && arg[j] == ':')
        return PREFIX_SPACE_BEFORE_COLON;
    /* "FROMAGE:" is some other word, not FROM without its colon. */
    if (i < len && (is_letdig((unsigned char)arg[i]) || arg[i] == '-'))
        return PREFIX_MISSING;
    return PREFIX_NO_COLON;
}

/*
 * Split the parameter that starts at p[*pos], which must be exactly one SP
 * followed by esmtp-keyword ["=" esmtp-value] (RFC 5321 §4.1.2), and move
 * *pos to the SP after it or to len.
 */
static enum param_err
param_next(const char *p, size_t len, size_t *pos, struct param *pm)
{
    size_t i = *pos, start, k, j;
    unsigned char c;
    bool sep;

    memset(pm, 0, sizeof(*pm));
    sep = p[i] == ' ';
    if (sep)
        i++;
    start = i;
    while (i < len && p[i] != ' ')
        i++;
    pm->tok = p + start;
    pm->toklen = i - start;
    *pos = i;
    /* No separating SP, or two of them, or one at the end. */
    if (!sep || pm->toklen == 0)
        return PARAM_ERR_SYNTAX;

    for (k = start; k < i && p[k] != '='; k++)
        ;
    pm->kw = p + start;
    pm->kwlen = k - start;
    if (pm->kwlen == 0 || !is_letdig((unsigned char)p[start]))
        return PARAM_ERR_SYNTAX;
    for (j = start + 1; j < k; j++)
        if (!is_letdig((unsigned char)p[j]) && p[j] != '-')
            return PARAM_ERR_SYNTAX;
    if (k == i)
        return PARAM_OK;

    pm->val = p + k + 1;
    pm->vallen = i - k - 1;
    if (pm->vallen == 0)
        return PARAM_ERR_SYNTAX;
    for (j = k + 1; j < i; j++) {
        c = (unsigned char)p[j];
        if (c < 33 || c > 126 || c == '=')
            return PARAM_ERR_SYNTAX;
    }
    return PARAM_OK;
}

static enum param_err
param_fail(enum param_err e, const char *at, size_t n, const char **bad, size_t *badlen)
{
    if (bad != NULL)
        *bad = at;
    if (badlen != NULL)
        *badlen = n;
    return e;
}

/*
 * A NUL anywhere wins over every other error: *bad is the parameter holding
 * it, cut before the NUL so it can be quoted in a reply.
 */
static enum param_err
params_nul(const char *p, size_t len, const char **bad, size_t *badlen)
{
    const char *nul, *start;

    if (len == 0 || (nul = memchr(p, '\0', len)) == NULL)
        return PARAM_OK;
    for (start = nul; start > p && start[-1] != ' '; start--)
        ;
    return param_fail(PARAM_ERR_NUL, start, (size_t)(nul - start), bad, badlen);
}

static enum param_err
param_size(const struct param *pm, struct smtp_mail_params *out)
{
    size_t used;

    if (pm->val == NULL || parse_number(pm->val, pm->vallen, &used, &out->size) == -1 ||
        used != pm->vallen)
        return PARAM_ERR_SIZE_VALUE;
    out->has_size = true;
    return PARAM_OK;
}

static enum param_err
param_body(const struct param *pm, struct smtp_mail_params *out)
{
    static const struct name b7 = {NAME("7BIT")}, b8 = {NAME("8BITMIME")};

    if (pm->val != NULL && name_eq(pm->val, pm->vallen, &b7))
        out->body = BODY_7BIT;
    else if (pm->val != NULL && name_eq(pm->val, pm->vallen, &b8))
        out->body = BODY_8BITMIME;
    else
        return PARAM_ERR_BODY_VALUE;
    return PARAM_OK;
}

static enum param_err
param_smtputf8(const struct param *pm, struct smtp_mail_params *out)
{
    if (pm->val != NULL)
        return PARAM_ERR_VALUE_NOT_ALLOWED;
    out->smtputf8 = true;
    return PARAM_OK;
}

/*
 * RFC 4954 §5: AUTH=<> or AUTH=xtext (the mailbox of whoever first submitted the
 * message).  Only the syntax is checked: tern records that it was given and does
 * not pass it on, as §5 allows for a claim it cannot verify.
 */
static enum param_err
param_auth(const struct param *pm, struct smtp_mail_params *out)
{
    if (pm->val == NULL || (!(pm->vallen == 2 && pm->val[0] == '<' && pm->val[1] == '>') &&
                               !dsn_xtext_valid(pm->val, pm->vallen)))
        return PARAM_ERR_AUTH_VALUE;
    out->has_auth = true;
    return PARAM_OK;
}

enum param_err
smtp_parse_mail_params(
    const char *p, size_t len, struct smtp_mail_params *out, const char **bad, size_t *badlen)
{
    struct param pm;
    enum param_err e;
    unsigned seen = 0;
    size_t pos = 0, i;

    memset(out, 0, sizeof(*out));
    out->body = BODY_UNSPECIFIED;
    param_fail(PARAM_OK, NULL, 0, bad, badlen);
    if ((e = params_nul(p, len, bad, badlen)) != PARAM_OK)
        return e;

    while (pos < len) {
        if ((e = param_next(p, len, &pos, &pm)) != PARAM_OK)
            return param_fail(e, pm.tok, pm.toklen, bad, badlen);
        switch (dsn_mail_param(&out->dsn, pm.kw, pm.kwlen, pm.val, pm.vallen, &out->why)) {
        case DSN_PARAM_OK:
            continue;
        case DSN_PARAM_ERR:
            return param_fail(PARAM_ERR_DSN, pm.kw, pm.kwlen, bad, badlen);
        case DSN_PARAM_NOT_MINE:
            break;
        }
        for (i = 0; i < sizeof(mail_params) / sizeof(mail_params[0]); i++)
            if (name_eq(pm.kw, pm.kwlen, &mail_params[i].name))
                break;
        if (i == sizeof(mail_params) / sizeof(mail_params[0]))
            return param_fail(PARAM_ERR_UNKNOWN, pm.kw, pm.kwlen, bad, badlen);
        if (seen & (1u << i))
            return param_fail(PARAM_ERR_DUPLICATE, pm.kw, pm.kwlen, bad, badlen);
        seen |= 1u << i;
        if ((e = mail_params[i].parse(&pm, out)) != PARAM_OK)
            return param_fail(e, pm.kw, pm.kwlen, bad, badlen);
    }
    return PARAM_OK;
}

enum param_err
smtp_parse_rcpt_params(const char *p, size_t len, struct dsn_rcpt_params *dsn, const char **why,
    const char **bad, size_t *badlen)
{
    struct param pm;
    enum param_err e;
    size_t pos = 0;

    memset(dsn, 0, sizeof(*dsn));
    *why = NULL;
    param_fail(PARAM_OK, NULL, 0, bad, badlen);
    if ((e = params_nul(p, len, bad, badlen)) != PARAM_OK)
        return e;
    while (pos < len) {
        if ((e = param_next(p, len, &pos, &pm)) != PARAM_OK)
            return param_fail(e, pm.tok, pm.toklen, bad, badlen);
        switch (dsn_rcpt_param(dsn, pm.kw, pm.kwlen, pm.val, pm.vallen, why)) {
        case DSN_PARAM_OK:
            continue;
        case DSN_PARAM_ERR:
            return param_fail(PARAM_ERR_DSN, pm.kw, pm.kwlen, bad, badlen);
        case DSN_PARAM_NOT_MINE:
            return param_fail(PARAM_ERR_UNKNOWN, pm.kw, pm.kwlen, bad, badlen);
        }
    }
    return PARAM_OK;
}

const char *
smtp_param_strerror(enum param_err e)
{
    if ((unsigned)e >= PARAM_ERR__COUNT || param_errors[e] == NULL)
        return "unknown parameter error";
    return param_errors[e];
}

int
smtp_parse_bdat(const char *arg, size_t len, unsigned long long *size, bool *last)
{
    static const struct name last_kw = {NAME("LAST")};
    unsigned long long n;
    size_t used;

    *size = 0;
    *last = false;
    if (arg == NULL || parse_number(arg, len, &used, &n) == -1)
        return -1;
    if (used == len) {
        *size = n;
        return 0;
    }
    if (arg[used] != ' ' || !name_eq(arg + used + 1, len - used - 1, &last_kw))
        return -1;
    *size = n;
    *last = true;
    return 0;
}
