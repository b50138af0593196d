"""
test_relay_tls.py - outbound STARTTLS (RFC 3207): ternd relaying into a second ternd that
offers STARTTLS, per tls_policy (none, may, encrypt, verify), and into scripted servers
(tests/e2e/smtpserver.py) that do not offer STARTTLS or break the handshake.

Routing is by MX through a hermetic unbound config (remote.test MX mx.remote.test, A
127.0.0.3), so `verify` checks the certificate against the MX host name.  Certificates are
self-signed, made by each test with `openssl req -x509`; `tls_ca_file` names the one to
trust.  That TLS was used is read where it cannot be faked: the receiving ternd's Received
header ("with ESMTPS (version=... cipher=...)"), and its absence in plaintext.
"""

import os
import re
import subprocess

from harness import Skip, fail, marker
from test_relay_remote import (Peers, events, expect_event, message, new_files, no_event,
                               pick_port, queue_empty, read, relay_ternd, submit, wait_s,
                               wait_until)

MX = [('remote.test', 'MX', '10 mx.remote.test'), ('mx.remote.test', 'A', '127.0.0.3')]
RECEIVED_RE = re.compile(r'(?m)^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*')
ESMTPS_RE = re.compile(r'with ESMTPS\r\n\t\(version=TLSv1\.[23] cipher=[A-Z0-9_-]+\)')


def make_cert(dirpath, name, dns):
    """A self-signed EC certificate for DNS name dns: (cert path, key path)."""
    cert = os.path.join(dirpath, name + '.crt')
    key = os.path.join(dirpath, name + '.key')
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                        '-days', '2', '-subj', f'/CN={dns}', '-addext',
                        f'subjectAltName=DNS:{dns}'],
                       check=True, capture_output=True, timeout=30)
    except FileNotFoundError:
        raise Skip('openssl not installed')
    return cert, key


def receiver(t, cert_dns='mx.remote.test', tls=True):
    """The second ternd: mx.remote.test on 127.0.0.3, local_domains remote.test, STARTTLS with
    a certificate for cert_dns (tls), or none."""
    b = t.daemon({'listen': '127.0.0.3:{port}', 'local_domains': 'remote.test',
                  'hostname': 'mx.remote.test'})
    if tls:
        b.cert, b.key = make_cert(b.tmpdir, 'server', cert_dns)
        b.overrides['tls_cert'] = b.cert
        b.overrides['tls_key'] = b.key
    return b.start()


def sender(t, b_port, policy, ca=None, extra=None):
    conf = {'tls_policy': policy, 'log_level': 'debug'}
    if ca is not None:
        conf['tls_ca_file'] = ca
    conf.update(extra or {})
    return relay_ternd(t, MX, b_port, conf)


def delivered_copy(t, b, addr='user@remote.test'):
    files = wait_until('the message in the second ternd\'s Maildir', lambda: new_files(b, addr),
                       timeout=wait_s(t))
    if len(files) != 1:
        fail(f'{len(files)} messages in the Maildir, want 1')
    data = read(files[0]).decode('utf-8', 'replace')
    received = RECEIVED_RE.findall(data)
    if len(received) != 2:
        fail(f'{len(received)} Received headers, want 2: {received!r}')
    return received[0]  # the second ternd's


def relay_ok(t, policy, ca=None, cert_dns='mx.remote.test', want_tls=True):
    b = receiver(t, cert_dns)
    a = sender(t, b.port, policy, ca)
    qid = submit(a, ['user@remote.test'], message(marker('tls-' + policy)))
    expect_event(t, a, qid, 'user@remote.test', 'delivered', relay='mx.remote.test',
                 prefix='250 2.0.0 ')
    rcv = delivered_copy(t, b)
    if want_tls and not ESMTPS_RE.search(rcv):
        fail(f'tls_policy = {policy}: the receiving ternd did not get it over TLS: {rcv!r}')
    if not want_tls and 'ESMTPS' in rcv:
        fail(f'tls_policy = {policy}: sent over TLS, want plaintext: {rcv!r}')
    if want_tls and not re.search(r'event=tls host=mx\.remote\.test\[127\.0\.0\.3\]:\d+ '
                                  r'tls="TLSv1\.[23] \S+" policy=' + policy,
                                  a.stderr().decode('utf-8', 'replace')):
        fail(f'no event=tls line in the sending ternd\'s log: {a.stderr_tail()!r}')
    queue_empty(t, a)
    return a, b


# ---- into a second ternd ----------------------------------------------------------------------

