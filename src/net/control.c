/*
 * control.c - the control socket on the event loop (see control.h).
 *
 * Each client is a small state machine: READ (collect one request line
 * into a fixed buffer, under the read timeout), then WRITE (drain the
 * output buffer, under the write-progress timeout), then close.  Sockets are
 * non-blocking and driven by raw events, so a client can never stall the
 * loop.
 *
 * LIST snapshots the queue IDs in arrival order when the request arrives,
 * then formats messages a batch at a time, only when the client has read
 * what was queued before: a queue of a million messages costs 17 bytes per
 * ID here, not a giant text buffer.  A message that leaves the queue
 * meanwhile is skipped (looked up again by ID, never by a stale pointer:
 * the queue frees finished messages).  The totals of the text format count
 * what was printed.
 *
 * SUBMIT reads its payload (a counted length, bounded before anything is
 * allocated) into one buffer, parses it with queue/maildrop.c, and hands it
 * to the submit hook; the answer waits for the hook's done callback, i.e.
 * for the spool's fsync.  A ticket between the two survives the client, so
 * a client that hangs up during the commit costs nothing but the ticket.
 *
 * The socket file is mode 0600 (only ternd's user and root may connect);
 * the peer's uid is checked as well, in case the directory was made
 * reachable to others and the mode changed by hand.
 */
#include "net/control.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "queue/maildrop.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/log.h"

#define CONTROL_LOW_WATER 65536 /* refill LIST output below this many unsent bytes */
#define CONTROL_BACKLOG 32

typedef char control_id[SPOOL_ID_LEN + 1];

struct client;

/* A SUBMIT waiting for its commit; cl is NULL once the client is gone. */
struct control_ticket {
    struct client *cl;
};

struct client {
    struct control *ctl;
    struct client *prev, *next;
    int fd;
    struct event *ev_read, *ev_write, *ev_timer;
    char in[CONTROL_LINE_MAX];
    size_t inlen;
    struct buf out;
    size_t outoff; /* bytes of out already sent */
    bool writing;  /* request taken: from now on only output */
    /* LIST in progress */
    bool listing;
    bool json;
    control_id *ids;
    size_t nids, nextid, nids_alloc;
    bool oom;       /* the ID snapshot could not be taken */
    size_t shown;   /* messages printed */
    uint64_t bytes; /* their body sizes, for the text summary */
    /* SUBMIT in progress */
    size_t reqlen; /* octets of in[] taken by the request line (the rest is payload) */
    bool submitting;
    char *payload;
    size_t paylen, payneed;
    struct control_ticket *ticket; /* the commit in flight */
};

struct control {
    struct event_base *base;
    struct queue *q;
    void (*on_flush)(void *arg);
    void *on_flush_arg;
    control_submit_fn *submit;
    void *submit_arg;
    size_t submit_max; /* message octets */
    char *path;
    dev_t dev; /* the socket file we created, so close removes only ours */
    ino_t ino;
    int fd;
    struct event *ev_accept;
    struct event *ev_resume; /* re-arm accept after EMFILE */
    struct client *clients;
    unsigned nclients;
    struct timeval tv_read, tv_write;
};

/* ---- output helpers --------------------------------------------------------------------- */

/*
 * Text that reaches an operator's terminal or a line protocol: control
 * characters become '?', as Postfix's printable() does; bytes >= 0x80 stay
 * (UTF-8 addresses under SMTPUTF8).
 */
static int
control_put_printable(struct buf *b, const char *s)
{
    while (*s != '\0') {
        size_t n = 0;

        while (s[n] != '\0' && (unsigned char)s[n] >= 0x20 && s[n] != 0x7f)
            n++;
        if (buf_append(b, s, n) < 0)
            return -1;
        s += n;
        if (*s != '\0') {
            if (buf_append(b, "?", 1) < 0)
                return -1;
            s++;
        }
    }
    return 0;
}

/* Length of a valid UTF-8 sequence at s (1-4), or 0 if the bytes there are not one. */
static size_t
control_utf8_len(const unsigned char *s)
{
    size_t n, i;
    uint32_t cp;

    if (s[0] < 0xc2 || s[0] > 0xf4)
        return 0;
    n = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
    cp = s[0] & (0x7f >> n);
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff)
        return 0;
    return n;
}

