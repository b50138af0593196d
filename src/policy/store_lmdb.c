/*
 * store_lmdb.c - the embedded state store: one LMDB environment (a directory), on the loop.
 *
 * Each record is {expires_ms, value} (two native int64); a record past its expiry reads as
 * absent, and a purge on a timer deletes such records a bounded slice at a time, so the
 * map (STORE_LMDB_MAPSIZE) holds live state only.  When it is full all the same, the write
 * fails (the caller applies policy_on_error) and a purge runs at once.
 *
 * Durability: the environment is opened with MDB_NOSYNC: a commit writes the pages to the
 * page cache and returns (a few microseconds, measured in docs/design.md), so it is done on
 * the loop thread.  A crash of ternd loses nothing (the kernel has the pages); a crash of
 * the system may lose the last commits and, LMDB warns, may leave the file inconsistent.
 * So the directory keeps a file "boot_id": the boot during which the store was last open,
 * or "clean" after a clean close (which syncs).  At open, a store last used during another
 * boot and not closed cleanly is discarded: greylisting starts over (senders retry once
 * more), rate windows start empty.  That is the whole cost of a system crash.
 * XXX: several ternd sharing one LMDB directory share that file too: the first to close
 * cleanly writes "clean" while the others may still write; a system crash after that keeps
 * a store the others left unsynced.  Give each ternd its own directory, or use Redis.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/store_impl.h"
#include "util/io.h"
#include "util/log.h"

#define STORE_LMDB_MAPSIZE (256UL * 1024 * 1024) /* some 2-3 million records */
#define STORE_LMDB_PURGE_SECONDS 60
#define STORE_LMDB_PURGE_SLICE 20000 /* records looked at per purge */

struct lmdb_rec {
    int64_t expires_ms;
    int64_t value;
};

struct store_lmdb {
    struct store *st;
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *rtxn; /* a reset read transaction, renewed for each get */
    struct event *ev_purge;
    char purge_from[STORE_KEY_MAX]; /* where the last purge slice stopped ("" = start) */
    size_t purge_from_len;
    bool full; /* the last write found the map full (logged once) */
    long long full_purge_ms; /* when a full map last made a purge run (at most 1 a second) */
    char path[4096];
};

static int
lmdb_read_boot_id(char *out, size_t len)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    if (f == NULL)
        return -1;
    if (fgets(out, (int)len, f) == NULL) {
        fclose(f);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

static int
lmdb_write_marker(const char *dir, const char *text)
{
    char path[4200], tmp[4200];
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/boot_id", dir);
    snprintf(tmp, sizeof(tmp), "%s/boot_id.tmp", dir);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1)
        return -1;
    n = write(fd, text, strlen(text));
    if (n != (ssize_t)strlen(text) || fsync(fd) == -1) {
        close(fd);
        return -1;
    }
    close(fd);
    return rename(tmp, path);
}

