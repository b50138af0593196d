/*
 * sendmail.c - sendmail(8) (see sendmail.h): read a message, find its
 * envelope, hand it to ternd over the control socket or, when ternd is down,
 * to the maildrop directory.
 *
 * The header handling (dot end, header section, address lists, Bcc) is pure
 * and unit-tested; the rest is plumbing.  -bs runs the server's own session
 * state machine (smtp/session.c) on stdin/stdout, so a local SMTP dialogue
 * gets exactly the replies a network client would, and each message it
 * accepts goes the same way as a piped one.
 */
#include "cli/sendmail.h"

#include "util/date.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/queue.h"
#include "cli/send.h"
#include "queue/maildrop.h"
#include "smtp/session.h"
#include "util/config.h"

#define SM_DEFAULT_CONFIG "/etc/tern/tern.conf"
#define SM_DEFAULT_SOCKET "/run/tern/control"
#define SM_MAX_RCPTS MAILDROP_MAX_RCPTS
#define SM_TIMEOUT 60 /* seconds without progress from ternd */
#define SM_EX_DATAERR 65

/* ---- pure parts ----------------------------------------------------------------------------- */

size_t
cli_sendmail_dot_end(const char *p, size_t n, size_t *from, bool at_eof)
{
    size_t i = *from;

    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t len;

        if (nl == NULL) {
            *from = i;
            if (at_eof && n - i == 1 && p[i] == '.')
                return i;
            return (size_t)-1;
        }
        len = (size_t)(nl - (p + i));
        if ((len == 1 && p[i] == '.') || (len == 2 && p[i] == '.' && p[i + 1] == '\r'))
            return i;
        i += len + 1;
    }
    *from = i;
    return (size_t)-1;
}

/* A field's first line: "name:" with a name of printable ASCII but ':'. */
static bool
sm_is_field(const char *p, size_t n)
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

size_t
cli_sendmail_header_end(const char *p, size_t n, size_t *hdrlen)
{
    size_t i = 0;
    bool first = true;

    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t len = nl != NULL ? (size_t)(nl - (p + i)) : n - i;
        size_t clen = len > 0 && p[i + len - 1] == '\r' ? len - 1 : len;

        if (clen == 0) {
            *hdrlen = i;
            return nl != NULL ? i + len + 1 : n;
        }
        if (!((p[i] == ' ' || p[i] == '\t') && !first) && !sm_is_field(p + i, clen)) {
            /* not a field nor a continuation: the header (if any) ends here, without a blank */
            *hdrlen = i;
            return i;
        }
        first = false;
        i += nl != NULL ? len + 1 : len;
    }
    *hdrlen = n;
    return n;
}

