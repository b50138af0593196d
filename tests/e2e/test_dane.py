"""
test_dane.py - outbound DANE (RFC 7672, tls_policy = dane): ternd relaying into a second ternd
whose MX host has DNSSEC-signed TLSA records.

DNS is real DNSSEC, loopback only: tests/e2e/dnssecserver.py serves a zone signed with a key
made for the test (UDP and TCP on 127.0.0.1, a port the kernel picks, stopped by PID), and
ternd's libunbound validates it from a trust anchor (the zone's DS) given in its dns_config
(an unbound file: stub-zone to the server, trust-anchor, everything else a static local zone,
so no query leaves the machine).  A zone without a trust anchor is "insecure"; an RRset signed
with a key the zone does not publish is "bogus".

The receiver (a second ternd, mx.dane.test on 127.0.0.3) has a self-signed certificate
(DANE-EE(3) tests) or one issued by a test CA, served with the CA in its chain (DANE-TA(2)).
The TLSA owner is _PORT._tcp.mx.dane.test, PORT being the receiver's (remote_port).  What is
checked: the sending ternd's delivery lines (reply, dane= on the event=tls line, what matched),
the receiver's Maildir and its Received header (ESMTPS: really over TLS).
"""

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time

from harness import Skip, fail, marker, stop_process
from test_relay_remote import (events, expect_event, message, new_files, queue_empty, start,
                               submit, wait_s, wait_until)
from test_relay_tls import ESMTPS_RE, delivered_copy, make_cert

HERE = os.path.dirname(os.path.abspath(__file__))
DNSSEC_SERVER = os.path.join(HERE, 'dnssecserver.py')
ZONE = 'dane.test.'
MX_HOST = 'mx.dane.test'
RCPT = 'user@dane.test'


def _python_with_dnspython():
    """An interpreter that has dnspython (Debian python3-dnspython), for the DNS server."""
    for py in (sys.executable, '/usr/bin/python3'):
        try:
            if subprocess.run([py, '-c', 'import dns.dnssec, cryptography'],
                              capture_output=True, timeout=30).returncode == 0:
                return py
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise Skip('python3-dnspython not installed')


class DnssecServer:
    """tests/e2e/dnssecserver.py with one spec; stopped by PID."""

    def __init__(self, t, zones):
        self.dir = tempfile.mkdtemp(prefix='dnssec-', dir=t.tmproot)
        spec = os.path.join(self.dir, 'spec.json')
        with open(spec, 'w') as f:
            json.dump({'zones': zones}, f)
        self.errf = open(os.path.join(self.dir, 'stderr.log'), 'wb')
        self.proc = subprocess.Popen([_python_with_dnspython(), DNSSEC_SERVER, spec],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf, bufsize=0)
        line = b''
        deadline = time.monotonic() + 20
        while not line.endswith(b'\n'):
            r, _, _ = select.select([self.proc.stdout], [], [],
                                    max(deadline - time.monotonic(), 0))
            if not r:
                self.stop()
                fail('dnssecserver.py printed nothing in 20 s')
            ch = self.proc.stdout.read(1)
            if not ch:
                self.stop()
                with open(self.errf.name, 'rb') as f:
                    fail(f'dnssecserver.py exited at start: {f.read()[-800:]!r}')
            line += ch
        ready = json.loads(line)
        self.port = ready['port']
        self.anchors = ready['anchors']

    def stop(self):
        stop_process(self.proc, self.proc.stdout, self.errf)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def unbound_conf(t, server, zones, anchored):
    """ternd's dns_config: the zones from server, with trust anchors for those in anchored."""
    lines = ['server:',
             '    module-config: "validator iterator"',
             '    do-not-query-localhost: no',
             '    qname-minimisation: no',
             '    local-zone: "." static']
    for z in zones:
        lines.append(f'    local-zone: "{z}" transparent')
    for z in anchored:
        lines.append(f'    trust-anchor: "{server.anchors[z]}"')
    for z in zones:
        lines += ['stub-zone:', f'    name: "{z}"', f'    stub-addr: 127.0.0.1@{server.port}']
    path = tempfile.mktemp(prefix='dns-', suffix='.conf', dir=t.tmproot)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def openssl(args, data=None):
    return subprocess.run(['openssl'] + args, input=data, capture_output=True, check=True,
                          timeout=30).stdout


