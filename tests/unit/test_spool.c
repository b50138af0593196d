/*
 * test_spool.c - unit tests of the spool (queue/spool.c) against a real
 * directory under /tmp: commit and recover, group commit, detach, the spill
 * path, injected write failures, torn tails, queue IDs; state records, copies
 * forward, the segment list and removal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
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

#include "queue/spool.h"

#define MAXREC 2048

struct rec {
    char id[SPOOL_ID_LEN + 1];
    char *env;
    char *body;
    uint64_t body_len;
    char seg[512];
};

struct found {
    struct rec r[MAXREC];
    int n;
};

struct fixture {
    char dir[64];
    struct spool *sp;
};

struct result {
    int calls;
    int err;
    char id[SPOOL_ID_LEN + 1];
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
    char err[256];

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_spool.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->sp = spool_open(f->dir, 4096, err, sizeof(err));
    if (f->sp == NULL)
        fail_msg("spool_open: %s", err);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    spool_close(f->sp);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void
reopen(struct fixture *f)
{
    char err[256];

    spool_close(f->sp);
    f->sp = spool_open(f->dir, 4096, err, sizeof(err));
    if (f->sp == NULL)
        fail_msg("spool_open: %s", err);
}

static void
on_done(void *arg, int err, const char *id)
{
    struct result *r = arg;

    r->calls++;
    r->err = err;
    snprintf(r->id, sizeof(r->id), "%s", id);
}

/* Run the loop until stats say `want` messages finished (ok or failed) and all are reaped. */
static void
wait_finished(struct spool *sp, uint64_t want)
{
    struct pollfd p = {.fd = spool_event_fd(sp), .events = POLLIN};
    struct spool_stats st;

    for (int i = 0; i < 1000; i++) {
        spool_get_stats(sp, &st);
        if (st.committed + st.failed >= want) {
            spool_reap(sp);
            return;
        }
        poll(&p, 1, 10);
        spool_reap(sp);
    }
    fail_msg("timeout waiting for %llu commits", (unsigned long long)want);
}

static uint64_t
finished(struct spool *sp)
{
    struct spool_stats st;

    spool_get_stats(sp, &st);
    return st.committed + st.failed;
}

static struct spool_msg *
make_msg(struct spool *sp, const char *body, size_t len, char id[SPOOL_ID_LEN + 1])
{
    struct spool_msg *m;

    spool_new_id(sp, id);
    m = spool_msg_new(sp, id);
    assert_non_null(m);
    assert_int_equal(spool_msg_set_sender(m, "alice@example.org"), 0);
    assert_int_equal(spool_msg_add_rcpt(m, "bob@example.net"), 0);
    assert_int_equal(spool_msg_add_rcpt(m, "carol@example.net"), 0);
    assert_int_equal(spool_msg_add_param(m, "BODY=8BITMIME"), 0);
    spool_msg_set_arrival(m, 1700000000);
    assert_int_equal(spool_msg_write(m, body, len), 0);
    assert_int_equal(spool_msg_size(m), len);
    assert_string_equal(spool_msg_id(m), id);
    return m;
}

static int
collect(void *arg, const char *id, const char *env, size_t envlen, uint64_t body_off,
    uint64_t body_len, const char *segpath)
{
    struct found *fd = arg;
    struct rec *r;
    int h;

    assert_true(fd->n < MAXREC);
    r = &fd->r[fd->n++];
    snprintf(r->id, sizeof(r->id), "%s", id);
    assert_int_equal(strlen(env), envlen);
    r->env = strdup(env);
    r->body = malloc(body_len + 1);
    r->body_len = body_len;
    snprintf(r->seg, sizeof(r->seg), "%s", segpath);
    h = open(segpath, O_RDONLY);
    assert_true(h >= 0);
    assert_int_equal(pread(h, r->body, body_len, (off_t)body_off), (ssize_t)body_len);
    close(h);
    return 0;
}

static void
found_free(struct found *fd)
{
    for (int i = 0; i < fd->n; i++) {
        free(fd->r[i].env);
        free(fd->r[i].body);
    }
    free(fd);
}

