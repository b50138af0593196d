/*
 * send.h - `tern send`: a swaks-like test client.  It builds a message (or
 * takes one with its headers from FILE or stdin), sends it to one server
 * with the delivery client's own state machine (smtp/client.c) over a
 * blocking socket, prints each recipient's outcome and the deciding reply
 * with its explanation from the catalogue (smtp/explain.c).
 *
 *   tern send --server HOST[:PORT] --from A --to B [--to C]... [--subject S]
 *             [--header "K: V"]... [--pipelining] [--chunking] [--8bit]
 *             [--helo NAME] [--timeout SECS] [-v] [--starttls | --tls]
 *             [--ca-file FILE | --insecure] [--auth USER [--password-file F]] [FILE|-]
 *
 * TLS: --starttls requires STARTTLS (not offered or refused: 75, nothing
 * sent), --tls is implicit TLS (port 465 by default).  The certificate is
 * verified (system store or --ca-file, and the --server host as its name)
 * unless --insecure; a failed verification is a failed handshake (75).
 * AUTH (--auth USER, password from --password-file or TERN_PASSWORD, never
 * argv) only over TLS: without --starttls or --tls it is a usage error.
 *
 * Exit status (the worst outcome among the recipients wins, transient before
 * permanent, because a transient one is the only thing a retry can fix):
 *   0   every recipient accepted (2xx to the final dot)
 *   75  EX_TEMPFAIL: at least one recipient got a transient outcome (a 4xx,
 *       a 421, no connection, a timeout, a lost connection)
 *   69  EX_UNAVAILABLE: none transient, at least one refused permanently
 *       (a 5xx; also a server SIZE below the message, or SMTPUTF8 missing;
 *       AUTH refused with 5xx (535: that password will not do), or AUTH or
 *       PLAIN/LOGIN not offered); a 4xx to AUTH (454 4.7.0) is 75
 *   64  EX_USAGE: a bad command line or address
 *   66  EX_NOINPUT: FILE cannot be read
 *
 * Also the small blocking-socket helpers `tern probe` shares (prefix
 * cli_send_).
 */
#ifndef TERN_CLI_SEND_H
#define TERN_CLI_SEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CLI_EX_OK 0
#define CLI_EX_USAGE 64
#define CLI_EX_NOINPUT 66
#define CLI_EX_NOUSER 67
#define CLI_EX_UNAVAILABLE 69
#define CLI_EX_SOFTWARE 70
#define CLI_EX_OSERR 71
#define CLI_EX_TEMPFAIL 75

/* argv[0] is "send". */
int cli_send_main(int argc, char **argv);

/* ---- shared with probe.c -------------------------------------------------------------------- */

/*
 * "host", "host:port", "[v6]:port", "[v6]" or a bare IPv6 address: host and
 * port (port "" when none was given).  -1 when malformed.
 */
int cli_send_split_hostport(
    const char *arg, char *host, size_t hostlen, char *port, size_t portlen);

/*
 * Resolve host (getaddrinfo) and connect to its addresses in turn, each
 * within timeout_s.  A non-blocking fd, with "host[ip]:port" in desc; or -1
 * with a reason in why.
 */
int cli_send_connect(const char *host, const char *port, int timeout_s, char *desc, size_t desclen,
    char *why, size_t whylen);
/* Connect to one address (a sockaddr from DNS).  As above. */
int cli_send_connect_addr(const void *sa, unsigned salen, const char *name, int timeout_s,
    char *desc, size_t desclen, char *why, size_t whylen);

struct remote_tls;

/* Write all of p within the deadline, through t when not NULL.  0, or -1 with errno. */
int cli_send_write(int fd, struct remote_tls *t, const char *p, size_t n, long long deadline);
/* Read some bytes within the deadline (through t when not NULL): how many, 0 at EOF, -1 with
   errno (ETIMEDOUT). */
long cli_send_read(int fd, struct remote_tls *t, char *p, size_t n, long long deadline);

/*
 * The transcript of -v: each line of p prefixed with tag ("C: ", "S: "), line
 * ends stripped; *bol carries "at the start of a line" across calls.
 */
void cli_send_transcript(FILE *out, const char *tag, const char *p, size_t n, bool *bol);

/*
 * What a reply means, from the catalogue.  code and text ("4.7.1 Try again
 * later", the enhanced code first when there is one).  One line ("    = 421
 * Service not available; 4.7.1 ...") or a paragraph wrapped at 78 columns
 * with indent.  Prints nothing for a code the catalogue does not know.
 */
void cli_send_explain(FILE *out, unsigned code, const char *text, bool paragraph, int indent);

/* An address we can put in a command as it is: no control octet, space or angle bracket. */
bool cli_send_addr_ok(const char *s);

#endif
