/*
 * test_control.c - unit tests of the control socket (net/control.c) and of
 * `tern queue` (cli/queue.c), over a real unix socket with a real libevent
 * loop running in a second thread.
 *
 * The queue is a test double defined here (the queue.h functions control.c
 * uses), so these tests pin the protocol and the output formats without the
 * spool: exact mailq text, exact JSON, operator actions calling through,
 * errors, the client limit, the read and write timeouts, output bounds,
 * stale and live socket files.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/queue.h"
#include "net/control.h"
#include "queue/queue.h"

/* ---- the queue double ------------------------------------------------------------------- */

struct queue {
    struct queue_msg **msgs; /* sorted by ID, which is also arrival order here */
    size_t n, alloc;
    int holds, releases, deletes, flushes;
    char last_flush[SPOOL_ID_LEN + 1]; /* "" for a flush of everything */
};

static int
fq_cmp(const void *key, const void *elem)
{
    return strcmp(key, (*(struct queue_msg *const *)elem)->id);
}

static size_t
fq_index(struct queue *q, const char *id)
{
    struct queue_msg **m = bsearch(id, q->msgs, q->n, sizeof(*q->msgs), fq_cmp);

    return m == NULL ? (size_t)-1 : (size_t)(m - q->msgs);
}

struct queue_msg *
queue_find(struct queue *q, const char *id)
{
    size_t i = fq_index(q, id);

    return i == (size_t)-1 ? NULL : q->msgs[i];
}

int
queue_hold(struct queue *q, const char *id)
{
    struct queue_msg *m = queue_find(q, id);

    if (m == NULL)
        return -1;
    m->held = true;
    q->holds++;
    return 0;
}

int
queue_release(struct queue *q, const char *id)
{
    struct queue_msg *m = queue_find(q, id);

    if (m == NULL)
        return -1;
    m->held = false;
    q->releases++;
    return 0;
}

static void
fq_free_msg(struct queue_msg *m)
{
    unsigned i;

    for (i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].addr);
        free(m->rcpts[i].last_reply);
    }
    free(m->rcpts);
    free(m->sender);
    free(m);
}

/* Like the real one, a deleted message is gone (freed) at once. */
int
queue_delete(struct queue *q, const char *id)
{
    size_t i = fq_index(q, id);

    if (i == (size_t)-1)
        return -1;
    fq_free_msg(q->msgs[i]);
    memmove(&q->msgs[i], &q->msgs[i + 1], (q->n - i - 1) * sizeof(*q->msgs));
    q->n--;
    q->deletes++;
    return 0;
}

int
queue_flush(struct queue *q, const char *id)
{
    if (id != NULL && queue_find(q, id) == NULL)
        return -1;
    snprintf(q->last_flush, sizeof(q->last_flush), "%s", id != NULL ? id : "");
    q->flushes++;
    return 0;
}

void
queue_foreach(struct queue *q, int (*cb)(void *arg, const struct queue_msg *m), void *arg)
{
    size_t i;

    for (i = 0; i < q->n; i++)
        if (cb(arg, q->msgs[i]) != 0)
            return;
}

size_t
queue_count(const struct queue *q)
{
    return q->n;
}

const char *
queue_rcpt_state_name(enum queue_rcpt_state s)
{
    return s == QR_PENDING ? "p" : s == QR_DEFERRED ? "q" : s == QR_DELIVERED ? "D" : "F";
}

static struct queue_msg *
fq_add(struct queue *q, const char *id, const char *sender, time_t arrival, uint64_t size)
{
    struct queue_msg *m = calloc(1, sizeof(*m));

    assert_non_null(m);
    snprintf(m->id, sizeof(m->id), "%s", id);
    m->sender = strdup(sender);
    m->arrival = arrival;
    m->body_len = size;
    if (q->n == q->alloc) {
        q->alloc = q->alloc ? q->alloc * 2 : 16;
        q->msgs = realloc(q->msgs, q->alloc * sizeof(*q->msgs));
        assert_non_null(q->msgs);
    }
    q->msgs[q->n++] = m;
    return m;
}