/* Call fn on each field of the header, unfolded (CR/LF of continuations removed). */
static int
sm_fields(const char *p, size_t hdrlen,
    int (*fn)(void *arg, const char *name, size_t namelen, const char *value, size_t vlen),
    void *arg)
{
    size_t i = 0;

    while (i < hdrlen) {
        size_t start = i, end;
        const char *colon;
        char *v;
        size_t vl = 0, k;
        int rc;

        /* the field runs to the first line end not followed by a space or tab */
        end = i;
        for (;;) {
            const char *nl = memchr(p + end, '\n', hdrlen - end);

            end = nl != NULL ? (size_t)(nl - p) + 1 : hdrlen;
            if (end >= hdrlen || (p[end] != ' ' && p[end] != '\t'))
                break;
        }
        i = end;
        colon = memchr(p + start, ':', end - start);
        if (colon == NULL)
            continue;
        v = malloc(end - start + 1);
        if (v == NULL)
            return -1;
        for (k = (size_t)(colon - p) + 1; k < end; k++)
            if (p[k] != '\r' && p[k] != '\n')
                v[vl++] = p[k];
        v[vl] = '\0';
        rc = fn(arg, p + start, (size_t)(colon - (p + start)), v, vl);
        free(v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

struct sm_has {
    const char *name;
    bool found;
};

static int
sm_has_cb(void *arg, const char *name, size_t namelen, const char *value, size_t vlen)
{
    struct sm_has *h = arg;

    (void)value;
    (void)vlen;
    if (namelen == strlen(h->name) && strncasecmp(name, h->name, namelen) == 0)
        h->found = true;
    return 0;
}

bool
cli_sendmail_has_field(const char *p, size_t hdrlen, const char *name)
{
    struct sm_has h = {name, false};

    if (sm_fields(p, hdrlen, sm_has_cb, &h) < 0)
        return false;
    return h.found;
}

/* Add the address in s[0..n) (trimmed) to the list. */
static int
sm_add(const char *s, size_t n, char ***list, size_t *count, size_t max)
{
    char **l;

    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0)
        return 0;
    if (*count >= max)
        return -1;
    l = realloc(*list, (*count + 1) * sizeof(*l));
    if (l == NULL)
        return -1;
    *list = l;
    if ((l[*count] = strndup(s, n)) == NULL)
        return -1;
    (*count)++;
    return 0;
}

int
cli_sendmail_parse_addrs(const char *s, size_t len, char ***list, size_t *n, size_t max)
{
    /* One mailbox at a time: its text outside comments, and what was in <...> if any. */
    char *tok = malloc(len + 1), *angle = malloc(len + 1);
    size_t tl = 0, al = 0, i;
    bool in_angle = false, had_angle = false;
    int depth = 0, rc = 0;

    if (tok == NULL || angle == NULL) {
        free(tok);
        free(angle);
        return -1;
    }
    for (i = 0; i <= len && rc == 0; i++) {
        char ch = i < len ? s[i] : ',';

        if (depth > 0) {
            if (ch == '\\' && i + 1 < len)
                i++;
            else if (ch == '(')
                depth++;
            else if (ch == ')')
                depth--;
            continue;
        }
        if (ch == '"') {
            /* a quoted string: kept as it is (a quoted local part is legal) */
            size_t j = i + 1;

            while (j < len && s[j] != '"') {
                if (s[j] == '\\' && j + 1 < len)
                    j++;
                j++;
            }
            if (in_angle) {
                memcpy(angle + al, s + i, (j < len ? j + 1 : len) - i);
                al += (j < len ? j + 1 : len) - i;
            } else {
                memcpy(tok + tl, s + i, (j < len ? j + 1 : len) - i);
                tl += (j < len ? j + 1 : len) - i;
            }
            i = j;
            continue;
        }
        if (ch == '(') {
            depth = 1;
            continue;
        }
        if (in_angle) {
            if (ch == '>')
                in_angle = false;
            else if (!isspace((unsigned char)ch))
                angle[al++] = ch;
            continue;
        }
        if (ch == '<') {
            in_angle = true;
            had_angle = true;
            al = 0;
            continue;
        }
        if (ch == ':') {
            tl = 0; /* a group's display name */
            continue;
        }
        if (ch == ',' || ch == ';') {
            if (had_angle) {
                /* "<@route:a@b>" keeps only a@b */
                char *c = al > 0 && angle[0] == '@' ? memchr(angle, ':', al) : NULL;
                size_t off = c != NULL ? (size_t)(c - angle) + 1 : 0;

                rc = sm_add(angle + off, al - off, list, n, max);
            } else {
                rc = sm_add(tok, tl, list, n, max);
            }
            tl = al = 0;
            had_angle = in_angle = false;
            continue;
        }
        tok[tl++] = ch;
    }
    free(tok);
    free(angle);
    return rc;
}

struct sm_rcpts {
    char ***list;
    size_t *n;
    size_t max;
};

static int
sm_rcpts_cb(void *arg, const char *name, size_t namelen, const char *value, size_t vlen)
{
    struct sm_rcpts *r = arg;

    if ((namelen == 2 && (strncasecmp(name, "To", 2) == 0 || strncasecmp(name, "Cc", 2) == 0)) ||
        (namelen == 3 && strncasecmp(name, "Bcc", 3) == 0))
        return cli_sendmail_parse_addrs(value, vlen, r->list, r->n, r->max);
    return 0;
}

int
cli_sendmail_header_rcpts(const char *p, size_t hdrlen, char ***list, size_t *n, size_t max)
{
    struct sm_rcpts r = {list, n, max};

    return sm_fields(p, hdrlen, sm_rcpts_cb, &r);
}

int
cli_sendmail_strip_bcc(const char *p, size_t n, struct buf *out)
{
    size_t hdrlen, i = 0;
    bool skipping = false;

    (void)cli_sendmail_header_end(p, n, &hdrlen);
    while (i < hdrlen) {
        const char *nl = memchr(p + i, '\n', hdrlen - i);
        size_t end = nl != NULL ? (size_t)(nl - p) + 1 : hdrlen;

        if (p[i] == ' ' || p[i] == '\t') {
            /* a continuation belongs to the field before */
        } else {
            skipping = end - i >= 4 && strncasecmp(p + i, "Bcc:", 4) == 0;
        }
        if (!skipping && buf_append(out, p + i, end - i) < 0)
            return -1;
        i = end;
    }
    return buf_append(out, p + hdrlen, n - hdrlen);
}

/* ---- options -------------------------------------------------------------------------------- */

struct sm_opts {
    bool extract, ignore_dots, verbose;
    const char *sender; /* -f / -r */
    const char *fullname;
    const char *config;
    char mode; /* 'm' (default), 's', 'p', 'q', 'i' */
    char **rcpts;
    size_t nrcpts;
};

static int
sm_usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "sendmail: %s\n", why);
    fputs("usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C FILE] [-v] [RECIPIENT...]\n"
          "       sendmail -bs | -bp | -q\n",
        stderr);
    return CLI_EX_USAGE;
}

