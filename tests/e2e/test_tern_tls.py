"""
test_tern_tls.py - TLS and AUTH in `tern send` and `tern probe`, against a real ternd with a
certificate made here (openssl req, as test_tls.py; SANs DNS:mx.test and IP:127.0.0.1) and
users made with `tern passwd` (as test_auth.py).

send: --starttls verified against the test certificate (delivered, Received says ESMTPS);
a wrong CA file (75, no MAIL sent, nothing delivered), and the same with --insecure (0);
STARTTLS not offered (75); --tls to an implicit-TLS listener; --auth right (235, ESMTPSA),
wrong (535 -> 69), from a --password-file, the password hidden in -v; the usage refusals
(--auth without TLS, no password).  probe: --starttls and --tls print the version, cipher,
subject, SANs, expiry and the verification result; not offered -> 75.
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import SAN_PATTERNS, Skip, fail  # noqa: E402
from test_tls import make_cert  # noqa: E402
from test_auth import write_users  # noqa: E402

TIMEOUT = 30
WAIT = 30.0
USERS = {'alice': 'secret'}
FROM = 'a@client.example'


def tern(t, *args, env=None, stdin=b''):
    e = dict(os.environ)
    e.pop('TERN_PASSWORD', None)
    e.update(env or {})
    p = subprocess.run([os.path.join(os.path.dirname(t.ternd_path), 'tern')] + list(args),
                       input=stdin, capture_output=True, timeout=TIMEOUT, env=e)
    for pat in SAN_PATTERNS:
        if pat in p.stderr:
            fail(f'{args}: sanitizer finding:\n{p.stderr.decode("utf-8", "replace")[:1500]}')
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def want(what, rc, out, err, code, *needles, absent=()):
    if rc != code:
        fail(f'{what}: exit {rc}, want {code}\nstdout: {out}\nstderr: {err}')
    for n in needles:
        if n not in out:
            fail(f'{what}: output lacks {n!r}:\n{out}\nstderr: {err}')
    for n in absent:
        if n in out or n in err:
            fail(f'{what}: output has {n!r}:\n{out}\nstderr: {err}')


def daemon(t, listen_opts='', tls=True, users=False, submission=False):
    """A ternd (its cert on d.cert when tls); listen_opts on its only listener."""
    if subprocess.run(['which', 'openssl'], capture_output=True).returncode != 0:
        raise Skip('openssl is not installed')
    d = t.daemon({})
    if tls:
        d.cert, d.key = make_cert(d.tmpdir, 'server')
        d.overrides['tls_cert'] = d.cert
        d.overrides['tls_key'] = d.key
    if users:
        path = os.path.join(d.tmpdir, 'users')
        write_users(path, t, USERS)
        d.overrides['auth_users'] = path
        d.overrides['relay_networks'] = '192.0.2.0/24'
    opts = ' '.join(o for o in (listen_opts, 'submission' if submission else '') if o)
    if opts:
        d.overrides['listen'] = '127.0.0.1:{port} ' + opts
    return d.start()


def other_ca(t):
    """A certificate that did not sign the server's: a wrong CA file."""
    cert, _ = make_cert(t.tmproot, 'other-%d' % time.monotonic_ns())
    return cert


def mails(d, addr):
    local, dom = addr.rsplit('@', 1)
    p = os.path.join(d.mailbox_dir, dom, local, 'new')
    return sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else []


def wait_mail(d, addr, marker):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for f in mails(d, addr):
            data = open(f, 'rb').read()
            if marker.encode() in data:
                return data
        time.sleep(0.05)
    fail(f'no message with {marker!r} for {addr} within {WAIT:.0f} s')


def received(data):
    head = data.split(b'\r\n\r\n', 1)[0].replace(b'\r\n\t', b' ').replace(b'\r\n ', b' ')
    return [h.decode('utf-8', 'replace') for h in head.split(b'\r\n') if h.startswith(b'Received:')]


def marker(tag):
    return f'{tag}-{os.getpid()}-{time.monotonic_ns()}'


def send(t, d, *extra, to='u@example.org', subject=None, sender=FROM, env=None):
    return tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', sender, '--to', to,
                '--subject', subject or marker('tls'), '--timeout', '20', *extra, env=env)


# ---- tern send --------------------------------------------------------------------------------

def test_send_starttls_verified(t):
    d = daemon(t)
    m = marker('starttls')
    rc, out, err = send(t, d, '--starttls', '--ca-file', d.cert, '-v', subject=m)
    want('send --starttls', rc, out, err, 0, 'C: STARTTLS', 'S: 220 ',
         'certificate verified for 127.0.0.1 against ' + d.cert, 'TLS: TLSv1.',
         'result: accepted by every recipient')
    # the EHLO after the handshake is sent again, and MAIL only after it
    if out.count('C: EHLO') != 2 or out.index('C: MAIL') < out.index('TLS: TLSv1.'):
        fail(f'EHLO again through TLS, then MAIL:\n{out}')
    rec = received(wait_mail(d, 'u@example.org', m))
    if not rec or 'with ESMTPS ' not in rec[0]:
        fail(f'Received header: want ESMTPS: {rec}')


