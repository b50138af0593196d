/*
 * policy.c - rate limits and greylisting on the state store (see policy.h).
 *
 * A request is a small chain on the store: at RCPT, one counter hit for the recipient
 * rate, then the triplet's record, then (only while the triplet has not passed and
 * auto-allow is on) the network's count; then the decision, whose writes are sent without
 * waiting for them (a lost write only means a sender is greylisted once more).  A cancelled
 * request runs its chain to the next answer and stops there.
 */
#include "policy/policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/greylist.h"
#include "policy/ratelimit.h"
#include "policy/store.h"
#include "smtp/session.h"
#include "util/log.h"

enum req_kind { REQ_CONNECT, REQ_MAIL, REQ_RCPT };

struct policy {
    const struct config *cfg;
    struct store *store; /* NULL: no check is on */
    struct greylist_params gp;
    int64_t window_ms;
    bool tempfail; /* policy_on_error = tempfail */
};

struct policy_req {
    struct policy *pol;
    policy_cb cb; /* NULL once cancelled */
    void *arg;
    enum req_kind kind;
    bool greylist;      /* greylisting follows the rate check */
    int64_t limit;      /* the rate checked */
    enum reply_id over; /* its refusal */
    char net[64];
    char tkey[STORE_KEY_MAX];
    char nkey[STORE_KEY_MAX];
    bool tfound;
    int64_t tvalue;
    char *rcpt;
    char nums[3][24];
};

void
policy_client_init(struct policy_client *cl, const struct config *cfg, const struct sockaddr *sa)
{
    memset(cl, 0, sizeof(*cl));
    if (sa->sa_family == AF_INET) {
        cl->family = AF_INET;
        memcpy(cl->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            cl->family = AF_INET;
            memcpy(cl->addr, &a->s6_addr[12], 4);
        } else {
            cl->family = AF_INET6;
            memcpy(cl->addr, a->s6_addr, 16);
        }
    }
    cl->may_relay = config_cidr_match(cfg->relay_networks, cfg->nrelay_networks, sa);
    cl->allowed = config_cidr_match(cfg->policy_allow_networks, cfg->npolicy_allow_networks, sa);
}

bool
policy_exempt(const struct config *cfg, const struct policy_client *cl, bool authenticated)
{
    (void)cfg;
    return cl->may_relay || cl->allowed || authenticated;
}

static enum reply_id
policy_positive(enum req_kind k)
{
    return k == REQ_CONNECT ? R_GREETING : k == REQ_MAIL ? R_MAIL_OK : R_RCPT_OK;
}
/* The verdict when the store cannot be asked (it failed, or no memory to ask it). */
static enum reply_id
policy_error_verdict(const struct policy *pol, enum req_kind kind)
{
    return kind != REQ_CONNECT && pol->tempfail ? R_POLICY_UNAVAILABLE : policy_positive(kind);
}

static void
req_finish(struct policy_req *q, enum reply_id verdict, const char *const args[4])
{
    static const char *const none[4] = {NULL, NULL, NULL, NULL};

    if (q->cb != NULL)
        q->cb(q->arg, verdict, args ? args : none);
    free(q->rcpt);
    free(q);
}

/* The store failed: policy_on_error decides (a connection is always let in). */
static bool
req_failed(struct policy_req *q, const struct store_result *r)
{
    if (r->err == 0 || policy_error_verdict(q->pol, q->kind) != R_POLICY_UNAVAILABLE)
        return false; /* accept: as if the check had passed */
    req_finish(q, R_POLICY_UNAVAILABLE, NULL);
    return true;
}

static void
gl_decide(struct policy_req *q, int64_t net_passes)
{
    struct policy *pol = q->pol;
    struct greylist_decision d;
    int64_t now = store_now_ms() / 1000;
    const char *args[4] = {q->rcpt, q->nums[0], NULL, NULL};

    greylist_decide(&pol->gp, q->tfound, q->tvalue, net_passes, now, &d);
    if (d.write)
        store_set(pol->store, q->tkey, d.value, d.ttl * 1000, NULL, NULL);
    if (d.count_network && pol->gp.auto_allow > 0)
        store_incr(pol->store, q->nkey, pol->gp.expire * 1000, NULL, NULL, NULL);
    log_debug(
        NULL, "event=greylist net=%s key=%s outcome=%s", q->net, q->tkey, greylist_why_name(d.why));
    if (d.pass) {
        req_finish(q, R_RCPT_OK, NULL);
        return;
    }
    snprintf(q->nums[0], sizeof(q->nums[0]), "%lld", (long long)d.retry_in);
    req_finish(q, R_GREYLISTED, args);
}

