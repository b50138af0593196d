/*
 * spool_bench.c - how many durable commits a second the spool gives, and how
 * many messages share one fdatasync, with K commits kept in flight.
 *
 * Not part of the test suite.  One thread plays the event loop: it keeps K
 * messages in flight (K simulated SMTP sessions each waiting for its 250),
 * polls spool_event_fd(), reaps, and commits a fresh message from every done
 * callback.  Prints one line per K.  Rerun (numbers in docs/queue.md):
 *
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -Isrc bench/spool_bench.c src/queue/spool.c \
 *       src/util/log.c src/util/buf.c -lz -lpthread -o /tmp/spool_bench
 *   /tmp/spool_bench [-d DIR] [-t SECONDS] [-s BODY_BYTES] [-x SPILL_BYTES] [K...]
 *
 * Defaults: DIR /var/tmp/spoolbench (emptied first), 5 s, 1024-byte bodies,
 * 64 KiB spill threshold, K = 1 10 100.
 */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/spool.h"

struct bench {
    struct spool *sp;
    const char *body;
    size_t size;
    double t_end;
    uint64_t issued, done, errors;
    double *lat; /* seconds per commit, for percentiles */
    size_t nlat, caplat;
};

struct slot {
    struct bench *b;
    double t0;
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_done(void *arg, int err, const char *id);

static void
bench_commit(struct slot *s)
{
    struct bench *b = s->b;
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg *m;

    spool_new_id(b->sp, id);
    if ((m = spool_msg_new(b->sp, id)) == NULL) {
        perror("spool_msg_new");
        exit(1);
    }
    spool_msg_set_sender(m, "sender@bench.local");
    spool_msg_add_rcpt(m, "pbench@bench.local");
    spool_msg_add_param(m, "client=[127.0.0.1]");
    /* Write the body in 4 KiB pieces, as the DATA path would. */
    for (size_t off = 0; off < b->size; off += 4096) {
        size_t k = b->size - off < 4096 ? b->size - off : 4096;
        if (spool_msg_write(m, b->body + off, k) < 0) {
            perror("spool_msg_write");
            exit(1);
        }
    }
    s->t0 = now();
    b->issued++;
    spool_commit(b->sp, m, bench_done, s);
}

static void
bench_done(void *arg, int err, const char *id)
{
    struct slot *s = arg;
    struct bench *b = s->b;
    double t = now();

    (void)id;
    if (err != 0)
        b->errors++;
    else
        b->done++;
    if (b->nlat == b->caplat) {
        b->caplat = b->caplat ? b->caplat * 2 : 65536;
        if ((b->lat = realloc(b->lat, b->caplat * sizeof(*b->lat))) == NULL)
            exit(1);
    }
    b->lat[b->nlat++] = t - s->t0;
    if (t < b->t_end)
        bench_commit(s);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int
main(int argc, char **argv)
{
    const char *dir = "/var/tmp/spoolbench";
    double secs = 5;
    size_t size = 1024, spill = 64 * 1024;
    int opt, ks[32], nk = 0;

    while ((opt = getopt(argc, argv, "d:t:s:x:")) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 't':
            secs = atof(optarg);
            break;
        case 's':
            size = (size_t)atol(optarg);
            break;
        case 'x':
            spill = (size_t)atol(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-d DIR] [-t SECS] [-s SIZE] [-x SPILL] [K...]\n", argv[0]);
            return 2;
        }
    }
    for (; optind < argc && nk < 32; optind++)
        ks[nk++] = atoi(argv[optind]);
    if (nk == 0) {
        ks[0] = 1, ks[1] = 10, ks[2] = 100;
        nk = 3;
    }
    char *body = malloc(size + 1);
    for (size_t i = 0; i < size; i++)
        body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + i % 26);

    printf("%-6s %-8s %-10s %-9s %-10s %-9s %-9s %-9s %s\n", "K", "size", "msgs", "msgs/s",
        "fdatasyncs", "syncs/s", "msgs/sync", "p50 ms", "p99 ms");
    for (int i = 0; i < nk; i++) {
        struct bench b = {.body = body, .size = size};
        struct spool_stats st;
        char err[256];

        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        if ((b.sp = spool_open(dir, spill, err, sizeof(err))) == NULL) {
            fprintf(stderr, "spool_open: %s\n", err);
            return 1;
        }
        struct slot *slots = calloc((size_t)ks[i], sizeof(*slots));
        double t0 = now();
        b.t_end = t0 + secs;
        for (int k = 0; k < ks[i]; k++) {
            slots[k].b = &b;
            bench_commit(&slots[k]);
        }
        struct pollfd p = {.fd = spool_event_fd(b.sp), .events = POLLIN};
        while (now() < b.t_end) {
            if (poll(&p, 1, 100) < 0 && errno != EINTR)
                return 1;
            spool_reap(b.sp);
        }
        double el = now() - t0;
        uint64_t done = b.done;
        spool_get_stats(b.sp, &st);
        /* Let the last commits in flight finish (not counted), then close. */
        while (b.done + b.errors < b.issued) {
            if (poll(&p, 1, 100) < 0 && errno != EINTR)
                return 1;
            spool_reap(b.sp);
        }
        spool_close(b.sp);
        qsort(b.lat, b.nlat, sizeof(*b.lat), cmp_double);
        printf("%-6d %-8zu %-10llu %-9.0f %-10llu %-9.0f %-9.1f %-9.3f %.3f%s\n", ks[i], size,
            (unsigned long long)done, (double)done / el, (unsigned long long)st.batches,
            (double)st.batches / el, st.batches ? (double)st.committed / (double)st.batches : 0,
            b.lat[b.nlat / 2] * 1e3, b.lat[b.nlat * 99 / 100] * 1e3,
            b.errors ? "  ERRORS" : "");
        fflush(stdout);
        free(b.lat);
        free(slots);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(body);
    return 0;
}
