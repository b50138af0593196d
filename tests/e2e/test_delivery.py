"""
test_delivery.py - ternd delivers what it queued: into Maildirs (mailbox_dir/DOMAIN/LOCAL)
or over LMTP (tests/e2e/lmtpserver.py on a unix socket or 127.0.0.1), with the recipient
table (local_recipients = file:PATH) and the mailbox size limit, and the operator's view
through the control socket (`tern queue`).

Every outcome is checked by its exact reply: from the SMTP dialogue (RCPT), from the log
line ternd writes for each attempt ("ID event=deferred to=<a> relay=... reply=\"...\""),
and from `tern queue --json` (last_reply).  Retries use min_backoff = 1, max_backoff = 2;
a test that must prove `tern queue flush` did the work sets both to 600 instead.  Every
file written lies under the test's temporary directory; lmtpserver.py processes are
started and stopped by PID.
"""

import errno
import json
import os
import re
import select
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

from harness import (SAN_PATTERNS, events, fail, free_port, marker,
                     stop_process, wait_event, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
LMTPSERVER = os.path.join(HERE, 'lmtpserver.py')
DLV_WAIT = 30.0    # seconds an outcome may take to show (ASan build, 2 busy cores)
TERN_TIMEOUT = 20  # seconds for one `tern queue` run

DLV_OK = '250 2.0.0 Delivered to the mailbox'
DLV_FULL = '452 4.2.2 Mailbox full (mailbox_size_limit); delivery will be retried'
# Remote mail goes to relay_host = 127.0.0.1:1, where nothing listens: deferred at once.
DLV_NO_REMOTE = '451 4.4.1 Connection to 127.0.0.1[127.0.0.1]:1 failed: Connection refused'
ID_RE = re.compile(r'^[0-9A-Z]{16}$')
RECEIVED_RE = re.compile(rb'Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*')


# ---- helpers ----------------------------------------------------------------------------------

def start(t, conf=None, **kw):
    """A ternd with a control socket in its temp dir and quick retries (conf may override)."""
    d = t.daemon(conf, **kw)
    d.overrides.setdefault('control_socket', os.path.join(d.tmpdir, 'ctl.sock'))
    d.overrides.setdefault('min_backoff', '1')
    d.overrides.setdefault('max_backoff', '2')
    d.overrides.setdefault('relay_host', '127.0.0.1:1')
    return d.start()


def tern(d, *args, sock=None):
    """Run `tern queue -s SOCK ARGS`; (exit status, stdout, stderr)."""
    path = os.path.join(os.path.dirname(d.path), 'tern')
    sock = sock or d.conf['control_socket']
    p = subprocess.run([path, 'queue', '-s', sock] + list(args), capture_output=True,
                       timeout=TERN_TIMEOUT, stdin=subprocess.DEVNULL)
    for pat in SAN_PATTERNS:
        if pat in p.stderr:
            fail(f'tern queue {args}: sanitizer finding:\n'
                 f'{p.stderr.decode("utf-8", "replace")[:1500]}')
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def tern_ok(d, *args):
    rc, out, err = tern(d, *args)
    if rc != 0:
        fail(f'tern queue {" ".join(args)}: exit {rc}, want 0; stdout {out!r} stderr {err!r}')
    return out


def queue_json(d):
    """`tern queue --json`, parsed and checked field by field."""
    out = tern_ok(d, 'list', '--json')
    try:
        msgs = json.loads(out)
    except ValueError as e:
        fail(f'tern queue --json is not valid JSON ({e}): {out[:500]!r}')
    if not isinstance(msgs, list):
        fail(f'tern queue --json: not a list: {out[:300]!r}')
    for m in msgs:
        want = {'id': str, 'arrival': int, 'size': int, 'sender': str, 'held': bool,
                'recipients': list}
        for k, ty in want.items():
            if not isinstance(m.get(k), ty):
                fail(f'tern queue --json: field {k!r} missing or not {ty.__name__}: {m!r}')
        if not ID_RE.match(m['id']):
            fail(f'tern queue --json: bad id {m["id"]!r}')
        for r in m['recipients']:
            if not isinstance(r.get('addr'), str) or \
                    r.get('state') not in ('pending', 'deferred', 'delivered', 'failed') or \
                    not isinstance(r.get('attempts'), int) or \
                    not isinstance(r.get('next_attempt'), int) or \
                    not (r.get('last_reply') is None or isinstance(r.get('last_reply'), str)):
                fail(f'tern queue --json: malformed recipient {r!r} in {m["id"]}')
    return msgs


def queue_msg(d, qid):
    for m in queue_json(d):
        if m['id'] == qid:
            return m
    return None


def queue_rcpt(d, qid, addr):
    m = queue_msg(d, qid)
    if m is None:
        fail(f'{qid} is not in tern queue --json')
    for r in m['recipients']:
        if r['addr'] == addr:
            return m, r
    fail(f'{qid} has no recipient {addr} in tern queue --json: {m!r}')


def queue_count(d):
    out = tern_ok(d, 'count')
    if not re.fullmatch(r'\d+\n', out):
        fail(f'tern queue count printed {out!r}, want a number and a newline')
    return int(out)


def check_event(e, event, reply, relay=None):
    if e['event'] != event or e['reply'] != reply or (relay and e['relay'] != relay):
        fail(f'log line {e!r}: want event={event} reply="{reply}"'
             f'{" relay=" + relay if relay else ""}')


def dotstuff(body):
    return b''.join(b'.' + ln if ln.startswith(b'.') else ln
                    for ln in body.splitlines(keepends=True))


def send(d, rcpts, body, sender='sender@client.example', mail_params=''):
    """One message over a raw connection (every RCPT must be accepted); its queue ID."""
    if isinstance(body, str):
        body = body.encode('utf-8')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd(f'MAIL FROM:<{sender}>{mail_params}', 250, '2.1.0')
        for r in rcpts:
            c.cmd(f'RCPT TO:<{r}>', 250, '2.1.5')
        c.cmd('DATA', 354, None)
        c.send(dotstuff(body) + b'.\r\n')
        r = c.expect(250, '2.0.0', 'queued as', timeout=15)
        c.cmd('QUIT', 221, '2.0.0')
    m = re.search(r'queued as ([0-9A-Z]{16})', r.text)
    if not m:
        fail(f'no queue ID in {r!r}')
    return m.group(1)


def rcpt_reply(d, addr):
    """The reply to RCPT TO:<addr> in a fresh transaction (then RSET and QUIT)."""
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<sender@client.example>', 250, '2.1.0')
        r = c.cmd(f'RCPT TO:<{addr}>')
        c.cmd('RSET', 250, '2.0.0')
        c.cmd('QUIT', 221, '2.0.0')
    return r


def check_rcpt(d, addr, code, esc, text=None):
    r = rcpt_reply(d, addr)
    if r.code != code or r.esc != esc or (text is not None and r.text != text):
        fail(f'RCPT TO:<{addr}>: got {r!r}, want {code} {esc} {text or ""}')


def mbox(d, addr):
    local, dom = addr.rsplit('@', 1)
    return os.path.join(d.mailbox_dir, dom.lower(), local.lower())


def new_files(d, addr):
    p = os.path.join(mbox(d, addr), 'new')
    if not os.path.isdir(p):
        return []
    return sorted(os.path.join(p, f) for f in os.listdir(p) if not f.startswith('.'))


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def check_maildir_file(path, sender, addr, body):
    """Return-Path and Delivered-To, then ternd's Received:, then the body exactly; S= right."""
    data = read(path)
    head = f'Return-Path: <{sender}>\r\nDelivered-To: {addr}\r\n'.encode()
    if not data.startswith(head):
        fail(f'{path} does not start with {head!r}: {data[:200]!r}')
    if not data.endswith(body):
        fail(f'{path} does not end with the body sent {body[-200:]!r}: {data[-300:]!r}')
    middle = data[len(head):len(data) - len(body)]
    if not RECEIVED_RE.fullmatch(middle):
        fail(f'{path}: between Delivered-To and the body there is more than one Received: '
             f'header: {middle!r}')
    m = re.search(r',S=(\d+)', os.path.basename(path))
    if m and int(m.group(1)) != len(data):
        fail(f'{path}: the name says S={m.group(1)} but the file has {len(data)} octets')


def tmp_empty(d, addr):
    p = os.path.join(mbox(d, addr), 'tmp')
    left = os.listdir(p) if os.path.isdir(p) else []
    if left:
        fail(f'files left in {p}: {left}')


def make_maildir(d, addr):
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(mbox(d, addr), sub), exist_ok=True)


