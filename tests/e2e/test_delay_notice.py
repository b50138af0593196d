"""Delay notices (RFC 3464 Action: delayed): after delay_warning, one DSN to the sender for
the recipients still deferred; never twice, not even after a restart; never for NOTIFY
without DELAY, nor for a null sender."""
import glob
import os
import smtplib
import time

from harness import fail


def _start(t, **conf):
    base = {'local_domains': 'example.org', 'relay_networks': '127.0.0.0/8',
            'relay_host': '127.0.0.1:1',      # nothing listens: every attempt is deferred
            'min_backoff': '1', 'max_backoff': '1', 'delay_warning': '2',
            'max_queue_lifetime': '3600'}
    base.update(conf)
    return t.daemon(base).start()


def _notices(d, user='sender'):
    files = glob.glob(os.path.join(d.mailbox_dir, 'example.org', user, 'new', '*'))
    out = []
    for f in files:
        with open(f, 'rb') as fh:
            data = fh.read()
        if b'Action: delayed' in data:
            out.append(data)
    return out


def _send(d, sender, rcpt, opts=()):
    s = smtplib.SMTP(d.host, d.port, timeout=10)
    try:
        s.sendmail(sender, [rcpt], b'Subject: slow\r\n\r\nslow\r\n', rcpt_options=list(opts))
    finally:
        s.quit()


def _wait(what, cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    fail(f'{what}: not within {timeout:.0f} s')


def test_delay_notice_once(t):
    d = _start(t)
    _send(d, 'sender@example.org', 'far@remote.example')
    _wait('a delay notice reaches the sender', lambda: len(_notices(d)) >= 1)
    n = _notices(d)[0]
    for want in (b'Subject: Delayed Mail', b'Final-Recipient: rfc822; far@remote.example',
                 b'Action: delayed', b'Status: 4.4.1', b'Will-Retry-Until: ',
                 b'Diagnostic-Code: smtp; 451 4.4.1 Connection to 127.0.0.1'):
        if want not in n:
            fail(f'delay notice lacks {want!r}:\n{n[:1500]!r}')
    time.sleep(4)  # several more retries
    if len(_notices(d)) != 1:
        fail(f'{len(_notices(d))} delay notices, want exactly 1')


def test_delay_notice_survives_restart(t):
    d = _start(t)
    _send(d, 'sender@example.org', 'far@remote.example')
    _wait('a delay notice reaches the sender', lambda: len(_notices(d)) >= 1)
    conf = dict(d.conf)
    d.stop()
    d2 = t.daemon({k: v for k, v in conf.items() if k != 'listen'}).start()
    d2.conf['mailbox_dir'] = conf['mailbox_dir']
    time.sleep(4)
    if len(_notices(d2)) != 1:
        fail(f'{len(_notices(d2))} delay notices after a restart, want exactly 1')


def test_delay_notice_respects_notify(t):
    d = _start(t)
    _send(d, 'sender@example.org', 'far@remote.example', opts=['NOTIFY=FAILURE'])
    _send(d, '', 'far2@remote.example')
    time.sleep(5)
    if _notices(d) or _notices(d, 'postmaster'):
        fail('a delay notice was sent for NOTIFY=FAILURE or for a null sender')
