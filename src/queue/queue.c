/*
 * queue.c - the queue in memory (see queue.h): every unfinished message with
 * its per-recipient state, rebuilt from the spool's records at start, kept
 * durable by state records, and the decisions about which segments can go.
 *
 * What it promises:
 *  - every change of a message's state (a delivery outcome, hold, release,
 *    delete, flush) is handed to the spool as a state record, a snapshot of
 *    all its recipients, before the call returns; queue_open applies the
 *    newest snapshot of each message, so after a crash a message is back in
 *    the last state that reached the disk (a delivery whose record did not
 *    is made again: a duplicate, never a loss);
 *  - a segment is removed only when it and every older segment hold no
 *    message record of a live message (reclamation is oldest first; the
 *    argument is at queue_reclaim and in docs/queue.md);
 *  - a long-lived message that pins an old segment is copied forward
 *    (compaction) when that frees much more than it copies.
 *
 * Memory: a message costs one struct qitem (the public struct queue_msg
 * plus links, about 160 bytes), one block holding its envelope (recipient
 * array, parameter array and all strings), and the last reply of each
 * recipient that has one.  The indexes are a hash table by ID, a binary
 * min-heap of schedulable messages by due time, and a per-segment list.
 *
 * Everything here runs on the event-loop thread.
 */
#include "queue/queue.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/log.h"

#define QI_NOHEAP UINT32_MAX
/* Compaction: the oldest segment must be this many segments behind the newest... */
#define QUEUE_COMPACT_AGE 4
/* ...and one step copies at most this many messages and bytes. */
#define QUEUE_COMPACT_MSGS 64
#define QUEUE_COMPACT_BYTES ((uint64_t)16 << 20)

struct qitem {
    struct queue_msg m;          /* first: a struct queue_msg * is a struct qitem * */
    struct qitem *hnext;         /* hash chain */
    struct qitem *sprev, *snext; /* the messages whose record lies in the same segment */
    time_t due;                  /* heap key: earliest next_attempt of a due-able recipient */
    uint64_t busy_seg;           /* while busy: the segment the attempt reads (pinned), or 0 */
    uint32_t heap;               /* index in q->heap, or QI_NOHEAP */
    bool deleted;                /* by the operator; still here only while busy */
    bool moving;                 /* a copy forward is in flight */
    bool linked;                 /* on a segment list */
};

/* What the queue knows of one segment. */
struct qseg {
    uint64_t seg;
    uint32_t nlive;      /* live messages whose message record lies here */
    uint32_t nbusy;      /* delivery attempts reading from here (they opened it at m->seg) */
    uint64_t live_bytes; /* their record bytes */
    int64_t size;        /* file size once known (segments other than the active are frozen) */
    struct qitem *head;
};

/* A copy forward in flight (the arg of its done callback). */
struct qcopy {
    struct queue *q;
    struct qcopy *prev, *next;
    uint64_t from;
    char id[SPOOL_ID_LEN + 1];
};

struct queue {
    struct spool *sp;
    struct qitem **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    struct qitem **heap;
    size_t nheap, capheap;
    struct qseg *segs; /* ascending by seg */
    size_t nsegs, capsegs;
    struct qitem *zombies; /* deleted while busy: freed by their queue_update (chain: hnext) */
    struct qcopy *copies;  /* in flight */
    unsigned moving;
    uint64_t keep_from; /* nonzero: a committed message could not be indexed; keep this
                           segment and every newer one until a restart reads them again */
};

static struct qitem *
item_of(struct queue_msg *m)
{
    return (struct qitem *)m;
}

/* ---- envelope --------------------------------------------------------------------------- */

/*
 * One block: the recipient array, the parameter array, then every string
 * (sender first), so a message's envelope is one allocation and m->rcpts
 * is the pointer to free.
 */
