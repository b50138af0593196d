"""
test_faults.py - the disk fails under a running ternd: fsync/fdatasync/syncfs return EIO,
writes return ENOSPC.  Faults come from an LD_PRELOAD shim (tests/fault/faultshim.c, built
here with cc) that fails chosen calls while a control file says so, and logs each failure it
injects, so every test first proves its fault fired.

  - the shim itself: a fault hits only the calls and paths named ('$' anchors a path at its
    end), COUNT and SKIP choose which calls, sockets are never touched;
  - fdatasync (and fsync of a fresh segment's file, or of seg/) EIO on the spool: the client
    gets 451 4.3.0, never 250; the session and other connections go on; the next message
    after the fault is removed gets 250; the failed message is not in the spool and is never
    delivered, also after kill -9, restart and drain;
  - write/pwritev/copy_file_range ENOSPC on segments: 452 4.3.1, for a small message and a
    spilled one (copy_file_range); ENOSPC while spilling a large body to spool_dir/tmp during
    DATA: 452 4.3.1 too, no spill file left, the next message accepted;
  - faults during Maildir delivery (fsync/syncfs EIO, write ENOSPC, under mailbox_dir or one
    mailbox only): the recipient is deferred (log event=deferred, 451 4.3.0 with the error),
    nothing appears in new/ while the fault lasts, and it is delivered exactly once, whole,
    after the fault is removed (min_backoff 1, max_backoff 2); a recipient that did not fail
    is not delivered again when another one is retried; when only making new/ durable fails
    (after the link), the entry is taken back: one copy in the end, not two.

test_spool_errors.py covers a full file system (tmpfs) and EFBIG; this file covers sync
errors and delivery.  Skipped when no C compiler is found.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from harness import Skip, check_reply, fail, spool_count

SENDER = 'faults@client.test'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIM_SRC = os.path.join(REPO, 'tests', 'fault', 'faultshim.c')


class Shim:
    """The built shim, its control file and its log of injected faults."""

    def __init__(self, t):
        cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
        if cc is None:
            raise Skip('no C compiler to build tests/fault/faultshim.c')
        self.dir = tempfile.mkdtemp(prefix='faultshim-', dir=t.tmproot)
        self.so = os.path.join(self.dir, 'faultshim.so')
        self.ctl = os.path.join(self.dir, 'ctl')
        self.log = os.path.join(self.dir, 'hits')
        r = subprocess.run([cc, '-shared', '-fPIC', '-O1', '-o', self.so, SHIM_SRC, '-ldl'],
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            fail(f'building the fault shim failed: {r.stderr.decode()[-1000:]}')

    def env(self):
        asan = os.environ.get('ASAN_OPTIONS', '')
        # an ASan build wants its runtime first in the library list; the shim only wraps
        # libc calls, so the order does not matter here
        asan = (asan + ':' if asan else '') + 'verify_asan_link_order=0'
        return {'LD_PRELOAD': self.so, 'FAULTSHIM_CTL': self.ctl, 'FAULTSHIM_LOG': self.log,
                'ASAN_OPTIONS': asan}

    def set(self, *rules):
        tmp = self.ctl + '.new'
        with open(tmp, 'w') as f:
            f.write(''.join(r + '\n' for r in rules))
        os.replace(tmp, self.ctl)  # the shim never reads half a rule

    def clear(self):
        try:
            os.unlink(self.ctl)
        except FileNotFoundError:
            pass

    def hits(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def reset_hits(self):
        try:
            os.unlink(self.log)
        except FileNotFoundError:
            pass

    def expect_hits(self, call, what):
        got = [h for h in self.hits() if h.split(' ', 1)[0] == call]
        if not got:
            fail(f'{what}: the fault on {call} never fired (shim log: {self.hits()[:5]}); '
                 f'does ternd still call {call} there?')
        return got


# ---- ternd, messages, Maildirs -------------------------------------------------------------

def _start(t, shim, **conf):
    # sandbox off: the shim reads its rules and writes its log outside ternd's directories
    d = t.daemon({'sandbox': 'off'}, env=shim.env())
    d.overrides.update({
        'mailbox_dir': os.path.join(d.tmpdir, 'mail'),
        'min_backoff': '1',
        'max_backoff': '2',
        'log_level': 'info',
        'max_message_size': '2097152',
    })
    d.overrides.update({k: str(v) for k, v in conf.items()})
    d.start()
    return d


def _message(tag, size=1000):
    mk = f'F{os.urandom(5).hex()}-{tag}'
    head = f'Subject: fault {tag}\r\nX-Tern-Test-Id: {mk}\r\n\r\n'.encode()
    lines = []
    total = len(head)
    i = 0
    while total < size:
        ln = f'{mk} {i:06d} '.encode() + b'0123456789abcdef' * 4 + b'\r\n'
        lines.append(ln)
        total += len(ln)
        i += 1
    return mk, head + b''.join(lines) + f'END {mk}\r\n'.encode()


def _send(c, data, rcpts):
    """One transaction on an open session; the reply to the end of the data."""
    c.cmd(f'MAIL FROM:<{SENDER}>', 250, '2.1.0')
    for r in rcpts:
        c.cmd(f'RCPT TO:<{r}>', 250, '2.1.5')
    c.cmd('DATA', 354, None)
    c.sock.sendall(data + b'.\r\n')
    return c.reply(timeout=15)


def _maildir(d, rcpt):
    local, dom = rcpt.split('@')
    return os.path.join(d.conf['mailbox_dir'], dom, local)


def _copies(d, rcpt, mk, data):
    """Files in rcpt's new/ and cur/ holding marker mk; fails on any partial file (for any
    message: each must end with the END line of the marker in its own header)."""
    n = 0
    for sub in ('new', 'cur'):
        path = os.path.join(_maildir(d, rcpt), sub)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            continue
        for name in names:
            with open(os.path.join(path, name), 'rb') as f:
                got = f.read()
            own = re.search(rb'\r\nX-Tern-Test-Id: (\S+)\r\n', got)
            if own is None or not got.endswith(b'\r\nEND ' + own.group(1) + b'\r\n'):
                fail(f'{path}/{name}: a partial file in the Maildir ({len(got)} bytes): '
                     f'{got[:150]!r} ... {got[-80:]!r}')
            if own.group(1) != mk.encode():
                continue
            if not got.endswith(data) or not got.startswith(f'Return-Path: <{SENDER}>'.encode()):
                fail(f'{path}/{name}: a partial or altered delivery of {mk}: {len(got)} bytes '
                     f'(message {len(data)}), ends {got[-100:]!r}')
            n += 1
    return n


def _wait(cond, timeout, what, d):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not d.alive():
            fail(f'ternd died while waiting for {what}: {d.stderr_tail()!r}')
        time.sleep(0.05)
    fail(f'timed out after {timeout:.0f} s waiting for {what}')


def _limit(t):
    return 40.0 if 'asan' in t.ternd_path else 15.0


def _log_lines(d, *needles):
    return [ln for ln in d.stderr().decode('utf-8', 'replace').splitlines()
            if all(n in ln for n in needles)]


def _idle(t, d, qids):
    """Wait until each message in qids is finished, and its last state record written: only
    then does a fault on the segment hit the next message's batch and nothing else."""
    _wait(lambda: all(_log_lines(d, q, 'message finished') for q in qids), _limit(t),
          f'the queue to finish {qids}', d)
    time.sleep(0.3)


