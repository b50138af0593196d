/*
 * spool.c - the spool: the one component that writes the queue (see spool.h).
 *
 * What it is for: taking finished messages from SMTP sessions and making them
 * durable, many at a time, without the event loop ever waiting for the disk.
 *
 * What it promises:
 *  - a done callback with err == 0 is run only after the record of that
 *    message (header, envelope, body) was written to the active segment and
 *    fdatasync(2) of that segment returned 0 (and, for the first batch in a
 *    new segment, fsync(2) of the file and of the seg/ directory);
 *  - a done callback with err != 0 means the batch was cut off the segment
 *    again (ftruncate back to where the batch started) and the segment was
 *    abandoned; recovery (spool_scan) never returns that message, except in
 *    the XXX case noted at spool_batch_fail();
 *  - every spool_commit() gets exactly one done callback (unless detached),
 *    always from spool_reap() on the loop thread, spool_close() included;
 *  - spool_open() cuts a torn tail off the newest segment, removes stale
 *    spill files, and never appends to a segment written before it;
 *  - state records (spool_commit_state) and copies (spool_copy_forward) are
 *    jobs in the same FIFO as messages: they are group committed with them,
 *    and a record handed over before another is never durable after it;
 *  - spool_segment_remove() unlinks a segment on the committer, after every
 *    record handed over before the call is durable (so a message's final
 *    state record always reaches the disk before its segment goes), and
 *    fsyncs seg/ before anything of that batch is reported; it refuses the
 *    active segment and any segment holding records whose done callbacks
 *    have not run yet (the queue cannot know about those).
 *
 * Threads: the loop thread calls every public function; one committer thread
 * does all segment I/O and every sync.  They share only the pending, in-flight
 * and done lists, the segment list, the active segment number, the stats and
 * the test knobs, all under sp->mu.
 *
 * On-disk format, commit protocol and the measurements behind them:
 * docs/queue.md.
 */
#include "queue/spool.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "util/buf.h"
#include "util/io.h"
#include "util/log.h"

#define SPOOL_SEG_MAX ((uint64_t)64 << 20) /* rotate the active segment past this size */
#define SPOOL_REC_HDR 40                   /* fixed record header, see docs/queue.md */
#define SPOOL_REC_MSG SPOOL_REC_MESSAGE    /* record type: a message */
#define SPOOL_REC_VERSION 1
#define SPOOL_FLAG_COPY 0x0001 /* header flags: a message record copied forward by compaction */
#define SPOOL_ENV_MAX ((uint32_t)16 << 20) /* larger envelope lengths are corruption */
#define SPOOL_COPY_CHUNK (256 * 1024)
#define SPOOL_ID_TS_LEN 10 /* base-36 microseconds: good until the year 2085 */
/* Room for the spool's subdirectory names, so that a file name (<= 255) always fits after. */
#define SPOOL_DIR_MAX (PATH_MAX - 512)

static const char spool_magic[4] = {'T', 'R', 'N', '1'};

/*
 * What the committer is asked to do.  Every job is a struct spool_msg in the
 * one FIFO, so all kinds are ordered with respect to each other.
 */
enum spool_job {
    JOB_MSG,    /* append a message record (spool_commit, spool_commit_rec) */
    JOB_STATE,  /* append a state record (spool_commit_state) */
    JOB_COPY,   /* re-append a message record + a state record (spool_copy_forward) */
    JOB_REMOVE, /* unlink a segment (spool_segment_remove); never has a callback */
};

struct spool_msg {
    struct spool *sp;
    struct spool_msg *next;
    enum spool_job kind;
    char id[SPOOL_ID_LEN + 1];
    char *sender;
    struct buf rcpts;  /* "R <rcpt>\n" lines */
    struct buf params; /* "P <key=value>\n" lines */
    time_t arrival;
    struct buf body;   /* the body while it fits under the spill threshold */
    int tmpfd;         /* >= 0: the body lives in tmp/<id> instead */
    uint64_t body_len;
    uint32_t body_crc; /* crc32 of the body, kept up as bytes arrive */
    int werr;          /* sticky error of spool_msg_write */
    struct buf rec;    /* header + envelope (or state text), NUL after rec.len */
    spool_done_fn done;
    spool_done_rec_fn done_rec; /* instead of done: the caller wants the record */
    void *arg;
    bool detached; /* under sp->mu; never read by the committer */
    int err;       /* result; set before the committer sees it if the commit is hopeless */

    /* JOB_COPY: the source segment (seg) and record offset; JOB_REMOVE: the segment (seg) */
    uint64_t seg;
    uint64_t src_off;
    uint64_t src_body_off; /* set by the committer */
    int srcfd;             /* committer only */
    struct buf text;       /* the state text, until the committer knows the ID */
    struct buf srec;       /* the state record that follows the copy */

    /* where the committer wrote the record (valid when err == 0) */
    uint64_t rec_seg;
    uint64_t rec_off;
};

struct spool {
    char dir[SPOOL_DIR_MAX];
    char segdir[SPOOL_DIR_MAX];
    char tmpdir[SPOOL_DIR_MAX];
    int segdirfd;
    int lockfd;
    int evfd;
    size_t spill;
    bool nosync;
    int test_delay_ms;  /* TERN_TEST_COMMIT_DELAY_MS */

    /* queue IDs: loop thread only */
    uint64_t id_last_us;
    unsigned id_ctr;
    unsigned id_pid;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct spool_msg *pending; /* FIFO of commits not yet taken by the committer */
    struct spool_msg **pending_tail;
    struct spool_msg *inflight; /* the batch being written (for detach) */
    struct spool_msg *done;     /* FIFO of finished commits for spool_reap */
    struct spool_msg **done_tail;
    bool stopping;
    int fail_next;
    uint64_t seg_max; /* rotate past this size (a test may lower it) */
    struct spool_stats stats;
    uint64_t *segs;   /* every segment present, ascending, minus those being removed */
    size_t nsegs, capsegs;
    uint64_t active;  /* the segment batches go to now; 0 if none is open */

    struct spool_msg *reaping; /* loop thread only: the list spool_reap works through */

    /* committer thread only */
    int segfd;
    uint64_t segseq;  /* number of the next segment to create */
    uint64_t segoff;  /* bytes of committed records in the active segment */
    bool segfresh;    /* the active segment's file and dir entry are not synced yet */
};

/* ---- little helpers ---------------------------------------------------------------------- */

static void
put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void
put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void
put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static bool
spool_id_valid(const char *id, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'Z')))
            return false;
    return true;
}

/* zlib's crc32 takes a uInt length; bodies may be larger. */
static uint32_t
spool_crc(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *c = p;

    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, c, k);
        c += k;
        n -= k;
    }
    return crc;
}

static ssize_t
pread_all(int fd, void *p, size_t n, uint64_t off)
{
    char *c = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = pread(fd, c + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int
fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r;

    if (fd < 0)
        return -1;
    r = fsync(fd);
    close(fd);
    return r;
}

/* ---- segments: names and scanning ------------------------------------------------------- */

static int
seg_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The numbers of the segments in segdir, ascending.  -1 with errno on failure. */
static int
seg_list(const char *segdir, uint64_t **out, size_t *count)
{
    DIR *d = opendir(segdir);
    struct dirent *e;
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (strlen(s) != 20 || strcmp(s + 16, ".seg") != 0)
            continue;
        bool hex = true;
        for (int i = 0; i < 16; i++)
            hex = hex && isxdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]);
        if (!hex)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            uint64_t *nv = realloc(v, ncap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
            cap = ncap;
        }
        v[n++] = strtoull(s, NULL, 16);
    }
    closedir(d);
    if (n > 0)
        qsort(v, n, sizeof(*v), seg_cmp);
    *out = v;
    *count = n;
    return 0;
}