int
queue_parse_envelope(struct queue_msg *m, const char *text, size_t len)
{
    unsigned nr = 0, np = 0, ns = 0;
    const char *p, *end = text + len, *nl;
    long long arrival = 0;

    for (p = text; p < end; p = nl + 1) {
        if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
            nl = end;
        if (nl - p < 2 || p[1] != ' ' || memchr(p, '\0', (size_t)(nl - p)) != NULL)
            goto bad;
        switch (p[0]) {
        case 'S':
            ns++;
            break;
        case 'R':
            if (nl - p < 3)
                goto bad; /* an empty recipient */
            nr++;
            break;
        case 'P':
            np++;
            break;
        case 'T': {
            char num[32], *e;
            size_t k = (size_t)(nl - p - 2);
            if (k == 0 || k >= sizeof(num))
                goto bad;
            memcpy(num, p + 2, k);
            num[k] = '\0';
            errno = 0;
            arrival = strtoll(num, &e, 10);
            if (*e != '\0' || errno != 0)
                goto bad;
            break;
        }
        default:
            break; /* a later kind of envelope line: not ours to judge */
        }
    }
    if (ns != 1 || nr == 0)
        goto bad;

    size_t arrays = nr * sizeof(struct queue_rcpt) + np * sizeof(char *);
    char *block = malloc(arrays + len + 1), *s;
    if (block == NULL)
        return -1;
    struct queue_rcpt *rc = (struct queue_rcpt *)block;
    char **pa = (char **)(block + nr * sizeof(struct queue_rcpt));
    s = block + arrays;
    m->rcpts = rc;
    m->nrcpts = nr;
    m->params = np ? pa : NULL;
    m->nparams = np;
    m->arrival = (time_t)arrival;
    nr = np = 0;
    for (p = text; p < end; p = nl + 1) {
        if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
            nl = end;
        size_t k = (size_t)(nl - p - 2);
        if (p[0] != 'S' && p[0] != 'R' && p[0] != 'P')
            continue;
        memcpy(s, p + 2, k);
        s[k] = '\0';
        if (p[0] == 'S')
            m->sender = s;
        else if (p[0] == 'R')
            rc[nr++] = (struct queue_rcpt){.addr = s, .state = QR_PENDING};
        else
            pa[np++] = s;
        s += k + 1;
    }
    return 0;
bad:
    errno = EINVAL;
    return -1;
}

const char *
queue_rcpt_state_name(enum queue_rcpt_state s)
{
    switch (s) {
    case QR_PENDING:
        return "pending";
    case QR_DEFERRED:
        return "deferred";
    case QR_DELIVERED:
        return "delivered";
    case QR_FAILED:
        return "failed";
    }
    return "?";
}

static const char qr_letters[] = "pqDF"; /* by enum queue_rcpt_state */

