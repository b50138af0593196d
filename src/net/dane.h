/*
 * dane.h - DANE for SMTP (RFC 7672, RFC 6698/7671): TLSA records and what they
 * mean for one MX host.  Pure: no DNS, no TLS, no I/O; net/dns.c feeds it the
 * answers libunbound gave (with their DNSSEC status), deliver/remote_tls.c hands
 * the usable records to OpenSSL's DANE verifier.
 *
 * The state of one host (RFC 7672 §2.2), from dane_decide():
 *   OFF       not looked up (tls_policy is not dane, relay_host, an address literal);
 *   INSECURE  the MX answer, the host's address answer or its TLSA answer was not
 *             DNSSEC-validated ("insecure"): opportunistic TLS, as tls_policy = may;
 *   NO_TLSA   DNSSEC proves there is no TLSA record: opportunistic TLS as well;
 *   UNUSABLE  a secure TLSA RRset none of whose records can be used (PKIX-TA(0),
 *             PKIX-EE(1), unknown parameters, a digest of the wrong length): TLS is
 *             mandatory, the certificate is not checked (RFC 7672 §2.2);
 *   USABLE    a secure TLSA RRset with at least one DANE-TA(2) or DANE-EE(3) record
 *             OpenSSL can check: TLS is mandatory and must authenticate by TLSA;
 *   FAILED    the TLSA lookup failed (SERVFAIL, timeout) or was "bogus" (DNSSEC
 *             validation failed) for a host whose MX and address answers were
 *             secure: the host is not used (RFC 7672 §2.2.1; never a downgrade).
 */
#ifndef TERN_NET_DANE_H
#define TERN_NET_DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DANE_TLSA_MAX 16   /* usable records kept per host; more are ignored */
#define DANE_DATA_MAX 2048 /* bytes of association data in all (full certificates are big) */

enum dane_state {
    DANE_OFF,
    DANE_INSECURE,
    DANE_NO_TLSA,
    DANE_UNUSABLE,
    DANE_USABLE,
    DANE_FAILED,
};

/* TLSA parameters (RFC 7218 names) */
enum {
    DANE_USAGE_PKIX_TA = 0,
    DANE_USAGE_PKIX_EE = 1,
    DANE_USAGE_DANE_TA = 2,
    DANE_USAGE_DANE_EE = 3,
    DANE_SELECTOR_CERT = 0,
    DANE_SELECTOR_SPKI = 1,
    DANE_MTYPE_FULL = 0,
    DANE_MTYPE_SHA256 = 1,
    DANE_MTYPE_SHA512 = 2,
};

struct dane_tlsa {
    uint8_t usage, selector, mtype;
    uint16_t len; /* of the association data */
    uint16_t off; /* where it starts in the set's data[] */
};

/* One host's TLSA set and state; plain memory (a struct copy is a full copy). */
struct dane_rrset {
    enum dane_state state;
    char why[96]; /* FAILED: what went wrong, for logs and replies */
    size_t total; /* records in the answer */
    size_t n;     /* usable records kept: rr[0..n) */
    struct dane_tlsa rr[DANE_TLSA_MAX];
    size_t datalen;
    uint8_t data[DANE_DATA_MAX];
};

/* One TLSA rdata (wire format: usage, selector, matching type, data).  -1 if shorter
 * than 4 octets (no data). */
int dane_tlsa_parse(const uint8_t *rdata, size_t len, uint8_t *usage, uint8_t *selector,
    uint8_t *mtype, const uint8_t **data, size_t *datalen);

/* Whether an SMTP client may use this record (RFC 7672 §3.1): DANE-TA(2) or DANE-EE(3),
 * selector 0 or 1, matching type 0 (full), 1 (SHA2-256: 32 octets) or 2 (SHA2-512: 64). */
bool dane_tlsa_usable(uint8_t usage, uint8_t selector, uint8_t mtype, size_t datalen);

/* Add one TLSA rdata to s (counted in total; kept only when usable, not a duplicate and
 * there is room). */
void dane_rrset_add(struct dane_rrset *s, const uint8_t *rdata, size_t len);

/* The association data of record i. */
static inline const uint8_t *
dane_rrset_data(const struct dane_rrset *s, size_t i)
{
    return s->data + s->rr[i].off;
}

/*
 * The host's state from what DNS said (RFC 7672 §2.2):
 *   mx_secure     the MX answer (or, for an implicit MX, its denial) was secure;
 *   addr_secure   the answer the host's address came from was secure;
 *   looked_up     a TLSA answer exists at all (false: DANE was not asked for);
 *   failed        the TLSA lookup failed (resolver error, SERVFAIL, timeout);
 *   bogus         the TLSA answer failed DNSSEC validation;
 *   secure        the TLSA answer (records or NXDOMAIN/NODATA) was secure;
 *   s             the records (s->total of them; s->n usable).
 */
enum dane_state dane_decide(bool mx_secure, bool addr_secure, bool looked_up, bool failed,
    bool bogus, bool secure, const struct dane_rrset *s);

/* "off", "insecure", "no-tlsa", "unusable", "usable", "failed" */
const char *dane_state_name(enum dane_state st);

#endif