/* A JSON string: quotes, escapes, and U+FFFD for bytes that are not UTF-8, so the output
   is always valid JSON whatever a peer put into an address or a reply. */
static int
control_put_json_str(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    if (buf_puts(b, "\"") < 0)
        return -1;
    while (*p != '\0') {
        int rc;

        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            rc = buf_append(b, e, 2);
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            rc = buf_printf(b, "\\u%04x", *p);
            p++;
        } else if (*p < 0x80) {
            rc = buf_append(b, p, 1);
            p++;
        } else {
            size_t n = control_utf8_len(p);

            if (n == 0) {
                rc = buf_puts(b, "\\ufffd");
                n = 1;
            } else {
                rc = buf_append(b, p, n);
            }
            p += n;
        }
        if (rc < 0)
            return -1;
    }
    return buf_puts(b, "\"");
}

/* "Www Mmm dd hh:mm:ss" in local time, like the first 19 bytes of asctime(3), with fixed
   English names whatever the locale. */
static void
control_fmt_time(time_t t, char out[32])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    if (localtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11) {
        snprintf(out, 32, "%-19s", "??");
        return;
    }
    snprintf(out, 32, "%s %s %2d %02d:%02d:%02d", days[tm.tm_wday], months[tm.tm_mon], tm.tm_mday,
        tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *
control_state_name(enum queue_rcpt_state s)
{
    /* Our own names, not queue_rcpt_state_name(): the JSON is an interface for scripts and
       must not change when the spool's vocabulary does. */
    switch (s) {
    case QR_PENDING:
        return "pending";
    case QR_DEFERRED:
        return "deferred";
    case QR_DELIVERED:
        return "delivered";
    case QR_FAILED:
        return "failed";
    }
    return "unknown";
}

/*
 * One message in Postfix's mailq layout (postqueue's showq_compat.c):
 *   "%-11s %7ld %20.20s %s" for the message (ID with '!' when held, '*' when a delivery
 *   is in flight; the null sender shown as MAILER-DAEMON), then per recipient still to
 *   deliver its "(reason)" right-aligned to column 78 when it differs from the previous
 *   recipient's ("(reason unavailable)" when it has none but the previous had one), then
 *   the address indented by 41 columns.
 * XXX our IDs have 16 characters, so the ID column overflows the 11 of the classic header
 * and the rest of the row shifts right by 6, as in Postfix's short layout with long IDs.
 */
static int
control_fmt_text(struct buf *b, const struct queue_msg *m)
{
    char when[32], idst[SPOOL_ID_LEN + 2];
    const char *prev = "";
    unsigned i;

    control_fmt_time(m->arrival, when);
    snprintf(idst, sizeof(idst), "%s%s", m->id, m->held ? "!" : m->busy ? "*" : "");
    if (buf_printf(b, "%-11s %7llu %s  ", idst, (unsigned long long)m->body_len, when) < 0 ||
        control_put_printable(b, m->sender[0] != '\0' ? m->sender : "MAILER-DAEMON") < 0 ||
        buf_puts(b, "\n") < 0)
        return -1;
    for (i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        const char *why = r->last_reply != NULL ? r->last_reply : "";

        if (r->state != QR_PENDING && r->state != QR_DEFERRED)
            continue;
        if (strcmp(why, prev) != 0) {
            const char *show = why[0] != '\0' ? why : "reason unavailable";
            int pad = 76 - (int)strlen(show);

            if (buf_printf(b, "%*s(", pad > 0 ? pad : 0, "") < 0 ||
                control_put_printable(b, show) < 0 || buf_puts(b, ")\n") < 0)
                return -1;
            prev = why;
        }
        if (buf_printf(b, "%41s", "") < 0 || control_put_printable(b, r->addr) < 0 ||
            buf_puts(b, "\n") < 0)
            return -1;
    }
    return 0;
}

static int
control_fmt_json(struct buf *b, const struct queue_msg *m)
{
    unsigned i;

    if (buf_puts(b, "{\"id\":") < 0 || control_put_json_str(b, m->id) < 0 ||
        buf_printf(b, ",\"arrival\":%lld,\"size\":%llu,\"sender\":", (long long)m->arrival,
            (unsigned long long)m->body_len) < 0 ||
        control_put_json_str(b, m->sender) < 0 ||
        buf_printf(b, ",\"held\":%s,\"recipients\":[", m->held ? "true" : "false") < 0)
        return -1;
    for (i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];

        if (buf_puts(b, i > 0 ? ",{\"addr\":" : "{\"addr\":") < 0 ||
            control_put_json_str(b, r->addr) < 0 ||
            buf_printf(b,
                ",\"state\":\"%s\",\"attempts\":%u,\"next_attempt\":%lld,"
                "\"last_reply\":",
                control_state_name(r->state), r->attempts, (long long)r->next_attempt) < 0)
            return -1;
        if (r->last_reply != NULL ? control_put_json_str(b, r->last_reply) < 0
                                  : buf_puts(b, "null") < 0)
            return -1;
        if (buf_puts(b, "}") < 0)
            return -1;
    }
    return buf_puts(b, "]}");
}

