/*
 * config.c - tern.conf(5): one declarative table of keys, parsed and checked up front.
 *
 * Every key lives in config_keys[] below: its name (which is also the name of its field in
 * struct config), its type, where it is stored, its default and its limits.  The defaults are
 * text parsed by the same code as the file, so a default can never be something the parser
 * would refuse.  A value is parsed into a temporary first and only then replaces the old one,
 * so a bad line never leaves a half-written field.  Every error says where ("FILE:LINE: ")
 * and what is wrong, in words an operator can act on at start, not at 3 a.m.
 */
#include "util/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/log.h"

#define CONFIG_LINE_MAX 4096           /* characters in a line, without the newline */
#define CONFIG_FILE_MAX (1024 * 1024)  /* a bigger file is not a configuration file */
#define CONFIG_DAY 86400L
#define CONFIG_YEAR (365 * CONFIG_DAY)

const char config_default_text[] =
    "# tern built-in configuration, used by ternd without -c.\n"
    "# The same setup as etc/demo.conf; paths are relative to the working directory.\n"
    "listen = 127.0.0.1:2525\n"
    "spool_dir = ./build/demo/spool\n"
    "mailbox_dir = ./build/demo/mail\n"
    "local_domains = localhost, example.org\n"
    "relay_networks = 127.0.0.0/8, ::1/128\n";

enum config_type {
    CONFIG_STRING,  /* any text; an optional check */
    CONFIG_BOOL,    /* on/off, yes/no, true/false */
    CONFIG_INT,     /* a whole number between min and max */
    CONFIG_SIZE,    /* bytes; k, m, g suffixes are binary multiples */
    CONFIG_TIME,    /* seconds; s, m, h, d suffixes */
    CONFIG_STRLIST, /* comma-separated words (domains) */
    CONFIG_LISTEN,  /* comma-separated "ADDR:PORT [tls] [submission]" */
    CONFIG_CIDR,    /* comma-separated "ADDR/PREFIX" or "ADDR" */
    CONFIG_ENUM,    /* one of a list of words */
};

#define CONFIG_OPTIONAL 0x1 /* an empty value means "unset" (strings) or "none" (lists) */
#define CONFIG_LOWER 0x2    /* list items are domains: checked and lower-cased */

typedef int (*config_check_fn)(const char *value, char *why, size_t whylen);

struct config_key {
    const char *name;
    enum config_type type;
    size_t off;                /* the field in struct config */
    size_t off_n;              /* its count, for CONFIG_LISTEN and CONFIG_CIDR */
    const char *def;           /* the default as text; NULL: unset (or computed) */
    long min, max;             /* numbers only */
    unsigned flags;            /* CONFIG_OPTIONAL, CONFIG_LOWER */
    const char *const *words;  /* CONFIG_ENUM: the allowed words, NULL-terminated */
    config_check_fn check;     /* CONFIG_STRING: refuses a malformed value */
};

/* A parsed value before it is stored. */
union config_value {
    char *s;
    bool b;
    long l;
    struct config_strlist list;
    struct {
        struct config_listen *v;
        size_t n;
    } listen;
    struct {
        struct config_cidr *v;
        size_t n;
    } cidr;
};

static int config_check_hostname(const char *v, char *why, size_t whylen);
static int config_check_user(const char *v, char *why, size_t whylen);
static int config_check_socket(const char *v, char *why, size_t whylen);
static int config_check_hostport(const char *v, char *why, size_t whylen);
static int config_check_recipients(const char *v, char *why, size_t whylen);
static int config_check_state_store(const char *v, char *why, size_t whylen);
static int config_check_local_delivery(const char *v, char *why, size_t whylen);

static const char *const config_words_on_error[] = {"tempfail", "accept", NULL};
static const char *const config_words_tls_policy[] = {"none", "may", "encrypt", "verify", "dane",
    NULL};
static const char *const config_words_log_level[] = {"debug", "info", "warn", "error", NULL};