/* A reply kept for a recipient: one line, so a CR or LF becomes a space. */
static char *
reply_dup(const char *reply, size_t len)
{
    char *r = malloc(len + 1);

    if (r == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        r[i] = (reply[i] == '\r' || reply[i] == '\n' || reply[i] == '\0') ? ' ' : reply[i];
    r[len] = '\0';
    return r;
}

void
queue_rcpt_set(struct queue_rcpt *r, enum queue_rcpt_state st, const char *reply,
    time_t next_attempt)
{
    char *nr = NULL;

    /* XXX out of memory here only loses the text of the reply, never the state. */
    if (reply != NULL && *reply != '\0')
        nr = reply_dup(reply, strlen(reply));
    free(r->last_reply);
    r->last_reply = nr;
    r->state = st;
    r->next_attempt = next_attempt;
}

/* ---- state text ---------------------------------------------------------------------------- */

/* The snapshot written as a state record (format in queue.h and docs/queue.md). */
static int
state_text(const struct qitem *it, struct buf *b)
{
    const struct queue_msg *m = &it->m;

    buf_reset(b);
    for (unsigned i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        if (buf_printf(b, "r %u %c %u %lld %s\n", i, qr_letters[r->state], r->attempts,
                (long long)r->next_attempt, r->last_reply ? r->last_reply : "-") < 0)
            return -1;
    }
    if (buf_printf(b, "h %d\n", m->held ? 1 : 0) < 0 || (m->warned && buf_puts(b, "w 1\n") < 0) ||
        (it->deleted && buf_puts(b, "d\n") < 0))
        return -1;
    return 0;
}

struct rstate {
    enum queue_rcpt_state state;
    unsigned attempts;
    long long next;
    const char *reply;
    size_t replylen;
    bool seen;
};

static bool
parse_ull(const char **p, const char *end, unsigned long long *v)
{
    unsigned long long x = 0;
    const char *s = *p;

    if (s >= end || *s < '0' || *s > '9')
        return false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (x > (UINT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (unsigned long long)(*s - '0');
    }
    *p = s;
    *v = x;
    return true;
}

/*
 * Apply a state record's text to it: all or nothing (a malformed snapshot
 * leaves the previous state).  Unknown line kinds are skipped, so a later
 * writer can add some.  -1 if malformed or out of memory.
 */
static int
state_apply(struct qitem *it, const char *text, size_t len)
{
    struct queue_msg *m = &it->m;
    struct rstate *rs = calloc(m->nrcpts, sizeof(*rs));
    const char *p, *end = text + len, *nl;
    int held = -1;
    bool deleted = false, warned = false;

    if (rs == NULL)
        return -1;
    for (p = text; p < end; p = nl + 1) {
        if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
            nl = end;
        if (nl - p >= 1 && p[0] == 'd' && (nl - p == 1 || p[1] == ' ')) {
            deleted = true;
        } else if (nl - p >= 3 && p[0] == 'h' && p[1] == ' ') {
            if (p[2] != '0' && p[2] != '1')
                goto bad;
            held = p[2] == '1';
        } else if (nl - p >= 3 && p[0] == 'w' && p[1] == ' ') {
            warned = p[2] == '1';
        } else if (nl - p >= 2 && p[0] == 'r' && p[1] == ' ') {
            unsigned long long idx, att, next;
            const char *q = p + 2, *l;
            if (!parse_ull(&q, nl, &idx) || idx >= m->nrcpts || q >= nl || *q++ != ' ')
                goto bad;
            if (q >= nl || *q == '\0' || (l = strchr(qr_letters, *q)) == NULL)
                goto bad;
            rs[idx].state = (enum queue_rcpt_state)(l - qr_letters);
            q++;
            if (q >= nl || *q++ != ' ' || !parse_ull(&q, nl, &att) || att > UINT32_MAX
                || q >= nl || *q++ != ' ' || !parse_ull(&q, nl, &next) || next > INT64_MAX
                || q >= nl || *q++ != ' ' || q >= nl)
                goto bad;
            rs[idx].attempts = (unsigned)att;
            rs[idx].next = (long long)next;
            rs[idx].reply = (nl - q == 1 && *q == '-') ? NULL : q;
            rs[idx].replylen = (size_t)(nl - q);
            rs[idx].seen = true;
        }
    }
    for (unsigned i = 0; i < m->nrcpts; i++) {
        if (!rs[i].seen)
            continue; /* XXX a snapshot always lists every recipient; tolerate one that does not */
        struct queue_rcpt *r = &m->rcpts[i];
        char *reply = rs[i].reply ? reply_dup(rs[i].reply, rs[i].replylen) : NULL;
        free(r->last_reply);
        r->last_reply = reply;
        r->state = rs[i].state;
        r->attempts = rs[i].attempts;
        r->next_attempt = (time_t)rs[i].next;
    }
    if (held >= 0)
        m->held = held;
    m->warned = warned;
    it->deleted = deleted;
    free(rs);
    return 0;
bad:
    free(rs);
    return -1;
}

/* ---- the hash table by ID ------------------------------------------------------------------ */

static size_t
id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (int i = 0; i < SPOOL_ID_LEN && id[i] != '\0'; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ull;
    }
    return (size_t)(h ^ (h >> 29));
}

static struct qitem *
hash_find(const struct queue *q, const char *id)
{
    for (struct qitem *it = q->buckets[id_hash(id) & (q->nbuckets - 1)]; it; it = it->hnext)
        if (strcmp(it->m.id, id) == 0)
            return it;
    return NULL;
}

static int
hash_add(struct queue *q, struct qitem *it)
{
    if (q->count + 1 > q->nbuckets) {
        size_t n = q->nbuckets * 2;
        struct qitem **b = calloc(n, sizeof(*b));
        if (b == NULL)
            return -1;
        for (size_t i = 0; i < q->nbuckets; i++) {
            struct qitem *x, *next;
            for (x = q->buckets[i]; x != NULL; x = next) {
                next = x->hnext;
                size_t h = id_hash(x->m.id) & (n - 1);
                x->hnext = b[h];
                b[h] = x;
            }
        }
        free(q->buckets);
        q->buckets = b;
        q->nbuckets = n;
    }
    size_t h = id_hash(it->m.id) & (q->nbuckets - 1);
    it->hnext = q->buckets[h];
    q->buckets[h] = it;
    q->count++;
    return 0;
}

static void
hash_del(struct queue *q, struct qitem *it)
{
    struct qitem **pp = &q->buckets[id_hash(it->m.id) & (q->nbuckets - 1)];

    for (; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == it) {
            *pp = it->hnext;
            it->hnext = NULL;
            q->count--;
            return;
        }
    }
}

/* ---- the heap of schedulable messages ------------------------------------------------------ */

static bool
heap_less(const struct qitem *a, const struct qitem *b)
{
    if (a->due != b->due)
        return a->due < b->due;
    return memcmp(a->m.id, b->m.id, SPOOL_ID_LEN) < 0; /* IDs sort by arrival */
}

static void
heap_set(struct queue *q, size_t i, struct qitem *it)
{
    q->heap[i] = it;
    it->heap = (uint32_t)i;
}

static void
heap_up(struct queue *q, size_t i)
{
    struct qitem *it = q->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(it, q->heap[parent]))
            break;
        heap_set(q, i, q->heap[parent]);
        i = parent;
    }
    heap_set(q, i, it);
}

static void
heap_down(struct queue *q, size_t i)
{
    struct qitem *it = q->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->nheap)
            break;
        if (c + 1 < q->nheap && heap_less(q->heap[c + 1], q->heap[c]))
            c++;
        if (!heap_less(q->heap[c], it))
            break;
        heap_set(q, i, q->heap[c]);
        i = c;
    }
    heap_set(q, i, it);
}

