/*
 * local.c - local recipients: existence, alias expansion, room (local.h).
 */
#include "deliver/local.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/recipients.h"

#define LOCAL_ADDR_MAX 320

struct local {
    const struct config *cfg;
    struct recipients *table;  /* NULL: local_recipients = any */
    struct maildir_conf mconf;
    char postmaster[LOCAL_ADDR_MAX];
    const char *postmaster_targets[2];
};

struct local *
local_new(const struct config *cfg, char *err, size_t errlen)
{
    struct local *l;

    if ((l = calloc(1, sizeof(*l))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->cfg = cfg;
    if (cfg->local_recipients != NULL && strncmp(cfg->local_recipients, "file:", 5) == 0 &&
        (l->table = recipients_load(cfg->local_recipients + 5, err, errlen)) == NULL) {
        free(l);
        return NULL;
    }
    l->mconf.mailbox_dir = cfg->mailbox_dir;
    l->mconf.hostname = cfg->hostname;
    l->mconf.size_limit = (uint64_t)cfg->mailbox_size_limit;
    snprintf(l->postmaster, sizeof(l->postmaster), "postmaster@%s",
        cfg->local_domains.n ? cfg->local_domains.items[0] : cfg->hostname);
    l->postmaster_targets[0] = l->postmaster;
    return l;
}

void
local_free(struct local *l)
{
    if (l == NULL)
        return;
    recipients_free(l->table);
    free(l);
}

/* "Postmaster" without a domain (RFC 5321 §4.5.1) is the first local domain's. */
static const char *
local_canonical(const struct local *l, const char *addr)
{
    return strchr(addr, '@') == NULL ? l->postmaster : addr;
}

bool
local_is_local(const struct local *l, const char *addr)
{
    const char *at = strrchr(addr, '@');

    if (at == NULL)
        return true;
    return config_domain_listed(&l->cfg->local_domains, at + 1, strlen(at + 1));
}

int
local_resolve(const struct local *l, const char *addr, const char *const **targets, size_t *n)
{
    if (l->table == NULL) {
        /* Every address exists; only a bare "postmaster" needs a mailbox name. */
        bool bare = strchr(addr, '@') == NULL;
        *targets = bare ? l->postmaster_targets : NULL;
        *n = bare ? 1 : 0;
        return 1;
    }
    addr = local_canonical(l, addr);
    return recipients_lookup(l->table, addr, targets, n);
}

enum reply_id
local_check_rcpt(const struct local *l, const char *addr, unsigned long long declared_size)
{
    const char *const *targets;
    size_t i, n;

    if (!local_resolve(l, addr, &targets, &n))
        return R_NO_SUCH_USER;
    if (l->mconf.size_limit == 0 || strncmp(l->cfg->local_delivery, "maildir", 7) != 0)
        return R_RCPT_OK;
    if (declared_size > l->mconf.size_limit)
        return R_MAILBOX_TOO_SMALL_RCPT;
    if (n == 0)
        return maildir_full(&l->mconf, local_canonical(l, addr)) ? R_MAILBOX_FULL_RCPT
                                                                  : R_RCPT_OK;
    for (i = 0; i < n; i++)
        if (maildir_full(&l->mconf, targets[i]))
            return R_MAILBOX_FULL_RCPT;
    return R_RCPT_OK;
}

const struct maildir_conf *
local_maildir(const struct local *l)
{
    return &l->mconf;
}
