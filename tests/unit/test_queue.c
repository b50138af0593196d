/*
 * test_queue.c - unit tests of the queue (queue/queue.c) against a real spool
 * in a directory under /tmp: the whole life cycle (commit, index, state
 * updates, close, rebuild), reclamation of segments, compaction, a torn tail
 * after a crash, the order of due messages, and the operator's actions.
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
#include <unistd.h>

#include <cmocka.h>

#include "queue/queue.h"
#include "queue/spool.h"
#include "util/buf.h"
#include "util/log.h"

struct fixture {
    char dir[64];
    struct spool *sp;
    struct queue *q;
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

static void
open_all(struct fixture *f)
{
    char err[256];

    f->sp = spool_open(f->dir, 4096, err, sizeof(err));
    if (f->sp == NULL)
        fail_msg("spool_open: %s", err);
    f->q = queue_open(f->sp, err, sizeof(err));
    if (f->q == NULL)
        fail_msg("queue_open: %s", err);
}

/* A clean shutdown: the spool finishes every record handed over before it closes. */
static void
close_all(struct fixture *f)
{
    queue_close(f->q);
    spool_close(f->sp);
    f->q = NULL;
    f->sp = NULL;
}

static void
reopen_all(struct fixture *f)
{
    close_all(f);
    open_all(f);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_queue.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    open_all(f);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    if (f->sp != NULL)
        close_all(f);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

struct added {
    struct queue *q;
    int calls;
    int err;
    char id[SPOOL_ID_LEN + 1];
};

/* What the daemon's commit path does: index the message once it is durable. */
static void
on_committed(void *arg, int err, const struct spool_record *rec)
{
    struct added *a = arg;

    a->calls++;
    a->err = err;
    if (err == 0) {
        struct queue_msg *m = queue_add(a->q, rec);
        assert_non_null(m);
        assert_string_equal(m->id, rec->id);
    }
}

/* Run the loop until *calls reaches want. */
static void
pump_until(struct spool *sp, const int *calls, int want)
{
    struct pollfd p = {.fd = spool_event_fd(sp), .events = POLLIN};

    for (int i = 0; i < 3000 && *calls < want; i++) {
        spool_reap(sp);
        if (*calls < want)
            poll(&p, 1, 10);
    }
    spool_reap(sp);
    assert_true(*calls >= want);
}

static struct spool_msg *
make_msg(struct fixture *f, unsigned nrcpts, const char *body, char id[SPOOL_ID_LEN + 1])
{
    struct spool_msg *m;
    char rcpt[64];

    spool_new_id(f->sp, id);
    m = spool_msg_new(f->sp, id);
    assert_non_null(m);
    assert_int_equal(spool_msg_set_sender(m, "alice@example.org"), 0);
    for (unsigned i = 0; i < nrcpts; i++) {
        snprintf(rcpt, sizeof(rcpt), "rcpt%u@example.net", i);
        assert_int_equal(spool_msg_add_rcpt(m, rcpt), 0);
    }
    assert_int_equal(spool_msg_add_param(m, "BODY=8BITMIME"), 0);
    spool_msg_set_arrival(m, 1700000000);
    assert_int_equal(spool_msg_write(m, body, strlen(body)), 0);
    return m;
}

/* Commit n messages at once (group committed), each indexed when durable. */
static void
commit_n(struct fixture *f, int n, unsigned nrcpts, char (*ids)[SPOOL_ID_LEN + 1])
{
    struct added *a = calloc((size_t)n, sizeof(*a));
    int calls = 0;

    assert_non_null(a);
    for (int i = 0; i < n; i++) {
        char body[64];
        snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
        a[i].q = f->q;
        spool_commit_rec(f->sp, make_msg(f, nrcpts, body, ids[i]), on_committed, &a[i]);
    }
    while (calls < n) {
        pump_until(f->sp, &a[n - 1].calls, 1);
        calls = 0;
        for (int i = 0; i < n; i++)
            calls += a[i].calls;
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(a[i].err, 0);
    free(a);
}

static void
commit_one(struct fixture *f, unsigned nrcpts, char id[SPOOL_ID_LEN + 1])
{
    char ids[1][SPOOL_ID_LEN + 1];

    commit_n(f, 1, nrcpts, ids);
    memcpy(id, ids[0], sizeof(ids[0]));
}

static void
on_barrier(void *arg, int err, const struct spool_record *rec)
{
    (void)rec;
    assert_int_equal(err, 0);
    (*(int *)arg)++;
}

/*
 * Everything handed to the spool so far is durable (and every segment removal
 * asked for is done) once this returns: records are durable in the order they
 * were handed over.  The state record is for an ID no message has: an orphan.
 */
static void
barrier(struct fixture *f)
{
    int calls = 0;
    char id[SPOOL_ID_LEN + 1];

    spool_new_id(f->sp, id);
    spool_commit_state(f->sp, id, "h 0\n", 4, on_barrier, &calls);
    pump_until(f->sp, &calls, 1);
}

static int
snap_cb(void *arg, const struct queue_msg *m)
{
    struct buf *b = arg;

    buf_printf(b, "%s <%s> held=%d arr=%lld seg?%d len=%llu\n", m->id, m->sender, m->held,
        (long long)m->arrival, m->seg > 0, (unsigned long long)m->body_len);
    for (unsigned i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        buf_printf(b, "  %s %s %u %lld %s\n", r->addr, queue_rcpt_state_name(r->state),
            r->attempts, (long long)r->next_attempt, r->last_reply ? r->last_reply : "-");
    }
    for (unsigned i = 0; i < m->nparams; i++)
        buf_printf(b, "  P %s\n", m->params[i]);
    return 0;
}

/* The whole queue as text, in arrival order (the caller frees it). */
static char *
snapshot(struct queue *q)
{
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, "");
    queue_foreach(q, snap_cb, &b);
    buf_append(&b, "", 1);
    return b.data ? b.data : strdup("");
}

static int
nsegs(struct spool *sp, uint64_t *first)
{
    uint64_t *segs;
    int n = spool_segments(sp, &segs);

    assert_true(n >= 0);
    if (first != NULL)
        *first = n > 0 ? segs[0] : 0;
    free(segs);
    return n;
}

static int
count_files(const char *dir)
{
    char path[256];
    int n = 0;

    snprintf(path, sizeof(path), "%s/seg", dir);
    DIR *d = opendir(path);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Read a message's body from where the queue says it lies. */
static char *
read_body(struct fixture *f, const struct queue_msg *m)
{
    char *b = calloc(1, m->body_len + 1);
    int h = spool_segment_open(f->sp, m->seg);

    assert_non_null(b);
    assert_true(h >= 0);
    assert_int_equal(pread(h, b, m->body_len, (off_t)m->body_off), (ssize_t)m->body_len);
    close(h);
    return b;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void
test_parse_envelope(void **state)
{
    struct queue_msg m;
    const char *good = "S a@b\nR x@y\nR z@w\nP BODY=8BITMIME\nP client=[127.0.0.1]\nT 1700000001\n";

    (void)state;
    memset(&m, 0, sizeof(m));
    assert_int_equal(queue_parse_envelope(&m, good, strlen(good)), 0);
    assert_string_equal(m.sender, "a@b");
    assert_int_equal(m.nrcpts, 2);
    assert_string_equal(m.rcpts[0].addr, "x@y");
    assert_string_equal(m.rcpts[1].addr, "z@w");
    assert_int_equal(m.rcpts[1].state, QR_PENDING);
    assert_int_equal(m.rcpts[1].next_attempt, 0);
    assert_null(m.rcpts[1].last_reply);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[1], "client=[127.0.0.1]");
    assert_int_equal(m.arrival, 1700000001);
    free(m.rcpts);

    /* The null sender; no final LF; a later kind of line is skipped. */
    const char *nul = "S \nR x@y\nX future\nT 5";
    memset(&m, 0, sizeof(m));
    assert_int_equal(queue_parse_envelope(&m, nul, strlen(nul)), 0);
    assert_string_equal(m.sender, "");
    assert_int_equal(m.nrcpts, 1);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(m.arrival, 5);
    free(m.rcpts);

    const char *bad[] = {"S a\nT 1\n", "R x\nT 1\n", "S a\nS b\nR x\n", "S a\n\nR x\n",
        "S a\nR x\nT 12x\n", "S a\nR \n", "Sa\nR x\n", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&m, 0, sizeof(m));
        assert_int_equal(queue_parse_envelope(&m, bad[i], strlen(bad[i])), -1);
    }
    assert_string_equal(queue_rcpt_state_name(QR_DEFERRED), "deferred");
}

static void
test_lifecycle(void **state)
{
    struct fixture *f = *state;
    enum { N = 60 };
    static char ids[N][SPOOL_ID_LEN + 1];

    commit_n(f, N, 3, ids);
    assert_int_equal(queue_count(f->q), N);
    for (int i = 0; i < N; i++) {
        struct queue_msg *m = queue_find(f->q, ids[i]);
        assert_non_null(m);
        assert_int_equal(m->nrcpts, 3);
        assert_string_equal(m->sender, "alice@example.org");
        assert_string_equal(m->rcpts[2].addr, "rcpt2@example.net");
        assert_int_equal(m->arrival, 1700000000);
        char want[64], *got = read_body(f, m);
        snprintf(want, sizeof(want), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
        assert_string_equal(got, want);
        free(got);
        switch (i % 4) {
        case 0: /* all done: leaves the queue */
            queue_set_busy(f->q, m, true);
            queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 2.0.0 ok", 0);
            queue_rcpt_set(&m->rcpts[1], QR_FAILED, "550 5.1.1 no such user", 0);
            queue_rcpt_set(&m->rcpts[2], QR_DELIVERED, "250 ok", 0);
            for (int k = 0; k < 3; k++)
                m->rcpts[k].attempts = 1;
            queue_update(f->q, m);
            assert_null(queue_find(f->q, ids[i]));
            break;
        case 1: /* a mix: stays */
            queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 ok", 0);
            queue_rcpt_set(&m->rcpts[1], QR_DEFERRED, "452 4.2.2 Mailbox full", 1800000000 + i);
            m->rcpts[1].attempts = 3;
            queue_rcpt_set(&m->rcpts[2], QR_FAILED, "554 5.7.1 rejected\r\nsmuggled", 0);
            m->rcpts[2].attempts = 1;
            queue_update(f->q, m);
            assert_string_equal(m->rcpts[2].last_reply, "554 5.7.1 rejected  smuggled");
            break;
        case 2: /* held */
            assert_int_equal(queue_hold(f->q, ids[i]), 0);
            break;
        default: /* untouched */
            break;
        }
    }
    assert_int_equal(queue_count(f->q), N - N / 4);
    char *before = snapshot(f->q);

    reopen_all(f);
    char *after = snapshot(f->q);
    assert_string_equal(before, after);
    assert_int_equal(queue_count(f->q), N - N / 4);
    for (int i = 0; i < N; i += 4)
        assert_null(queue_find(f->q, ids[i]));
    struct queue_msg *m = queue_find(f->q, ids[1]);
    assert_non_null(m);
    assert_int_equal(m->rcpts[1].state, QR_DEFERRED);
    assert_int_equal(m->rcpts[1].attempts, 3);
    assert_int_equal(m->rcpts[1].next_attempt, 1800000001);
    assert_string_equal(m->rcpts[1].last_reply, "452 4.2.2 Mailbox full");
    assert_true(queue_find(f->q, ids[2])->held);
    char *got = read_body(f, queue_find(f->q, ids[5]));
    assert_string_equal(got, "Subject: 5\r\n\r\nbody 5\r\n");
    free(got);

    /* Finish the rest; after a restart the queue is empty and so is the disk, but for one. */
    for (int i = 0; i < N; i++) {
        if ((m = queue_find(f->q, ids[i])) == NULL)
            continue;
        for (unsigned k = 0; k < m->nrcpts; k++)
            if (m->rcpts[k].state != QR_FAILED)
                queue_rcpt_set(&m->rcpts[k], QR_DELIVERED, "250 ok", 0);
        queue_update(f->q, m);
    }
    assert_int_equal(queue_count(f->q), 0);
    reopen_all(f);
    assert_int_equal(queue_count(f->q), 0);
    assert_true(nsegs(f->sp, NULL) <= 1); /* at most the segment of the last records */
    reopen_all(f);
    assert_int_equal(nsegs(f->sp, NULL), 0);
    assert_int_equal(count_files(f->dir), 0);
    free(before);
    free(after);
}

static void
test_reclaim(void **state)
{
    struct fixture *f = *state;
    enum { N = 8 };
    char ids[N][SPOOL_ID_LEN + 1];
    uint64_t seg[N], first;

    spool_test_set_segment_max(f->sp, 1); /* every batch in a new segment */
    for (int i = 0; i < N; i++) {
        commit_one(f, 2, ids[i]);
        seg[i] = queue_find(f->q, ids[i])->seg;
        if (i > 0)
            assert_true(seg[i] > seg[i - 1]);
    }
    assert_int_equal(nsegs(f->sp, &first), N);

    /* Message 2 finishes: its segment is not the oldest, so it stays. */
    struct queue_msg *m = queue_find(f->q, ids[2]);
    queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 ok", 0);
    queue_rcpt_set(&m->rcpts[1], QR_DELIVERED, "250 ok", 0);
    queue_update(f->q, m);
    barrier(f);
    queue_maintain(f->q);
    barrier(f);
    nsegs(f->sp, &first);
    assert_int_equal(first, seg[0]);
    char path[256];
    for (int i = 0; i < N; i++) {
        /* Even 2's: removing it while 0 is pinned could drop a newer state record of 0. */
        snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)seg[i]);
        assert_int_equal(access(path, F_OK), 0);
    }

    /* Messages 0 and 1 finish (0 deleted by the operator): segments 0..2 go, oldest first. */
    assert_int_equal(queue_delete(f->q, ids[0]), 0);
    m = queue_find(f->q, ids[1]);
    queue_rcpt_set(&m->rcpts[0], QR_FAILED, "550 no", 0);
    queue_rcpt_set(&m->rcpts[1], QR_DELIVERED, "250 ok", 0);
    queue_update(f->q, m);
    barrier(f);
    queue_maintain(f->q);
    nsegs(f->sp, &first);
    assert_int_equal(first, seg[3]);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)seg[i]);
        assert_int_equal(access(path, F_OK), -1);
    }

    /* After a restart: the same live messages, and segments from the oldest live one on. */
    char *before = snapshot(f->q);
    reopen_all(f);
    char *after = snapshot(f->q);
    assert_string_equal(before, after);
    assert_int_equal(queue_count(f->q), N - 3);
    nsegs(f->sp, &first);
    assert_int_equal(first, seg[3]);
    free(before);
    free(after);
}

