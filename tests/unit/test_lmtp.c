/*
 * test_lmtp.c - deliver/lmtp.c against a real LMTP server: the scriptable
 * tests/e2e/lmtpserver.py, on a unix socket in a temporary directory or on
 * 127.0.0.1.
 *
 * Each test starts its own server (with its script), delivers one message,
 * and checks every recipient's status and reply, and what the server stored.
 * The server is strict about line ends, so a bare CR or LF sent by lmtp.c
 * would show as a failed delivery.  The server script is found under
 * $TERN_SRCDIR, else SRCDIR (if compiled in), else "." or "..".  Without
 * python3 the tests are skipped, with a message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* cmocka hands every test a state it may not need (meson builds with -Wno-unused-parameter). */
#pragma GCC diagnostic ignored "-Wunused-parameter"

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
#include <unistd.h>

#include "deliver/lmtp.h"
#include "scriptserver.h"

static char python[512];  /* python3's path, or "" */
static char script[1024]; /* lmtpserver.py's path */

struct server {
    pid_t pid;
    char dir[256]; /* the temporary directory */
    char maildir[300];
    char target[400]; /* for lmtp_conf */
};

static struct server srv;

/* Skip the calling test when there is no python3 (the message was printed in main). */
#define NEED_PYTHON()                                                                              \
    do {                                                                                           \
        if (python[0] == '\0')                                                                     \
            skip();                                                                                \
    } while (0)

/*
 * Start the server: on a unix socket (tcp false) or 127.0.0.1 with a free
 * port, with the given script entries (NULL-terminated).
 */
static void
server_start(bool tcp, const char *const *specs)
{
    const char *argv[40];
    int argc = 0, i;
    char sock[300];
    unsigned port = 0;

    memset(&srv, 0, sizeof(srv));
    snprintf(srv.dir, sizeof(srv.dir), "/tmp/test_lmtp.XXXXXX");
    assert_non_null(mkdtemp(srv.dir));
    snprintf(srv.maildir, sizeof(srv.maildir), "%s/mail", srv.dir);
    snprintf(sock, sizeof(sock), "%s/lmtp.sock", srv.dir);

    argv[argc++] = tcp ? "--port" : "--unix";
    argv[argc++] = tcp ? "0" : sock;
    argv[argc++] = "--maildir";
    argv[argc++] = srv.maildir;
    argv[argc++] = "--idle";
    argv[argc++] = "20";
    for (i = 0; specs != NULL && specs[i] != NULL && argc < 38; i++) {
        argv[argc++] = "--script";
        argv[argc++] = specs[i];
    }
    argv[argc] = NULL;
    if ((srv.pid = scriptserver_spawn(python, script, argv, &port)) < 0)
        fail_msg("lmtpserver.py did not start (%s)", script);
    if (tcp)
        snprintf(srv.target, sizeof(srv.target), "127.0.0.1:%u", port);
    else
        snprintf(srv.target, sizeof(srv.target), "unix:%s", sock);
}

static void
server_stop(void)
{
    if (srv.pid > 0) {
        kill(srv.pid, SIGTERM);
        waitpid(srv.pid, NULL, 0);
        srv.pid = 0;
    }
    if (srv.dir[0] != '\0')
        scriptserver_rmtree(srv.dir);
    srv.dir[0] = '\0';
}

static int
teardown(void **state)
{
    server_stop();
    return 0;
}

/* A whole file, NUL-terminated; NULL when it does not exist. */
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

/* What the server stored as message n for addr, or NULL. */
static char *
stored(const char *addr, int n, size_t *len)
{
    char path[600];

    snprintf(path, sizeof(path), "%s/%s/%d.eml", srv.maildir, addr, n);
    return slurp(path, len);
}

static void
assert_stored(const char *addr, const char *want, size_t wantlen)
{
    size_t len;
    char *got = stored(addr, 1, &len);

    assert_non_null(got);
    assert_int_equal(len, wantlen);
    assert_memory_equal(got, want, wantlen);
    free(got);
    assert_null(stored(addr, 2, NULL));
}

static char *
transcript(void)
{
    char path[600];
    char *t;

    snprintf(path, sizeof(path), "%s/transcript.txt", srv.maildir);
    t = slurp(path, NULL);
    assert_non_null(t);
    return t;
}