static void
gl_on_network(void *arg, const struct store_result *r)
{
    struct policy_req *q = arg;

    if (q->cb == NULL) {
        req_finish(q, R_RCPT_OK, NULL);
        return;
    }
    if (req_failed(q, r))
        return;
    gl_decide(q, r->err == 0 && r->found ? r->value : 0);
}

static void
gl_on_triplet(void *arg, const struct store_result *r)
{
    struct policy_req *q = arg;

    if (q->cb == NULL) {
        req_finish(q, R_RCPT_OK, NULL);
        return;
    }
    if (req_failed(q, r))
        return;
    if (r->err != 0) { /* accept */
        req_finish(q, R_RCPT_OK, NULL);
        return;
    }
    q->tfound = r->found;
    q->tvalue = r->value;
    if ((r->found && r->value < 0) || q->pol->gp.auto_allow == 0)
        gl_decide(q, 0);
    else if (store_get(q->pol->store, q->nkey, gl_on_network, q) == -1)
        req_finish(q, policy_error_verdict(q->pol, q->kind), NULL);
}

static int
gl_start(struct policy_req *q)
{
    return store_get(q->pol->store, q->tkey, gl_on_triplet, q);
}

static void
rate_on_hit(void *arg, const struct store_result *r)
{
    struct policy_req *q = arg;
    struct policy *pol = q->pol;
    const char *args[4] = {NULL, NULL, NULL, NULL};
    int64_t retry;

    if (q->cb == NULL) {
        req_finish(q, policy_positive(q->kind), NULL);
        return;
    }
    if (req_failed(q, r))
        return;
    if (r->err == 0 &&
        !rate_check(q->limit, pol->window_ms, store_now_ms(), r->value, r->other, &retry)) {
        snprintf(q->nums[0], sizeof(q->nums[0]), "%lld", (long long)q->limit);
        snprintf(q->nums[1], sizeof(q->nums[1]), "%lld", (long long)(pol->window_ms / 1000));
        snprintf(q->nums[2], sizeof(q->nums[2]), "%lld", (long long)retry);
        if (q->kind == REQ_CONNECT) {
            args[0] = pol->cfg->hostname;
        } else if (q->kind == REQ_RCPT) {
            args[0] = q->rcpt;
        }
        if (q->kind == REQ_MAIL) {
            args[0] = q->nums[0];
            args[1] = q->nums[1];
            args[2] = q->nums[2];
            args[3] = NULL;
        } else {
            args[1] = q->nums[0];
            args[2] = q->nums[1];
            args[3] = q->nums[2];
        }
        req_finish(q, q->over, args);
        return;
    }
    if (!q->greylist)
        req_finish(q, policy_positive(q->kind), NULL);
    else if (gl_start(q) == -1)
        req_finish(q, policy_error_verdict(pol, q->kind), NULL);
}

static int
rate_start(struct policy_req *q, const struct policy_client *cl, const char *kind)
{
    char client[64], key[STORE_KEY_MAX], prev[STORE_KEY_MAX];
    int64_t now = store_now_ms();

    rate_client(cl->family, cl->addr, client, sizeof(client));
    rate_keys(kind, client, q->pol->window_ms, now, key, prev, sizeof(key));
    return store_incr(q->pol->store, key, 2 * q->pol->window_ms, prev, rate_on_hit, q);
}

/* Started: the verdict comes later.  Not started (no memory): the verdict is now. */
static enum reply_id
req_started(struct policy_req *q, int rc, struct policy_req **req)
{
    enum reply_id r;

    if (rc == 0) {
        *req = q;
        return REPLY_PENDING;
    }
    r = policy_error_verdict(q->pol, q->kind);
    free(q->rcpt);
    free(q);
    return r;
}

static struct policy_req *
req_new(struct policy *pol, enum req_kind kind, policy_cb cb, void *arg)
{
    struct policy_req *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->pol = pol;
    q->kind = kind;
    q->cb = cb;
    q->arg = arg;
    return q;
}

