#!/usr/bin/python3
"""
dnssecserver.py - a tiny authoritative DNS server with DNSSEC, for the DANE tests.

    dnssecserver.py SPEC.json

libunbound marks local-data answers neither secure nor bogus, so testing DANE (which acts only
on DNSSEC-validated answers) needs a real signed zone, a server for it, and ternd's libunbound
validating it from a trust anchor.  This is that server: UDP and TCP on 127.0.0.1, on one port
the kernel picks; it runs until killed (the test stops it by PID).

SPEC.json:
    {"zones": [{"origin": "dane.test.",
                "sign": true,                      # false: an unsigned zone
                "records": [["mx.dane.test.", "A", "127.0.0.3"], ...],
                "bad_sig": [["_25._tcp.mx.dane.test.", "TLSA"]]}]}
Every zone gets an SOA and an NS record.  A signed zone is signed with one ECDSA P-256 key
(algorithm 13, flags 257: key- and zone-signing at once), every RRset with an RRSIG, and an
NSEC chain for the denials (NODATA, NXDOMAIN, empty non-terminals).  The RRsets named in
bad_sig are signed with another key, which the zone does not publish: a validating resolver
finds them "bogus".

Once it listens it prints one line of JSON on stdout and flushes it:
    {"port": 40123, "anchors": {"dane.test.": "dane.test. 300 IN DS 12345 13 2 ..."}}
(an unsigned zone has no anchor).  Answers carry RRSIGs and NSECs only when the query has
the DO bit, as an authoritative server's do.  Only the standard library and dnspython
(Debian python3-dnspython) and python3-cryptography are used.
"""

import json
import socket
import socketserver
import struct
import sys
import threading
import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

TTL = 300


class Zone:
    def __init__(self, spec):
        self.origin = dns.name.from_text(spec['origin'])
        self.signed = spec.get('sign', True)
        self.rrsets = {}   # (name, rdtype) -> RRset
        self.sigs = {}     # (name, rdtype) -> RRset of RRSIG
        o = spec['origin']
        self._add(o, 'SOA', f'ns.{o} hostmaster.{o} 1 3600 600 86400 300')
        self._add(o, 'NS', f'ns.{o}')
        for name, rtype, value in spec.get('records', []):
            self._add(name, rtype, value)
        self.anchor = None
        if self.signed:
            self._sign({(dns.name.from_text(n), dns.rdatatype.from_text(t))
                        for n, t in spec.get('bad_sig', [])})

    def _add(self, name, rtype, value):
        n = dns.name.from_text(name)
        t = dns.rdatatype.from_text(rtype)
        rd = dns.rdata.from_text(dns.rdataclass.IN, t, value, origin=self.origin,
                                 relativize=False)
        rs = self.rrsets.get((n, t))
        if rs is None:
            rs = self.rrsets[(n, t)] = dns.rrset.RRset(n, dns.rdataclass.IN, t)
        rs.add(rd, TTL)

    def _sign(self, bad):
        key = ec.generate_private_key(ec.SECP256R1())
        other = ec.generate_private_key(ec.SECP256R1())
        dnskey = dns.dnssec.make_dnskey(key.public_key(), 'ECDSAP256SHA256', flags=257)
        other_dnskey = dns.dnssec.make_dnskey(other.public_key(), 'ECDSAP256SHA256', flags=257)
        ks = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        ks.add(dnskey, TTL)
        self.rrsets[(self.origin, dns.rdatatype.DNSKEY)] = ks
        ds = dns.dnssec.make_ds(self.origin, dnskey, 'SHA256')
        self.anchor = f'{self.origin} {TTL} IN DS {ds.to_text()}'
        # The NSEC chain, in canonical order (dnspython compares names canonically).
        names = sorted({n for n, _ in self.rrsets})
        for i, n in enumerate(names):
            types = sorted({t for m, t in self.rrsets if m == n} |
                           {dns.rdatatype.RRSIG, dns.rdatatype.NSEC})
            nxt = names[(i + 1) % len(names)]
            text = nxt.to_text() + ' ' + ' '.join(dns.rdatatype.to_text(t) for t in types)
            rs = dns.rrset.RRset(n, dns.rdataclass.IN, dns.rdatatype.NSEC)
            rs.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NSEC, text), TTL)
            self.rrsets[(n, dns.rdatatype.NSEC)] = rs
        self.nsec_names = names
        now = int(time.time())
        for k, rs in self.rrsets.items():
            wrong = k in bad
            sig = dns.dnssec.sign(rs, other if wrong else key, self.origin,
                                  other_dnskey if wrong else dnskey,
                                  inception=now - 3600, expiration=now + 86400)
            srs = dns.rrset.RRset(rs.name, dns.rdataclass.IN, dns.rdatatype.RRSIG)
            srs.add(sig, TTL)
            self.sigs[k] = srs

    def _with_sig(self, section, key, do):
        section.append(self.rrsets[key])
        if do and key in self.sigs:
            section.append(self.sigs[key])

    def _covering(self, qname):
        """The NSEC owner just before qname in canonical order."""
        prev = self.nsec_names[0]
        for n in self.nsec_names:
            if n < qname:
                prev = n
            else:
                break
        return prev

    def answer(self, q, r, do):
        qname, qtype = q.question[0].name, q.question[0].rdtype
        soa = (self.origin, dns.rdatatype.SOA)
        if (qname, qtype) in self.rrsets:
            self._with_sig(r.answer, (qname, qtype), do)
            return
        exists = any(n == qname for n, _ in self.rrsets)
        ent = not exists and any(n.is_subdomain(qname) for n, _ in self.rrsets)
        self._with_sig(r.authority, soa, do)
        if not exists and not ent:
            r.set_rcode(dns.rcode.NXDOMAIN)
        if do and self.signed:
            if exists:
                self._with_sig(r.authority, (qname, dns.rdatatype.NSEC), do)
            else:
                cover = self._covering(qname)
                self._with_sig(r.authority, (cover, dns.rdatatype.NSEC), do)
                if not ent and cover != self.origin:
                    # no wildcard: the apex's NSEC covers *.origin
                    self._with_sig(r.authority, (self.origin, dns.rdatatype.NSEC), do)


