"""
test_robustness.py - the input arrives in odd pieces, clients vanish, the daemon restarts:
resumable framing, no leaked connection slots or spill files, bounded memory for a huge
body, and acknowledged messages surviving SIGKILL.
"""

import os
import signal
import socket
import struct
import time

from harness import check_reply, fail, marker, spool_count, start_txn


def _bytewise(c, data, pause=0.0):
    for i in range(len(data)):
        c.send(data[i:i + 1])
        if pause:
            time.sleep(pause)


def test_commands_byte_by_byte(t):
    d = t.start()
    with d.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _bytewise(c, b'EHLO client.test\r\n', 0.002)
        c.expect(250, None)
        _bytewise(c, b'NOOP\r', 0.002)
        time.sleep(0.1)
        c.send(b'\n')  # CR and LF in different reads are still one CRLF
        c.expect(250, '2.0.0')


def test_data_byte_by_byte(t):
    d = t.start()
    mk = marker('bytes')
    body = f'Subject: b\r\n\r\n..dot {mk}\r\nline\r\n\r\n.x\r\n'.encode()
    with d.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start_txn(c)
        c.cmd('DATA', 354, None)
        _bytewise(c, body + b'.\r\n', 0.001)
        c.expect(250, '2.0.0', 'queued as')
    want = f'\r\n.dot {mk}\r\nline\r\n\r\nx\r\n'.encode()
    if spool_count(d.spool_dir, want) != 1:
        fail(f'a body sent byte by byte is not stored as {want!r}')


def test_end_of_data_split_across_writes(t):
    d = t.start()
    mk = marker('split')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        for piece in (f'Subject: s\r\n\r\n{mk}\r'.encode(), b'\n', b'.', b'\r', b'\n'):
            c.send(piece)
            time.sleep(0.05)
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, f'{mk}\r\n') != 1:
        fail('the message is not in the spool')


def _rst_close(c):
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    c.close()


def _connect_when_free(d, deadline=5.0):
    """Connect and read the 220, retrying while the server still counts closed sessions."""
    end = time.monotonic() + deadline
    while True:
        c = d.connect(greet=False)
        r = c.reply()
        if r.code == 220:
            return c
        c.close()
        if time.monotonic() > end:
            fail(f'no free connection slot within {deadline:.0f} s: {r!r}')
        time.sleep(0.05)


def test_no_connection_slot_leak(t):
    d = t.start({'max_connections': '2', 'max_connections_per_ip': '2'})
    for i in range(15):
        a = _connect_when_free(d)
        b = _connect_when_free(d)
        if i % 3 == 0:
            start_txn(a)
            a.cmd('DATA', 354, None)
            a.send(b'Subject: cut\r\n\r\npartial')
        _rst_close(a)
        if i % 2:
            b.close()
        else:
            _rst_close(b)
    a = _connect_when_free(d)
    b = _connect_when_free(d)
    a.cmd('NOOP', 250, '2.0.0')
    b.cmd('NOOP', 250, '2.0.0')
    a.close()
    b.close()


def test_disconnect_mid_data_stores_nothing(t):
    d = t.start()
    mk = marker('cut')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: cut\r\n\r\n{mk}\r\n'.encode() + b'y' * 300000)  # spills to tmp/
        time.sleep(0.2)
    time.sleep(0.3)
    with d.connect() as c:  # still serving
        c.cmd('EHLO client.test', 250, None)
    if spool_count(d.spool_dir, mk) != 0:
        fail('an unfinished message is in the spool')
    tmp = os.path.join(d.spool_dir, 'tmp')
    left = os.listdir(tmp) if os.path.isdir(tmp) else []
    if left:
        fail(f'spill files left behind after the client vanished: {left}')


def test_disconnect_right_after_final_dot(t):
    d = t.start()
    mk = marker('gone')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: gone\r\n\r\n{mk}\r\n.\r\n'.encode())
        _rst_close(c)
    time.sleep(0.5)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('QUIT', 221, '2.0.0')
    if spool_count(d.spool_dir, mk) > 1:
        fail('the message is in the spool twice')


