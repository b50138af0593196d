/*
 * remote_tls.c - TLS for the SMTP client (see remote_tls.h).
 *
 * Two kinds of SSL_CTX, made on first use and shared by the worker threads
 * (OpenSSL 3 contexts are safe to share once set up): one that checks nothing
 * (may, encrypt) and one per trust store that verifies (verify; the CA file
 * in use is remembered, so a test's tls_ca_file and the system store do not
 * mix).  The socket stays non-blocking: each SSL call that wants to read or
 * write waits in io_wait() up to the caller's deadline.
 *
 * The memory of failed handshakes (for `may`) is a small table under a mutex:
 * a host that fails is remembered REMOTE_TLS_FALLBACK_SECS, the oldest entry
 * gives way when it is full.  It lives in memory only: after a restart TLS is
 * tried again, which costs one deferred attempt at worst.
 */
#include "deliver/remote_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "util/io.h"

#define FALLBACK_MAX 256

struct remote_tls {
    SSL *ssl;
    int fd;
};

static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx_plain;  /* may, encrypt: no verification */
static SSL_CTX *tls_ctx_verify; /* verify: against tls_ctx_verify_ca */
static SSL_CTX *tls_ctx_dane;   /* dane: OpenSSL's DANE verifier, no trust store at all */
static char *tls_ctx_verify_ca; /* NULL: the system's trust store */

static struct {
    char dest[340];
    time_t when;
} fallback[FALLBACK_MAX];

enum remote_tls_policy
remote_tls_policy(const char *word)
{
    if (word == NULL)
        return REMOTE_TLS_MAY;
    if (strcmp(word, "none") == 0)
        return REMOTE_TLS_NONE;
    if (strcmp(word, "encrypt") == 0)
        return REMOTE_TLS_ENCRYPT;
    if (strcmp(word, "verify") == 0)
        return REMOTE_TLS_VERIFY;
    if (strcmp(word, "dane") == 0)
        return REMOTE_TLS_DANE;
    return REMOTE_TLS_MAY;
}

const char *
remote_tls_policy_name(enum remote_tls_policy p)
{
    switch (p) {
    case REMOTE_TLS_NONE:
        return "none";
    case REMOTE_TLS_MAY:
        return "may";
    case REMOTE_TLS_ENCRYPT:
        return "encrypt";
    case REMOTE_TLS_VERIFY:
        return "verify";
    case REMOTE_TLS_DANE:
        return "dane";
    }
    return "?";
}

