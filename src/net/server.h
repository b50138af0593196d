/*
 * server.h - the SMTP listeners and connections on the libevent loop.
 *
 * Owns sockets, timers, connection limits and the shutdown sequence; hands
 * bytes to smtp/session and finished messages to queue/spool.  Never blocks:
 * sockets are non-blocking, output is bounded by the session, and the disk
 * is the committer thread's.
 */
#ifndef TERN_NET_SERVER_H
#define TERN_NET_SERVER_H

#include <stddef.h>

#include "queue/spool.h"
#include "util/config.h"

#include <event2/event.h>

#include "smtp/reply.h"

struct server;

/* What the server asks of the rest of the daemon (all on the loop thread). */
struct server_hooks {
    /* RCPT TO an address in local_domains: R_RCPT_OK or the refusal (unknown, full). */
    enum reply_id (*local_rcpt)(void *arg, const char *addr, unsigned long long declared_size);
    /* A message is durable (called even if its client has gone): index and schedule it. */
    void (*committed)(void *arg, const struct spool_record *rec);
    void *arg;
};

/*
 * Bind every listener and load the TLS certificate; NULL with a reason in err
 * (e.g. address in use).  Starts no thread.  sp may be NULL when this runs as
 * root before the spool is opened (as the daemon's user): then server_start()
 * before server_run().  With sp, server_start() is done here.
 */
struct server *server_new(const struct config *cfg, struct spool *sp,
    const struct server_hooks *hooks, char *err, size_t errlen);

/*
 * The second half, after root is dropped: attach the spool, open the policy
 * state store (so its files are the user's), load auth_users and start the
 * AUTH workers (threads).  0, or -1 with err set.
 */
int server_start(struct server *srv, struct spool *sp, char *err, size_t errlen);

/* The event loop, for the other components of the daemon. */
struct event_base *server_base(struct server *srv);

/* Run until SIGTERM/SIGINT and a clean shutdown; 0 on a clean exit. */
int server_run(struct server *srv);

void server_free(struct server *srv);

#endif
