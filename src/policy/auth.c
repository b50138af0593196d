/*
 * auth.c - SMTP AUTH credentials and policy (see auth.h).
 *
 * The credentials are read into an immutable table; a reload builds a new
 * one and swaps it in, and the old one is freed when no check uses it.
 * Worker threads take checks from a FIFO, hash, wipe the password copy and
 * put the result on a done list; the eventfd wakes the loop, whose
 * auth_reap() calls each done callback.  Only the loop thread calls done.
 */
#include "policy/auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

#define AUTH_FILE_MAX (16 * 1024 * 1024) /* a bigger file is not a credentials file */
#define AUTH_LIMIT_BUCKETS 4096
#define AUTH_LIMIT_MAX_ENTRIES 100000 /* addresses tracked at once */

/* ---- the credentials file ------------------------------------------------ */

struct auth_user {
    char *name;
    char *hash;
};

struct auth_db {
    struct auth_user *users; /* sorted by name */
    size_t n;
    char dummy[CRYPT_OUTPUT_SIZE]; /* hash for unknown users, made like users[0] */
    unsigned refs;                 /* checks in flight using it (struct auth's lock) */
};

/* Strong methods only (crypt(5)); "$2a$" is left out for its old 8-bit bug. */
static const char *const auth_good_prefixes[] = {"$y$", "$gy$", "$7$", "$2b$", "$2y$"};

bool
auth_hash_acceptable(const char *hash, const char **why)
{
    const char *last, *p;
    size_t i, dollars;

    for (i = 0; i < sizeof(auth_good_prefixes) / sizeof(*auth_good_prefixes); i++)
        if (strncmp(hash, auth_good_prefixes[i], strlen(auth_good_prefixes[i])) == 0)
            break;
    if (i == sizeof(auth_good_prefixes) / sizeof(*auth_good_prefixes)) {
        if (hash[0] != '$')
            *why = "not a crypt(3) hash (plain text and DES are refused); make one with "
                   "tern passwd";
        else
            *why = "weak or unknown hash method (MD5 $1$, SHA-crypt $5$/$6$ and others are "
                   "refused; use yescrypt $y$ or bcrypt $2b$, e.g. from tern passwd)";
        return false;
    }
    /* crypt_checksalt looks at the method and its settings; the hash itself must follow:
       bcrypt is 60 characters, the yescrypt family "$id$params$salt$hash". */
    last = strrchr(hash, '$');
    for (dollars = 0, p = hash; *p; p++)
        dollars += *p == '$';
    if (crypt_checksalt(hash) != CRYPT_SALT_OK ||
        (hash[1] == '2' ? strlen(hash) != 60 : dollars < 4 || last[1] == '\0')) {
        *why = "malformed hash (crypt(3) does not accept it)";
        return false;
    }
    return true;
}

static int
auth_user_cmp(const void *a, const void *b)
{
    return strcmp(((const struct auth_user *)a)->name, ((const struct auth_user *)b)->name);
}

void
auth_db_free(struct auth_db *db)
{
    size_t i;

    if (db == NULL)
        return;
    for (i = 0; i < db->n; i++) {
        free(db->users[i].name);
        explicit_bzero(db->users[i].hash, strlen(db->users[i].hash));
        free(db->users[i].hash);
    }
    free(db->users);
    free(db);
}

size_t
auth_db_count(const struct auth_db *db)
{
    return db->n;
}

/* Read the whole file (bounded); NULL with the reason in err. */
static char *
auth_read_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    char *text;
    size_t off = 0;
    ssize_t r;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > AUTH_FILE_MAX) {
        snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path, AUTH_FILE_MAX);
        close(fd);
        return NULL;
    }
    if (st.st_mode & S_IROTH)
        log_warn(
            NULL, "event=auth-users path=%s reason=\"readable by every user; chmod o-r\"", path);
    if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    while (off < (size_t)st.st_size && (r = read(fd, text + off, (size_t)st.st_size - off)) != 0) {
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            free(text);
            close(fd);
            return NULL;
        }
        off += (size_t)r;
    }
    close(fd);
    text[off] = '\0';
    return text;
}

