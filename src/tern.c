/*
 * tern.c - the command-line tool.  A thin main: options and dispatch only;
 * the explanations live in smtp/explain.c (unit-tested there).
 *
 *   tern [--json] [--lang en|fr] explain CODE...
 *   tern [--json] [--lang en|fr] compare CODE CODE
 *
 * CODE is a reply code (421), an enhanced status code (4.7.1, X.7.1) or a
 * whole reply line from a log or a bounce ("550 5.1.1 <bob@example.org>:
 * User unknown").  Options may come anywhere; "--" ends them.  Exit status:
 * 0 done, 2 unknown code or nothing recognisable in an argument, 64 usage.
 *
 *   tern send ...      cli/send.h        tern probe ...   cli/probe.h
 *   tern queue ...     cli/queue.h       tern sendmail ... (or as `sendmail`) cli/sendmail.h
 *   tern passwd [USER] cli/passwd.h
 *   mailq              cli/queue.h
 * Those take the rest of the command line as it is, with their own options.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/passwd.h"
#include "cli/probe.h"
#include "cli/queue.h"
#include "cli/send.h"
#include "cli/sendmail.h"
#include "smtp/explain.h"

/* Where `tern queue` finds ternd unless -s or TERN_CONTROL_SOCKET says otherwise. */
#define TERN_DEFAULT_CONTROL_SOCKET "/run/tern/control"

#define EXIT_UNKNOWN 2
#define EXIT_USAGE 64

static const char usage_text[] =
    "usage: tern [--json] [--lang en|fr] explain CODE...\n"
    "       tern [--json] [--lang en|fr] compare CODE CODE\n"
    "       tern queue [-s SOCKET] [list [--json] | count | flush [ID...] |\n"
    "                  delete ID... | hold ID... | release ID...]\n"
    "       tern send --server HOST[:PORT] --from ADDR --to ADDR... [options] [FILE|-]\n"
    "       tern probe HOST:PORT|IP|DOMAIN [--from ADDR] [--to ADDR]... [options]\n"
    "       tern sendmail [sendmail(8) options] [RECIPIENT...]\n"
    "       tern passwd [USER] < password   (a line for auth_users)\n"
    "CODE: a reply code (421), an enhanced status code (4.7.1, X.7.1), or a whole\n"
    "reply line in quotes (\"550 5.1.1 <bob@example.org>: User unknown\").\n";

static int
usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "tern: %s\n", why);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

static int
lookup(const char *arg, struct explain_result *r)
{
    char err[256];

    if (explain_lookup(arg, r, err, sizeof(err)) == -1) {
        fprintf(stderr, "tern: %s\n", err);
        return -1;
    }
    return 0;
}

static int
cmd_explain(char **codes, int n, bool json, enum explain_lang lang)
{
    struct explain_result r;
    int i, rc = 0, shown = 0;

    if (json)
        fputs("[", stdout);
    for (i = 0; i < n; i++) {
        if (lookup(codes[i], &r) == -1) {
            rc = EXIT_UNKNOWN;
            continue;
        }
        if (json) {
            fputs(shown ? ",\n" : "\n", stdout);
            explain_print_json(stdout, &r, lang);
        } else {
            if (shown)
                fputs("\n--------------------------------------------------------------------"
                      "----------\n\n",
                    stdout);
            explain_print(stdout, &r, lang);
        }
        shown++;
    }
    if (json)
        fputs(shown ? "]\n" : "]\n", stdout);
    return rc;
}

static int
cmd_compare(char **codes, int n, bool json, enum explain_lang lang)
{
    struct explain_result a, b;
    int bad = 0;

    if (n != 2)
        return usage("compare takes exactly two codes");
    bad |= lookup(codes[0], &a) == -1;
    bad |= lookup(codes[1], &b) == -1;
    if (bad)
        return EXIT_UNKNOWN;
    if (json)
        explain_compare_print_json(stdout, &a, &b, lang);
    else
        explain_compare_print(stdout, &a, &b, lang);
    return 0;
}

int
main(int argc, char **argv)
{
    enum explain_lang lang = EXPLAIN_EN;
    bool json = false, opts = true;
    char **args = calloc((size_t)argc + 1, sizeof(*args));
    const char *cmd = NULL;
    int i, n = 0, rc;

    if (args == NULL)
        return 1;
    /* The queue commands have options of their own: hand them the whole line. */
    {
        const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        const char *sock = getenv("TERN_CONTROL_SOCKET") ? getenv("TERN_CONTROL_SOCKET")
                                                         : TERN_DEFAULT_CONTROL_SOCKET;
        if (strcmp(base, "mailq") == 0) {
            free(args);
            return cli_mailq_main(argc, argv, sock);
        }
        if (strcmp(base, "sendmail") == 0) {
            free(args);
            return cli_sendmail_main(argc, argv);
        }
        if (argc > 1 && strcmp(argv[1], "queue") == 0) {
            free(args);
            return cli_queue_main(argc - 1, argv + 1, sock);
        }
        if (argc > 1 && strcmp(argv[1], "send") == 0) {
            free(args);
            return cli_send_main(argc - 1, argv + 1);
        }
        if (argc > 1 && strcmp(argv[1], "probe") == 0) {
            free(args);
            return cli_probe_main(argc - 1, argv + 1);
        }
        if (argc > 1 && strcmp(argv[1], "sendmail") == 0) {
            free(args);
            return cli_sendmail_main(argc - 1, argv + 1);
        }
        if (argc > 1 && strcmp(argv[1], "passwd") == 0) {
            free(args);
            return cli_passwd_main(argc - 1, argv + 1);
        }
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (opts && strcmp(a, "--") == 0) {
            opts = false;
        } else if (opts && strcmp(a, "--json") == 0) {
            json = true;
        } else if (opts && (strcmp(a, "--lang") == 0 || strncmp(a, "--lang=", 7) == 0)) {
            v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (v != NULL && strcmp(v, "en") == 0)
                lang = EXPLAIN_EN;
            else if (v != NULL && strcmp(v, "fr") == 0)
                lang = EXPLAIN_FR;
            else {
                free(args);
                return usage("--lang takes en or fr");
            }
        } else if (opts && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            free(args);
            fputs(usage_text, stdout);
            return 0;
        } else if (opts && a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "tern: unknown option %s\n", a);
            free(args);
            return usage(NULL);
        } else if (cmd == NULL) {
            cmd = a;
        } else {
            args[n++] = argv[i];
        }
    }
    if (cmd == NULL)
        rc = usage(NULL);
    else if (strcmp(cmd, "explain") == 0)
        rc = n == 0 ? usage("explain needs at least one code") : cmd_explain(args, n, json, lang);
    else if (strcmp(cmd, "compare") == 0)
        rc = cmd_compare(args, n, json, lang);
    else {
        fprintf(stderr, "tern: unknown command %s\n", cmd);
        rc = usage(NULL);
    }
    free(args);
    return rc;
}
