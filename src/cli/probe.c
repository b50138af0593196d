/*
 * probe.c - `tern probe` (see probe.h): a hand-driven SMTP dialogue that
 * stops before DATA.
 *
 * It does not use smtp/client: that state machine always goes on to DATA
 * once a recipient is accepted, which a probe must never do.  The replies
 * are read with the same parser (smtp/replyparse) and explained from the
 * same catalogue, so a probe and a delivery agree on what a reply means.
 */
#include "cli/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/send.h"
#include "deliver/remote_tls.h"
#include "net/dns.h"
#include "smtp/explain.h"
#include "smtp/replyparse.h"
#include "util/io.h"

#define PROBE_DEFAULT_TIMEOUT 30
#define PROBE_MAX_RCPTS 100

enum probe_verdict { PV_UNKNOWN, PV_OK, PV_TEMP, PV_PERM };

struct probe {
    const char *target, *from, *helo, *dns_config, *ca_file;
    bool starttls, implicit_tls;
    char tlshost[256]; /* the host connected to: SNI and the name the certificate must show */
    const char *rcpts[PROBE_MAX_RCPTS];
    size_t nrcpts;
    unsigned port;
    int timeout;
    bool verbose;
    /* the session */
    int fd;
    struct remote_tls *tls;
    struct replyparse rp;
    char in[4096];
    size_t inlen, inoff;
    /* outcomes */
    enum probe_verdict v[PROBE_MAX_RCPTS];
    char why[PROBE_MAX_RCPTS][300];
    enum probe_verdict mail_v;
    char mail_why[300];
    bool offers_starttls; /* the last EHLO did */
    /* DANE for the MX host connected to (a DOMAIN probed with TLS): its state and records */
    enum dane_state dane;
    struct dane_rrset tlsa;
};

static const char probe_usage_text[] =
    "usage: tern probe HOST:PORT | IP | DOMAIN [--from ADDR] [--to ADDR]... [--port N]\n"
    "                  [--dns-config FILE] [--helo NAME] [--timeout SECS] [-v]\n"
    "                  [--starttls | --tls] [--ca-file FILE]\n"
    "  --starttls      STARTTLS after EHLO, or nothing (75 when not offered or refused)\n"
    "  --tls           TLS from the first octet (implicit TLS; the port defaults to 465)\n"
    "  --ca-file FILE  verify the certificate against FILE, not the system's store\n"
    "  The TLS version, cipher, certificate and verification result are printed;\n"
    "  a certificate that does not verify is reported, it does not change the verdict.\n"
    "Exit status: 0 would be accepted, 75 deferred, 69 refused, 64 usage.\n";

static int
probe_usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "tern probe: %s\n", why);
    fputs(probe_usage_text, stderr);
    return CLI_EX_USAGE;
}

static bool
probe_has(const char *text, const char *word)
{
    return strcasestr(text, word) != NULL;
}

void
cli_probe_why(unsigned code, const char *esc, const char *text, char *out, size_t outlen)
{
    const char *what = NULL;
    char codes[32];

    if (esc == NULL)
        esc = "";
    if (text == NULL)
        text = "";
    snprintf(codes, sizeof(codes), "%u%s%s", code, esc[0] ? " " : "", esc);
    if (code == 421)
        what = "the server is overloaded or closing; it serves nobody now";
    else if (probe_has(text, "greylist") || probe_has(text, "graylist") ||
             probe_has(text, "grey-list") || probe_has(text, "gray-list"))
        what = "greylisting: the same attempt should pass after a delay";
    else if (probe_has(text, "rate") || probe_has(text, "too many") ||
             probe_has(text, "too fast") || strcmp(esc, "4.7.28") == 0 ||
             strcmp(esc, "5.7.28") == 0)
        what = "rate limit: too many messages or connections from this sender or address";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".2.2") == 0)
        what = "the mailbox is full";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".3.1") == 0 || code == 452)
        what = "the server is short of storage or resources";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".1.1") == 0)
        what = "no such user";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".1.2") == 0)
        what = "the destination domain is unknown or takes no mail";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".5.3") == 0)
        what = "too many recipients in one transaction";
    else if (strcmp(esc + (esc[0] ? 1 : 0), ".7.1") == 0 && probe_has(text, "relay"))
        what = "relaying denied: the server does not take mail for that domain from you";
    else if (code == 450 || code == 451 ||
             (code / 100 == 4 && strcmp(esc + (esc[0] ? 1 : 0), ".7.1") == 0))
        what = "the server is not taking it now (greylisting, a policy check or a local "
               "problem)";
    else if (esc[0] != '\0') {
        unsigned s = 0, d = 0;
        const struct explain_esc *e;

        if (sscanf(esc + 2, "%u.%u", &s, &d) == 2 && (e = explain_esc_find(s, d)) != NULL) {
            snprintf(out, outlen, "%s (%s)", e->title, codes);
            return;
        }
    }
    if (what == NULL) {
        const struct explain_code *c = explain_code_find(code);

        what = c != NULL ? c->name : "unexplained reply";
    }
    snprintf(out, outlen, "%s (%s)", what, codes);
}

