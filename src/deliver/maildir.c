/*
 * maildir.c - local delivery into Maildirs (see maildir.h), with the syncs
 * of a batch shared.
 *
 * What it promises: a recipient is DLV_OK only once its file is complete
 * and durable in new/ (data, inode, the new/ entry, and every directory we
 * created on the way); a failure leaves nothing in new/ and removes its
 * tmp/ file; names are unique across threads and processes (time, usec,
 * pid, an atomic counter, host).
 *
 * A batch goes through five phases, each over all of its files before the
 * next starts: (1) map each target to its Maildir and check the size limit;
 * (2) write every tmp/ file (headers, then the body streamed from the spool
 * segment with pread in 64 KiB chunks); (3) make them all durable at once;
 * (4) link() each into new/ and unlink the tmp/ name; (5) make the new/
 * entries durable (and only then DLV_OK).  Batches bigger than MAILDIR_CHUNK files are split
 * (bounded open files and memory per worker).
 *
 * The syncs (phases 3 and 5) are chosen by measurement, bench/maildir_bench.c:
 * 2,000 deliveries of 1 KiB into 10 mailboxes, one worker, deliveries/s;
 * this VM (2 vCPUs shared with other jobs, ext4 on virtio, Linux 6.18).
 * Medians of 5 interleaved runs, [min-max]:
 *
 *   phase 3 strategy                     batch 1         batch 10        batch 100
 *   (0) fsync each file in turn        674 [224-978]   734 [410-1028]  904 [747-1065]
 *   (1) fsync from 8 threads           369 [282-987]   787 [443-1324] 1041 [819-2197]
 *   (2) one syncfs()                   661 [426-1151]  917 [616-2152] 1300 [1126-2962]
 *   (3) sync_file_range, fsync each    749 [310-880]   760 [297-1102] 1289 [1050-1598]
 *
 * and, in a quieter moment, syncfs gave 1,325 / 2,268 / 8,481 (and 1,972 /
 * 4,100 / 14,669 for 500 deliveries) where fsync-each gave 1,038 / 599 / 713.
 * The spread is the machine's: while these ran, creating an empty file
 * (open O_CREAT, no sync at all) cost 0.8-1.0 ms on this ext4 (12 us on
 * tmpfs), and strace of a batch-100 run showed openat 1.13 ms a call against
 * 0.29 ms a syncfs: then file creation, not syncing, caps Maildir delivery
 * near 1,000 a second whatever the strategy.  When creation is cheap, syncfs
 * wins by far from batch 10 up and is within the noise at batch 1: (2) is
 * the default.
 *
 * Phase 5 likewise: with 100 mailboxes a batch (batch 100, 1,000 deliveries,
 * 3 runs), one more syncfs() gave 1,214-1,687/s against 896-1,112/s for one
 * fsync per new/ directory (each is its own device cache flush) and 753-948/s
 * for fsync-each.  So with (2) one syncfs covers every new/ of the batch;
 * the other strategies fsync each distinct new/ once.  Other strategies stay
 * buildable (-DMAILDIR_SYNC=0/1/3) so the measurement can be rerun.
 *
 * XXX syncfs() flushes everything dirty on the file system, not only our
 * files: if mailbox_dir shares a busy file system with bulk writers, a
 * batch pays for their writeback too.  Keep mailbox_dir (and the spool) on
 * a file system of their own if that shows.  Since Linux 5.8 syncfs()
 * reports writeback errors seen on the file system since the fd was opened
 * (we open it before writing the batch), so an I/O error on any file of the
 * batch fails the whole batch (TEMP: retried), never a silent DLV_OK; on an
 * older kernel that error would go unreported.
 */
#include "deliver/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/io.h"
#include "util/log.h"

/* Phase 3 strategies (see the header comment); MAILDIR_SYNC picks one at build time. */
#define MAILDIR_SYNC_EACH 0     /* fsync each file in turn (the baseline) */
#define MAILDIR_SYNC_PARALLEL 1 /* fsync the files from several threads */
#define MAILDIR_SYNC_SYNCFS 2   /* one syncfs() on the file system */
#define MAILDIR_SYNC_SFR 3      /* sync_file_range(WRITE) on all, then fsync each */
#ifndef MAILDIR_SYNC
#define MAILDIR_SYNC MAILDIR_SYNC_SYNCFS
#endif

/* files per sync group: bounds the fds a worker holds open (memory alone with syncfs) */
#if MAILDIR_SYNC == MAILDIR_SYNC_SYNCFS
#define MAILDIR_CHUNK 512
#else
#define MAILDIR_CHUNK 128
#endif
#define MAILDIR_IO 65536           /* body streamed in chunks of this size */
#define MAILDIR_TMP_MAX_AGE 129600 /* 36 hours, the Maildir spec's limit for tmp/ */
#define MAILDIR_USAGE_TTL 60       /* seconds a cached mailbox usage is trusted */
#define MAILDIR_SYNC_THREADS 8
#define USAGE_BUCKETS 1024
/* a Maildir's path leaves room for "/tmp/" and a file name within PATH_MAX */
#define MAILDIR_DIR_MAX (PATH_MAX - NAME_MAX - 8)

