/*
 * send.c - `tern send` (see send.h): the delivery client's state machine
 * (smtp/client.c) driven over a blocking socket, built like deliver/remote.c
 * (poll with a deadline per step), talking to one server the user names.
 *
 * Promises: every step waits at most --timeout seconds (default 30); only
 * CRLF is sent (smtp/client's promise, whatever the input's line ends);
 * every recipient is reported, and the exit status follows send.h.
 *
 * Pipelining is used whenever the server offers PIPELINING (--pipelining
 * only adds a note when it does not); --no-pipelining sends one command at
 * a time.  --chunking sends the body with BDAT when the server offers
 * CHUNKING, else with DATA (and a note says so).
 */
#include "cli/send.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "deliver/remote_tls.h"
#include "smtp/client.h"
#include "smtp/explain.h"
#include "smtp/replyparse.h"
#include "util/buf.h"
#include "util/date.h"
#include "util/io.h"

#define SEND_DEFAULT_TIMEOUT 30
#define SEND_MAX_INPUT (64u * 1024 * 1024) /* a test message, not a backup */
#define SEND_MAX_RCPTS 1000
#define SEND_MAX_HEADERS 100
#define SEND_WRAP 78

/* ---- small helpers shared with probe.c ---------------------------------------------------- */

int
cli_send_split_hostport(const char *arg, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon, *end;
    size_t hl;

    port[0] = '\0';
    if (arg[0] == '[') {
        end = strchr(arg, ']');
        if (end == NULL || end == arg + 1)
            return -1;
        hl = (size_t)(end - arg - 1);
        if (hl >= hostlen)
            return -1;
        memcpy(host, arg + 1, hl);
        host[hl] = '\0';
        if (end[1] == '\0')
            return 0;
        if (end[1] != ':' || end[2] == '\0')
            return -1;
        colon = end + 1;
    } else {
        colon = strrchr(arg, ':');
        if (colon != NULL && strchr(arg, ':') != colon)
            colon = NULL; /* a bare IPv6 address */
        hl = colon != NULL ? (size_t)(colon - arg) : strlen(arg);
        if (hl == 0 || hl >= hostlen)
            return -1;
        memcpy(host, arg, hl);
        host[hl] = '\0';
        if (colon == NULL)
            return 0;
        if (colon[1] == '\0')
            return -1;
    }
    if (strlen(colon + 1) >= portlen || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
        return -1;
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

int
cli_send_connect_addr(const void *sa, unsigned salen, const char *name, int timeout_s, char *desc,
    size_t desclen, char *why, size_t whylen)
{
    const struct sockaddr *s = sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    int fd, err = 0;
    socklen_t errlen = sizeof(err);

    if (s->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = sa;

        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else if (s->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = sa;

        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(desc, desclen, "%.255s[%s]:%u", name != NULL ? name : "", ip, port);
    fd = io_socket_stream(s->sa_family);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, s, salen) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        snprintf(why, whylen, "%s: %s", desc, strerror(errno));
        close(fd);
        return -1;
    }
    if (io_wait(fd, POLLOUT, io_now_ms() + timeout_s * 1000LL) < 0) {
        snprintf(why, whylen, "%s: %s", desc,
            errno == ETIMEDOUT ? "timeout while connecting" : strerror(errno));
        close(fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
        err = errno;
    if (err != 0) {
        snprintf(why, whylen, "%s: %s", desc, strerror(err));
        close(fd);
        return -1;
    }
    return fd;
}

int
cli_send_connect(const char *host, const char *port, int timeout_s, char *desc, size_t desclen,
    char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL, *ai;
    int rc, fd = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = cli_send_connect_addr(
            ai->ai_addr, ai->ai_addrlen, host, timeout_s, desc, desclen, why, whylen);
    freeaddrinfo(res);
    return fd;
}

int
cli_send_write(int fd, struct remote_tls *t, const char *p, size_t n, long long deadline)
{
    while (t != NULL && n > 0) {
        ssize_t w = remote_tls_write(t, p, n, deadline);

        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            io_wait(fd, POLLOUT, deadline) == 0)
            continue;
        return -1;
    }
    return 0;
}

long
cli_send_read(int fd, struct remote_tls *t, char *p, size_t n, long long deadline)
{
    if (t != NULL)
        return (long)remote_tls_read(t, p, n, deadline);
    for (;;) {
        ssize_t got = recv(fd, p, n, 0);

        if (got >= 0)
            return (long)got;
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && io_wait(fd, POLLIN, deadline) == 0)
            continue;
        return -1;
    }
}

void
cli_send_transcript(FILE *out, const char *tag, const char *p, size_t n, bool *bol)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            continue;
        if (*bol) {
            fputs(tag, out);
            *bol = false;
        }
        if (p[i] == '\n') {
            fputc('\n', out);
            *bol = true;
        } else {
            unsigned char ch = (unsigned char)p[i];

            fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, out);
        }
    }
    fflush(out);
}

