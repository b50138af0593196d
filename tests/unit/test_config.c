/*
 * test_config.c - unit tests for util/config.c: every type, every error with its exact
 * "FILE:LINE: reason", overrides, cross-key checks, CIDR matching, and the shipped
 * etc/tern.conf and etc/demo.conf.
 *
 * The shipped files are found under $TERN_SRCDIR, else SRCDIR (if compiled in), else "."
 * or ".." (meson runs tests from a build directory inside the source tree).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/config.h"

static char err[1024];

/* Defaults, then text as file "t.conf"; returns config_load_string()'s result. */
static int
load(struct config *c, const char *text)
{
    err[0] = '\0';
    config_defaults(c);
    return config_load_string(c, "t.conf", text, err, sizeof(err));
}

/* text must fail with exactly the error expect. */
static void
expect_error(const char *text, const char *expect)
{
    struct config c;

    assert_int_equal(load(&c, text), -1);
    assert_string_equal(err, expect);
    config_free(&c);
}

static void
expect_ok(struct config *c, const char *text)
{
    if (load(c, text) != 0)
        fail_msg("unexpected error: %s", err);
}

static char *
dump(const struct config *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);

    assert_non_null(fp);
    config_dump(c, fp);
    fclose(fp);
    return text;
}

static const char *
srcdir(void)
{
    const char *d = getenv("TERN_SRCDIR");

    if (d != NULL && *d != '\0')
        return d;
#ifdef SRCDIR
    return SRCDIR;
#else
    if (access("etc/demo.conf", R_OK) == 0)
        return ".";
    return "..";
#endif
}

static void
srcpath(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/%s", srcdir(), rel);
}

/* A temporary file holding n bytes of data; the caller unlinks it. */
static void
temp_file(char *path, size_t len, const void *data, size_t n)
{
    int fd;

    snprintf(path, len, "/tmp/test_config.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static struct sockaddr_in
sin4(const char *a)
{
    struct sockaddr_in s;

    memset(&s, 0, sizeof(s));
    s.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
    return s;
}

static struct sockaddr_in6
sin6(const char *a)
{
    struct sockaddr_in6 s;

    memset(&s, 0, sizeof(s));
    s.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
    return s;
}

static bool
match4(const struct config *c, const char *a)
{
    struct sockaddr_in s = sin4(a);

    return config_cidr_match(c->relay_networks, c->nrelay_networks, (struct sockaddr *)&s);
}

static bool
match6(const struct config *c, const char *a)
{
    struct sockaddr_in6 s = sin6(a);

    return config_cidr_match(c->relay_networks, c->nrelay_networks, (struct sockaddr *)&s);
}

/* ---- defaults ---- */

static void
test_defaults(void **state)
{
    struct config c;
    const struct sockaddr_in *a;

    (void)state;
    config_defaults(&c);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].text, "127.0.0.1:2525");
    a = (const struct sockaddr_in *)&c.listen[0].addr;
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(ntohs(a->sin_port), 2525);
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(c.listen[0].addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(c.listen[0].flags, 0);
    assert_non_null(c.hostname);
    assert_true(strlen(c.hostname) > 0);
    assert_null(c.user);
    assert_null(c.control_socket);
    assert_null(c.metrics_listen);
    assert_string_equal(c.spool_dir, "/var/spool/tern");
    assert_string_equal(c.mailbox_dir, "/var/mail/tern");
    assert_int_equal(c.local_domains.n, 1);
    assert_string_equal(c.local_domains.items[0], "localhost");
    assert_string_equal(c.local_recipients, "any");
    assert_int_equal(c.max_connections, 1000);
    assert_int_equal(c.max_connections_per_ip, 50);
    assert_int_equal(c.max_message_size, 10485760);
    assert_int_equal(c.max_recipients, 100);
    assert_int_equal(c.max_line_length, 2048);
    assert_int_equal(c.max_errors, 20);
    assert_int_equal(c.timeout_command, 300);
    assert_int_equal(c.timeout_data, 180);
    assert_int_equal(c.shutdown_timeout, 30);
    assert_int_equal(c.nrelay_networks, 2);
    assert_int_equal(c.relay_networks[0].family, AF_INET);
    assert_int_equal(c.relay_networks[0].prefix, 8);
    assert_int_equal(c.relay_networks[1].family, AF_INET6);
    assert_int_equal(c.relay_networks[1].prefix, 128);
    assert_null(c.relay_host);
    assert_null(c.dns_config);
    assert_int_equal(c.min_backoff, 300);
    assert_int_equal(c.max_backoff, 4000);
    assert_int_equal(c.max_queue_lifetime, 432000);
    assert_int_equal(c.delay_warning, 14400);
    assert_int_equal(c.max_messages_per_connection, 100);
    assert_false(c.greylist);
    assert_int_equal(c.greylist_delay, 300);
    assert_null(c.state_store);
    assert_string_equal(c.policy_on_error, "tempfail");
    assert_null(c.tls_cert);
    assert_null(c.tls_key);
    assert_string_equal(c.tls_policy, "may");
    assert_string_equal(c.log_level, "info");
    assert_int_equal(config_finish(&c, "defaults", err, sizeof(err)), 0);
    config_free(&c);
}

/* ---- one test per type ---- */

static void
test_string(void **state)
{
    struct config c;

    (void)state;
    /* Parsing stops at the first bad line, and says which. */
    expect_error("spool_dir = /srv/spool\nhostname=MX.example.org\ndns_config = /e\n"
                 "dns_config_unused = x\n",
        "t.conf:4: unknown key 'dns_config_unused'");

    expect_ok(&c, "  spool_dir   =   /srv/spool  \n\thostname=MX.example.org\n"
                  "dns_config = /etc/unbound.conf\nuser = tern\n");
    assert_string_equal(c.spool_dir, "/srv/spool");
    assert_string_equal(c.hostname, "MX.example.org");
    assert_string_equal(c.dns_config, "/etc/unbound.conf");
    assert_string_equal(c.user, "tern");
    config_free(&c);

    /* An optional string set empty is unset again. */
    expect_ok(&c, "dns_config = /etc/unbound.conf\n");
    assert_int_equal(config_override(&c, "dns_config =", 1, err, sizeof(err)), 0);
    assert_null(c.dns_config);
    config_free(&c);

    expect_error("hostname = mx example\n", "t.conf:1: hostname: 'mx example' is not a host name");
    expect_error("user = a b\n", "t.conf:1: user: 'a b' is not a user name");
}

static void
test_bool(void **state)
{
    static const char *const yes[] = {"on", "yes", "true", "ON", "Yes", "TRUE"};
    static const char *const no[] = {"off", "no", "false", "OFF", "No", "False"};
    struct config c;
    char text[64];

    (void)state;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(text, sizeof(text), "greylist = %s\n", yes[i]);
        expect_ok(&c, text);
        assert_true(c.greylist);
        config_free(&c);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        expect_ok(&c, "greylist = on\n");
        snprintf(text, sizeof(text), "greylist=%s", no[i]);
        assert_int_equal(config_override(&c, text, 1, err, sizeof(err)), 0);
        assert_false(c.greylist);
        config_free(&c);
    }
    expect_error("greylist = maybe\n",
        "t.conf:1: greylist: 'maybe' is not on or off (yes/no and true/false work too)");
    expect_error("greylist = 1\n",
        "t.conf:1: greylist: '1' is not on or off (yes/no and true/false work too)");
}

