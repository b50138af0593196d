"""
test_shutdown.py - SIGTERM (design.md "Contract"): idle sessions get 421 4.3.2 and are
closed; new connections get 421 4.3.2 or are refused; a DATA in progress may finish (250
only once committed, else 4xx); ternd exits 0 within shutdown_timeout.
"""

import signal
import time

from harness import Closed, check_reply, fail, marker, spool_count, start_txn


def _new_connection_refused_or_421(d):
    try:
        c = d.connect(greet=False)
    except (ConnectionRefusedError, ConnectionResetError):
        return 'refused'
    with c:
        try:
            r = c.reply()
        except Closed:
            return 'closed'  # closed without a word: like a refusal
        check_reply(r, 421, '4.3.2', None, b'(connect during shutdown)')
        c.expect_close()
        return '421'


def test_sigterm_idle_and_data(t):  # covers: R_SHUTDOWN
    d = t.start({'shutdown_timeout': '6'})
    mk = marker('term')
    idle = d.connect()
    idle.cmd('EHLO client.test', 250, None)
    busy = d.connect()
    start_txn(busy)
    busy.cmd('DATA', 354, None)
    busy.send(f'Subject: shutdown\r\n\r\nfirst part {mk}\r\n'.encode())
    time.sleep(0.2)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    idle.expect(421, '4.3.2', 'shutting down')
    idle.expect_close()
    how = _new_connection_refused_or_421(d)
    t.note(f'new connection during shutdown: {how}')
    busy.send(b'second part\r\n.\r\n')
    r = busy.reply()
    late = time.monotonic() - t0 > 5
    if r.code == 250:
        check_reply(r, 250, '2.0.0', 'queued as')
    elif late:
        check_reply(r, 421, '4.3.2')
    else:
        fail(f'a DATA finished {time.monotonic() - t0:.1f} s into a 6 s shutdown got {r!r}, '
             f'want 250 2.0.0')
    try:  # after the transaction the session is idle: 421 then close, or QUIT works
        busy.cmd('QUIT')
    except (Closed, BrokenPipeError, ConnectionResetError):
        pass
    busy.close()
    idle.close()
    status = d.wait_exit(6 + 5)
    if status is None:
        fail('ternd still running 11 s after SIGTERM (shutdown_timeout = 6)')
    d.stopped = True
    if status != 0:
        fail(f'ternd exited {status} after SIGTERM, want 0')
    if r.code == 250 and spool_count(d.spool_dir, f'first part {mk}\r\nsecond part\r\n') != 1:
        fail('the message acknowledged with 250 during shutdown is not in the spool')
    findings = d.sanitizer_findings()
    if findings:
        fail('\n'.join(findings))


def test_sigterm_stalled_data(t):
    d = t.start({'shutdown_timeout': '2', 'timeout_data': '60'})
    mk = marker('stall')
    busy = d.connect()
    start_txn(busy)
    busy.cmd('DATA', 354, None)
    busy.send(f'Subject: stalled {mk}\r\n\r\n'.encode())
    time.sleep(0.2)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    status = d.wait_exit(2 + 5)
    dt = time.monotonic() - t0
    if status is None:
        fail('ternd still running 7 s after SIGTERM with shutdown_timeout = 2')
    d.stopped = True
    if status != 0:
        fail(f'ternd exited {status} after SIGTERM, want 0')
    try:
        r = busy.reply(timeout=1)
        if r.code == 250 or r.code < 400:
            fail(f'a stalled DATA got {r!r} at shutdown')
        check_reply(r, 421, '4.3.2')
    except Closed:
        pass  # closed without a reply: allowed
    busy.close()
    if spool_count(d.spool_dir, mk) != 0:
        fail('the unfinished message is in the spool')
    t.note(f'exit after {dt:.1f} s')
    findings = d.sanitizer_findings()
    if findings:
        fail('\n'.join(findings))


def test_sigterm_no_sessions_exits_fast(t):
    d = t.start({'shutdown_timeout': '30'})
    with d.connect() as c:
        c.cmd('QUIT', 221, '2.0.0')
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    status = d.wait_exit(5)
    d.stopped = status is not None
    if status is None:
        fail('ternd with no sessions did not exit within 5 s of SIGTERM')
    if status != 0:
        fail(f'ternd exited {status}')
    t.note(f'exit after {time.monotonic() - t0:.2f} s')