/* ---- clients ---------------------------------------------------------------------------- */

static void control_client_free(struct client *cl);
static void control_on_write(evutil_socket_t fd, short what, void *arg);

static void
control_arm_timer(struct client *cl)
{
    event_add(cl->ev_timer, cl->writing ? &cl->ctl->tv_write : &cl->ctl->tv_read);
}

/*
 * Format more LIST output while little is waiting to be sent.  -1 when a single
 * message would push the buffer past CONTROL_OUT_MAX (the client is dropped).
 */
static int
control_list_fill(struct client *cl)
{
    struct buf *b = &cl->out;

    while (cl->listing && b->len - cl->outoff < CONTROL_LOW_WATER) {
        if (cl->nextid < cl->nids) {
            const struct queue_msg *m = queue_find(cl->ctl->q, cl->ids[cl->nextid++]);
            int rc;

            if (m == NULL)
                continue; /* left the queue since the snapshot */
            if (cl->json) {
                rc = buf_puts(b, cl->shown > 0 ? ",\n" : "\n");
                if (rc == 0)
                    rc = control_fmt_json(b, m);
            } else {
                rc = 0;
                if (cl->shown == 0)
                    rc = buf_printf(b, "%-11s %7s %-20s %s\n", "-Queue ID-", "--Size--",
                        "----Arrival Time----", "-Sender/Recipient-------");
                else
                    rc = buf_puts(b, "\n");
                if (rc == 0)
                    rc = control_fmt_text(b, m);
            }
            if (rc < 0)
                return -1;
            cl->shown++;
            cl->bytes += m->body_len;
            continue;
        }
        /* the end */
        if (cl->json) {
            if (buf_puts(b, "\n]\n") < 0)
                return -1;
        } else if (cl->shown == 0) {
            if (buf_puts(b, "Mail queue is empty\n") < 0)
                return -1;
        } else if (buf_printf(b, "\n-- %llu Kbytes in %zu Request%s.\n",
                       (unsigned long long)(cl->bytes / 1024), cl->shown,
                       cl->shown == 1 ? "" : "s") < 0) {
            return -1;
        }
        cl->listing = false;
        free(cl->ids);
        cl->ids = NULL;
    }
    return 0;
}

/* Stop reading; from now on send cl->out, then close. */
static void
control_start_write(struct client *cl)
{
    cl->writing = true;
    event_del(cl->ev_read);
    event_add(cl->ev_write, NULL);
    control_arm_timer(cl);
}

static void
control_reply_err(struct client *cl, const char *reason)
{
    buf_reset(&cl->out);
    cl->outoff = 0;
    cl->listing = false;
    if (buf_printf(&cl->out, "ERR %s\n", reason) < 0) {
        control_client_free(cl);
        return;
    }
    control_start_write(cl);
}

