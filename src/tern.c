/*
 * tern.c - the command-line tool.  For now: `tern explain CODE...`, which
 * prints every reply of the catalogue that tern sends with that basic code
 * (421) or enhanced code (4.7.0): its class, text, meaning, when you see it,
 * and how to resolve it.  (compare, probe, send, queue: see issue 5.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/reply.h"

static void
usage(void)
{
    fprintf(stderr, "usage: tern explain CODE...   (CODE: 421, 501, 4.7.0, 5.1.7, ...)\n");
    exit(64);
}

static int
explain(const char *code)
{
    int found = 0;
    size_t i;

    for (i = 0; i < REPLY__COUNT; i++) {
        const struct reply_def *r = &reply_table[i];
        char basic[8];

        snprintf(basic, sizeof(basic), "%u", r->code);
        if (strcmp(code, basic) != 0 && (r->esc == NULL || strcmp(code, r->esc) != 0))
            continue;
        printf("%s%u%s%s %s  [%s, %s]\n", found ? "\n" : "", r->code, r->esc ? " " : "",
            r->esc ? r->esc : "", r->text, r->name,
            reply_class_name(reply_class_of(r->code)));
        printf("  meaning: %s\n  when:    %s\n  resolve: %s\n", r->meaning, r->when, r->resolve);
        found = 1;
    }
    if (!found) {
        fprintf(stderr, "tern: %s: not a reply code tern sends\n", code);
        return 2;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    int i, rc = 0;

    if (argc < 3 || strcmp(argv[1], "explain") != 0)
        usage();
    for (i = 2; i < argc; i++) {
        int r = explain(argv[i]);
        if (r > rc)
            rc = r;
    }
    return rc;
}