/* The key's name is its field's name, so the two cannot drift apart. */
#define OFF(f) offsetof(struct config, f)
#define K_STR(f, d, fl, chk)                                                                   \
    {.name = #f, .type = CONFIG_STRING, .off = OFF(f), .def = d, .flags = fl, .check = chk}
#define K_NUM(f, t, d, lo, hi)                                                                 \
    {.name = #f, .type = t, .off = OFF(f), .def = d, .min = lo, .max = hi}
#define K_BOOL(f, d) {.name = #f, .type = CONFIG_BOOL, .off = OFF(f), .def = d}
#define K_ENUM(f, d, w) {.name = #f, .type = CONFIG_ENUM, .off = OFF(f), .def = d, .words = w}
#define K_LIST(f, d, fl) {.name = #f, .type = CONFIG_STRLIST, .off = OFF(f), .def = d, .flags = fl}
#define K_LISTEN(f, d)                                                                         \
    {.name = #f, .type = CONFIG_LISTEN, .off = OFF(f), .off_n = OFF(n##f), .def = d}
#define K_CIDR(f, d, fl)                                                                       \
    {.name = #f, .type = CONFIG_CIDR, .off = OFF(f), .off_n = OFF(n##f), .def = d, .flags = fl}

static const struct config_key config_keys[] = {
    /* listeners */
    K_LISTEN(listen, "127.0.0.1:2525"),
    K_STR(hostname, NULL, 0, config_check_hostname), /* default: gethostname() */
    K_STR(user, NULL, CONFIG_OPTIONAL, config_check_user),
    K_STR(control_socket, NULL, CONFIG_OPTIONAL, config_check_socket),
    K_STR(metrics_listen, NULL, CONFIG_OPTIONAL, config_check_hostport),
    K_BOOL(sandbox, "on"),
    /* storage */
    K_STR(spool_dir, "/var/spool/tern", 0, NULL),
    K_STR(mailbox_dir, "/var/mail/tern", 0, NULL),
    K_LIST(local_domains, "localhost", CONFIG_OPTIONAL | CONFIG_LOWER),
    K_STR(local_recipients, "any", 0, config_check_recipients),
    K_STR(local_delivery, "maildir", 0, config_check_local_delivery),
    K_NUM(delivery_concurrency, CONFIG_INT, "20", 1, 10000),
    K_NUM(mailbox_size_limit, CONFIG_SIZE, "0", 0, LONG_MAX),
    /* limits; RFC 5321 §4.5.3.1 sets floors the operator should not go under */
    K_NUM(max_connections, CONFIG_INT, "1000", 1, 1000000),
    K_NUM(max_connections_per_ip, CONFIG_INT, "50", 1, 1000000),
    K_NUM(max_message_size, CONFIG_SIZE, "10485760", 1024, LONG_MAX),
    K_NUM(max_recipients, CONFIG_INT, "100", 1, 1000000),
    K_NUM(max_line_length, CONFIG_INT, "2048", 512, 65536), /* §4.5.3.1.4: 512 at least */
    K_NUM(max_errors, CONFIG_INT, "20", 1, 1000000),
    K_NUM(timeout_command, CONFIG_TIME, "300", 1, CONFIG_DAY),
    K_NUM(timeout_data, CONFIG_TIME, "180", 1, CONFIG_DAY), /* §4.5.3.2.6: 3 minutes */
    K_NUM(shutdown_timeout, CONFIG_TIME, "30", 1, CONFIG_DAY),
    /* relaying */
    K_CIDR(relay_networks, "127.0.0.0/8, ::1/128", CONFIG_OPTIONAL),
    K_STR(relay_host, NULL, CONFIG_OPTIONAL, config_check_hostport),
    K_NUM(remote_port, CONFIG_INT, "25", 1, 65535),
    K_NUM(remote_timeout_connect, CONFIG_TIME, "30", 1, CONFIG_DAY),
    K_NUM(remote_timeout_command, CONFIG_TIME, "300", 1, CONFIG_DAY), /* §4.5.3.2.1-3 */
    K_NUM(remote_timeout_data_init, CONFIG_TIME, "120", 1, CONFIG_DAY), /* §4.5.3.2.4 */
    K_NUM(remote_timeout_data_block, CONFIG_TIME, "180", 1, CONFIG_DAY), /* §4.5.3.2.5 */
    K_NUM(remote_timeout_data_done, CONFIG_TIME, "600", 1, CONFIG_DAY), /* §4.5.3.2.6 */
    K_NUM(max_outbound, CONFIG_INT, "100", 1, 10000),
    K_NUM(max_outbound_per_domain, CONFIG_INT, "20", 1, 10000),
    K_NUM(max_messages_per_connection, CONFIG_INT, "100", 1, 10000),
    K_STR(dns_config, NULL, CONFIG_OPTIONAL, NULL),
    K_NUM(min_backoff, CONFIG_TIME, "300", 1, CONFIG_YEAR),
    K_NUM(max_backoff, CONFIG_TIME, "4000", 1, CONFIG_YEAR),
    K_NUM(max_queue_lifetime, CONFIG_TIME, "432000", 1, CONFIG_YEAR),
    K_NUM(delay_warning, CONFIG_TIME, "14400", 1, CONFIG_YEAR),
    /* policy */
    K_BOOL(greylist, "off"),
    K_NUM(greylist_delay, CONFIG_TIME, "300", 0, CONFIG_DAY),
    K_NUM(greylist_retry_window, CONFIG_TIME, "172800", 1, CONFIG_YEAR),
    K_NUM(greylist_expire, CONFIG_TIME, "3024000", 1, CONFIG_YEAR),
    K_NUM(greylist_auto_allow, CONFIG_INT, "5", 0, 1000000),
    K_LIST(greylist_allow_domains, "", CONFIG_OPTIONAL | CONFIG_LOWER),
    K_CIDR(policy_allow_networks, "", CONFIG_OPTIONAL),
    K_NUM(rate_window, CONFIG_TIME, "60", 1, CONFIG_DAY),
    K_NUM(rate_connections, CONFIG_INT, "0", 0, 100000000),
    K_NUM(rate_messages, CONFIG_INT, "0", 0, 100000000),
    K_NUM(rate_recipients, CONFIG_INT, "0", 0, 100000000),
    K_STR(state_store, NULL, CONFIG_OPTIONAL, config_check_state_store),
    K_ENUM(policy_on_error, "tempfail", config_words_on_error),
    /* TLS */
    K_STR(tls_cert, NULL, CONFIG_OPTIONAL, NULL),
    K_STR(tls_key, NULL, CONFIG_OPTIONAL, NULL),
    K_ENUM(tls_policy, "may", config_words_tls_policy),
    K_STR(tls_ca_file, NULL, CONFIG_OPTIONAL, NULL),
    /* AUTH (RFC 4954) */
    K_STR(auth_users, NULL, CONFIG_OPTIONAL, NULL),
    K_NUM(auth_max_failures, CONFIG_INT, "3", 1, 1000),
    K_NUM(auth_failure_window, CONFIG_TIME, "900", 1, CONFIG_DAY),
    /* logging */
    K_ENUM(log_level, "info", config_words_log_level),
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static const struct {
    const char *word;
    bool value;
} config_bools[] = {
    {"on", true}, {"yes", true}, {"true", true}, {"off", false}, {"no", false}, {"false", false},
};

/* ---- small helpers ---- */

/* Running out of memory while reading the configuration is an environment failure. */
static void *
config_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        log_fatal("config: out of memory");
    return p;
}

static char *
config_xstrndup(const char *s, size_t n)
{
    char *p = config_xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void
config_why(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* "NAME:LINE: reason", or "NAME: reason" when line is 0. */
static int
config_error(char *err, size_t errlen, const char *name, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return -1;
    if (line > 0)
        n = snprintf(err, errlen, "%s:%d: ", name, line);
    else
        n = snprintf(err, errlen, "%s: ", name);
    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Trim spaces in place: returns the first non-space, cuts after the last. */
static char *
config_trim(char *s)
{
    size_t n;

    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static void *
config_field(struct config *c, const struct config_key *k)
{
    return (char *)c + k->off;
}

static const void *
config_cfield(const struct config *c, const struct config_key *k)
{
    return (const char *)c + k->off;
}

static size_t *
config_field_n(struct config *c, const struct config_key *k)
{
    return (size_t *)(void *)((char *)c + k->off_n);
}

static const size_t *
config_cfield_n(const struct config *c, const struct config_key *k)
{
    return (const size_t *)(const void *)((const char *)c + k->off_n);
}

static const struct config_key *
config_find(const char *name)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* Edit distance, ignoring case; long inputs are not worth a suggestion. */
static size_t
config_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[65], prev, tmp;

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = prev + cost;

            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            tmp = row[j];
            row[j] = best;
            prev = tmp;
        }
    }
    return row[lb];
}

/* The key an operator most likely meant, or NULL when none is close. */
static const char *
config_suggest(const char *name)
{
    const char *best = NULL;
    size_t bestd = SIZE_MAX, len = strlen(name);

    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        size_t d = config_distance(name, config_keys[i].name);

        if (d < bestd) {
            bestd = d;
            best = config_keys[i].name;
        }
    }
    if (best != NULL && (bestd <= 2 || bestd * 3 <= len))
        return best;
    return NULL;
}

/* Host and domain names: letters, digits, '-', '.', '_', and UTF-8 (RFC 6531). */
static bool
config_is_domain(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_' && ch < 0x80)
            return false;
    }
    return true;
}

/* "1".."65535", digits only. */
static bool
config_parse_port(const char *s, unsigned short *port)
{
    unsigned long v = 0;
    size_t n = strlen(s);

    if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
        return false;
    v = strtoul(s, NULL, 10);
    if (v == 0 || v > 65535)
        return false;
    *port = (unsigned short)v;
    return true;
}

/* ---- checks for string keys ---- */

static int
config_check_hostname(const char *v, char *why, size_t whylen)
{
    if (config_is_domain(v))
        return 0;
    config_why(why, whylen, "'%s' is not a host name", v);
    return -1;
}

static int
config_check_user(const char *v, char *why, size_t whylen)
{
    for (const char *p = v; *p; p++) {
        if (isspace((unsigned char)*p) || *p == ':' || *p == '/') {
            config_why(why, whylen, "'%s' is not a user name", v);
            return -1;
        }
    }
    return 0;
}

static int
config_check_socket(const char *v, char *why, size_t whylen)
{
    struct sockaddr_un sun;

    if (strlen(v) < sizeof(sun.sun_path))
        return 0;
    config_why(why, whylen, "'%s' is longer than the %zu bytes a socket path may have", v,
        sizeof(sun.sun_path) - 1);
    return -1;
}

/* "HOST:PORT" or "[IPV6]:PORT"; the host is resolved later, by whoever connects. */
static int
config_check_hostport(const char *v, char *why, size_t whylen)
{
    char host[256];
    const char *colon;
    unsigned short port;
    size_t hlen;

    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        struct in6_addr a6;

        if (close == NULL || close[1] != ':') {
            config_why(why, whylen, "'%s': expected '[IPV6]:PORT'", v);
            return -1;
        }
        hlen = (size_t)(close - v - 1);
        if (hlen >= sizeof(host)) {
            config_why(why, whylen, "'%s': bad IPv6 address", v);
            return -1;
        }
        memcpy(host, v + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            config_why(why, whylen, "'%s': bad IPv6 address", v);
            return -1;
        }
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (colon == NULL) {
            config_why(why, whylen, "'%s': missing port (expected HOST:PORT)", v);
            return -1;
        }
        hlen = (size_t)(colon - v);
        if (memchr(v, ':', hlen) != NULL) {
            config_why(why, whylen, "'%s': an IPv6 address needs brackets, e.g. '[::1]:25'", v);
            return -1;
        }
        if (hlen >= sizeof(host)) {
            config_why(why, whylen, "'%s': bad host name", v);
            return -1;
        }
        memcpy(host, v, hlen);
        host[hlen] = '\0';
        if (!config_is_domain(host)) {
            config_why(why, whylen, "'%s': bad host name", v);
            return -1;
        }
    }
    if (!config_parse_port(colon + 1, &port)) {
        config_why(why, whylen, "'%s': bad port", v);
        return -1;
    }
    return 0;
}

static int
config_check_recipients(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "any") == 0 || (strncmp(v, "file:", 5) == 0 && v[5] != '\0'))
        return 0;
    config_why(why, whylen, "'%s' is neither 'any' nor 'file:PATH'", v);
    return -1;
}

