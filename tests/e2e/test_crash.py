"""
test_crash.py - kill -9 of ternd at many points under a load of concurrent senders, then a
restart on the same spool and mailboxes (design.md "Invariants": a message that got 250 is
on stable storage; a crash at any instant loses no such message; it may be delivered twice,
never zero times).

Every message carries a unique marker (an X-Tern-Test-Id header, every body line, and a last
line "END <marker>"), so each file in a Maildir is tied to one send.  The load records what
each send got: nothing sent or cut off during DATA ("incomplete"), the whole message sent but
no reply ("unanswered"), 250 with its queue ID ("acked"), or another reply ("refused").

Kill points: (a) random instants during the load, sometimes again just after the restart
(during recovery and redelivery); (b) with TERN_TEST_COMMIT_DELAY_MS, while batches sit in
the committer; (c) during Maildir delivery (delivery_concurrency 1, many recipients); (d)
right after a 250 left the server and before the client read it.  After
each kill the Maildirs and spool_dir/tmp are snapshot, ternd is restarted, the queue drains,
and check() asserts:
  - spool_dir/tmp is empty once the restarted ternd listens (orphans reclaimed);
  - every acknowledged marker is in every recipient's new/ (lost: fail);
  - every file in new/ is whole: it ends with exactly the bytes sent, preceded only by the
    Return-Path, Delivered-To and trace header fields tern adds; its marker is one we sent;
    for an acknowledged message the added fields carry the queue ID of its 250;
  - nothing cut off during DATA and nothing refused is ever delivered;
  - duplicates only in the documented window (maildir.h: a crash after the link into new/,
    before the queue recorded the delivery): a recipient's copy count may grow by one over a
    crash only when it already had a copy at the instant of the kill; a copy delivered twice
    by the restarted process alone, or a message finished before the kill delivered again, is
    a failure.  Duplicates and messages delivered without a reply are counted and reported.

The negative control runs the same check against a deliberately wrong build of the protocol
(TERN_TEST_EARLY_ACK=1: 250 before the message is written, and TERN_TEST_COMMIT_DELAY_MS=300)
killed during the delay, and asserts the check reports acknowledged mail as lost.  Why not
TERN_SPOOL_NOSYNC=1 instead: it skips fdatasync, but a kill -9 ends only the process; what it
wrote is in the kernel's page cache and reaches the disk anyway.  Only a machine crash (power
loss, kernel panic) loses unsynced writes, and a test cannot cause one; the early 250 loses
mail on a plain process crash, so the check can be shown to fail.

Bounded: each test under 60 s; the load is smaller when the binary's path contains "asan".
"""

import os
import random
import select
import threading
import time

from harness import Closed, fail, spool_count

RCPT_DOMAIN = 'example.org'
SENDER = 'load@client.test'


def _asan(t):
    return 'asan' in t.ternd_path


def _conf(tmpdir, **extra):
    conf = {
        'mailbox_dir': os.path.join(tmpdir, 'mail'),
        'local_domains': 'example.org, localhost',
        'min_backoff': '1',
        'max_backoff': '2',
        'log_level': 'info',
        'max_message_size': '2097152',
    }
    conf.update({k: str(v) for k, v in extra.items()})
    return conf


def _start(t, env=None, **conf):
    d = t.daemon(None, env=dict(env or {}))
    d.overrides.update(_conf(d.tmpdir, **conf))
    d.start()
    return d


# ---- messages -----------------------------------------------------------------------------

class Msg:
    """One send: its marker, exact bytes, recipients, and what the server answered."""

    def __init__(self, world, rcpts, size):
        self.n = world.next_n()
        self.marker = f'{world.run}-{self.n:05d}'
        self.rcpts = list(rcpts)
        head = (f'From: <{SENDER}>\r\nTo: <{self.rcpts[0]}>\r\nSubject: crash test {self.n}\r\n'
                f'X-Tern-Test-Id: {self.marker}\r\n\r\n').encode()
        line = f'{self.marker} '.encode()
        lines = []
        total = len(head)
        i = 0
        while total < size:
            ln = line + b'%06d ' % i + b'abcdefghijklmnopqrstuvwxyz0123456789' * 2 + b'\r\n'
            lines.append(ln)
            total += len(ln)
            i += 1
        self.data = head + b''.join(lines) + f'END {self.marker}\r\n'.encode()
        self.state = 'incomplete'  # -> unanswered -> acked | refused
        self.queue_id = None
        self.reply = None