static void
test_compaction(void **state)
{
    struct fixture *f = *state;
    char old[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1];

    spool_test_set_segment_max(f->sp, 1);
    commit_one(f, 2, old);
    struct queue_msg *m = queue_find(f->q, old);
    uint64_t oldseg = m->seg;
    char *body = read_body(f, m);
    queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 ok", 0);
    queue_rcpt_set(&m->rcpts[1], QR_DEFERRED, "421 4.3.2 try later", 1900000000);
    m->rcpts[1].attempts = 7;
    queue_update(f->q, m);
    /* A stream of messages that finish at once: each batch makes a segment. */
    for (int i = 0; i < 8; i++) {
        commit_one(f, 1, id);
        m = queue_find(f->q, id);
        queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 ok", 0);
        queue_update(f->q, m);
    }
    barrier(f);
    uint64_t first;
    int before = nsegs(f->sp, &first);
    assert_int_equal(first, oldseg); /* pinned by the one long-lived message */
    assert_true(before >= 8);

    queue_maintain(f->q);
    m = queue_find(f->q, old);
    for (int i = 0; i < 300 && m->seg == oldseg; i++) {
        struct pollfd p = {.fd = spool_event_fd(f->sp), .events = POLLIN};
        poll(&p, 1, 10);
        spool_reap(f->sp);
    }
    assert_true(m->seg > oldseg);
    barrier(f);
    queue_maintain(f->q);
    int after = nsegs(f->sp, &first);
    assert_true(first > oldseg);
    assert_true(after < before);
    assert_true(first <= m->seg);
    char path[256];
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)oldseg);
    assert_int_equal(access(path, F_OK), -1);
    char *moved = read_body(f, m);
    assert_string_equal(moved, body);
    free(moved);

    /* Rebuilt from the copy: same state, same body. */
    char *snap1 = snapshot(f->q);
    reopen_all(f);
    char *snap2 = snapshot(f->q);
    assert_string_equal(snap1, snap2);
    m = queue_find(f->q, old);
    assert_non_null(m);
    assert_int_equal(m->rcpts[1].attempts, 7);
    assert_int_equal(m->rcpts[0].state, QR_DELIVERED);
    moved = read_body(f, m);
    assert_string_equal(moved, body);
    free(moved);

    /* A state change after the move is still the newest after another restart. */
    queue_rcpt_set(&m->rcpts[1], QR_DEFERRED, "451 again", 1900000100);
    m->rcpts[1].attempts = 8;
    queue_update(f->q, m);
    reopen_all(f);
    m = queue_find(f->q, old);
    assert_int_equal(m->rcpts[1].attempts, 8);
    assert_string_equal(m->rcpts[1].last_reply, "451 again");
    free(snap1);
    free(snap2);
    free(body);
}