static void
fq_rcpt(struct queue_msg *m, const char *addr, enum queue_rcpt_state st, unsigned attempts,
    time_t next, const char *reply)
{
    struct queue_rcpt *r;

    if ((m->nrcpts & (m->nrcpts - 1)) == 0) { /* 0, 1, 2, 4...: grow by doubling */
        m->rcpts = realloc(m->rcpts, (m->nrcpts ? m->nrcpts * 2 : 1) * sizeof(*m->rcpts));
        assert_non_null(m->rcpts);
    }
    r = &m->rcpts[m->nrcpts++];
    r->addr = strdup(addr);
    r->state = st;
    r->attempts = attempts;
    r->next_attempt = next;
    r->last_reply = reply != NULL ? strdup(reply) : NULL;
}

static void
fq_clear(struct queue *q)
{
    size_t i;

    for (i = 0; i < q->n; i++)
        fq_free_msg(q->msgs[i]);
    free(q->msgs);
    memset(q, 0, sizeof(*q));
}

#define M1 "00000000000000A1"
#define M2 "00000000000000B2"
#define M3 "00000000000000C3"

/* Three messages: deferred recipients sharing a reply, a delivered one (not listed in the
   text), a pending one without reply; a held bounce; a busy one with hostile bytes. */
static void
fq_sample(struct queue *q)
{
    struct queue_msg *m;

    m = fq_add(q, M1, "alice@example.org", 1700000000, 2048);
    fq_rcpt(m, "bob@example.net", QR_DEFERRED, 2, 1700003600, "452 4.2.2 Mailbox full");
    fq_rcpt(m, "carol@example.net", QR_DEFERRED, 2, 1700003600, "452 4.2.2 Mailbox full");
    fq_rcpt(m, "dave@example.com", QR_DELIVERED, 1, 0, "250 2.0.0 Ok");
    fq_rcpt(m, "erin@example.com", QR_PENDING, 0, 0, NULL);
    m = fq_add(q, M2, "", 1700000000, 500);
    m->held = true;
    fq_rcpt(m, "x@example.com", QR_PENDING, 0, 0, NULL);
    m = fq_add(q, M3, "s\xc3\xa9@example.com", 1700000100, 100);
    m->busy = true;
    fq_rcpt(m, "y@example.com", QR_DEFERRED, 1, 1700000400, "421 4.4.2 \"bad\"\x01 conn\xff");
}

/* ---- the loop thread and the fixture ---------------------------------------------------- */

struct fx {
    char dir[64];
    char path[128];
    struct queue q;
    struct event_base *base;
    struct control *ctl;
    struct event *ev_stop;
    int stop[2];
    pthread_t thread;
    bool running;
    int flush_calls; /* on_flush, called on the loop thread */
};

static void
fx_on_stop(evutil_socket_t fd, short what, void *arg)
{
    char c;

    (void)what;
    if (read(fd, &c, 1) != 1) /* consumed, or the next fx_start would stop at once */
        fail_msg("stop pipe");
    event_base_loopbreak(arg);
}

static void *
fx_loop(void *arg)
{
    struct fx *f = arg;

    event_base_loop(f->base, 0);
    return NULL;
}

static void
fx_on_flush(void *arg)
{
    struct fx *f = arg;

    f->flush_calls++;
}

static void
fx_start(struct fx *f)
{
    assert_int_equal(pthread_create(&f->thread, NULL, fx_loop, f), 0);
    f->running = true;
}

static void
fx_stop(struct fx *f)
{
    if (!f->running)
        return;
    assert_int_equal(write(f->stop[1], "x", 1), 1);
    pthread_join(f->thread, NULL);
    f->running = false;
}

