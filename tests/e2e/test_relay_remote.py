"""
test_relay_remote.py - ternd relays to real peers: what it does with each reply it gets.

Peers, all on loopback addresses (127.0.0.2, 127.0.0.3, ... are loopback on Linux, so each
MX host can have its own address and the same port):
  * Postfix's smtp-sink (/usr/sbin/smtp-sink), dumping each transaction to a file;
  * a second ternd (local_domains = remote.test) on 127.0.0.3;
  * tests/e2e/smtpserver.py, scripted per stage (421 at the greeting / EHLO / MAIL / RCPT /
    DATA / the dot, 4xx and 5xx at RCPT and after DATA, dropped connections, malformed
    replies, no SMTPUTF8).
Routing is by MX through libunbound with `dns_config` written by dnszone.write_unbound_conf
(no query leaves the machine; SERVFAIL from dnszone.StubServer), or through relay_host.

Every outcome is checked three ways: the log line ternd writes for the attempt
("ID event=... to=<a> relay=MX reply=\"...\""), `tern queue --json` (state, last_reply,
next_attempt), and for failures the RFC 3464 DSN delivered to the sender's Maildir (the sender
is in a local domain): Final-Recipient, Action, Status (the enhanced code), Diagnostic-Code
(the reply verbatim), Remote-MTA.  Peers are processes started and stopped by PID; each test
is bounded (retries use min_backoff = 1, max_backoff = 2, or 60 when a test checks that the
next attempt lies in the future).

What is not tested here: a peer that stalls without ever closing.  ternd's client timeouts are
the RFC 5321 §4.5.3.2 values (minutes) and not configurable, so the stall test uses a peer that
stalls for a few seconds and then closes, which ternd must treat like a dropped connection.
"""

import json
import os
import pwd
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

from dnszone import StubServer, write_unbound_conf
from harness import (Skip, events, fail, marker,
                     stop_process, wait_event, wait_until)
from test_delivery import queue_count, queue_json, queue_msg

HERE = os.path.dirname(os.path.abspath(__file__))
SMTPSERVER = os.path.join(HERE, 'smtpserver.py')
SMTP_SINK = '/usr/sbin/smtp-sink'
SENDER = 'sender@example.org'      # a local address: its DSNs land in its Maildir
POSTMASTER = 'postmaster@example.org'


def slow(t):
    return 'asan' in t.ternd_path


def wait_s(t):
    return 40.0 if slow(t) else 20.0


# ---- ternd's view: log lines, tern queue --json, Maildirs ---------------------------------------



def start(t, conf=None):
    """A ternd with a control socket and quick retries; remote mail goes where conf says."""
    d = t.daemon(conf)
    d.overrides.setdefault('control_socket', os.path.join(d.tmpdir, 'ctl.sock'))
    d.overrides.setdefault('min_backoff', '1')
    d.overrides.setdefault('max_backoff', '2')
    return d.start()


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def new_files(d, addr):
    local, dom = addr.rsplit('@', 1)
    p = os.path.join(d.mailbox_dir, dom.lower(), local.lower(), 'new')
    if not os.path.isdir(p):
        return []
    return sorted(os.path.join(p, f) for f in os.listdir(p) if not f.startswith('.'))


# ---- peers: processes started and stopped by PID ----------------------------------------------

def listening(host, port):
    """True when a socket LISTENs on exactly host:port (IPv4) in /proc/net/tcp."""
    want = '%s:%04X' % (socket.inet_aton(host)[::-1].hex().upper(), port)
    try:
        with open('/proc/net/tcp') as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[3] == '0A' and fields[1] == want:
                    return True
    except OSError:
        pass
    return False


def pick_port(hosts):
    """A TCP port free on every one of hosts (all in 127.0.0.0/8)."""
    for _ in range(50):
        socks = []
        try:
            s = socket.socket()
            s.bind((hosts[0], 0))
            socks.append(s)
            port = s.getsockname()[1]
            for h in hosts[1:]:
                s = socket.socket()
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    fail(f'no port free on all of {hosts}')


class Peers:
    """The peer processes of one test; stopped (by PID) when the with-block ends."""

    def __init__(self, t):
        self.t = t
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.stop()

    def smtp(self, host, port, script=(), idle=60, concurrent=False):
        p = SmtpPeer(self.t, host, port, script, idle, concurrent)
        self.procs.append(p)
        p.start()
        return p

    def sink(self, host, port, extra=()):
        p = Sink(self.t, host, port, extra)
        self.procs.append(p)
        p.start()
        return p


class SmtpPeer:
    """tests/e2e/smtpserver.py on host:port, scripted (see its docstring)."""

    def __init__(self, t, host, port, script, idle, concurrent=False):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix=f'smtp-{host}-', dir=t.tmproot)
        self.maildir = os.path.join(self.dir, 'md')
        self.cmd = [sys.executable, SMTPSERVER, '--host', host, '--port', str(port),
                    '--maildir', self.maildir, '--idle', str(idle)]
        for s in script:
            self.cmd += ['--script', s]
        if concurrent:
            self.cmd.append('--concurrent')
        self.proc = None

    def start(self):
        self.errf = open(os.path.join(self.dir, 'stderr.log'), 'wb')
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf, bufsize=0)
        line = b''
        deadline = time.monotonic() + 10
        while not line.endswith(b'\n'):
            r, _, _ = select.select([self.proc.stdout], [], [],
                                    max(deadline - time.monotonic(), 0))
            if not r:
                fail(f'smtpserver.py on {self.host}:{self.port} printed no "ready" in 10 s')
            ch = self.proc.stdout.read(1)
            if not ch:
                fail(f'smtpserver.py on {self.host}:{self.port} exited at start: '
                     f'{read(self.errf.name)[-500:]!r}')
            line += ch
        if line != b'ready %d\n' % self.port:
            fail(f'smtpserver.py printed {line!r}, want "ready {self.port}"')

    def files(self, addr):
        p = os.path.join(self.maildir, addr)
        return sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else []

    def stored(self):
        """{recipient directory: number of messages} of everything this server accepted."""
        out = {}
        if os.path.isdir(self.maildir):
            for name in os.listdir(self.maildir):
                p = os.path.join(self.maildir, name)
                if os.path.isdir(p):
                    out[name] = len(os.listdir(p))
        return out

    def transcript(self):
        try:
            return read(os.path.join(self.maildir, 'transcript.txt')).decode('utf-8', 'replace')
        except OSError:
            return ''

    def connections(self):
        return self.transcript().count('# connect\n')

    def max_concurrency(self):
        """With concurrent=True: the most connections that were open at once."""
        try:
            return int(read(os.path.join(self.maildir, 'concurrency.txt')))
        except (OSError, ValueError):
            return 0

    def stop(self):
        stop_process(self.proc, self.proc.stdout, self.errf)


