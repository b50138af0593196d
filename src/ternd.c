/*
 * ternd.c - the daemon's main: options, configuration, spool, server.
 * Thin on purpose: everything else links into the tests.
 *
 * Local submission (sendmail) arrives by the control socket's SUBMIT or
 * through the maildrop directory (spool_dir/maildrop, scanned at start and
 * every MAILDROP_INTERVAL seconds); both end in daemon_submit().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "deliver/local.h"
#include "deliver/scheduler.h"
#include "net/control.h"
#include "net/server.h"
#include "net/tls.h"
#include "policy/auth.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "smtp/addr.h"
#include "smtp/reply.h"
#include "util/buf.h"
#include "util/config.h"
#include "util/date.h"
#include "util/log.h"
#include "util/priv.h"
#include "util/sandbox.h"

#define MAX_OVERRIDES 64
#define SPILL_THRESHOLD (256 * 1024)
#define MAILDROP_INTERVAL 5 /* seconds between scans of spool_dir/maildrop */

static void
usage(void)
{
    fprintf(stderr, "usage: ternd [-f] [-n] [-v] [-c FILE] [-o key=value]...\n"
                    "  -f  stay in the foreground\n"
                    "  -n  check the configuration and exit (0 good, 1 bad)\n"
                    "  -v  with -n: print every key and its value\n"
                    "  -c  configuration file (default: the embedded demo configuration)\n"
                    "  -o  override one configuration key (repeatable)\n");
    exit(64);
}

/*
 * mkdir -p: missing parents get 0755 (less the umask), the last component
 * leaf_mode; *created says whether the last component was made now.
 */
static int
make_dirs(const char *path, mode_t leaf_mode, bool *created)
{
    char tmp[4096], *p;

    *created = false;
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -1;
    for (p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) == -1 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, leaf_mode) == 0) {
        *created = true;
        return 0;
    }
    return errno == EEXIST ? 0 : -1;
}

/* 10,000 idle sessions need 10,000 descriptors: take what the hard limit allows. */
static void
raise_fd_limit(long want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((long)rl.rlim_cur < want + 64)
        log_warn(NULL, "event=fd-limit limit=%ld max_connections=%ld", (long)rl.rlim_cur, want);
}

/*
 * Keys of the contract whose features arrive with later work: accepted so a
 * configuration written today keeps working, and named at start so nobody
 * believes they are in force.
 */
