"""
test_tern_tools.py - `tern send`, `tern probe` and sendmail(8) against the real ternd (and
against tests/e2e/smtpserver.py where a reply ternd never gives is needed: greylisting).

Exit statuses checked: send 0 / 69 / 75 / 64; probe 0 / 69 / 75 / 64; sendmail 0 (queued,
and left in the maildrop while ternd is down), 64 (no recipients), 67 (unknown local user),
75 (-bp with ternd down).  The `sendmail` name is a symlink to build/tern in the test's
temporary directory; it finds ternd through TERN_CONFIG (the daemon's own config file).
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import SAN_PATTERNS, base_config, fail, free_port, write_config  # noqa: E402
import smtpserver  # noqa: E402

WAIT = 30.0     # seconds a delivery may take (ASan build, busy machine)
TIMEOUT = 30    # seconds for one tool run
ID_RE = re.compile(r'^[0-9A-Z]{16}$')


# ---- helpers ----------------------------------------------------------------------------------

def tern_bin(t):
    return os.path.join(os.path.dirname(t.ternd_path), 'tern')


def run(argv, stdin=b'', env=None, timeout=TIMEOUT):
    """(exit status, stdout, stderr) as text; a sanitizer finding fails the test."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=e)
    for pat in SAN_PATTERNS:
        if pat in p.stderr:
            fail(f'{argv}: sanitizer finding:\n{p.stderr.decode("utf-8", "replace")[:1500]}')
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def tern(t, *args, **kw):
    return run([tern_bin(t)] + list(args), **kw)


def want_rc(what, got, want, out, err):
    if got != want:
        fail(f'{what}: exit {got}, want {want}\nstdout: {out!r}\nstderr: {err!r}')


def sendmail_bin(t):
    """TMP/sendmail -> build/tern, so tern runs under the name sendmail."""
    path = os.path.join(t.tmproot, 'sendmail')
    if not os.path.exists(path):
        os.symlink(os.path.abspath(tern_bin(t)), path)
    return path


def sendmail(t, d, args, stdin=b'', conf=None):
    env = {'TERN_CONFIG': conf or d.conf_path}
    env.pop('TERN_CONTROL_SOCKET', None)
    e = dict(os.environ)
    e.pop('TERN_CONTROL_SOCKET', None)
    e.update(env)
    p = subprocess.run([sendmail_bin(t)] + list(args), input=stdin, capture_output=True,
                       timeout=TIMEOUT, env=e)
    for pat in SAN_PATTERNS:
        if pat in p.stderr:
            fail(f'sendmail {args}: sanitizer finding:\n{p.stderr.decode("utf-8", "replace")}')
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def users_file(t, names):
    path = os.path.join(t.tmproot, 'users')
    with open(path, 'w') as f:
        for n in names:
            f.write(n + '\n')
    return path


def daemon(t, conf=None, start=True):
    """A ternd with a control socket and a recipient table (user@, bob@, carol@ example.org)."""
    c = {'local_recipients': 'file:' + users_file(
        t, ['user@example.org', 'bob@example.org', 'carol@example.org'])}
    c.update(conf or {})
    d = t.daemon(c)
    d.overrides.setdefault('control_socket', os.path.join(d.tmpdir, 'ctl.sock'))
    return d.start() if start else d


def new_files(d, addr):
    local, dom = addr.rsplit('@', 1)
    p = os.path.join(d.mailbox_dir, dom, local, 'new')
    if not os.path.isdir(p):
        return []
    return sorted(os.path.join(p, f) for f in os.listdir(p) if not f.startswith('.'))


