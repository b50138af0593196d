/*
 * priv.h - least privilege: the user ternd runs as, and dropping root for good.
 *
 * ternd started as root does everything that needs root first (binding the
 * listeners, the control socket, preparing the spool and mailbox directories),
 * then calls priv_drop(): supplementary groups of the user (initgroups), gid,
 * uid -- real, effective and saved alike, so root cannot come back -- and
 * PR_SET_NO_NEW_PRIVS, so no later execve can gain privileges either.
 * priv_drop() checks its own work and fails rather than run half-dropped.
 */
#ifndef TERN_UTIL_PRIV_H
#define TERN_UTIL_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct priv_user {
    bool drop; /* true: started as root with `user` set: priv_drop() changes identity */
    uid_t uid; /* the identity ternd runs with after priv_drop() */
    gid_t gid;
    char name[64]; /* the user's name ("" when no `user` applies) */
};

/* Why priv_resolve() chose what it chose, for one log line at start. */
enum priv_mode {
    PRIV_DROP,              /* root, `user` set: drop to it */
    PRIV_ROOT_NO_USER,      /* root, no `user`: runs as root (a loud warning) */
    PRIV_ROOT_USER_IS_ROOT, /* `user` names uid 0: runs as root (a loud warning) */
    PRIV_UNPRIVILEGED,      /* not root, no `user`: runs as whoever started it */
    PRIV_ALREADY_USER,      /* not root, `user` is the current user */
    PRIV_USER_IGNORED,      /* not root, `user` names another user: ignored (a warning) */
};

/*
 * Decide from the `user` key (NULL: unset) and the current identity.  Looks the
 * user up (getpwnam) now, before any sandbox hides /etc/passwd.  0, or -1 with
 * err set when `user` names no user.
 */
int priv_resolve(
    const char *user, struct priv_user *pu, enum priv_mode *mode, char *err, size_t errlen);

/*
 * Give path (not following a symlink) to the user when pu->drop and it is not
 * theirs yet.  1: changed, 0: already right or nothing to do, -1: errno set.
 */
int priv_give(const char *path, const struct priv_user *pu);

/*
 * Become pu for good (when pu->drop) and set PR_SET_NO_NEW_PRIVS (always).
 * Must run before any thread is started: the sandbox that follows applies to
 * the calling thread and the threads it starts later.  0, or -1 with err set.
 */
int priv_drop(const struct priv_user *pu, char *err, size_t errlen);

#endif