static int
config_check_state_store(const char *v, char *why, size_t whylen)
{
    if (strncmp(v, "lmdb:", 5) == 0 && v[5] != '\0')
        return 0;
    if (strncmp(v, "redis://", 8) == 0)
        return config_check_hostport(v + 8, why, whylen);
    config_why(why, whylen, "'%s' is neither 'lmdb:PATH' nor 'redis://HOST:PORT'", v);
    return -1;
}

static int
config_check_local_delivery(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "maildir") == 0)
        return 0;
    if (strncmp(v, "lmtp:unix:", 10) == 0 && v[10] == '/')
        return config_check_socket(v + 10, why, whylen);
    if (strncmp(v, "lmtp:", 5) == 0 && strncmp(v, "lmtp:unix:", 10) != 0)
        return config_check_hostport(v + 5, why, whylen);
    config_why(why, whylen,
        "'%s' is not 'maildir', 'lmtp:unix:/PATH' or 'lmtp:HOST:PORT'", v);
    return -1;
}

/* ---- value parsers, one per type ---- */

static int
config_parse_number(const struct config_key *k, const char *v, long *out, char *why,
    size_t whylen)
{
    static const char *const what[] = {
        [CONFIG_INT] = "a whole number",
        [CONFIG_SIZE] = "a size (bytes, or a number followed by k, m or g)",
        [CONFIG_TIME] = "a time (seconds, or a number followed by s, m, h or d)",
    };
    const char *p = v;
    bool neg = false, big = false;
    unsigned long long x = 0, mult = 1;

    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (!isdigit((unsigned char)*p))
        goto bad;
    for (; isdigit((unsigned char)*p); p++) {
        if (x > (ULLONG_MAX - 9) / 10)
            big = true;
        else
            x = x * 10 + (unsigned long long)(*p - '0');
    }
    if (*p != '\0') {
        char s = (char)tolower((unsigned char)*p);

        if (p[1] != '\0')
            goto bad;
        if (k->type == CONFIG_SIZE && s == 'k')
            mult = 1024ULL;
        else if (k->type == CONFIG_SIZE && s == 'm')
            mult = 1024ULL * 1024;
        else if (k->type == CONFIG_SIZE && s == 'g')
            mult = 1024ULL * 1024 * 1024;
        else if (k->type == CONFIG_TIME && s == 's')
            mult = 1;
        else if (k->type == CONFIG_TIME && s == 'm')
            mult = 60;
        else if (k->type == CONFIG_TIME && s == 'h')
            mult = 3600;
        else if (k->type == CONFIG_TIME && s == 'd')
            mult = 86400;
        else
            goto bad;
    }
    if (big || x > (unsigned long long)LONG_MAX / mult) {
        if (neg)
            config_why(why, whylen, "'%s' is below the minimum %ld", v, k->min);
        else
            config_why(why, whylen, "'%s' is above the maximum %ld", v, k->max);
        return -1;
    }
    *out = (long)(x * mult);
    if (neg)
        *out = -*out;
    if (*out < k->min) {
        config_why(why, whylen, "'%s' is below the minimum %ld", v, k->min);
        return -1;
    }
    if (*out > k->max) {
        config_why(why, whylen, "'%s' is above the maximum %ld", v, k->max);
        return -1;
    }
    return 0;
bad:
    config_why(why, whylen, "'%s' is not %s", v, what[k->type]);
    return -1;
}

