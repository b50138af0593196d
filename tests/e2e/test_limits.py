"""
test_limits.py - every bound: recipients, message size, line length, a huge line (memory),
error count, idle timeouts, total and per-IP connections; HTTP on the SMTP port.
"""

import os
import select
import signal
import socket
import ssl
import threading
import time

from harness import HOSTNAME, Conn, check_reply, fail, free_port, marker, spool_count, start_txn


def test_max_recipients(t):  # covers: R_TOO_MANY_RCPTS
    d = t.start({'max_recipients': '3'})
    mk = marker('rcpts')
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        for i in range(3):
            c.cmd(f'RCPT TO:<u{i}@example.org>', 250, '2.1.5')
        c.cmd('RCPT TO:<u3@example.org>', 452, '4.5.3', '3')
        c.cmd('DATA', 354, None)  # the three accepted ones still stand
        c.send(f'Subject: r\r\n\r\n{mk}\r\n.\r\n')
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the message is not in the spool exactly once')


def test_message_too_big(t):  # covers: R_SIZE_DATA
    d = t.start({'max_message_size': '2048'})
    mk = marker('big')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: big {mk}\r\n\r\n'.encode() + b'x' * 70 + b'\r\n')
        c.send((b'y' * 98 + b'\r\n') * 40)  # about 4 KB
        extra = c.pending(0.5)
        if extra:
            fail(f'the server replied before the final dot: {extra[:200]!r}')
        c.send(b'.\r\n')
        c.expect(552, '5.3.4', '2048')
        c.cmd('NOOP', 250, '2.0.0')  # the session goes on
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')  # with no transaction left over
    if spool_count(d.spool_dir, mk) != 0:
        fail('the refused message is in the spool')


def test_message_at_size_limit_accepted(t):
    d = t.start({'max_message_size': '2048'})
    mk = marker('fit')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        # about 1 KB of body: well under the limit even with a Received: header added
        c.send(f'Subject: {mk}\r\n\r\n'.encode() + (b'z' * 98 + b'\r\n') * 10 + b'.\r\n')
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the message is not in the spool')


def test_line_too_long_resync(t):  # covers: R_LINE_TOO_LONG
    d = t.start({'max_line_length': '512'})
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('NOOP ' + 'x' * 600, 500, '5.5.2', 'too long')
        c.cmd('NOOP', 250, '2.0.0')
        # a long line split over several writes is still one line
        c.send('MAIL FROM:<a@b.example> ' + 'y' * 300)
        time.sleep(0.1)
        c.send('z' * 300 + '\r\n')
        c.expect(500, '5.5.2', 'too long')
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')


def test_line_at_limit_accepted(t):
    d = t.start({'max_line_length': '512'})
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('NOOP ' + 'x' * (512 - 2 - 5), 250, '2.0.0')  # 512 octets with CRLF


def _send_and_collect(sock, data, piece=65536):
    """Send data in pieces while reading whatever the server says; (bytes got, send error)."""
    got = b''
    err = None
    sock.setblocking(False)
    off = 0
    deadline = time.monotonic() + 60
    try:
        while off < len(data) and time.monotonic() < deadline:
            r, w, _ = select.select([sock], [sock], [], 5)
            if r:
                chunk = sock.recv(65536)
                if not chunk:
                    err = 'EOF'
                    break
                got += chunk
            if w:
                n = sock.send(data[off:off + piece])
                off += n
    except (BrokenPipeError, ConnectionResetError) as e:
        err = repr(e)
    finally:
        sock.setblocking(True)
    return got, err, off


def test_huge_line_bounded_memory(t):
    d = t.start({'max_line_length': '512'},
                env={'ASAN_OPTIONS': os.environ.get('ASAN_OPTIONS', '') +
                     ':quarantine_size_mb=1'} if 'ASAN_OPTIONS' in os.environ else None)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        rss0 = d.status_field('VmRSS')
        got, err, sent = _send_and_collect(c.sock, b'NOOP ' + b'A' * (10 * 1024 * 1024))
        hwm = d.status_field('VmHWM')
        rss1 = d.status_field('VmRSS')
        t.note(f'VmRSS before {rss0} kB, after {rss1} kB, VmHWM {hwm} kB; sent {sent} octets')
        if hwm > 50 * 1024:
            fail(f'ternd peak RSS {hwm} kB > 50 MB after a 10 MB line')
        if rss1 - rss0 > 8 * 1024:
            fail(f'ternd RSS grew by {rss1 - rss0} kB while reading a 10 MB line')
        c.buf = got
        if err is None:
            c.send(b'\r\n')
        r = c.reply()
        if r.code == 421:
            c.expect_close()
        else:
            check_reply(r, 500, '5.5.2')
            c.cmd('NOOP', 250, '2.0.0')
    if not d.alive():
        fail('ternd died')