static int
heap_push(struct queue *q, struct qitem *it)
{
    if (q->nheap == q->capheap) {
        size_t n = q->capheap ? q->capheap * 2 : 1024;
        struct qitem **h = realloc(q->heap, n * sizeof(*h));
        if (h == NULL)
            return -1;
        q->heap = h;
        q->capheap = n;
    }
    heap_set(q, q->nheap++, it);
    heap_up(q, q->nheap - 1);
    return 0;
}

static void
heap_remove(struct queue *q, struct qitem *it)
{
    size_t i = it->heap;

    if (i == QI_NOHEAP)
        return;
    it->heap = QI_NOHEAP;
    if (i == --q->nheap)
        return;
    struct qitem *last = q->heap[q->nheap];
    heap_set(q, i, last);
    heap_down(q, i);
    heap_up(q, last->heap);
}

/* Is some recipient still to be delivered?  *due: the earliest of their next attempts. */
static bool
msg_pending(const struct queue_msg *m, time_t *due)
{
    bool any = false;
    time_t d = 0;

    for (unsigned i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        if (r->state != QR_PENDING && r->state != QR_DEFERRED)
            continue;
        if (!any || r->next_attempt < d)
            d = r->next_attempt;
        any = true;
    }
    if (due != NULL)
        *due = d;
    return any;
}

/* Put it in the heap, move it, or take it out, as its state now says. */
static void
sched_update(struct queue *q, struct qitem *it)
{
    time_t due;
    bool sched = !it->m.held && !it->m.busy && !it->deleted && msg_pending(&it->m, &due);

    if (!sched) {
        heap_remove(q, it);
        return;
    }
    if (it->heap == QI_NOHEAP) {
        it->due = due;
        if (heap_push(q, it) < 0)
            log_error(it->m.id, "queue: out of memory, message not scheduled until restart");
        return;
    }
    time_t old = it->due;
    it->due = due;
    if (due < old)
        heap_up(q, it->heap);
    else if (due > old)
        heap_down(q, it->heap);
}

/* ---- segments ------------------------------------------------------------------------------ */

/* The index of seg in q->segs, or where it would go (*found false). */
static size_t
seg_index(const struct queue *q, uint64_t seg, bool *found)
{
    size_t lo = 0, hi = q->nsegs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (q->segs[mid].seg < seg)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < q->nsegs && q->segs[lo].seg == seg;
    return lo;
}

static struct qseg *
seg_find(struct queue *q, uint64_t seg)
{
    bool found;
    size_t i = seg_index(q, seg, &found);

    return found ? &q->segs[i] : NULL;
}

static struct qseg *
seg_get(struct queue *q, uint64_t seg)
{
    bool found;
    size_t i = seg_index(q, seg, &found);

    if (found)
        return &q->segs[i];
    if (q->nsegs == q->capsegs) {
        size_t n = q->capsegs ? q->capsegs * 2 : 16;
        struct qseg *v = realloc(q->segs, n * sizeof(*v));
        if (v == NULL)
            return NULL;
        q->segs = v;
        q->capsegs = n;
    }
    memmove(q->segs + i + 1, q->segs + i, (q->nsegs - i) * sizeof(*q->segs));
    q->segs[i] = (struct qseg){.seg = seg, .size = -1};
    q->nsegs++;
    return &q->segs[i];
}

static void
seg_forget(struct queue *q, uint64_t seg)
{
    bool found;
    size_t i = seg_index(q, seg, &found);

    if (found) {
        memmove(q->segs + i, q->segs + i + 1, (q->nsegs - i - 1) * sizeof(*q->segs));
        q->nsegs--;
    }
}

static uint64_t
rec_bytes(const struct queue_msg *m)
{
    return m->body_off + m->body_len - m->off;
}

/* it's message record lies in it->m.seg: count it there.  -1 if out of memory. */
static int
seg_link(struct queue *q, struct qitem *it)
{
    struct qseg *s = seg_get(q, it->m.seg);

    if (s == NULL)
        return -1;
    it->sprev = NULL;
    it->snext = s->head;
    if (s->head != NULL)
        s->head->sprev = it;
    s->head = it;
    s->nlive++;
    s->live_bytes += rec_bytes(&it->m);
    it->linked = true;
    return 0;
}

/* Uncount it from its segment; true if that segment holds no live message any more. */
static bool
seg_unlink(struct queue *q, struct qitem *it)
{
    struct qseg *s;

    if (!it->linked)
        return false;
    it->linked = false;
    if ((s = seg_find(q, it->m.seg)) == NULL)
        log_panic("queue: message %s in unknown segment %" PRIu64, it->m.id, it->m.seg);
    if (it->sprev != NULL)
        it->sprev->snext = it->snext;
    else
        s->head = it->snext;
    if (it->snext != NULL)
        it->snext->sprev = it->sprev;
    it->sprev = it->snext = NULL;
    s->nlive--;
    s->live_bytes -= rec_bytes(&it->m);
    return s->nlive == 0;
}