class Sink:
    """Postfix's smtp-sink on host:port in the foreground, each transaction dumped to a file."""

    def __init__(self, t, host, port, extra):
        if not os.access(SMTP_SINK, os.X_OK):
            raise Skip(f'{SMTP_SINK} not installed (Debian package postfix)')
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix=f'sink-{host}-', dir=t.tmproot)
        self.dumps = os.path.join(self.dir, 'dumps')
        os.mkdir(self.dumps)
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root without -u; root keeps the dump directory
            # (inside the test's 0700 temporary directory) writable.
            cmd += ['-u', pwd.getpwuid(0).pw_name]
        # -d: one file per transaction; -h: its name in the greeting and EHLO reply
        self.cmd = cmd + ['-h', 'sink.test', '-d', os.path.join(self.dumps, 'msg.')] + \
            list(extra) + [f'{host}:{port}', '16']
        self.proc = None

    def start(self):
        self.errf = open(os.path.join(self.dir, 'stderr.log'), 'wb')
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.errf,
                                     stderr=self.errf)
        deadline = time.monotonic() + 10
        while not listening(self.host, self.port):
            if self.proc.poll() is not None:
                fail(f'smtp-sink exited at start with {self.proc.returncode}: '
                     f'{read(self.errf.name)[-500:]!r}')
            if time.monotonic() > deadline:
                fail(f'smtp-sink did not listen on {self.host}:{self.port} in 10 s')
            time.sleep(0.02)

    def files(self):
        return sorted(os.path.join(self.dumps, f) for f in os.listdir(self.dumps))

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, self.errf)


# ---- ternd, messages ---------------------------------------------------------------------------

def relay_ternd(t, records=(), port=None, conf=None, servfail=(), stub=None):
    """A ternd routing by MX through a hermetic unbound config (records), remote_port = port."""
    path = tempfile.mktemp(prefix='dns-', suffix='.conf', dir=t.tmproot)
    write_unbound_conf(path, list(records), servfail_zones=servfail,
                       stub_port=stub.port if stub else None)
    c = {'dns_config': path}
    if port is not None:
        c['remote_port'] = str(port)
    c.update(conf or {})
    return start(t, c)


def message(tag):
    return (f'From: <{SENDER}>\r\nTo: <someone@remote.test>\r\nSubject: {tag}\r\n'
            f'Message-ID: <{tag}@client.test>\r\n\r\nbody of {tag}\r\n.leading dot\r\n'
            f'last line\r\n').encode()


def submit(d, rcpts, body, sender=SENDER, mail_params=''):
    """One message; rcpts are addresses or (address, ' RCPT PARAMS'); its queue ID."""
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd(f'MAIL FROM:<{sender}>{mail_params}', 250, '2.1.0')
        for r in rcpts:
            addr, params = (r, '') if isinstance(r, str) else r
            c.cmd(f'RCPT TO:<{addr}>{params}', 250, '2.1.5')
        c.cmd('DATA', 354, None)
        c.send(b''.join(b'.' + ln if ln.startswith(b'.') else ln
                        for ln in body.splitlines(keepends=True)) + b'.\r\n')
        r = c.expect(250, '2.0.0', 'queued as', timeout=15)
        c.cmd('QUIT', 221, '2.0.0')
    m = re.search(r'queued as ([0-9A-Z]{16})', r.text)
    if not m:
        fail(f'no queue ID in {r!r}')
    return m.group(1)


def expect_event(t, d, qid, addr, event, reply=None, relay=None, prefix=None):
    """Wait for the log line; check its reply (exact, or its prefix) and relay."""
    e = wait_event(d, qid, addr, event, timeout=wait_s(t))
    if reply is not None and e['reply'] != reply:
        fail(f'{qid} to=<{addr}> event={event}: reply "{e["reply"]}", want "{reply}"')
    if prefix is not None and not e['reply'].startswith(prefix):
        fail(f'{qid} to=<{addr}> event={event}: reply "{e["reply"]}", want it to start '
             f'with "{prefix}"')
    if relay is not None and e['relay'] != relay:
        fail(f'{qid} to=<{addr}> event={event}: relay={e["relay"]}, want relay={relay}')
    return e


def no_event(d, qid, addr, event):
    ev = events(d, qid, addr, event)
    if ev:
        fail(f'unexpected log line(s) {ev!r}')


def rcpt_state(d, qid, addr):
    m = queue_msg(d, qid)
    if m is None:
        fail(f'{qid} is not in tern queue --json (want recipient {addr} in it)')
    for r in m['recipients']:
        if r['addr'] == addr:
            return r
    fail(f'{qid} has no recipient {addr} in tern queue --json: {m!r}')


def check_deferred(d, qid, addr, reply=None, prefix=None, min_wait=None):
    """tern queue says deferred, with this last reply, next attempt min_wait s away or more."""
    r = rcpt_state(d, qid, addr)
    now = time.time()
    if r['state'] != 'deferred':
        fail(f'{qid} {addr}: state {r["state"]}, want deferred ({r!r})')
    if reply is not None and r['last_reply'] != reply:
        fail(f'{qid} {addr}: last_reply {r["last_reply"]!r}, want {reply!r}')
    if prefix is not None and not (r['last_reply'] or '').startswith(prefix):
        fail(f'{qid} {addr}: last_reply {r["last_reply"]!r}, want it to start with {prefix!r}')
    if min_wait is not None and not now + min_wait <= r['next_attempt'] <= now + 100:
        fail(f'{qid} {addr}: next_attempt {r["next_attempt"]} is {r["next_attempt"] - now:.0f} '
             f's from now, want at least {min_wait} s in the future')
    if r['attempts'] < 1:
        fail(f'{qid} {addr}: attempts {r["attempts"]}, want at least 1')
    return r


def check_failed(d, qid, addr, reply):
    r = rcpt_state(d, qid, addr)
    if r['state'] != 'failed' or r['last_reply'] != reply:
        fail(f'{qid} {addr}: {r!r}, want state failed with last_reply {reply!r}')


def queue_empty(t, d):
    wait_until('the queue empties', lambda: queue_count(d) == 0, timeout=wait_s(t))


# ---- DSNs --------------------------------------------------------------------------------------

def unfold(block):
    return re.sub(r'\r\n(?=[ \t])', '', block)


def fields(block):
    out = {}
    for line in unfold(block).split('\r\n'):
        if not line:
            continue
        name, sep, value = line.partition(': ')
        if not sep:
            fail(f'DSN: not a field: {line!r}')
        if name in out:
            fail(f'DSN: field {name} twice in one block: {block!r}')
        out[name] = value
    return out


