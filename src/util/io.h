/*
 * io.h - deadlines for the blocking clients that run on worker threads
 * (LMTP, remote SMTP, tern send/probe): a monotonic clock in milliseconds,
 * and a poll(2) wait that ends at a deadline.
 */
#ifndef TERN_UTIL_IO_H
#define TERN_UTIL_IO_H

#include <stddef.h>

/* Milliseconds on the monotonic clock. */
long long io_now_ms(void);

/*
 * Wait until fd is ready for events (POLLIN/POLLOUT) or the deadline (from
 * io_now_ms) passes.  0 when ready; -1 with errno (ETIMEDOUT at the deadline).
 */
int io_wait(int fd, short events, long long deadline);

/*
 * A non-blocking, close-on-exec stream socket; for TCP with TCP_NODELAY, since
 * every client here writes whole commands and then waits for the reply, and
 * Nagle's algorithm would hold a small write behind the peer's delayed ACK.
 * An fd, or -1 with errno.
 */
int io_socket_stream(int family);

/* Write all of p[0..n) to a blocking fd, retrying short writes and EINTR.  0, or -1 with errno. */
int io_write_all(int fd, const void *p, size_t n);

#endif