static int
control_collect_id(void *arg, const struct queue_msg *m)
{
    struct client *cl = arg;

    if (cl->nids == cl->nids_alloc) {
        size_t n = cl->nids_alloc ? cl->nids_alloc * 2 : 256;
        control_id *p = realloc(cl->ids, n * sizeof(*p));

        if (p == NULL) {
            cl->oom = true;
            return 1;
        }
        cl->ids = p;
        cl->nids_alloc = n;
    }
    memcpy(cl->ids[cl->nids++], m->id, sizeof(control_id));
    return 0;
}

/* ---- the command table ------------------------------------------------------------------ */

enum control_arg { ARG_NONE, ARG_OPT_ID, ARG_ID, ARG_OPT_JSON, ARG_LENGTH };

struct control_cmd {
    const char *name;
    enum control_arg arg;
    /* fills cl->out after "OK\n", or returns an error reason */
    const char *(*run)(struct client *cl, const char *arg);
};

static const char *
control_cmd_list(struct client *cl, const char *arg)
{
    cl->json = arg != NULL;
    cl->nids = 0;
    queue_foreach(cl->ctl->q, control_collect_id, cl);
    if (cl->oom)
        return "out of memory";
    cl->listing = true;
    if (cl->json && buf_puts(&cl->out, "[") < 0)
        return "out of memory";
    return NULL;
}

static const char *
control_cmd_count(struct client *cl, const char *arg)
{
    (void)arg;
    return buf_printf(&cl->out, "%zu\n", queue_count(cl->ctl->q)) < 0 ? "out of memory" : NULL;
}

static const char *
control_cmd_flush(struct client *cl, const char *arg)
{
    if (queue_flush(cl->ctl->q, arg) < 0)
        return "no such message";
    log_info(arg, "action=flush via=control");
    if (cl->ctl->on_flush != NULL)
        cl->ctl->on_flush(cl->ctl->on_flush_arg);
    return NULL;
}

static const char *
control_cmd_delete(struct client *cl, const char *arg)
{
    if (queue_delete(cl->ctl->q, arg) < 0)
        return "no such message";
    log_info(arg, "action=delete via=control");
    return NULL;
}

static const char *
control_cmd_hold(struct client *cl, const char *arg)
{
    if (queue_hold(cl->ctl->q, arg) < 0)
        return "no such message";
    log_info(arg, "action=hold via=control");
    return NULL;
}

static const char *
control_cmd_release(struct client *cl, const char *arg)
{
    if (queue_release(cl->ctl->q, arg) < 0)
        return "no such message";
    log_info(arg, "action=release via=control");
    /* A released message may be due already: let the scheduler see it now. */
    if (cl->ctl->on_flush != NULL)
        cl->ctl->on_flush(cl->ctl->on_flush_arg);
    return NULL;
}

/* ---- SUBMIT ----------------------------------------------------------------------------- */

static void
control_submit_done(void *donearg, int err, const char *id)
{
    struct control_ticket *t = donearg;
    struct client *cl = t->cl;
    char msg[160];

    free(t);
    if (cl == NULL)
        return; /* the client went away; the message is queued (or not) all the same */
    cl->ticket = NULL;
    if (err != 0) {
        snprintf(msg, sizeof(msg), "%s", id != NULL ? id : strerror(err));
        control_reply_err(cl, msg);
        return;
    }
    buf_reset(&cl->out);
    cl->outoff = 0;
    if (buf_printf(&cl->out, "OK %s\n", id) < 0) {
        control_client_free(cl);
        return;
    }
    control_start_write(cl);
}