/* Discard a store that a system crash may have left inconsistent (see the header). */
static void
lmdb_check_boot(const char *dir)
{
    char path[4200], was[64] = "", now[64] = "";
    FILE *f;

    snprintf(path, sizeof(path), "%s/boot_id", dir);
    if ((f = fopen(path, "r")) != NULL) {
        if (fgets(was, sizeof(was), f) == NULL)
            was[0] = '\0';
        fclose(f);
        was[strcspn(was, "\n")] = '\0';
    }
    if (lmdb_read_boot_id(now, sizeof(now)) == -1)
        return; /* no boot ID to compare: keep the store */
    if (was[0] != '\0' && strcmp(was, "clean") != 0 && strcmp(was, now) != 0) {
        snprintf(path, sizeof(path), "%s/data.mdb", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/lock.mdb", dir);
        unlink(path);
        log_warn(NULL,
            "event=state-store-reset store=lmdb:%s reason=\"the system stopped "
            "without closing the store; greylisting and rate windows start over\"",
            dir);
    }
    if (lmdb_write_marker(dir, now) == -1)
        log_warn(NULL,
            "event=state-store-warning store=lmdb:%s error=\"cannot write boot_id: "
            "%s\"",
            dir, strerror(errno));
}

static bool
lmdb_live(const MDB_val *v, int64_t now, struct lmdb_rec *out)
{
    if (v->mv_size != sizeof(*out))
        return false;
    memcpy(out, v->mv_data, sizeof(*out));
    return out->expires_ms > now;
}

static void
lmdb_key(MDB_val *k, const char *key)
{
    k->mv_data = (void *)key;
    k->mv_size = strlen(key);
}

static void lmdb_purge(struct store_lmdb *l, size_t slice);

/* A write failed: log once per change of state; a full map also triggers a purge. */
static void
lmdb_write_failed(struct store_lmdb *l, int rc)
{
    if (rc == MDB_MAP_FULL) {
        if (!l->full)
            log_warn(NULL, "event=state-store-full store=lmdb:%s reason=\"%s\"", l->path,
                mdb_strerror(rc));
        l->full = true;
        /*
         * A big slice, but not at every failed write: a client that keeps the
         * map full (millions of new triplets) must not make each RCPT scan
         * 200,000 records on the loop.
         */
        if (io_now_ms() - l->full_purge_ms >= 1000) {
            l->full_purge_ms = io_now_ms();
            lmdb_purge(l, STORE_LMDB_PURGE_SLICE * 10);
        }
    } else {
        log_warn(
            NULL, "event=state-store-error store=lmdb:%s error=\"%s\"", l->path, mdb_strerror(rc));
    }
}

static void
lmdb_get(struct store *st, struct store_op *op, const char *key)
{
    struct store_lmdb *l = st->impl;
    struct lmdb_rec rec;
    MDB_val k, v;
    int rc;

    lmdb_key(&k, key);
    if ((rc = mdb_txn_renew(l->rtxn)) != 0) {
        log_warn(
            NULL, "event=state-store-error store=lmdb:%s error=\"%s\"", l->path, mdb_strerror(rc));
        store_fail(op, EIO);
        return;
    }
    rc = mdb_get(l->rtxn, l->dbi, &k, &v);
    if (rc == 0 && lmdb_live(&v, store_now_ms(), &rec)) {
        op->res.found = true;
        op->res.value = rec.value;
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        op->res.err = EIO;
    }
    mdb_txn_reset(l->rtxn);
    store_answer(op);
}

static void
lmdb_set(struct store *st, struct store_op *op, const char *key, int64_t value, int64_t ttl_ms)
{
    struct store_lmdb *l = st->impl;
    struct lmdb_rec rec = {store_now_ms() + ttl_ms, value};
    MDB_txn *txn;
    MDB_val k, v = {sizeof(rec), &rec};
    int rc;

    lmdb_key(&k, key);
    if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) == 0) {
        if ((rc = mdb_put(txn, l->dbi, &k, &v, 0)) == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0) {
        lmdb_write_failed(l, rc);
        store_fail(op, rc == MDB_MAP_FULL ? ENOSPC : EIO);
        return;
    }
    l->full = false;
    store_answer(op);
}

static void
lmdb_incr(struct store *st, struct store_op *op, const char *key, int64_t ttl_ms, const char *other)
{
    struct store_lmdb *l = st->impl;
    int64_t now = store_now_ms();
    struct lmdb_rec rec, orec;
    MDB_txn *txn;
    MDB_val k, v;
    int rc;

    if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0)
        goto fail;
    lmdb_key(&k, key);
    rc = mdb_get(txn, l->dbi, &k, &v);
    if (rc == 0 && lmdb_live(&v, now, &rec))
        rec.value++;
    else if (rc == 0 || rc == MDB_NOTFOUND)
        rec.value = 1;
    else
        goto abort;
    rec.expires_ms = now + ttl_ms;
    v.mv_size = sizeof(rec);
    v.mv_data = &rec;
    if ((rc = mdb_put(txn, l->dbi, &k, &v, 0)) != 0)
        goto abort;
    op->res.value = rec.value;
    if (other != NULL) {
        lmdb_key(&k, other);
        rc = mdb_get(txn, l->dbi, &k, &v);
        if (rc == 0 && lmdb_live(&v, now, &orec))
            op->res.other = orec.value;
        else if (rc != 0 && rc != MDB_NOTFOUND)
            goto abort;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        goto fail;
    l->full = false;
    store_answer(op);
    return;
abort:
    mdb_txn_abort(txn);
fail:
    lmdb_write_failed(l, rc);
    store_fail(op, rc == MDB_MAP_FULL ? ENOSPC : EIO);
}