def write_recipients(t, name, lines):
    path = os.path.join(t.tmproot, name)
    with open(path, 'w') as f:
        f.write('# generated by tests/e2e/test_delivery.py\n')
        for ln in lines:
            f.write(ln + '\n')
    return path


def stop_clean(d):
    problems = d.stop()
    if problems:
        fail(f'stopping ternd: {problems}')


class Lmtp:
    """tests/e2e/lmtpserver.py in a subprocess, on a unix socket (unix=PATH) or 127.0.0.1."""

    def __init__(self, t, unix=None, port=0, script=()):
        self.dir = tempfile.mkdtemp(prefix='lmtp-', dir=t.tmproot)
        self.maildir = os.path.join(self.dir, 'md')
        cmd = [sys.executable, LMTPSERVER, '--maildir', self.maildir, '--idle', '60']
        cmd += ['--unix', unix] if unix else ['--port', str(port)]
        for s in script:
            cmd += ['--script', s]
        self.unix = unix
        self.errf = open(os.path.join(self.dir, 'stderr.log'), 'wb')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf, bufsize=0)  # unbuffered: select() sees all
        line = b''
        deadline = time.monotonic() + 10
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not r:
                self.stop()
                fail('lmtpserver.py did not print "ready" within 10 s')
            ch = self.proc.stdout.read(1)
            if not ch:
                self.stop()
                fail(f'lmtpserver.py exited at start: {read(self.errf.name)[-500:]!r}')
            line += ch
        m = re.fullmatch(rb'ready (\d+)\n', line)
        if not m:
            self.stop()
            fail(f'lmtpserver.py printed {line!r}, want "ready PORT"')
        self.port = int(m.group(1))

    def files(self, addr):
        p = os.path.join(self.maildir, addr)
        return sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else []

    def transcript(self):
        try:
            return read(os.path.join(self.maildir, 'transcript.txt')).decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self):
        stop_process(self.proc, self.proc.stdout, self.errf)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


# ---- Maildir ----------------------------------------------------------------------------------

