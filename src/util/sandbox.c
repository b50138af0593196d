/*
 * sandbox.c - a Landlock file system sandbox (see sandbox.h).
 *
 * The installed <linux/landlock.h> may be older than the kernel, so the access
 * bits and the ruleset attribute of later ABIs are spelled here; the attribute
 * is passed with the size the running kernel's ABI knows.
 */
#include "util/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ABI 1 .. 2 (in every header that has Landlock) */
#define SB_EXECUTE (1ULL << 0)
#define SB_WRITE_FILE (1ULL << 1)
#define SB_READ_FILE (1ULL << 2)
#define SB_READ_DIR (1ULL << 3)
#define SB_REMOVE_DIR (1ULL << 4)
#define SB_REMOVE_FILE (1ULL << 5)
#define SB_MAKE_CHAR (1ULL << 6)
#define SB_MAKE_DIR (1ULL << 7)
#define SB_MAKE_REG (1ULL << 8)
#define SB_MAKE_SOCK (1ULL << 9)
#define SB_MAKE_FIFO (1ULL << 10)
#define SB_MAKE_BLOCK (1ULL << 11)
#define SB_MAKE_SYM (1ULL << 12)
#define SB_REFER (1ULL << 13)     /* ABI 2: rename/link across directories */
#define SB_TRUNCATE (1ULL << 14)  /* ABI 3 */
#define SB_IOCTL_DEV (1ULL << 15) /* ABI 5 */
/* ABI 6: scopes */
#define SB_SCOPE_ABSTRACT_UNIX (1ULL << 0)
#define SB_SCOPE_SIGNAL (1ULL << 1)

/* The rights that can be granted on a file (the others only on a directory). */
#define SB_FILE_RIGHTS (SB_EXECUTE | SB_WRITE_FILE | SB_READ_FILE | SB_TRUNCATE | SB_IOCTL_DEV)

struct sb_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};

struct sb_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

int
sandbox_abi(void)
{
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

    return v < 0 ? 0 : (int)v;
}

/* Threads of this process: the sandbox covers the caller and what it starts later only. */
static int
sb_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static uint64_t
sb_handled(int abi)
{
    uint64_t h = (SB_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */

    if (abi >= 2)
        h |= SB_REFER;
    if (abi >= 3)
        h |= SB_TRUNCATE;
    if (abi >= 5)
        h |= SB_IOCTL_DEV;
    return h;
}

static uint64_t
sb_rights(enum sandbox_access a)
{
    switch (a) {
    case SANDBOX_READ:
        return SB_READ_FILE | SB_READ_DIR;
    case SANDBOX_READ_WRITE:
        return SB_READ_FILE | SB_READ_DIR | SB_WRITE_FILE | SB_TRUNCATE | SB_REMOVE_DIR |
               SB_REMOVE_FILE | SB_MAKE_DIR | SB_MAKE_REG | SB_REFER;
    case SANDBOX_REMOVE:
        return SB_REMOVE_FILE | SB_MAKE_SOCK;
    case SANDBOX_DEVICE:
        return SB_READ_FILE | SB_WRITE_FILE;
    }
    return 0;
}

int
sandbox_prepare(const struct sandbox_rule *rules, size_t nrules, char *err, size_t errlen)
{
    struct sb_ruleset_attr attr;
    size_t attrlen, i;
    int abi = sandbox_abi(), rfd;

    if (abi <= 0)
        return -2;
    memset(&attr, 0, sizeof(attr));
    attr.handled_access_fs = sb_handled(abi);
    attrlen = sizeof(attr.handled_access_fs);
    if (abi >= 4)
        attrlen = offsetof(struct sb_ruleset_attr, scoped); /* no network rules: see below */
    if (abi >= 6) {
        /* Nothing of ours signals other processes or uses abstract unix sockets. */
        attr.scoped = SB_SCOPE_ABSTRACT_UNIX | SB_SCOPE_SIGNAL;
        attrlen = sizeof(attr);
    }
    /* handled_access_net stays 0: relaying connects to any host and port, and the listeners
       are bound before the sandbox; there is nothing useful to narrow. */
    rfd = (int)syscall(SYS_landlock_create_ruleset, &attr, attrlen, 0);
    if (rfd < 0) {
        snprintf(err, errlen, "landlock_create_ruleset: %s", strerror(errno));
        return -1;
    }
    for (i = 0; i < nrules; i++) {
        struct sb_path_beneath pb;
        struct stat st;
        int fd = open(rules[i].path, O_PATH | O_CLOEXEC);

        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            snprintf(err, errlen, "%s: %s", rules[i].path, strerror(errno));
            close(rfd);
            return -1;
        }
        pb.allowed_access = sb_rights(rules[i].access) & attr.handled_access_fs;
        if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
            pb.allowed_access &= SB_FILE_RIGHTS;
        pb.parent_fd = fd;
        if (pb.allowed_access != 0 &&
            syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0) {
            snprintf(err, errlen, "landlock_add_rule %s: %s", rules[i].path, strerror(errno));
            close(fd);
            close(rfd);
            return -1;
        }
        close(fd);
    }
    return rfd;
}

int
sandbox_enforce(int fd, char *err, size_t errlen)
{
    int abi = sandbox_abi();

    if (sb_threads() != 1) {
        snprintf(err, errlen, "other threads are running already; they would not be confined");
        close(fd);
        return -1;
    }
    if (syscall(SYS_landlock_restrict_self, fd, 0) < 0) {
        snprintf(err, errlen, "landlock_restrict_self: %s", strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return abi;
}
