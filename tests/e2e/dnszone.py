"""
dnszone.py - hermetic DNS for end-to-end tests: an unbound configuration file to give ternd as
`dns_config`, and a stub name server on 127.0.0.1 that fails on purpose.

What it promises:
  * write_unbound_conf(path, records, servfail_zones=(), stub_port=None) writes a file that
    libunbound (net/dns.c) reads with ub_ctx_config.  Every name in `records` is answered from
    local data; every other name is NXDOMAIN, answered locally too (the root is a static local
    zone), so no query ever leaves the machine.  Example:

        write_unbound_conf(tmp + '/dns.conf', [
            ('example.net', 'MX', '10 mx1.example.net'),
            ('example.net', 'MX', '20 mx2.example.net'),
            ('mx1.example.net', 'A', '127.0.0.1'),
            ('mx2.example.net', 'AAAA', '::1'),
            ('nullmx.example', 'MX', '0 .'),            # RFC 7505: the domain takes no mail
            ('implicit.example', 'A', '127.0.0.1'),     # no MX: the domain is its own MX
        ])
        ternd = Ternd(..., dns_config=tmp + '/dns.conf')

    records: (name, type, value) tuples; type is one of A, AAAA, MX, CNAME, TXT, PTR.
    Names may omit the final dot.  An MX value is "PREFERENCE EXCHANGE" (the exchange "." is
    the null MX); a CNAME value is the target name; a TXT value is the text, unquoted.
    A name that only appears inside an MX value (not in records) does not exist: that is how
    to write "an MX whose host has no address".
  * servfail_zones: names (zones) whose queries go to StubServer on stub_port instead; with
    the stub in 'servfail' mode every lookup in them ends in SERVFAIL (tern defers: DNS_TEMP),
    in 'silent' mode they time out (after ternd's DNS timeout, 60 s by default: use sparingly).
  * StubServer: a thread answering every UDP query on 127.0.0.1 (port chosen by the kernel,
    see .port) with SERVFAIL, or never ('silent').  Use it as a context manager; .queries
    counts what it received, so a test can prove the lookup was really made.

Values are checked (no quotes, spaces where they do not belong, or newlines), so a test cannot
write a file that libunbound reads differently from what the test meant.
"""

import re
import socket
import threading

TYPES = ('A', 'AAAA', 'MX', 'CNAME', 'TXT', 'PTR')
_NAME = re.compile(r'^(\.|([A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?)$')


def _fqdn(name):
    if not _NAME.match(name):
        raise ValueError('not a domain name: %r' % (name,))
    return name if name.endswith('.') else name + '.'


def _rdata(rtype, value):
    if rtype in ('A', 'AAAA'):
        socket.inet_pton(socket.AF_INET if rtype == 'A' else socket.AF_INET6, value)
        return value
    if rtype == 'MX':
        pref, _, exchange = value.strip().partition(' ')
        if not pref.isdigit() or int(pref) > 65535:
            raise ValueError('MX value must be "PREFERENCE EXCHANGE": %r' % (value,))
        return '%d %s' % (int(pref), _fqdn(exchange.strip()))
    if rtype in ('CNAME', 'PTR'):
        return _fqdn(value)
    if rtype == 'TXT':
        if any(c in value for c in '"\'\\\n\r'):
            raise ValueError('TXT value with a quote, backslash or newline: %r' % (value,))
        return '"%s"' % value
    raise ValueError('record type %r not supported (use one of %s)' % (rtype, ', '.join(TYPES)))


def write_unbound_conf(path, records, servfail_zones=(), stub_port=None):
    """Write an unbound configuration with local data (see the module's docstring)."""
    if servfail_zones and stub_port is None:
        raise ValueError('servfail_zones need stub_port (a StubServer\'s port)')
    lines = [
        '# written by tests/e2e/dnszone.py: hermetic DNS for ternd (dns_config)',
        'server:',
        '    module-config: "iterator"',
        # Everything outside the records is NXDOMAIN, answered here: nothing goes out.
        '    local-zone: "." static',
    ]
    if servfail_zones:
        lines.append('    do-not-query-localhost: no')  # the stub is on 127.0.0.1
        for zone in servfail_zones:
            # transparent: not answered locally, so the forward-zone below is used
            lines.append('    local-zone: "%s" transparent' % _fqdn(zone))
    for name, rtype, value in records:
        rtype = rtype.upper()
        lines.append("    local-data: '%s %s %s'" % (_fqdn(name), rtype, _rdata(rtype, value)))
    for zone in servfail_zones:
        lines += ['forward-zone:',
                  '    name: "%s"' % _fqdn(zone),
                  '    forward-addr: 127.0.0.1@%d' % stub_port]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


class StubServer:
    """A name server on 127.0.0.1 that answers SERVFAIL to everything, or nothing."""

    def __init__(self, mode='servfail'):
        if mode not in ('servfail', 'silent'):
            raise ValueError(mode)
        self.mode = mode
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                pkt, peer = self.sock.recvfrom(1500)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(pkt) < 12:
                continue
            self.queries += 1
            if self.mode == 'silent':
                continue
            # The header with QR and RA set and RCODE 2, then the question alone (no EDNS).
            i = 12
            while i < len(pkt) and pkt[i] != 0:
                i += pkt[i] + 1
            question = pkt[12:i + 5]
            reply = pkt[:2] + bytes([pkt[2] | 0x80, 0x82]) + b'\x00\x01\x00\x00\x00\x00\x00\x00'
            try:
                self.sock.sendto(reply + question, peer)
            except OSError:
                pass

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