def test_maildir_two_recipients(t):  # covers: R_DLV_OK
    d = start(t)
    mk = marker('two')
    sender = 'sender@client.example'
    body = (f'From: <{sender}>\r\nTo: alice@example.org, bob@example.org\r\n'
            f'Subject: two {mk}\r\n\r\nhello {mk}\r\nsecond line\r\n').encode()
    with smtplib.SMTP('127.0.0.1', d.port, timeout=10) as s:
        s.ehlo('client.test')
        for cmd, arg, want in (('mail', sender, b'2.1.0'), ('rcpt', 'alice@example.org', b'2.1.5'),
                               ('rcpt', 'bob@example.org', b'2.1.5')):
            code, resp = getattr(s, cmd)(arg)
            if code != 250 or not resp.startswith(want):
                fail(f'{cmd} {arg}: {code} {resp!r}')
        code, resp = s.data(body)
    m = re.match(rb'2\.0\.0 Ok: queued as ([0-9A-Z]{16})$', resp)
    if code != 250 or not m:
        fail(f'DATA: {code} {resp!r}')
    qid = m.group(1).decode()
    for addr in ('alice@example.org', 'bob@example.org'):
        check_event(wait_event(d, qid, addr, 'delivered'), 'delivered', DLV_OK, 'maildir')
        files = new_files(d, addr)
        if len(files) != 1:
            fail(f'{addr}: {len(files)} files in new/, want 1: {files}')
        check_maildir_file(files[0], sender, addr, body)
        tmp_empty(d, addr)
    wait_until('the queue is empty after delivery (tern queue count = 0)',
               lambda: queue_count(d) == 0)
    if queue_json(d) != []:
        fail(f'tern queue --json is not [] after delivery: {queue_json(d)!r}')
    out = tern_ok(d, 'list')
    if out != 'Mail queue is empty\n':
        fail(f'tern queue list after delivery: {out!r}')
    if len(events(d, qid)) != 2:
        fail(f'want exactly 2 delivery log lines for {qid}: {events(d, qid)!r}')


def test_maildir_dots_and_8bit_intact(t):  # covers: R_DLV_OK
    d = start(t)
    mk = marker('dots')
    body = (b'Subject: dots and 8 bits\r\nContent-Type: text/plain; charset=utf-8\r\n'
            b'Content-Transfer-Encoding: 8bit\r\n\r\n'
            b'.\r\n..\r\n.leading dot\r\n..two dots\r\n...\r\n . not at the start\r\n'
            b'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\r\nlatin-1 \xe9\xff\x80\x00 nul\r\n'
            b'\r\n.\r\n' + f'end {mk}\r\n'.encode())
    qid = send(d, ['dots@example.org'], body, mail_params=' BODY=8BITMIME')
    check_event(wait_event(d, qid, 'dots@example.org', 'delivered'), 'delivered', DLV_OK)
    files = new_files(d, 'dots@example.org')
    if len(files) != 1:
        fail(f'{len(files)} files in new/, want 1')
    check_maildir_file(files[0], 'sender@client.example', 'dots@example.org', body)


def test_maildir_200_messages_10_clients_exactly_once(t):  # covers: R_DLV_OK
    d = start(t)
    nclients, nmsgs = 10, 20
    users = [f'load{i}@example.org' for i in range(5)]
    base = marker('load')
    errors = []

    def client(k):
        try:
            with smtplib.SMTP('127.0.0.1', d.port, timeout=30) as s:
                s.ehlo('client.test')
                for j in range(nmsgs):
                    s.mail('sender@client.example')
                    s.rcpt(users[(k + j) % len(users)])
                    code, resp = s.data(f'Subject: {base}\r\n\r\n<{base}-{k}-{j}>\r\n'.encode())
                    if code != 250 or not resp.startswith(b'2.0.0 Ok: queued as'):
                        errors.append(f'client {k} message {j}: {code} {resp!r}')
        except Exception as e:
            errors.append(f'client {k}: {e!r}')

    th = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(nclients)]
    for x in th:
        x.start()
    for x in th:
        x.join(60)
    if any(x.is_alive() for x in th):
        fail('clients still sending after 60 s')
    if errors:
        fail(f'{len(errors)} client errors, e.g. {errors[:3]}')
    total = nclients * nmsgs

    def all_files():
        return [p for u in users for p in new_files(d, u)]
    wait_until(f'{total} files in the new/ dirs', lambda: len(all_files()) >= total, timeout=60)
    wait_until('the queue is empty', lambda: queue_count(d) == 0)
    files = all_files()
    if len(files) != total:
        fail(f'{len(files)} files delivered, want {total} (duplicates?)')
    seen = {}
    for p in files:
        for m in re.findall(rb'<(' + re.escape(base.encode()) + rb'-\d+-\d+)>', read(p)):
            seen[m] = seen.get(m, 0) + 1
    want = {f'{base}-{k}-{j}'.encode() for k in range(nclients) for j in range(nmsgs)}
    missing = sorted(want - set(seen))
    twice = sorted(m for m, n in seen.items() if n != 1)
    if missing or twice or set(seen) != want:
        fail(f'{len(missing)} messages missing (e.g. {missing[:3]}), {len(twice)} not exactly '
             f'once (e.g. {twice[:3]})')
    for u in users:
        tmp_empty(d, u)
    if len(events(d, event='delivered')) != total:
        fail(f'{len(events(d, event="delivered"))} "event=delivered" log lines, want {total}')


# ---- the recipient table ----------------------------------------------------------------------

RECIPIENTS = [
    'alice@example.org',
    'bob@example.org',
    'catch@example.org',
    'carol@example.org',
    'postmaster@example.org: alice@example.org',
    'team@example.org: alice@example.org, bob@example.org',
    'postmaster@example.net: alice@example.org',
    '@example.net: catch@example.org',
]


