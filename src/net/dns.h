/*
 * dns.h - mail routing lookups: where to connect to deliver mail for a domain.
 *
 * libunbound runs the queries (its own thread does the network); its result
 * pipe is watched by an event on the daemon's libevent loop, so a lookup never
 * blocks the loop.  One dns_route() call gives exactly one callback, on the
 * loop thread and never from inside dns_route() itself (XXX: except when the
 * route's own memory cannot be allocated: then at once, with DNS_TEMP), unless
 * dns_close() came first (then none).
 *
 * What a route is (RFC 5321 §5.1, RFC 7505):
 *   - "[192.0.2.1]" or "[IPv6:2001:db8::1]": that address, no DNS at all.
 *   - MX records: sorted by preference, equal preferences shuffled; each
 *     exchange's addresses looked up (A and AAAA in parallel for all of them).
 *     An exchange with no address (NXDOMAIN, no data, or a failed lookup) is
 *     skipped; if none has an address the route is DNS_TEMP with the reason
 *     in `error`: a broken MX may be repaired, and a retry costs little.
 *   - a single "MX 0 ." is a null MX: the domain takes no mail (DNS_NULL_MX).
 *     A "." exchange among other MX records is ignored.
 *   - no MX records (the name exists): the domain's own addresses, as one
 *     implicit MX of preference 0.  No addresses either: DNS_NXDOMAIN.
 *   - NXDOMAIN for the domain: DNS_NXDOMAIN.
 *   - SERVFAIL, any other error code, a DNSSEC-bogus answer, a resolver error
 *     or no complete answer within the timeout: DNS_TEMP.
 *
 * DANE (dns_set_dane, RFC 7672): when the MX answer (or for an implicit MX, the
 * proof that there is none) is DNSSEC-secure, the TLSA records of every exchange
 * (_PORT._tcp.EXCHANGE) are looked up with its addresses, and each host gets a
 * DANE state (net/dane.h) from the DNSSEC status of the MX, address and TLSA
 * answers.  CNAMEs are not expanded for the TLSA base domain (XXX: RFC 7672
 * §2.2.2 would try the expanded name first).
 *
 * Address order within one exchange: IPv4 first, then IPv6, by default
 * (dns_set_prefer to change).  IPv4 first because many receivers judge IPv6
 * senders more strictly (PTR and authentication demanded) and IPv6 routes are
 * still missing in places; the deliverer tries the next address on failure
 * either way.  At most DNS_MAX_HOSTS addresses are returned.
 */
#ifndef TERN_NET_DNS_H
#define TERN_NET_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "net/dane.h"

struct event_base;
struct dns;

#define DNS_MAX_HOSTS 20             /* addresses in one route */
#define DNS_DEFAULT_TIMEOUT_MS 60000 /* one route, all its queries */

enum dns_status {
    DNS_OK,       /* hosts[0..nhosts) are set, nhosts >= 1 */
    DNS_TEMP,     /* try again later */
    DNS_NXDOMAIN, /* the domain does not exist, or has no MX and no address */
    DNS_NULL_MX,  /* RFC 7505: the domain accepts no mail */
};

enum dns_prefer {
    DNS_PREFER_IPV4, /* A records before AAAA records (the default) */
    DNS_PREFER_IPV6, /* AAAA before A */
    DNS_ONLY_IPV4,   /* no AAAA queries */
    DNS_ONLY_IPV6,   /* no A queries */
};

/* One address to try, in order.  Several entries share a name when the
 * exchange has several addresses. */
struct dns_host {
    char name[256]; /* the MX exchange (or the domain, for an implicit MX), no final dot */
    unsigned preference;
    struct sockaddr_storage addr; /* port set */
    socklen_t addrlen;
    enum dane_state dane;          /* DANE_OFF unless dns_set_dane() */
    const struct dane_rrset *tlsa; /* the exchange's TLSA records (and why it FAILED), or NULL */
};

struct dns_route {
    int status;      /* enum dns_status */
    char error[128]; /* for anything but DNS_OK: what went wrong, for logs and DSNs */
    struct dns_host *hosts;
    size_t nhosts;
};

/* The callback gets the route only for its own duration (copy what you keep). */
typedef void dns_route_cb(void *arg, const struct dns_route *r);

/* config_file: an unbound configuration file (e.g. with local-zone and
 * local-data entries), or NULL for the system's resolv.conf and hosts file.
 * Returns NULL with a message in err on failure. */
struct dns *dns_open(struct event_base *base, const char *config_file, char *err, size_t errlen);

/* Cancels every route not yet reported: their callbacks are never called.
 * May be called from inside a dns_route callback. */
void dns_close(struct dns *d);

/* Deadline of each route started from now on (default DNS_DEFAULT_TIMEOUT_MS). */
void dns_set_timeout(struct dns *d, unsigned ms);
void dns_set_prefer(struct dns *d, enum dns_prefer prefer);
/* Look up TLSA records (tls_policy = dane), for routes started from now on.  With no
 * config file (the system's resolvers), the root trust anchor is read from
 * DNS_ROOT_KEY when it exists; without a trust anchor no answer is ever secure and
 * every host is DANE_INSECURE.  false: the trust anchor could not be loaded. */
#define DNS_ROOT_KEY "/usr/share/dns/root.key"
bool dns_set_dane(struct dns *d, bool on);

void dns_route(struct dns *d, const char *domain, unsigned short port, dns_route_cb *cb, void *arg);

/* How many routes are in progress (not yet reported). */
size_t dns_pending(const struct dns *d);

#endif
