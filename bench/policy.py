#!/usr/bin/env python3
"""bench/policy.py - what the policy checks cost (issue 6).

1. Microseconds per RCPT: one connection sends MAIL, K pipelined RCPTs and RSET, M times;
   every RCPT is answered only after its checks (each waits for the store).  Setups:
   no policy; greylisting (triplets passed beforehand: one read per RCPT) on LMDB and on
   Redis; greylisting plus a recipient rate limit (one more counter write per RCPT).
   The cost of policy per RCPT is the difference from "no policy".
2. Messages per second at 100 clients (smtp-source, 1 KiB, one message per connection),
   greylisting off vs on (the one triplet passed beforehand), LMDB and Redis.

The client is 127.0.0.1 and relay_networks is empty, so nothing is exempt.  ternd (and
redis-server) run under /var/tmp/ternbench/policy on ports 2534 (and 2535), and are
stopped by PID.
usage: bench/policy.py [--ternd PATH] [-k RCPTS] [-m ROUNDS] [-n MESSAGES]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = '/var/tmp/ternbench/policy'
PORT = 2534
REDIS_PORT = 2535


def listening(port):
    out = subprocess.run(['ss', '-ltn', f'sport = :{port}'], capture_output=True, text=True)
    return 'LISTEN' in out.stdout


def wait_port(port):
    for _ in range(200):
        if listening(port):
            return
        time.sleep(0.05)
    raise SystemExit(f'bench/policy.py: nothing listens on {port}')


class Proc:
    def __init__(self, cmd, log):
        self.log = open(log, 'w')
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=self.log)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def start_ternd(ternd, extra):
    shutil.rmtree(os.path.join(BASE, 'spool'), ignore_errors=True)
    shutil.rmtree(os.path.join(BASE, 'mail'), ignore_errors=True)
    conf = os.path.join(BASE, 'tern.conf')
    with open(conf, 'w') as f:
        f.write(f'listen = 127.0.0.1:{PORT}\nhostname = policy.bench\n'
                f'spool_dir = {BASE}/spool\nmailbox_dir = {BASE}/mail\n'
                f'local_domains = bench.local\nrelay_networks =\nmax_recipients = 100000\n'
                f'max_errors = 1000000\nmax_connections = 2000\n'
                f'max_connections_per_ip = 2000\nlog_level = warn\n'
                f'greylist_delay = 0\ngreylist_auto_allow = 0\n')
        for k, v in extra.items():
            f.write(f'{k} = {v}\n')
    p = Proc([ternd, '-f', '-c', conf], os.path.join(BASE, 'ternd.log'))
    wait_port(PORT)
    return p


class Client:
    def __init__(self):
        self.s = socket.create_connection(('127.0.0.1', PORT), timeout=30)
        self.f = self.s.makefile('rb')
        self.reply()
        self.s.sendall(b'EHLO client.bench\r\n')
        self.reply()

    def reply(self):
        while True:
            line = self.f.readline()
            if not line:
                raise SystemExit('bench/policy.py: ternd closed the connection')
            if line[3:4] != b'-':
                return line

    def round(self, k, tag='u'):
        """MAIL, k pipelined RCPTs, RSET; the count of 250 replies to RCPT."""
        cmds = [b'MAIL FROM:<a@client.bench>\r\n']
        cmds += [f'RCPT TO:<{tag}{i}@bench.local>\r\n'.encode() for i in range(k)]
        cmds.append(b'RSET\r\n')
        self.s.sendall(b''.join(cmds))
        self.reply()
        ok = sum(self.reply().startswith(b'250') for _ in range(k))
        self.reply()
        return ok

    def close(self):
        self.s.sendall(b'QUIT\r\n')
        self.s.close()


def per_rcpt(ternd, extra, k, m):
    p = start_ternd(ternd, extra)
    try:
        c = Client()
        if extra.get('greylist') == 'on':
            c.round(k)           # first sight: 451 each (greylist_delay = 0)
            ok = c.round(k)      # retried: each passes and is stored as passed
            if ok != k:
                raise SystemExit(f'bench/policy.py: only {ok}/{k} triplets passed ({extra})')
        c.round(k)               # warm up
        t0 = time.perf_counter()
        for _ in range(m):
            ok = c.round(k)
            if ok != k:
                raise SystemExit(f'bench/policy.py: {ok}/{k} RCPTs accepted ({extra})')
        dt = time.perf_counter() - t0
        c.close()
    finally:
        p.stop()
    return dt / (k * m) * 1e6


def msgs_per_second(ternd, extra, n):
    p = start_ternd(ternd, extra)
    try:
        if extra.get('greylist') == 'on':
            c = Client()
            c.round(1, tag='pbench')
            if c.round(1, tag='pbench') != 1:
                raise SystemExit('bench/policy.py: the smtp-source triplet did not pass')
            c.close()
        t0 = time.perf_counter()
        r = subprocess.run(['/usr/sbin/smtp-source', '-c', '-4', '-s', '100', '-m', str(n),
                            '-l', '1024', '-M', 'client.bench', '-f', 'a@client.bench', '-t',
                            'pbench0@bench.local', f'127.0.0.1:{PORT}'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           check=True, timeout=600)
        dt = time.perf_counter() - t0
    finally:
        p.stop()
    # smtp-source reports every reply that is not the expected one on stderr
    errors = sum(1 for line in r.stderr.splitlines() if line.strip())
    return n / dt, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ternd')
    ap.add_argument('-k', type=int, default=1000, help='RCPTs per transaction')
    ap.add_argument('-m', type=int, default=20, help='transactions timed')
    ap.add_argument('-n', type=int, default=10000, help='messages for smtp-source')
    ap.add_argument('--reps', type=int, default=3, help='runs of each setup (median shown)')
    a = ap.parse_args()
    ternd = a.ternd or next(p for p in (os.path.join(ROOT, 'build-release/ternd'),
                                        os.path.join(ROOT, 'build/ternd')) if os.path.exists(p))
    for port in (PORT, REDIS_PORT):
        if listening(port):
            raise SystemExit(f'bench/policy.py: 127.0.0.1:{port} is in use; not touching it')
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    redis = None
    if shutil.which('redis-server'):
        os.makedirs(os.path.join(BASE, 'redis'))
        redis = Proc(['redis-server', '--port', str(REDIS_PORT), '--bind', '127.0.0.1',
                      '--save', '', '--appendonly', 'no', '--dir', os.path.join(BASE, 'redis')],
                     os.path.join(BASE, 'redis.log'))
        wait_port(REDIS_PORT)
    rs = f'redis://127.0.0.1:{REDIS_PORT}'
    setups = [('no policy', {}),
              ('greylist, LMDB', {'greylist': 'on'}),
              ('greylist + rate_recipients, LMDB', {'greylist': 'on',
                                                   'rate_recipients': '100000000'})]
    if redis:
        setups += [('greylist, Redis', {'greylist': 'on', 'state_store': rs}),
                   ('greylist + rate_recipients, Redis', {'greylist': 'on', 'state_store': rs,
                                                         'rate_recipients': '100000000'})]
    try:
        print(f'ternd: {ternd}')
        print(f'\n#### cost per RCPT ({a.k} pipelined RCPTs per transaction, {a.m} '
              f'transactions, one connection)\n')
        print(f'| setup | us per RCPT (median of {a.reps}) | policy cost per RCPT (us) |')
        print('|---|---|---|')
        base = None
        for name, extra in setups:
            us = statistics.median(per_rcpt(ternd, extra, a.k, a.m) for _ in range(a.reps))
            base = us if base is None else base
            print(f'| {name} | {us:.1f} | {us - base:+.1f} |', flush=True)
        print(f'\n#### messages per second at 100 clients (smtp-source -s 100, {a.n} x 1 KiB, '
              f'one message per connection; the triplet passed beforehand)\n')
        print(f'| setup | msg/s (median of {a.reps}) | smtp-source errors (all runs) |')
        print('|---|---|---|')
        # repetition-major, so that load from other work spreads over every setup
        runs = {}
        for _ in range(a.reps):
            for name, extra in [s for s in setups if 'rate' not in s[0]]:
                runs.setdefault(name, []).append(msgs_per_second(ternd, extra, a.n))
        for name, rs in runs.items():
            print(f'| {name} | {statistics.median(r[0] for r in rs):.0f} | '
                  f'{sum(r[1] for r in rs)} |', flush=True)
    finally:
        if redis:
            redis.stop()


if __name__ == '__main__':
    main()
