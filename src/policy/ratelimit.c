/*
 * ratelimit.c - sliding-window rate limits (see ratelimit.h).
 */
#include "policy/ratelimit.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Milliseconds from the start of a window until prev * (W - e) / W + c <= lim holds. */
static int64_t
rate_wait_within(int64_t lim, int64_t w, int64_t c, int64_t prev)
{
    /* prev * (w - e) <= (lim - c) * w  <=>  e >= w - (lim - c) * w / prev */
    int64_t e;

    if (prev <= 0 || c > lim)
        return c > lim ? -1 : 0;
    e = w - ((lim - c) * w) / prev;
    return e < 0 ? 0 : e;
}

bool
rate_check(
    int64_t limit, int64_t window_ms, int64_t now_ms, int64_t cur, int64_t prev, int64_t *retry_in)
{
    int64_t w = window_ms, elapsed = now_ms % w, wait_ms;

    /* estimate = prev * (w - elapsed) / w + cur, compared without division */
    if (prev * (w - elapsed) + cur * w <= limit * w)
        return true;
    /* The next hit (one more) must fit: first in this window, else in the next one. */
    if (cur + 1 <= limit) {
        wait_ms = rate_wait_within(limit, w, cur + 1, prev) - elapsed;
    } else {
        int64_t e = rate_wait_within(limit, w, 1, cur);
        wait_ms = (w - elapsed) + (e < 0 ? w : e);
    }
    *retry_in = (wait_ms + 999) / 1000;
    if (*retry_in < 1)
        *retry_in = 1;
    return false;
}

void
rate_keys(const char *kind, const char *client, int64_t window_ms, int64_t now_ms, char *key,
    char *prev, size_t len)
{
    long long idx = (long long)(now_ms / window_ms), ws = (long long)(window_ms / 1000);

    snprintf(key, len, "rl:%s:%s:%lld:%lld", kind, client, ws, idx);
    snprintf(prev, len, "rl:%s:%s:%lld:%lld", kind, client, ws, idx - 1);
}

void
rate_client(int family, const unsigned char addr[16], char *out, size_t len)
{
    unsigned char a[16] = {0};
    char text[INET6_ADDRSTRLEN];

    if (family == AF_INET) {
        inet_ntop(AF_INET, addr, text, sizeof(text));
        snprintf(out, len, "%s", text);
    } else {
        memcpy(a, addr, 8);
        inet_ntop(AF_INET6, a, text, sizeof(text));
        snprintf(out, len, "%s/64", text);
    }
}
