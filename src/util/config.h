/*
 * config.h - the configuration: every key of tern.conf(5), checked up front.
 *
 * File syntax: one "key = value" per line; '#' starts a comment; blank lines
 * are ignored; list values are comma-separated (spaces around items ignored);
 * times are in seconds and sizes in bytes (a plain non-negative integer; the
 * suffixes k, m, g for sizes and s, m, h, d for times are accepted as a
 * convenience).  An unknown key, a bad value, a repeated key or a missing file
 * is an error "FILE:LINE: reason".  Overrides given with -o key=value are
 * applied after the file and reported as "-o:N: reason" (N = the override's
 * position, from 1).
 */
#ifndef TERN_UTIL_CONFIG_H
#define TERN_UTIL_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define CONFIG_LISTEN_TLS 0x1        /* implicit TLS (port 465 style) */
#define CONFIG_LISTEN_SUBMISSION 0x2 /* submission: AUTH required (issue 7) */
#define CONFIG_LISTEN_REQUIRE_TLS 0x4 /* STARTTLS before any mail command (RFC 3207) */

struct config_listen {
    struct sockaddr_storage addr; /* IPv4 or IPv6, port set */
    socklen_t addrlen;
    char text[80];                /* as written: "127.0.0.1:2525", "[::1]:2525" */
    unsigned flags;               /* CONFIG_LISTEN_* */
};

/* A network in relay_networks: "127.0.0.0/8", "::1/128", "192.0.2.7". */
struct config_cidr {
    int family;                   /* AF_INET or AF_INET6 */
    unsigned char addr[16];       /* network address, host bits cleared */
    unsigned prefix;              /* 0..32 or 0..128 */
};

struct config_strlist {
    char **items;                 /* each item lower-cased for domains */
    size_t n;
};

struct config {
    /* listeners */
    struct config_listen *listen;
    size_t nlisten;
    char *hostname;               /* default: gethostname() */
    char *user;
    char *control_socket;
    char *metrics_listen;
    bool sandbox;                 /* Landlock: only the daemon's own paths (util/sandbox.h) */
    /* storage */
    char *spool_dir;
    char *mailbox_dir;
    struct config_strlist local_domains;
    char *local_recipients;       /* "any" or "file:PATH" */
    char *local_delivery;         /* "maildir", "lmtp:unix:PATH" or "lmtp:HOST:PORT" */
    long delivery_concurrency;    /* deliveries in flight at once */
    long mailbox_size_limit;      /* bytes per Maildir; 0: no limit */
    /* limits */
    long max_connections;
    long max_connections_per_ip;
    long max_message_size;
    long max_recipients;
    long max_line_length;
    long max_errors;
    long timeout_command;
    long timeout_data;
    long shutdown_timeout;
    /* relaying */
    struct config_cidr *relay_networks;
    size_t nrelay_networks;
    char *relay_host;
    long remote_port;             /* port for MX hosts (25; tests use others) */
    long remote_timeout_connect;  /* RFC 5321 §4.5.3.2 client timeouts, seconds */
    long remote_timeout_command;  /* greeting, EHLO, MAIL, RCPT */
    long remote_timeout_data_init; /* DATA's 354 */
    long remote_timeout_data_block; /* each block of the body */
    long remote_timeout_data_done; /* the reply to the final dot */
    long max_outbound;            /* remote SMTP connections at once, in all */
    long max_outbound_per_domain; /* ... to one destination domain */
    long max_messages_per_connection; /* messages one outbound connection carries */
    char *dns_config;
    long min_backoff;
    long max_backoff;
    long max_queue_lifetime;
    long delay_warning;
    /* policy */
    bool greylist;
    long greylist_delay;          /* seconds before a retry passes */
    long greylist_retry_window;   /* seconds after first sight within which it must come */
    long greylist_expire;         /* seconds a passed triplet (and a network's count) lives */
    long greylist_auto_allow;     /* passed triplets after which a network passes; 0: never */
    struct config_strlist greylist_allow_domains; /* sender or recipient domains not greylisted */
    struct config_cidr *policy_allow_networks; /* clients exempt from greylisting and rates */
    size_t npolicy_allow_networks;
    long rate_window;             /* seconds, for the three rates below */
    long rate_connections;        /* per client address and window; 0: no limit */
    long rate_messages;
    long rate_recipients;
    char *state_store;
    char *policy_on_error;        /* "tempfail" or "accept" */
    /* TLS */
    char *tls_cert;
    char *tls_key;
    char *tls_policy;             /* outbound STARTTLS: none, may, encrypt, verify */
    char *tls_ca_file;            /* trust anchors for tls_policy = verify; unset: the system's */
    /* AUTH (RFC 4954) */
    char *auth_users;             /* credentials file: "user:HASH" lines */
    long auth_max_failures;       /* failed AUTHs per address in the window: then 421 */
    long auth_failure_window;     /* seconds a failure is remembered */
    /* logging (tern's own key) */
    char *log_level;              /* debug, info, warn, error */
};

/*
 * The configuration ternd uses when run without -c: the demo setup of
 * etc/demo.conf (127.0.0.1:2525, spool and mailboxes under ./build/demo).
 * Load it with config_load_string() on top of config_defaults().
 */
extern const char config_default_text[];

/* Fill *c with every default.  Never fails. */
void config_defaults(struct config *c);

/*
 * Parse the file at path into *c (which holds the defaults).  On error return
 * -1 and write "FILE:LINE: reason" into err.
 */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);

/* Parse text as if it were a file called name (the embedded default config). */
int config_load_string(struct config *c, const char *name, const char *text, char *err,
    size_t errlen);

/* Apply one "key=value" override (the -o option); index is its position, from 1. */
int config_override(struct config *c, const char *kv, int index, char *err, size_t errlen);

/* Checks across keys (e.g. min_backoff <= max_backoff); "FILE: reason" on error. */
int config_finish(struct config *c, const char *name, char *err, size_t errlen);

void config_free(struct config *c);

/* Helpers shared with the rest of the program. */
bool config_cidr_match(const struct config_cidr *nets, size_t n, const struct sockaddr *sa);
bool config_domain_listed(const struct config_strlist *l, const char *domain, size_t len);

/* Print every key with its current value, one "key = value" per line. */
void config_dump(const struct config *c, FILE *fp);

#endif
