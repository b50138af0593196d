/*
 * dns.c - mail routing lookups with libunbound on the event loop (see dns.h).
 *
 * libunbound runs in threaded async mode: its own thread talks to the
 * network, and finished answers wait in a pipe whose read end (ub_fd) is
 * watched by a persistent read event here; ub_process() then runs our query
 * callbacks on the loop thread.  Nothing here ever waits for DNS.
 *
 * A route goes through two phases: the MX query, then the A and AAAA queries
 * of every exchange at once (or of the domain itself, for an implicit MX).
 * Each libunbound query has a small record (struct query) on its route's list,
 * so a timeout or dns_close() can cancel exactly what is in flight.
 *
 * Finished routes are not reported from inside ub_process(): they go on a
 * done list, and a separate event delivers the callbacks.  So a callback may
 * start new routes or even call dns_close() without pulling libunbound's
 * context out from under its own ub_process() call.
 */
#include "net/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unbound.h>
#include <unistd.h>

#include "util/log.h"

#define RR_A 1
#define RR_MX 15
#define RR_AAAA 28
#define RR_TLSA 52
#define RCODE_NOERROR 0
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3

#define MX_MAX_RECORDS 1024 /* MX records looked at; a larger set is cut, not refused */

enum phase { PHASE_MX, PHASE_ADDR, PHASE_DONE };

/* The outcome of one A or AAAA query, kept for the error text. */
enum addr_outcome { AO_NONE, AO_DATA, AO_NODATA, AO_NXDOMAIN, AO_TEMP };

struct route;

struct query {
    struct route *rt;
    struct query *prev, *next; /* in rt->queries */
    int async_id;
    int rrtype;
    size_t target; /* index in rt->targets, for A and AAAA */
};

/* One exchange (or the domain itself, for an implicit MX) and its addresses. */
struct target {
    char name[256];
    unsigned preference;
    uint64_t shuffle; /* random key: order among equal preferences */
    uint8_t v4[DNS_MAX_HOSTS][4];
    uint8_t v6[DNS_MAX_HOSTS][16];
    unsigned n4, n6;
    enum addr_outcome out4, out6;
    bool sec4, sec6; /* the A / AAAA answer was DNSSEC-secure */
    char why[48];    /* the first failure, e.g. "SERVFAIL" */
    /* DANE: the TLSA query of _PORT._tcp.NAME (only when asked for and the MX was secure) */
    bool tlsa_asked, tlsa_answered, tlsa_failed, tlsa_bogus, tlsa_secure;
    struct dane_rrset *tlsa; /* allocated once asked (records, and why it failed) */
};

struct route {
    struct dns *d;
    struct route *prev, *next; /* in d->pending or d->done */
    dns_route_cb *cb;
    void *arg;
    char domain[256];
    unsigned short port;
    enum dns_prefer prefer;
    enum phase phase;
    bool implicit_mx;
    bool mx_secure;        /* the MX answer (or its denial) was DNSSEC-secure */
    bool dane;             /* look up TLSA records */
    struct query *queries; /* in flight */
    struct event *timer;
    unsigned timeout_ms;
    struct target *targets;
    size_t ntargets;
    struct dns_route result;
    struct dns_host hosts[DNS_MAX_HOSTS];
};

struct dns {
    struct event_base *base;
    struct ub_ctx *ctx;
    struct event *ev_ub;       /* ub_fd readable */
    struct event *ev_dispatch; /* made active when a route is done */
    struct route *pending;     /* not yet done (queries in flight) */
    struct route *done;        /* done, callback not yet called (FIFO: head first) */
    struct route *done_tail;
    size_t npending;
    bool dispatching; /* inside a callback */
    bool closing;     /* dns_close() was called by a callback */
    unsigned timeout_ms;
    enum dns_prefer prefer;
    bool dane;         /* dns_set_dane() */
    bool own_config;   /* a config file was given (it sets its own trust anchors) */
    char *config_file; /* its name, for the warning when it sets none */
    uint64_t rng;
};

/* ---- small helpers ---------------------------------------------------------------------- */

