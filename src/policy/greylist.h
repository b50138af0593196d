/*
 * greylist.h - greylisting (the decision and its keys; policy.c drives it on the store).
 *
 * A triplet is (client network: /24 for IPv4, /64 for IPv6; envelope sender; recipient),
 * both addresses lower-cased; the null sender is a sender like any other (as postgrey
 * keys it).  Its record holds one integer:
 *   > 0   first seen at that time (seconds): greylisted until first + delay, forgotten
 *         after the retry window;
 *   < 0   passed, last confirmed at -value: passes at once; the record lives for
 *         greylist_expire after that confirmation (refreshed at most every expire/10).
 * A network that has passed greylist_auto_allow triplets (counted within greylist_expire)
 * passes entirely.
 *
 * Pure: no store, no clock; the caller gives the records and the time and applies the
 * writes the decision asks for.
 */
#ifndef TERN_POLICY_GREYLIST_H
#define TERN_POLICY_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/config.h"

struct greylist_params {
    int64_t delay;        /* seconds */
    int64_t retry_window; /* seconds */
    int64_t expire;       /* seconds */
    int64_t auto_allow;   /* passed triplets after which a network passes; 0: never */
};

enum greylist_why {
    GREYLIST_NEW,     /* first sight (or after the retry window): greylisted */
    GREYLIST_EARLY,   /* retried before the delay: greylisted still */
    GREYLIST_RETRIED, /* retried after the delay: passes, and from now on */
    GREYLIST_PASSED,  /* passed before */
    GREYLIST_NETWORK, /* the network is auto-allowed */
};

struct greylist_decision {
    bool pass;
    enum greylist_why why;
    int64_t retry_in; /* seconds, when greylisted */
    bool write;       /* set the triplet's record to value, for ttl seconds */
    int64_t value;
    int64_t ttl;
    bool count_network; /* one more passed triplet for the network (ttl: expire) */
};

void greylist_params_from(const struct config *cfg, struct greylist_params *p);

/*
 * found/value: the triplet's record; net_passes: the network's count (only looked at when
 * auto_allow > 0 and the triplet has not passed).
 */
void greylist_decide(const struct greylist_params *p, bool found, int64_t value, int64_t net_passes,
    int64_t now, struct greylist_decision *d);

const char *greylist_why_name(enum greylist_why why);

/* "192.0.2.0/24" or "2001:db8:1:2::/64" for the client's address (family AF_INET[6]). */
void greylist_network(int family, const unsigned char addr[16], char *out, size_t len);

/* "gl:t:" + 16 hex digits of a hash of (network, sender, recipient). */
void greylist_triplet_key(
    const char *net, const char *sender, const char *rcpt, char *out, size_t len);

/* "gl:n:" + the network. */
void greylist_network_key(const char *net, char *out, size_t len);

/* The sender's or the recipient's domain is in greylist_allow_domains. */
bool greylist_domain_allowed(const struct config *cfg, const char *sender, const char *rcpt);

#endif