static int
config_parse_bool(const char *v, bool *out, char *why, size_t whylen)
{
    for (size_t i = 0; i < sizeof(config_bools) / sizeof(config_bools[0]); i++) {
        if (strcasecmp(v, config_bools[i].word) == 0) {
            *out = config_bools[i].value;
            return 0;
        }
    }
    config_why(why, whylen, "'%s' is not on or off (yes/no and true/false work too)", v);
    return -1;
}

static int
config_parse_enum(const struct config_key *k, const char *v, char **out, char *why,
    size_t whylen)
{
    char list[256];
    size_t n = 0;

    for (const char *const *w = k->words; *w; w++) {
        if (strcasecmp(v, *w) == 0) {
            *out = config_xstrndup(*w, strlen(*w));
            return 0;
        }
    }
    list[0] = '\0';
    for (const char *const *w = k->words; *w && n < sizeof(list); w++) {
        int r = snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *w);

        if (r < 0)
            break;
        n += (size_t)r;
    }
    config_why(why, whylen, "'%s' is not one of %s", v, list);
    return -1;
}

/* Split "a, b ,c" into trimmed, non-empty, allocated items. */
static int
config_split(const char *v, char ***items, size_t *nitems, char *why, size_t whylen)
{
    size_t cap = 1, n = 0;
    char **out;
    const char *p = v;

    for (const char *q = v; *q; q++)
        cap += *q == ',';
    out = config_xmalloc(cap * sizeof(*out));
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;

        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (s == e) {
            config_why(why, whylen, "'%s': empty item in the list", v);
            while (n > 0)
                free(out[--n]);
            free(out);
            return -1;
        }
        out[n++] = config_xstrndup(s, (size_t)(e - s));
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *items = out;
    *nitems = n;
    return 0;
}

