#!/usr/bin/env python3
"""bench/relay.py - relay throughput: messages per second from a queue into Postfix's
smtp-sink, tern beside Postfix, at 1 and 20 outbound connections.

Both MTAs get the same load the same way: N 1 KiB messages from smtp-source (20 sessions)
into their SMTP port while delivery is held back, then delivery is released and timed from
that moment until smtp-sink has counted all N messages (its -c counter, read from its
stdout; it also counts the SMTP sessions, so the table shows how many connections carried
the load).  Numbers only: nothing here passes or fails.

  tern     under /var/tmp/ternbench/relay: relay_host = the sink, max_outbound =
           max_outbound_per_domain = C, delivery_concurrency = 2 C + 20.  Held back by
           starting it with the sink down (every message defers once, min_backoff = 1 h),
           released by starting the sink and `tern queue flush`.
  Postfix  a private instance under /var/tmp/ternbench/relay-postfix (its own
           config_directory and queue_directory; master started and stopped with
           `postfix -c DIR`): relayhost = [127.0.0.1]:SINK,
           default_destination_concurrency_limit = C (initial_destination_concurrency =
           min(5, C): Postfix's own slow start), connection caching as shipped.  Held back
           with defer_transports = smtp; then that is cleared and Postfix reloaded (the
           deferred mail waits for its retry time), and `postqueue -f` releases it.

usage: bench/relay.py [-n N] [--ternd PATH] [--concs 1,20] [--only tern|postfix]
Only 127.0.0.1; every process started here is stopped by PID (Postfix by `postfix stop`).
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = '/var/tmp/ternbench/relay'
PFBASE = '/var/tmp/ternbench/relay-postfix'
SINK = 2533
PORT = 2532      # tern's SMTP port
PF_PORT = 2534   # Postfix's SMTP port
SMTP_SOURCE = '/usr/sbin/smtp-source'
SMTP_SINK = '/usr/sbin/smtp-sink'
TIMEOUT = 600


def listening(port):
    out = subprocess.run(['ss', '-ltn', f'sport = :{port}'], capture_output=True, text=True)
    return 'LISTEN' in out.stdout


def wait_listen(port, what):
    for _ in range(200):
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f'{what} does not listen on port {port}')


class Sink:
    """smtp-sink -c on SINK: counts messages and finished sessions as they happen."""

    def __init__(self):
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            cmd += ['-u', 'root']
        self.proc = subprocess.Popen(cmd + ['-c', f'127.0.0.1:{SINK}', '1000'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.msgs = self.sessions = 0
        self.when = {}    # message count -> time it was reached (only the target is asked)
        self.target = None
        self.done = threading.Event()
        threading.Thread(target=self.read, daemon=True).start()
        wait_listen(SINK, 'smtp-sink')

    def read(self):
        buf = b''
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b'\r')
            for line in lines:
                m = re.search(rb'sess=(\d+) quit=\d+ mesg=(\d+)', line)
                if m:
                    self.sessions, self.msgs = int(m.group(1)), int(m.group(2))
                    if self.target is not None and self.msgs >= self.target and \
                            not self.done.is_set():
                        self.done_at = time.monotonic()
                        self.done.set()

    def expect(self, n):
        self.target = n
        if self.msgs >= n:
            self.done_at = time.monotonic()
            self.done.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def inject(port, n):
    subprocess.run([SMTP_SOURCE, '-c', '-4', '-s', '20', '-m', str(n), '-l', '1024', '-M',
                    'client.bench', '-f', 'a@client.bench', '-t', 'u@remote.bench',
                    f'127.0.0.1:{port}'], stdout=subprocess.DEVNULL, check=True, timeout=TIMEOUT)


def drain(sink, n, release):
    """Release delivery; seconds until the sink has all n messages (None: not in time)."""
    sink.expect(n)
    t0 = time.monotonic()
    release()
    if not sink.done.wait(TIMEOUT):
        return None
    return sink.done_at - t0


def sessions_after(sink, settle=3.0):
    """Finished sessions once the sender has closed its idle connections."""
    time.sleep(settle)
    return sink.sessions


# ---- tern ---------------------------------------------------------------------------------------

def run_tern(ternd, n, conc):
    tern = os.path.join(os.path.dirname(ternd), 'tern')
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    conf = os.path.join(BASE, 'tern.conf')
    ctl = os.path.join(BASE, 'ctl')
    with open(conf, 'w') as f:
        f.write(f'listen = 127.0.0.1:{PORT}\nhostname = relay.bench\nspool_dir = {BASE}/spool\n'
                f'mailbox_dir = {BASE}/mail\nlocal_domains = relay.bench\n'
                f'relay_networks = 127.0.0.0/8\nrelay_host = 127.0.0.1:{SINK}\n'
                f'control_socket = {ctl}\nmin_backoff = 3600\nmax_backoff = 3600\n'
                f'max_connections_per_ip = 2000\ndelivery_concurrency = {2 * conc + 20}\n'
                f'max_outbound = {conc}\nmax_outbound_per_domain = {conc}\n')
    log = open(os.path.join(BASE, 'ternd.log'), 'w')
    p = subprocess.Popen([ternd, '-f', '-c', conf], stderr=log, stdin=subprocess.DEVNULL)
    sink = None
    try:
        wait_listen(PORT, 'ternd')
        inject(PORT, n)
        time.sleep(1)  # every message has had its first (refused) attempt
        sink = Sink()
        secs = drain(sink, n, lambda: subprocess.run([tern, 'queue', '-s', ctl, 'flush'],
                                                     capture_output=True, timeout=30))
        conns = sessions_after(sink)
        got = sink.msgs
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.close()
        if sink is not None:
            sink.stop()
    return got, secs, conns


# ---- Postfix ------------------------------------------------------------------------------------

PF_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n  -  n  60   1  pickup
cleanup   unix  n  -  n  -    0  cleanup
qmgr      unix  n  -  n  300  1  qmgr
rewrite   unix  -  -  n  -    -  trivial-rewrite
bounce    unix  -  -  n  -    0  bounce
defer     unix  -  -  n  -    0  bounce
trace     unix  -  -  n  -    0  bounce
verify    unix  -  -  n  -    1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -    -  proxymap
smtp      unix  -  -  n  -    -  smtp
relay     unix  -  -  n  -    -  smtp
showq     unix  n  -  n  -    -  showq
error     unix  -  -  n  -    -  error
retry     unix  -  -  n  -    -  error
discard   unix  -  -  n  -    -  discard
anvil     unix  -  -  n  -    1  anvil
scache    unix  -  -  n  -    1  scache
postlog   unix-dgram n - n - 1 postlogd
"""