/* ---- the session ---------------------------------------------------------------------------- */

static int
probe_send(struct probe *p, const char *line)
{
    char buf[1100];
    int n = snprintf(buf, sizeof(buf), "%s\r\n", line);

    printf(">>> %s\n", line);
    fflush(stdout);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    if (cli_send_write(p->fd, p->tls, buf, (size_t)n, io_now_ms() + p->timeout * 1000LL) < 0) {
        printf("!!! %s while sending\n", errno == ETIMEDOUT ? "timeout" : strerror(errno));
        return -1;
    }
    return 0;
}

/* One complete reply into p->rp, printed with its explanation.  0, or -1 (printed why). */
static int
probe_reply(struct probe *p, const char *waiting_for)
{
    long long deadline = io_now_ms() + p->timeout * 1000LL;
    bool bol = true;

    replyparse_init(&p->rp);
    for (;;) {
        size_t used = 0;
        enum replyparse_status st = REPLYPARSE_MORE;
        long got;

        if (p->inoff < p->inlen) {
            st = replyparse_feed(&p->rp, p->in + p->inoff, p->inlen - p->inoff, &used);
            cli_send_transcript(stdout, "<<< ", p->in + p->inoff, used, &bol);
            p->inoff += used;
        }
        if (st == REPLYPARSE_DONE) {
            if (!bol)
                fputc('\n', stdout);
            {
                char t[REPLYPARSE_TEXT_MAX + 24];

                snprintf(t, sizeof(t), "%s%s%s", p->rp.esc, p->rp.esc[0] ? " " : "", p->rp.text);
                cli_send_explain(stdout, p->rp.code, t, false, 4);
            }
            return 0;
        }
        if (st == REPLYPARSE_ERROR) {
            printf("%s!!! malformed reply: %s\n", bol ? "" : "\n",
                p->rp.error != NULL ? p->rp.error : "?");
            return -1;
        }
        p->inoff = p->inlen = 0;
        got = cli_send_read(p->fd, p->tls, p->in, sizeof(p->in), deadline);
        if (got <= 0) {
            printf("%s!!! %s waiting for %s\n", bol ? "" : "\n",
                got == 0             ? "connection closed"
                : errno == ETIMEDOUT ? "timeout"
                                     : strerror(errno),
                waiting_for);
            return -1;
        }
        p->inlen = (size_t)got;
    }
}

static enum probe_verdict
probe_classify(unsigned code)
{
    return code / 100 == 2 ? PV_OK : code / 100 == 5 ? PV_PERM : PV_TEMP;
}

/* Every recipient without a verdict gets v and why. */
static void
probe_decide_rest(struct probe *p, enum probe_verdict v, const char *why)
{
    size_t i;

    for (i = 0; i < p->nrcpts; i++)
        if (p->v[i] == PV_UNKNOWN) {
            p->v[i] = v;
            snprintf(p->why[i], sizeof(p->why[i]), "%.*s", (int)sizeof(p->why[i]) - 1, why);
        }
    if (p->mail_v == PV_UNKNOWN) {
        p->mail_v = v;
        snprintf(p->mail_why, sizeof(p->mail_why), "%.*s", (int)sizeof(p->mail_why) - 1, why);
    }
}

/* The reply just read decides the rest (greeting, EHLO, MAIL, 421). */
static void
probe_decide_rest_by_reply(struct probe *p)
{
    char why[300];

    cli_probe_why(p->rp.code, p->rp.esc, p->rp.text, why, sizeof(why));
    probe_decide_rest(p, probe_classify(p->rp.code), why);
}

static void
probe_quit(struct probe *p)
{
    if (probe_send(p, "QUIT") == 0)
        (void)probe_reply(p, "the reply to QUIT");
}