class Dsn:
    """A DSN as delivered to a Maildir: its header, delivery-status blocks and parts."""

    def __init__(self, path):
        self.path = path
        raw = read(path)
        if b'\n' in raw.replace(b'\r\n', b''):
            fail(f'{path}: a bare LF in the DSN')
        text = raw.decode('utf-8', 'replace')
        self.text = text
        head, sep, body = text.partition('\r\n\r\n')
        if not sep:
            fail(f'{path}: no header/body separator')
        self.header = {}
        for line in unfold(head).split('\r\n'):
            name, _, value = line.partition(': ')
            self.header.setdefault(name.lower(), value)
        ct = self.header.get('content-type', '')
        m = re.match(r'multipart/report; report-type=((?:global-)?delivery-status); '
                     r'boundary="([^"]+)"$', ct)
        if not m:
            fail(f'{path}: Content-Type {ct!r}, want multipart/report; report-type='
                 f'delivery-status (or global-delivery-status, RFC 6533)')
        self.report_type = m.group(1)
        delim = '\r\n--' + m.group(2)
        if not body.rstrip('\r\n').endswith(m.group(2) + '--'):
            fail(f'{path}: the MIME closing delimiter is missing')
        self.parts = {}
        for part in ('\r\n' + body).split(delim)[1:-1]:
            phead, _, pbody = part.lstrip('\r\n').partition('\r\n\r\n')
            pct = re.search(r'(?im)^Content-Type: ([^;\r\n]+)', phead)
            self.parts[pct.group(1).lower() if pct else ''] = pbody
        ds = self.parts.get('message/' + self.report_type)
        if ds is None:
            fail(f'{path}: no message/{self.report_type} part (parts {list(self.parts)})')
        blocks = [b for b in re.split(r'\r\n\r\n', ds.strip('\r\n')) if b]
        self.msg = fields(blocks[0])
        self.rcpts = [fields(b) for b in blocks[1:]]

    def rcpt(self, addr):
        # an address with non-ASCII octets may carry RFC 6533's type "utf-8" instead
        types = ('rfc822',) if addr.isascii() else ('rfc822', 'utf-8')
        for r in self.rcpts:
            if r.get('Final-Recipient') in [f'{ty}; {addr}' for ty in types]:
                return r
        fail(f'{self.path}: no block with Final-Recipient: rfc822; {addr} in {self.rcpts!r}')

    def check(self, qid, to=SENDER, n=None):
        if self.header.get('to') != f'<{to}>':
            fail(f'{self.path}: To: {self.header.get("to")!r}, want <{to}>')
        if self.header.get('subject') != 'Undelivered Mail Returned to Sender':
            fail(f'{self.path}: Subject {self.header.get("subject")!r}')
        if not self.text.startswith('Return-Path: <>\r\n'):
            fail(f'{self.path}: a DSN must come from the null sender: {self.text[:100]!r}')
        if self.msg.get('X-Tern-Queue-ID') != qid:
            fail(f'{self.path}: X-Tern-Queue-ID {self.msg.get("X-Tern-Queue-ID")!r}, want {qid}')
        if self.msg.get('Reporting-MTA') != 'dns; mx.test':
            fail(f'{self.path}: Reporting-MTA {self.msg.get("Reporting-MTA")!r}')
        if n is not None and len(self.rcpts) != n:
            fail(f'{self.path}: {len(self.rcpts)} recipient blocks, want {n}: {self.rcpts!r}')

    def check_rcpt(self, addr, reply, mta, orcpt=None):
        """Action failed, Status = the reply's enhanced code, Diagnostic-Code the reply."""
        r = self.rcpt(addr)
        esc = reply.split(' ')[1]
        want = {'Final-Recipient': r['Final-Recipient'], 'Action': 'failed', 'Status': esc,
                'Diagnostic-Code': f'smtp; {reply}'}
        if mta is not None:
            want['Remote-MTA'] = f'dns; {mta}'
        if orcpt is not None:
            want['Original-Recipient'] = orcpt
        for k, v in want.items():
            if r.get(k) != v:
                fail(f'{self.path}: for {addr}, {k}: {r.get(k)!r}, want {v!r} (block {r!r})')
        if mta is None and 'Remote-MTA' in r:
            fail(f'{self.path}: for {addr}, Remote-MTA {r["Remote-MTA"]!r} but no remote MTA '
                 f'answered')
        if orcpt is None and 'Original-Recipient' in r:
            fail(f'{self.path}: for {addr}, Original-Recipient {r["Original-Recipient"]!r} '
                 f'without ORCPT')
        return r


def wait_dsns(t, d, n, addr=SENDER):
    """Exactly n DSNs in addr's Maildir (waits for them, then checks none more came)."""
    files = wait_until(f'{n} DSN(s) in the Maildir of {addr}',
                       lambda: (lambda f: f if len(f) >= n else None)(new_files(d, addr)),
                       timeout=wait_s(t))
    time.sleep(0.3)
    files = new_files(d, addr)
    if len(files) != n:
        fail(f'{len(files)} DSNs in the Maildir of {addr}, want {n}: {files}')
    return [Dsn(f) for f in files]


def no_dsn(d, addr=SENDER, settle=0.5):
    time.sleep(settle)
    if new_files(d, addr):
        fail(f'unexpected DSN in the Maildir of {addr}: {read(new_files(d, addr)[0])[:600]!r}')
    bounces = [ln for ln in d.stderr().decode('utf-8', 'replace').splitlines()
               if 'event=bounce' in ln]
    if bounces:
        fail(f'unexpected bounce log line(s): {bounces}')


def dsn_for(dsns, qid):
    for x in dsns:
        if x.msg.get('X-Tern-Queue-ID') == qid:
            return x
    fail(f'no DSN about {qid} among {[x.path for x in dsns]}')


# ---- smtp-sink ---------------------------------------------------------------------------------

def sink_dumps(t, sink, n):
    files = wait_until(f'{n} transaction(s) in smtp-sink',
                       lambda: (lambda f: f if len(f) >= n else None)(sink.files()),
                       timeout=wait_s(t))
    time.sleep(0.2)
    files = sink.files()
    if len(files) != n:
        fail(f'smtp-sink got {len(files)} transactions, want {n}')
    return [read(f) for f in files]


