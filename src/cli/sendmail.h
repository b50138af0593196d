/*
 * sendmail.h - sendmail(8) for programs that send mail the Unix way: tern
 * invoked as `sendmail` (or `tern sendmail ...`).
 *
 *   sendmail [-t] [-i | -oi] [-f ADDR | -r ADDR] [-F NAME] [-C FILE] [-v]
 *            [legacy flags] [--] [RECIPIENT...]
 *   sendmail -bs            an SMTP dialogue on stdin/stdout
 *   sendmail -bp            list the queue (mailq)
 *   sendmail -q[...]        flush the queue (every deferred recipient due now)
 *
 * The message is read from stdin.  Without -i, a line holding a single "."
 * ends it (the rest of stdin is not read).  -t adds the addresses of the To,
 * Cc and Bcc header fields to the recipients of the command line.  Bcc fields
 * are always removed from the message (as Postfix does).  A message without
 * From, Date or Message-ID gets one ("From: NAME <sender>" with -F NAME).
 * The envelope sender is -f/-r ADDR ("" or "<>" for the null sender), else
 * the invoking user at the host name (config `hostname`, else gethostname()).
 *
 * Submission: to the running ternd through the control socket (SUBMIT, see
 * net/control.h); it answers only once the message is durable.  When ternd
 * is not running (no socket, connection refused, or not allowed to connect),
 * the message is written to spool_dir/maildrop (queue/maildrop.h) and picked
 * up when ternd starts; a note on stderr says so.  The configuration is the
 * file of -C FILE, else $TERN_CONFIG, else /etc/tern/tern.conf (defaults
 * when there is none: spool_dir /var/spool/tern); the control socket is
 * $TERN_CONTROL_SOCKET, else the config's control_socket, else
 * /run/tern/control.
 *
 * Accepted and ignored (each for compatibility with programs that pass it):
 *   -oem -oee -oep -oeq -oew (how errors are reported: tern always bounces),
 *   -oQ DIR (queue directory), -odb -odi -odq -odd (delivery mode: ternd
 *   always queues first), -om (me too), -oo, any other -oX, -O OPT=VAL,
 *   -B TYPE (body type: ternd looks at the octets itself), -N DSN, -R RET,
 *   -V ENVID (DSN parameters: not kept yet), -X FILE (traffic log), -L TAG
 *   (syslog tag), -h HOPS (hop count), -n (no aliasing: tern has no
 *   aliases), -m, -U (initial submission), -G (gateway), -A c|m, -d... (debug).
 *   -bm (deliver mail: the default) is accepted; -bi (newaliases) exits 0.
 * Refused with a message: -bd, -bD, -bv, -bt, -bh, -bH, -bP (no daemon,
 * verify or test mode here: run ternd).
 *
 * Exit status (sysexits): 0 queued (or left in the maildrop); 64 usage or no
 * recipients; 65 (EX_DATAERR) an address ternd refused as invalid or a
 * message that is too big; 67 (EX_NOUSER) a local recipient that does not
 * exist; 69 another permanent refusal; 75 (EX_TEMPFAIL) try again later
 * (ternd busy, spool error, the maildrop could not be written); 66 stdin
 * could not be read.
 */
#ifndef TERN_CLI_SENDMAIL_H
#define TERN_CLI_SENDMAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

/* argv[0]: "sendmail" (or "sendmail" after "tern"). */
int cli_sendmail_main(int argc, char **argv);

/* ---- pure parts (tests/unit/test_sendmail.c) ------------------------------------------------ */

/*
 * Where a line holding a single "." (LF or CRLF; also at the end of input
 * without a line end, when at_eof) starts in p[0..n), scanning from *from (a
 * line start).  Returns that offset, or (size_t)-1 when there is none yet;
 * *from is moved to the start of the last incomplete line so the next call
 * (after more input) scans only new bytes.
 */
size_t cli_sendmail_dot_end(const char *p, size_t n, size_t *from, bool at_eof);

/*
 * The header section: the offset where the body starts (after the blank
 * line), *hdrlen the octets of the fields themselves.  A message whose first
 * line is not a field has no header section (0, *hdrlen 0); a message that
 * never has a blank line is all header (n, *hdrlen n).
 */
size_t cli_sendmail_header_end(const char *p, size_t n, size_t *hdrlen);

/* Is there a field called name (case-insensitive) in the header p[0..hdrlen)? */
bool cli_sendmail_has_field(const char *p, size_t hdrlen, const char *name);

/*
 * Addresses of an RFC 5322 address list ("Ann <a@x>, b@y (Bob), grp: c@z;"):
 * display names, comments, groups and angle brackets removed.  Each is
 * malloc'd and appended to *list (*n grows); at most max in all.  -1 on
 * memory shortage or more than max.
 */
int cli_sendmail_parse_addrs(const char *s, size_t len, char ***list, size_t *n, size_t max);

/*
 * -t: the addresses of every To, Cc and Bcc field (unfolded) of the header
 * p[0..hdrlen), appended like cli_sendmail_parse_addrs.
 */
int cli_sendmail_header_rcpts(const char *p, size_t hdrlen, char ***list, size_t *n, size_t max);

/* Append p[0..n) to out without its Bcc fields (and their continuation lines). -1 if full. */
int cli_sendmail_strip_bcc(const char *p, size_t n, struct buf *out);

#endif