/* Options that take a value (attached or the next word). */
static bool
sm_takes_value(char c)
{
    return strchr("frFBNRVXLhCAbOo", c) != NULL;
}

static int
sm_parse(struct sm_opts *o, int argc, char **argv)
{
    int i;
    bool opts = true;

    memset(o, 0, sizeof(*o));
    o->mode = 'm';
    o->rcpts = calloc((size_t)argc + 1, sizeof(*o->rcpts));
    if (o->rcpts == NULL)
        return CLI_EX_OSERR;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t k;

        if (!opts || a[0] != '-' || a[1] == '\0') {
            o->rcpts[o->nrcpts++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts = false;
            continue;
        }
        for (k = 1; a[k] != '\0'; k++) {
            char c = a[k];
            const char *v = NULL;

            if (c == 'q') {
                o->mode = 'q'; /* -q, -q30m, -qR..., -qS...: flush once */
                break;
            }
            if (c == 'd') /* -d (debug) with its value attached, if any */
                break;
            if (sm_takes_value(c)) {
                if (a[k + 1] != '\0')
                    v = a + k + 1;
                else if (i + 1 < argc)
                    v = argv[++i];
                else {
                    fprintf(stderr, "sendmail: -%c needs a value\n", c);
                    return sm_usage(NULL);
                }
            }
            switch (c) {
            case 't':
                o->extract = true;
                break;
            case 'i':
                o->ignore_dots = true;
                break;
            case 'v':
                o->verbose = true;
                break;
            case 'n':
            case 'm':
            case 'U':
            case 'G':
                break; /* accepted and ignored: see sendmail.h */
            case 'f':
            case 'r':
                o->sender = v;
                break;
            case 'F':
                o->fullname = v;
                break;
            case 'C':
                o->config = v;
                break;
            case 'o':
                if (strcmp(v, "i") == 0)
                    o->ignore_dots = true;
                break; /* -oem, -oQ..., -odb...: ignored */
            case 'b':
                if (strcmp(v, "m") == 0)
                    o->mode = 'm';
                else if (strcmp(v, "s") == 0 || strcmp(v, "p") == 0 || strcmp(v, "i") == 0)
                    o->mode = v[0];
                else {
                    fprintf(stderr,
                        "sendmail: -b%s is not supported by tern (run ternd for a "
                        "daemon; tern probe to verify an address)\n",
                        v);
                    return CLI_EX_USAGE;
                }
                break;
            case 'B':
            case 'N':
            case 'R':
            case 'V':
            case 'X':
            case 'L':
            case 'h':
            case 'A':
            case 'O':
                break; /* accepted and ignored: see sendmail.h */
            default:
                fprintf(stderr, "sendmail: unknown option -%c\n", c);
                return sm_usage(NULL);
            }
            if (v != NULL)
                break; /* the value took the rest of the word */
        }
    }
    return 0;
}