def test_relay_tls_verify_delivers(t):
    """verify with the receiver's certificate as the trust anchor: delivered over TLS."""
    b = receiver(t)
    # the certificate is checked: trusting it by tls_ca_file is what makes it pass
    a = sender(t, b.port, 'verify', b.cert)
    qid = submit(a, ['user@remote.test'], message(marker('verify')))
    expect_event(t, a, qid, 'user@remote.test', 'delivered', relay='mx.remote.test',
                 prefix='250 2.0.0 ')
    rcv = delivered_copy(t, b)
    if not ESMTPS_RE.search(rcv):
        fail(f'not received over TLS: {rcv!r}')
    queue_empty(t, a)


def test_relay_tls_verify_untrusted_deferred(t):  # covers: R_DLV_TLS_FAILED
    """verify: a certificate nobody vouches for, or one for another name, defers (4.7.5)."""
    b = receiver(t)
    other, _key = make_cert(b.tmpdir, 'other', 'mx.remote.test')
    a = sender(t, b.port, 'verify', other)  # trusts another certificate of the same name
    qid = submit(a, ['user@remote.test'], message(marker('untrusted')))
    e = expect_event(t, a, qid, 'user@remote.test', 'deferred',
                     prefix=f'451 4.7.5 TLS with mx.remote.test[127.0.0.3]:{b.port} failed: '
                            f'certificate verify failed: ')
    if 'self-signed certificate' not in e['reply'] and 'self signed' not in e['reply']:
        fail(f'the reason is not the untrusted certificate: {e["reply"]!r}')
    if new_files(b, 'user@remote.test'):
        fail('delivered although the certificate did not verify')

    # the system's trust store (no tls_ca_file; read inside the sandbox) does not know it either
    a3 = sender(t, b.port, 'verify')
    qid3 = submit(a3, ['user@remote.test'], message(marker('system-store')))
    e3 = expect_event(t, a3, qid3, 'user@remote.test', 'deferred',
                      prefix=f'451 4.7.5 TLS with mx.remote.test[127.0.0.3]:{b.port} failed: '
                             f'certificate verify failed: ')
    if 'self-signed certificate' not in e3['reply'] and 'self signed' not in e3['reply']:
        fail(f'the reason is not the untrusted certificate: {e3["reply"]!r}')

    # trusted, but issued for another host name than the MX
    b2 = receiver(t, cert_dns='other.example')
    a2 = sender(t, b2.port, 'verify', b2.cert)
    qid2 = submit(a2, ['user@remote.test'], message(marker('mismatch')))
    e2 = expect_event(t, a2, qid2, 'user@remote.test', 'deferred',
                      prefix=f'451 4.7.5 TLS with mx.remote.test[127.0.0.3]:{b2.port} failed: '
                             f'certificate verify failed: ')
    if 'hostname mismatch' not in e2['reply']:
        fail(f'the reason is not the host name: {e2["reply"]!r}')
    if new_files(b2, 'user@remote.test'):
        fail('delivered although the certificate names another host')


def test_relay_tls_may_untrusted_delivers(t):
    """may: the certificate is not checked; delivered over TLS all the same."""
    relay_ok(t, 'may')


def test_relay_tls_encrypt_untrusted_delivers(t):
    """encrypt: TLS required, certificate not checked."""
    relay_ok(t, 'encrypt')


def test_relay_tls_none_plaintext(t):
    """none: STARTTLS offered and not used."""
    relay_ok(t, 'none', want_tls=False)


def test_relay_tls_required_not_offered(t):  # covers: R_DLV_TLS_REQUIRED
    """encrypt and verify: a server without STARTTLS gets nothing (4.7.4); may sends in
    plaintext."""
    b = receiver(t, tls=False)
    for policy in ('encrypt', 'verify'):
        a = sender(t, b.port, policy)
        qid = submit(a, ['user@remote.test'], message(marker('notls-' + policy)))
        expect_event(t, a, qid, 'user@remote.test', 'deferred',
                     reply=f'451 4.7.4 TLS is required by policy (tls_policy = {policy}), but '
                           f'mx.remote.test[127.0.0.3]:{b.port}: STARTTLS not offered')
        if new_files(b, 'user@remote.test'):
            fail(f'tls_policy = {policy}: delivered in plaintext')
        problems = a.stop()
        if problems:
            fail('; '.join(problems))
    a = sender(t, b.port, 'may')
    qid = submit(a, ['user@remote.test'], message(marker('notls-may')))
    expect_event(t, a, qid, 'user@remote.test', 'delivered', prefix='250 2.0.0 ')
    if 'ESMTPS' in delivered_copy(t, b):
        fail('received over TLS from a server without a certificate?')