def _queue_id(r):
    check_reply(r, 250, '2.0.0', 'queued as')
    return r.text.split('queued as ', 1)[1].split()[0]


# ---- the shim itself -----------------------------------------------------------------------

SELFTEST = r'''
import os, socket, sys
d = sys.argv[1]
out = []
def tryit(name, fn):
    try:
        fn(); out.append(name + '=ok')
    except OSError as e:
        out.append(name + '=' + str(e.errno))
a = os.open(os.path.join(d, 'spool-a'), os.O_WRONLY | os.O_CREAT)
b = os.open(os.path.join(d, 'other-b'), os.O_WRONLY | os.O_CREAT)
s1, s2 = socket.socketpair()
tryit('write_a', lambda: os.write(a, b'x'))
tryit('write_b', lambda: os.write(b, b'x'))
tryit('pwritev_a', lambda: os.pwritev(a, [b'x', b'y'], 0))
tryit('fsync_a1', lambda: os.fsync(a))
tryit('fsync_a2', lambda: os.fsync(a))
tryit('fsync_a3', lambda: os.fsync(a))
tryit('fdatasync_b', lambda: os.fdatasync(b))
tryit('fsync_b', lambda: os.fsync(b))
tryit('sock', lambda: s1.send(b'x'))
print(' '.join(out))
'''


