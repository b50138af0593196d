"""
test_tls.py - server-side TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) against the
real ternd, with Python's ssl/smtplib, `openssl s_client` and (when installed) testssl.sh.

Certificates are made by each test with `openssl req -x509` in the ternd's temporary
directory (EC P-256, subjectAltName DNS:mx.test), and clients verify them against that file
as their only CA, so a test also proves which certificate was served.  Everything happens on
127.0.0.1; testssl.sh is run with flags that keep it there (see test_testssl).
"""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import warnings

from harness import HOSTNAME, Closed, Conn, Skip, fail, free_port, marker

DLV_WAIT = 30.0
RECEIVED_TLS_RE = re.compile(r'with ESMTPS\r\n\t\(version=(TLSv1\.[23]) cipher=([A-Z0-9_-]+)\)'
                             r' id ')


# ---- helpers ----------------------------------------------------------------------------------

def make_cert(dirpath, name, cn='mx.test'):
    """A self-signed EC certificate for mx.test: (cert path, key path)."""
    cert = os.path.join(dirpath, name + '.crt')
    key = os.path.join(dirpath, name + '.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '2', '-subj', f'/CN={cn}', '-addext',
                    f'subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1'],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def start(t, conf=None, tls=True, listen_opts=''):
    """A ternd with a fresh certificate (tls) and `listen_opts` on its listener."""
    d = t.daemon(conf)
    if tls:
        d.cert, d.key = make_cert(d.tmpdir, 'server')
        d.overrides.setdefault('tls_cert', d.cert)
        d.overrides.setdefault('tls_key', d.key)
    if listen_opts:
        d.overrides['listen'] = '127.0.0.1:{port} ' + listen_opts
    return d.start()


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def starttls(c, cafile):
    """EHLO, STARTTLS, handshake on the harness connection c (its buffer must be empty)."""
    c.cmd('EHLO client.test', 250)
    c.cmd('STARTTLS', 220, '2.0.0', 'Ready to start TLS')
    tls_wrap(c, cafile)


def tls_wrap(c, cafile):
    if c.buf:
        fail(f'plaintext left before the handshake: {c.buf!r}')
    c.sock = client_ctx(cafile).wrap_socket(c.sock, server_hostname=HOSTNAME)
    c.sock.settimeout(c.timeout)


def ehlo_keywords(r):
    return [ln.split(' ', 1)[0].upper() for ln in r.lines[1:]]


def wait_mail(d, local='u', domain='example.org', timeout=DLV_WAIT):
    newdir = os.path.join(d.mailbox_dir, domain, local, 'new')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            files = os.listdir(newdir)
        except FileNotFoundError:
            files = []
        if files:
            with open(os.path.join(newdir, files[0]), 'rb') as f:
                return f.read()
        time.sleep(0.05)
    fail(f'no message in {newdir} within {timeout:.0f} s; log: {d.stderr_tail()}')


