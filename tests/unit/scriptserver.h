/*
 * scriptserver.h - the scripted test servers (tests/e2e/smtpserver.py,
 * lmtpserver.py) from the C unit tests: find python3 and the script, start
 * one, wait for its "ready PORT" line, remove its directory afterwards.
 */
#ifndef TERN_TEST_SCRIPTSERVER_H
#define TERN_TEST_SCRIPTSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* python3 on PATH into python[] ("" and false without one). */
bool scriptserver_python(char *python, size_t len);

/*
 * tests/e2e/NAME under $TERN_SRCDIR, the source directory meson passed as
 * SRCDIR, "." or ".." into script[]; false when none has it.
 */
bool scriptserver_script(const char *name, char *script, size_t len);

/*
 * Run `python script args...` (args NULL-terminated) with its stdout on a
 * pipe and wait up to 15 s for "ready PORT\n".  Returns its pid with *port
 * set, or -1 (the process killed and reaped) when it did not get ready.
 */
pid_t scriptserver_spawn(const char *python, const char *script, const char *const *args,
    unsigned *port);

/* Remove a temporary directory tree (never following symlinks). */
void scriptserver_rmtree(const char *dir);

#endif
