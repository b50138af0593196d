/*
 * test_dns.c - unit tests of mail routing lookups (net/dns.c) against a real
 * libunbound, hermetically.
 *
 * The resolver reads an unbound configuration written here: the "test."
 * zone is static, so every name in it is answered from local-data (or is
 * NXDOMAIN) without a packet being sent; everything else is forwarded to two
 * tiny servers on 127.0.0.1 run by this test on the same event loop: one
 * answers SERVFAIL to every query, the other never answers.  No query ever
 * leaves the machine.
 *
 * Each lookup runs a real event_base loop until its callback arrives, bounded
 * by a guard timer.  Checked: preference order, shuffling of equal
 * preferences, implicit MX, null MX, NXDOMAIN, an MX without addresses, the
 * address cap, address order and its setting, literals, the port, SERVFAIL and
 * timeouts as DNS_TEMP, bad configuration files, and dns_close() with routes
 * in flight (no callback, no leak under ASan) including from a callback.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/dns.h"

#define GUARD_MS 10000 /* a lookup that takes longer than this has hung */

static char tmpdir[64];
static char conf_path[128];
static struct event_base *base;
static int servfail_fd = -1, blackhole_fd = -1;
static struct event *servfail_ev;
static unsigned servfail_answered;

/* ---- the two stub servers --------------------------------------------------------------- */

/* Answers every query with its own question and RCODE SERVFAIL. */
static void
servfail_on_read(evutil_socket_t fd, short what, void *arg)
{
    uint8_t pkt[1500];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof(from);
    ssize_t n;

    while ((n = recvfrom(fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&from, &fromlen)) >= 12) {
        pkt[2] |= 0x80;    /* QR */
        pkt[3] = 0x80 | 2; /* RA, RCODE SERVFAIL */
        /* No EDNS in the reply: drop the additional section (the OPT record at the end). */
        pkt[10] = pkt[11] = 0;
        {
            size_t len = (size_t)n, i = 12;

            while (i < len && pkt[i] != 0)
                i += (size_t)pkt[i] + 1;
            len = i + 5 <= len ? i + 5 : len; /* the question: name, type, class */
            (void)sendto(fd, pkt, len, 0, (struct sockaddr *)&from, fromlen);
        }
        servfail_answered++;
        fromlen = sizeof(from);
    }
}

static int
udp_socket(unsigned short *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        return -1;
    *port = ntohs(sin.sin_port);
    return fd;
}

/* ---- running lookups -------------------------------------------------------------------- */

struct result {
    int calls;
    int status;
    char error[128];
    struct dns_host hosts[DNS_MAX_HOSTS];
    size_t nhosts;
};

static void
on_route(void *arg, const struct dns_route *r)
{
    struct result *res = arg;

    res->calls++;
    res->status = r->status;
    snprintf(res->error, sizeof(res->error), "%s", r->error);
    assert_true(r->nhosts <= DNS_MAX_HOSTS);
    assert_true(r->status != DNS_OK || r->nhosts >= 1);
    res->nhosts = r->nhosts;
    if (r->nhosts)
        memcpy(res->hosts, r->hosts, r->nhosts * sizeof(*r->hosts));
}

static void
on_guard(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
    event_base_loopbreak(base);
}

/* Runs the loop until every result has its callback, or GUARD_MS. */
static void
wait_all(struct result *res, size_t n, unsigned guard_ms)
{
    bool expired = false;
    struct event *guard = evtimer_new(base, on_guard, &expired);
    struct timeval tv = {guard_ms / 1000, (guard_ms % 1000) * 1000};
    size_t i;

    evtimer_add(guard, &tv);
    for (;;) {
        for (i = 0; i < n && res[i].calls > 0; i++)
            ;
        if (i == n || expired)
            break;
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(guard);
}

static struct dns *
open_test_dns(void)
{
    char err[256] = "";
    struct dns *d = dns_open(base, conf_path, err, sizeof(err));

    if (d == NULL)
        fail_msg("dns_open: %s", err);
    return d;
}

static void
lookup(struct dns *d, const char *domain, unsigned short port, struct result *res)
{
    memset(res, 0, sizeof(*res));
    dns_route(d, domain, port, on_route, res);
    assert_int_equal(res->calls, 0); /* never from inside dns_route */
    wait_all(res, 1, GUARD_MS);
    assert_int_equal(res->calls, 1);
}

static const char *
addr_text(const struct dns_host *h, char *buf, size_t len)
{
    if (h->addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&h->addr)->sin_addr, buf, len);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&h->addr)->sin6_addr, buf, len);
    return buf;
}