def pf(*args, check=True):
    return subprocess.run(['postfix', '-c', f'{PFBASE}/etc'] + list(args), capture_output=True,
                          text=True, timeout=60, check=check)


def pf_deferred():
    d = os.path.join(PFBASE, 'spool', 'deferred')
    return sum(len(files) for _, _, files in os.walk(d))


def run_postfix(n, conc):
    if os.path.exists(f'{PFBASE}/spool/pid/master.pid'):
        pf('stop', check=False)
    shutil.rmtree(PFBASE, ignore_errors=True)
    for d in ('etc', 'spool', 'data', 'log'):
        os.makedirs(os.path.join(PFBASE, d))
    shutil.chown(os.path.join(PFBASE, 'data'), 'postfix')
    with open(f'{PFBASE}/etc/main.cf', 'w') as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {PFBASE}/spool
data_directory = {PFBASE}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {PFBASE}/log/maillog
myhostname = relay-postfix.bench
mydomain = relay-postfix.bench
myorigin = relay-postfix.bench
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
in_flow_delay = 0
relayhost = [127.0.0.1]:{SINK}
default_destination_concurrency_limit = {conc}
initial_destination_concurrency = {min(5, conc)}
defer_transports = smtp
""")
    with open(f'{PFBASE}/etc/master.cf', 'w') as f:
        f.write(PF_MASTER.format(port=PF_PORT))
    pf('check', check=False)  # creates the queue directories, fixes permissions
    pf('start')
    sink = None
    try:
        wait_listen(PF_PORT, 'Postfix')
        inject(PF_PORT, n)
        deadline = time.monotonic() + TIMEOUT
        while pf_deferred() < n and time.monotonic() < deadline:
            time.sleep(0.2)
        sink = Sink()
        # the deferred mail waits for its retry time; only the flush below sends it
        subprocess.run(['postconf', '-c', f'{PFBASE}/etc', '-e', 'defer_transports ='],
                       check=True, timeout=30)
        pf('reload')
        time.sleep(1)
        secs = drain(sink, n, lambda: subprocess.run(['postqueue', '-c', f'{PFBASE}/etc', '-f'],
                                                     capture_output=True, timeout=30))
        conns = sessions_after(sink)
        got = sink.msgs
    finally:
        pf('stop', check=False)
        if sink is not None:
            sink.stop()
    return got, secs, conns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-n', type=int, default=2000)
    ap.add_argument('--ternd')
    ap.add_argument('--concs', default='1,20')
    ap.add_argument('--only', choices=('tern', 'postfix'))
    a = ap.parse_args()
    ternd = a.ternd or next(p for p in (os.path.join(ROOT, 'build-release/ternd'),
                                        os.path.join(ROOT, 'build/ternd')) if os.path.exists(p))
    rows = []
    for conc in [int(c) for c in a.concs.split(',')]:
        for name in ('tern', 'postfix'):
            if a.only and name != a.only:
                continue
            if name == 'postfix' and not shutil.which('postfix'):
                rows.append((name, conc, 0, None, 0))
                continue
            got, secs, conns = run_tern(ternd, a.n, conc) if name == 'tern' \
                else run_postfix(a.n, conc)
            rows.append((name, conc, got, secs, conns))
            print(f'# {name}, {conc} outbound connection(s): {got}/{a.n} at the sink'
                  + (f' in {secs:.2f} s' if secs else ' (not all in time)')
                  + f', {conns} SMTP session(s)', flush=True)
    print(f'\nrelay into smtp-sink, {a.n} messages of 1 KiB, timed from release to the last '
          f'message at the sink:\n')
    print('| MTA | outbound connections | msg/s | SMTP sessions used |')
    print('|---|---|---|---|')
    for name, conc, got, secs, conns in rows:
        rate = f'{got / secs:.0f}' if secs else ('not installed' if got == 0 else 'timeout')
        print(f'| {name} | {conc} | {rate} | {conns} |')


if __name__ == '__main__':
    main()