# ---- a broken handshake ----------------------------------------------------------------------

def test_relay_tls_may_handshake_fails_then_plaintext(t):
    """may: the handshake fails -> deferred (4.7.5); the next attempt goes in plaintext and
    delivers.  encrypt: deferred, and never in plaintext."""
    port = pick_port(['127.0.0.3'])
    with Peers(t) as p:
        mx = p.smtp('127.0.0.3', port, ['ext=STARTTLS', 'starttls=220 2.0.0 Ready'])
        a = relay_ternd(t, MX, port, {'tls_policy': 'may'})
        qid = submit(a, ['user@remote.test'], message(marker('broken')))
        expect_event(t, a, qid, 'user@remote.test', 'deferred',
                     prefix=f'451 4.7.5 TLS with mx.remote.test[127.0.0.3]:{port} failed: ')
        expect_event(t, a, qid, 'user@remote.test', 'delivered', reply='250 2.0.0 Ok: queued')
        if mx.stored() != {'user@remote.test': 1}:
            fail(f'stored {mx.stored()}, want one copy')
        tr = mx.transcript()
        sessions = tr.split('# connect')[1:]
        if len(sessions) != 2 or 'C: STARTTLS' not in sessions[0] or \
                'C: STARTTLS' in sessions[1]:
            fail(f'want STARTTLS in the first session only, then plaintext:\n{tr}')
        log = a.stderr().decode('utf-8', 'replace')
        if not re.search(r'event=tls-failed host=mx\.remote\.test\[127\.0\.0\.3\]:\d+ '
                         r'policy=may', log) or \
                not re.search(r'event=tls-skipped host=mx\.remote\.test\[127\.0\.0\.3\]:\d+ '
                              r'policy=may', log):
            fail(f'no log lines for the failed handshake and the plaintext retry: {log[-1500:]}')
        problems = a.stop()
        if problems:
            fail('; '.join(problems))

        e = relay_ternd(t, MX, port, {'tls_policy': 'encrypt'})
        qid = submit(e, ['user@remote.test'], message(marker('broken-enc')))
        expect_event(t, e, qid, 'user@remote.test', 'deferred',
                     prefix=f'451 4.7.5 TLS with mx.remote.test[127.0.0.3]:{port} failed: ')
        wait_until('a second attempt', lambda: len(events(e, qid, 'user@remote.test',
                                                          'deferred')) >= 2, timeout=wait_s(t))
        no_event(e, qid, 'user@remote.test', 'delivered')
        if mx.stored() != {'user@remote.test': 1}:
            fail(f'encrypt: sent in plaintext after a failed handshake: {mx.stored()}')


def test_relay_tls_reused_connection(t):
    """verify, several messages to one destination: they share TLS connections (fewer
    handshakes than messages), and every one arrives over TLS."""
    n = 6
    b = receiver(t)
    a = sender(t, b.port, 'verify', b.cert, {'max_outbound_per_domain': '1'})
    qids = [submit(a, [f'u{i}@remote.test'], message(marker(f'reuse{i}'))) for i in range(n)]
    for i, qid in enumerate(qids):
        expect_event(t, a, qid, f'u{i}@remote.test', 'delivered', prefix='250 2.0.0 ')
    for i in range(n):
        rcv = delivered_copy(t, b, f'u{i}@remote.test')
        if not ESMTPS_RE.search(rcv):
            fail(f'message {i} not received over TLS: {rcv!r}')
    log = a.stderr().decode('utf-8', 'replace')
    handshakes = len(re.findall(r'event=tls host=mx\.remote\.test', log))
    if not 1 <= handshakes < n:
        fail(f'{handshakes} TLS handshakes for {n} messages: want reuse (fewer, at least one)')
    t.note(f'{handshakes} handshakes for {n} messages')
    queue_empty(t, a)