/* Print s wrapped at SEND_WRAP columns, every line indented. */
static void
cli_send_wrap(FILE *out, int indent, const char *s)
{
    size_t width = (size_t)(SEND_WRAP - indent), len;

    while (*s == ' ')
        s++;
    while (*s != '\0') {
        const char *brk = NULL, *p = s;

        len = strlen(s);
        if (len <= width) {
            fprintf(out, "%*s%s\n", indent, "", s);
            return;
        }
        for (p = s; p < s + width + 1 && *p != '\0'; p++)
            if (*p == ' ')
                brk = p;
        if (brk == NULL)
            brk = strchr(s + width, ' ');
        if (brk == NULL) {
            fprintf(out, "%*s%s\n", indent, "", s);
            return;
        }
        fprintf(out, "%*s%.*s\n", indent, "", (int)(brk - s), s);
        s = brk;
        while (*s == ' ')
            s++;
    }
}

void
cli_send_explain(FILE *out, unsigned code, const char *text, bool paragraph, int indent)
{
    struct explain_result r;
    char line[1100], err[256], para[2400];
    int k;

    snprintf(line, sizeof(line), "%u %s", code, text != NULL ? text : "");
    if (code == 0 || explain_lookup(line, &r, err, sizeof(err)) < 0 || r.basic == NULL)
        return;
    if (!paragraph) {
        fprintf(out, "%*s= %u %s", indent, "", r.code, r.basic->name);
        if (r.has_esc && r.enhanced != NULL)
            fprintf(out, "; %s %s", r.esc, r.enhanced->title);
        fprintf(out, " (%s)\n", explain_class_name((int)(r.code / 100), EXPLAIN_EN));
        return;
    }
    k = snprintf(para, sizeof(para), "%u %s (%s): %s", r.code, r.basic->name,
        explain_class_name((int)(r.code / 100), EXPLAIN_EN), r.basic->meaning);
    if (k > 0 && (size_t)k < sizeof(para) && r.has_esc && r.enhanced != NULL)
        snprintf(para + k, sizeof(para) - (size_t)k, " %s %s: %s", r.esc, r.enhanced->title,
            r.enhanced->description);
    cli_send_wrap(out, indent, para);
}

bool
cli_send_addr_ok(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>')
            return false;
    }
    return true;
}

/* ---- tern send ------------------------------------------------------------------------------ */

struct send_opts {
    const char *server, *from, *subject, *helo, *file;
    const char *rcpts[SEND_MAX_RCPTS];
    size_t nrcpts;
    const char *headers[SEND_MAX_HEADERS];
    size_t nheaders;
    bool pipelining, no_pipelining, chunking, eightbit, verbose;
    bool starttls, tls, insecure;
    const char *ca_file, *auth_user, *password_file;
    int timeout;
};

struct send_run {
    const struct send_opts *o;
    const char *body;
    size_t bodylen, bodypos;
    int fd;
    struct remote_tls *tls;
    const char *host; /* the --server host: SNI, and the name the certificate must show */
    bool bol_c, bol_s;
};