/* A delivery attempt reads from the segment it was given: compaction may move the message,
   but that segment stays until the attempt is over. */
static void
test_busy_pins_segment(void **state)
{
    struct fixture *f = *state;
    char old[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1], path[256];

    spool_test_set_segment_max(f->sp, 1);
    commit_one(f, 1, old);
    struct queue_msg *m = queue_find(f->q, old);
    uint64_t oldseg = m->seg;
    queue_rcpt_set(&m->rcpts[0], QR_DEFERRED, "451 later", 1900000000);
    queue_update(f->q, m);
    for (int i = 0; i < 6; i++) {
        commit_one(f, 1, id);
        struct queue_msg *x = queue_find(f->q, id);
        queue_rcpt_set(&x->rcpts[0], QR_DELIVERED, "250 ok", 0);
        queue_update(f->q, x);
    }
    barrier(f);
    queue_maintain(f->q); /* the copy is handed over... */
    queue_set_busy(f->q, m, true); /* ...and an attempt starts before it is durable */
    int h = spool_segment_open(f->sp, m->seg);
    assert_true(h >= 0);
    close(h);
    for (int i = 0; i < 300 && m->seg == oldseg; i++) {
        struct pollfd p = {.fd = spool_event_fd(f->sp), .events = POLLIN};
        poll(&p, 1, 10);
        spool_reap(f->sp);
    }
    assert_true(m->seg > oldseg);
    barrier(f);
    queue_maintain(f->q);
    barrier(f);
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)oldseg);
    assert_int_equal(access(path, F_OK), 0); /* still read by the attempt */
    queue_set_busy(f->q, m, false);
    barrier(f);
    assert_int_equal(access(path, F_OK), -1);
    uint64_t first;
    nsegs(f->sp, &first);
    assert_true(first > oldseg);
}

