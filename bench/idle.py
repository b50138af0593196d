#!/usr/bin/env python3
"""idle.py - memory cost of idle SMTP connections held by a running server.

usage: idle.py --pid PID [--port 2529] [-n 10000] [--label NAME]
               [--timeout 60] [--window 500] [--settle 1.0] [--target-kib 16]

Opens N TCP connections to 127.0.0.1:PORT (loopback only), waits for each
220 banner, then samples the server's VmRSS (/proc/PID/status) and Pss
(/proc/PID/smaps_rollup) and compares with the sample taken before the first
connect: (after - before) / connections-with-banner = KiB per idle connection
(user space of the server; kernel socket memory is not included).
Then it closes every connection.  Connects are paced (at most --window
connections waiting for their banner at once) so that the listen backlog
never overflows into SYN retransmits.  The whole test is bounded by
--timeout seconds; connections still without a banner then count as failed.

Prints a human-readable report and one machine-readable line:
  RESULT label=.. wanted=N banners=.. refused=.. failed=.. secs=..
         rss_kib_per_conn=.. pss_kib_per_conn=.. server_alive=0|1 verdict=..
Exit status: 0 if every connection got a 220 banner, 1 otherwise, 2 on usage.
Python 3 standard library only.
"""
import argparse
import errno
import os
import resource
import select
import socket
import sys
import time

HOST = '127.0.0.1'   # loopback only, by design


def mem(pid):
    """(VmRSS kB, Pss kB, fd count) of one process; None values if gone."""
    rss = pss = nfd = None
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1])
                    break
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    pss = int(line.split()[1])
                    break
        nfd = len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        pass
    return rss, pss, nfd