/* ---- the usage cache ------------------------------------------------------------------- */

/*
 * Bytes in new/ + cur/ of each mailbox that has a size limit, by path.
 * Filled and refreshed by deliveries (worker threads); maildir_full() only
 * reads it.  Entries older than MAILDIR_USAGE_TTL are dropped when their
 * bucket is next visited, so memory follows the mailboxes of the last minute.
 */
struct usage {
    struct usage *next;
    uint64_t bytes;
    time_t stamp; /* CLOCK_MONOTONIC seconds of the last scan */
    char path[];
};

static pthread_mutex_t usage_lock = PTHREAD_MUTEX_INITIALIZER;
static struct usage *usage_tab[USAGE_BUCKETS];
static atomic_uint_fast64_t name_counter;

static time_t
mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static size_t
usage_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % USAGE_BUCKETS);
}

/* The fresh entry for path, or NULL; frees stale entries of its bucket. Lock held. */
static struct usage *
usage_find_locked(const char *path, time_t now)
{
    struct usage **pp = &usage_tab[usage_hash(path)];
    struct usage *u, *found = NULL;

    while ((u = *pp) != NULL) {
        if (now - u->stamp >= MAILDIR_USAGE_TTL) {
            *pp = u->next;
            free(u);
            continue;
        }
        if (strcmp(u->path, path) == 0)
            found = u;
        pp = &u->next;
    }
    return found;
}