/* The message: body[0..len) stored after a few octets of junk, as in a spool segment. */
struct msg {
    struct delivery_msg m;
    struct delivery_rcpt r[8];
    char path[300];
};

static void
msg_init(struct msg *x, const char *body, size_t len, const char *const *rcpts)
{
    int fd, i;

    memset(x, 0, sizeof(*x));
    snprintf(x->path, sizeof(x->path), "/tmp/test_lmtp_segment.XXXXXX");
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
    }
    x->m.nrcpts = (unsigned)i;
}

static void
msg_deliver(struct msg *x, int timeout)
{
    struct lmtp_conf c = {.target = srv.target, .hostname = "tern.test", .timeout = timeout};

    lmtp_deliver(&c, &x->m);
    close(x->m.body_fd);
    unlink(x->path);
}

static void
assert_outcome(const struct delivery_rcpt *r, enum delivery_status st, const char *reply_prefix)
{
    if (r->status != st || strncmp(r->reply, reply_prefix, strlen(reply_prefix)) != 0)
        fail_msg("<%s>: status %d reply \"%s\"; wanted %d \"%s...\"", r->addr, r->status, r->reply,
            st, reply_prefix);
}

static const char body1[] = "From: a@example.net\r\nSubject: hi\r\n\r\nHello.\r\n";

static void
test_all_delivered_unix(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", "carol@example.org", NULL};
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(false, NULL);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_outcome(&x.r[1], DLV_OK, "250 2.0.0 <bob@example.org> delivered");
    assert_outcome(&x.r[2], DLV_OK, "250 2.0.0 <carol@example.org> delivered");
    assert_stored("alice@example.org", body1, strlen(body1));
    assert_stored("bob@example.org", body1, strlen(body1));
    assert_stored("carol@example.org", body1, strlen(body1));
    t = transcript();
    assert_non_null(strstr(t, "C: LHLO tern.test\n"));
    assert_non_null(strstr(t, "C: MAIL FROM:<sender@example.net>\n"));
    /* PIPELINING was advertised: MAIL, RCPTs and DATA went in one write */
    assert_non_null(strstr(t, "C: MAIL FROM:<sender@example.net>\n# pipelined\n"));
    assert_non_null(strstr(t, "C: QUIT\n"));
    free(t);
}

static void
test_all_delivered_tcp(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    struct msg x;

    NEED_PYTHON();
    server_start(true, NULL);
    msg_init(&x, body1, strlen(body1), rcpts);
    x.m.sender = "";
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_stored("alice@example.org", body1, strlen(body1));
    char *t = transcript();
    assert_non_null(strstr(t, "C: MAIL FROM:<>\n"));
    free(t);
}