/* splitmix64: cheap, good enough to shuffle MX hosts; seeded from getrandom. */
static uint64_t
dns_random(struct dns *d)
{
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
list_unlink(struct route **head, struct route *rt)
{
    if (rt->prev)
        rt->prev->next = rt->next;
    else
        *head = rt->next;
    if (rt->next)
        rt->next->prev = rt->prev;
    rt->prev = rt->next = NULL;
}

static const char *
rcode_name(int rcode)
{
    static const char *const names[] = {
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};

    return rcode >= 0 && rcode < (int)(sizeof(names) / sizeof(names[0])) ? names[rcode] : "error";
}

/*
 * The names we pass to libunbound are text, which it parses with escapes
 * ("\." "\123"); only letters, digits, '-', '_' and dots between labels of
 * 1-63 bytes get through, so nothing is ever read as an escape.  A name with
 * anything else cannot be a host we could reach by name anyway.
 */
static bool
name_ok(const char *s)
{
    size_t len = strlen(s), label = 0, i;

    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

/* An MX exchange in wire format (uncompressed, as libunbound gives rdata) to text without the
 * final dot; "" for the root.  -1 if malformed or not a name we accept (see name_ok). */
static int
wire_name(const uint8_t *p, size_t len, char *out, size_t outlen)
{
    size_t i = 0, o = 0;

    for (;;) {
        size_t l;

        if (i >= len)
            return -1;
        l = p[i++];
        if (l == 0)
            break;
        if (l > 63 || i + l > len || o + l + 2 > outlen)
            return -1; /* also refuses compression pointers (l >= 0xc0) */
        if (o > 0)
            out[o++] = '.';
        memcpy(out + o, p + i, l);
        o += l;
        i += l;
    }
    out[o] = '\0';
    return o == 0 || name_ok(out) ? 0 : -1;
}

static void set_error(struct route *rt, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_error(struct route *rt, int status, const char *fmt, ...)
{
    va_list ap;

    rt->result.status = status;
    va_start(ap, fmt);
    vsnprintf(rt->result.error, sizeof(rt->result.error), fmt, ap);
    va_end(ap);
}

/* ---- finishing and reporting ------------------------------------------------------------ */

static void
route_cancel_queries(struct route *rt)
{
    struct query *q, *next;

    for (q = rt->queries; q != NULL; q = next) {
        next = q->next;
        ub_cancel(rt->d->ctx, q->async_id);
        free(q);
    }
    rt->queries = NULL;
}

static void
route_free(struct route *rt)
{
    size_t i;

    if (rt->timer)
        event_free(rt->timer);
    for (i = 0; i < rt->ntargets; i++) {
        dane_rrset_clear(rt->targets[i].tlsa);
        free(rt->targets[i].tlsa);
    }
    free(rt->targets);
    free(rt);
}

/* The result is set: cancel what is still in flight and queue the callback. */
static void
route_finish(struct route *rt)
{
    struct dns *d = rt->d;

    route_cancel_queries(rt);
    if (rt->timer)
        event_del(rt->timer);
    rt->phase = PHASE_DONE;
    list_unlink(&d->pending, rt);
    d->npending--;
    if (d->done_tail)
        d->done_tail->next = rt;
    else
        d->done = rt;
    rt->prev = d->done_tail;
    d->done_tail = rt;
    event_active(d->ev_dispatch, EV_TIMEOUT, 1);
}

static void
dns_free(struct dns *d)
{
    struct route *rt, *next;

    for (rt = d->pending; rt != NULL; rt = next) {
        next = rt->next;
        route_cancel_queries(rt);
        route_free(rt);
    }
    for (rt = d->done; rt != NULL; rt = next) {
        next = rt->next;
        route_free(rt);
    }
    if (d->ev_ub)
        event_free(d->ev_ub);
    if (d->ev_dispatch)
        event_free(d->ev_dispatch);
    if (d->ctx)
        ub_ctx_delete(d->ctx);
    free(d->config_file);
    free(d);
}

static void
dns_on_dispatch(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    struct route *rt;

    d->dispatching = true;
    while (!d->closing && (rt = d->done) != NULL) {
        d->done = rt->next;
        if (d->done)
            d->done->prev = NULL;
        else
            d->done_tail = NULL;
        rt->result.hosts = rt->result.nhosts ? rt->hosts : NULL;
        rt->cb(rt->arg, &rt->result);
        route_free(rt);
    }
    d->dispatching = false;
    if (d->closing)
        dns_free(d);
}

/* ---- assembling the answer -------------------------------------------------------------- */

static void
add_host(struct route *rt, const struct target *t, int family, const uint8_t *a)
{
    struct dns_host *h;

    if (rt->result.nhosts >= DNS_MAX_HOSTS)
        return;
    h = &rt->hosts[rt->result.nhosts++];
    memset(h, 0, sizeof(*h));
    snprintf(h->name, sizeof(h->name), "%s", t->name);
    h->preference = t->preference;
    if (rt->dane) {
        h->dane = dane_decide(rt->mx_secure, family == AF_INET ? t->sec4 : t->sec6,
            t->tlsa_asked && t->tlsa != NULL, t->tlsa_failed || !t->tlsa_answered, t->tlsa_bogus,
            t->tlsa_secure, t->tlsa);
        h->tlsa = t->tlsa;
    }
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&h->addr;

        sin->sin_family = AF_INET;
        sin->sin_port = htons(rt->port);
        memcpy(&sin->sin_addr, a, 4);
        h->addrlen = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->addr;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(rt->port);
        memcpy(&sin6->sin6_addr, a, 16);
        h->addrlen = sizeof(*sin6);
    }
}

static const char *
target_why(const struct target *t)
{
    if (t->why[0] != '\0')
        return t->why;
    if (t->out4 == AO_NXDOMAIN || t->out6 == AO_NXDOMAIN)
        return "NXDOMAIN";
    return "no address";
}

/* A failed or unanswered query of a family we asked for: the answer may differ later. */
static bool
target_temp(const struct route *rt, const struct target *t)
{
    bool ask4 = rt->prefer != DNS_ONLY_IPV6, ask6 = rt->prefer != DNS_ONLY_IPV4;

    return (ask4 && (t->out4 == AO_TEMP || t->out4 == AO_NONE)) ||
           (ask6 && (t->out6 == AO_TEMP || t->out6 == AO_NONE));
}

/* Every address query is answered (or the deadline passed): build the host list. */
static void
route_addresses_done(struct route *rt)
{
    bool v6first = rt->prefer == DNS_PREFER_IPV6 || rt->prefer == DNS_ONLY_IPV6;
    bool temp = false;
    size_t i;
    unsigned k;

    for (i = 0; i < rt->ntargets; i++) {
        const struct target *t = &rt->targets[i];

        temp = temp || target_temp(rt, t);
        if (v6first)
            for (k = 0; k < t->n6; k++)
                add_host(rt, t, AF_INET6, t->v6[k]);
        for (k = 0; k < t->n4; k++)
            add_host(rt, t, AF_INET, t->v4[k]);
        if (!v6first)
            for (k = 0; k < t->n6; k++)
                add_host(rt, t, AF_INET6, t->v6[k]);
    }

    if (rt->result.nhosts > 0) {
        rt->result.status = DNS_OK;
        rt->result.error[0] = '\0';
    } else if (rt->implicit_mx) {
        if (temp)
            set_error(rt, DNS_TEMP, "address lookup for %s failed (%s)", rt->domain,
                target_why(&rt->targets[0]));
        else
            set_error(rt, DNS_NXDOMAIN, "%s has no MX and no address records", rt->domain);
    } else {
        const struct target *t = &rt->targets[0];

        /* RFC 5321 §5.1: no usable exchange is an error; we make it a transient one, as a
         * broken MX is usually repaired soon, and the queue lifetime bounds the retries. */
        set_error(rt, DNS_TEMP, "no MX host of %s has an address (%s: %s%s)", rt->domain, t->name,
            target_why(t), rt->ntargets > 1 ? ", ..." : "");
    }
    route_finish(rt);
}

/* ---- queries ---------------------------------------------------------------------------- */

static void dns_on_answer(void *mydata, int err, struct ub_result *res);

/* Starts one query; false if libunbound refused it (the caller records the failure). */
static bool
query_start(struct route *rt, const char *name, int rrtype, size_t target)
{
    struct query *q = calloc(1, sizeof(*q));
    int r;

    if (q == NULL)
        return false;
    q->rt = rt;
    q->rrtype = rrtype;
    q->target = target;
    r = ub_resolve_async(rt->d->ctx, name, rrtype, 1, q, dns_on_answer, &q->async_id);
    if (r != 0) {
        log_warn(NULL, "event=dns-error name=%s error=\"%s\"", name, ub_strerror(r));
        free(q);
        return false;
    }
    q->next = rt->queries;
    if (rt->queries)
        rt->queries->prev = q;
    rt->queries = q;
    return true;
}

static void
target_fail(struct target *t, int rrtype, const char *why)
{
    if (rrtype == RR_A)
        t->out4 = AO_TEMP;
    else
        t->out6 = AO_TEMP;
    if (t->why[0] == '\0')
        snprintf(t->why, sizeof(t->why), "%s", why);
}

static void
tlsa_fail(struct target *t, const char *why)
{
    t->tlsa_failed = true;
    if (t->tlsa != NULL && t->tlsa->why[0] == '\0')
        snprintf(t->tlsa->why, sizeof(t->tlsa->why), "%s", why);
}

/* The TLSA query of target i, _PORT._tcp.NAME (RFC 7672 §2.2: its TLSA base domain is the
 * exchange's name; XXX: not CNAME-expanded).  A name too long for DNS has no TLSA records
 * to find: the host stays insecure. */
static void
tlsa_start(struct route *rt, struct target *t, size_t i)
{
    char name[300];

    snprintf(name, sizeof(name), "_%u._tcp.%s", (unsigned)rt->port, t->name);
    if (!name_ok(name))
        return;
    if ((t->tlsa = calloc(1, sizeof(*t->tlsa))) == NULL)
        return; /* XXX: out of memory reads as "not looked up", i.e. insecure */
    t->tlsa_asked = true;
    if (!query_start(rt, name, RR_TLSA, i))
        tlsa_fail(t, "resolver error");
}

/* Start the A and AAAA queries of every target; finishes the route if none could start. */
static void
route_start_addresses(struct route *rt)
{
    size_t i;

    rt->phase = PHASE_ADDR;
    for (i = 0; i < rt->ntargets; i++) {
        struct target *t = &rt->targets[i];

        if (rt->prefer != DNS_ONLY_IPV6 && !query_start(rt, t->name, RR_A, i))
            target_fail(t, RR_A, "resolver error");
        if (rt->prefer != DNS_ONLY_IPV4 && !query_start(rt, t->name, RR_AAAA, i))
            target_fail(t, RR_AAAA, "resolver error");
        if (rt->dane && rt->mx_secure)
            tlsa_start(rt, t, i);
    }
    if (rt->queries == NULL)
        route_addresses_done(rt);
}

static int
mx_cmp(const void *a, const void *b)
{
    const struct target *x = a, *y = b;

    if (x->preference != y->preference)
        return x->preference < y->preference ? -1 : 1;
    if (x->shuffle != y->shuffle)
        return x->shuffle < y->shuffle ? -1 : 1;
    return strcasecmp(x->name, y->name);
}

static void
route_on_mx(struct route *rt, struct ub_result *res)
{
    struct target *all;
    size_t n = 0, i, j, nrec = 0;
    bool root_seen = false;

    if (res->rcode == RCODE_NXDOMAIN) {
        set_error(rt, DNS_NXDOMAIN, "%s: no such domain (NXDOMAIN)", rt->domain);
        route_finish(rt);
        return;
    }
    if (res->rcode != RCODE_NOERROR) {
        set_error(rt, DNS_TEMP, "MX lookup for %s failed (%s)", rt->domain, rcode_name(res->rcode));
        route_finish(rt);
        return;
    }
    rt->mx_secure = res->secure != 0;
    /* No MX records (the name exists): the domain is its own exchange. */
    if (!res->havedata || res->data == NULL || res->data[0] == NULL) {
        if ((rt->targets = calloc(1, sizeof(*rt->targets))) == NULL) {
            set_error(rt, DNS_TEMP, "out of memory");
            route_finish(rt);
            return;
        }
        snprintf(rt->targets[0].name, sizeof(rt->targets[0].name), "%s", rt->domain);
        rt->ntargets = 1;
        rt->implicit_mx = true;
        route_start_addresses(rt);
        return;
    }

    while (res->data[nrec] != NULL && nrec < MX_MAX_RECORDS)
        nrec++;
    if ((all = calloc(nrec, sizeof(*all))) == NULL) {
        set_error(rt, DNS_TEMP, "out of memory");
        route_finish(rt);
        return;
    }
    for (i = 0; i < nrec; i++) {
        const uint8_t *p = (const uint8_t *)res->data[i];
        size_t len = res->len[i] < 0 ? 0 : (size_t)res->len[i];
        struct target *t = &all[n];

        if (len < 3 || wire_name(p + 2, len - 2, t->name, sizeof(t->name)) != 0)
            continue; /* malformed or unusable exchange: skip it */
        t->preference = (unsigned)p[0] << 8 | p[1];
        if (t->name[0] == '\0') {
            root_seen = true;
            continue;
        }
        /* The same exchange twice: keep the better preference. */
        for (j = 0; j < n; j++)
            if (strcasecmp(all[j].name, t->name) == 0)
                break;
        if (j < n) {
            if (t->preference < all[j].preference)
                all[j].preference = t->preference;
            continue;
        }
        t->shuffle = dns_random(rt->d);
        n++;
    }
    if (n == 0) {
        free(all);
        /* RFC 7505: "MX 0 ." alone.  Any preference is taken: the intent is the same. */
        if (root_seen && nrec == 1)
            set_error(rt, DNS_NULL_MX, "%s accepts no mail (null MX, RFC 7505)", rt->domain);
        else
            set_error(rt, DNS_TEMP, "no usable MX host for %s (malformed MX records)", rt->domain);
        route_finish(rt);
        return;
    }
    qsort(all, n, sizeof(*all), mx_cmp);
    /* Each exchange yields at least one address, so more than DNS_MAX_HOSTS cannot help. */
    if (n > DNS_MAX_HOSTS)
        n = DNS_MAX_HOSTS;
    rt->targets = all;
    rt->ntargets = n;
    route_start_addresses(rt);
}

static void
route_on_addr(struct route *rt, struct query *q, struct ub_result *res)
{
    struct target *t = &rt->targets[q->target];
    bool v4 = q->rrtype == RR_A;
    enum addr_outcome *out = v4 ? &t->out4 : &t->out6;
    size_t want = v4 ? 4 : 16;
    unsigned *count = v4 ? &t->n4 : &t->n6;
    int i;

    if (res->rcode == RCODE_NXDOMAIN) {
        *out = AO_NXDOMAIN;
    } else if (res->rcode != RCODE_NOERROR) {
        target_fail(t, q->rrtype, rcode_name(res->rcode));
    } else if (!res->havedata) {
        *out = AO_NODATA;
    } else {
        *out = AO_DATA;
        if (v4)
            t->sec4 = res->secure != 0;
        else
            t->sec6 = res->secure != 0;
        for (i = 0; res->data[i] != NULL && *count < DNS_MAX_HOSTS; i++) {
            if (res->len[i] != (int)want)
                continue;
            memcpy(v4 ? t->v4[*count] : t->v6[*count], res->data[i], want);
            (*count)++;
        }
    }
}

/* The TLSA answer: NXDOMAIN or no data is "no records" (secure or not, as it says). */
static void
route_on_tlsa(struct target *t, struct ub_result *res)
{
    int i;

    t->tlsa_answered = true;
    t->tlsa_secure = res->secure != 0;
    if (res->rcode == RCODE_NXDOMAIN || (res->rcode == RCODE_NOERROR && !res->havedata))
        return;
    if (res->rcode != RCODE_NOERROR) {
        char why[64];

        snprintf(why, sizeof(why), "TLSA lookup %s", rcode_name(res->rcode));
        tlsa_fail(t, why);
        return;
    }
    for (i = 0; res->data[i] != NULL; i++)
        dane_rrset_add(
            t->tlsa, (const uint8_t *)res->data[i], res->len[i] < 0 ? 0 : (size_t)res->len[i]);
}

static void
dns_on_answer(void *mydata, int err, struct ub_result *res)
{
    struct query *q = mydata;
    struct route *rt = q->rt;

    if (q->prev)
        q->prev->next = q->next;
    else
        rt->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;

    if (err != 0 || res == NULL || res->bogus || res->was_ratelimited) {
        const char *why = err != 0      ? ub_strerror(err)
                          : res == NULL ? "no result"
                          : res->bogus  ? "DNSSEC validation failed"
                                        : "rate limited";

        if (q->rrtype == RR_TLSA) {
            struct target *t = &rt->targets[q->target];
            char text[96];

            t->tlsa_answered = true;
            t->tlsa_bogus = res != NULL && res->bogus;
            snprintf(text, sizeof(text), "TLSA lookup: %s%s%.40s", why,
                res != NULL && res->why_bogus ? ": " : "",
                res != NULL && res->why_bogus ? res->why_bogus : "");
            tlsa_fail(t, text);
        } else if (rt->phase == PHASE_MX) {
            set_error(rt, DNS_TEMP, "MX lookup for %s failed (%s)", rt->domain, why);
            route_finish(rt);
        } else {
            target_fail(&rt->targets[q->target], q->rrtype, why);
        }
    } else if (rt->phase == PHASE_MX) {
        route_on_mx(rt, res);
    } else if (q->rrtype == RR_TLSA) {
        route_on_tlsa(&rt->targets[q->target], res);
    } else {
        route_on_addr(rt, q, res);
    }
    if (rt->phase == PHASE_ADDR && rt->queries == NULL)
        route_addresses_done(rt);
    free(q);
    if (res != NULL)
        ub_resolve_free(res);
}

static void
dns_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct route *rt = arg;

    if (rt->phase == PHASE_ADDR) {
        /* Use the exchanges that did answer; the silent ones count as failed. */
        size_t i;

        for (i = 0; i < rt->ntargets; i++) {
            struct target *t = &rt->targets[i];

            if (t->out4 == AO_NONE && rt->prefer != DNS_ONLY_IPV6)
                target_fail(t, RR_A, "timeout");
            if (t->out6 == AO_NONE && rt->prefer != DNS_ONLY_IPV4)
                target_fail(t, RR_AAAA, "timeout");
            if (t->tlsa_asked && !t->tlsa_answered)
                tlsa_fail(t, "TLSA lookup timed out");
        }
        route_cancel_queries(rt);
        route_addresses_done(rt);
        return;
    }
    set_error(rt, DNS_TEMP, "MX lookup for %s timed out after %u ms", rt->domain, rt->timeout_ms);
    route_finish(rt);
}

static void
dns_on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    int r = ub_process(d->ctx);

    /* A broken pipe means libunbound's thread is gone; the routes' timers still end them. */
    if (r != 0)
        log_warn(NULL, "event=dns-error error=\"%s\"", ub_strerror(r));
}