/* The record moved (a compaction copy, or a later copy found by the scan). */
static bool
msg_relocate(struct queue *q, struct qitem *it, const struct spool_record *rec)
{
    bool freed = seg_unlink(q, it);

    it->m.seg = rec->seg;
    it->m.off = rec->off;
    it->m.body_off = rec->body_off;
    it->m.body_len = rec->body_len;
    if (seg_link(q, it) < 0)
        log_error(it->m.id, "queue: out of memory, segment may be removed too early");
    return freed;
}

/* A segment's size: frozen once it is not the active one, so asked once. */
static uint64_t
seg_size(struct queue *q, uint64_t seg)
{
    struct qseg *s = seg_get(q, seg);
    struct stat st;
    int fd;

    if (s != NULL && s->size >= 0)
        return (uint64_t)s->size;
    if ((fd = spool_segment_open(q->sp, seg)) < 0)
        return 0;
    if (fstat(fd, &st) < 0)
        st.st_size = 0;
    close(fd);
    if (s != NULL)
        s->size = st.st_size;
    return (uint64_t)st.st_size;
}

/*
 * Remove, oldest first, every segment in which no live message has its
 * message record, stopping at the first one that still holds one (or the
 * active one).  Why that order is safe: a record about a message (its state
 * records) is always written after its message record, and segments only
 * grow in number, so a state record in segment S concerns a message whose
 * message record is in S or an older segment -- or it is older than a copy
 * forward of that message, whose own state record supersedes it.  When S and
 * everything older hold no live message record, no state record in S can be
 * the newest word on a live message, so removing S loses nothing.  Removing
 * a newer segment while an older one is still pinned could drop the newest
 * state record of a message pinned there (a delivered recipient would come
 * back as pending, a deleted message would come back).
 * The final state record of a message that just left the queue is handed to
 * the spool before this runs, and the spool unlinks only after every record
 * handed over before the removal is durable (spool.h), so it needs no pin.
 * A segment a delivery attempt reads from (nbusy) stays too: the attempt
 * opens the file at the m->seg it was given, after compaction may have
 * moved the message on.
 */
static void
queue_reclaim(struct queue *q)
{
    uint64_t *segs, active = spool_active_segment(q->sp);
    int n = spool_segments(q->sp, &segs);

    if (n < 0)
        return;
    for (int i = 0; i < n; i++) {
        struct qseg *s = seg_find(q, segs[i]);
        if (segs[i] == active || (s != NULL && (s->nlive > 0 || s->nbusy > 0))
            || (q->keep_from != 0 && segs[i] >= q->keep_from))
            break;
        /* EBUSY: a commit in it has not been reported to us yet; try again later. */
        if (spool_segment_remove(q->sp, segs[i]) < 0)
            break;
        log_info(NULL, "queue: segment reclaimed seg=%" PRIu64, segs[i]);
        seg_forget(q, segs[i]);
    }
    free(segs);
}

/* ---- messages ---------------------------------------------------------------------------- */

static void
msg_free(struct qitem *it)
{
    for (unsigned i = 0; i < it->m.nrcpts; i++)
        free(it->m.rcpts[i].last_reply);
    free(it->m.rcpts); /* the envelope block, see queue_parse_envelope */
    free(it);
}

