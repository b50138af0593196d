/*
 * test_sandbox.c - util/priv.c and util/sandbox.c in forked children (both change the
 * process for good): dropping root leaves no way back; the Landlock sandbox allows exactly
 * its rules.  Parts that need root or Landlock are skipped, saying so, where missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/priv.h"
#include "util/sandbox.h"

/* Run fn in a child; its exit status (0: all checks held; else the number of the failed one). */
static int
in_child(int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    int st;

    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static int
child_drop(void *arg)
{
    struct priv_user pu;
    enum priv_mode mode;
    char err[256];
    uid_t r, e, s;

    if (priv_resolve("nobody", &pu, &mode, err, sizeof(err)) < 0 || mode != PRIV_DROP)
        return 1;
    if (priv_drop(&pu, err, sizeof(err)) < 0)
        return 2;
    if (getresuid(&r, &e, &s) < 0 || r != pu.uid || e != pu.uid || s != pu.uid)
        return 3;
    if (setuid(0) != -1 || seteuid(0) != -1 || setgid(0) != -1 || setgroups(0, NULL) != -1)
        return 4; /* no way back */
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        return 5;
    return 0;
}

static void
test_priv_drop_for_good(void **state)
{
    if (geteuid() != 0 || getpwnam("nobody") == NULL)
        skip(); /* needs root and the user nobody */
    assert_int_equal(in_child(child_drop, NULL), 0);
}

static void
test_priv_resolve(void **state)
{
    struct priv_user pu;
    enum priv_mode mode;
    char err[256];

    assert_int_equal(priv_resolve(NULL, &pu, &mode, err, sizeof(err)), 0);
    assert_int_equal(mode, geteuid() == 0 ? PRIV_ROOT_NO_USER : PRIV_UNPRIVILEGED);
    assert_false(pu.drop);
    assert_int_equal(priv_resolve("no-such-user-tern", &pu, &mode, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no such user"));
    if (geteuid() == 0) {
        assert_int_equal(priv_resolve("root", &pu, &mode, err, sizeof(err)), 0);
        assert_int_equal(mode, PRIV_ROOT_USER_IS_ROOT);
        assert_false(pu.drop);
    }
}

struct sb_paths {
    char rw[256], ro[256], rofile[256], out[256];
};

static int
child_sandbox(void *arg)
{
    struct sb_paths *p = arg;
    struct sandbox_rule rules[] = {
        {p->rw, SANDBOX_READ_WRITE},
        {p->ro, SANDBOX_READ},
        {"/nonexistent/path/skipped", SANDBOX_READ},
    };
    char path[600], err[256];
    int fd;

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return 1;
    if ((fd = sandbox_prepare(rules, 3, err, sizeof(err))) < 0)
        return 2;
    if (sandbox_enforce(fd, err, sizeof(err)) <= 0)
        return 3;
    /* read-write tree: create, write, rename, remove, make a directory */
    snprintf(path, sizeof(path), "%s/new", p->rw);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0 || write(fd, "x", 1) != 1)
        return 4;
    close(fd);
    snprintf(path, sizeof(path), "%s/sub", p->rw);
    if (mkdir(path, 0700) < 0)
        return 5;
    {
        char from[600], to[600];

        snprintf(from, sizeof(from), "%s/new", p->rw);
        snprintf(to, sizeof(to), "%s/sub/moved", p->rw);
        if (rename(from, to) < 0 || unlink(to) < 0)
            return 6;
    }
    /* read-only: read yes, write no */
    if ((fd = open(p->rofile, O_RDONLY)) < 0)
        return 7;
    close(fd);
    if (open(p->rofile, O_WRONLY) >= 0 || errno != EACCES)
        return 8;
    snprintf(path, sizeof(path), "%s/created", p->ro);
    if (open(path, O_WRONLY | O_CREAT, 0600) >= 0 || errno != EACCES)
        return 9;
    /* outside: nothing, not even reading, not even root */
    if (open(p->out, O_RDONLY) >= 0 || errno != EACCES)
        return 10;
    if (open("/etc/hostname", O_RDONLY) >= 0)
        return 11;
    return 0;
}

static void
test_sandbox_rules(void **state)
{
    struct sb_paths p;
    char base[] = "/tmp/test_sandbox.XXXXXX";
    int fd;

    if (sandbox_abi() <= 0)
        skip(); /* the kernel has no Landlock */
    assert_non_null(mkdtemp(base));
    snprintf(p.rw, sizeof(p.rw), "%s/rw", base);
    snprintf(p.ro, sizeof(p.ro), "%s/ro", base);
    snprintf(p.rofile, sizeof(p.rofile), "%s/ro/file", base);
    snprintf(p.out, sizeof(p.out), "%s/outside", base);
    assert_int_equal(mkdir(p.rw, 0700), 0);
    assert_int_equal(mkdir(p.ro, 0700), 0);
    assert_true((fd = open(p.rofile, O_WRONLY | O_CREAT, 0600)) >= 0);
    close(fd);
    assert_true((fd = open(p.out, O_WRONLY | O_CREAT, 0600)) >= 0);
    close(fd);
    assert_int_equal(in_child(child_sandbox, &p), 0);
    /* the parent is not confined */
    assert_true((fd = open(p.out, O_RDONLY)) >= 0);
    close(fd);
    unlink(p.out);
    unlink(p.rofile);
    rmdir(p.ro);
    {
        char sub[300];

        snprintf(sub, sizeof(sub), "%s/sub", p.rw);
        rmdir(sub);
    }
    rmdir(p.rw);
    rmdir(base);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_priv_resolve),
        cmocka_unit_test(test_priv_drop_for_good),
        cmocka_unit_test(test_sandbox_rules),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
