#!/usr/bin/env python3
"""bench/e2e_latency.py - fsyncs per accepted message and the time from 250 to new/.

Starts TERND (default build-release/ternd, else build/ternd) on 127.0.0.1:2531 with its
spool and Maildirs under /var/tmp/ternbench/lat, sends N 1 KiB messages from C concurrent
clients with Postfix's smtp-source (one connection per message), waits until every
message is in Maildir/new, stops ternd, and reads its own log:
  - fdatasync calls per accepted message (the spool's syncs / messages; the spool's
    syncs also carry the delivered-state records, so this is an upper bound);
  - Maildir deliveries per second (first to last delivery);
  - latency from "event=queued" (the 250 was sent) to "event=delivered" per message:
    median, p90, p99, max.
usage: bench/e2e_latency.py [-n N] [-c C] [--ternd PATH]
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = '/var/tmp/ternbench/lat'


def ts(line):
    return datetime.datetime.strptime(line[:23], '%Y-%m-%dT%H:%M:%S.%f').timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-n', type=int, default=5000)
    ap.add_argument('-c', type=int, default=100)
    ap.add_argument('--ternd')
    a = ap.parse_args()
    ternd = a.ternd or next(p for p in (os.path.join(ROOT, 'build-release/ternd'),
                                        os.path.join(ROOT, 'build/ternd')) if os.path.exists(p))
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    conf = os.path.join(BASE, 'tern.conf')
    with open(conf, 'w') as f:
        f.write(f'listen = 127.0.0.1:2531\nhostname = bench.local\nspool_dir = {BASE}/spool\n'
                f'mailbox_dir = {BASE}/mail\nlocal_domains = bench.local\n'
                'max_connections = 2000\nmax_connections_per_ip = 2000\n'
                'delivery_concurrency = 100\n')
    log = open(os.path.join(BASE, 'ternd.log'), 'w')
    p = subprocess.Popen([ternd, '-f', '-c', conf], stderr=log, stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(['ss', '-ltn', 'sport = :2531'], capture_output=True,
                              text=True).stdout.count('LISTEN'):
                break
            time.sleep(0.05)
        t0 = time.time()
        subprocess.run(['/usr/sbin/smtp-source', '-c', '-4', '-s', str(a.c), '-m', str(a.n),
                        '-l', '1024', '-M', 'bench.local', '-f', 'sender@bench.local',
                        '-t', 'pbench@bench.local', '127.0.0.1:2531'],
                       stdout=subprocess.DEVNULL, check=True, timeout=600)
        accept = time.time() - t0
        new = os.path.join(BASE, 'mail/bench.local/pbench/new')
        deadline = time.time() + 300
        while time.time() < deadline:
            if os.path.isdir(new) and len(os.listdir(new)) >= a.n:
                break
            time.sleep(0.1)
        e2e = time.time() - t0
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.close()
    queued, delivered, syncs = {}, {}, None
    for line in open(os.path.join(BASE, 'ternd.log')):
        m = re.search(r' ([0-9A-Z]{16}) event=(queued|delivered) ', line)
        if m:
            (queued if m.group(2) == 'queued' else delivered)[m.group(1)] = ts(line)
        m = re.search(r'event=spool-stats records=(\d+) failed=\d+ syncs=(\d+)', line)
        if m:
            syncs = int(m.group(2))
    lat = sorted(delivered[i] - queued[i] for i in delivered if i in queued)
    if not lat:
        sys.exit('no deliveries seen in the log')
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000
    span = max(delivered.values()) - min(delivered.values())
    print(f'messages: {a.n} at {a.c} clients; accepted {len(queued)}, delivered {len(delivered)}')
    print(f'accept: {a.n / accept:.0f} msg/s; end to end (all in new/): {a.n / e2e:.0f} msg/s')
    print(f'Maildir deliveries: {len(delivered) / span if span else 0:.0f} /s')
    if syncs is not None:
        print(f'spool fdatasyncs: {syncs}, per accepted message: {syncs / len(queued):.3f}')
    print(f'250 -> new/: median {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms, '
          f'max {lat[-1] * 1000:.1f} ms')


if __name__ == '__main__':
    main()
