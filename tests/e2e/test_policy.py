"""
test_policy.py - greylisting and rate limits end to end, on the embedded LMDB store and on a
real redis-server shared by two ternd nodes (started and stopped here, by PID, on loopback).

The client is always 127.0.0.1, so every test empties relay_networks (else it is exempt).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import Closed, Skip, check_reply, fail, free_port, marker, port_listening, \
    spool_count

NO_RELAY = {'relay_networks': ''}


def greylist_conf(delay=2, **kw):
    conf = dict(NO_RELAY, greylist='on', greylist_delay=str(delay))
    conf.update({k: str(v) for k, v in kw.items()})
    return conf


def rcpt_reply(d, rcpt='u@example.org', sender='a@b.example'):
    """One new connection: EHLO, MAIL, RCPT; the RCPT reply (the session is then QUIT)."""
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd(f'MAIL FROM:<{sender}>', 250, '2.1.0')
        r = c.cmd(f'RCPT TO:<{rcpt}>')
        c.cmd('QUIT', 221)
    return r


def send_message(d, rcpt='u@example.org', sender='a@b.example'):
    """A whole message; fails unless it is queued.  Returns its marker."""
    mk = marker('pol')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd(f'MAIL FROM:<{sender}>', 250, '2.1.0')
        c.cmd(f'RCPT TO:<{rcpt}>', 250, '2.1.5')
        c.cmd('DATA', 354, None)
        c.send(f'Subject: {mk}\r\n\r\n{mk}\r\n.\r\n')
        c.expect(250, '2.0.0', 'queued as')
        c.cmd('QUIT', 221)
    return mk


def restart(d):
    """Stop a ternd (SIGTERM) and start it again on the same directory."""
    problems = d.stop()
    if problems:
        fail('; '.join(problems))
    d.start()
    d.stopped = False


# ---- greylisting on LMDB ----------------------------------------------------------------------

def test_greylist_lmdb(t):  # covers: R_GREYLISTED
    d = t.start(greylist_conf(delay=2))
    r = rcpt_reply(d)
    check_reply(r, 451, '4.7.1', 'Greylisted')
    if 'try again in 2 seconds' not in r.text:
        fail(f'the greylisting reply does not say when to retry: {r!r}')
    t0 = time.monotonic()
    r = rcpt_reply(d)  # an early retry is greylisted still
    check_reply(r, 451, '4.7.1', 'try again in')
    time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))
    mk = send_message(d)  # after the delay: passes
    check_reply(rcpt_reply(d), 250, '2.1.5')  # and later mail at once
    if spool_count(d.spool_dir, mk) < 1:
        fail('the message that passed greylisting is not in the spool')
    # another recipient (or sender) is another triplet
    check_reply(rcpt_reply(d, rcpt='v@example.org'), 451, '4.7.1', 'Greylisted')
    check_reply(rcpt_reply(d, sender='other@b.example'), 451, '4.7.1', 'Greylisted')


def test_greylist_ipv6(t):
    if not os.path.exists('/proc/net/tcp6'):
        raise Skip('no IPv6 on this machine')
    d = t.start(greylist_conf(delay=1), family=socket.AF_INET6)
    check_reply(rcpt_reply(d), 451, '4.7.1', 'Greylisted')
    time.sleep(1.3)
    check_reply(rcpt_reply(d), 250, '2.1.5')


def test_greylist_exemptions(t):
    # relay_networks (the harness default 127.0.0.0/8) is exempt
    d = t.start({'greylist': 'on', 'greylist_delay': '300'})
    check_reply(rcpt_reply(d), 250, '2.1.5')
    # policy_allow_networks is exempt
    d2 = t.start(greylist_conf(delay=300, policy_allow_networks='127.0.0.0/8'))
    check_reply(rcpt_reply(d2), 250, '2.1.5')
    # greylist_allow_domains: the sender's or the recipient's domain
    d3 = t.start(greylist_conf(delay=300, greylist_allow_domains='b.example, localhost'))
    check_reply(rcpt_reply(d3), 250, '2.1.5')
    check_reply(rcpt_reply(d3, sender='x@c.example', rcpt='postmaster@localhost'), 250,
                '2.1.5')
    check_reply(rcpt_reply(d3, sender='x@c.example'), 451, '4.7.1', 'Greylisted')


def test_greylist_auto_allow_and_expiry(t):
    d = t.start(greylist_conf(delay=1, greylist_auto_allow=2, greylist_expire=4))
    check_reply(rcpt_reply(d, sender='s1@b.example'), 451, '4.7.1')
    check_reply(rcpt_reply(d, sender='s2@b.example'), 451, '4.7.1')
    time.sleep(1.3)
    check_reply(rcpt_reply(d, sender='s1@b.example'), 250, '2.1.5')
    # one passed triplet: a new sender is still greylisted
    check_reply(rcpt_reply(d, sender='s3@b.example'), 451, '4.7.1')
    check_reply(rcpt_reply(d, sender='s2@b.example'), 250, '2.1.5')
    # two: the network passes for anyone
    check_reply(rcpt_reply(d, sender='s4@b.example', rcpt='w@example.org'), 250, '2.1.5')
    # greylist_expire (4 s) without mail: the triplets and the network's count are forgotten
    time.sleep(4.5)
    check_reply(rcpt_reply(d, sender='s1@b.example'), 451, '4.7.1', 'Greylisted')


def test_greylist_state_survives_restart(t):
    d = t.start(greylist_conf(delay=1))
    check_reply(rcpt_reply(d, rcpt='passed@example.org'), 451, '4.7.1')
    time.sleep(1.3)
    check_reply(rcpt_reply(d, rcpt='passed@example.org'), 250, '2.1.5')
    check_reply(rcpt_reply(d, rcpt='pending@example.org'), 451, '4.7.1')
    restart(d)
    # the passed triplet passes at once; the pending one remembers its first attempt
    check_reply(rcpt_reply(d, rcpt='passed@example.org'), 250, '2.1.5')
    time.sleep(1.3)
    check_reply(rcpt_reply(d, rcpt='pending@example.org'), 250, '2.1.5')
    if not os.path.exists(os.path.join(d.spool_dir, 'policy', 'data.mdb')):
        fail('the default LMDB store is not under spool_dir/policy')
    # kill -9 (no clean close, no sync): the kernel has the pages; nothing is lost
    check_reply(rcpt_reply(d, rcpt='killed@example.org'), 451, '4.7.1')
    time.sleep(1.3)
    check_reply(rcpt_reply(d, rcpt='killed@example.org'), 250, '2.1.5')
    d.kill()
    d.start()
    d.stopped = False
    check_reply(rcpt_reply(d, rcpt='killed@example.org'), 250, '2.1.5')


# ---- rate limits on LMDB -----------------------------------------------------------------------

def test_rate_connections(t):  # covers: R_RATE_CONNECTIONS
    d = t.start(dict(NO_RELAY, rate_connections='3', rate_window='3600'))
    for _ in range(3):  # exactly at the limit: greeted
        with d.connect() as c:
            c.cmd('QUIT', 221)
    c = d.connect(greet=False)
    try:
        r = c.reply()
        check_reply(r, 421, '4.7.0', 'over 3 per 3600 seconds (rate_connections)')
        if 'try again in' not in r.text:
            fail(f'the 421 does not say when to retry: {r!r}')
        c.expect_close()
    finally:
        c.close()
    # exempt: a client in policy_allow_networks is never counted
    d2 = t.start(dict(NO_RELAY, rate_connections='1', policy_allow_networks='127.0.0.1'))
    for _ in range(3):
        with d2.connect() as c:
            c.cmd('QUIT', 221)


def test_rate_messages(t):
    d = t.start(dict(NO_RELAY, rate_messages='3', rate_window='3600'))
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        for _ in range(3):
            c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
            c.cmd('RSET', 250)
        r = c.cmd('MAIL FROM:<a@b.example>', 450, '4.7.1',
                  'over 3 per 3600 seconds (rate_messages)')
        if 'try again in' not in r.text:
            fail(f'no retry time: {r!r}')
        c.cmd('RCPT TO:<u@example.org>', 503)  # no transaction was opened
    # another connection from the same address is counted too
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 450, '4.7.1')


def test_rate_recipients(t):
    d = t.start(dict(NO_RELAY, rate_recipients='3', rate_window='3600'))
    mk = marker('rr')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        for i in range(3):
            c.cmd(f'RCPT TO:<u{i}@example.org>', 250, '2.1.5')
        c.cmd('RCPT TO:<u3@example.org>', 450, '4.7.1',
              'over 3 per 3600 seconds (rate_recipients)')
        c.cmd('DATA', 354, None)  # the three accepted ones stand
        c.send(f'Subject: rr\r\n\r\n{mk}\r\n.\r\n')
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the message is not in the spool')
    # relay_networks clients are exempt
    d2 = t.start({'rate_recipients': '1'})
    with d2.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        for i in range(3):
            c.cmd(f'RCPT TO:<u{i}@example.org>', 250, '2.1.5')


# ---- Redis -------------------------------------------------------------------------------------

REDIS = shutil.which('redis-server') or '/usr/bin/redis-server'


class Redis:
    """A redis-server on a free loopback port with its own directory; stopped by PID."""

    def __init__(self):
        if not os.path.exists(REDIS):
            raise Skip('redis-server is not installed (scripts/deps installs it)')
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='tern-redis-')
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', self.dir, '--daemonize', 'no'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f'redis-server exited with status {self.proc.returncode}')
            if port_listening(self.port):
                return self
            time.sleep(0.02)
        fail('redis-server did not listen within 10 s')

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def spec(self):
        return f'redis://127.0.0.1:{self.port}'


def wait_for(what, fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    fail(f'{what}: not within {timeout:.0f} s (last: {last!r})')


def timed_rcpt(d, **kw):
    t0 = time.monotonic()
    r = rcpt_reply(d, **kw)
    return r, time.monotonic() - t0


def test_redis_two_nodes_share_state(t):
    rd = Redis().start()
    try:
        conf = greylist_conf(delay=2, state_store=rd.spec)
        a, b = t.start(conf), t.start(conf)
        check_reply(rcpt_reply(a), 451, '4.7.1', 'Greylisted')
        time.sleep(2.3)
        # node B never saw this triplet itself: it passes only because A's record is shared
        check_reply(rcpt_reply(b), 250, '2.1.5')
        check_reply(rcpt_reply(a), 250, '2.1.5')
        # a rate limit counts across both nodes
        rconf = dict(NO_RELAY, rate_messages='3', rate_window='3600', state_store=rd.spec)
        ra, rb = t.start(rconf), t.start(rconf)
        for node in (ra, rb, ra):
            with node.connect() as c:
                c.cmd('EHLO client.test', 250, None)
                c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        for node in (rb, ra):
            with node.connect() as c:
                c.cmd('EHLO client.test', 250, None)
                c.cmd('MAIL FROM:<a@b.example>', 450, '4.7.1', 'rate_messages')
    finally:
        rd.close()


def test_redis_down_and_back(t):  # covers: R_POLICY_UNAVAILABLE
    rd = Redis().start()
    try:
        base = greylist_conf(delay=1, state_store=rd.spec)
        closed = t.start(dict(base, policy_on_error='tempfail'))
        open_ = t.start(dict(base, policy_on_error='accept'))
        check_reply(rcpt_reply(closed), 451, '4.7.1', 'Greylisted')  # working
        rd.kill()
        for _ in range(3):
            r, took = timed_rcpt(closed, rcpt='new@example.org')
            check_reply(r, 451, '4.3.0', 'policy state store')
            if took > 3.0:
                fail(f'the tempfail answer took {took:.1f} s')
            r, took = timed_rcpt(open_, rcpt='new@example.org')
            check_reply(r, 250, '2.1.5')
            if took > 3.0:
                fail(f'the accept answer took {took:.1f} s')
        downs = closed.stderr().count(b'event=state-store-down')
        if downs != 1:
            fail(f'{downs} state-store-down log lines for one outage (want exactly 1)')
        # back on the same port: both nodes reconnect by themselves
        rd.start()
        wait_for('greylisting works again on the tempfail node',
                 lambda: rcpt_reply(closed, rcpt='back@example.org').code == 451 and
                 rcpt_reply(closed, rcpt='back@example.org').esc == '4.7.1')
        wait_for('greylisting works again on the accept node',
                 lambda: rcpt_reply(open_, rcpt='back2@example.org').code == 451)
        if b'event=state-store-up' not in closed.stderr():
            fail('no state-store-up log line after Redis came back')
    finally:
        rd.close()


def test_redis_stopped_no_hang(t):
    """A Redis that accepts but never answers (SIGSTOP): bounded answers, and a client that
    leaves while its lookup is in flight is dropped safely."""
    rd = Redis().start()
    try:
        d = t.start(greylist_conf(delay=1, state_store=rd.spec))
        check_reply(rcpt_reply(d), 451, '4.7.1')
        rd.proc.send_signal(signal.SIGSTOP)
        r, took = timed_rcpt(d, rcpt='x@example.org')
        check_reply(r, 451, '4.3.0')
        if took > 3.0:
            fail(f'the answer with Redis stopped took {took:.1f} s (want about 1 s)')
        # clients that leave while their lookup waits: answers dropped, no crash
        for i in range(5):
            c = d.connect()
            c.cmd('EHLO client.test', 250, None)
            c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
            c.send(f'RCPT TO:<gone{i}@example.org>\r\n')
            c.close()
        time.sleep(1.5)
        if not d.alive():
            fail('ternd died after clients left during a policy lookup')
        # SIGTERM while a lookup is in flight: 421 at once, the late answer dropped, exit 0
        d2 = t.start(greylist_conf(delay=1, state_store=rd.spec))
        c = d2.connect()
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        c.send('RCPT TO:<late@example.org>\r\n')
        time.sleep(0.2)
        d2.signal(signal.SIGTERM)
        c.expect(421, '4.3.2', timeout=3)
        c.close()
        status = d2.wait_exit(10)
        if status != 0:
            fail(f'ternd exited with {status} after SIGTERM during a policy lookup (want 0)')
        d2.stopped = True
        problems = d2.sanitizer_findings()
        if problems:
            fail('; '.join(problems))
        rd.proc.send_signal(signal.SIGCONT)
        wait_for('greylisting works again after SIGCONT',
                 lambda: rcpt_reply(d, rcpt='y@example.org').esc == '4.7.1')
    finally:
        rd.close()