def wait_log(d, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle.encode() in d.stderr():
            return
        time.sleep(0.05)
    fail(f'{needle!r} not in the ternd log within {timeout:.0f} s: {d.stderr_tail()}')


def closed_within(sock, timeout):
    """True if the peer closes (EOF/reset/TLS error) within timeout, sending nothing."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False
    if data:
        fail(f'expected a close, got {data[:200]!r}')
    return True


def alive_and_serving(d):
    if not d.alive():
        fail(f'ternd died: {d.stderr_tail()}')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250)


# ---- STARTTLS ---------------------------------------------------------------------------------

def test_starttls_smtplib_delivers(t):  # covers: R_TLS_READY
    """smtplib: STARTTLS is offered, a message goes through TLS into the Maildir, and the
    Received header and the log say which TLS."""
    d = start(t)
    mk = marker('tls')
    with smtplib.SMTP('127.0.0.1', d.port, timeout=10) as s:
        s.ehlo('client.test')
        if not s.has_extn('starttls'):
            fail(f'EHLO does not list STARTTLS: {s.esmtp_features}')
        code, msg = s.starttls(context=client_ctx(d.cert))
        if code != 220 or not msg.startswith(b'2.0.0 Ready to start TLS'):
            fail(f'STARTTLS answered {code} {msg!r}')
        s.ehlo('client.test')
        if s.has_extn('starttls'):
            fail('EHLO under TLS still lists STARTTLS')
        s.sendmail('a@b.example', ['u@example.org'], f'Subject: tls\r\n\r\n{mk}\r\n')
    msg = wait_mail(d).decode('utf-8', 'replace')
    if mk not in msg:
        fail(f'the delivered message lacks its marker: {msg[:500]!r}')
    m = RECEIVED_TLS_RE.search(msg)
    if not m:
        fail(f'Received header does not note TLS: {msg[:400]!r}')
    log = d.stderr().decode('utf-8', 'replace')
    if not re.search(r'event=tls client=127\.0\.0\.1 version=TLSv1\.3 cipher=\S+ sni=- '
                     r'implicit=0', log):
        fail(f'no event=tls log line with version and cipher: {log[-1500:]}')
    if not re.search(r'event=queued .* tls=TLSv1\.3 cipher=' + re.escape(m.group(2)), log):
        fail(f'the event=queued line does not note TLS: {log[-1500:]}')
    t.note(f'{m.group(1)} {m.group(2)}')


def test_starttls_openssl_s_client(t):
    """openssl s_client -starttls smtp: handshake with SNI, then EHLO and QUIT under TLS."""
    if shutil.which('openssl') is None:
        raise Skip('openssl not installed')
    d = start(t)
    p = subprocess.run(['openssl', 's_client', '-starttls', 'smtp', '-connect',
                        f'127.0.0.1:{d.port}', '-servername', HOSTNAME, '-CAfile', d.cert,
                        '-verify_return_error', '-crlf', '-brief', '-ign_eof'],
                       input=b'EHLO client.test\nQUIT\n', capture_output=True, timeout=20)
    out = p.stdout.decode('utf-8', 'replace') + p.stderr.decode('utf-8', 'replace')
    stdout = p.stdout.decode('utf-8', 'replace')
    if 'Protocol version: TLSv1.3' not in out or 'Verification: OK' not in out:
        fail(f'openssl s_client: no verified TLS 1.3 session: {out[-1500:]}')
    if '250-mx.test' not in out or '221 2.0.0' not in out:
        fail(f'openssl s_client: no EHLO/QUIT answer under TLS: {out[-1500:]}')
    if re.search(r'250[- ]STARTTLS', stdout.split('250-mx.test')[-1]):
        fail(f'STARTTLS still offered under TLS: {out[-1500:]}')
    wait_log(d, 'sni=mx.test implicit=0')


def test_sni_cannot_forge_log_lines(t):
    """A TLS server name is the client's text: a line break or spaces in it must not make a
    log line of its own or a key=value pair (tools such as fail2ban parse these lines)."""
    if shutil.which('openssl') is None:
        raise Skip('openssl not installed')
    d = start(t, listen_opts='tls')
    forged = 'x.example\n2026-11-29T00:00:00.000Z ternd info - event=auth client=10.0.0.1 ' \
             'result=failed'
    subprocess.run(['openssl', 's_client', '-connect', f'127.0.0.1:{d.port}', '-servername',
                    forged, '-quiet', '-verify_quiet'], input=b'QUIT\r\n',
                   capture_output=True, timeout=20)
    wait_log(d, 'event=tls client=127.0.0.1')
    for line in d.stderr().decode('utf-8', 'replace').splitlines():
        if 'client=10.0.0.1' in line and 'event=tls ' not in line:
            fail(f'the SNI name made a log line of its own: {line!r}')
        if 'event=tls ' in line and ' client=10.0.0.1' in line:
            fail(f'the SNI name made key=value pairs: {line!r}')
    if b'sni=x.example?2026' not in d.stderr():
        fail(f'the SNI name is not logged in its safe form: {d.stderr_tail()}')


def test_starttls_injection(t):
    """CVE-2011-0411: "STARTTLS\\r\\nRSET\\r\\n" in one write.  RSET was sent in plaintext
    before the handshake and must never be answered: the first reply under TLS answers EHLO."""
    d = start(t)
    c = d.connect()
    c.cmd('EHLO client.test', 250)
    c.send(b'STARTTLS\r\nRSET\r\n')
    c.expect(220, '2.0.0', 'Ready to start TLS')
    tls_wrap(c, d.cert)  # a plaintext answer to RSET here would break the handshake
    c.sock.settimeout(1.0)
    try:
        data = c.sock.recv(4096)
        fail(f'the server sent {data!r} under TLS before any command (the injected RSET '
             f'was answered)')
    except socket.timeout:
        pass
    r = c.cmd('EHLO again.test', 250, None)
    if r.lines[0] != HOSTNAME or len(r.lines) < 2:
        fail(f'first reply under TLS is not the EHLO answer: {r!r}')
    c.cmd('QUIT', 221)
    c.close()


def test_starttls_refusals(t):  # covers: R_TLS_ACTIVE, R_TLS_IN_TXN
    d = start(t)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250)
        c.cmd('STARTTLS now', 501, '5.5.4')
        c.cmd('MAIL FROM:<a@b.example>', 250)
        c.cmd('STARTTLS', 503, '5.5.1', 'not allowed during a mail transaction')
        c.cmd('RSET', 250)
        c.cmd('STARTTLS', 220, '2.0.0')
        tls_wrap(c, d.cert)
        r = c.cmd('EHLO client.test', 250)
        if 'STARTTLS' in ehlo_keywords(r):
            fail(f'STARTTLS offered again under TLS: {r!r}')
        c.cmd('STARTTLS', 554, '5.5.1', 'TLS is already active')
        c.cmd('NOOP', 250)


def test_starttls_not_offered_without_cert(t):
    d = start(t, tls=False)
    with d.connect() as c:
        r = c.cmd('EHLO client.test', 250)
        if 'STARTTLS' in ehlo_keywords(r):
            fail(f'STARTTLS offered without tls_cert: {r!r}')
        c.cmd('STARTTLS', 502, '5.5.1')
        c.cmd('NOOP', 250)


def test_tls_required(t):  # covers: R_TLS_REQUIRED
    d = start(t, listen_opts='require-tls')
    with d.connect() as c:
        r = c.cmd('EHLO client.test', 250)
        if 'STARTTLS' not in ehlo_keywords(r):
            fail(f'require-tls listener does not offer STARTTLS: {r!r}')
        c.cmd('MAIL FROM:<a@b.example>', 530, '5.7.0', 'Must issue a STARTTLS command first')
        c.cmd('RCPT TO:<u@example.org>', 530, '5.7.0')
        c.cmd('NOOP', 250)
        c.cmd('STARTTLS', 220, '2.0.0')
        tls_wrap(c, d.cert)
        c.cmd('EHLO client.test', 250)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        c.cmd('RCPT TO:<u@example.org>', 250, '2.1.5')
        c.cmd('QUIT', 221)


def test_tls_bulk_pipelined(t):
    """Under TLS: three large messages pipelined in one write (many records, commits that
    suspend input, decrypted data waiting in OpenSSL), then thousands of pipelined NOOPs to a
    client that reads nothing until it has sent them all (SSL_write must wait)."""
    d = start(t, {'max_message_size': '4000000'})
    c = d.connect(rcvbuf=4096)
    starttls(c, d.cert)
    c.cmd('EHLO client.test', 250)
    mks = [marker(f'bulk{i}') for i in range(3)]
    body = ('x' * 998 + '\r\n') * 300
    blob = b''
    for mk in mks:
        blob += (f'MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n'
                 f'Subject: {mk}\r\n\r\n{body}{mk}\r\n.\r\n').encode()
    c.send(blob)
    for _ in mks:
        c.expect(250, '2.1.0', timeout=20)
        c.expect(250, '2.1.5', timeout=20)
        c.expect(354, None, timeout=20)
        c.expect(250, '2.0.0', 'queued as', timeout=20)
    n = 5000
    c.sock.settimeout(30)
    c.send(b'NOOP\r\n' * n)
    for i in range(n):
        c.expect(250, '2.0.0', timeout=20)
    c.cmd('QUIT', 221)
    c.close()
    newdir = os.path.join(d.mailbox_dir, 'example.org', 'u', 'new')
    deadline = time.monotonic() + DLV_WAIT
    while time.monotonic() < deadline:
        got = os.listdir(newdir) if os.path.isdir(newdir) else []
        if len(got) >= 3:
            break
        time.sleep(0.1)
    texts = [open(os.path.join(newdir, f), 'rb').read() for f in got]
    for mk in mks:
        if sum(mk.encode() in x and len(x) > 300000 for x in texts) != 1:
            fail(f'message {mk} not delivered whole once ({len(texts)} files)')


def test_tls_records_read_ahead(t):
    """Several TLS records in one TCP segment: OpenSSL reads them all at once, so the later
    ones wait decrypted in OpenSSL with nothing left on the socket; each must be answered."""
    d = start(t)
    c = d.connect()
    c.cmd('EHLO client.test', 250)
    c.cmd('STARTTLS', 220, '2.0.0')
    sock = c.sock
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(d.cert).wrap_bio(inc, out, server_hostname=HOSTNAME)
    deadline = time.monotonic() + 10
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        if out.pending:
            sock.sendall(out.read())
        if time.monotonic() > deadline:
            fail('handshake did not finish')
        sock.settimeout(5)
        chunk = sock.recv(65536)
        if not chunk:
            fail('closed during the handshake')
        inc.write(chunk)
    if out.pending:
        sock.sendall(out.read())
    for cmd in (b'EHLO client.test\r\n', b'NOOP\r\n', b'NOOP\r\n', b'NOOP 3\r\n'):
        obj.write(cmd)  # one record each
    sock.sendall(out.read())  # all four in one write
    got = b''
    deadline = time.monotonic() + 5
    while got.count(b'250 ') < 4:
        try:
            got += obj.read(65536)
            continue
        except ssl.SSLWantReadError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f'replies to 4 records sent in one segment: only {got!r}')
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            fail(f'closed; replies so far {got!r}')
        inc.write(chunk)
    if got.count(b'250 2.0.0 Ok\r\n') != 3:
        fail(f'want three "250 2.0.0 Ok": {got!r}')
    c.close()


# ---- implicit TLS -----------------------------------------------------------------------------

def test_implicit_tls(t):
    """A tls listener: the handshake first, then the 220 under TLS; a plaintext client gets
    no greeting and is closed."""
    d = start(t, listen_opts='tls')
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as s:
        s.settimeout(1.0)
        try:
            data = s.recv(100)
            fail(f'a plaintext client on the implicit-TLS listener got {data!r}')
        except socket.timeout:
            pass
        s.sendall(b'EHLO client.test\r\n')
        _expect_alert_and_close(s)
    mk = marker('implicit')
    with smtplib.SMTP_SSL('127.0.0.1', d.port, timeout=10, context=client_ctx(d.cert)) as s:
        code, _ = s.ehlo('client.test')
        if code != 250 or s.has_extn('starttls'):
            fail(f'EHLO under implicit TLS: {code}, features {s.esmtp_features}')
        s.sendmail('a@b.example', ['u@example.org'], f'Subject: 465\r\n\r\n{mk}\r\n')
    msg = wait_mail(d).decode('utf-8', 'replace')
    if mk not in msg or not RECEIVED_TLS_RE.search(msg):
        fail(f'implicit TLS message or its Received header wrong: {msg[:400]!r}')
    if not re.search(rb'event=tls client=127\.0\.0\.1 version=TLSv1\.3 .* implicit=1',
                     d.stderr()):
        fail(f'no event=tls line for the implicit TLS session: {d.stderr_tail()}')
    alive_and_serving_tls(d)


def alive_and_serving_tls(d):
    if not d.alive():
        fail(f'ternd died: {d.stderr_tail()}')
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as raw:
        s = client_ctx(d.cert).wrap_socket(raw, server_hostname=HOSTNAME)
        s.settimeout(5)
        if not s.recv(100).startswith(b'220 mx.test'):
            fail('no greeting under implicit TLS')
        s.close()


def test_implicit_tls_over_limit_closes(t):
    """Over max_connections_per_ip on a tls listener: closed without a plaintext 421 (a TLS
    client could not read it); the plaintext listener still says 421 4.7.0."""
    d = t.daemon({'max_connections_per_ip': '1'})
    d.cert, d.key = make_cert(d.tmpdir, 'server')
    plain = free_port()
    d.overrides.update({'tls_cert': d.cert, 'tls_key': d.key,
                        'listen': f'127.0.0.1:{{port}} tls, 127.0.0.1:{plain}'})
    d.start()
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as raw:
        first = client_ctx(d.cert).wrap_socket(raw, server_hostname=HOSTNAME)
        first.settimeout(5)
        if not first.recv(100).startswith(b'220 '):
            fail('no greeting under implicit TLS')
        with socket.create_connection(('127.0.0.1', d.port), timeout=5) as s:
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b''
            if data:
                fail(f'over the limit on the tls listener: got {data!r}, want a bare close')
        with Conn(plain, greet=False) as c:
            c.expect(421, '4.7.0')
        first.close()


def _tls_first_line(d):
    """A full implicit-TLS client: the first line under TLS, or None when the connection
    was closed during or right after the handshake (no reply)."""
    raw = socket.create_connection(('127.0.0.1', d.port), timeout=5)
    try:
        s = client_ctx(d.cert).wrap_socket(raw, server_hostname=HOSTNAME)
        s.settimeout(5)
        line = s.recv(512)
        s.close()
        return line or None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
        return None
    finally:
        raw.close()


def _client_hello_then_abort(d):
    """Send a ClientHello, read the server's first flight (it has signed), close."""
    ctx = client_ctx(d.cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=HOSTNAME)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as s:
        s.sendall(out.read())
        s.settimeout(5)
        got = s.recv(65536)
    return got


def test_implicit_tls_rate_counts_aborted(t):
    """rate_connections on an implicit-TLS listener (LMDB store): connections that abort
    right after the TCP connect or after the ClientHello are counted, so the next ones
    within the window are closed without a handshake or get 421 4.7.0 under TLS."""
    d = start(t, {'rate_connections': '3', 'rate_window': '60', 'relay_networks': ''},
              listen_opts='tls')  # relay_networks clients are exempt
    for _ in range(2):
        socket.create_connection(('127.0.0.1', d.port), timeout=5).close()
    first = _client_hello_then_abort(d)
    if not first.startswith(b'\x16\x03'):
        fail(f'the 3rd connection (within the limit) got no server handshake: {first[:50]!r}')
    # over the limit, silent (no ClientHello): closed without a handshake and without a reply
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as s:
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b''
        except socket.timeout:
            fail('connection 4 over rate_connections 3 (three aborted before it) is still open '
                 'after 5 s without a ClientHello')
        if data:
            fail(f'connection 4 over rate_connections 3: got {data[:100]!r}, want a bare close')
    # a full client: closed before its handshake, or 421 under TLS (when its ClientHello was
    # read before the store answered)
    line = _tls_first_line(d)
    if line is not None and not line.startswith(b'421 4.7.0'):
        fail(f'connection 5 over rate_connections 3 got {line!r}; want a close or 421 4.7.0 '
             f'under TLS')
    wait_log(d, 'event=refused client=127.0.0.1 reply=R_RATE_CONNECTIONS')
    # A ClientHello already waiting at accept (ternd stopped meanwhile) is handshaken before
    # the store answers: then the 421 comes under TLS.
    import threading
    d.signal(signal.SIGSTOP)
    th = threading.Timer(0.5, d.signal, (signal.SIGCONT,))
    th.start()
    try:
        line = _tls_first_line(d)
    finally:
        th.join()
        d.signal(signal.SIGCONT)
    if line is None or not line.startswith(b'421 4.7.0'):
        fail(f'over rate_connections, verdict during the handshake: got {line!r}, want 421 '
             f'4.7.0 under TLS')
    t.note(' '.join(re.findall(r'handshake=\w+', d.stderr().decode('utf-8', 'replace'))))


# ---- what is refused --------------------------------------------------------------------------

def test_old_protocols_refused(t):
    """TLS 1.0 and 1.1 clients get a protocol_version alert (the client allows them)."""
    d = start(t, listen_opts='tls')
    for v in ('TLSv1', 'TLSv1_1'):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_ciphers('ALL:@SECLEVEL=0')
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = getattr(ssl.TLSVersion, v)
        with socket.create_connection(('127.0.0.1', d.port), timeout=5) as raw:
            try:
                s = ctx.wrap_socket(raw)
                fail(f'{v}: handshake succeeded with {s.version()}')
            except ssl.SSLError as e:
                if e.reason != 'TLSV1_ALERT_PROTOCOL_VERSION':
                    fail(f'{v}: want the server\'s protocol_version alert, got {e!r}')
    alive_and_serving_tls(d)


def test_weak_ciphers_refused(t):
    """TLS 1.2 with CBC (even with ECDHE) or without ECDHE: handshake failure."""
    d = start(t, listen_opts='tls')
    for cipher in ('ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384', 'AES128-GCM-SHA256',
                   'ECDHE-ECDSA-AES128-GCM-SHA256'):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher + ':@SECLEVEL=0')
        with socket.create_connection(('127.0.0.1', d.port), timeout=5) as raw:
            try:
                s = ctx.wrap_socket(raw)
                got = s.cipher()[0]
                s.close()
                if cipher != 'ECDHE-ECDSA-AES128-GCM-SHA256':
                    fail(f'{cipher}: accepted ({got})')
            except ssl.SSLError as e:
                if cipher == 'ECDHE-ECDSA-AES128-GCM-SHA256':
                    fail(f'the control {cipher} was refused: {e!r}')