/* A dummy hash with the cost of db->users[0] (or the default), for unknown users. */
static int
auth_db_make_dummy(struct auth_db *db)
{
    unsigned char rnd[24];
    char phrase[64], setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd;
    const char *like;
    int ok = -1;
    size_t i;

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -1;
    for (i = 0; i < sizeof(rnd); i++)
        snprintf(phrase + 2 * i, 3, "%02x", rnd[i]);
    if (db->n > 0) {
        like = db->users[0].hash;
    } else {
        if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) == NULL)
            return -1;
        like = setting;
    }
    if ((cd = calloc(1, sizeof(*cd))) == NULL)
        return -1;
    if (crypt_rn(phrase, like, cd, sizeof(*cd)) != NULL && cd->output[0] != '*') {
        snprintf(db->dummy, sizeof(db->dummy), "%s", cd->output);
        ok = 0;
    }
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}

struct auth_db *
auth_db_load(const char *path, char *err, size_t errlen)
{
    struct auth_db *db;
    char *text, *line, *next, *colon, *end;
    const char *why;
    size_t cap = 0, lineno = 0, i;

    if ((text = auth_read_file(path, err, errlen)) == NULL)
        return NULL;
    if ((db = calloc(1, sizeof(*db))) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(text);
        return NULL;
    }
    for (line = text; line != NULL && *line != '\0'; line = next) {
        lineno++;
        if ((next = strchr(line, '\n')) != NULL)
            *next++ = '\0';
        end = line + strlen(line);
        while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '\0' || *line == '#')
            continue;
        if ((colon = strchr(line, ':')) == NULL || colon == line) {
            snprintf(err, errlen, "%s:%zu: expected user:HASH", path, lineno);
            goto fail;
        }
        *colon = '\0';
        if ((size_t)(colon - line) > AUTH_USER_MAX) {
            snprintf(err, errlen, "%s:%zu: user name longer than %d octets", path, lineno,
                AUTH_USER_MAX);
            goto fail;
        }
        for (i = 0; line[i] != '\0'; i++)
            if ((unsigned char)line[i] <= ' ' || line[i] == 0x7f) {
                snprintf(err, errlen, "%s:%zu: space or control character in the user name", path,
                    lineno);
                goto fail;
            }
        if (!auth_hash_acceptable(colon + 1, &why)) {
            snprintf(err, errlen, "%s:%zu: user %s: %s", path, lineno, line, why);
            goto fail;
        }
        if (db->n == cap) {
            struct auth_user *u;
            cap = cap ? cap * 2 : 16;
            if ((u = realloc(db->users, cap * sizeof(*u))) == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            db->users = u;
        }
        db->users[db->n].name = strdup(line);
        db->users[db->n].hash = strdup(colon + 1);
        if (db->users[db->n].name == NULL || db->users[db->n].hash == NULL) {
            free(db->users[db->n].name);
            free(db->users[db->n].hash);
            snprintf(err, errlen, "%s: out of memory", path);
            goto fail;
        }
        db->n++;
    }
    /* The dummy is made like the first entry in file order, before sorting. */
    if (auth_db_make_dummy(db) == -1) {
        snprintf(err, errlen, "%s: cannot make the dummy hash for unknown users", path);
        goto fail;
    }
    qsort(db->users, db->n, sizeof(*db->users), auth_user_cmp);
    for (i = 1; i < db->n; i++)
        if (strcmp(db->users[i - 1].name, db->users[i].name) == 0) {
            snprintf(err, errlen, "%s: user %s is listed twice", path, db->users[i].name);
            goto fail;
        }
    explicit_bzero(text, strlen(text));
    free(text);
    return db;
fail:
    explicit_bzero(text, strlen(text));
    free(text);
    auth_db_free(db);
    return NULL;
}