def nofile_limit(pid):
    try:
        with open('/proc/%d/limits' % pid) as f:
            for line in f:
                if line.startswith('Max open files'):
                    return line.split()[3]
    except OSError:
        pass
    return '?'


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not serving
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pid', type=int, required=True, help='server process to measure')
    ap.add_argument('--port', type=int, default=2529)
    ap.add_argument('-n', '--count', type=int, default=10000)
    ap.add_argument('--label', default='server')
    ap.add_argument('--timeout', type=float, default=60.0, help='bound on the whole open phase (s)')
    ap.add_argument('--window', type=int, default=100,
                    help='max connections awaiting a banner (keep below the listen backlog: an '
                         'overflowed accept queue with SYN cookies leaves the client "connected" '
                         'to nothing)')
    ap.add_argument('--settle', type=float, default=1.0, help='wait before the "after" sample (s)')
    ap.add_argument('--target-kib', type=float, default=0.0, help='report PASS/FAIL against this (0: none)')
    a = ap.parse_args()

    if not alive(a.pid):
        print('idle.py: no process %d' % a.pid, file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    want = a.count
    if soft != resource.RLIM_INFINITY and want > soft - 32:
        print('idle.py: client fd limit %d: opening only %d connections' % (soft, soft - 32))
        want = soft - 32

    rss0, pss0, fd0 = mem(a.pid)
    print('[%s] pid %d: fd limit %s, before: VmRSS %s kB, Pss %s kB, %s fds'
          % (a.label, a.pid, nofile_limit(a.pid), rss0, pss0, fd0))

    ep = select.epoll()
    conns = {}          # fd -> [socket, received bytes]
    ok = []             # sockets that got "220 " (kept open, not polled)
    refused = failed = 0
    errs = {}
    opened = 0
    t0 = time.monotonic()
    deadline = t0 + a.timeout

    def fail(fd, why):
        nonlocal failed
        s = conns.pop(fd)[0]
        try:
            ep.unregister(fd)
        except OSError:
            pass
        s.close()
        failed += 1
        errs[why] = errs.get(why, 0) + 1

    while (opened < want or conns) and time.monotonic() < deadline:
        while opened < want and len(conns) < a.window:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            opened += 1
            rc = s.connect_ex((HOST, a.port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                why = 'connect: ' + os.strerror(rc)
                errs[why] = errs.get(why, 0) + 1
                continue
            conns[s.fileno()] = [s, b'']
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        for fd, ev in ep.poll(0.2):
            if fd not in conns:
                continue
            c = conns[fd]
            try:
                d = c[0].recv(4096)
            except OSError as e:
                if c[1][:3] not in (b'421', b'554'):
                    fail(fd, 'recv: ' + (e.strerror or str(e)))
                    continue
                d = b''
            if not d:
                if c[1].startswith(b'421') or c[1].startswith(b'554'):
                    why = 'refused: ' + c[1].split(b'\r\n')[0].decode('ascii', 'replace')[:60]
                    s = conns.pop(fd)[0]
                    ep.unregister(fd)
                    s.close()
                    refused += 1
                    errs[why] = errs.get(why, 0) + 1
                else:
                    fail(fd, 'closed before banner')
                continue
            c[1] += d
            buf = c[1]
            # the greeting is complete at the first line "220 ..." (multi-line: "220-")
            done = False
            for line in buf.split(b'\r\n')[:-1]:
                if line[:4] == b'220 ':
                    done = True
                    break
                if line[:3] != b'220':
                    break
            if done:
                ep.unregister(fd)
                ok.append(conns.pop(fd)[0])
            elif len(buf) > 4096:
                fail(fd, 'banner too long')
            elif buf[:3] in (b'421', b'554') and buf.endswith(b'\r\n'):
                pass        # wait for the server's close, counted above
    open_secs = time.monotonic() - t0
    for fd in list(conns):
        fail(fd, 'no banner within %.0fs' % a.timeout)
    if opened < want:
        failed += want - opened
        errs['not attempted (timeout)'] = want - opened

    time.sleep(a.settle)
    rss1, pss1, fd1 = mem(a.pid)
    up = alive(a.pid)
    n = len(ok)
    print('[%s] %d/%d idle connections got the 220 banner in %.1f s (refused %d, failed %d)'
          % (a.label, n, want, open_secs, refused, failed))
    for why, k in sorted(errs.items(), key=lambda x: -x[1]):
        print('[%s]   %6d  %s' % (a.label, k, why))
    print('[%s] after:  VmRSS %s kB, Pss %s kB, %s fds%s'
          % (a.label, rss1, pss1, fd1, '' if up else '  (SERVER IS GONE)'))
    rss_pc = pss_pc = float('nan')
    if n and rss0 is not None and rss1 is not None:
        rss_pc = (rss1 - rss0) / n
    if n and pss0 is not None and pss1 is not None:
        pss_pc = (pss1 - pss0) / n
    print('[%s] server user-space memory per idle connection: %.2f KiB RSS, %.2f KiB Pss'
          % (a.label, rss_pc, pss_pc))
    verdict = '-'
    if a.target_kib > 0:
        verdict = 'PASS' if (n == want and rss_pc <= a.target_kib) else 'FAIL'
        print('[%s] target <= %g KiB/conn with all %d connections: %s'
              % (a.label, a.target_kib, want, verdict))

    t1 = time.monotonic()
    for s in ok:
        s.close()
    ep.close()
    time.sleep(a.settle)
    rss2, pss2, fd2 = mem(a.pid)
    print('[%s] closed all in %.1f s; after close: VmRSS %s kB, Pss %s kB, %s fds'
          % (a.label, time.monotonic() - t1, rss2, pss2, fd2))
    print('RESULT label=%s wanted=%d banners=%d refused=%d failed=%d secs=%.1f '
          'rss_kib_per_conn=%.2f pss_kib_per_conn=%.2f server_alive=%d verdict=%s'
          % (a.label, want, n, refused, failed, open_secs, rss_pc, pss_pc, int(up), verdict))
    return 0 if n == want else 1


if __name__ == '__main__':
    sys.exit(main())
