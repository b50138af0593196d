/*
 * relay.c - the relay decision (see relay.h).
 */
#include "policy/relay.h"

#include <string.h>

bool
relay_domain_is_local(const struct config *cfg, const struct smtp_path *rcpt)
{
    const char *dom;

    if (rcpt->at == 0)
        return true; /* "<Postmaster>" without a domain: ours by definition (RFC 5321 §4.5.1) */
    dom = smtp_path_domain(rcpt);
    return config_domain_listed(&cfg->local_domains, dom, strlen(dom));
}

enum reply_id
relay_check_rcpt(const struct config *cfg, bool client_may_relay, const struct smtp_path *rcpt)
{
    size_t locallen = rcpt->at ? rcpt->at : rcpt->len;

    if (memchr(rcpt->addr, '%', locallen) != NULL || memchr(rcpt->addr, '!', locallen) != NULL ||
        (rcpt->addr[0] == '"' && memchr(rcpt->addr, '@', locallen) != NULL))
        return R_ROUTE_HACK;
    if (relay_domain_is_local(cfg, rcpt) || client_may_relay)
        return R_RCPT_OK;
    return R_RELAY_DENIED;
}