static void
test_int(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "max_recipients = 1\nmax_connections = 1000000\nmax_line_length = 512\n"
                  "max_errors = +7\n");
    assert_int_equal(c.max_recipients, 1);
    assert_int_equal(c.max_connections, 1000000);
    assert_int_equal(c.max_line_length, 512);
    assert_int_equal(c.max_errors, 7);
    config_free(&c);

    expect_error("max_recipients = 0\n", "t.conf:1: max_recipients: '0' is below the minimum 1");
    expect_error("max_recipients = -5\n", "t.conf:1: max_recipients: '-5' is below the minimum 1");
    expect_error("max_connections = 1000001\n",
        "t.conf:1: max_connections: '1000001' is above the maximum 1000000");
    expect_error("max_line_length = 511\n",
        "t.conf:1: max_line_length: '511' is below the minimum 512");
    expect_error("max_line_length = 65537\n",
        "t.conf:1: max_line_length: '65537' is above the maximum 65536");
    expect_error("max_errors = 99999999999999999999999\n",
        "t.conf:1: max_errors: '99999999999999999999999' is above the maximum 1000000");
    expect_error("max_errors = ten\n", "t.conf:1: max_errors: 'ten' is not a whole number");
    expect_error("max_errors = 10k\n", "t.conf:1: max_errors: '10k' is not a whole number");
    expect_error("max_errors = 1 0\n", "t.conf:1: max_errors: '1 0' is not a whole number");
    expect_error("max_errors = 0x10\n", "t.conf:1: max_errors: '0x10' is not a whole number");
}

static void
test_size(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "max_message_size = 1024\n");
    assert_int_equal(c.max_message_size, 1024);
    config_free(&c);
    expect_ok(&c, "max_message_size = 64k\n");
    assert_int_equal(c.max_message_size, 65536);
    config_free(&c);
    expect_ok(&c, "max_message_size = 25M\n");
    assert_int_equal(c.max_message_size, 25L * 1024 * 1024);
    config_free(&c);
    expect_ok(&c, "max_message_size = 2g\n");
    assert_int_equal(c.max_message_size, 2L * 1024 * 1024 * 1024);
    config_free(&c);

    expect_error("max_message_size = 1023\n",
        "t.conf:1: max_message_size: '1023' is below the minimum 1024");
    expect_error("max_message_size = 10x\n",
        "t.conf:1: max_message_size: '10x' is not a size (bytes, or a number followed by k, m "
        "or g)");
    expect_error("max_message_size = 10mb\n",
        "t.conf:1: max_message_size: '10mb' is not a size (bytes, or a number followed by k, m "
        "or g)");
    expect_error("max_message_size = 10h\n",
        "t.conf:1: max_message_size: '10h' is not a size (bytes, or a number followed by k, m "
        "or g)");
    expect_error("max_message_size = 99999999999g\n",
        "t.conf:1: max_message_size: '99999999999g' is above the maximum 9223372036854775807");
}

