/*
 * maildrop.c - the local submission payload and the maildrop directory (see
 * maildrop.h).
 *
 * The parser is pure (bytes in, an envelope or a reason out) and shared by
 * the control socket's SUBMIT and the directory scan, so both accept exactly
 * the same thing.  The directory side keeps the names of files whose commit
 * is in flight, so a scan that runs meanwhile does not submit them twice; a
 * file is unlinked only from the commit's completion, after the spool said
 * the message is durable.
 */
#include "queue/maildrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/io.h"
#include "util/log.h"

/* ---- the payload -------------------------------------------------------------------------- */

static bool
maildrop_addr_ok(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
            return false;
    }
    return true;
}

void
maildrop_env_free(struct maildrop_env *env)
{
    size_t i;

    free(env->sender);
    for (i = 0; i < env->nrcpts; i++)
        free(env->rcpts[i]);
    free(env->rcpts);
    memset(env, 0, sizeof(*env));
}

int
maildrop_parse(const char *p, size_t len, struct maildrop_env *env, char *err, size_t errlen)
{
    size_t off = 0, cap = 0;
    bool have_sender = false;

    memset(env, 0, sizeof(*env));
    for (;;) {
        const char *nl = memchr(p + off, '\n', len - off);
        size_t n;

        if (nl == NULL) {
            snprintf(err, errlen, "the envelope does not end with a blank line");
            goto bad;
        }
        n = (size_t)(nl - (p + off));
        if (n + 1 > MAILDROP_LINE_MAX) {
            snprintf(err, errlen, "envelope line too long");
            goto bad;
        }
        if (n == 0) {
            off++;
            break;
        }
        if (n < 2 || p[off + 1] != ' ' || (p[off] != 'S' && p[off] != 'R')) {
            snprintf(err, errlen, "malformed envelope line (want \"S sender\" or \"R rcpt\")");
            goto bad;
        }
        if (!maildrop_addr_ok(p + off + 2, n - 2)) {
            snprintf(err, errlen, "control character or angle bracket in an address");
            goto bad;
        }
        if (p[off] == 'S') {
            if (have_sender || env->nrcpts > 0) {
                snprintf(err, errlen, "the sender must come once, first");
                goto bad;
            }
            if ((env->sender = strndup(p + off + 2, n - 2)) == NULL)
                goto oom;
            have_sender = true;
        } else {
            if (!have_sender) {
                snprintf(err, errlen, "the sender must come once, first");
                goto bad;
            }
            if (n == 2) {
                snprintf(err, errlen, "empty recipient");
                goto bad;
            }
            if (env->nrcpts == MAILDROP_MAX_RCPTS) {
                snprintf(err, errlen, "more than %d recipients", MAILDROP_MAX_RCPTS);
                goto bad;
            }
            if (env->nrcpts == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                char **r = realloc(env->rcpts, ncap * sizeof(*r));

                if (r == NULL)
                    goto oom;
                env->rcpts = r;
                cap = ncap;
            }
            if ((env->rcpts[env->nrcpts] = strndup(p + off + 2, n - 2)) == NULL)
                goto oom;
            env->nrcpts++;
        }
        off += n + 1;
    }
    if (!have_sender || env->nrcpts == 0) {
        snprintf(err, errlen, "%s", have_sender ? "no recipient" : "no sender");
        goto bad;
    }
    env->msg = p + off;
    env->msglen = len - off;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
bad:
    maildrop_env_free(env);
    return -1;
}

int
maildrop_format(struct buf *b, const char *sender, const char *const *rcpts, size_t nrcpts,
    const char *msg, size_t len)
{
    size_t i;

    if (!maildrop_addr_ok(sender, strlen(sender)) || strlen(sender) + 3 > MAILDROP_LINE_MAX ||
        buf_printf(b, "S %s\n", sender) < 0)
        return -1;
    for (i = 0; i < nrcpts; i++) {
        size_t n = strlen(rcpts[i]);

        if (n == 0 || n + 3 > MAILDROP_LINE_MAX || !maildrop_addr_ok(rcpts[i], n) ||
            buf_printf(b, "R %s\n", rcpts[i]) < 0)
            return -1;
    }
    if (buf_puts(b, "\n") < 0)
        return -1;
    return buf_append(b, msg, len);
}