def test_send_starttls_wrong_ca(t):
    d = daemon(t)
    m = marker('wrongca')
    rc, out, err = send(t, d, '--starttls', '--ca-file', other_ca(t), '-v', subject=m)
    want('send with a wrong CA', rc, out, err, 75, 'certificate verify failed',
         'result: deferred', absent=('C: MAIL', 'C: EHLO client', 'accepted'))
    if out.count('C: EHLO') != 1:
        fail(f'nothing may follow a failed handshake:\n{out}')
    # --insecure: the same server, the same certificate, through
    rc, out, err = send(t, d, '--starttls', '--insecure', subject=m + '-insecure')
    want('send --insecure', rc, out, err, 0, 'certificate not verified (--insecure)')
    wait_mail(d, 'u@example.org', m + '-insecure')
    # the system store does not know the test's self-signed certificate either
    rc, out, err = send(t, d, '--starttls')
    want('send against the system store', rc, out, err, 75, 'certificate verify failed')
    time.sleep(0.5)
    for f in mails(d, 'u@example.org'):
        if (m + '\r\n').encode() in open(f, 'rb').read():
            fail('a message went through a handshake that failed verification')


def test_send_starttls_not_offered(t):
    d = daemon(t, tls=False)
    rc, out, err = send(t, d, '--starttls', '-v')
    want('send --starttls to a server without TLS', rc, out, err, 75, 'STARTTLS not offered',
         'result: deferred', absent=('C: MAIL', 'C: STARTTLS'))


def test_send_implicit_tls(t):
    d = daemon(t, listen_opts='tls')
    m = marker('implicit')
    rc, out, err = send(t, d, '--tls', '--ca-file', d.cert, '-v', subject=m)
    want('send --tls', rc, out, err, 0, 'TLS: TLSv1.', 'certificate verified for 127.0.0.1',
         absent=('C: STARTTLS',))
    if out.index('TLS: TLSv1.') > out.index('S: 220 '):
        fail(f'the handshake comes before the greeting:\n{out}')
    rec = received(wait_mail(d, 'u@example.org', m))
    if not rec or 'with ESMTPS ' not in rec[0]:
        fail(f'Received header: want ESMTPS: {rec}')
    # plaintext to the TLS port: no greeting arrives, a transient failure
    rc, out, err = tern(t, 'send', '--server', f'127.0.0.1:{d.port}', '--from', FROM, '--to',
                        'u@example.org', '--timeout', '2')
    want('plaintext send to a TLS port', rc, out, err, 75)


def test_send_auth(t):
    d = daemon(t, users=True, submission=True)
    m = marker('auth')
    args = ('--starttls', '--ca-file', d.cert, '--auth', 'alice', '-v')
    rc, out, err = send(t, d, *args, sender='alice@example.org', subject=m,
                        env={'TERN_PASSWORD': 'secret'})
    secret_b64 = 'AGFsaWNlAHNlY3JldA=='  # base64("\0alice\0secret")
    want('send --auth', rc, out, err, 0, 'C: AUTH PLAIN ********', 'S: 235 ',
         'AUTH PLAIN as alice: accepted', absent=(secret_b64, 'secret'))
    if out.index('C: AUTH') < out.index('TLS: TLSv1.') or out.index('C: MAIL') < out.index('S: 235'):
        fail(f'AUTH after TLS, MAIL after 235:\n{out}')
    rec = received(wait_mail(d, 'u@example.org', m))
    if not rec or 'with ESMTPSA ' not in rec[0]:
        fail(f'Received header: want ESMTPSA: {rec}')

    # a wrong password: 535, permanent (69), no MAIL
    rc, out, err = send(t, d, *args, sender='alice@example.org',
                        env={'TERN_PASSWORD': 'wrong'})
    want('send --auth, wrong password', rc, out, err, 69, 'S: 535 ', ': refused: 535 ',
         'AUTH as alice failed: 535 5.7.8',
         'final reply: 535', absent=('C: MAIL', 'accepted'))

    # the password from a file (first line; the environment is ignored then)
    pw = os.path.join(d.tmpdir, 'pw')
    with open(pw, 'w') as f:
        f.write('secret\n')
    rc, out, err = send(t, d, '--starttls', '--ca-file', d.cert, '--auth', 'alice',
                        '--password-file', pw, sender='alice@example.org',
                        env={'TERN_PASSWORD': 'wrong'})
    want('send --password-file', rc, out, err, 0, 'AUTH PLAIN as alice: accepted')

    # without AUTH the submission port refuses MAIL (530): permanent
    rc, out, err = send(t, d, '--starttls', '--ca-file', d.cert, sender='alice@example.org')
    want('send to submission without --auth', rc, out, err, 69, '530')


