/*
 * tls.h - server-side TLS contexts (OpenSSL 3) for STARTTLS and implicit TLS.
 *
 * A tls_server holds the current SSL_CTX built from tls_cert/tls_key:
 * TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers for TLS 1.2 (OpenSSL's
 * default TLS 1.3 suites), server cipher preference, no compression, no
 * renegotiation, stateless session tickets, SSL_MODE_RELEASE_BUFFERS (an
 * idle connection holds no record buffers).  tls_server_reload() builds a
 * new SSL_CTX from the same files; on failure the old one stays in force.
 * Each SSL holds a reference to the SSL_CTX it was made from, so a
 * connection keeps the context (and certificate) it started with.
 *
 * The connection I/O itself (SSL_read/SSL_write on the raw non-blocking fd,
 * WANT_READ/WANT_WRITE) lives in server.c; this file only makes the
 * objects.  Not thread-safe: all calls on the loop thread.
 */
#ifndef TERN_NET_TLS_H
#define TERN_NET_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct tls_server;

/* Load the certificate chain and key; NULL with the reason in err. */
struct tls_server *tls_server_new(const char *cert, const char *key, char *err, size_t errlen);

/*
 * Build a new SSL_CTX from the same files (SIGHUP).  0 when the new one is
 * in force; -1 with the reason in err when the old one stays.
 */
int tls_server_reload(struct tls_server *t, char *err, size_t errlen);

/*
 * A new server-side SSL for an accepted, non-blocking socket, made from the
 * current context.  log_id (the session ID, kept by the caller for the life
 * of the SSL) labels the SNI log line.  NULL when out of memory.
 */
SSL *tls_server_ssl(struct tls_server *t, int fd, const char *log_id);

/* The reason of the last OpenSSL failure on this thread (for a log line); clears the queue. */
const char *tls_error_string(char *buf, size_t len);

void tls_server_free(struct tls_server *t);

#endif