class World:
    """Everything sent to one spool over all its crashes, and the Maildir copies seen."""

    def __init__(self, t, d, rcpts):
        self.t = t
        self.d = d
        self.rcpts = list(rcpts)
        self.run = 'T%s' % os.urandom(4).hex()
        self.msgs = {}
        self.lock = threading.Lock()
        self.n = 0
        self.cache = {}       # path -> (marker or None, problem or None, added header lines)
        self.prev = {}        # (rcpt, marker) -> copies after the previous drain
        self.killed = False
        self.kill_time = 0.0
        self.finished = {}    # marker -> when every copy was first seen (after a drain)
        self.stats = {'rounds': 0, 'kills': 0, 'dup_window': 0, 'unanswered_delivered': 0,
                      'spool_tmp_orphans': 0, 'maildir_tmp_orphans': 0,
                      'kills_mid_delivery': 0, 'received_has_id': 0, 'files': 0}

    def next_n(self):
        with self.lock:
            self.n += 1
            return self.n

    def add(self, m):
        with self.lock:
            self.msgs[m.marker] = m

    @property
    def mail_dir(self):
        return self.d.conf['mailbox_dir']

    def maildir(self, rcpt):
        local, dom = rcpt.split('@')
        return os.path.join(self.mail_dir, dom.lower(), local.lower())

    # -- reading the Maildirs
    def _parse(self, rcpt, path):
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            return None
        hdr_end = data.find(b'\r\n\r\n')
        mk = None
        for ln in data[:hdr_end if hdr_end >= 0 else len(data)].split(b'\r\n'):
            if ln.startswith(b'X-Tern-Test-Id: '):
                mk = ln[16:].decode('ascii', 'replace')
                break
        m = self.msgs.get(mk)
        if m is None:
            return (mk, f'{path}: no marker of this test (X-Tern-Test-Id {mk!r}); '
                        f'{len(data)} bytes, starts {data[:200]!r}', b'')
        if not data.endswith(m.data):
            return (mk, f'{path}: not the message sent for {mk} ({len(data)} bytes, the '
                        f'message is {len(m.data)}): a partial or altered file; ends '
                        f'{data[-120:]!r}', b'')
        prefix = data[:len(data) - len(m.data)]
        if b'\n' in prefix.replace(b'\r\n', b'') or (prefix and not prefix.endswith(b'\r\n')):
            return (mk, f'{path}: added header fields not in CRLF lines: {prefix[:300]!r}',
                    b'')
        lines = prefix.split(b'\r\n')[:-1]
        want_rp = f'Return-Path: <{SENDER}>'.encode()
        problem = None
        if not lines or lines[0] != want_rp:
            problem = f'{path}: first line {lines[:1]!r}, want {want_rp!r}'
        elif not any(ln.startswith(b'Delivered-To: ') and rcpt.encode() in ln.lower()
                     for ln in lines):
            problem = f'{path}: no "Delivered-To: {rcpt}" in {prefix[:300]!r}'
        else:
            for ln in lines:
                if not (ln[:1] in (b' ', b'\t') or
                        ln.split(b':', 1)[0] in (b'Return-Path', b'Delivered-To', b'Received')):
                    problem = f'{path}: unexpected line {ln!r} before the message sent'
                    break
        return (mk, problem, prefix)

    def scan(self, problems=None):
        """{(rcpt, marker): copies in new/ and cur/}; problems found in files are appended."""
        counts = {}
        for r in self.rcpts:
            base = self.maildir(r)
            for sub in ('new', 'cur'):
                try:
                    names = os.listdir(os.path.join(base, sub))
                except FileNotFoundError:
                    continue
                for name in names:
                    path = os.path.join(base, sub, name)
                    got = self.cache.get(path)
                    if got is None:
                        got = self._parse(r, path)
                        if got is None:
                            continue
                        self.cache[path] = got
                    mk, problem, _ = got
                    if problem and problems is not None:
                        problems.append(problem)
                    counts[(r, mk)] = counts.get((r, mk), 0) + 1
        return counts

    def maildir_tmp_files(self):
        n = 0
        for r in self.rcpts:
            try:
                n += len(os.listdir(os.path.join(self.maildir(r), 'tmp')))
            except FileNotFoundError:
                pass
        return n

    def spool_tmp_files(self):
        try:
            return sorted(os.listdir(os.path.join(self.d.spool_dir, 'tmp')))
        except FileNotFoundError:
            return []

    def acked(self):
        with self.lock:
            return [m for m in self.msgs.values() if m.state == 'acked']

    def delivered_total(self):
        return sum(self.scan().values())

    # -- one crash
    def kill(self):
        """kill -9 and wait; then the state of the disk at the instant of the crash."""
        self.killed = True
        self.kill_time = time.monotonic()
        self.stats['kills'] += 1
        self.d.proc.kill()
        self.d.proc.wait()
        snap = self.scan()
        self.stats['spool_tmp_orphans'] += len(self.spool_tmp_files())
        return snap

    def restart(self, env=None):
        if env is not None:
            self.d.extra_env = dict(env)
        self.d.start()
        self.killed = False
        left = self.spool_tmp_files()
        if left:
            fail(f'spool_dir/tmp holds {left[:5]} after the restart: orphaned spill files '
                 f'were not reclaimed')

    def drain(self, stall=None):
        """Wait until every acked marker is in every mailbox, then until nothing moves."""
        limit = 40.0 if _asan(self.t) else 20.0
        if stall is None:
            stall = 12.0 if _asan(self.t) else 6.0
        t0 = last_change = time.monotonic()
        last = None
        want = {(r, m.marker) for m in self.acked() for r in m.rcpts}
        while time.monotonic() - t0 < limit:
            counts = self.scan()
            total = sum(counts.values())
            if total != last:
                last, last_change = total, time.monotonic()
            if want.issubset(counts) and time.monotonic() - last_change > 0.5:
                return True
            if time.monotonic() - last_change > stall:
                return False  # stuck: check() says what is missing
            if not self.d.alive():
                fail(f'ternd exited during the drain: {self.d.stderr_tail()!r}')
            time.sleep(0.05)
        return False

    def check(self, snap):
        """The assertions after a crash, restart and drain; a list of problems."""
        problems = []
        counts = self.scan(problems)
        self.stats['rounds'] += 1
        self.stats['files'] = sum(counts.values())
        self.stats['received_has_id'] = 0
        for path, (mk, _problem, prefix) in self.cache.items():
            m = self.msgs.get(mk)
            if m is None or m.state != 'acked':
                continue
            if m.queue_id.encode() not in prefix:
                problems.append(f'{path}: the queue ID {m.queue_id} of the 250 for {mk} is '
                                f'not in the added header fields {prefix[:300]!r}')
            else:
                self.stats['received_has_id'] += 1
        self.stats['maildir_tmp_orphans'] = self.maildir_tmp_files()
        lost = []
        for m in list(self.msgs.values()):
            for r in m.rcpts:
                f = counts.get((r, m.marker), 0)
                s = snap.get((r, m.marker), 0)
                p = self.prev.get((r, m.marker), 0)
                if m.state == 'acked' and f == 0:
                    lost.append(f'{m.marker} ({m.queue_id}) to {r}')
                if m.state in ('incomplete', 'refused') and f:
                    problems.append(f'{m.marker} was {m.state} (reply {m.reply!r}) but '
                                    f'{r} has {f} copies')
                if m.state == 'unanswered' and f and r == m.rcpts[0] and p == 0:
                    self.stats['unanswered_delivered'] += 1
                if f - s >= 2:
                    problems.append(f'{m.marker} to {r}: {f} copies, {s} at the kill: '
                                    f'delivered twice after the restart')
                elif f - s == 1 and s >= 1:
                    done = self.finished.get(m.marker)
                    if done is not None and done < self.kill_time - 2.0:
                        problems.append(f'{m.marker} to {r}: delivered again after a crash '
                                        f'although its delivery had finished '
                                        f'{self.kill_time - done:.1f} s before it ({p} copies '
                                        f'then, {f} now): its state record was never written')
                    else:
                        self.stats['dup_window'] += 1
                elif f < s:
                    problems.append(f'{m.marker} to {r}: {s} copies at the kill, {f} now')
        if lost:
            problems.append(f'LOST: {len(lost)} acknowledged deliveries missing after the '
                            f'restart, e.g. {lost[:5]}')
        self.prev = counts
        now = time.monotonic()
        for m in self.msgs.values():
            if m.marker not in self.finished and \
                    all(counts.get((r, m.marker), 0) for r in m.rcpts):
                self.finished[m.marker] = now
        return problems

    def round_end(self, snap):
        self.drain()
        problems = self.check(snap)
        if problems:
            fail(f'after crash round {self.stats["rounds"]}: ' + '\n'.join(problems[:20]))

    def report(self, what):
        acked = len(self.acked())
        no_reply = sum(1 for m in self.msgs.values() if m.state == 'unanswered')
        s = self.stats
        self.t.note(f'{what}: {s["kills"]} kills, {len(self.msgs)} messages sent, {acked} '
                    f'acked, {no_reply} unanswered ({s["unanswered_delivered"]} of them '
                    f'delivered), {s["files"]} files; duplicates (crash between link and '
                    f'state record): {s["dup_window"]}; spool tmp orphans reclaimed: '
                    f'{s["spool_tmp_orphans"]}; Maildir tmp/ leftovers: '
                    f'{s["maildir_tmp_orphans"]}; files of acked messages with the 250\'s '
                    f'queue ID in their Received field: {s["received_has_id"]}'
                    + (f'; kills during delivery: {s["kills_mid_delivery"]}'
                       if s['kills_mid_delivery'] else ''))


