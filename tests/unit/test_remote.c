/*
 * test_remote.c - deliver/remote.c against real SMTP servers on 127.0.0.1:
 * the scriptable tests/e2e/smtpserver.py, one or two per test.
 *
 * Each test starts its servers (with their scripts), delivers one message
 * to the hosts in order, and checks every recipient's status, reply and
 * remote_mta, and what each server stored.  The server is strict about line
 * ends, so a bare CR or LF sent by the client would show as a refused
 * message.  The script is found under $TERN_SRCDIR, else SRCDIR (if
 * compiled in), else "." or "..".  Without python3 the tests are skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deliver/remote.h"
#include "scriptserver.h"

static char python[512];
static char script[1024];

struct server {
    pid_t pid;
    char dir[256];
    char maildir[300];
    unsigned port;
};

static struct server srv[2];

#define NEED_PYTHON()                                                                              \
    do {                                                                                           \
        if (python[0] == '\0')                                                                     \
            skip();                                                                                \
    } while (0)

/* Start server k with the given script entries (NULL-terminated). */
static void
server_start(int k, const char *const *specs)
{
    struct server *s = &srv[k];
    const char *argv[40];
    int argc = 0, i;
    char dir[256] = "/tmp/test_remote.XXXXXX";

    memset(s, 0, sizeof(*s));
    assert_non_null(mkdtemp(dir));
    memcpy(s->dir, dir, sizeof(dir));
    snprintf(s->maildir, sizeof(s->maildir), "%s/mail", dir);
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--maildir";
    argv[argc++] = s->maildir;
    argv[argc++] = "--idle";
    argv[argc++] = "20";
    for (i = 0; specs != NULL && specs[i] != NULL && argc < 38; i++) {
        argv[argc++] = "--script";
        argv[argc++] = specs[i];
    }
    argv[argc] = NULL;
    if ((s->pid = scriptserver_spawn(python, script, argv, &s->port)) < 0)
        fail_msg("smtpserver.py did not start (%s)", script);
}

static int
teardown(void **state)
{
    int k;

    for (k = 0; k < 2; k++) {
        if (srv[k].pid > 0) {
            kill(srv[k].pid, SIGTERM);
            waitpid(srv[k].pid, NULL, 0);
        }
        if (srv[k].dir[0] != '\0')
            scriptserver_rmtree(srv[k].dir);
        memset(&srv[k], 0, sizeof(srv[k]));
    }
    return 0;
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static unsigned
closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void
host_init(struct remote_host *h, const char *name, unsigned port)
{
    struct sockaddr_in *a = (struct sockaddr_in *)&h->addr;

    memset(h, 0, sizeof(*h));
    snprintf(h->name, sizeof(h->name), "%s", name);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->addrlen = sizeof(*a);
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p;
    long n;

    if (f == NULL)
        return NULL;
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return p;
}

static char *
stored(int k, const char *addr, int n, size_t *len)
{
    char path[700];

    snprintf(path, sizeof(path), "%s/%s/%d.eml", srv[k].maildir, addr, n);
    return slurp(path, len);
}

static void
assert_stored(int k, const char *addr, const char *want)
{
    size_t len;
    char *got = stored(k, addr, 1, &len);

    if (got == NULL)
        fail_msg("server %d stored nothing for %s", k, addr);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
    assert_null(stored(k, addr, 2, NULL));
}

/* Server k's transcript ("" when it had no connection). */
static char *
transcript(int k)
{
    char path[700];
    char *t;

    snprintf(path, sizeof(path), "%s/transcript.txt", srv[k].maildir);
    t = slurp(path, NULL);
    return t != NULL ? t : strdup("");
}

struct msg {
    struct delivery_msg m;
    struct delivery_rcpt r[8];
    char path[300];
};

static void
msg_init(struct msg *x, const char *body, const char *const *rcpts)
{
    size_t len = strlen(body);
    int fd, i;

    memset(x, 0, sizeof(*x));
    snprintf(x->path, sizeof(x->path), "/tmp/test_remote_segment.XXXXXX");
    fd = mkstemp(x->path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "JUNK.\r\n", 7), 7);
    assert_int_equal(write(fd, body, len), (ssize_t)len);
    assert_int_equal(write(fd, "\r\n.\r\nMORE", 9), 9);
    close(fd);
    x->m.id = "TESTID";
    x->m.sender = "sender@example.net";
    x->m.body_fd = open(x->path, O_RDONLY);
    assert_true(x->m.body_fd >= 0);
    x->m.body_off = 7;
    x->m.body_len = len;
    x->m.rcpts = x->r;
    for (i = 0; rcpts[i] != NULL; i++) {
        x->r[i].addr = rcpts[i];
        x->r[i].status = (enum delivery_status)99;
        strcpy(x->r[i].remote_mta, "junk");
    }
    x->m.nrcpts = (unsigned)i;
}

