/*
 * explain.h - what an SMTP reply means: `tern explain` and `tern compare`.
 *
 * Reads three tables and nothing else: codes.def (every basic reply code of
 * RFC 5321 and its extensions, with meaning, when you see it, how to resolve
 * it, when to send it), esc.def (every enhanced status code of RFC 3463 and
 * the IANA registry) and reply.def (the replies tern itself sends).  So the
 * explanation can never drift from what the server sends and how the client
 * classifies what it receives.
 *
 * Pure: explain_lookup() takes a string (a code, an enhanced code, or a
 * whole reply line pasted from a log or a bounce) and fills a struct; the
 * printers write to a FILE the caller gives.  No allocation, no global state.
 */
#ifndef TERN_SMTP_EXPLAIN_H
#define TERN_SMTP_EXPLAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "smtp/reply.h"

enum explain_lang {
    EXPLAIN_EN,
    EXPLAIN_FR, /* fixed headings, class names, tern's behaviour, some code texts in French */
};

/* One row of codes.def. */
struct explain_code {
    unsigned short number; /* 421 */
    const char *name;      /* "Service not available" */
    const char *meaning;
    const char *when;
    const char *resolve;
    const char *send; /* when to send it (for server implementers) */
};

/* One row of esc.def (class-independent: X.subject.detail). */
struct explain_esc {
    unsigned char subject;
    unsigned short detail;
    const char *title;
    const char *description;
    const char *reference;
};

extern const struct explain_code explain_codes[];
extern const size_t explain_ncodes;
extern const struct explain_esc explain_escs[];
extern const size_t explain_nescs;
/* Subject titles, indexed by subject digit 0..7. */
extern const char *const explain_subjects[8];
#define EXPLAIN_NSUBJECTS 8

const struct explain_code *explain_code_find(unsigned number);
const struct explain_esc *explain_esc_find(unsigned subject, unsigned detail);

#define EXPLAIN_MAX_SENT 32

/* What explain_lookup() found in its input. */
struct explain_result {
    char input[1024];                 /* the input (truncated), for messages and text */
    const struct explain_code *basic; /* the basic code, or NULL (enhanced code alone) */
    unsigned code;                    /* basic->number, or 0 */
    bool has_esc;                     /* an enhanced code was found */
    char esc[16];                     /* "4.7.1", or "X.7.1" as given */
    int esc_class;                    /* 2, 4 or 5; 0 for "X" */
    unsigned esc_subject, esc_detail;
    const struct explain_esc *enhanced; /* NULL if has_esc but not registered */
    int class_match;                    /* 1 classes agree, 0 they do not, -1 not applicable */
    const char *text;                   /* for a pasted line: the text after the codes (in input) */
    /* replies of reply.def with this code (and enhanced code when both are given) */
    const struct reply_def *sent[EXPLAIN_MAX_SENT];
    size_t nsent;
};

/*
 * Look up s: "421", "4.7.1", "X.7.1", or a reply line such as
 * "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown".  In a
 * line, the first 2xx-5xx number standing alone as a word is the reply code
 * and the first enhanced code after it (else anywhere) the enhanced code.
 * 0 on success; -1 with a one-line reason in err when nothing usable or an
 * unknown code was found.
 */
int explain_lookup(const char *s, struct explain_result *r, char *err, size_t errlen);

/* The class of a reply, by its first digit: "transient negative", ... */
const char *explain_class_name(int digit, enum explain_lang lang);
/* What tern's delivery client does when it receives this reply (NULL for an "X" code). */
const char *explain_on_receive(const struct explain_result *r, enum explain_lang lang);
/* Who must act on this reply ("the client software (its author)", ...), or NULL. */
const char *explain_actor(unsigned code, enum explain_lang lang);

/* The key differences between two results, as numbered sentences. */
#define EXPLAIN_MAX_DIFFS 8
#define EXPLAIN_DIFF_LEN 768
struct explain_comparison {
    char diff[EXPLAIN_MAX_DIFFS][EXPLAIN_DIFF_LEN];
    size_t ndiff;
};
void explain_compare(const struct explain_result *a, const struct explain_result *b,
    enum explain_lang lang, struct explain_comparison *c);

/* Human-readable output, wrapped at 78 columns. */
void explain_print(FILE *out, const struct explain_result *r, enum explain_lang lang);
void explain_compare_print(FILE *out, const struct explain_result *a,
    const struct explain_result *b, enum explain_lang lang);

/* JSON: one object per result; a compare object {"a", "b", "differences", "when_to_use"}. */
void explain_print_json(FILE *out, const struct explain_result *r, enum explain_lang lang);
void explain_compare_print_json(FILE *out, const struct explain_result *a,
    const struct explain_result *b, enum explain_lang lang);
/* s as a JSON string, quotes included. */
void explain_json_string(FILE *out, const char *s);

#endif