/* ---- the environment: config, sender, socket ------------------------------------------------ */

struct sm_env {
    struct config cfg;
    bool have_cfg;
    char socket[512];
    char hostname[256];
    char maildrop[4200];
};

static void
sm_env_load(struct sm_env *e, const struct sm_opts *o)
{
    const char *path = o->config != NULL               ? o->config
                       : getenv("TERN_CONFIG") != NULL ? getenv("TERN_CONFIG")
                                                       : SM_DEFAULT_CONFIG;
    char err[1024];
    const char *sock;

    config_defaults(&e->cfg);
    if (access(path, F_OK) == 0) {
        if (config_load_file(&e->cfg, path, err, sizeof(err)) < 0 ||
            config_finish(&e->cfg, path, err, sizeof(err)) < 0) {
            fprintf(stderr, "sendmail: %s (using the defaults)\n", err);
            config_free(&e->cfg);
            config_defaults(&e->cfg);
        } else {
            e->have_cfg = true;
        }
    } else if (o->config != NULL) {
        fprintf(stderr, "sendmail: %s: %s (using the defaults)\n", path, strerror(errno));
    }
    sock = getenv("TERN_CONTROL_SOCKET");
    if (sock == NULL && e->have_cfg && e->cfg.control_socket != NULL)
        sock = e->cfg.control_socket;
    snprintf(e->socket, sizeof(e->socket), "%s", sock != NULL ? sock : SM_DEFAULT_SOCKET);
    if (e->have_cfg && e->cfg.hostname != NULL)
        snprintf(e->hostname, sizeof(e->hostname), "%s", e->cfg.hostname);
    else if (gethostname(e->hostname, sizeof(e->hostname) - 1) < 0 || e->hostname[0] == '\0')
        snprintf(e->hostname, sizeof(e->hostname), "localhost");
    snprintf(e->maildrop, sizeof(e->maildrop), "%s/maildrop",
        e->cfg.spool_dir != NULL ? e->cfg.spool_dir : "/var/spool/tern");
}

/* The envelope sender: -f/-r (angle brackets taken off), else user@hostname. */
static int
sm_sender(const struct sm_opts *o, const struct sm_env *e, char *out, size_t outlen)
{
    if (o->sender != NULL) {
        const char *s = o->sender;
        size_t n = strlen(s);

        if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
            s++;
            n -= 2;
        }
        if (n >= outlen)
            return -1;
        memcpy(out, s, n);
        out[n] = '\0';
        return out[0] == '\0' || cli_send_addr_ok(out) ? 0 : -1;
    }
    {
        struct passwd *pw = getpwuid(getuid());
        const char *user = pw != NULL ? pw->pw_name : getenv("USER");

        snprintf(out, outlen, "%s@%s", user != NULL ? user : "nobody", e->hostname);
    }
    return 0;
}

/* ---- submission ----------------------------------------------------------------------------- */

enum sm_submit { SM_OK, SM_REFUSED, SM_DOWN, SM_TEMP };

/*
 * SUBMIT over the control socket.  SM_OK with the queue ID, SM_REFUSED with
 * ternd's reason, SM_DOWN (no ternd to talk to: use the maildrop), SM_TEMP.
 */