static void
test_time(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "timeout_command = 45s\ntimeout_data = 3m\nmin_backoff = 1h\n"
                  "max_backoff = 2d\nmax_queue_lifetime = 7D\ngreylist_delay = 0\n");
    assert_int_equal(c.timeout_command, 45);
    assert_int_equal(c.timeout_data, 180);
    assert_int_equal(c.min_backoff, 3600);
    assert_int_equal(c.max_backoff, 172800);
    assert_int_equal(c.max_queue_lifetime, 604800);
    assert_int_equal(c.greylist_delay, 0);
    config_free(&c);

    expect_error("timeout_data = 5w\n",
        "t.conf:1: timeout_data: '5w' is not a time (seconds, or a number followed by s, m, h "
        "or d)");
    expect_error("timeout_data = 0\n", "t.conf:1: timeout_data: '0' is below the minimum 1");
    expect_error("timeout_command = 2d\n",
        "t.conf:1: timeout_command: '2d' is above the maximum 86400");
    expect_error("delay_warning = m\n",
        "t.conf:1: delay_warning: 'm' is not a time (seconds, or a number followed by s, m, h "
        "or d)");
}

static void
test_strlist(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "local_domains = Example.ORG ,localhost,  mail.Example.net  \n");
    assert_int_equal(c.local_domains.n, 3);
    assert_string_equal(c.local_domains.items[0], "example.org");
    assert_string_equal(c.local_domains.items[1], "localhost");
    assert_string_equal(c.local_domains.items[2], "mail.example.net");
    config_free(&c);

    /* No local domains at all: a pure relay. */
    expect_ok(&c, "local_domains =\n");
    assert_int_equal(c.local_domains.n, 0);
    config_free(&c);

    expect_error("local_domains = a.org,,b.org\n",
        "t.conf:1: local_domains: 'a.org,,b.org': empty item in the list");
    expect_error("local_domains = a.org,\n",
        "t.conf:1: local_domains: 'a.org,': empty item in the list");
    expect_error("local_domains = a.org, b org\n",
        "t.conf:1: local_domains: 'b org' is not a domain name");
    expect_error("local_domains = user@a.org\n",
        "t.conf:1: local_domains: 'user@a.org' is not a domain name");
}

static void
test_listen(void **state)
{
    struct config c;
    const struct sockaddr_in *a4;
    const struct sockaddr_in6 *a6;
    struct in6_addr any6 = IN6ADDR_ANY_INIT;

    (void)state;
    expect_ok(&c, "listen = 192.0.2.1:25, [::1]:2525, *:587 submission, "
                  "[::]:465 tls  submission, localhost:10025 tls\n");
    assert_int_equal(c.nlisten, 5);

    a4 = (const struct sockaddr_in *)&c.listen[0].addr;
    assert_string_equal(c.listen[0].text, "192.0.2.1:25");
    assert_int_equal(a4->sin_family, AF_INET);
    assert_int_equal(ntohs(a4->sin_port), 25);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0xc0000201);
    assert_int_equal(c.listen[0].flags, 0);

    a6 = (const struct sockaddr_in6 *)&c.listen[1].addr;
    assert_string_equal(c.listen[1].text, "[::1]:2525");
    assert_int_equal(a6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 2525);
    assert_true(IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr));
    assert_int_equal(c.listen[1].addrlen, sizeof(struct sockaddr_in6));

    a4 = (const struct sockaddr_in *)&c.listen[2].addr;
    assert_string_equal(c.listen[2].text, "*:587");
    assert_int_equal(a4->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(a4->sin_port), 587);
    assert_int_equal(c.listen[2].flags, CONFIG_LISTEN_SUBMISSION);

    a6 = (const struct sockaddr_in6 *)&c.listen[3].addr;
    assert_memory_equal(&a6->sin6_addr, &any6, sizeof(any6));
    assert_int_equal(c.listen[3].flags, CONFIG_LISTEN_TLS | CONFIG_LISTEN_SUBMISSION);

    a4 = (const struct sockaddr_in *)&c.listen[4].addr;
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(ntohs(a4->sin_port), 10025);
    assert_int_equal(c.listen[4].flags, CONFIG_LISTEN_TLS);
    config_free(&c);
    expect_ok(&c, "listen = 127.0.0.1:587 submission require-tls, 127.0.0.1:25 require-tls\n");
    assert_int_equal(c.listen[0].flags, CONFIG_LISTEN_SUBMISSION | CONFIG_LISTEN_REQUIRE_TLS);
    assert_int_equal(c.listen[1].flags, CONFIG_LISTEN_REQUIRE_TLS);
    config_free(&c);

    expect_error("listen = 127.0.0.1:99999\n", "t.conf:1: listen: '127.0.0.1:99999': bad port");
    expect_error("listen = 127.0.0.1:0\n", "t.conf:1: listen: '127.0.0.1:0': bad port");
    expect_error("listen = 127.0.0.1:\n", "t.conf:1: listen: '127.0.0.1:': bad port");
    expect_error("listen = 127.0.0.1:smtp\n", "t.conf:1: listen: '127.0.0.1:smtp': bad port");
    expect_error("listen = 127.0.0.1\n",
        "t.conf:1: listen: '127.0.0.1': missing port (e.g. '127.0.0.1:25')");
    expect_error("listen = [::1]\n", "t.conf:1: listen: '[::1]': missing port (e.g. '[::1]:25')");
    expect_error("listen = [::1:25\n", "t.conf:1: listen: '[::1:25': missing ']'");
    expect_error("listen = [::g]:25\n", "t.conf:1: listen: '[::g]:25': bad IPv6 address");
    expect_error("listen = ::1:25\n",
        "t.conf:1: listen: '::1:25': an IPv6 address needs brackets, e.g. '[::1]:25'");
    expect_error("listen = mx.example.org:25\n",
        "t.conf:1: listen: 'mx.example.org:25': bad address (use an IPv4 address, [IPv6], '*' "
        "or 'localhost')");
    expect_error("listen = 127.0.0.1:25, [::]:465 tsl\n",
        "t.conf:1: listen: '[::]:465 tsl': unknown option 'tsl' (options: tls, submission, "
        "require-tls)");
    expect_error("listen = 127.0.0.1:25, localhost:25\n",
        "t.conf:1: listen: 'localhost:25' is listed twice");
    expect_error("listen =\n",
        "t.conf:1: listen: empty value (remove the line for the default, 127.0.0.1:2525)");
    expect_error("listen = 127.0.0.1:25,\n",
        "t.conf:1: listen: '127.0.0.1:25,': empty item in the list");
}

