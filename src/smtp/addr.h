/*
 * addr.h - RFC 5321 §4.1.2 paths (and RFC 6531 UTF-8 mailboxes).
 *
 * Pure: no I/O, no allocation.  Parses "<...>" as it appears after "MAIL
 * FROM:" / "RCPT TO:", strips a source route ("<@a,@b:user@c>" becomes
 * "user@c", RFC 5321 §4.1.1.3 / Appendix C), checks the grammar:
 *
 *   Path        = "<" [ A-d-l ":" ] Mailbox ">"
 *   Mailbox     = Local-part "@" ( Domain / address-literal )
 *   Local-part  = Dot-string / Quoted-string
 *   Domain      = sub-domain *("." sub-domain)    (LDH labels)
 *   address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]"
 *
 * With ADDR_UTF8 (SMTPUTF8 given, RFC 6531) UTF-8 is allowed in atoms, quoted
 * strings and domain labels; it must be well-formed UTF-8 (no overlongs, no
 * surrogates).  Without it, any octet >= 0x80 is ADDR_ERR_UTF8.
 */
#ifndef TERN_SMTP_ADDR_H
#define TERN_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_LOCAL_MAX 64   /* RFC 5321 §4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255 /* RFC 5321 §4.5.3.1.2 */
#define SMTP_PATH_MAX 256   /* RFC 5321 §4.5.3.1.3, including the brackets */

/* flags for smtp_addr_parse */
#define ADDR_UTF8 0x1      /* SMTPUTF8 in effect */
#define ADDR_NULL_OK 0x2   /* "<>" is allowed (MAIL FROM) */
#define ADDR_NO_DOMAIN_OK 0x4 /* "<Postmaster>" allowed (RCPT TO, RFC 5321 §4.5.1) */

enum addr_err {
    ADDR_OK = 0,
    ADDR_ERR_EMPTY,              /* nothing where the path should be */
    ADDR_ERR_NO_OPEN_BRACKET,    /* does not start with '<' */
    ADDR_ERR_NO_CLOSE_BRACKET,   /* unterminated: no '>' */
    ADDR_ERR_NULL_PATH,          /* "<>" where it is not allowed */
    ADDR_ERR_SPACE,              /* a space inside the brackets */
    ADDR_ERR_CTRL,               /* a control character (other than NUL) */
    ADDR_ERR_NUL,                /* a NUL byte */
    ADDR_ERR_ROUTE,              /* malformed source route */
    ADDR_ERR_LOCAL_SYNTAX,       /* bad character or dot placement in the local part */
    ADDR_ERR_LOCAL_EMPTY,        /* "@domain" */
    ADDR_ERR_QUOTE_UNTERMINATED, /* "\"abc@d" */
    ADDR_ERR_NO_AT,              /* no '@' (and no-domain not allowed, or not postmaster) */
    ADDR_ERR_DOMAIN_EMPTY,       /* "user@" */
    ADDR_ERR_DOMAIN_SYNTAX,      /* bad label: "a..b", "-a", "a_b", trailing dot */
    ADDR_ERR_ADDR_LITERAL,       /* bad "[...]" */
    ADDR_ERR_LOCAL_TOO_LONG,     /* > 64 octets */
    ADDR_ERR_DOMAIN_TOO_LONG,    /* > 255 octets, or a label > 63 */
    ADDR_ERR_PATH_TOO_LONG,      /* > 256 octets */
    ADDR_ERR_UTF8,               /* 8-bit without SMTPUTF8: reply 553 5.6.7 */
    ADDR_ERR_BAD_UTF8,           /* malformed UTF-8 even with SMTPUTF8 */
    ADDR_ERR_TRAILING,           /* junk right after '>' (not a space) */
    ADDR_ERR__COUNT
};

struct smtp_path {
    char addr[SMTP_PATH_MAX + 1]; /* "local@domain" NUL-terminated, route stripped;
                                     "" for the null path; quoting kept as sent */
    unsigned short len;           /* strlen(addr) */
    unsigned short at;            /* index of the '@' separating the domain; 0 if none */
    bool utf8;                    /* contains octets >= 0x80 */
    bool literal;                 /* the domain is an address literal */
};

/*
 * Parse a path at p[0..len).  On success *consumed is the number of bytes up
 * to and including '>'; what follows (parameters) is the caller's.
 */
enum addr_err smtp_addr_parse(const char *p, size_t len, unsigned flags, struct smtp_path *out,
    size_t *consumed);

/* A short human phrase for an error: "missing closing '>'". Never NULL. */
const char *smtp_addr_strerror(enum addr_err e);

/* Domain part (after '@') of a parsed path, or "" when none. */
static inline const char *
smtp_path_domain(const struct smtp_path *p)
{
    return p->at ? p->addr + p->at + 1 : "";
}

/* Check a domain (HELO/EHLO argument): Domain or address-literal. */
bool smtp_addr_domain_valid(const char *p, size_t len, bool utf8);

#endif