/* The whole payload is in: parse it and hand it over. */
static void
control_submit_run(struct client *cl)
{
    struct control *c = cl->ctl;
    struct maildrop_env env;
    char why[160];
    int rc;

    cl->submitting = false;
    event_del(cl->ev_read);
    event_del(cl->ev_timer);
    if (maildrop_parse(cl->payload, cl->paylen, &env, why, sizeof(why)) < 0) {
        control_reply_err(cl, why);
        return;
    }
    if (env.msglen > c->submit_max) {
        maildrop_env_free(&env);
        control_reply_err(cl, "message larger than max_message_size");
        return;
    }
    if ((cl->ticket = malloc(sizeof(*cl->ticket))) == NULL) {
        maildrop_env_free(&env);
        control_reply_err(cl, "out of memory");
        return;
    }
    cl->ticket->cl = cl;
    /* Nothing may touch cl after this call when it returns 0: done may have run already. */
    rc = c->submit(c->submit_arg, env.sender, (const char *const *)env.rcpts, env.nrcpts, env.msg,
        env.msglen, control_submit_done, cl->ticket);
    maildrop_env_free(&env);
    if (rc != 0) {
        free(cl->ticket);
        cl->ticket = NULL;
        control_reply_err(cl, strerror(rc));
    }
}

static const char *
control_cmd_submit(struct client *cl, const char *arg)
{
    struct control *c = cl->ctl;
    unsigned long long n = 0;
    size_t max, have;
    const char *p;

    if (c->submit == NULL)
        return "SUBMIT is not enabled in this ternd";
    for (p = arg; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || n > (1ull << 40))
            return "SUBMIT needs a length in octets";
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    max = c->submit_max + (size_t)MAILDROP_LINE_MAX * (MAILDROP_MAX_RCPTS + 2);
    if (n > max)
        return "message larger than max_message_size";
    have = cl->inlen - cl->reqlen;
    if (have > n)
        return "more data than the length says";
    if ((cl->payload = malloc(n ? (size_t)n : 1)) == NULL)
        return "out of memory";
    memcpy(cl->payload, cl->in + cl->reqlen, have);
    cl->paylen = have;
    cl->payneed = (size_t)n;
    cl->submitting = true;
    buf_reset(&cl->out);
    if (cl->paylen == cl->payneed)
        control_submit_run(cl);
    else
        control_arm_timer(cl);
    return NULL;
}

/* More payload bytes from the client. */
static void
control_submit_read(struct client *cl)
{
    ssize_t n = recv(cl->fd, cl->payload + cl->paylen, cl->payneed - cl->paylen, 0);

    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        control_client_free(cl);
        return;
    }
    if (n == 0) {
        control_reply_err(cl, "connection closed before the end of the message");
        return;
    }
    cl->paylen += (size_t)n;
    control_arm_timer(cl); /* progress: the read timeout starts over */
    if (cl->paylen == cl->payneed)
        control_submit_run(cl);
}

void
control_set_submit(struct control *c, control_submit_fn *submit, void *arg, size_t max_message_size)
{
    c->submit = submit;
    c->submit_arg = arg;
    c->submit_max = max_message_size ? max_message_size : CONTROL_SUBMIT_MAX;
}

static const struct control_cmd control_cmds[] = {
    {"LIST", ARG_OPT_JSON, control_cmd_list},
    {"COUNT", ARG_NONE, control_cmd_count},
    {"FLUSH", ARG_OPT_ID, control_cmd_flush},
    {"DELETE", ARG_ID, control_cmd_delete},
    {"HOLD", ARG_ID, control_cmd_hold},
    {"RELEASE", ARG_ID, control_cmd_release},
    {"SUBMIT", ARG_LENGTH, control_cmd_submit},
};

/* Queue IDs are [0-9A-Z]; accept lower case from a human and fold it. */
static bool
control_valid_id(char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        if (!isalnum((unsigned char)s[n]))
            return false;
        s[n] = (char)toupper((unsigned char)s[n]);
    }
    return n > 0 && n <= SPOOL_ID_LEN;
}

