/*
 * test_dane.c - net/dane.c: TLSA rdata parsing, which records an SMTP client may use
 * (RFC 7672 §3.1), and the DANE state of a host from the DNSSEC status of its MX, address
 * and TLSA answers (RFC 7672 §2.2).  The handshakes themselves are exercised end to end
 * by tests/e2e/test_dane.py against a signed zone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "net/dane.h"

/* rdata: usage, selector, mtype, then n octets of data (each = fill) */
static size_t
rdata(uint8_t *buf, uint8_t u, uint8_t s, uint8_t m, size_t n, uint8_t fill)
{
    buf[0] = u;
    buf[1] = s;
    buf[2] = m;
    memset(buf + 3, fill, n);
    return 3 + n;
}

static void
test_parse(void **state)
{
    uint8_t b[80], u, s, m;
    const uint8_t *data;
    size_t dlen, n = rdata(b, 3, 1, 1, 32, 0xab);

    assert_int_equal(dane_tlsa_parse(b, n, &u, &s, &m, &data, &dlen), 0);
    assert_int_equal(u, 3);
    assert_int_equal(s, 1);
    assert_int_equal(m, 1);
    assert_int_equal(dlen, 32);
    assert_ptr_equal(data, b + 3);
    /* no association data at all: malformed */
    assert_int_equal(dane_tlsa_parse(b, 3, &u, &s, &m, &data, &dlen), -1);
    assert_int_equal(dane_tlsa_parse(b, 0, &u, &s, &m, &data, &dlen), -1);
    assert_int_equal(dane_tlsa_parse(NULL, 10, &u, &s, &m, &data, &dlen), -1);
}

/* A fresh Ed25519 key: its SubjectPublicKeyInfo and a self-signed certificate, in DER. */
static EVP_PKEY *
key_new(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    assert_non_null(k);
    return k;
}

static size_t
spki_der(EVP_PKEY *k, uint8_t *out, size_t outlen)
{
    unsigned char *p = out;
    int n = i2d_PUBKEY(k, NULL);

    assert_true(n > 0 && (size_t)n <= outlen);
    assert_int_equal(i2d_PUBKEY(k, &p), n);
    return (size_t)n;
}

static size_t
cert_der(EVP_PKEY *k, uint8_t *out, size_t outlen)
{
    X509 *x = X509_new();
    unsigned char *p = out;
    int n;

    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
        (const unsigned char *)"mx.example", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, k, NULL) > 0);
    n = i2d_X509(x, NULL);
    assert_true(n > 0 && (size_t)n <= outlen);
    assert_int_equal(i2d_X509(x, &p), n);
    X509_free(x);
    return (size_t)n;
}

static void
test_usable(void **state)
{
    static const uint8_t z[64];
    uint8_t cert[2048], spki[256], junk[300];
    EVP_PKEY *k = key_new();
    size_t nc = cert_der(k, cert, sizeof(cert)), ns = spki_der(k, spki, sizeof(spki));

    EVP_PKEY_free(k);
    memset(junk, 0xab, sizeof(junk));
    /* DANE-EE and DANE-TA with each selector and matching type */
    assert_true(dane_tlsa_usable(3, 1, 1, z, 32));
    assert_true(dane_tlsa_usable(3, 0, 2, z, 64));
    assert_true(dane_tlsa_usable(2, 0, 1, z, 32));
    assert_true(dane_tlsa_usable(2, 1, 0, spki, ns));
    assert_true(dane_tlsa_usable(3, 1, 0, spki, ns));
    assert_true(dane_tlsa_usable(3, 0, 0, cert, nc));
    assert_true(dane_tlsa_usable(2, 0, 0, cert, nc));
    /* PKIX-TA(0) and PKIX-EE(1): unusable for SMTP (RFC 7672 §3.1.3) */
    assert_false(dane_tlsa_usable(0, 1, 1, z, 32));
    assert_false(dane_tlsa_usable(1, 1, 1, z, 32));
    /* unknown usage, selector, matching type */
    assert_false(dane_tlsa_usable(4, 1, 1, z, 32));
    assert_false(dane_tlsa_usable(3, 2, 1, z, 32));
    assert_false(dane_tlsa_usable(3, 1, 3, z, 32));
    assert_false(dane_tlsa_usable(3, 1, 255, z, 32));
    /* a digest of the wrong length cannot match: unusable */
    assert_false(dane_tlsa_usable(3, 1, 1, z, 31));
    assert_false(dane_tlsa_usable(3, 1, 1, z, 64));
    assert_false(dane_tlsa_usable(3, 1, 2, z, 32));
    assert_false(dane_tlsa_usable(3, 1, 0, z, 0));
    /* full data that is not the DER its selector names: malformed, unusable (RFC 7671
     * §5.1; OpenSSL refuses it too) -- junk, the other selector's DER, a truncated or
     * padded one */
    assert_false(dane_tlsa_usable(3, 1, 0, junk, sizeof(junk)));
    assert_false(dane_tlsa_usable(3, 0, 0, junk, sizeof(junk)));
    assert_false(dane_tlsa_usable(3, 0, 0, spki, ns));
    assert_false(dane_tlsa_usable(3, 1, 0, cert, nc));
    assert_false(dane_tlsa_usable(3, 0, 0, cert, nc - 1));
    assert_false(dane_tlsa_usable(3, 1, 0, spki, ns - 1));
    assert_false(dane_tlsa_usable(3, 1, 0, spki, ns + 1));
    assert_false(dane_tlsa_usable(3, 1, 0, NULL, 44));
}

