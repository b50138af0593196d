/*
 * fuzz_addr.c - libFuzzer target for smtp/addr.c and smtp/parse.c.
 *
 * The input is used as it comes (libFuzzer hands over a block of exactly
 * that size, so AddressSanitizer sees any read past the end), as a path
 * under every flag combination, as a command line, and as parameter lists
 * and a BDAT argument.  Beyond "no crash", each result is checked against
 * what the headers promise; a broken promise is an abort().
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/addr.h"
#include "smtp/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool
is_postmaster(const char *s)
{
    static const char pm[] = "postmaster";
    size_t i;

    for (i = 0; pm[i] != '\0'; i++) {
        char c = s[i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != pm[i])
            return false;
    }
    return s[i] == '\0';
}

static void
check_path(const char *p, size_t len, unsigned flags)
{
    struct smtp_path out, again;
    size_t consumed, c2, i, dlen;
    enum addr_err e;
    bool high = false;
    char buf[SMTP_PATH_MAX + 2];

    e = smtp_addr_parse(p, len, flags, &out, &consumed);
    CHECK((unsigned)e < ADDR_ERR__COUNT);
    CHECK(smtp_addr_strerror(e) != NULL);
    if (e != ADDR_OK) {
        CHECK(out.len == 0 && out.addr[0] == '\0' && consumed == 0);
        return;
    }

    CHECK(consumed >= 2 && consumed <= len && consumed <= SMTP_PATH_MAX);
    CHECK(p[0] == '<' && p[consumed - 1] == '>');
    CHECK(consumed == len || p[consumed] == ' ');
    CHECK(out.len == strlen(out.addr));
    CHECK(out.len + 2 <= consumed);
    CHECK(memchr(out.addr, '\0', out.len) == NULL);
    for (i = 0; i < out.len; i++) {
        unsigned char c = (unsigned char)out.addr[i];

        CHECK(c >= 0x20 && c != 0x7f);
        if (c >= 0x80)
            high = true;
    }
    CHECK(out.utf8 == high);
    CHECK(!high || (flags & ADDR_UTF8));

    if (out.len == 0) {
        CHECK(flags & ADDR_NULL_OK);
        CHECK(consumed == 2 && out.at == 0 && !out.literal);
        return;
    }
    if (out.at == 0) {
        CHECK(flags & ADDR_NO_DOMAIN_OK);
        CHECK(is_postmaster(out.addr));
        CHECK(!out.literal);
        CHECK(smtp_path_domain(&out)[0] == '\0');
    } else {
        CHECK(out.at < out.len);
        CHECK(out.addr[out.at] == '@');
        CHECK(out.at <= SMTP_LOCAL_MAX);
        dlen = out.len - out.at - 1;
        CHECK(dlen >= 1 && dlen <= SMTP_DOMAIN_MAX);
        CHECK(out.literal == (smtp_path_domain(&out)[0] == '['));
        /* HELO checks are looser (underscores), never stricter. */
        CHECK(smtp_addr_domain_valid(smtp_path_domain(&out), dlen, (flags & ADDR_UTF8) != 0));
    }

    /* The mailbox alone, route stripped, is itself a valid path giving the same result. */
    buf[0] = '<';
    memcpy(buf + 1, out.addr, out.len);
    buf[out.len + 1] = '>';
    e = smtp_addr_parse(buf, out.len + 2, flags, &again, &c2);
    CHECK(e == ADDR_OK);
    CHECK(c2 == out.len + 2U);
    CHECK(again.len == out.len && again.at == out.at && again.literal == out.literal);
    CHECK(memcmp(again.addr, out.addr, out.len + 1U) == 0);
}

