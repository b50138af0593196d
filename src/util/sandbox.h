/*
 * sandbox.h - a Landlock file system sandbox for the daemon.
 *
 * The caller lists the paths it needs and how (read-write trees such as the
 * spool, read-only files such as the configuration it re-reads on SIGHUP,
 * read-only system trees for the C library, OpenSSL and libunbound);
 * sandbox_apply() makes every other path unreachable for the calling thread
 * and the threads and processes it starts afterwards, for good.  Sockets are
 * not files: network connections (relaying, DNS) and descriptors already open
 * (the listeners) are untouched.  Landlock needs no privilege and restricts
 * root as well.
 *
 * Why Landlock and not seccomp: see docs/design.md, "Decisions taken".
 */
#ifndef TERN_UTIL_SANDBOX_H
#define TERN_UTIL_SANDBOX_H

#include <stddef.h>

enum sandbox_access {
    SANDBOX_READ,       /* read a file, or read every file and directory beneath */
    SANDBOX_READ_WRITE, /* beneath: create, write, rename, link, remove files and dirs */
    SANDBOX_REMOVE,     /* beneath: remove files and create sockets (a socket's directory) */
    SANDBOX_DEVICE,     /* a device file such as /dev/null: read and write */
};

struct sandbox_rule {
    const char *path;
    enum sandbox_access access;
};

/* The kernel's Landlock ABI version, or 0 when the kernel has none (or it is disabled). */
int sandbox_abi(void);

/*
 * Build the ruleset: allow exactly the rules and deny every other file system
 * access (and, from ABI 6, signals to and abstract sockets of processes outside
 * the sandbox).  A rule whose path does not exist is skipped.  Done before
 * dropping root, so that paths only root can reach (a configuration under a
 * 0700 directory) are still named; the rules grant nothing that the file
 * permissions refuse.  Returns a descriptor for sandbox_enforce(), -2 when the
 * kernel has no Landlock (nothing to do), or -1 with err set.
 */
int sandbox_prepare(const struct sandbox_rule *rules, size_t nrules, char *err, size_t errlen);

/*
 * Confine the calling thread, and every thread and process it starts later, for
 * good; closes fd.  Refuses when other threads run already (they would stay
 * free).  Needs PR_SET_NO_NEW_PRIVS (priv_drop() sets it) unless CAP_SYS_ADMIN.
 * Returns the ABI in force (> 0), or -1 with err set.
 */
int sandbox_enforce(int fd, char *err, size_t errlen);

#endif