def test_recipients_file(t):  # covers: R_NO_SUCH_USER, R_RCPT_OK, R_DLV_OK
    path = write_recipients(t, 'recipients', RECIPIENTS)
    d = start(t, {'local_recipients': f'file:{path}', 'local_domains': 'example.org, example.net'})
    check_rcpt(d, 'alice@example.org', 250, '2.1.5')
    check_rcpt(d, 'ALICE@Example.ORG', 250, '2.1.5')
    check_rcpt(d, 'team@example.org', 250, '2.1.5')
    check_rcpt(d, 'anyone@example.net', 250, '2.1.5')
    check_rcpt(d, 'nobody@example.org', 550, '5.1.1',
               '<nobody@example.org>: Recipient address rejected: no such user here')
    check_rcpt(d, 'alice2@example.org', 550, '5.1.1',
               '<alice2@example.org>: Recipient address rejected: no such user here')

    # smtplib: one known and one unknown recipient; the known one gets the message
    mk = marker('known')
    with smtplib.SMTP('127.0.0.1', d.port, timeout=10) as s:
        refused = s.sendmail('sender@client.example', ['bob@example.org', 'nobody@example.org'],
                             f'Subject: {mk}\r\n\r\n{mk}\r\n')
    if list(refused) != ['nobody@example.org'] or refused['nobody@example.org'][0] != 550 or \
            not refused['nobody@example.org'][1].startswith(b'5.1.1 '):
        fail(f'smtplib: refused {refused!r}, want only nobody@example.org with 550 5.1.1')

    alias_mk, catch_mk = marker('alias'), marker('catch')
    q_alias = send(d, ['team@example.org'], f'Subject: a\r\n\r\n{alias_mk}\r\n')
    q_catch = send(d, ['anyone@example.net'], f'Subject: c\r\n\r\n{catch_mk}\r\n')
    check_event(wait_event(d, q_alias, 'team@example.org', 'delivered'), 'delivered', DLV_OK)
    check_event(wait_event(d, q_catch, 'anyone@example.net', 'delivered'), 'delivered', DLV_OK)
    wait_until('the queue is empty', lambda: queue_count(d) == 0)

    def holding(addr, mk):
        return [p for p in new_files(d, addr) if mk.encode() in read(p)]
    for addr in ('alice@example.org', 'bob@example.org'):
        got = holding(addr, alias_mk)
        if len(got) != 1:
            fail(f'the alias team@ delivered {len(got)} copies to {addr}, want 1')
        check_maildir_file(got[0], 'sender@client.example', addr,
                           f'Subject: a\r\n\r\n{alias_mk}\r\n'.encode())
    if len(holding('bob@example.org', mk)) != 1:
        fail('bob@ did not get the message sent to bob@ and nobody@')
    if len(holding('catch@example.org', catch_mk)) != 1:
        fail('the catch-all @example.net did not deliver to catch@example.org')
    for addr in ('alice@example.org', 'bob@example.org', 'catch@example.org'):
        if holding(addr, catch_mk if addr != 'catch@example.org' else alias_mk):
            fail(f'{addr} got a message that was not for it')
    for ghost in ('team@example.org', 'anyone@example.net', 'nobody@example.org'):
        if os.path.exists(mbox(d, ghost)):
            fail(f'a mailbox was created for {ghost}: {mbox(d, ghost)}')


def test_recipient_removed_before_delivery(t):  # covers: R_DLV_NO_SUCH_USER, R_DLV_MAILDIR_ERROR
    """carol@ is accepted, her delivery is deferred (a file stands where her Maildir goes) and
    the message held; ternd restarts with a table without carol; RELEASE: 550 5.1.1."""
    path1 = write_recipients(t, 'recipients1', RECIPIENTS)
    conf = {'local_recipients': f'file:{path1}', 'local_domains': 'example.org, example.net'}
    d = start(t, conf)
    os.makedirs(os.path.dirname(mbox(d, 'carol@example.org')), exist_ok=True)
    with open(mbox(d, 'carol@example.org'), 'w') as f:
        f.write('not a Maildir\n')
    mk = marker('carol')
    qid = send(d, ['carol@example.org'], f'Subject: c\r\n\r\n{mk}\r\n')
    e = wait_event(d, qid, 'carol@example.org', 'deferred')
    if not e['reply'].startswith('451 4.3.0 Cannot write to the mailbox: '):
        fail(f'a file in place of the Maildir: {e!r}, want 451 4.3.0 Cannot write ...')
    if tern_ok(d, 'hold', qid) != f'{qid}: held\n':
        fail('tern queue hold did not say held')
    if not queue_msg(d, qid)['held']:
        fail(f'{qid} not held in tern queue --json after hold')
    stop_clean(d)

    path2 = write_recipients(t, 'recipients2',
                             [r for r in RECIPIENTS if not r.startswith('carol@')])
    os.unlink(mbox(d, 'carol@example.org'))
    conf2 = dict(conf, local_recipients=f'file:{path2}', spool_dir=d.spool_dir,
                 mailbox_dir=d.mailbox_dir)
    d2 = start(t, conf2)
    m, r = queue_rcpt(d2, qid, 'carol@example.org')
    if not m['held'] or r['state'] != 'deferred' or \
            not (r['last_reply'] or '').startswith('451 4.3.0 '):
        fail(f'after the restart {qid} is not held and deferred with 451 4.3.0: {m!r}')
    check_rcpt(d2, 'carol@example.org', 550, '5.1.1',
               '<carol@example.org>: Recipient address rejected: no such user here')
    if tern_ok(d2, 'release', qid) != f'{qid}: released\n':
        fail('tern queue release did not say released')
    e = wait_event(d2, qid, 'carol@example.org', 'failed')
    check_event(e, 'failed', '550 5.1.1 <carol@example.org>: no such user here')
    if e['attempts'] != 2:
        fail(f'the failed attempt is number {e["attempts"]}, want 2: {e!r}')
    # (its DSN to the remote sender stays queued: relay_host refuses)
    wait_until('the failed message leaves the queue', lambda: queue_msg(d2, qid) is None)
    if new_files(d2, 'carol@example.org'):
        fail('a message was delivered to carol@ although she was removed')