/*
 * Delete expired records, looking at no more than slice records from where the last slice
 * stopped (wrapping at the end), in one write transaction: a slice is a few milliseconds
 * of the loop's time every STORE_LMDB_PURGE_SECONDS.
 */
static void
lmdb_purge(struct store_lmdb *l, size_t slice)
{
    int64_t now = store_now_ms();
    struct lmdb_rec rec;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t seen = 0, gone = 0;
    int rc;

    if (mdb_txn_begin(l->env, NULL, 0, &txn) != 0)
        return;
    if (mdb_cursor_open(txn, l->dbi, &cur) != 0) {
        mdb_txn_abort(txn);
        return;
    }
    k.mv_data = l->purge_from;
    k.mv_size = l->purge_from_len;
    rc = l->purge_from_len ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                           : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && seen < slice) {
        seen++;
        if (!lmdb_live(&v, now, &rec)) {
            if (mdb_cursor_del(cur, 0) != 0)
                break;
            gone++;
        }
        /* after a delete, MDB_NEXT gives the record that followed the deleted one */
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == 0 && k.mv_size <= sizeof(l->purge_from)) {
        memcpy(l->purge_from, k.mv_data, k.mv_size);
        l->purge_from_len = k.mv_size;
    } else {
        l->purge_from_len = 0; /* the end: start over next time */
    }
    mdb_cursor_close(cur);
    if (mdb_txn_commit(txn) != 0)
        return;
    if (gone > 0)
        log_debug(NULL, "event=state-store-purge store=lmdb:%s looked=%zu deleted=%zu", l->path,
            seen, gone);
}

static void
lmdb_on_purge(evutil_socket_t fd, short what, void *arg)
{
    lmdb_purge(arg, STORE_LMDB_PURGE_SLICE);
}

static void
lmdb_free(void *impl)
{
    struct store_lmdb *l = impl;

    if (l == NULL)
        return;
    if (l->ev_purge)
        event_free(l->ev_purge);
    if (l->rtxn)
        mdb_txn_abort(l->rtxn);
    if (l->env) {
        /* A clean close: everything on disk, so the next boot may keep the store. */
        if (mdb_env_sync(l->env, 1) == 0)
            lmdb_write_marker(l->path, "clean");
        mdb_env_close(l->env);
    }
    free(l);
}

void *
store_lmdb_open(struct store *st, const char *path, char *err, size_t errlen)
{
    struct store_lmdb *l = calloc(1, sizeof(*l));
    struct timeval tv = {STORE_LMDB_PURGE_SECONDS, 0};
    MDB_txn *txn;
    int rc;

    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->st = st;
    snprintf(l->path, sizeof(l->path), "%s", path);
    if (mkdir(path, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "state_store lmdb:%s: %s", path, strerror(errno));
        free(l);
        return NULL;
    }
    lmdb_check_boot(path);
    if ((rc = mdb_env_create(&l->env)) != 0 ||
        (rc = mdb_env_set_mapsize(l->env, STORE_LMDB_MAPSIZE)) != 0 ||
        (rc = mdb_env_open(l->env, path, MDB_NOSYNC | MDB_NOTLS, 0600)) != 0) {
        snprintf(err, errlen, "state_store lmdb:%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    mdb_reader_check(l->env, NULL); /* slots of a ternd killed with a reader: else pages leak */
    if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, NULL, 0, &l->dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0) {
        snprintf(err, errlen, "state_store lmdb:%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->rtxn)) != 0) {
        snprintf(err, errlen, "state_store lmdb:%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    mdb_txn_reset(l->rtxn);
    l->ev_purge = event_new(st->base, -1, EV_PERSIST, lmdb_on_purge, l);
    if (l->ev_purge == NULL) {
        snprintf(err, errlen, "cannot create an event");
        goto fail;
    }
    event_add(l->ev_purge, &tv);
    return l;
fail:
    if (l->rtxn) {
        mdb_txn_abort(l->rtxn);
        l->rtxn = NULL;
    }
    if (l->env)
        mdb_env_close(l->env);
    l->env = NULL;
    free(l);
    return NULL;
}

const struct store_backend store_lmdb_backend = {
    .get = lmdb_get,
    .set = lmdb_set,
    .incr = lmdb_incr,
    .free = lmdb_free,
};