static void
seg_path(char *path, size_t len, const char *segdir, uint64_t seq)
{
    snprintf(path, len, "%s/%016" PRIx64 ".seg", segdir, seq);
}

static uint16_t
get_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * Check a record header against what is left of the file.  NULL if it is
 * plausible (lengths in *envlen, *bodylen), else the reason it is not.
 */
static const char *
rec_check_header(const unsigned char *hdr, uint64_t left, uint32_t *envlen, uint64_t *bodylen)
{
    if (memcmp(hdr, spool_magic, 4) != 0)
        return "bad magic";
    *envlen = get_le32(hdr + 8);
    *bodylen = get_le64(hdr + 12);
    if (*envlen > SPOOL_ENV_MAX || *envlen > left - SPOOL_REC_HDR
        || *bodylen > left - SPOOL_REC_HDR - *envlen)
        return "length past end of segment";
    if (!spool_id_valid((const char *)hdr + 24, SPOOL_ID_LEN))
        return "bad queue id";
    return NULL;
}

/* The crc of a header as it is stored: computed with its crc field as zero. */
static uint32_t
rec_header_crc(const unsigned char *hdr)
{
    unsigned char h0[SPOOL_REC_HDR];

    memcpy(h0, hdr, sizeof(h0));
    put_le32(h0 + 20, 0);
    return spool_crc(0, h0, sizeof(h0));
}

/*
 * crc32 of len bytes of fd at off, read through chunk.  -1 with errno on an
 * I/O error, 1 if the file is shorter, else 0.
 */
static int
file_crc(int fd, uint64_t off, uint64_t len, unsigned char *chunk, uint32_t *crc)
{
    uint64_t done = 0;

    while (done < len) {
        size_t k = len - done > SPOOL_COPY_CHUNK ? SPOOL_COPY_CHUNK : (size_t)(len - done);
        ssize_t r = pread_all(fd, chunk, k, off + done);
        if (r < 0)
            return -1;
        if ((size_t)r < k)
            return 1;
        *crc = spool_crc(*crc, chunk, k);
        done += k;
    }
    return 0;
}

typedef int (*seg_rec_cb)(void *arg, const struct spool_record *r, const char *segpath);

/*
 * Walk the records of segment seq (file path), calling cb for each valid
 * record of version 1 (every type: the callers filter).  Stops at the first
 * record that is not valid (bad magic, impossible lengths, short, crc
 * mismatch): that is the torn tail of a batch that was never acknowledged.
 * We never search past it for the next magic: a body may contain bytes that
 * look like a whole valid record, and resynchronising would let a sender
 * forge a queued message.  *valid_end is the offset just past the last valid
 * record, *torn whether bytes follow it; max_id (if not NULL) gets the
 * greatest ID of a message record that is not a compaction copy (copies carry
 * old IDs).  Returns 0, cb's nonzero value, or -1 with errno on an I/O error.
 */
static int
seg_scan(const char *path, uint64_t seq, seg_rec_cb cb, void *arg, uint64_t *valid_end,
    bool *torn, char max_id[SPOOL_ID_LEN + 1])
{
    unsigned char hdr[SPOOL_REC_HDR];
    unsigned char *chunk = NULL;
    char *env = NULL;
    const char *why = NULL;
    struct stat st;
    uint64_t off = 0;
    int fd, ret = 0;

    *valid_end = 0;
    *torn = false;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    if (fstat(fd, &st) < 0 || (chunk = malloc(SPOOL_COPY_CHUNK)) == NULL) {
        ret = -1;
        goto out;
    }
    while (off < (uint64_t)st.st_size) {
        uint64_t left = (uint64_t)st.st_size - off;
        uint32_t envlen;
        uint64_t bodylen;
        ssize_t r;

        if (left < SPOOL_REC_HDR) {
            why = "short header";
            break;
        }
        if ((r = pread_all(fd, hdr, SPOOL_REC_HDR, off)) < 0) {
            ret = -1;
            goto out;
        }
        if (r < SPOOL_REC_HDR) {
            why = "short header";
            break;
        }
        if ((why = rec_check_header(hdr, left, &envlen, &bodylen)) != NULL)
            break;
        free(env);
        if ((env = malloc((size_t)envlen + 1)) == NULL) {
            ret = -1;
            goto out;
        }
        if ((r = pread_all(fd, env, envlen, off + SPOOL_REC_HDR)) < 0) {
            ret = -1;
            goto out;
        }
        if ((uint64_t)r < envlen) {
            why = "short envelope";
            break;
        }
        env[envlen] = '\0';

        /* The crc covers the header (crc field as zero), the envelope and the body. */
        uint32_t crc = spool_crc(rec_header_crc(hdr), env, envlen);
        uint64_t boff = off + SPOOL_REC_HDR + envlen;
        int fr = file_crc(fd, boff, bodylen, chunk, &crc);
        if (fr < 0) {
            ret = -1;
            goto out;
        }
        if (fr > 0) {
            why = "short body";
            break;
        }
        if (crc != get_le32(hdr + 20)) {
            why = "crc mismatch";
            break;
        }

        char id[SPOOL_ID_LEN + 1];
        memcpy(id, hdr + 24, SPOOL_ID_LEN);
        id[SPOOL_ID_LEN] = '\0';
        uint64_t recoff = off;
        off = boff + bodylen;
        *valid_end = off;
        if (max_id != NULL && hdr[4] == SPOOL_REC_MSG && !(get_le16(hdr + 6) & SPOOL_FLAG_COPY)
            && strcmp(id, max_id) > 0)
            memcpy(max_id, id, sizeof(id));
        /* Unknown versions and types are the callers' to skip, never errors. */
        if (hdr[5] == SPOOL_REC_VERSION && cb != NULL) {
            struct spool_record rec = {
                .type = hdr[4],
                .id = id,
                .data = env,
                .datalen = envlen,
                .seg = seq,
                .off = recoff,
                .body_off = boff,
                .body_len = bodylen,
            };
            if ((ret = cb(arg, &rec, path)) != 0)
                goto out;
        }
    }
    if (why != NULL) {
        *torn = true;
        log_warn(NULL, "spool: invalid record, rest of segment ignored seg=%s off=%" PRIu64
            " reason=\"%s\" bytes=%" PRIu64, path, off, why, (uint64_t)st.st_size - off);
    }
out:
    if (ret == -1) {
        int e = errno;
        free(chunk);
        free(env);
        close(fd);
        errno = e;
        return -1;
    }
    free(chunk);
    free(env);
    close(fd);
    return ret;
}