static void
test_rrset_add(void **state)
{
    static struct dane_rrset s, c;
    uint8_t b[80];
    size_t n;

    memset(&s, 0, sizeof(s));
    n = rdata(b, 3, 1, 1, 32, 0x11);
    dane_rrset_add(&s, b, n);
    dane_rrset_add(&s, b, n);        /* the same record twice: kept once */
    n = rdata(b, 1, 1, 1, 32, 0x22); /* PKIX-EE: counted, not kept */
    dane_rrset_add(&s, b, n);
    n = rdata(b, 2, 0, 2, 64, 0x33);
    dane_rrset_add(&s, b, n);
    dane_rrset_add(&s, b, 2); /* malformed */
    assert_int_equal(s.total, 5);
    assert_int_equal(s.n, 2);
    assert_false(s.dropped);
    assert_int_equal(s.rr[0].usage, 3);
    assert_int_equal(s.rr[0].len, 32);
    assert_int_equal(dane_rrset_data(&s, 0)[0], 0x11);
    assert_int_equal(s.rr[1].usage, 2);
    assert_int_equal(s.rr[1].selector, 0);
    assert_int_equal(s.rr[1].mtype, 2);
    assert_int_equal(s.rr[1].len, 64);
    assert_int_equal(dane_rrset_data(&s, 1)[0], 0x33);
    assert_int_equal(dane_rrset_data(&s, 1)[63], 0x33);

    /* a copy is a full copy: its own data */
    assert_int_equal(dane_rrset_copy(&c, &s), 0);
    assert_ptr_not_equal(c.data, s.data);
    assert_int_equal(c.n, 2);
    assert_memory_equal(dane_rrset_data(&c, 1), dane_rrset_data(&s, 1), 64);
    dane_rrset_clear(&c);
    dane_rrset_clear(&s);
    assert_null(s.data);
    assert_int_equal(s.n, 0);

    /* bounded: more records than DANE_TLSA_MAX keep the first ones, and say so */
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < DANE_TLSA_MAX + 4; i++) {
        n = rdata(b, 3, 1, 1, 32, (uint8_t)i);
        dane_rrset_add(&s, b, n);
    }
    assert_int_equal(s.n, DANE_TLSA_MAX);
    assert_int_equal(s.total, DANE_TLSA_MAX + 4);
    assert_true(s.dropped);
    /* ... which is still USABLE (the server must match a kept record: fail closed) */
    assert_int_equal(dane_decide(true, true, true, false, false, true, &s), DANE_USABLE);
    dane_rrset_clear(&s);
}

/* A full-certificate record of real size (a few KiB, as a 4096-bit RSA chain member) is
 * kept; one that cannot be kept makes the host FAILED, never UNUSABLE (which would take
 * unauthenticated TLS). */