static enum sm_submit
sm_submit(const char *path, const char *payload, size_t len, char *ans, size_t anslen)
{
    struct sockaddr_un sa;
    struct timeval tv = {SM_TIMEOUT, 0};
    char req[64], line[1100];
    size_t got = 0, off = 0;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(ans, anslen, "%s: path too long for a unix socket", path);
        return SM_DOWN;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(ans, anslen, "socket: %s", strerror(errno));
        return SM_TEMP;
    }
    if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(ans, anslen, "%s: %s", path, strerror(errno));
        close(fd);
        return SM_DOWN; /* ENOENT, ECONNREFUSED, EACCES...: nobody we may talk to */
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    snprintf(req, sizeof(req), "SUBMIT %zu\n", len);
    {
        const char *parts[2] = {req, payload};
        size_t lens[2] = {strlen(req), len}, i;

        for (i = 0; i < 2; i++) {
            off = 0;
            while (off < lens[i]) {
                ssize_t w = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);

                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    goto read_answer; /* ternd may have said why (ERR ...) */
                off += (size_t)w;
            }
        }
    }
read_answer:
    while (got < sizeof(line) - 1) {
        ssize_t n = recv(fd, line + got, sizeof(line) - 1 - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(line, '\n', got) != NULL)
            break;
    }
    close(fd);
    line[got] = '\0';
    if (strchr(line, '\n') == NULL) {
        snprintf(ans, anslen, "no answer from ternd%s",
            got == 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? " (timeout)" : "");
        return SM_TEMP;
    }
    *strchr(line, '\n') = '\0';
    if (strncmp(line, "OK ", 3) == 0) {
        snprintf(ans, anslen, "%s", line + 3);
        return SM_OK;
    }
    snprintf(ans, anslen, "%s", strncmp(line, "ERR ", 4) == 0 ? line + 4 : line);
    if (strstr(ans, "too many clients") != NULL || strstr(ans, "timeout") != NULL ||
        strstr(ans, "out of memory") != NULL || strstr(ans, "spool") != NULL ||
        (ans[0] == '4' && isdigit((unsigned char)ans[1])))
        return SM_TEMP;
    if (strstr(ans, "permission denied") != NULL)
        return SM_DOWN;
    return SM_REFUSED;
}