static struct found *
scan(const char *dir)
{
    struct found *fd = calloc(1, sizeof(*fd));

    assert_non_null(fd);
    assert_int_equal(spool_scan(dir, collect, fd), 0);
    return fd;
}

static struct rec *
find(struct found *fd, const char *id)
{
    for (int i = 0; i < fd->n; i++)
        if (strcmp(fd->r[i].id, id) == 0)
            return &fd->r[i];
    return NULL;
}

static int
count_dir(const char *dir, const char *sub)
{
    char path[256];
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    d = opendir(path);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void
test_commit_then_scan(void **state)
{
    struct fixture *f = *state;
    const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    char id[SPOOL_ID_LEN + 1];
    struct result res = {0};
    struct spool_msg *m = make_msg(f->sp, body, sizeof(body) - 1, id);

    spool_commit(f->sp, m, on_done, &res);
    wait_finished(f->sp, 1);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, 0);
    assert_string_equal(res.id, id);

    struct spool_stats st;
    spool_get_stats(f->sp, &st);
    assert_int_equal(st.committed, 1);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.batches, 1);
    assert_true(st.bytes > sizeof(body));

    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 1);
    assert_string_equal(fd->r[0].id, id);
    assert_string_equal(fd->r[0].env, "S alice@example.org\nR bob@example.net\n"
                                      "R carol@example.net\nP BODY=8BITMIME\nT 1700000000\n");
    assert_int_equal(fd->r[0].body_len, sizeof(body) - 1);
    assert_memory_equal(fd->r[0].body, body, sizeof(body) - 1);
    found_free(fd);
}

static void
test_group_commit(void **state)
{
    struct fixture *f = *state;
    enum { N = 1000 };
    static struct result res[N];
    static char ids[N][SPOOL_ID_LEN + 1];
    static struct spool_msg *ms[N];
    char body[1024];

    memset(res, 0, sizeof(res));
    for (int i = 0; i < N; i++) {
        snprintf(body, sizeof(body), "message %d\r\n", i);
        ms[i] = make_msg(f->sp, body, strlen(body), ids[i]);
    }
    for (int i = 0; i < N; i++)
        spool_commit(f->sp, ms[i], on_done, &res[i]);
    wait_finished(f->sp, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].err, 0);
        assert_string_equal(res[i].id, ids[i]);
    }
    struct spool_stats st;
    spool_get_stats(f->sp, &st);
    assert_int_equal(st.committed, N);
    /* Group commit: far fewer syncs than messages. */
    assert_true(st.batches >= 1);
    assert_true(st.batches < N / 2);

    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, N);
    for (int i = 0; i < N; i++) {
        /* Records are in commit order. */
        assert_string_equal(fd->r[i].id, ids[i]);
        snprintf(body, sizeof(body), "message %d\r\n", i);
        assert_int_equal(fd->r[i].body_len, strlen(body));
        assert_memory_equal(fd->r[i].body, body, strlen(body));
    }
    found_free(fd);
}

static void
test_detach(void **state)
{
    struct fixture *f = *state;
    struct result a = {0}, b = {0};
    char ida[SPOOL_ID_LEN + 1], idb[SPOOL_ID_LEN + 1];

    spool_commit(f->sp, make_msg(f->sp, "a", 1, ida), on_done, &a);
    spool_commit(f->sp, make_msg(f->sp, "b", 1, idb), on_done, &b);
    spool_commit_detach(f->sp, &a);
    wait_finished(f->sp, 2);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.err, 0);

    /* Detach after the commit finished but before the reap. */
    struct result c = {0};
    char idc[SPOOL_ID_LEN + 1];
    spool_commit(f->sp, make_msg(f->sp, "c", 1, idc), on_done, &c);
    while (finished(f->sp) < 3)
        usleep(1000);
    spool_commit_detach(f->sp, &c);
    spool_reap(f->sp);
    assert_int_equal(c.calls, 0);

    /* Detached messages are still committed. */
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 3);
    assert_non_null(find(fd, ida));
    assert_non_null(find(fd, idc));
    found_free(fd);
}