/* Sum the sizes in one of new/, cur/: the S= of the name when present, else stat. */
static uint64_t
usage_scan_dir(const char *mbox, const char *sub)
{
    char path[PATH_MAX];
    uint64_t total = 0;
    struct dirent *de;
    struct stat st;
    DIR *d;

    if (snprintf(path, sizeof(path), "%s/%s", mbox, sub) >= (int)sizeof(path))
        return 0;
    if ((d = opendir(path)) == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        const char *s;
        char *end;

        if (de->d_name[0] == '.')
            continue;
        if ((s = strstr(de->d_name, ",S=")) != NULL && s[3] >= '0' && s[3] <= '9') {
            unsigned long long v;

            errno = 0;
            v = strtoull(s + 3, &end, 10);
            if (errno == 0 && (*end == '\0' || *end == ',' || *end == ':')) {
                total += v;
                continue;
            }
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

/*
 * Count size bytes against mbox's limit: 0 if they fit (and are now counted),
 * 1 if the mailbox would go over.  Scans the Maildir (without the lock) when
 * the cache has no fresh entry.
 *
 * XXX two threads that both find no entry both scan, and the last one to
 * store wins, so a reservation made in between is forgotten until the next
 * scan; and a scan does not see files still in tmp/.  The limit can thus be
 * overshot by the messages in flight to one mailbox, never by more.
 */
static int
usage_reserve(const char *mbox, uint64_t size, uint64_t limit)
{
    struct usage *u;
    uint64_t scanned;
    time_t now = mono_now();
    size_t len;
    int full;
    bool counted = false; /* the usage was just counted from the directory */

    pthread_mutex_lock(&usage_lock);
    u = usage_find_locked(mbox, now);
    pthread_mutex_unlock(&usage_lock);
    if (u == NULL) {
        counted = true;
        scanned = usage_scan_dir(mbox, "new") + usage_scan_dir(mbox, "cur");
        len = strlen(mbox);
        pthread_mutex_lock(&usage_lock);
        if ((u = usage_find_locked(mbox, now)) == NULL) {
            u = malloc(sizeof(*u) + len + 1);
            if (u == NULL) {
                pthread_mutex_unlock(&usage_lock);
                /* no cache without memory: judge by the scan alone */
                return scanned + size > limit;
            }
            memcpy(u->path, mbox, len + 1);
            u->next = usage_tab[usage_hash(mbox)];
            usage_tab[usage_hash(mbox)] = u;
        }
        u->bytes = scanned;
        u->stamp = now;
    } else {
        pthread_mutex_lock(&usage_lock);
        /* the entry may have been dropped meanwhile: look again under the lock */
        if ((u = usage_find_locked(mbox, now)) == NULL) {
            pthread_mutex_unlock(&usage_lock);
            return usage_reserve(mbox, size, limit);
        }
    }
    full = u->bytes + size > limit;
    if (full && !counted) {
        /*
         * "Full" from a cached count: the user may have made room since
         * (R_DLV_MAILBOX_FULL tells them to, then to flush).  Count again
         * before deferring; full mailboxes are rare, so the rescan is cheap.
         */
        pthread_mutex_unlock(&usage_lock);
        scanned = usage_scan_dir(mbox, "new") + usage_scan_dir(mbox, "cur");
        pthread_mutex_lock(&usage_lock);
        if ((u = usage_find_locked(mbox, now)) != NULL) {
            u->bytes = scanned;
            u->stamp = now;
            full = u->bytes + size > limit;
        } else {
            full = scanned + size > limit;
        }
    }
    if (!full && u != NULL)
        u->bytes += size;
    pthread_mutex_unlock(&usage_lock);
    return full;
}

/* Give back a reservation whose delivery failed. */
static void
usage_release(const char *mbox, uint64_t size)
{
    struct usage *u;

    pthread_mutex_lock(&usage_lock);
    if ((u = usage_find_locked(mbox, mono_now())) != NULL)
        u->bytes = u->bytes > size ? u->bytes - size : 0;
    pthread_mutex_unlock(&usage_lock);
}

/* ---- mapping an address to its Maildir ------------------------------------------------- */

/*
 * Append one path component made safe: '/', '%', bytes < 0x20 and 0x7f, and
 * a leading '.' become %XX, so the component is never "", "." or ".." and
 * never holds a '/'.  -1 if it would not fit out (or NAME_MAX).
 */
static int
path_component(char *out, size_t outlen, size_t *pos, const char *s, size_t n, bool lower)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t start = *pos, i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (lower && ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        if (ch == '/' || ch == '%' || ch < 0x20 || ch == 0x7f || (i == 0 && ch == '.')) {
            if (*pos + 3 >= outlen)
                return -1;
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[ch >> 4];
            out[(*pos)++] = hex[ch & 0xf];
        } else {
            if (*pos + 1 >= outlen)
                return -1;
            out[(*pos)++] = (char)ch;
        }
    }
    if (*pos - start > NAME_MAX)
        return -1;
    out[*pos] = '\0';
    return 0;
}

int
maildir_path(const struct maildir_conf *c, const char *addr, char *out, size_t outlen)
{
    char local[256]; /* a local part is at most 64 octets (RFC 5321) */
    const char *at, *domain, *p;
    size_t pos, nlocal = 0;
    int n;

    /* the local part ends at the first '@' outside a quoted string */
    if (addr[0] == '"') {
        for (p = addr + 1; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            if (nlocal + 1 >= sizeof(local))
                return -1;
            local[nlocal++] = *p; /* quotes and quoting backslashes dropped */
        }
        if (*p != '"')
            return -1;
        at = p + 1;
        if (*at != '@' && *at != '\0')
            return -1;
    } else {
        at = strchr(addr, '@');
        if (at == NULL)
            at = addr + strlen(addr);
        if ((size_t)(at - addr) >= sizeof(local))
            return -1;
        nlocal = (size_t)(at - addr);
        memcpy(local, addr, nlocal);
    }
    /* "<Postmaster>" without a domain (RFC 5321 §4.5.1) is the postmaster of this host */
    domain = *at == '@' ? at + 1 : (c->hostname && *c->hostname ? c->hostname : "localhost");
    if (*domain == '\0')
        return -1;

    n = snprintf(out, outlen, "%s/", c->mailbox_dir);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    pos = (size_t)n;
    /* an address literal is kept as written ("[IPv6:...]"), only made safe */
    if (path_component(out, outlen, &pos, domain, strlen(domain), domain[0] != '['))
        return -1;
    if (pos + 1 >= outlen)
        return -1;
    out[pos++] = '/';
    if (nlocal == 0) {
        /* ""@domain: give the empty quoted string a name no other local part maps to */
        if (pos + 7 >= outlen)
            return -1;
        memcpy(out + pos, "%22%22", 7);
        return 0;
    }
    return path_component(out, outlen, &pos, local, nlocal, true);
}

/* ---- one batch --------------------------------------------------------------------------- */

struct mdjob {
    struct delivery_rcpt *rcpt;
    const struct delivery_msg *msg;
    const char *target;        /* the mailbox address (Delivered-To) */
    char dir[MAILDIR_DIR_MAX]; /* mailbox_dir/DOMAIN/LOCAL */
    char name[NAME_MAX + 1];
    char *hdr; /* Return-Path and Delivered-To, CRLF-terminated */
    size_t hdrlen;
    uint64_t size;        /* hdrlen + body_len: the file's size, the S= */
    int fd;               /* the tmp file while phases 2-3 run, else -1 */
    bool tmp_made;        /* tmp/NAME was created by us */
    bool reserved;        /* size counted in the usage cache */
    bool in_new;          /* linked into new/ */
    enum reply_id result; /* R_DLV_OK while all goes well */
    char err[160];        /* the argument of result */
};

struct mdbatch {
    const struct maildir_conf *c;
    struct mdjob *jobs;
    size_t njobs;
    char **dirs; /* directories whose entries must be made durable */
    size_t ndirs, capdirs;
    char *io; /* MAILDIR_IO bytes */
};

static void
job_fail(struct mdjob *j, enum reply_id id, const char *what, int err)
{
    if (j->result != R_DLV_OK)
        return;
    j->result = id;
    if (what != NULL) {
        char eb[96];

        /* the GNU strerror_r: workers fail concurrently, strerror() may share a buffer */
        snprintf(j->err, sizeof(j->err), "%s: %s", what, strerror_r(err, eb, sizeof(eb)));
    }
}

/* Remember a directory to fsync (once per batch); -1 on ENOMEM. */
static int
batch_add_dir(struct mdbatch *b, const char *dir)
{
    size_t i;

    for (i = 0; i < b->ndirs; i++)
        if (strcmp(b->dirs[i], dir) == 0)
            return 0;
    if (b->ndirs == b->capdirs) {
        size_t cap = b->capdirs ? b->capdirs * 2 : 16;
        char **d = realloc(b->dirs, cap * sizeof(*d));

        if (d == NULL)
            return -1;
        b->dirs = d;
        b->capdirs = cap;
    }
    if ((b->dirs[b->ndirs] = strdup(dir)) == NULL)
        return -1;
    b->ndirs++;
    return 0;
}

static int
fsync_path(const char *path)
{
    int fd, rc, e;

    if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    rc = fsync(fd);
    e = errno;
    close(fd);
    errno = e;
    return rc;
}

/*
 * mkdir -p path (mode 0700): only missing components are created, and the
 * parent of each is remembered so that its new entry is synced with the
 * batch (a Maildir that vanishes in a crash would take its mail along).
 */
static int
mkdir_p(struct mdbatch *b, const char *path)
{
    char parent[PATH_MAX];
    char *slash;

    if (mkdir(path, 0700) == 0)
        goto created;
    if (errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -1;
    if (snprintf(parent, sizeof(parent), "%s", path) >= (int)sizeof(parent))
        return errno = ENAMETOOLONG, -1;
    if ((slash = strrchr(parent, '/')) == NULL || slash == parent)
        return errno = ENOENT, -1;
    *slash = '\0';
    if (mkdir_p(b, parent) < 0)
        return -1;
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -1;
created:
    if (snprintf(parent, sizeof(parent), "%s", path) >= (int)sizeof(parent))
        return errno = ENAMETOOLONG, -1;
    if ((slash = strrchr(parent, '/')) != NULL && slash != parent) {
        *slash = '\0';
        if (batch_add_dir(b, parent) < 0)
            return errno = ENOMEM, -1;
    }
    return 0;
}

/* Create dir/{tmp,new,cur} and whatever above them is missing. */
static int
maildir_make(struct mdbatch *b, const char *dir)
{
    static const char *const subs[] = {"tmp", "new", "cur"};
    char path[PATH_MAX];
    size_t i;

    for (i = 0; i < 3; i++) {
        if (snprintf(path, sizeof(path), "%s/%s", dir, subs[i]) >= (int)sizeof(path))
            return errno = ENAMETOOLONG, -1;
        if (mkdir_p(b, path) < 0)
            return -1;
    }
    return 0;
}

/* "SECONDS.M<usec>P<pid>Q<counter>.<host>,S=<size>", host with '/' and ':' escaped. */
static void
job_name(struct mdjob *j, const char *host)
{
    char h[NAME_MAX / 2];
    struct timespec ts;
    size_t n = 0;
    uint64_t q = atomic_fetch_add(&name_counter, 1) + 1;

    if (host == NULL || *host == '\0')
        host = "localhost";
    for (; *host && n + 5 < sizeof(h); host++) {
        if (*host == '/' || *host == ':') {
            memcpy(h + n, *host == '/' ? "\\057" : "\\072", 4);
            n += 4;
        } else {
            h[n++] = *host;
        }
    }
    h[n] = '\0';
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(j->name, sizeof(j->name), "%lld.M%ldP%ldQ%" PRIu64 ".%s,S=%" PRIu64,
        (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(), q, h, j->size);
}

/* Phase 2 for one job: create tmp/NAME, write headers and body. */
static void
job_write(struct mdbatch *b, struct mdjob *j)
{
    const struct delivery_msg *m = j->msg;
    char path[PATH_MAX];
    uint64_t off = m->body_off, left = m->body_len;
    size_t fill;
    int tries;

    for (tries = 0;; tries++) {
        job_name(j, b->c->hostname);
        if (snprintf(path, sizeof(path), "%s/tmp/%s", j->dir, j->name) >= (int)sizeof(path)) {
            job_fail(j, R_DLV_MAILDIR_ERROR, "mailbox path", ENAMETOOLONG);
            return;
        }
        j->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (j->fd >= 0) {
            j->tmp_made = true;
            break;
        }
        if (errno == ENOENT && tries == 0) {
            if (maildir_make(b, j->dir) < 0) {
                job_fail(j, R_DLV_MAILDIR_ERROR, "mkdir", errno);
                return;
            }
            continue;
        }
        if (errno == EEXIST && tries < 3) /* another process on our pid after a reboot? */
            continue;
        job_fail(j, R_DLV_MAILDIR_ERROR, "open", errno);
        return;
    }

    /* the headers go out with the first chunk of the body: one write for a small message */
    memcpy(b->io, j->hdr, j->hdrlen);
    fill = j->hdrlen;
    for (;;) {
        size_t want = MAILDIR_IO - fill;
        ssize_t r;

        if (want > left)
            want = (size_t)left;
        if (want > 0) {
            r = pread(m->body_fd, b->io + fill, want, (off_t)off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                job_fail(j, R_DLV_MAILDIR_ERROR, "reading the spool", errno);
                break;
            }
            if (r == 0) {
                job_fail(j, R_DLV_MAILDIR_ERROR, "reading the spool", EIO);
                snprintf(j->err, sizeof(j->err), "reading the spool: message truncated");
                break;
            }
            fill += (size_t)r;
            off += (uint64_t)r;
            left -= (uint64_t)r;
        }
        if (fill > 0 && io_write_all(j->fd, b->io, fill) < 0) {
            job_fail(j, R_DLV_MAILDIR_ERROR, "write", errno);
            break;
        }
        fill = 0;
        if (left == 0)
            break;
    }
    if (j->result == R_DLV_OK && MAILDIR_SYNC == MAILDIR_SYNC_SYNCFS) {
        /* syncfs() needs no fd of ours; close now (a close error is a write error on NFS) */
        int rc = close(j->fd);

        j->fd = -1;
        if (rc < 0)
            job_fail(j, R_DLV_MAILDIR_ERROR, "close", errno);
    }
}

/* ---- phase 3: making the tmp files durable ------------------------------------------------ */

struct syncwork {
    struct mdbatch *b;
    atomic_size_t next;
};

static void
job_fsync(struct mdjob *j)
{
    if (j->result == R_DLV_OK && j->fd >= 0 && fsync(j->fd) < 0)
        job_fail(j, R_DLV_MAILDIR_ERROR, "fsync", errno);
}

static void *
sync_worker(void *arg)
{
    struct syncwork *w = arg;
    size_t i;

    while ((i = atomic_fetch_add(&w->next, 1)) < w->b->njobs)
        job_fsync(&w->b->jobs[i]);
    return NULL;
}

static void
batch_fail_all(struct mdbatch *b, const char *what, int err)
{
    size_t i;

    for (i = 0; i < b->njobs; i++)
        job_fail(&b->jobs[i], R_DLV_MAILDIR_ERROR, what, err);
}

static void
batch_sync_files(struct mdbatch *b, int fsfd)
{
    size_t i;

    switch (MAILDIR_SYNC) {
    case MAILDIR_SYNC_SYNCFS:
        /* one journal commit for every file and directory of the batch */
        if (syncfs(fsfd) < 0)
            batch_fail_all(b, "syncfs", errno);
        return;
    case MAILDIR_SYNC_PARALLEL: {
        pthread_t t[MAILDIR_SYNC_THREADS];
        struct syncwork w = {.b = b};
        size_t nt = 0;

        atomic_init(&w.next, 0);
        while (nt < MAILDIR_SYNC_THREADS && nt < b->njobs) {
            if (pthread_create(&t[nt], NULL, sync_worker, &w) != 0)
                break;
            nt++;
        }
        sync_worker(&w); /* the caller helps, and does it all if no thread started */
        for (i = 0; i < nt; i++)
            pthread_join(t[i], NULL);
        break;
    }
    case MAILDIR_SYNC_SFR:
        /* start writeback (block allocation) of every file, so one journal commit takes all */
        for (i = 0; i < b->njobs; i++)
            if (b->jobs[i].result == R_DLV_OK && b->jobs[i].fd >= 0)
                sync_file_range(b->jobs[i].fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        /* fall through */
    default:
        for (i = 0; i < b->njobs; i++)
            job_fsync(&b->jobs[i]);
        break;
    }
    /* the directories we created (syncfs covered them above) */
    for (i = 0; i < b->ndirs; i++) {
        if (fsync_path(b->dirs[i]) < 0) {
            batch_fail_all(b, "fsync of a new directory", errno);
            return;
        }
    }
}

/* ---- phases 4 and 5 ------------------------------------------------------------------------ */

/*
 * Phase 4 for one job: tmp/NAME -> new/NAME.  link() never replaces an
 * existing name; where the file system has no hard links, rename (with
 * RENAME_NOREPLACE when the kernel has it).
 */
static void
job_link(struct mdbatch *b, struct mdjob *j)
{
    char tmp[PATH_MAX], nw[PATH_MAX];
    int rc, tries;

    snprintf(tmp, sizeof(tmp), "%s/tmp/%s", j->dir, j->name);
    if (snprintf(nw, sizeof(nw), "%s/new/%s", j->dir, j->name) >= (int)sizeof(nw)) {
        job_fail(j, R_DLV_MAILDIR_ERROR, "link", ENAMETOOLONG);
        return;
    }
    for (tries = 0;; tries++) {
        if ((rc = link(tmp, nw)) == 0) {
            unlink(tmp); /* best effort: a leftover is only a tmp/ orphan */
            break;
        }
        if (errno == ENOENT && tries == 0) {
            /* new/ removed under us: recreate it (and sync its parent with this batch) */
            if (maildir_make(b, j->dir) < 0 || fsync_path(j->dir) < 0) {
                job_fail(j, R_DLV_MAILDIR_ERROR, "mkdir", errno);
                return;
            }
            continue;
        }
        if (errno == EPERM || errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
            errno == EMLINK) {
            rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, nw, RENAME_NOREPLACE);
            if (rc < 0 && (errno == EINVAL || errno == ENOSYS))
                rc = rename(tmp, nw);
            if (rc == 0)
                break;
        }
        job_fail(j, R_DLV_MAILDIR_ERROR, "link", errno);
        return;
    }
    j->in_new = true;
}

/*
 * Phase 5: make the new/ entries durable.  With syncfs, one more syncfs()
 * covers every new/ of the batch (measured: with 100 mailboxes a batch, 100
 * directory fsyncs cost 30-50 % of the rate, each one a cache flush); else
 * fsync each distinct new/ once.  A failure takes back the files concerned.
 */
static void
batch_sync_new(struct mdbatch *b, int fsfd)
{
    char path[PATH_MAX];
    size_t i, k;

    if (MAILDIR_SYNC == MAILDIR_SYNC_SYNCFS) {
        int err;

        for (i = 0; i < b->njobs && !b->jobs[i].in_new; i++)
            ;
        if (i == b->njobs)
            return; /* nothing linked: nothing to sync */
        err = syncfs(fsfd) < 0 ? errno : 0;

        for (i = 0; err != 0 && i < b->njobs; i++)
            if (b->jobs[i].in_new)
                job_fail(&b->jobs[i], R_DLV_MAILDIR_ERROR, "syncfs of new/", err);
        return;
    }
    for (i = 0; i < b->njobs; i++) {
        struct mdjob *j = &b->jobs[i];
        int err = 0;

        if (!j->in_new || j->result != R_DLV_OK)
            continue;
        /* the first job of each directory syncs it, for itself and those after it */
        for (k = 0; k < i; k++)
            if (b->jobs[k].in_new && strcmp(b->jobs[k].dir, j->dir) == 0)
                break;
        if (k < i)
            continue;
        snprintf(path, sizeof(path), "%s/new", j->dir);
        if (fsync_path(path) < 0)
            err = errno;
        if (err == 0)
            continue;
        for (k = i; k < b->njobs; k++) {
            struct mdjob *o = &b->jobs[k];

            if (o->in_new && o->result == R_DLV_OK && strcmp(o->dir, j->dir) == 0)
                job_fail(o, R_DLV_MAILDIR_ERROR, "fsync of new/", err);
        }
    }
}

/* Undo what a failed job left: its tmp/ file, its new/ entry, its reservation. */
static void
job_finish(struct mdjob *j)
{
    char path[PATH_MAX];

    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    if (j->result == R_DLV_OK)
        goto out;
    if (j->tmp_made) {
        snprintf(path, sizeof(path), "%s/tmp/%s", j->dir, j->name);
        unlink(path);
    }
    if (j->in_new) {
        /* not known durable: take it back so the retry does not make a duplicate */
        snprintf(path, sizeof(path), "%s/new/%s", j->dir, j->name);
        unlink(path);
    }
out:
    if (j->reserved && j->result != R_DLV_OK)
        usage_release(j->dir, j->size);
}

static void
batch_run(struct mdbatch *b)
{
    size_t i;
    int fsfd;

    /*
     * Opened before the writes: syncfs() reports the writeback errors seen
     * since this fd was opened (Linux >= 5.8).
     */
    fsfd = open(b->c->mailbox_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fsfd < 0 && errno == ENOENT && mkdir_p(b, b->c->mailbox_dir) == 0)
        fsfd = open(b->c->mailbox_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fsfd < 0)
        batch_fail_all(b, "mailbox_dir", errno);

    for (i = 0; i < b->njobs; i++)
        if (b->jobs[i].result == R_DLV_OK)
            job_write(b, &b->jobs[i]);
    for (i = 0; i < b->njobs && b->jobs[i].result != R_DLV_OK; i++)
        ;
    if (fsfd >= 0 && i < b->njobs) /* a batch refused whole (all full) costs no sync */
        batch_sync_files(b, fsfd);
    for (i = 0; i < b->njobs; i++) {
        struct mdjob *j = &b->jobs[i];

        if (j->fd >= 0) {
            if (close(j->fd) < 0)
                job_fail(j, R_DLV_MAILDIR_ERROR, "close", errno);
            j->fd = -1;
        }
        if (j->result == R_DLV_OK)
            job_link(b, j);
    }
    if (fsfd >= 0)
        batch_sync_new(b, fsfd);
    for (i = 0; i < b->njobs; i++)
        job_finish(&b->jobs[i]);
    if (fsfd >= 0)
        close(fsfd);
    for (i = 0; i < b->ndirs; i++)
        free(b->dirs[i]);
    b->ndirs = 0;
}

/* Append s to h at *pos; bytes that could break a header line become '?'. */
static void
header_value(char *h, size_t *pos, const char *s)
{
    for (; *s; s++)
        h[(*pos)++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
}

/* "Return-Path: <sender>" and "Delivered-To: target", each CRLF-terminated. */
static char *
job_header(const char *sender, const char *target, size_t *len)
{
    char *h = malloc(strlen(sender) + strlen(target) + 40);
    size_t pos = 0;

    if (h == NULL)
        return NULL;
    memcpy(h, "Return-Path: <", 14);
    pos = 14;
    header_value(h, &pos, sender);
    memcpy(h + pos, ">\r\nDelivered-To: ", 17);
    pos += 17;
    header_value(h, &pos, target);
    memcpy(h + pos, "\r\n", 3);
    *len = pos + 2;
    return h;
}

/* Phase 1 for one job: where it goes, its headers, and the size limit. */
static void
job_prepare(const struct maildir_conf *c, struct mdjob *j)
{
    char lim[24];

    j->fd = -1;
    j->result = R_DLV_OK;
    if (maildir_path(c, j->target, j->dir, sizeof(j->dir)) < 0) {
        j->result = R_DLV_MAILDIR_ERROR;
        snprintf(j->err, sizeof(j->err), "<%.100s> does not map to a mailbox path", j->target);
        return;
    }
    if ((j->hdr = job_header(j->msg->sender, j->target, &j->hdrlen)) == NULL) {
        job_fail(j, R_DLV_MAILDIR_ERROR, "header", ENOMEM);
        return;
    }
    j->size = j->hdrlen + j->msg->body_len;
    if (c->size_limit == 0)
        return;
    if (j->size > c->size_limit) {
        snprintf(lim, sizeof(lim), "%" PRIu64, c->size_limit);
        j->result = R_DLV_TOO_BIG;
        snprintf(j->err, sizeof(j->err), "%s", lim);
        return;
    }
    if (usage_reserve(j->dir, j->size, c->size_limit) != 0) {
        j->result = R_DLV_MAILBOX_FULL;
        return;
    }
    j->reserved = true;
}

static int
severity(enum reply_id id)
{
    /*
     * A transient failure outranks a permanent one (as in lmtp.c): the
     * deferred target still gets its copy on a retry, and the permanent
     * outcome is reported once nothing is left to retry.
     */
    switch (id) {
    case R_DLV_OK:
        return 0;
    case R_DLV_TOO_BIG:
        return 1;
    default:
        return 2;
    }
}

/*
 * XXX a recipient with several targets reports one outcome: if one target
 * failed and another got its copy, the retry delivers that copy again.
 * delivery_rcpt has no per-target state to avoid it.
 */
static void
rcpt_report(struct delivery_rcpt *r, const struct mdjob *jobs, size_t n)
{
    const struct mdjob *worst = NULL;
    size_t i;

    for (i = 0; i < n; i++)
        if (worst == NULL || severity(jobs[i].result) > severity(worst->result))
            worst = &jobs[i];
    if (worst == NULL || worst->result == R_DLV_OK)
        delivery_set(r, R_DLV_OK);
    else if (worst->result == R_DLV_MAILBOX_FULL)
        delivery_set(r, R_DLV_MAILBOX_FULL);
    else
        delivery_set(r, worst->result, worst->err);
}

void
maildir_deliver(const struct maildir_conf *c, struct delivery_msg **msgs, size_t n)
{
    struct mdbatch b = {.c = c};
    size_t mi, ri, t, i, total = 0, done;
    struct mdjob *all;

    for (mi = 0; mi < n; mi++)
        for (ri = 0; ri < msgs[mi]->nrcpts; ri++)
            total += msgs[mi]->rcpts[ri].ntargets > 0 ? msgs[mi]->rcpts[ri].ntargets : 1;
    if (total == 0)
        return;
    all = calloc(total, sizeof(*all));
    b.io = malloc(MAILDIR_IO);
    if (all == NULL || b.io == NULL) {
        free(all);
        free(b.io);
        for (mi = 0; mi < n; mi++)
            for (ri = 0; ri < msgs[mi]->nrcpts; ri++)
                delivery_set(&msgs[mi]->rcpts[ri], R_DLV_MAILDIR_ERROR, strerror(ENOMEM));
        return;
    }
    i = 0;
    for (mi = 0; mi < n; mi++) {
        for (ri = 0; ri < msgs[mi]->nrcpts; ri++) {
            struct delivery_rcpt *r = &msgs[mi]->rcpts[ri];
            unsigned nt = r->ntargets > 0 && r->targets != NULL ? r->ntargets : 1;

            for (t = 0; t < nt; t++, i++) {
                all[i].rcpt = r;
                all[i].msg = msgs[mi];
                all[i].target = r->ntargets > 0 && r->targets != NULL ? r->targets[t] : r->addr;
                job_prepare(c, &all[i]);
            }
        }
    }
    total = i;
    /* the jobs of one recipient are adjacent; a chunk may split them, which costs only a sync */
    for (done = 0; done < total; done += b.njobs) {
        b.jobs = all + done;
        b.njobs = total - done < MAILDIR_CHUNK ? total - done : MAILDIR_CHUNK;
        batch_run(&b);
    }
    for (i = 0; i < total; i = t) {
        for (t = i + 1; t < total && all[t].rcpt == all[i].rcpt; t++)
            ;
        rcpt_report(all[i].rcpt, all + i, t - i);
        if (all[i].rcpt->status != DLV_OK || log_enabled(LOG_LEVEL_DEBUG))
            log_msg(all[i].rcpt->status == DLV_OK ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN,
                all[i].msg->id, "maildir to=<%s> status=%s", all[i].rcpt->addr, all[i].rcpt->reply);
    }
    for (i = 0; i < total; i++)
        free(all[i].hdr);
    free(all);
    free(b.dirs);
    free(b.io);
}

bool
maildir_full(const struct maildir_conf *c, const char *addr)
{
    char path[PATH_MAX];
    struct usage *u;
    bool full = false;

    if (c->size_limit == 0 || maildir_path(c, addr, path, sizeof(path)) < 0)
        return false;
    /*
     * XXX called on the event loop: no scan here.  An unknown or stale
     * mailbox reads as not full; the delivery scans it and answers 452 from
     * there.  Stale entries must not count either: the mailbox may have been
     * emptied since, and without a delivery nothing would ever rescan it.
     */
    pthread_mutex_lock(&usage_lock);
    if ((u = usage_find_locked(path, mono_now())) != NULL)
        full = u->bytes >= c->size_limit;
    pthread_mutex_unlock(&usage_lock);
    return full;
}

/* ---- tmp/ cleanup ---------------------------------------------------------------------------- */

/*
 * A tmp/ file that tern itself left behind when it was killed: named
 * "SECONDS.M<usec>P<pid>Q<counter>.<host>,S=<size>" (the Q part is tern's
 * own), with a pid that is not ours and no longer runs.  Such a file can
 * never be finished (its delivery attempt is retried from the queue), so it
 * need not wait the 36 hours of the Maildir convention.
 */
static bool
cleanup_is_orphan(const char *name)
{
    const char *p = strstr(name, ".M"), *q;
    long pid;

    if (p == NULL || (p = strchr(p, 'P')) == NULL || (q = strchr(p, 'Q')) == NULL)
        return false;
    pid = strtol(p + 1, NULL, 10);
    if (pid <= 0 || pid == (long)getpid() || strstr(q, ",S=") == NULL)
        return false;
    return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

static void
cleanup_tmp(int tmpfd, time_t cutoff)
{
    struct dirent *de;
    struct stat st;
    DIR *d;

    if ((d = fdopendir(tmpfd)) == NULL) {
        close(tmpfd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(tmpfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
            (st.st_mtime < cutoff || cleanup_is_orphan(de->d_name)) &&
            unlinkat(tmpfd, de->d_name, 0) < 0)
            log_warn("-", "maildir cleanup name=%s error=\"%s\"", de->d_name, strerror(errno));
    }
    closedir(d);
}

/* The subdirectories of dirfd, opened without following symlinks. */
static DIR *
open_subdirs(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d;

    if (fd < 0)
        return NULL;
    if ((d = fdopendir(fd)) == NULL)
        close(fd);
    return d;
}

void
maildir_cleanup(const struct maildir_conf *c)
{
    time_t cutoff = time(NULL) - MAILDIR_TMP_MAX_AGE;
    struct dirent *dd, *ld;
    DIR *top, *dom;
    int fd;

    if ((top = open_subdirs(AT_FDCWD, c->mailbox_dir)) == NULL)
        return;
    while ((dd = readdir(top)) != NULL) {
        if (dd->d_name[0] == '.' || (dd->d_type != DT_DIR && dd->d_type != DT_UNKNOWN))
            continue;
        if ((dom = open_subdirs(dirfd(top), dd->d_name)) == NULL)
            continue;
        while ((ld = readdir(dom)) != NULL) {
            char sub[NAME_MAX + 8];

            if (ld->d_name[0] == '.' || (ld->d_type != DT_DIR && ld->d_type != DT_UNKNOWN))
                continue;
            snprintf(sub, sizeof(sub), "%s/tmp", ld->d_name);
            fd = openat(dirfd(dom), sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0)
                cleanup_tmp(fd, cutoff);
        }
        closedir(dom);
    }
    closedir(top);
}
