/*
 * passwd.c - `tern passwd` (see passwd.h).
 */
#include "cli/passwd.h"

#include <crypt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "policy/auth.h"

#define PASSWD_MAX 512 /* libcrypt's CRYPT_MAX_PASSPHRASE_SIZE */

/* One line from stdin without its line ending; -1 on EOF, error or a line too long. */
static int
passwd_read(const char *prompt, char *buf, size_t len)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &old) == 0;
    size_t n;
    char *ok;

    if (tty) {
        fputs(prompt, stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    ok = fgets(buf, (int)len, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputs("\n", stderr);
    }
    if (ok == NULL)
        return -1;
    n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (!feof(stdin))
        return -1; /* longer than the buffer */
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return 0;
}

int
cli_passwd_main(int argc, char **argv)
{
    char pw[PASSWD_MAX + 2], again[PASSWD_MAX + 2], hash[CRYPT_OUTPUT_SIZE];
    const char *user = NULL;
    int rc = 1;

    if (argc > 2 || (argc == 2 && (argv[1][0] == '-' || strchr(argv[1], ':') != NULL))) {
        fputs("usage: tern passwd [USER] < password\n"
              "  prints a yescrypt hash of the password, or USER:HASH for auth_users\n",
            stderr);
        return 64;
    }
    if (argc == 2)
        user = argv[1];
    if (passwd_read("Password: ", pw, sizeof(pw)) == -1) {
        fprintf(stderr, "tern passwd: no password read (at most %d octets)\n", PASSWD_MAX);
        goto out;
    }
    if (pw[0] == '\0') {
        fputs("tern passwd: empty password\n", stderr);
        goto out;
    }
    if (isatty(STDIN_FILENO) == 1) {
        if (passwd_read("Again: ", again, sizeof(again)) == -1 || strcmp(pw, again) != 0) {
            fputs("tern passwd: the passwords differ\n", stderr);
            goto out;
        }
    }
    if (auth_hash_password(pw, hash, sizeof(hash)) == -1) {
        fputs("tern passwd: libcrypt could not make a yescrypt hash\n", stderr);
        goto out;
    }
    if (user != NULL)
        printf("%s:%s\n", user, hash);
    else
        printf("%s\n", hash);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    explicit_bzero(pw, sizeof(pw));
    explicit_bzero(again, sizeof(again));
    return rc;
}