def _expect_alert_and_close(sock):
    """At most a TLS alert record (content type 21), then EOF; never an SMTP reply."""
    sock.settimeout(5.0)
    data = b''
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            chunk = b''
        except socket.timeout:
            fail(f'not closed within 5 s; got {data!r}')
        if not chunk:
            break
        data += chunk
    if data and not data.startswith(b'\x15\x03'):
        fail(f'the server answered a failed handshake with {data[:200]!r}, want only an alert')


def test_handshake_garbage(t):
    """Garbage instead of a ClientHello after STARTTLS closes the connection without an SMTP
    reply (at most a TLS alert); ternd goes on.  (Plaintext on the tls listener: see
    test_implicit_tls.)"""
    d = start(t)
    c = d.connect()
    c.cmd('EHLO client.test', 250)
    c.cmd('STARTTLS', 220, '2.0.0')
    c.send(b'\x16\x03\x01\x00\x05hello, this is not TLS\r\nQUIT\r\n' + bytes(range(256)))
    _expect_alert_and_close(c.sock)
    c.close()
    alive_and_serving(d)
    wait_log(d, 'event=tls-failed client=127.0.0.1')


def test_handshake_timeout(t):
    """A client that never finishes its handshake is closed after timeout_command."""
    d = start(t, {'timeout_command': '2'}, listen_opts='tls')
    with socket.create_connection(('127.0.0.1', d.port), timeout=5) as s:
        s.sendall(b'\x16\x03\x01')  # the start of a record, never finished
        t0 = time.monotonic()
        if not closed_within(s, 6.0):
            fail('a stalled handshake was not closed within 6 s (timeout_command = 2)')
        if time.monotonic() - t0 < 1.0:
            fail('a stalled handshake was closed before timeout_command')
    wait_log(d, 'event=tls-timeout')