static void
test_cidr(void **state)
{
    struct config c;
    static const unsigned char net6[16] = {0x20, 0x01, 0x0d, 0xb0}; /* /28 of 2001:db8:: */

    (void)state;
    expect_ok(&c, "relay_networks = 10.1.2.3/8, 192.0.2.7, 2001:db8:1234:5678::1/28, ::1\n");
    assert_int_equal(c.nrelay_networks, 4);
    assert_int_equal(c.relay_networks[0].family, AF_INET);
    assert_int_equal(c.relay_networks[0].prefix, 8);
    assert_memory_equal(c.relay_networks[0].addr, "\x0a\x00\x00\x00", 4); /* host bits gone */
    assert_int_equal(c.relay_networks[1].prefix, 32);
    assert_memory_equal(c.relay_networks[1].addr, "\xc0\x00\x02\x07", 4);
    assert_int_equal(c.relay_networks[2].family, AF_INET6);
    assert_int_equal(c.relay_networks[2].prefix, 28);
    assert_memory_equal(c.relay_networks[2].addr, net6, 16);
    assert_int_equal(c.relay_networks[3].prefix, 128);
    config_free(&c);

    /* Relaying for nobody. */
    expect_ok(&c, "relay_networks =\n");
    assert_int_equal(c.nrelay_networks, 0);
    assert_false(match4(&c, "127.0.0.1"));
    config_free(&c);

    expect_error("relay_networks = 10.0.0.0/33\n",
        "t.conf:1: relay_networks: '10.0.0.0/33': prefix length above 32");
    expect_error("relay_networks = ::/129\n",
        "t.conf:1: relay_networks: '::/129': prefix length above 128");
    expect_error("relay_networks = 10.0.0.0/\n",
        "t.conf:1: relay_networks: '10.0.0.0/': bad prefix length");
    expect_error("relay_networks = 10.0.0.0/8x\n",
        "t.conf:1: relay_networks: '10.0.0.0/8x': bad prefix length");
    expect_error("relay_networks = 10.0.0/8\n",
        "t.conf:1: relay_networks: '10.0.0/8': bad address (expected ADDRESS/PREFIX, no names)");
    expect_error("relay_networks = localhost\n",
        "t.conf:1: relay_networks: 'localhost': bad address (expected ADDRESS/PREFIX, no names)");
}

static void
test_enum(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "policy_on_error = ACCEPT\ntls_policy = verify\nlog_level = debug\n");
    assert_string_equal(c.policy_on_error, "accept");
    assert_string_equal(c.tls_policy, "verify");
    assert_string_equal(c.log_level, "debug");
    config_free(&c);

    expect_error("log_level = verbose\n",
        "t.conf:1: log_level: 'verbose' is not one of debug, info, warn, error");
    expect_error("tls_policy = opportunistic\n",
        "t.conf:1: tls_policy: 'opportunistic' is not one of none, may, encrypt, verify, dane");
    expect_error("policy_on_error = reject\n",
        "t.conf:1: policy_on_error: 'reject' is not one of tempfail, accept");
    expect_error("log_level =\n",
        "t.conf:1: log_level: empty value (remove the line for the default, info)");
}