static struct qitem *
msg_new(struct queue *q, const struct spool_record *rec)
{
    struct qitem *it = calloc(1, sizeof(*it));

    if (it == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memcpy(it->m.id, rec->id, SPOOL_ID_LEN);
    it->m.id[SPOOL_ID_LEN] = '\0';
    it->m.priv = it;
    it->heap = QI_NOHEAP;
    if (queue_parse_envelope(&it->m, rec->data, rec->datalen) < 0) {
        int e = errno == ENOMEM ? ENOMEM : EINVAL;
        log_error(it->m.id, "queue: %s, message ignored seg=%" PRIu64 " off=%" PRIu64,
            e == ENOMEM ? "out of memory" : "malformed envelope", rec->seg, rec->off);
        free(it);
        errno = e;
        return NULL;
    }
    it->m.seg = rec->seg;
    it->m.off = rec->off;
    it->m.body_off = rec->body_off;
    it->m.body_len = rec->body_len;
    if (hash_add(q, it) < 0 || seg_link(q, it) < 0) {
        hash_del(q, it);
        log_error(it->m.id, "queue: out of memory indexing message");
        msg_free(it);
        errno = ENOMEM;
        return NULL;
    }
    return it;
}

/* Hand the message's state to the spool as a state record (fire and forget). */
static void
msg_persist(struct queue *q, struct qitem *it)
{
    struct buf b;

    buf_init(&b, 0);
    if (state_text(it, &b) < 0) {
        /* XXX the change lives in memory only: after a crash the old state comes back. */
        log_error(it->m.id, "queue: out of memory writing state record");
    } else {
        spool_commit_state(q->sp, it->m.id, b.data, b.len, NULL, NULL);
    }
    buf_free(&b);
}

/* The attempt that read from it->busy_seg is over: that segment may go now. */
static bool
busy_unpin(struct queue *q, struct qitem *it)
{
    struct qseg *s;

    if (it->busy_seg == 0)
        return false;
    s = seg_find(q, it->busy_seg);
    it->busy_seg = 0;
    if (s == NULL || s->nbusy == 0)
        log_panic("queue: busy pin of %s lost", it->m.id);
    return --s->nbusy == 0 && s->nlive == 0;
}

/* it leaves the queue: out of every index, freed; segments reclaimed if it was the last. */
static void
msg_leave(struct queue *q, struct qitem *it, bool in_hash)
{
    heap_remove(q, it);
    if (in_hash)
        hash_del(q, it);
    bool freed = busy_unpin(q, it);
    freed = seg_unlink(q, it) || freed;
    msg_free(it);
    if (freed)
        queue_reclaim(q);
}

static bool
msg_finished(const struct qitem *it)
{
    return it->deleted || !msg_pending(&it->m, NULL);
}

/* ---- open and close ------------------------------------------------------------------------ */

struct open_ctx {
    struct queue *q;
    uint64_t orphans, bad, msgs, states;
    int err;
};

static int
open_record(void *arg, const struct spool_record *r)
{
    struct open_ctx *c = arg;
    struct queue *q = c->q;
    struct qitem *it = hash_find(q, r->id);

    if (r->type == SPOOL_REC_MESSAGE) {
        c->msgs++;
        if (it != NULL) {
            /* A copy moved forward: the newer location wins, the newest state stays. */
            msg_relocate(q, it, r);
            return 0;
        }
        if (msg_new(q, r) == NULL && errno == ENOMEM) {
            c->err = ENOMEM;
            return 1;
        }
        return 0;
    }
    c->states++;
    if (it == NULL) {
        /* Its message record was in a reclaimed segment: the message is long gone. */
        c->orphans++;
        return 0;
    }
    if (state_apply(it, r->data, r->datalen) < 0) {
        c->bad++;
        log_warn(it->m.id, "queue: malformed state record ignored seg=%" PRIu64 " off=%" PRIu64,
            r->seg, r->off);
    }
    return 0;
}

struct queue *
queue_open(struct spool *sp, char *err, size_t errlen)
{
    struct queue *q = calloc(1, sizeof(*q));
    struct open_ctx c = {.q = q};
    uint64_t dropped = 0;

    if (q == NULL || (q->buckets = calloc(1024, sizeof(*q->buckets))) == NULL) {
        free(q);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->sp = sp;
    q->nbuckets = 1024;
    /*
     * XXX every message record is indexed while scanning, finished ones too,
     * and dropped only at the end (a finished message's last record is its
     * final state record, but the scan cannot know it is the last).  The peak
     * is the messages of every segment still on disk, which reclamation and
     * compaction keep to a few segments' worth.
     */
    int r = spool_scan_records(spool_dir(sp), open_record, &c);
    if (r != 0) {
        snprintf(err, errlen, "%s: cannot read the spool: %s", spool_dir(sp),
            strerror(r < 0 ? errno : c.err));
        queue_close(q);
        return NULL;
    }
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct qitem *it, *next;
        for (it = q->buckets[i]; it != NULL; it = next) {
            next = it->hnext;
            if (msg_finished(it)) {
                hash_del(q, it);
                seg_unlink(q, it);
                msg_free(it);
                dropped++;
            } else {
                sched_update(q, it);
            }
        }
    }
    log_info(NULL, "queue: rebuilt messages=%zu finished=%" PRIu64 " records=%" PRIu64
        " states=%" PRIu64 " orphan_states=%" PRIu64 " bad_states=%" PRIu64, q->count, dropped,
        c.msgs, c.states, c.orphans, c.bad);
    queue_reclaim(q);
    return q;
}

void
queue_close(struct queue *q)
{
    struct qcopy *c, *cn;
    struct qitem *it, *next;

    if (q == NULL)
        return;
    /* Copies still in flight will finish on disk; nobody here will hear of them. */
    for (c = q->copies; c != NULL; c = cn) {
        cn = c->next;
        spool_commit_detach(q->sp, c);
        free(c);
    }
    for (size_t i = 0; i < q->nbuckets; i++) {
        for (it = q->buckets[i]; it != NULL; it = next) {
            next = it->hnext;
            msg_free(it);
        }
    }
    for (it = q->zombies; it != NULL; it = next) {
        next = it->hnext;
        msg_free(it);
    }
    free(q->buckets);
    free(q->heap);
    free(q->segs);
    free(q);
}

/* ---- the interface ------------------------------------------------------------------------- */

struct queue_msg *
queue_add(struct queue *q, const struct spool_record *rec)
{
    struct qitem *it;

    if (rec == NULL || rec->type != SPOOL_REC_MESSAGE)
        return NULL;
    if ((it = hash_find(q, rec->id)) != NULL) {
        /* Already known (queue_open read it while its commit was being reported). */
        if (it->m.seg != rec->seg || it->m.off != rec->off)
            msg_relocate(q, it, rec);
        return &it->m;
    }
    if ((it = msg_new(q, rec)) == NULL) {
        /* Durable but unknown to us: its segment must not be reclaimed before a restart. */
        if (q->keep_from == 0 || rec->seg < q->keep_from)
            q->keep_from = rec->seg;
        return NULL;
    }
    sched_update(q, it);
    return &it->m;
}

struct queue_msg *
queue_next_due(struct queue *q, time_t now)
{
    if (q->nheap == 0 || q->heap[0]->due > now)
        return NULL;
    return &q->heap[0]->m;
}

time_t
queue_next_wakeup(struct queue *q)
{
    if (q->nheap == 0)
        return 0;
    /* Due "at 0" means now: still say a time (in the past), never the 0 of "nothing". */
    return q->heap[0]->due > 0 ? q->heap[0]->due : 1;
}

void
queue_set_busy(struct queue *q, struct queue_msg *m, bool busy)
{
    struct qitem *it = item_of(m);
    bool freed = false;

    m->busy = busy;
    if (busy && it->busy_seg == 0) {
        struct qseg *s = seg_get(q, m->seg);
        if (s != NULL) {
            s->nbusy++;
            it->busy_seg = m->seg;
        } /* XXX out of memory: unpinned; a compaction may make the attempt fail and retry */
    } else if (!busy) {
        freed = busy_unpin(q, it);
    }
    if (!it->deleted)
        sched_update(q, it);
    if (freed)
        queue_reclaim(q);
}

static void
zombie_del(struct queue *q, struct qitem *it)
{
    for (struct qitem **pp = &q->zombies; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == it) {
            *pp = it->hnext;
            return;
        }
    }
}

