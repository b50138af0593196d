"""
test_relay_reuse.py - ternd's outbound connections: several messages on one connection, and
the limits max_outbound / max_outbound_per_domain, against tests/e2e/smtpserver.py.

Reuse: messages for one destination go one after another on one SMTP session (MAIL FROM right
after the previous message's 250, no RSET), at most max_messages_per_connection per
connection.  A 421 in the middle of a reused connection, or a close while it is idle, sends
the rest to a fresh connection, and nothing is delivered twice; a 5xx to one message's RCPT bounces that message only.  The
server's transcript tells connections ("# connect") and transactions ("C: MAIL FROM:") apart.

Limits: a server in --concurrent mode with hold=SECONDS (each connection waits before its
greeting, so connections overlap) records the most connections open at once; it must never
exceed the limit, while every message is delivered.  A control run with a higher limit shows
that the server does see overlapping connections (so the assertion can fail).
"""

import re
import time

from harness import fail, marker
from test_relay_remote import (Peers, events, expect_event, message, pick_port, queue_empty,
                               relay_ternd, slow, start, submit, wait_dsns, wait_s, wait_until)


def stop(d):
    """Stop a ternd before the test ends (a second one follows): its problems fail the test."""
    problems = d.stop()
    if problems:
        fail('\n'.join(problems))


def per_connection(srv):
    """[transactions accepted per connection] from a sequential server's transcript."""
    out = []
    for conn in srv.transcript().split('# connect\n')[1:]:
        out.append(conn.count('S: 250 2.0.0 Ok: queued'))
    return out


def delivered_once(t, d, srv, sent):
    """Every (qid, rcpt) delivered exactly once: one log line and one stored copy each."""
    for qid, a in sent:
        expect_event(t, d, qid, a, 'delivered', prefix='250 2.0.0 Ok')
    queue_empty(t, d)
    for qid, a in sent:
        n = len(events(d, qid, a, 'delivered'))
        if n != 1:
            fail(f'{qid} to <{a}>: {n} "delivered" log lines, want 1')
    want = {a: 1 for _q, a in sent}
    if srv.stored() != want:
        fail(f'the server stored {srv.stored()}, want each message once: {want}')