/* The queue must not compact a head segment that is mostly live (no gain, endless churn). */
static void
test_no_compaction_when_live(void **state)
{
    struct fixture *f = *state;
    enum { N = 6 };
    char ids[N][SPOOL_ID_LEN + 1];
    uint64_t first, seg0;

    spool_test_set_segment_max(f->sp, 1);
    for (int i = 0; i < N; i++)
        commit_one(f, 1, ids[i]); /* all live, one a segment */
    seg0 = queue_find(f->q, ids[0])->seg;
    queue_maintain(f->q);
    barrier(f);
    queue_maintain(f->q);
    nsegs(f->sp, &first);
    assert_int_equal(first, seg0);
    assert_int_equal(queue_find(f->q, ids[0])->seg, seg0);
}

static void
test_torn_tail(void **state)
{
    struct fixture *f = *state;
    char a[SPOOL_ID_LEN + 1], b[SPOOL_ID_LEN + 1], path[256];

    commit_one(f, 2, a);
    struct queue_msg *m = queue_find(f->q, a);
    queue_rcpt_set(&m->rcpts[0], QR_DEFERRED, "450 first", 1800000000);
    m->rcpts[0].attempts = 1;
    queue_update(f->q, m);
    barrier(f);
    queue_rcpt_set(&m->rcpts[0], QR_DELIVERED, "250 second", 0);
    m->rcpts[0].attempts = 2;
    queue_update(f->q, m);
    commit_one(f, 1, b);
    uint64_t seg = queue_find(f->q, b)->seg;
    uint64_t boff = queue_find(f->q, b)->off;
    close_all(f);

    /* The crash: the last batch (a's second state record and b) was being written. */
    snprintf(path, sizeof(path), "%s/seg/%016llx.seg", f->dir, (unsigned long long)seg);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, (off_t)boff + 20), 0);
    open_all(f);
    assert_null(queue_find(f->q, b)); /* never acknowledged in this story */
    m = queue_find(f->q, a);
    assert_non_null(m);
    /* a's second state record came before b: it survived; cut into it instead: */
    assert_int_equal(m->rcpts[0].state, QR_DELIVERED);
    assert_int_equal(m->rcpts[0].attempts, 2);
    close_all(f);

    /* Now cut inside a's second state record: a is back to the first state, not lost. */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 5), 0);
    open_all(f);
    m = queue_find(f->q, a);
    assert_non_null(m);
    assert_int_equal(m->rcpts[0].state, QR_DEFERRED);
    assert_int_equal(m->rcpts[0].attempts, 1);
    assert_string_equal(m->rcpts[0].last_reply, "450 first");
    assert_int_equal(m->rcpts[1].state, QR_PENDING);
    assert_int_equal(queue_count(f->q), 1);
}