static const char send_usage_text[] =
    "usage: tern send --server HOST[:PORT] --from ADDR --to ADDR [--to ADDR]...\n"
    "                 [--subject TEXT] [--header \"Name: value\"]...\n"
    "                 [--pipelining | --no-pipelining] [--chunking] [--8bit]\n"
    "                 [--helo NAME] [--timeout SECS] [-v]\n"
    "                 [--starttls | --tls] [--ca-file FILE | --insecure]\n"
    "                 [--auth USER [--password-file FILE]] [FILE|-]\n"
    "  --pipelining     pipeline when the server offers PIPELINING (the default)\n"
    "  --no-pipelining  one command at a time, even when PIPELINING is offered\n"
    "  --chunking       send the body with BDAT when the server offers CHUNKING\n"
    "  --starttls       STARTTLS or nothing (exit 75 when the server does not offer it)\n"
    "  --tls            TLS from the first octet (implicit TLS; the port defaults to 465)\n"
    "  --ca-file FILE   verify the certificate against FILE instead of the system's store\n"
    "  --insecure       do not verify the certificate (it is verified by default)\n"
    "  --auth USER      AUTH PLAIN (LOGIN if only that is offered), after TLS only; the\n"
    "                   password comes from --password-file or TERN_PASSWORD\n"
    "Exit status: 0 accepted, 75 transient failure, 69 permanent failure, 64 usage.\n";

static int
send_usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "tern send: %s\n", why);
    fputs(send_usage_text, stderr);
    return CLI_EX_USAGE;
}

/* Does the text start with a header field ("Name:" with a printable name)? */
static bool
send_has_headers(const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == ':')
            return i > 0;
        if (ch < 33 || ch > 126)
            return false;
    }
    return false;
}

static int
send_read_input(const char *file, struct buf *b)
{
    char chunk[65536];
    int fd = 0;
    ssize_t n;

    if (file != NULL && strcmp(file, "-") != 0) {
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "tern send: %s: %s\n", file, strerror(errno));
            return CLI_EX_NOINPUT;
        }
    }
    for (;;) {
        n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (buf_append(b, chunk, (size_t)n) < 0) {
            fprintf(stderr, "tern send: the message is larger than %u octets\n", SEND_MAX_INPUT);
            n = -1;
            errno = EFBIG;
            break;
        }
    }
    if (n < 0)
        fprintf(stderr, "tern send: reading %s: %s\n", fd == 0 ? "stdin" : file, strerror(errno));
    if (fd != 0)
        close(fd);
    return n < 0 ? CLI_EX_NOINPUT : 0;
}

/* The message: the input as it is when it has headers, else generated headers and a body. */
static int
send_build(const struct send_opts *o, const struct buf *in, bool eightbit, struct buf *msg)
{
    char date[64], host[256];
    size_t i;
    int rc = 0;
    static const char dflt[] = "This is a test message sent by tern send.\n";

    for (i = 0; i < o->nheaders; i++)
        rc |= buf_printf(msg, "%s\r\n", o->headers[i]);
    if (in->len > 0 && send_has_headers(in->data, in->len))
        return rc | buf_append(msg, in->data, in->len);
    date_rfc5322_local(time(NULL), date, sizeof(date));
    snprintf(host, sizeof(host), "%s", o->helo);
    rc |= buf_printf(msg, "Date: %s\r\n", date);
    rc |= buf_printf(msg, "Message-ID: <%lld.%ld.tern-send@%s>\r\n", (long long)time(NULL),
        (long)getpid(), host);
    rc |= buf_printf(msg, "From: <%s>\r\n", o->from);
    rc |= buf_puts(msg, "To: ");
    for (i = 0; i < o->nrcpts; i++)
        rc |= buf_printf(msg, "%s<%s>", i ? ",\r\n    " : "", o->rcpts[i]);
    rc |= buf_puts(msg, "\r\n");
    rc |=
        buf_printf(msg, "Subject: %s\r\n", o->subject != NULL ? o->subject : "test from tern send");
    if (eightbit)
        rc |= buf_puts(msg, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                            "Content-Transfer-Encoding: 8bit\r\n");
    rc |= buf_puts(msg, "\r\n");
    if (in->len > 0)
        return rc | buf_append(msg, in->data, in->len);
    return rc | buf_puts(msg, dflt);
}