static void
test_string_checks(void **state)
{
    struct config c;
    char text[256];

    (void)state;
    expect_ok(&c, "local_recipients = file:/etc/tern/users\nstate_store = redis://127.0.0.1:6379\n"
                  "relay_host = [2001:db8::1]:587\nmetrics_listen = 127.0.0.1:9025\n"
                  "control_socket = /run/tern.sock\n");
    assert_string_equal(c.local_recipients, "file:/etc/tern/users");
    assert_string_equal(c.state_store, "redis://127.0.0.1:6379");
    assert_string_equal(c.relay_host, "[2001:db8::1]:587");
    assert_string_equal(c.metrics_listen, "127.0.0.1:9025");
    assert_string_equal(c.control_socket, "/run/tern.sock");
    config_free(&c);
    expect_ok(&c, "state_store = lmdb:/var/lib/tern\nrelay_host = smtp.example.net:25\n");
    assert_string_equal(c.state_store, "lmdb:/var/lib/tern");
    config_free(&c);

    expect_error("local_recipients = all\n",
        "t.conf:1: local_recipients: 'all' is neither 'any' nor 'file:PATH'");
    expect_error("local_recipients = file:\n",
        "t.conf:1: local_recipients: 'file:' is neither 'any' nor 'file:PATH'");
    expect_error("state_store = /var/lib/tern\n",
        "t.conf:1: state_store: '/var/lib/tern' is neither 'lmdb:PATH' nor 'redis://HOST:PORT'");
    expect_error("state_store = redis://localhost\n",
        "t.conf:1: state_store: 'localhost': missing port (expected HOST:PORT)");
    expect_error("relay_host = smtp.example.net\n",
        "t.conf:1: relay_host: 'smtp.example.net': missing port (expected HOST:PORT)");
    expect_error("relay_host = smtp.example.net:0\n",
        "t.conf:1: relay_host: 'smtp.example.net:0': bad port");
    expect_error("relay_host = 2001:db8::1:25\n",
        "t.conf:1: relay_host: '2001:db8::1:25': an IPv6 address needs brackets, e.g. "
        "'[::1]:25'");
    expect_error("metrics_listen = [::1]9025\n",
        "t.conf:1: metrics_listen: '[::1]9025': expected '[IPV6]:PORT'");

    snprintf(text, sizeof(text), "control_socket = /%0150d\n", 0);
    assert_int_equal(load(&c, text), -1);
    assert_non_null(strstr(err, "t.conf:1: control_socket: '/000"));
    assert_non_null(strstr(err, "' is longer than the 107 bytes a socket path may have"));
    config_free(&c);
}

/* ---- syntax errors ---- */

static void
test_syntax(void **state)
{
    struct config c;

    (void)state;
    /* Comments, blank lines, CRLF, a '#' after a value, a byte order mark. */
    expect_ok(&c, "\xef\xbb\xbf# comment\n\n   \t\n  # indented comment\r\n"
                  "max_errors = 5 # five\r\nmax_recipients=7#seven\n"
                  "max_connections = 9"); /* no final newline */
    assert_int_equal(c.max_errors, 5);
    assert_int_equal(c.max_recipients, 7);
    assert_int_equal(c.max_connections, 9);
    config_free(&c);

    expect_error("# ok\nmax_conections = 10\n",
        "t.conf:2: unknown key 'max_conections'; did you mean 'max_connections'?");
    expect_error("Max_Recipients = 10\n",
        "t.conf:1: unknown key 'Max_Recipients'; did you mean 'max_recipients'?");
    expect_error("timeout_comand = 10\n",
        "t.conf:1: unknown key 'timeout_comand'; did you mean 'timeout_command'?");
    expect_error("frobnicate = 10\n", "t.conf:1: unknown key 'frobnicate'");
    expect_error("\n\nmax_errors 10\n",
        "t.conf:3: missing '=' in 'max_errors 10' (expected 'key = value')");
    expect_error("= 10\n", "t.conf:1: missing key before '='");
    expect_error("max_errors = 5\nmax_recipients = 9\n  max_errors = 6\n",
        "t.conf:3: repeated key 'max_errors' (first set on line 1)");
    expect_error("max_errors =\n",
        "t.conf:1: max_errors: empty value (remove the line for the default, 20)");
    expect_error("max_errors = # nothing\n",
        "t.conf:1: max_errors: empty value (remove the line for the default, 20)");
    expect_error("hostname =\n", "t.conf:1: hostname: empty value");
}

static void
test_long_line(void **state)
{
    struct config c;
    size_t n = 5000;
    char *text = malloc(n + 64);

    (void)state;
    assert_non_null(text);
    strcpy(text, "max_errors = 3\n# ");
    memset(text + strlen(text), 'x', 4096 - 2);
    strcpy(text + 15 + 4096, "\n"); /* line 2 is exactly 4096 characters: fine */
    expect_ok(&c, text);
    config_free(&c);

    strcpy(text, "max_errors = 3\n# ");
    memset(text + strlen(text), 'x', 4096 - 1);
    strcpy(text + 15 + 4097, "\nmax_errors = 4\n"); /* 4097: too long */
    expect_error(text, "t.conf:2: line longer than 4096 characters");
    free(text);
}

