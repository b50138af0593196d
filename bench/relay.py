#!/usr/bin/env python3
"""bench/relay.py - relay throughput: messages per second from tern's queue into Postfix's
smtp-sink, at 1 and 20 outbound connections (max_outbound_per_domain).

For each concurrency: start smtp-sink on 127.0.0.1:2533 and ternd (relay_host = the sink)
under /var/tmp/ternbench/relay, queue N 1 KiB messages for a remote domain while the sink
is held back (ternd is started first with the sink down, so everything defers), then start
the sink, flush the queue and time the drain from ternd's own log (first to last
"event=delivered").  Postfix beside it is still to do (see the issue note).
usage: bench/relay.py [-n N] [--ternd PATH]
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = '/var/tmp/ternbench/relay'
SINK = 2533
PORT = 2532


def ts(line):
    return datetime.datetime.strptime(line[:23], '%Y-%m-%dT%H:%M:%S.%f').timestamp()


def listening(port):
    out = subprocess.run(['ss', '-ltn', f'sport = :{port}'], capture_output=True, text=True)
    return 'LISTEN' in out.stdout


def run(ternd, tern, n, conc):
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    conf = os.path.join(BASE, 'tern.conf')
    ctl = os.path.join(BASE, 'ctl')
    with open(conf, 'w') as f:
        f.write(f'listen = 127.0.0.1:{PORT}\nhostname = relay.bench\nspool_dir = {BASE}/spool\n'
                f'mailbox_dir = {BASE}/mail\nlocal_domains = relay.bench\n'
                f'relay_networks = 127.0.0.0/8\nrelay_host = 127.0.0.1:{SINK}\n'
                f'control_socket = {ctl}\nmin_backoff = 3600\nmax_backoff = 3600\n'
                f'max_connections_per_ip = 2000\ndelivery_concurrency = {max(conc, 1) * 2}\n'
                f'max_outbound = {conc}\nmax_outbound_per_domain = {conc}\n')
    log = open(os.path.join(BASE, 'ternd.log'), 'w')
    p = subprocess.Popen([ternd, '-f', '-c', conf], stderr=log, stdin=subprocess.DEVNULL)
    sink = None
    try:
        for _ in range(100):
            if listening(PORT):
                break
            time.sleep(0.05)
        subprocess.run(['/usr/sbin/smtp-source', '-c', '-4', '-s', '20', '-m', str(n), '-l',
                        '1024', '-M', 'client.bench', '-f', 'a@client.bench', '-t',
                        'u@remote.bench', f'127.0.0.1:{PORT}'], stdout=subprocess.DEVNULL,
                       check=True, timeout=600)
        time.sleep(1)  # every message has had its first (refused) attempt
        cmd = ['/usr/sbin/smtp-sink']
        if os.geteuid() == 0:
            cmd += ['-u', 'root']
        sink = subprocess.Popen(cmd + [f'127.0.0.1:{SINK}', '1000'], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(100):
            if listening(SINK):
                break
            time.sleep(0.05)
        subprocess.run([tern, 'queue', '-s', ctl, 'flush'], capture_output=True, timeout=30)
        deadline = time.time() + 300
        while time.time() < deadline:
            r = subprocess.run([tern, 'queue', '-s', ctl, 'count'], capture_output=True,
                               text=True, timeout=30)
            if r.stdout.strip().split()[-1:] == ['0']:
                break
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.close()
        if sink is not None:
            sink.send_signal(signal.SIGTERM)
            sink.wait(timeout=10)
    t = [ts(line) for line in open(os.path.join(BASE, 'ternd.log')) if 'event=delivered' in line]
    if len(t) < 2:
        return len(t), 0.0
    return len(t), len(t) / (max(t) - min(t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-n', type=int, default=2000)
    ap.add_argument('--ternd')
    a = ap.parse_args()
    ternd = a.ternd or next(p for p in (os.path.join(ROOT, 'build-release/ternd'),
                                        os.path.join(ROOT, 'build/ternd')) if os.path.exists(p))
    tern = os.path.join(os.path.dirname(ternd), 'tern')
    for conc in (1, 20):
        got, rate = run(ternd, tern, a.n, conc)
        print(f'relay into smtp-sink, {conc} outbound connection(s): {got}/{a.n} delivered, '
              f'{rate:.0f} msg/s')


if __name__ == '__main__':
    main()
