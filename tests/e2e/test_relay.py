"""
test_relay.py - relay control: a client outside relay_networks may only send to
local_domains; inside, anywhere.  Routing tricks (%, !) never open a relay.
"""

from harness import session

NOT_US = {'relay_networks': '192.0.2.0/24'}  # 127.0.0.1 is not in it


def test_relay_denied_remote(t):  # covers: R_RELAY_DENIED
    session(t.start(NOT_US), [
        ('MAIL FROM:<a@b.example>', 250, '2.1.0'),
        ('RCPT TO:<u@remote.example>', 550, '5.7.1', 'Relay access denied'),
        ('RCPT TO:<u@example.org>', 250, '2.1.5'),
        ('RCPT TO:<u@localhost>', 250, '2.1.5'),
        ('DATA', 354, None)], close=False)


def test_relay_allowed_from_relay_network(t):
    session(t.start({'relay_networks': '127.0.0.0/8'}), [
        ('MAIL FROM:<a@b.example>', 250, '2.1.0'),
        ('RCPT TO:<u@remote.example>', 250, '2.1.5'),
        ('RCPT TO:<u@example.org>', 250, '2.1.5')])


def test_relay_allowed_single_host(t):
    session(t.start({'relay_networks': '192.0.2.0/24, 127.0.0.1'}), [
        ('MAIL FROM:<a@b.example>', 250, '2.1.0'),
        ('RCPT TO:<u@remote.example>', 250, '2.1.5')])


def test_relay_percent_hack(t):  # covers: R_ROUTE_HACK
    session(t.start(NOT_US), [
        ('MAIL FROM:<a@b.example>', 250, '2.1.0'),
        ('RCPT TO:<u%remote.example@example.org>', 550, '5.7.1', 'percent')])


def test_relay_denied_subdomain_of_local(t):
    """local_domains lists example.org: sub.example.org is not local."""
    session(t.start(NOT_US), [
        ('MAIL FROM:<a@b.example>', 250, '2.1.0'),
        ('RCPT TO:<u@sub.example.org>', 550, '5.7.1'),
        ('RCPT TO:<u@notexample.org>', 550, '5.7.1')])
