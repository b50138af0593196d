/*
 * passwd.h - `tern passwd [USER]`: make a line for the auth_users file.
 *
 * Reads a password from standard input (from a terminal: asked twice, not
 * echoed; otherwise the first line, without its line ending) and prints its
 * yescrypt hash, or "USER:HASH" when a user name is given.  Exit 0, 1 on
 * failure (empty or mismatched password), 64 on a usage error.
 */
#ifndef TERN_CLI_PASSWD_H
#define TERN_CLI_PASSWD_H

int cli_passwd_main(int argc, char **argv);

#endif