def test_relay_remote_sink_relay_host(t):
    """relay_host = 127.0.0.2:PORT (no MX lookup): smtp-sink takes every message once."""
    port = pick_port(['127.0.0.2'])
    n = 3 if slow(t) else 10
    with Peers(t) as p:
        sink = p.sink('127.0.0.2', port)
        d = start(t, {'relay_host': f'127.0.0.2:{port}'})
        sent = {}
        for i in range(n):
            tag = marker('sink')
            rcpts = [f'a{i}@far.test'] + ([f'b{i}@other.test'] if i % 2 else [])
            sent[tag] = (submit(d, rcpts, message(tag)), rcpts)
        for tag, (qid, rcpts) in sent.items():
            for a in rcpts:
                expect_event(t, d, qid, a, 'delivered', relay='127.0.0.2', prefix='250 2.0.0 Ok')
        queue_empty(t, d)
        dumps = sink_dumps(t, sink, n)
        for tag, (qid, rcpts) in sent.items():
            got = [x for x in dumps if tag.encode() in x]
            if len(got) != 1:
                fail(f'message {tag} arrived {len(got)} times at smtp-sink, want once')
            x = got[0]
            want = b''.join(b'X-Rcpt-Args: <%s>\n' % a.encode() for a in rcpts)
            if want not in x or b'X-Mail-Args: <%s>' % SENDER.encode() not in x:
                fail(f'smtp-sink saw the wrong envelope for {tag}: {x[:400]!r}')
            if b'\n.leading dot\n' not in x or b'\n..leading' in x:
                fail(f'dot-stuffing not undone right at smtp-sink: {x[-200:]!r}')
        for ln in d.stderr().decode('utf-8', 'replace').splitlines():
            if 'event=deferred' in ln or 'event=failed' in ln:
                fail(f'unexpected log line {ln!r}')


def test_relay_remote_sink_mx(t):
    """MX lookup: sink.test MX 10 mx.sink.test (A 127.0.0.2) -> smtp-sink on remote_port."""
    port = pick_port(['127.0.0.2'])
    with Peers(t) as p:
        sink = p.sink('127.0.0.2', port)
        d = relay_ternd(t, [('sink.test', 'MX', '10 mx.sink.test'),
                            ('mx.sink.test', 'A', '127.0.0.2')], port)
        tag = marker('mx')
        qid = submit(d, ['u1@sink.test', 'u2@sink.test'], message(tag))
        for a in ('u1@sink.test', 'u2@sink.test'):
            expect_event(t, d, qid, a, 'delivered', relay='mx.sink.test', prefix='250 2.0.0 Ok')
        queue_empty(t, d)
        (x,) = sink_dumps(t, sink, 1)
        if tag.encode() not in x or b'X-Rcpt-Args: <u1@sink.test>\nX-Rcpt-Args: <u2@sink.test>' \
                not in x:
            fail(f'smtp-sink got the wrong transaction: {x[:400]!r}')
        if b'X-Helo-Args: mx.test\n' not in x:
            fail(f'ternd did not greet smtp-sink with its hostname: {x[:300]!r}')


def test_relay_remote_smtputf8_needed(t):  # covers: R_DLV_NEED_SMTPUTF8
    """smtp-sink offers no SMTPUTF8: a UTF-8 recipient fails 553 5.6.7 and is never sent;
    the same recipient domain on a server offering SMTPUTF8 gets it, with MAIL ... SMTPUTF8."""
    port = pick_port(['127.0.0.2', '127.0.0.3'])
    with Peers(t) as p:
        sink = p.sink('127.0.0.2', port)
        srv = p.smtp('127.0.0.3', port)
        d = relay_ternd(t, [('utf8.test', 'MX', '10 mx.utf8.test'),
                            ('mx.utf8.test', 'A', '127.0.0.2'),
                            ('ok8.test', 'MX', '10 mx.ok8.test'),
                            ('mx.ok8.test', 'A', '127.0.0.3')], port)
        bad, good = 'jürgen@utf8.test', 'jürgen@ok8.test'
        q1 = submit(d, [bad], message(marker('u8')), mail_params=' SMTPUTF8')
        reply = (f'553 5.6.7 mx.utf8.test[127.0.0.2]:{port} does not support SMTPUTF8, '
                 f'required by this message')
        expect_event(t, d, q1, bad, 'failed', reply=reply, relay='mx.utf8.test')
        (dsn,) = wait_dsns(t, d, 1)
        dsn.check(q1, n=1)
        r = dsn.check_rcpt(bad, reply, 'mx.utf8.test')
        # RFC 6533: about a message that needed SMTPUTF8, a global report with utf-8 addresses
        # and the original as message/global
        if dsn.report_type != 'global-delivery-status':
            fail(f'report-type {dsn.report_type}, want global-delivery-status (RFC 6533)')
        if r['Final-Recipient'] != f'utf-8; {bad}':
            fail(f'Final-Recipient {r["Final-Recipient"]!r}, want "utf-8; {bad}"')
        if 'message/global' not in dsn.parts or 'message/rfc822' in dsn.parts:
            fail(f'the original should come back as message/global: parts {list(dsn.parts)}')
        if sink.files():
            fail('smtp-sink got a transaction: the message needing SMTPUTF8 was sent to it')
        q2 = submit(d, [good], message(marker('u8ok')), mail_params=' SMTPUTF8')
        expect_event(t, d, q2, good, 'delivered', relay='mx.ok8.test', prefix='250 2.0.0 Ok')
        if len(srv.files(good)) != 1:
            fail(f'{good}: {len(srv.files(good))} messages at the SMTPUTF8 server, want 1')
        if not re.search(r'(?m)^C: MAIL FROM:<sender@example.org>.* SMTPUTF8', srv.transcript()):
            fail(f'MAIL FROM without SMTPUTF8: {srv.transcript()[:800]}')
        queue_empty(t, d)


# ---- a second ternd ----------------------------------------------------------------------------

def test_relay_remote_second_ternd(t):
    """ternd -> ternd (local_domains = remote.test on 127.0.0.3): both Received headers."""
    b = t.daemon({'listen': '127.0.0.3:{port}', 'local_domains': 'remote.test',
                  'hostname': 'mx.remote.test'})
    b.overrides['control_socket'] = os.path.join(b.tmpdir, 'ctl.sock')
    b.start()
    a = relay_ternd(t, [('remote.test', 'MX', '10 mx.remote.test'),
                        ('mx.remote.test', 'A', '127.0.0.3')], b.port)
    tag = marker('t2t')
    body = message(tag)
    qid = submit(a, ['User@remote.test'], body)
    e = expect_event(t, a, qid, 'User@remote.test', 'delivered', relay='mx.remote.test',
                     prefix='250 2.0.0 ')
    if 'queued as' not in e['reply']:
        fail(f'the reply of the second ternd is not kept verbatim: {e["reply"]!r}')
    queue_empty(t, a)
    files = wait_until('the message in the second ternd\'s Maildir',
                       lambda: new_files(b, 'user@remote.test'), timeout=wait_s(t))
    if len(files) != 1:
        fail(f'{len(files)} messages in the Maildir, want 1')
    data = read(files[0]).decode('utf-8', 'replace')
    head = f'Return-Path: <{SENDER}>\r\nDelivered-To: User@remote.test\r\n'
    if not data.lower().startswith(head.lower()):
        fail(f'the delivered message starts {data[:200]!r}, want {head!r}')
    received = re.findall(r'(?m)^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*', data)
    if len(received) != 2:
        fail(f'{len(received)} Received headers, want 2 (one per ternd): {received!r}')
    if 'by mx.remote.test (tern)' not in received[0] or 'from mx.test ' not in received[0]:
        fail(f'the first Received header is not the second ternd\'s: {received[0]!r}')
    if 'by mx.test (tern)' not in received[1] or 'from client.test ' not in received[1]:
        fail(f'the second Received header is not the first ternd\'s: {received[1]!r}')
    if not data.endswith(body.decode()):
        fail(f'the message changed on the way: {data[-200:]!r}, want it to end with '
             f'{body[-200:]!r}')
    wait_until('the second ternd\'s queue empties', lambda: queue_count(b) == 0,
               timeout=wait_s(t))