def test_faultshim_selftest(t):
    shim = Shim(t)
    shim.set('write,pwritev ENOSPC spool-a', 'fsync EIO spool-a 1 1', 'fdatasync EIO',
             'write EIO other-$', 'fsync EIO other-b$')
    env = dict(os.environ)
    env.update(shim.env())
    r = subprocess.run([sys.executable, '-c', SELFTEST, shim.dir], env=env,
                       capture_output=True, timeout=30)
    got = r.stdout.decode().split()
    want = ['write_a=28', 'write_b=ok', 'pwritev_a=28', 'fsync_a1=ok', 'fsync_a2=5',
            'fsync_a3=ok', 'fdatasync_b=5', 'fsync_b=5', 'sock=ok']
    if got != want:
        fail(f'fault shim: got {got}, want {want}; stderr {r.stderr.decode()[-500:]!r}')
    if len(shim.hits()) != 5:
        fail(f'fault shim logged {shim.hits()}, want 5 injected faults')
    shim.clear()
    r = subprocess.run([sys.executable, '-c', SELFTEST, shim.dir], env=env,
                       capture_output=True, timeout=30)
    if 'ENOSPC' in r.stdout.decode() or '=28' in r.stdout.decode() or '=5' in r.stdout.decode():
        fail(f'fault shim without a control file still fails calls: {r.stdout!r}')


# ---- the spool's syncs fail ----------------------------------------------------------------