static struct remote_conf conf = {.hostname = "client.test", .timeout_quit = 2};

static void
msg_deliver(struct msg *x, const struct remote_conf *c, const struct remote_host *h, size_t nh)
{
    remote_deliver(c, h, nh, &x->m);
    close(x->m.body_fd);
    unlink(x->path);
}

static void
assert_outcome(const struct delivery_rcpt *r, enum delivery_status st, const char *reply_prefix,
    const char *mta)
{
    if (r->status != st || strncmp(r->reply, reply_prefix, strlen(reply_prefix)) != 0 ||
        strcmp(r->remote_mta, mta) != 0)
        fail_msg("<%s>: status %d reply \"%s\" mta \"%s\"; wanted %d \"%s...\" \"%s\"", r->addr,
            r->status, r->reply, r->remote_mta, st, reply_prefix, mta);
}

static const char body1[] = "From: a@example.net\r\nSubject: hi\r\n\r\nHello.\r\n";

static void
test_delivered(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct remote_host h;
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(0, NULL);
    host_init(&h, "mx1.test", srv[0].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, &h, 1);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
    assert_outcome(&x.r[1], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
    assert_stored(0, "alice@example.org", body1);
    assert_stored(0, "bob@example.org", body1);
    t = transcript(0);
    /* PIPELINING: MAIL, both RCPTs and DATA arrived together; SIZE announced */
    assert_non_null(strstr(t, "C: MAIL FROM:<sender@example.net> SIZE=44\n# pipelined\n"));
    assert_non_null(strstr(t, "C: QUIT\n"));
    free(t);
}

static void
test_421_greeting_then_second(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *first[] = {"greeting=421 4.3.2 Service shutting down", NULL};
    struct remote_host h[2];
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(0, first);
    server_start(1, NULL);
    host_init(&h[0], "mx1.test", srv[0].port);
    host_init(&h[1], "mx2.test", srv[1].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx2.test");
    assert_null(stored(0, "alice@example.org", 1, NULL));
    assert_stored(1, "alice@example.org", body1);
    t = transcript(0);
    assert_null(strstr(t, "C: ")); /* nothing sent after a 421 */
    free(t);
}

static void
test_refused_then_second(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    struct remote_host h[2];
    struct msg x;

    NEED_PYTHON();
    server_start(1, NULL);
    host_init(&h[0], "mx1.test", closed_port());
    host_init(&h[1], "mx2.test", srv[1].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx2.test");
    assert_stored(1, "alice@example.org", body1);
}

static void
test_all_hosts_fail(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *first[] = {"greeting=554 5.7.1 Go away", NULL};
    struct remote_host h[2];
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(0, first);
    host_init(&h[0], "mx1.test", srv[0].port);
    host_init(&h[1], "mx2.test", closed_port());
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    /* the last reply a server gave, kept over the later connection failure, and TEMP */
    assert_outcome(&x.r[0], DLV_TEMP, "554 5.7.1 Go away", "mx1.test");
    t = transcript(0);
    assert_non_null(strstr(t, "C: QUIT\n"));
    free(t);
    /* only refused connections: R_DLV_CONNECT_FAILED naming the last host */
    host_init(&h[0], "mx1.test", closed_port());
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    assert_outcome(&x.r[0], DLV_TEMP, "451 4.4.1 Connection to mx2.test[127.0.0.1]:", "");
    assert_non_null(strstr(x.r[0].reply, "refused"));
}

static void
test_rcpt_replies(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", "carol@example.org", NULL};
    const char *first[] = {"rcpt:bob@example.org=450 4.2.1 Try later",
        "rcpt:carol@example.org=550-5.1.1 No such\\n550 5.1.1 user", NULL};
    struct remote_host h[2];
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(0, first);
    server_start(1, NULL);
    host_init(&h[0], "mx1.test", srv[0].port);
    host_init(&h[1], "mx2.test", srv[1].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
    assert_outcome(&x.r[1], DLV_TEMP, "450 4.2.1 Try later", "mx1.test");
    assert_outcome(&x.r[2], DLV_PERM, "550 5.1.1 No such; user", "mx1.test");
    assert_stored(0, "alice@example.org", body1);
    /* decided by the first server: the second is not asked */
    t = transcript(1);
    assert_string_equal(t, "");
    free(t);
}

static void
test_452_at_end_of_data(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    const char *first[] = {"dot=452 4.3.1 Insufficient system storage", NULL};
    struct remote_host h;
    struct msg x;

    NEED_PYTHON();
    server_start(0, first);
    host_init(&h, "mx1.test", srv[0].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, &h, 1);
    assert_outcome(&x.r[0], DLV_TEMP, "452 4.3.1 Insufficient system storage", "mx1.test");
    assert_outcome(&x.r[1], DLV_TEMP, "452 4.3.1 Insufficient system storage", "mx1.test");
}

static void
test_timeouts(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *greet[] = {"stall=greeting", NULL};
    const char *dot[] = {"stall=dot", NULL};
    struct remote_conf c = conf;
    struct remote_host h[2];
    struct msg x;
    time_t t0;

    NEED_PYTHON();
    c.timeout_greeting = 1;
    c.timeout_dot = 1;
    server_start(0, greet);
    server_start(1, dot);
    host_init(&h[0], "mx1.test", srv[0].port);
    host_init(&h[1], "mx2.test", srv[1].port);
    msg_init(&x, body1, rcpts);
    t0 = time(NULL);
    msg_deliver(&x, &c, h, 1);
    assert_true(time(NULL) - t0 <= 3);
    assert_outcome(&x.r[0], DLV_TEMP, "451 4.4.1 Connection to mx1.test[127.0.0.1]:", "");
    assert_non_null(strstr(x.r[0].reply, "timeout waiting for the greeting"));

    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &c, h + 1, 1);
    assert_outcome(
        &x.r[0], DLV_TEMP, "451 4.5.0 Protocol error with mx2.test[127.0.0.1]:", "mx2.test");
    assert_non_null(strstr(x.r[0].reply, "timeout waiting for the reply to the end of data"));
}

static void
test_smtputf8_not_offered(void **state)
{
    const char *rcpts[] = {"j\xc3\xb6rg@example.org", NULL};
    const char *no_utf8[] = {"no-ext=SMTPUTF8", NULL};
    struct remote_host h;
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(0, no_utf8);
    host_init(&h, "mx1.test", srv[0].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, &h, 1);
    assert_outcome(&x.r[0], DLV_PERM, "553 5.6.7 mx1.test[127.0.0.1]:", "mx1.test");
    t = transcript(0);
    assert_null(strstr(t, "C: MAIL"));
    free(t);
}

static void
test_size_and_line_ends(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *small[] = {"ext=SIZE 10", NULL};
    struct remote_host h;
    struct msg x;

    NEED_PYTHON();
    server_start(0, small);
    host_init(&h, "mx1.test", srv[0].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, &h, 1);
    assert_outcome(&x.r[0], DLV_PERM, "552 5.3.4 ", "mx1.test");
    assert_non_null(strstr(x.r[0].reply, " 10 octets"));
    teardown(state);

    /* bare LF and CR in the stored body go out as CRLF; a leading dot is doubled */
    server_start(0, NULL);
    host_init(&h, "mx1.test", srv[0].port);
    msg_init(&x, "a\n.b\rc\r\n", rcpts);
    msg_deliver(&x, &conf, &h, 1);
    assert_outcome(&x.r[0], DLV_OK, "250 ", "mx1.test");
    assert_stored(0, "alice@example.org", "a\r\n.b\r\nc\r\n");
}

static void
test_421_at_rcpt_then_second(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    const char *first[] = {"rcpt:bob@example.org=421 4.3.2 Bye", "no-ext=PIPELINING", NULL};
    struct remote_host h[2];
    struct msg x;

    NEED_PYTHON();
    server_start(0, first);
    server_start(1, NULL);
    host_init(&h[0], "mx1.test", srv[0].port);
    host_init(&h[1], "mx2.test", srv[1].port);
    msg_init(&x, body1, rcpts);
    msg_deliver(&x, &conf, h, 2);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx2.test");
    assert_outcome(&x.r[1], DLV_OK, "250 2.0.0 Ok: queued", "mx2.test");
    assert_null(stored(0, "alice@example.org", 1, NULL));
    assert_stored(1, "alice@example.org", body1);
    assert_stored(1, "bob@example.org", body1);
}

/* Count the occurrences of needle in hay. */
static int
count_of(const char *hay, const char *needle)
{
    int n = 0;

    for (; (hay = strstr(hay, needle)) != NULL; hay += strlen(needle))
        n++;
    return n;
}

/* Messages 0..n-1 to m<i>@example.org on one remote_conn; returns its connection count. */
static unsigned
conn_deliver(struct msg *x, int n, const struct remote_host *h, size_t nh)
{
    static const char *names[] = {"m0@example.org", "m1@example.org", "m2@example.org",
        "m3@example.org", "m4@example.org", "m5@example.org", "m6@example.org"};
    struct remote_conn *rc = remote_conn_new(&conf, h, nh);
    unsigned c;
    int i;

    assert_non_null(rc);
    assert_true(n <= 7);
    for (i = 0; i < n; i++) {
        const char *rcpts[] = {names[i], NULL};

        msg_init(&x[i], body1, rcpts);
        remote_conn_deliver(rc, &x[i].m);
        close(x[i].m.body_fd);
        unlink(x[i].path);
    }
    c = remote_conn_connections(rc);
    remote_conn_free(rc);
    return c;
}

/*
 * Messages 0..n-1 on one remote_conn to a server run with specs: each must be
 * delivered and stored, over want_conns connections.  Returns the transcript.
 */
static char *
conn_all_delivered(const char *const *specs, struct msg *x, int n, unsigned want_conns)
{
    static const char *names[] = {"m0@example.org", "m1@example.org", "m2@example.org",
        "m3@example.org", "m4@example.org", "m5@example.org", "m6@example.org"};
    struct remote_host h;
    int i;

    NEED_PYTHON();
    server_start(0, specs);
    host_init(&h, "mx1.test", srv[0].port);
    assert_int_equal(conn_deliver(x, n, &h, 1), want_conns);
    for (i = 0; i < n; i++) {
        assert_outcome(&x[i].r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
        assert_stored(0, names[i], body1);
    }
    return transcript(0);
}

static void
test_conn_reuse(void **state)
{
    struct msg x[3];
    char *t = conn_all_delivered(NULL, x, 3, 1);

    assert_int_equal(count_of(t, "# connect"), 1);
    assert_int_equal(count_of(t, "C: MAIL FROM:"), 3);
    assert_int_equal(count_of(t, "C: EHLO"), 1);
    assert_int_equal(count_of(t, "C: RSET"), 0); /* RFC 5321 §3.3: MAIL after the dot's reply */
    assert_int_equal(count_of(t, "C: QUIT"), 1);
    free(t);
}

/* The server closes with 421 after two messages: the rest go on fresh connections, once. */
static void
test_conn_421_fresh_connection(void **state)
{
    const char *specs[] = {"max-messages=2", NULL};
    struct msg x[5];
    char *t = conn_all_delivered(specs, x, 5, 3);

    assert_int_equal(count_of(t, "# connect"), 3);
    assert_int_equal(count_of(t, "S: 421 4.7.0 Too many messages on one connection"), 2);
    assert_int_equal(count_of(t, "C: MAIL FROM:"), 7); /* each 421 answers a third MAIL */
    free(t);
}

/* The server closes the idle connection after two messages: the next one connects afresh. */
static void
test_conn_closed_while_idle(void **state)
{
    const char *specs[] = {"close-after=2", NULL};
    struct msg x[5];
    char *t = conn_all_delivered(specs, x, 5, 3);

    assert_int_equal(count_of(t, "# connect"), 3);
    assert_int_equal(count_of(t, "C: MAIL FROM:"), 5);
    free(t);
}

/* A 550 to one message's RCPT on a reused connection decides that message only. */
static void
test_conn_rcpt_refused_one_message(void **state)
{
    const char *specs[] = {"rcpt:m1@example.org=550 5.1.1 No such user", NULL};
    struct remote_host h;
    struct msg x[3];
    char *t;

    NEED_PYTHON();
    server_start(0, specs);
    host_init(&h, "mx1.test", srv[0].port);
    assert_int_equal(conn_deliver(x, 3, &h, 1), 1);
    assert_outcome(&x[0].r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
    assert_outcome(&x[1].r[0], DLV_PERM, "550 5.1.1 No such user", "mx1.test");
    assert_outcome(&x[2].r[0], DLV_OK, "250 2.0.0 Ok: queued", "mx1.test");
    assert_null(stored(0, "m1@example.org", 1, NULL));
    assert_stored(0, "m2@example.org", body1);
    t = transcript(0);
    assert_int_equal(count_of(t, "# connect"), 1);
    free(t);
}

/* No MX takes connections: each is tried once per remote_conn, not once per message. */
static void
test_conn_refused_hosts_once(void **state)
{
    struct remote_host h[2];
    struct msg x[3];
    char want[200];
    int i;

    host_init(&h[0], "mx1.test", closed_port());
    host_init(&h[1], "mx2.test", closed_port());
    assert_int_equal(conn_deliver(x, 3, h, 2), 2);
    snprintf(want, sizeof(want),
        "451 4.4.1 Connection to mx2.test[127.0.0.1]:%u failed: "
        "Connection refused",
        ntohs(((struct sockaddr_in *)&h[1].addr)->sin_port));
    for (i = 0; i < 3; i++)
        assert_outcome(&x[i].r[0], DLV_TEMP, want, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_delivered, teardown),
        cmocka_unit_test_teardown(test_421_greeting_then_second, teardown),
        cmocka_unit_test_teardown(test_refused_then_second, teardown),
        cmocka_unit_test_teardown(test_all_hosts_fail, teardown),
        cmocka_unit_test_teardown(test_rcpt_replies, teardown),
        cmocka_unit_test_teardown(test_452_at_end_of_data, teardown),
        cmocka_unit_test_teardown(test_timeouts, teardown),
        cmocka_unit_test_teardown(test_smtputf8_not_offered, teardown),
        cmocka_unit_test_teardown(test_size_and_line_ends, teardown),
        cmocka_unit_test_teardown(test_421_at_rcpt_then_second, teardown),
        cmocka_unit_test_teardown(test_conn_reuse, teardown),
        cmocka_unit_test_teardown(test_conn_421_fresh_connection, teardown),
        cmocka_unit_test_teardown(test_conn_closed_while_idle, teardown),
        cmocka_unit_test_teardown(test_conn_rcpt_refused_one_message, teardown),
        cmocka_unit_test_teardown(test_conn_refused_hosts_once, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    if (!scriptserver_python(python, sizeof(python)))
        fprintf(stderr, "test_remote: no python3 in PATH; the tests are skipped\n");
    else if (!scriptserver_script("smtpserver.py", script, sizeof(script))) {
        fprintf(stderr, "test_remote: tests/e2e/smtpserver.py not found (set TERN_SRCDIR)\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