static ssize_t
send_body(void *arg, char *p, size_t n)
{
    struct send_run *r = arg;
    size_t left = r->bodylen - r->bodypos;

    if (n > left)
        n = left;
    memcpy(p, r->body + r->bodypos, n);
    r->bodypos += n;
    return (ssize_t)n;
}

/* The handshake on r->fd (after the STARTTLS 220, or at once with --tls); NULL with why. */
static struct remote_tls *
send_tls_start(struct send_run *r, long long deadline, char *why, size_t whylen)
{
    const struct send_opts *o = r->o;
    struct remote_tls *t =
        remote_tls_start(r->fd, o->insecure ? REMOTE_TLS_ENCRYPT : REMOTE_TLS_VERIFY, o->ca_file,
            NULL, r->host, deadline, why, whylen);
    char desc[128];

    if (t == NULL) {
        printf("TLS: handshake with %s failed: %s\n", r->host, why);
        return NULL;
    }
    remote_tls_describe(t, desc, sizeof(desc));
    if (o->insecure)
        printf("TLS: %s, certificate not verified (--insecure)\n", desc);
    else
        printf("TLS: %s, certificate verified for %s against %s\n", desc, r->host,
            o->ca_file != NULL ? o->ca_file : "the system's trust store");
    fflush(stdout);
    return t;
}

/* The password for --auth: the first line of --password-file, else $TERN_PASSWORD. */
static int
send_password(const struct send_opts *o, char *pw, size_t len)
{
    const char *env = getenv("TERN_PASSWORD");
    size_t n;

    if (o->password_file != NULL) {
        FILE *f = fopen(o->password_file, "re");

        if (f == NULL) {
            fprintf(stderr, "tern send: %s: %s\n", o->password_file, strerror(errno));
            return CLI_EX_NOINPUT;
        }
        if (fgets(pw, (int)len, f) == NULL)
            pw[0] = '\0';
        fclose(f);
    } else if (env != NULL) {
        snprintf(pw, len, "%s", env);
    } else {
        fprintf(stderr, "tern send: --auth needs the password in TERN_PASSWORD or a "
                        "--password-file (never on the command line)\n");
        return CLI_EX_USAGE;
    }
    n = strcspn(pw, "\r\n");
    pw[n] = '\0';
    if (n == 0 || n > SMTP_CLIENT_AUTH_MAX) {
        fprintf(stderr, "tern send: the password is empty or longer than %d octets\n",
            SMTP_CLIENT_AUTH_MAX);
        return CLI_EX_USAGE;
    }
    return 0;
}