/* ---- the interface ---------------------------------------------------------------------- */

struct dns *
dns_open(struct event_base *base, const char *config_file, char *err, size_t errlen)
{
    struct dns *d = calloc(1, sizeof(*d));
    int r;

    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base = base;
    d->timeout_ms = DNS_DEFAULT_TIMEOUT_MS;
    d->prefer = DNS_PREFER_IPV4;
    if (getrandom(&d->rng, sizeof(d->rng), GRND_NONBLOCK) != (ssize_t)sizeof(d->rng))
        d->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)d;
    if ((d->ctx = ub_ctx_create()) == NULL) {
        snprintf(err, errlen, "cannot create the libunbound context");
        free(d);
        return NULL;
    }
    /* Threads, not libunbound's default forked process: same memory, no extra process. */
    if ((r = ub_ctx_async(d->ctx, 1)) != 0) {
        snprintf(err, errlen, "libunbound: %s", ub_strerror(r));
        goto fail;
    }
    d->own_config = config_file != NULL;
    if (config_file != NULL && (d->config_file = strdup(config_file)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (config_file != NULL) {
        /* libunbound says "syntax error" for a missing file too: look first. */
        FILE *f = fopen(config_file, "r");

        if (f == NULL) {
            snprintf(err, errlen, "%s: %s", config_file, strerror(errno));
            goto fail;
        }
        fclose(f);
        if ((r = ub_ctx_config(d->ctx, config_file)) != 0) {
            /* libunbound has written the details (FILE:LINE: ...) to stderr. */
            snprintf(err, errlen, "%s: %s (unbound configuration)", config_file, ub_strerror(r));
            goto fail;
        }
    } else {
        if ((r = ub_ctx_resolvconf(d->ctx, NULL)) != 0) {
            snprintf(err, errlen, "/etc/resolv.conf: %s", ub_strerror(r));
            goto fail;
        }
        if ((r = ub_ctx_hosts(d->ctx, NULL)) != 0) {
            snprintf(err, errlen, "/etc/hosts: %s", ub_strerror(r));
            goto fail;
        }
    }
    d->ev_ub = event_new(base, ub_fd(d->ctx), EV_READ | EV_PERSIST, dns_on_readable, d);
    d->ev_dispatch = event_new(base, -1, 0, dns_on_dispatch, d);
    if (d->ev_ub == NULL || d->ev_dispatch == NULL || event_add(d->ev_ub, NULL) != 0) {
        snprintf(err, errlen, "cannot watch the resolver's descriptor");
        goto fail;
    }
    return d;
fail:
    dns_free(d);
    return NULL;
}

void
dns_close(struct dns *d)
{
    struct route *rt, *next;

    if (d == NULL)
        return;
    if (!d->dispatching) {
        dns_free(d);
        return;
    }
    /* Inside a callback: the dispatch loop frees d when the callback returns.  The routes
     * go now, so nothing more is reported. */
    for (rt = d->pending; rt != NULL; rt = next) {
        next = rt->next;
        route_cancel_queries(rt);
        route_free(rt);
    }
    for (rt = d->done; rt != NULL; rt = next) {
        next = rt->next;
        route_free(rt);
    }
    d->pending = d->done = d->done_tail = NULL;
    d->npending = 0;
    d->closing = true;
}

void
dns_set_timeout(struct dns *d, unsigned ms)
{
    d->timeout_ms = ms;
}

void
dns_set_prefer(struct dns *d, enum dns_prefer prefer)
{
    d->prefer = prefer;
}

/* Whether option (a list) has a value in the unbound configuration. */
static bool
dns_option_set(struct dns *d, const char *option)
{
    char *v = NULL;
    bool set = ub_ctx_get_option(d->ctx, option, &v) == 0 && v != NULL && v[0] != '\0';

    free(v);
    return set;
}

/*
 * dns_config is the operator's, with its own trust anchors: ask libunbound whether it
 * has any, and the validator, else no answer is ever secure and dane silently acts as
 * may.  Warned as without dns_config.
 */
static bool
dns_config_validates(struct dns *d)
{
    static const char *const ta[] = {
        "trust-anchor", "trust-anchor-file", "auto-trust-anchor-file", "trusted-keys-file"};
    char *modules = NULL;
    bool validator, anchor = false;
    size_t i;

    for (i = 0; i < sizeof(ta) / sizeof(*ta); i++)
        anchor = anchor || dns_option_set(d, ta[i]);
    /* module-config unset is unbound's default, "validator iterator" */
    validator = ub_ctx_get_option(d->ctx, "module-config", &modules) != 0 || modules == NULL ||
                modules[0] == '\0' || strstr(modules, "validator") != NULL;
    free(modules);
    if (!anchor || !validator) {
        log_warn(NULL,
            "event=dane-no-trust-anchor file=%s reason=\"%s\" effect=\"no DNSSEC "
            "validation: every MX host is insecure, tls_policy = dane acts as may\"",
            d->config_file,
            !anchor ? "no trust-anchor, trust-anchor-file, auto-trust-anchor-file or "
                      "trusted-keys-file in dns_config"
                    : "module-config in dns_config has no validator");
        return false;
    }
    return true;
}

bool
dns_set_dane(struct dns *d, bool on)
{
    int r;

    d->dane = on;
    if (!on)
        return true;
    if (d->own_config)
        return dns_config_validates(d);
    /* The system's resolvers: validate from the root ourselves (libunbound does, given a
     * trust anchor), so that "secure" means something. */
    if (access(DNS_ROOT_KEY, R_OK) != 0) {
        log_warn(NULL,
            "event=dane-no-trust-anchor file=%s reason=\"%s\" effect=\"no DNSSEC "
            "validation: every MX host is insecure, tls_policy = dane acts as may\"",
            DNS_ROOT_KEY, strerror(errno));
        return false;
    }
    if ((r = ub_ctx_add_ta_file(d->ctx, DNS_ROOT_KEY)) != 0) {
        log_warn(
            NULL, "event=dane-no-trust-anchor file=%s reason=\"%s\"", DNS_ROOT_KEY, ub_strerror(r));
        return false;
    }
    return true;
}

size_t
dns_pending(const struct dns *d)
{
    size_t n = d->npending;
    const struct route *rt;

    for (rt = d->done; rt != NULL; rt = rt->next)
        n++;
    return n;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]": true if s is bracketed (the result is then set). */
static bool
route_literal(struct route *rt, const char *s)
{
    size_t len = strlen(s);
    char text[INET6_ADDRSTRLEN + 8];
    struct target t;
    uint8_t a[16];

    if (s[0] != '[')
        return false;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", s);
    if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof(text)) {
        set_error(rt, DNS_NXDOMAIN, "invalid address literal %.100s", s);
        return true;
    }
    memcpy(text, s + 1, len - 2);
    text[len - 2] = '\0';
    if (strncasecmp(text, "IPv6:", 5) == 0 && inet_pton(AF_INET6, text + 5, a) == 1) {
        add_host(rt, &t, AF_INET6, a);
    } else if (inet_pton(AF_INET, text, a) == 1) {
        add_host(rt, &t, AF_INET, a);
    } else {
        set_error(rt, DNS_NXDOMAIN, "invalid address literal %.100s", s);
        return true;
    }
    rt->result.status = DNS_OK;
    return true;
}