/* A bad value leaves the previous one in place. */
static void
test_bad_value_keeps_old(void **state)
{
    struct config c;

    (void)state;
    config_defaults(&c);
    assert_int_equal(config_load_string(&c, "a", "listen = [::1]:25\n", err, sizeof(err)), 0);
    assert_int_equal(config_load_string(&c, "b", "listen = [::1]:99999\n", err, sizeof(err)), -1);
    assert_string_equal(err, "b:1: listen: '[::1]:99999': bad port");
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].text, "[::1]:25");
    config_free(&c);
    /* config_free twice is harmless: it leaves nothing behind. */
    config_free(&c);
}

/* ---- files ---- */

static void
test_file_errors(void **state)
{
    struct config c;
    char path[64], expect[256];

    (void)state;
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, "/nonexistent/tern.conf", err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/tern.conf: cannot open: No such file or directory");

    assert_int_equal(config_load_file(&c, "/tmp", err, sizeof(err)), -1);
    assert_string_equal(err, "/tmp: cannot read: Is a directory");

    temp_file(path, sizeof(path), "max_errors = 3\nmax_errors = 4\n", 30);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    snprintf(expect, sizeof(expect), "%s:2: repeated key 'max_errors' (first set on line 1)",
        path);
    assert_string_equal(err, expect);
    unlink(path);

    temp_file(path, sizeof(path), "max_errors = 3\nmax_\0errors = 4\n", 30);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    snprintf(expect, sizeof(expect), "%s:2: NUL byte in the line", path);
    assert_string_equal(err, expect);
    unlink(path);

    temp_file(path, sizeof(path), "max_errors = 3\n", 15);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.max_errors, 3);
    unlink(path);

    /* Each file may set a key once; a second file may set it again (no repeated-key error). */
    temp_file(path, sizeof(path), "max_errors = 4\n", 15);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.max_errors, 4);
    unlink(path);
    config_free(&c);
}

static void
test_unreadable_file(void **state)
{
    struct config c;
    char path[64], expect[256];

    (void)state;
    if (geteuid() == 0)
        skip(); /* root reads anything */
    temp_file(path, sizeof(path), "max_errors = 3\n", 15);
    assert_int_equal(chmod(path, 0), 0);
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    snprintf(expect, sizeof(expect), "%s: cannot open: Permission denied", path);
    assert_string_equal(err, expect);
    unlink(path);
    config_free(&c);
}

/* ---- overrides ---- */

static void
test_overrides(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "max_errors = 3\nlisten = 127.0.0.1:25\n");
    assert_int_equal(config_override(&c, "max_errors=4", 1, err, sizeof(err)), 0);
    assert_int_equal(c.max_errors, 4);
    assert_int_equal(config_override(&c, " max_errors = 5 ", 2, err, sizeof(err)), 0);
    assert_int_equal(c.max_errors, 5);
    assert_int_equal(config_override(&c, "listen=[::1]:2526 tls", 3, err, sizeof(err)), 0);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].text, "[::1]:2526");
    assert_int_equal(config_override(&c, "relay_host=", 4, err, sizeof(err)), 0);
    assert_null(c.relay_host);

    assert_int_equal(config_override(&c, "max_errors=0", 2, err, sizeof(err)), -1);
    assert_string_equal(err, "-o:2: max_errors: '0' is below the minimum 1");
    assert_int_equal(c.max_errors, 5);
    assert_int_equal(config_override(&c, "max_eros=1", 1, err, sizeof(err)), -1);
    assert_string_equal(err, "-o:1: unknown key 'max_eros'; did you mean 'max_errors'?");
    assert_int_equal(config_override(&c, "max_errors", 3, err, sizeof(err)), -1);
    assert_string_equal(err, "-o:3: missing '=' in 'max_errors' (expected key=value)");
    assert_int_equal(config_override(&c, "", 4, err, sizeof(err)), -1);
    assert_string_equal(err, "-o:4: empty override (expected key=value)");
    assert_int_equal(config_override(&c, "listen=1.2.3.4:99999", 5, err, sizeof(err)), -1);
    assert_string_equal(err, "-o:5: listen: '1.2.3.4:99999': bad port");
    config_free(&c);
}

/* ---- checks across keys ---- */