def wait_mail(d, addr, marker, timeout=WAIT):
    """The Maildir file of addr holding marker (bytes); fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in new_files(d, addr):
            with open(f, 'rb') as fh:
                data = fh.read()
            if marker in data:
                return data
        time.sleep(0.05)
    fail(f'no message with {marker!r} in the Maildir of {addr} within {timeout:.0f} s')


def fake_server(t, script):
    """tests/e2e/smtpserver.py on a thread; its port."""
    srv = smtpserver.SMTPServer(os.path.join(t.tmproot, 'fake'), script=script, idle=20.0)
    threading.Thread(target=srv.serve, daemon=True).start()
    return srv.port


def marker(tag):
    return f'{tag}-{os.getpid()}-{time.monotonic_ns()}'


# ---- tern send --------------------------------------------------------------------------------

def test_send_accepted(t):
    d = daemon(t)
    m = marker('send')
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', 'a@client.example',
                        '--to', 'user@example.org', '--subject', m, '--header', 'X-Test: yes', '-v')
    want_rc('tern send', rc, 0, out, err)
    for s in ('C: MAIL FROM:<a@client.example>', 'S: 220 ', '<user@example.org>: accepted: 250',
              'final reply: 250 2.0.0 Ok: queued as', 'result: accepted by every recipient'):
        if s not in out:
            fail(f'tern send output lacks {s!r}:\n{out}')
    data = wait_mail(d, 'user@example.org', m.encode())
    for h in (b'\r\nDate: ', b'\r\nMessage-ID: <', b'\r\nFrom: <a@client.example>\r\n',
              b'\r\nTo: <user@example.org>\r\n', b'\r\nX-Test: yes\r\n'):
        if h not in data:
            fail(f'delivered message lacks {h!r}: {data[:600]!r}')


def test_send_chunking(t):
    """--chunking: BDAT in several chunks (a body over 64 KiB), bare LFs and leading dots
    arrive intact; --no-pipelining sends one command at a time."""
    d = daemon(t)
    m = marker('bdat')
    path = os.path.join(t.tmproot, 'big.txt')
    body = ''.join(f'.line {i} {m} ' + 'x' * 60 + '\n' for i in range(2500))  # ~180 KB
    with open(path, 'w') as f:
        f.write(f'From: me@client.example\nTo: user@example.org\nSubject: {m}\n\n' + body)
    for extra in ([], ['--no-pipelining']):
        rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from',
                            'me@client.example', '--to', 'user@example.org', '--chunking', '-v',
                            *extra, path)
        want_rc('tern send --chunking', rc, 0, out, err)
        chunks = [ln for ln in out.splitlines() if ln.startswith('C: BDAT ')]
        if len(chunks) < 3 or not chunks[-1].endswith(' LAST') or 'C: DATA' in out:
            fail(f'expected 3 or more BDAT chunks ending with LAST, no DATA:\n{out[:3000]}')
    data = wait_mail(d, 'user@example.org', m.encode())
    want = body.replace('\n', '\r\n').encode()
    if want not in data:
        fail('the BDAT body did not arrive intact (dots, CRLF)')


def test_send_file_with_headers(t):
    """A FILE that starts with headers goes as it is (LF line ends made CRLF on the wire)."""
    d = daemon(t)
    m = marker('file')
    path = os.path.join(t.tmproot, 'msg.txt')
    with open(path, 'w') as f:
        f.write(f'From: me@client.example\nTo: bob@example.org\nSubject: {m}\n\n.leading dot\n')
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', 'me@client.example',
                        '--to', 'bob@example.org', path)
    want_rc('tern send FILE', rc, 0, out, err)
    data = wait_mail(d, 'bob@example.org', m.encode())
    if b'Message-ID: <' in data.split(b'\r\n\r\n', 1)[0] and b'tern-send' in data:
        fail(f'headers were added to a message that had its own: {data[:500]!r}')
    if b'\r\n.leading dot\r\n' not in data:
        fail(f'dot-stuffing or line ends went wrong: {data!r}')


def test_send_refused(t):
    d = daemon(t)
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', 'a@client.example',
                        '--to', 'nobody@example.org')
    want_rc('tern send to an unknown user', rc, 69, out, err)
    if '<nobody@example.org>: refused: 550 5.1.1' not in out or \
            'Bad destination mailbox address' not in out:
        fail(f'tern send: the refusal is not reported and explained:\n{out}')
    # accepted + refused: the permanent failure decides
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', 'a@client.example',
                        '--to', 'user@example.org', '--to', 'nobody@example.org')
    want_rc('tern send (one accepted, one refused)', rc, 69, out, err)


def test_send_deferred(t):
    port = fake_server(t, ['rcpt:grey@example.net=450 4.7.1 Greylisted, try again later'])
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{port}', '--from', 'a@client.example',
                        '--to', 'grey@example.net', '--to', 'ok@example.net')
    want_rc('tern send to a greylisted recipient', rc, 75, out, err)
    if '<grey@example.net>: deferred: 450 4.7.1' not in out or \
            'final reply: 450 4.7.1' not in out:
        fail(f'tern send output:\n{out}')
    # no server at all: transient
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{free_port()}', '--from', 'a@b.example',
                        '--to', 'x@example.net', '--timeout', '5')
    want_rc('tern send to a closed port', rc, 75, out, err)


def test_send_usage(t):
    for args in (['send', '--from', 'a@b', '--to', 'c@d'],                  # no --server
                 ['send', '--server', '127.0.0.1:25', '--to', 'c@d'],       # no --from
                 ['send', '--server', '127.0.0.1:25', '--from', 'a@b'],     # no --to
                 ['send', '--server', '127.0.0.1:25', '--from', 'a@b', '--to', 'c d@e'],
                 ['send', '--server', '127.0.0.1:x', '--from', 'a@b', '--to', 'c@d'],
                 ['send', '--bogus']):
        rc, out, err = tern(t, *args)
        want_rc(f'tern {args}', rc, 64, out, err)
    rc, out, err = tern(t, 'send', '--server', '127.0.0.1:25', '--from', 'a@b', '--to', 'c@d',
                        os.path.join(t.tmproot, 'does-not-exist'))
    want_rc('tern send with a missing FILE', rc, 66, out, err)


# ---- tern probe -------------------------------------------------------------------------------

def test_probe_verdicts(t):
    d = daemon(t)
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--from', 'a@client.example',
                        '--to', 'user@example.org', '--to', 'nobody@example.org')
    want_rc('tern probe known + unknown', rc, 69, out, err)
    for s in ('<<< 220 ', 'capabilities: PIPELINING', '>>> MAIL FROM:<a@client.example>',
              '>>> RCPT TO:<nobody@example.org>', '>>> RSET', '>>> QUIT',
              '= 550 Mailbox unavailable; 5.1.1 Bad destination mailbox address',
              '<user@example.org>: would be accepted now (250 2.1.5',
              '<nobody@example.org>: refused (permanent: no such user (550 5.1.1))'):
        if s not in out:
            fail(f'tern probe output lacks {s!r}:\n{out}')
    if '>>> DATA' in out:
        fail('tern probe sent DATA')
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--to', 'user@example.org')
    want_rc('tern probe known', rc, 0, out, err)
    if 'MAIL FROM:<>' not in out:
        fail(f'tern probe: the default sender is not <>:\n{out}')
    # nothing was queued by a probe
    rc, out, err = tern(t, 'queue', '-s', d.conf['control_socket'], 'count')
    want_rc('tern queue count', rc, 0, out, err)
    if out.strip() != '0':
        fail(f'a probe left {out.strip()} messages in the queue')


def test_probe_deferred(t):
    port = fake_server(t, ['rcpt:grey@example.net=450 4.7.1 Greylisted, come back in 5 minutes'])
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{port}', '--to', 'grey@example.net',
                        '--to', 'fine@example.net')
    want_rc('tern probe greylisted', rc, 75, out, err)
    if '<grey@example.net>: deferred (transient: greylisting' not in out or \
            '<fine@example.net>: would be accepted now' not in out:
        fail(f'tern probe output:\n{out}')
    port = fake_server(t, ['greeting=421 4.3.2 Too busy, try later'])
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{port}', '--to', 'x@example.net')
    want_rc('tern probe 421 greeting', rc, 75, out, err)
    if 'overloaded' not in out:
        fail(f'tern probe: a 421 greeting is not explained as overload:\n{out}')
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{free_port()}', '--to', 'x@example.net',
                        '--timeout', '5')
    want_rc('tern probe closed port', rc, 75, out, err)


def test_probe_usage(t):
    for args in (['probe'], ['probe', '[::1'], ['probe', '127.0.0.1:25', '--port', '0'],
                 ['probe', '127.0.0.1:25', '--to', 'a b@c'], ['probe', '--nope']):
        rc, out, err = tern(t, *args)
        want_rc(f'tern {args}', rc, 64, out, err)


# ---- sendmail ---------------------------------------------------------------------------------

def test_sendmail_t_lands_in_maildir(t):
    """The issue's acceptance test: a message piped into sendmail -t reaches the Maildir."""
    d = daemon(t)
    m = marker('sm')
    msg = (f'To: User <user@example.org>\nCc: bob@example.org\nBcc: carol@example.org\n'
           f'Subject: {m}\n\nhello\n.\nnot part of it\n').encode()
    rc, out, err = sendmail(t, d, ['-t', '-f', 'sender@example.org', '-F', 'Test Sender'], msg)
    want_rc('sendmail -t', rc, 0, out, err)
    for addr in ('user@example.org', 'bob@example.org', 'carol@example.org'):
        data = wait_mail(d, addr, m.encode())
        head, _, body = data.partition(b'\r\n\r\n')
        fields = [ln for ln in head.split(b'\r\n') if not ln.startswith(b'Delivered-To:')]
        if any(ln.lower().startswith(b'bcc:') or b'carol@' in ln for ln in fields):
            fail(f'the Bcc field reached {addr}: {head!r}')
        if b'not part of it' in body or not body.startswith(b'hello\r\n'):
            fail(f'the lone dot did not end the message for {addr}: {body!r}')
        for h in (b'Received: by mx.test (tern sendmail) id ',
                  b'From: Test Sender <sender@example.org>', b'Return-Path: <sender@example.org>'):
            if h not in head:
                fail(f'{addr}: header lacks {h!r}: {head!r}')