/* Walk every segment under dir/seg in number order. */
static int
spool_walk(const char *dir, seg_rec_cb cb, void *arg)
{
    char segdir[SPOOL_DIR_MAX], path[PATH_MAX];
    uint64_t *segs, end;
    size_t n;
    bool torn;
    int ret = 0;

    if ((size_t)snprintf(segdir, sizeof(segdir), "%s/seg", dir) >= sizeof(segdir)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (seg_list(segdir, &segs, &n) < 0)
        return -1;
    for (size_t i = 0; i < n && ret == 0; i++) {
        seg_path(path, sizeof(path), segdir, segs[i]);
        /* Removed by the spool's owner since we listed it: nothing of it is live. */
        if ((ret = seg_scan(path, segs[i], cb, arg, &end, &torn, NULL)) < 0 && errno == ENOENT)
            ret = 0;
    }
    free(segs);
    return ret;
}

struct scan_msgs {
    int (*cb)(void *arg, const char *id, const char *envelope, size_t envlen,
        uint64_t body_off, uint64_t body_len, const char *segpath);
    void *arg;
};

static int
scan_msgs_cb(void *arg, const struct spool_record *r, const char *segpath)
{
    struct scan_msgs *s = arg;

    if (r->type != SPOOL_REC_MSG)
        return 0; /* state records and later kinds are not for this reader */
    return s->cb(s->arg, r->id, r->data, r->datalen, r->body_off, r->body_len, segpath);
}

int
spool_scan(const char *dir, int (*cb)(void *arg, const char *id, const char *envelope,
    size_t envlen, uint64_t body_off, uint64_t body_len, const char *segpath), void *arg)
{
    struct scan_msgs s = {cb, arg};

    return spool_walk(dir, scan_msgs_cb, &s);
}

struct scan_recs {
    int (*cb)(void *arg, const struct spool_record *r);
    void *arg;
};

static int
scan_recs_cb(void *arg, const struct spool_record *r, const char *segpath)
{
    struct scan_recs *s = arg;

    (void)segpath;
    if (r->type != SPOOL_REC_MESSAGE && r->type != SPOOL_REC_STATE)
        return 0;
    return s->cb(s->arg, r);
}

int
spool_scan_records(const char *dir, int (*cb)(void *arg, const struct spool_record *r),
    void *arg)
{
    struct scan_recs s = {cb, arg};

    return spool_walk(dir, scan_recs_cb, &s);
}

/* ---- queue IDs -------------------------------------------------------------------------- */

static const char spool_b36[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

static void
b36_put(char *out, int width, uint64_t v)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = spool_b36[v % 36];
        v /= 36;
    }
}

static bool
b36_get(const char *s, int width, uint64_t *v)
{
    uint64_t x = 0;

    for (int i = 0; i < width; i++) {
        const char *p = strchr(spool_b36, s[i]);
        if (s[i] == '\0' || p == NULL)
            return false;
        x = x * 36 + (uint64_t)(p - spool_b36);
    }
    *v = x;
    return true;
}

/*
 * ID = 10 base-36 digits of microseconds since the epoch, then 4 digits of the
 * pid and 2 of a counter.  Within a process the timestamp part is forced to be
 * strictly increasing (last + 1 when the clock has not moved or went back), so
 * IDs never repeat and sort by creation time.  Across restarts spool_open
 * seeds the last timestamp from the newest record on disk, so even a clock
 * stepped backwards cannot reuse an ID; the pid digits separate processes that
 * share no spool (tests, tools).
 */
void
spool_new_id(struct spool *sp, char id[SPOOL_ID_LEN + 1])
{
    struct timespec ts;
    uint64_t us;

    clock_gettime(CLOCK_REALTIME, &ts);
    us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (us <= sp->id_last_us)
        us = sp->id_last_us + 1;
    sp->id_last_us = us;
    b36_put(id, SPOOL_ID_TS_LEN, us);
    b36_put(id + SPOOL_ID_TS_LEN, 4, sp->id_pid % (36 * 36 * 36 * 36));
    b36_put(id + SPOOL_ID_TS_LEN + 4, 2, sp->id_ctr++ % (36 * 36));
    id[SPOOL_ID_LEN] = '\0';
}

/* ---- messages (loop thread) -------------------------------------------------------------- */

