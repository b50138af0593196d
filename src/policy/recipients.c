/*
 * recipients.c - the local recipient table (see recipients.h).
 *
 * What it promises:
 *   - recipients_load() reads and checks the whole file before it returns anything: either a
 *     complete table, or NULL with one "FILE:LINE: reason" ("FILE: reason" for the file as a
 *     whole) in err.  A bad edit is therefore caught at start and by `ternd -n`, never half
 *     applied (STYLE.md rule 13).
 *   - Every alias and catch-all is expanded at load time to its final list of addresses:
 *     aliases of aliases flattened, duplicates removed, first-seen order kept.  A lookup is
 *     then one or two hash probes returning a stored array: O(1) on average, no allocation,
 *     no writes, so a loaded table may be shared by threads.
 *   - Keys compare without regard to ASCII case; octets >= 0x80 (RFC 6531) compare as they
 *     are, since Unicode case folding is not something an MTA should guess at.
 *   - Limits: a line holds at most 4096 octets (not counting CR LF), the file at most 16 MiB,
 *     an expansion at most 8 levels of aliases and catch-alls.
 *
 * Format details beyond recipients.h:
 *   - A line whose first non-blank octet is '#' is a comment, and so is the rest of a line
 *     from a '#' that follows a blank.  A '#' glued to an address is part of it: it is legal
 *     in a local part ("a#b@example.org").  Quoted strings and address literals may hold
 *     ':', ',', '#' and blanks.
 *   - "ADDRESS: T1, T2": blanks around ':' and ',' are allowed; an empty item is an error.
 *     There are no continuation lines: a trailing ',' is an error, which catches the usual
 *     Postfix-style continuation; an indented line is just another entry.
 *   - Addresses are checked with the RFC 5321 grammar (smtp/addr.h, UTF-8 allowed); source
 *     routes are refused.  Quoting is compared as written: "\"a\"@x" and "a@x" differ.
 *   - A target that is not listed is delivered as written (a remote address, or a mailbox
 *     handled elsewhere), unless its domain has a catch-all here, which it then goes through,
 *     as the mail itself would.
 *
 * Postmaster: RFC 5321 §4.5.1 requires "postmaster@DOMAIN" to be deliverable for every domain
 * we accept mail for.  An explicit entry (or a catch-all) should exist for each domain in the
 * file; recipients_load() logs a warning for each domain that has neither.  The bare
 * "RCPT TO:<Postmaster>" is the caller's business.
 *
 * Errors found after the whole file is read (a catch-all that would loop, alias loops, too
 * deep an expansion) are reported only if no line had a syntax error.
 */
#include "policy/recipients.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "smtp/addr.h"
#include "util/log.h"

#define RCPT_LINE_MAX 4096
#define RCPT_FILE_MAX (16u * 1024 * 1024)
#define RCPT_DEPTH_MAX 8
#define RCPT_CHUNK (64u * 1024) /* arena chunk */
#define RCPT_SHOW 80            /* at most this much of a bad address goes into an error */

enum rnode_kind {
    RN_TARGET,   /* only named as a target: not an entry, never returned by a lookup */
    RN_DOMAIN,   /* "@domain" of some entry, no catch-all: kept for the postmaster check */
    RN_MAILBOX,  /* "user@domain" */
    RN_ALIAS,    /* "user@domain: targets" */
    RN_CATCHALL, /* "@domain: targets" */
};

enum rnode_state { ST_NEW, ST_ACTIVE, ST_DONE };

/*
 * One address or "@domain" key.  Targets are nodes too, so an alias can name an entry
 * defined further down, and duplicates are removed by marking nodes rather than by comparing
 * strings.
 */
struct rnode {
    struct rnode *hnext;   /* hash chain */
    struct rnode *onext;   /* next entry in file order */
    char *key;             /* lower-cased (ASCII only) */
    const char *name;      /* as written; the definition's spelling once defined */
    struct rnode **raw;    /* alias, catch-all: targets as written, in order */
    struct rnode **tnodes; /* expanded targets as nodes (mailboxes, unlisted) */
    struct rnode *dom;     /* mailbox, alias: the node of "@domain" */
    const char **targets;  /* expanded targets, NULL-terminated: what lookup returns */
    size_t keylen, nraw, ntargets;
    uint64_t hash;
    unsigned line; /* of the definition; 0 for RN_TARGET */
    unsigned mark; /* == recipients.gen: already in the list being built */
    unsigned char kind, state, depth;
};