static int probe_ehlo(struct probe *p);
static void probe_envelope(struct probe *p);

/* What DNS said about DANE for the host connected to (nothing when not looked up). */
static void
probe_dane_state(const struct probe *p)
{
    switch (p->dane) {
    case DANE_OFF:
        return;
    case DANE_INSECURE:
        printf("dane: insecure (no DNSSEC-validated TLSA answer: opportunistic TLS)\n");
        return;
    case DANE_NO_TLSA:
        printf("dane: no-tlsa (DNSSEC says there is no TLSA record: opportunistic TLS)\n");
        return;
    case DANE_UNUSABLE:
        printf("dane: unusable (%zu secure TLSA records, none usable: TLS mandatory, not "
               "authenticated)\n",
            p->tlsa.total);
        return;
    case DANE_USABLE:
        printf("dane: usable (%zu secure TLSA records, %zu usable: TLS mandatory, "
               "authenticated by TLSA)\n",
            p->tlsa.total, p->tlsa.n);
        return;
    case DANE_FAILED:
        printf("dane: failed (%s: ternd would not use this host)\n",
            p->tlsa.why[0] ? p->tlsa.why : "TLSA lookup failed");
        return;
    }
}

/* The handshake on p->fd and what it showed.  0, or -1 (printed). */
static int
probe_tls(struct probe *p)
{
    struct remote_tls_peer peer;
    char why[300], desc[128];

    fflush(stdout);
    probe_dane_state(p);
    /* encrypt: the handshake goes through whatever the certificate; it is checked after.
       With usable TLSA records, the handshake is the one ternd would do: DANE or nothing. */
    p->tls = remote_tls_start(p->fd, p->dane == DANE_USABLE ? REMOTE_TLS_DANE : REMOTE_TLS_ENCRYPT,
        NULL, p->dane == DANE_USABLE ? &p->tlsa : NULL, p->tlshost,
        io_now_ms() + p->timeout * 1000LL, why, sizeof(why));
    if (p->tls == NULL) {
        printf("!!! TLS handshake failed: %s\n", why);
        if (p->dane == DANE_USABLE)
            printf("dane: failed: no TLSA record matched (ternd would defer: 451 4.7.5)\n");
        return -1;
    }
    printf("tls: %s\n", remote_tls_describe(p->tls, desc, sizeof(desc)));
    if (p->dane == DANE_USABLE) {
        char m[128];

        printf("dane: verified (%s)\n", remote_tls_dane_describe(p->tls, m, sizeof(m)));
    }
    remote_tls_peer(p->tls, p->ca_file, p->tlshost, &peer);
    if (peer.subject[0] != '\0' || peer.not_after[0] != '\0') {
        printf("tls: certificate subject: %s\n", peer.subject);
        printf("tls: certificate issuer: %s\n", peer.issuer);
        printf("tls: certificate names: %s\n", peer.names[0] ? peer.names : "(none)");
        printf("tls: certificate not after: %s\n", peer.not_after);
    }
    printf("tls: verified: %s%s (against %s, for the name %s)\n",
        peer.verified ? "yes" : "no: ", peer.verified ? "" : peer.verify,
        p->ca_file != NULL ? p->ca_file : "the system's trust store", p->tlshost);
    return 0;
}

/* STARTTLS after a 2xx EHLO, the handshake, EHLO again.  -1 when decided (QUIT sent when it
   can be); else p->rp holds the reply to the EHLO through TLS. */
static int
probe_starttls(struct probe *p)
{
    if (!p->offers_starttls) {
        printf("!!! STARTTLS not offered\n");
        probe_decide_rest(p, PV_TEMP, "STARTTLS not offered (--starttls)");
        probe_quit(p);
        return -1;
    }
    if (probe_send(p, "STARTTLS") < 0 || probe_reply(p, "the reply to STARTTLS") < 0) {
        probe_decide_rest(p, PV_TEMP, "the session broke off at STARTTLS");
        return -1;
    }
    if (p->rp.code != 220) {
        char why[300], r[300];

        cli_probe_why(p->rp.code, p->rp.esc, p->rp.text, r, sizeof(r));
        snprintf(why, sizeof(why), "STARTTLS refused: %.250s", r);
        probe_decide_rest(p, PV_TEMP, why);
        if (p->rp.code != 421)
            probe_quit(p);
        return -1;
    }
    if (p->inoff < p->inlen)
        /* RFC 3207 §4.2 / CVE-2011-0411: what came with the 220 is not from the TLS session */
        printf("!!! %zu octets after the 220 dropped (sent before the handshake)\n",
            p->inlen - p->inoff);
    p->inoff = p->inlen = 0;
    if (probe_tls(p) < 0) {
        probe_decide_rest(p, PV_TEMP, "the TLS handshake failed");
        return -1;
    }
    return probe_ehlo(p);
}