# ---- the mailbox size limit -------------------------------------------------------------------

def test_mailbox_message_too_big(t):  # covers: R_DLV_TOO_BIG, R_DLV_OK, R_MAILBOX_TOO_SMALL_RCPT
    d = start(t, {'mailbox_size_limit': '2000'})
    with d.connect() as c:  # a declared SIZE over the limit is refused at RCPT
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<sender@client.example> SIZE=3000', 250, '2.1.0')
        c.cmd('RCPT TO:<user@example.org>', 552, '5.2.2',
              '<user@example.org>: Message size exceeds the mailbox size limit of this recipient')
        c.cmd('RCPT TO:<far@remote.example>', 250, '2.1.5')  # no limit for a remote one
        c.cmd('RSET', 250, '2.0.0')
        c.cmd('MAIL FROM:<sender@client.example> SIZE=1000', 250, '2.1.0')
        c.cmd('RCPT TO:<user@example.org>', 250, '2.1.5')
        c.cmd('QUIT', 221, '2.0.0')
    # without SIZE=, the limit is found at delivery: a permanent failure
    big = send(d, ['user@example.org'], 'Subject: big\r\n\r\n' + ('x' * 70 + '\r\n') * 40)
    e = wait_event(d, big, 'user@example.org', 'failed')
    check_event(e, 'failed', '552 5.2.2 Message larger than the mailbox size limit of 2000 octets')
    small = send(d, ['user@example.org'], 'Subject: small\r\n\r\nsmall\r\n')
    check_event(wait_event(d, small, 'user@example.org', 'delivered'), 'delivered', DLV_OK)
    files = new_files(d, 'user@example.org')
    if len(files) != 1 or b'Subject: small' not in read(files[0]):
        fail(f'want only the small message in new/: {files}')
    wait_until('both messages leave the queue (the DSN to the remote sender may stay)',
               lambda: queue_msg(d, big) is None and queue_msg(d, small) is None)
    if len(events(d, big)) != 1:
        fail(f'a message bigger than the limit was tried more than once: {events(d, big)!r}')


def test_mailbox_full(t):  # covers: R_DLV_MAILBOX_FULL, R_MAILBOX_FULL_RCPT, R_DLV_OK
    """Deliveries fill user@: the next one is deferred; full@ is over the limit already (a
    file put there by hand), so once a delivery has seen it, RCPT gets 452 4.2.2.  Deleting
    mail and `tern queue flush` (retries are 600 s away) delivers both."""
    limit = 6000
    d = start(t, {'mailbox_size_limit': str(limit), 'min_backoff': '600', 'max_backoff': '600'})
    q1 = send(d, ['user@example.org'], 'Subject: one\r\n\r\n' + ('1' * 70 + '\r\n') * 35)
    check_event(wait_event(d, q1, 'user@example.org', 'delivered'), 'delivered', DLV_OK)
    q2 = send(d, ['user@example.org'], 'Subject: two\r\n\r\n' + ('2' * 70 + '\r\n') * 50)
    check_event(wait_event(d, q2, 'user@example.org', 'deferred'), 'deferred', DLV_FULL)
    _m, r = queue_rcpt(d, q2, 'user@example.org')
    if r['state'] != 'deferred' or r['last_reply'] != DLV_FULL:
        fail(f'tern queue --json for {q2}: {r!r}, want deferred with "{DLV_FULL}"')
    # user@ holds less than the limit: RCPT still accepts (the next message may fit)
    check_rcpt(d, 'user@example.org', 250, '2.1.5')

    make_maildir(d, 'full@example.org')
    with open(os.path.join(mbox(d, 'full@example.org'), 'new', 'old.mail'), 'wb') as f:
        f.write(b'Subject: old\r\n\r\n' + b'o' * (limit + 500))
    check_rcpt(d, 'full@example.org', 250, '2.1.5')  # no delivery has looked at it yet
    q3 = send(d, ['full@example.org'], 'Subject: three\r\n\r\nthree\r\n')
    check_event(wait_event(d, q3, 'full@example.org', 'deferred'), 'deferred', DLV_FULL)
    check_rcpt(d, 'full@example.org', 452, '4.2.2',
               '<full@example.org>: Mailbox full; try again later')
    if queue_count(d) != 2:
        fail(f'tern queue count = {queue_count(d)}, want 2 deferred messages')

    for addr in ('user@example.org', 'full@example.org'):
        for p in new_files(d, addr):
            os.unlink(p)
    if tern_ok(d, 'flush') != '':
        fail('tern queue flush (all) printed something')
    for q, addr in ((q2, 'user@example.org'), (q3, 'full@example.org')):
        e = wait_event(d, q, addr, 'delivered', timeout=10)
        check_event(e, 'delivered', DLV_OK)
    wait_until('the queue is empty', lambda: queue_count(d) == 0)


# ---- Maildir errors and remote recipients -----------------------------------------------------