def test_large_message_spilled_and_cleaned(t):
    d = t.start({'max_message_size': '2000000'})
    mk = marker('large')
    line = b'L' * 998 + b'\r\n'
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: large {mk}\r\n\r\n'.encode() + line * 600 + f'end {mk}\r\n.\r\n'.encode())
        c.expect(250, '2.0.0', 'queued as', timeout=15)
    if spool_count(d.spool_dir, line * 600 + f'end {mk}\r\n'.encode()) != 1:
        fail('the 600 KB body is not in the spool exactly once')
    tmp = os.path.join(d.spool_dir, 'tmp')
    left = os.listdir(tmp) if os.path.isdir(tmp) else []
    if left:
        fail(f'spill files left in tmp/ after the commit: {left}')


def test_huge_body_bounded_memory(t):
    d = t.start({'max_message_size': '1048576'},
                env={'ASAN_OPTIONS': os.environ.get('ASAN_OPTIONS', '') +
                     ':quarantine_size_mb=1'} if 'ASAN_OPTIONS' in os.environ else None)
    mk = marker('huge')
    with d.connect(timeout=30) as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        rss0 = d.status_field('VmRSS')
        c.send(f'Subject: {mk}\r\n\r\n'.encode())
        chunk = (b'H' * 1022 + b'\r\n') * 256
        for _ in range(80):  # 20 MB
            c.send(chunk)
        c.send(b'.\r\n')
        c.expect(552, '5.3.4', timeout=30)
        hwm = d.status_field('VmHWM')
        t.note(f'VmRSS before {rss0} kB, VmHWM {hwm} kB')
        if hwm - rss0 > 16 * 1024:
            fail(f'ternd memory peaked {hwm - rss0} kB above its start for a 20 MB body '
                 f'with max_message_size = 1 MB')
        c.cmd('NOOP', 250, '2.0.0')
    if spool_count(d.spool_dir, mk) != 0:
        fail('the oversized message is in the spool')


def _maildir_count(mailbox_dir, needle):
    """Copies of needle in the Maildir files (new/ and cur/) under mailbox_dir."""
    needle = needle.encode('utf-8')
    n = 0
    for root, _dirs, files in os.walk(mailbox_dir):
        if os.path.basename(root) not in ('new', 'cur'):
            continue
        for name in files:
            try:
                with open(os.path.join(root, name), 'rb') as f:
                    n += f.read().count(needle)
            except OSError:
                pass
    return n


