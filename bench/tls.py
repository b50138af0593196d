#!/usr/bin/env python3
"""tls.py - the cost of TLS in ternd: memory per idle TLS connection, handshakes a second.

usage: bench/tls.py [--ternd build/ternd] [-n 2000] [--seconds 10]

Starts its own ternd (temporary directory, 127.0.0.1 only, a fresh EC P-256 or RSA-2048
certificate) with a plaintext listener and an implicit-TLS listener, then:
  1. idle memory: opens N plaintext connections (220 read), samples VmRSS, closes them; then
     N implicit-TLS connections (handshake done, 220 read under TLS), samples again; prints
     KiB per connection for each (user space of ternd; kernel socket memory not included);
  2. handshakes: full handshakes (no resumption) in a loop for --seconds, each on a new
     connection reading the 220, from --clients processes; prints handshakes a second and
     ternd's CPU time per handshake.
Stops its ternd by PID.  Python 3 standard library and the openssl command only.
"""
import argparse
import multiprocessing
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HOST = '127.0.0.1'


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def cpu_secs(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def wait_listen(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit('ternd did not listen on %d' % port)


def read_220(s):
    data = b''
    while not data.endswith(b'\r\n'):
        chunk = s.recv(512)
        if not chunk:
            raise OSError('closed')
        data += chunk
    if not data.startswith(b'220 '):
        raise OSError('no greeting: %r' % data)


def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def open_many(port, n, tls):
    out = []
    c = ctx()
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        if tls:
            s = c.wrap_socket(s)
        read_220(s)
        out.append(s)
    return out


def handshake_loop(port, seconds, q):
    c = ctx()
    c.options |= ssl.OP_NO_TICKET
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.create_connection((HOST, port), timeout=10) as raw:
            s = c.wrap_socket(raw)
            read_220(s)
            s.close()
        n += 1
    q.put(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--ternd', default='build/ternd')
    ap.add_argument('-n', type=int, default=2000)
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--clients', type=int, default=1)
    ap.add_argument('--key', choices=('ec', 'rsa'), default='ec')
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix='tern-tlsbench-')
    cert, key = os.path.join(tmp, 'c.pem'), os.path.join(tmp, 'k.pem')
    newkey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] if a.key == 'ec' \
        else ['-newkey', 'rsa:2048']
    subprocess.run(['openssl', 'req', '-x509'] + newkey + ['-nodes', '-keyout', key, '-out',
                    cert, '-days', '1', '-subj', '/CN=mx.test'], check=True, capture_output=True)
    plain, tls = free_port(), free_port()
    conf = os.path.join(tmp, 'tern.conf')
    with open(conf, 'w') as f:
        f.write('listen = %s:%d, %s:%d tls\nspool_dir = %s/spool\nmailbox_dir = %s/mail\n'
                'hostname = mx.test\ntls_cert = %s\ntls_key = %s\nmax_connections = 100000\n'
                'max_connections_per_ip = 100000\nlog_level = warn\n'
                % (HOST, plain, HOST, tls, tmp, tmp, cert, key))
    p = subprocess.Popen([a.ternd, '-f', '-c', conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, 'log'), 'w'))
    try:
        wait_listen(plain)
        wait_listen(tls)
        for label, port, is_tls in (('plaintext', plain, False), ('implicit TLS', tls, True)):
            time.sleep(0.5)
            before = rss_kib(p.pid)
            conns = open_many(port, a.n, is_tls)
            time.sleep(1.0)
            after = rss_kib(p.pid)
            print('%-13s %d idle connections: VmRSS %d -> %d kB: %.2f KiB per connection'
                  % (label, a.n, before, after, (after - before) / a.n))
            for s in conns:
                s.close()
        time.sleep(0.5)
        q = multiprocessing.Queue()
        cpu0 = cpu_secs(p.pid)
        procs = [multiprocessing.Process(target=handshake_loop, args=(tls, a.seconds, q))
                 for _ in range(a.clients)]
        t0 = time.monotonic()
        for pr in procs:
            pr.start()
        total = sum(q.get() for _ in procs)
        for pr in procs:
            pr.join()
        secs = time.monotonic() - t0
        cpu = cpu_secs(p.pid) - cpu0
        print('handshakes (%s key, TLS 1.3, full, %d client process(es)): %d in %.1f s = %.0f/s;'
              ' ternd CPU %.2f s = %.0f us per handshake'
              % (a.key, a.clients, total, secs, total / secs, cpu, 1e6 * cpu / max(total, 1)))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == '__main__':
    main()
