/*
 * faultshim.c - an LD_PRELOAD shim that makes chosen write and sync calls fail, for the
 * fault-injection tests (tests/e2e/test_faults.py).
 *
 *     cc -shared -fPIC -O1 -o faultshim.so tests/fault/faultshim.c -ldl
 *     FAULTSHIM_CTL=/tmp/x/ctl [FAULTSHIM_LOG=/tmp/x/hits] LD_PRELOAD=./faultshim.so ternd ...
 *
 * What it promises:
 *  - Intercepted: fsync, fdatasync, syncfs, sync_file_range, write, pwrite, pwrite64, writev,
 *    pwritev, pwritev64, pwritev2, pwritev64v2, copy_file_range (the 64-bit and v2 names are
 *    what callers built with _FILE_OFFSET_BITS=64 link to; they match the rule name
 *    "pwritev", and pwrite64 matches "pwrite").  Every call goes to the real function
 *    (dlsym(RTLD_NEXT)) unless a rule matches it.
 *  - Rules live in the file named by FAULTSHIM_CTL, read again whenever it changes (inode,
 *    size or mtime); no file, no faults.  One rule a line:
 *        CALLS ERRNO [PATHSUBSTR [COUNT [SKIP]]]
 *    CALLS is one call name or several joined by commas ("pwritev,write,copy_file_range");
 *    ERRNO a name (EIO, ENOSPC, EDQUOT, EROFS, EFBIG, EBADF, EINTR) or a number;
 *    PATHSUBSTR, when given and not "*", restricts the rule to fds whose
 *    readlink(/proc/self/fd/N) contains it (for copy_file_range: the output fd); a final
 *    '$' anchors it at the end ("spool/seg$": the directory, not the files in it);
 *    COUNT, when given and not -1, fails only that many calls, then the rule is spent until
 *    the file changes; SKIP lets that many matching calls through first ("syncfs EIO mail 1
 *    1": the second syncfs fails, once).  Lines starting with '#' are ignored.
 *  - A matching call returns -1 with errno set and does nothing else.
 *  - Descriptors 0, 1 and 2 never fail (the daemon's log goes there), nor do descriptors that
 *    are not regular files or directories (sockets, pipes, eventfds): the shim only breaks
 *    the disk.
 *  - Each injected failure appends one line "CALL ERRNO PATH\n" to FAULTSHIM_LOG when set,
 *    so a test can prove its fault fired.
 *
 * The shim calls nothing it intercepts (stat, open, read, readlink and the real functions
 * only), so it cannot recurse.  Thread-safe: one mutex around the rule table.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_RULES 16

struct rule {
    char calls[256]; /* ",name,name," for a substring search */
    int err;
    char path[256]; /* "" for any */
    long count;     /* -1: unlimited */
    long skip;      /* matching calls still to let through */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct rule rules[MAX_RULES];
static int nrules;
static struct stat ctl_seen; /* the control file as last read */
static int ctl_loaded;

static const struct {
    const char *name;
    int err;
} errnames[] = {
    {"EIO", EIO},
    {"ENOSPC", ENOSPC},
    {"EDQUOT", EDQUOT},
    {"EROFS", EROFS},
    {"EFBIG", EFBIG},
    {"EBADF", EBADF},
    {"EINTR", EINTR},
    {"EPERM", EPERM},
    {"EACCES", EACCES},
    {"ENOMEM", ENOMEM},
};

static void *
real(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);

    if (p == NULL)
        abort(); /* a shim that cannot reach libc would fake every call: stop loudly */
    return p;
}

static int
parse_errno(const char *s)
{
    size_t i;

    for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
        if (strcmp(s, errnames[i].name) == 0)
            return errnames[i].err;
    return atoi(s) > 0 ? atoi(s) : EIO;
}

/* Read the control file again if it changed.  Called with mu held. */
static void
load_rules(const char *ctl, const struct stat *st)
{
    char buf[4096], *line, *save = NULL;
    ssize_t n = 0;
    int fd = open(ctl, O_RDONLY | O_CLOEXEC);

    nrules = 0;
    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
    }
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    for (line = strtok_r(buf, "\n", &save); line != NULL && nrules < MAX_RULES;
         line = strtok_r(NULL, "\n", &save)) {
        char calls[200], err[32], path[200];
        long count = -1, skip = 0;
        int k;

        path[0] = '\0';
        if (line[0] == '#')
            continue;
        k = sscanf(line, "%199s %31s %199s %ld %ld", calls, err, path, &count, &skip);
        if (k < 2)
            continue;
        struct rule *r = &rules[nrules++];
        snprintf(r->calls, sizeof(r->calls), ",%s,", calls);
        r->err = parse_errno(err);
        snprintf(r->path, sizeof(r->path), "%s", (k >= 3 && strcmp(path, "*") != 0) ? path : "");
        r->count = k >= 4 ? count : -1;
        r->skip = k >= 5 ? skip : 0;
    }
    ctl_seen = *st;
    ctl_loaded = 1;
}

static void
log_hit(const char *call, int err, const char *path)
{
    static ssize_t (*real_write)(int, const void *, size_t);
    const char *logf = getenv("FAULTSHIM_LOG");
    char line[512];
    int fd, len;

    if (logf == NULL)
        return;
    if (real_write == NULL)
        real_write = real("write");
    len = snprintf(line, sizeof(line), "%s %d %s\n", call, err, path);
    if (len < 0 || len >= (int)sizeof(line))
        len = (int)sizeof(line) - 1;
    if ((fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) >= 0) {
        (void)real_write(fd, line, (size_t)len);
        close(fd);
    }
}