def test_maildir_error_then_flush(t):  # covers: R_DLV_MAILDIR_ERROR, R_DLV_OK
    d = start(t, {'min_backoff': '600', 'max_backoff': '600'})
    block = mbox(d, 'user@example.org')
    os.makedirs(os.path.dirname(block))
    with open(block, 'w') as f:
        f.write('a regular file where the Maildir should be\n')
    mk = marker('mderr')
    body = f'Subject: e\r\n\r\n{mk}\r\n'.encode()
    qid = send(d, ['user@example.org'], body)
    e = wait_event(d, qid, 'user@example.org', 'deferred')
    want = '451 4.3.0 Cannot write to the mailbox: '
    errs = (os.strerror(errno.ENOTDIR), os.strerror(errno.EEXIST))
    if not e['reply'].startswith(want) or not any(s in e['reply'] for s in errs):
        fail(f'log: {e!r}, want "{want}..." with the system error ({" or ".join(errs)})')
    _m, r = queue_rcpt(d, qid, 'user@example.org')
    if r['state'] != 'deferred' or r['last_reply'] != e['reply'] or r['attempts'] != 1:
        fail(f'tern queue --json: {r!r}, want deferred, 1 attempt, "{e["reply"]}"')
    os.unlink(block)
    if tern_ok(d, 'flush', qid) != f'{qid}: flushed\n':
        fail('tern queue flush ID did not say flushed')
    e = wait_event(d, qid, 'user@example.org', 'delivered', timeout=10)
    check_event(e, 'delivered', DLV_OK)
    if e['attempts'] != 2:
        fail(f'delivered at attempt {e["attempts"]}, want 2: {e!r}')
    files = new_files(d, 'user@example.org')
    if len(files) != 1:
        fail(f'{len(files)} files in new/, want 1')
    check_maildir_file(files[0], 'sender@client.example', 'user@example.org', body)
    wait_until('the queue is empty', lambda: queue_count(d) == 0)


def test_remote_recipient_stays_queued(t):  # covers: R_DLV_CONNECT_FAILED, R_DLV_OK
    d = start(t)
    qid = send(d, ['far@remote.example', 'near@example.org'], 'Subject: r\r\n\r\nremote\r\n')
    check_event(wait_event(d, qid, 'far@remote.example', 'deferred'), 'deferred', DLV_NO_REMOTE)
    check_event(wait_event(d, qid, 'near@example.org', 'delivered'), 'delivered', DLV_OK)
    # retried with backoff (1-2 s), and still the same answer
    check_event(wait_event(d, qid, 'far@remote.example', 'deferred', min_attempts=2),
                'deferred', DLV_NO_REMOTE)
    m = queue_msg(d, qid)
    if m is None:
        fail(f'{qid} left the queue although far@remote.example was not delivered')
    st = {r['addr']: (r['state'], r['last_reply']) for r in m['recipients']}
    if st.get('far@remote.example') != ('deferred', DLV_NO_REMOTE) or \
            st.get('near@example.org') != ('delivered', DLV_OK) or \
            m['sender'] != 'sender@client.example' or m['held']:
        fail(f'tern queue --json for {qid}: {m!r}')
    out = tern_ok(d, 'list')
    lines = out.splitlines()
    if not any(ln.startswith(qid + ' ') or ln.startswith(qid + '*') for ln in lines) or \
            f'({DLV_NO_REMOTE})' not in out or \
            not any(ln.strip() == 'far@remote.example' for ln in lines) or \
            'near@example.org' in out:
        fail(f'tern queue list does not show {qid} waiting for far@ with the reason:\n{out}')
    if queue_count(d) != 1:
        fail(f'tern queue count = {queue_count(d)}, want 1')
    if os.path.exists(os.path.join(d.mailbox_dir, 'remote.example')):
        fail('a remote recipient was delivered into a Maildir')


# ---- tern queue -------------------------------------------------------------------------------

def test_tern_queue_hold_release_flush_delete(t):  # covers: R_DLV_CONNECT_FAILED
    d = start(t, {'min_backoff': '600', 'max_backoff': '600'})
    qid = send(d, ['far@remote.example'], 'Subject: q\r\n\r\nqueue\r\n')
    check_event(wait_event(d, qid, 'far@remote.example', 'deferred'), 'deferred', DLV_NO_REMOTE)

    if tern_ok(d, 'hold', qid) != f'{qid}: held\n':
        fail('hold: wrong output')
    if not any(ln.startswith(qid + '!') for ln in tern_ok(d, 'list').splitlines()):
        fail(f'tern queue list does not mark {qid} held with "!"')
    if queue_msg(d, qid)['held'] is not True:
        fail('--json: held is not true after hold')
    tern_ok(d, 'flush')
    time.sleep(1.5)
    _m, r = queue_rcpt(d, qid, 'far@remote.example')
    if r['attempts'] != 1 or len(events(d, qid)) != 1:
        fail(f'a held message was tried after flush: {r!r} {events(d, qid)!r}')

    if tern_ok(d, 'release', qid.lower()).upper() != f'{qid}: RELEASED\n':
        fail('release (ID in lower case): wrong output')
    if queue_msg(d, qid)['held'] is not False:
        fail('--json: held is not false after release')
    if tern_ok(d, 'flush', qid) != f'{qid}: flushed\n':
        fail('flush ID: wrong output')
    check_event(wait_event(d, qid, 'far@remote.example', 'deferred', timeout=10, min_attempts=2),
                'deferred', DLV_NO_REMOTE)

    if tern_ok(d, 'delete', qid) != f'{qid}: deleted\n':
        fail('delete: wrong output')
    if queue_count(d) != 0 or queue_json(d) != []:
        fail('the deleted message is still listed')
    if f'{qid} queue: deleted by the operator' not in d.stderr_tail(100000):
        fail('no "deleted by the operator" log line')
    for args in (('delete', qid), ('hold', 'NOSUCHMESSAGE000'), ('release', 'NOSUCHMESSAGE000'),
                 ('flush', 'NOSUCHMESSAGE000')):
        rc, out, err = tern(d, *args)
        if rc != 1 or 'no such message' not in err:
            fail(f'tern queue {" ".join(args)}: exit {rc} {err!r}, want 1 "no such message"')
    for args in (('hold',), ('count', qid), ('frobnicate',), ('count', '--json')):
        rc, out, err = tern(d, *args)
        if rc != 64:
            fail(f'tern queue {" ".join(args)}: exit {rc}, want 64 (usage); {err!r}')

    sock = d.conf['control_socket']
    stop_clean(d)
    if os.path.exists(sock):
        fail(f'the control socket {sock} is left behind after a clean stop')
    for args in (('count',), ('list',), ('list', '--json'), ('flush',)):
        rc, out, err = tern(d, *args, sock=sock)
        if rc != 75 or out or 'not running' not in err:
            fail(f'tern queue {" ".join(args)} without ternd: exit {rc} out {out!r} err {err!r},'
                 f' want 75 and "not running"')