def _wait_maildir(mailbox_dir, needle, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        n = _maildir_count(mailbox_dir, needle)
        if n or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def test_restart_keeps_messages(t):
    """A message acknowledged before SIGKILL survives: after the restart it is delivered
    into the Maildir, or still in the spool.  Its Maildir is blocked (a regular file stands
    where it goes) until the kill, so it is certainly still queued when ternd dies, and only
    the restarted ternd, recovering it from the spool, can deliver it."""
    quick = {'min_backoff': '1', 'max_backoff': '2'}
    d = t.start(quick)
    block = os.path.join(d.mailbox_dir, 'example.org', 'u')  # start_txn's u@example.org
    os.makedirs(os.path.dirname(block))
    with open(block, 'w') as f:
        f.write('not a Maildir\n')
    mk = [marker('r1'), marker('r2')]
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: r\r\n\r\n{mk[0]}\r\n.\r\n')
        r = c.expect(250, '2.0.0', 'queued as')
    qid = r.text.rsplit(' ', 1)[-1]
    deadline = time.monotonic() + 10
    while f'{qid} event=deferred'.encode() not in d.stderr():
        if time.monotonic() > deadline:
            fail(f'the first delivery attempt of {qid} (to a blocked Maildir) was not '
                 f'deferred within 10 s')
        time.sleep(0.05)
    os.kill(d.pid, signal.SIGKILL)  # no chance to tidy up
    if d.wait_exit(5) is None:
        fail('ternd survived SIGKILL?')
    d.stopped = True
    os.unlink(block)
    d2 = t.start(dict(quick, spool_dir=d.spool_dir, mailbox_dir=d.mailbox_dir))
    n0 = _wait_maildir(d.mailbox_dir, f'\r\n\r\n{mk[0]}\r\n')
    if n0 == 0:
        if spool_count(d.spool_dir, mk[0]) != 1:
            fail('a message acknowledged before SIGKILL is gone after the restart: '
                 'neither delivered into the Maildir nor in the spool')
        t.note(f'{mk[0]} still in the spool, not delivered within 20 s of the restart')
    elif n0 != 1:
        fail(f'{mk[0]}, never delivered before SIGKILL, was delivered {n0} times after it')
    with d2.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: r\r\n\r\n{mk[1]}\r\n.\r\n')
        c.expect(250, '2.0.0', 'queued as')
    if _wait_maildir(d.mailbox_dir, f'\r\n\r\n{mk[1]}\r\n') == 0:
        fail(f'{mk[1]}, sent after the restart, was not delivered within 20 s')
    time.sleep(0.3)  # a duplicate would show by now
    if _maildir_count(d.mailbox_dir, mk[1]) != 1:
        fail(f'{mk[1]} is not in the Maildir exactly once')
    if n0 and _maildir_count(d.mailbox_dir, mk[0]) != n0:
        fail(f'{mk[0]} was delivered again after the new message')


def test_recipient_limit_is_per_transaction(t):
    d = t.start({'max_recipients': '3'})
    with d.connect() as c:
        start_txn(c, rcpts=('a@example.org', 'b@example.org', 'c@example.org'))
        c.cmd('RSET', 250, '2.0.0')
        start_txn(c, ehlo=False, rcpts=('d@example.org', 'e@example.org', 'f@example.org'))
        c.cmd('RCPT TO:<g@example.org>', 452, '4.5.3')


def test_bdat_size_overflow(t):
    """A 20-digit BDAT size past 2^64 must not wrap around to a small number."""
    d = t.start({'max_message_size': '2048'})
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 18446744073709551617 LAST\r\nabc')
        r = c.reply()
        if r.code == 250:
            fail(f'BDAT 2^64+1 accepted: {r!r}')
        if r.code == 501:
            check_reply(r, 501, '5.5.4')
        else:
            check_reply(r, 552, '5.3.4')


def test_mail_size_overflow(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        r = c.cmd('MAIL FROM:<a@b.example> SIZE=18446744073709551617')
        if r.code == 250:
            fail(f'SIZE=2^64+1 accepted (wrapped around?): {r!r}')
        if r.code == 501:
            check_reply(r, 501, '5.5.4')
        else:
            check_reply(r, 552, '5.3.4')


def test_pipelined_flood_bounded_memory(t):
    """2M pipelined NOOPs from a client that does not read: ternd must stop reading
    (backpressure) instead of queueing 28 MB of replies, and then answer every one."""
    import threading
    n = 2_000_000
    d = t.start(env={'ASAN_OPTIONS': os.environ.get('ASAN_OPTIONS', '') +
                     ':quarantine_size_mb=1'} if 'ASAN_OPTIONS' in os.environ else None)
    c = d.connect(timeout=60, rcvbuf=65536)
    c.cmd('EHLO client.test', 250, None)
    rss0 = d.status_field('VmRSS')
    err = []

    def sender():
        try:
            c.sock.sendall(b'NOOP\r\n' * n)
        except OSError as e:
            err.append(e)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    time.sleep(2.0)
    hwm = d.status_field('VmHWM')
    t.note(f'VmRSS before {rss0} kB, VmHWM while the client did not read {hwm} kB')
    if hwm - rss0 > 10 * 1024:
        fail(f'ternd grew by {hwm - rss0} kB buffering replies for a client that does not read')
    want = b'250 2.0.0 Ok\r\n'
    got = 0
    tail = b''
    rest = b''
    deadline = time.monotonic() + 90
    c.sock.settimeout(10)
    while got < n * len(want) and time.monotonic() < deadline:
        data = c.sock.recv(1 << 20)
        if not data:
            break
        got += len(data)
        tail = (tail + data)[-64:]
        rest += data
        k = len(rest) // len(want)
        if rest[:k * len(want)] != want * k:
            fail(f'a reply in the flood is not {want!r}: near {rest[:200]!r}')
        rest = rest[k * len(want):]
    th.join(30)
    if err:
        fail(f'sending failed: {err[0]!r}')
    if got != n * len(want):
        fail(f'got {got} octets of replies, want {n * len(want)} ({n} x {want!r}); '
             f'last {tail!r}')
    c.cmd('QUIT', 221, '2.0.0')
    c.close()