/* The dialogue on a connected p->fd. */
static void
probe_session(struct probe *p)
{
    p->inlen = p->inoff = 0;
    if (probe_reply(p, "the greeting") < 0) {
        probe_decide_rest(p, PV_TEMP, "no greeting (connection closed or timed out)");
        return;
    }
    if (p->rp.code / 100 != 2) {
        probe_decide_rest_by_reply(p);
        if (p->rp.code != 421)
            probe_quit(p);
        return;
    }
    if (probe_ehlo(p) < 0)
        return;
    if (p->starttls && p->rp.code / 100 == 2) {
        if (probe_starttls(p) < 0)
            return;
    }
    if (p->rp.code / 100 != 2) {
        probe_decide_rest_by_reply(p);
        if (p->rp.code != 421)
            probe_quit(p);
        return;
    }
    probe_envelope(p);
}

/* EHLO (HELO when EHLO is not known), the capabilities printed.  -1 when the session broke
   off (decided); else the reply is in p->rp. */
static int
probe_ehlo(struct probe *p)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "EHLO %s", p->helo);
    if (probe_send(p, cmd) < 0 || probe_reply(p, "the reply to EHLO") < 0) {
        probe_decide_rest(p, PV_TEMP, "the session broke off at EHLO");
        return -1;
    }
    p->offers_starttls = false;
    if (p->rp.code == 500 || p->rp.code == 502) {
        snprintf(cmd, sizeof(cmd), "HELO %s", p->helo);
        if (probe_send(p, cmd) < 0 || probe_reply(p, "the reply to HELO") < 0) {
            probe_decide_rest(p, PV_TEMP, "the session broke off at HELO");
            return -1;
        }
    } else if (p->rp.code / 100 == 2) {
        /* the capabilities: the lines after the first, joined with "; " by replyparse */
        const char *s = strstr(p->rp.text, "; ");

        printf("    capabilities:");
        if (s == NULL)
            printf(" none (only the first line)");
        while (s != NULL) {
            const char *next = strstr(s + 2, "; ");

            int kl = (int)(next != NULL ? next - (s + 2) : (long)strlen(s + 2));

            printf(" %.*s", kl, s + 2);
            if (kl == 8 && strncasecmp(s + 2, "STARTTLS", 8) == 0)
                p->offers_starttls = true;
            s = next;
            if (s != NULL)
                putchar(',');
        }
        putchar('\n');
    }
    return 0;
}

/* The MAIL and RCPT part of the probe, then RSET and QUIT. */
static void
probe_envelope(struct probe *p)
{
    char cmd[1100];
    size_t i;

    snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s>", p->from);
    if (probe_send(p, cmd) < 0 || probe_reply(p, "the reply to MAIL FROM") < 0) {
        probe_decide_rest(p, PV_TEMP, "the session broke off at MAIL FROM");
        return;
    }
    if (p->rp.code / 100 != 2) {
        probe_decide_rest_by_reply(p);
        if (p->rp.code != 421)
            probe_quit(p);
        return;
    }
    p->mail_v = PV_OK;
    for (i = 0; i < p->nrcpts; i++) {
        snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>", p->rcpts[i]);
        if (probe_send(p, cmd) < 0 || probe_reply(p, "the reply to RCPT TO") < 0) {
            probe_decide_rest(p, PV_TEMP, "the session broke off at RCPT TO");
            return;
        }
        if (p->rp.code == 421) {
            probe_decide_rest_by_reply(p);
            return;
        }
        p->v[i] = probe_classify(p->rp.code);
        if (p->v[i] == PV_OK)
            snprintf(p->why[i], sizeof(p->why[i]), "%u %s%s%.250s", p->rp.code, p->rp.esc,
                p->rp.esc[0] ? " " : "", p->rp.text);
        else
            cli_probe_why(p->rp.code, p->rp.esc, p->rp.text, p->why[i], sizeof(p->why[i]));
        if (p->v[i] == PV_UNKNOWN || p->rp.code / 100 == 3) {
            p->v[i] = PV_TEMP;
            snprintf(p->why[i], sizeof(p->why[i]), "out-of-step reply %u to RCPT", p->rp.code);
        }
    }
    if (probe_send(p, "RSET") == 0 && probe_reply(p, "the reply to RSET") == 0 && p->rp.code != 421)
        probe_quit(p);
}