enum reply_id
policy_connect(struct policy *pol, const struct policy_client *cl, bool authenticated, policy_cb cb,
    void *arg, struct policy_req **req)
{
    struct policy_req *q;

    if (pol->cfg->rate_connections == 0 || pol->store == NULL ||
        policy_exempt(pol->cfg, cl, authenticated))
        return R_GREETING;
    if ((q = req_new(pol, REQ_CONNECT, cb, arg)) == NULL)
        return R_GREETING;
    q->limit = pol->cfg->rate_connections;
    q->over = R_RATE_CONNECTIONS;
    return req_started(q, rate_start(q, cl, "c"), req);
}

enum reply_id
policy_mail(struct policy *pol, const struct policy_client *cl, bool authenticated,
    const char *sender, policy_cb cb, void *arg, struct policy_req **req)
{
    struct policy_req *q;

    if (pol->cfg->rate_messages == 0 || pol->store == NULL ||
        policy_exempt(pol->cfg, cl, authenticated))
        return R_MAIL_OK;
    if ((q = req_new(pol, REQ_MAIL, cb, arg)) == NULL)
        return pol->tempfail ? R_POLICY_UNAVAILABLE : R_MAIL_OK;
    q->limit = pol->cfg->rate_messages;
    q->over = R_RATE_MESSAGES;
    return req_started(q, rate_start(q, cl, "m"), req);
}

enum reply_id
policy_rcpt(struct policy *pol, const struct policy_client *cl, bool authenticated,
    const char *sender, const char *rcpt, policy_cb cb, void *arg, struct policy_req **req)
{
    const struct config *cfg = pol->cfg;
    struct policy_req *q;
    bool rate, grey;

    if (pol->store == NULL || policy_exempt(cfg, cl, authenticated))
        return R_RCPT_OK;
    rate = cfg->rate_recipients > 0;
    grey = cfg->greylist && !greylist_domain_allowed(cfg, sender, rcpt);
    if (!rate && !grey)
        return R_RCPT_OK;
    if ((q = req_new(pol, REQ_RCPT, cb, arg)) == NULL || (q->rcpt = strdup(rcpt)) == NULL) {
        free(q);
        return pol->tempfail ? R_POLICY_UNAVAILABLE : R_RCPT_OK;
    }
    q->greylist = grey;
    q->limit = cfg->rate_recipients;
    q->over = R_RATE_RECIPIENTS;
    if (grey) {
        greylist_network(cl->family, cl->addr, q->net, sizeof(q->net));
        greylist_triplet_key(q->net, sender, rcpt, q->tkey, sizeof(q->tkey));
        greylist_network_key(q->net, q->nkey, sizeof(q->nkey));
    }
    return req_started(q, rate ? rate_start(q, cl, "r") : gl_start(q), req);
}

void
policy_cancel(struct policy_req *req)
{
    if (req != NULL)
        req->cb = NULL;
}

struct policy *
policy_new(const struct config *cfg, struct event_base *base, char *err, size_t errlen)
{
    struct policy *pol = calloc(1, sizeof(*pol));
    char spec[4200];

    if (pol == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pol->cfg = cfg;
    greylist_params_from(cfg, &pol->gp);
    pol->window_ms = (int64_t)cfg->rate_window * 1000;
    pol->tempfail = strcmp(cfg->policy_on_error, "tempfail") == 0;
    if (!cfg->greylist && cfg->rate_connections == 0 && cfg->rate_messages == 0 &&
        cfg->rate_recipients == 0)
        return pol; /* nothing to check: no store */
    if (cfg->state_store != NULL)
        snprintf(spec, sizeof(spec), "%s", cfg->state_store);
    else
        snprintf(spec, sizeof(spec), "lmdb:%s/policy", cfg->spool_dir);
    if ((pol->store = store_open(spec, base, err, errlen)) == NULL) {
        free(pol);
        return NULL;
    }
    log_info(NULL,
        "event=policy store=%s greylist=%s rate_connections=%ld rate_messages=%ld "
        "rate_recipients=%ld rate_window=%ld policy_on_error=%s",
        spec, cfg->greylist ? "on" : "off", cfg->rate_connections, cfg->rate_messages,
        cfg->rate_recipients, cfg->rate_window, cfg->policy_on_error);
    return pol;
}

void
policy_free(struct policy *pol)
{
    if (pol == NULL)
        return;
    store_free(pol->store);
    free(pol);
}