# ---- two MX hosts, the first refusing ----------------------------------------------------------

TWO_MX = [('two.test', 'MX', '10 mx1.two.test'), ('two.test', 'MX', '20 mx2.two.test'),
          ('mx1.two.test', 'A', '127.0.0.2'), ('mx2.two.test', 'A', '127.0.0.3')]
R421 = '421 4.3.2 mx1 is going down'
FIRST_REFUSES = {
    'greeting': ['greeting=' + R421],
    'ehlo': ['ehlo=' + R421],
    'mail': ['mail=' + R421],                     # MAIL, RCPT, DATA pipelined: the
    'rcpt': ['rcpt:user@two.test=' + R421],       # commands of the group come after it
    'mail_nopipe': ['no-ext=PIPELINING', 'mail=' + R421],
    'rcpt_nopipe': ['no-ext=PIPELINING', 'rcpt:user@two.test=' + R421],
    'data': ['data=' + R421],
    'dot': ['dot=' + R421],
    'greeting554': ['greeting=554 5.3.2 mx1 takes no mail now'],
    'malformed_rcpt': ['malformed=rcpt'],
    'drop_mail': ['drop=mail'],
}


def first_mx_refuses(t, stage):
    port = pick_port(['127.0.0.2', '127.0.0.3'])
    with Peers(t) as p:
        mx1 = p.smtp('127.0.0.2', port, FIRST_REFUSES[stage])
        mx2 = p.smtp('127.0.0.3', port)
        d = relay_ternd(t, TWO_MX, port)
        qid = submit(d, ['user@two.test'], message(marker(stage)))
        expect_event(t, d, qid, 'user@two.test', 'delivered', relay='mx2.two.test',
                     reply='250 2.0.0 Ok: queued')
        queue_empty(t, d)
        ev = events(d, qid, 'user@two.test')
        if len(ev) != 1:
            fail(f'want one outcome (delivered by mx2), got {ev!r}')
        if mx1.stored() or mx2.stored() != {'user@two.test': 1}:
            fail(f'delivered more or less than once: mx1 stored {mx1.stored()}, '
                 f'mx2 {mx2.stored()}')
        tr = mx1.transcript()
        if mx1.connections() != 1:
            fail(f'mx1 saw {mx1.connections()} connections, want 1:\n{tr}')
        script = FIRST_REFUSES[stage][-1]
        if not script.startswith(('malformed', 'drop')):
            refusal = script.split('=', 1)[1]
            after = tr.split('S: ' + refusal, 1)
            if len(after) != 2:
                fail(f'mx1 never sent {refusal!r}:\n{tr}')
            cmds = re.findall(r'(?m)^C: (.*)$', after[1])
            # after a 421 only QUIT (or nothing); with PIPELINING the rest of the group that
            # was already on its way when the 421 came (answered 503/554: no transaction)
            allowed = {'QUIT'}
            if stage in ('mail', 'rcpt'):
                allowed |= {'RCPT TO:<user@two.test>', 'DATA'}
            if [c for c in cmds if c not in allowed]:
                fail(f'ternd went on talking to mx1 after {refusal!r}: {cmds}')
            if stage.endswith('nopipe') and '# pipelined' in tr:
                fail(f'ternd pipelined to a server without PIPELINING:\n{tr}')
        no_dsn(d)


def _make_first_refuses(stage):
    def test(t):
        first_mx_refuses(t, stage)
    test.__doc__ = f'two MX hosts, the first refusing at {stage}: delivered once, by mx2'
    return test


for _stage in FIRST_REFUSES:
    globals()['test_relay_remote_first_mx_' + _stage] = _make_first_refuses(_stage)


def test_relay_remote_all_mx_421(t):
    """Both MX hosts answer 421 at the greeting: deferred with the (last) 421, no DSN."""
    port = pick_port(['127.0.0.2', '127.0.0.3'])
    with Peers(t) as p:
        mx1 = p.smtp('127.0.0.2', port, ['greeting=421 4.3.2 mx1 busy'])
        mx2 = p.smtp('127.0.0.3', port, ['greeting=421 4.7.0 mx2 busy too'])
        d = relay_ternd(t, TWO_MX, port, {'min_backoff': '60', 'max_backoff': '60'})
        qid = submit(d, ['user@two.test'], message(marker('all421')))
        expect_event(t, d, qid, 'user@two.test', 'deferred', relay='mx2.two.test',
                     reply='421 4.7.0 mx2 busy too')
        check_deferred(d, qid, 'user@two.test', reply='421 4.7.0 mx2 busy too', min_wait=50)
        if mx1.connections() != 1 or mx2.connections() != 1:
            fail(f'connections: mx1 {mx1.connections()}, mx2 {mx2.connections()}, want 1 each')
        no_dsn(d)


# ---- scripted replies at RCPT and after DATA ---------------------------------------------------

RCPT_REPLIES = {
    'r450': '450 4.2.1 Mailbox busy, try again later',
    'r451': '451 4.3.0 Local error in processing',
    'r452': '452 4.2.2 Mailbox full',
    'r501': '501 5.1.3 Bad recipient address syntax',
    'r550': '550 5.1.1 No such user here',
    'r552': '552 5.2.2 Mailbox over quota',
    'r554': '554 5.7.1 Recipient rejected for policy reasons',
    # a multi-line reply is kept with its lines joined by "; "
    'r553': ('553-5.1.3 first line\\n553 5.1.3 second line',
             '553 5.1.3 first line; second line'),
    # a reply longer than a header line: folded in the DSN, the same once unfolded
    'r550long': '550 5.7.1 ' + ' '.join(['Recipient refused by the local policy'] * 5),
}


def scripted(v):
    return v[0] if isinstance(v, tuple) else v


def expected(v):
    return v[1] if isinstance(v, tuple) else v
