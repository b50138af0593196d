/*
 * tls_mem.c - heap bytes a server-side SSL holds once idle, with ternd's settings, with and
 * without SSL_MODE_RELEASE_BUFFERS: 500 handshakes between in-memory SSL pairs (no
 * sockets), then glibc's mallinfo2() before and after, the clients freed.
 *
 *   cc -O2 bench/tls_mem.c -o /tmp/tls_mem -lssl -lcrypto
 *   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
 *       -keyout /tmp/k.pem -out /tmp/c.pem -subj /CN=x
 *   /tmp/tls_mem /tmp/c.pem /tmp/k.pem
 */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define N 500
static const char *cert_path, *key_path;
static void
pump(BIO *a_out, BIO *b_in)
{
    char buf[65536];
    int n;
    while ((n = BIO_read(a_out, buf, sizeof buf)) > 0)
        BIO_write(b_in, buf, n);
}
int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tls_mem CERT KEY\n");
        return 2;
    }
    cert_path = argv[1];
    key_path = argv[2];
    for (int release = 1; release >= 0; release--)
        for (int maxv = 13; maxv >= 12; maxv--) {
            SSL_CTX *s = SSL_CTX_new(TLS_server_method()), *c = SSL_CTX_new(TLS_client_method());
            SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
            SSL_CTX_set_max_proto_version(c, maxv == 12 ? TLS1_2_VERSION : TLS1_3_VERSION);
            SSL_CTX_set_cipher_list(s, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!PSK");
            SSL_CTX_set1_groups_list(s, "X25519:P-256:P-384");
            SSL_CTX_set_options(s,
                SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
            SSL_CTX_set_mode(s, (release ? SSL_MODE_RELEASE_BUFFERS : 0) |
                                    SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            SSL_CTX_set_read_ahead(s, 1);
            SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);

            SSL_CTX_use_certificate_chain_file(s, cert_path);
            SSL_CTX_use_PrivateKey_file(s, key_path, SSL_FILETYPE_PEM);
            static SSL *ss[N];
            SSL *cc[N];
            /* warm up */
            for (int round = 0; round < 2; round++) {
                struct mallinfo2 m0 = mallinfo2();
                for (int i = 0; i < N; i++) {
                    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
                    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
                    ss[i] = SSL_new(s);
                    cc[i] = SSL_new(c);
                    SSL_set_bio(ss[i], s_in, s_out);
                    SSL_set_bio(cc[i], c_in, c_out);
                    SSL_set_accept_state(ss[i]);
                    SSL_set_connect_state(cc[i]);
                    for (int k = 0; k < 10; k++) {
                        SSL_do_handshake(cc[i]);
                        pump(c_out, s_in);
                        SSL_do_handshake(ss[i]);
                        pump(s_out, c_in);
                    }
                    char b[100];
                    SSL_write(ss[i], "220 x\r\n", 7);
                    pump(s_out, c_in);
                    SSL_read(cc[i], b, sizeof b);
                    pump(c_out, s_in);
                    SSL_write(cc[i], "EHLO\r\n", 6);
                    pump(c_out, s_in);
                    int r = SSL_read(ss[i], b, sizeof b);
                    if (r != 6) {
                        printf("read %d\n", r);
                        ERR_print_errors_fp(stdout);
                        return 1;
                    }
                }
                struct mallinfo2 m1 = mallinfo2();
                for (int i = 0; i < N; i++)
                    SSL_free(cc[i]);
                struct mallinfo2 m2 = mallinfo2();
                if (round == 1)
                    printf("RELEASE_BUFFERS=%d %s: server+client %.1f KiB/conn, server alone %.1f "
                           "KiB/conn\n",
                        release, SSL_get_version(ss[0]),
                        (double)(m1.uordblks - m0.uordblks) / N / 1024,
                        (double)(m2.uordblks - m0.uordblks) / N / 1024);
                for (int i = 0; i < N; i++)
                    SSL_free(ss[i]);
            }
            SSL_CTX_free(s);
            SSL_CTX_free(c);
        }
    return 0;
}