/* Drive the client until it closes. */
static void
send_dialogue(struct send_run *r, struct smtp_client *cl)
{
    char in[4096], why[200];

    for (;;) {
        enum smtp_client_action a = smtp_client_next(cl);
        enum smtp_client_wait w = smtp_client_waiting(cl);
        long long deadline = io_now_ms() + r->o->timeout * 1000LL;

        if (a == SMTP_CLIENT_CLOSE)
            return;
        if (a == SMTP_CLIENT_IDLE) {
            smtp_client_quit(cl);
            continue;
        }
        if (a == SMTP_CLIENT_STARTTLS) {
            r->tls = send_tls_start(r, deadline, why, sizeof(why));
            smtp_client_tls_done(cl, r->tls != NULL, why);
            continue;
        }
        if (a == SMTP_CLIENT_SEND) {
            size_t n;
            const char *p = smtp_client_output(cl, &n);

            if (r->o->verbose && w == SMTP_CLIENT_W_AUTH)
                /* the credentials are in it: name the command, hide the rest */
                printf("C: %s\n", strncmp(p, "AUTH PLAIN ", 11) == 0 ? "AUTH PLAIN ********"
                                  : strncmp(p, "AUTH ", 5) == 0      ? "AUTH LOGIN"
                                                                     : "********");
            else if (r->o->verbose)
                cli_send_transcript(stdout, "C: ", p, n, &r->bol_c);
            if (cli_send_write(r->fd, r->tls, p, n, deadline) < 0) {
                snprintf(why, sizeof(why), "%s while sending, waiting for %s",
                    errno == ETIMEDOUT ? "timeout" : strerror(errno), smtp_client_wait_name(w));
                smtp_client_fail(cl, why);
                continue;
            }
            smtp_client_sent(cl, n);
            continue;
        }
        {
            long got = cli_send_read(r->fd, r->tls, in, sizeof(in), deadline);

            if (got > 0) {
                if (r->o->verbose)
                    cli_send_transcript(stdout, "S: ", in, (size_t)got, &r->bol_s);
                smtp_client_input(cl, in, (size_t)got);
                continue;
            }
            if (got == 0)
                snprintf(why, sizeof(why), "connection closed by the server while waiting for %s",
                    smtp_client_wait_name(w));
            else
                snprintf(why, sizeof(why), "%s waiting for %s",
                    errno == ETIMEDOUT ? "timeout" : strerror(errno), smtp_client_wait_name(w));
            smtp_client_fail(cl, why);
        }
    }
}

enum send_verdict { V_OK, V_TEMP, V_PERM };

static enum send_verdict
send_classify(const struct smtp_client_outcome *oc)
{
    switch (oc->result) {
    case SMTP_CLIENT_DELIVERED:
        return V_OK;
    case SMTP_CLIENT_REFUSED:
        return oc->code / 100 == 5 ? V_PERM : V_TEMP;
    case SMTP_CLIENT_NEXT_HOST:
        /* one server only: its 5xx greeting or EHLO refusal is its last word */
        return oc->code / 100 == 5 ? V_PERM : V_TEMP;
    case SMTP_CLIENT_NEED_SMTPUTF8:
    case SMTP_CLIENT_TOO_BIG:
        return V_PERM;
    case SMTP_CLIENT_AUTH_FAILED:
        /* 535: this password will not do, retrying will not change that; 454 and 421
           are transient; no AUTH (or no mechanism we speak) offered is permanent */
        return oc->code / 100 == 4 ? V_TEMP : V_PERM;
    default:
        return V_TEMP;
    }
}