static bool
spool_line_ok(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

static struct spool_msg *
spool_job_new(struct spool *sp, enum spool_job kind)
{
    struct spool_msg *m;

    if ((m = calloc(1, sizeof(*m))) == NULL)
        return NULL;
    m->sp = sp;
    m->kind = kind;
    buf_init(&m->rcpts, 0);
    buf_init(&m->params, 0);
    buf_init(&m->body, sp->spill);
    buf_init(&m->rec, 0);
    buf_init(&m->text, 0);
    buf_init(&m->srec, 0);
    m->tmpfd = -1;
    m->srcfd = -1;
    return m;
}

struct spool_msg *
spool_msg_new(struct spool *sp, const char *id)
{
    struct spool_msg *m;

    if (strlen(id) != SPOOL_ID_LEN || !spool_id_valid(id, SPOOL_ID_LEN)) {
        errno = EINVAL; /* the ID names a file under tmp/: never let it be a path */
        return NULL;
    }
    if ((m = spool_job_new(sp, JOB_MSG)) == NULL)
        return NULL;
    memcpy(m->id, id, SPOOL_ID_LEN + 1);
    m->arrival = time(NULL);
    return m;
}

int
spool_msg_set_sender(struct spool_msg *m, const char *sender)
{
    char *s;

    if (!spool_line_ok(sender)) {
        errno = EINVAL;
        return -1;
    }
    if ((s = strdup(sender)) == NULL)
        return -1;
    free(m->sender);
    m->sender = s;
    return 0;
}

static int
spool_msg_line(struct buf *b, char tag, const char *s)
{
    size_t old = b->len;

    if (!spool_line_ok(s)) {
        errno = EINVAL;
        return -1;
    }
    if (buf_printf(b, "%c %s\n", tag, s) < 0) {
        b->len = old;
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

int
spool_msg_add_rcpt(struct spool_msg *m, const char *rcpt)
{
    return spool_msg_line(&m->rcpts, 'R', rcpt);
}

int
spool_msg_add_param(struct spool_msg *m, const char *kv)
{
    return spool_msg_line(&m->params, 'P', kv);
}

void
spool_msg_set_arrival(struct spool_msg *m, time_t t)
{
    m->arrival = t;
}

static void
spool_tmp_path(const struct spool *sp, const char *id, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", sp->tmpdir, id);
}

/*
 * Move the body from memory to tmp/<id>.
 * XXX this open and these writes run on the loop thread.  They only fill the
 * page cache (nothing here syncs; the segment's fdatasync makes the copy
 * durable), so they are short unless the machine is out of dirty-page
 * headroom.  Moving them to the committer would need a second queue and
 * buffering for every large message in flight, i.e. the unbounded memory the
 * spill exists to avoid.
 */
static int
spool_msg_spill(struct spool_msg *m)
{
    char path[PATH_MAX];
    int fd;

    spool_tmp_path(m->sp, m->id, path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (io_write_all(fd, m->body.data, m->body.len) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    m->tmpfd = fd;
    buf_free(&m->body);
    return 0;
}

int
spool_msg_write(struct spool_msg *m, const void *p, size_t n)
{
    if (m->werr != 0) {
        errno = m->werr;
        return -1;
    }
    if (n == 0)
        return 0;
    if (m->tmpfd < 0 && m->body_len + n > m->sp->spill) {
        if (spool_msg_spill(m) < 0) {
            m->werr = errno;
            return -1;
        }
    }
    if (m->tmpfd >= 0) {
        if (io_write_all(m->tmpfd, p, n) < 0) {
            m->werr = errno;
            return -1;
        }
    } else if (buf_append(&m->body, p, n) < 0) {
        m->werr = errno = ENOMEM;
        return -1;
    }
    m->body_crc = spool_crc(m->body_crc, p, n);
    m->body_len += n;
    return 0;
}

size_t
spool_msg_size(const struct spool_msg *m)
{
    return (size_t)m->body_len;
}

const char *
spool_msg_id(const struct spool_msg *m)
{
    return m->id;
}

/*
 * Release the body (memory and spill file) and whatever else only the
 * committer needs.  The record header and envelope (rec) stay for the done
 * callback.  Either thread; only one owns m at a time.
 */
static void
spool_msg_release_body(struct spool_msg *m)
{
    if (m->srcfd >= 0) {
        close(m->srcfd);
        m->srcfd = -1;
    }
    buf_free(&m->text);
    buf_free(&m->srec);
    if (m->tmpfd >= 0) {
        char path[PATH_MAX];
        close(m->tmpfd);
        m->tmpfd = -1;
        spool_tmp_path(m->sp, m->id, path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT)
            log_warn(m->id, "spool: cannot remove spill file path=%s error=\"%s\"", path,
                strerror(errno));
    }
    buf_free(&m->body);
    buf_free(&m->rcpts);
    buf_free(&m->params);
    free(m->sender);
    m->sender = NULL;
}

static void
spool_msg_free(struct spool_msg *m)
{
    spool_msg_release_body(m);
    buf_free(&m->rec);
    free(m);
}

void
spool_msg_abort(struct spool_msg *m)
{
    if (m != NULL)
        spool_msg_free(m);
}

/*
 * r holds room for a header, then the record's data (envelope or state text):
 * fill in the header and its crc (over header, data, and a body of body_len
 * bytes whose own crc is body_crc), and put a NUL after the data for readers.
 * -1 with errno.
 */
static int
rec_seal(struct buf *r, unsigned type, uint16_t flags, const char *id, uint64_t body_len,
    uint32_t body_crc)
{
    unsigned char *hdr = (unsigned char *)r->data;
    size_t datalen = r->len - SPOOL_REC_HDR;
    uint32_t crc;

    if (datalen > SPOOL_ENV_MAX) {
        errno = E2BIG;
        return -1;
    }
    if (buf_append(r, "", 1) < 0) {
        errno = ENOMEM;
        return -1;
    }
    r->len--;
    hdr = (unsigned char *)r->data;
    memcpy(hdr, spool_magic, 4);
    hdr[4] = (unsigned char)type;
    hdr[5] = SPOOL_REC_VERSION;
    put_le16(hdr + 6, flags);
    put_le32(hdr + 8, (uint32_t)datalen);
    put_le64(hdr + 12, body_len);
    put_le32(hdr + 20, 0);
    memcpy(hdr + 24, id, SPOOL_ID_LEN);
    crc = spool_crc(0, hdr, SPOOL_REC_HDR);
    crc = spool_crc(crc, r->data + SPOOL_REC_HDR, datalen);
    crc = (uint32_t)crc32_combine(crc, body_crc, (z_off_t)body_len);
    put_le32(hdr + 20, crc);
    return 0;
}

/* A whole state record for id into r.  -1 with errno. */
static int
rec_build_state(struct buf *r, const char *id, const void *text, size_t len)
{
    unsigned char hdr[SPOOL_REC_HDR] = {0};

    if (len > SPOOL_ENV_MAX) {
        errno = E2BIG;
        return -1;
    }
    if (buf_append(r, hdr, sizeof(hdr)) < 0 || buf_append(r, text, len) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return rec_seal(r, SPOOL_REC_STATE, 0, id, 0, 0);
}

/* Header + envelope into m->rec, and the record crc into the header.  -1 with errno. */
static int
spool_msg_build(struct spool_msg *m)
{
    unsigned char hdr[SPOOL_REC_HDR];
    struct buf *r = &m->rec;

    if (m->werr != 0) {
        errno = m->werr;
        return -1;
    }
    memset(hdr, 0, sizeof(hdr));
    if (buf_append(r, hdr, sizeof(hdr)) < 0
        || buf_printf(r, "S %s\n", m->sender ? m->sender : "") < 0
        || buf_append(r, m->rcpts.data, m->rcpts.len) < 0
        || buf_append(r, m->params.data, m->params.len) < 0
        || buf_printf(r, "T %lld\n", (long long)m->arrival) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (rec_seal(r, SPOOL_REC_MSG, 0, m->id, m->body_len, m->body_crc) < 0)
        return -1;
    /* The envelope pieces are in rec now; free them early. */
    buf_free(&m->rcpts);
    buf_free(&m->params);
    return 0;
}

static void
spool_wake_loop(struct spool *sp)
{
    uint64_t one = 1;

    /* Only fails with EAGAIN when the counter is huge: the loop is awake anyway. */
    if (write(sp->evfd, &one, sizeof(one)) < 0) {
    }
}

/* Hand a job to the committer (its err, if set already, is passed through untouched). */
static void
spool_enqueue(struct spool *sp, struct spool_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&sp->mu);
    *sp->pending_tail = m;
    sp->pending_tail = &m->next;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

void
spool_commit(struct spool *sp, struct spool_msg *m, spool_done_fn done, void *arg)
{
    m->done = done;
    m->arg = arg;
    if (spool_msg_build(m) < 0)
        m->err = errno ? errno : EIO;
    spool_enqueue(sp, m);
}

void
spool_commit_rec(struct spool *sp, struct spool_msg *m, spool_done_rec_fn done, void *arg)
{
    m->done_rec = done;
    m->arg = arg;
    if (spool_msg_build(m) < 0)
        m->err = errno ? errno : EIO;
    spool_enqueue(sp, m);
}

/*
 * A job that cannot even be built (out of memory) still owes its caller one
 * callback; with no job to carry it, it is run right away.  XXX that is the
 * one callback not run from spool_reap().
 */
static void
spool_job_oom(spool_done_rec_fn done, void *arg)
{
    if (done != NULL)
        done(arg, ENOMEM, NULL);
}

void
spool_commit_state(struct spool *sp, const char *id, const char *text, size_t len,
    spool_done_rec_fn done, void *arg)
{
    struct spool_msg *m = spool_job_new(sp, JOB_STATE);

    if (m == NULL) {
        spool_job_oom(done, arg);
        return;
    }
    m->done_rec = done;
    m->arg = arg;
    if (strlen(id) != SPOOL_ID_LEN || !spool_id_valid(id, SPOOL_ID_LEN)) {
        m->err = EINVAL;
    } else {
        memcpy(m->id, id, SPOOL_ID_LEN + 1);
        if (rec_build_state(&m->rec, id, text, len) < 0)
            m->err = errno ? errno : EIO;
    }
    spool_enqueue(sp, m);
}

void
spool_copy_forward(struct spool *sp, uint64_t seg, uint64_t off, const char *text, size_t len,
    spool_done_rec_fn done, void *arg)
{
    struct spool_msg *m = spool_job_new(sp, JOB_COPY);

    if (m == NULL) {
        spool_job_oom(done, arg);
        return;
    }
    m->done_rec = done;
    m->arg = arg;
    m->seg = seg;
    m->src_off = off;
    /* The state record is built by the committer: only it learns the ID, from the source. */
    if (len > SPOOL_ENV_MAX)
        m->err = E2BIG;
    else if (buf_append(&m->text, text, len) < 0)
        m->err = ENOMEM;
    spool_enqueue(sp, m);
}

/* ---- segments: the list, the active one, removal (loop thread) ---------------------------- */

/* Under sp->mu.  Keeps sp->segs ascending and without duplicates; -1 if out of memory. */
static int
seglist_add(struct spool *sp, uint64_t seg)
{
    size_t i;

    for (i = 0; i < sp->nsegs; i++)
        if (sp->segs[i] == seg)
            return 0;
    if (sp->nsegs == sp->capsegs) {
        size_t ncap = sp->capsegs ? sp->capsegs * 2 : 64;
        uint64_t *v = realloc(sp->segs, ncap * sizeof(*v));
        if (v == NULL)
            return -1;
        sp->segs = v;
        sp->capsegs = ncap;
    }
    for (i = sp->nsegs; i > 0 && sp->segs[i - 1] > seg; i--)
        sp->segs[i] = sp->segs[i - 1];
    sp->segs[i] = seg;
    sp->nsegs++;
    return 0;
}

/* Under sp->mu.  false if seg was not listed. */
static bool
seglist_del(struct spool *sp, uint64_t seg)
{
    for (size_t i = 0; i < sp->nsegs; i++) {
        if (sp->segs[i] == seg) {
            memmove(sp->segs + i, sp->segs + i + 1, (sp->nsegs - i - 1) * sizeof(*sp->segs));
            sp->nsegs--;
            return true;
        }
    }
    return false;
}

uint64_t
spool_active_segment(struct spool *sp)
{
    uint64_t a;

    pthread_mutex_lock(&sp->mu);
    a = sp->active;
    pthread_mutex_unlock(&sp->mu);
    return a;
}

int
spool_segments(struct spool *sp, uint64_t **segs)
{
    int n;

    pthread_mutex_lock(&sp->mu);
    n = (int)sp->nsegs;
    *segs = malloc((sp->nsegs ? sp->nsegs : 1) * sizeof(**segs));
    if (*segs == NULL)
        n = -1;
    else if (sp->nsegs > 0)
        memcpy(*segs, sp->segs, sp->nsegs * sizeof(**segs));
    pthread_mutex_unlock(&sp->mu);
    if (n < 0)
        errno = ENOMEM;
    return n;
}

/* Under sp->mu: does a finished job whose callback has not run yet live in seg? */
static bool
seg_unreported(const struct spool_msg *l, uint64_t seg)
{
    for (; l != NULL; l = l->next)
        if (l->kind != JOB_REMOVE && l->err == 0 && l->rec_seg == seg)
            return true;
    return false;
}

int
spool_segment_remove(struct spool *sp, uint64_t seg)
{
    struct spool_msg *m = spool_job_new(sp, JOB_REMOVE);
    int err = 0;

    if (m == NULL)
        return -1;
    m->seg = seg;
    pthread_mutex_lock(&sp->mu);
    /*
     * The in-flight batch goes to the active segment (or a newer one), so
     * beyond the active one only finished jobs whose callbacks have not run can
     * be in seg: the queue has not indexed those yet and must not lose them.
     */
    if (seg == sp->active || seg_unreported(sp->done, seg) || seg_unreported(sp->reaping, seg))
        err = EBUSY;
    else if (!seglist_del(sp, seg))
        err = ENOENT;
    if (err == 0) {
        *sp->pending_tail = m;
        sp->pending_tail = &m->next;
        pthread_cond_signal(&sp->cv);
    }
    pthread_mutex_unlock(&sp->mu);
    if (err != 0) {
        spool_msg_free(m);
        errno = err;
        return -1;
    }
    return 0;
}

int
spool_segment_open(struct spool *sp, uint64_t seg)
{
    char path[PATH_MAX];

    seg_path(path, sizeof(path), sp->segdir, seg);
    return open(path, O_RDONLY | O_CLOEXEC);
}

const char *
spool_dir(const struct spool *sp)
{
    return sp->dir;
}

static void
spool_detach_list(struct spool_msg *l, void *arg)
{
    for (; l != NULL; l = l->next)
        if (l->arg == arg)
            l->detached = true;
}

void
spool_commit_detach(struct spool *sp, void *arg)
{
    /* Under the mutex: the committer moves entries from pending to in-flight to done. */
    pthread_mutex_lock(&sp->mu);
    spool_detach_list(sp->pending, arg);
    spool_detach_list(sp->inflight, arg);
    spool_detach_list(sp->done, arg);
    spool_detach_list(sp->reaping, arg);
    pthread_mutex_unlock(&sp->mu);
}

void
spool_reap(struct spool *sp)
{
    struct spool_msg *m;
    uint64_t v;

    /* A done callback that calls spool_reap again: the outer call finishes the job. */
    if (sp->reaping != NULL)
        return;
    /* Drain the eventfd before taking the list, so no completion is left unsignalled. */
    if (read(sp->evfd, &v, sizeof(v)) < 0) {
    }
    pthread_mutex_lock(&sp->mu);
    sp->reaping = sp->done;
    sp->done = NULL;
    sp->done_tail = &sp->done;
    pthread_mutex_unlock(&sp->mu);
    while ((m = sp->reaping) != NULL) {
        pthread_mutex_lock(&sp->mu);
        sp->reaping = m->next;
        bool call = !m->detached;
        pthread_mutex_unlock(&sp->mu);
        if (call && m->done != NULL) {
            m->done(m->arg, m->err, m->id);
        } else if (call && m->done_rec != NULL) {
            struct spool_record r = {
                .type = m->kind == JOB_STATE ? SPOOL_REC_STATE : SPOOL_REC_MESSAGE,
                .id = m->id,
                .data = m->rec.data + SPOOL_REC_HDR,
                .datalen = m->rec.len - SPOOL_REC_HDR,
                .seg = m->rec_seg,
                .off = m->rec_off,
                .body_off = m->rec_off + m->rec.len,
                .body_len = m->body_len,
            };
            m->done_rec(m->arg, m->err, m->err == 0 ? &r : NULL);
        }
        spool_msg_free(m);
    }
}

int
spool_event_fd(struct spool *sp)
{
    return sp->evfd;
}

void
spool_get_stats(struct spool *sp, struct spool_stats *st)
{
    pthread_mutex_lock(&sp->mu);
    *st = sp->stats;
    pthread_mutex_unlock(&sp->mu);
}

void
spool_test_fail_next(struct spool *sp, int err)
{
    pthread_mutex_lock(&sp->mu);
    sp->fail_next = err;
    pthread_mutex_unlock(&sp->mu);
}

void
spool_test_set_segment_max(struct spool *sp, uint64_t bytes)
{
    pthread_mutex_lock(&sp->mu);
    sp->seg_max = bytes;
    pthread_mutex_unlock(&sp->mu);
}

/* ---- the committer ------------------------------------------------------------------------ */

static int
seg_create(struct spool *sp)
{
    char path[PATH_MAX];
    int fd;

    for (;;) {
        seg_path(path, sizeof(path), sp->segdir, sp->segseq);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            break;
        sp->segseq++; /* a failed segment left behind by this process; never reuse one */
    }
    if (fd < 0) {
        int e = errno;
        log_warn(NULL, "spool: cannot create segment path=%s error=\"%s\"", path, strerror(e));
        errno = e;
        return -1;
    }
    pthread_mutex_lock(&sp->mu);
    if (seglist_add(sp, sp->segseq) < 0) {
        pthread_mutex_unlock(&sp->mu);
        close(fd);
        unlink(path);
        errno = ENOMEM;
        return -1;
    }
    sp->active = sp->segseq;
    pthread_mutex_unlock(&sp->mu);
    sp->segseq++;
    sp->segfd = fd;
    sp->segoff = 0;
    sp->segfresh = true;
    log_debug(NULL, "spool: new segment path=%s", path);
    return 0;
}

/* pwritev everything in iov at *off; advances *off.  -1 with errno. */
static int
seg_writev(int fd, struct iovec *iov, int cnt, uint64_t *off)
{
    while (cnt > 0) {
        ssize_t n = pwritev(fd, iov, cnt, (off_t)*off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        *off += (uint64_t)n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/*
 * Copy len bytes of srcfd at src into the segment at *off (a spilled body, or
 * the body of a record copied forward): in-kernel when the filesystem lets us.
 */
static int
seg_copy_range(int segfd, int srcfd, uint64_t src, uint64_t len, uint64_t *off)
{
    loff_t in = (loff_t)src, out = (loff_t)*off;
    uint64_t left = len;
    char *buf;

    while (left > 0) {
        ssize_t n = copy_file_range(srcfd, &in, segfd, &out, left, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)
                break;
            return -1;
        }
        if (n == 0) {
            errno = EIO; /* the source is shorter than it should be */
            return -1;
        }
        left -= (uint64_t)n;
    }
    if (left > 0) {
        if ((buf = malloc(SPOOL_COPY_CHUNK)) == NULL)
            return -1;
        while (left > 0) {
            size_t k = left > SPOOL_COPY_CHUNK ? SPOOL_COPY_CHUNK : (size_t)left;
            ssize_t r = pread_all(srcfd, buf, k, (uint64_t)in);
            if (r < 0 || (size_t)r < k) {
                if (r >= 0)
                    errno = EIO;
                free(buf);
                return -1;
            }
            struct iovec v = {buf, k};
            uint64_t o = (uint64_t)out;
            if (seg_writev(segfd, &v, 1, &o) < 0) {
                free(buf);
                return -1;
            }
            in += (loff_t)k;
            out = (loff_t)o;
            left -= k;
        }
        free(buf);
    }
    *off = (uint64_t)out;
    return 0;
}

/*
 * Prepare a JOB_COPY before its batch is written: open the source segment,
 * read the record's header and envelope, and check the whole record's crc
 * again (a copy of a rotten record would end the scan of the new segment
 * there, and take every later record of it along).  The copy's header gets
 * the COPY flag, so recovery does not take its old ID for the newest one.
 * On failure m->err is set; the rest of the batch goes on.
 */
static void
spool_copy_prepare(struct spool *sp, struct spool_msg *m)
{
    unsigned char hdr[SPOOL_REC_HDR], *chunk = NULL;
    char path[PATH_MAX];
    const char *why = NULL;
    struct stat st;
    uint32_t envlen, crc, bcrc = 0;
    uint64_t bodylen;
    ssize_t r;
    int fr;

    seg_path(path, sizeof(path), sp->segdir, m->seg);
    if ((m->srcfd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(m->srcfd, &st) < 0) {
        m->err = errno;
        log_warn(NULL, "spool: cannot open segment to copy from path=%s error=\"%s\"", path,
            strerror(m->err));
        return;
    }
    if (m->src_off > (uint64_t)st.st_size || (uint64_t)st.st_size - m->src_off < SPOOL_REC_HDR) {
        why = "offset past end of segment";
        goto bad;
    }
    if ((r = pread_all(m->srcfd, hdr, sizeof(hdr), m->src_off)) < 0)
        goto ioerr;
    if (r < SPOOL_REC_HDR) {
        why = "short header";
        goto bad;
    }
    if ((why = rec_check_header(hdr, (uint64_t)st.st_size - m->src_off, &envlen, &bodylen))
        != NULL)
        goto bad;
    if (hdr[4] != SPOOL_REC_MSG || hdr[5] != SPOOL_REC_VERSION) {
        why = "not a message record";
        goto bad;
    }
    buf_reset(&m->rec);
    if (buf_append(&m->rec, hdr, sizeof(hdr)) < 0) {
        m->err = ENOMEM;
        return;
    }
    for (uint32_t got = 0; got < envlen;) {
        char tmp[4096];
        uint32_t k = envlen - got > sizeof(tmp) ? (uint32_t)sizeof(tmp) : envlen - got;
        if ((r = pread_all(m->srcfd, tmp, k, m->src_off + SPOOL_REC_HDR + got)) < 0)
            goto ioerr;
        if ((uint32_t)r < k) {
            why = "short envelope";
            goto bad;
        }
        if (buf_append(&m->rec, tmp, k) < 0) {
            m->err = ENOMEM;
            return;
        }
        got += k;
    }
    m->src_body_off = m->src_off + SPOOL_REC_HDR + envlen;
    if ((chunk = malloc(SPOOL_COPY_CHUNK)) == NULL) {
        m->err = ENOMEM;
        return;
    }
    fr = file_crc(m->srcfd, m->src_body_off, bodylen, chunk, &bcrc);
    free(chunk);
    if (fr < 0)
        goto ioerr;
    if (fr > 0) {
        why = "short body";
        goto bad;
    }
    crc = spool_crc(rec_header_crc(hdr), m->rec.data + SPOOL_REC_HDR, envlen);
    if ((uint32_t)crc32_combine(crc, bcrc, (z_off_t)bodylen) != get_le32(hdr + 20)) {
        why = "crc mismatch";
        goto bad;
    }
    memcpy(m->id, hdr + 24, SPOOL_ID_LEN);
    m->id[SPOOL_ID_LEN] = '\0';
    m->body_len = bodylen;
    if (rec_seal(&m->rec, SPOOL_REC_MSG, (uint16_t)(get_le16(hdr + 6) | SPOOL_FLAG_COPY), m->id,
            bodylen, bcrc) < 0
        || rec_build_state(&m->srec, m->id, m->text.data, m->text.len) < 0)
        m->err = errno ? errno : ENOMEM;
    return;

ioerr:
    m->err = errno;
    log_warn(NULL, "spool: cannot read record to copy path=%s off=%" PRIu64 " error=\"%s\"",
        path, m->src_off, strerror(m->err));
    return;
bad:
    m->err = EIO;
    log_warn(NULL, "spool: record to copy is invalid, not copied path=%s off=%" PRIu64
        " reason=\"%s\"", path, m->src_off, why);
}

/*
 * The batch failed after some of it may have reached the segment: cut it off
 * and abandon the segment.  After a failed fdatasync the kernel may already
 * have dropped the dirty pages and cleared the error (fsyncgate), so nothing
 * about this file's unsynced state can be trusted; the next batch starts a
 * fresh segment.  XXX if the ftruncate (or its sync) fails too and the machine
 * then crashes, records of the failed batch may survive and be recovered:
 * those senders got a 4xx and will send again, so this can duplicate a
 * message, never lose one.
 */
static void
spool_batch_fail(struct spool *sp, uint64_t start, int err)
{
    uint64_t seq = sp->segseq - 1;

    log_warn(NULL, "spool: batch failed, cut back seq=%" PRIu64 " off=%" PRIu64
        " error=\"%s\"", seq, start, strerror(err));
    if (ftruncate(sp->segfd, (off_t)start) < 0 || (!sp->nosync && fsync(sp->segfd) < 0))
        log_error(NULL, "spool: cannot cut failed batch off segment seq=%" PRIu64
            " error=\"%s\"", seq, strerror(errno));
    close(sp->segfd);
    sp->segfd = -1;
    pthread_mutex_lock(&sp->mu);
    sp->active = 0;
    pthread_mutex_unlock(&sp->mu);
    if (start == 0) {
        /* Nothing acknowledged lives in it: do not leave an empty file per failure. */
        char path[PATH_MAX];
        seg_path(path, sizeof(path), sp->segdir, seq);
        if (unlink(path) == 0) {
            pthread_mutex_lock(&sp->mu);
            seglist_del(sp, seq);
            pthread_mutex_unlock(&sp->mu);
        }
    }
}

/* Queue one piece for pwritev, flushing first when iov is full.  -1 with errno. */
static int
seg_put(struct spool *sp, struct iovec *iov, int *cnt, uint64_t *off, uint64_t *pos,
    const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (*cnt == IOV_MAX) {
        if (seg_writev(sp->segfd, iov, *cnt, off) < 0)
            return -1;
        *cnt = 0;
    }
    iov[(*cnt)++] = (struct iovec){(void *)p, n};
    *pos += n;
    return 0;
}

/* Write out what iov holds.  -1 with errno. */
static int
seg_flush(struct spool *sp, struct iovec *iov, int *cnt, uint64_t *off)
{
    int r = *cnt > 0 ? seg_writev(sp->segfd, iov, *cnt, off) : 0;

    *cnt = 0;
    return r;
}

/*
 * Write and sync the records of one batch.  0, or the errno that every
 * record job of the batch gets.  *off tracks what was written, pos what was
 * queued in iov; they meet at every flush.
 */
static int
spool_write_batch(struct spool *sp, struct spool_msg *batch, int inject, uint64_t seg_max,
    uint64_t *nbytes)
{
    struct iovec iov[IOV_MAX];
    uint64_t start, off, pos, seq;
    int cnt = 0, err = 0;
    bool any = false;

    for (struct spool_msg *m = batch; m != NULL; m = m->next) {
        if (m->kind == JOB_COPY && m->err == 0)
            spool_copy_prepare(sp, m);
        any = any || (m->err == 0 && m->kind != JOB_REMOVE);
    }
    if (!any)
        return 0;
    if (sp->segfd >= 0 && sp->segoff >= seg_max) {
        /* Everything in it is synced already: closing needs no sync. */
        close(sp->segfd);
        sp->segfd = -1;
    }
    if (sp->segfd < 0 && seg_create(sp) < 0)
        return errno;
    seq = sp->segseq - 1;
    start = off = pos = sp->segoff;
    for (struct spool_msg *m = batch; m != NULL && err == 0; m = m->next) {
        if (m->err != 0 || m->kind == JOB_REMOVE)
            continue;
        m->rec_seg = seq;
        m->rec_off = pos;
        if (seg_put(sp, iov, &cnt, &off, &pos, m->rec.data, m->rec.len) < 0) {
            err = errno;
            break;
        }
        if (m->kind == JOB_MSG && m->tmpfd < 0) {
            if (seg_put(sp, iov, &cnt, &off, &pos, m->body.data, m->body.len) < 0)
                err = errno;
        } else if (m->kind == JOB_MSG || m->kind == JOB_COPY) {
            int fd = m->kind == JOB_MSG ? m->tmpfd : m->srcfd;
            uint64_t src = m->kind == JOB_MSG ? 0 : m->src_body_off;
            if (seg_flush(sp, iov, &cnt, &off) < 0
                || seg_copy_range(sp->segfd, fd, src, m->body_len, &off) < 0)
                err = errno;
            pos = off;
            if (err == 0 && m->kind == JOB_COPY
                && seg_put(sp, iov, &cnt, &off, &pos, m->srec.data, m->srec.len) < 0)
                err = errno;
        }
    }
    if (err == 0 && seg_flush(sp, iov, &cnt, &off) < 0)
        err = errno;
    if (err == 0 && inject != 0)
        err = inject;
    if (err == 0 && !sp->nosync) {
        /* A new file needs its inode and its directory entry on disk too. */
        if ((sp->segfresh ? fsync(sp->segfd) : fdatasync(sp->segfd)) < 0
            || (sp->segfresh && fsync(sp->segdirfd) < 0))
            err = errno;
    }
    if (err != 0) {
        spool_batch_fail(sp, start, err);
        return err;
    }
    sp->segfresh = false;
    sp->segoff = off;
    *nbytes = off - start;
    return 0;
}

/*
 * The segment removals of a batch, after its records are durable: a state
 * record handed over before a removal is on disk before the unlink.  In
 * order, oldest first as the queue asked; after a failure the rest are not
 * attempted (the queue's oldest-first argument would not hold for them) and
 * go back on the list, so the queue retries them later.  Then one fsync of
 * seg/, before any job of the batch is reported.
 */
static void
spool_do_removals(struct spool *sp, struct spool_msg *batch)
{
    char path[PATH_MAX];
    bool any = false, failed = false;

    for (struct spool_msg *m = batch; m != NULL; m = m->next) {
        if (m->kind != JOB_REMOVE || m->err != 0)
            continue;
        seg_path(path, sizeof(path), sp->segdir, m->seg);
        if (failed) {
            m->err = EAGAIN;
        } else if (unlink(path) < 0 && errno != ENOENT) {
            m->err = errno;
            failed = true;
            log_error(NULL, "spool: cannot remove segment path=%s error=\"%s\"", path,
                strerror(m->err));
        } else {
            any = true;
            log_info(NULL, "spool: removed segment path=%s", path);
        }
        if (m->err != 0) {
            pthread_mutex_lock(&sp->mu);
            if (seglist_add(sp, m->seg) < 0)
                log_error(NULL, "spool: out of memory relisting segment path=%s", path);
            pthread_mutex_unlock(&sp->mu);
        }
    }
    /*
     * XXX if this fsync fails the unlinks may not be durable: after a crash an
     * old segment can come back and resurrect finished messages (a duplicate
     * delivery, never a loss).  Nothing better to do than say so.
     */
    if (any && !sp->nosync && fsync(sp->segdirfd) < 0)
        log_error(NULL, "spool: cannot sync segment directory error=\"%s\"", strerror(errno));
}

#define SPOOL_STATE_LINGER_MS 5

/* Is every job in the list a state record? */
static bool
spool_state_only(const struct spool_msg *m)
{
    for (; m != NULL; m = m->next)
        if (m->kind != JOB_STATE)
            return false;
    return true;
}

static void *
spool_committer(void *arg)
{
    struct spool *sp = arg;

    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (sp->pending == NULL && !sp->stopping)
            pthread_cond_wait(&sp->cv, &sp->mu);
        if (sp->pending == NULL)
            break; /* stopping, and everything committed */
        /*
         * Only state records waiting (deliveries being recorded): give them up to
         * SPOOL_STATE_LINGER_MS to ride with the next message batch instead of
         * costing a sync of their own.  Safe: a state record that a crash loses
         * means a delivery done twice, never a message lost, and nobody waits
         * for it the way a client waits for its 250.
         */
        if (!sp->stopping && spool_state_only(sp->pending)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += SPOOL_STATE_LINGER_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (!sp->stopping && spool_state_only(sp->pending) &&
                   pthread_cond_timedwait(&sp->cv, &sp->mu, &until) == 0)
                ;
        }
        /* Take the whole list: everything that arrived during the last sync is one batch. */
        struct spool_msg *batch = sp->pending;
        sp->pending = NULL;
        sp->pending_tail = &sp->pending;
        sp->inflight = batch;
        int inject = sp->fail_next;
        sp->fail_next = 0;
        uint64_t seg_max = sp->seg_max;
        pthread_mutex_unlock(&sp->mu);

        uint64_t nbytes = 0, ok = 0, bad = 0;
        if (sp->test_delay_ms > 0) {
            /* Widens the window between "handed over" and "on disk" for the crash tests. */
            struct timespec ts = {sp->test_delay_ms / 1000, (sp->test_delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        int err = spool_write_batch(sp, batch, inject, seg_max, &nbytes);
        struct spool_msg *last = NULL;
        for (struct spool_msg *m = batch; m != NULL; m = m->next) {
            if (m->kind != JOB_REMOVE) {
                if (m->err == 0)
                    m->err = err;
                if (m->err == 0)
                    ok++;
                else
                    bad++;
            }
            /* Free the body here, off the loop thread (the unlink is a metadata write). */
            spool_msg_release_body(m);
            last = m;
        }
        spool_do_removals(sp, batch);

        pthread_mutex_lock(&sp->mu);
        sp->inflight = NULL;
        *sp->done_tail = batch;
        sp->done_tail = &last->next;
        sp->stats.committed += ok;
        sp->stats.failed += bad;
        sp->stats.bytes += nbytes;
        if (nbytes > 0)
            sp->stats.batches++;
        spool_wake_loop(sp);
    }
    pthread_mutex_unlock(&sp->mu);
    if (sp->segfd >= 0) {
        close(sp->segfd);
        sp->segfd = -1;
    }
    return NULL;
}

/* ---- open and close ------------------------------------------------------------------------ */

static int
spool_mkdir(const char *path, bool *created)
{
    if (mkdir(path, 0700) == 0) {
        *created = true;
        return 0;
    }
    return errno == EEXIST ? 0 : -1;
}

/* Remove spill files of a previous run: their messages were never committed. */
static void
spool_clean_tmp(const char *tmpdir)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char path[PATH_MAX];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
        if (unlink(path) == 0)
            log_info(NULL, "spool: removed stale spill file path=%s", path);
    }
    closedir(d);
}

/*
 * Recovery on open: cut a torn tail off the newest segment, learn the newest
 * queue ID (to keep IDs increasing across restarts), and choose the number of
 * the next segment.  -1 with errno on an I/O error.
 */
static int
spool_recover(struct spool *sp)
{
    char path[PATH_MAX], last_id[SPOOL_ID_LEN + 1] = "";
    uint64_t *segs, end;
    size_t n;
    bool torn;

    if (seg_list(sp->segdir, &segs, &n) < 0)
        return -1;
    sp->segseq = n > 0 ? segs[n - 1] + 1 : 1;
    /*
     * The newest ID is the greatest of the newest segment that holds a message
     * record of its own (copies moved forward by compaction carry old IDs).
     * XXX within that segment commits may have finished out of ID order, and
     * an older segment could hold a greater ID by a few microseconds; a
     * collision would also need the same pid digits and counter.
     */
    for (size_t i = n; i-- > 0 && last_id[0] == '\0';) {
        seg_path(path, sizeof(path), sp->segdir, segs[i]);
        if (seg_scan(path, segs[i], NULL, NULL, &end, &torn, last_id) < 0) {
            free(segs);
            return -1;
        }
        /*
         * Only the newest segment can have a tail from a crash (older ones were
         * closed after a successful sync, or cut back after a failure).
         * XXX a torn record in the newest segment is taken to be the unacked
         * batch of the crash; if it were bit rot in the middle, the acked
         * records after it are already unreachable by spool_scan, and the cut
         * makes that final.  A checksum per batch would not tell them apart
         * either; keeping a copy of the tail would.
         */
        if (torn && i == n - 1) {
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ftruncate(fd, (off_t)end) < 0 || fsync(fd) < 0) {
                int e = errno;
                if (fd >= 0)
                    close(fd);
                free(segs);
                errno = e;
                return -1;
            }
            close(fd);
            log_warn(NULL, "spool: cut torn tail of newest segment path=%s size=%" PRIu64, path,
                end);
        }
    }
    sp->segs = segs;
    sp->nsegs = sp->capsegs = n;
    uint64_t us;
    if (last_id[0] != '\0' && b36_get(last_id, SPOOL_ID_TS_LEN, &us))
        sp->id_last_us = us;
    return 0;
}

struct spool *
spool_open(const char *dir, size_t spill_threshold, char *err, size_t errlen)
{
    struct spool *sp;
    char path[PATH_MAX];
    bool created = false;
    const char *what;
    int e;

    if ((sp = calloc(1, sizeof(*sp))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sp->segdirfd = sp->lockfd = sp->evfd = sp->segfd = -1;
    sp->spill = spill_threshold;
    sp->id_pid = (unsigned)getpid();
    sp->pending_tail = &sp->pending;
    sp->done_tail = &sp->done;
    sp->seg_max = SPOOL_SEG_MAX;
    if ((size_t)snprintf(sp->dir, sizeof(sp->dir), "%s", dir) >= sizeof(sp->dir)
        || (size_t)snprintf(sp->segdir, sizeof(sp->segdir), "%s/seg", dir) >= sizeof(sp->segdir)
        || (size_t)snprintf(sp->tmpdir, sizeof(sp->tmpdir), "%s/tmp", dir)
            >= sizeof(sp->tmpdir)) {
        snprintf(err, errlen, "%s: path too long", dir);
        free(sp);
        return NULL;
    }

    what = dir;
    if (spool_mkdir(dir, &created) < 0)
        goto fail;
    /* One process owns a spool: two committers appending to one segment would corrupt it. */
    snprintf(path, sizeof(path), "%s/lock", dir);
    what = path;
    if ((sp->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
        goto fail;
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK) {
            snprintf(err, errlen, "%s: spool in use by another process", dir);
            e = EBUSY;
            goto fail_msg;
        }
        goto fail;
    }
    what = sp->segdir;
    if (spool_mkdir(sp->segdir, &created) < 0)
        goto fail;
    what = sp->tmpdir;
    if (spool_mkdir(sp->tmpdir, &created) < 0)
        goto fail;
    what = dir;
    if (created && fsync_path(dir) < 0)
        goto fail;
    what = sp->segdir;
    if ((sp->segdirfd = open(sp->segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto fail;
    if (spool_recover(sp) < 0)
        goto fail;
    spool_clean_tmp(sp->tmpdir);

    const char *dl = getenv("TERN_TEST_COMMIT_DELAY_MS");
    if (dl != NULL && atoi(dl) > 0) {
        sp->test_delay_ms = atoi(dl);
        log_warn(NULL, "spool: TERN_TEST_COMMIT_DELAY_MS=%d: every batch waits before it is "
            "written; test use only dir=%s", sp->test_delay_ms, dir);
    }
    const char *ns = getenv("TERN_SPOOL_NOSYNC");
    if (ns != NULL && strcmp(ns, "1") == 0) {
        sp->nosync = true;
        log_warn(NULL, "spool: TERN_SPOOL_NOSYNC=1: NOT SYNCING, acknowledged mail WILL be "
            "lost in a crash; test use only dir=%s", dir);
    }

    what = "eventfd";
    if ((sp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        goto fail;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cv, NULL);
    if ((e = pthread_create(&sp->thread, NULL, spool_committer, sp)) != 0) {
        pthread_mutex_destroy(&sp->mu);
        pthread_cond_destroy(&sp->cv);
        snprintf(err, errlen, "cannot start committer thread: %s", strerror(e));
        goto fail_msg;
    }
    return sp;

fail:
    e = errno;
    snprintf(err, errlen, "%s: %s", what, strerror(e));
fail_msg:
    if (sp->evfd >= 0)
        close(sp->evfd);
    if (sp->segdirfd >= 0)
        close(sp->segdirfd);
    if (sp->lockfd >= 0)
        close(sp->lockfd);
    free(sp->segs);
    free(sp);
    errno = e;
    return NULL;
}

void
spool_close(struct spool *sp)
{
    if (sp == NULL)
        return;
    pthread_mutex_lock(&sp->mu);
    sp->stopping = true;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    pthread_join(sp->thread, NULL);
    /* Every commit gets its one callback, the last ones here. */
    spool_reap(sp);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    close(sp->evfd);
    close(sp->segdirfd);
    close(sp->lockfd); /* releases the flock */
    free(sp->segs);
    free(sp);
}
