/*
 * test_auth.c - the credentials file, password checks (inline and on the
 * worker threads), the failure counter and sender ownership.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <crypt.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "policy/auth.h"

static char tmpdir[] = "/tmp/tern-test-auth-XXXXXX";
static char alice_hash[CRYPT_OUTPUT_SIZE]; /* yescrypt of "secret" */
static char bob_hash[CRYPT_OUTPUT_SIZE];   /* bcrypt (cost 5) of "hunter2" */

static int
setup(void **state)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];

    if (mkdtemp(tmpdir) == NULL || cd == NULL)
        return -1;
    if (auth_hash_password("secret", alice_hash, sizeof(alice_hash)) == -1)
        return -1;
    if (crypt_gensalt_rn("$2b$", 5, NULL, 0, setting, sizeof(setting)) == NULL ||
        crypt_rn("hunter2", setting, cd, sizeof(*cd)) == NULL)
        return -1;
    snprintf(bob_hash, sizeof(bob_hash), "%s", cd->output);
    free(cd);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *
write_file(const char *name, const char *text)
{
    static char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fchmod(fileno(fp), 0600); /* as an operator should: no warning in the test output */
    fputs(text, fp);
    fclose(fp);
    return path;
}

static const char *
users_file(const char *name)
{
    char text[1024];

    snprintf(text, sizeof(text), "# users\n\nalice:%s\r\n  bob@example.org:%s  \n# the end\n",
        alice_hash, bob_hash);
    return write_file(name, text);
}

