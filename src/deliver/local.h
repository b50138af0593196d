/*
 * local.h - mail for local_domains: who exists, where it goes, and whether
 * there is room.  Used at RCPT time by the server (so unknown users are
 * refused during the SMTP dialogue, never bounced later) and at delivery
 * time by the scheduler (to expand aliases into mailboxes).
 */
#ifndef TERN_DELIVER_LOCAL_H
#define TERN_DELIVER_LOCAL_H

#include <stdbool.h>
#include <stddef.h>

#include "deliver/maildir.h"
#include "smtp/addr.h"
#include "smtp/reply.h"
#include "util/config.h"

struct local;

/* Loads the local_recipients file if there is one; NULL with "FILE:LINE: reason". */
struct local *local_new(const struct config *cfg, char *err, size_t errlen);
void local_free(struct local *l);

/* Is the address's domain one of local_domains (or no domain: postmaster)? */
bool local_is_local(const struct local *l, const char *addr);

/*
 * At RCPT: R_RCPT_OK, R_NO_SUCH_USER, R_MAILBOX_FULL_RCPT, or
 * R_MAILBOX_TOO_SMALL_RCPT when the declared size (MAIL SIZE=, 0 if none)
 * exceeds mailbox_size_limit.
 */
enum reply_id local_check_rcpt(const struct local *l, const char *addr,
    unsigned long long declared_size);

/*
 * At delivery: 1 with the mailboxes addr delivers to (NULL-terminated, owned
 * by l), or 0 if it does not exist (any more).  "postmaster" without a
 * domain is postmaster@ the first local domain.
 */
int local_resolve(const struct local *l, const char *addr, const char *const **targets,
    size_t *n);

const struct maildir_conf *local_maildir(const struct local *l);

#endif