static void
test_finish(void **state)
{
    struct config c;

    (void)state;
    expect_ok(&c, "min_backoff = 600\nmax_backoff = 300\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_string_equal(err, "x.conf: min_backoff (600) is above max_backoff (300)");
    config_free(&c);

    expect_ok(&c, "min_backoff = 300\nmax_backoff = 300\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), 0);
    config_free(&c);

    expect_ok(&c, "tls_cert = /etc/cert.pem\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_string_equal(err, "x.conf: tls_cert is set but tls_key is not");
    config_free(&c);

    expect_ok(&c, "tls_key = /etc/key.pem\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_string_equal(err, "x.conf: tls_key is set but tls_cert is not");
    config_free(&c);

    expect_ok(&c, "listen = 127.0.0.1:25, [::]:465 tls\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_string_equal(err,
        "x.conf: listen: '[::]:465' has the tls option but tls_cert and tls_key are not set");
    assert_int_equal(config_override(&c, "tls_cert=/c.pem", 1, err, sizeof(err)), 0);
    assert_int_equal(config_override(&c, "tls_key=/k.pem", 2, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), 0);
    config_free(&c);

    /* a submission listener needs credentials, and TLS to offer AUTH under */
    expect_ok(&c, "listen = 127.0.0.1:25, 127.0.0.1:587 submission\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "x.conf: listen: '127.0.0.1:587' has the submission option but "
                                "auth_users is not set"));
    assert_int_equal(config_override(&c, "auth_users=/etc/tern/users", 1, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "x.conf: listen: '127.0.0.1:587' has the submission option but "
                                "tls_cert and tls_key are not set"));
    assert_int_equal(config_override(&c, "tls_cert=/c.pem", 2, err, sizeof(err)), 0);
    assert_int_equal(config_override(&c, "tls_key=/k.pem", 3, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), 0);
    assert_int_equal(c.auth_max_failures, 3);
    assert_int_equal(c.auth_failure_window, 900);
    config_free(&c);

    expect_ok(&c, "listen = 127.0.0.1:25 require-tls\n");
    assert_int_equal(config_finish(&c, "x.conf", err, sizeof(err)), -1);
    assert_string_equal(err, "x.conf: listen: '127.0.0.1:25' has the require-tls option but "
                             "tls_cert and tls_key are not set");
    config_free(&c);
}

/* ---- helpers ---- */

static void
test_cidr_match(void **state)
{
    struct config c;
    struct sockaddr_un sun;

    (void)state;
    expect_ok(&c,
        "relay_networks = 192.0.2.0/24, 10.16.0.0/12, 2001:db8::/32, ::1, 198.51.100.7\n");
    assert_true(match4(&c, "192.0.2.1"));
    assert_true(match4(&c, "192.0.2.255"));
    assert_false(match4(&c, "192.0.3.1"));
    assert_true(match4(&c, "10.16.0.1"));
    assert_true(match4(&c, "10.31.255.255"));
    assert_false(match4(&c, "10.32.0.0"));
    assert_false(match4(&c, "10.15.255.255"));
    assert_true(match4(&c, "198.51.100.7"));
    assert_false(match4(&c, "198.51.100.8"));
    assert_true(match6(&c, "2001:db8::1"));
    assert_true(match6(&c, "2001:db8:ffff::1"));
    assert_false(match6(&c, "2001:db9::1"));
    assert_true(match6(&c, "::1"));
    assert_false(match6(&c, "::2"));
    /* An IPv4 client on a dual-stack socket matches the IPv4 networks. */
    assert_true(match6(&c, "::ffff:192.0.2.9"));
    assert_true(match6(&c, "::ffff:10.20.0.1"));
    assert_false(match6(&c, "::ffff:192.0.3.9"));
    /* ... but an IPv4-compatible or NAT64 address is not an IPv4 client. */
    assert_false(match6(&c, "64:ff9b::192.0.2.9"));
    /* Not an IP socket at all. */
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    assert_false(config_cidr_match(c.relay_networks, c.nrelay_networks, (struct sockaddr *)&sun));
    assert_false(config_cidr_match(c.relay_networks, c.nrelay_networks, NULL));
    config_free(&c);

    /* /0 matches everything of its family, and mapped IPv4 too. */
    expect_ok(&c, "relay_networks = 0.0.0.0/0\n");
    assert_true(match4(&c, "203.0.113.5"));
    assert_true(match6(&c, "::ffff:203.0.113.5"));
    assert_false(match6(&c, "2001:db8::1"));
    config_free(&c);

    /* The defaults: loopback only. */
    config_defaults(&c);
    assert_true(match4(&c, "127.0.0.1"));
    assert_true(match4(&c, "127.255.0.3"));
    assert_true(match6(&c, "::1"));
    assert_true(match6(&c, "::ffff:127.0.0.1"));
    assert_false(match4(&c, "192.0.2.1"));
    assert_false(match6(&c, "::ffff:192.0.2.1"));
    config_free(&c);
}

static void
test_domain_listed(void **state)
{
    struct config c;
    const char *d = "Example.ORG>";

    (void)state;
    expect_ok(&c, "local_domains = localhost, EXAMPLE.org\n");
    assert_true(config_domain_listed(&c.local_domains, "example.org", 11));
    assert_true(config_domain_listed(&c.local_domains, d, 11)); /* not NUL-terminated */
    assert_true(config_domain_listed(&c.local_domains, "LOCALHOST", 9));
    assert_false(config_domain_listed(&c.local_domains, "example.or", 10));
    assert_false(config_domain_listed(&c.local_domains, "sub.example.org", 15));
    assert_false(config_domain_listed(&c.local_domains, d, 12));
    assert_false(config_domain_listed(&c.local_domains, "", 0));
    config_free(&c);
}

static void
test_dump_roundtrip(void **state)
{
    struct config c, d;
    char *one, *two;

    (void)state;
    expect_ok(&c, "listen = [::]:465 tls submission, *:25 require-tls\nrelay_networks = 10.1.2.3/8\n"
                  "local_domains = A.org, b.org\ngreylist = yes\nmax_message_size = 1m\n"
                  "relay_host = smtp.example.net:25\n");
    one = dump(&c);
    assert_non_null(strstr(one, "listen = [::]:465 tls submission, *:25 require-tls\n"));
    assert_non_null(strstr(one, "relay_networks = 10.0.0.0/8\n"));
    assert_non_null(strstr(one, "local_domains = a.org, b.org\n"));
    assert_non_null(strstr(one, "greylist = on\n"));
    assert_non_null(strstr(one, "max_message_size = 1048576\n"));
    assert_non_null(strstr(one, "relay_host = smtp.example.net:25\n"));
    assert_non_null(strstr(one, "tls_cert =\n"));
    assert_non_null(strstr(one, "log_level = info\n"));

    /* What config_dump prints loads back to the same configuration. */
    config_defaults(&d);
    if (config_load_string(&d, "dump", one, err, sizeof(err)) != 0)
        fail_msg("dump does not load back: %s", err);
    two = dump(&d);
    assert_string_equal(one, two);
    free(one);
    free(two);
    config_free(&c);
    config_free(&d);

    /* The dump names every key: 59 lines (update when a key is added). */
    config_defaults(&c);
    one = dump(&c);
    {
        size_t lines = 0;

        for (const char *p = one; *p; p++)
            lines += *p == '\n';
        assert_int_equal(lines, 59);
    }
    free(one);
    config_free(&c);
}

/* ---- the shipped files ---- */

static void
test_shipped_tern_conf(void **state)
{
    struct config c;
    char path[4096];

    (void)state;
    srcpath(path, sizeof(path), "etc/tern.conf");
    config_defaults(&c);
    if (config_load_file(&c, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.nlisten, 1);
    assert_int_equal(ntohs(((struct sockaddr_in *)&c.listen[0].addr)->sin_port), 25);
    assert_string_equal(c.spool_dir, "/var/spool/tern");
    config_free(&c);
}

/*
 * Every key is listed in tern.conf, set or commented out: a key added to the table without
 * documentation fails here.
 */
static void
test_shipped_tern_conf_lists_every_key(void **state)
{
    struct config c;
    char path[4096], *keys, *line, *save = NULL, *text;
    FILE *fp;
    long n;

    (void)state;
    srcpath(path, sizeof(path), "etc/tern.conf");
    fp = fopen(path, "r");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    rewind(fp);
    text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);

    config_defaults(&c);
    keys = dump(&c);
    for (line = strtok_r(keys, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char want[128], want_commented[128];

        *strchr(line, ' ') = '\0';
        snprintf(want, sizeof(want), "\n%s = ", line);
        snprintf(want_commented, sizeof(want_commented), "\n#%s = ", line);
        if (strstr(text, want) == NULL && strstr(text, want_commented) == NULL)
            fail_msg("etc/tern.conf does not list '%s'", line);
    }
    free(keys);
    free(text);
    config_free(&c);
}

static void
test_shipped_demo_conf(void **state)
{
    struct config c, d;
    char path[4096], *one, *two;

    (void)state;
    srcpath(path, sizeof(path), "etc/demo.conf");
    config_defaults(&c);
    if (config_load_file(&c, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].text, "127.0.0.1:2525");
    assert_string_equal(c.spool_dir, "./build/demo/spool");
    assert_string_equal(c.mailbox_dir, "./build/demo/mail");
    assert_int_equal(c.local_domains.n, 2);
    assert_true(config_domain_listed(&c.local_domains, "example.org", 11));
    assert_true(config_domain_listed(&c.local_domains, "localhost", 9));
    assert_true(match4(&c, "127.0.0.1"));
    assert_true(match6(&c, "::1"));
    assert_false(match4(&c, "192.0.2.1"));
    assert_int_equal(c.max_recipients, 100);

    /* The embedded default is the same configuration. */
    config_defaults(&d);
    if (config_load_string(&d, "(built-in)", config_default_text, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(&d, "(built-in)", err, sizeof(err)), 0);
    one = dump(&c);
    two = dump(&d);
    assert_string_equal(one, two);
    free(one);
    free(two);
    config_free(&c);
    config_free(&d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_strlist),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_string_checks),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_bad_value_keeps_old),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_domain_listed),
        cmocka_unit_test(test_dump_roundtrip),
        cmocka_unit_test(test_shipped_tern_conf),
        cmocka_unit_test(test_shipped_tern_conf_lists_every_key),
        cmocka_unit_test(test_shipped_demo_conf),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