CODES = [('codes.test', 'MX', '10 mx.codes.test'), ('mx.codes.test', 'A', '127.0.0.2')]


def test_relay_remote_rcpt_replies(t):
    """One message, one server answering each RCPT differently: 4xx deferred with the reply
    (next attempt in the future), 5xx failed, 250 delivered; one DSN with the 5xx ones."""
    port = pick_port(['127.0.0.2'])
    script = [f'rcpt:{k}@codes.test={scripted(v)}' for k, v in RCPT_REPLIES.items()]
    with Peers(t) as p:
        srv = p.smtp('127.0.0.2', port, script)
        d = relay_ternd(t, CODES, port, {'min_backoff': '60', 'max_backoff': '60'})
        rcpts = [f'{k}@codes.test' for k in RCPT_REPLIES] + ['ok@codes.test']
        qid = submit(d, rcpts, message(marker('rcpt')))
        expect_event(t, d, qid, 'ok@codes.test', 'delivered', relay='mx.codes.test',
                     reply='250 2.0.0 Ok: queued')
        replies = {k: expected(v) for k, v in RCPT_REPLIES.items()}
        for k, reply in replies.items():
            a = f'{k}@codes.test'
            ev = 'deferred' if reply[0] == '4' else 'failed'
            expect_event(t, d, qid, a, ev, reply=reply, relay='mx.codes.test')
        for k, reply in replies.items():
            a = f'{k}@codes.test'
            if reply[0] == '4':
                check_deferred(d, qid, a, reply=reply, min_wait=50)
            else:
                check_failed(d, qid, a, reply)
        if rcpt_state(d, qid, 'ok@codes.test')['state'] != 'delivered':
            fail(f'ok@codes.test: {rcpt_state(d, qid, "ok@codes.test")!r}, want delivered')
        if srv.stored() != {'ok@codes.test': 1}:
            fail(f'the server stored {srv.stored()}, want one copy for ok@codes.test only')
        (dsn,) = wait_dsns(t, d, 1)
        failed = {k: v for k, v in replies.items() if v[0] == '5'}
        dsn.check(qid, n=len(failed))
        for k, reply in failed.items():
            dsn.check_rcpt(f'{k}@codes.test', reply, 'mx.codes.test')
        if 'message/rfc822' not in dsn.parts or 'body of' not in dsn.parts['message/rfc822']:
            fail(f'the DSN does not return the message (parts {list(dsn.parts)})')


# Stage scripts, one domain (and server, on its own address) each:
# (domain, script, event, reply of the outcome or None for "the script's reply")
STAGE_CASES = [
    ('mail4.test', ['mail=451 4.7.1 Sender greylisted, come back later'], 'deferred', None),
    ('mail5.test', ['mail=553 5.7.1 Sender address rejected'], 'failed', None),
    ('data4.test', ['data=451 4.3.2 Not accepting messages now'], 'deferred', None),
    ('data5.test', ['data=554 5.5.1 No valid recipients'], 'failed', None),
    ('dot451.test', ['dot=451 4.3.0 Queue file write error'], 'deferred', None),
    ('dot452.test', ['dot=452 4.3.1 Insufficient system storage'], 'deferred', None),
    ('dot552.test', ['dot=552 5.3.4 Message size exceeds fixed limit'], 'failed', None),
    ('dot554.test', ['dot=554 5.6.0 Message content rejected'], 'failed', None),
]


def test_relay_remote_stage_replies(t):
    """4xx / 5xx to MAIL, DATA and the final dot decide every recipient of the transaction;
    one message to all the domains gets one DSN listing every failed recipient."""
    hosts = [f'127.0.0.{10 + i}' for i in range(len(STAGE_CASES))]
    port = pick_port(hosts)
    records = []
    for (dom, _s, _e, _r), h in zip(STAGE_CASES, hosts):
        records += [(dom, 'MX', f'10 mx.{dom}'), (f'mx.{dom}', 'A', h)]
    with Peers(t) as p:
        srvs = [p.smtp(h, port, case[1]) for case, h in zip(STAGE_CASES, hosts)]
        d = relay_ternd(t, records, port, {'min_backoff': '60', 'max_backoff': '60'})
        rcpts = [f'{x}@{c[0]}' for c in STAGE_CASES for x in ('a', 'b')]
        qid = submit(d, rcpts, message(marker('stage')))
        failed = []
        for dom, script, ev, reply in STAGE_CASES:
            reply = reply or script[0].split('=', 1)[1]
            for x in ('a', 'b'):
                a = f'{x}@{dom}'
                expect_event(t, d, qid, a, ev, reply=reply, relay=f'mx.{dom}')
                if ev == 'deferred':
                    check_deferred(d, qid, a, reply=reply, min_wait=50)
                else:
                    check_failed(d, qid, a, reply)
                    failed.append((a, reply, f'mx.{dom}'))
        for s in srvs:
            if s.stored():
                fail(f'{s.host} stored {s.stored()} although it refused the message')
        (dsn,) = wait_dsns(t, d, 1)
        dsn.check(qid, n=len(failed))
        for a, reply, mta in failed:
            dsn.check_rcpt(a, reply, mta)


# ---- broken connections and malformed replies ---------------------------------------------------

BROKEN = [
    # (domain, script, idle, kind): kind 'connect' = R_DLV_CONNECT_FAILED, 'protocol' = ..._PROTOCOL
    ('refused.test', None, 0, 'connect'),                      # nothing listens
    ('dropgreet.test', ['drop=greeting'], 60, 'connect'),      # accepted, closed at once
    ('dropehlo.test', ['drop=ehlo'], 60, 'protocol'),
    ('droprcpt.test', ['drop=rcpt'], 60, 'protocol'),
    ('dropdot.test', ['drop=dot'], 60, 'protocol'),
    ('garbled.test', ['malformed=rcpt'], 60, 'protocol'),      # "25O 2.0.0 Ok"
    ('short.test', ['greeting=22'], 60, 'protocol'),            # a short line
    ('nospace.test', ['rcpt:u@nospace.test=2502.1.5 Ok'], 60, 'protocol'),
    ('codechange.test', ['rcpt:u@codechange.test=250-2.1.5 Ok\\n550 5.1.1 No'], 60, 'protocol'),
    ('longline.test', ['rcpt:u@longline.test=250 2.1.5 ' + 'x' * 5000], 60, 'protocol'),
    ('stall.test', ['stall=rcpt'], None, 'protocol'),          # stalls a while, then closes
]