/* Compare two strings in time that depends only on their lengths. */
static bool
auth_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, n = la > lb ? la : lb;
    unsigned char d = (unsigned char)(la != lb);

    for (i = 0; i < n; i++)
        d |= (unsigned char)((i < la ? a[i] : 0) ^ (i < lb ? b[i] : 0));
    return d == 0;
}

bool
auth_db_verify(
    const struct auth_db *db, const char *user, const char *pass, struct crypt_data *data)
{
    struct auth_user key = {.name = (char *)user}, *u;
    const char *hash;
    bool ok;

    u = bsearch(&key, db->users, db->n, sizeof(*db->users), auth_user_cmp);
    hash = u != NULL ? u->hash : db->dummy;
    /* Hash even for an unknown user, so both cost the same. */
    if (crypt_rn(pass, hash, data, sizeof(*data)) == NULL)
        return false; /* e.g. a pass phrase over CRYPT_MAX_PASSPHRASE_SIZE */
    ok = auth_equal(data->output, hash) && u != NULL;
    explicit_bzero(data->output, sizeof(data->output));
    explicit_bzero(data->input, sizeof(data->input));
    return ok;
}

int
auth_hash_password(const char *pass, char *out, size_t outlen)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd;
    int ok = -1;

    /* count 0: libcrypt's default cost; NULL entropy: it reads the system's random source */
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) == NULL)
        return -1;
    if ((cd = calloc(1, sizeof(*cd))) == NULL)
        return -1;
    if (crypt_rn(pass, setting, cd, sizeof(*cd)) != NULL && cd->output[0] == '$' &&
        strlen(cd->output) < outlen) {
        snprintf(out, outlen, "%s", cd->output);
        ok = 0;
    }
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}

/* ---- checks on worker threads ---------------------------------------------- */

enum auth_job_kind { AUTH_JOB_CHECK, AUTH_JOB_RELOAD };

struct auth_job {
    struct auth_job *next;
    enum auth_job_kind kind;
    char *user;
    char *pass;
    size_t passlen;
    auth_done_fn done;
    void *arg;
    enum auth_result result;
};

struct auth {
    char *path;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct auth_job *todo, **todo_tail; /* FIFO for the workers */
    struct auth_job *done, **done_tail; /* FIFO for auth_reap */
    struct auth_db *db;
    bool stop;
    bool reloading; /* a worker rereads the file: the others wait, so checks queued
                       after a reload see its result */
    int evfd;
    pthread_t *threads;
    unsigned nthreads;
};

static void
auth_job_free(struct auth_job *j)
{
    if (j->pass != NULL) {
        explicit_bzero(j->pass, j->passlen);
        free(j->pass);
    }
    free(j->user);
    free(j);
}

/* Drop a reference taken on db under the lock; free it if it was replaced meanwhile. */
static void
auth_db_release(struct auth *a, struct auth_db *db)
{
    bool gone;

    pthread_mutex_lock(&a->lock);
    gone = --db->refs == 0 && db != a->db;
    pthread_mutex_unlock(&a->lock);
    if (gone)
        auth_db_free(db);
}

static void
auth_run_reload(struct auth *a)
{
    struct auth_db *db, *old;
    char err[512];
    bool free_old;

    if ((db = auth_db_load(a->path, err, sizeof(err))) == NULL) {
        log_warn(NULL,
            "event=auth-reload-failed error=\"%s\" reason=\"the users read before "
            "stay in force\"",
            err);
        return;
    }
    pthread_mutex_lock(&a->lock);
    old = a->db;
    a->db = db;
    free_old = old->refs == 0;
    pthread_mutex_unlock(&a->lock);
    if (free_old)
        auth_db_free(old);
    log_info(NULL, "event=auth-reload path=%s users=%zu", a->path, auth_db_count(db));
}