# ---- the load -----------------------------------------------------------------------------

class Sender(threading.Thread):
    """One client: connects, sends messages until told to stop or the server goes away."""

    def __init__(self, world, count=None, sizes=(800, 3000), big_every=0, rcpts=None):
        super().__init__(daemon=True)
        self.w = world
        self.count = count
        self.sizes = sizes
        self.big_every = big_every
        self.rcpts = rcpts or world.rcpts
        self.stop = threading.Event()
        self.errors = []
        self.rng = random.Random(os.urandom(8))

    def _size(self, i):
        if self.big_every and i % self.big_every == self.big_every - 1:
            return 300 * 1024  # over the 256 KiB spill threshold: a file in spool_dir/tmp
        return self.rng.randint(*self.sizes)

    def _cmd(self, c, line, code):
        r = c.cmd(line)  # raises Closed when the server went away
        if r.code != code:
            raise AssertionError(f'{line!r}: got {r.first!r}, want {code}')
        return r

    def run(self):
        d = self.w.d
        sent = 0
        try:
            c = d.connect(timeout=20, greet=False)
        except OSError:
            return
        try:
            if c.reply().code != 220:
                raise AssertionError('no 220 greeting')
            self._cmd(c, 'EHLO load.test', 250)
            while not self.stop.is_set() and (self.count is None or sent < self.count):
                m = Msg(self.w, self.rcpts, self._size(sent))
                self.w.add(m)
                sent += 1
                self._cmd(c, f'MAIL FROM:<{SENDER}>', 250)
                for r in m.rcpts:
                    self._cmd(c, f'RCPT TO:<{r}>', 250)
                self._cmd(c, 'DATA', 354)
                c.sock.sendall(m.data + b'.\r\n')
                m.state = 'unanswered'
                r = c.reply(timeout=20)
                m.reply = r.first
                if r.code == 250 and 'queued as ' in r.text:
                    m.queue_id = r.text.split('queued as ', 1)[1].split()[0]
                    m.state = 'acked'
                else:
                    m.state = 'refused'
                    self.errors.append(f'{m.marker}: {r.first}')
        except (Closed, OSError):
            pass  # the server was killed
        except AssertionError as e:
            if not self.w.killed:
                self.errors.append(str(e))
        finally:
            c.close()


