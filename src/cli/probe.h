/*
 * probe.h - `tern probe`: would this server take mail from A to B right now?
 *
 *   tern probe HOST:PORT | [IPv6]:PORT | IP | DOMAIN [--from A] [--to B]...
 *              [--port N] [--dns-config FILE] [--helo NAME] [--timeout SECS] [-v]
 *              [--starttls | --tls] [--ca-file FILE]
 *
 * With a port, or an IP address, it connects there.  A DOMAIN (no port) is
 * routed like delivery does it (net/dns.c: MX records by preference, the
 * domain's own addresses when there is no MX; --dns-config an unbound
 * configuration, e.g. with local-data for tests), on a private event loop,
 * and the first address that accepts a connection is probed, on port 25 or
 * --port.  Then: the greeting, EHLO (HELO if EHLO is not known) and its
 * capabilities, MAIL FROM:<A> (default <>), one RCPT TO per --to, RSET and
 * QUIT.  Never DATA: nothing is ever delivered.  Every command and reply is
 * printed, each reply with its one-line explanation from the catalogue, then
 * a verdict per recipient: "would be accepted now", "deferred (transient:
 * why)" or "refused (permanent: why)", "why" naming the usual causes
 * (greylisting, rate limiting, overload, mailbox full, unknown user, policy)
 * from the code, enhanced code and text.
 *
 * Every step waits at most --timeout seconds (default 30).  Exit status:
 * 0 all would be accepted (or, without --to, the server took MAIL), 75 any
 * deferred (including no connection, a timeout, a DNS failure), 69 any
 * refused and none deferred (including a domain that takes no mail),
 * 64 usage.  -v adds the route, addresses tried and connection details.
 *
 * TLS: --starttls (after EHLO; not offered or refused: 75) or --tls (implicit,
 * port 465 by default).  The handshake completes whatever the certificate
 * (deliver/remote_tls.c, policy encrypt), then "tls:" lines print the
 * version, cipher, subject, issuer, subjectAltName, expiry and a fresh
 * verification (remote_tls_peer(): system store or --ca-file, the host
 * connected to as the name); a failed verification is reported, not a
 * verdict.  For a DOMAIN the MX host's TLSA records are looked up as with
 * tls_policy = dane: its state is printed, and with usable records the
 * handshake is DANE's (a mismatch fails it: 75, as a delivery would defer).
 */
#ifndef TERN_CLI_PROBE_H
#define TERN_CLI_PROBE_H

#include <stddef.h>

/* argv[0] is "probe". */
int cli_probe_main(int argc, char **argv);

/*
 * Why a negative reply was given, in a few words, for the verdict:
 * "greylisting (450 4.7.1)", "no such user (550 5.1.1)"...  Pure (tested).
 */
void cli_probe_why(unsigned code, const char *esc, const char *text, char *out, size_t outlen);

#endif