static SSL_CTX *
tls_ctx_new(bool verify, const char *ca_file, char *why, size_t whylen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        snprintf(why, whylen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* a peer that closes without close_notify ends the stream like a plain EOF */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (verify) {
        int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);

        if (ok != 1) {
            snprintf(why, whylen, "cannot load the trust anchors %s",
                ca_file != NULL ? ca_file : "(system default)");
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

/* The context for policy p, with a reference for the caller (SSL_CTX_free when done). */
static SSL_CTX *
tls_ctx_get(enum remote_tls_policy p, const char *ca_file, char *why, size_t whylen)
{
    SSL_CTX *ctx;

    pthread_mutex_lock(&tls_mu);
    if (p == REMOTE_TLS_DANE) {
        if (tls_ctx_dane == NULL && (tls_ctx_dane = tls_ctx_new(false, NULL, why, whylen))) {
            /* PKIX-TA/EE are never handed to it (dane.c), so no trust store is loaded:
             * only a TLSA match authenticates.  Digests: SHA2-256 and SHA2-512 (the
             * defaults, with RFC 7671 §9 digest agility). */
            if (SSL_CTX_dane_enable(tls_ctx_dane) <= 0) {
                snprintf(why, whylen, "cannot enable DANE in the TLS context");
                SSL_CTX_free(tls_ctx_dane);
                tls_ctx_dane = NULL;
            } else {
                /* RFC 7672 §3.1.1: a DANE-EE(3) match authenticates the key itself, so
                 * neither the names in the certificate nor its dates matter.  OpenSSL skips
                 * the dates for a DANE-EE match but checks names unless told (the default
                 * suits HTTPS, not SMTP). */
                SSL_CTX_dane_set_flags(tls_ctx_dane, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
                SSL_CTX_set_verify(tls_ctx_dane, SSL_VERIFY_PEER, NULL);
            }
        }
        ctx = tls_ctx_dane;
    } else if (p != REMOTE_TLS_VERIFY) {
        if (tls_ctx_plain == NULL)
            tls_ctx_plain = tls_ctx_new(false, NULL, why, whylen);
        ctx = tls_ctx_plain;
    } else {
        bool same = (ca_file == NULL && tls_ctx_verify_ca == NULL) ||
                    (ca_file != NULL && tls_ctx_verify_ca != NULL &&
                        strcmp(ca_file, tls_ctx_verify_ca) == 0);

        if (tls_ctx_verify == NULL || !same) {
            SSL_CTX *n = tls_ctx_new(true, ca_file, why, whylen);

            if (n != NULL) {
                SSL_CTX_free(tls_ctx_verify); /* connections still using it hold a reference */
                free(tls_ctx_verify_ca);
                tls_ctx_verify = n;
                tls_ctx_verify_ca = ca_file != NULL ? strdup(ca_file) : NULL;
            } else if (!same) {
                pthread_mutex_unlock(&tls_mu);
                return NULL;
            }
        }
        ctx = tls_ctx_verify;
    }
    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&tls_mu);
    return ctx;
}

/* OpenSSL's reason for the failure, with the certificate check's when that is why. */
static void
tls_why(SSL *ssl, const char *what, char *why, size_t whylen)
{
    unsigned long e = ERR_peek_last_error();
    long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    char buf[256];

    if (vr != X509_V_OK && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
        snprintf(why, whylen, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(why, whylen, "%s: %s", what, buf);
    } else {
        snprintf(why, whylen, "%s: %s", what, errno != 0 ? strerror(errno) : "connection closed");
    }
    ERR_clear_error();
}

/* Wait for what SSL asked; 0 to retry, -1 with errno. */
static int
tls_wait(struct remote_tls *t, int rc, long long deadline)
{
    int e = SSL_get_error(t->ssl, rc);

    if (e == SSL_ERROR_WANT_READ)
        return io_wait(t->fd, POLLIN, deadline);
    if (e == SSL_ERROR_WANT_WRITE)
        return io_wait(t->fd, POLLOUT, deadline);
    if (e == SSL_ERROR_ZERO_RETURN)
        errno = 0;
    else if (e != SSL_ERROR_SYSCALL || errno == 0)
        errno = EIO;
    return -1;
}

static bool
tls_is_ip(const char *host)
{
    unsigned char a[16];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/*
 * The name TLS is about: an address-literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]",
 * RFC 5321 §4.1.3) is its address -- no SNI for it (RFC 6066 §3: host names only), and under
 * verify the certificate is checked for the IP address.  Other names as they are.
 */
static const char *
tls_host_name(const char *host, char *buf, size_t buflen)
{
    size_t len;

    if (host == NULL || host[0] != '[' || (len = strlen(host)) < 3 || host[len - 1] != ']' ||
        len - 2 >= buflen)
        return host;
    memcpy(buf, host + 1, len - 2);
    buf[len - 2] = '\0';
    if (strncasecmp(buf, "IPv6:", 5) == 0)
        memmove(buf, buf + 5, strlen(buf + 5) + 1);
    return tls_is_ip(buf) ? buf : host;
}

/* DANE on ssl: base domain host, the usable records of tlsa.  0, or -1 with why. */
static int
tls_dane_setup(SSL *ssl, const struct dane_rrset *tlsa, const char *host, char *why, size_t whylen)
{
    size_t i;
    int added = 0;

    if (tlsa == NULL || host == NULL || host[0] == '\0') {
        snprintf(why, whylen, "DANE without TLSA records or host name");
        return -1;
    }
    /* The reference name for DANE-TA(2) is the TLSA base domain, the MX host name (RFC 7672
     * §3.2.2); DANE-EE(3) is not name-checked (DANE_FLAG_NO_DANE_EE_NAMECHECKS on the
     * context). */
    if (SSL_dane_enable(ssl, host) <= 0) {
        snprintf(why, whylen, "cannot enable DANE for %s", host);
        return -1;
    }
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    for (i = 0; i < tlsa->n; i++) {
        const struct dane_tlsa *r = &tlsa->rr[i];

        /* > 0 added, 0 unusable to OpenSSL (skipped), < 0 malformed (skipped too) */
        if (SSL_dane_tlsa_add(
                ssl, r->usage, r->selector, r->mtype, dane_rrset_data(tlsa, i), r->len) > 0)
            added++;
    }
    ERR_clear_error();
    if (added == 0) {
        snprintf(why, whylen, "DANE: no TLSA record of %s usable by OpenSSL", host);
        return -1;
    }
    return 0;
}

struct remote_tls *
remote_tls_start(int fd, enum remote_tls_policy p, const char *ca_file,
    const struct dane_rrset *tlsa, const char *host, long long deadline_ms, char *why,
    size_t whylen)
{
    struct remote_tls *t;
    SSL_CTX *ctx;
    char hostbuf[INET6_ADDRSTRLEN + 8];
    int rc;

    ERR_clear_error();
    if ((ctx = tls_ctx_get(p, ca_file, why, whylen)) == NULL)
        return NULL;
    if ((t = calloc(1, sizeof(*t))) == NULL || (t->ssl = SSL_new(ctx)) == NULL) {
        snprintf(why, whylen, "out of memory for TLS");
        free(t);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    t->fd = fd;
    SSL_set_fd(t->ssl, fd);
    host = tls_host_name(host, hostbuf, sizeof(hostbuf));
    if (host != NULL && host[0] != '\0') {
        bool ip = tls_is_ip(host);

        if (!ip)
            SSL_set_tlsext_host_name(t->ssl, host);
        if (p == REMOTE_TLS_VERIFY) {
            SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                    : SSL_set1_host(t->ssl, host)) != 1) {
                snprintf(why, whylen, "cannot check the certificate for %s", host);
                remote_tls_close(t);
                return NULL;
            }
        }
    } else if (p == REMOTE_TLS_VERIFY) {
        snprintf(why, whylen, "no host name to check the certificate against");
        remote_tls_close(t);
        return NULL;
    }
    if (p == REMOTE_TLS_DANE && tls_dane_setup(t->ssl, tlsa, host, why, whylen) != 0) {
        remote_tls_close(t);
        return NULL;
    }
    for (;;) {
        errno = 0;
        if ((rc = SSL_connect(t->ssl)) == 1)
            return t;
        if (SSL_get_error(t->ssl, rc) != SSL_ERROR_WANT_READ &&
            SSL_get_error(t->ssl, rc) != SSL_ERROR_WANT_WRITE) {
            if (p == REMOTE_TLS_DANE) {
                char w[256];

                tls_why(t->ssl, "handshake failed", w, sizeof(w));
                snprintf(why, whylen, "DANE authentication failed: %s", w);
            } else {
                tls_why(t->ssl, "handshake failed", why, whylen);
            }
            break;
        }
        if (tls_wait(t, rc, deadline_ms) < 0) {
            snprintf(why, whylen, "%s during the handshake",
                errno == ETIMEDOUT ? "timeout" : strerror(errno));
            break;
        }
    }
    remote_tls_close(t);
    return NULL;
}

ssize_t
remote_tls_write(struct remote_tls *t, const void *p, size_t n, long long deadline_ms)
{
    int rc;

    if (n > (size_t)1 << 30)
        n = (size_t)1 << 30;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        if ((rc = SSL_write(t->ssl, p, (int)n)) > 0)
            return rc;
        if (tls_wait(t, rc, deadline_ms) < 0) {
            if (errno == 0)
                errno = EPIPE;
            return -1;
        }
    }
}

ssize_t
remote_tls_read(struct remote_tls *t, void *p, size_t n, long long deadline_ms)
{
    int rc;

    if (n > (size_t)1 << 30)
        n = (size_t)1 << 30;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        if ((rc = SSL_read(t->ssl, p, (int)n)) > 0)
            return rc;
        if (tls_wait(t, rc, deadline_ms) < 0)
            return errno == 0 ? 0 : -1;
    }
}

const char *
remote_tls_describe(const struct remote_tls *t, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
    return buf;
}

const char *
remote_tls_dane_describe(const struct remote_tls *t, char *buf, size_t len)
{
    uint8_t usage, selector, mtype;
    const unsigned char *data;
    size_t dlen;
    int depth = SSL_get0_dane_tlsa(t->ssl, &usage, &selector, &mtype, &data, &dlen);

    if (depth < 0)
        snprintf(buf, len, "none");
    else
        snprintf(buf, len, "usage=%u selector=%u mtype=%u depth=%d", usage, selector, mtype, depth);
    return buf;
}

/* The subjectAltName entries of x we know how to print, as "DNS:a, IP:b". */
static void
tls_peer_names(X509 *x, char *out, size_t len)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t off = 0;
    int i;

    out[0] = '\0';
    for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char item[300] = "";
        int k;

        if (g->type == GEN_DNS) {
            snprintf(item, sizeof(item), "DNS:%.*s", ASN1_STRING_length(g->d.dNSName),
                (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "?";
            int n = ASN1_STRING_length(g->d.iPAddress);

            if (n == 4 || n == 16)
                inet_ntop(n == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), ip,
                    sizeof(ip));
            snprintf(item, sizeof(item), "IP:%s", ip);
        } else if (g->type == GEN_EMAIL) {
            snprintf(item, sizeof(item), "email:%.*s", ASN1_STRING_length(g->d.rfc822Name),
                (const char *)ASN1_STRING_get0_data(g->d.rfc822Name));
        } else {
            continue;
        }
        for (k = 0; item[k] != '\0'; k++)
            if ((unsigned char)item[k] < 0x20 || item[k] == 0x7f)
                item[k] = '?'; /* the peer's bytes go to a terminal */
        k = snprintf(out + off, len - off, "%s%s", off > 0 ? ", " : "", item);
        if (k < 0 || (size_t)k >= len - off)
            break;
        off += (size_t)k;
    }
    GENERAL_NAMES_free(gens);
}

static void
tls_peer_dn(const X509_NAME *n, char *out, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    long k;
    char *p;

    out[0] = '\0';
    if (b == NULL)
        return;
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    k = BIO_get_mem_data(b, &p);
    snprintf(out, len, "%.*s", (int)(k < (long)len ? k : (long)len - 1), p);
    for (p = out; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    BIO_free(b);
}

int
remote_tls_peer(
    const struct remote_tls *t, const char *ca_file, const char *host, struct remote_tls_peer *out)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
    X509_STORE *store = NULL;
    X509_STORE_CTX *vctx = NULL;
    struct tm tm;
    char hbuf[64];
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (x == NULL) {
        snprintf(out->verify, sizeof(out->verify), "no certificate");
        return 0;
    }
    tls_peer_dn(X509_get_subject_name(x), out->subject, sizeof(out->subject));
    tls_peer_dn(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer));
    tls_peer_names(x, out->names, sizeof(out->names));
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        strftime(out->not_after, sizeof(out->not_after), "%Y-%m-%d %H:%M:%S UTC", &tm);
    ERR_clear_error();
    if ((store = X509_STORE_new()) == NULL || (vctx = X509_STORE_CTX_new()) == NULL ||
        (ca_file != NULL ? X509_STORE_load_file(store, ca_file)
                         : X509_STORE_set_default_paths(store)) != 1) {
        snprintf(out->verify, sizeof(out->verify), "cannot load the trust anchors %s",
            ca_file != NULL ? ca_file : "(system default)");
        goto out;
    }
    /* chain: what the server sent, its own certificate first (client side) */
    if (X509_STORE_CTX_init(vctx, store, x, chain) != 1) {
        snprintf(out->verify, sizeof(out->verify), "cannot set up the verification");
        goto out;
    }
    X509_STORE_CTX_set_default(vctx, "ssl_server");
    host = tls_host_name(host, hbuf, sizeof(hbuf)); /* an address literal is its address */
    if (host != NULL && host[0] != '\0') {
        X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(vctx);

        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((tls_is_ip(host) ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
                             : X509_VERIFY_PARAM_set1_host(vp, host, 0)) != 1) {
            snprintf(out->verify, sizeof(out->verify), "cannot check the name %s", host);
            goto out;
        }
    }
    rc = 0;
    if (X509_verify_cert(vctx) == 1) {
        out->verified = true;
        snprintf(out->verify, sizeof(out->verify), "ok");
    } else {
        snprintf(out->verify, sizeof(out->verify), "%s",
            X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
    }
out:
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}

void
remote_tls_close(struct remote_tls *t)
{
    if (t == NULL)
        return;
    if (SSL_is_init_finished(t->ssl))
        (void)SSL_shutdown(t->ssl); /* close_notify; the reply is not awaited */
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t);
}

void
remote_tls_fallback_note(const char *dest, time_t now)
{
    size_t i, slot = 0;

    pthread_mutex_lock(&tls_mu);
    for (i = 0; i < FALLBACK_MAX; i++) {
        if (strcmp(fallback[i].dest, dest) == 0) {
            slot = i;
            break;
        }
        if (fallback[i].when < fallback[slot].when)
            slot = i; /* the oldest (or an empty one) gives way */
    }
    snprintf(fallback[slot].dest, sizeof(fallback[slot].dest), "%s", dest);
    fallback[slot].when = now;
    pthread_mutex_unlock(&tls_mu);
}

bool
remote_tls_fallback_active(const char *dest, time_t now)
{
    bool active = false;
    size_t i;

    pthread_mutex_lock(&tls_mu);
    for (i = 0; i < FALLBACK_MAX; i++) {
        if (fallback[i].dest[0] != '\0' && strcmp(fallback[i].dest, dest) == 0) {
            active = now - fallback[i].when < REMOTE_TLS_FALLBACK_SECS;
            break;
        }
    }
    pthread_mutex_unlock(&tls_mu);
    return active;
}