/* mkdir -p, the last component 0700 (only ternd's user reads the maildrop). */
static int
sm_mkdirs(const char *path)
{
    char tmp[4200], *p;

    snprintf(tmp, sizeof(tmp), "%s", path);
    for (p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* Hand one message over, ternd or maildrop; the exit status. */
static int
sm_deliver(const struct sm_env *e, bool verbose, const char *sender, char *const *rcpts,
    size_t nrcpts, const char *msg, size_t len, char *id, size_t idlen)
{
    struct buf payload;
    char ans[1100], path[4500];
    enum sm_submit r;
    int rc;

    buf_init(&payload, 0);
    if (maildrop_format(&payload, sender, (const char *const *)rcpts, nrcpts, msg, len) < 0) {
        buf_free(&payload);
        fprintf(stderr, "sendmail: an address has a control character or is too long\n");
        return SM_EX_DATAERR;
    }
    r = sm_submit(e->socket, payload.data, payload.len, ans, sizeof(ans));
    switch (r) {
    case SM_OK:
        if (verbose)
            fprintf(stderr, "sendmail: queued as %s\n", ans);
        snprintf(id, idlen, "%.40s", ans);
        rc = CLI_EX_OK;
        break;
    case SM_REFUSED:
        fprintf(stderr, "sendmail: ternd refused the message: %s\n", ans);
        rc = strstr(ans, "5.1.1") != NULL                                      ? CLI_EX_NOUSER
             : strstr(ans, "invalid") != NULL || strstr(ans, "larger") != NULL ? SM_EX_DATAERR
                                                                               : CLI_EX_UNAVAILABLE;
        break;
    case SM_TEMP:
        fprintf(stderr, "sendmail: ternd could not take the message now: %s\n", ans);
        rc = CLI_EX_TEMPFAIL;
        break;
    default:
        if (sm_mkdirs(e->maildrop) < 0 ||
            maildrop_deposit(e->maildrop, payload.data, payload.len, path, sizeof(path)) < 0) {
            fprintf(stderr,
                "sendmail: ternd is not running (%s), and the message cannot be left in "
                "%s: %s\n",
                ans, e->maildrop, strerror(errno));
            rc = CLI_EX_TEMPFAIL;
            break;
        }
        fprintf(stderr,
            "sendmail: ternd is not running; the message was left in %s and will be sent "
            "when it starts\n",
            e->maildrop);
        snprintf(id, idlen, "maildrop");
        rc = CLI_EX_OK;
        break;
    }
    buf_free(&payload);
    return rc;
}

/* ---- the message from stdin ----------------------------------------------------------------- */

static int
sm_read_stdin(bool ignore_dots, struct buf *b)
{
    char chunk[65536];
    size_t from = 0, end;

    for (;;) {
        ssize_t n = read(0, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "sendmail: reading the message: %s\n", strerror(errno));
            return CLI_EX_NOINPUT;
        }
        if (n > 0 && buf_append(b, chunk, (size_t)n) < 0) {
            fprintf(stderr, "sendmail: the message is too large\n");
            return SM_EX_DATAERR;
        }
        if (!ignore_dots) {
            end = cli_sendmail_dot_end(b->data != NULL ? b->data : "", b->len, &from, n == 0);
            if (end != (size_t)-1) {
                b->len = end;
                return 0;
            }
        }
        if (n == 0)
            return 0;
    }
}

/* The message as it goes: Bcc removed, From/Date/Message-ID added when missing. */
static int
sm_prepare(const struct sm_opts *o, const struct sm_env *e, const char *sender,
    const struct buf *in, struct buf *out)
{
    struct buf stripped;
    size_t hdrlen, body;
    char date[64];
    int rc = 0;

    buf_init(&stripped, 0);
    if (cli_sendmail_strip_bcc(in->data != NULL ? in->data : "", in->len, &stripped) < 0) {
        buf_free(&stripped);
        return -1;
    }
    body =
        cli_sendmail_header_end(stripped.data != NULL ? stripped.data : "", stripped.len, &hdrlen);
    if (!cli_sendmail_has_field(stripped.data, hdrlen, "From")) {
        if (o->fullname != NULL && strpbrk(o->fullname, "\r\n") == NULL)
            rc |= buf_printf(out, "From: %s <%s>\n", o->fullname, sender);
        else
            rc |= buf_printf(out, "From: <%s>\n", sender[0] ? sender : "MAILER-DAEMON");
    }
    if (!cli_sendmail_has_field(stripped.data, hdrlen, "Date")) {
        date_rfc5322_local(time(NULL), date, sizeof(date));
        rc |= buf_printf(out, "Date: %s\n", date);
    }
    if (!cli_sendmail_has_field(stripped.data, hdrlen, "Message-ID"))
        rc |= buf_printf(out, "Message-ID: <%lld.%ld.sendmail@%s>\n", (long long)time(NULL),
            (long)getpid(), e->hostname);
    /* no header section at all: ours needs the blank line before the body */
    if (hdrlen == 0 && body == 0)
        rc |= buf_puts(out, "\n");
    rc |= buf_append(out, stripped.data, stripped.len);
    buf_free(&stripped);
    return rc;
}

static void
sm_free_list(char **l, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static int
sm_send_mode(const struct sm_opts *o, const struct sm_env *e)
{
    struct buf in, msg;
    char sender[1024], id[64];
    char **rcpts = NULL;
    size_t nrcpts = 0, i, hdrlen;
    int rc;

    if (sm_sender(o, e, sender, sizeof(sender)) < 0)
        return sm_usage("-f: not an address");
    buf_init(&in, 0);
    buf_init(&msg, 0);
    rc = sm_read_stdin(o->ignore_dots, &in);
    if (rc != 0)
        goto out;
    for (i = 0; i < o->nrcpts; i++)
        if (cli_sendmail_parse_addrs(
                o->rcpts[i], strlen(o->rcpts[i]), &rcpts, &nrcpts, SM_MAX_RCPTS) < 0) {
            rc = sm_usage("too many recipients");
            goto out;
        }
    if (o->extract) {
        (void)cli_sendmail_header_end(in.data != NULL ? in.data : "", in.len, &hdrlen);
        if (cli_sendmail_header_rcpts(in.data, hdrlen, &rcpts, &nrcpts, SM_MAX_RCPTS) < 0) {
            rc = sm_usage("too many recipients");
            goto out;
        }
    }
    if (nrcpts == 0) {
        rc = sm_usage(o->extract ? "no recipients in the To, Cc or Bcc fields"
                                 : "no recipients (give them, or use -t)");
        goto out;
    }
    for (i = 0; i < nrcpts; i++)
        if (!cli_send_addr_ok(rcpts[i])) {
            fprintf(stderr, "sendmail: %s: not an address\n", rcpts[i]);
            rc = CLI_EX_USAGE;
            goto out;
        }
    if (sm_prepare(o, e, sender, &in, &msg) < 0) {
        rc = CLI_EX_OSERR;
        goto out;
    }
    rc = sm_deliver(e, o->verbose, sender, rcpts, nrcpts, msg.data != NULL ? msg.data : "", msg.len,
        id, sizeof(id));
out:
    sm_free_list(rcpts, nrcpts);
    buf_free(&in);
    buf_free(&msg);
    return rc;
}

/* ---- -bs: SMTP on stdin/stdout --------------------------------------------------------------- */

struct sm_bs {
    const struct sm_env *e;
    struct buf body;
    struct smtp_txn *commit; /* a commit asked for, done after input returns SUSPEND */
    unsigned n;
};

static enum reply_id
sm_bs_mail(void *ctx, struct smtp_txn *t)
{
    struct sm_bs *b = ctx;

    snprintf(t->id, sizeof(t->id), "local%ld.%u", (long)getpid(), ++b->n);
    buf_reset(&b->body);
    return R_MAIL_OK;
}

static enum reply_id
sm_bs_rcpt(void *ctx, const struct smtp_txn *t, const struct smtp_path *rcpt)
{
    (void)ctx;
    (void)t;
    (void)rcpt;
    return R_RCPT_OK; /* ternd judges them when the message is submitted */
}

static int
sm_bs_body(void *ctx, const char *p, size_t n)
{
    struct sm_bs *b = ctx;

    return buf_append(&b->body, p, n);
}

static void
sm_bs_commit(void *ctx, struct smtp_txn *t)
{
    struct sm_bs *b = ctx;

    b->commit = t;
}

static void
sm_bs_abort(void *ctx, struct smtp_txn *t)
{
    struct sm_bs *b = ctx;

    (void)t;
    buf_reset(&b->body);
}

static int
sm_bs_flush(struct smtp_session *s)
{
    struct buf *out = smtp_session_output(s);

    while (out->len > 0) {
        ssize_t w = write(1, out->data, out->len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf_consume(out, (size_t)w);
    }
    return 0;
}

/* Submit the message the session asked to commit; the reply for it. */
static enum reply_id
sm_bs_submit(struct sm_bs *b, struct smtp_txn *t)
{
    char **rcpts = calloc(t->nrcpts ? t->nrcpts : 1, sizeof(*rcpts));
    char id[64] = "";
    unsigned i;
    int rc;

    if (rcpts == NULL)
        return R_SPOOL_ERROR;
    for (i = 0; i < t->nrcpts; i++)
        rcpts[i] = t->rcpts[i].addr;
    rc = sm_deliver(b->e, false, t->sender.addr, rcpts, t->nrcpts,
        b->body.data != NULL ? b->body.data : "", b->body.len, id, sizeof(id));
    free(rcpts);
    buf_reset(&b->body);
    /* The class must survive the hand-over: a permanent refusal is not "try again". */
    if (rc == CLI_EX_NOUSER)
        return R_SUBMIT_UNKNOWN_USER;
    if (rc == CLI_EX_UNAVAILABLE || rc == SM_EX_DATAERR)
        return R_SUBMIT_REFUSED;
    if (rc != CLI_EX_OK)
        return R_SPOOL_ERROR;
    snprintf(t->id, sizeof(t->id), "%.23s", id);
    return R_QUEUED;
}

static int
sm_bs_mode(const struct sm_env *e)
{
    struct sm_bs b = {.e = e};
    struct smtp_callbacks cb = {sm_bs_mail, sm_bs_rcpt, sm_bs_body, sm_bs_commit, sm_bs_abort,
        NULL};
    struct smtp_session_conf conf = {
        .hostname = e->hostname,
        .max_line_length = (size_t)e->cfg.max_line_length,
        .max_message_size = (unsigned long long)e->cfg.max_message_size,
        .max_recipients = (unsigned)e->cfg.max_recipients,
        .max_errors = (unsigned)e->cfg.max_errors,
    };
    struct smtp_peer peer = {.addr = "127.0.0.1", .id = "sendmail-bs", .tls = false};
    struct smtp_session *s;
    struct buf in;
    char chunk[16384];
    enum smtp_status st;
    bool held_cr = false;
    int rc = 0;

    buf_init(&b.body, (size_t)e->cfg.max_message_size + 65536);
    buf_init(&in, 0);
    s = smtp_session_new(&conf, &cb, &b, &peer);
    if (s == NULL) {
        buf_free(&b.body);
        return CLI_EX_OSERR;
    }
    st = smtp_session_greet(s);
    if (sm_bs_flush(s) < 0)
        st = SMTP_CLOSE;
    while (st != SMTP_CLOSE) {
        ssize_t n;

        if (in.len > 0) {
            size_t used = smtp_session_input(s, in.data, in.len, time(NULL), &st);

            buf_consume(&in, used);
            if (st == SMTP_SUSPEND && b.commit != NULL) {
                enum reply_id r = sm_bs_submit(&b, b.commit);

                b.commit = NULL;
                st = smtp_session_commit_done(s, r);
            }
            if (sm_bs_flush(s) < 0)
                break;
            if (used > 0 || st == SMTP_CLOSE)
                continue;
        }
        n = read(0, chunk, sizeof(chunk) - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        /* local programs end lines with LF: make every line end CRLF (a CR split from its
           LF by a read is held back for the next one) */
        if (held_cr) {
            memmove(chunk + 1, chunk, (size_t)n);
            chunk[0] = '\r';
            n++;
            held_cr = false;
        }
        if (chunk[n - 1] == '\r') {
            held_cr = true;
            n--;
        }
        if (maildrop_crlf(&in, chunk, (size_t)n) < 0) {
            rc = CLI_EX_OSERR;
            break;
        }
    }
    smtp_session_free(s);
    buf_free(&in);
    buf_free(&b.body);
    return rc;
}

/* ---- main ----------------------------------------------------------------------------------- */

int
cli_sendmail_main(int argc, char **argv)
{
    struct sm_opts o;
    struct sm_env e;
    int rc;

    rc = sm_parse(&o, argc, argv);
    if (rc != 0) {
        free(o.rcpts);
        return rc;
    }
    memset(&e, 0, sizeof(e));
    sm_env_load(&e, &o);
    switch (o.mode) {
    case 'p': {
        char *args[] = {"mailq", NULL};

        rc = cli_mailq_main(1, args, e.socket);
        break;
    }
    case 'q': {
        char *args[] = {"queue", "flush", NULL};

        rc = cli_queue_main(2, args, e.socket);
        break;
    }
    case 'i':
        fprintf(stderr, "sendmail: tern has no aliases database; nothing to do\n");
        rc = CLI_EX_OK;
        break;
    case 's':
        rc = sm_bs_mode(&e);
        break;
    default:
        rc = sm_send_mode(&o, &e);
        break;
    }
    config_free(&e.cfg);
    free(o.rcpts);
    return rc;
}