static unsigned short
host_port(const struct dns_host *h)
{
    if (h->addr.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&h->addr)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&h->addr)->sin6_port);
}

static void
expect_host(const struct result *res, size_t i, const char *name, unsigned pref, const char *addr)
{
    char buf[INET6_ADDRSTRLEN];

    assert_true(i < res->nhosts);
    assert_string_equal(res->hosts[i].name, name);
    assert_int_equal(res->hosts[i].preference, pref);
    assert_string_equal(addr_text(&res->hosts[i], buf, sizeof(buf)), addr);
    assert_int_equal(res->hosts[i].addrlen, res->hosts[i].addr.ss_family == AF_INET
                                                ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6));
}

/* ---- setup ------------------------------------------------------------------------------ */

static int
group_setup(void **state)
{
    unsigned short sf_port, bh_port;
    FILE *f;
    int i;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/tern-test-dns-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(conf_path, sizeof(conf_path), "%s/unbound.conf", tmpdir);
    if ((base = event_base_new()) == NULL)
        return -1;
    if ((servfail_fd = udp_socket(&sf_port)) < 0 || (blackhole_fd = udp_socket(&bh_port)) < 0)
        return -1;
    servfail_ev = event_new(base, servfail_fd, EV_READ | EV_PERSIST, servfail_on_read, NULL);
    event_add(servfail_ev, NULL);

    if ((f = fopen(conf_path, "w")) == NULL)
        return -1;
    fprintf(f, "server:\n"
               "    module-config: \"iterator\"\n"
               "    do-not-query-localhost: no\n" /* the stub servers are on 127.0.0.1 */
               "    local-zone: \"test.\" static\n"
               /* pref 20 first: the sort must do the work */
               "    local-data: \"two.test. MX 20 mx2.two.test.\"\n"
               "    local-data: \"two.test. MX 10 mx1.two.test.\"\n"
               "    local-data: \"mx1.two.test. A 127.0.0.2\"\n"
               "    local-data: \"mx2.two.test. A 127.0.0.3\"\n"
               "    local-data: \"nullmx.test. MX 0 .\"\n"
               "    local-data: \"implicit.test. A 127.0.0.4\"\n"
               "    local-data: \"implicit.test. AAAA 2001:db8::4\"\n"
               "    local-data: \"equal.test. MX 10 a.equal.test.\"\n"
               "    local-data: \"equal.test. MX 10 b.equal.test.\"\n"
               "    local-data: \"a.equal.test. A 127.0.0.5\"\n"
               "    local-data: \"b.equal.test. A 127.0.0.6\"\n"
               "    local-data: \"noaddr.test. MX 10 nothing.noaddr.test.\"\n"
               "    local-data: \"partial.test. MX 10 nothing.partial.test.\"\n"
               "    local-data: \"partial.test. MX 20 ok.partial.test.\"\n"
               "    local-data: \"ok.partial.test. A 127.0.0.7\"\n"
               "    local-data: \"txtonly.test. TXT hello\"\n"
               "    local-data: \"multi.test. MX 5 mx.multi.test.\"\n"
               "    local-data: \"mx.multi.test. AAAA ::1\"\n"
               "    local-data: \"mx.multi.test. A 127.0.0.8\"\n"
               "    local-data: \"mx.multi.test. A 127.0.0.9\"\n"
               "    local-data: \"v6only.test. AAAA 2001:db8::6\"\n"
               /* an exchange whose address lookups SERVFAIL, and a good one after it */
               "    local-data: \"halfbroken.test. MX 10 mx.broken.example.\"\n"
               "    local-data: \"halfbroken.test. MX 20 ok.partial.test.\"\n"
               /* an exchange whose address lookups never get an answer */
               "    local-data: \"halfslow.test. MX 10 mx.blackhole.example.\"\n"
               "    local-data: \"halfslow.test. MX 20 ok.partial.test.\"\n");
    for (i = 0; i < 25; i++) {
        fprintf(f, "    local-data: \"many.test. MX %d mx%d.many.test.\"\n", 100 - i, i);
        fprintf(f, "    local-data: \"mx%d.many.test. A 127.0.1.%d\"\n", i, i);
    }
    fprintf(f,
        "forward-zone:\n"
        "    name: \".\"\n"
        "    forward-addr: 127.0.0.1@%u\n"
        "forward-zone:\n"
        "    name: \"blackhole.example.\"\n"
        "    forward-addr: 127.0.0.1@%u\n",
        sf_port, bh_port);
    return fclose(f) == 0 ? 0 : -1;
}

