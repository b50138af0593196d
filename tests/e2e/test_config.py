"""
test_config.py - the configuration contract: `ternd -n -c FILE` exits 0 on a good file, 1
with "FILE:LINE: reason" on a bad one; -o key=value overrides a key.
"""

import os
import subprocess
import time

from harness import SAN_PATTERNS, base_config, fail, free_port, port_listening, write_config


def _conf(t, extra_lines=(), name='tern.conf'):
    """A good config file, then extra raw lines; (path, number of the first extra line)."""
    path = os.path.join(t.tmproot, name)
    write_config(path, base_config(t.tmproot, free_port()))
    with open(path) as f:
        n = len(f.read().splitlines())
    with open(path, 'a') as f:
        for ln in extra_lines:
            f.write(ln + '\n')
    return path, n + 1


def _run(t, *args, timeout=20):
    """Run ternd to completion; (exit status, output).  A sanitizer finding fails the test."""
    p = subprocess.run([t.ternd_path] + list(args), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    out = (p.stdout + p.stderr).decode('utf-8', 'replace')
    for pat in SAN_PATTERNS:
        i = out.find(pat.decode())
        if i >= 0:
            fail(f'ternd {" ".join(args)} (exit {p.returncode}): sanitizer finding:\n'
                 f'{out[:i].strip()[:300]}\n{out[i:i + 900]}')
    return p.returncode, out


def test_config_check_good(t):
    path, _ = _conf(t, ['# a comment', '', 'max_recipients = 50',
                        'max_errors = 7'])
    rc, out = _run(t, '-n', '-c', path)
    if rc != 0:
        fail(f'ternd -n on a good config exited {rc}: {out}')


def test_config_unknown_key(t):
    path, line = _conf(t, ['max_conections = 5'])
    rc, out = _run(t, '-n', '-c', path)
    if rc != 1:
        fail(f'unknown key: exit {rc}, want 1; output {out!r}')
    if f'{path}:{line}:' not in out:
        fail(f'unknown key: output lacks "{path}:{line}:": {out!r}')


def test_config_bad_value(t):
    path, line = _conf(t, ['# before', 'max_recipients = abc', '# after'])
    rc, out = _run(t, '-n', '-c', path)
    if rc != 1:
        fail(f'bad value: exit {rc}, want 1; output {out!r}')
    if f'{path}:{line + 1}:' not in out:
        fail(f'bad value: output lacks "{path}:{line + 1}:": {out!r}')


def test_config_negative_and_junk_values(t):
    for bad in ('max_connections = -1', 'timeout_command = 10x', 'relay_networks = 300.0.0.0/8',
                'listen = 127.0.0.1', 'max_message_size ='):
        path, line = _conf(t, [bad], name='bad.conf')
        rc, out = _run(t, '-n', '-c', path)
        if rc != 1 or f'{path}:{line}:' not in out:
            fail(f'{bad!r}: exit {rc}, want 1 with "{path}:{line}:"; output {out!r}')


def test_config_repeated_key(t):
    path, line = _conf(t, ['max_recipients = 10', 'max_recipients = 20'])
    rc, out = _run(t, '-n', '-c', path)
    if rc != 1 or f'{path}:{line + 1}:' not in out:
        fail(f'repeated key: exit {rc}, want 1 with "{path}:{line + 1}:"; output {out!r}')


def test_config_missing_file(t):
    path = os.path.join(t.tmproot, 'no-such.conf')
    rc, out = _run(t, '-n', '-c', path)
    if rc != 1:
        fail(f'missing file: exit {rc}, want 1; output {out!r}')
    if path not in out:
        fail(f'missing file: the message does not name {path}: {out!r}')


def test_config_daemon_refuses_bad_config(t):
    path, line = _conf(t, ['max_recipients = abc'])
    rc, out = _run(t, '-f', '-c', path, timeout=10)
    if rc != 1 or f'{path}:{line}:' not in out:
        fail(f'ternd -f on a bad config: exit {rc}, want 1 with "{path}:{line}:"; {out!r}')


def test_config_override_bad_value(t):
    path, _ = _conf(t)
    rc, out = _run(t, '-n', '-c', path, '-o', 'max_recipients=abc')
    if rc != 1:
        fail(f'-o max_recipients=abc: exit {rc}, want 1; output {out!r}')
    if '-o:1:' not in out:
        fail(f'-o max_recipients=abc: output lacks "-o:1:": {out!r}')


def test_config_override_unknown_key(t):
    path, _ = _conf(t)
    rc, out = _run(t, '-n', '-c', path, '-o', 'max_recipients=5', '-o', 'no_such_key=1')
    if rc != 1 or '-o:2:' not in out:
        fail(f'-o no_such_key=1 (2nd override): exit {rc}, want 1 with "-o:2:"; {out!r}')


def test_config_override_good(t):
    path, _ = _conf(t)
    rc, out = _run(t, '-n', '-c', path, '-o', 'max_recipients=7')
    if rc != 0:
        fail(f'-o max_recipients=7: exit {rc}: {out!r}')


def test_config_override_listen(t):
    """The file says one port, -o listen= another: only the -o one listens."""
    file_port, other = free_port(), free_port()
    d = t.daemon(args=['-o', f'listen=127.0.0.1:{other}'])
    conf = base_config(d.tmpdir, file_port)
    write_config(d.conf_path, conf)
    d.conf = conf
    errf = open(d.stderr_path, 'ab')
    d.proc = subprocess.Popen([t.ternd_path, '-f', '-c', d.conf_path, '-o',
                               f'listen=127.0.0.1:{other}'],
                              stdout=errf, stderr=errf, stdin=subprocess.DEVNULL)
    errf.close()
    d.port = other
    deadline = time.monotonic() + 10
    while not port_listening(other):
        if d.proc.poll() is not None or time.monotonic() > deadline:
            fail(f'ternd -o listen=127.0.0.1:{other} did not listen there: '
                 f'{d.stderr_tail()!r}')
        time.sleep(0.02)
    with d.connect() as c:
        c.cmd('EHLO client.test', 250, None)
        c.cmd('QUIT', 221, '2.0.0')
    if port_listening(file_port):
        fail(f'the config file port {file_port} listens too: -o did not replace listen')


def test_config_listen_options(t):
    """Listener options: tls, submission, require-tls are known; a misspelt one is named with
    the list; tls and require-tls need tls_cert and tls_key, which ternd -n loads."""
    path, _ = _conf(t)
    rc, out = _run(t, '-n', '-c', path, '-o', 'listen=127.0.0.1:2525, 127.0.0.1:2465 tsl')
    if rc != 1 or '-o:1:' not in out or \
            "unknown option 'tsl' (options: tls, submission, require-tls)" not in out:
        fail(f'misspelt listener option: exit {rc}, {out!r}')
    for opts in ('tls', 'require-tls', 'submission require-tls'):
        # a submission listener needs auth_users too (checked at the same stage)
        auth = ['-o', 'auth_users=/nonexistent/users'] if 'submission' in opts else []
        rc, out = _run(t, '-n', '-c', path, '-o', f'listen=127.0.0.1:2525, 127.0.0.1:2587 {opts}',
                       *auth)
        want = 'submission' if 'submission' in opts else \
            'require-tls' if 'require-tls' in opts else 'tls'
        if rc != 1 or f"'127.0.0.1:2587' has the {want} option but tls_cert and tls_key are " \
                      f"not set" not in out:
            fail(f'listener option {opts!r} without a certificate: exit {rc}, {out!r}')
    rc, out = _run(t, '-n', '-v', '-c', path, '-o',
                   'listen=127.0.0.1:2587 require-tls, 127.0.0.1:2465 tls', '-o',
                   'tls_cert=/nonexistent/c.pem', '-o', 'tls_key=/nonexistent/k.pem')
    if rc != 1 or 'tls_cert /nonexistent/c.pem' not in out:
        fail(f'ternd -n with a missing certificate file: exit {rc}, {out!r}')
