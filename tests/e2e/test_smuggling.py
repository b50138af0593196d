"""
test_smuggling.py - strict framing (SMTP smuggling, CVE-2023-51764 and kin).

Each sequence is embedded in a message body, followed by a whole second transaction
("MAIL FROM:<evil...>", "RCPT TO:", "DATA", "smuggled ...") and then the real CRLF.CRLF.
A server that ends DATA at the odd sequence answers the smuggled commands (several replies)
and spools two messages.  ternd must send exactly ONE reply for the whole data: 554 5.6.0
when there is a bare CR or LF; for the NUL variants (no bare CR/LF) it may accept, but then
with one 250 and one message in the spool holding the whole body.
"""

from harness import check_reply, fail, marker, spool_count, start_txn

# name: (sequence, the reply id when refused, text naming the flaw)
SEQUENCES = {
    'lf_dot_lf': (b'\n.\n', 'bare LF'),                # covers: R_BARE_LF_DATA
    'lf_dot_crlf': (b'\n.\r\n', 'bare LF'),
    'crlf_dot_lf': (b'\r\n.\n', 'bare LF'),
    'cr_dot_cr': (b'\r.\r', 'bare CR'),                # covers: R_BARE_CR_DATA
    'crlf_dot_cr': (b'\r\n.\r', 'bare CR'),
    'cr_dot_crlf': (b'\r.\r\n', 'bare CR'),
    'crlf_nul_dot_crlf': (b'\r\n\x00.\r\n', None),
    'crlf_dot_nul_crlf': (b'\r\n.\x00\r\n', None),
    'crcrlf_dot_crcrlf': (b'\r\r\n.\r\r\n', 'bare CR'),
}


def unstuff(body):
    """What the spool should hold: leading dots of lines removed (CRLF-delimited lines)."""
    out = []
    for line in body.split(b'\r\n'):
        out.append(line[1:] if line.startswith(b'.') else line)
    return b'\r\n'.join(out)


def _make(name, seq, flaw):
    def test(t):
        d = t.start()
        m1, m2, evil = marker('real'), marker('smug'), marker('evil')
        body = (f'Subject: smuggle\r\n\r\nhello {m1}'.encode() + seq +
                f'MAIL FROM:<{evil}@x.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n'
                f'smuggled {m2}\r\n'.encode())
        with d.connect() as c:
            start_txn(c)
            c.cmd('DATA', 354, None)
            c.send(body + b'\r\n.\r\n')
            r = c.reply()
            if flaw is not None:
                check_reply(r, 554, '5.6.0', flaw, body)
            elif r.code != 250:
                check_reply(r, 554, '5.6.0', None, body)  # refusing NUL is fine too
            else:
                check_reply(r, 250, '2.0.0', 'queued as', body)
            extra = c.pending(0.5)
            if extra:
                fail(f'more than one reply to the data: {r!r} then {extra[:300]!r}')
            c.cmd('QUIT', 221, '2.0.0')
            c.expect_close()
        if r.code == 250:
            stored = unstuff(body)
            n = spool_count(d.spool_dir, stored)
            if n != 1:
                fail(f'the accepted body (with the smuggled lines as plain text) is in the '
                     f'spool {n} times, want 1')
            if spool_count(d.spool_dir, f'{evil}@x.org') != 1:
                fail('the smuggled sender appears outside the one message body')
        else:
            for mk in (m1, m2, evil):
                if spool_count(d.spool_dir, mk) != 0:
                    fail(f'refused data, yet {mk} is in the spool')
    test.__name__ = 'test_smuggling_' + name
    return test


for _name, (_seq, _flaw) in SEQUENCES.items():
    globals()['test_smuggling_' + _name] = _make(_name, _seq, _flaw)


def test_smuggling_bare_lf_in_command(t):  # covers: R_BARE_LF_CMD
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.send(b'NOOP\nNOOP\r\n')
        c.expect(500, '5.5.2', 'LF')
        extra = c.pending(0.5)
        if extra:
            fail(f'"NOOP\\nNOOP\\r\\n" got more than one reply: then {extra!r}')
        c.cmd('QUIT', 221, '2.0.0')


def test_smuggling_bare_lf_mail_command(t):
    """A bare LF must not split "MAIL ...\\nRCPT ..." into two commands."""
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.send(b'MAIL FROM:<a@b.example>\nRCPT TO:<u@example.org>\r\n')
        c.expect(500, '5.5.2')
        c.cmd('RCPT TO:<u@example.org>', 503, '5.5.1')  # no MAIL was taken


def test_smuggling_bare_lf_clean_message_after(t):
    """After a refused message the session is in order: a clean one is accepted."""
    d = t.start()
    mk = marker('after')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(b'Subject: x\r\n\r\nbad\n.\nline\r\n.\r\n')
        c.expect(554, '5.6.0')
        start_txn(c, ehlo=False)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: y\r\n\r\n{mk}\r\n.\r\n')
        c.expect(250, '2.0.0', 'queued as')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the clean message is not in the spool')