static void
warn_unimplemented(const struct config *c)
{
    const struct {
        const char *key;
        bool set;
    } keys[] = {
        {"metrics_listen", c->metrics_listen != NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(keys) / sizeof(*keys); i++)
        if (keys[i].set)
            log_warn(NULL, "event=config key=%s reason=\"not implemented yet; the setting has no "
                           "effect\"",
                keys[i].key);
}

/* The daemon's parts, for the hooks that connect them. */
struct daemon {
    struct queue *queue;
    struct scheduler *sched;
    struct local *local;
    struct spool *sp;
    const struct config *cfg;
    struct maildrop *maildrop;
    struct event *ev_maildrop;
};

static enum reply_id
daemon_local_rcpt(void *arg, const char *addr, unsigned long long declared_size)
{
    struct daemon *d = arg;

    return local_check_rcpt(d->local, addr, declared_size);
}

static void
daemon_committed(void *arg, const struct spool_record *rec)
{
    struct daemon *d = arg;

    if (queue_add(d->queue, rec) == NULL)
        log_error(rec->id, "event=queue-add-failed reason=\"out of memory\"; the message "
                           "is safe on disk and is delivered after a restart");
    scheduler_kick(d->sched);
}

/* ---- local submission (sendmail) ---------------------------------------------------------- */

struct submit_ticket {
    struct daemon *d;
    maildrop_done_fn *done;
    void *donearg;
};

static void
daemon_submit_committed(void *arg, int err, const struct spool_record *rec)
{
    struct submit_ticket *t = arg;

    if (err == 0 && rec != NULL) {
        log_info(rec->id, "event=queued origin=sendmail");
        daemon_committed(t->d, rec);
        t->done(t->donearg, 0, rec->id);
    } else {
        t->done(t->donearg, err != 0 ? err : EIO, "the spool could not store the message");
    }
    free(t);
}

/*
 * An address as the spool keeps it: checked like a RCPT TO path; one without a
 * domain gets "@" and the first local domain (else our hostname), as sendmail
 * qualifies a bare user name.  0, or -1 (not a valid address).
 */
static int
daemon_qualify(const struct daemon *d, const char *in, bool sender, char *out, size_t outlen)
{
    struct smtp_path path;
    char tmp[600];
    size_t used;
    const char *dom = d->cfg->local_domains.n ? d->cfg->local_domains.items[0] : d->cfg->hostname;

    if (sender && in[0] == '\0') {
        out[0] = '\0';
        return 0;
    }
    if (strchr(in, '@') == NULL)
        snprintf(tmp, sizeof(tmp), "<%s@%s>", in, dom);
    else
        snprintf(tmp, sizeof(tmp), "<%s>", in);
    if (smtp_addr_parse(tmp, strlen(tmp), ADDR_UTF8, &path, &used) != ADDR_OK ||
        used != strlen(tmp))
        return -1;
    snprintf(out, outlen, "%s", path.addr);
    return 0;
}

static bool
daemon_8bit(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/*
 * The submit hook of the control socket and the maildrop: spool the message
 * like one received over SMTP (params client=local, origin=sendmail; a
 * Received line first; CRLF line ends), and answer once it is durable.
 * Local recipients are judged like at RCPT: a permanent refusal (unknown user)
 * refuses the submission (EPERM with the reply), a transient one (mailbox
 * full) is queued and retried like any deferred delivery.
 */
static int
daemon_submit(void *arg, const char *sender, const char *const *rcpts, size_t nrcpts,
    const char *msg, size_t len, maildrop_done_fn *done, void *donearg)
{
    struct daemon *d = arg;
    struct submit_ticket *t;
    struct spool_msg *m;
    char id[SPOOL_ID_LEN + 1], addr[600], date[64], why[400];
    struct buf b;
    size_t i;
    bool utf8;
    time_t now = time(NULL);

    if (len > (size_t)d->cfg->max_message_size) {
        done(donearg, EFBIG, "message larger than max_message_size");
        return 0;
    }
    spool_new_id(d->sp, id);
    if ((m = spool_msg_new(d->sp, id)) == NULL)
        return ENOMEM;
    spool_msg_set_arrival(m, now);
    if (daemon_qualify(d, sender, true, addr, sizeof(addr)) < 0) {
        spool_msg_abort(m);
        snprintf(why, sizeof(why), "invalid sender address <%.300s>", sender);
        done(donearg, EINVAL, why);
        return 0;
    }
    spool_msg_set_sender(m, addr);
    utf8 = daemon_8bit(addr);
    for (i = 0; i < nrcpts; i++) {
        if (daemon_qualify(d, rcpts[i], false, addr, sizeof(addr)) < 0) {
            spool_msg_abort(m);
            snprintf(why, sizeof(why), "invalid recipient address <%.300s>", rcpts[i]);
            done(donearg, EINVAL, why);
            return 0;
        }
        if (local_is_local(d->local, addr)) {
            enum reply_id r = local_check_rcpt(d->local, addr, len);

            if (reply_get(r)->code / 100 == 5) {
                struct buf rb;

                buf_init(&rb, 512);
                if (reply_write(&rb, r, addr) == 0 && rb.len >= 2) {
                    snprintf(why, sizeof(why), "%.*s", (int)rb.len - 2, rb.data);
                } else {
                    snprintf(why, sizeof(why), "recipient <%.300s> refused", addr);
                }
                buf_free(&rb);
                spool_msg_abort(m);
                log_info(id, "event=submit-refused to=<%s> reply=\"%s\"", addr, why);
                done(donearg, EPERM, why);
                return 0;
            }
        }
        utf8 = utf8 || daemon_8bit(addr);
        spool_msg_add_rcpt(m, addr);
    }
    /* what an SMTP client would have declared: the relay must know it */
    for (i = 0; i < len && (unsigned char)msg[i] < 0x80; i++)
        ;
    if (i < len)
        spool_msg_add_param(m, "BODY=8BITMIME");
    if (utf8)
        spool_msg_add_param(m, "SMTPUTF8");
    spool_msg_add_param(m, "client=local");
    spool_msg_add_param(m, "origin=sendmail");
    date_rfc5322(now, date, sizeof(date));
    buf_init(&b, 0);
    if (buf_printf(&b, "Received: by %s (tern sendmail) id %s; %s\r\n", d->cfg->hostname, id,
            date) < 0 ||
        maildrop_crlf(&b, msg, len) < 0 || spool_msg_write(m, b.data, b.len) < 0) {
        int e = errno ? errno : ENOMEM;

        buf_free(&b);
        spool_msg_abort(m);
        return e;
    }
    buf_free(&b);
    if ((t = malloc(sizeof(*t))) == NULL) {
        spool_msg_abort(m);
        return ENOMEM;
    }
    t->d = d;
    t->done = done;
    t->donearg = donearg;
    spool_commit_rec(d->sp, m, daemon_submit_committed, t);
    return 0;
}

static void
daemon_maildrop_tick(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;

    (void)fd;
    (void)what;
    maildrop_scan(d->maildrop);
}

static void
daemon_flush(void *arg)
{
    struct daemon *d = arg;

    scheduler_kick(d->sched);
}

/* ---- start-up: root's part, the drop, the sandbox ----------------------------------------- */

static void
daemon_log_privileges(const char *user, const struct priv_user *pu, enum priv_mode mode)
{
    switch (mode) {
    case PRIV_DROP:
        log_info(NULL, "event=privileges user=%s uid=%u gid=%u action=drop", pu->name,
            (unsigned)pu->uid, (unsigned)pu->gid);
        break;
    case PRIV_ROOT_NO_USER:
    case PRIV_ROOT_USER_IS_ROOT:
        log_warn(NULL, "event=privileges uid=0 warning=\"RUNNING AS ROOT: set the user key "
                       "(e.g. user = tern) so that ternd drops root after binding its ports\"");
        break;
    case PRIV_UNPRIVILEGED:
    case PRIV_ALREADY_USER:
        log_info(NULL, "event=privileges uid=%u gid=%u action=none reason=\"not started as "
                       "root\"",
            (unsigned)pu->uid, (unsigned)pu->gid);
        break;
    case PRIV_USER_IGNORED:
        log_warn(NULL, "event=privileges user=%s uid=%u action=none warning=\"not started as "
                       "root: the user key is ignored; running as uid %u\"",
            user, (unsigned)pu->uid, (unsigned)pu->uid);
        break;
    }
}

/*
 * Open the directory path, as root, without following a symlink that the user
 * (or anyone but root) could have planted: each component is opened with
 * O_NOFOLLOW; a symlink is followed only when the directory holding it is
 * root's and writable by root alone (e.g. /var/run -> /run, or an operator's
 * /var/spool/tern -> /srv/tern).  The spool is the user's: a symlink in it
 * (spool_dir/policy -> /etc) fails with ELOOP.  -1 and errno on failure.
 */
static int
daemon_open_nofollow(int dfd, const char *name)
{
    struct stat st;
    int fd;

    /* Linux says ENOTDIR, not ELOOP, for a symlink opened with O_DIRECTORY | O_NOFOLLOW */
    if ((fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 &&
        (errno == ENOTDIR || errno == ELOOP)) {
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            errno = ELOOP;
        else
            errno = ENOTDIR;
    }
    return fd;
}

static int
daemon_open_dir(const char *path)
{
    char buf[4200], *p, *next;
    int fd, nfd, saved;
    struct stat st;

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = open(buf[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    for (p = buf; p != NULL; p = next) {
        while (*p == '/')
            p++;
        if (*p == '\0')
            break;
        if ((next = strchr(p, '/')) != NULL)
            *next++ = '\0';
        nfd = daemon_open_nofollow(fd, p);
        if (nfd < 0 && errno == ELOOP && fstat(fd, &st) == 0 && st.st_uid == 0 &&
            (st.st_mode & (S_IWGRP | S_IWOTH)) == 0) {
            /* the target's own components are root's choice, made in a root-only directory */
            nfd = openat(fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        saved = errno;
        close(fd);
        if (nfd < 0) {
            errno = saved;
            return -1;
        }
        fd = nfd;
    }
    return fd;
}

static void
daemon_symlink_fatal(const char *what, const char *path)
{
    log_fatal("event=start %s=%s error=\"%s (or one of the directories leading to it) is a "
              "symlink in a directory that is not root's alone: refusing to chown through it "
              "as root; replace the symlink by the directory, or point %s at the real path\"",
        what, path, path, what);
}

/* Give the entry name of the directory dfd to the user, never following a symlink. */
static int
daemon_give_at(int dfd, const char *name, const struct priv_user *pu)
{
    struct stat st;

    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    if (st.st_uid == pu->uid && st.st_gid == pu->gid)
        return 0;
    if (fchownat(dfd, name, pu->uid, pu->gid, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    return 1;
}

/*
 * Give the directory dfd and the entries directly in it to the user; how many
 * changed.  Takes dfd.  Entries are changed by name relative to dfd without
 * following symlinks, and nothing is descended into.
 */
static int
daemon_give_dirfd(int dfd, const char *dir, const struct priv_user *pu)
{
    DIR *dp;
    struct dirent *e;
    struct stat st;
    int changed = 0, r;

    if (fstat(dfd, &st) < 0)
        log_fatal("event=start path=%s error=\"fstat: %s\"", dir, strerror(errno));
    if (st.st_uid != pu->uid || st.st_gid != pu->gid) {
        if (fchown(dfd, pu->uid, pu->gid) < 0)
            log_fatal("event=start path=%s error=\"chown: %s\"", dir, strerror(errno));
        changed++;
    }
    if ((dp = fdopendir(dfd)) == NULL) {
        close(dfd);
        return changed;
    }
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if ((r = daemon_give_at(dirfd(dp), e->d_name, pu)) < 0) {
            if (errno == ENOENT)
                continue;
            log_fatal(
                "event=start path=%s/%s error=\"chown: %s\"", dir, e->d_name, strerror(errno));
        }
        changed += r;
    }
    closedir(dp);
    return changed;
}

/* Give dir and the entries directly in it to the user; how many changed.  ENOENT: 0. */
static int
daemon_give_dir(const char *what, const char *dir, const struct priv_user *pu)
{
    int dfd;

    if ((dfd = daemon_open_dir(dir)) < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ELOOP)
            daemon_symlink_fatal(what, dir);
        log_fatal("event=start %s=%s error=\"open: %s\"", what, dir, strerror(errno));
    }
    return daemon_give_dirfd(dfd, dir, pu);
}

/*
 * Give the spool to the user: the directory and the entries ternd itself
 * makes there (lock; seg/, tmp/, maildrop/ and policy/, the default LMDB state
 * store, with their files), e.g. left owned by root by an earlier run without
 * `user`.  Only those names: a spool_dir set to a shared directory by mistake
 * must not have everything in it chowned.  All of it is the user's, so it may
 * have been changed by a compromised daemon: nothing is followed (a symlink
 * where a subdirectory should be is fatal, with a message).
 */
static void
daemon_give_spool(const char *dir, const struct priv_user *pu)
{
    static const char *const subdirs[] = {"seg", "tmp", "maildrop", "policy"};
    char path[4200];
    int changed = 0, sfd, dfd;
    size_t i;
    struct stat st;

    if (!pu->drop)
        return;
    if ((sfd = daemon_open_dir(dir)) < 0) {
        if (errno == ELOOP)
            daemon_symlink_fatal("spool_dir", dir);
        log_fatal("event=start spool_dir=%s error=\"open: %s\"", dir, strerror(errno));
    }
    if (fstat(sfd, &st) < 0)
        log_fatal("event=start spool_dir=%s error=\"fstat: %s\"", dir, strerror(errno));
    if (st.st_uid != pu->uid || st.st_gid != pu->gid) {
        if (fchown(sfd, pu->uid, pu->gid) < 0)
            log_fatal("event=start spool_dir=%s error=\"chown: %s\"", dir, strerror(errno));
        changed++;
    }
    changed += daemon_give_at(sfd, "lock", pu) > 0;
    for (i = 0; i < sizeof(subdirs) / sizeof(*subdirs); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
        dfd = daemon_open_nofollow(sfd, subdirs[i]);
        if (dfd < 0) {
            if (errno == ENOENT)
                continue;
            if (errno == ELOOP)
                daemon_symlink_fatal("spool_dir", path);
            log_fatal("event=start spool_dir=%s error=\"open: %s\"", path, strerror(errno));
        }
        changed += daemon_give_dirfd(dfd, path, pu);
    }
    close(sfd);
    if (changed > 0)
        log_info(NULL, "event=chown spool_dir=%s entries=%d user=%s", dir, changed, pu->name);
}

/* state_store = lmdb:PATH, when not the default under spool_dir. */
static const char *
daemon_lmdb_path(const struct config *cfg)
{
    if (cfg->state_store != NULL && strncmp(cfg->state_store, "lmdb:", 5) == 0)
        return cfg->state_store + 5;
    return NULL;
}

/*
 * Everything that needs root is done here, and nothing after it may need root:
 * the spool and mailbox directories (made and given to the user), the
 * listeners (ports below 1024) and the control socket (in a root-owned
 * directory such as /run/tern; the file is given to the user, mode 0600).
 * Server TLS: the certificate and key are read here too (server_new), so that
 * they may stay readable by root only (a SIGHUP reload, after the drop, needs
 * them readable by the user).  auth_users is not: it is loaded with the AUTH
 * threads by server_start(), as the user, and must be readable by it (it is
 * reread on SIGHUP anyway).  Logs go to stderr, already open.
 */
static void
daemon_privileged_start(const struct config *cfg, const struct priv_user *pu,
    const struct server_hooks *hooks, struct server **srv, struct control **ctl,
    struct daemon *d)
{
    char err[1024];
    bool created;
    struct stat st;

    if (make_dirs(cfg->spool_dir, 0700, &created) == -1)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg->spool_dir, strerror(errno));
    daemon_give_spool(cfg->spool_dir, pu);
    if (strcmp(cfg->local_delivery, "maildir") == 0) {
        /* made now so that the sandbox can name it; Maildirs beneath are made on delivery */
        if (make_dirs(cfg->mailbox_dir, 0700, &created) == -1)
            log_fatal("event=start mailbox_dir=%s error=\"%s\"", cfg->mailbox_dir,
                strerror(errno));
        if (created && priv_give(cfg->mailbox_dir, pu) < 0)
            log_fatal("event=start mailbox_dir=%s error=\"chown: %s\"", cfg->mailbox_dir,
                strerror(errno));
        if (pu->drop && stat(cfg->mailbox_dir, &st) == 0 && st.st_uid != pu->uid)
            log_error(NULL, "event=start mailbox_dir=%s owner_uid=%u user=%s error=\"mailbox_dir "
                            "is not owned by the user: deliveries will fail until it is "
                            "(chown %s %s)\"",
                cfg->mailbox_dir, (unsigned)st.st_uid, pu->name, pu->name, cfg->mailbox_dir);
    }
    if (daemon_lmdb_path(cfg) != NULL) {
        /* the state store is opened as the user, inside the sandbox, which must name it */
        const char *lp = daemon_lmdb_path(cfg);
        int changed;

        if (make_dirs(lp, 0700, &created) == -1)
            log_fatal("event=start state_store=%s error=\"%s\"", cfg->state_store,
                strerror(errno));
        if (pu->drop && (changed = daemon_give_dir("state_store", lp, pu)) > 0)
            log_info(NULL, "event=chown state_store=%s entries=%d user=%s", cfg->state_store,
                changed, pu->name);
    }
    if ((*srv = server_new(cfg, NULL, hooks, err, sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if (cfg->control_socket != NULL) {
        /* the queue is opened as the user, later: control_set_queue() */
        if ((*ctl = control_open(server_base(*srv), cfg->control_socket, NULL, daemon_flush, d,
                 err, sizeof(err))) == NULL)
            log_fatal("event=start control_socket=%s error=\"%s\"", cfg->control_socket, err);
        if (priv_give(cfg->control_socket, pu) < 0)
            log_fatal("event=start control_socket=%s error=\"chown: %s\"", cfg->control_socket,
                strerror(errno));
    }
}

/*
 * The Landlock sandbox (util/sandbox.h): what the daemon may touch once
 * started.  Every file read again after start (SIGHUP reload: the
 * configuration, the recipient table, certificates and keys, credentials) must
 * be listed here, or its reload fails with EACCES.
 */
#define SANDBOX_REREAD_MAX 14

/*
 * Read access beneath the directory of path as given and of the file it resolves to (a
 * symlink into another directory); dirs keeps the strings until the ruleset is built.
 */
static void
daemon_allow_reread(struct sandbox_rule *r, size_t *n, char (*dirs)[PATH_MAX], size_t *ndirs,
    const char *path)
{
    char real[PATH_MAX];

    if (path == NULL)
        return;
    tern_assert(*ndirs + 2 <= SANDBOX_REREAD_MAX);
    snprintf(dirs[*ndirs], PATH_MAX, "%s", path);
    r[(*n)++] = (struct sandbox_rule){dirname(dirs[(*ndirs)++]), SANDBOX_READ};
    if (realpath(path, real) != NULL) {
        snprintf(dirs[*ndirs], PATH_MAX, "%s", real);
        r[(*n)++] = (struct sandbox_rule){dirname(dirs[(*ndirs)++]), SANDBOX_READ};
    }
}

static int
daemon_sandbox_prepare(const struct config *cfg, const char *conf_file)
{
    /* clang-format off */
    static const char *const system_read[] = {
        "/usr", "/lib", "/lib64",                      /* libraries dlopen()ed (NSS), zoneinfo */
        "/etc/ssl", "/etc/ca-certificates",            /* OpenSSL: openssl.cnf, trust store */
        "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
        "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/localtime",
        "/etc/ld.so.cache", "/etc/passwd", "/etc/group",
        "/etc/unbound", "/var/lib/unbound",            /* libunbound: trust anchors */
        "/dev/urandom", "/proc/self", "/sys/devices/system/cpu",
    };
    /* clang-format on */
    struct sandbox_rule r[64];
    char ctl_dir[4096], dirs[SANDBOX_REREAD_MAX][PATH_MAX];
    char err[1024];
    size_t n = 0, i, ndirs = 0;
    int fd;

    if (!cfg->sandbox)
        return -1;
    r[n++] = (struct sandbox_rule){cfg->spool_dir, SANDBOX_READ_WRITE};
    if (strcmp(cfg->local_delivery, "maildir") == 0)
        r[n++] = (struct sandbox_rule){cfg->mailbox_dir, SANDBOX_READ_WRITE};
    if (daemon_lmdb_path(cfg) != NULL)
        r[n++] = (struct sandbox_rule){daemon_lmdb_path(cfg), SANDBOX_READ_WRITE};
    if (cfg->control_socket != NULL) {
        /* removed at exit (control_close) */
        snprintf(ctl_dir, sizeof(ctl_dir), "%s", cfg->control_socket);
        r[n++] = (struct sandbox_rule){dirname(ctl_dir), SANDBOX_REMOVE};
    }
    /* files read again later: their directories, so a file replaced by rename (an editor, a
       certificate renewal: a symlink moved to a new file beside the old one) stays readable */
    daemon_allow_reread(r, &n, dirs, &ndirs, conf_file);
    if (strncmp(cfg->local_recipients, "file:", 5) == 0)
        daemon_allow_reread(r, &n, dirs, &ndirs, cfg->local_recipients + 5);
    /* libunbound: with what it includes (root hints, trust anchors, zone files beside it) */
    daemon_allow_reread(r, &n, dirs, &ndirs, cfg->dns_config);
    daemon_allow_reread(r, &n, dirs, &ndirs, cfg->tls_cert);
    daemon_allow_reread(r, &n, dirs, &ndirs, cfg->tls_key);
    daemon_allow_reread(r, &n, dirs, &ndirs, cfg->tls_ca_file);
    daemon_allow_reread(r, &n, dirs, &ndirs, cfg->auth_users);
    for (i = 0; i < sizeof(system_read) / sizeof(*system_read); i++)
        r[n++] = (struct sandbox_rule){system_read[i], SANDBOX_READ};
    r[n++] = (struct sandbox_rule){"/dev/null", SANDBOX_DEVICE};
    tern_assert(n <= sizeof(r) / sizeof(*r));

    if ((fd = sandbox_prepare(r, n, err, sizeof(err))) == -1)
        log_fatal("event=start error=\"sandbox: %s\" hint=\"sandbox = off disables it\"", err);
    return fd;
}

/* Enter the sandbox prepared as root (after the drop; before the first thread). */
static void
daemon_sandbox_enforce(const struct config *cfg, int fd)
{
    char err[1024];
    int abi;

    if (!cfg->sandbox) {
        log_info(NULL, "event=sandbox state=off reason=\"sandbox = off\"");
        return;
    }
    if (fd == -2) {
        log_info(NULL, "event=sandbox state=off reason=\"the kernel has no Landlock\"");
        return;
    }
    if ((abi = sandbox_enforce(fd, err, sizeof(err))) < 0)
        log_fatal("event=start error=\"sandbox: %s\" hint=\"sandbox = off disables it\"", err);
    log_info(NULL, "event=sandbox state=on landlock_abi=%d spool_dir=%s mailbox_dir=%s", abi,
        cfg->spool_dir, cfg->mailbox_dir);
}

static enum log_level
level_of(const char *s)
{
    if (s == NULL || strcmp(s, "info") == 0)
        return LOG_LEVEL_INFO;
    if (strcmp(s, "debug") == 0)
        return LOG_LEVEL_DEBUG;
    if (strcmp(s, "warn") == 0)
        return LOG_LEVEL_WARN;
    return LOG_LEVEL_ERROR;
}

int
main(int argc, char **argv)
{
    const char *file = NULL, *overrides[MAX_OVERRIDES];
    int i, ch, noverrides = 0;
    int foreground = 0, check = 0, verbose = 0;
    struct config cfg;
    struct spool *sp;
    struct server *srv;
    struct daemon d = {0};
    struct server_hooks hooks = {daemon_local_rcpt, daemon_committed, &d};
    struct control *ctl = NULL;
    struct priv_user pu;
    enum priv_mode pmode;
    int sbfd;
    char err[1024];

    while ((ch = getopt(argc, argv, "fnvc:o:h")) != -1) {
        switch (ch) {
        case 'f':
            foreground = 1;
            break;
        case 'n':
            check = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'c':
            file = optarg;
            break;
        case 'o':
            if (noverrides == MAX_OVERRIDES) {
                fprintf(stderr, "ternd: too many -o options (max %d)\n", MAX_OVERRIDES);
                return 1;
            }
            overrides[noverrides++] = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();

    log_init("ternd", LOG_LEVEL_INFO);
    config_defaults(&cfg);
    if (file != NULL ? config_load_file(&cfg, file, err, sizeof(err))
                     : config_load_string(&cfg, "(embedded)", config_default_text, err,
                           sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        config_free(&cfg);
        return 1;
    }
    for (i = 0; i < noverrides; i++)
        if (config_override(&cfg, overrides[i], i + 1, err, sizeof(err)) == -1) {
            fprintf(stderr, "%s\n", err);
            config_free(&cfg);
            return 1;
        }
    if (config_finish(&cfg, file ? file : "(embedded)", err, sizeof(err)) == -1) {
        fprintf(stderr, "%s\n", err);
        config_free(&cfg);
        return 1;
    }
    if (cfg.auth_users != NULL) {
        /* Checked here too, so that ternd -n reports a bad credentials file. */
        struct auth_db *db = auth_db_load(cfg.auth_users, err, sizeof(err));
        if (db == NULL) {
            fprintf(stderr, "%s\n", err);
            config_free(&cfg);
            return 1;
        }
        auth_db_free(db);
    }
    if (check) {
        /* The certificate and key must load, as they must at start. */
        if (cfg.tls_cert != NULL && cfg.tls_key != NULL) {
            struct tls_server *tls = tls_server_new(cfg.tls_cert, cfg.tls_key, err, sizeof(err));
            if (tls == NULL) {
                fprintf(stderr, "%s: %s\n", file ? file : "(embedded)", err);
                config_free(&cfg);
                return 1;
            }
            tls_server_free(tls);
        }
        if (verbose)
            config_dump(&cfg, stdout);
        config_free(&cfg);
        return 0;
    }
    log_set_level(level_of(cfg.log_level));
    warn_unimplemented(&cfg);
    raise_fd_limit(cfg.max_connections);

    /* Before any thread exists: the committer thread would not survive fork(). */
    if (!foreground && daemon(1, 1) == -1)
        log_fatal("event=start error=\"daemon: %s\"", strerror(errno));
    /* Root's part, then root is gone for good, then the sandbox; all before the first thread
       (the spool's committer): setresuid and Landlock must cover every thread. */
    if (priv_resolve(cfg.user, &pu, &pmode, err, sizeof(err)) < 0)
        log_fatal("event=start error=\"%s\"", err);
    daemon_log_privileges(cfg.user, &pu, pmode);
    daemon_privileged_start(&cfg, &pu, &hooks, &srv, &ctl, &d);
    sbfd = daemon_sandbox_prepare(&cfg, file);
    if (priv_drop(&pu, err, sizeof(err)) < 0)
        log_fatal("event=start error=\"dropping privileges: %s\"", err);
    daemon_sandbox_enforce(&cfg, sbfd);

    /* ---- from here on: the daemon's user (when started as root), inside the sandbox ---- */
    if ((sp = spool_open(cfg.spool_dir, SPILL_THRESHOLD, err, sizeof(err))) == NULL)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg.spool_dir, err);
    if (server_start(srv, sp, err, sizeof(err)) < 0)
        log_fatal("event=start error=\"%s\"", err);
    if ((d.local = local_new(&cfg, err, sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if ((d.queue = queue_open(sp, err, sizeof(err))) == NULL)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg.spool_dir, err);
    if ((d.sched = scheduler_new(server_base(srv), &cfg, d.queue, sp, d.local, err,
             sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if (ctl != NULL)
        control_set_queue(ctl, d.queue);
    d.sp = sp;
    d.cfg = &cfg;
    if (ctl != NULL)
        control_set_submit(ctl, daemon_submit, &d, (size_t)cfg.max_message_size);
    {
        char dir[4200];
        struct timeval tv = {MAILDROP_INTERVAL, 0};

        snprintf(dir, sizeof(dir), "%s/maildrop", cfg.spool_dir);
        if ((d.maildrop = maildrop_open(dir, (size_t)cfg.max_message_size, daemon_submit, &d,
                 err, sizeof(err))) == NULL)
            log_fatal("event=start error=\"maildrop: %s\"", err);
        d.ev_maildrop = event_new(server_base(srv), -1, EV_PERSIST, daemon_maildrop_tick, &d);
        if (d.ev_maildrop == NULL || event_add(d.ev_maildrop, &tv) < 0)
            log_fatal("event=start error=\"maildrop: cannot create its timer\"");
        maildrop_scan(d.maildrop);
    }
    log_info(NULL, "event=recovered messages=%zu", queue_count(d.queue));
    log_info(NULL, "event=started hostname=%s spool_dir=%s", cfg.hostname, cfg.spool_dir);
    if (server_run(srv) == -1)
        log_fatal("event=loop-failed");
    {
        struct scheduler_stats ss;
        scheduler_get_stats(d.sched, &ss);
        scheduler_free(d.sched);
        d.sched = NULL;
        log_info(NULL, "event=delivery-stats attempts=%llu delivered=%llu deferred=%llu "
                       "failed=%llu worker_batches=%llu",
            ss.attempts, ss.delivered, ss.deferred, ss.failed, ss.batches);
    }
    event_free(d.ev_maildrop);
    maildrop_close(d.maildrop);
    control_close(ctl);
    queue_close(d.queue);
    server_free(srv);
    {
        struct spool_stats st;
        spool_get_stats(sp, &st);
        log_info(NULL, "event=spool-stats records=%llu failed=%llu syncs=%llu bytes=%llu",
            (unsigned long long)st.committed, (unsigned long long)st.failed,
            (unsigned long long)st.batches, (unsigned long long)st.bytes);
    }
    spool_close(sp);
    local_free(d.local);
    log_info(NULL, "event=stopped");
    config_free(&cfg);
    return 0;
}
