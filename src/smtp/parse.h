/*
 * parse.h - SMTP command lines and ESMTP parameters.
 *
 * Pure: the input is one complete command line without its CRLF (framing,
 * bare CR/LF and line length are the session's business).  The parser names
 * the verb and splits off the argument; for MAIL and RCPT it also splits
 * "FROM:" / "TO:" from the path and parses the ESMTP parameters that follow
 * the path (RFC 5321 §4.1.2, esmtp-param = esmtp-keyword ["=" esmtp-value]).
 */
#ifndef TERN_SMTP_PARSE_H
#define TERN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp/dsn.h"

enum smtp_verb {
    VERB_UNKNOWN = 0,
    VERB_HELO,
    VERB_EHLO,
    VERB_MAIL,
    VERB_RCPT,
    VERB_DATA,
    VERB_BDAT,
    VERB_RSET,
    VERB_NOOP,
    VERB_QUIT,
    VERB_VRFY,
    VERB_HELP,
    /* Recognised, not implemented: 502 5.5.1. */
    VERB_EXPN,
    VERB_TURN,
    VERB_ETRN,
    VERB_STARTTLS,
    VERB_AUTH,
    /* Not SMTP: an HTTP request line or header on the SMTP port ("GET ", "POST ",
       "Host:", ...); the session is ended at once. */
    VERB_HTTP,
    VERB__COUNT
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;   /* after the verb and ONE space; NULL when the line is just the verb */
    size_t arglen;
};

/*
 * Name the verb (case-insensitive) of line[0..len).  A verb is followed by
 * end of line or by a single SP; "NOOP\t" or "MAIL  FROM" count as the verb
 * followed by an argument starting with the odd character, which the
 * argument checks then refuse.  Never fails: unknown verbs are VERB_UNKNOWN.
 */
void smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

const char *smtp_verb_name(enum smtp_verb v);

/*
 * For MAIL / RCPT: check that arg starts with "FROM:" / "TO:" (case-
 * insensitive) and return the offset of the path in *off.  One or more
 * spaces after the colon are tolerated (as Postfix and Exim do); a space
 * before the colon, or a missing colon, is an error.
 */
enum smtp_prefix_err {
    PREFIX_OK = 0,
    PREFIX_MISSING,      /* "MAIL <a@b>": no FROM: at all */
    PREFIX_NO_COLON,     /* "MAIL FROM <a@b>" */
    PREFIX_SPACE_BEFORE_COLON, /* "MAIL FROM :<a@b>" */
};
enum smtp_prefix_err smtp_parse_prefix(const char *arg, size_t len, const char *keyword,
    size_t *off);

/*
 * ESMTP parameters of MAIL (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
 * RFC 4954 AUTH).
 */
enum smtp_body { BODY_UNSPECIFIED = 0, BODY_7BIT, BODY_8BITMIME };

struct smtp_mail_params {
    bool has_size;
    unsigned long long size;
    enum smtp_body body;
    bool smtputf8;
    /* RFC 4954 §5 AUTH=<mailbox as xtext> or AUTH=<>: syntax checked, then only noted.
       tern does not trust the client's claim about who first submitted the message. */
    bool has_auth;
    struct dsn_msg_params dsn; /* RFC 3461 RET, ENVID */
    const char *why;           /* PARAM_ERR_DSN: what is wrong, for the reply */
};

enum param_err {
    PARAM_OK = 0,
    PARAM_ERR_SYNTAX,       /* not "KEY[=VALUE]" separated by single spaces; 501 5.5.4 */
    PARAM_ERR_UNKNOWN,      /* keyword not supported: 555 5.5.4 */
    PARAM_ERR_SIZE_VALUE,   /* SIZE not 1-20 digits: 501 5.5.4 */
    PARAM_ERR_BODY_VALUE,   /* BODY not 7BIT / 8BITMIME: 501 5.5.4 */
    PARAM_ERR_AUTH_VALUE,   /* AUTH not xtext or <>: 501 5.5.4 */
    PARAM_ERR_VALUE_NOT_ALLOWED, /* "SMTPUTF8=x": 501 5.5.4 */
    PARAM_ERR_DUPLICATE,    /* the same keyword twice: 501 5.5.4 */
    PARAM_ERR_NUL,          /* NUL byte: 501 5.5.4 */
    PARAM_ERR_DSN,          /* a bad RFC 3461 value (NOTIFY, ORCPT, RET, ENVID): 501 5.5.4 */
    PARAM_ERR__COUNT
};

/*
 * Parse the parameters after a MAIL path: p[0..len) is what follows '>'
 * (either empty or " KEY=VALUE ...").  On error, *bad points at the offending
 * keyword and *badlen is its length (for the reply text).
 */
enum param_err smtp_parse_mail_params(const char *p, size_t len, struct smtp_mail_params *out,
    const char **bad, size_t *badlen);

/* RCPT parameters: RFC 3461 NOTIFY and ORCPT; *why explains a PARAM_ERR_DSN. */
enum param_err smtp_parse_rcpt_params(const char *p, size_t len, struct dsn_rcpt_params *dsn,
    const char **why, const char **bad, size_t *badlen);

const char *smtp_param_strerror(enum param_err e);

/*
 * BDAT argument: "SIZE [LAST]" (RFC 3030): 1-20 digits, then optionally one
 * SP and LAST (case-insensitive).  0 on success, -1 on a syntax error.
 */
int smtp_parse_bdat(const char *arg, size_t len, unsigned long long *size, bool *last);

#endif
