/*
 * maildir_bench.c - how many durable Maildir deliveries a second
 * maildir_deliver() gives, by batch size.
 *
 * Not part of the test suite.  Delivers N messages (one recipient each,
 * spread over M mailboxes) in batches of B from T worker threads, and prints
 * one line per B.  The sync strategy is chosen when maildir.c is built
 * (MAILDIR_SYNC: 0 fsync each, 1 fsync in parallel threads, 2 syncfs, 3
 * sync_file_range + fsync; default 2).  Rerun (numbers in maildir.c):
 *
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -Isrc [-DMAILDIR_SYNC=K] bench/maildir_bench.c \
 *       src/deliver/maildir.c src/deliver/delivery.c src/smtp/reply.c src/util/buf.c \
 *       src/util/log.c -lpthread -o /tmp/maildir_bench
 *   /tmp/maildir_bench [-d DIR] [-n N] [-s BODY_BYTES] [-m MAILBOXES] [-t THREADS] [B...]
 *
 * Defaults: DIR /var/tmp/maildirbench (emptied before each run), N 2000,
 * 1024-byte bodies, 10 mailboxes, 1 thread, B = 1 10 100.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deliver/maildir.h"

struct bench {
    struct maildir_conf conf;
    int body_fd;
    uint64_t body_len;
    size_t batch, mailboxes;
    atomic_size_t next; /* messages handed out */
    size_t total;
    atomic_size_t failed;
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void *
worker(void *arg)
{
    struct bench *b = arg;
    struct delivery_msg *msgs = calloc(b->batch, sizeof(*msgs));
    struct delivery_msg **pm = calloc(b->batch, sizeof(*pm));
    struct delivery_rcpt *rcpts = calloc(b->batch, sizeof(*rcpts));
    char(*addrs)[64] = calloc(b->batch, sizeof(*addrs));
    size_t first, i, n;

    if (msgs == NULL || pm == NULL || rcpts == NULL || addrs == NULL)
        abort();
    for (;;) {
        first = atomic_fetch_add(&b->next, b->batch);
        if (first >= b->total)
            break;
        n = b->total - first < b->batch ? b->total - first : b->batch;
        for (i = 0; i < n; i++) {
            snprintf(
                addrs[i], sizeof(addrs[i]), "user%zu@bench.example", (first + i) % b->mailboxes);
            rcpts[i] = (struct delivery_rcpt){.addr = addrs[i]};
            msgs[i] = (struct delivery_msg){.id = "BENCH",
                .sender = "from@bench.example",
                .body_fd = b->body_fd,
                .body_off = 0,
                .body_len = b->body_len,
                .rcpts = &rcpts[i],
                .nrcpts = 1};
            pm[i] = &msgs[i];
        }
        maildir_deliver(&b->conf, pm, n);
        for (i = 0; i < n; i++)
            if (rcpts[i].status != DLV_OK)
                atomic_fetch_add(&b->failed, 1);
    }
    free(msgs);
    free(pm);
    free(rcpts);
    free(addrs);
    return NULL;
}

int
main(int argc, char **argv)
{
    const char *dir = "/var/tmp/maildirbench";
    size_t n = 2000, size = 1024, mailboxes = 10, threads = 1, t;
    size_t batches[16] = {1, 10, 100};
    size_t nb = 3, bi;
    char segpath[4096], *body;
    int opt;

    while ((opt = getopt(argc, argv, "d:n:s:m:t:")) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'n':
            n = strtoul(optarg, NULL, 10);
            break;
        case 's':
            size = strtoul(optarg, NULL, 10);
            break;
        case 'm':
            mailboxes = strtoul(optarg, NULL, 10);
            break;
        case 't':
            threads = strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr,
                "usage: %s [-d DIR] [-n N] [-s BYTES] [-m MAILBOXES] [-t THREADS] "
                "[BATCH...]\n",
                argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        for (nb = 0; optind < argc && nb < 16; optind++)
            batches[nb++] = strtoul(argv[optind], NULL, 10);
    }
    if (threads < 1 || threads > 64 || mailboxes < 1)
        return 2;

    snprintf(segpath, sizeof(segpath), "%s.seg", dir);
    body = malloc(size);
    for (t = 0; t < size; t++)
        body[t] = (t % 78 == 76) ? '\r' : (t % 78 == 77) ? '\n' : (char)('a' + t % 26);
    for (bi = 0; bi < nb; bi++) {
        struct bench b = {.conf = {.mailbox_dir = dir, .hostname = "bench.example"},
            .body_len = size,
            .batch = batches[bi] ? batches[bi] : 1,
            .mailboxes = mailboxes,
            .total = n};
        pthread_t th[64];
        double t0, el;

        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        if ((b.body_fd = open(segpath, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0 ||
            write(b.body_fd, body, size) != (ssize_t)size || fsync(b.body_fd) < 0) {
            perror(segpath);
            return 1;
        }
        atomic_init(&b.next, 0);
        atomic_init(&b.failed, 0);
        /* create the mailboxes first: the steady state, not first deliveries, is measured */
        {
            struct bench w = b;
            w.total = mailboxes;
            w.batch = mailboxes;
            atomic_init(&w.next, 0);
            atomic_init(&w.failed, 0);
            worker(&w);
        }
        t0 = now();
        for (t = 0; t < threads; t++)
            pthread_create(&th[t], NULL, worker, &b);
        for (t = 0; t < threads; t++)
            pthread_join(th[t], NULL);
        el = now() - t0;
        printf("batch %4zu  threads %2zu  mailboxes %4zu  size %6zu: %8.0f deliveries/s "
               "(%zu in %.2f s, %zu failed)\n",
            b.batch, threads, mailboxes, size, (double)n / el, n, el,
            (size_t)atomic_load(&b.failed));
        fflush(stdout);
        close(b.body_fd);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    unlink(segpath);
    free(body);
    return 0;
}
