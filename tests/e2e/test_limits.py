"""
test_limits.py - every bound: recipients, message size, line length, a huge line (memory),
error count, idle timeouts, total and per-IP connections; HTTP on the SMTP port.
"""

import os
import select
import time

from harness import check_reply, fail, marker, spool_count, start_txn


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
