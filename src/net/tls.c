/*
 * tls.c - server-side TLS contexts (see tls.h).
 *
 * Choices (docs/design.md, "TLS"):
 *  - TLS 1.2 and 1.3 only.  For TLS 1.2 only ECDHE key exchange with AEAD
 *    ciphers (AES-GCM, ChaCha20-Poly1305): forward secrecy, no CBC (Lucky13,
 *    padding oracles), no RC4/3DES/NULL/EXPORT, no static RSA.  TLS 1.3 uses
 *    OpenSSL's default suites, all AEAD.  A client that cannot do this fails
 *    the handshake; an MTA then retries in plaintext, which is what
 *    opportunistic STARTTLS gives it anyway.
 *  - Server preference: our order (AES-256-GCM first) wins over the client's.
 *  - No compression (CRIME), no renegotiation (client-initiated
 *    renegotiation is a cheap CPU attack and has no use in SMTP).
 *  - Session tickets yes, the server-side session cache no: tickets are
 *    stateless, so resumption costs no memory per past client.  Ticket keys
 *    live in the SSL_CTX; after a reload old tickets just mean a full
 *    handshake.
 *  - SSL_MODE_RELEASE_BUFFERS: the 16 KiB+ record buffers are freed while a
 *    connection is idle (the same promise server.c makes for plaintext).
 *  - Read-ahead: one read() takes whatever records have arrived, so bulk
 *    input costs one system call per 16 KiB or more, not two per record;
 *    records read ahead wait in OpenSSL (SSL_has_pending), which server.c
 *    feeds without waiting for the fd.
 *  - SSL_MODE_ENABLE_PARTIAL_WRITE and ACCEPT_MOVING_WRITE_BUFFER: server.c
 *    writes from the session's output buffer, which may grow (and move)
 *    between a WANT_WRITE and the retry.
 *  - SNI: one certificate for every name; the name a client asks for is
 *    accepted and logged (debug here, and in the handshake's info line).
 *    Several certificates would be one SSL_CTX each, chosen in the
 *    servername callback with SSL_set_SSL_CTX(); not done yet.
 */
#include "net/tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define TLS_CIPHERS_12 "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!PSK"
#define TLS_GROUPS "X25519:P-256:P-384"

struct tls_server {
    char *cert;
    char *key;
    SSL_CTX *ctx;
};

const char *
tls_error_string(char *buf, size_t len)
{
    unsigned long first = ERR_get_error(), last = first, e;
    char a[256], b[256];

    /* The first error is the cause (e.g. "no start line"), the last the context ("PEM lib"). */
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (first == 0) {
        snprintf(buf, len, "no OpenSSL error queued");
        return buf;
    }
    ERR_error_string_n(first, a, sizeof(a));
    if (last == first) {
        snprintf(buf, len, "%s", a);
    } else {
        ERR_error_string_n(last, b, sizeof(b));
        snprintf(buf, len, "%s; %s", a, b);
    }
    return buf;
}

/* Accept any name; log it.  (One certificate for all names: see the header comment.) */
static int
tls_on_servername(SSL *ssl, int *alert, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const char *id = SSL_get_app_data(ssl);
    char buf[256];

    if (name != NULL)
        log_debug(id, "event=tls-sni name=%s", log_token(name, buf, sizeof(buf)));
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    char e[256];

    ERR_clear_error();
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_error_string(e, sizeof(e)));
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
        snprintf(err, errlen, "TLS parameters: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_RENEGOTIATION | SSL_OP_SINGLE_ECDH_USE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() may take several records: fewer system calls for pipelined input. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tern", 4);
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_on_servername);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "tls_cert %s: %s", cert, tls_error_string(e, sizeof(e)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls_key %s: %s", key, tls_error_string(e, sizeof(e)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls_key %s does not match tls_cert %s: %s", key, cert,
            tls_error_string(e, sizeof(e)));
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct tls_server *
tls_server_new(const char *cert, const char *key, char *err, size_t errlen)
{
    struct tls_server *t;

    if ((t = calloc(1, sizeof(*t))) == NULL || (t->cert = strdup(cert)) == NULL ||
        (t->key = strdup(key)) == NULL) {
        snprintf(err, errlen, "out of memory");
        tls_server_free(t);
        return NULL;
    }
    if ((t->ctx = tls_ctx_new(cert, key, err, errlen)) == NULL) {
        tls_server_free(t);
        return NULL;
    }
    return t;
}

int
tls_server_reload(struct tls_server *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_ctx_new(t->cert, t->key, err, errlen);

    if (ctx == NULL)
        return -1;
    SSL_CTX_free(t->ctx); /* connections made from it hold their own reference */
    t->ctx = ctx;
    return 0;
}

SSL *
tls_server_ssl(struct tls_server *t, int fd, const char *log_id)
{
    SSL *ssl;

    if ((ssl = SSL_new(t->ctx)) == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, (void *)log_id);
    SSL_set_accept_state(ssl);
    return ssl;
}

void
tls_server_free(struct tls_server *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t->cert);
    free(t->key);
    free(t);
}