def test_fault_spool_fdatasync_eio(t):  # covers: R_SPOOL_ERROR
    shim = Shim(t)
    d = _start(t, shim)
    rcpt = 'eio@example.org'
    other = d.connect()
    other.cmd('EHLO other.test', 250, None)
    good, bad = [], []
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        mk, data = _message('first')
        qid = _queue_id(_send(c, data, [rcpt]))  # the segment exists: later batches fdatasync
        good.append((mk, data))
        # the queue's state records go through the same segment: wait until they are written
        _idle(t, d, [qid])

        shim.set('fdatasync EIO spool/seg')
        mk, data = _message('fdatasync')
        r = _send(c, data, [rcpt])
        shim.expect_hits('fdatasync', 'fdatasync EIO on the segment')
        check_reply(r, 451, '4.3.0', None, b'(end of data while fdatasync fails with EIO)')
        bad.append((mk, data))
        other.cmd('NOOP', 250, '2.0.0')      # ternd serves on: another session,
        c.cmd('NOOP', 250, '2.0.0')          # this one,
        with d.connect() as c3:              # and a new connection
            c3.cmd('EHLO third.test', 250, None)
            c3.cmd('QUIT', 221, '2.0.0')

        # a fresh segment after the failure: its first batch uses fsync (file, then seg/)
        time.sleep(0.3)
        shim.reset_hits()
        shim.set('fsync,fdatasync EIO .seg 1')  # the file, not seg/ (reclaim syncs it too)
        mk, data = _message('fsync')
        r = _send(c, data, [rcpt])
        hit = shim.hits()
        check_reply(r, 451, '4.3.0', None, b'(end of data while the segment sync fails)')
        if not hit:
            fail('the fsync/fdatasync fault on a fresh segment never fired')
        bad.append((mk, data))

        # and again a fresh segment: its file syncs, the fsync of seg/ (its entry) fails
        time.sleep(0.3)
        shim.reset_hits()
        shim.set('fsync EIO spool/seg$ 1')
        mk, data = _message('dirsync')
        r = _send(c, data, [rcpt])
        shim.expect_hits('fsync', 'fsync EIO on the seg/ directory')
        check_reply(r, 451, '4.3.0', None, b'(end of data while the fsync of seg/ fails)')
        bad.append((mk, data))

        shim.clear()
        mk, data = _message('after')
        _queue_id(_send(c, data, [rcpt]))
        good.append((mk, data))
        c.cmd('QUIT', 221, '2.0.0')
    other.close()

    for mk, _data in bad:
        n = spool_count(d.spool_dir, mk)
        if n:
            fail(f'a message refused with 451 ({mk}) is still in the spool ({n} times): it '
                 f'would be delivered after a restart')
    _wait(lambda: all(_copies(d, rcpt, mk, data) == 1 for mk, data in good), _limit(t),
          'the acknowledged messages in the Maildir', d)

    # kill -9, restart, drain: the refused messages never come back
    d.kill()
    d.start()
    mk, data = _message('restart')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        _queue_id(_send(c, data, [rcpt]))
    _wait(lambda: _copies(d, rcpt, mk, data) == 1, _limit(t), 'delivery after the restart', d)
    time.sleep(0.5)
    for mk, data in bad:
        if _copies(d, rcpt, mk, data):
            fail(f'the message refused with 451 ({mk}) was delivered')
    _after_restart(t, d, rcpt, good)


def _after_restart(t, d, rcpt, good):
    """Messages delivered before a kill -9 are there once, or twice when the kill came
    between the link into new/ and the queue's state record (maildir.h): never more."""
    dups = 0
    for mk, data in good:
        n = _copies(d, rcpt, mk, data)
        if n not in (1, 2):
            fail(f'{mk}: {n} copies in the Maildir after kill -9 and restart, want 1 (or 2)')
        dups += n - 1
    if dups:
        t.note(f'{dups} message(s) delivered again after kill -9 (crash before the state '
               f'record)')


# ---- the spool is full ---------------------------------------------------------------------

def test_fault_spool_enospc(t):  # covers: R_SPOOL_FULL
    shim = Shim(t)
    d = _start(t, shim)
    rcpt = 'full@example.org'
    bad, good = [], []
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        shim.set('pwritev,pwrite,write,copy_file_range ENOSPC spool/seg')
        for tag, size in (('small', 2000), ('spilled', 300 * 1024)):
            mk, data = _message(tag, size)
            r = _send(c, data, [rcpt])
            check_reply(r, 452, '4.3.1', None, f'(end of a {tag} message, segment writes '
                        f'fail with ENOSPC)'.encode())
            bad.append((mk, data))
            c.cmd('NOOP', 250, '2.0.0')
        if not shim.hits():
            fail('the ENOSPC fault on segment writes never fired')

        shim.clear()
        mk, data = _message('after', 300 * 1024)
        _queue_id(_send(c, data, [rcpt]))
        good.append((mk, data))
        c.cmd('QUIT', 221, '2.0.0')
    if os.listdir(os.path.join(d.spool_dir, 'tmp')):
        fail(f'spool_dir/tmp keeps {os.listdir(os.path.join(d.spool_dir, "tmp"))} after the '
             f'failed messages were answered')
    for mk, _data in bad:
        if spool_count(d.spool_dir, mk):
            fail(f'a message refused with 452 ({mk}) is still in the spool')
    _wait(lambda: all(_copies(d, rcpt, mk, data) == 1 for mk, data in good), _limit(t),
          'the acknowledged messages in the Maildir', d)
    d.kill()
    d.start()
    time.sleep(1.0)
    for mk, data in bad:
        if _copies(d, rcpt, mk, data):
            fail(f'the message refused with 452 ({mk}) was delivered after a restart')
    _after_restart(t, d, rcpt, good)