static void
test_rrset_big(void **state)
{
    static struct dane_rrset s;
    static uint8_t big[3 + 4096];
    uint8_t cert[2048];
    EVP_PKEY *k = key_new();
    size_t nc = cert_der(k, cert, sizeof(cert));

    EVP_PKEY_free(k);
    /* 60 digests (3840 octets, past the old 2048-octet bound), then a full certificate */
    memset(&s, 0, sizeof(s));
    big[0] = 3;
    big[1] = 0;
    big[2] = 0;
    memcpy(big + 3, cert, nc);
    for (int i = 0; i < 60; i++) {
        uint8_t b[80];

        dane_rrset_add(&s, b, rdata(b, 3, 0, 2, 64, (uint8_t)i)); /* 60 x 64 = 3840 octets */
    }
    dane_rrset_add(&s, big, 3 + nc);
    assert_int_equal(s.n, 61);
    assert_false(s.dropped);
    assert_int_equal(s.rr[60].len, nc);
    assert_memory_equal(dane_rrset_data(&s, 60), cert, nc);
    dane_rrset_clear(&s);

    /* a set whose only usable record could not be kept (past the bounds, or no memory:
     * with a DNS message of at most 64 KiB only memory can do it now) is marked dropped */
    memset(&s, 0, sizeof(s));
    {
        static uint8_t huge[3 + 70000];

        huge[0] = 3;
        huge[1] = 1;
        huge[2] = 1; /* a 70000-octet SHA-256: unusable by its length, not dropped */
        dane_rrset_add(&s, huge, sizeof(huge));
        assert_false(s.dropped);
        assert_int_equal(dane_decide(true, true, true, false, false, true, &s), DANE_UNUSABLE);
    }
    /* a usable record, not kept: FAILED, with why */
    s.dropped = true;
    snprintf(s.why, sizeof(s.why), "TLSA RRset too large");
    assert_int_equal(dane_decide(true, true, true, false, false, true, &s), DANE_FAILED);
    dane_rrset_clear(&s);
}

static void
test_decide(void **state)
{
    static struct dane_rrset usable, unusable, empty;
    uint8_t b[80];

    memset(&usable, 0, sizeof(usable));
    dane_rrset_add(&usable, b, rdata(b, 3, 1, 1, 32, 1));
    memset(&unusable, 0, sizeof(unusable));
    dane_rrset_add(&unusable, b, rdata(b, 0, 1, 1, 32, 1));
    memset(&empty, 0, sizeof(empty));

    /* secure MX, secure address, secure TLSA */
    assert_int_equal(dane_decide(true, true, true, false, false, true, &usable), DANE_USABLE);
    assert_int_equal(dane_decide(true, true, true, false, false, true, &unusable), DANE_UNUSABLE);
    assert_int_equal(dane_decide(true, true, true, false, false, true, &empty), DANE_NO_TLSA);
    /* insecure anywhere along the way: opportunistic, whatever the TLSA answer */
    assert_int_equal(dane_decide(false, true, true, false, false, true, &usable), DANE_INSECURE);
    assert_int_equal(dane_decide(true, false, true, false, false, true, &usable), DANE_INSECURE);
    assert_int_equal(dane_decide(true, true, true, false, false, false, &usable), DANE_INSECURE);
    /* failed or bogus TLSA for a secure host: not used (no downgrade) */
    assert_int_equal(dane_decide(true, true, true, true, false, false, &empty), DANE_FAILED);
    assert_int_equal(dane_decide(true, true, true, false, true, false, &empty), DANE_FAILED);
    /* ... but an insecure MX makes a bogus TLSA irrelevant (RFC 7672 §2.2) */
    assert_int_equal(dane_decide(false, true, true, false, true, false, &empty), DANE_INSECURE);
    /* not looked up */
    assert_int_equal(dane_decide(true, true, false, false, false, false, NULL), DANE_INSECURE);

    assert_string_equal(dane_state_name(DANE_USABLE), "usable");
    assert_string_equal(dane_state_name(DANE_FAILED), "failed");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_rrset_add),
        cmocka_unit_test(test_rrset_big),
        cmocka_unit_test(test_decide),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