static void
test_next_due(void **state)
{
    struct fixture *f = *state;
    enum { N = 10000 };
    char (*ids)[SPOOL_ID_LEN + 1] = malloc(N * sizeof(*ids));
    struct queue_msg **busy = malloc(N * sizeof(*busy));
    time_t min = 0;
    int nheld = 0, nbusy = 0;

    assert_non_null(ids);
    srand(42);
    commit_n(f, N, 2, ids);
    assert_int_equal(queue_count(f->q), N);
    assert_int_equal(queue_next_wakeup(f->q), 1); /* all pending: due now */
    for (int i = 0; i < N; i++) {
        struct queue_msg *m = queue_find(f->q, ids[i]);
        time_t t1 = 1000000 + rand() % 100000, t2 = 1000000 + rand() % 100000;
        queue_rcpt_set(&m->rcpts[0], QR_DEFERRED, "451 later", t1);
        if (i % 3 == 0)
            queue_rcpt_set(&m->rcpts[1], QR_DELIVERED, "250 ok", 0); /* due = t1 */
        else
            queue_rcpt_set(&m->rcpts[1], QR_DEFERRED, "451 later", t2);
        queue_update(f->q, m);
        if (i % 10 == 7) {
            assert_int_equal(queue_hold(f->q, ids[i]), 0);
            nheld++;
            continue;
        }
        time_t due = t1;
        if (i % 3 != 0 && t2 < due)
            due = t2;
        if (min == 0 || due < min)
            min = due;
    }
    assert_int_equal(queue_next_wakeup(f->q), min);
    assert_null(queue_next_due(f->q, min - 1));
    assert_non_null(queue_next_due(f->q, min));

    /* Take them all in order: never a held one, never one twice, due times never go back. */
    time_t last = 0;
    struct queue_msg *m;
    while ((m = queue_next_due(f->q, 2000000)) != NULL) {
        assert_false(m->held);
        assert_false(m->busy);
        time_t due = 0;
        for (unsigned k = 0; k < m->nrcpts; k++)
            if (m->rcpts[k].state == QR_DEFERRED && (due == 0 || m->rcpts[k].next_attempt < due))
                due = m->rcpts[k].next_attempt;
        assert_true(due >= last);
        last = due;
        queue_set_busy(f->q, m, true);
        busy[nbusy++] = m;
    }
    assert_int_equal(nbusy, N - nheld);
    assert_int_equal(queue_next_wakeup(f->q), 0);

    /* Released from busy with a later time: back in order. */
    for (int i = 0; i < nbusy; i++) {
        queue_rcpt_set(&busy[i]->rcpts[0], QR_DEFERRED, "451 later", 3000000 + i);
        if (busy[i]->rcpts[1].state == QR_DEFERRED)
            queue_rcpt_set(&busy[i]->rcpts[1], QR_DEFERRED, "451 later", 3000000 + i);
        queue_update(f->q, busy[i]);
        queue_set_busy(f->q, busy[i], false);
    }
    assert_int_equal(queue_next_wakeup(f->q), 3000000);
    assert_ptr_equal(queue_next_due(f->q, 3000000), busy[0]);

    /* Flush makes every deferred recipient due now. */
    assert_int_equal(queue_flush(f->q, NULL), 0);
    assert_int_equal(queue_next_wakeup(f->q), 1);
    free(ids);
    free(busy);
}