def test_fault_spill_enospc(t):  # covers: R_SPOOL_FULL
    """ENOSPC while a large body spills to spool_dir/tmp during DATA: 452 4.3.1 like a full
    segment (the issue: "452 4.3.1 when space is short"), the session goes on, no spill file
    is left, and the next message is accepted."""
    shim = Shim(t)
    d = _start(t, shim)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        shim.set('pwritev,pwrite,write,writev ENOSPC spool/tmp')
        mk, data = _message('spill', 600 * 1024)
        r = _send(c, data, ['spill@example.org'])
        shim.expect_hits('write', 'ENOSPC on the spill file')
        c.cmd('NOOP', 250, '2.0.0')
        shim.clear()
        if os.listdir(os.path.join(d.spool_dir, 'tmp')):
            fail(f'spool_dir/tmp keeps {os.listdir(os.path.join(d.spool_dir, "tmp"))} after '
                 f'the spill failed')
        if spool_count(d.spool_dir, mk):
            fail(f'the message whose spill failed ({mk}) is in the spool')
        mk2, data2 = _message('after', 600 * 1024)
        _queue_id(_send(c, data2, ['spill@example.org']))
        c.cmd('QUIT', 221, '2.0.0')
    check_reply(r, 452, '4.3.1', None, b'(end of data after the spill write failed with ENOSPC)')


# ---- Maildir delivery fails -----------------------------------------------------------------

def _deferred_then_delivered(t, d, shim, rules, rcpts, failing, tag, why):
    """Send to rcpts with rules in force; recipients in failing are deferred (451 4.3.0,
    the error text why in the reply) and nothing of them reaches new/; the others are
    delivered once.  Then clear: all delivered once."""
    shim.reset_hits()
    shim.set(*rules)
    mk, data = _message(tag, 5000)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        qid = _queue_id(_send(c, data, rcpts))
        c.cmd('QUIT', 221, '2.0.0')
    _wait(lambda: len(_log_lines(d, qid, 'event=deferred')) >= len(failing), _limit(t),
          f'{len(failing)} "event=deferred" log lines for {qid} ({tag})', d)
    if not shim.hits():
        fail(f'{tag}: the delivery fault never fired')
    for r in failing:
        lines = [ln for ln in _log_lines(d, qid, 'event=deferred') if f'<{r}>' in ln]
        if not lines:
            fail(f'{tag}: no event=deferred log line for {r}: {_log_lines(d, qid)[-5:]}')
        if 'reply="451 4.3.0 ' not in lines[0] or why not in lines[0]:
            fail(f'{tag}: deferred with {lines[0]!r}, want reply="451 4.3.0 ... {why}"')
    ok = [r for r in rcpts if r not in failing]
    _wait(lambda: all(_copies(d, r, mk, data) == 1 for r in ok), _limit(t),
          f'delivery to the recipients not hit by the fault ({tag})', d)
    time.sleep(1.5)  # at least one retry happens with the fault still there
    for r in failing:
        if _copies(d, r, mk, data):
            fail(f'{tag}: {r} has the message although every delivery attempt failed')
    shim.clear()
    _wait(lambda: all(_copies(d, r, mk, data) >= 1 for r in rcpts), _limit(t),
          f'delivery after the fault was removed ({tag})', d)
    time.sleep(0.5)
    for r in rcpts:
        n = _copies(d, r, mk, data)
        if n != 1:
            fail(f'{tag}: {r} has {n} copies, want 1')
    tmp_left = sum(len(os.listdir(os.path.join(_maildir(d, r), 'tmp'))) for r in rcpts
                   if os.path.isdir(os.path.join(_maildir(d, r), 'tmp')))
    return len(shim.hits()), tmp_left