static void
config_free_items(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static int
config_parse_strlist(const struct config_key *k, const char *v, struct config_strlist *out,
    char *why, size_t whylen)
{
    out->items = NULL;
    out->n = 0;
    if (*v == '\0')
        return 0;
    if (config_split(v, &out->items, &out->n, why, whylen) < 0)
        return -1;
    if (k->flags & CONFIG_LOWER) {
        for (size_t i = 0; i < out->n; i++) {
            if (!config_is_domain(out->items[i])) {
                config_why(why, whylen, "'%s' is not a domain name", out->items[i]);
                config_free_items(out->items, out->n);
                out->items = NULL;
                out->n = 0;
                return -1;
            }
            for (char *p = out->items[i]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        }
    }
    return 0;
}

/* One listener: "127.0.0.1:25", "[::]:465 tls submission", "*:25", "localhost:2525". */
static int
config_parse_listen_entry(const char *item, struct config_listen *l, char *why, size_t whylen)
{
    size_t alen = strcspn(item, " \t");
    char addr[sizeof(l->text)], host[sizeof(l->text)];
    const char *portstr, *opt;
    unsigned short port;

    memset(l, 0, sizeof(*l));
    if (alen >= sizeof(addr)) {
        config_why(why, whylen, "'%s': bad address", item);
        return -1;
    }
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;
        size_t hlen;

        if (close == NULL) {
            config_why(why, whylen, "'%s': missing ']'", item);
            return -1;
        }
        if (close[1] != ':') {
            config_why(why, whylen, "'%s': missing port (e.g. '[::1]:25')", item);
            return -1;
        }
        hlen = (size_t)(close - addr - 1);
        memcpy(host, addr + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            config_why(why, whylen, "'%s': bad IPv6 address", item);
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        l->addrlen = sizeof(*sin6);
        portstr = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;
        size_t hlen;

        if (colon == NULL) {
            config_why(why, whylen, "'%s': missing port (e.g. '127.0.0.1:25')", item);
            return -1;
        }
        hlen = (size_t)(colon - addr);
        if (memchr(addr, ':', hlen) != NULL) {
            config_why(why, whylen, "'%s': an IPv6 address needs brackets, e.g. '[::1]:25'",
                item);
            return -1;
        }
        memcpy(host, addr, hlen);
        host[hlen] = '\0';
        /* No DNS here: a listener is an address, and start-up must not hang on a resolver. */
        if (strcmp(host, "*") == 0)
            strcpy(host, "0.0.0.0");
        else if (strcasecmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            config_why(why, whylen,
                "'%s': bad address (use an IPv4 address, [IPv6], '*' or 'localhost')", item);
            return -1;
        }
        sin->sin_family = AF_INET;
        l->addrlen = sizeof(*sin);
        portstr = colon + 1;
    }
    if (!config_parse_port(portstr, &port)) {
        config_why(why, whylen, "'%s': bad port", item);
        return -1;
    }
    if (l->addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&l->addr)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)&l->addr)->sin_port = htons(port);
    memcpy(l->text, addr, alen + 1);

    for (opt = item + alen;;) {
        size_t olen;

        opt += strspn(opt, " \t");
        if (*opt == '\0')
            break;
        olen = strcspn(opt, " \t");
        if (olen == 3 && strncmp(opt, "tls", 3) == 0) {
            l->flags |= CONFIG_LISTEN_TLS;
        } else if (olen == 10 && strncmp(opt, "submission", 10) == 0) {
            l->flags |= CONFIG_LISTEN_SUBMISSION;
        } else if (olen == 11 && strncmp(opt, "require-tls", 11) == 0) {
            l->flags |= CONFIG_LISTEN_REQUIRE_TLS;
        } else {
            config_why(why, whylen,
                "'%s': unknown option '%.*s' (options: tls, submission, require-tls)", item,
                (int)olen, opt);
            return -1;
        }
        opt += olen;
    }
    return 0;
}

static int
config_parse_listen(const char *v, union config_value *out, char *why, size_t whylen)
{
    char **items;
    size_t n;

    if (config_split(v, &items, &n, why, whylen) < 0)
        return -1;
    out->listen.v = config_xmalloc(n * sizeof(*out->listen.v));
    out->listen.n = n;
    for (size_t i = 0; i < n; i++) {
        if (config_parse_listen_entry(items[i], &out->listen.v[i], why, whylen) < 0)
            goto fail;
        /* Two listeners on one address would fail at bind(); say so now. */
        for (size_t j = 0; j < i; j++) {
            if (out->listen.v[j].addrlen == out->listen.v[i].addrlen &&
                memcmp(&out->listen.v[j].addr, &out->listen.v[i].addr,
                    out->listen.v[i].addrlen) == 0) {
                config_why(why, whylen, "'%s' is listed twice", out->listen.v[i].text);
                goto fail;
            }
        }
    }
    config_free_items(items, n);
    return 0;
fail:
    config_free_items(items, n);
    free(out->listen.v);
    out->listen.v = NULL;
    out->listen.n = 0;
    return -1;
}