/* Everything but the loop thread: tests may still tune the control before fx_start. */
static int
fx_setup_quiet(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/tern-ctl-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(pipe(f->stop), 0);
    f->ev_stop = event_new(f->base, f->stop[0], EV_READ | EV_PERSIST, fx_on_stop, f->base);
    event_add(f->ev_stop, NULL);
    fq_sample(&f->q);
    f->ctl = control_open(f->base, f->path, &f->q, fx_on_flush, f, err, sizeof(err));
    if (f->ctl == NULL)
        fail_msg("control_open: %s", err);
    *state = f;
    return 0;
}

static int
fx_setup(void **state)
{
    fx_setup_quiet(state);
    fx_start(*state);
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;

    fx_stop(f);
    control_close(f->ctl);
    event_free(f->ev_stop);
    event_base_free(f->base);
    close(f->stop[0]);
    close(f->stop[1]);
    fq_clear(&f->q);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- client helpers --------------------------------------------------------------------- */

static int
cl_connect(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Read until EOF (or 5 s of silence: a test failure); NUL-terminated, malloc'd. */
static char *
cl_read_all(int fd, size_t *lenp)
{
    size_t len = 0, cap = 65536;
    char *out = malloc(cap + 1);

    assert_non_null(out);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 5000) != 1)
            fail_msg("no EOF from the server within 5 s");
        if (len == cap) {
            cap *= 2;
            out = realloc(out, cap + 1);
            assert_non_null(out);
        }
        n = read(fd, out + len, cap - len);
        if (n < 0 && errno == ECONNRESET)
            break;
        assert_true(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    if (lenp != NULL)
        *lenp = len;
    return out;
}

static char *
cl_request(const char *path, const char *req)
{
    int fd = cl_connect(path);
    char *out;

    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    out = cl_read_all(fd, NULL);
    close(fd);
    return out;
}

static void
expect_reply(const char *path, const char *req, const char *want)
{
    char *got = cl_request(path, req);

    assert_string_equal(got, want);
    free(got);
}

/* Run a CLI entry point with stdout captured into *out. */
static int
run_cli(int (*fn)(int, char **, const char *), const char *dflt, char **out, int argc, ...)
{
    char *argv[16];
    va_list ap;
    int i, rc, saved, tmp;
    char name[] = "/tmp/tern-ctl-out-XXXXXX";
    struct stat st;

    va_start(ap, argc);
    for (i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;

    fflush(stdout);
    tmp = mkstemp(name);
    assert_true(tmp >= 0);
    unlink(name);
    saved = dup(1);
    dup2(tmp, 1);
    rc = fn(argc, argv, dflt);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(fstat(tmp, &st), 0);
    *out = calloc(1, (size_t)st.st_size + 1);
    assert_int_equal(pread(tmp, *out, (size_t)st.st_size, 0), st.st_size);
    close(tmp);
    return rc;
}

/* Leave a socket file nobody listens on, as a crashed ternd would. */
static void
make_stale_socket(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(fd >= 0 && strlen(path) < sizeof(sa.sun_path));
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

/* ---- golden outputs --------------------------------------------------------------------- */

/* clang-format off */
#define SP41 "                                         "
#define SP54 "                                                      "
#define SP58 "                                                          "

static const char golden_text[] =
    "OK\n"
    "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
    "00000000000000A1    2048 Tue Nov 14 22:13:20  alice@example.org\n"
    SP54 "(452 4.2.2 Mailbox full)\n"
    SP41 "bob@example.net\n"
    SP41 "carol@example.net\n"
    SP58 "(reason unavailable)\n"
    SP41 "erin@example.com\n"
    "\n"
    "00000000000000B2!     500 Tue Nov 14 22:13:20  MAILER-DAEMON\n"
    SP41 "x@example.com\n"
    "\n"
    "00000000000000C3*     100 Tue Nov 14 22:15:00  s\xc3\xa9@example.com\n"
    SP54 "(421 4.4.2 \"bad\"? conn\xff)\n"
    SP41 "y@example.com\n"
    "\n"
    "-- 2 Kbytes in 3 Requests.\n";

static const char golden_json[] =
    "OK\n"
    "[\n"
    "{\"id\":\"00000000000000A1\",\"arrival\":1700000000,\"size\":2048,"
    "\"sender\":\"alice@example.org\",\"held\":false,\"recipients\":["
    "{\"addr\":\"bob@example.net\",\"state\":\"deferred\",\"attempts\":2,"
    "\"next_attempt\":1700003600,\"last_reply\":\"452 4.2.2 Mailbox full\"},"
    "{\"addr\":\"carol@example.net\",\"state\":\"deferred\",\"attempts\":2,"
    "\"next_attempt\":1700003600,\"last_reply\":\"452 4.2.2 Mailbox full\"},"
    "{\"addr\":\"dave@example.com\",\"state\":\"delivered\",\"attempts\":1,"
    "\"next_attempt\":0,\"last_reply\":\"250 2.0.0 Ok\"},"
    "{\"addr\":\"erin@example.com\",\"state\":\"pending\",\"attempts\":0,"
    "\"next_attempt\":0,\"last_reply\":null}]},\n"
    "{\"id\":\"00000000000000B2\",\"arrival\":1700000000,\"size\":500,"
    "\"sender\":\"\",\"held\":true,\"recipients\":["
    "{\"addr\":\"x@example.com\",\"state\":\"pending\",\"attempts\":0,"
    "\"next_attempt\":0,\"last_reply\":null}]},\n"
    "{\"id\":\"00000000000000C3\",\"arrival\":1700000100,\"size\":100,"
    "\"sender\":\"s\xc3\xa9@example.com\",\"held\":false,\"recipients\":["
    "{\"addr\":\"y@example.com\",\"state\":\"deferred\",\"attempts\":1,"
    "\"next_attempt\":1700000400,\"last_reply\":\"421 4.4.2 \\\"bad\\\"\\u0001 conn\\ufffd\"}]}\n"
    "]\n";

/* clang-format on */

/* ---- a minimal JSON checker (values, nesting, strings, numbers, literals) --------------- */

static const char *json_value(const char *p);

static const char *
json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

static const char *
json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                int i;
                for (i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0')
                        return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *
json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';

        p = json_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                p = json_string(json_ws(p));
                if (p == NULL || *(p = json_ws(p)) != ':')
                    return NULL;
                p++;
            }
            p = json_value(p);
            if (p == NULL)
                return NULL;
            p = json_ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (strncmp(p, "true", 4) == 0 || strncmp(p, "null", 4) == 0)
        return p + 4;
    if (strncmp(p, "false", 5) == 0)
        return p + 5;
    if (*p == '-' || (*p >= '0' && *p <= '9')) {
        p++;
        while (*p >= '0' && *p <= '9')
            p++;
        return p;
    }
    return NULL;
}

static bool
json_valid(const char *s)
{
    const char *end = json_value(s);

    return end != NULL && *json_ws(end) == '\0';
}

/* ---- tests ------------------------------------------------------------------------------ */

static void
test_list_text(void **state)
{
    struct fx *f = *state;

    expect_reply(f->path, "LIST\n", golden_text);
    expect_reply(f->path, "list\r\n", golden_text); /* verbs fold case; CRLF is fine */
}

static void
test_list_json(void **state)
{
    struct fx *f = *state;
    char *got = cl_request(f->path, "LIST JSON\n");

    assert_string_equal(got, golden_json);
    assert_true(json_valid(got + 3));
    free(got);
}

static void
test_list_empty(void **state)
{
    struct fx *f = *state;

    fx_stop(f);
    fq_clear(&f->q);
    fx_start(f);
    expect_reply(f->path, "LIST\n", "OK\nMail queue is empty\n");
    expect_reply(f->path, "LIST JSON\n", "OK\n[\n]\n");
    expect_reply(f->path, "COUNT\n", "OK\n0\n");
}

static void
test_actions(void **state)
{
    struct fx *f = *state;

    expect_reply(f->path, "COUNT\n", "OK\n3\n");
    expect_reply(f->path, "HOLD " M1 "\n", "OK\n");
    assert_int_equal(f->q.holds, 1);
    assert_true(queue_find(&f->q, M1)->held);
    expect_reply(f->path, "RELEASE " M2 "\n", "OK\n");
    assert_int_equal(f->q.releases, 1);
    assert_false(queue_find(&f->q, M2)->held);
    assert_int_equal(f->flush_calls, 1); /* a release wakes the scheduler too */

    expect_reply(f->path, "FLUSH\n", "OK\n");
    assert_int_equal(f->q.flushes, 1);
    assert_string_equal(f->q.last_flush, "");
    assert_int_equal(f->flush_calls, 2);
    expect_reply(f->path, "flush 00000000000000c3\n", "OK\n"); /* IDs fold to upper case */
    assert_int_equal(f->q.flushes, 2);
    assert_string_equal(f->q.last_flush, M3);
    assert_int_equal(f->flush_calls, 3);

    expect_reply(f->path, "DELETE " M2 "\n", "OK\n");
    assert_int_equal(f->q.deletes, 1);
    assert_null(queue_find(&f->q, M2));
    expect_reply(f->path, "COUNT\n", "OK\n2\n");
}

static void
test_errors(void **state)
{
    struct fx *f = *state;
    char *got;

    expect_reply(f->path, "HOLD 00000000000000ZZ\n", "ERR no such message 00000000000000ZZ\n");
    expect_reply(f->path, "RELEASE 00000000000000ZZ\n", "ERR no such message 00000000000000ZZ\n");
    expect_reply(f->path, "DELETE 00000000000000ZZ\n", "ERR no such message 00000000000000ZZ\n");
    expect_reply(f->path, "FLUSH 00000000000000ZZ\n", "ERR no such message 00000000000000ZZ\n");
    assert_int_equal(f->flush_calls, 0); /* a failed flush wakes nobody */
    expect_reply(f->path, "HOLD\n", "ERR HOLD needs a queue ID\n");
    expect_reply(f->path, "HOLD ../etc/passwd\n", "ERR malformed queue ID\n");
    expect_reply(f->path, "HOLD 00000000000000A1X\n", "ERR malformed queue ID\n");
    expect_reply(f->path, "HOLD " M1 " " M2 "\n", "ERR too many arguments to HOLD\n");
    expect_reply(f->path, "COUNT 1\n", "ERR too many arguments to COUNT\n");
    expect_reply(f->path, "LIST XML\n", "ERR LIST takes no argument but JSON\n");
    expect_reply(f->path, "\n", "ERR empty request\n");
    {
        int fd = cl_connect(f->path);

        assert_int_equal(write(fd, "COUNT\0X\n", 8), 8);
        got = cl_read_all(fd, NULL);
        assert_string_equal(got, "ERR NUL in request\n");
        free(got);
        close(fd);
    }
    got = cl_request(f->path, "SHUTDOWN\n");
    assert_true(strncmp(got, "ERR unknown command", 19) == 0);
    assert_non_null(strchr(got, '\n'));
    assert_string_equal(strchr(got, '\n'), "\n");
    free(got);
    assert_int_equal(f->q.holds + f->q.releases + f->q.deletes + f->q.flushes, 0);
    /* a request without its newline, ended by EOF, still counts */
    {
        int fd = cl_connect(f->path);

        assert_int_equal(write(fd, "COUNT", 5), 5);
        shutdown(fd, SHUT_WR);
        got = cl_read_all(fd, NULL);
        assert_string_equal(got, "OK\n3\n");
        free(got);
        close(fd);
    }
}

static void
test_long_line(void **state)
{
    struct fx *f = *state;
    char line[2000];
    int fd;
    char *got;

    memset(line, 'A', sizeof(line));
    fd = cl_connect(f->path);
    assert_int_equal(write(fd, line, sizeof(line)), (ssize_t)sizeof(line));
    got = cl_read_all(fd, NULL);
    assert_string_equal(got, "ERR request line too long\n");
    free(got);
    close(fd);

    /* 1023 bytes and the newline: the longest line there is, taken */
    memset(line, ' ', 1018);
    memcpy(line + 1018, "COUNT\n", 6);
    fd = cl_connect(f->path);
    assert_int_equal(write(fd, line, 1024), 1024);
    got = cl_read_all(fd, NULL);
    assert_string_equal(got, "OK\n3\n");
    free(got);
    close(fd);
}

static void
test_client_limit(void **state)
{
    struct fx *f = *state;
    int fds[CONTROL_MAX_CLIENTS], i, extra;
    char *got = NULL;

    for (i = 0; i < CONTROL_MAX_CLIENTS; i++)
        fds[i] = cl_connect(f->path);
    extra = cl_connect(f->path);
    got = cl_read_all(extra, NULL);
    assert_string_equal(got, "ERR too many clients\n");
    free(got);
    close(extra);

    /* once one leaves, there is room again (after the server has seen it go) */
    close(fds[0]);
    for (i = 0; i < 200; i++) {
        got = cl_request(f->path, "COUNT\n");
        if (strcmp(got, "OK\n3\n") == 0)
            break;
        assert_string_equal(got, "ERR too many clients\n");
        free(got);
        got = NULL;
        usleep(10000);
    }
    assert_non_null(got);
    free(got);
    for (i = 1; i < CONTROL_MAX_CLIENTS; i++)
        close(fds[i]);
}

static int
fx_setup_short(void **state)
{
    fx_setup_quiet(state);
    control_set_timeouts(((struct fx *)*state)->ctl, 200, 300);
    fx_start(*state);
    return 0;
}

static void
test_read_timeout(void **state)
{
    struct fx *f = *state;
    struct timespec t0, t1;
    int fd;
    char *got;
    double ms;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = cl_connect(f->path);
    got = cl_read_all(fd, NULL); /* sends nothing */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_string_equal(got, "ERR timeout\n");
    free(got);
    close(fd);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms >= 150 && ms < 3000);

    /* half a line is not a request either */
    fd = cl_connect(f->path);
    assert_int_equal(write(fd, "LI", 2), 2);
    got = cl_read_all(fd, NULL);
    assert_string_equal(got, "ERR timeout\n");
    free(got);
    close(fd);
}

static void
test_default_timeout(void **state)
{
    struct fx *f = *state;
    int fd = cl_connect(f->path);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char *got;

    /* the default is 5 s: still open after 1 s, closed with a reason by 7 s */
    assert_int_equal(poll(&p, 1, 1000), 0);
    assert_int_equal(poll(&p, 1, 6000), 1);
    got = cl_read_all(fd, NULL);
    assert_string_equal(got, "ERR timeout\n");
    free(got);
    close(fd);
}

/* A queue big enough that LIST must be produced in pieces while the client reads. */
static void
fq_big(struct queue *q, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        char id[SPOOL_ID_LEN + 1], a[64];
        struct queue_msg *m;

        snprintf(id, sizeof(id), "%016u", i);
        m = fq_add(q, id, "sender@example.org", 1700000000, 1024);
        snprintf(a, sizeof(a), "rcpt-%u@example.net", i);
        fq_rcpt(m, a, QR_DEFERRED, 3, 1700000000, "451 4.3.0 Try again later");
    }
}

