/*
 * test_recipients.c - unit tests for policy/recipients.c: every load error with its exact
 * "FILE:LINE: reason", lookups (exact, case, flattened alias chains, catch-alls), loop and
 * depth detection, the postmaster warning, a 100k-entry table against the clock, and the
 * shipped etc/recipients.example.
 *
 * The shipped file is found under $TERN_SRCDIR, else SRCDIR (if compiled in), else "." or
 * ".." (meson runs tests from a build directory inside the source tree).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/recipients.h"

static char err[1024];
static char tpath[64];

/* A temporary file holding n bytes of data, its name in tpath; the caller unlinks it. */
static void
temp_file(const void *data, size_t n)
{
    int fd;

    snprintf(tpath, sizeof(tpath), "/tmp/test_recipients.XXXXXX");
    fd = mkstemp(tpath);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* text loaded from a temporary file (removed again); NULL with err set on error. */
static struct recipients *
load(const char *text)
{
    struct recipients *r;

    err[0] = '\0';
    temp_file(text, strlen(text));
    r = recipients_load(tpath, err, sizeof(err));
    unlink(tpath);
    return r;
}

/* text must fail with exactly "TEMPFILE:" followed by expect. */
static void
expect_error(const char *text, const char *expect)
{
    char want[1024];

    assert_null(load(text));
    snprintf(want, sizeof(want), "%s:%s", tpath, expect);
    assert_string_equal(err, want);
}

/* addr must exist and deliver to exactly the n addresses given, in that order. */
static void
expect_targets(const struct recipients *r, const char *addr, size_t n, ...)
{
    const char *const *t = NULL;
    size_t nt = 0, i;
    va_list ap;

    assert_int_equal(recipients_lookup(r, addr, &t, &nt), 1);
    assert_int_equal(nt, n);
    va_start(ap, n);
    for (i = 0; i < n; i++)
        assert_string_equal(t[i], va_arg(ap, const char *));
    va_end(ap);
    assert_null(t[n]);
}

static void
expect_unknown(const struct recipients *r, const char *addr)
{
    const char *const *t = NULL;
    size_t nt = 99;

    assert_int_equal(recipients_lookup(r, addr, &t, &nt), 0);
    assert_null(t);
    assert_int_equal(nt, 99);
}

static void
test_syntax_errors(void **state)
{
    struct recipients *r;
    char *big;

    (void)state;
    expect_error("pm@example.org\nbad@@example.org\n",
        "2: bad address \"bad@@example.org\": invalid domain name");
    expect_error("a b@example.org\n", "1: bad address \"a\": missing '@' and domain");
    expect_error("a@example.org: b@exa_mple.org\n",
        "1: bad address \"b@exa_mple.org\": invalid domain name");
    expect_error("a@example.org: <b@example.org>\n",
        "1: bad address \"<b@example.org>\": invalid character or dot in the local part");
    expect_error("a@example.org: @relay.example:b@example.org\n",
        "1: bad address \"@relay.example:b@example.org\": source route not allowed");
    expect_error("a@example.org: b@example.org c@example.org\n",
        "1: bad address \"b@example.org c@example.org\": space inside the address");
    expect_error("\n# x\na@example.org b@example.org\n", "3: missing ':' before the targets");
    expect_error("a@example.org:\n", "1: empty target list");
    expect_error("a@example.org :   # nothing\n", "1: empty target list");
    expect_error("a@example.org: b@example.org,\n", "1: empty target in the list");
    expect_error("a@example.org: b@example.org, ,c@example.org\n", "1: empty target in the list");
    expect_error(": b@example.org\n", "1: missing address before ':'");
    expect_error("@example.org\n", "1: catch-all \"@example.org\" needs ':' and a target");
    expect_error("@exa_mple.org: a@example.net\n",
        "1: bad catch-all domain \"@exa_mple.org\": invalid domain name");
    expect_error("@: a@example.net\n", "1: bad catch-all domain \"@\": empty domain");
    expect_error("@a@example.org: a@example.net\n",
        "1: bad catch-all domain \"@a@example.org\": invalid domain name");

    /* duplicates, compared without regard to case */
    expect_error("a@example.org\nb@example.org\nA@Example.ORG: b@example.org\n",
        "3: duplicate entry \"a@example.org\" (first at line 1)");
    expect_error("a@example.org: b@example.org\na@example.org\n",
        "2: duplicate entry \"a@example.org\" (first at line 1)");
    expect_error("@example.org: a@example.net\n@EXAMPLE.org: b@example.net\n",
        "2: duplicate catch-all for \"@example.org\" (first at line 1)");

    /* a catch-all into its own domain must name a listed address */
    expect_error("x@example.org\n@example.org: nobody@example.org\n",
        "2: catch-all target \"nobody@example.org\" is in the same domain and not listed "
        "(it would loop)");

    /* 4096 octets is the longest line; CR LF does not count */
    big = malloc(3 * 4200);
    assert_non_null(big);
    memset(big, '#', 4096);
    memcpy(big + 4096, "\r\n", 3);
    r = load(big);
    assert_non_null(r);
    recipients_free(r);
    memset(big, '#', 4097);
    memcpy(big + 4097, "\n", 2);
    expect_error(big, "1: line longer than 4096 octets");
    strcpy(big, "a@example.org\n");
    memset(big + 14, 'x', 4097);
    big[14 + 4097] = '\0';
    expect_error(big, "2: line longer than 4096 octets");
    free(big);
}

static void
test_file_errors(void **state)
{
    char want[128];
    size_t n = 16 * 1024 * 1024;
    char *big;
    struct recipients *r;

    (void)state;
    assert_null(recipients_load("/nonexistent/recipients", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/recipients: cannot open: No such file or directory");

    /* exactly 16 MiB of comments loads; one octet more does not */
    big = malloc(n + 1);
    assert_non_null(big);
    memset(big, '\n', n + 1);
    big[0] = '#';
    temp_file(big, n);
    r = recipients_load(tpath, err, sizeof(err));
    assert_non_null(r);
    recipients_free(r);
    unlink(tpath);
    temp_file(big, n + 1);
    assert_null(recipients_load(tpath, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s: larger than 16 MiB", tpath);
    assert_string_equal(err, want);
    unlink(tpath);
    free(big);

    /* a tiny err buffer is filled as far as it goes, never overrun */
    {
        char small[8];

        assert_null(recipients_load("/nonexistent/recipients", small, sizeof(small)));
        assert_string_equal(small, "/nonexi");
    }
}

static void
test_lookup(void **state)
{
    struct recipients *r;

    (void)state;
    r = load("# mailboxes\n"
             "postmaster@example.org\n"
             "Alice@Example.org      # trailing comment\n"
             "bob@example.org\r\n"
             "a#b@example.org\n"
             "\"quoted:, #name\"@example.org\n"
             "  carol@example.org\n"
             "\xc3\x84nne@example.org\n"
             "\n"
             "# aliases\n"
             "team@example.org: alice@example.org, bob@example.org,ALICE@example.org\n"
             "all@example.org : team@example.org , carol@example.org,bob@example.org\n"
             "fwd@example.org: someone@remote.example\n"
             "early@example.org: late@example.org\n"
             "late@example.org: team@example.org\n"
             "q@example.org: \"quoted:, #name\"@example.org\n"
             "lit@example.org: u@[192.0.2.1], \"v\"@[IPv6:2001:db8::1]\n"
             "\n"
             "# catch-all, and an exact entry it does not override\n"
             "@example.net: bob@example.org\n"
             "postmaster@example.net: alice@example.org\n"
             "# an alias into a catch-all domain goes through the catch-all\n"
             "via@example.org: whoever@example.net\n");
    assert_non_null(r);

    /* exact, without regard to ASCII case; a mailbox delivers to itself as spelt */
    expect_targets(r, "alice@example.org", 1, "Alice@Example.org");
    expect_targets(r, "ALICE@EXAMPLE.ORG", 1, "Alice@Example.org");
    expect_targets(r, "bob@example.org", 1, "bob@example.org");
    expect_targets(r, "carol@example.org", 1, "carol@example.org");
    expect_targets(r, "a#b@example.org", 1, "a#b@example.org");
    expect_targets(r, "\"QUOTED:, #name\"@example.org", 1, "\"quoted:, #name\"@example.org");

    /* UTF-8 is compared as it is: U+00C4 is not folded to U+00E4 */
    expect_targets(r, "\xc3\x84nne@EXAMPLE.org", 1, "\xc3\x84nne@example.org");
    expect_unknown(r, "\xc3\xa4nne@example.org");

    /* aliases: flattened, duplicates removed, first-seen order kept */
    expect_targets(r, "team@example.org", 2, "Alice@Example.org", "bob@example.org");
    expect_targets(
        r, "All@Example.Org", 3, "Alice@Example.org", "bob@example.org", "carol@example.org");
    expect_targets(r, "fwd@example.org", 1, "someone@remote.example");
    expect_targets(r, "early@example.org", 2, "Alice@Example.org", "bob@example.org");
    expect_targets(r, "q@example.org", 1, "\"quoted:, #name\"@example.org");
    expect_targets(r, "lit@example.org", 2, "u@[192.0.2.1]", "\"v\"@[IPv6:2001:db8::1]");

    /* catch-all, and an exact entry that wins over it */
    expect_targets(r, "anything@example.net", 1, "bob@example.org");
    expect_targets(r, "ANY.thing@EXAMPLE.NET", 1, "bob@example.org");
    expect_targets(r, "postmaster@example.net", 1, "Alice@Example.org");
    expect_targets(r, "via@example.org", 1, "bob@example.org");

    /* unknown */
    expect_unknown(r, "nobody@example.org");
    expect_unknown(r, "alice@example.org.evil");
    expect_unknown(r, "alice@sub.example.org");
    expect_unknown(r, "someone@remote.example"); /* only a target, not an entry */
    expect_unknown(r, "postmaster");             /* the bare form is the caller's */
    expect_unknown(r, "@example.net");
    expect_unknown(r, "");

    /* the out-parameters may be left out */
    assert_int_equal(recipients_lookup(r, "team@example.org", NULL, NULL), 1);
    recipients_free(r);

    /* an empty file is an empty table */
    r = load("");
    assert_non_null(r);
    expect_unknown(r, "a@example.org");
    recipients_free(r);
    recipients_free(NULL);
}

static void
test_chains(void **state)
{
    struct recipients *r;

    (void)state;
    /* eight levels are allowed: l1 -> ... -> l8 -> m */
    r = load("postmaster@example.org\n"
             "l1@example.org: l2@example.org\n"
             "l2@example.org: l3@example.org\n"
             "l3@example.org: l4@example.org\n"
             "l4@example.org: l5@example.org\n"
             "l5@example.org: l6@example.org\n"
             "l6@example.org: l7@example.org\n"
             "l7@example.org: l8@example.org, x@remote.example\n"
             "l8@example.org: m@example.org\n"
             "m@example.org\n");
    assert_non_null(r);
    expect_targets(r, "l1@example.org", 2, "m@example.org", "x@remote.example");
    expect_targets(r, "l8@example.org", 1, "m@example.org");
    recipients_free(r);

    /* nine are not, reported at the alias whose expansion is too deep */
    expect_error("l1@example.org: l2@example.org\n"
                 "l2@example.org: l3@example.org\n"
                 "l3@example.org: l4@example.org\n"
                 "l4@example.org: l5@example.org\n"
                 "l5@example.org: l6@example.org\n"
                 "l6@example.org: l7@example.org\n"
                 "l7@example.org: l8@example.org\n"
                 "l8@example.org: l9@example.org\n"
                 "l9@example.org: m@example.org\n",
        "1: alias expansion deeper than 8 levels: l1@example.org -> l2@example.org -> "
        "l3@example.org -> l4@example.org -> l5@example.org -> l6@example.org -> "
        "l7@example.org -> l8@example.org -> l9@example.org");

    /* the same, when the deep end was expanded first */
    expect_error("l3@example.org: l4@example.org\n"
                 "l4@example.org: l5@example.org\n"
                 "l5@example.org: l6@example.org\n"
                 "l6@example.org: l7@example.org\n"
                 "l7@example.org: l8@example.org\n"
                 "l8@example.org: l9@example.org\n"
                 "l9@example.org: m@example.org\n"
                 "l1@example.org: l2@example.org\n"
                 "l2@example.org: l3@example.org\n",
        "8: alias expansion deeper than 8 levels: l1@example.org -> l2@example.org -> "
        "l3@example.org -> ...");
}

static void
test_loops(void **state)
{
    (void)state;
    expect_error("a@example.org: b@example.org\nb@example.org: a@example.org\n",
        "1: alias loop: a@example.org -> b@example.org -> a@example.org");
    expect_error("a@example.org: A@example.org\n", "1: alias loop: a@example.org -> a@example.org");
    /* reached from outside the loop: reported where the loop starts */
    expect_error("c@example.org: x@example.org, a@example.org\n"
                 "x@example.org\n"
                 "a@example.org: b@example.org\n"
                 "b@example.org: x@example.org, a@example.org\n",
        "3: alias loop: a@example.org -> b@example.org -> a@example.org");
    /* through a catch-all: an unlisted address falls into it */
    expect_error("@example.org: a@example.org\n"
                 "a@example.org: typo@example.org\n",
        "1: alias loop: @example.org -> a@example.org -> @example.org");
    /* two catch-alls pointing at each other's domains */
    expect_error("@a.example: x@b.example\n@b.example: y@a.example\n",
        "1: alias loop: @a.example -> @b.example -> @a.example");
    /* a loop longer than eight is caught by the depth limit */
    expect_error("l1@example.org: l2@example.org\n"
                 "l2@example.org: l3@example.org\n"
                 "l3@example.org: l4@example.org\n"
                 "l4@example.org: l5@example.org\n"
                 "l5@example.org: l6@example.org\n"
                 "l6@example.org: l7@example.org\n"
                 "l7@example.org: l8@example.org\n"
                 "l8@example.org: l9@example.org\n"
                 "l9@example.org: l1@example.org\n",
        "1: alias expansion deeper than 8 levels: l1@example.org -> l2@example.org -> "
        "l3@example.org -> l4@example.org -> l5@example.org -> l6@example.org -> "
        "l7@example.org -> l8@example.org -> l9@example.org");
}

/* recipients_load(path) with stderr (where log lines go) captured into out. */
static struct recipients *
load_path_capture(const char *path, char *out, size_t outlen)
{
    char cpath[] = "/tmp/test_recipients_log.XXXXXX";
    struct recipients *r;
    int fd, saved;
    ssize_t n;

    fd = mkstemp(cpath);
    assert_true(fd >= 0);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    err[0] = '\0';
    r = recipients_load(path, err, sizeof(err));
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    n = pread(fd, out, outlen - 1, 0);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
    unlink(cpath);
    return r;
}

/* load(text) with stderr captured into out. */
static struct recipients *
load_capture(const char *text, char *out, size_t outlen)
{
    struct recipients *r;

    temp_file(text, strlen(text));
    r = load_path_capture(tpath, out, outlen);
    unlink(tpath);
    return r;
}

static void
test_postmaster_warning(void **state)
{
    struct recipients *r;
    char out[4096];

    (void)state;
    r = load_capture("a@one.example\n"
                     "b@one.example\n"
                     "a@two.example\n"
                     "Postmaster@Two.Example: a@two.example\n"
                     "a@three.example\n"
                     "@three.example: a@three.example\n"
                     "a@four.example: a@one.example\n",
        out, sizeof(out));
    assert_non_null(r);
    assert_non_null(strstr(out, " warn - recipients: "));
    assert_non_null(strstr(out, "line=1 domain=one.example\n"));
    assert_non_null(strstr(out, "line=7 domain=four.example\n"));
    assert_null(strstr(out, "two.example"));
    assert_null(strstr(out, "three.example"));
    /* once per domain */
    assert_null(strstr(strstr(out, "domain=one.example") + 1, "domain=one.example"));
    recipients_free(r);

    r = load_capture("postmaster@one.example\na@one.example\n", out, sizeof(out));
    assert_non_null(r);
    assert_string_equal(out, "");
    recipients_free(r);
}

static double
seconds(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * 100,000 entries in 100 domains: 60,000 mailboxes, 39,900 aliases (half of them naming
 * other aliases), 100 postmasters.  Loading must take well under a second of CPU, even in
 * an ASan build (about 0.08 s optimized, 0.3-0.5 s with ASan+UBSan at -O0).
 */
static void
test_many(void **state)
{
    const size_t nbox = 60000, nalias = 39900, ndom = 100;
    size_t cap = 8 * 1024 * 1024, len = 0, i;
    char *text = malloc(cap), addr[64];
    struct recipients *r;
    double w0, w1, c0, c1, c2;
    const char *const *t;
    size_t nt;

    (void)state;
    assert_non_null(text);
    for (i = 0; i < ndom; i++)
        len += (size_t)sprintf(text + len, "postmaster@d%zu.example: u0@d0.example\n", i);
    for (i = 0; i < nbox; i++)
        len += (size_t)sprintf(text + len, "U%zu@D%zu.example\n", i, i % ndom);
    for (i = 0; i < nalias; i++) {
        if (i % 2 == 0)
            len += (size_t)sprintf(text + len,
                "a%zu@d%zu.example: u%zu@d%zu.example, u%zu@d%zu.example\n", i, i % ndom, i,
                i % ndom, i + 1, (i + 1) % ndom);
        else
            len += (size_t)sprintf(text + len,
                "a%zu@d%zu.example: a%zu@d%zu.example, u%zu@d%zu.example\n", i, i % ndom, i - 1,
                (i - 1) % ndom, i + 1, (i + 1) % ndom);
    }
    assert_true(len < cap);
    temp_file(text, len);
    free(text);

    w0 = seconds(CLOCK_MONOTONIC);
    c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    r = recipients_load(tpath, err, sizeof(err));
    c1 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    w1 = seconds(CLOCK_MONOTONIC);
    unlink(tpath);
    assert_non_null(r);
    for (i = 0; i < nbox; i++) {
        snprintf(addr, sizeof(addr), "u%zu@d%zu.example", i, i % ndom);
        assert_int_equal(recipients_lookup(r, addr, &t, &nt), 1);
        assert_int_equal(nt, 1);
    }
    for (i = 0; i < nalias; i++) {
        snprintf(addr, sizeof(addr), "A%zu@D%zu.EXAMPLE", i, i % ndom);
        assert_int_equal(recipients_lookup(r, addr, &t, &nt), 1);
        assert_int_equal(nt, i % 2 == 0 ? 2 : 3);
    }
    snprintf(addr, sizeof(addr), "a%zu@d%zu.example", (size_t)1, (size_t)1);
    expect_targets(r, addr, 3, "U0@D0.example", "U1@D1.example", "U2@D2.example");
    expect_unknown(r, "u60000@d0.example");
    c2 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    print_message("load of %zu entries (%zu octets): %.3f s CPU, %.3f s wall; "
                  "%zu lookups: %.3f s CPU\n",
        nbox + nalias + ndom, len, c1 - c0, w1 - w0, nbox + nalias, c2 - c1);
    /* CPU time, not wall time: a loaded test machine must not fail this. */
    assert_true(c1 - c0 < 1.0);
    recipients_free(r);
}

static const char *
srcdir(void)
{
    const char *d = getenv("TERN_SRCDIR");

    if (d != NULL && *d != '\0')
        return d;
#ifdef SRCDIR
    return SRCDIR;
#else
    if (access("etc/recipients.example", R_OK) == 0)
        return ".";
    return "..";
#endif
}

static void
test_example(void **state)
{
    char path[4096], out[4096];
    struct recipients *r;

    (void)state;
    snprintf(path, sizeof(path), "%s/etc/recipients.example", srcdir());
    /* loads, and warns about nothing */
    r = load_path_capture(path, out, sizeof(out));
    if (r == NULL)
        fail_msg("%s", err);
    assert_string_equal(out, "");

    expect_targets(r, "alice@example.org", 1, "alice@example.org");
    expect_targets(r, "Postmaster@Example.ORG", 1, "alice@example.org");
    expect_targets(r, "abuse@example.org", 1, "alice@example.org");
    expect_targets(r, "team@example.org", 2, "alice@example.org", "bob@example.org");
    expect_targets(
        r, "everyone@example.org", 3, "alice@example.org", "bob@example.org", "carol@example.org");
    expect_targets(r, "carol.home@example.org", 1, "carol@mail.example.com");
    expect_targets(r, "postmaster@example.net", 1, "alice@example.org");
    expect_targets(r, "anything@example.net", 1, "bob@example.org");
    expect_unknown(r, "nobody@example.org");
    recipients_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_chains),
        cmocka_unit_test(test_loops),
        cmocka_unit_test(test_postmaster_warning),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