def test_tern_queue_json_many(t):  # covers: R_DLV_CONNECT_FAILED
    d = start(t)
    ids = [send(d, ['far@remote.example', f'n{i}@example.org'], f'Subject: {i}\r\n\r\n{i}\r\n',
                sender=f's{i}@client.example' if i else '') for i in range(5)]
    for qid in ids:
        wait_event(d, qid, 'far@remote.example', 'deferred')
    msgs = queue_json(d)
    if [m['id'] for m in msgs] != sorted(ids) or sorted(ids) != ids:
        fail(f'--json lists {[m["id"] for m in msgs]}, want {ids} in arrival order')
    if msgs[0]['sender'] != '' or msgs[1]['sender'] != 's1@client.example':
        fail(f'--json senders: {[m["sender"] for m in msgs]}')
    now = time.time()
    for m in msgs:
        if not now - 60 < m['arrival'] <= now + 1 or m['size'] < 10:
            fail(f'--json arrival/size implausible: {m!r}')
    if queue_count(d) != 5:
        fail(f'count = {queue_count(d)}, want 5')
    out = tern_ok(d, 'list')
    if 'MAILER-DAEMON' not in out or not out.rstrip('\n').endswith('in 5 Requests.'):
        fail(f'tern queue list: null sender not shown as MAILER-DAEMON, or wrong total:\n{out}')


# ---- LMTP -------------------------------------------------------------------------------------

def test_lmtp_unix_delivers(t):
    sockdir = tempfile.mkdtemp(prefix='s-', dir=t.tmproot)
    sock = os.path.join(sockdir, 'lmtp.sock')
    with Lmtp(t, unix=sock) as srv:
        d = start(t, {'local_delivery': f'lmtp:unix:{sock}'})
        mk = marker('lmtp')
        body = (b'Subject: lmtp\r\n\r\n.\r\n..two\r\n.one\r\ncaf\xc3\xa9 \xe9\r\n' +
                f'end {mk}\r\n'.encode())
        qid = send(d, ['alice@example.org', 'bob@example.org'], body,
                   mail_params=' BODY=8BITMIME')
        for addr in ('alice@example.org', 'bob@example.org'):
            e = wait_event(d, qid, addr, 'delivered')
            check_event(e, 'delivered', f'250 2.0.0 <{addr}> delivered')
            if e['relay'] == 'maildir':
                fail(f'relay=maildir for an LMTP delivery: {e!r}')
            files = srv.files(addr)
            if len(files) != 1 or not read(files[0]).endswith(body):
                fail(f'the LMTP server holds {len(files)} messages for {addr}, or not the body '
                     f'sent: {[read(f)[-200:] for f in files]!r}')
        tr = srv.transcript()
        for want in ('C: LHLO ', 'C: MAIL FROM:<sender@client.example>',
                     'C: RCPT TO:<alice@example.org>', 'C: RCPT TO:<bob@example.org>',
                     'C: DATA', 'C: QUIT'):
            if want not in tr:
                fail(f'the LMTP transcript lacks {want!r}:\n{tr}')
        wait_until('the queue is empty', lambda: queue_count(d) == 0)
        if os.path.exists(os.path.join(d.mailbox_dir, 'example.org')):
            fail('local_delivery = lmtp:... still wrote a Maildir')


def test_lmtp_tcp_per_recipient_replies(t):
    script = ['bob@example.org=452 4.2.2 bob is over quota',
              'carol@example.org=550 5.1.1 carol is gone',
              'data:dave@example.org=451 4.3.0 dave: temporary failure',
              'data:erin@example.org=554 5.6.0 erin: content rejected']
    with Lmtp(t, script=script) as srv:
        d = start(t, {'local_delivery': f'lmtp:127.0.0.1:{srv.port}'})
        rcpts = ['alice@example.org', 'bob@example.org', 'carol@example.org',
                 'dave@example.org', 'erin@example.org']
        mk = marker('tcp')
        qid = send(d, rcpts, f'Subject: tcp\r\n\r\n{mk}\r\n')
        want = {'alice@example.org': ('delivered', '250 2.0.0 <alice@example.org> delivered'),
                'bob@example.org': ('deferred', '452 4.2.2 bob is over quota'),
                'carol@example.org': ('failed', '550 5.1.1 carol is gone'),
                'dave@example.org': ('deferred', '451 4.3.0 dave: temporary failure'),
                'erin@example.org': ('failed', '554 5.6.0 erin: content rejected')}
        for addr, (ev, reply) in want.items():
            check_event(wait_event(d, qid, addr, ev), ev, reply)
        m = queue_msg(d, qid)
        if m is None:
            fail(f'{qid} left the queue with bob@ and dave@ deferred')
        st = {r['addr']: (r['state'], r['last_reply']) for r in m['recipients']}
        if st != want:
            fail(f'tern queue --json recipients: {st!r}, want {want!r}')
        # the retries go to bob@ and dave@ only: alice@ keeps her one copy
        wait_event(d, qid, 'bob@example.org', 'deferred', min_attempts=2)
        wait_event(d, qid, 'dave@example.org', 'deferred', min_attempts=2)
        if len(srv.files('alice@example.org')) != 1:
            fail(f'alice@ has {len(srv.files("alice@example.org"))} copies after the retries')
        for addr in ('carol@example.org', 'erin@example.org'):
            if len(events(d, qid, addr)) != 1:
                fail(f'a permanently failed recipient was tried again: {events(d, qid, addr)!r}')
        if not srv.files('alice@example.org') or \
                mk.encode() not in read(srv.files('alice@example.org')[0]):
            fail('alice@ did not get the message body')