static int
fx_setup_big(void **state)
{
    struct fx *f;

    fx_setup_quiet(state);
    f = *state;
    fq_clear(&f->q);
    fq_big(&f->q, 20000);
    fx_start(f);
    return 0;
}

static void
test_list_streamed(void **state)
{
    struct fx *f = *state;
    char *rest, *all, *p;
    size_t len, lines = 0;
    ssize_t n;
    int fd;
    char first[4096];

    /* a message deleted while the listing is under way is not printed: the server formats
       only a little ahead of what the client has read */
    fd = cl_connect(f->path);
    assert_int_equal(write(fd, "LIST\n", 5), 5);
    n = read(fd, first, sizeof(first));
    assert_true(n > 0);
    expect_reply(f->path, "DELETE 0000000000019999\n", "OK\n");
    rest = cl_read_all(fd, &len);
    close(fd);
    all = malloc((size_t)n + len + 1);
    assert_non_null(all);
    memcpy(all, first, (size_t)n);
    memcpy(all + n, rest, len + 1);
    free(rest);

    if (strncmp(all, "OK\n-Queue ID-", 13) != 0)
        fail_msg("got %.200s", all);
    assert_null(strstr(all, "rcpt-19999@"));
    assert_non_null(strstr(all, "\n" SP41 "rcpt-19998@example.net\n"));
    assert_true(strlen(all) > 2000000);
    for (p = all; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    /* OK, header, 19999 x (row, reason, recipient), 19998 blank separators, blank, summary */
    assert_int_equal(lines, 1 + 1 + 19999 * 3 + 19998 + 2);
    p = all + strlen(all) - strlen("\n-- 19999 Kbytes in 19999 Requests.\n");
    assert_string_equal(p, "\n-- 19999 Kbytes in 19999 Requests.\n");
    free(all);
}

static void
test_list_json_big(void **state)
{
    struct fx *f = *state;
    char *got = cl_request(f->path, "LIST JSON\n");

    assert_true(strncmp(got, "OK\n[\n", 5) == 0);
    assert_true(json_valid(got + 3));
    assert_non_null(strstr(got, "\"id\":\"0000000000019999\""));
    free(got);
}

static void
test_slow_reader_dropped(void **state)
{
    struct fx *f = *state;
    int fd = cl_connect(f->path);
    char *got;
    size_t len;

    /* asks for a few MB and does not read: dropped after the 300 ms write timeout */
    assert_int_equal(write(fd, "LIST\n", 5), 5);
    usleep(1500000);
    got = cl_read_all(fd, &len);
    assert_true(strncmp(got, "OK\n", 3) == 0);
    assert_true(len < 1000000);
    assert_null(strstr(got, "Requests."));
    free(got);
    close(fd);
    /* and the server is fine */
    expect_reply(f->path, "COUNT\n", "OK\n20000\n");
}

static int
fx_setup_big_short(void **state)
{
    struct fx *f;

    fx_setup_quiet(state);
    f = *state;
    fq_clear(&f->q);
    fq_big(&f->q, 20000);
    control_set_timeouts(f->ctl, 200, 300);
    fx_start(f);
    return 0;
}

static void
test_output_bound(void **state)
{
    struct fx *f = *state;
    struct queue_msg *m;
    char addr[200];
    unsigned i;

    /* one message whose entry alone is past 16 MiB: refused, not buffered */
    fx_stop(f);
    fq_clear(&f->q);
    m = fq_add(&f->q, M1, "a@example.org", 1700000000, 1);
    memset(addr, 'x', 150);
    strcpy(addr + 150, "@example.net");
    for (i = 0; i < 100000; i++)
        fq_rcpt(m, addr, QR_PENDING, 0, 0, NULL);
    fx_start(f);
    expect_reply(f->path, "LIST\n", "ERR response too large\n");
    expect_reply(f->path, "COUNT\n", "OK\n1\n");
}

static void
test_socket_file(void **state)
{
    struct fx *f = *state;
    struct stat st;
    struct event_base *b2;
    char err[256], other[160];
    int rc;
    FILE *fp;

    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    /* a second server on a live socket refuses to start */
    b2 = event_base_new();
    assert_null(control_open(b2, f->path, &f->q, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "another process"));

    /* a stale socket (nobody listening) is replaced */
    snprintf(other, sizeof(other), "%s/stale.sock", f->dir);
    make_stale_socket(other);
    {
        struct control *c2 = control_open(b2, other, &f->q, NULL, NULL, err, sizeof(err));

        assert_non_null(c2);
        control_close(c2);
        assert_int_equal(stat(other, &st), -1); /* removed at close */
    }

    /* a regular file is never removed */
    fp = fopen(other, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_null(control_open(b2, other, &f->q, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(stat(other, &st), 0);
    unlink(other);

    /* a path too long for sun_path */
    memset(other, 'a', sizeof(other) - 1);
    other[0] = '/';
    other[sizeof(other) - 1] = '\0';
    assert_null(control_open(b2, other, &f->q, NULL, NULL, err, sizeof(err)));
    rc = strstr(err, "too long") != NULL;
    assert_true(rc);
    event_base_free(b2);
}

static void
test_cli(void **state)
{
    struct fx *f = *state;
    char *out, nowhere[160];
    int rc;

    rc = run_cli(cli_queue_main, f->path, &out, 1, "queue");
    assert_int_equal(rc, 0);
    assert_string_equal(out, golden_text + 3);
    free(out);

    rc = run_cli(cli_queue_main, "/nonexistent", &out, 4, "queue", "list", "-s", f->path);
    assert_int_equal(rc, 0);
    assert_string_equal(out, golden_text + 3);
    free(out);

    rc = run_cli(cli_queue_main, NULL, &out, 3, "queue", "--json", "--socket=/dev/null/x");
    assert_int_equal(rc, 75); /* ENOTDIR: no socket there */
    free(out);

    rc = run_cli(cli_mailq_main, f->path, &out, 2, "mailq", "--json");
    assert_int_equal(rc, 0);
    assert_string_equal(out, golden_json + 3);
    free(out);

    rc = run_cli(cli_queue_main, f->path, &out, 2, "queue", "count");
    assert_int_equal(rc, 0);
    assert_string_equal(out, "3\n");
    free(out);

    rc = run_cli(cli_queue_main, f->path, &out, 4, "queue", "hold", M1, M3);
    assert_int_equal(rc, 0);
    assert_string_equal(out, M1 ": held\n" M3 ": held\n");
    assert_int_equal(f->q.holds, 2);
    free(out);

    /* an unknown ID among good ones: the others are still done, exit 1 */
    rc = run_cli(cli_queue_main, f->path, &out, 4, "queue", "release", "00000000000000ZZ", M1);
    assert_int_equal(rc, 1);
    assert_string_equal(out, M1 ": released\n");
    assert_int_equal(f->q.releases, 1);
    free(out);

    rc = run_cli(cli_queue_main, f->path, &out, 2, "queue", "flush");
    assert_int_equal(rc, 0);
    assert_int_equal(f->flush_calls, 2); /* the release and the flush */
    free(out);

    rc = run_cli(cli_queue_main, f->path, &out, 3, "queue", "delete", M2);
    assert_int_equal(rc, 0);
    assert_null(queue_find(&f->q, M2));
    free(out);

    /* usage errors: 64, and nothing sent */
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 2, "queue", "delete"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 2, "queue", "frobnicate"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 3, "queue", "count", "--json"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 2, "queue", "-x"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 2, "queue", "-s"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, NULL, &out, 1, "queue"), 64);
    free(out);
    assert_int_equal(run_cli(cli_mailq_main, f->path, &out, 2, "mailq", "extra"), 64);
    free(out);
    assert_int_equal(run_cli(cli_queue_main, f->path, &out, 2, "queue", "--help"), 0);
    assert_non_null(strstr(out, "usage:"));
    free(out);

    /* daemon not running: no file, or a socket nobody listens on */
    snprintf(nowhere, sizeof(nowhere), "%s/none.sock", f->dir);
    assert_int_equal(run_cli(cli_queue_main, nowhere, &out, 1, "queue"), 75);
    free(out);
    make_stale_socket(nowhere);
    assert_int_equal(run_cli(cli_mailq_main, nowhere, &out, 1, "mailq"), 75);
    free(out);
    unlink(nowhere);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_text, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_json, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_empty, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_actions, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_long_line, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_client_limit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout, fx_setup_short, fx_teardown),
        cmocka_unit_test_setup_teardown(test_default_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_streamed, fx_setup_big, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_json_big, fx_setup_big, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_dropped, fx_setup_big_short, fx_teardown),
        cmocka_unit_test_setup_teardown(test_output_bound, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_socket_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cli, fx_setup, fx_teardown),
    };

    /* the text format prints local time */
    setenv("TZ", "UTC", 1);
    tzset();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