def test_421_under_tls(t):  # covers: R_TIMEOUT, R_SHUTDOWN
    """The 421 paths write under TLS: the idle timeout, then the shutdown."""
    d = start(t, {'timeout_command': '2'})
    c = d.connect()
    starttls(c, d.cert)
    c.cmd('EHLO client.test', 250)
    c.expect(421, '4.4.2', timeout=6)
    try:
        c.expect_close(5.0)
    except Closed:
        pass
    c.close()
    c = d.connect()
    starttls(c, d.cert)
    c.cmd('EHLO client.test', 250)
    d.signal(signal.SIGTERM)
    c.expect(421, '4.3.2')
    c.close()
    if d.wait_exit(10) != 0:
        fail(f'ternd did not exit 0 after SIGTERM: {d.stderr_tail()}')
    d.stopped = True


# ---- SIGHUP -----------------------------------------------------------------------------------

def _peer_der(d, cafile):
    c = d.connect()
    starttls(c, cafile)
    der = c.sock.getpeercert(binary_form=True)
    c.cmd('QUIT', 221)
    c.close()
    return der


def _der(path):
    return ssl.PEM_cert_to_DER_cert(open(path).read())


def test_sighup_reload(t):
    """SIGHUP: new connections get the new certificate, an open one keeps working; a bad
    certificate at SIGHUP keeps the old one."""
    d = start(t)
    old_der = _der(d.cert)
    old = d.connect()
    starttls(old, d.cert)
    old.cmd('EHLO client.test', 250)
    if old.sock.getpeercert(binary_form=True) != old_der:
        fail('the first connection did not get the first certificate')
    newcert, newkey = make_cert(d.tmpdir, 'second')
    shutil.copy(newcert, d.cert)
    shutil.copy(newkey, d.key)
    d.signal(signal.SIGHUP)
    wait_log(d, 'event=reload tls=reloaded')
    if _peer_der(d, newcert) != _der(newcert):
        fail('after SIGHUP a new connection did not get the new certificate')
    old.cmd('NOOP', 250)
    old.cmd('MAIL FROM:<a@b.example>', 250)
    old.cmd('RSET', 250)
    old.cmd('QUIT', 221)
    old.close()
    with open(d.cert, 'w') as f:
        f.write('-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n')
    d.signal(signal.SIGHUP)
    wait_log(d, 'event=reload tls=kept-old')
    if _peer_der(d, newcert) != _der(newcert):
        fail('after a SIGHUP with a bad certificate the last good one is not served')


