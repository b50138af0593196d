/*
 * policy.h - the checks before DATA that need state: rate limits (connections, messages,
 * recipients per client) and greylisting, on the state store (store.h).
 *
 * The server asks at three points: a new connection, MAIL, RCPT.  Each answer is either
 * final at once (the check is off, the client is exempt) or REPLY_PENDING: the verdict
 * comes later through the callback, on the loop thread, never from inside the call.  A
 * request whose connection went away is cancelled: its answer is dropped and its memory
 * freed when the store answers (the store always answers, within STORE_TIMEOUT_MS).
 *
 * Exempt from everything here: clients in relay_networks, clients in
 * policy_allow_networks, authenticated clients.  Exempt from greylisting also: mail whose
 * sender or recipient domain is in greylist_allow_domains.
 *
 * When the store fails, policy_on_error decides: accept (the check passes) or tempfail
 * (R_POLICY_UNAVAILABLE, 451 4.3.0).  The connection count never refuses on a store
 * failure: the session starts and its MAIL and RCPT checks decide.
 */
#ifndef TERN_POLICY_POLICY_H
#define TERN_POLICY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "smtp/reply.h"
#include "util/config.h"

struct policy;
struct policy_req;

struct policy_client {
    int family; /* AF_INET (v4-mapped IPv6 folded in) or AF_INET6 */
    unsigned char addr[16];
    bool may_relay; /* in relay_networks */
    bool allowed;   /* in policy_allow_networks */
};

/*
 * A verdict: the positive reply (R_GREETING, R_MAIL_OK, R_RCPT_OK) or a refusal, with the
 * refusal's text arguments in args[0..3] (valid during the call only).
 */
typedef void (*policy_cb)(void *arg, enum reply_id verdict, const char *const args[4]);

/* The store is opened only if a check is on; NULL with a reason in err. */
struct policy *policy_new(
    const struct config *cfg, struct event_base *base, char *err, size_t errlen);
void policy_free(struct policy *pol);

void policy_client_init(
    struct policy_client *cl, const struct config *cfg, const struct sockaddr *sa);

/*
 * The one place that says who skips the checks.  authenticated: the client has
 * authenticated (SMTP AUTH).
 */
bool policy_exempt(const struct config *cfg, const struct policy_client *cl, bool authenticated);

/*
 * Each returns the verdict at once (the positive reply; args then unused) or REPLY_PENDING
 * with *req set: the verdict comes through cb(arg, ...) unless policy_cancel(*req) is
 * called first.
 */
enum reply_id policy_connect(struct policy *pol, const struct policy_client *cl, bool authenticated,
    policy_cb cb, void *arg, struct policy_req **req);
enum reply_id policy_mail(struct policy *pol, const struct policy_client *cl, bool authenticated,
    const char *sender, policy_cb cb, void *arg, struct policy_req **req);
enum reply_id policy_rcpt(struct policy *pol, const struct policy_client *cl, bool authenticated,
    const char *sender, const char *rcpt, policy_cb cb, void *arg, struct policy_req **req);

/* The asker is gone: its verdict is dropped. */
void policy_cancel(struct policy_req *req);

#endif