/* ---- where to connect ----------------------------------------------------------------------- */

struct probe_route {
    bool done;
    struct dns_route r;
    struct dane_rrset *tlsa; /* copies of the hosts' TLSA sets (r.hosts[i].tlsa points here) */
    struct event_base *base;
};

static void
probe_on_route(void *arg, const struct dns_route *r)
{
    struct probe_route *pr = arg;

    pr->done = true;
    pr->r.status = r->status;
    snprintf(pr->r.error, sizeof(pr->r.error), "%s", r->error);
    pr->r.nhosts = 0;
    if (r->status == DNS_OK && r->nhosts > 0) {
        pr->r.hosts = calloc(r->nhosts, sizeof(*r->hosts));
        pr->tlsa = calloc(r->nhosts, sizeof(*pr->tlsa));
        if (pr->r.hosts != NULL && pr->tlsa != NULL) {
            memcpy(pr->r.hosts, r->hosts, r->nhosts * sizeof(*r->hosts));
            pr->r.nhosts = r->nhosts;
            /* the route is ours only during the callback: keep the TLSA sets */
            for (size_t i = 0; i < r->nhosts; i++)
                if (r->hosts[i].tlsa != NULL) {
                    (void)dane_rrset_copy(&pr->tlsa[i], r->hosts[i].tlsa); /* fails closed */
                    pr->r.hosts[i].tlsa = &pr->tlsa[i];
                }
        }
    }
    event_base_loopbreak(pr->base);
}

static void
probe_route_free(struct probe_route *pr)
{
    for (size_t i = 0; pr->tlsa != NULL && i < pr->r.nhosts; i++)
        dane_rrset_clear(&pr->tlsa[i]);
    free(pr->tlsa);
    free(pr->r.hosts);
    pr->tlsa = NULL;
    pr->r.hosts = NULL;
}

