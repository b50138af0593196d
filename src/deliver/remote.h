/*
 * remote.h - delivery to other mail servers over SMTP (RFC 5321), one
 * message at a time, on a worker thread; a connection may carry several
 * messages one after another (remote_conn).
 *
 * The caller has already found the hosts (MX lookup, relay_host, address
 * literal) and resolved them, in the order to try.  remote_deliver() tries
 * them in turn until one takes responsibility for every recipient it can:
 * a refused or timed-out connection, a 4xx/5xx greeting or EHLO, a 421 at
 * any point, a malformed reply or a broken connection send the recipients
 * still open to the next host.  A 4xx/5xx to MAIL, RCPT, DATA or the final
 * dot decides the recipients it concerns, verbatim (4xx TEMP, 5xx PERM).
 * When every host failed, the recipients still open are TEMP with the last
 * failure (the last server's reply, or R_DLV_CONNECT_FAILED /
 * R_DLV_REMOTE_PROTOCOL with the host and what happened).  A message that
 * needs SMTPUTF8 to a server without it: R_DLV_NEED_SMTPUTF8 (PERM); one
 * larger than the server's SIZE: R_SIZE_MAIL with its limit (PERM).  Each
 * outcome that came from a server names it in remote_mta.
 *
 * The SMTP dialogue is smtp/client's; this file does the sockets, the
 * timeouts of RFC 5321 §4.5.3.2 and the body (pread from the spool), and
 * STARTTLS through remote_tls.h per tls_policy: with encrypt/verify a host
 * without STARTTLS gives R_DLV_TLS_REQUIRED and a failed handshake
 * R_DLV_TLS_FAILED (both TEMP, the next host is tried); with may a failed
 * handshake also defers, and the next attempt to that host goes in plaintext.
 * With dane each host's policy follows its DANE state (remote_tls.h): a host
 * whose TLSA lookup failed is not connected to (R_DLV_DNS_TEMP, TEMP, the next
 * host is tried); a failed DANE authentication is R_DLV_TLS_FAILED and never
 * falls back to plaintext.
 */
#ifndef TERN_DELIVER_REMOTE_H
#define TERN_DELIVER_REMOTE_H

#include <sys/socket.h>

#include "deliver/delivery.h"
#include "deliver/remote_tls.h"

struct remote_host {
    char name[256];               /* the host name (for logs and Remote-MTA); "" for none */
    struct sockaddr_storage addr; /* with the port */
    socklen_t addrlen;
    /* tls_policy = dane: the host's DANE state and TLSA records (net/dane.h); NULL: none
     * known (relay_host, or DNS did not look): treated as insecure. */
    const struct dane_rrset *dane;
};

/* Timeouts in seconds; 0 takes the RFC 5321 §4.5.3.2 value shown. */
struct remote_conf {
    const char *hostname; /* our EHLO name */
    int timeout_connect;  /* 30 */
    int timeout_greeting; /* 300 */
    int timeout_helo;     /* 300: EHLO/HELO */
    int timeout_mail;     /* 300: MAIL (and RSET) */
    int timeout_rcpt;     /* 300 */
    int timeout_data;     /* 120: the 354 */
    int timeout_block;    /* 180: each body block written */
    int timeout_dot;      /* 600: the final reply */
    int timeout_quit;     /* 10: QUIT's reply is a courtesy, not waited for long */
    enum remote_tls_policy tls_policy; /* STARTTLS (remote_tls.h); 0: none */
    const char *tls_ca_file;           /* trust anchors for verify; NULL: the system's */
};

/* One message on a connection of its own (closed before returning). */
void remote_deliver(const struct remote_conf *c, const struct remote_host *hosts, size_t nhosts,
    struct delivery_msg *m);

/*
 * A connection to reuse: remote_conn_deliver() as often as the caller likes
 * (each message as remote_deliver() would treat it), then remote_conn_free()
 * (QUIT, close).  Between messages the connection stays open and idle; the
 * caller bounds how long.  A message starts at the host of the open
 * connection (those before it failed moments ago), else at the first.  c and
 * hosts must stay valid until remote_conn_free().  NULL: out of memory.
 */
struct remote_conn;
struct remote_conn *remote_conn_new(
    const struct remote_conf *c, const struct remote_host *hosts, size_t nhosts);
void remote_conn_deliver(struct remote_conn *r, struct delivery_msg *m);
/* TCP connections opened so far (for logs and tests). */
unsigned remote_conn_connections(const struct remote_conn *r);
void remote_conn_free(struct remote_conn *r);

#endif