def test_relay_remote_broken_peers(t):  # covers: R_DLV_CONNECT_FAILED, R_DLV_REMOTE_PROTOCOL
    """Refused and dropped connections, malformed replies, a stall ended by a close: each
    recipient is deferred (never failed, no DSN) with the right reply and a later retry."""
    hosts = [f'127.0.0.{30 + i}' for i in range(len(BROKEN))]
    port = pick_port(hosts)
    records = []
    for (dom, _s, _i, _k), h in zip(BROKEN, hosts):
        records += [(dom, 'MX', f'10 mx.{dom}'), (f'mx.{dom}', 'A', h)]
    with Peers(t) as p:
        srvs = {}
        for (dom, script, idle, _k), h in zip(BROKEN, hosts):
            if script is not None:
                # the stalling server's --idle is how long it stalls (and waits for ternd)
                srvs[dom] = p.smtp(h, port, script, idle=idle or (8 if slow(t) else 4))
        d = relay_ternd(t, records, port, {'min_backoff': '60', 'max_backoff': '60'})
        qids = {dom: submit(d, [f'u@{dom}'], message(marker(dom.split('.')[0])))
                for dom, *_ in BROKEN}
        for (dom, script, _i, kind), h in zip(BROKEN, hosts):
            a, qid = f'u@{dom}', qids[dom]
            desc = f'mx.{dom}[{h}]:{port}'
            if kind == 'connect':
                prefix = f'451 4.4.1 Connection to {desc} failed: '
                relay = dom   # no server spoke: no remote MTA to name
            else:
                prefix = f'451 4.5.0 Protocol error with {desc}: '
                relay = f'mx.{dom}'
            e = expect_event(t, d, qid, a, 'deferred', prefix=prefix, relay=relay)
            check_deferred(d, qid, a, reply=e['reply'], min_wait=50)
            if dom == 'refused.test' and e['reply'] != prefix + 'Connection refused':
                fail(f'{a}: reply {e["reply"]!r}, want {prefix + "Connection refused"!r}')
            if script is not None and srvs[dom].connections() < 1:
                fail(f'{dom}: the server saw no connection')
            if script is not None and srvs[dom].stored():
                fail(f'{dom}: the server stored {srvs[dom].stored()}')
        for dom, qid in qids.items():
            no_event(d, qid, f'u@{dom}', 'failed')
        no_dsn(d, settle=0.2)


# ---- DNS outcomes ------------------------------------------------------------------------------

def test_relay_remote_dns_outcomes(t):  # covers: R_DLV_NULL_MX, R_DLV_NO_DOMAIN, R_DLV_DNS_TEMP
    """Null MX -> 556 5.1.10, NXDOMAIN -> 550 5.1.2 (failed, one DSN for both, no Remote-MTA);
    SERVFAIL -> deferred 451 4.4.3; no MX but an A record -> delivered to it (implicit MX);
    user@[127.0.0.2] -> delivered to 127.0.0.2:remote_port."""
    port = pick_port(['127.0.0.2'])
    with StubServer('servfail') as stub, Peers(t) as p:
        srv = p.smtp('127.0.0.2', port)
        d = relay_ternd(t, [('nullmx.test', 'MX', '0 .'),
                            ('implicit.test', 'A', '127.0.0.2')], port,
                        {'min_backoff': '60', 'max_backoff': '60'},
                        servfail=['sf.test'], stub=stub)
        rcpts = ['u@nullmx.test', 'u@nx.test', 'u@sf.test', 'u@implicit.test', 'u@[127.0.0.2]']
        qid = submit(d, rcpts, message(marker('dns')))
        null = '556 5.1.10 Domain nullmx.test does not accept mail (null MX, RFC 7505)'
        nx = '550 5.1.2 Domain nx.test does not exist (no MX or address records)'
        expect_event(t, d, qid, 'u@nullmx.test', 'failed', reply=null, relay='nullmx.test')
        expect_event(t, d, qid, 'u@nx.test', 'failed', reply=nx, relay='nx.test')
        e = expect_event(t, d, qid, 'u@sf.test', 'deferred',
                         prefix='451 4.4.3 DNS lookup for sf.test failed: ', relay='sf.test')
        check_deferred(d, qid, 'u@sf.test', reply=e['reply'], min_wait=50)
        if stub.queries < 1:
            fail('the SERVFAIL stub got no query: the deferral did not come from DNS')
        expect_event(t, d, qid, 'u@implicit.test', 'delivered', relay='implicit.test',
                     reply='250 2.0.0 Ok: queued')
        expect_event(t, d, qid, 'u@[127.0.0.2]', 'delivered', relay='[127.0.0.2]',
                     reply='250 2.0.0 Ok: queued')
        check_failed(d, qid, 'u@nullmx.test', null)
        check_failed(d, qid, 'u@nx.test', nx)
        if srv.stored() != {'u@implicit.test': 1, 'u@[127.0.0.2]': 1}:
            fail(f'the server stored {srv.stored()}, want one copy for u@implicit.test and '
                 f'u@[127.0.0.2]')
        (dsn,) = wait_dsns(t, d, 1)
        dsn.check(qid, n=2)
        dsn.check_rcpt('u@nullmx.test', null, None)
        dsn.check_rcpt('u@nx.test', nx, None)


# ---- expiry ------------------------------------------------------------------------------------

def test_relay_remote_expired(t):  # covers: R_DLV_EXPIRED, R_DLV_CONNECT_FAILED
    """max_queue_lifetime = 2: deferred (connection refused; 451 at RCPT) until then, then
    failed 554 5.4.7 with the last error, one DSN per message, and the queue empties."""
    port = pick_port(['127.0.0.2', '127.0.0.3'])
    busy = '451 4.7.1 Greylisted, try again later'
    with Peers(t) as p:
        srv = p.smtp('127.0.0.3', port, [f'rcpt:u@busy.test={busy}'])
        d = relay_ternd(t, [('gone.test', 'MX', '10 mx.gone.test'),
                            ('mx.gone.test', 'A', '127.0.0.2'),
                            ('busy.test', 'MX', '10 mx.busy.test'),
                            ('mx.busy.test', 'A', '127.0.0.3')], port,
                        {'max_queue_lifetime': '2', 'min_backoff': '1', 'max_backoff': '1'})
        q1 = submit(d, ['u@gone.test'], message(marker('gone')))
        q2 = submit(d, ['u@busy.test'], message(marker('busy')))
        refused = f'451 4.4.1 Connection to mx.gone.test[127.0.0.2]:{port} failed: ' \
                  f'Connection refused'
        expect_event(t, d, q1, 'u@gone.test', 'deferred', reply=refused, relay='gone.test')
        expect_event(t, d, q2, 'u@busy.test', 'deferred', reply=busy, relay='mx.busy.test')
        e1 = expect_event(t, d, q1, 'u@gone.test', 'expired',
                          prefix='554 5.4.7 Delivery time expired after ')
        e2 = expect_event(t, d, q2, 'u@busy.test', 'expired',
                          prefix='554 5.4.7 Delivery time expired after ', relay='mx.busy.test')
        if not e1['reply'].endswith('; last error: ' + refused):
            fail(f'expired reply {e1["reply"]!r} does not end with the last error {refused!r}')
        if not e2['reply'].endswith('; last error: ' + busy):
            fail(f'expired reply {e2["reply"]!r} does not end with the last error {busy!r}')
        for e in (e1, e2):
            if e['delay'] and int(e['delay']) < 2:
                fail(f'expired before max_queue_lifetime: {e!r}')
        queue_empty(t, d)
        dsns = wait_dsns(t, d, 2)
        d1, d2 = dsn_for(dsns, q1), dsn_for(dsns, q2)
        d1.check(q1, n=1)
        d1.check_rcpt('u@gone.test', e1['reply'], None)
        d2.check(q2, n=1)
        d2.check_rcpt('u@busy.test', e2['reply'], 'mx.busy.test')
        # retries a second apart may share one connection (it lingers for more mail)
        tries = srv.transcript().count('C: MAIL FROM:')
        if tries < 2:
            fail(f'mx.busy.test saw {tries} transaction(s): no retry before expiry')
        if len(events(d, q1, 'u@gone.test', 'expired')) != 1:
            fail('expired more than once')