/* Resolve and connect.  The fd, or -1 with *verdict and why set. */
static int
probe_connect(struct probe *p, enum probe_verdict *verdict, char *why, size_t whylen)
{
    char host[256], port[8], desc[340], err[400];
    unsigned char tmp[16];
    struct probe_route pr;
    struct dns *d;
    size_t i;
    int fd = -1;

    if (cli_send_split_hostport(p->target, host, sizeof(host), port, sizeof(port)) < 0) {
        *verdict = PV_UNKNOWN;
        snprintf(why, whylen, "%s: not HOST:PORT, an IP address or a domain", p->target);
        return -1;
    }
    if (port[0] == '\0')
        snprintf(port, sizeof(port), "%u", p->port);
    if (strchr(p->target, ':') != NULL || inet_pton(AF_INET, host, tmp) == 1 ||
        inet_pton(AF_INET6, host, tmp) == 1) {
        fd = cli_send_connect(host, port, p->timeout, desc, sizeof(desc), err, sizeof(err));
        if (fd < 0) {
            *verdict = PV_TEMP;
            snprintf(why, whylen, "cannot connect: %.300s", err);
            return -1;
        }
        printf("connected to %s\n", desc);
        snprintf(p->tlshost, sizeof(p->tlshost), "%s", host);
        return fd;
    }

    /* a domain: its mail route, as delivery finds it */
    memset(&pr, 0, sizeof(pr));
    pr.base = event_base_new();
    if (pr.base == NULL) {
        *verdict = PV_TEMP;
        snprintf(why, whylen, "cannot create an event loop");
        return -1;
    }
    d = dns_open(pr.base, p->dns_config, err, sizeof(err));
    if (d == NULL) {
        event_base_free(pr.base);
        *verdict = PV_UNKNOWN;
        snprintf(why, whylen, "DNS: %.300s", err);
        return -1;
    }
    dns_set_timeout(d, (unsigned)p->timeout * 1000u);
    if ((p->starttls || p->implicit_tls) && !dns_set_dane(d, true))
        printf("note: no DNSSEC trust anchor: no answer can be validated, so every host is "
               "DANE-insecure\n");
    dns_route(d, host, (unsigned short)p->port, probe_on_route, &pr);
    while (!pr.done)
        if (event_base_dispatch(pr.base) < 0)
            break;
    dns_close(d);
    event_base_free(pr.base);
    if (!pr.done || pr.r.status == DNS_TEMP || (pr.r.status == DNS_OK && pr.r.nhosts == 0)) {
        *verdict = PV_TEMP;
        snprintf(why, whylen, "the mail route of %.100s cannot be found now: %.120s", host,
            pr.done ? pr.r.error : "no answer");
        probe_route_free(&pr);
        return -1;
    }
    if (pr.r.status == DNS_NXDOMAIN || pr.r.status == DNS_NULL_MX) {
        *verdict = PV_PERM;
        snprintf(why, whylen, "%s takes no mail: %s", host,
            pr.r.status == DNS_NULL_MX ? "null MX (RFC 7505)"
                                       : "no such domain, or no MX and "
                                         "no address");
        probe_route_free(&pr);
        return -1;
    }
    if (p->verbose)
        for (i = 0; i < pr.r.nhosts; i++) {
            char ip[INET6_ADDRSTRLEN] = "?";
            const struct dns_host *h = &pr.r.hosts[i];

            if (h->addr.ss_family == AF_INET)
                inet_ntop(
                    AF_INET, &((const struct sockaddr_in *)&h->addr)->sin_addr, ip, sizeof(ip));
            else
                inet_ntop(
                    AF_INET6, &((const struct sockaddr_in6 *)&h->addr)->sin6_addr, ip, sizeof(ip));
            printf("route: MX %u %s [%s]\n", h->preference, h->name, ip);
        }
    for (i = 0; i < pr.r.nhosts && fd < 0; i++) {
        const struct dns_host *h = &pr.r.hosts[i];

        fd = cli_send_connect_addr(&h->addr, (unsigned)h->addrlen, h->name, p->timeout, desc,
            sizeof(desc), err, sizeof(err));
        if (fd < 0) {
            printf("cannot connect: %s\n", err);
        } else {
            snprintf(p->tlshost, sizeof(p->tlshost), "%s", h->name);
            p->dane = h->dane;
            if (h->tlsa != NULL)
                (void)dane_rrset_copy(&p->tlsa, h->tlsa); /* fails closed */
        }
    }
    probe_route_free(&pr);
    if (fd < 0) {
        *verdict = PV_TEMP;
        snprintf(why, whylen, "no mail exchanger of %s accepted a connection", host);
        return -1;
    }
    printf("connected to %s\n", desc);
    return fd;
}

static const char *
probe_verdict_word(enum probe_verdict v)
{
    return v == PV_OK ? "would be accepted now" : v == PV_PERM ? "refused" : "deferred";
}

