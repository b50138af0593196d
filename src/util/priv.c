/*
 * priv.c - the user ternd runs as, and dropping root for good (see priv.h).
 */
#include "util/priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

int
priv_resolve(const char *user, struct priv_user *pu, enum priv_mode *mode, char *err, size_t errlen)
{
    struct passwd *pw;
    bool root = geteuid() == 0;

    memset(pu, 0, sizeof(*pu));
    pu->uid = geteuid();
    pu->gid = getegid();
    if (user == NULL || user[0] == '\0') {
        *mode = root ? PRIV_ROOT_NO_USER : PRIV_UNPRIVILEGED;
        return 0;
    }
    errno = 0;
    if ((pw = getpwnam(user)) == NULL) {
        snprintf(err, errlen, "user %s: %s", user, errno != 0 ? strerror(errno) : "no such user");
        return -1;
    }
    if (strlen(pw->pw_name) >= sizeof(pu->name)) {
        snprintf(err, errlen, "user %s: name too long", user);
        return -1;
    }
    if (!root) {
        *mode = pw->pw_uid == geteuid() ? PRIV_ALREADY_USER : PRIV_USER_IGNORED;
        return 0;
    }
    snprintf(pu->name, sizeof(pu->name), "%s", pw->pw_name);
    pu->uid = pw->pw_uid;
    pu->gid = pw->pw_gid;
    if (pw->pw_uid == 0) {
        *mode = PRIV_ROOT_USER_IS_ROOT;
        return 0;
    }
    pu->drop = true;
    *mode = PRIV_DROP;
    return 0;
}

int
priv_give(const char *path, const struct priv_user *pu)
{
    struct stat st;

    if (!pu->drop)
        return 0;
    if (lstat(path, &st) < 0)
        return -1;
    if (st.st_uid == pu->uid && st.st_gid == pu->gid)
        return 0;
    if (lchown(path, pu->uid, pu->gid) < 0)
        return -1;
    return 1;
}

static int
priv_fail(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    return -1;
}

int
priv_drop(const struct priv_user *pu, char *err, size_t errlen)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (pu->drop) {
        /* The user's own groups (an operator may add it to the group of an LMTP socket);
           never root's. */
        if (initgroups(pu->name, pu->gid) < 0)
            return priv_fail(err, errlen, "initgroups");
        if (setresgid(pu->gid, pu->gid, pu->gid) < 0)
            return priv_fail(err, errlen, "setresgid");
        if (setresuid(pu->uid, pu->uid, pu->uid) < 0)
            return priv_fail(err, errlen, "setresuid");
        /* Check rather than trust: every id is the user's, and root cannot come back. */
        if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0)
            return priv_fail(err, errlen, "getresuid");
        if (ru != pu->uid || eu != pu->uid || su != pu->uid || rg != pu->gid || eg != pu->gid ||
            sg != pu->gid) {
            snprintf(err, errlen, "the user and group ids did not all change");
            return -1;
        }
        if (setuid(0) != -1 || seteuid(0) != -1 || setgid(0) != -1) {
            snprintf(err, errlen, "root could be regained after dropping privileges");
            return -1;
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return priv_fail(err, errlen, "prctl(PR_SET_NO_NEW_PRIVS)");
    return 0;
}