static void
test_spill(void **state)
{
    struct fixture *f = *state;
    size_t len = 1 << 20;
    char *body = malloc(len), id[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1];
    struct result res = {0};
    struct spool_msg *m;

    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (char)(i * 7 + (i >> 9));
    spool_new_id(f->sp, id);
    m = spool_msg_new(f->sp, id);
    assert_non_null(m);
    assert_int_equal(spool_msg_set_sender(m, ""), 0);
    assert_int_equal(spool_msg_add_rcpt(m, "bob@example.net"), 0);
    /* Odd chunk sizes, crossing the 4096-byte threshold mid-chunk. */
    for (size_t off = 0, k = 1; off < len; off += k, k = k * 3 + 1) {
        if (k > len - off)
            k = len - off;
        assert_int_equal(spool_msg_write(m, body + off, k), 0);
    }
    assert_int_equal(spool_msg_size(m), len);
    assert_int_equal(count_dir(f->dir, "tmp"), 1); /* spilled */

    /* An aborted spilled message leaves nothing behind. */
    struct spool_msg *m2 = make_msg(f->sp, body, 8192, id2);
    assert_int_equal(count_dir(f->dir, "tmp"), 2);
    spool_msg_abort(m2);
    assert_int_equal(count_dir(f->dir, "tmp"), 1);

    spool_commit(f->sp, m, on_done, &res);
    wait_finished(f->sp, 1);
    assert_int_equal(res.err, 0);
    assert_int_equal(count_dir(f->dir, "tmp"), 0); /* removed after commit */

    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 1);
    assert_string_equal(fd->r[0].id, id);
    assert_true(strncmp(fd->r[0].env, "S \nR bob@example.net\nT ", 23) == 0);
    assert_int_equal(fd->r[0].body_len, len);
    assert_memory_equal(fd->r[0].body, body, len);
    found_free(fd);
    free(body);
}

static void
test_fail_next(void **state)
{
    struct fixture *f = *state;
    enum { N = 20, ROUNDS = 10 };
    struct result res[N];
    char ids[N][SPOOL_ID_LEN + 1];
    struct spool_msg *ms[N];
    uint64_t base = 0;
    int max_failed = 0, total_failed = 0;
    struct found *fd;

    for (int round = 0; round < ROUNDS; round++) {
        memset(res, 0, sizeof(res));
        for (int i = 0; i < N; i++)
            ms[i] = make_msg(f->sp, "body\r\n", 6, ids[i]);
        spool_test_fail_next(f->sp, ENOSPC);
        for (int i = 0; i < N; i++)
            spool_commit(f->sp, ms[i], on_done, &res[i]);
        base += N;
        wait_finished(f->sp, base);

        /* The failed batch is the first one: a non-empty prefix, all with ENOSPC. */
        int failed = 0;
        while (failed < N && res[failed].err != 0) {
            assert_int_equal(res[failed].err, ENOSPC);
            failed++;
        }
        assert_true(failed >= 1);
        for (int i = failed; i < N; i++) {
            assert_int_equal(res[i].calls, 1);
            assert_int_equal(res[i].err, 0);
        }
        if (failed > max_failed)
            max_failed = failed;
        total_failed += failed;

        fd = scan(f->dir);
        for (int i = 0; i < N; i++) {
            if (i < failed)
                assert_null(find(fd, ids[i]));
            else
                assert_non_null(find(fd, ids[i]));
        }
        found_free(fd);
    }
    /* At least once the failing batch held several messages, and all of them failed. */
    assert_true(max_failed >= 2);

    struct spool_stats st;
    spool_get_stats(f->sp, &st);
    assert_int_equal(st.failed, total_failed);
    assert_int_equal(st.committed, ROUNDS * N - total_failed);

    /* The next batch after a failure succeeds, and recovery after a restart agrees. */
    struct result ok = {0};
    char idok[SPOOL_ID_LEN + 1];
    spool_commit(f->sp, make_msg(f->sp, "x", 1, idok), on_done, &ok);
    wait_finished(f->sp, base + 1);
    assert_int_equal(ok.err, 0);
    reopen(f);
    fd = scan(f->dir);
    assert_int_equal(fd->n, ROUNDS * N - total_failed + 1);
    assert_non_null(find(fd, idok));
    found_free(fd);
}