struct order {
    char last[SPOOL_ID_LEN + 1];
    int n;
    int stop;
};

static int
order_cb(void *arg, const struct queue_msg *m)
{
    struct order *o = arg;

    assert_true(strcmp(o->last, m->id) < 0);
    snprintf(o->last, sizeof(o->last), "%s", m->id);
    return ++o->n == o->stop;
}

static void
test_operator(void **state)
{
    struct fixture *f = *state;
    enum { N = 5 };
    char ids[N][SPOOL_ID_LEN + 1];

    commit_n(f, N, 2, ids);
    assert_int_equal(queue_hold(f->q, "NOSUCHMESSAGE000"), -1);
    assert_int_equal(queue_release(f->q, "NOSUCHMESSAGE000"), -1);
    assert_int_equal(queue_delete(f->q, "NOSUCHMESSAGE000"), -1);
    assert_int_equal(queue_flush(f->q, "NOSUCHMESSAGE000"), -1);

    /* 0 held then released, 1 held, 2 deleted, 3 deferred then flushed, 4 deleted while busy. */
    assert_int_equal(queue_hold(f->q, ids[0]), 0);
    assert_int_equal(queue_hold(f->q, ids[1]), 0);
    assert_int_equal(queue_release(f->q, ids[0]), 0);
    assert_int_equal(queue_delete(f->q, ids[2]), 0);
    assert_null(queue_find(f->q, ids[2]));
    struct queue_msg *m = queue_find(f->q, ids[3]);
    queue_rcpt_set(&m->rcpts[0], QR_DEFERRED, "451 x", 1900000000);
    queue_rcpt_set(&m->rcpts[1], QR_DEFERRED, "451 y", 1900000000);
    queue_update(f->q, m);
    assert_int_equal(queue_flush(f->q, ids[3]), 0);
    assert_int_equal(m->rcpts[0].next_attempt, 0);
    struct queue_msg *b = queue_find(f->q, ids[4]);
    queue_set_busy(f->q, b, true);
    assert_int_equal(queue_delete(f->q, ids[4]), 0);
    assert_null(queue_find(f->q, ids[4]));
    assert_int_equal(queue_count(f->q), 3);
    /* The attempt in flight ends: m is still valid until this update frees it. */
    queue_rcpt_set(&b->rcpts[0], QR_DELIVERED, "250 ok", 0);
    queue_update(f->q, b);

    struct order o = {.stop = -1};
    queue_foreach(f->q, order_cb, &o);
    assert_int_equal(o.n, 3);
    struct order o2 = {.stop = 2};
    queue_foreach(f->q, order_cb, &o2);
    assert_int_equal(o2.n, 2);

    reopen_all(f);
    assert_int_equal(queue_count(f->q), 3);
    assert_false(queue_find(f->q, ids[0])->held);
    assert_true(queue_find(f->q, ids[1])->held);
    assert_null(queue_find(f->q, ids[2]));
    assert_null(queue_find(f->q, ids[4]));
    m = queue_find(f->q, ids[3]);
    assert_int_equal(m->rcpts[0].state, QR_DEFERRED);
    assert_int_equal(m->rcpts[0].next_attempt, 0);
    assert_string_equal(m->rcpts[1].last_reply, "451 y");
    /* Held messages are never due; released ones are. */
    int seen1 = 0, total = 0;
    while ((m = queue_next_due(f->q, 100)) != NULL) {
        seen1 += strcmp(m->id, ids[1]) == 0;
        total++;
        queue_set_busy(f->q, m, true);
    }
    assert_int_equal(seen1, 0);
    assert_int_equal(total, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_envelope),
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reclaim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_pins_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_compaction_when_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operator, setup, teardown),
    };

    log_set_level(LOG_LEVEL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
