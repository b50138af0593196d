/*
 * test_maildir.c - unit tests of Maildir delivery (deliver/maildir.c) against
 * real directories under /tmp: file contents and names, unique names over
 * many deliveries and threads, alias targets, the address-to-path mapping,
 * size limits, errors, a body read at an offset of a segment file, tmp/
 * cleanup, and batches.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/maildir.h"

struct fixture {
    char dir[64]; /* the mailbox_dir */
    char seg[96]; /* a fake spool segment */
    int seg_fd;
    struct maildir_conf conf;
};

/* ---- helpers ---------------------------------------------------------------------------- */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_maildir.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->seg, sizeof(f->seg), "%s.seg", f->dir);
    f->seg_fd = open(f->seg, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(f->seg_fd >= 0);
    f->conf.mailbox_dir = f->dir;
    f->conf.hostname = "mx.example.org";
    f->conf.size_limit = 0;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    close(f->seg_fd);
    unlink(f->seg);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Append bytes to the segment; returns their offset. */
static uint64_t
seg_append(struct fixture *f, const void *p, size_t n)
{
    off_t off = lseek(f->seg_fd, 0, SEEK_END);

    assert_true(off >= 0);
    assert_int_equal(write(f->seg_fd, p, n), (ssize_t)n);
    return (uint64_t)off;
}

/* One message with one recipient (targets optional). */
static void
deliver1(struct fixture *f, const char *sender, const char *rcpt, const char *const *targets,
    unsigned ntargets, uint64_t off, uint64_t len, struct delivery_rcpt *r)
{
    struct delivery_msg m = {.id = "TEST",
        .sender = sender,
        .body_fd = f->seg_fd,
        .body_off = off,
        .body_len = len,
        .rcpts = r,
        .nrcpts = 1};
    struct delivery_msg *pm = &m;

    memset(r, 0, sizeof(*r));
    r->addr = rcpt;
    r->targets = targets;
    r->ntargets = ntargets;
    r->status = DLV_PERM; /* must be overwritten */
    maildir_deliver(&f->conf, &pm, 1);
}

/* Number of entries (not . or ..) in dir; -1 if it cannot be opened. */
static int
count_dir(const char *dir)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* The name of the only file in dir (asserts there is exactly one). */
static void
only_file(const char *dir, char *name, size_t len)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(name, len, "%s", de->d_name);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 1);
}

static char *
read_file(const char *path, size_t *len)
{
    struct stat st;
    char *p;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    p[st.st_size] = '\0';
    close(fd);
    *len = (size_t)st.st_size;
    return p;
}

/* Assert mbox (relative to mailbox_dir) holds one message in new/ equal to want. */
static void
assert_one_message(struct fixture *f, const char *mbox, const char *want, size_t wantlen)
{
    char path[512], name[300], *got, *s;
    size_t len;

    snprintf(path, sizeof(path), "%s/%s/tmp", f->dir, mbox);
    assert_int_equal(count_dir(path), 0);
    snprintf(path, sizeof(path), "%s/%s/cur", f->dir, mbox);
    assert_int_equal(count_dir(path), 0);
    snprintf(path, sizeof(path), "%s/%s/new", f->dir, mbox);
    only_file(path, name, sizeof(name));
    /* the S= in the name is the file's size */
    s = strstr(name, ",S=");
    assert_non_null(s);
    assert_int_equal(strtoull(s + 3, NULL, 10), wantlen);
    assert_non_null(strstr(name, ".mx.example.org,S="));
    snprintf(path, sizeof(path), "%s/%s/new/%s", f->dir, mbox, name);
    got = read_file(path, &len);
    assert_int_equal(len, wantlen);
    assert_memory_equal(got, want, wantlen);
    free(got);
}

/* ---- tests ------------------------------------------------------------------------------- */