static void
check_params(const char *p, size_t len)
{
    struct smtp_mail_params mp;
    const char *bad;
    size_t badlen;
    enum param_err e;

    e = smtp_parse_mail_params(p, len, &mp, &bad, &badlen);
    CHECK((unsigned)e < PARAM_ERR__COUNT);
    CHECK(smtp_param_strerror(e) != NULL);
    if (e == PARAM_OK) {
        CHECK(bad == NULL && badlen == 0);
        CHECK(len == 0 || p[0] == ' ');
        CHECK(len == 0 || p[len - 1] != ' ');
        CHECK(memchr(p, '\0', len) == NULL);
        CHECK(mp.has_size || mp.size == 0);
        CHECK(mp.body == BODY_UNSPECIFIED || mp.body == BODY_7BIT || mp.body == BODY_8BITMIME);
    } else {
        CHECK(bad != NULL && bad >= p && bad + badlen <= p + len);
        CHECK(memchr(bad, '\0', badlen) == NULL);
    }

    {
        struct dsn_rcpt_params dsn;
        const char *why;
        e = smtp_parse_rcpt_params(p, len, &dsn, &why, &bad, &badlen);
        CHECK(e != PARAM_ERR_DSN || why != NULL);
    }
    CHECK((unsigned)e < PARAM_ERR__COUNT);
    if (e == PARAM_OK)
        CHECK(len == 0 && bad == NULL);
    else
        CHECK(bad != NULL && bad >= p && bad + badlen <= p + len);
}

static void
check_command(const char *p, size_t len)
{
    struct smtp_cmd cmd;
    struct smtp_path path;
    size_t off, consumed;
    enum smtp_prefix_err pe;
    unsigned long long size;
    bool last;
    int r;

    smtp_parse_command(p, len, &cmd);
    CHECK((unsigned)cmd.verb < VERB__COUNT);
    CHECK(smtp_verb_name(cmd.verb) != NULL);
    if (cmd.arg == NULL) {
        CHECK(cmd.arglen == 0);
        return;
    }
    CHECK(cmd.verb != VERB_UNKNOWN);
    CHECK(cmd.arg > p && cmd.arg + cmd.arglen == p + len);

    switch (cmd.verb) {
    case VERB_MAIL:
    case VERB_RCPT:
        pe = smtp_parse_prefix(cmd.arg, cmd.arglen, cmd.verb == VERB_MAIL ? "FROM" : "TO", &off);
        CHECK(pe == PREFIX_OK || off == 0);
        if (pe != PREFIX_OK)
            break;
        CHECK(off >= 3 && off <= cmd.arglen);
        CHECK(cmd.arg[off - 1] == ':' || cmd.arg[off - 1] == ' ');
        check_path(cmd.arg + off, cmd.arglen - off,
            cmd.verb == VERB_MAIL ? ADDR_NULL_OK : ADDR_NO_DOMAIN_OK);
        if (smtp_addr_parse(cmd.arg + off, cmd.arglen - off, 0, &path, &consumed) == ADDR_OK)
            check_params(cmd.arg + off + consumed, cmd.arglen - off - consumed);
        break;
    case VERB_BDAT:
        r = smtp_parse_bdat(cmd.arg, cmd.arglen, &size, &last);
        CHECK(r == 0 || r == -1);
        CHECK(r == 0 || (size == 0 && !last));
        CHECK(r != 0 || (cmd.arglen >= 1 && cmd.arg[0] >= '0' && cmd.arg[0] <= '9'));
        break;
    case VERB_HELO:
    case VERB_EHLO:
        (void)smtp_addr_domain_valid(cmd.arg, cmd.arglen, false);
        (void)smtp_addr_domain_valid(cmd.arg, cmd.arglen, true);
        break;
    default:
        break;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    unsigned flags;
    unsigned long long n;
    bool last;
    bool ok;

    for (flags = 0; flags < 8; flags++)
        check_path(p, size, flags);

    check_command(p, size);
    check_params(p, size);

    if (smtp_parse_bdat(p, size, &n, &last) == 0)
        CHECK(size >= 1 && p[0] >= '0' && p[0] <= '9');

    ok = smtp_addr_domain_valid(p, size, false);
    CHECK(!ok || (size > 0 && memchr(p, '\0', size) == NULL && memchr(p, ' ', size) == NULL));
    if (ok)
        CHECK(smtp_addr_domain_valid(p, size, true));
    ok = smtp_addr_domain_valid(p, size, true);
    CHECK(!ok || (size > 0 && memchr(p, '\0', size) == NULL));
    return 0;
}