static off_t
file_size(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Commit n messages; return the path of the segment holding them. */
static void
commit_n(struct fixture *f, int n, char ids[][SPOOL_ID_LEN + 1], char *seg, size_t seglen)
{
    struct result res = {0};
    uint64_t base = finished(f->sp);

    for (int i = 0; i < n; i++) {
        char body[64];
        snprintf(body, sizeof(body), "torn test %d\r\n", i);
        spool_commit(f->sp, make_msg(f->sp, body, strlen(body), ids[i]), on_done, &res);
        wait_finished(f->sp, base + (uint64_t)i + 1);
        assert_int_equal(res.err, 0);
    }
    struct found *fd = scan(f->dir);
    struct rec *r = find(fd, ids[n - 1]);
    assert_non_null(r);
    snprintf(seg, seglen, "%s", r->seg);
    found_free(fd);
}

static void
test_torn_tail_garbage(void **state)
{
    struct fixture *f = *state;
    char ids[3][SPOOL_ID_LEN + 1], seg[512], newseg[512];

    commit_n(f, 3, ids, seg, sizeof(seg));
    spool_close(f->sp);
    f->sp = NULL;
    off_t good = file_size(seg);

    /* A crash mid-batch: a half-written header, then a plausible record with a bad crc. */
    int h = open(seg, O_WRONLY | O_APPEND);
    assert_true(h >= 0);
    assert_int_equal(write(h, "TRN1\x01\x01\0\0garbage", 15), 15);
    close(h);
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 3);
    found_free(fd);

    char err[256];
    f->sp = spool_open(f->dir, 4096, err, sizeof(err));
    assert_non_null(f->sp);
    assert_int_equal(file_size(seg), good); /* the tail is cut */

    /* New writes go to a new segment, and everything is found. */
    char more[1][SPOOL_ID_LEN + 1];
    commit_n(f, 1, more, newseg, sizeof(newseg));
    assert_string_not_equal(seg, newseg);
    assert_true(strcmp(newseg, seg) > 0);
    assert_true(strcmp(more[0], ids[2]) > 0); /* IDs keep increasing across restarts */
    fd = scan(f->dir);
    assert_int_equal(fd->n, 4);
    found_free(fd);
}

static void
test_torn_tail_truncated(void **state)
{
    struct fixture *f = *state;
    char ids[3][SPOOL_ID_LEN + 1], seg[512];
    char err[256];

    commit_n(f, 3, ids, seg, sizeof(seg));
    spool_close(f->sp);
    f->sp = NULL;

    /* Find where the last record starts, then cut the file in the middle of its body. */
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 3);
    found_free(fd);
    off_t full = file_size(seg);
    assert_int_equal(truncate(seg, full - 5), 0);

    fd = scan(f->dir);
    assert_int_equal(fd->n, 2);
    assert_non_null(find(fd, ids[0]));
    assert_non_null(find(fd, ids[1]));
    assert_null(find(fd, ids[2]));
    found_free(fd);

    f->sp = spool_open(f->dir, 4096, err, sizeof(err));
    assert_non_null(f->sp);
    off_t cut = file_size(seg);
    assert_true(cut < full - 5);
    assert_true(cut > 0);
    /* The cut is exactly after record 2: scanning finds 2 and no torn tail remains. */
    fd = scan(f->dir);
    assert_int_equal(fd->n, 2);
    found_free(fd);

    /* A flipped byte in a body makes that record (and the rest of its segment) invalid. */
    int h = open(seg, O_RDWR);
    char c;
    assert_true(h >= 0);
    assert_int_equal(pread(h, &c, 1, cut - 3), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(h, &c, 1, cut - 3), 1);
    close(h);
    fd = scan(f->dir);
    assert_int_equal(fd->n, 1);
    found_free(fd);
}

static void
test_stale_tmp_removed(void **state)
{
    struct fixture *f = *state;
    char path[256];

    snprintf(path, sizeof(path), "%s/tmp/0123456789ABCDEF", f->dir);
    int h = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(h >= 0);
    close(h);
    reopen(f);
    assert_int_equal(access(path, F_OK), -1);
}

static void
test_lock(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_null(spool_open(f->dir, 4096, err, sizeof(err)));
    assert_non_null(strstr(err, "in use"));
}