int
maildrop_crlf(struct buf *b, const char *p, size_t n)
{
    size_t i = 0, start = 0;

    while (i < n) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            i += 2;
            continue;
        }
        if (p[i] == '\n' || p[i] == '\r') {
            if (buf_append(b, p + start, i - start) < 0 || buf_append(b, "\r\n", 2) < 0)
                return -1;
            start = ++i;
            continue;
        }
        i++;
    }
    return buf_append(b, p + start, n - start);
}

/* ---- sendmail's side: deposit ------------------------------------------------------------- */

int
maildrop_deposit(const char *dir, const char *payload, size_t len, char *path, size_t pathlen)
{
    char tmp[4096];
    struct timespec ts;
    int fd, dfd, e;
    static unsigned counter;

    clock_gettime(CLOCK_REALTIME, &ts);
    counter++;
    if (snprintf(tmp, sizeof(tmp), "%s/.tmp.%ld.%09ld.%ld.%u", dir, (long)ts.tv_sec, ts.tv_nsec,
            (long)getpid(), counter) >= (int)sizeof(tmp) ||
        snprintf(path, pathlen, "%s/%ld.%09ld.%ld.%u", dir, (long)ts.tv_sec, ts.tv_nsec,
            (long)getpid(), counter) >= (int)pathlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (io_write_all(fd, payload, len) < 0 || fsync(fd) < 0) {
        e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    /* the new name must survive a crash too, or the message could vanish with it */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        e = errno;
        if (dfd >= 0)
            close(dfd);
        unlink(path);
        errno = e;
        return -1;
    }
    close(dfd);
    return 0;
}

/* ---- ternd's side: scan ------------------------------------------------------------------- */

struct maildrop_ticket {
    struct maildrop *md; /* NULL once maildrop_close() ran */
    struct maildrop_ticket *prev, *next;
    char name[256];
    char path[4096 + 256 + 2];
};

struct maildrop {
    char *dir;
    size_t max_size;
    maildrop_submit_fn *submit;
    void *arg;
    struct maildrop_ticket *inflight;
};

struct maildrop *
maildrop_open(const char *dir, size_t max_size, maildrop_submit_fn *submit, void *arg, char *err,
    size_t errlen)
{
    struct maildrop *md;

    if (strlen(dir) > 4096) {
        snprintf(err, errlen, "%s: path too long", dir);
        return NULL;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    md = calloc(1, sizeof(*md));
    if (md == NULL || (md->dir = strdup(dir)) == NULL) {
        free(md);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    md->max_size = max_size;
    md->submit = submit;
    md->arg = arg;
    return md;
}

static void
maildrop_unlink_ticket(struct maildrop_ticket *t)
{
    if (t->md == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        t->md->inflight = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->md = NULL;
}

/* Refusals that another try would meet again: the file is set aside, not retried. */
static bool
maildrop_permanent(int err)
{
    return err == EINVAL || err == EFBIG || err == EPERM;
}

static void maildrop_set_aside(struct maildrop *md, const char *name, const char *why);

static void
maildrop_done(void *arg, int err, const char *id)
{
    struct maildrop_ticket *t = arg;

    if (err == 0) {
        log_info(id, "event=maildrop-queued file=%s", t->name);
        if (unlink(t->path) < 0 && errno != ENOENT)
            /* XXX: the file will be submitted again at the next start: a duplicate */
            log_error(id, "event=maildrop-unlink file=%s error=\"%s\"", t->path, strerror(errno));
    } else if (maildrop_permanent(err)) {
        if (t->md != NULL)
            maildrop_set_aside(t->md, t->name, id != NULL ? id : strerror(err));
    } else {
        log_warn(NULL, "event=maildrop-commit-failed file=%s error=\"%s\"; retried later", t->name,
            id != NULL ? id : strerror(err));
    }
    maildrop_unlink_ticket(t);
    free(t);
}

/* Set a file aside for the operator: NAME.bad. */
static void
maildrop_set_aside(struct maildrop *md, const char *name, const char *why)
{
    char from[4096 + 256 + 2], to[4096 + 256 + 6];

    snprintf(from, sizeof(from), "%s/%s", md->dir, name);
    snprintf(to, sizeof(to), "%s/%s.bad", md->dir, name);
    log_warn(NULL, "event=maildrop-bad file=%s reason=\"%s\"; renamed to %s.bad", name, why, name);
    if (rename(from, to) < 0)
        log_error(NULL, "event=maildrop-rename file=%s error=\"%s\"", from, strerror(errno));
}

static bool
maildrop_inflight(const struct maildrop *md, const char *name)
{
    const struct maildrop_ticket *t;

    for (t = md->inflight; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return true;
    return false;
}

/* Read a whole (small) file.  0, or -1 with errno (EFBIG when over max). */
static int
maildrop_read(const char *path, size_t max, struct buf *b)
{
    char chunk[16384];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;

    if (fd < 0)
        return -1;
    for (;;) {
        n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (b->len + (size_t)n > max || buf_append(b, chunk, (size_t)n) < 0) {
            close(fd);
            errno = EFBIG;
            return -1;
        }
    }
    close(fd);
    return n < 0 ? -1 : 0;
}

/* One file: 1 handed over, 0 not (set aside, or left for later). */
static int
maildrop_take(struct maildrop *md, const char *name)
{
    struct maildrop_ticket *t;
    struct maildrop_env env;
    struct buf b;
    char why[160];
    int rc;

    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return 0;
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->path, sizeof(t->path), "%s/%s", md->dir, name);
    /* a payload is the message plus an envelope of bounded size */
    buf_init(&b, 0);
    if (maildrop_read(
            t->path, md->max_size + (size_t)MAILDROP_LINE_MAX * (MAILDROP_MAX_RCPTS + 2), &b) < 0) {
        if (errno == EFBIG)
            maildrop_set_aside(md, name, "larger than max_message_size");
        else if (errno != ENOENT)
            log_warn(NULL, "event=maildrop-read file=%s error=\"%s\"", name, strerror(errno));
        goto out;
    }
    if (maildrop_parse(b.data != NULL ? b.data : "", b.len, &env, why, sizeof(why)) < 0) {
        maildrop_set_aside(md, name, why);
        goto out;
    }
    t->md = md;
    t->next = md->inflight;
    if (md->inflight != NULL)
        md->inflight->prev = t;
    md->inflight = t;
    rc = md->submit(md->arg, env.sender, (const char *const *)env.rcpts, env.nrcpts, env.msg,
        env.msglen, maildrop_done, t);
    maildrop_env_free(&env);
    if (rc == 0) {
        buf_free(&b);
        return 1;
    }
    maildrop_unlink_ticket(t);
    if (maildrop_permanent(rc))
        maildrop_set_aside(md, name, strerror(rc));
    else
        log_warn(
            NULL, "event=maildrop-submit file=%s error=\"%s\"; retried later", name, strerror(rc));
out:
    buf_free(&b);
    free(t);
    return 0;
}

size_t
maildrop_scan(struct maildrop *md)
{
    DIR *dp = opendir(md->dir);
    struct dirent *de;
    size_t n = 0, len;

    if (dp == NULL) {
        log_warn(NULL, "event=maildrop-scan dir=%s error=\"%s\"", md->dir, strerror(errno));
        return 0;
    }
    while ((de = readdir(dp)) != NULL) {
        /* '.': temporary files of a sendmail still writing (and . and ..) */
        len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len >= 255 ||
            (len > 4 && strcmp(de->d_name + len - 4, ".bad") == 0))
            continue;
        if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
            continue;
        if (maildrop_inflight(md, de->d_name))
            continue;
        n += (size_t)maildrop_take(md, de->d_name);
    }
    closedir(dp);
    return n;
}

void
maildrop_close(struct maildrop *md)
{
    if (md == NULL)
        return;
    while (md->inflight != NULL)
        maildrop_unlink_ticket(md->inflight);
    free(md->dir);
    free(md);
}