/* One network: "10.0.0.0/8", "2001:db8::/32", or a bare address (one host). */
static int
config_parse_cidr_entry(const char *item, struct config_cidr *net, char *why, size_t whylen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    unsigned max;

    memset(net, 0, sizeof(*net));
    if (alen >= sizeof(addr)) {
        config_why(why, whylen, "'%s': bad address", item);
        return -1;
    }
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET, addr, net->addr) == 1) {
        net->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
        net->family = AF_INET6;
        max = 128;
    } else {
        config_why(why, whylen, "'%s': bad address (expected ADDRESS/PREFIX, no names)", item);
        return -1;
    }
    net->prefix = max;
    if (slash != NULL) {
        size_t plen = strlen(slash + 1);

        if (plen == 0 || plen > 3 || strspn(slash + 1, "0123456789") != plen) {
            config_why(why, whylen, "'%s': bad prefix length", item);
            return -1;
        }
        net->prefix = (unsigned)strtoul(slash + 1, NULL, 10);
        if (net->prefix > max) {
            config_why(why, whylen, "'%s': prefix length above %u", item, max);
            return -1;
        }
    }
    /* Clear the host bits, so that matching is a plain comparison. */
    for (unsigned bit = net->prefix; bit < max; bit++)
        net->addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    return 0;
}

static int
config_parse_cidr(const char *v, union config_value *out, char *why, size_t whylen)
{
    char **items;
    size_t n;

    out->cidr.v = NULL;
    out->cidr.n = 0;
    if (*v == '\0')
        return 0;
    if (config_split(v, &items, &n, why, whylen) < 0)
        return -1;
    out->cidr.v = config_xmalloc(n * sizeof(*out->cidr.v));
    out->cidr.n = n;
    for (size_t i = 0; i < n; i++) {
        if (config_parse_cidr_entry(items[i], &out->cidr.v[i], why, whylen) < 0) {
            config_free_items(items, n);
            free(out->cidr.v);
            out->cidr.v = NULL;
            out->cidr.n = 0;
            return -1;
        }
    }
    config_free_items(items, n);
    return 0;
}

/* Parse v as k's type into out; "why" gets the reason without the key's name. */
static int
config_parse_value(const struct config_key *k, const char *v, union config_value *out,
    char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (*v == '\0' && !(k->flags & CONFIG_OPTIONAL)) {
        if (k->def != NULL)
            config_why(why, whylen, "empty value (remove the line for the default, %s)",
                k->def);
        else
            config_why(why, whylen, "empty value");
        return -1;
    }
    switch (k->type) {
    case CONFIG_STRING:
        if (*v != '\0' && k->check != NULL && k->check(v, why, whylen) < 0)
            return -1;
        out->s = *v ? config_xstrndup(v, strlen(v)) : NULL;
        return 0;
    case CONFIG_BOOL:
        return config_parse_bool(v, &out->b, why, whylen);
    case CONFIG_INT:
    case CONFIG_SIZE:
    case CONFIG_TIME:
        return config_parse_number(k, v, &out->l, why, whylen);
    case CONFIG_STRLIST:
        return config_parse_strlist(k, v, &out->list, why, whylen);
    case CONFIG_LISTEN:
        return config_parse_listen(v, out, why, whylen);
    case CONFIG_CIDR:
        return config_parse_cidr(v, out, why, whylen);
    case CONFIG_ENUM:
        return config_parse_enum(k, v, &out->s, why, whylen);
    }
    return -1;
}

static void
config_free_field(struct config *c, const struct config_key *k)
{
    void *f = config_field(c, k);

    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_ENUM:
        free(*(char **)f);
        *(char **)f = NULL;
        break;
    case CONFIG_STRLIST: {
        struct config_strlist *l = f;

        config_free_items(l->items, l->n);
        l->items = NULL;
        l->n = 0;
        break;
    }
    case CONFIG_LISTEN:
    case CONFIG_CIDR:
        free(*(void **)f);
        *(void **)f = NULL;
        *config_field_n(c, k) = 0;
        break;
    case CONFIG_BOOL:
    case CONFIG_INT:
    case CONFIG_SIZE:
    case CONFIG_TIME:
        break;
    }
}

/* Replace k's field with a parsed value; the config now owns it. */
static void
config_store(struct config *c, const struct config_key *k, union config_value *v)
{
    void *f = config_field(c, k);

    config_free_field(c, k);
    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_ENUM:
        *(char **)f = v->s;
        break;
    case CONFIG_BOOL:
        *(bool *)f = v->b;
        break;
    case CONFIG_INT:
    case CONFIG_SIZE:
    case CONFIG_TIME:
        *(long *)f = v->l;
        break;
    case CONFIG_STRLIST:
        *(struct config_strlist *)f = v->list;
        break;
    case CONFIG_LISTEN:
        *(struct config_listen **)f = v->listen.v;
        *config_field_n(c, k) = v->listen.n;
        break;
    case CONFIG_CIDR:
        *(struct config_cidr **)f = v->cidr.v;
        *config_field_n(c, k) = v->cidr.n;
        break;
    }
}