def test_max_errors(t):  # covers: R_TOO_MANY_ERRORS
    d = t.start({'max_errors': '3'})
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        for _ in range(3):
            c.cmd('FOO', 500, '5.5.2')
        r = c.cmd('FOO')
        if r.code == 500:  # the 4th error's own reply, then the 421
            check_reply(r, 500, '5.5.2')
            r = c.reply()
        check_reply(r, 421, '4.7.0', 'max_errors')
        c.expect_close()


def test_errors_below_limit_keep_session(t):
    d = t.start({'max_errors': '3'})
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        for _ in range(3):
            c.cmd('FOO', 500, '5.5.2')
        c.cmd('NOOP', 250, '2.0.0')  # successes do not count


def test_timeout_command(t):  # covers: R_TIMEOUT
    d = t.start({'timeout_command': '2'})
    with d.connect() as c:
        t0 = time.monotonic()
        c.expect(421, '4.4.2', 'timeout_command', timeout=8)
        dt = time.monotonic() - t0
        if dt < 1.5:
            fail(f'timed out after {dt:.2f} s, before timeout_command = 2')
        c.expect_close()


def test_timeout_command_after_ehlo(t):
    d = t.start({'timeout_command': '2'})
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        time.sleep(1.2)
        c.cmd('NOOP', 250, '2.0.0')  # activity resets the clock
        t0 = time.monotonic()
        c.expect(421, '4.4.2', timeout=8)
        if time.monotonic() - t0 < 1.5:
            fail('timed out before timeout_command after the last command')
        c.expect_close()


def test_timeout_data(t):  # covers: R_TIMEOUT_DATA
    d = t.start({'timeout_command': '30', 'timeout_data': '2'})
    mk = marker('tdata')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: slow {mk}\r\n\r\npart'.encode())
        t0 = time.monotonic()
        c.expect(421, '4.4.2', 'timeout_data', timeout=10)
        if time.monotonic() - t0 < 1.5:
            fail('timed out before timeout_data = 2')
        c.expect_close()
    if spool_count(d.spool_dir, mk) != 0:
        fail('the partial message is in the spool')


def test_max_connections(t):  # covers: R_OVERLOAD_TOTAL
    d = t.start({'max_connections': '2', 'max_connections_per_ip': '10'})
    a = d.connect()
    b = d.connect()
    with d.connect(greet=False) as c:
        c.expect(421, '4.3.2', 'max_connections')
        c.expect_close()
    a.cmd('NOOP', 250, '2.0.0')  # the first two are served
    b.cmd('NOOP', 250, '2.0.0')
    a.cmd('QUIT', 221, '2.0.0')
    a.expect_close()
    a.close()
    deadline = time.monotonic() + 5
    while True:  # a slot is free again once the server has seen the close
        c = d.connect(greet=False)
        r = c.reply()
        c.close()
        if r.code == 220:
            break
        if time.monotonic() > deadline:
            fail(f'no slot after a client quit: {r!r}')
        time.sleep(0.1)
    b.close()


def test_max_connections_per_ip(t):  # covers: R_OVERLOAD_IP
    d = t.start({'max_connections': '10', 'max_connections_per_ip': '1'})
    a = d.connect()
    with d.connect(greet=False) as c:
        c.expect(421, '4.7.0', 'max_connections_per_ip')
        c.expect_close()
    a.cmd('NOOP', 250, '2.0.0')
    a.close()


def test_http_request_line(t):  # covers: R_HTTP
    d = t.start()
    with d.connect() as c:
        c.send(b'GET / HTTP/1.1\r\n')
        c.expect(421, '4.7.0', 'HTTP')
        c.expect_close()


def test_http_host_header(t):
    d = t.start()
    with d.connect() as c:
        c.send(b'Host: x\r\n')
        c.expect(421, '4.7.0', 'HTTP')
        c.expect_close()


