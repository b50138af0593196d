/* scriptserver.c - see scriptserver.h. */
#include "scriptserver.h"

#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

bool
scriptserver_python(char *python, size_t len)
{
    const char *path = getenv("PATH");
    char *copy, *dir, *save = NULL;
    bool found = false;

    if (path == NULL)
        path = "/usr/bin:/bin";
    if ((copy = strdup(path)) == NULL)
        abort();
    for (dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
        snprintf(python, len, "%s/python3", *dir ? dir : ".");
        if (access(python, X_OK) == 0) {
            found = true;
            break;
        }
    }
    free(copy);
    if (!found)
        python[0] = '\0';
    return found;
}

bool
scriptserver_script(const char *name, char *script, size_t len)
{
    const char *d = getenv("TERN_SRCDIR");
    const char *cands[4] = {NULL, NULL, ".", ".."};
    int i;

    cands[0] = d != NULL && *d ? d : NULL;
#ifdef SRCDIR
    cands[1] = SRCDIR;
#endif
    for (i = 0; i < 4; i++) {
        if (cands[i] == NULL)
            continue;
        snprintf(script, len, "%s/tests/e2e/%s", cands[i], name);
        if (access(script, R_OK) == 0)
            return true;
    }
    return false;
}

pid_t
scriptserver_spawn(const char *python, const char *script, const char *const *args,
    unsigned *port)
{
    const char *argv[64];
    char line[64] = "";
    size_t got = 0, argc = 0;
    struct pollfd pfd;
    int fds[2];
    pid_t pid;

    argv[argc++] = python;
    argv[argc++] = script;
    for (size_t i = 0; args[i] != NULL && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    if (pipe(fds) != 0 || (pid = fork()) < 0)
        abort();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(python, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    /* 15 s is plenty for the "ready" line, even on a loaded machine. */
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (got < sizeof(line) - 1 && strchr(line, '\n') == NULL) {
        ssize_t r;

        if (poll(&pfd, 1, 15000) <= 0)
            break;
        r = read(fds[0], line + got, sizeof(line) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        line[got] = '\0';
    }
    close(fds[0]);
    if (sscanf(line, "ready %u", port) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void
scriptserver_rmtree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
