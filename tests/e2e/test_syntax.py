"""
test_syntax.py - MAIL / RCPT arguments: the 501 family, 555, 553, 552 on SIZE, and the
forms that must be accepted.  Each case is its own test on a fresh ternd:
EHLO, [MAIL FROM:<a@b.example>,] the command, the exact code and enhanced code.
"""

from harness import session

MAX = 1048576  # harness base config max_message_size

# name: (needs a MAIL first, command bytes, code, enhanced code, text or None)
CASES = {
    # covers: R_BAD_SENDER
    'mail_no_brackets': (False, b'MAIL FROM:user@example.org', 501, '5.1.7', None),
    'mail_unterminated': (False, b'MAIL FROM:<user@example.org', 501, '5.1.7', None),
    'mail_space_in_address': (False, b'MAIL FROM:<us er@example.org>', 501, '5.1.7', None),
    # covers: R_MAIL_SYNTAX
    'mail_missing_colon': (False, b'MAIL FROM <a@b.org>', 501, '5.5.4', None),
    'mail_space_before_colon': (False, b'MAIL FROM :<a@b.org>', 501, '5.5.4', None),
    'mail_no_from': (False, b'MAIL <a@b.org>', 501, '5.5.4', None),
    'mail_double_dot_local': (False, b'MAIL FROM:<a..b@c.org>', 501, '5.1.7', None),
    'mail_double_dot_domain': (False, b'MAIL FROM:<a@b..org>', 501, '5.1.7', None),
    'mail_nul_in_address': (False, b'MAIL FROM:<a\x00b@c.org>', 501, '5.1.7', None),
    # covers: R_BAD_RCPT
    'rcpt_space_in_address': (True, b'RCPT TO:<bad address@example.org>', 501, '5.1.3', None),
    'rcpt_null_path': (True, b'RCPT TO:<>', 501, '5.1.3', None),
    # covers: R_PARAM_SYNTAX
    'mail_size_not_number': (False, b'MAIL FROM:<a@b.org> SIZE=abc', 501, '5.5.4', 'SIZE'),
    'mail_body_9bit': (False, b'MAIL FROM:<a@b.org> BODY=9BIT', 501, '5.5.4', 'BODY'),
    # covers: R_PARAM_UNKNOWN
    'mail_unknown_param': (False, b'MAIL FROM:<a@b.org> FOO=bar', 555, '5.5.4', 'FOO'),
    'rcpt_unknown_param': (True, b'RCPT TO:<u@example.org> XFOO=1', 555, '5.5.4', 'XFOO'),
    'rcpt_notify_param': (True, b'RCPT TO:<u@example.org> NOTIFY=NEVER', 250, '2.1.5', None),
    'rcpt_notify_bad': (True, b'RCPT TO:<u@example.org> NOTIFY=NEVER,DELAY', 501, '5.5.4',
                        'NOTIFY'),
    'mail_ret_bad': (False, b'MAIL FROM:<a@b.org> RET=BODY', 501, '5.5.4', 'RET'),
    'mail_ret_envid': (False, b'MAIL FROM:<a@b.org> RET=HDRS ENVID=QQ314159', 250, '2.1.0', None),
    # covers: R_UTF8_SENDER
    'mail_utf8_without_smtputf8': (False, 'MAIL FROM:<jörg@example.org>'.encode(), 553, '5.6.7',
                                   'SMTPUTF8'),
    'mail_utf8_with_smtputf8': (False, 'MAIL FROM:<jörg@example.org> SMTPUTF8'.encode(), 250,
                                '2.1.0', None),
    # covers: R_SIZE_MAIL
    'mail_size_over_max': (False, f'MAIL FROM:<a@b.org> SIZE={MAX + 1}'.encode(), 552, '5.3.4',
                           str(MAX)),
    'mail_size_at_max': (False, f'MAIL FROM:<a@b.org> SIZE={MAX}'.encode(), 250, '2.1.0', None),
    'mail_space_after_colon': (False, b'MAIL FROM: <a@b.org>', 250, '2.1.0', None),
    'mail_null_sender': (False, b'MAIL FROM:<>', 250, '2.1.0', None),
    'mail_body_8bitmime': (False, b'MAIL FROM:<a@b.org> BODY=8BITMIME', 250, '2.1.0', None),
    'mail_address_literal': (False, b'MAIL FROM:<u@[192.0.2.1]>', 250, '2.1.0', None),
    'rcpt_postmaster': (True, b'RCPT TO:<postmaster>', 250, '2.1.5', None),
    'rcpt_source_route': (True, b'RCPT TO:<@x.org,@y.org:u@example.org>', 250, '2.1.5', None),
    'rcpt_quoted_local_part': (True, b'RCPT TO:<"john doe"@example.org>', 250, '2.1.5', None),
}


def _make(name, needs_mail, line, code, esc, text):
    def test(t):
        steps = []
        if needs_mail:
            steps.append(('MAIL FROM:<a@b.example>', 250, '2.1.0'))
        steps.append((line, code, esc, text))
        session(t.start(), steps)
    test.__name__ = 'test_syntax_' + name
    return test


for _name, _case in CASES.items():
    globals()['test_syntax_' + _name] = _make(_name, *_case)


def test_syntax_nul_in_helo(t):  # covers: R_NUL_IN_CMD
    session(t.start(), [(b'HELO a\x00b.example', 501, '5.5.4', 'NUL')], ehlo=False)


def test_syntax_bad_address_then_good(t):
    """A refused MAIL leaves no transaction: a good MAIL after it is not "nested"."""
    session(t.start(), [(b'MAIL FROM:<us er@example.org>', 501, '5.1.7'),
                        (b'MAIL FROM:<a@b.example>', 250, '2.1.0'),
                        (b'RCPT TO:<u@example.org>', 250, '2.1.5')])