def _valgrind_usable(ternd_path):
    """valgrind, unless ternd is built with a sanitizer (the two do not mix)."""
    import shutil
    if shutil.which('valgrind') is None:
        return False
    try:
        ldd = subprocess.run(['ldd', ternd_path], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b'libasan' not in ldd and b'libubsan' not in ldd


def test_relay_tls_dane_relay_host_is_may(t):
    """tls_policy = dane with relay_host: getaddrinfo gives no DNSSEC status, so the relay is
    `may` (docs/design.md): delivered over TLS to a receiver with a self-signed certificate.
    The relay host's DANE state used to be read from an uninitialised stack array; the
    sender runs under valgrind when it can, which must report nothing."""
    b = receiver(t)
    vg = _valgrind_usable(t.ternd_path)
    a = t.daemon({'relay_host': f'127.0.0.3:{b.port}', 'tls_policy': 'dane',
                  'log_level': 'debug', 'min_backoff': '1', 'max_backoff': '2'},
                 wrap=['valgrind', '--error-exitcode=99', '--track-origins=yes'] if vg else None)
    a.start()
    qid = submit(a, ['user@remote.test'], message(marker('dane-relay-host')))
    expect_event(t, a, qid, 'user@remote.test', 'delivered', prefix='250 2.0.0 ')
    rcv = delivered_copy(t, b)
    if not ESMTPS_RE.search(rcv):
        fail(f'not received over TLS: {rcv!r}')
    log = a.stderr().decode('utf-8', 'replace')
    if not re.search(r'event=tls host=\S+ tls="TLSv1\.[23] \S+" policy=dane', log):
        fail(f'no event=tls line with policy=dane: {a.stderr_tail()!r}')
    if vg:
        for pat in ('uninitialised', 'Invalid read', 'Invalid write'):
            if pat in log:
                i = log.find(pat)
                fail(f'valgrind: {log[max(0, i - 300):i + 1500]}')
    else:
        t.note('valgrind not used (not installed, or a sanitizer build)')


class _TlsSink:
    """A minimal SMTP server with STARTTLS on host:port, in a thread of the test: records the
    SNI name each handshake carried (None: no SNI) and the recipients of each message."""

    def __init__(self, host, cert, key):
        import socket
        import ssl
        import threading
        self.sni = []
        self.rcpts = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = lambda _s, name, _c: self.sni.append(name) and None
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            try:
                self._session(c)
            except Exception:  # a failed handshake or a dropped client: next connection
                pass
            finally:
                c.close()

    def _session(self, c):
        c.settimeout(10)
        f = c.makefile('rb')
        c.sendall(b'220 sink ESMTP\r\n')
        tls = False
        rcpts = []
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b'EHLO', b'HELO'):
                c.sendall(b'250-sink\r\n' + (b'' if tls else b'250-STARTTLS\r\n') +
                          b'250 8BITMIME\r\n')
            elif verb == b'STAR':
                c.sendall(b'220 go ahead\r\n')
                c = self.ctx.wrap_socket(c, server_side=True)
                f = c.makefile('rb')
                tls = True
            elif verb == b'MAIL':
                rcpts = []
                c.sendall(b'250 2.1.0 ok\r\n')
            elif verb == b'RCPT':
                rcpts.append(line[8:].strip().strip(b'<>').decode())
                c.sendall(b'250 2.1.5 ok\r\n')
            elif verb == b'DATA':
                c.sendall(b'354 go\r\n')
                while f.readline() not in (b'.\r\n', b''):
                    pass
                self.rcpts.append((tls, rcpts))
                c.sendall(b'250 2.0.0 stored\r\n')
            elif verb == b'QUIT':
                c.sendall(b'221 bye\r\n')
                return
            else:
                c.sendall(b'250 ok\r\n')

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def test_relay_tls_verify_address_literal(t):
    """A recipient domain that is an address literal, u@[127.0.0.3]: TLS is about the address,
    not the bracketed text -- no SNI (host names only, RFC 6066 §3), and under verify the
    certificate must name the IP address (subjectAltName IP:127.0.0.3): delivered over TLS.
    (The literal used to be sent as SNI and matched as a DNS name: never verified.)"""
    d = os.path.join(t.tmproot, 'literal-tls')
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, 'ip.crt'), os.path.join(d, 'ip.key')
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                        '-days', '2', '-subj', '/CN=127.0.0.3', '-addext',
                        'subjectAltName=IP:127.0.0.3'],
                       check=True, capture_output=True, timeout=30)
    except FileNotFoundError:
        raise Skip('openssl not installed')
    sink = _TlsSink('127.0.0.3', cert, key)
    try:
        a = sender(t, sink.port, 'verify', cert)
        qid = submit(a, ['u@[127.0.0.3]'], message(marker('literal')))
        expect_event(t, a, qid, 'u@[127.0.0.3]', 'delivered', prefix='250 2.0.0 ')
        if sink.rcpts != [(True, ['u@[127.0.0.3]'])]:
            fail(f'the sink got {sink.rcpts!r}, want one message over TLS')
        if sink.sni != [] and sink.sni != [None]:
            fail(f'SNI sent for an address literal: {sink.sni!r}')
    finally:
        sink.stop()
