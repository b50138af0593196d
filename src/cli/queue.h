/*
 * queue.h - `tern queue` and `mailq`: the operator's view of a running
 * ternd's queue, through its control socket (net/control.h).
 *
 * Exit status: 0 when ternd answered OK, 1 when it answered ERR (the reason
 * on stderr), 64 (EX_USAGE) for a bad command line, 75 (EX_TEMPFAIL) when
 * ternd is not running or does not answer.  Payloads go to stdout as they
 * arrive, so a long listing is never held in memory here.
 */
#ifndef TERN_CLI_QUEUE_H
#define TERN_CLI_QUEUE_H

/*
 * argv[0] is the command's name (ignored); then options and a subcommand:
 *   [-s PATH] [list] [--json] | count | flush [ID...] | delete|hold|release ID...
 * control_socket_path is the configured socket, used unless -s is given; may be NULL.
 */
int cli_queue_main(int argc, char **argv, const char *control_socket_path);

/* mailq(1): `tern queue list`, taking only [-s PATH] [--json]. */
int cli_mailq_main(int argc, char **argv, const char *control_socket_path);

#endif
