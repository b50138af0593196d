/*
 * ratelimit.h - rate limits per client: a sliding window made of two fixed windows.
 *
 * Each hit adds one to the counter of the current window (key ".../INDEX", INDEX = now /
 * window); the estimate is the current count plus the previous window's count weighted by
 * the part of the previous window still inside the sliding one.  Over the limit: refused,
 * with the seconds after which one more hit would be under it again.  Refused hits count
 * too (a client that hammers stays limited).  One atomic increment-and-read per hit, which
 * several nodes can share (store_incr); a token bucket would need a read-modify-write of
 * two fields.  Pure: the caller passes the counts and the time.
 */
#ifndef TERN_POLICY_RATELIMIT_H
#define TERN_POLICY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * cur: this window's count including this hit; prev: the previous window's.  True when
 * the hit is within limit; else *retry_in (seconds, at least 1) says when to come back.
 */
bool rate_check(
    int64_t limit, int64_t window_ms, int64_t now_ms, int64_t cur, int64_t prev, int64_t *retry_in);

/* The keys of this window and the previous one: "rl:KIND:CLIENT:WINDOW_S:INDEX". */
void rate_keys(const char *kind, const char *client, int64_t window_ms, int64_t now_ms, char *key,
    char *prev, size_t len);

/* What a limit counts: the address for IPv4, the /64 for IPv6 (a host has a whole /64). */
void rate_client(int family, const unsigned char addr[16], char *out, size_t len);

#endif