static void
control_request(struct client *cl, char *line)
{
    char *verb, *arg, *extra, *save = NULL;
    const struct control_cmd *cmd = NULL;
    const char *why;
    size_t i;
    char msg[96];

    verb = strtok_r(line, " \t", &save);
    arg = strtok_r(NULL, " \t", &save);
    extra = strtok_r(NULL, " \t", &save);
    if (verb == NULL) {
        control_reply_err(cl, "empty request");
        return;
    }
    for (i = 0; i < sizeof(control_cmds) / sizeof(control_cmds[0]); i++) {
        if (strcasecmp(verb, control_cmds[i].name) == 0) {
            cmd = &control_cmds[i];
            break;
        }
    }
    if (cmd == NULL) {
        control_reply_err(cl, "unknown command (LIST [JSON], COUNT, FLUSH [ID], DELETE ID, "
                              "HOLD ID, RELEASE ID, SUBMIT LENGTH)");
        return;
    }
    if (extra != NULL || (arg != NULL && cmd->arg == ARG_NONE)) {
        snprintf(msg, sizeof(msg), "too many arguments to %s", cmd->name);
        control_reply_err(cl, msg);
        return;
    }
    if (arg == NULL && (cmd->arg == ARG_ID || cmd->arg == ARG_LENGTH)) {
        snprintf(msg, sizeof(msg), "%s needs %s", cmd->name,
            cmd->arg == ARG_ID ? "a queue ID" : "a length in octets");
        control_reply_err(cl, msg);
        return;
    }
    if (arg != NULL && cmd->arg == ARG_OPT_JSON && strcasecmp(arg, "JSON") != 0) {
        control_reply_err(cl, "LIST takes no argument but JSON");
        return;
    }
    if (arg != NULL && (cmd->arg == ARG_ID || cmd->arg == ARG_OPT_ID) && !control_valid_id(arg)) {
        control_reply_err(cl, "malformed queue ID");
        return;
    }

    buf_reset(&cl->out);
    if (buf_puts(&cl->out, "OK\n") < 0) {
        control_client_free(cl);
        return;
    }
    why = cmd->run(cl, arg);
    if (why != NULL) {
        if (strcmp(why, "no such message") == 0 && arg != NULL)
            snprintf(msg, sizeof(msg), "no such message %s", arg);
        else
            snprintf(msg, sizeof(msg), "%s", why);
        control_reply_err(cl, msg);
        return;
    }
    if (cmd->arg == ARG_LENGTH)
        return; /* SUBMIT reads its payload, then answers when the commit is done */
    if (control_list_fill(cl) < 0) {
        log_warn(NULL, "control: one message's LIST entry is past %u bytes", CONTROL_OUT_MAX);
        control_reply_err(cl, "response too large");
        return;
    }
    control_start_write(cl);
}

static void
control_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;
    ssize_t n;
    char *nl;

    (void)what;
    if (cl->submitting) {
        control_submit_read(cl);
        return;
    }
    n = recv(fd, cl->in + cl->inlen, sizeof(cl->in) - cl->inlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        control_client_free(cl);
        return;
    }
    if (n == 0) {
        /* EOF: a request without its newline still counts (`printf LIST | nc -U`) */
        if (cl->inlen == 0) {
            control_client_free(cl);
            return;
        }
        nl = cl->in + cl->inlen; /* < sizeof(cl->in): a full buffer stopped reading */
    } else {
        size_t old = cl->inlen;

        cl->inlen += (size_t)n;
        nl = memchr(cl->in + old, '\n', (size_t)n);
        if (nl == NULL) {
            if (cl->inlen == sizeof(cl->in))
                control_reply_err(cl, "request line too long");
            return;
        }
    }
    if (memchr(cl->in, '\0', (size_t)(nl - cl->in)) != NULL) {
        control_reply_err(cl, "NUL in request");
        return;
    }
    cl->reqlen = n == 0 ? cl->inlen : (size_t)(nl - cl->in) + 1;
    *nl = '\0';
    if (nl > cl->in && nl[-1] == '\r')
        nl[-1] = '\0';
    control_request(cl, cl->in);
}

static void
control_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;
    ssize_t n;

    (void)what;
    while (cl->outoff < cl->out.len) {
        n = send(fd, cl->out.data + cl->outoff, cl->out.len - cl->outoff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            control_client_free(cl); /* EPIPE and kin: the client went away */
            return;
        }
        cl->outoff += (size_t)n;
        control_arm_timer(cl); /* progress: the write timeout starts over */
        if (cl->outoff == cl->out.len) {
            buf_reset(&cl->out);
            cl->outoff = 0;
            if (control_list_fill(cl) < 0) {
                log_warn(NULL, "control: LIST output past %u bytes for one client: dropped",
                    CONTROL_OUT_MAX);
                control_client_free(cl);
                return;
            }
        } else if (cl->outoff >= CONTROL_LOW_WATER) {
            /* keep the buffer from creeping: drop what was sent before formatting more */
            buf_consume(&cl->out, cl->outoff);
            cl->outoff = 0;
            if (control_list_fill(cl) < 0) {
                control_client_free(cl);
                return;
            }
        }
    }
    if (cl->outoff == cl->out.len && !cl->listing)
        control_client_free(cl);
}