ZONES = []


def respond(wire, max_size, udp):
    """The answer to one query; over UDP at most the query's EDNS payload size (512 without
    EDNS), else TC set so that the client asks again over TCP; over TCP up to 64 KiB."""
    try:
        q = dns.message.from_wire(wire)
    except Exception:
        return None
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    do = q.edns >= 0 and bool(q.ednsflags & dns.flags.DO)
    if q.edns >= 0:
        r.use_edns(0, dns.flags.DO if do else 0, 1232)
        if udp:
            max_size = min(max_size, max(q.payload, 512))
    if len(q.question) != 1:
        r.set_rcode(dns.rcode.FORMERR)
    else:
        qname = q.question[0].name
        zone = max((z for z in ZONES if qname.is_subdomain(z.origin)),
                   key=lambda z: len(z.origin), default=None)
        if zone is None:
            r.set_rcode(dns.rcode.REFUSED)
            r.flags &= ~dns.flags.AA
        else:
            zone.answer(q, r, do)
    try:
        return r.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        t = dns.message.make_response(q)
        t.flags |= dns.flags.TC | dns.flags.AA
        return t.to_wire()


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        out = respond(data, 512, True)
        if out:
            sock.sendto(out, self.client_address)


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(10)
        try:
            while True:
                hdr = self._read(2)
                if hdr is None:
                    return
                data = self._read(struct.unpack('!H', hdr)[0])
                if data is None:
                    return
                out = respond(data, 65535, False)
                if out:
                    self.request.sendall(struct.pack('!H', len(out)) + out)
        except OSError:
            return

    def _read(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class UDP(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class TCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    for z in spec['zones']:
        ZONES.append(Zone(z))
    for _ in range(50):
        udp = UDP(('127.0.0.1', 0), UDPHandler)
        port = udp.server_address[1]
        try:
            tcp = TCP(('127.0.0.1', port), TCPHandler)
            break
        except OSError:
            udp.server_close()
    else:
        sys.exit('no port free for both UDP and TCP')
    for s in (udp, tcp):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    anchors = {z.origin.to_text(): z.anchor for z in ZONES if z.anchor}
    sys.stdout.write(json.dumps({'port': port, 'anchors': anchors}) + '\n')
    sys.stdout.flush()
    while True:
        time.sleep(3600)


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        pass
    except socket.error as e:
        sys.exit(str(e))
