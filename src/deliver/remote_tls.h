/*
 * remote_tls.h - TLS for the SMTP client (STARTTLS, RFC 3207), used by
 * deliver/remote.c on its worker threads.  Separate from the server's TLS
 * (net/): the client has its own contexts and its own policy.
 *
 * tls_policy (the config key):
 *   none     never STARTTLS;
 *   may      STARTTLS when offered, certificate not checked (opportunistic:
 *            RFC 7435); a failed handshake sends the next attempt to that
 *            host in plaintext (remote_tls_fallback_*), for a while;
 *   encrypt  STARTTLS or no delivery; certificate not checked;
 *   verify   STARTTLS or no delivery; the chain must verify against the
 *            system trust store (or tls_ca_file) and the certificate must
 *            name the host connected to (the MX name; SSL_set1_host).
 *   dane     opportunistic DANE (RFC 7672): per MX host, by the DNSSEC status of
 *            its MX, address and TLSA answers (net/dane.h): a usable secure
 *            TLSA set makes TLS mandatory and the certificate must match a
 *            DANE-EE(3) or DANE-TA(2) record (OpenSSL's DANE verifier: no name
 *            or expiry check for DANE-EE; for DANE-TA the chain up to the
 *            matched trust anchor and the MX name are checked); a secure set
 *            with no usable record makes TLS mandatory, unauthenticated; a
 *            failed or bogus TLSA lookup makes the host unusable; anything
 *            insecure is `may`.  remote.c picks the per-host policy
 *            (REMOTE_TLS_DANE only for USABLE hosts).
 * TLS 1.2 or newer.  Every call that waits takes an absolute deadline
 * (util/io's clock) and never blocks past it.
 */
#ifndef TERN_DELIVER_REMOTE_TLS_H
#define TERN_DELIVER_REMOTE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "net/dane.h"

enum remote_tls_policy {
    REMOTE_TLS_NONE,
    REMOTE_TLS_MAY,
    REMOTE_TLS_ENCRYPT,
    REMOTE_TLS_VERIFY,
    REMOTE_TLS_DANE,
};

/* How long a failed handshake under `may` sends that host's mail in plaintext. */
#define REMOTE_TLS_FALLBACK_SECS 3600

/* The policy named by the config word (NULL or unknown: may, the default). */
enum remote_tls_policy remote_tls_policy(const char *word);
const char *remote_tls_policy_name(enum remote_tls_policy p);

struct remote_tls;

/*
 * The TLS handshake on fd, connected to host (its name for SNI and, with
 * VERIFY, for the certificate check; an address literal is checked as an IP).
 * ca_file: the trust anchors for VERIFY (NULL: the system's).  tlsa: with
 * DANE, the host's usable TLSA records (the base domain is host).  NULL on
 * failure, with why ("certificate verify failed: unable to get local issuer
 * certificate", "DANE authentication failed: ...", "timeout", ...).
 */
struct remote_tls *remote_tls_start(int fd, enum remote_tls_policy p, const char *ca_file,
    const struct dane_rrset *tlsa, const char *host, long long deadline_ms, char *why,
    size_t whylen);

/* After a DANE handshake: "usage=3 selector=1 mtype=1 depth=0", the record that matched
 * and the depth of the certificate it matched (0: the server's own). */
const char *remote_tls_dane_describe(const struct remote_tls *t, char *buf, size_t len);

/* Like send() and recv() on a blocking socket with a deadline: > 0 octets, 0 at the end
   (read only), -1 with errno (ETIMEDOUT, EPIPE, EIO...). */
ssize_t remote_tls_write(struct remote_tls *t, const void *p, size_t n, long long deadline_ms);
ssize_t remote_tls_read(struct remote_tls *t, void *p, size_t n, long long deadline_ms);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs. */
const char *remote_tls_describe(const struct remote_tls *t, char *buf, size_t len);

/* What the server showed in the handshake, for `tern probe` and `tern send`. */
struct remote_tls_peer {
    char subject[256]; /* "CN=mx.example.org, O=..." (RFC 2253), "" without a certificate */
    char issuer[256];
    char names[512];    /* the subjectAltName: "DNS:mx.example.org, IP:192.0.2.1" (cut) */
    char not_after[40]; /* "2027-11-29 10:00:00 UTC" */
    bool verified;      /* the chain verifies against the trust store and names host */
    char verify[200];   /* "ok", or why not ("certificate has expired", "no certificate") */
};

/*
 * The peer's certificate on t and a verification of its chain made afresh,
 * whatever the handshake's policy: against ca_file (NULL: the system's trust
 * store) and for host (a name, or an address literal checked as an IP; NULL
 * or "": no name check).  Does no I/O.  0, or -1 when the store cannot be
 * loaded (out->verify says so).
 */
int remote_tls_peer(
    const struct remote_tls *t, const char *ca_file, const char *host, struct remote_tls_peer *out);

/* Send close_notify without waiting, free.  The socket stays open (the caller closes it). */
void remote_tls_close(struct remote_tls *t);

/* `may`: remember that dest (a host, "name[ip]:port") failed the handshake at now. */
void remote_tls_fallback_note(const char *dest, time_t now);
/* `may`: whether dest failed within REMOTE_TLS_FALLBACK_SECS of now (then: plaintext). */
bool remote_tls_fallback_active(const char *dest, time_t now);

#endif