static void
test_bad_input(void **state)
{
    struct fixture *f = *state;
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg *m;

    assert_null(spool_msg_new(f->sp, "../../etc/passwd"));
    assert_null(spool_msg_new(f->sp, "short"));
    spool_new_id(f->sp, id);
    m = spool_msg_new(f->sp, id);
    assert_non_null(m);
    assert_int_equal(spool_msg_set_sender(m, "a\nR evil@x"), -1);
    assert_int_equal(spool_msg_add_rcpt(m, "b\r"), -1);
    assert_int_equal(spool_msg_add_param(m, "X=\ny"), -1);
    spool_msg_abort(m);
}

static int
cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
test_ids_unique(void **state)
{
    struct fixture *f = *state;
    enum { N = 100000 };
    char (*ids)[SPOOL_ID_LEN + 1] = malloc(N * sizeof(*ids));

    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        spool_new_id(f->sp, ids[i]);
        assert_int_equal(strlen(ids[i]), SPOOL_ID_LEN);
        assert_int_equal(strspn(ids[i], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), SPOOL_ID_LEN);
        if (i > 0)
            assert_true(strcmp(ids[i - 1], ids[i]) < 0); /* time-ordered */
    }
    qsort(ids, N, sizeof(*ids), cmp_id);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

static void
test_close_runs_callbacks(void **state)
{
    struct fixture *f = *state;
    struct result res = {0};
    char id[SPOOL_ID_LEN + 1];

    spool_commit(f->sp, make_msg(f->sp, "z", 1, id), on_done, &res);
    spool_close(f->sp); /* finishes the commit and reports it */
    f->sp = NULL;
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, 0);
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 1);
    found_free(fd);
    reopen(f);
}

/* ---- issue 3: state records, copies, segments ------------------------------------------- */

struct recres {
    int calls;
    int err;
    struct spool_record r;
    char id[SPOOL_ID_LEN + 1];
    char *data;
};

static void
on_done_rec(void *arg, int err, const struct spool_record *rec)
{
    struct recres *r = arg;

    r->calls++;
    r->err = err;
    if (rec != NULL) {
        r->r = *rec;
        snprintf(r->id, sizeof(r->id), "%s", rec->id);
        free(r->data);
        r->data = strdup(rec->data);
        assert_int_equal(strlen(rec->data), rec->datalen);
        r->r.id = r->id;
        r->r.data = r->data;
    }
}

struct reclist {
    int n;
    struct {
        unsigned type;
        char id[SPOOL_ID_LEN + 1];
        char *data;
        uint64_t seg, off, body_off, body_len;
    } r[MAXREC];
};

static int
collect_rec(void *arg, const struct spool_record *r)
{
    struct reclist *l = arg;

    assert_true(l->n < MAXREC);
    l->r[l->n].type = r->type;
    snprintf(l->r[l->n].id, sizeof(l->r[l->n].id), "%s", r->id);
    l->r[l->n].data = strdup(r->data);
    assert_int_equal(strlen(r->data), r->datalen);
    l->r[l->n].seg = r->seg;
    l->r[l->n].off = r->off;
    l->r[l->n].body_off = r->body_off;
    l->r[l->n].body_len = r->body_len;
    l->n++;
    return 0;
}

static struct reclist *
scan_recs(const char *dir)
{
    struct reclist *l = calloc(1, sizeof(*l));

    assert_non_null(l);
    assert_int_equal(spool_scan_records(dir, collect_rec, l), 0);
    return l;
}

static void
reclist_free(struct reclist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->r[i].data);
    free(l);
}

/* Run the loop until r has been called back. */
static void
wait_rec(struct spool *sp, struct recres *r)
{
    struct pollfd p = {.fd = spool_event_fd(sp), .events = POLLIN};

    for (int i = 0; i < 1000 && r->calls == 0; i++) {
        spool_reap(sp);
        if (r->calls == 0)
            poll(&p, 1, 10);
    }
    spool_reap(sp);
    assert_int_equal(r->calls, 1);
}

