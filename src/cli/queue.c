/*
 * queue.c - `tern queue` and `mailq` (see queue.h): turn a command line into
 * control-socket requests, one connection per request, and copy the answers
 * to stdout.
 *
 * Promises: never waits more than CLI_QUEUE_TIMEOUT seconds for ternd; an
 * absent or dead socket is reported as "ternd is not running" with
 * EX_TEMPFAIL, so scripts can tell "try later" from "you asked for
 * something wrong".
 */
#include "cli/queue.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define CLI_QUEUE_OK 0
#define CLI_QUEUE_ERR 1
#define CLI_QUEUE_USAGE 64    /* EX_USAGE */
#define CLI_QUEUE_TEMPFAIL 75 /* EX_TEMPFAIL */
#define CLI_QUEUE_TIMEOUT 60  /* seconds without a byte from ternd */
#define CLI_QUEUE_LINE 1100   /* longest first line we expect ("ERR ..." is short) */

struct cli_queue_opts {
    const char *prog; /* for messages: "tern" or "mailq" */
    const char *path;
    bool json;
    int nargs;
    char **args; /* the non-option words, subcommand first */
};

/* Write all of p to stdout (unbuffered: the payload may be large). */
static int
cli_queue_out(const char *p, size_t n)
{
    return fwrite(p, 1, n, stdout) == n ? 0 : -1;
}

/*
 * One request on a fresh connection.  On OK, the payload goes to stdout and, when
 * done_msg is set, "done_msg" is printed after it.
 */
static int
cli_queue_request(const struct cli_queue_opts *o, const char *req, const char *done_msg)
{
    struct sockaddr_un sa;
    struct timeval tv = {CLI_QUEUE_TIMEOUT, 0};
    char line[CLI_QUEUE_LINE + 1], reqline[256];
    char chunk[65536];
    size_t len = 0, reqlen;
    char *nl = NULL;
    int fd, rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(o->path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "%s: %s: path too long for a unix socket\n", o->prog, o->path);
        return CLI_QUEUE_USAGE;
    }
    memcpy(sa.sun_path, o->path, strlen(o->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", o->prog, strerror(errno));
        return CLI_QUEUE_TEMPFAIL;
    }
    if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;

        close(fd);
        if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR) {
            fprintf(
                stderr, "%s: ternd is not running (no control socket at %s)\n", o->prog, o->path);
            return CLI_QUEUE_TEMPFAIL;
        }
        fprintf(stderr, "%s: cannot connect to %s: %s\n", o->prog, o->path, strerror(e));
        return e == EACCES || e == EPERM ? CLI_QUEUE_ERR : CLI_QUEUE_TEMPFAIL;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    /* the request and its newline, in as many sends as it takes */
    snprintf(reqline, sizeof(reqline), "%s\n", req);
    reqlen = strlen(reqline);
    while (len < reqlen) {
        ssize_t w = send(fd, reqline + len, reqlen - len, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* the answer (ERR ...) may still be there to read */
        }
        len += (size_t)w;
    }

    /* the status line */
    len = 0;
    while (nl == NULL && len < CLI_QUEUE_LINE) {
        ssize_t n = recv(fd, line + len, CLI_QUEUE_LINE - len, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                fprintf(
                    stderr, "%s: no answer from ternd within %d s\n", o->prog, CLI_QUEUE_TIMEOUT);
            else
                fprintf(stderr, "%s: ternd closed the connection without an answer\n", o->prog);
            return CLI_QUEUE_TEMPFAIL;
        }
        nl = memchr(line + len, '\n', (size_t)n);
        len += (size_t)n;
    }
    if (nl == NULL) {
        close(fd);
        fprintf(stderr, "%s: malformed answer from ternd\n", o->prog);
        return CLI_QUEUE_ERR;
    }
    *nl = '\0';
    if (strncmp(line, "ERR", 3) == 0) {
        close(fd);
        fprintf(stderr, "%s: %s\n", o->prog, line[3] == ' ' ? line + 4 : "error");
        return CLI_QUEUE_ERR;
    }
    if (strcmp(line, "OK") != 0) {
        close(fd);
        fprintf(stderr, "%s: malformed answer from ternd\n", o->prog);
        return CLI_QUEUE_ERR;
    }

    /* the payload: what followed the status line, then the rest until EOF */
    rc = CLI_QUEUE_OK;
    if (cli_queue_out(nl + 1, len - (size_t)(nl + 1 - line)) < 0)
        rc = CLI_QUEUE_ERR;
    while (rc == CLI_QUEUE_OK) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: reading from ternd: %s\n", o->prog,
                errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
            rc = CLI_QUEUE_TEMPFAIL;
            break;
        }
        if (n == 0)
            break;
        if (cli_queue_out(chunk, (size_t)n) < 0)
            rc = CLI_QUEUE_ERR;
    }
    close(fd);
    if (rc == CLI_QUEUE_OK && done_msg != NULL)
        printf("%s\n", done_msg);
    if (fflush(stdout) != 0 && rc == CLI_QUEUE_OK) {
        fprintf(stderr, "%s: writing to stdout: %s\n", o->prog, strerror(errno));
        rc = CLI_QUEUE_ERR;
    }
    return rc;
}

static int
cli_queue_usage(const char *prog, bool mailq, FILE *f, int rc)
{
    if (mailq)
        fprintf(f, "usage: %s [-s SOCKET] [--json]\n", prog);
    else
        fprintf(f,
            "usage: %s queue [-s SOCKET] [list] [--json]\n"
            "       %s queue [-s SOCKET] count\n"
            "       %s queue [-s SOCKET] flush [ID...]\n"
            "       %s queue [-s SOCKET] delete|hold|release ID...\n",
            prog, prog, prog, prog);
    return rc;
}

