/*
 * ternd.c - the daemon's main: options, configuration, spool, server.
 * Thin on purpose: everything else links into the tests.
 *
 * Local submission (sendmail) arrives by the control socket's SUBMIT or
 * through the maildrop directory (spool_dir/maildrop, scanned at start and
 * every MAILDROP_INTERVAL seconds); both end in daemon_submit().
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

/* mkdir -p */
static int
make_dirs(const char *path)
{
    char tmp[4096], *p;

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
    if (mkdir(tmp, 0755) == -1 && errno != EEXIST)
        return -1;
    return 0;
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
        {"user", c->user != NULL},
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
    if (make_dirs(cfg.spool_dir) == -1)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg.spool_dir, strerror(errno));
    if ((sp = spool_open(cfg.spool_dir, SPILL_THRESHOLD, err, sizeof(err))) == NULL)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg.spool_dir, err);
    if ((d.local = local_new(&cfg, err, sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if ((srv = server_new(&cfg, sp, &hooks, err, sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if ((d.queue = queue_open(sp, err, sizeof(err))) == NULL)
        log_fatal("event=start spool_dir=%s error=\"%s\"", cfg.spool_dir, err);
    if ((d.sched = scheduler_new(server_base(srv), &cfg, d.queue, sp, d.local, err,
             sizeof(err))) == NULL)
        log_fatal("event=start error=\"%s\"", err);
    if (cfg.control_socket != NULL &&
        (ctl = control_open(server_base(srv), cfg.control_socket, d.queue, daemon_flush, &d,
             err, sizeof(err))) == NULL)
        log_fatal("event=start control_socket=%s error=\"%s\"", cfg.control_socket, err);
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
