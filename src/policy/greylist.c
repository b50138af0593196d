/*
 * greylist.c - greylisting's decision and keys (see greylist.h).
 *
 * The triplet's key is a hash, so a record has a bounded size whatever the addresses.
 * XXX: FNV-1a (64 bits) is not a keyed hash: someone could craft a sender that collides
 * with a passed triplet.  That gains nothing a plain retry would not, so it is no
 * security boundary; the hash must be the same on every node, which rules out a per-node
 * secret.
 */
#include "policy/greylist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void
greylist_params_from(const struct config *cfg, struct greylist_params *p)
{
    p->delay = cfg->greylist_delay;
    p->retry_window = cfg->greylist_retry_window;
    p->expire = cfg->greylist_expire;
    p->auto_allow = cfg->greylist_auto_allow;
}

void
greylist_decide(const struct greylist_params *p, bool found, int64_t value, int64_t net_passes,
    int64_t now, struct greylist_decision *d)
{
    memset(d, 0, sizeof(*d));
    if (found && value < 0) {
        d->pass = true;
        d->why = GREYLIST_PASSED;
        if (now - (-value) >= p->expire / 10) { /* keep it alive, without a write per RCPT */
            d->write = true;
            d->value = -now;
            d->ttl = p->expire;
        }
        return;
    }
    if (p->auto_allow > 0 && net_passes >= p->auto_allow) {
        d->pass = true;
        d->why = GREYLIST_NETWORK;
        return;
    }
    if (!found || value <= 0 || value > now || now - value > p->retry_window) {
        d->why = GREYLIST_NEW;
        d->retry_in = p->delay;
        d->write = true;
        d->value = now;
        d->ttl = p->retry_window;
        return;
    }
    if (now - value < p->delay) {
        d->why = GREYLIST_EARLY;
        d->retry_in = p->delay - (now - value);
        return;
    }
    d->pass = true;
    d->why = GREYLIST_RETRIED;
    d->write = true;
    d->value = -now;
    d->ttl = p->expire;
    d->count_network = true;
}

const char *
greylist_why_name(enum greylist_why why)
{
    static const char *const names[] = {"new", "early", "retried", "passed", "network"};

    return names[why];
}

void
greylist_network(int family, const unsigned char addr[16], char *out, size_t len)
{
    unsigned char a[16] = {0};
    char text[INET6_ADDRSTRLEN];

    if (family == AF_INET) {
        memcpy(a, addr, 3);
        inet_ntop(AF_INET, a, text, sizeof(text));
        snprintf(out, len, "%s/24", text);
    } else {
        memcpy(a, addr, 8);
        inet_ntop(AF_INET6, a, text, sizeof(text));
        snprintf(out, len, "%s/64", text);
    }
}

static uint64_t
greylist_fnv(uint64_t h, const char *s, bool lower)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)(lower ? tolower((unsigned char)*s) : *s)) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* a separator no address contains */
}

void
greylist_triplet_key(const char *net, const char *sender, const char *rcpt, char *out, size_t len)
{
    uint64_t h = 14695981039346656037ULL;

    h = greylist_fnv(h, net, false);
    h = greylist_fnv(h, sender, true);
    h = greylist_fnv(h, rcpt, true);
    snprintf(out, len, "gl:t:%016llx", (unsigned long long)h);
}

void
greylist_network_key(const char *net, char *out, size_t len)
{
    snprintf(out, len, "gl:n:%s", net);
}

static bool
greylist_domain_listed(const struct config *cfg, const char *addr)
{
    const char *at = strrchr(addr, '@');

    return at != NULL && config_domain_listed(&cfg->greylist_allow_domains, at + 1, strlen(at + 1));
}

bool
greylist_domain_allowed(const struct config *cfg, const char *sender, const char *rcpt)
{
    return greylist_domain_listed(cfg, sender) || greylist_domain_listed(cfg, rcpt);
}
