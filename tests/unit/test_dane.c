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

static void
test_usable(void **state)
{
    /* DANE-EE and DANE-TA with each selector and matching type */
    assert_true(dane_tlsa_usable(3, 1, 1, 32));
    assert_true(dane_tlsa_usable(3, 0, 2, 64));
    assert_true(dane_tlsa_usable(2, 0, 1, 32));
    assert_true(dane_tlsa_usable(2, 1, 0, 300));
    /* PKIX-TA(0) and PKIX-EE(1): unusable for SMTP (RFC 7672 §3.1.3) */
    assert_false(dane_tlsa_usable(0, 1, 1, 32));
    assert_false(dane_tlsa_usable(1, 1, 1, 32));
    /* unknown usage, selector, matching type */
    assert_false(dane_tlsa_usable(4, 1, 1, 32));
    assert_false(dane_tlsa_usable(3, 2, 1, 32));
    assert_false(dane_tlsa_usable(3, 1, 3, 32));
    assert_false(dane_tlsa_usable(3, 1, 255, 32));
    /* a digest of the wrong length cannot match: unusable */
    assert_false(dane_tlsa_usable(3, 1, 1, 31));
    assert_false(dane_tlsa_usable(3, 1, 1, 64));
    assert_false(dane_tlsa_usable(3, 1, 2, 32));
    assert_false(dane_tlsa_usable(3, 1, 0, 0));
}

static void
test_rrset_add(void **state)
{
    static struct dane_rrset s;
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
    assert_int_equal(s.rr[0].usage, 3);
    assert_int_equal(s.rr[0].len, 32);
    assert_int_equal(dane_rrset_data(&s, 0)[0], 0x11);
    assert_int_equal(s.rr[1].usage, 2);
    assert_int_equal(s.rr[1].selector, 0);
    assert_int_equal(s.rr[1].mtype, 2);
    assert_int_equal(s.rr[1].len, 64);
    assert_int_equal(dane_rrset_data(&s, 1)[0], 0x33);
    assert_int_equal(dane_rrset_data(&s, 1)[63], 0x33);

    /* bounded: more records than DANE_TLSA_MAX keep the first ones */
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < DANE_TLSA_MAX + 4; i++) {
        n = rdata(b, 3, 1, 1, 32, (uint8_t)i);
        dane_rrset_add(&s, b, n);
    }
    assert_int_equal(s.n, DANE_TLSA_MAX);
    assert_int_equal(s.total, DANE_TLSA_MAX + 4);

    /* bounded: association data past DANE_DATA_MAX is not kept */
    memset(&s, 0, sizeof(s));
    {
        static uint8_t big[DANE_DATA_MAX + 10];

        big[0] = 3;
        big[1] = 0;
        big[2] = 0;
        dane_rrset_add(&s, big, sizeof(big));
        assert_int_equal(s.n, 0);
        assert_int_equal(s.total, 1);
    }
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
        cmocka_unit_test(test_decide),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