int
cli_probe_main(int argc, char **argv)
{
    struct probe *p = calloc(1, sizeof(*p));
    char helo[256], why[400];
    enum probe_verdict cv = PV_UNKNOWN;
    bool any_temp = false, any_perm = false;
    size_t i;
    int k, rc;
    bool port_given = false;

    if (p == NULL)
        return CLI_EX_OSERR;
    p->from = "";
    p->port = 25;
    p->timeout = PROBE_DEFAULT_TIMEOUT;
    for (k = 1; k < argc; k++) {
        const char *a = argv[k];
        const char **dst = NULL;

        if (a[0] != '-' || a[1] == '\0') {
            if (p->target != NULL) {
                free(p);
                return probe_usage("one target only");
            }
            p->target = a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(probe_usage_text, stdout);
            free(p);
            return 0;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            p->verbose = true;
            continue;
        }
        if (strcmp(a, "--starttls") == 0 || strcmp(a, "--tls") == 0) {
            *(a[2] == 's' ? &p->starttls : &p->implicit_tls) = true;
            continue;
        }
        if (strcmp(a, "--from") == 0)
            dst = &p->from;
        else if (strcmp(a, "--helo") == 0)
            dst = &p->helo;
        else if (strcmp(a, "--dns-config") == 0)
            dst = &p->dns_config;
        else if (strcmp(a, "--ca-file") == 0)
            dst = &p->ca_file;
        else if (strcmp(a, "--to") == 0 || strcmp(a, "--port") == 0 || strcmp(a, "--timeout") == 0)
            ;
        else {
            fprintf(stderr, "tern probe: unknown option %s\n", a);
            free(p);
            return probe_usage(NULL);
        }
        if (k + 1 >= argc) {
            fprintf(stderr, "tern probe: %s needs a value\n", a);
            free(p);
            return probe_usage(NULL);
        }
        k++;
        if (dst != NULL) {
            *dst = argv[k];
        } else if (strcmp(a, "--to") == 0) {
            if (p->nrcpts == PROBE_MAX_RCPTS || argv[k][0] == '\0' || !cli_send_addr_ok(argv[k])) {
                free(p);
                return probe_usage("--to: an address (no spaces, controls or angle brackets), "
                                   "at most 100");
            }
            p->rcpts[p->nrcpts++] = argv[k];
        } else {
            int v = atoi(argv[k]);

            if (strspn(argv[k], "0123456789") != strlen(argv[k]) || v < 1 ||
                v > (strcmp(a, "--port") == 0 ? 65535 : 3600)) {
                free(p);
                return probe_usage(strcmp(a, "--port") == 0 ? "--port takes 1 to 65535"
                                                            : "--timeout takes 1 to 3600 s");
            }
            if (strcmp(a, "--port") == 0) {
                p->port = (unsigned)v;
                port_given = true;
            } else
                p->timeout = v;
        }
    }
    if (p->target == NULL) {
        free(p);
        return probe_usage("what to probe: HOST:PORT, an IP address or a domain");
    }
    if (p->starttls && p->implicit_tls) {
        free(p);
        return probe_usage("--starttls or --tls, not both");
    }
    if (p->ca_file != NULL && !p->starttls && !p->implicit_tls) {
        free(p);
        return probe_usage("--ca-file goes with --starttls or --tls");
    }
    if (p->implicit_tls && !port_given)
        p->port = 465;
    if (p->from[0] != '\0' && !cli_send_addr_ok(p->from)) {
        free(p);
        return probe_usage("--from: not an address");
    }
    if (p->helo == NULL) {
        if (gethostname(helo, sizeof(helo) - 1) < 0 || helo[0] == '\0' || !cli_send_addr_ok(helo))
            snprintf(helo, sizeof(helo), "localhost");
        helo[sizeof(helo) - 1] = '\0';
        p->helo = helo;
    } else if (p->helo[0] == '\0' || !cli_send_addr_ok(p->helo) || strlen(p->helo) > 255) {
        free(p);
        return probe_usage("--helo: a host name");
    }

    p->fd = probe_connect(p, &cv, why, sizeof(why));
    if (p->fd < 0) {
        if (cv == PV_UNKNOWN) {
            fprintf(stderr, "tern probe: %s\n", why);
            free(p);
            return CLI_EX_USAGE;
        }
        printf("%s\n", why);
        probe_decide_rest(p, cv, why);
    } else {
        if (!p->implicit_tls || probe_tls(p) == 0)
            probe_session(p);
        else
            probe_decide_rest(p, PV_TEMP, "the TLS handshake failed");
        remote_tls_close(p->tls);
        close(p->fd);
    }

    if (p->mail_v == PV_OK)
        printf("\nverdict: MAIL FROM:<%s> accepted\n", p->from);
    else
        printf("\nverdict: MAIL FROM:<%s> %s (%s: %s)\n", p->from, probe_verdict_word(p->mail_v),
            p->mail_v == PV_PERM ? "permanent" : "transient", p->mail_why);
    for (i = 0; i < p->nrcpts; i++) {
        if (p->v[i] == PV_OK)
            printf("  <%s>: would be accepted now (%s)\n", p->rcpts[i], p->why[i]);
        else
            printf("  <%s>: %s (%s: %s)\n", p->rcpts[i], probe_verdict_word(p->v[i]),
                p->v[i] == PV_PERM ? "permanent" : "transient", p->why[i]);
        any_temp = any_temp || p->v[i] == PV_TEMP;
        any_perm = any_perm || p->v[i] == PV_PERM;
    }
    if (p->nrcpts == 0) {
        any_temp = p->mail_v == PV_TEMP;
        any_perm = p->mail_v == PV_PERM;
    }
    rc = any_temp ? CLI_EX_TEMPFAIL : any_perm ? CLI_EX_UNAVAILABLE : CLI_EX_OK;
    dane_rrset_clear(&p->tlsa);
    free(p);
    fflush(stdout);
    return rc;
}