static void
test_rcpt_temp_and_perm(void **state)
{
    const char *specs[] = {
        "bob@example.org=452 4.2.2 full", "carol@example.org=550 5.1.1 nope", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", "carol@example.org", NULL};
    struct msg x;

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_outcome(&x.r[1], DLV_TEMP, "452 4.2.2 full");
    assert_string_equal(x.r[1].reply, "452 4.2.2 full");
    assert_outcome(&x.r[2], DLV_PERM, "550 5.1.1 nope");
    assert_string_equal(x.r[2].reply, "550 5.1.1 nope");
    assert_stored("alice@example.org", body1, strlen(body1));
    assert_null(stored("bob@example.org", 1, NULL));
    assert_null(stored("carol@example.org", 1, NULL));
}

/* LMTP's point: after the dot, one reply per recipient, each its own. */
static void
test_data_replies_per_recipient(void **state)
{
    const char *specs[] = {"data:bob@example.org=452 4.2.2 Mailbox full",
        "data:carol@example.org=550-5.1.1 first line\\n550 5.1.1 second line", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", "carol@example.org", NULL};
    struct msg x;

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_string_equal(x.r[1].reply, "452 4.2.2 Mailbox full");
    assert_int_equal(x.r[1].status, DLV_TEMP);
    assert_string_equal(x.r[2].reply, "550 5.1.1 first line; second line");
    assert_int_equal(x.r[2].status, DLV_PERM);
}

/* Every RCPT refused: no DATA (without pipelining, where that is visible), then QUIT. */
static void
test_all_refused(void **state)
{
    const char *specs[] = {"no-pipelining", "alice@example.org=550 5.1.1 no such user",
        "bob@example.org=451 4.3.0 try later", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_PERM, "550 5.1.1 no such user");
    assert_outcome(&x.r[1], DLV_TEMP, "451 4.3.0 try later");
    t = transcript();
    assert_null(strstr(t, "C: DATA"));
    assert_null(strstr(t, "503"));
    assert_non_null(strstr(t, "C: QUIT\n"));
    free(t);
}

static void
test_no_pipelining(void **state)
{
    const char *specs[] = {"no-pipelining", "bob@example.org=550 5.1.1 nope", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", "carol@example.org", NULL};
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(true, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_outcome(&x.r[1], DLV_PERM, "550 5.1.1 nope");
    assert_outcome(&x.r[2], DLV_OK, "250 2.0.0 <carol@example.org> delivered");
    assert_stored("carol@example.org", body1, strlen(body1));
    t = transcript();
    assert_null(strstr(t, "# pipelined"));
    assert_null(strstr(t, "503"));
    free(t);
}

static void
test_refused_unix(void **state)
{
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char want[600];

    memset(&srv, 0, sizeof(srv));
    snprintf(srv.target, sizeof(srv.target), "unix:/nonexistent/tern-test-lmtp.sock");
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 5);
    snprintf(want, sizeof(want), "451 4.4.1 LMTP server %s not reachable: %s", srv.target,
        strerror(ENOENT));
    assert_string_equal(x.r[0].reply, want);
    assert_int_equal(x.r[0].status, DLV_TEMP);
    assert_string_equal(x.r[1].reply, want);
    assert_int_equal(x.r[1].status, DLV_TEMP);
}

static void
test_refused_tcp(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    struct msg x;
    char want[600];
    int fd;

    /* A port that was free a moment ago and has no listener. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    memset(&srv, 0, sizeof(srv));
    snprintf(srv.target, sizeof(srv.target), "127.0.0.1:%u", ntohs(sin.sin_port));
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 5);
    close(fd);
    snprintf(want, sizeof(want), "451 4.4.1 LMTP server %s not reachable: %s", srv.target,
        strerror(ECONNREFUSED));
    assert_string_equal(x.r[0].reply, want);
    assert_int_equal(x.r[0].status, DLV_TEMP);
}

static void
test_bad_target(void **state)
{
    static const char *const targets[] = {"", "unix:", "localhost:24", "127.0.0.1",
        "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:24x", "::1:24", "[127.0.0.1]:24",
        "[::1:24"};
    const char *rcpts[] = {"alice@example.org", NULL};
    struct msg x;
    size_t i;

    memset(&srv, 0, sizeof(srv));
    for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        snprintf(srv.target, sizeof(srv.target), "%s", targets[i]);
        msg_init(&x, body1, strlen(body1), rcpts);
        msg_deliver(&x, 5);
        assert_int_equal(x.r[0].status, DLV_TEMP);
        assert_non_null(strstr(x.r[0].reply, "not an address"));
    }
}

static void
test_close_after_data(void **state)
{
    const char *specs[] = {"close-after-data", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char want[600];

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    snprintf(want, sizeof(want), "451 4.4.1 LMTP server %s not reachable: connection closed",
        srv.target);
    assert_string_equal(x.r[0].reply, want);
    assert_int_equal(x.r[0].status, DLV_TEMP);
    assert_string_equal(x.r[1].reply, want);
    assert_int_equal(x.r[1].status, DLV_TEMP);
}

static void
test_malformed_reply(void **state)
{
    const char *specs[] = {"malformed", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char want[600];

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    snprintf(want, sizeof(want), "451 4.5.0 LMTP server %s: malformed reply: ", srv.target);
    assert_outcome(&x.r[0], DLV_TEMP, want);
    assert_outcome(&x.r[1], DLV_TEMP, want);
    assert_null(stored("alice@example.org", 1, NULL));
}

/* A multi-line reply whose lines disagree is malformed too. */
static void
test_mixed_code_reply(void **state)
{
    const char *specs[] = {"data:bob@example.org=250-2.0.0 ok\\n550 5.0.0 no", NULL};
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char want[600];

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    snprintf(want, sizeof(want), "451 4.5.0 LMTP server %s: malformed reply: ", srv.target);
    assert_outcome(&x.r[1], DLV_TEMP, want);
}

static void
test_greeting_refused(void **state)
{
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *temp[] = {"greeting=421 4.3.2 shutting down", NULL};
    const char *perm[] = {"greeting=554 5.3.2 not today", NULL};
    struct msg x;

    NEED_PYTHON();
    server_start(false, temp);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_TEMP, "421 4.3.2 shutting down");
    server_stop();
    /* a 5xx greeting is about the session, not the message: no bounce */
    server_start(false, perm);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_TEMP, "451 4.5.0 LMTP server");
    assert_non_null(strstr(x.r[0].reply, "greeting answered 554 5.3.2 not today"));
}

static void
test_timeout(void **state)
{
    const char *specs[] = {"stall", NULL};
    const char *rcpts[] = {"alice@example.org", NULL};
    struct msg x;
    char want[600];

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 1);
    snprintf(want, sizeof(want), "451 4.4.1 LMTP server %s not reachable: timeout", srv.target);
    assert_string_equal(x.r[0].reply, want);
    assert_int_equal(x.r[0].status, DLV_TEMP);
}

/* Lines starting with '.' arrive intact; bare LF and CR go out as CRLF; a last line gets CRLF. */
static void
test_dot_stuffing(void **state)
{
    static const char body[] = ".\r\n..\r\n.hidden\r\n\r\n.\r\nQUIT\r\nx.\r\n.";
    static const char want[] = ".\r\n..\r\n.hidden\r\n\r\n.\r\nQUIT\r\nx.\r\n.\r\n";
    static const char bare[] = "a\nb\rc\r\n.d\n.e\r";
    static const char bare_want[] = "a\r\nb\r\nc\r\n.d\r\n.e\r\n";
    const char *rcpts[] = {"alice@example.org", NULL};
    const char *rcpts2[] = {"bob@example.org", NULL};
    const char *rcpts3[] = {"carol@example.org", NULL};
    struct msg x;

    NEED_PYTHON();
    server_start(false, NULL);
    msg_init(&x, body, strlen(body), rcpts);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 ");
    assert_stored("alice@example.org", want, strlen(want));

    msg_init(&x, bare, strlen(bare), rcpts2);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 ");
    assert_stored("bob@example.org", bare_want, strlen(bare_want));

    msg_init(&x, "", 0, rcpts3);
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 ");
    assert_stored("carol@example.org", "", 0);
}

/* 1 MB, many lines starting with '.', crossing every chunk boundary. */
static void
test_big_body(void **state)
{
    const size_t len = 1 << 20;
    const char *rcpts[] = {"alice@example.org", "bob@example.org", NULL};
    struct msg x;
    char *body;
    size_t i;

    NEED_PYTHON();
    body = malloc(len);
    assert_non_null(body);
    for (i = 0; i < len; i++) {
        size_t col = i % 73;

        if (col == 71)
            body[i] = '\r';
        else if (col == 72)
            body[i] = '\n';
        else if (col == 0 && (i / 73) % 3 == 0)
            body[i] = '.';
        else
            body[i] = (char)('a' + i % 26);
    }
    body[len - 2] = '\r';
    body[len - 1] = '\n';
    server_start(true, NULL);
    msg_init(&x, body, len, rcpts);
    msg_deliver(&x, 20);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <alice@example.org> delivered");
    assert_outcome(&x.r[1], DLV_OK, "250 2.0.0 <bob@example.org> delivered");
    assert_stored("alice@example.org", body, len);
    assert_stored("bob@example.org", body, len);
    free(body);
}

/* Alias targets: one RCPT each; the recipient gets the worst, TEMP over PERM over OK. */
static void
test_targets(void **state)
{
    const char *specs[] = {"t2@example.org=550 5.1.1 gone", "t3@example.org=452 4.2.2 full", NULL};
    const char *rcpts[] = {
        "all@example.org", "some@example.org", "mixed@example.org", "plain@example.org", NULL};
    const char *ok[] = {"t1@example.org", "t4@example.org"};
    const char *perm[] = {"t1@example.org", "t2@example.org"};
    const char *temp[] = {"t2@example.org", "t3@example.org", "t4@example.org"};
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(false, specs);
    msg_init(&x, body1, strlen(body1), rcpts);
    x.r[0].targets = ok;
    x.r[0].ntargets = 2;
    x.r[1].targets = perm;
    x.r[1].ntargets = 2;
    x.r[2].targets = temp;
    x.r[2].ntargets = 3;
    msg_deliver(&x, 10);
    assert_outcome(&x.r[0], DLV_OK, "250 2.0.0 <t1@example.org> delivered");
    assert_outcome(&x.r[1], DLV_PERM, "550 5.1.1 gone");
    assert_outcome(&x.r[2], DLV_TEMP, "452 4.2.2 full");
    assert_outcome(&x.r[3], DLV_OK, "250 2.0.0 <plain@example.org> delivered");
    t = transcript();
    assert_null(strstr(t, "RCPT TO:<all@example.org>"));
    assert_non_null(strstr(t, "RCPT TO:<plain@example.org>"));
    free(t);
    /* t1 got it twice (all, some), t4 twice (all, mixed), t2 and t3 never */
    t = stored("t1@example.org", 2, NULL);
    assert_non_null(t);
    free(t);
    t = stored("t4@example.org", 2, NULL);
    assert_non_null(t);
    free(t);
    assert_null(stored("t2@example.org", 1, NULL));
    assert_null(stored("t3@example.org", 1, NULL));
}

/* An address that could break a command line is never sent. */
static void
test_unsafe_address(void **state)
{
    const char *rcpts[] = {"evil@example.org>\r\nRSET", "good@example.org", NULL};
    struct msg x;
    char *t;

    NEED_PYTHON();
    server_start(false, NULL);
    msg_init(&x, body1, strlen(body1), rcpts);
    msg_deliver(&x, 10);
    assert_int_equal(x.r[0].status, DLV_TEMP);
    assert_non_null(strstr(x.r[0].reply, "not sent"));
    assert_outcome(&x.r[1], DLV_OK, "250 2.0.0 <good@example.org> delivered");
    t = transcript();
    assert_null(strstr(t, "evil"));
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_all_delivered_unix, teardown),
        cmocka_unit_test_teardown(test_all_delivered_tcp, teardown),
        cmocka_unit_test_teardown(test_rcpt_temp_and_perm, teardown),
        cmocka_unit_test_teardown(test_data_replies_per_recipient, teardown),
        cmocka_unit_test_teardown(test_all_refused, teardown),
        cmocka_unit_test_teardown(test_no_pipelining, teardown),
        cmocka_unit_test_teardown(test_refused_unix, teardown),
        cmocka_unit_test_teardown(test_refused_tcp, teardown),
        cmocka_unit_test_teardown(test_bad_target, teardown),
        cmocka_unit_test_teardown(test_close_after_data, teardown),
        cmocka_unit_test_teardown(test_malformed_reply, teardown),
        cmocka_unit_test_teardown(test_mixed_code_reply, teardown),
        cmocka_unit_test_teardown(test_greeting_refused, teardown),
        cmocka_unit_test_teardown(test_timeout, teardown),
        cmocka_unit_test_teardown(test_dot_stuffing, teardown),
        cmocka_unit_test_teardown(test_big_body, teardown),
        cmocka_unit_test_teardown(test_targets, teardown),
        cmocka_unit_test_teardown(test_unsafe_address, teardown),
    };

    if (!scriptserver_python(python, sizeof(python)))
        fprintf(stderr, "test_lmtp: python3 not found in PATH: skipping the tests that need "
                        "tests/e2e/lmtpserver.py\n");
    else if (!scriptserver_script("lmtpserver.py", script, sizeof(script))) {
        fprintf(stderr, "test_lmtp: tests/e2e/lmtpserver.py not found (set TERN_SRCDIR): "
                        "skipping the tests that need it\n");
        python[0] = '\0';
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