/* A state record after everything handed over so far: once it is back, they are done too. */
static void
barrier(struct spool *sp)
{
    struct recres r = {0};
    char id[SPOOL_ID_LEN + 1];

    spool_new_id(sp, id);
    spool_commit_state(sp, id, "barrier", 7, on_done_rec, &r);
    wait_rec(sp, &r);
    assert_int_equal(r.err, 0);
    free(r.data);
}

static void
read_at(struct spool *sp, uint64_t seg, uint64_t off, void *p, size_t n)
{
    int h = spool_segment_open(sp, seg);

    assert_true(h >= 0);
    assert_int_equal(pread(h, p, n, (off_t)off), (ssize_t)n);
    close(h);
}

static void
test_state_records(void **state)
{
    struct fixture *f = *state;
    const char body[] = "Subject: s\r\n\r\nstate\r\n";
    char id[SPOOL_ID_LEN + 1], got[sizeof(body)];
    struct recres m = {0}, s1 = {0}, s2 = {0};

    assert_string_equal(spool_dir(f->sp), f->dir);
    assert_int_equal(spool_active_segment(f->sp), 0); /* nothing written yet */
    spool_commit_rec(f->sp, make_msg(f->sp, body, sizeof(body) - 1, id), on_done_rec, &m);
    wait_rec(f->sp, &m);
    assert_int_equal(m.err, 0);
    assert_int_equal(m.r.type, SPOOL_REC_MESSAGE);
    assert_string_equal(m.id, id);
    assert_int_equal(m.r.off, 0);
    assert_int_equal(m.r.seg, spool_active_segment(f->sp));
    assert_string_equal(m.data, "S alice@example.org\nR bob@example.net\n"
                                "R carol@example.net\nP BODY=8BITMIME\nT 1700000000\n");
    assert_int_equal(m.r.body_off, 40 + m.r.datalen);
    assert_int_equal(m.r.body_len, sizeof(body) - 1);
    read_at(f->sp, m.r.seg, m.r.body_off, got, sizeof(body) - 1);
    assert_memory_equal(got, body, sizeof(body) - 1);

    /* Two state records, group committed in one batch with a second message. */
    struct result r2 = {0};
    char id2[SPOOL_ID_LEN + 1];
    spool_commit_state(f->sp, id, "r 0 D 1 0 250 ok\nh 0\n", 21, on_done_rec, &s1);
    spool_commit(f->sp, make_msg(f->sp, "x", 1, id2), on_done, &r2);
    spool_commit_state(f->sp, id, "r 0 D 1 0 250 ok\nh 1\n", 21, on_done_rec, &s2);
    spool_commit_state(f->sp, id, "fire and forget", 15, NULL, NULL);
    wait_rec(f->sp, &s2);
    assert_int_equal(s1.calls, 1);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(s1.err, 0);
    assert_int_equal(s1.r.type, SPOOL_REC_STATE);
    assert_string_equal(s1.data, "r 0 D 1 0 250 ok\nh 0\n");
    assert_int_equal(s1.r.body_len, 0);
    assert_true(s1.r.off > m.r.off);
    assert_true(s2.r.off > s1.r.off); /* in the order handed over */
    barrier(f->sp);

    /* Bad IDs and oversized texts are refused through the callback. */
    struct recres bad = {0};
    spool_commit_state(f->sp, "../etc", "x", 1, on_done_rec, &bad);
    wait_rec(f->sp, &bad);
    assert_int_equal(bad.err, EINVAL);

    /* The scan sees every record in order; the old reader only the messages. */
    reopen(f);
    struct reclist *l = scan_recs(f->dir);
    assert_int_equal(l->n, 6);
    assert_int_equal(l->r[0].type, SPOOL_REC_MESSAGE);
    assert_string_equal(l->r[0].id, id);
    assert_int_equal(l->r[0].body_off, m.r.body_off);
    assert_int_equal(l->r[1].type, SPOOL_REC_STATE);
    assert_string_equal(l->r[1].data, "r 0 D 1 0 250 ok\nh 0\n");
    assert_int_equal(l->r[1].off, s1.r.off);
    assert_int_equal(l->r[2].type, SPOOL_REC_MESSAGE);
    assert_string_equal(l->r[2].id, id2);
    assert_string_equal(l->r[3].data, "r 0 D 1 0 250 ok\nh 1\n");
    assert_string_equal(l->r[4].data, "fire and forget");
    assert_string_equal(l->r[5].data, "barrier");
    reclist_free(l);
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 2);
    found_free(fd);
    free(m.data);
    free(s1.data);
    free(s2.data);
}