def test_sendmail_i_and_args(t):
    """-i: a lone dot is data; recipients from the arguments; the default sender."""
    d = daemon(t)
    m = marker('smi')
    rc, out, err = sendmail(t, d, ['-oi', 'bob@example.org'],
                            f'Subject: {m}\n\nbefore\n.\nafter\n'.encode())
    want_rc('sendmail -oi', rc, 0, out, err)
    data = wait_mail(d, 'bob@example.org', m.encode())
    if b'\r\nbefore\r\n.\r\nafter\r\n' not in data:
        fail(f'with -oi the dot line must stay in the message: {data!r}')
    if re.search(rb'Return-Path: <[^@>]+@mx\.test>', data) is None:
        fail(f'the default sender is not user@hostname: {data[:300]!r}')


def test_sendmail_exit_statuses(t):
    d = daemon(t)
    rc, out, err = sendmail(t, d, [], b'Subject: x\n\nno rcpt\n')
    want_rc('sendmail without recipients', rc, 64, out, err)
    rc, out, err = sendmail(t, d, ['-t'], b'Subject: x\n\nno rcpt\n')
    want_rc('sendmail -t without To/Cc/Bcc', rc, 64, out, err)
    rc, out, err = sendmail(t, d, ['nobody@example.org'], b'Subject: x\n\nunknown\n')
    want_rc('sendmail to an unknown local user', rc, 67, out, err)
    if '5.1.1' not in err:
        fail(f'sendmail: the refusal is not shown: {err!r}')
    rc, out, err = sendmail(t, d, ['-bv', 'x@y'], b'')
    want_rc('sendmail -bv', rc, 64, out, err)
    # legacy flags are accepted and ignored
    m = marker('legacy')
    rc, out, err = sendmail(t, d, ['-oem', '-odb', '-oQ/tmp', '-B', '8BITMIME', '-N', 'never',
                                   '-R', 'hdrs', '-V', 'env1', '-L', 'tag', '-h', '5', '-n', '-U',
                                   '-m', 'user@example.org'], f'Subject: {m}\n\nx\n'.encode())
    want_rc('sendmail with legacy flags', rc, 0, out, err)
    wait_mail(d, 'user@example.org', m.encode())


