/*
 * dane.c - TLSA records and the DANE state of an MX host (see dane.h).
 *
 * Which records are kept is RFC 7672 §3.1: an SMTP client has no trust store
 * it could share with the receiving domain, so PKIX-TA(0) and PKIX-EE(1) are
 * "unusable"; a digest of the wrong length cannot match anything and is
 * unusable too (RFC 7671 §5 asks clients to treat malformed records so), and
 * so is a full record (matching type 0) whose data is not the DER of what its
 * selector names: OpenSSL's SSL_dane_tlsa_add() refuses those, and a set of
 * nothing else must be UNUSABLE (mandatory unauthenticated TLS), not USABLE with
 * no record OpenSSL can take (deferred for ever).  Parsing DER is not I/O: this
 * file stays pure.
 */
#include "net/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

int
dane_tlsa_parse(const uint8_t *rdata, size_t len, uint8_t *usage, uint8_t *selector, uint8_t *mtype,
    const uint8_t **data, size_t *datalen)
{
    if (rdata == NULL || len < 4)
        return -1;
    *usage = rdata[0];
    *selector = rdata[1];
    *mtype = rdata[2];
    *data = rdata + 3;
    *datalen = len - 3;
    return 0;
}

/* Whether data is exactly one DER certificate (selector 0) or SubjectPublicKeyInfo (1). */
static bool
dane_full_ok(uint8_t selector, const uint8_t *data, size_t datalen)
{
    const unsigned char *p = data;
    bool ok = false;

    if (datalen == 0 || datalen > 65535)
        return false;
    if (selector == DANE_SELECTOR_CERT) {
        X509 *x = d2i_X509(NULL, &p, (long)datalen);

        ok = x != NULL && p == data + datalen;
        X509_free(x);
    } else {
        EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)datalen);

        ok = k != NULL && p == data + datalen;
        EVP_PKEY_free(k);
    }
    ERR_clear_error();
    return ok;
}

bool
dane_tlsa_usable(
    uint8_t usage, uint8_t selector, uint8_t mtype, const uint8_t *data, size_t datalen)
{
    if (usage != DANE_USAGE_DANE_TA && usage != DANE_USAGE_DANE_EE)
        return false;
    if (selector != DANE_SELECTOR_CERT && selector != DANE_SELECTOR_SPKI)
        return false;
    switch (mtype) {
    case DANE_MTYPE_FULL:
        return data != NULL && dane_full_ok(selector, data, datalen);
    case DANE_MTYPE_SHA256:
        return datalen == 32;
    case DANE_MTYPE_SHA512:
        return datalen == 64;
    default:
        return false;
    }
}

/* Room for more octets of data in s; false if past DANE_DATA_MAX or out of memory. */
static bool
dane_rrset_room(struct dane_rrset *s, size_t more)
{
    size_t cap;
    uint8_t *nd;

    if (more > DANE_DATA_MAX - s->datalen)
        return false;
    if (s->datalen + more <= s->datacap)
        return true;
    cap = s->datacap ? s->datacap : 256;
    while (cap < s->datalen + more)
        cap *= 2;
    if (cap > DANE_DATA_MAX)
        cap = DANE_DATA_MAX;
    if ((nd = realloc(s->data, cap)) == NULL)
        return false;
    s->data = nd;
    s->datacap = cap;
    return true;
}

void
dane_rrset_add(struct dane_rrset *s, const uint8_t *rdata, size_t len)
{
    uint8_t u, sel, mt;
    const uint8_t *data;
    size_t dlen, i;

    s->total++;
    if (dane_tlsa_parse(rdata, len, &u, &sel, &mt, &data, &dlen) != 0 ||
        !dane_tlsa_usable(u, sel, mt, data, dlen))
        return;
    for (i = 0; i < s->n; i++) {
        const struct dane_tlsa *r = &s->rr[i];

        if (r->usage == u && r->selector == sel && r->mtype == mt && r->len == dlen &&
            memcmp(dane_rrset_data(s, i), data, dlen) == 0)
            return;
    }
    if (s->n >= DANE_TLSA_MAX || dlen > UINT16_MAX || !dane_rrset_room(s, dlen)) {
        s->dropped = true; /* never silently: dane_decide() fails closed */
        if (s->why[0] == '\0')
            snprintf(s->why, sizeof(s->why),
                "TLSA RRset too large to keep (over %d records or %d octets)", DANE_TLSA_MAX,
                DANE_DATA_MAX);
        return;
    }
    s->rr[s->n] = (struct dane_tlsa){.usage = u,
        .selector = sel,
        .mtype = mt,
        .len = (uint16_t)dlen,
        .off = (uint32_t)s->datalen};
    memcpy(s->data + s->datalen, data, dlen);
    s->datalen += dlen;
    s->n++;
}

int
dane_rrset_copy(struct dane_rrset *dst, const struct dane_rrset *src)
{
    *dst = *src;
    dst->data = NULL;
    dst->datacap = 0;
    if (src->datalen == 0)
        return 0;
    if ((dst->data = malloc(src->datalen)) == NULL) {
        dst->n = 0;
        dst->datalen = 0;
        dst->dropped = true;
        return -1;
    }
    memcpy(dst->data, src->data, src->datalen);
    dst->datacap = src->datalen;
    return 0;
}

void
dane_rrset_clear(struct dane_rrset *s)
{
    if (s == NULL)
        return;
    free(s->data);
    s->data = NULL;
    s->datalen = s->datacap = 0;
    s->n = 0;
}

enum dane_state
dane_decide(bool mx_secure, bool addr_secure, bool looked_up, bool failed, bool bogus, bool secure,
    const struct dane_rrset *s)
{
    /* RFC 7672 §2.2: TLSA records count only when the MX host name and its address were
     * obtained securely; otherwise an attacker could have chosen the host. */
    if (!looked_up || !mx_secure || !addr_secure)
        return DANE_INSECURE;
    if (failed || bogus)
        return DANE_FAILED;
    if (!secure)
        return DANE_INSECURE;
    if (s == NULL || s->total == 0)
        return DANE_NO_TLSA;
    if (s->n > 0)
        return DANE_USABLE;
    /* a usable record was there but not kept: not UNUSABLE, which would accept any
     * certificate (the "why" is for dns.c's caller to fill: s is const here) */
    return s->dropped ? DANE_FAILED : DANE_UNUSABLE;
}

const char *
dane_state_name(enum dane_state st)
{
    switch (st) {
    case DANE_OFF:
        return "off";
    case DANE_INSECURE:
        return "insecure";
    case DANE_NO_TLSA:
        return "no-tlsa";
    case DANE_UNUSABLE:
        return "unusable";
    case DANE_USABLE:
        return "usable";
    case DANE_FAILED:
        return "failed";
    }
    return "?";
}
