"""
test_chunking.py - BDAT (RFC 3030): chunks, LAST, syntax, order, size, bare LF.
"""

from harness import fail, marker, spool_count, start_txn


def test_bdat_two_chunks(t):  # covers: R_BDAT_OK
    d = t.start()
    mk = marker('b')[:10]
    c1 = mk.encode().ljust(10, b'.')
    c2 = b'X\r\nYZ'
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 10\r\n' + c1)
        c.expect(250, '2.0.0', '10 octets')
        c.send(b'BDAT 5 LAST\r\n' + c2)
        c.expect(250, '2.0.0', 'queued as')
        c.cmd('QUIT', 221, '2.0.0')
    if spool_count(d.spool_dir, c1 + c2) != 1:
        fail(f'the 15 octets {c1 + c2!r} are not in the spool exactly once')


def test_bdat_pipelined_message(t):
    d = t.start()
    mk = marker('bp')
    body = f'Subject: bdat\r\n\r\n{mk}\r\n'.encode()
    with d.connect() as c:
        c.send(b'EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.org>\r\n' +
               f'BDAT {len(body)} LAST\r\n'.encode() + body + b'QUIT\r\n')
        c.expect(250, None)
        c.expect(250, '2.1.0')
        c.expect(250, '2.1.5')
        c.expect(250, '2.0.0', 'queued as')
        c.expect(221, '2.0.0')
    if spool_count(d.spool_dir, body) != 1:
        fail('the BDAT message is not in the spool')


def test_bdat_syntax(t):  # covers: R_BDAT_SYNTAX
    d = t.start()
    with d.connect() as c:
        start_txn(c)
        c.cmd('BDAT abc', 501, '5.5.4')
        c.cmd('BDAT 5 FIRST', 501, '5.5.4')
        c.cmd('NOOP', 250, '2.0.0')


def test_bdat_before_rcpt(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
        c.send(b'BDAT 5\r\nNOOP\n')  # the refused chunk's octets are still read, never run
        c.expect(503, '5.5.1', 'RCPT')
        c.cmd('NOOP', 250, '2.0.0')


def test_bdat_before_mail(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.send(b'BDAT 6 LAST\r\nRSET\r\n')
        c.expect(503, '5.5.1', 'MAIL')
        c.cmd('NOOP', 250, '2.0.0')


def test_data_after_bdat(t):  # covers: R_BDAT_THEN_DATA
    d = t.start()
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 5\r\nhello')
        c.expect(250, '2.0.0')
        c.cmd('DATA', 503, '5.5.1', 'BDAT')


def test_bdat_too_big_at_last(t):
    d = t.start({'max_message_size': '2048'})
    mk = marker('bbig')
    with d.connect() as c:
        start_txn(c)
        chunk = (mk.encode() + b'\r\n').ljust(1500, b'a')
        c.send(b'BDAT 1500\r\n' + chunk)
        c.expect(250, '2.0.0', '1500')
        c.send(b'BDAT 1000 LAST\r\n' + b'b' * 1000)
        c.expect(552, '5.3.4', '2048')
        c.cmd('NOOP', 250, '2.0.0')
    if spool_count(d.spool_dir, mk) != 0:
        fail('the oversized BDAT message is in the spool')


def test_bdat_after_failed_chunk(t):  # covers: R_BDAT_AFTER_FAIL
    d = t.start({'max_message_size': '2048'})
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 3000\r\n' + b'c' * 3000)
        c.expect(552, '5.3.4')
        c.send(b'BDAT 4 LAST\r\nabcd')
        c.expect(503, '5.5.1', 'already failed')
        c.cmd('RSET', 250, '2.0.0')
        start_txn(c, ehlo=False)
        c.send(b'BDAT 4 LAST\r\nabcd')
        c.expect(250, '2.0.0', 'queued as')


def test_bdat_bare_lf(t):
    d = t.start()
    mk = marker('blf')
    with d.connect() as c:
        start_txn(c)
        chunk = f'x {mk}\nMAIL FROM:<e@x.org>\r\n'.encode()
        c.send(f'BDAT {len(chunk)} LAST\r\n'.encode() + chunk)
        c.expect(554, '5.6.0', 'bare LF')
        c.cmd('NOOP', 250, '2.0.0')
    if spool_count(d.spool_dir, mk) != 0:
        fail('the refused BDAT message is in the spool')


def test_bdat_crlf_split_across_chunks(t):
    """CR at the end of one chunk and LF at the start of the next is a proper CRLF."""
    d = t.start()
    mk = marker('split')
    with d.connect() as c:
        start_txn(c)
        p1 = f'Subject: {mk}\r'.encode()
        c.send(f'BDAT {len(p1)}\r\n'.encode() + p1)
        c.expect(250, '2.0.0')
        c.send(b'BDAT 7 LAST\r\n\n\r\nbody')
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, f'Subject: {mk}\r\n\r\nbody') != 1:
        fail('the split-CRLF message is not in the spool')


def test_bdat_zero_last(t):
    d = t.start()
    mk = marker('z')[:12]
    with d.connect() as c:
        start_txn(c)
        c.send(b'BDAT 12\r\n' + mk.encode())
        c.expect(250, '2.0.0')
        c.cmd('BDAT 0 LAST', 250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the message ended by BDAT 0 LAST is not in the spool')
