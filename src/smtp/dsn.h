/*
 * dsn.h - the parameters of the SMTP DSN extension (RFC 3461): NOTIFY and
 * ORCPT on RCPT, RET and ENVID on MAIL, the xtext encoding they use, and the
 * short text form in which they are kept in the queue envelope.
 *
 * Pure: no I/O, no clock, no allocation.  Every function takes counted input
 * and never reads past it; every output is NUL-terminated and bounded by the
 * size it is given (or by the fixed arrays of the structs below).
 *
 * What is kept is what was received, still xtext-encoded: an encoded value
 * has no space, no '=' and no control character, so it can be relayed as it
 * is to a next hop that offers DSN and stored in the envelope without any
 * further quoting.  Decode (dsn_xtext_decode, dsn_orcpt_decode) only to show
 * a value in a delivery status notification.
 *
 * Errors are a short English phrase (a string constant) meant to follow
 * "501 5.5.4 " in the reply.
 */
#ifndef TERN_SMTP_DSN_H
#define TERN_SMTP_DSN_H

#include <stdbool.h>
#include <stddef.h>

/* NOTIFY bits; 0 means NOTIFY was not given (RFC 3461 §4.1 lets us then assume
   FAILURE,DELAY, which is what bounce_wanted() does). */
#define DSN_NOTIFY_NEVER 0x1u
#define DSN_NOTIFY_SUCCESS 0x2u
#define DSN_NOTIFY_FAILURE 0x4u
#define DSN_NOTIFY_DELAY 0x8u

enum dsn_ret {
    DSN_RET_UNSPEC = 0, /* not given: a failure DSN returns the full message */
    DSN_RET_FULL,
    DSN_RET_HDRS,
};

/* RFC 3461 limits, on the encoded value: ORCPT §4.2 (addr-type ";" xtext), ENVID §4.4. */
#define DSN_ORCPT_MAX 500
#define DSN_ENVID_MAX 100

struct dsn_rcpt_params {
    unsigned notify; /* DSN_NOTIFY_* bits, 0 = not given */
    char orcpt[512]; /* "rfc822;bob+2Bx@example.org" as received, "" = not given */
};

struct dsn_msg_params {
    int ret;         /* enum dsn_ret */
    char envid[101]; /* xtext as received (DSN_ENVID_MAX at most), "" = not given */
};

/* Result of offering one ESMTP parameter to dsn_mail_param / dsn_rcpt_param. */
enum dsn_param_result {
    DSN_PARAM_OK = 0,   /* it was ours and it is now stored */
    DSN_PARAM_NOT_MINE, /* not a DSN keyword: the caller goes on with its own */
    DSN_PARAM_ERR,      /* ours but bad (or given twice): *why says why */
};

/*
 * One parameter of MAIL (RET, ENVID) or RCPT (NOTIFY, ORCPT): key[0..keylen)
 * is the keyword (case-insensitive), val[0..vallen) its value, or val NULL
 * when the parameter had no "=".  Zero the struct before the first call: a
 * keyword already stored counts as a duplicate.
 */
enum dsn_param_result dsn_mail_param(struct dsn_msg_params *p, const char *key, size_t keylen,
    const char *val, size_t vallen, const char **why);
enum dsn_param_result dsn_rcpt_param(struct dsn_rcpt_params *p, const char *key, size_t keylen,
    const char *val, size_t vallen, const char **why);

/* The individual values.  0, or -1 with *why set. */
int dsn_parse_notify(const char *v, size_t len, unsigned *notify, const char **why);
int dsn_parse_ret(const char *v, size_t len, int *ret, const char **why);
/* ORCPT = addr-type ";" xtext, addr-type an RFC 5322 atom, the xtext non-empty and
   decoding to printable US-ASCII (RFC 3461 §4.2); at most DSN_ORCPT_MAX octets. */
int dsn_check_orcpt(const char *v, size_t len, const char **why);
/* ENVID: non-empty xtext of at most DSN_ENVID_MAX octets, decoding to printable ASCII. */
int dsn_check_envid(const char *v, size_t len, const char **why);

/*
 * xtext (RFC 3461 §4): octets "!".."~" except "+" and "=" stand for
 * themselves; any other octet is "+" and two upper-case hex digits.
 *
 * dsn_xtext_valid: v[0..len) is well-formed xtext (empty is well-formed).
 * dsn_xtext_encode / _decode: write to out (outlen bytes, NUL included) and
 * return the length written, or -1 when out is too small or (decode) the
 * input is not valid xtext.  Decoding does not refuse any octet value; the
 * checks above refuse what a DSN could not show.
 */
bool dsn_xtext_valid(const char *v, size_t len);
int dsn_xtext_encode(const char *v, size_t len, char *out, size_t outlen);
int dsn_xtext_decode(const char *v, size_t len, char *out, size_t outlen);

/* A stored ORCPT made readable for the Original-Recipient field: "rfc822;bob+2Bx@a"
   becomes "rfc822;bob+x@a" (the type as given, the address decoded).  Length or -1. */
int dsn_orcpt_decode(const char *orcpt, char *out, size_t outlen);

/*
 * Envelope text.  A recipient's parameters become "N=FAILURE,DELAY O=rfc822;..."
 * (each item only when given; "" when nothing was), a message's "R=HDRS E=...".
 * Format returns the length written, or -1 when out is too small (outlen of
 * DSN_TEXT_MAX always suffices).  Parse accepts exactly what format writes,
 * items in any order, and checks the values again; 0 or -1 (malformed).
 */
#define DSN_TEXT_MAX 640
int dsn_rcpt_format(const struct dsn_rcpt_params *p, char *out, size_t outlen);
int dsn_rcpt_parse_text(const char *s, size_t len, struct dsn_rcpt_params *p);
int dsn_msg_format(const struct dsn_msg_params *p, char *out, size_t outlen);
int dsn_msg_parse_text(const char *s, size_t len, struct dsn_msg_params *p);

/* "SUCCESS,FAILURE,DELAY" / "NEVER" / "" for 0; the canonical order of the bits. */
int dsn_notify_format(unsigned notify, char *out, size_t outlen);

#endif