static void
control_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;

    (void)fd;
    (void)what;
    if (!cl->writing) {
        /* best effort: say why, then go (the buffer is empty, so this does not block) */
        static const char msg[] = "ERR timeout\n";
        ssize_t n = send(cl->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    } else {
        log_warn(NULL, "control: client did not read its response for %ld ms: dropped",
            (long)cl->ctl->tv_write.tv_sec * 1000 + (long)cl->ctl->tv_write.tv_usec / 1000);
    }
    control_client_free(cl);
}

/*
 * Read and discard what the client sent beyond its request, so closing does not turn into
 * an ECONNRESET on its side before it has read our answer.
 */
static void
control_drain(int fd)
{
    char sink[4096];
    int i;

    for (i = 0; i < 16; i++)
        if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
            break;
}

static void
control_client_free(struct client *cl)
{
    struct control *c = cl->ctl;

    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        c->clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    c->nclients--;
    event_free(cl->ev_read);
    event_free(cl->ev_write);
    event_free(cl->ev_timer);
    control_drain(cl->fd);
    close(cl->fd);
    buf_free(&cl->out);
    free(cl->ids);
    free(cl->payload);
    if (cl->ticket != NULL)
        cl->ticket->cl = NULL; /* the commit goes on; its answer has nowhere to go */
    free(cl);
}

/* Only ternd's own user (or root) may drive the queue. */
static bool
control_peer_ok(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    return cred.uid == 0 || cred.uid == geteuid();
}

static void
control_refuse(int fd, const char *msg)
{
    ssize_t n = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);

    (void)n;
    close(fd);
}

static void
control_on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct control *c = arg;

    (void)fd;
    (void)what;
    event_add(c->ev_accept, NULL);
}

static void
control_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct control *c = arg;

    (void)what;
    for (;;) {
        struct client *cl;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The listener would fire again at once: pause it for a second. */
                struct timeval tv = {1, 0};

                log_warn(NULL, "control: accept: %s", strerror(errno));
                event_del(c->ev_accept);
                event_add(c->ev_resume, &tv);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_warn(NULL, "control: accept: %s", strerror(errno));
            }
            return;
        }
        if (!control_peer_ok(fd)) {
            control_refuse(fd, "ERR permission denied\n");
            continue;
        }
        if (c->nclients >= CONTROL_MAX_CLIENTS) {
            control_refuse(fd, "ERR too many clients\n");
            continue;
        }
        cl = calloc(1, sizeof(*cl));
        if (cl == NULL) {
            control_refuse(fd, "ERR out of memory\n");
            continue;
        }
        cl->ctl = c;
        cl->fd = fd;
        buf_init(&cl->out, CONTROL_OUT_MAX);
        cl->ev_read = event_new(c->base, fd, EV_READ | EV_PERSIST, control_on_read, cl);
        cl->ev_write = event_new(c->base, fd, EV_WRITE | EV_PERSIST, control_on_write, cl);
        cl->ev_timer = evtimer_new(c->base, control_on_timer, cl);
        if (cl->ev_read == NULL || cl->ev_write == NULL || cl->ev_timer == NULL) {
            if (cl->ev_read != NULL)
                event_free(cl->ev_read);
            if (cl->ev_write != NULL)
                event_free(cl->ev_write);
            if (cl->ev_timer != NULL)
                event_free(cl->ev_timer);
            free(cl);
            control_refuse(fd, "ERR out of memory\n");
            continue;
        }
        cl->next = c->clients;
        if (c->clients != NULL)
            c->clients->prev = cl;
        c->clients = cl;
        c->nclients++;
        event_add(cl->ev_read, NULL);
        control_arm_timer(cl);
    }
}

