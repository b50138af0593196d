/*
 * auth.h - SMTP AUTH credentials and policy: the auth_users file, password
 * checks on worker threads, the per-address failure counter, and which
 * envelope senders an authenticated user may use.
 *
 * The credentials file (auth_users = PATH): one "user:HASH" a line, '#'
 * comments and blank lines ignored.  HASH is a crypt(3) string of a strong
 * method only: yescrypt ($y$, $gy$), scrypt ($7$) or bcrypt ($2b$, $2y$).
 * Plain text, DES, MD5 ($1$) and SHA-crypt ($5$, $6$) are refused when the
 * file is read ("PATH:LINE: reason"): a stolen file must not give the
 * passwords away cheaply.  `tern passwd` makes a yescrypt hash.
 *
 * Checking a password costs one hash (tens of milliseconds for yescrypt),
 * so it never runs on the event loop: auth_check() queues it to a worker
 * thread, and the verdict comes back through an eventfd the loop watches
 * (auth_event_fd, auth_reap), as with the spool's committer.  A user who is
 * not in the file costs the same hash (against a dummy made like the first
 * entry) and the comparison is constant-time, so timing does not tell which
 * users exist.
 */
#ifndef TERN_POLICY_AUTH_H
#define TERN_POLICY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "util/config.h"

#define AUTH_USER_MAX 255 /* octets of a user name, as in the session */

/* ---- the credentials file ------------------------------------------------ */

struct auth_db;

/* Read and check the file; NULL with "PATH:LINE: reason" (or "PATH: reason") in err. */
struct auth_db *auth_db_load(const char *path, char *err, size_t errlen);
void auth_db_free(struct auth_db *db);
size_t auth_db_count(const struct auth_db *db);

/*
 * Blocking (one crypt): true when user is in db and pass matches its hash.
 * data is the caller's crypt work area (zeroed before its first use).
 */
struct crypt_data;
bool auth_db_verify(
    const struct auth_db *db, const char *user, const char *pass, struct crypt_data *data);

/* A hash line's HASH is acceptable (a strong method, well-formed); else why. */
bool auth_hash_acceptable(const char *hash, const char **why);

/* A new yescrypt hash of pass for the credentials file (tern passwd); -1 on failure. */
int auth_hash_password(const char *pass, char *out, size_t outlen);

/* ---- checks on worker threads ---------------------------------------------- */

enum auth_result { AUTH_RESULT_OK, AUTH_RESULT_FAIL, AUTH_RESULT_CANCELLED };

typedef void (*auth_done_fn)(void *arg, enum auth_result r);

struct auth;

/* Load path (errors as auth_db_load) and start nworkers threads. */
struct auth *auth_new(const char *path, unsigned nworkers, char *err, size_t errlen);

/*
 * Queue a check; user and pass are copied (the copy of pass is wiped once
 * hashed).  done(arg, result) is called exactly once: from auth_reap() on
 * the loop thread, or with AUTH_RESULT_CANCELLED from auth_free().  -1 when
 * out of memory (done is not called).
 */
int auth_check(struct auth *a, const char *user, const char *pass, auth_done_fn done, void *arg);

/* The fd to watch for reading; then call auth_reap(). */
int auth_event_fd(const struct auth *a);
void auth_reap(struct auth *a);

/* Reread the file on a worker (SIGHUP): a bad file is logged and the old users stay. */
void auth_reload(struct auth *a);

void auth_free(struct auth *a);

/* ---- failed attempts per client address ------------------------------------ */

/*
 * Failures counted per address for window seconds from the first one (an
 * IPv6 /64 counts as one address: one host usually holds the whole /64).
 * Checks still in flight count too: an address with max_failures failures
 * and checks in flight together starts no more, so AUTHs run in parallel on
 * many connections get no more guesses than one after another.
 * Kept in memory, behind these calls, so a shared state store can take it
 * over.  key is the server's 17-byte address key (family + bytes).
 */
struct auth_limit;

struct auth_limit *auth_limit_new(unsigned max_failures, long window);
/* True when failures in the window plus checks in flight reach max_failures. */
bool auth_limit_blocked(struct auth_limit *l, const unsigned char key[17], time_t now);
/* A check starts: false (nothing counted) when blocked, else it counts as in flight. */
bool auth_limit_begin(struct auth_limit *l, const unsigned char key[17], time_t now);
/*
 * Its verdict (exactly once per auth_limit_begin that returned true, also when the
 * session has gone): releases it and counts a failure; true when the failures alone now
 * reach max_failures.
 */
bool auth_limit_end(struct auth_limit *l, const unsigned char key[17], time_t now, bool failed);
void auth_limit_free(struct auth_limit *l);

/* ---- senders ---------------------------------------------------------------- */

/*
 * May user send with this envelope sender?  Yes for the null sender (bounces
 * and MDNs, RFC 8098); for a user name with '@', only that address (the
 * domain compared without case); for a name without '@', name@D for each D
 * in local_domains.
 */
bool auth_sender_owned(const struct config *cfg, const char *user, const char *sender);

#endif