/* The body at an offset of a segment, junk around it: the file holds exactly headers + body. */
static void
test_deliver_at_offset(void **state)
{
    struct fixture *f = *state;
    static const char junk1[] = "JUNK-BEFORE\r\n.\r\nmore junk";
    static const char body[] = "Received: from x\r\nSubject: hi\r\n\r\nHello\r\n";
    static const char junk2[] = "JUNK-AFTER";
    static const char want[] = "Return-Path: <alice@example.net>\r\n"
                               "Delivered-To: bob@example.org\r\n"
                               "Received: from x\r\nSubject: hi\r\n\r\nHello\r\n";
    struct delivery_rcpt r;
    struct stat st;
    char path[512], name[300];
    uint64_t off;

    seg_append(f, junk1, sizeof(junk1) - 1);
    off = seg_append(f, body, sizeof(body) - 1);
    seg_append(f, junk2, sizeof(junk2) - 1);
    deliver1(f, "alice@example.net", "bob@example.org", NULL, 0, off, sizeof(body) - 1, &r);
    assert_int_equal(r.status, DLV_OK);
    assert_string_equal(r.reply, "250 2.0.0 Delivered to the mailbox");
    assert_one_message(f, "example.org/bob", want, sizeof(want) - 1);

    /* modes: 0700 directories, 0600 file */
    snprintf(path, sizeof(path), "%s/example.org/bob/new", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    only_file(path, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/example.org/bob/new/%s", f->dir, name);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

/* The null sender, an empty body, and a body bigger than one I/O chunk. */
static void
test_null_sender_and_big_body(void **state)
{
    struct fixture *f = *state;
    static const char want0[] = "Return-Path: <>\r\nDelivered-To: empty@example.org\r\n";
    size_t n = 300000, i, hl, len;
    char *big = malloc(n), *want, path[512], name[300], *got;
    struct delivery_rcpt r;
    uint64_t off;

    deliver1(f, "", "empty@example.org", NULL, 0, 0, 0, &r);
    assert_int_equal(r.status, DLV_OK);
    assert_one_message(f, "example.org/empty", want0, sizeof(want0) - 1);

    assert_non_null(big);
    for (i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 1000);
    seg_append(f, "x", 1);
    off = seg_append(f, big, n);
    deliver1(f, "s@example.net", "big@example.org", NULL, 0, off, n, &r);
    assert_int_equal(r.status, DLV_OK);
    snprintf(path, sizeof(path), "%s/example.org/big/new", f->dir);
    only_file(path, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/example.org/big/new/%s", f->dir, name);
    got = read_file(path, &len);
    want = "Return-Path: <s@example.net>\r\nDelivered-To: big@example.org\r\n";
    hl = strlen(want);
    assert_int_equal(len, hl + n);
    assert_memory_equal(got, want, hl);
    assert_memory_equal(got + hl, big, n);
    free(got);
    free(big);
}

struct many {
    struct fixture *f;
    uint64_t off, len;
    int batches, per_batch;
    int failed;
};

static void *
deliver_many(void *arg)
{
    struct many *m = arg;
    struct delivery_msg msgs[100], *pm[100];
    struct delivery_rcpt rcpts[100];
    int b, i;

    for (b = 0; b < m->batches; b++) {
        for (i = 0; i < m->per_batch; i++) {
            memset(&rcpts[i], 0, sizeof(rcpts[i]));
            rcpts[i].addr = "many@example.org";
            msgs[i] = (struct delivery_msg){.id = "T",
                .sender = "s@example.net",
                .body_fd = m->f->seg_fd,
                .body_off = m->off,
                .body_len = m->len,
                .rcpts = &rcpts[i],
                .nrcpts = 1};
            pm[i] = &msgs[i];
        }
        maildir_deliver(&m->f->conf, pm, (size_t)m->per_batch);
        for (i = 0; i < m->per_batch; i++)
            if (rcpts[i].status != DLV_OK)
                m->failed++;
    }
    return NULL;
}

/* 10,000 deliveries to one mailbox from two threads: 10,000 distinct files, none lost. */
static void
test_unique_names(void **state)
{
    struct fixture *f = *state;
    struct many m[2];
    pthread_t t[2];
    char path[256];
    int i;

    for (i = 0; i < 2; i++) {
        m[i] = (struct many){.f = f, .len = 5, .batches = 50, .per_batch = 100};
        m[i].off = seg_append(f, "body\n", 5);
        assert_int_equal(pthread_create(&t[i], NULL, deliver_many, &m[i]), 0);
    }
    for (i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(m[i].failed, 0);
    }
    snprintf(path, sizeof(path), "%s/example.org/many/new", f->dir);
    assert_int_equal(count_dir(path), 10000);
    snprintf(path, sizeof(path), "%s/example.org/many/tmp", f->dir);
    assert_int_equal(count_dir(path), 0);
}

/* A recipient expanded to two mailboxes: one file in each, each with its Delivered-To. */
static void
test_alias_targets(void **state)
{
    struct fixture *f = *state;
    static const char *const targets[] = {"a@example.org", "b@example.com"};
    static const char wa[] = "Return-Path: <s@x.net>\r\nDelivered-To: a@example.org\r\nBODY";
    static const char wb[] = "Return-Path: <s@x.net>\r\nDelivered-To: b@example.com\r\nBODY";
    struct delivery_rcpt r;
    char path[256];
    uint64_t off = seg_append(f, "BODY", 4);

    deliver1(f, "s@x.net", "alias@example.org", targets, 2, off, 4, &r);
    assert_int_equal(r.status, DLV_OK);
    assert_one_message(f, "example.org/a", wa, sizeof(wa) - 1);
    assert_one_message(f, "example.com/b", wb, sizeof(wb) - 1);
    /* the alias itself gets no mailbox */
    snprintf(path, sizeof(path), "%s/example.org/alias", f->dir);
    assert_int_equal(access(path, F_OK), -1);
}

static void
assert_maps(struct fixture *f, const char *addr, const char *want)
{
    char out[512], full[512];

    assert_int_equal(maildir_path(&f->conf, addr, out, sizeof(out)), 0);
    snprintf(full, sizeof(full), "%s/%s", f->dir, want);
    assert_string_equal(out, full);
    assert_null(strstr(out + strlen(f->dir), "/../"));
    assert_null(strstr(out + strlen(f->dir), "/./"));
}

static void
test_path_mapping(void **state)
{
    struct fixture *f = *state;
    char out[512];

    assert_maps(f, "User@Example.ORG", "example.org/user");
    assert_maps(f, "\"john doe\"@example.org", "example.org/john doe");
    assert_maps(f, "\"a\\\"b\"@example.org", "example.org/a\"b");
    assert_maps(f, "\"a@b\"@example.org", "example.org/a@b");
    assert_maps(f, "\"../../etc/passwd\"@example.org", "example.org/%2E.%2F..%2Fetc%2Fpasswd");
    assert_maps(f, "\"..\"@example.org", "example.org/%2E.");
    assert_maps(f, "\".\"@example.org", "example.org/%2E");
    assert_maps(f, "\".hidden\"@example.org", "example.org/%2Ehidden");
    assert_maps(f, "a.b@example.org", "example.org/a.b");
    assert_maps(f, "100%@example.org", "example.org/100%25");
    assert_maps(f, "\"a\\\tb\"@example.org", "example.org/a%09b");
    assert_maps(f, "\"\"@example.org", "example.org/%22%22");
    assert_maps(f, "x@..", "%2E./x");
    assert_maps(f, "x@a/b", "a%2Fb/x");
    assert_maps(f, "Joe@[192.0.2.1]", "[192.0.2.1]/joe");
    assert_maps(f, "joe@[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]/joe");
    assert_maps(f, "joe@[a/../b]", "[a%2F..%2Fb]/joe");
    assert_maps(f, "Postmaster", "mx.example.org/postmaster");
    assert_maps(f, "j\xc3\xb6rg@example.org", "example.org/j\xc3\xb6rg");
    /* does not fit, or malformed */
    assert_int_equal(maildir_path(&f->conf, "user@example.org", out, 20), -1);
    assert_int_equal(maildir_path(&f->conf, "\"unterminated@example.org", out, sizeof(out)), -1);
    assert_int_equal(maildir_path(&f->conf, "user@", out, sizeof(out)), -1);
}

/* A delivery with an unsafe address stays inside mailbox_dir. */
static void
test_unsafe_address_stays_inside(void **state)
{
    struct fixture *f = *state;
    struct delivery_rcpt r;
    char path[256];
    uint64_t off = seg_append(f, "B", 1);

    deliver1(f, "", "\"../../x\"@..", NULL, 0, off, 1, &r);
    assert_int_equal(r.status, DLV_OK);
    snprintf(path, sizeof(path), "%s/%%2E./%%2E.%%2F..%%2Fx/new", f->dir);
    assert_int_equal(count_dir(path), 1);
    assert_int_equal(count_dir(f->dir), 1); /* only the "%2E." domain directory */
}

/* Create a file of size bytes at mailbox_dir/rel. */
static void
make_file(struct fixture *f, const char *rel, size_t size)
{
    char path[512], *zero = calloc(1, size + 1);
    int fd;

    snprintf(path, sizeof(path), "%s/%s", f->dir, rel);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, zero, size), (ssize_t)size);
    close(fd);
    free(zero);
}

static void
test_size_limit(void **state)
{
    struct fixture *f = *state;
    char body[1000], path[256];
    struct delivery_rcpt r;
    uint64_t off;
    size_t hl = strlen("Return-Path: <>\r\nDelivered-To: q@example.org\r\n");

    memset(body, 'x', sizeof(body));
    off = seg_append(f, body, sizeof(body));
    f->conf.size_limit = 5000;

    /* bigger than the limit on its own: permanent, with the limit in the text */
    deliver1(f, "", "q@example.org", NULL, 0, 0, 5001, &r);
    assert_int_equal(r.status, DLV_PERM);
    assert_string_equal(
        r.reply, "552 5.2.2 Message larger than the mailbox size limit of 5000 octets");

    /* existing mail: 2,000 bytes by S= in cur/, 1,000 by stat in new/ (the name lies not) */
    snprintf(path, sizeof(path), "%s/example.org", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/example.org/q", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/example.org/q/cur", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/example.org/q/new", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/example.org/q/tmp", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    make_file(f, "example.org/q/cur/1.M1P1Q1.h,S=2000:2,S", 10);
    make_file(f, "example.org/q/new/2.M2P2Q2.h", 1000);

    /* 3,000 used: one message of 1000 + hl fits, the next does not */
    assert_false(maildir_full(&f->conf, "q@example.org")); /* not scanned yet: not full */
    deliver1(f, "", "q@example.org", NULL, 0, off, 1000, &r);
    assert_int_equal(r.status, DLV_OK);
    assert_false(maildir_full(&f->conf, "q@example.org"));
    deliver1(f, "", "q@example.org", NULL, 0, off, 1000, &r);
    assert_int_equal(r.status, DLV_TEMP);
    assert_string_equal(
        r.reply, "452 4.2.2 Mailbox full (mailbox_size_limit); delivery will be retried");
    snprintf(path, sizeof(path), "%s/example.org/q/new", f->dir);
    assert_int_equal(count_dir(path), 2);
    snprintf(path, sizeof(path), "%s/example.org/q/tmp", f->dir);
    assert_int_equal(count_dir(path), 0);

    /* fill it to the byte: then maildir_full() says so, from the cache */
    deliver1(f, "", "q@example.org", NULL, 0, off, 5000 - 3000 - (1000 + hl) - hl, &r);
    assert_int_equal(r.status, DLV_OK);
    assert_true(maildir_full(&f->conf, "Q@Example.org"));
    assert_false(maildir_full(&f->conf, "other@example.org"));

    /* no limit: no refusal */
    f->conf.size_limit = 0;
    assert_false(maildir_full(&f->conf, "q@example.org"));
    deliver1(f, "", "q@example.org", NULL, 0, off, 1000, &r);
    assert_int_equal(r.status, DLV_OK);
}

/* A regular file where the Maildir should be: TEMP with the system's error text, no file. */
static void
test_unwritable_mailbox(void **state)
{
    struct fixture *f = *state;
    struct delivery_rcpt r;
    char path[256];
    uint64_t off = seg_append(f, "BODY", 4);

    snprintf(path, sizeof(path), "%s/example.org", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    make_file(f, "example.org/user", 3);
    deliver1(f, "s@x.net", "user@example.org", NULL, 0, off, 4, &r);
    assert_int_equal(r.status, DLV_TEMP);
    assert_int_equal(strncmp(r.reply, "451 4.3.0 Cannot write to the mailbox: ", 39), 0);
    assert_non_null(strstr(r.reply, strerror(ENOTDIR)));
    assert_int_equal(count_dir(path), 1); /* only the file we made */

    /* a recipient with two targets, one good and one bad: the worst (TEMP) wins */
    {
        static const char *const targets[] = {"good@example.org", "user@example.org"};

        deliver1(f, "s@x.net", "alias@example.org", targets, 2, off, 4, &r);
        assert_int_equal(r.status, DLV_TEMP);
        assert_non_null(strstr(r.reply, strerror(ENOTDIR)));
    }
}

/* A body that the segment does not hold (truncated spool): TEMP, nothing left anywhere. */
static void
test_short_body(void **state)
{
    struct fixture *f = *state;
    struct delivery_rcpt r;
    char path[256];
    uint64_t off = seg_append(f, "SHORT", 5);

    deliver1(f, "", "short@example.org", NULL, 0, off, 100, &r);
    assert_int_equal(r.status, DLV_TEMP);
    assert_non_null(strstr(r.reply, "451 4.3.0"));
    snprintf(path, sizeof(path), "%s/example.org/short/new", f->dir);
    assert_int_equal(count_dir(path), 0);
    snprintf(path, sizeof(path), "%s/example.org/short/tmp", f->dir);
    assert_int_equal(count_dir(path), 0);
}

static void
test_cleanup(void **state)
{
    struct fixture *f = *state;
    struct timespec old[2];
    struct delivery_rcpt r;
    char path[256];
    uint64_t off = seg_append(f, "B", 1);

    deliver1(f, "", "c@example.org", NULL, 0, off, 1, &r); /* makes the Maildir */
    assert_int_equal(r.status, DLV_OK);
    make_file(f, "example.org/c/tmp/old", 10);
    make_file(f, "example.org/c/tmp/recent", 10);
    make_file(f, "example.org/c/tmp/almost", 10);
    clock_gettime(CLOCK_REALTIME, &old[0]);
    old[0].tv_sec -= 37 * 3600;
    old[1] = old[0];
    snprintf(path, sizeof(path), "%s/example.org/c/tmp/old", f->dir);
    assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
    old[0].tv_sec += 2 * 3600; /* 35 hours old */
    old[1] = old[0];
    snprintf(path, sizeof(path), "%s/example.org/c/tmp/almost", f->dir);
    assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
    /* an old file in new/ is mail, not litter */
    old[0].tv_sec -= 10 * 3600;
    old[1] = old[0];
    make_file(f, "example.org/c/new/oldmail", 10);
    snprintf(path, sizeof(path), "%s/example.org/c/new/oldmail", f->dir);
    assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);

    maildir_cleanup(&f->conf);
    snprintf(path, sizeof(path), "%s/example.org/c/tmp/old", f->dir);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/example.org/c/tmp/recent", f->dir);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/example.org/c/tmp/almost", f->dir);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/example.org/c/new", f->dir);
    assert_int_equal(count_dir(path), 2);
}

/* 100 messages, 3 recipients each over 10 mailboxes, different bodies, in one call. */
static void
test_batch_100(void **state)
{
    struct fixture *f = *state;
    struct delivery_msg msgs[100], *pm[100];
    struct delivery_rcpt rcpts[100][3];
    char addrs[100][3][40], bodies[100][32], path[256];
    int i, k, total = 0;

    for (i = 0; i < 100; i++) {
        int n = snprintf(bodies[i], sizeof(bodies[i]), "message number %d\r\n", i);
        uint64_t off = seg_append(f, bodies[i], (size_t)n);

        for (k = 0; k < 3; k++) {
            snprintf(addrs[i][k], sizeof(addrs[i][k]), "u%d@example.org", (i + k) % 10);
            memset(&rcpts[i][k], 0, sizeof(rcpts[i][k]));
            rcpts[i][k].addr = addrs[i][k];
            rcpts[i][k].status = DLV_PERM;
        }
        msgs[i] = (struct delivery_msg){.id = "B",
            .sender = "s@x.net",
            .body_fd = f->seg_fd,
            .body_off = off,
            .body_len = (uint64_t)n,
            .rcpts = rcpts[i],
            .nrcpts = 3};
        pm[i] = &msgs[i];
    }
    maildir_deliver(&f->conf, pm, 100);
    for (i = 0; i < 100; i++)
        for (k = 0; k < 3; k++)
            assert_int_equal(rcpts[i][k].status, DLV_OK);
    for (i = 0; i < 10; i++) {
        struct dirent *de;
        DIR *d;

        snprintf(path, sizeof(path), "%s/example.org/u%d/new", f->dir, i);
        assert_int_equal(count_dir(path), 30);
        /* each file is its own message, well formed */
        d = opendir(path);
        assert_non_null(d);
        while ((de = readdir(d)) != NULL) {
            char fp[600], *got, want[128];
            size_t len;
            int num;

            if (de->d_name[0] == '.')
                continue;
            snprintf(fp, sizeof(fp), "%s/%s", path, de->d_name);
            got = read_file(fp, &len);
            assert_int_equal(sscanf(strstr(got, "message number "), "message number %d", &num), 1);
            snprintf(want, sizeof(want),
                "Return-Path: <s@x.net>\r\nDelivered-To: u%d@example.org\r\n"
                "message number %d\r\n",
                i, num);
            assert_string_equal(got, want);
            free(got);
            total++;
        }
        closedir(d);
    }
    assert_int_equal(total, 300);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deliver_at_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_sender_and_big_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsafe_address_stays_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_100, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