struct rcpt_chunk {
    struct rcpt_chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct recipients {
    struct rnode **buckets; /* power-of-two sized, chained */
    size_t nbuckets, count;
    struct rnode *first, *last; /* entries in file order */
    struct rcpt_chunk *chunks;  /* the arena: every node, string and array */
    unsigned gen;
};

/* What recipients_load() carries around while it works. */
struct rcpt_load {
    struct recipients *r;
    const char *path;
    char *err;
    size_t errlen;
    struct rnode **scratch; /* the list being built by rcpt_expand() */
    size_t nscratch, cscratch;
};

static inline unsigned char
rcpt_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static inline bool
rcpt_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* FNV-1a over the lower-cased octets, so "A@X" and "a@x" land in the same bucket. */
static uint64_t
rcpt_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= rcpt_lower((unsigned char)s[i]);
        h *= 0x100000001b3u;
    }
    return h;
}

static int __attribute__((format(printf, 3, 4)))
rcpt_error(struct rcpt_load *ld, unsigned line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (ld->errlen == 0)
        return -1;
    if (line > 0)
        n = snprintf(ld->err, ld->errlen, "%s:%u: ", ld->path, line);
    else
        n = snprintf(ld->err, ld->errlen, "%s: ", ld->path);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int
rcpt_oom(struct rcpt_load *ld)
{
    return rcpt_error(ld, 0, "out of memory");
}

/* n bytes from the arena, aligned for anything; NULL when out of memory. */
static void *
rcpt_alloc(struct recipients *r, size_t n)
{
    const size_t align = alignof(max_align_t);
    struct rcpt_chunk *c = r->chunks;
    size_t size;
    void *p;

    n = (n + align - 1) & ~(align - 1);
    if (c == NULL || c->size - c->used < n) {
        size = n > RCPT_CHUNK / 4 ? n : RCPT_CHUNK;
        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            return NULL;
        c->used = 0;
        c->size = size;
        if (r->chunks != NULL && size > RCPT_CHUNK) {
            /* A big array gets a chunk of its own, behind the current one, which is kept
             * for the small allocations that follow. */
            c->next = r->chunks->next;
            r->chunks->next = c;
        } else {
            c->next = r->chunks;
            r->chunks = c;
        }
    }
    p = (unsigned char *)c->data + c->used;
    c->used += n;
    return p;
}

static char *
rcpt_strdup(struct recipients *r, const char *s, size_t n, bool lower)
{
    char *d = rcpt_alloc(r, n + 1);
    size_t i;

    if (d == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        d[i] = lower ? (char)rcpt_lower((unsigned char)s[i]) : s[i];
    d[n] = '\0';
    return d;
}

static struct rnode *
rcpt_find(const struct recipients *r, const char *s, size_t n)
{
    uint64_t h;
    struct rnode *nd;
    size_t i;

    if (r->nbuckets == 0)
        return NULL;
    h = rcpt_hash(s, n);
    for (nd = r->buckets[h & (r->nbuckets - 1)]; nd != NULL; nd = nd->hnext) {
        if (nd->hash != h || nd->keylen != n)
            continue;
        for (i = 0; i < n; i++)
            if ((unsigned char)nd->key[i] != rcpt_lower((unsigned char)s[i]))
                break;
        if (i == n)
            return nd;
    }
    return NULL;
}

static int
rcpt_grow(struct recipients *r, size_t want)
{
    size_t nb = r->nbuckets ? r->nbuckets * 2 : 1024;
    struct rnode **b, *nd, *next;
    size_t i;

    while (nb / 4 * 3 < want)
        nb *= 2;
    b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (i = 0; i < r->nbuckets; i++) {
        for (nd = r->buckets[i]; nd != NULL; nd = next) {
            next = nd->hnext;
            nd->hnext = b[nd->hash & (nb - 1)];
            b[nd->hash & (nb - 1)] = nd;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = nb;
    return 0;
}

/* The node for s[0..n), created with the given kind if new; NULL when out of memory. */
static struct rnode *
rcpt_intern(struct recipients *r, const char *s, size_t n, enum rnode_kind kind)
{
    struct rnode *nd = rcpt_find(r, s, n);
    struct rnode **b;

    if (nd != NULL)
        return nd;
    if (r->count >= r->nbuckets / 4 * 3 && rcpt_grow(r, r->count + 1) < 0)
        return NULL;
    nd = rcpt_alloc(r, sizeof(*nd));
    if (nd == NULL)
        return NULL;
    memset(nd, 0, sizeof(*nd));
    nd->key = rcpt_strdup(r, s, n, true);
    nd->name = rcpt_strdup(r, s, n, false);
    if (nd->key == NULL || nd->name == NULL)
        return NULL;
    nd->keylen = n;
    nd->hash = rcpt_hash(s, n);
    nd->kind = (unsigned char)kind;
    b = &r->buckets[nd->hash & (r->nbuckets - 1)];
    nd->hnext = *b;
    *b = nd;
    r->count++;
    return nd;
}

/* What rcpt_span() stops at. */
#define SPAN_BLANK 0x1
#define SPAN_COLON 0x2
#define SPAN_COMMA 0x4
#define SPAN_HASH 0x8

/*
 * Index of the first octet of s[0..n) in the set stop, skipping quoted strings and address
 * literals (where ':', ',', '#' and blanks are legal); n if there is none.
 */
static size_t
rcpt_span(const char *s, size_t n, unsigned stop)
{
    bool quoted = false, literal = false;
    size_t i;

    for (i = 0; i < n; i++) {
        if (quoted) {
            if (s[i] == '\\' && i + 1 < n)
                i++;
            else if (s[i] == '"')
                quoted = false;
        } else if (literal) {
            if (s[i] == ']')
                literal = false;
        } else if (s[i] == '"')
            quoted = true;
        else if (s[i] == '[')
            literal = true;
        else if (((stop & SPAN_BLANK) && rcpt_blank(s[i])) ||
                 ((stop & SPAN_COLON) && s[i] == ':') || ((stop & SPAN_COMMA) && s[i] == ',') ||
                 ((stop & SPAN_HASH) && s[i] == '#'))
            return i;
    }
    return n;
}

/* Length of a line without its comment and trailing blanks. */
static size_t
rcpt_content(const char *s, size_t n)
{
    size_t i = 0, j;

    /* An unquoted '#' ends the content only after a blank (or at the start). After a '#'
     * found by rcpt_span() we are outside any quote, so the scan may resume there. */
    while ((j = rcpt_span(s + i, n - i, SPAN_HASH)) < n - i) {
        if (i + j == 0 || rcpt_blank(s[i + j - 1])) {
            n = i + j;
            break;
        }
        i += j + 1;
    }
    while (n > 0 && rcpt_blank(s[n - 1]))
        n--;
    return n;
}

/*
 * Check one address as it appears in the file; 0 if fine.  A catch-all's "@domain" is
 * checked as "x@domain", so that its domain obeys the same grammar as an address's.
 */
static int
rcpt_check_addr(struct rcpt_load *ld, unsigned line, const char *s, size_t n, bool catchall)
{
    char buf[RCPT_LINE_MAX + 4];
    struct smtp_path p;
    enum addr_err e;
    size_t used = 0, len = 0;
    int show = n > RCPT_SHOW ? RCPT_SHOW : (int)n;
    const char *what = catchall ? "catch-all domain" : "address";

    /* smtp_addr_parse() wants the path as sent after "RCPT TO:". */
    buf[len++] = '<';
    if (catchall)
        buf[len++] = 'x';
    memcpy(buf + len, s, n);
    len += n;
    buf[len++] = '>';
    e = smtp_addr_parse(buf, len, ADDR_UTF8, &p, &used);
    if (e != ADDR_OK)
        return rcpt_error(ld, line, "bad %s \"%.*s\": %s", what, show, s, smtp_addr_strerror(e));
    if (used != len || p.len != len - 2)
        return rcpt_error(ld, line, "bad %s \"%.*s\": source route not allowed", what, show, s);
    return 0;
}

/* Define the entry s[0..n) ("user@domain" or "@domain") at line; NULL after an error. */
static struct rnode *
rcpt_define(struct rcpt_load *ld, unsigned line, const char *s, size_t n, enum rnode_kind kind)
{
    struct recipients *r = ld->r;
    struct rnode *nd;
    const char *at;

    nd = rcpt_intern(r, s, n, kind == RN_CATCHALL ? RN_DOMAIN : RN_TARGET);
    if (nd == NULL) {
        rcpt_oom(ld);
        return NULL;
    }
    if (nd->kind == RN_CATCHALL) {
        rcpt_error(
            ld, line, "duplicate catch-all for \"%s\" (first at line %u)", nd->key, nd->line);
        return NULL;
    }
    if (nd->kind == RN_MAILBOX || nd->kind == RN_ALIAS) {
        rcpt_error(ld, line, "duplicate entry \"%s\" (first at line %u)", nd->key, nd->line);
        return NULL;
    }
    /* Named earlier (as a target, or as an entry's domain): from now on it is spelt as its
     * definition. */
    if (memcmp(nd->name, s, n) != 0 && (nd->name = rcpt_strdup(r, s, n, false)) == NULL) {
        rcpt_oom(ld);
        return NULL;
    }
    nd->kind = (unsigned char)kind;
    nd->line = line;
    if (r->last != NULL)
        r->last->onext = nd;
    else
        r->first = nd;
    r->last = nd;
    if (kind != RN_CATCHALL) {
        /* Remember the domain, for catch-all lookups and the postmaster check. */
        at = s + n;
        while (*--at != '@') /* there is one: the address was checked */
            ;
        nd->dom = rcpt_intern(r, at, n - (size_t)(at - s), RN_DOMAIN);
        if (nd->dom == NULL) {
            rcpt_oom(ld);
            return NULL;
        }
    }
    if (kind == RN_MAILBOX) {
        /* A mailbox delivers to itself. */
        nd->tnodes = rcpt_alloc(r, sizeof(*nd->tnodes));
        nd->targets = rcpt_alloc(r, 2 * sizeof(*nd->targets));
        if (nd->tnodes == NULL || nd->targets == NULL) {
            rcpt_oom(ld);
            return NULL;
        }
        nd->tnodes[0] = nd;
        nd->targets[0] = nd->name;
        nd->targets[1] = NULL;
        nd->ntargets = 1;
        nd->state = ST_DONE;
    }
    return nd;
}

/* The targets after ':' in t[0..n), as written, into nd->raw. */
static int
rcpt_targets(struct rcpt_load *ld, unsigned line, struct rnode *nd, const char *t, size_t n)
{
    size_t i, j, k, count = 1;
    const char *item;

    while (n > 0 && rcpt_blank(*t)) {
        t++;
        n--;
    }
    if (n == 0)
        return rcpt_error(ld, line, "empty target list");
    /* Every ',' counted, even quoted ones: a bound, and cheaper than a second parse. */
    for (item = t; (item = memchr(item, ',', n - (size_t)(item - t))) != NULL; item++)
        count++;
    nd->raw = rcpt_alloc(ld->r, count * sizeof(*nd->raw));
    if (nd->raw == NULL)
        return rcpt_oom(ld);
    for (i = 0; i <= n; i += j + 1) {
        j = rcpt_span(t + i, n - i, SPAN_COMMA);
        item = t + i;
        k = j;
        while (k > 0 && rcpt_blank(*item)) {
            item++;
            k--;
        }
        while (k > 0 && rcpt_blank(item[k - 1]))
            k--;
        if (k == 0)
            return rcpt_error(ld, line, "empty target in the list");
        if (rcpt_check_addr(ld, line, item, k, false) < 0)
            return -1;
        nd->raw[nd->nraw] = rcpt_intern(ld->r, item, k, RN_TARGET);
        if (nd->raw[nd->nraw] == NULL)
            return rcpt_oom(ld);
        nd->nraw++;
    }
    return 0;
}

/* One line, without its line ending. */
static int
rcpt_line(struct rcpt_load *ld, unsigned line, const char *s, size_t n)
{
    size_t tok, i;
    bool catchall, colon;
    struct rnode *nd;
    int show;

    while (n > 0 && rcpt_blank(*s)) {
        s++;
        n--;
    }
    n = rcpt_content(s, n);
    if (n == 0)
        return 0;
    tok = rcpt_span(s, n, SPAN_BLANK | SPAN_COLON);
    if (tok == 0)
        return rcpt_error(ld, line, "missing address before ':'");
    for (i = tok; i < n && rcpt_blank(s[i]); i++)
        ;
    colon = i < n && s[i] == ':';
    catchall = s[0] == '@';
    show = tok > RCPT_SHOW ? RCPT_SHOW : (int)tok;
    if (rcpt_check_addr(ld, line, s, tok, catchall) < 0)
        return -1;
    if (i < n && !colon)
        return rcpt_error(ld, line, "missing ':' before the targets");
    if (catchall && !colon)
        return rcpt_error(ld, line, "catch-all \"%.*s\" needs ':' and a target", show, s);
    nd = rcpt_define(ld, line, s, tok, catchall ? RN_CATCHALL : colon ? RN_ALIAS : RN_MAILBOX);
    if (nd == NULL)
        return -1;
    if (colon)
        return rcpt_targets(ld, line, nd, s + i + 1, n - i - 1);
    return 0;
}

/* Where a target leads: the catch-all of its domain if it is not listed and there is one. */
static struct rnode *
rcpt_resolve(const struct recipients *r, struct rnode *t)
{
    struct rnode *c;
    const char *at;

    if (t->kind != RN_TARGET)
        return t;
    at = strrchr(t->key, '@');
    c = rcpt_find(r, at, t->keylen - (size_t)(at - t->key));
    return c != NULL && c->kind == RN_CATCHALL ? c : t;
}

/* "a -> b -> c" from path[0..n), then last (if not NULL) and "..." (if more). */
static void
rcpt_chain(
    char *buf, size_t len, struct rnode *const *path, size_t n, const struct rnode *last, bool more)
{
    size_t used = 0, i;
    int w;

    buf[0] = '\0';
    for (i = 0; i <= n && used < len; i++) {
        const struct rnode *nd = i < n ? path[i] : last;

        if (nd == NULL)
            break;
        w = snprintf(buf + used, len - used, "%s%s", i ? " -> " : "", nd->name);
        if (w < 0)
            return;
        used += (size_t)w;
    }
    if (more && used < len)
        snprintf(buf + used, len - used, " -> ...");
}

static int
rcpt_loop_error(struct rcpt_load *ld, struct rnode *const *stack, size_t h, const struct rnode *c)
{
    char chain[512];
    size_t i = 0;

    while (i < h && stack[i] != c)
        i++;
    rcpt_chain(chain, sizeof(chain), stack + i, h - i, c, false);
    return rcpt_error(ld, c->line, "alias loop: %s", chain);
}

static int
rcpt_depth_error(struct rcpt_load *ld, struct rnode *const *stack, size_t h, const struct rnode *c)
{
    char chain[1024];

    rcpt_chain(chain, sizeof(chain), stack, h, c, c->state == ST_DONE && c->depth > 1);
    return rcpt_error(
        ld, stack[0]->line, "alias expansion deeper than %d levels: %s", RCPT_DEPTH_MAX, chain);
}

static int
rcpt_push(struct rcpt_load *ld, struct rnode *t)
{
    struct rnode **s;
    size_t n;

    if (t->mark == ld->r->gen)
        return 0;
    t->mark = ld->r->gen;
    if (ld->nscratch == ld->cscratch) {
        n = ld->cscratch ? ld->cscratch * 2 : 256;
        s = realloc(ld->scratch, n * sizeof(*s));
        if (s == NULL)
            return rcpt_oom(ld);
        ld->scratch = s;
        ld->cscratch = n;
    }
    ld->scratch[ld->nscratch++] = t;
    return 0;
}

/*
 * Expand stack[h - 1], an alias or catch-all: first every alias or catch-all it leads to
 * (depth first; the stack is what detects loops and bounds the recursion to 8 levels), then
 * its own list, from its children's finished lists.
 *
 * XXX A table of big lists naming big lists can take memory quadratic in the file size,
 * since each list is stored flattened.  The file is the operator's; 16 MiB bounds it.
 */
static int
rcpt_expand(struct rcpt_load *ld, struct rnode **stack, size_t h)
{
    struct recipients *r = ld->r;
    struct rnode *nd = stack[h - 1], *c;
    unsigned depth = 0;
    size_t i, j;

    nd->state = ST_ACTIVE;
    for (i = 0; i < nd->nraw; i++) {
        c = rcpt_resolve(r, nd->raw[i]);
        if (c->kind != RN_ALIAS && c->kind != RN_CATCHALL)
            continue;
        if (c->state == ST_ACTIVE)
            return rcpt_loop_error(ld, stack, h, c);
        if (c->state == ST_NEW) {
            if (h >= RCPT_DEPTH_MAX)
                return rcpt_depth_error(ld, stack, h, c);
            stack[h] = c;
            if (rcpt_expand(ld, stack, h + 1) < 0)
                return -1;
        }
        if (h + c->depth > RCPT_DEPTH_MAX)
            return rcpt_depth_error(ld, stack, h, c);
        if (c->depth > depth)
            depth = c->depth;
    }
    nd->depth = (unsigned char)(depth + 1);

    r->gen++;
    ld->nscratch = 0;
    for (i = 0; i < nd->nraw; i++) {
        c = rcpt_resolve(r, nd->raw[i]);
        if (c->kind == RN_ALIAS || c->kind == RN_CATCHALL) {
            for (j = 0; j < c->ntargets; j++)
                if (rcpt_push(ld, c->tnodes[j]) < 0)
                    return -1;
        } else if (rcpt_push(ld, c) < 0)
            return -1;
    }
    nd->tnodes = rcpt_alloc(r, ld->nscratch * sizeof(*nd->tnodes));
    nd->targets = rcpt_alloc(r, (ld->nscratch + 1) * sizeof(*nd->targets));
    if (nd->tnodes == NULL || nd->targets == NULL)
        return rcpt_oom(ld);
    for (i = 0; i < ld->nscratch; i++) {
        nd->tnodes[i] = ld->scratch[i];
        nd->targets[i] = ld->scratch[i]->name;
    }
    nd->targets[i] = NULL;
    nd->ntargets = ld->nscratch;
    nd->state = ST_DONE;
    return 0;
}

/* The checks that need the whole file: catch-alls that would loop, then the expansion. */
static int
rcpt_finish(struct rcpt_load *ld)
{
    struct recipients *r = ld->r;
    struct rnode *stack[RCPT_DEPTH_MAX];
    struct rnode *nd, *t;
    const char *at;
    size_t i;

    for (nd = r->first; nd != NULL; nd = nd->onext) {
        if (nd->kind != RN_CATCHALL)
            continue;
        for (i = 0; i < nd->nraw; i++) {
            t = nd->raw[i];
            at = strrchr(t->key, '@');
            if (t->kind == RN_TARGET && strcmp(at, nd->key) == 0)
                return rcpt_error(ld, nd->line,
                    "catch-all target \"%s\" is in the same domain and not listed "
                    "(it would loop)",
                    t->name);
        }
    }
    for (nd = r->first; nd != NULL; nd = nd->onext) {
        if (nd->state != ST_NEW)
            continue;
        stack[0] = nd;
        if (rcpt_expand(ld, stack, 1) < 0)
            return -1;
    }
    return 0;
}

/* RFC 5321 §4.5.1: warn about each listed domain with no way to reach its postmaster. */
static void
rcpt_warn_postmaster(struct rcpt_load *ld)
{
    struct recipients *r = ld->r;
    char pm[sizeof("postmaster") + SMTP_PATH_MAX];
    struct rnode *nd, *dom, *p;
    int n;

    for (nd = r->first; nd != NULL; nd = nd->onext) {
        dom = nd->dom; /* NULL for a catch-all */
        if (dom == NULL || dom->kind != RN_DOMAIN || dom->state == ST_DONE)
            continue;
        dom->state = ST_DONE; /* once per domain */
        n = snprintf(pm, sizeof(pm), "postmaster%s", dom->key);
        if (n < 0 || (size_t)n >= sizeof(pm))
            continue;
        p = rcpt_find(r, pm, (size_t)n);
        if (p == NULL || (p->kind != RN_MAILBOX && p->kind != RN_ALIAS))
            log_warn(NULL,
                "recipients: no postmaster entry and no catch-all for a listed domain "
                "(RFC 5321 section 4.5.1) file=%s line=%u domain=%s",
                ld->path, nd->line, dom->key + 1);
    }
}

/* The whole file into a malloc'ed buffer, at most RCPT_FILE_MAX octets. */
static char *
rcpt_read(struct rcpt_load *ld, size_t *lenp)
{
    struct stat st;
    size_t len = 0, cap = 65536;
    char *buf = NULL, *nb;
    ssize_t got;
    int fd;

    fd = open(ld->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rcpt_error(ld, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if ((uintmax_t)st.st_size > RCPT_FILE_MAX)
            goto too_big;
        cap = (size_t)st.st_size + 1; /* + 1: to see the end without another realloc */
    }
    for (;;) {
        if (len == cap || buf == NULL) {
            if (buf != NULL)
                cap = cap * 2 > RCPT_FILE_MAX + 1 ? RCPT_FILE_MAX + 1 : cap * 2;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                rcpt_oom(ld);
                goto fail;
            }
            buf = nb;
        }
        got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rcpt_error(ld, 0, "read error: %s", strerror(errno));
            goto fail;
        }
        if (got == 0)
            break;
        len += (size_t)got;
        if (len > RCPT_FILE_MAX)
            goto too_big;
    }
    close(fd);
    *lenp = len;
    return buf;
too_big:
    rcpt_error(ld, 0, "larger than 16 MiB");
fail:
    free(buf);
    close(fd);
    return NULL;
}

struct recipients *
recipients_load(const char *path, char *err, size_t errlen)
{
    struct rcpt_load ld = {.path = path, .err = err, .errlen = errlen};
    const char *p, *end, *nl;
    size_t len, n;
    unsigned line;
    char *buf;

    if (errlen > 0)
        err[0] = '\0';
    ld.r = calloc(1, sizeof(*ld.r));
    if (ld.r == NULL) {
        rcpt_oom(&ld);
        return NULL;
    }
    buf = rcpt_read(&ld, &len);
    if (buf == NULL)
        goto fail;
    end = buf + len;
    /* Size the table once for about one key and a half a line (an entry, now and then a new
     * domain or an unlisted target) rather than rehash it as it fills. */
    for (p = buf, n = 1; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        n++;
    if (rcpt_grow(ld.r, n + n / 2) < 0) {
        rcpt_oom(&ld);
        goto fail;
    }
    for (p = buf, line = 1; p < end; line++) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n > RCPT_LINE_MAX) {
            rcpt_error(&ld, line, "line longer than %d octets", RCPT_LINE_MAX);
            goto fail;
        }
        if (rcpt_line(&ld, line, p, n) < 0)
            goto fail;
        p = nl != NULL ? nl + 1 : end;
    }
    if (rcpt_finish(&ld) < 0)
        goto fail;
    rcpt_warn_postmaster(&ld);
    free(ld.scratch);
    free(buf);
    return ld.r;
fail:
    free(ld.scratch);
    free(buf);
    recipients_free(ld.r);
    return NULL;
}

void
recipients_free(struct recipients *r)
{
    struct rcpt_chunk *c, *next;

    if (r == NULL)
        return;
    for (c = r->chunks; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(r->buckets);
    free(r);
}

int
recipients_lookup(
    const struct recipients *r, const char *addr, const char *const **targets, size_t *ntargets)
{
    size_t n = strlen(addr);
    const struct rnode *nd = rcpt_find(r, addr, n);
    const char *at;

    if (nd == NULL || (nd->kind != RN_MAILBOX && nd->kind != RN_ALIAS)) {
        /* Not listed: the domain's catch-all, if any.  The last '@' is the one before the
         * domain: a quoted local part may hold others. */
        at = strrchr(addr, '@');
        if (at == NULL || at == addr)
            return 0;
        nd = rcpt_find(r, at, n - (size_t)(at - addr));
        if (nd == NULL || nd->kind != RN_CATCHALL)
            return 0;
    }
    if (targets != NULL)
        *targets = nd->targets;
    if (ntargets != NULL)
        *ntargets = nd->ntargets;
    return 1;
}