/*
 * One line of a file, or one -o override.  seen[] holds, per key, the line that set it in
 * this file (NULL for overrides, which may replace anything).
 */
static int
config_line(struct config *c, const char *name, int lineno, char *line, int *seen,
    bool override, char *err, size_t errlen)
{
    char why[512];
    char *hash, *eq, *key, *value;
    const struct config_key *k;
    union config_value v;

    /* No value needs a '#', so a '#' anywhere starts a comment. */
    hash = strchr(line, '#');
    if (hash != NULL)
        *hash = '\0';
    line = config_trim(line);
    if (*line == '\0') {
        if (override)
            return config_error(err, errlen, name, lineno, "empty override (expected key=value)");
        return 0;
    }
    eq = strchr(line, '=');
    if (eq == NULL)
        return config_error(err, errlen, name, lineno, "missing '=' in '%s' (expected %s)", line,
            override ? "key=value" : "'key = value'");
    *eq = '\0';
    key = config_trim(line);
    value = config_trim(eq + 1);
    if (*key == '\0')
        return config_error(err, errlen, name, lineno, "missing key before '='");
    k = config_find(key);
    if (k == NULL) {
        const char *guess = config_suggest(key);

        if (guess != NULL)
            return config_error(err, errlen, name, lineno,
                "unknown key '%s'; did you mean '%s'?", key, guess);
        return config_error(err, errlen, name, lineno, "unknown key '%s'", key);
    }
    if (seen != NULL && seen[k - config_keys] != 0)
        return config_error(err, errlen, name, lineno, "repeated key '%s' (first set on line %d)",
            k->name, seen[k - config_keys]);
    if (config_parse_value(k, value, &v, why, sizeof(why)) < 0)
        return config_error(err, errlen, name, lineno, "%s: %s", k->name, why);
    config_store(c, k, &v);
    if (seen != NULL)
        seen[k - config_keys] = lineno;
    return 0;
}

static int
config_parse_text(struct config *c, const char *name, const char *text, size_t len, char *err,
    size_t errlen)
{
    int seen[CONFIG_NKEYS] = {0};
    char line[CONFIG_LINE_MAX + 1];
    size_t pos = 0;
    int lineno = 0;

    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        pos = 3; /* a UTF-8 byte order mark, as some editors write */
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;

        lineno++;
        if (n > 0 && text[pos + n - 1] == '\r')
            n--;
        if (n > CONFIG_LINE_MAX)
            return config_error(err, errlen, name, lineno, "line longer than %d characters",
                CONFIG_LINE_MAX);
        if (memchr(text + pos, '\0', n) != NULL)
            return config_error(err, errlen, name, lineno, "NUL byte in the line");
        memcpy(line, text + pos, n);
        line[n] = '\0';
        if (config_line(c, name, lineno, line, seen, false, err, errlen) < 0)
            return -1;
        pos = end + 1;
    }
    return 0;
}

/* ---- the interface ---- */

void
config_defaults(struct config *c)
{
    char why[512], host[256];
    union config_value v;

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_keys[i];

        if (k->def == NULL)
            continue;
        if (config_parse_value(k, k->def, &v, why, sizeof(why)) < 0)
            log_panic("config: default of %s: %s", k->name, why);
        config_store(c, k, &v);
    }
    host[sizeof(host) - 1] = '\0'; /* gethostname() need not terminate a truncated name */
    if (gethostname(host, sizeof(host) - 1) < 0 || !config_is_domain(host))
        strcpy(host, "localhost");
    c->hostname = config_xstrndup(host, strlen(host));
}

int
config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    char *text;
    size_t len;
    int r, e;

    if (fp == NULL)
        return config_error(err, errlen, path, 0, "cannot open: %s", strerror(errno));
    text = config_xmalloc(CONFIG_FILE_MAX + 1);
    len = fread(text, 1, CONFIG_FILE_MAX + 1, fp);
    e = errno;
    if (ferror(fp)) {
        fclose(fp);
        free(text);
        return config_error(err, errlen, path, 0, "cannot read: %s", strerror(e));
    }
    fclose(fp);
    if (len > CONFIG_FILE_MAX) {
        free(text);
        return config_error(err, errlen, path, 0,
            "larger than %d bytes; is this a configuration file?", CONFIG_FILE_MAX);
    }
    r = config_parse_text(c, path, text, len, err, errlen);
    free(text);
    return r;
}

int
config_load_string(struct config *c, const char *name, const char *text, char *err,
    size_t errlen)
{
    return config_parse_text(c, name, text, strlen(text), err, errlen);
}

int
config_override(struct config *c, const char *kv, int index, char *err, size_t errlen)
{
    char line[CONFIG_LINE_MAX + 1];
    size_t n = strlen(kv);

    if (n > CONFIG_LINE_MAX)
        return config_error(err, errlen, "-o", index, "longer than %d characters",
            CONFIG_LINE_MAX);
    memcpy(line, kv, n + 1);
    return config_line(c, "-o", index, line, NULL, true, err, errlen);
}