def test_http_post_after_ehlo(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.send(b'POST /form HTTP/1.0\r\n')
        c.expect(421, '4.7.0')
        c.expect_close()


def test_timeout_data_in_bdat_chunk(t):
    """A BDAT chunk that stops arriving is message data gone silent: timeout_data."""
    d = t.start({'timeout_command': '30', 'timeout_data': '2'})
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 100 LAST\r\n' + b'x' * 10)
        t0 = time.monotonic()
        c.expect(421, '4.4.2', timeout=10)
        if time.monotonic() - t0 < 1.5:
            fail('timed out before timeout_data = 2')
        c.expect_close()


# ---- a client that does not read its replies ------------------------------------------------

def _stall_daemon(t, tls, conf=None):
    """timeout_command 2, one connection per address, shutdown_timeout 30; with tls, the
    stalled client uses an implicit-TLS listener and the probes a plain one (same count)."""
    from test_tls import make_cert
    d = t.daemon(dict({'timeout_command': '2', 'max_connections_per_ip': '1',
                       'shutdown_timeout': '30'}, **(conf or {})))
    d.probe_port = None
    if tls:
        d.cert, d.key = make_cert(d.tmpdir, 'server')
        d.probe_port = free_port()
        d.overrides.update({'tls_cert': d.cert, 'tls_key': d.key,
                            'listen': f'127.0.0.1:{{port}} tls, 127.0.0.1:{d.probe_port}'})
    d.start()
    if d.probe_port is None:
        d.probe_port = d.port
    return d


def _stalled_client(d, tls):
    """Pipeline NOOPs without reading a reply until the server stops taking them."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(5)
    raw.connect(('127.0.0.1', d.port))
    s = raw
    if tls:
        from test_tls import client_ctx
        s = client_ctx(d.cert).wrap_socket(raw, server_hostname=HOSTNAME)
    s.setblocking(False)
    payload = b'NOOP\r\n' * 2000
    sent, blocked_since = 0, None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sent += s.send(payload)
            blocked_since = None
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            now = time.monotonic()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > 0.5:
                return s, sent  # the server has stopped reading: its output is blocked
            time.sleep(0.05)
    fail(f'the server kept reading {sent} bytes of NOOPs from a client that does not read')


def _slot_free_within(d, seconds):
    """Seconds until a new connection from the same address gets its 220 (or fail)."""
    t0 = time.monotonic()
    while True:
        with Conn(d.probe_port, greet=False) as c:
            r = c.reply()
            if r.code == 220:
                dt = time.monotonic() - t0
                c.cmd('QUIT', 221, '2.0.0')
                c.expect_close()
                time.sleep(0.5)  # the server has seen the close: the slot is free again
                return dt
        if time.monotonic() - t0 > seconds:
            fail(f'the slot of a client that stopped reading was still held after '
                 f'{seconds:.0f} s (timeout_command 2): {r!r}')
        time.sleep(0.2)


def _write_stall(t, tls):
    d = _stall_daemon(t, tls)
    s, sent = _stalled_client(d, tls)
    dt = _slot_free_within(d, 10)
    t.note(f'{"tls" if tls else "plain"}: {sent} bytes sent unread; slot free {dt:.1f} s later')
    if b'reason="output not read"' not in d.stderr():
        fail(f'no timeout logged for the stalled client: {d.stderr_tail()}')
    s.close()
    # SIGTERM while a client does not read its 421: exit within timeout_command, not 30 s
    s, sent = _stalled_client(d, tls)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    st = d.wait_exit(12)
    s.close()
    if st is None:
        fail('SIGTERM: ternd still runs 12 s later (shutdown_timeout 30) behind a client '
             'that does not read')
    d.stopped = True
    if st != 0:
        fail(f'ternd exited with {st} after SIGTERM')
    t.note(f'SIGTERM with a stalled client: exit after {time.monotonic() - t0:.1f} s')


def test_write_stall_frees_slot(t):
    """A client that pipelines without reading blocks the server's output: after
    timeout_command without write progress the connection is dropped (no 421 could reach
    it), also when it is closing (SIGTERM)."""
    _write_stall(t, tls=False)


def test_write_stall_frees_slot_tls(t):
    _write_stall(t, tls=True)


def test_slow_reader_not_cut(t):
    """A client that reads its replies slowly (pauses shorter than timeout_command, total
    far longer) gets every reply of a large pipelined batch and the 221."""
    d = _stall_daemon(t, False, {'timeout_command': '3'})
    n = 1_000_000  # 14 MB of replies, read 3 MB at a time: the server's output blocks often
    c = socket.create_connection(('127.0.0.1', d.port), timeout=10)
    c.settimeout(10)

    def sender():
        try:
            c.sendall(b'NOOP\r\n' * n + b'QUIT\r\n')
        except OSError:
            pass

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    tail = b''
    eof = False
    t0 = time.monotonic()
    while not eof and b'221 ' not in tail and time.monotonic() - t0 < 40:
        time.sleep(2.0)  # under timeout_command, without reading
        c.settimeout(0.2)
        try:
            got = 0
            while got < 3 << 20:  # then a part of what there is
                data = c.recv(1 << 20)
                if not data:
                    eof = True
                    break
                got += len(data)
                tail = (tail + data)[-200:]
        except socket.timeout:
            pass
        except OSError as e:
            fail(f'the slow reader was cut after {time.monotonic() - t0:.1f} s: {e!r}')
    c.close()
    th.join(5)
    if b'250 2.0.0 Ok\r\n221 2.0.0' not in tail:
        fail(f'the slow reader did not get all replies and the 221 in '
             f'{time.monotonic() - t0:.1f} s: ends {tail[-100:]!r}; {d.stderr_tail(500)}')
    t.note(f'slow reader served for {time.monotonic() - t0:.1f} s')
