/*
 * relay.h - who may send mail to whom: local domains, relay networks, and
 * nothing else (tern is never an open relay).
 *
 * Promise: a recipient outside local_domains is accepted only from a client
 * in relay_networks.  Routing tricks that other software may honour later
 * ('%' and '!' in the local part, a quoted local part hiding an '@') are
 * refused outright, whoever the client is: tern never interprets them, and
 * refusing them keeps a downstream system from doing so.  Source routes are
 * already stripped by the address parser (RFC 5321 Appendix C).
 */
#ifndef TERN_POLICY_RELAY_H
#define TERN_POLICY_RELAY_H

#include <stdbool.h>

#include "smtp/addr.h"
#include "smtp/reply.h"
#include "util/config.h"

/* R_RCPT_OK, R_RELAY_DENIED or R_ROUTE_HACK. */
enum reply_id relay_check_rcpt(const struct config *cfg, bool client_may_relay,
    const struct smtp_path *rcpt);

bool relay_domain_is_local(const struct config *cfg, const struct smtp_path *rcpt);

#endif