int
config_finish(struct config *c, const char *name, char *err, size_t errlen)
{
    if (name == NULL)
        name = "config";
    if (c->min_backoff > c->max_backoff)
        return config_error(err, errlen, name, 0, "min_backoff (%ld) is above max_backoff (%ld)",
            c->min_backoff, c->max_backoff);
    if (c->greylist && c->greylist_delay >= c->greylist_retry_window)
        return config_error(err, errlen, name, 0,
            "greylist_delay (%ld) is not below greylist_retry_window (%ld): no retry could pass",
            c->greylist_delay, c->greylist_retry_window);
    if (c->tls_cert != NULL && c->tls_key == NULL)
        return config_error(err, errlen, name, 0, "tls_cert is set but tls_key is not");
    if (c->tls_key != NULL && c->tls_cert == NULL)
        return config_error(err, errlen, name, 0, "tls_key is set but tls_cert is not");
    for (size_t i = 0; i < c->nlisten; i++) {
        if ((c->listen[i].flags & CONFIG_LISTEN_TLS) && c->tls_cert == NULL)
            return config_error(err, errlen, name, 0,
                "listen: '%s' has the tls option but tls_cert and tls_key are not set",
                c->listen[i].text);
        if ((c->listen[i].flags & CONFIG_LISTEN_SUBMISSION) && c->auth_users == NULL)
            return config_error(err, errlen, name, 0,
                "listen: '%s' has the submission option but auth_users is not set (a "
                "submission listener takes mail only from authenticated users)",
                c->listen[i].text);
        if ((c->listen[i].flags & CONFIG_LISTEN_SUBMISSION) && c->tls_cert == NULL)
            return config_error(err, errlen, name, 0,
                "listen: '%s' has the submission option but tls_cert and tls_key are not set "
                "(AUTH is offered only under TLS, so no mail could ever be taken)",
                c->listen[i].text);
        if ((c->listen[i].flags & CONFIG_LISTEN_REQUIRE_TLS) && c->tls_cert == NULL)
            return config_error(err, errlen, name, 0,
                "listen: '%s' has the require-tls option but tls_cert and tls_key are not set",
                c->listen[i].text);
    }
    return 0;
}

void
config_free(struct config *c)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        config_free_field(c, &config_keys[i]);
}

/* ---- helpers for the rest of tern ---- */

static bool
config_prefix_match(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[whole] ^ net[whole]) & (unsigned char)(0xff00u >> rest)) == 0;
}

bool
config_cidr_match(const struct config_cidr *nets, size_t n, const struct sockaddr *sa)
{
    const unsigned char *a4 = NULL, *a6 = NULL;

    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        a4 = (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

        a6 = (const unsigned char *)in6;
        /* A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d. */
        if (IN6_IS_ADDR_V4MAPPED(in6))
            a4 = a6 + 12;
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (nets[i].family == AF_INET && a4 != NULL &&
            config_prefix_match(a4, nets[i].addr, nets[i].prefix))
            return true;
        if (nets[i].family == AF_INET6 && a6 != NULL &&
            config_prefix_match(a6, nets[i].addr, nets[i].prefix))
            return true;
    }
    return false;
}

bool
config_domain_listed(const struct config_strlist *l, const char *domain, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->items[i]) == len && strncasecmp(l->items[i], domain, len) == 0)
            return true;
    return false;
}

static void
config_dump_key(const struct config *c, const struct config_key *k, FILE *fp)
{
    const void *f = config_cfield(c, k);

    fprintf(fp, "%s =", k->name);
    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_ENUM:
        if (*(char *const *)f != NULL)
            fprintf(fp, " %s", *(char *const *)f);
        break;
    case CONFIG_BOOL:
        fprintf(fp, " %s", *(const bool *)f ? "on" : "off");
        break;
    case CONFIG_INT:
    case CONFIG_SIZE:
    case CONFIG_TIME:
        fprintf(fp, " %ld", *(const long *)f);
        break;
    case CONFIG_STRLIST: {
        const struct config_strlist *l = f;

        for (size_t i = 0; i < l->n; i++)
            fprintf(fp, "%s %s", i ? "," : "", l->items[i]);
        break;
    }
    case CONFIG_LISTEN: {
        const struct config_listen *l = *(struct config_listen *const *)f;

        for (size_t i = 0; i < *config_cfield_n(c, k); i++)
            fprintf(fp, "%s %s%s%s%s", i ? "," : "", l[i].text,
                (l[i].flags & CONFIG_LISTEN_TLS) ? " tls" : "",
                (l[i].flags & CONFIG_LISTEN_SUBMISSION) ? " submission" : "",
                (l[i].flags & CONFIG_LISTEN_REQUIRE_TLS) ? " require-tls" : "");
        break;
    }
    case CONFIG_CIDR:
        for (size_t i = 0; i < *config_cfield_n(c, k); i++) {
            const struct config_cidr *net = &(*(struct config_cidr *const *)f)[i];
            char text[INET6_ADDRSTRLEN];

            inet_ntop(net->family, net->addr, text, sizeof(text));
            fprintf(fp, "%s %s/%u", i ? "," : "", text, net->prefix);
        }
        break;
    }
    fputc('\n', fp);
}

void
config_dump(const struct config *c, FILE *fp)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        config_dump_key(c, &config_keys[i], fp);
}