void
dns_route(struct dns *d, const char *domain, unsigned short port, dns_route_cb *cb, void *arg)
{
    struct route *rt = calloc(1, sizeof(*rt));
    struct timeval tv;

    if (rt == NULL) {
        /* XXX: reported at once, from inside dns_route: there is no memory to queue it. */
        struct dns_route r = {.status = DNS_TEMP, .error = "out of memory"};

        cb(arg, &r);
        return;
    }
    rt->d = d;
    rt->cb = cb;
    rt->arg = arg;
    rt->port = port;
    rt->prefer = d->prefer;
    rt->timeout_ms = d->timeout_ms;
    rt->dane = d->dane;
    rt->phase = PHASE_MX;
    snprintf(rt->domain, sizeof(rt->domain), "%s", domain);
    if (strlen(rt->domain) > 1 && rt->domain[strlen(rt->domain) - 1] == '.')
        rt->domain[strlen(rt->domain) - 1] = '\0'; /* host names are reported without it */
    /* On the pending list first: every way out goes through route_finish. */
    rt->next = d->pending;
    if (d->pending)
        d->pending->prev = rt;
    d->pending = rt;
    d->npending++;

    if (route_literal(rt, domain)) {
        route_finish(rt);
        return;
    }
    if (strlen(domain) >= sizeof(rt->domain) || !name_ok(domain)) {
        set_error(rt, DNS_NXDOMAIN, "invalid domain name %.100s", domain);
        route_finish(rt);
        return;
    }
    if ((rt->timer = evtimer_new(d->base, dns_on_timeout, rt)) == NULL) {
        set_error(rt, DNS_TEMP, "out of memory");
        route_finish(rt);
        return;
    }
    tv.tv_sec = rt->timeout_ms / 1000;
    tv.tv_usec = (rt->timeout_ms % 1000) * 1000;
    evtimer_add(rt->timer, &tv);
    if (!query_start(rt, rt->domain, RR_MX, 0)) {
        set_error(rt, DNS_TEMP, "MX lookup for %s could not start (resolver error)", rt->domain);
        route_finish(rt);
    }
}