static int
send_parse(struct send_opts *o, int argc, char **argv)
{
    bool opts = true;
    int i;

    memset(o, 0, sizeof(*o));
    o->timeout = SEND_DEFAULT_TIMEOUT;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char *const valued[] = {"--server", "--from", "--to", "--subject", "--header",
            "--helo", "--timeout", "-s", "-f", "-t", "--ca-file", "--auth", "--password-file"};
        size_t k;
        bool takes = false;

        if (!opts || a[0] != '-' || a[1] == '\0') {
            if (o->file != NULL)
                return send_usage("only one FILE");
            o->file = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts = false;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(send_usage_text, stdout);
            return -1;
        }
        for (k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
            size_t l = strlen(valued[k]);

            if (strcmp(a, valued[k]) == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "tern send: %s needs a value\n", a);
                    return send_usage(NULL);
                }
                v = argv[++i];
                takes = true;
            } else if (strncmp(a, valued[k], l) == 0 && a[l] == '=' && a[1] == '-') {
                v = a + l + 1;
                takes = true;
            }
            if (takes) {
                a = valued[k];
                break;
            }
        }
        if (takes) {
            if (strcmp(a, "--server") == 0 || strcmp(a, "-s") == 0)
                o->server = v;
            else if (strcmp(a, "--from") == 0 || strcmp(a, "-f") == 0)
                o->from = v;
            else if (strcmp(a, "--to") == 0 || strcmp(a, "-t") == 0) {
                if (o->nrcpts == SEND_MAX_RCPTS)
                    return send_usage("too many recipients");
                o->rcpts[o->nrcpts++] = v;
            } else if (strcmp(a, "--subject") == 0)
                o->subject = v;
            else if (strcmp(a, "--header") == 0) {
                if (o->nheaders == SEND_MAX_HEADERS || !send_has_headers(v, strlen(v)) ||
                    strpbrk(v, "\r\n") != NULL)
                    return send_usage("--header takes \"Name: value\" (one line)");
                o->headers[o->nheaders++] = v;
            } else if (strcmp(a, "--helo") == 0)
                o->helo = v;
            else if (strcmp(a, "--ca-file") == 0)
                o->ca_file = v;
            else if (strcmp(a, "--auth") == 0)
                o->auth_user = v;
            else if (strcmp(a, "--password-file") == 0)
                o->password_file = v;
            else if (strcmp(a, "--timeout") == 0) {
                o->timeout = atoi(v);
                if (strspn(v, "0123456789") != strlen(v) || o->timeout < 1 || o->timeout > 3600)
                    return send_usage("--timeout takes seconds, 1 to 3600");
            }
        } else if (strcmp(a, "--pipelining") == 0) {
            o->pipelining = true;
            o->no_pipelining = false;
        } else if (strcmp(a, "--no-pipelining") == 0) {
            o->no_pipelining = true;
            o->pipelining = false;
        } else if (strcmp(a, "--chunking") == 0) {
            o->chunking = true;
        } else if (strcmp(a, "--8bit") == 0) {
            o->eightbit = true;
        } else if (strcmp(a, "--starttls") == 0) {
            o->starttls = true;
        } else if (strcmp(a, "--tls") == 0) {
            o->tls = true;
        } else if (strcmp(a, "--insecure") == 0) {
            o->insecure = true;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose = true;
        } else {
            fprintf(stderr, "tern send: unknown option %s\n", a);
            return send_usage(NULL);
        }
    }
    if (o->server == NULL)
        return send_usage("--server is required");
    if (o->from == NULL)
        return send_usage("--from is required (--from '' for the null sender)");
    if (o->nrcpts == 0)
        return send_usage("at least one --to is required");
    if (o->from[0] != '\0' && !cli_send_addr_ok(o->from))
        return send_usage("--from: not an address (no spaces, controls or angle brackets)");
    for (size_t k = 0; k < o->nrcpts; k++)
        if (o->rcpts[k][0] == '\0' || !cli_send_addr_ok(o->rcpts[k]))
            return send_usage("--to: not an address (no spaces, controls or angle brackets)");
    if (o->subject != NULL && strpbrk(o->subject, "\r\n") != NULL)
        return send_usage("--subject: one line");
    if (o->starttls && o->tls)
        return send_usage("--starttls or --tls, not both");
    if ((o->ca_file != NULL || o->insecure) && !o->starttls && !o->tls)
        return send_usage("--ca-file and --insecure go with --starttls or --tls");
    if (o->ca_file != NULL && o->insecure)
        return send_usage("--ca-file or --insecure, not both");
    if (o->password_file != NULL && o->auth_user == NULL)
        return send_usage("--password-file goes with --auth");
    if (o->auth_user != NULL &&
        (o->auth_user[0] == '\0' || strlen(o->auth_user) > SMTP_CLIENT_AUTH_MAX ||
            strpbrk(o->auth_user, "\r\n") != NULL))
        return send_usage("--auth: a user name, 1 to 255 octets, one line");
    if (o->auth_user != NULL && !o->starttls && !o->tls)
        return send_usage("--auth needs --starttls or --tls: the password does not go in "
                          "plaintext");
    return 0;
}