def test_sendmail_maildrop_when_down(t):
    """ternd down: the message waits in spool_dir/maildrop and is delivered once ternd starts."""
    d = daemon(t, start=False)
    conf = base_config(d.tmpdir, free_port())
    conf.update(d.overrides)
    conf_path = os.path.join(t.tmproot, 'sendmail.conf')
    write_config(conf_path, conf)
    m = marker('drop')
    rc, out, err = sendmail(t, d, ['bob@example.org'], f'Subject: {m}\n\nwaiting\n'.encode(),
                            conf=conf_path)
    want_rc('sendmail with ternd down', rc, 0, out, err)
    dropdir = os.path.join(d.tmpdir, 'spool', 'maildrop')
    if 'ternd is not running' not in err or dropdir not in err:
        fail(f'sendmail: no note about the maildrop: {err!r}')
    files = [f for f in os.listdir(dropdir) if not f.startswith('.')]
    if len(files) != 1:
        fail(f'want one file in {dropdir}, got {files}')
    rc, out, err = sendmail(t, d, ['-bp'], b'', conf=conf_path)
    want_rc('sendmail -bp with ternd down', rc, 75, out, err)
    d.start()
    wait_mail(d, 'bob@example.org', m.encode())
    deadline = time.monotonic() + WAIT
    while os.listdir(dropdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.listdir(dropdir):
        fail(f'the maildrop file was not removed after the commit: {os.listdir(dropdir)}')


def test_sendmail_maildrop_while_running(t):
    """A file put into the maildrop while ternd runs is picked up by the periodic scan."""
    d = daemon(t)
    m = marker('scan')
    dropdir = os.path.join(d.spool_dir, 'maildrop')
    tmp = os.path.join(dropdir, '.tmp.test')
    with open(tmp, 'wb') as f:
        f.write(f'S a@client.example\nR user@example.org\n\nSubject: {m}\n\nscan\n'.encode())
    os.rename(tmp, os.path.join(dropdir, 'by-hand'))
    with open(os.path.join(dropdir, 'garbage'), 'wb') as f:
        f.write(b'not a payload')
    wait_mail(d, 'user@example.org', m.encode(), timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while not os.path.exists(os.path.join(dropdir, 'garbage.bad')) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    if not os.path.exists(os.path.join(dropdir, 'garbage.bad')):
        fail(f'a malformed maildrop file was not set aside: {os.listdir(dropdir)}')


def test_sendmail_bs(t):
    d = daemon(t)
    m = marker('bs')
    dialogue = (f'EHLO local\nMAIL FROM:<a@client.example>\nRCPT TO:<user@example.org>\nDATA\n'
                f'Subject: {m}\n\n..dot\nbody\n.\nQUIT\n').encode()
    rc, out, err = sendmail(t, d, ['-bs'], dialogue)
    want_rc('sendmail -bs', rc, 0, out, err)
    lines = out.split('\r\n')
    codes = [ln[:3] for ln in lines if re.match(r'^\d{3} ', ln)]
    if codes != ['220', '250', '250', '250', '354', '250', '221']:
        fail(f'sendmail -bs replies: {out!r}')
    qid = re.search(r'250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})\r\n', out)
    if qid is None:
        fail(f'sendmail -bs: no queue ID in {out!r}')
    data = wait_mail(d, 'user@example.org', m.encode())
    if b'\r\n.dot\r\nbody\r\n' not in data or qid.group(1).encode() not in data:
        fail(f'sendmail -bs: message {data!r}')


def test_sendmail_bs_unknown_user(t):  # covers: R_SUBMIT_UNKNOWN_USER
    """A recipient that ternd refuses for good gets a 5xx at the end of DATA, not a 451."""
    d = daemon(t)
    dialogue = (b'EHLO local\nMAIL FROM:<a@client.example>\nRCPT TO:<nobody@example.org>\n'
                b'DATA\nSubject: x\n\nx\n.\nQUIT\n')
    rc, out, err = sendmail(t, d, ['-bs'], dialogue)
    if '\r\n550 5.1.1 Message refused: a recipient is not known here' not in out:
        fail(f'sendmail -bs to an unknown user: {out!r} (stderr {err!r})')
    if '\r\n451 ' in out:
        fail(f'sendmail -bs answered a permanent refusal with 451: {out!r}')


def test_sendmail_bp_and_q(t):
    closed = free_port()
    d = daemon(t, {'relay_host': f'127.0.0.1:{closed}', 'min_backoff': '600',
                   'max_backoff': '600'})
    m = marker('bp')
    rc, out, err = sendmail(t, d, ['-v', 'far@remote.example'], f'Subject: {m}\n\nx\n'.encode())
    want_rc('sendmail to a remote recipient', rc, 0, out, err)
    qid = re.search(r'queued as ([0-9A-Z]{16})', err)
    if qid is None:
        fail(f'sendmail -v: no queue ID on stderr: {err!r}')
    deadline = time.monotonic() + WAIT
    while True:
        rc, out, err = sendmail(t, d, ['-bp'], b'')
        want_rc('sendmail -bp', rc, 0, out, err)
        if qid.group(1) in out and 'far@remote.example' in out and 'Request' in out:
            break
        if time.monotonic() > deadline:
            fail(f'sendmail -bp does not list {qid.group(1)}: {out!r}')
        time.sleep(0.1)
    rc, out, err = sendmail(t, d, ['-q'], b'')
    want_rc('sendmail -q', rc, 0, out, err)
