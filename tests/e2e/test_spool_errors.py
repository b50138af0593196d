"""
test_spool_errors.py - the disk refuses: a full spool filesystem (ENOSPC) must give
452 4.3.1, another write error 451 4.3.0; never a 250 for a message that is not stored,
never a crash, and the session goes on.

ENOSPC: ternd runs in its own mount namespace (unshare -m) with a 1 MB tmpfs on spool_dir
(needs root or CAP_SYS_ADMIN; skipped otherwise).  Other errors: RLIMIT_FSIZE with SIGXFSZ
ignored, so writes past the limit fail with EFBIG.
"""

import os
import resource
import shutil
import signal

from harness import Skip, check_reply, fail, start_txn

BODY_KB = 100  # under ternd's spill threshold (256 KB): the failure is the segment's


def _fill(d, attempts):
    """Send messages until one is refused; (number accepted, the refusing reply)."""
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        for i in range(attempts):
            start_txn(c, ehlo=False)
            c.cmd('DATA', 354, None)
            line = (b'%06d' % i) + b'q' * 92 + b'\r\n'
            c.send(b'Subject: fill\r\n\r\n' + line * (BODY_KB * 10) + b'.\r\n')
            r = c.reply(timeout=10)
            if r.code != 250:
                c.cmd('NOOP', 250, '2.0.0')  # the session survives the refusal
                return i, r
            check_reply(r, 250, '2.0.0', 'queued as')
    return attempts, None


def test_spool_full_enospc(t):  # covers: R_SPOOL_FULL
    if os.geteuid() != 0 or not shutil.which('unshare'):
        raise Skip('needs root and unshare(1) for a private tmpfs')
    d = t.daemon({'max_message_size': '1048576'})
    spool = os.path.join(d.tmpdir, 'spool')
    os.makedirs(spool, exist_ok=True)
    d.wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
              'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', spool]
    try:
        d.start()
    except AssertionError:
        err = d.stderr_tail()
        if 'mount' in err or 'unshare' in err:
            d.stopped = True
            raise Skip(f'cannot mount a tmpfs here: {err.strip()[:200]}')
        raise
    n, r = _fill(d, 30)
    if r is None:
        fail(f'30 messages of {BODY_KB} KB were all accepted on a 1 MB spool')
    t.note(f'{n} messages accepted before the refusal')
    check_reply(r, 452, '4.3.1')


def _fsize_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (350 * 1024, 350 * 1024))


def test_spool_write_error_efbig(t):  # covers: R_SPOOL_ERROR
    d = t.daemon({'max_message_size': '1048576'}, preexec_fn=_fsize_limit)
    d.start()
    n, r = _fill(d, 10)
    if r is None:
        fail('10 messages of 100 KB accepted with RLIMIT_FSIZE = 350 KB')
    t.note(f'{n} messages accepted before the refusal')
    check_reply(r, 451, '4.3.0')
    if not d.alive():
        fail('ternd died')