def test_lmtp_unreachable(t):  # covers: R_DLV_LMTP_UNREACHABLE
    """No server on the unix socket, nothing on the TCP port, a server that closes after the
    data: 451 4.4.1 each time; then a working server and flush: delivered."""
    sockdir = tempfile.mkdtemp(prefix='s-', dir=t.tmproot)
    sock = os.path.join(sockdir, 'absent.sock')
    d = start(t, {'local_delivery': f'lmtp:unix:{sock}', 'min_backoff': '600',
                  'max_backoff': '600'})
    q1 = send(d, ['alice@example.org'], 'Subject: u\r\n\r\nunix\r\n')
    e = wait_event(d, q1, 'alice@example.org', 'deferred')
    if not e['reply'].startswith('451 4.4.1 LMTP server ') or ' not reachable: ' not in e['reply']:
        fail(f'no server on {sock}: {e!r}, want 451 4.4.1 LMTP server ... not reachable: ...')
    _m, r = queue_rcpt(d, q1, 'alice@example.org')
    if r['state'] != 'deferred' or r['last_reply'] != e['reply']:
        fail(f'tern queue --json: {r!r}')
    with Lmtp(t, unix=sock) as srv:
        tern_ok(d, 'flush', q1)
        check_event(wait_event(d, q1, 'alice@example.org', 'delivered', timeout=10),
                    'delivered', '250 2.0.0 <alice@example.org> delivered')
        if len(srv.files('alice@example.org')) != 1:
            fail('the LMTP server did not get the message after the flush')

    port = free_port()
    d2 = start(t, {'local_delivery': f'lmtp:127.0.0.1:{port}', 'min_backoff': '600',
                   'max_backoff': '600'})
    q2 = send(d2, ['bob@example.org'], 'Subject: t\r\n\r\ntcp\r\n')
    e = wait_event(d2, q2, 'bob@example.org', 'deferred')
    if not e['reply'].startswith('451 4.4.1 LMTP server ') or ' not reachable: ' not in e['reply']:
        fail(f'nothing on 127.0.0.1:{port}: {e!r}, want 451 4.4.1 ... not reachable: ...')
    with Lmtp(t, port=port, script=['close-after-data']):
        tern_ok(d2, 'flush', q2)
        e2 = wait_event(d2, q2, 'bob@example.org', 'deferred', timeout=10, min_attempts=2)
        if not e2['reply'].startswith('451 4.4.1 LMTP server '):
            fail(f'a server that closes after the data: {e2!r}, want 451 4.4.1')
    with Lmtp(t, port=port) as srv:
        tern_ok(d2, 'flush', q2)
        check_event(wait_event(d2, q2, 'bob@example.org', 'delivered', timeout=10),
                    'delivered', '250 2.0.0 <bob@example.org> delivered')
        if len(srv.files('bob@example.org')) != 1:
            fail('the LMTP server did not get exactly one copy after the flush')


def test_lmtp_protocol_errors(t):  # covers: R_DLV_LMTP_PROTOCOL
    """A malformed reply, and a 5xx greeting (not a verdict on the mail): 451 4.5.0, kept."""
    sockdir = tempfile.mkdtemp(prefix='s-', dir=t.tmproot)
    sock = os.path.join(sockdir, 'lmtp.sock')
    d = start(t, {'local_delivery': f'lmtp:unix:{sock}', 'min_backoff': '600',
                  'max_backoff': '600'})
    with Lmtp(t, unix=sock, script=['malformed']):
        qid = send(d, ['alice@example.org'], 'Subject: m\r\n\r\nmalformed\r\n')
        e = wait_event(d, qid, 'alice@example.org', 'deferred')
        if not e['reply'].startswith('451 4.5.0 LMTP server '):
            fail(f'a malformed RCPT reply: {e!r}, want 451 4.5.0 LMTP server ...')
    _m, r = queue_rcpt(d, qid, 'alice@example.org')
    if r['state'] != 'deferred' or r['last_reply'] != e['reply']:
        fail(f'tern queue --json: {r!r}')
    with Lmtp(t, unix=sock, script=['greeting=554 5.3.2 not accepting mail']):
        tern_ok(d, 'flush', qid)
        e = wait_event(d, qid, 'alice@example.org', 'deferred', timeout=10, min_attempts=2)
        if not e['reply'].startswith('451 4.5.0 LMTP server '):
            fail(f'a 554 greeting: {e!r}, want 451 4.5.0 (transient, not a bounce)')
    with Lmtp(t, unix=sock, script=['no-pipelining']) as srv:
        tern_ok(d, 'flush', qid)
        check_event(wait_event(d, qid, 'alice@example.org', 'delivered', timeout=10),
                    'delivered', '250 2.0.0 <alice@example.org> delivered')
        if '# pipelined' in srv.transcript():
            fail(f'tern pipelined to a server without PIPELINING:\n{srv.transcript()}')
    wait_until('the queue is empty', lambda: queue_count(d) == 0)