static int
group_teardown(void **state)
{
    char path[160];

    event_free(servfail_ev);
    close(servfail_fd);
    close(blackhole_fd);
    event_base_free(base);
    unlink(conf_path);
    snprintf(path, sizeof(path), "%s", tmpdir);
    rmdir(path);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void
test_mx_preference_order(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;
    int i;

    for (i = 0; i < 5; i++) {
        lookup(d, "two.test", 25, &res);
        assert_int_equal(res.status, DNS_OK);
        assert_int_equal(res.nhosts, 2);
        expect_host(&res, 0, "mx1.two.test", 10, "127.0.0.2");
        expect_host(&res, 1, "mx2.two.test", 20, "127.0.0.3");
        assert_int_equal(host_port(&res.hosts[0]), 25);
    }
    /* A final dot is accepted and does not show in the names. */
    lookup(d, "two.test.", 2525, &res);
    assert_int_equal(res.status, DNS_OK);
    expect_host(&res, 0, "mx1.two.test", 10, "127.0.0.2");
    assert_int_equal(host_port(&res.hosts[0]), 2525);
    assert_int_equal(host_port(&res.hosts[1]), 2525);
    assert_int_equal(dns_pending(d), 0);
    dns_close(d);
}

/* DANE: local-data answers are never DNSSEC-secure, so with TLSA lookups on, every host is
 * insecure and no TLSA query is made (tests/e2e/test_dane.py has the signed zone); off, the
 * state is OFF. */
static void
test_dane_states_insecure(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "two.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.hosts[0].dane, DANE_OFF);
    assert_null(res.hosts[0].tlsa);
    /* a config file without any trust anchor: said (false, and a warning), DANE still on */
    assert_false(dns_set_dane(d, true));
    lookup(d, "two.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 2);
    assert_int_equal(res.hosts[0].dane, DANE_INSECURE);
    assert_int_equal(res.hosts[1].dane, DANE_INSECURE);
    assert_null(res.hosts[0].tlsa); /* the MX was insecure: TLSA not even asked */
    lookup(d, "implicit.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.hosts[0].dane, DANE_INSECURE);
    lookup(d, "[127.0.0.1]", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.hosts[0].dane, DANE_INSECURE);
    dns_close(d);
}

static void
test_equal_preferences_shuffled(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;
    int i, a_first = 0, b_first = 0;

    for (i = 0; i < 60; i++) {
        lookup(d, "equal.test", 25, &res);
        assert_int_equal(res.status, DNS_OK);
        assert_int_equal(res.nhosts, 2);
        assert_int_equal(res.hosts[0].preference, 10);
        assert_int_equal(res.hosts[1].preference, 10);
        assert_string_not_equal(res.hosts[0].name, res.hosts[1].name);
        if (strcmp(res.hosts[0].name, "a.equal.test") == 0)
            a_first++;
        else
            b_first++;
    }
    /* 60 fair coin flips all one way: probability 2^-59. */
    assert_true(a_first > 0);
    assert_true(b_first > 0);
    dns_close(d);
}

static void
test_implicit_mx(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "implicit.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 2);
    expect_host(&res, 0, "implicit.test", 0, "127.0.0.4"); /* IPv4 first by default */
    expect_host(&res, 1, "implicit.test", 0, "2001:db8::4");
    assert_int_equal(res.hosts[1].addr.ss_family, AF_INET6);
    assert_int_equal(host_port(&res.hosts[1]), 25);

    lookup(d, "v6only.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "v6only.test", 0, "2001:db8::6");

    /* The name exists (TXT) but has no MX and no address. */
    lookup(d, "txtonly.test", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    assert_int_equal(res.nhosts, 0);
    assert_non_null(strstr(res.error, "txtonly.test has no MX and no address"));
    dns_close(d);
}

static void
test_null_mx(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "nullmx.test", 25, &res);
    assert_int_equal(res.status, DNS_NULL_MX);
    assert_int_equal(res.nhosts, 0);
    assert_non_null(strstr(res.error, "null MX"));
    dns_close(d);
}

static void
test_nxdomain(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "nosuchdomain.test", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    assert_int_equal(res.nhosts, 0);
    assert_non_null(strstr(res.error, "NXDOMAIN"));

    /* Not a domain name at all: refused without a query. */
    lookup(d, "bad domain", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    assert_non_null(strstr(res.error, "invalid domain"));
    lookup(d, "a..test", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    lookup(d, "", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    lookup(d, "evil\\.test", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    dns_close(d);
}

static void
test_mx_without_address(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    /* The only exchange has no address: transient, with the reason. */
    lookup(d, "noaddr.test", 25, &res);
    assert_int_equal(res.status, DNS_TEMP);
    assert_int_equal(res.nhosts, 0);
    assert_non_null(strstr(res.error, "no MX host of noaddr.test has an address"));
    assert_non_null(strstr(res.error, "nothing.noaddr.test: NXDOMAIN"));

    /* The better exchange has no address: skipped, the other one is used. */
    lookup(d, "partial.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "ok.partial.test", 20, "127.0.0.7");

    /* The better exchange's lookups fail (SERVFAIL): skipped as well. */
    lookup(d, "halfbroken.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "ok.partial.test", 20, "127.0.0.7");
    dns_close(d);
}

static void
test_address_order_and_setting(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "multi.test", 587, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 3);
    assert_int_equal(res.hosts[0].addr.ss_family, AF_INET);
    assert_int_equal(res.hosts[1].addr.ss_family, AF_INET);
    expect_host(&res, 2, "mx.multi.test", 5, "::1");
    assert_int_equal(host_port(&res.hosts[2]), 587);

    dns_set_prefer(d, DNS_PREFER_IPV6);
    lookup(d, "multi.test", 587, &res);
    assert_int_equal(res.nhosts, 3);
    expect_host(&res, 0, "mx.multi.test", 5, "::1");
    assert_int_equal(res.hosts[1].addr.ss_family, AF_INET);
    assert_int_equal(res.hosts[2].addr.ss_family, AF_INET);

    dns_set_prefer(d, DNS_ONLY_IPV4);
    lookup(d, "multi.test", 587, &res);
    assert_int_equal(res.nhosts, 2);
    assert_int_equal(res.hosts[0].addr.ss_family, AF_INET);
    assert_int_equal(res.hosts[1].addr.ss_family, AF_INET);
    lookup(d, "v6only.test", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN); /* no address we may use */

    dns_set_prefer(d, DNS_ONLY_IPV6);
    lookup(d, "multi.test", 587, &res);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "mx.multi.test", 5, "::1");
    dns_close(d);
}

static void
test_host_cap(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;
    size_t i;

    lookup(d, "many.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, DNS_MAX_HOSTS);
    /* The 20 best of 25: preferences 76..95, in order. */
    for (i = 0; i < res.nhosts; i++)
        assert_int_equal(res.hosts[i].preference, 76 + i);
    expect_host(&res, 0, "mx24.many.test", 76, "127.0.1.24");
    dns_close(d);
}

static void
test_address_literals(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;

    lookup(d, "[192.0.2.1]", 2525, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "[192.0.2.1]", 0, "192.0.2.1");
    assert_int_equal(host_port(&res.hosts[0]), 2525);

    lookup(d, "[IPv6:2001:db8::1]", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "[IPv6:2001:db8::1]", 0, "2001:db8::1");
    assert_int_equal(host_port(&res.hosts[0]), 25);

    lookup(d, "[ipv6:::1]", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    expect_host(&res, 0, "[ipv6:::1]", 0, "::1");

    lookup(d, "[2001:db8::1]", 25, &res); /* an IPv6 literal needs its tag */
    assert_int_equal(res.status, DNS_NXDOMAIN);
    assert_non_null(strstr(res.error, "invalid address literal"));
    lookup(d, "[192.0.2.300]", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    lookup(d, "[192.0.2.1", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    lookup(d, "[]", 25, &res);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    dns_close(d);
}

static void
test_servfail_is_temp(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;
    unsigned before = servfail_answered;

    /* Outside the static zone: forwarded to the SERVFAIL stub on 127.0.0.1. */
    lookup(d, "example.com", 25, &res);
    assert_int_equal(res.status, DNS_TEMP);
    assert_int_equal(res.nhosts, 0);
    assert_non_null(strstr(res.error, "SERVFAIL"));
    assert_true(servfail_answered > before); /* it really asked the stub */
    dns_close(d);
}

static void
test_timeout_is_temp(void **state)
{
    struct dns *d = open_test_dns();
    struct result res;
    struct timespec t0, t1;
    long ms;

    dns_set_timeout(d, 300);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    lookup(d, "mail.blackhole.example", 25, &res);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_equal(res.status, DNS_TEMP);
    assert_non_null(strstr(res.error, "timed out after 300 ms"));
    assert_true(ms >= 250 && ms < 3000);

    /* Timeout in the address phase: the exchanges that answered are used. */
    lookup(d, "halfslow.test", 25, &res);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.nhosts, 1);
    expect_host(&res, 0, "ok.partial.test", 20, "127.0.0.7");
    dns_close(d);
}

static void
test_close_with_routes_in_flight(void **state)
{
    struct dns *d = open_test_dns();
    struct result res[6];
    size_t i;

    memset(res, 0, sizeof(res));
    dns_route(d, "two.test", 25, on_route, &res[0]);
    dns_route(d, "implicit.test", 25, on_route, &res[1]);
    dns_route(d, "mail.blackhole.example", 25, on_route, &res[2]);
    dns_route(d, "[192.0.2.1]", 25, on_route, &res[3]); /* already done, not yet reported */
    dns_route(d, "bad domain", 25, on_route, &res[4]);
    dns_route(d, "equal.test", 25, on_route, &res[5]);
    assert_int_equal(dns_pending(d), 6);
    dns_close(d);
    wait_all(res, 1, 300); /* would return early if anything were reported */
    for (i = 0; i < 6; i++)
        assert_int_equal(res[i].calls, 0);

    /* In the address phase: let the MX answer arrive first. */
    d = open_test_dns();
    memset(res, 0, sizeof(res));
    dns_route(d, "halfslow.test", 25, on_route, &res[0]);
    wait_all(res, 1, 300);
    assert_int_equal(res[0].calls, 0);
    assert_int_equal(dns_pending(d), 1);
    dns_close(d);
}

struct closer {
    struct dns *d;
    int calls;
};

static void
on_route_close(void *arg, const struct dns_route *r)
{
    struct closer *c = arg;

    c->calls++;
    dns_close(c->d);
}

static void
test_close_from_callback(void **state)
{
    struct dns *d = open_test_dns();
    struct closer c1 = {d, 0}, c2 = {d, 0};
    struct result after;

    /* Both literals are done at once; the first callback closes, the second is never called. */
    memset(&after, 0, sizeof(after));
    dns_route(d, "[192.0.2.1]", 25, on_route_close, &c1);
    dns_route(d, "[192.0.2.2]", 25, on_route_close, &c2);
    dns_route(d, "two.test", 25, on_route, &after);
    while (c1.calls == 0)
        event_base_loop(base, EVLOOP_ONCE);
    wait_all(&after, 1, 300);
    assert_int_equal(c1.calls, 1);
    assert_int_equal(c2.calls, 0);
    assert_int_equal(after.calls, 0);
}

/* A callback may start another route. */
struct chain {
    struct dns *d;
    struct result second;
    int calls;
};

static void
on_route_chain(void *arg, const struct dns_route *r)
{
    struct chain *c = arg;

    c->calls++;
    assert_int_equal(r->status, DNS_OK);
    dns_route(c->d, "implicit.test", 25, on_route, &c->second);
}

static void
test_route_from_callback(void **state)
{
    struct dns *d = open_test_dns();
    struct chain c = {.d = d};

    dns_route(d, "two.test", 25, on_route_chain, &c);
    while (c.calls == 0)
        event_base_loop(base, EVLOOP_ONCE);
    wait_all(&c.second, 1, GUARD_MS);
    assert_int_equal(c.second.calls, 1);
    assert_int_equal(c.second.status, DNS_OK);
    dns_close(d);
}

static void
test_many_in_parallel(void **state)
{
    static const char *const domains[] = {"two.test", "implicit.test", "nullmx.test",
        "nosuchdomain.test", "equal.test", "partial.test", "[192.0.2.1]", "multi.test"};
    static const int want[] = {
        DNS_OK, DNS_OK, DNS_NULL_MX, DNS_NXDOMAIN, DNS_OK, DNS_OK, DNS_OK, DNS_OK};
    enum { N = 8, ROUNDS = 25 };
    struct dns *d = open_test_dns();
    struct result *res = calloc(N * ROUNDS, sizeof(*res));
    size_t i;

    assert_non_null(res);
    for (i = 0; i < N * ROUNDS; i++)
        dns_route(d, domains[i % N], 25, on_route, &res[i]);
    wait_all(res, N * ROUNDS, GUARD_MS);
    for (i = 0; i < N * ROUNDS; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, want[i % N]);
    }
    assert_int_equal(dns_pending(d), 0);
    free(res);
    dns_close(d);
}

static void
test_bad_config(void **state)
{
    char path[160], err[256];
    FILE *f;
    struct dns *d;

    snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
    err[0] = '\0';
    assert_null(dns_open(base, path, err, sizeof(err)));
    assert_non_null(strstr(err, "missing.conf: No such file or directory"));

    snprintf(path, sizeof(path), "%s/bad.conf", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("server:\n    no-such-option: yes\n", f);
    fclose(f);
    err[0] = '\0';
    d = dns_open(base, path, err, sizeof(err));
    unlink(path);
    assert_null(d);
    assert_non_null(strstr(err, "bad.conf: syntax error"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_preference_order),
        cmocka_unit_test(test_equal_preferences_shuffled),
        cmocka_unit_test(test_implicit_mx),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_nxdomain),
        cmocka_unit_test(test_mx_without_address),
        cmocka_unit_test(test_address_order_and_setting),
        cmocka_unit_test(test_host_cap),
        cmocka_unit_test(test_address_literals),
        cmocka_unit_test(test_servfail_is_temp),
        cmocka_unit_test(test_timeout_is_temp),
        cmocka_unit_test(test_close_with_routes_in_flight),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_route_from_callback),
        cmocka_unit_test(test_many_in_parallel),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_dane_states_insecure),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