def test_relay_reuse_one_connection(t):
    """8 messages to relay_host: fewer connections than messages, each message once, no RSET,
    EHLO once per connection; max_messages_per_connection = 3 caps every connection."""
    n = 8
    for cap in (100, 3):
        port = pick_port(['127.0.0.2'])
        with Peers(t) as p:
            srv = p.smtp('127.0.0.2', port)
            d = start(t, {'relay_host': f'127.0.0.2:{port}', 'max_outbound_per_domain': '1',
                          'max_messages_per_connection': str(cap)})
            sent = []
            for i in range(n):
                a = f'u{i}@far.test'
                sent.append((submit(d, [a], message(marker(f'reuse{i}'))), a))
            delivered_once(t, d, srv, sent)
            tr = srv.transcript()
            counts = per_connection(srv)
            if sum(counts) != n:
                fail(f'{sum(counts)} transactions accepted, want {n}: {counts}')
            if cap == 100 and len(counts) > n // 2:
                fail(f'{len(counts)} connections for {n} messages: no reuse ({counts})')
            if max(counts) > cap or len(counts) < -(-n // cap):
                fail(f'max_messages_per_connection = {cap}: messages per connection {counts}')
            if 'C: RSET' in tr:
                fail(f'RSET between messages that went well:\n{tr[:1500]}')
            if tr.count('C: EHLO') != len(counts):
                fail(f'{tr.count("C: EHLO")} EHLO for {len(counts)} connections')
            log = d.stderr().decode('utf-8', 'replace')
            closed = [int(m) for m in re.findall(r'event=connection-closed destination=relay_host '
                                                 r'messages=(\d+)', log)]
            stop(d)
            if any(c > cap for c in closed):
                fail(f'the log says a connection carried more than {cap}: {closed}')


def test_relay_reuse_421_midway(t):
    """The server answers the 4th MAIL on a connection with 421 and closes (or closes without
    a word after the 3rd message): the 4th message and the rest go on fresh connections;
    each message arrives once, none is deferred."""
    n = 8
    for script, said in (('max-messages=3', 'S: 421 4.7.0 Too many messages on one connection'),
                         ('close-after=3', '# close after 3')):
        port = pick_port(['127.0.0.2'])
        with Peers(t) as p:
            srv = p.smtp('127.0.0.2', port, [script])
            d = start(t, {'relay_host': f'127.0.0.2:{port}', 'max_outbound_per_domain': '1'})
            sent = []
            for i in range(n):
                a = f'u{i}@far.test'
                sent.append((submit(d, [a], message(marker(f'r421-{i}'))), a))
            delivered_once(t, d, srv, sent)
            counts = per_connection(srv)
            if sum(counts) != n or max(counts) > 3 or len(counts) < 3:
                fail(f'{script}: messages accepted per connection {counts}, want {n} in all, '
                     f'at most 3 each')
            if said not in srv.transcript():
                fail(f'{script}: the server never broke a connection off: the test did not '
                     f'test the reuse after it')
            for qid, a in sent:
                if events(d, qid, a, 'deferred'):
                    fail(f'{script}: {qid} was deferred: {events(d, qid, a, "deferred")}')
            stop(d)


def test_relay_reuse_rcpt_refused_one_message(t):
    """On a reused connection, a 550 to one message's RCPT fails that message alone (one DSN
    for it); the messages before and after it are delivered on the same connection."""
    port = pick_port(['127.0.0.2'])
    bad = 'bad@far.test'
    reply = '550 5.1.1 No such user here'
    with Peers(t) as p:
        srv = p.smtp('127.0.0.2', port, [f'rcpt:{bad}={reply}'])
        d = start(t, {'relay_host': f'127.0.0.2:{port}', 'max_outbound_per_domain': '1'})
        rcpts = ['u0@far.test', 'u1@far.test', bad, 'u3@far.test', 'u4@far.test']
        sent = [(submit(d, [a], message(marker(f'r550-{i}'))), a) for i, a in enumerate(rcpts)]
        qbad = sent[2][0]
        expect_event(t, d, qbad, bad, 'failed', reply=reply, relay='127.0.0.2')
        good = [x for x in sent if x[1] != bad]
        delivered_once(t, d, srv, good)
        (dsn,) = wait_dsns(t, d, 1)
        dsn.check(qbad, n=1)
        dsn.check_rcpt(bad, reply, '127.0.0.2')
        for qid, a in good:
            if events(d, qid, a, 'failed') or events(d, qid, a, 'deferred'):
                fail(f'{qid} <{a}> was not simply delivered: {events(d, qid, a)}')
        if srv.connections() >= len(rcpts):
            fail(f'{srv.connections()} connections for {len(rcpts)} messages: no reuse')


# ---- outbound limits ------------------------------------------------------------------------

DOMS = ['a.test', 'b.test', 'c.test']


def limit_run(t, conf, hold, nper=2):
    """nper messages to each of DOMS, all MX'd to one concurrent server that holds every
    connection `hold` seconds before its greeting; returns the server's max concurrency."""
    port = pick_port(['127.0.0.2'])
    records = []
    for dom in DOMS:
        records += [(dom, 'MX', f'10 mx.{dom}'), (f'mx.{dom}', 'A', '127.0.0.2')]
    with Peers(t) as p:
        srv = p.smtp('127.0.0.2', port, [f'hold={hold}'], concurrent=True)
        d = relay_ternd(t, records, port, conf)
        sent = []
        for i in range(nper):
            for dom in DOMS:
                a = f'u{i}@{dom}'
                sent.append((submit(d, [a], message(marker(f'lim{i}{dom[0]}'))), a))
        delivered_once(t, d, srv, sent)
        got = srv.max_concurrency()
        stop(d)
    return got


def test_relay_limit_max_outbound(t):
    """max_outbound = 1: never more than one connection open at once, over three domains;
    control: max_outbound = 3 does open several at once."""
    hold = 0.6 if slow(t) else 0.3
    got = limit_run(t, {'max_outbound': '1'}, hold)
    if got != 1:
        fail(f'max_outbound = 1, but the server saw {got} connections at once')
    got = limit_run(t, {'max_outbound': '3'}, hold)
    if got < 2:
        fail(f'control: max_outbound = 3 and three domains, but the server saw at most {got} '
             f'connection(s) at once: the counting cannot tell')


def test_relay_limit_max_outbound_per_domain(t):
    """max_outbound_per_domain = 1 with relay_host (one destination): one connection at a
    time, all 6 messages delivered; control: 3 opens several at once."""
    hold = 0.6 if slow(t) else 0.3
    for limit, check in (('1', lambda g: g == 1), ('3', lambda g: g >= 2)):
        port = pick_port(['127.0.0.2'])
        with Peers(t) as p:
            srv = p.smtp('127.0.0.2', port, [f'hold={hold}'], concurrent=True)
            d = start(t, {'relay_host': f'127.0.0.2:{port}', 'max_outbound_per_domain': limit})
            sent = []
            for i in range(6):
                a = f'u{i}@far{i % 3}.test'
                sent.append((submit(d, [a], message(marker(f'pd{i}'))), a))
            delivered_once(t, d, srv, sent)
            got = srv.max_concurrency()
            stop(d)
        if not check(got):
            fail(f'max_outbound_per_domain = {limit}: the server saw {got} connections at once')
