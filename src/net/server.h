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

struct server;

/* Bind every listener; NULL with a reason in err (e.g. address in use). */
struct server *server_new(const struct config *cfg, struct spool *sp, char *err, size_t errlen);

/* Run until SIGTERM/SIGINT and a clean shutdown; 0 on a clean exit. */
int server_run(struct server *srv);

void server_free(struct server *srv);

#endif