# ---- null sender, DSN parameters ----------------------------------------------------------------

def test_relay_remote_null_sender_double_bounce(t):
    """MAIL FROM:<> failing: no DSN to the sender; ONE double bounce to postmaster@<first
    local domain> listing both failed recipients."""
    port = pick_port(['127.0.0.2'])
    with Peers(t) as p:
        p.smtp('127.0.0.2', port, ['rcpt:a@codes.test=550 5.1.1 No such user a',
                                   'rcpt:b@codes.test=553 5.1.3 Bad address b'])
        d = relay_ternd(t, CODES, port)
        qid = submit(d, ['a@codes.test', 'b@codes.test'], message(marker('null')), sender='')
        expect_event(t, d, qid, 'a@codes.test', 'failed', reply='550 5.1.1 No such user a')
        expect_event(t, d, qid, 'b@codes.test', 'failed', reply='553 5.1.3 Bad address b')
        (dsn,) = wait_dsns(t, d, 1, addr=POSTMASTER)
        dsn.check(qid, to=POSTMASTER, n=2)
        dsn.check_rcpt('a@codes.test', '550 5.1.1 No such user a', 'mx.codes.test')
        dsn.check_rcpt('b@codes.test', '553 5.1.3 Bad address b', 'mx.codes.test')
        queue_empty(t, d)
        bounces = [ln for ln in d.stderr().decode('utf-8', 'replace').splitlines()
                   if 'event=bounce ' in ln]
        if len(bounces) != 1 or f'to=<{POSTMASTER}>' not in bounces[0]:
            fail(f'want one bounce, to the postmaster; log: {bounces}')
        if new_files(d, SENDER):
            fail('a DSN reached sender@example.org, which did not send the message')


def test_relay_remote_double_bounce_not_returned(t):
    """A double bounce that itself fails (no postmaster in local_recipients) is dropped:
    it is logged, never bounced again."""
    port = pick_port(['127.0.0.2'])
    rfile = os.path.join(t.tmproot, 'recipients')
    with open(rfile, 'w') as f:
        f.write('sender@example.org\n')
    with Peers(t) as p:
        p.smtp('127.0.0.2', port, ['rcpt:a@codes.test=550 5.1.1 No such user a'])
        d = relay_ternd(t, CODES, port, {'local_recipients': f'file:{rfile}'})
        qid = submit(d, ['a@codes.test'], message(marker('dbl')), sender='')
        expect_event(t, d, qid, 'a@codes.test', 'failed', reply='550 5.1.1 No such user a')
        m = wait_until('the double bounce is queued', lambda: re.search(
            rf'{qid} event=bounce dsn=([0-9A-Z]{{16}}) to=<{POSTMASTER}>',
            d.stderr().decode('utf-8', 'replace')), timeout=wait_s(t))
        dsn_id = m.group(1)
        expect_event(t, d, dsn_id, POSTMASTER, 'failed', prefix='550 5.1.1 ')
        wait_until('the dropped double bounce is logged',
                   lambda: 'event=bounce-dropped' in d.stderr().decode('utf-8', 'replace'),
                   timeout=wait_s(t))
        queue_empty(t, d)
        log = d.stderr().decode('utf-8', 'replace')
        if log.count('event=bounce ') != 1:
            fail(f'want exactly one bounce queued, log:\n{log[-1500:]}')


def test_relay_remote_dsn_notify(t):
    """NOTIFY=NEVER and NOTIFY=DELAY: no DSN on failure; NOTIFY=SUCCESS,FAILURE with ORCPT:
    the DSN lists that recipient only, with Original-Recipient; ENVID and RET=HDRS honoured."""
    port = pick_port(['127.0.0.2'])
    rej = {x: f'550 5.1.1 No such user {x}' for x in 'abcd'}
    with Peers(t) as p:
        p.smtp('127.0.0.2', port, [f'rcpt:{x}@codes.test={r}' for x, r in rej.items()])
        d = relay_ternd(t, CODES, port)
        tag1 = marker('never')
        q1 = submit(d, [('a@codes.test', ' NOTIFY=NEVER')], message(tag1))
        expect_event(t, d, q1, 'a@codes.test', 'failed', reply=rej['a'])
        tag2 = marker('orcpt')
        q2 = submit(d, [('b@codes.test', ' NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bb@x.test'),
                        ('c@codes.test', ' NOTIFY=NEVER'),
                        ('d@codes.test', ' NOTIFY=DELAY')],
                    message(tag2), mail_params=' RET=HDRS ENVID=env+2Dtest')
        for x in 'bcd':
            expect_event(t, d, q2, f'{x}@codes.test', 'failed', reply=rej[x])
        (dsn,) = wait_dsns(t, d, 1)
        dsn.check(q2, n=1)
        if dsn.msg.get('Original-Envelope-Id') != 'env-test':
            fail(f'Original-Envelope-Id {dsn.msg.get("Original-Envelope-Id")!r}, want env-test')
        if 'text/rfc822-headers' not in dsn.parts or 'message/rfc822' in dsn.parts:
            fail(f'RET=HDRS: want the headers only, parts are {list(dsn.parts)}')
        if f'Subject: {tag2}' not in dsn.parts['text/rfc822-headers'] or \
                f'body of {tag2}' in dsn.text:
            fail('RET=HDRS: the DSN must hold the original headers and not its body')
        queue_empty(t, d)
        dsn.check_rcpt('b@codes.test', rej['b'], 'mx.codes.test', orcpt='rfc822;orig+b@x.test')