int
cli_send_main(int argc, char **argv)
{
    struct send_opts o;
    struct send_run r;
    struct smtp_client_rcpt *rc = NULL;
    struct smtp_client_msg m;
    struct smtp_client *cl;
    struct buf in, msg;
    char host[256], port[8], desc[340], why[400], helo[256];
    char password[SMTP_CLIENT_AUTH_MAX + 2] = "";
    const struct smtp_client_outcome *decider = NULL;
    bool any_temp = false, any_perm = false, has8 = false;
    size_t i;
    int status, prc;

    prc = send_parse(&o, argc, argv);
    if (prc != 0)
        return prc < 0 ? 0 : prc;
    if (cli_send_split_hostport(o.server, host, sizeof(host), port, sizeof(port)) < 0)
        return send_usage("--server takes HOST, HOST:PORT or [IPv6]:PORT");
    if (port[0] == '\0')
        snprintf(port, sizeof(port), "%s", o.tls ? "465" : "25");
    if (o.auth_user != NULL && (status = send_password(&o, password, sizeof(password))) != 0)
        return status;
    if (o.helo == NULL) {
        if (gethostname(helo, sizeof(helo) - 1) < 0 || helo[0] == '\0' || !cli_send_addr_ok(helo))
            snprintf(helo, sizeof(helo), "localhost");
        helo[sizeof(helo) - 1] = '\0';
        o.helo = helo;
    } else if (o.helo[0] == '\0' || !cli_send_addr_ok(o.helo) || strlen(o.helo) > 255) {
        return send_usage("--helo: a host name");
    }

    buf_init(&in, SEND_MAX_INPUT);
    buf_init(&msg, SEND_MAX_INPUT + 65536);
    if (o.file != NULL && (status = send_read_input(o.file, &in)) != 0)
        goto out_bufs;
    for (i = 0; i < in.len && !has8; i++)
        has8 = (unsigned char)in.data[i] >= 0x80;
    if (has8 && !o.eightbit)
        fprintf(stderr, "tern send: note: the message has 8-bit octets; --8bit declares "
                        "BODY=8BITMIME\n");
    if (send_build(&o, &in, o.eightbit, &msg) < 0) {
        fprintf(stderr, "tern send: out of memory building the message\n");
        status = CLI_EX_SOFTWARE;
        goto out_bufs;
    }

    rc = calloc(o.nrcpts, sizeof(*rc));
    if (rc == NULL) {
        status = CLI_EX_SOFTWARE;
        goto out_bufs;
    }
    for (i = 0; i < o.nrcpts; i++)
        rc[i].addr = o.rcpts[i];
    memset(&r, 0, sizeof(r));
    r.o = &o;
    r.body = msg.data;
    r.bodylen = msg.len;
    r.bol_c = r.bol_s = true;
    memset(&m, 0, sizeof(m));
    m.sender = o.from;
    m.rcpts = rc;
    m.nrcpts = o.nrcpts;
    m.size = msg.len;
    m.eightbit = o.eightbit;
    m.no_pipelining = o.no_pipelining;
    m.chunking = o.chunking;
    m.body = send_body;
    m.arg = &r;
    for (i = 0; o.from[i] != '\0'; i++)
        m.smtputf8 = m.smtputf8 || (unsigned char)o.from[i] >= 0x80;
    for (size_t k = 0; k < o.nrcpts; k++)
        for (i = 0; o.rcpts[k][i] != '\0'; i++)
            m.smtputf8 = m.smtputf8 || (unsigned char)o.rcpts[k][i] >= 0x80;

    r.fd = cli_send_connect(host, port, o.timeout, desc, sizeof(desc), why, sizeof(why));
    if (r.fd < 0) {
        printf("cannot connect: %s\n", why);
        printf("result: deferred (transient: no connection)\n");
        status = CLI_EX_TEMPFAIL;
        goto out;
    }
    if (o.verbose)
        printf("=== connected to %s\n", desc);
    r.host = host;
    if (o.tls &&
        (r.tls = send_tls_start(&r, io_now_ms() + o.timeout * 1000LL, why, sizeof(why))) == NULL) {
        close(r.fd);
        printf("result: deferred (transient: no TLS session)\n");
        status = CLI_EX_TEMPFAIL;
        goto out;
    }
    cl = smtp_client_new(o.helo, &m);
    if (cl == NULL) {
        remote_tls_close(r.tls);
        close(r.fd);
        status = CLI_EX_SOFTWARE;
        goto out;
    }
    if (o.starttls)
        smtp_client_set_tls(cl, SMTP_CLIENT_TLS_REQUIRE);
    if (o.auth_user != NULL && smtp_client_set_auth(cl, o.auth_user, password) < 0) {
        smtp_client_free(cl);
        remote_tls_close(r.tls);
        close(r.fd);
        status = CLI_EX_SOFTWARE;
        goto out;
    }
    explicit_bzero(password, sizeof(password));
    send_dialogue(&r, cl);
    remote_tls_close(r.tls);
    r.tls = NULL;
    close(r.fd);
    if (o.auth_user != NULL) {
        const char *mech = NULL;

        if (smtp_client_authenticated(cl, &mech))
            printf("AUTH %s as %s: accepted\n", mech, o.auth_user);
    }

    if (o.pipelining && !(smtp_client_extensions(cl) & SMTP_CLIENT_EXT_PIPELINING))
        printf("note: %s does not offer PIPELINING: commands went one at a time\n", desc);
    if (o.chunking && !(smtp_client_extensions(cl) & SMTP_CLIENT_EXT_CHUNKING))
        printf("note: %s does not offer CHUNKING: the message went with DATA\n", desc);
    for (i = 0; i < o.nrcpts; i++) {
        const struct smtp_client_outcome *oc = smtp_client_outcome(cl, i);
        enum send_verdict v = send_classify(oc);

        if (oc->result == SMTP_CLIENT_AUTH_FAILED && i == 0 && oc->code != 0)
            printf("AUTH as %s failed: %u %s\n", o.auth_user, oc->code, oc->text);
        else if (oc->result == SMTP_CLIENT_AUTH_FAILED && i == 0)
            printf("AUTH as %s failed: %s\n", o.auth_user, oc->text);
        if (oc->code != 0)
            printf("<%s>: %s: %u %s\n", o.rcpts[i],
                v == V_OK     ? "accepted"
                : v == V_TEMP ? "deferred"
                              : "refused",
                oc->code, oc->text);
        else
            printf("<%s>: %s: %s\n", o.rcpts[i],
                v == V_OK     ? "accepted"
                : v == V_TEMP ? "deferred"
                              : "refused",
                oc->text);
        if (v == V_TEMP && !any_temp)
            decider = oc;
        if (v == V_PERM && !any_perm && !any_temp)
            decider = oc;
        if (v == V_OK && decider == NULL)
            decider = oc;
        any_temp = any_temp || v == V_TEMP;
        any_perm = any_perm || v == V_PERM;
    }
    status = any_temp ? CLI_EX_TEMPFAIL : any_perm ? CLI_EX_UNAVAILABLE : CLI_EX_OK;
    /* the deciding reply: the first of the kind that set the exit status */
    for (i = 0; i < o.nrcpts; i++) {
        const struct smtp_client_outcome *oc = smtp_client_outcome(cl, i);
        enum send_verdict v = send_classify(oc);

        if ((status == CLI_EX_TEMPFAIL && v == V_TEMP) ||
            (status == CLI_EX_UNAVAILABLE && v == V_PERM) || status == CLI_EX_OK) {
            decider = oc;
            break;
        }
    }
    printf("result: %s\n", status == CLI_EX_OK ? "accepted by every recipient"
                           : status == CLI_EX_TEMPFAIL
                               ? "deferred (transient: try again later)"
                               : "refused (permanent: do not retry as it is)");
    if (decider != NULL && decider->code != 0) {
        printf("final reply: %u %s\n", decider->code, decider->text);
        cli_send_explain(stdout, decider->code, decider->text, true, 4);
    } else if (decider != NULL) {
        printf("final reply: none (%s)\n", decider->text);
    }
    smtp_client_free(cl);
out:
    explicit_bzero(password, sizeof(password));
    free(rc);
out_bufs:
    buf_free(&in);
    buf_free(&msg);
    fflush(stdout);
    return status;
}