def _run_load(w, senders, kill_at):
    """Start senders, kill ternd when kill_at() returns True (polled), stop them; the snap."""
    for s in senders:
        s.start()
    deadline = time.monotonic() + 20
    while not kill_at() and time.monotonic() < deadline:
        time.sleep(0.002)
    snap = w.kill()
    for s in senders:
        s.stop.set()
    for s in senders:
        s.join(10)
        if s.is_alive():
            fail('a sender thread did not finish within 10 s of the kill')
    errors = [e for s in senders for e in s.errors]
    if errors:
        fail(f'unexpected replies while ternd was running: {errors[:5]}')
    return snap


def _rcpts(n):
    return [f'user{i}@{RCPT_DOMAIN}' for i in range(n)]


def _warmup(w):
    """One message through before the crashes, so the test fails early if delivery is off."""
    s = Sender(w, count=1, rcpts=w.rcpts[:1])
    s.start()
    s.join(20)
    if s.errors or not w.acked():
        fail(f'a first message was not accepted: {s.errors}')
    if not w.drain():
        fail(f'a first message to {w.rcpts[0]} was not delivered into '
             f'{w.maildir(w.rcpts[0])}/new within the drain limit: is local delivery on?')
    problems = w.check({})
    if problems:
        fail('\n'.join(problems))
    w.stats['rounds'] = 0