static void
expect_load_error(const char *text, const char *want)
{
    char err[512];
    const char *path = write_file("bad", text);

    assert_null(auth_db_load(path, err, sizeof(err)));
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void
test_hash_methods(void **state)
{
    const char *why;

    assert_true(auth_hash_acceptable(alice_hash, &why));
    assert_true(auth_hash_acceptable(bob_hash, &why));
    assert_int_equal(strncmp(alice_hash, "$y$", 3), 0);
    assert_false(auth_hash_acceptable("secret", &why));
    assert_non_null(strstr(why, "not a crypt(3) hash"));
    assert_false(auth_hash_acceptable("abJnggxhB/yWI", &why)); /* DES */
    assert_false(auth_hash_acceptable("$1$abcdefgh$abcdefghijklmnopqrstuv", &why));
    assert_non_null(strstr(why, "weak"));
    assert_false(auth_hash_acceptable("$6$salt$xyz", &why));
    assert_false(auth_hash_acceptable("$y$", &why)); /* a strong prefix, malformed */
}

static void
test_load(void **state)
{
    char err[512], line[1024];
    struct auth_db *db;

    db = auth_db_load(users_file("users"), err, sizeof(err));
    if (db == NULL)
        fail_msg("%s", err);
    assert_int_equal(auth_db_count(db), 2);
    auth_db_free(db);

    expect_load_error("alice\n", "bad:1: expected user:HASH");
    expect_load_error("# c\n:$y$x\n", "bad:2: expected user:HASH");
    expect_load_error("alice:secret\n", "bad:1: user alice: not a crypt(3) hash");
    expect_load_error("alice:$1$abcdefgh$abcdefghijklmnopqrstuv\n", "bad:1: user alice: weak");
    expect_load_error("al ice:$1$x\n", "bad:1: space or control character");
    snprintf(line, sizeof(line), "alice:%s\nalice:%s\n", alice_hash, bob_hash);
    expect_load_error(line, "user alice is listed twice");
    assert_null(auth_db_load("/nonexistent/users", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/users: No such file"));
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_verify(void **state)
{
    char err[512];
    struct auth_db *db = auth_db_load(users_file("users"), err, sizeof(err));
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    double t0, known = 0, unknown = 0;
    int i;

    assert_non_null(db);
    assert_true(auth_db_verify(db, "alice", "secret", cd));
    assert_false(auth_db_verify(db, "alice", "Secret", cd));
    assert_false(auth_db_verify(db, "alice", "", cd));
    assert_true(auth_db_verify(db, "bob@example.org", "hunter2", cd));
    assert_false(auth_db_verify(db, "bob@example.org", "secret", cd));
    assert_false(auth_db_verify(db, "Alice", "secret", cd));
    assert_false(auth_db_verify(db, "carol", "secret", cd));
    assert_false(auth_db_verify(db, "", "", cd));
    /*
     * An unknown user costs a hash like the first user's (yescrypt), not nothing.
     * The fastest of five of each, so that a busy machine's pauses do not count.
     */
    known = unknown = 1e9;
    for (i = 0; i < 5; i++) {
        double d;
        t0 = now_s();
        auth_db_verify(db, "alice", "wrong", cd);
        if ((d = now_s() - t0) < known)
            known = d;
        t0 = now_s();
        auth_db_verify(db, "nobody", "wrong", cd);
        if ((d = now_s() - t0) < unknown)
            unknown = d;
    }
    print_message("# verify: known user %.1f ms, unknown user %.1f ms (fastest of 5)\n",
        known * 1000, unknown * 1000);
    assert_true(unknown > known * 0.3 && unknown < known * 3.3);
    free(cd);
    auth_db_free(db);
}

struct result {
    int calls;
    enum auth_result r;
};

static void
on_done(void *arg, enum auth_result r)
{
    struct result *res = arg;

    res->calls++;
    res->r = r;
}

/* Wait for the eventfd and reap until every result arrived (bounded). */
static void
reap_until(struct auth *a, struct result *res, int n, int want_calls)
{
    double deadline = now_s() + 10;
    int i, got;

    for (;;) {
        struct pollfd p = {auth_event_fd(a), POLLIN, 0};
        poll(&p, 1, 100);
        auth_reap(a);
        for (got = 0, i = 0; i < n; i++)
            got += res[i].calls;
        if (got >= want_calls)
            return;
        assert_true(now_s() < deadline);
    }
}

static void
test_workers(void **state)
{
    char err[512], text[512];
    struct auth *a = auth_new(users_file("users-w"), 2, err, sizeof(err));
    struct result res[4] = {{0}};
    double t0;

    if (a == NULL)
        fail_msg("%s", err);
    assert_int_equal(auth_check(a, "alice", "secret", on_done, &res[0]), 0);
    assert_int_equal(auth_check(a, "alice", "nope", on_done, &res[1]), 0);
    assert_int_equal(auth_check(a, "nobody", "secret", on_done, &res[2]), 0);
    assert_int_equal(auth_check(a, "bob@example.org", "hunter2", on_done, &res[3]), 0);
    t0 = now_s();
    reap_until(a, res, 4, 4);
    print_message("# 4 checks on 2 workers: %.1f ms\n", (now_s() - t0) * 1000);
    assert_int_equal(res[0].r, AUTH_RESULT_OK);
    assert_int_equal(res[1].r, AUTH_RESULT_FAIL);
    assert_int_equal(res[2].r, AUTH_RESULT_FAIL);
    assert_int_equal(res[3].r, AUTH_RESULT_OK);

    /* reload: carol replaces everyone */
    snprintf(text, sizeof(text), "carol:%s\n", alice_hash);
    write_file("users-w", text);
    auth_reload(a);
    memset(res, 0, sizeof(res));
    auth_check(a, "carol", "secret", on_done, &res[0]);
    auth_check(a, "alice", "secret", on_done, &res[1]);
    reap_until(a, res, 2, 2);
    assert_int_equal(res[0].r, AUTH_RESULT_OK);
    assert_int_equal(res[1].r, AUTH_RESULT_FAIL);

    /* a bad file on reload keeps the users in force */
    write_file("users-w", "carol:plaintext\n");
    auth_reload(a);
    memset(res, 0, sizeof(res));
    auth_check(a, "carol", "secret", on_done, &res[0]);
    reap_until(a, res, 1, 1);
    assert_int_equal(res[0].r, AUTH_RESULT_OK);

    /* checks still queued at free are answered as cancelled (or done) */
    memset(res, 0, sizeof(res));
    auth_check(a, "carol", "secret", on_done, &res[0]);
    auth_check(a, "carol", "secret", on_done, &res[1]);
    auth_check(a, "carol", "secret", on_done, &res[2]);
    auth_free(a);
    assert_int_equal(res[0].calls + res[1].calls + res[2].calls, 3);
}

/* One check that fails (begin + end), as the server does it. */
static bool
limit_fail(struct auth_limit *l, const unsigned char key[17], time_t now)
{
    assert_true(auth_limit_begin(l, key, now));
    return auth_limit_end(l, key, now, true);
}

static void
test_limit(void **state)
{
    struct auth_limit *l = auth_limit_new(3, 60);
    unsigned char a[17] = {4, 192, 0, 2, 1}, b[17] = {4, 192, 0, 2, 2};
    unsigned char v6a[17] = {6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
    unsigned char v6b[17] = {6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9};
    unsigned char v6c[17] = {6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};

    assert_non_null(l);
    assert_false(auth_limit_blocked(l, a, 1000));
    assert_false(limit_fail(l, a, 1000));
    assert_false(limit_fail(l, a, 1010));
    assert_false(auth_limit_blocked(l, a, 1010));
    assert_true(limit_fail(l, a, 1020));
    assert_true(auth_limit_blocked(l, a, 1030));
    assert_false(auth_limit_begin(l, a, 1030));
    assert_false(auth_limit_blocked(l, b, 1030)); /* another address */
    /* the window runs from the first failure */
    assert_true(auth_limit_blocked(l, a, 1059));
    assert_false(auth_limit_blocked(l, a, 1060));
    assert_false(limit_fail(l, a, 1061));
    /* an IPv6 /64 is one address */
    limit_fail(l, v6a, 2000);
    limit_fail(l, v6b, 2000);
    assert_true(limit_fail(l, v6a, 2000));
    assert_true(auth_limit_blocked(l, v6b, 2001));
    assert_false(auth_limit_blocked(l, v6c, 2001));
    auth_limit_free(l);
}

/* Checks in flight count: parallel AUTHs get no more guesses than sequential ones. */
/*
 * A full table (100,000 addresses with failures in their window): a new address
 * goes uncounted rather than costing a walk of the table at every AUTH; once the
 * window has passed, the sweep frees the table and addresses are counted again.
 */
static void
test_limit_full_table(void **state)
{
    struct auth_limit *l = auth_limit_new(2, 60);
    unsigned char key[17] = {4};
    unsigned i;

    for (i = 0; i < 100000; i++) {
        key[1] = 10;
        key[2] = (unsigned char)(i >> 16);
        key[3] = (unsigned char)(i >> 8);
        key[4] = (unsigned char)i;
        assert_true(auth_limit_begin(l, key, 1000));
        auth_limit_end(l, key, 1000, true);
    }
    key[1] = 192;
    key[4] = 1;
    for (i = 0; i < 5; i++) { /* full: uncounted, never refused */
        assert_true(auth_limit_begin(l, key, 1001));
        auth_limit_end(l, key, 1001, true);
    }
    /* the window has passed: the sweep empties the table, the address is counted */
    assert_true(auth_limit_begin(l, key, 1100));
    auth_limit_end(l, key, 1100, true);
    assert_true(auth_limit_begin(l, key, 1100));
    auth_limit_end(l, key, 1100, true);
    assert_false(auth_limit_begin(l, key, 1100));
    auth_limit_free(l);
}

static void
test_limit_inflight(void **state)
{
    struct auth_limit *l = auth_limit_new(3, 60);
    unsigned char a[17] = {4, 192, 0, 2, 1}, b[17] = {4, 192, 0, 2, 2};
    int i;

    assert_non_null(l);
    for (i = 0; i < 3; i++)
        assert_true(auth_limit_begin(l, a, 1000));
    assert_false(auth_limit_begin(l, a, 1000)); /* a fourth waits for nothing: refused */
    assert_true(auth_limit_blocked(l, a, 1000));
    assert_true(auth_limit_begin(l, b, 1000)); /* another address is not concerned */
    /* a success releases its place; failures take theirs for the window */
    assert_false(auth_limit_end(l, a, 1001, false));
    assert_true(auth_limit_begin(l, a, 1001));
    assert_false(auth_limit_end(l, a, 1002, true));
    assert_false(auth_limit_end(l, a, 1002, true));
    assert_false(auth_limit_begin(l, a, 1002)); /* 2 failures + 1 in flight */
    assert_true(auth_limit_end(l, a, 1003, true));
    assert_false(auth_limit_begin(l, a, 1003));
    /* the failures expire; a check in flight across the window's end still holds its place */
    assert_true(auth_limit_begin(l, a, 1062));
    assert_true(auth_limit_begin(l, a, 1062));
    assert_true(auth_limit_begin(l, a, 1062));
    assert_false(auth_limit_begin(l, a, 1062));
    assert_false(auth_limit_end(l, a, 1063, false));
    assert_false(auth_limit_end(l, a, 1063, false));
    assert_false(auth_limit_end(l, a, 1063, false));
    assert_false(auth_limit_blocked(l, a, 1063)); /* all released: nothing held */
    assert_false(auth_limit_end(l, b, 1063, false));
    auth_limit_free(l);
}

static void
test_sender_owned(void **state)
{
    struct config c;
    char *doms[] = {"example.org", "example.net"};

    memset(&c, 0, sizeof(c));
    c.local_domains.items = doms;
    c.local_domains.n = 2;
    /* a user name that is an address: that address only (domain without case) */
    assert_true(auth_sender_owned(&c, "bob@example.com", "bob@example.com"));
    assert_true(auth_sender_owned(&c, "bob@example.com", "bob@EXAMPLE.com"));
    assert_false(auth_sender_owned(&c, "bob@example.com", "Bob@example.com"));
    assert_false(auth_sender_owned(&c, "bob@example.com", "bob@example.org"));
    assert_false(auth_sender_owned(&c, "bob@example.com", "alice@example.com"));
    assert_false(auth_sender_owned(&c, "bob@example.com", "bob"));
    /* a bare name: that local part at any local domain */
    assert_true(auth_sender_owned(&c, "alice", "alice@example.org"));
    assert_true(auth_sender_owned(&c, "alice", "alice@Example.NET"));
    assert_false(auth_sender_owned(&c, "alice", "alice@example.com"));
    assert_false(auth_sender_owned(&c, "alice", "alicex@example.org"));
    assert_false(auth_sender_owned(&c, "alice", "ali@example.org"));
    /* the null sender is allowed */
    assert_true(auth_sender_owned(&c, "alice", ""));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_methods),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_limit_inflight),
        cmocka_unit_test(test_limit_full_table),
        cmocka_unit_test(test_sender_owned),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