static void
test_state_torn(void **state)
{
    struct fixture *f = *state;
    struct recres m = {0}, s = {0};
    char id[SPOOL_ID_LEN + 1], path[256];

    spool_commit_rec(f->sp, make_msg(f->sp, "b", 1, id), on_done_rec, &m);
    spool_commit_state(f->sp, id, "r 0 q 1 99 451 later\nh 0\n", 25, on_done_rec, &s);
    wait_rec(f->sp, &s);
    uint64_t seg = s.r.seg, cut = s.r.off + 30;
    spool_close(f->sp);
    f->sp = NULL;
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)seg);
    assert_int_equal(truncate(path, (off_t)cut), 0); /* a state record cut half way */
    struct reclist *l = scan_recs(f->dir);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->r[0].type, SPOOL_REC_MESSAGE);
    reclist_free(l);
    reopen(f);
    assert_int_equal(file_size(path), s.r.off); /* cut back to the end of the message */
    free(m.data);
    free(s.data);
}

static void
test_copy_forward(void **state)
{
    struct fixture *f = *state;
    enum { LEN = 300000 };
    char *body = malloc(LEN), *got = malloc(LEN), id[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1];
    struct recres a = {0}, b = {0}, c = {0}, bad = {0};

    assert_non_null(body);
    assert_non_null(got);
    for (int i = 0; i < LEN; i++)
        body[i] = (char)(i * 13 + (i >> 11));
    spool_test_set_segment_max(f->sp, 1); /* every batch in a new segment */
    spool_commit_rec(f->sp, make_msg(f->sp, body, LEN, id), on_done_rec, &a); /* spilled */
    wait_rec(f->sp, &a);
    spool_commit_rec(f->sp, make_msg(f->sp, "second", 6, id2), on_done_rec, &b);
    wait_rec(f->sp, &b);
    assert_int_equal(a.err, 0);
    assert_true(b.r.seg > a.r.seg);

    spool_copy_forward(f->sp, a.r.seg, a.r.off, "r 0 q 2 5 451 x\nh 0\n", 20, on_done_rec, &c);
    wait_rec(f->sp, &c);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.r.type, SPOOL_REC_MESSAGE);
    assert_string_equal(c.id, id);
    assert_true(c.r.seg > b.r.seg);
    assert_int_equal(c.r.seg, spool_active_segment(f->sp));
    assert_string_equal(c.data, a.data);
    assert_int_equal(c.r.body_len, LEN);
    read_at(f->sp, c.r.seg, c.r.body_off, got, LEN);
    assert_memory_equal(got, body, LEN);
    unsigned char hdr[40];
    read_at(f->sp, c.r.seg, c.r.off, hdr, sizeof(hdr));
    assert_int_equal(hdr[6] & 1, 1); /* flagged as a copy */
    read_at(f->sp, a.r.seg, a.r.off, hdr, sizeof(hdr));
    assert_int_equal(hdr[6] & 1, 0);

    /* The scan: the copy and its state record follow, valid (crc recomputed). */
    struct reclist *l = scan_recs(f->dir);
    assert_int_equal(l->n, 4);
    assert_string_equal(l->r[2].id, id);
    assert_int_equal(l->r[2].seg, c.r.seg);
    assert_int_equal(l->r[3].type, SPOOL_REC_STATE);
    assert_string_equal(l->r[3].id, id);
    assert_string_equal(l->r[3].data, "r 0 q 2 5 451 x\nh 0\n");
    reclist_free(l);

    /* A source record that rotted is not copied: EIO, and nothing is appended. */
    char path[256];
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)b.r.seg);
    int h = open(path, O_RDWR);
    assert_true(h >= 0);
    assert_int_equal(pwrite(h, "X", 1, (off_t)b.r.body_off), 1);
    close(h);
    spool_copy_forward(f->sp, b.r.seg, b.r.off, "h 0\n", 4, on_done_rec, &bad);
    wait_rec(f->sp, &bad);
    assert_int_equal(bad.err, EIO);
    struct recres none = {0};
    spool_copy_forward(f->sp, 999, 0, "h 0\n", 4, on_done_rec, &none);
    wait_rec(f->sp, &none);
    assert_int_equal(none.err, ENOENT);
    l = scan_recs(f->dir);
    assert_int_equal(l->n, 3); /* the rotten record ends its segment; no copy was added */
    reclist_free(l);

    free(a.data);
    free(b.data);
    free(c.data);
    free(body);
    free(got);
}

