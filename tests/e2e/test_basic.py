"""
test_basic.py - greeting, EHLO/HELO/QUIT, simple commands, ordering, whole messages with
smtplib and swaks, pipelining, IPv6, many concurrent clients.
"""

import smtplib
import socket
import subprocess
import threading

from harness import (HOSTNAME, fail, marker, session, spool_count, start_txn, Skip)


def test_greeting(t):  # covers: R_GREETING
    d = t.start()
    with d.connect(greet=False) as c:
        r = c.expect(220, None)
        if not r.text.startswith(HOSTNAME + ' '):
            fail(f'greeting does not start with the hostname {HOSTNAME}: {r!r}')
        if 'ESMTP' not in r.text:
            fail(f'greeting does not say ESMTP: {r!r}')


def test_ehlo_keywords(t):  # covers: R_EHLO
    d = t.start({'max_message_size': '123456'})
    with d.connect() as c:
        r = c.cmd('EHLO client.test', 250, None)
        if len(r.lines) < 2:
            fail(f'EHLO reply is not multi-line: {r!r}')
        if r.lines[0].split(' ')[0] != HOSTNAME:
            fail(f'first EHLO line is not the hostname {HOSTNAME}: {r!r}')
        kws = [ln.upper() for ln in r.lines[1:]]
        for kw in ('PIPELINING', 'SIZE 123456', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES',
                   'CHUNKING'):
            if kw not in kws:
                fail(f'EHLO does not list {kw!r}: {r!r}')


def test_helo(t):  # covers: R_HELO
    d = t.start()
    with d.connect() as c:
        r = c.cmd('HELO client.test', 250, None)
        if not r.text.startswith(HOSTNAME):
            fail(f'HELO reply does not name {HOSTNAME}: {r!r}')
        if len(r.raw_lines) != 1:
            fail(f'HELO reply must be one line: {r!r}')
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')


def test_quit_closes(t):  # covers: R_BYE
    d = t.start()
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        r = c.cmd('QUIT', 221, '2.0.0')
        if HOSTNAME not in r.text:
            fail(f'221 does not name the host: {r!r}')
        c.expect_close()