/* Does path contain want (or end with it, when want ends in '$')? */
static int
path_matches(const char *path, const char *want)
{
    size_t n = strlen(want), pn = strlen(path);

    if (n > 0 && want[n - 1] == '$')
        return pn >= n - 1 && memcmp(path + pn - (n - 1), want, n - 1) == 0;
    return strstr(path, want) != NULL;
}

/* 0 to let the call through; an errno to fail it with. */
static int
fault(const char *call, int fd)
{
    const char *ctl = getenv("FAULTSHIM_CTL");
    char want[64], link[64], path[4096];
    struct stat st;
    ssize_t n;
    int i, err = 0;

    if (ctl == NULL || fd <= 2 || stat(ctl, &st) < 0)
        return 0;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return 0;
    path[0] = '\0';
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if ((n = readlink(link, path, sizeof(path) - 1)) >= 0)
        path[n] = '\0';
    snprintf(want, sizeof(want), ",%s,", call);

    pthread_mutex_lock(&mu);
    if (stat(ctl, &st) < 0) {
        pthread_mutex_unlock(&mu);
        return 0;
    }
    if (!ctl_loaded || st.st_ino != ctl_seen.st_ino || st.st_size != ctl_seen.st_size ||
        st.st_mtim.tv_sec != ctl_seen.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != ctl_seen.st_mtim.tv_nsec)
        load_rules(ctl, &st);
    for (i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];

        if (strstr(r->calls, want) == NULL || r->count == 0)
            continue;
        if (r->path[0] != '\0' && !path_matches(path, r->path))
            continue;
        if (r->skip > 0) {
            r->skip--;
            break; /* this call goes through */
        }
        if (r->count > 0)
            r->count--;
        err = r->err;
        break;
    }
    pthread_mutex_unlock(&mu);
    if (err)
        log_hit(call, err, path);
    return err;
}

#define FAIL_IF(call, fd)                                                                          \
    do {                                                                                           \
        int e_ = fault(call, fd);                                                                  \
        if (e_) {                                                                                  \
            errno = e_;                                                                            \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

int
fsync(int fd)
{
    static int (*f)(int);

    FAIL_IF("fsync", fd);
    if (f == NULL)
        f = real("fsync");
    return f(fd);
}

int
fdatasync(int fd)
{
    static int (*f)(int);

    FAIL_IF("fdatasync", fd);
    if (f == NULL)
        f = real("fdatasync");
    return f(fd);
}

int
syncfs(int fd)
{
    static int (*f)(int);

    FAIL_IF("syncfs", fd);
    if (f == NULL)
        f = real("syncfs");
    return f(fd);
}

int
sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    static int (*f)(int, off_t, off_t, unsigned int);

    FAIL_IF("sync_file_range", fd);
    if (f == NULL)
        f = real("sync_file_range");
    return f(fd, off, n, flags);
}

ssize_t
write(int fd, const void *p, size_t n)
{
    static ssize_t (*f)(int, const void *, size_t);

    FAIL_IF("write", fd);
    if (f == NULL)
        f = real("write");
    return f(fd, p, n);
}

ssize_t
pwrite(int fd, const void *p, size_t n, off_t off)
{
    static ssize_t (*f)(int, const void *, size_t, off_t);

    FAIL_IF("pwrite", fd);
    if (f == NULL)
        f = real("pwrite");
    return f(fd, p, n, off);
}

ssize_t
pwrite64(int fd, const void *p, size_t n, off_t off)
{
    static ssize_t (*f)(int, const void *, size_t, off_t);

    FAIL_IF("pwrite", fd);
    if (f == NULL)
        f = real("pwrite64");
    return f(fd, p, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
    static ssize_t (*f)(int, const struct iovec *, int);

    FAIL_IF("writev", fd);
    if (f == NULL)
        f = real("writev");
    return f(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    static ssize_t (*f)(int, const struct iovec *, int, off_t);

    FAIL_IF("pwritev", fd);
    if (f == NULL)
        f = real("pwritev");
    return f(fd, iov, cnt, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    static ssize_t (*f)(int, const struct iovec *, int, off_t);

    FAIL_IF("pwritev", fd);
    if (f == NULL)
        f = real("pwritev64");
    return f(fd, iov, cnt, off);
}

ssize_t
pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    static ssize_t (*f)(int, const struct iovec *, int, off_t, int);

    FAIL_IF("pwritev", fd);
    if (f == NULL)
        f = real("pwritev2");
    return f(fd, iov, cnt, off, flags);
}

ssize_t
pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    static ssize_t (*f)(int, const struct iovec *, int, off_t, int);

    FAIL_IF("pwritev", fd);
    if (f == NULL)
        f = real("pwritev64v2");
    return f(fd, iov, cnt, off, flags);
}

ssize_t
copy_file_range(int in, off_t *inoff, int out, off_t *outoff, size_t n, unsigned int flags)
{
    static ssize_t (*f)(int, off_t *, int, off_t *, size_t, unsigned int);

    FAIL_IF("copy_file_range", out);
    if (f == NULL)
        f = real("copy_file_range");
    return f(in, inoff, out, outoff, n, flags);
}