def test_send_auth_usage(t):
    d = daemon(t, users=True)
    for extra, env, why in (
            (('--auth', 'alice'), {'TERN_PASSWORD': 'secret'}, 'needs --starttls or --tls'),
            (('--starttls', '--auth', 'alice'), {}, 'TERN_PASSWORD'),
            (('--starttls', '--tls'), {}, 'not both'),
            (('--insecure',), {}, 'go with --starttls or --tls'),
            (('--starttls', '--password-file', '/nonexistent'), {}, 'goes with --auth')):
        rc, out, err = send(t, d, *extra, env=env)
        want(f'send {extra}', rc, out, err, 64, absent=('C: ',))
        if why not in err:
            fail(f'send {extra}: stderr lacks {why!r}: {err!r}')
    # the password never goes on the command line: there is no option for it
    rc, out, err = send(t, d, '--starttls', '--auth', 'alice', '--password', 'secret')
    want('send --password', rc, out, err, 64)


# ---- tern probe -------------------------------------------------------------------------------

def test_probe_starttls(t):
    d = daemon(t)
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--starttls', '--ca-file', d.cert,
                        '--to', 'u@example.org', '--timeout', '20')
    want('probe --starttls', rc, out, err, 0, '>>> STARTTLS', 'tls: TLSv1.',
         'tls: certificate subject: CN=mx.test', 'DNS:mx.test, IP:127.0.0.1',
         'tls: certificate not after: 20',
         'tls: verified: yes (against %s, for the name 127.0.0.1)' % d.cert,
         '<u@example.org>: would be accepted now')
    if out.count('>>> EHLO') != 2 or out.index('>>> MAIL') < out.index('tls: verified'):
        fail(f'EHLO again after the handshake, then MAIL:\n{out}')
    # a wrong CA file: reported, the verdict stands
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--starttls', '--ca-file',
                        other_ca(t), '--timeout', '20')
    want('probe with a wrong CA', rc, out, err, 0, 'tls: verified: no: ',
         absent=('tls: verified: yes',))
    # the name checked is the host probed: "localhost" is not in the certificate
    rc, out, err = tern(t, 'probe', f'localhost:{d.port}', '--starttls', '--ca-file', d.cert,
                        '--timeout', '20')
    if 'connected to' in out:
        want('probe localhost', rc, out, err, 0, 'tls: verified: no: ',
             'for the name localhost')


def test_probe_starttls_not_offered(t):
    d = daemon(t, tls=False)
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--starttls', '--to', 'u@example.org',
                        '--timeout', '20')
    want('probe --starttls without TLS', rc, out, err, 75, 'STARTTLS not offered',
         absent=('>>> MAIL', 'tls: '))


def test_probe_implicit_tls(t):
    d = daemon(t, listen_opts='tls')
    rc, out, err = tern(t, 'probe', f'127.0.0.1:{d.port}', '--tls', '--ca-file', d.cert,
                        '--timeout', '20')
    want('probe --tls', rc, out, err, 0, 'tls: TLSv1.', 'tls: verified: yes',
         absent=('>>> STARTTLS',))
    if out.index('tls: TLSv1.') > out.index('<<< 220'):
        fail(f'the handshake comes before the greeting:\n{out}')


def test_probe_dane(t):
    """probe DOMAIN --starttls with DNSSEC-signed TLSA records (test_dane.py's signed zone and
    second ternd on 127.0.0.3): a DANE-EE record of the receiver's key verifies (the record and
    depth printed) although PKIX does not (self-signed); a digest of nothing fails the
    handshake as ternd's delivery would (75); the same zone without a trust anchor is
    insecure: opportunistic TLS."""
    import hashlib
    from test_dane import DnssecServer, ZONE, receiver, spki_sha256, unbound_conf, zone

    b = receiver(t)
    cases = ((['3 1 1 ' + spki_sha256(b.cert)], True, 0,
              ('dane: usable (1 secure TLSA records, 1 usable',
               'dane: verified (usage=3 selector=1 mtype=1 depth=0)',
               'tls: verified: no: ', 'for the name mx.dane.test', '>>> MAIL')),
             (['3 1 1 ' + hashlib.sha256(b'not the key').hexdigest()], True, 75,
              ('dane: usable', 'DANE authentication failed', 'dane: failed')),
             (['3 1 1 ' + spki_sha256(b.cert)], False, 0,
              ('dane: insecure', 'tls: TLSv1.')))
    for tlsa, anchored, code, needles in cases:
        with DnssecServer(t, [zone(ZONE, b.port, tlsa)]) as srv:
            conf = unbound_conf(t, srv, [ZONE], [ZONE] if anchored else [])
            rc, out, err = tern(t, 'probe', 'dane.test', '--starttls', '--dns-config', conf,
                                '--port', str(b.port), '--to', 'user@dane.test',
                                '--timeout', '20')
        absent = ('dane: verified',) if code else ()
        if not anchored:
            absent = ('dane: usable', 'dane: verified')
        want(f'probe with TLSA {tlsa} anchored={anchored}', rc, out, err, code, *needles,
             absent=absent)
        if code and '>>> MAIL' in out:
            fail(f'MAIL after a failed DANE handshake:\n{out}')