def test_fault_maildir_sync_eio(t):  # covers: R_DLV_MAILDIR_ERROR
    shim = Shim(t)
    d = _start(t, shim, delivery_concurrency=2)
    mail = d.conf['mailbox_dir']
    rcpts = ['a@example.org', 'b@example.org']
    n, left = _deferred_then_delivered(
        t, d, shim, [f'fsync,fdatasync,syncfs,sync_file_range EIO {mail}'], rcpts, rcpts,
        'sync-eio', 'Input/output error')
    t.note(f'sync EIO: {n} faults injected; Maildir tmp/ files left: {left}')


def test_fault_maildir_write_enospc(t):  # covers: R_DLV_MAILDIR_ERROR
    shim = Shim(t)
    d = _start(t, shim, delivery_concurrency=2)
    mail = d.conf['mailbox_dir']
    rcpts = ['c@example.org', 'd@example.org']
    n, left = _deferred_then_delivered(
        t, d, shim, [f'write,pwrite,pwritev,writev,copy_file_range ENOSPC {mail}'], rcpts,
        rcpts, 'write-enospc', 'No space left on device')
    t.note(f'write ENOSPC: {n} faults injected; Maildir tmp/ files left: {left}')
    # one mailbox only: its recipient is retried, the other is not delivered again
    rcpts = ['e@example.org', 'f@example.org']
    n, left = _deferred_then_delivered(
        t, d, shim, [f'write,pwrite,pwritev ENOSPC {mail}/example.org/f/'], rcpts,
        ['f@example.org'], 'one-mailbox', 'No space left on device')
    t.note(f'one mailbox ENOSPC: {n} faults injected; Maildir tmp/ files left: {left}')


def test_fault_maildir_new_sync_eio(t):  # covers: R_DLV_MAILDIR_ERROR, R_DLV_OK
    """The file is durable and linked into new/, then making new/ durable fails: the entry is
    not known durable, so it is taken back and the recipient deferred; the retry delivers
    it, and the Maildir ends with exactly one copy (no duplicate made by the fault)."""
    shim = Shim(t)
    d = _start(t, shim, delivery_concurrency=2)
    mail = d.conf['mailbox_dir']
    rcpt = 'g@example.org'
    # let the first sync of the batch (the tmp/ files) through, fail the second (new/)
    shim.set(f'syncfs EIO {mail} 1 1', f'fsync EIO {mail}/example.org/g/new$ 1')
    mk, data = _message('new-sync', 3000)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        qid = _queue_id(_send(c, data, [rcpt]))
        c.cmd('QUIT', 221, '2.0.0')
    _wait(lambda: _log_lines(d, qid, 'event=deferred'), _limit(t),
          f'an "event=deferred" log line for {qid}', d)
    if not shim.hits():
        fail('the fault on syncing new/ never fired')
    line = _log_lines(d, qid, 'event=deferred')[0]
    if 'reply="451 4.3.0 ' not in line or 'new/' not in line:
        fail(f'deferred with {line!r}, want reply="451 4.3.0 ... new/ ..."')
    _wait(lambda: _log_lines(d, qid, 'event=delivered'), _limit(t),
          f'the retry of {qid} to succeed', d)
    line = _log_lines(d, qid, 'event=delivered')[0]
    if f'to=<{rcpt}>' not in line or 'attempts=2' not in line or \
            'reply="250 2.0.0 ' not in line:
        fail(f'delivered with {line!r}, want to=<{rcpt}> attempts=2 reply="250 2.0.0 ..."')
    time.sleep(0.3)
    n = _copies(d, rcpt, mk, data)
    if n != 1:
        fail(f'{rcpt} has {n} copies after a failed sync of new/ and a retry, want 1')
    shim.clear()