void
queue_update(struct queue *q, struct queue_msg *m)
{
    struct qitem *it = item_of(m);

    if (it->deleted) {
        /* Deleted during its attempt: the "d" record is written; the outcome no longer counts. */
        zombie_del(q, it);
        msg_leave(q, it, false);
        return;
    }
    msg_persist(q, it);
    if (msg_finished(it)) {
        log_info(m->id, "queue: message finished, removed");
        msg_leave(q, it, true);
        return;
    }
    sched_update(q, it);
}

struct queue_msg *
queue_find(struct queue *q, const char *id)
{
    struct qitem *it = hash_find(q, id);

    return it ? &it->m : NULL;
}

static int
queue_set_held(struct queue *q, const char *id, bool held)
{
    struct qitem *it = hash_find(q, id);

    if (it == NULL)
        return -1;
    if (it->m.held != held) {
        it->m.held = held;
        msg_persist(q, it);
        sched_update(q, it);
        log_info(id, "queue: %s", held ? "held" : "released");
    }
    return 0;
}

int
queue_hold(struct queue *q, const char *id)
{
    return queue_set_held(q, id, true);
}

int
queue_release(struct queue *q, const char *id)
{
    return queue_set_held(q, id, false);
}

int
queue_delete(struct queue *q, const char *id)
{
    struct qitem *it = hash_find(q, id);

    if (it == NULL)
        return -1;
    it->deleted = true;
    msg_persist(q, it);
    log_info(id, "queue: deleted by the operator");
    if (!it->m.busy) {
        msg_leave(q, it, true);
        return 0;
    }
    /*
     * A delivery attempt holds m: it stays allocated (and its segment pinned)
     * until that attempt's queue_update, but is gone from the queue's view.
     */
    heap_remove(q, it);
    hash_del(q, it);
    it->hnext = q->zombies;
    q->zombies = it;
    return 0;
}

static void
msg_flush(struct queue *q, struct qitem *it)
{
    bool changed = false;

    for (unsigned i = 0; i < it->m.nrcpts; i++) {
        struct queue_rcpt *r = &it->m.rcpts[i];
        if (r->state == QR_DEFERRED && r->next_attempt != 0) {
            r->next_attempt = 0;
            changed = true;
        }
    }
    if (changed) {
        msg_persist(q, it);
        sched_update(q, it);
    }
}

int
queue_flush(struct queue *q, const char *id)
{
    if (id != NULL) {
        struct qitem *it = hash_find(q, id);
        if (it == NULL)
            return -1;
        msg_flush(q, it);
        return 0;
    }
    for (size_t i = 0; i < q->nbuckets; i++)
        for (struct qitem *it = q->buckets[i]; it != NULL; it = it->hnext)
            msg_flush(q, it);
    return 0;
}

static int
cmp_item_id(const void *a, const void *b)
{
    const struct qitem *x = *(struct qitem *const *)a, *y = *(struct qitem *const *)b;

    return memcmp(x->m.id, y->m.id, SPOOL_ID_LEN);
}