static void
test_segments_remove(void **state)
{
    struct fixture *f = *state;
    struct recres r[4] = {{0}};
    char id[SPOOL_ID_LEN + 1], path[256];
    uint64_t *segs;

    spool_test_set_segment_max(f->sp, 1);
    for (int i = 0; i < 4; i++) {
        spool_commit_rec(f->sp, make_msg(f->sp, "seg", 3, id), on_done_rec, &r[i]);
        wait_rec(f->sp, &r[i]);
        assert_int_equal(r[i].err, 0);
    }
    int n = spool_segments(f->sp, &segs);
    assert_int_equal(n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(segs[i], r[i].r.seg);
    free(segs);
    assert_int_equal(spool_active_segment(f->sp), r[3].r.seg);

    /* The active segment is refused, an unknown one too. */
    assert_int_equal(spool_segment_remove(f->sp, r[3].r.seg), -1);
    assert_int_equal(errno, EBUSY);
    assert_int_equal(spool_segment_remove(f->sp, 12345), -1);
    assert_int_equal(errno, ENOENT);

    /* Removal: gone from the list at once, from the disk once the committer did it. */
    assert_int_equal(spool_segment_remove(f->sp, r[0].r.seg), 0);
    assert_int_equal(spool_segment_remove(f->sp, r[0].r.seg), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(spool_segments(f->sp, &segs), 3);
    assert_int_equal(segs[0], r[1].r.seg);
    free(segs);
    barrier(f->sp);
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)r[0].r.seg);
    assert_int_equal(access(path, F_OK), -1);
    int h = spool_segment_open(f->sp, r[0].r.seg);
    assert_int_equal(h, -1);

    /* Removed and a state record in the same batch; after a restart the list agrees. */
    assert_int_equal(spool_segment_remove(f->sp, r[1].r.seg), 0);
    barrier(f->sp);
    reopen(f);
    n = spool_segments(f->sp, &segs);
    assert_true(n >= 2);
    assert_int_equal(segs[0], r[2].r.seg);
    free(segs);
    assert_int_equal(spool_active_segment(f->sp), 0); /* a new process opens a new one */
    struct found *fd = scan(f->dir);
    assert_int_equal(fd->n, 2);
    found_free(fd);
    for (int i = 0; i < 4; i++)
        free(r[i].data);
}

/* A segment holding a commit whose callback has not run yet cannot be removed. */
static void
test_remove_unreported(void **state)
{
    struct fixture *f = *state;
    struct recres a = {0}, b = {0};
    char id[SPOOL_ID_LEN + 1];

    spool_test_set_segment_max(f->sp, 1);
    spool_commit_rec(f->sp, make_msg(f->sp, "a", 1, id), on_done_rec, &a);
    while (finished(f->sp) < 1)
        usleep(1000);
    spool_commit_rec(f->sp, make_msg(f->sp, "b", 1, id), on_done_rec, &b);
    while (finished(f->sp) < 2)
        usleep(1000);
    /* Neither callback has run: a's segment is no longer active, but still protected. */
    uint64_t *segs;
    assert_int_equal(spool_segments(f->sp, &segs), 2);
    uint64_t first = segs[0];
    free(segs);
    assert_int_not_equal(first, spool_active_segment(f->sp));
    assert_int_equal(spool_segment_remove(f->sp, first), -1);
    assert_int_equal(errno, EBUSY);
    spool_reap(f->sp);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.r.seg, first);
    assert_int_equal(spool_segment_remove(f->sp, first), 0);
    barrier(f->sp);
    free(a.data);
    free(b.data);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_then_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tmp_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_runs_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_torn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segments_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_unreported, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
