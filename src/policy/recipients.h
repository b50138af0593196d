/*
 * recipients.h - the local recipient table (local_recipients = file:PATH).
 *
 * File format, one entry a line, '#' comments, blank lines ignored:
 *   user@example.org                          a mailbox
 *   alias@example.org: a@example.org, b@example.org   an alias (targets: mailboxes or
 *                                                     other aliases; expanded recursively,
 *                                                     loops and depth > 8 are errors)
 *   @example.org: catchall@example.org        catch-all for a domain: any address there
 *                                             not listed otherwise delivers to the target
 * Domains are compared without regard to case, local parts too (as Postfix
 * does by default).  Errors name FILE:LINE (unknown syntax, bad address,
 * duplicate entry, alias loop).
 */
#ifndef TERN_POLICY_RECIPIENTS_H
#define TERN_POLICY_RECIPIENTS_H

#include <stddef.h>

struct recipients;

struct recipients *recipients_load(const char *path, char *err, size_t errlen);
void recipients_free(struct recipients *r);

/*
 * Does addr exist?  1 with *targets set to the mailboxes it delivers to
 * (a NULL-terminated array owned by r, valid until recipients_free), or 0.
 */
int recipients_lookup(const struct recipients *r, const char *addr,
    const char *const **targets, size_t *ntargets);

#endif