void
queue_foreach(struct queue *q, int (*cb)(void *arg, const struct queue_msg *m), void *arg)
{
    struct qitem **v;
    size_t n = 0;

    /* IDs sort by creation time, so ID order is arrival order (copies included). */
    if (q->count == 0 || (v = malloc(q->count * sizeof(*v))) == NULL)
        return;
    for (size_t i = 0; i < q->nbuckets; i++)
        for (struct qitem *it = q->buckets[i]; it != NULL; it = it->hnext)
            v[n++] = it;
    qsort(v, n, sizeof(*v), cmp_item_id);
    for (size_t i = 0; i < n; i++)
        if (cb(arg, &v[i]->m) != 0)
            break;
    free(v);
}

size_t
queue_count(const struct queue *q)
{
    return q->count;
}

/* ---- compaction ------------------------------------------------------------------------------ */

static void queue_compact(struct queue *q);

static void
copy_done(void *arg, int err, const struct spool_record *rec)
{
    struct qcopy *c = arg;
    struct queue *q = c->q;
    struct qitem *it = hash_find(q, c->id);
    bool freed = false;

    q->moving--;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        q->copies = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (it != NULL)
        it->moving = false;
    if (err != 0) {
        log_warn(c->id, "queue: copy forward failed seg=%" PRIu64 " error=\"%s\"", c->from,
            strerror(err));
    } else if (it != NULL && it->m.seg == c->from) {
        freed = msg_relocate(q, it, rec);
    }
    /* (A message that finished meanwhile: the copy is dead on disk; its final record follows.) */
    free(c);
    if (freed)
        queue_reclaim(q);
    if (err == 0 && q->moving == 0)
        queue_compact(q); /* the next step, until the trigger no longer holds */
}

/*
 * Compaction: when the oldest segment is pinned by live messages, is at
 * least QUEUE_COMPACT_AGE segments behind the newest, and removing it would
 * free at least twice the bytes that must be copied (its size plus the
 * segments right after it that hold nothing live), copy its messages
 * forward, a step of at most QUEUE_COMPACT_MSGS messages / _BYTES bytes at a
 * time; once the last copy is durable the segment holds nothing live and
 * queue_reclaim removes it.  The gain rule keeps compaction from rewriting a
 * segment full of live mail again and again (the copies would be full too).
 * XXX a head segment more than half live pins everything behind it until its
 * messages finish or expire.
 */
static void
queue_compact(struct queue *q)
{
    uint64_t *segs, active, newest, oldest, gain, want = 0, bytes = 0;
    unsigned started = 0;
    struct qseg *s;
    struct buf b;
    int n;

    if (q->moving > 0 || (n = spool_segments(q->sp, &segs)) < 0)
        return;
    active = spool_active_segment(q->sp);
    if (n == 0)
        goto out;
    oldest = segs[0];
    newest = segs[n - 1] > active ? segs[n - 1] : active;
    if (oldest == active || newest - oldest < QUEUE_COMPACT_AGE)
        goto out;
    if ((s = seg_find(q, oldest)) == NULL || s->nlive == 0)
        goto out;
    want = s->live_bytes;
    gain = seg_size(q, oldest);
    for (int i = 1; i < n && segs[i] != active; i++) {
        struct qseg *t = seg_find(q, segs[i]);
        if (t != NULL && t->nlive > 0)
            break;
        gain += seg_size(q, segs[i]);
    }
    if (gain < 2 * want)
        goto out;
    buf_init(&b, 0);
    /* seg_size may have moved q->segs */
    s = seg_find(q, oldest);
    for (struct qitem *it = s->head; it != NULL; it = it->snext) {
        if (started >= QUEUE_COMPACT_MSGS || bytes >= QUEUE_COMPACT_BYTES)
            break;
        if (it->moving || it->m.busy)
            continue; /* a delivery reads it from here now; next step */
        struct qcopy *c = calloc(1, sizeof(*c));
        if (c == NULL || state_text(it, &b) < 0) {
            free(c);
            break;
        }
        c->q = q;
        c->from = oldest;
        memcpy(c->id, it->m.id, sizeof(c->id));
        c->next = q->copies;
        if (q->copies != NULL)
            q->copies->prev = c;
        q->copies = c;
        it->moving = true;
        q->moving++;
        started++;
        bytes += rec_bytes(&it->m);
        spool_copy_forward(q->sp, it->m.seg, it->m.off, b.data, b.len, copy_done, c);
    }
    buf_free(&b);
    if (started > 0)
        log_info(NULL, "queue: compaction seg=%" PRIu64 " live=%u live_bytes=%" PRIu64
            " gain=%" PRIu64 " copying=%u", oldest, s->nlive, want, gain, started);
out:
    free(segs);
}

void
queue_maintain(struct queue *q)
{
    queue_reclaim(q);
    queue_compact(q);
}
