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

/*
 * Bounds on what is kept of one host's TLSA set.  A whole DNS message is at most 64 KiB, so
 * the data bound only stops what a message could not carry anyway; the record bound is far
 * above real sets (two or three records).  A usable record that does not fit (or finds no
 * memory) is never silently dropped: the set is marked `dropped` and dane_decide() fails
 * closed (RFC 7672 §2.2: never a downgrade).
 */
#define DANE_TLSA_MAX 64          /* usable records kept per host */
#define DANE_DATA_MAX (64 * 1024) /* octets of association data in all */

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
    uint32_t off; /* where it starts in the set's data[] */
};

/*
 * One host's TLSA set and state.  Zeroed memory is an empty set; the association data is
 * allocated to fit (dane_rrset_add), so a copy is dane_rrset_copy() and the end of one is
 * dane_rrset_clear().
 */
struct dane_rrset {
    enum dane_state state;
    char why[96]; /* FAILED: what went wrong, for logs and replies */
    size_t total; /* records in the answer */
    size_t n;     /* usable records kept: rr[0..n) */
    bool dropped; /* a usable record could not be kept (bounds, memory): fail closed */
    struct dane_tlsa rr[DANE_TLSA_MAX];
    size_t datalen, datacap;
    uint8_t *data;
};

/* One TLSA rdata (wire format: usage, selector, matching type, data).  -1 if shorter
 * than 4 octets (no data). */
int dane_tlsa_parse(const uint8_t *rdata, size_t len, uint8_t *usage, uint8_t *selector,
    uint8_t *mtype, const uint8_t **data, size_t *datalen);

/* Whether an SMTP client may use this record (RFC 7672 §3.1): DANE-TA(2) or DANE-EE(3),
 * selector 0 or 1, matching type 0 (full: the DER of a certificate for selector 0, of a
 * SubjectPublicKeyInfo for selector 1, checked by parsing it, as OpenSSL will), 1 (SHA2-256:
 * 32 octets) or 2 (SHA2-512: 64).  A malformed record is unusable (RFC 7671 §5.1). */
bool dane_tlsa_usable(
    uint8_t usage, uint8_t selector, uint8_t mtype, const uint8_t *data, size_t datalen);

/* Add one TLSA rdata to s (counted in total; kept when usable and not a duplicate; a usable
 * record that does not fit DANE_TLSA_MAX / DANE_DATA_MAX or finds no memory sets dropped). */
void dane_rrset_add(struct dane_rrset *s, const uint8_t *rdata, size_t len);

/* dst = a full copy of src (dst's own data is not freed: dst is new).  0, or -1 (no memory:
 * dst is then a copy without records, dropped set, so that it fails closed). */
int dane_rrset_copy(struct dane_rrset *dst, const struct dane_rrset *src);

/* Free s's data; s is then an empty set (state and why kept).  NULL is fine. */
void dane_rrset_clear(struct dane_rrset *s);

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
 * A secure set with a usable record that could not be kept (s->dropped) and none kept is
 * FAILED, never UNUSABLE: unauthenticated TLS must not be what a large set buys an attacker.
 * With some kept it is USABLE: the server must match one of those (else 4.7.5, deferred).
 */
enum dane_state dane_decide(bool mx_secure, bool addr_secure, bool looked_up, bool failed,
    bool bogus, bool secure, const struct dane_rrset *s);

/* "off", "insecure", "no-tlsa", "unusable", "usable", "failed" */
const char *dane_state_name(enum dane_state st);

#endif