/* ---- open and close --------------------------------------------------------------------- */

static void
control_ms_to_tv(unsigned ms, struct timeval *tv)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (long)(ms % 1000) * 1000;
}

void
control_set_timeouts(struct control *c, unsigned read_ms, unsigned write_ms)
{
    control_ms_to_tv(read_ms, &c->tv_read);
    control_ms_to_tv(write_ms, &c->tv_write);
}

/*
 * Is somebody serving at path?  0: nothing there or a stale socket (removed);
 * -1 with err: a live server, something that is not a socket, or a check that failed.
 */
static int
control_clear_path(const struct sockaddr_un *sa, char *err, size_t errlen)
{
    struct stat st;
    int fd, rc;

    if (lstat(sa->sun_path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", sa->sun_path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", sa->sun_path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
        /* accepted, or its backlog is full: alive either way */
        close(fd);
        snprintf(err, errlen,
            "%s: another process is serving on this control socket "
            "(is ternd already running?)",
            sa->sun_path);
        return -1;
    }
    if (errno != ECONNREFUSED) {
        snprintf(err, errlen, "%s: cannot check for a running server: %s", sa->sun_path,
            strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    if (unlink(sa->sun_path) < 0 && errno != ENOENT) {
        snprintf(
            err, errlen, "%s: cannot remove the stale socket: %s", sa->sun_path, strerror(errno));
        return -1;
    }
    log_info(NULL, "control: removed stale socket %s", sa->sun_path);
    return 0;
}

struct control *
control_open(struct event_base *base, const char *path, struct queue *q,
    void (*on_flush)(void *arg), void *arg, char *err, size_t errlen)
{
    struct control *c;
    struct sockaddr_un sa;
    struct stat st;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control socket path %s",
            path == NULL || path[0] == '\0' ? "is empty" : "is too long for a unix socket");
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (control_clear_path(&sa, err, errlen) < 0)
        return NULL;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    /* Linux gives the socket file the mode of the socket's inode (less the umask): set it
       before bind so there is no instant when the file is open to others.  No chmod(path)
       after: as root it would follow a symlink put in the socket's place between bind and
       chmod; the file is checked instead (lstat: a socket, mode 0600 or less). */
    if (fchmod(fd, 0600) < 0) {
        snprintf(err, errlen, "fchmod: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (bind(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "%s: bind: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode) || (st.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s: not a socket of mode 0600 after bind", path);
        unlink(path);
        close(fd);
        return NULL;
    }
    if (listen(fd, CONTROL_BACKLOG) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(path);
        close(fd);
        return NULL;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(c);
        unlink(path);
        close(fd);
        return NULL;
    }
    c->base = base;
    c->q = q;
    c->on_flush = on_flush;
    c->on_flush_arg = arg;
    c->fd = fd;
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    control_set_timeouts(c, CONTROL_READ_TIMEOUT_MS, CONTROL_WRITE_TIMEOUT_MS);
    c->ev_accept = event_new(base, fd, EV_READ | EV_PERSIST, control_on_accept, c);
    c->ev_resume = evtimer_new(base, control_on_resume, c);
    if (c->ev_accept == NULL || c->ev_resume == NULL || event_add(c->ev_accept, NULL) < 0) {
        snprintf(err, errlen, "control: cannot create events");
        control_close(c);
        return NULL;
    }
    log_info(NULL, "control: listening on %s", path);
    return c;
}

void
control_set_queue(struct control *c, struct queue *q)
{
    c->q = q;
}

void
control_close(struct control *c)
{
    struct stat st;

    if (c == NULL)
        return;
    while (c->clients != NULL)
        control_client_free(c->clients);
    if (c->ev_accept != NULL)
        event_free(c->ev_accept);
    if (c->ev_resume != NULL)
        event_free(c->ev_resume);
    close(c->fd);
    /* A second ternd may have replaced our socket after we were wedged: leave its file. */
    if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
        unlink(c->path);
    free(c->path);
    free(c);
}