# ---- (a) random instants ------------------------------------------------------------------

def test_crash_random_kills(t):
    asan = _asan(t)
    d = _start(t, delivery_concurrency=4)
    w = World(t, d, _rcpts(3))
    _warmup(w)
    rng = random.Random(os.urandom(8))
    for rnd in range(3 if asan else 5):
        senders = [Sender(w, big_every=12) for _ in range(4 if asan else 8)]
        t_kill = time.monotonic() + rng.uniform(0.2, 1.2)
        snap = _run_load(w, senders, lambda: time.monotonic() >= t_kill)
        w.restart()
        if rnd % 2 == 1:
            # a second crash during recovery: the queue rebuilt, redeliveries under way
            time.sleep(rng.uniform(0.0, 0.08))
            snap = w.kill()
            w.restart()
        w.round_end(snap)
    if not w.acked():
        fail('no message was acknowledged in any round: the load did not run')
    w.report('random kills')


# ---- (b) while batches sit in the committer -------------------------------------------------

def test_crash_in_commit_delay(t):
    asan = _asan(t)
    env = {'TERN_TEST_COMMIT_DELAY_MS': '200'}
    d = _start(t, env=env, delivery_concurrency=4)
    w = World(t, d, _rcpts(2))
    _warmup(w)
    # the hook must be in force, or this test kills at the same points as the random one
    with d.connect() as c:
        c.cmd('EHLO delay.test', 250, None)
        m = Msg(w, w.rcpts, 500)
        w.add(m)
        c.cmd(f'MAIL FROM:<{SENDER}>', 250)
        for r in m.rcpts:
            c.cmd(f'RCPT TO:<{r}>', 250)
        c.cmd('DATA', 354)
        t0 = time.monotonic()
        c.send(m.data + b'.\r\n')
        r = c.expect(250, '2.0.0')
        took = time.monotonic() - t0
        m.state, m.queue_id = 'acked', r.text.split('queued as ', 1)[1].split()[0]
    if took < 0.18:
        fail(f'a commit took {took * 1000:.0f} ms with TERN_TEST_COMMIT_DELAY_MS=200: the '
             f'test hook is not in force')
    rng = random.Random(os.urandom(8))
    for rnd in range(4):
        senders = [Sender(w, big_every=5) for _ in range(4 if asan else 12)]
        base = len(w.acked())
        if rnd % 2 == 0:
            # a random instant: most of the time a batch is in the 200 ms sleep, sometimes
            # in its write or sync
            t_kill = time.monotonic() + rng.uniform(0.3, 1.0)
            snap = _run_load(w, senders, lambda: time.monotonic() >= t_kill)
        else:
            # just after a batch was acknowledged: the next batch has just gone to sleep
            snap = _run_load(w, senders, lambda: len(w.acked()) > base + 2)
        w.restart(env)
        w.round_end(snap)
    w.report('kills in the commit delay')


