/*
 * fuzz_session.c - libFuzzer target: arbitrary bytes into the session state
 * machine, split at points chosen by the input, with commits answered
 * (alternately success and failure).  Checks: no crash, no sanitizer
 * report, every output line ends in CRLF and starts with a 3-digit code,
 * the output for a split input equals the output for the whole input, and
 * output stays bounded.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned commits;

static enum reply_id
f_mail(void *ctx, struct smtp_txn *t)
{
    snprintf(t->id, sizeof(t->id), "QID");
    return R_MAIL_OK;
}

static enum reply_id
f_rcpt(void *ctx, const struct smtp_txn *t, const struct smtp_path *r)
{
    return strchr(r->addr, 'z') != NULL ? R_RELAY_DENIED : R_RCPT_OK;
}

/* Fails on the piece holding the first '!': the same outcome however the input is split. */
static int
f_body(void *ctx, const char *p, size_t n)
{
    return memchr(p, '!', n) != NULL ? -1 : 0;
}

static void
f_commit(void *ctx, struct smtp_txn *t)
{
}

static void
f_abort(void *ctx, struct smtp_txn *t)
{
}

/* AUTH answers at once (a pending verdict would look like a commit here). */
static enum reply_id
f_auth(void *ctx, const char *user, const char *pass)
{
    if (strcmp(user, "blocked") == 0)
        return R_AUTH_TOO_MANY;
    return strcmp(pass, "pw") == 0 ? R_AUTH_OK : R_AUTH_FAILED;
}

static const struct smtp_callbacks cb = {f_mail, f_rcpt, f_body, f_commit, f_abort, f_auth};

static size_t
run(const uint8_t *data, size_t size, size_t step, char *out, size_t cap, bool tls)
{
    /*
     * STARTTLS and AUTH offered; the first byte's top bit says whether the
     * session starts under TLS (AUTH at once) or in plaintext (bytes after a
     * STARTTLS are fed as if they came under TLS).
     */
    struct smtp_session_conf conf = {.hostname = "mx.fuzz", .max_line_length = 512,
        .max_message_size = 2000, .max_recipients = 5, .max_errors = 50, .tls_offer = true,
        .auth_offer = true};
    struct smtp_peer peer = {"192.0.2.1", "F", tls};
    struct smtp_session *s = smtp_session_new(&conf, &cb, NULL, &peer);
    enum smtp_status st = SMTP_OK;
    size_t off = 0, outlen = 0, n, used;
    unsigned k = 0;
    struct buf *b;

    if (s == NULL)
        abort();
    smtp_session_greet(s);
    while (off < size && st != SMTP_CLOSE) {
        n = step ? (size - off < step ? size - off : step) : size - off;
        used = smtp_session_input(s, (const char *)data + off, n, 0, &st);
        off += used;
        if (st == SMTP_SUSPEND)
            st = smtp_session_commit_done(s, (k++ & 1) ? R_SPOOL_ERROR : R_QUEUED);
        else if (st == SMTP_STARTTLS)
            st = smtp_session_tls_started(s, "TLSv1.3", "TLS_AES_128_GCM_SHA256");
        b = smtp_session_output(s);
        if (b->len > 70000)
            abort();
        if (outlen + b->len <= cap) {
            memcpy(out + outlen, b->data, b->len);
            outlen += b->len;
        }
        buf_reset(b);
    }
    b = smtp_session_output(s);
    if (outlen + b->len <= cap) {
        memcpy(out + outlen, b->data, b->len);
        outlen += b->len;
    }
    smtp_session_free(s);
    commits += k;
    return outlen;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char out1[1 << 20], out2[1 << 20];
    size_t n1, n2, i, step;

    if (size == 0)
        return 0;
    step = 1 + data[0] % 7;
    n1 = run(data + 1, size - 1, 0, out1, sizeof(out1), data[0] & 0x80);
    n2 = run(data + 1, size - 1, step, out2, sizeof(out2), data[0] & 0x80);
    if (n1 != n2 || memcmp(out1, out2, n1) != 0)
        abort(); /* the session must not care how input is split */
    /* Every reply line: "DDD" then ' ' or '-', and CRLF at the end; no bare CR/LF. */
    for (i = 0; i < n1;) {
        const char *eol = memchr(out1 + i, '\n', n1 - i);
        size_t len;
        if (eol == NULL)
            abort();
        len = (size_t)(eol - (out1 + i));
        if (len < 4 || out1[i + len - 1] != '\r' || out1[i] < '2' || out1[i] > '5' ||
            (out1[i + 3] != ' ' && out1[i + 3] != '-'))
            abort();
        if (memchr(out1 + i, '\r', len - 1) != NULL)
            abort();
        i += len + 1;
    }
    return 0;
}