/*
 * Options may come anywhere (`tern queue list --json -s /run/t.sock`); words that are not
 * options are kept in order in o->args (argv is reordered in place).  -1: usage error
 * (reported), 1: --help (printed), 0: go on.
 */
static int
cli_queue_parse(struct cli_queue_opts *o, int argc, char **argv, const char *dflt, bool mailq)
{
    bool opts_done = false;
    int i;

    o->path = dflt;
    o->json = false;
    o->nargs = 0;
    o->args = argv + 1;
    for (i = 1; i < argc; i++) {
        char *a = argv[i];

        if (opts_done || a[0] != '-' || a[1] == '\0') {
            o->args[o->nargs++] = a;
        } else if (strcmp(a, "--") == 0) {
            opts_done = true;
        } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            o->json = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_queue_usage(o->prog, mailq, stdout, 0);
            return 1;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a path\n", o->prog, a);
                return -1;
            }
            o->path = argv[++i];
        } else if (strncmp(a, "-s", 2) == 0) {
            o->path = a + 2;
        } else if (strncmp(a, "--socket=", 9) == 0) {
            o->path = a + 9;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", o->prog, a);
            return -1;
        }
    }
    if (o->path == NULL || o->path[0] == '\0') {
        fprintf(stderr, "%s: no control socket configured (set control_socket, or use -s PATH)\n",
            o->prog);
        return -1;
    }
    return 0;
}

/* One subcommand of `tern queue`: the request verb and how it takes IDs. */
struct cli_queue_cmd {
    const char *name;
    const char *verb;
    enum { IDS_NONE, IDS_ANY, IDS_SOME } ids;
    const char *done; /* printed after each ID's OK, or NULL */
};

static const struct cli_queue_cmd cli_queue_cmds[] = {
    {"list", "LIST", IDS_NONE, NULL},
    {"count", "COUNT", IDS_NONE, NULL},
    {"flush", "FLUSH", IDS_ANY, "flushed"},
    {"delete", "DELETE", IDS_SOME, "deleted"},
    {"hold", "HOLD", IDS_SOME, "held"},
    {"release", "RELEASE", IDS_SOME, "released"},
};

int
cli_queue_main(int argc, char **argv, const char *control_socket_path)
{
    struct cli_queue_opts o = {.prog = "tern"};
    const struct cli_queue_cmd *cmd = &cli_queue_cmds[0];
    int rc, i;
    size_t k;

    rc = cli_queue_parse(&o, argc, argv, control_socket_path, false);
    if (rc != 0)
        return rc > 0 ? CLI_QUEUE_OK : cli_queue_usage(o.prog, false, stderr, CLI_QUEUE_USAGE);
    if (o.nargs > 0) {
        cmd = NULL;
        for (k = 0; k < sizeof(cli_queue_cmds) / sizeof(cli_queue_cmds[0]); k++)
            if (strcmp(o.args[0], cli_queue_cmds[k].name) == 0)
                cmd = &cli_queue_cmds[k];
        if (cmd == NULL) {
            fprintf(stderr, "%s: queue: unknown command %s\n", o.prog, o.args[0]);
            return cli_queue_usage(o.prog, false, stderr, CLI_QUEUE_USAGE);
        }
        o.args++;
        o.nargs--;
    }
    if ((cmd->ids == IDS_NONE && o.nargs > 0) || (cmd->ids == IDS_SOME && o.nargs == 0) ||
        (o.json && strcmp(cmd->name, "list") != 0))
        return cli_queue_usage(o.prog, false, stderr, CLI_QUEUE_USAGE);

    if (o.nargs == 0)
        return cli_queue_request(
            &o, strcmp(cmd->name, "list") == 0 && o.json ? "LIST JSON" : cmd->verb, NULL);
    /* One request per ID; go on after an unknown ID, stop when ternd is gone. */
    rc = CLI_QUEUE_OK;
    for (i = 0; i < o.nargs; i++) {
        char req[128], done[128];
        int r;

        if (strlen(o.args[i]) > 64 || strpbrk(o.args[i], " \t\r\n") != NULL) {
            fprintf(stderr, "%s: %s: not a queue ID\n", o.prog, o.args[i]);
            rc = CLI_QUEUE_ERR;
            continue;
        }
        snprintf(req, sizeof(req), "%s %s", cmd->verb, o.args[i]);
        snprintf(done, sizeof(done), "%s: %s", o.args[i], cmd->done);
        r = cli_queue_request(&o, req, done);
        if (r > rc)
            rc = r;
        if (r == CLI_QUEUE_TEMPFAIL || r == CLI_QUEUE_USAGE)
            break;
    }
    return rc;
}

int
cli_mailq_main(int argc, char **argv, const char *control_socket_path)
{
    struct cli_queue_opts o = {.prog = "mailq"};
    int rc;

    rc = cli_queue_parse(&o, argc, argv, control_socket_path, true);
    if (rc != 0)
        return rc > 0 ? CLI_QUEUE_OK : cli_queue_usage(o.prog, true, stderr, CLI_QUEUE_USAGE);
    if (o.nargs > 0)
        return cli_queue_usage(o.prog, true, stderr, CLI_QUEUE_USAGE);
    return cli_queue_request(&o, o.json ? "LIST JSON" : "LIST", NULL);
}