# ---- (c) during delivery --------------------------------------------------------------------

def test_crash_during_delivery(t):
    asan = _asan(t)
    nrcpt = 8
    d = _start(t, delivery_concurrency=1)
    w = World(t, d, _rcpts(nrcpt))
    _warmup(w)
    rng = random.Random(os.urandom(8))
    per_round = 15 if asan else 40
    for _rnd in range(3):
        # accept a burst first (no kill), then kill once part of it is in the Maildirs
        before = w.delivered_total()
        senders = [Sender(w, count=per_round // 4, sizes=(500, 2000)) for _ in range(4)]
        for s in senders:
            s.start()
        target = before + int(per_round * nrcpt * rng.uniform(0.05, 0.6))
        deadline = time.monotonic() + 30
        while w.delivered_total() < target and time.monotonic() < deadline:
            time.sleep(0.001)
        snap = w.kill()
        for s in senders:
            s.join(10)
        if any(s.errors for s in senders):
            fail(f'unexpected replies: {[e for s in senders for e in s.errors][:5]}')
        if before < sum(snap.values()) < sum(len(m.rcpts) for m in w.acked()):
            w.stats['kills_mid_delivery'] += 1
        w.restart()
        w.round_end(snap)
    if not w.stats['kills_mid_delivery']:
        fail('no kill landed while deliveries were under way')
    w.report('kills during delivery')


# ---- (d) between the 250 leaving the server and the client reading it -----------------------

def test_crash_right_after_250(t):
    asan = _asan(t)
    d = _start(t, delivery_concurrency=4)
    w = World(t, d, _rcpts(2))
    _warmup(w)
    nclients = 6 if asan else 20
    acked_rounds = 0
    for _rnd in range(4):
        conns, msgs = [], []
        for i in range(nclients):
            c = d.connect(timeout=10)
            c.cmd('EHLO race.test', 250, None)
            m = Msg(w, w.rcpts, 600 + 37 * i)
            w.add(m)
            c.cmd(f'MAIL FROM:<{SENDER}>', 250)
            for r in m.rcpts:
                c.cmd(f'RCPT TO:<{r}>', 250)
            c.cmd('DATA', 354)
            conns.append(c)
            msgs.append(m)
        for c, m in zip(conns, msgs):
            c.sock.sendall(m.data + b'.\r\n')
            m.state = 'unanswered'
        # the first reply to arrive anywhere means a batch committed: kill at once, then
        # read what had already left the server
        readable, _, _ = select.select([c.sock for c in conns], [], [], 20)
        if not readable:
            fail('no reply to 20 messages within 20 s')
        snap = w.kill()
        for c, m in zip(conns, msgs):
            try:
                r = c.reply(timeout=5)
            except Closed:
                continue
            m.reply = r.first
            if r.code == 250 and 'queued as ' in r.text:
                m.state, m.queue_id = 'acked', r.text.split('queued as ', 1)[1].split()[0]
            else:
                m.state = 'refused'
            c.close()
        for c in conns:
            c.close()
        if any(m.state == 'acked' for m in msgs):
            acked_rounds += 1
        w.restart()
        w.round_end(snap)
    if not acked_rounds:
        fail('no round had a 250 in flight at the kill')
    w.report(f'kills right after a 250 ({acked_rounds} rounds with 250s unread at the kill)')


# ---- the negative control -------------------------------------------------------------------

def test_crash_negative_control_early_ack(t):
    """The same check on a build that sends 250 before writing: it must report a loss."""
    env = {'TERN_TEST_EARLY_ACK': '1', 'TERN_TEST_COMMIT_DELAY_MS': '300'}
    d = _start(t, env=env, delivery_concurrency=4)
    if b'TERN_TEST_EARLY_ACK' not in d.stderr():
        fail('ternd did not log the TERN_TEST_EARLY_ACK test hook: the control cannot run')
    w = World(t, d, _rcpts(2))
    caught = None
    for rnd in range(3):
        if rnd:
            w.kill()
            w.restart(env)
        senders = [Sender(w, sizes=(500, 1500)) for _ in range(4)]
        base = len(w.acked())
        # a 250 arrives at once; its message sleeps 300 ms in the committer: kill now
        snap = _run_load(w, senders, lambda: len(w.acked()) > base + 3)
        w.restart({})  # a correct restart: what is on disk is all there is
        w.drain(stall=3.0)
        problems = w.check(snap)
        other = [p for p in problems if not p.startswith('LOST')]
        if other:
            fail('the negative control found problems other than loss:\n' + '\n'.join(other))
        lost = [p for p in problems if p.startswith('LOST')]
        if lost:
            # really gone, not merely slow: the marker is nowhere in the spool either
            gone = [m for m in w.acked() if not any(w.scan().get((r, m.marker)) for r in m.rcpts)]
            kept = [m.marker for m in gone
                    if spool_count(d.spool_dir, f'X-Tern-Test-Id: {m.marker}\r\n')]
            if kept:
                fail(f'messages reported lost are still in the spool (slow, not lost): {kept[:5]}')
            caught = lost[0]
            break
    if caught is None:
        fail('the crash check did not detect lost mail with TERN_TEST_EARLY_ACK=1 (250 before '
             'the write) and a kill -9 during the 300 ms commit delay: it cannot fail, so it '
             'proves nothing')
    t.note(f'negative control caught it: {caught[:200]}')


# ---- the check itself ------------------------------------------------------------------------

def test_crash_check_catches_damage(t):
    """check() reports a lost message, a partial file, a second copy with no crash to explain
    it, and a delivered message whose DATA was cut off: each could otherwise hide."""
    d = _start(t)
    w = World(t, d, _rcpts(1))
    _warmup(w)
    rcpt = w.rcpts[0]
    new = os.path.join(w.maildir(rcpt), 'new')
    (name,) = os.listdir(new)
    with open(os.path.join(new, name), 'rb') as f:
        whole = f.read()
    planted = {'partial': whole[:len(whole) - 7], 'second': whole}
    cut = Msg(w, [rcpt], 700)  # its DATA never ended
    w.add(cut)
    planted['cut'] = (f'Return-Path: <{SENDER}>\r\nDelivered-To: {rcpt}\r\n').encode() + cut.data
    lost = Msg(w, [rcpt], 700)
    lost.state, lost.queue_id = 'acked', 'NOSUCHID'
    w.add(lost)
    for tag, data in planted.items():
        with open(os.path.join(new, f'planted-{tag}'), 'wb') as f:
            f.write(data)
    problems = w.check({})
    text = '\n'.join(problems)
    for what, needle in (('the partial file', 'planted-partial: not the message sent'),
                         ('the second copy', 'delivered twice'),
                         ('the cut-off message', f'{cut.marker} was incomplete'),
                         ('the lost message', f'LOST: 1 acknowledged')):
        if needle not in text:
            fail(f'check() missed {what} (no {needle!r} in):\n{text}')
