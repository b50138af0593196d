/*
 * dane.c - TLSA records and the DANE state of an MX host (see dane.h).
 *
 * Which records are kept is RFC 7672 §3.1: an SMTP client has no trust store
 * it could share with the receiving domain, so PKIX-TA(0) and PKIX-EE(1) are
 * "unusable"; a digest of the wrong length cannot match anything and is
 * unusable too (RFC 7671 §5 asks clients to treat malformed records so).
 */
#include "net/dane.h"

#include <string.h>

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

bool
dane_tlsa_usable(uint8_t usage, uint8_t selector, uint8_t mtype, size_t datalen)
{
    if (usage != DANE_USAGE_DANE_TA && usage != DANE_USAGE_DANE_EE)
        return false;
    if (selector != DANE_SELECTOR_CERT && selector != DANE_SELECTOR_SPKI)
        return false;
    switch (mtype) {
    case DANE_MTYPE_FULL:
        return datalen > 0;
    case DANE_MTYPE_SHA256:
        return datalen == 32;
    case DANE_MTYPE_SHA512:
        return datalen == 64;
    default:
        return false;
    }
}

void
dane_rrset_add(struct dane_rrset *s, const uint8_t *rdata, size_t len)
{
    uint8_t u, sel, mt;
    const uint8_t *data;
    size_t dlen, i;

    s->total++;
    if (dane_tlsa_parse(rdata, len, &u, &sel, &mt, &data, &dlen) != 0 ||
        !dane_tlsa_usable(u, sel, mt, dlen))
        return;
    for (i = 0; i < s->n; i++) {
        const struct dane_tlsa *r = &s->rr[i];

        if (r->usage == u && r->selector == sel && r->mtype == mt && r->len == dlen &&
            memcmp(dane_rrset_data(s, i), data, dlen) == 0)
            return;
    }
    /* XXX: a set larger than the bounds keeps its first records; one of those may not be
     * the one the server's certificate matches.  Real sets have two or three records. */
    if (s->n >= DANE_TLSA_MAX || dlen > sizeof(s->data) - s->datalen)
        return;
    s->rr[s->n] = (struct dane_tlsa){.usage = u,
        .selector = sel,
        .mtype = mt,
        .len = (uint16_t)dlen,
        .off = (uint16_t)s->datalen};
    memcpy(s->data + s->datalen, data, dlen);
    s->datalen += dlen;
    s->n++;
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
    return s->n > 0 ? DANE_USABLE : DANE_UNUSABLE;
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