static void *
auth_worker(void *arg)
{
    struct auth *a = arg;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    struct auth_job *j;
    struct auth_db *db;
    uint64_t one = 1;

    for (;;) {
        pthread_mutex_lock(&a->lock);
        while ((a->todo == NULL || a->reloading) && !a->stop)
            pthread_cond_wait(&a->cond, &a->lock);
        if (a->stop) {
            pthread_mutex_unlock(&a->lock);
            break;
        }
        j = a->todo;
        if ((a->todo = j->next) == NULL)
            a->todo_tail = &a->todo;
        if (j->kind == AUTH_JOB_RELOAD) {
            a->reloading = true;
            pthread_mutex_unlock(&a->lock);
            auth_run_reload(a);
            free(j);
            pthread_mutex_lock(&a->lock);
            a->reloading = false;
            pthread_cond_broadcast(&a->cond);
            pthread_mutex_unlock(&a->lock);
            continue;
        }
        db = a->db;
        db->refs++;
        pthread_mutex_unlock(&a->lock);

        j->result = cd != NULL && auth_db_verify(db, j->user, j->pass, cd) ? AUTH_RESULT_OK
                                                                           : AUTH_RESULT_FAIL;
        auth_db_release(a, db);
        explicit_bzero(j->pass, j->passlen);
        j->next = NULL;
        pthread_mutex_lock(&a->lock);
        *a->done_tail = j;
        a->done_tail = &j->next;
        pthread_mutex_unlock(&a->lock);
        if (write(a->evfd, &one, sizeof(one)) < 0) {
            /* the counter is far from overflowing: the loop is already woken */
        }
    }
    if (cd != NULL) {
        explicit_bzero(cd, sizeof(*cd));
        free(cd);
    }
    return NULL;
}

