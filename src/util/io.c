/*
 * io.c - deadlines for blocking clients (see io.h).
 */
#include "util/io.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

long long
io_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
io_wait(int fd, short events, long long deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    long long left;
    int rc;

    for (;;) {
        left = deadline - io_now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        /* poll takes an int; wake at least once a minute and look again */
        rc = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

int
io_socket_stream(int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    if (fd >= 0 && (family == AF_INET || family == AF_INET6))
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int
io_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}