def test_bad_cert_refused_at_start(t):
    """ternd -n and ternd itself refuse a key that does not match the certificate, and a
    certificate file that is not one, naming the file."""
    d = t.daemon()
    cert, _key = make_cert(d.tmpdir, 'one')
    _cert2, key2 = make_cert(d.tmpdir, 'two')
    conf = os.path.join(d.tmpdir, 'bad.conf')
    with open(conf, 'w') as f:
        f.write(f'listen = 127.0.0.1:1\nspool_dir = {d.tmpdir}/spool\n'
                f'mailbox_dir = {d.tmpdir}/mail\ntls_cert = {cert}\ntls_key = {key2}\n')
    p = subprocess.run([d.path, '-n', '-c', conf], capture_output=True, timeout=20)
    err = p.stderr.decode('utf-8', 'replace')
    if p.returncode != 1 or f'tls_key {key2}' not in err or 'match' not in err:
        fail(f'ternd -n with a mismatched key: status {p.returncode}, {err!r}')
    p = subprocess.run([d.path, '-n', '-c', conf, '-o', f'tls_cert={conf}'],
                       capture_output=True, timeout=20)
    err = p.stderr.decode('utf-8', 'replace')
    if p.returncode != 1 or f'tls_cert {conf}:' not in err:
        fail(f'ternd -n with a certificate that is not one: status {p.returncode}, {err!r}')
    p = subprocess.run([d.path, '-f', '-c', conf], capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode('utf-8', 'replace')
    if p.returncode == 0 or f'tls_key {key2}' not in err or 'match' not in err:
        fail(f'ternd started with a mismatched key: status {p.returncode}, {err[-500:]!r}')


# ---- testssl.sh -------------------------------------------------------------------------------

# What a scan may find (docs/design.md "TLS"): TLS 1.2 and 1.3 only, and only ciphers with a
# forward-secret key exchange (ECDHE; TLS 1.3's are all ephemeral) and an AEAD cipher
# (AES-GCM, ChaCha20-Poly1305).  An allow-list, so NULL, EXPORT, RC4, DES/3DES, CBC (with SHA-1
# or SHA-2), static RSA, DHE, PSK, SRP and anonymous suites are all outside it by construction.
WEAK_PROTOCOLS = ('SSLv2', 'SSLv3', 'TLS1', 'TLS1_1')
GOOD_CIPHER_RE = re.compile(r'^TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$|'
                            r'^TLS_ECDHE_(RSA|ECDSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|'
                            r'CHACHA20_POLY1305_SHA256)$')


def test_testssl(t):
    """testssl.sh against the STARTTLS listener: only TLS 1.2/1.3, only ECDHE+AEAD.
    --nodns none: no DNS query at all (the target is an address); only 127.0.0.1 is
    contacted."""
    tool = shutil.which('testssl') or shutil.which('testssl.sh')
    if tool is None:
        raise Skip('testssl.sh is not installed (Debian package testssl.sh; scripts/deps)')
    d = start(t)
    jf = os.path.join(d.tmpdir, 'testssl.json')
    cmd = [tool, '--quiet', '--color', '0', '--warnings', 'off', '--nodns', 'none', '--sneaky',
           '--starttls', 'smtp', '--protocols', '--each-cipher', '--jsonfile', jf,
           f'127.0.0.1:{d.port}']
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=110,
                       env=dict(os.environ, TERM='dumb'))
    secs = time.monotonic() - t0
    try:
        with open(jf) as f:
            findings = json.load(f)
    except (OSError, ValueError) as e:
        fail(f'testssl.sh wrote no JSON ({e!r}); status {p.returncode}; '
             f'{p.stdout.decode("utf-8", "replace")[-1500:]}')
    offered, names = {}, []
    for f in findings:
        fid, finding = f.get('id', ''), f.get('finding', '')
        if fid in ('SSLv2', 'SSLv3', 'TLS1', 'TLS1_1', 'TLS1_2', 'TLS1_3'):
            offered[fid] = finding
        if fid.startswith('cipher_x'):
            # "xc02b   ECDHE-ECDSA-AES128-GCM-SHA256   ECDH 253   AESGCM   128   TLS_ECDHE_..."
            names.append(finding.split()[-1])
    for v in WEAK_PROTOCOLS:
        if not offered.get(v, '').startswith('not offered'):
            fail(f'{v}: {offered.get(v)!r} (want "not offered")')
    for v in ('TLS1_2', 'TLS1_3'):
        if not offered.get(v, '').startswith('offered'):
            fail(f'{v} not offered: {offered.get(v)!r}')
    if not names:
        fail(f'testssl.sh listed no ciphers: {findings[:12]}')
    weak = [n for n in names if not GOOD_CIPHER_RE.match(n)]
    if weak:
        fail(f'ciphers outside ECDHE+AEAD / TLS 1.3 offered: {weak}')
    t.note(f'testssl.sh took {secs:.0f} s; ciphers: {" ".join(names)}')