def test_quit_before_helo(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('QUIT', 221, '2.0.0')
        c.expect_close()


# ---- a whole message ---------------------------------------------------------------------------

def test_smtplib_message_spooled(t):  # covers: R_QUEUED, R_DATA_GO, R_MAIL_OK, R_RCPT_OK
    d = t.start()
    mk = marker('body')
    msg = (f'From: a@b.example\r\nTo: u@example.org\r\nSubject: e2e\r\n\r\n'
           f'hello {mk}\r\nsecond line\r\n').encode()
    s = smtplib.SMTP('127.0.0.1', d.port, timeout=5)
    try:
        s.ehlo('client.test')
        code, resp = s.mail('a@b.example')
        if (code, resp[:5]) != (250, b'2.1.0'):
            fail(f'MAIL: {code} {resp!r}')
        code, resp = s.rcpt('u@example.org')
        if (code, resp[:5]) != (250, b'2.1.5'):
            fail(f'RCPT: {code} {resp!r}')
        code, resp = s.data(msg)
        if code != 250 or not resp.startswith(b'2.0.0 Ok: queued as '):
            fail(f'end of DATA: want "250 2.0.0 Ok: queued as ID", got {code} {resp!r}')
        qid = resp.split()[-1]
        if not qid.isalnum():
            fail(f'odd queue id {qid!r}')
        s.quit()
    finally:
        s.close()
    n = spool_count(d.spool_dir, f'hello {mk}\r\nsecond line\r\n')
    if n != 1:
        fail(f'the spool under {d.spool_dir} holds the body {n} times (want 1)')
    if spool_count(d.spool_dir, qid) < 1:
        fail(f'queue id {qid!r} not found in the spool')


def test_smtplib_send_message(t):
    from email.message import EmailMessage
    d = t.start()
    mk = marker('sm')
    m = EmailMessage()
    m['From'] = 'a@b.example'
    m['To'] = 'u@example.org, v@localhost'
    m['Subject'] = 'send_message'
    m.set_content(f'body {mk}\n')
    with smtplib.SMTP('127.0.0.1', d.port, timeout=5) as s:
        refused = s.send_message(m)
    if refused:
        fail(f'recipients refused: {refused}')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the message is not in the spool exactly once')


def test_swaks_pipeline(t):
    d = t.start()
    mk = marker('swaks')
    try:
        p = subprocess.run(['swaks', '--server', f'127.0.0.1:{d.port}', '--to',
                            'user@example.org', '--from', 'a@b.example', '--helo', 'client.test',
                            '--pipeline', '--timeout', '10', '--body', f'swaks body {mk}'],
                           capture_output=True, timeout=30)
    except FileNotFoundError:
        raise Skip('swaks is not installed')
    out = p.stdout.decode('utf-8', 'replace')
    if p.returncode != 0:
        fail(f'swaks exited {p.returncode}:\n{out}\n{p.stderr.decode()}')
    if '250 2.0.0 Ok: queued as' not in out:
        fail(f'swaks transcript has no "250 2.0.0 Ok: queued as":\n{out}')
    if spool_count(d.spool_dir, f'swaks body {mk}') != 1:
        fail('the swaks message is not in the spool exactly once')


def test_dot_unstuffing(t):
    d = t.start()
    mk = marker('dot')
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA', 354, None)
        c.send(f'Subject: dots\r\n\r\n..leading {mk}\r\n...two {mk}\r\n.\r\n'.encode())
        c.expect(250, '2.0.0', 'queued as')
        c.cmd('QUIT', 221, '2.0.0')
    if spool_count(d.spool_dir, f'\r\n.leading {mk}\r\n..two {mk}\r\n') != 1:
        fail('dot-unstuffed lines ".leading" / "..two" not found in the spool')
    if spool_count(d.spool_dir, f'..leading {mk}') != 0:
        fail('the stuffed dot was stored')


def test_two_messages_one_session(t):
    d = t.start()
    mk = [marker('one'), marker('two')]
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        for m in mk:
            start_txn(c, ehlo=False)
            c.cmd('DATA', 354, None)
            c.send(f'Subject: x\r\n\r\n{m}\r\n.\r\n')
            c.expect(250, '2.0.0', 'queued as')
        c.cmd('QUIT', 221, '2.0.0')
    for m in mk:
        if spool_count(d.spool_dir, m) != 1:
            fail(f'message {m} not in the spool exactly once')


def test_pipelining(t):
    d = t.start()
    mk = marker('pipe')
    with d.connect() as c:
        c.send(b'EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.org>\r\n'
               b'RCPT TO:<v@example.org>\r\nDATA\r\n')
        c.expect(250, None)
        c.expect(250, '2.1.0')
        c.expect(250, '2.1.5')
        c.expect(250, '2.1.5')
        c.expect(354, None)
        c.send(f'Subject: pipelined\r\n\r\n{mk}\r\n.\r\nQUIT\r\n'.encode())
        c.expect(250, '2.0.0', 'queued as')
        c.expect(221, '2.0.0')
        c.expect_close()
    if spool_count(d.spool_dir, mk) != 1:
        fail('the pipelined message is not in the spool exactly once')


# ---- simple commands --------------------------------------------------------------------------

def test_noop(t):  # covers: R_COMMAND_OK
    session(t.start(), [('NOOP', 250, '2.0.0')])


def test_noop_with_argument(t):
    session(t.start(), [('NOOP anything at all', 250, '2.0.0')])


def test_rset(t):
    d = t.start()
    with d.connect() as c:
        start_txn(c)
        c.cmd('RSET', 250, '2.0.0')
        c.cmd('DATA', 503, '5.5.1')  # the transaction is gone
        c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')  # and a new one may start


def test_vrfy(t):  # covers: R_VRFY
    session(t.start(), [('VRFY x', 252, '2.5.0')])


def test_vrfy_without_argument(t):  # covers: R_ARG_MISSING
    session(t.start(), [('VRFY', 501, '5.5.4', 'VRFY')])


def test_help(t):  # covers: R_HELP
    session(t.start(), [('HELP', 214, '2.0.0')])


def test_unknown_command(t):  # covers: R_UNKNOWN_CMD
    session(t.start(), [('FOO', 500, '5.5.2', 'Command unrecognized')])


def test_expn_not_implemented(t):  # covers: R_NOT_IMPLEMENTED
    session(t.start(), [('EXPN x', 502, '5.5.1', 'EXPN')])


def test_data_with_argument(t):  # covers: R_ARG_NOT_ALLOWED
    d = t.start()
    with d.connect() as c:
        start_txn(c)
        c.cmd('DATA x', 501, '5.5.4', 'takes no arguments')
        c.cmd('DATA', 354, None)  # the transaction survived


def test_rset_with_argument(t):
    session(t.start(), [('RSET x', 501, '5.5.4')])


def test_quit_with_argument(t):
    d = t.start()
    with d.connect() as c:
        c.cmd('QUIT x', 501, '5.5.4')
        c.cmd('NOOP', 250, '2.0.0')  # still open


def test_helo_without_argument(t):  # covers: R_HELO_SYNTAX
    d = t.start()
    with d.connect() as c:
        c.cmd('HELO', 501, '5.5.4')
        c.cmd('MAIL FROM:<a@b.example>', 503, '5.5.1')  # HELO did not count


def test_ehlo_without_argument(t):
    session(t.start(), [('EHLO', 501, '5.5.4')], ehlo=False)


# ---- ordering ---------------------------------------------------------------------------------

def test_mail_before_helo(t):  # covers: R_NEED_HELO
    session(t.start(), [('MAIL FROM:<a@b.example>', 503, '5.5.1', 'HELO')], ehlo=False)


def test_rcpt_before_mail(t):  # covers: R_NEED_MAIL
    session(t.start(), [('RCPT TO:<u@example.org>', 503, '5.5.1', 'MAIL')])


def test_nested_mail(t):  # covers: R_NESTED_MAIL
    session(t.start(), [('MAIL FROM:<a@b.example>', 250, '2.1.0'),
                        ('MAIL FROM:<c@d.example>', 503, '5.5.1', 'already')])


def test_data_without_rcpt(t):  # covers: R_NEED_RCPT
    session(t.start(), [('MAIL FROM:<a@b.example>', 250, '2.1.0'),
                        ('DATA', 503, '5.5.1', 'RCPT')])


def test_data_without_mail(t):
    session(t.start(), [('DATA', 503, '5.5.1', 'MAIL')])


# ---- IPv6 and many clients --------------------------------------------------------------------

def test_ipv6_message(t):
    try:
        socket.socket(socket.AF_INET6).bind(('::1', 0))
    except OSError:
        raise Skip('no ::1 here')
    d = t.start(family=socket.AF_INET6)
    if not d.conf['listen'].startswith('[::1]:'):
        fail(f'listen is {d.conf["listen"]}')
    mk = marker('v6')
    with smtplib.SMTP('::1', d.port, timeout=5) as s:
        s.ehlo('client.test')
        s.mail('a@b.example')
        s.rcpt('u@example.org')
        code, resp = s.data(f'Subject: v6\r\n\r\n{mk}\r\n'.encode())
        if code != 250 or not resp.startswith(b'2.0.0'):
            fail(f'end of DATA over ::1: {code} {resp!r}')
    if spool_count(d.spool_dir, mk) != 1:
        fail('the IPv6 message is not in the spool exactly once')


def test_concurrent_clients(t):
    d = t.start({'max_connections': '100', 'max_connections_per_ip': '100'})
    nthreads, nmsgs = 20, 10
    base = marker('conc')
    errors = []

    def worker(k):
        try:
            with smtplib.SMTP('127.0.0.1', d.port, timeout=20) as s:
                s.ehlo('client.test')
                for j in range(nmsgs):
                    s.mail('a@b.example')
                    s.rcpt('u@example.org')
                    code, resp = s.data(f'Subject: c\r\n\r\n{base}-{k}-{j}-end\r\n'.encode())
                    if code != 250 or not resp.startswith(b'2.0.0 Ok: queued as'):
                        errors.append(f'thread {k} msg {j}: {code} {resp!r}')
        except Exception as e:
            errors.append(f'thread {k}: {e!r}')

    th = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for x in th:
        x.start()
    for x in th:
        x.join(60)
    if any(x.is_alive() for x in th):
        fail('clients still running after 60 s')
    if errors:
        fail(f'{len(errors)} failures, e.g. {errors[:3]}')
    total = spool_count(d.spool_dir, base + '-')
    if total != nthreads * nmsgs:
        fail(f'the spool has {total} records of this test, want {nthreads * nmsgs}')
    for k in range(nthreads):
        for j in range(nmsgs):
            if spool_count(d.spool_dir, f'{base}-{k}-{j}-end') != 1:
                fail(f'message {k}/{j} is not in the spool exactly once')