struct auth *
auth_new(const char *path, unsigned nworkers, char *err, size_t errlen)
{
    struct auth *a;
    unsigned i;

    if ((a = calloc(1, sizeof(*a))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->evfd = -1;
    a->todo_tail = &a->todo;
    a->done_tail = &a->done;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    if ((a->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((a->db = auth_db_load(path, err, errlen)) == NULL)
        goto fail;
    if ((a->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
        snprintf(err, errlen, "auth: eventfd: %s", strerror(errno));
        goto fail;
    }
    if ((a->threads = calloc(nworkers ? nworkers : 1, sizeof(*a->threads))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (i = 0; i < (nworkers ? nworkers : 1); i++) {
        if (pthread_create(&a->threads[i], NULL, auth_worker, a) != 0) {
            snprintf(err, errlen, "auth: cannot start a worker thread");
            goto fail;
        }
        a->nthreads++;
    }
    return a;
fail:
    auth_free(a);
    return NULL;
}

int
auth_check(struct auth *a, const char *user, const char *pass, auth_done_fn done, void *arg)
{
    struct auth_job *j;

    if ((j = calloc(1, sizeof(*j))) == NULL)
        return -1;
    j->kind = AUTH_JOB_CHECK;
    j->passlen = strlen(pass);
    j->user = strdup(user);
    j->pass = strdup(pass);
    if (j->user == NULL || j->pass == NULL) {
        auth_job_free(j);
        return -1;
    }
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&a->lock);
    *a->todo_tail = j;
    a->todo_tail = &j->next;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return 0;
}

void
auth_reload(struct auth *a)
{
    struct auth_job *j;

    if ((j = calloc(1, sizeof(*j))) == NULL) {
        log_warn(NULL, "event=auth-reload-failed error=\"out of memory\"");
        return;
    }
    j->kind = AUTH_JOB_RELOAD;
    pthread_mutex_lock(&a->lock);
    *a->todo_tail = j;
    a->todo_tail = &j->next;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

int
auth_event_fd(const struct auth *a)
{
    return a->evfd;
}

void
auth_reap(struct auth *a)
{
    struct auth_job *list, *j;
    uint64_t n;

    /* Drain the eventfd before taking the list, so no result is left unsignalled. */
    if (read(a->evfd, &n, sizeof(n)) < 0) {
    }
    pthread_mutex_lock(&a->lock);
    list = a->done;
    a->done = NULL;
    a->done_tail = &a->done;
    pthread_mutex_unlock(&a->lock);
    while ((j = list) != NULL) {
        list = j->next;
        j->done(j->arg, j->result);
        auth_job_free(j);
    }
}

void
auth_free(struct auth *a)
{
    struct auth_job *j, *lists[2];
    unsigned i;

    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    for (i = 0; i < a->nthreads; i++)
        pthread_join(a->threads[i], NULL);
    lists[0] = a->done;
    lists[1] = a->todo;
    for (i = 0; i < 2; i++)
        while ((j = lists[i]) != NULL) {
            lists[i] = j->next;
            if (j->kind == AUTH_JOB_CHECK)
                j->done(j->arg, i == 0 ? j->result : AUTH_RESULT_CANCELLED);
            auth_job_free(j);
        }
    free(a->threads);
    auth_db_free(a->db);
    if (a->evfd != -1)
        close(a->evfd);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a->path);
    free(a);
}

/* ---- failed attempts per client address ------------------------------------ */

struct auth_fail {
    struct auth_fail *next;
    unsigned char key[17];
    unsigned count;    /* failures since first */
    unsigned inflight; /* checks started and not yet answered */
    time_t first;
};

struct auth_limit {
    unsigned max;
    long window;
    size_t n;
    time_t swept; /* the last full sweep (at most one a second: it walks the whole table) */
    struct auth_fail *tab[AUTH_LIMIT_BUCKETS];
};

struct auth_limit *
auth_limit_new(unsigned max_failures, long window)
{
    struct auth_limit *l = calloc(1, sizeof(*l));

    if (l != NULL) {
        l->max = max_failures;
        l->window = window;
    }
    return l;
}

/* The address as counted: an IPv6 address by its /64. */
static void
auth_limit_key(const unsigned char in[17], unsigned char out[17])
{
    memcpy(out, in, 17);
    if (out[0] == 6)
        memset(out + 9, 0, 8);
}

static unsigned
auth_limit_hash(const unsigned char key[17])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    int i;

    for (i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % AUTH_LIMIT_BUCKETS;
}

/*
 * Forget failures older than the window; true when the entry holds nothing more and can go.
 * An entry with checks in flight stays, so that their end finds it.
 */
static bool
auth_limit_expire(const struct auth_limit *l, struct auth_fail *e, time_t now)
{
    if (e->count > 0 && now - e->first >= l->window)
        e->count = 0;
    return e->count == 0 && e->inflight == 0;
}

/* Find the entry of key, dropping expired entries of its bucket on the way. */
static struct auth_fail **
auth_limit_find(struct auth_limit *l, const unsigned char key[17], time_t now)
{
    struct auth_fail **pp = &l->tab[auth_limit_hash(key)], *e;

    while ((e = *pp) != NULL) {
        if (auth_limit_expire(l, e, now)) {
            *pp = e->next;
            free(e);
            l->n--;
            continue;
        }
        if (memcmp(e->key, key, 17) == 0)
            return pp;
        pp = &e->next;
    }
    return pp;
}

/* The entry of key, created if need be; NULL when out of memory or the table is full. */
static struct auth_fail *
auth_limit_get(struct auth_limit *l, const unsigned char key[17], time_t now)
{
    struct auth_fail **pp, *e;
    size_t b;

    pp = auth_limit_find(l, key, now);
    if (*pp != NULL)
        return *pp;
    if (l->n >= AUTH_LIMIT_MAX_ENTRIES) {
        /*
         * Sweep the expired entries, at most once a second: under the very attack
         * this limit is for, a walk of the whole table per AUTH would stall the
         * loop.  XXX: if still full, this address goes uncounted (an attacker with
         * 100,000 addresses is not stopped by a per-address limit).
         */
        if (now == l->swept)
            return NULL;
        l->swept = now;
        for (b = 0; b < AUTH_LIMIT_BUCKETS && l->n >= AUTH_LIMIT_MAX_ENTRIES; b++) {
            struct auth_fail **q = &l->tab[b];
            while (*q != NULL) {
                if (auth_limit_expire(l, *q, now)) {
                    e = *q;
                    *q = e->next;
                    free(e);
                    l->n--;
                } else {
                    q = &(*q)->next;
                }
            }
        }
        if (l->n >= AUTH_LIMIT_MAX_ENTRIES) {
            log_warn(NULL, "event=auth-limit-full entries=%zu", l->n);
            return NULL;
        }
        pp = auth_limit_find(l, key, now);
    }
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return NULL;
    memcpy(e->key, key, 17);
    *pp = e;
    l->n++;
    return e;
}

bool
auth_limit_blocked(struct auth_limit *l, const unsigned char key17[17], time_t now)
{
    unsigned char key[17];
    struct auth_fail **pp;

    auth_limit_key(key17, key);
    pp = auth_limit_find(l, key, now);
    return *pp != NULL && (*pp)->count + (*pp)->inflight >= l->max;
}

bool
auth_limit_begin(struct auth_limit *l, const unsigned char key17[17], time_t now)
{
    unsigned char key[17];
    struct auth_fail *e;

    auth_limit_key(key17, key);
    if ((e = auth_limit_get(l, key, now)) == NULL)
        return true; /* uncounted (see auth_limit_get); its end finds nothing to release */
    if (e->count + e->inflight >= l->max)
        return false;
    e->inflight++;
    return true;
}

bool
auth_limit_end(struct auth_limit *l, const unsigned char key17[17], time_t now, bool failed)
{
    unsigned char key[17];
    struct auth_fail **pp, *e;

    auth_limit_key(key17, key);
    pp = auth_limit_find(l, key, now);
    if ((e = *pp) != NULL && e->inflight > 0)
        e->inflight--;
    if (failed) {
        if (e == NULL && (e = auth_limit_get(l, key, now)) == NULL)
            return false;
        if (e->count++ == 0)
            e->first = now; /* the window runs from the first failure */
    }
    if (e == NULL)
        return false;
    if (e->count >= l->max)
        return true;
    if (e->count == 0 && e->inflight == 0)
        (void)auth_limit_find(l, key, now); /* drops it: it holds nothing */
    return false;
}

void
auth_limit_free(struct auth_limit *l)
{
    struct auth_fail *e, *n;
    size_t b;

    if (l == NULL)
        return;
    for (b = 0; b < AUTH_LIMIT_BUCKETS; b++)
        for (e = l->tab[b]; e != NULL; e = n) {
            n = e->next;
            free(e);
        }
    free(l);
}

/* ---- senders ---------------------------------------------------------------- */

bool
auth_sender_owned(const struct config *cfg, const char *user, const char *sender)
{
    const char *uat = strrchr(user, '@'), *sat;
    size_t ulocal, slocal;

    if (sender[0] == '\0')
        return true; /* the null sender: bounces and MDNs name no one */
    if ((sat = strrchr(sender, '@')) == NULL)
        return false;
    slocal = (size_t)(sat - sender);
    if (uat != NULL) {
        ulocal = (size_t)(uat - user);
        /* local parts exactly (RFC 5321 §2.4: they may be case-sensitive), domains without case */
        return ulocal == slocal && memcmp(user, sender, ulocal) == 0 &&
               strcasecmp(uat + 1, sat + 1) == 0;
    }
    return strlen(user) == slocal && memcmp(user, sender, slocal) == 0 &&
           config_domain_listed(&cfg->local_domains, sat + 1, strlen(sat + 1));
}