def spki_sha256(cert):
    """The TLSA 3 1 1 association data of a certificate file: SHA2-256 of its SPKI."""
    pub = openssl(['x509', '-in', cert, '-noout', '-pubkey'])
    return hashlib.sha256(openssl(['pkey', '-pubin', '-outform', 'DER'], pub)).hexdigest()


def cert_sha256(cert):
    """TLSA x 0 1: SHA2-256 of the whole certificate (DER)."""
    return hashlib.sha256(openssl(['x509', '-in', cert, '-outform', 'DER'])).hexdigest()


def make_expired_cert(dirpath, dns):
    """A self-signed certificate for dns that expired a year ago: (cert path, key path)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=730))
            .not_valid_after(now - datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = os.path.join(dirpath, 'expired.crt'), os.path.join(dirpath, 'expired.key')
    with open(cpath, 'wb') as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kpath, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath


def make_ca_chain(dirpath, dns):
    """A test CA and a certificate for dns issued by it: (chain file: leaf then CA, key, CA)."""
    ca, ca_key = os.path.join(dirpath, 'ca.crt'), os.path.join(dirpath, 'ca.key')
    leaf, key = os.path.join(dirpath, 'leaf.crt'), os.path.join(dirpath, 'leaf.key')
    csr, ext = os.path.join(dirpath, 'leaf.csr'), os.path.join(dirpath, 'leaf.ext')
    try:
        openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', ca_key, '-out', ca, '-days', '2', '-subj', '/CN=tern test CA',
                 '-addext', 'basicConstraints=critical,CA:TRUE',
                 '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
    except FileNotFoundError:
        raise Skip('openssl not installed')
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-keyout', key, '-out', csr, '-subj', f'/CN={dns}'])
    with open(ext, 'w') as f:
        f.write(f'subjectAltName=DNS:{dns}\nbasicConstraints=CA:FALSE\n')
    openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', ca_key, '-CAcreateserial',
             '-days', '2', '-extfile', ext, '-out', leaf])
    chain = os.path.join(dirpath, 'chain.crt')
    with open(chain, 'wb') as out:
        for p in (leaf, ca):
            with open(p, 'rb') as f:
                out.write(f.read())
    return chain, key, ca


def receiver(t, tls='self', cert_dns=MX_HOST):
    """The second ternd: mx.dane.test on 127.0.0.3, local_domains dane.test.  tls: 'self'
    (a self-signed certificate), 'expired' (self-signed, expired a year ago), 'ca' (issued by a
    test CA; b.ca is the CA), or None."""
    b = t.daemon({'listen': '127.0.0.3:{port}', 'local_domains': 'dane.test, plain.test',
                  'hostname': MX_HOST})
    if tls == 'self':
        b.cert, b.key = make_cert(b.tmpdir, 'server', cert_dns)
    elif tls == 'expired':
        b.cert, b.key = make_expired_cert(b.tmpdir, cert_dns)
    elif tls == 'ca':
        b.cert, b.key, b.ca = make_ca_chain(b.tmpdir, cert_dns)
    if tls:
        b.overrides['tls_cert'] = b.cert
        b.overrides['tls_key'] = b.key
    return b.start()


def zone(origin, b_port, tlsa=(), sign=True, bad_sig=(), mx_host=MX_HOST):
    recs = [[origin, 'MX', f'10 {mx_host}.'], [mx_host + '.', 'A', '127.0.0.3']]
    owner = f'_{b_port}._tcp.{mx_host}.'
    recs += [[owner, 'TLSA', r] for r in tlsa]
    return {'origin': origin, 'sign': sign, 'records': recs,
            'bad_sig': [[n if n.endswith('.') else n + '.', ty] for n, ty in bad_sig]}


def dane_sender(t, b, dns_conf, extra=None):
    conf = {'dns_config': dns_conf, 'remote_port': str(b.port), 'tls_policy': 'dane',
            'log_level': 'debug'}
    conf.update(extra or {})
    return start(t, conf)


def log_of(d):
    return d.stderr().decode('utf-8', 'replace')


def tls_line(d):
    m = re.search(r'event=tls host=mx\.dane\.test\[127\.0\.0\.3\]:\d+ tls="[^"]*" '
                  r'policy=dane( dane=\S+)?( match="[^"]*")?', log_of(d))
    return m.group(0) if m else None


def relay_dane(t, b, tlsa, want, anchored=True, sign=True, bad_sig=(), extra=None):
    """Relay one message to b through a zone with these TLSA records; want: 'delivered' or
    'deferred'.  Returns (sender ternd, event)."""
    with DnssecServer(t, [zone(ZONE, b.port, tlsa, sign=sign, bad_sig=bad_sig)]) as dns_srv:
        conf = unbound_conf(t, dns_srv, [ZONE], [ZONE] if anchored else [])
        a = dane_sender(t, b, conf, extra)
        qid = submit(a, [RCPT], message(marker('dane')))
        e = expect_event(t, a, qid, RCPT, want)
        if want == 'deferred':
            # the next attempts too: never downgraded to plaintext or unauthenticated TLS
            wait_until('a second attempt',
                       lambda: len(events(a, qid, RCPT, 'deferred')) >= 2, timeout=wait_s(t))
            if events(a, qid, RCPT, 'delivered') or new_files(b, RCPT):
                fail(f'delivered although DANE said no: {log_of(a)[-1500:]}')
        return a, e


# ---- secure TLSA records ---------------------------------------------------------------------

def test_dane_ee_verified(t):
    """DANE-EE(3) SPKI(1) SHA2-256(1) of the receiver's key: delivered over TLS, authenticated
    (dane=verified, the record and depth 0 logged), although the certificate is self-signed
    (nobody's trust store knows it), names another host and expired a year ago: for DANE-EE
    the key is what is authenticated (RFC 7672 §3.1.1).  The verified line is logged at the
    default level."""
    b = receiver(t, tls='expired', cert_dns='unrelated.example')
    a, e = relay_dane(t, b, ['3 1 1 ' + spki_sha256(b.cert)], 'delivered',
                      extra={'log_level': 'info'})
    if not e['reply'].startswith('250 2.0.0 '):
        fail(f'reply {e["reply"]!r}')
    if not ESMTPS_RE.search(delivered_copy(t, b, RCPT)):
        fail('not received over TLS')
    line = tls_line(a)
    if line is None or 'dane=verified match="usage=3 selector=1 mtype=1 depth=0"' not in line:
        fail(f'no event=tls line with dane=verified and the match: {line!r}; '
             f'{log_of(a)[-1500:]}')
    if 'event=dane-no-trust-anchor' in log_of(a):
        fail('a dns_config with a trust anchor was warned about as having none')
    queue_empty(t, a)


def test_dane_ee_wrong_hash_deferred(t):  # covers: R_DLV_TLS_FAILED
    """DANE-EE with a digest that matches nothing: 451 4.7.5 (DANE authentication failed),
    deferred at every attempt, never sent."""
    b = receiver(t)
    wrong = hashlib.sha256(b'not the key').hexdigest()
    a, e = relay_dane(t, b, ['3 1 1 ' + wrong], 'deferred')
    want = f'451 4.7.5 TLS with mx.dane.test[127.0.0.3]:{b.port} failed: DANE authentication ' \
           f'failed: '
    if not e['reply'].startswith(want):
        fail(f'reply {e["reply"]!r}, want it to start with {want!r}')
    if 'dane=failed' not in log_of(a):
        fail('no dane=failed in the log')


def test_dane_ta_verified(t):
    """DANE-TA(2) Cert(0) SHA2-256(1) of a test CA that issued the receiver's certificate for
    the MX name: delivered, matched at depth 1.  The same CA with a certificate for another
    name: refused (DANE-TA checks the name: RFC 7672 §3.2.2)."""
    b = receiver(t, tls='ca')
    a, e = relay_dane(t, b, ['2 0 1 ' + cert_sha256(b.ca)], 'delivered')
    if not ESMTPS_RE.search(delivered_copy(t, b, RCPT)):
        fail('not received over TLS')
    line = tls_line(a)
    if line is None or 'dane=verified match="usage=2 selector=0 mtype=1 depth=1"' not in line:
        fail(f'no event=tls line with dane=verified, usage 2 at depth 1: {line!r}')

    b2 = receiver(t, tls='ca', cert_dns='other.example')
    a2, e2 = relay_dane(t, b2, ['2 0 1 ' + cert_sha256(b2.ca)], 'deferred')
    if not e2['reply'].startswith('451 4.7.5 ') or 'DANE authentication failed' not in \
            e2['reply']:
        fail(f'a DANE-TA certificate for another name: {e2["reply"]!r}')


def test_dane_no_starttls(t):  # covers: R_DLV_TLS_REQUIRED
    """Secure, usable TLSA records and a server that does not offer STARTTLS: 451 4.7.4, never
    in plaintext."""
    b = receiver(t, tls=None)
    a, e = relay_dane(t, b, ['3 1 1 ' + hashlib.sha256(b'k').hexdigest()], 'deferred')
    want = ('451 4.7.4 TLS is required by policy (tls_policy = dane, and the host has '
            'DNSSEC-validated TLSA records), but ')
    if not e['reply'].startswith(want) or 'STARTTLS not offered' not in e['reply']:
        fail(f'reply {e["reply"]!r}, want {want!r}... STARTTLS not offered')


def test_dane_unusable_records_mandatory_tls(t):
    """Secure TLSA records that are all unusable (PKIX-EE(1), a digest of the wrong length):
    TLS is mandatory but not authenticated (RFC 7672 §2.2): delivered over TLS to a server
    with STARTTLS, deferred (4.7.4) by one without."""
    b = receiver(t)
    junk = ['1 1 1 ' + spki_sha256(b.cert), '3 1 1 ' + 'ab' * 20]
    a, e = relay_dane(t, b, junk, 'delivered')
    if not ESMTPS_RE.search(delivered_copy(t, b, RCPT)):
        fail('not received over TLS')
    if 'dane=unusable' not in (tls_line(a) or ''):
        fail(f'no dane=unusable on the event=tls line: {tls_line(a)!r}')
    b2 = receiver(t, tls=None)
    a2, e2 = relay_dane(t, b2, junk, 'deferred')
    if not e2['reply'].startswith('451 4.7.4 ') or 'none usable' not in e2['reply']:
        fail(f'reply {e2["reply"]!r}')


def big_ca_der():
    """A real self-signed CA certificate of more than 2048 octets in DER (RSA-4096 and a long
    name list; the old DANE_DATA_MAX).  Not the receiver's CA: it matches nothing."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'Big Test Root CA')])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(f'name{i}.ca.example') for i in range(80)]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_dane_big_full_cert_record_not_dropped(t):
    """A secure TLSA set whose only record is a usable DANE-TA(2) full certificate (2 0 0) of
    several KiB (the answer is over 1232 octets: TC over UDP, then TCP).  It matches nothing
    the receiver presents, so the message is deferred (451 4.7.5), never delivered over
    unauthenticated TLS as if the set were unusable (the record used to be dropped for room).
    With a matching 3 1 1 beside it, the set is usable and the message delivered."""
    der = big_ca_der()
    if len(der) <= 2048:
        fail(f'test setup: certificate only {len(der)} octets')
    b = receiver(t)
    a, e = relay_dane(t, b, ['2 0 0 ' + der.hex()], 'deferred')
    if not e['reply'].startswith('451 4.7.5'):
        fail(f'reply {e["reply"]!r}')
    a2, e2 = relay_dane(t, b, ['2 0 0 ' + der.hex(), '3 1 1 ' + spki_sha256(b.cert)],
                        'delivered')
    if 'dane=verified' not in (tls_line(a2) or ''):
        fail(f'no dane=verified on the event=tls line: {tls_line(a2)!r}')


def test_dane_malformed_full_record_is_unusable(t):
    """A secure TLSA set whose only record is DANE-EE(3) SPKI(1) Full(0) with data that is no
    SubjectPublicKeyInfo: malformed, so unusable (RFC 7671 §5.1, RFC 7672 §2.2: TLS
    mandatory, unauthenticated): delivered over TLS, dane=unusable, not deferred at every
    attempt because OpenSSL refuses the record."""
    b = receiver(t)
    a, e = relay_dane(t, b, ['3 1 0 ' + 'ab' * 40], 'delivered')
    if not ESMTPS_RE.search(delivered_copy(t, b, RCPT)):
        fail('not received over TLS')
    if 'dane=unusable' not in (tls_line(a) or ''):
        fail(f'no dane=unusable on the event=tls line: {tls_line(a)!r}')


# ---- insecure and bogus ----------------------------------------------------------------------

def test_dane_insecure_is_opportunistic(t):
    """The same zone with no trust anchor (so "insecure"), and an unsigned one: the TLSA
    records (here matching nothing) are ignored; delivered with opportunistic TLS,
    dane=insecure."""
    b = receiver(t)
    wrong = '3 1 1 ' + hashlib.sha256(b'not the key').hexdigest()
    for anchored, sign in ((False, True), (False, False)):
        a, e = relay_dane(t, b, [wrong], 'delivered', anchored=anchored, sign=sign)
        line = tls_line(a)
        if line is None or 'dane=insecure' not in line:
            fail(f'anchored={anchored} sign={sign}: no event=tls line with dane=insecure: '
                 f'{line!r}')
        # dns_config without a trust anchor: said at start, as without dns_config
        if not re.search(r'event=dane-no-trust-anchor file=\S+ reason="no trust-anchor',
                         log_of(a)):
            fail(f'no event=dane-no-trust-anchor warning for a dns_config without anchors: '
                 f'{log_of(a)[:1500]!r}')
        files = wait_until('the message', lambda: new_files(b, RCPT), timeout=wait_s(t))
        for f in files:
            os.unlink(f)
        problems = a.stop()
        if problems:
            fail('; '.join(problems))


def test_dane_bogus_tlsa_deferred(t):  # covers: R_DLV_DNS_TEMP
    """TLSA records signed with a key the zone does not publish ("bogus"), for a secure MX
    host: the host is not used (451 4.4.3 naming the TLSA lookup), not downgraded."""
    b = receiver(t)
    owner = f'_{b.port}._tcp.{MX_HOST}'
    a, e = relay_dane(t, b, ['3 1 1 ' + spki_sha256(b.cert)], 'deferred',
                      bad_sig=[(owner, 'TLSA')])
    want = f'451 4.4.3 DNS lookup for {owner} TLSA failed: '
    if not e['reply'].startswith(want):
        fail(f'reply {e["reply"]!r}, want it to start with {want!r}')
    if not re.search(r'event=dane-failed host=mx\.dane\.test\[127\.0\.0\.3\]', log_of(a)):
        fail('no event=dane-failed line')


def test_dane_insecure_mx_secure_host(t):
    """An insecure MX answer (plain.test, unsigned) naming a host in the signed zone, whose
    TLSA records match nothing: TLSA counts only when the MX host name was obtained securely
    (RFC 7672 §2.2), so the records are not even looked at: delivered, dane=insecure."""
    b = receiver(t)
    wrong = '3 1 1 ' + hashlib.sha256(b'not the key').hexdigest()
    signed = zone(ZONE, b.port, [wrong])
    plain = {'origin': 'plain.test.', 'sign': False,
             'records': [['plain.test.', 'MX', f'10 {MX_HOST}.']], 'bad_sig': []}
    with DnssecServer(t, [signed, plain]) as dns_srv:
        conf = unbound_conf(t, dns_srv, [ZONE, 'plain.test.'], [ZONE])
        a = dane_sender(t, b, conf)
        qid = submit(a, ['user@plain.test'], message(marker('insecure-mx')))
        expect_event(t, a, qid, 'user@plain.test', 'delivered', prefix='250 2.0.0 ')
        line = tls_line(a)
        if line is None or 'dane=insecure' not in line:
            fail(f'no event=tls line with dane=insecure: {line!r}')

        # the same host through the signed zone's own (secure) MX: the records apply
        qid2 = submit(a, [RCPT], message(marker('secure-mx')))
        e = expect_event(t, a, qid2, RCPT, 'deferred')
        if not e['reply'].startswith('451 4.7.5 ') or 'DANE' not in e['reply']:
            fail(f'secure MX, wrong TLSA: {e["reply"]!r}')


def test_dane_implicit_mx(t):
    """A signed domain with no MX (its NODATA proven by NSEC) and an address: the domain is
    its own MX host, and its TLSA records (_PORT._tcp.dane.test) apply: verified."""
    b = receiver(t)
    spec = {'origin': ZONE, 'sign': True, 'bad_sig': [],
            'records': [[ZONE, 'A', '127.0.0.3'],
                        [f'_{b.port}._tcp.{ZONE}', 'TLSA', '3 1 1 ' + spki_sha256(b.cert)]]}
    with DnssecServer(t, [spec]) as dns_srv:
        a = dane_sender(t, b, unbound_conf(t, dns_srv, [ZONE], [ZONE]))
        qid = submit(a, [RCPT], message(marker('implicit')))
        expect_event(t, a, qid, RCPT, 'delivered', relay='dane.test', prefix='250 2.0.0 ')
        if not re.search(r'event=tls host=dane\.test\[127\.0\.0\.3\]:\d+ tls="[^"]*" '
                         r'policy=dane dane=verified match="usage=3 selector=1 mtype=1 '
                         r'depth=0"', log_of(a)):
            fail(f'no dane=verified line for the implicit MX: {log_of(a)[-1500:]}')
