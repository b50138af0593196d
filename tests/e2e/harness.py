"""
harness.py - run the real ternd for end-to-end tests, and talk SMTP to it byte by byte.

What it promises:
  * Ternd: a daemon started as `ternd -f -c CONF [-o k=v]...` in a fresh temporary directory,
    with a generated configuration (listen on a free port of 127.0.0.1 or ::1, spool_dir
    and mailbox_dir under the temporary directory -- ternd delivers, and a test must never
    write outside its temporary directory, e.g. into the default /var/mail/tern --,
    hostname mx.test, local_domains example.org, localhost, relay_networks 127.0.0.0/8)
    plus per-test overrides.  Readiness is seen in
    /proc/net/tcp{,6} (a LISTEN socket on the port), so no probe connection is ever counted
    against max_connections.  stop() sends SIGTERM, waits a bounded time (SIGKILL after it)
    and reports a problem unless the exit status is 0 and stderr is free of sanitizer
    findings ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer").
  * Conn: a raw SMTP client that sends exact bytes and reads complete (multi-line) replies,
    checking that every reply line ends in CRLF and keeps one code; every socket operation
    has a timeout.  expect() asserts the exact basic code and RFC 3463 enhanced code.
  * Small helpers: counting a marker in the spool tree, reading a process's memory use.

Only 127.0.0.1 and ::1 are ever connected to.
"""

import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

HOSTNAME = 'mx.test'
SAN_PATTERNS = (b'ERROR: AddressSanitizer', b'runtime error:', b'ERROR: LeakSanitizer')
START_TIMEOUT = 10.0
IO_TIMEOUT = 5.0

ANY = object()  # "do not check" for expect(esc=...)


class Skip(Exception):
    """The test cannot run here (reported as skipped, with the reason)."""


def fail(msg):
    raise AssertionError(msg)



# ---- shared helpers of the delivery and relay modules ------------------------------------------

WAIT = 30.0  # seconds an outcome may take to show (ASan build, 2 busy cores)
EVENT_RE = re.compile(r' ([0-9A-Z]{16}) event=(delivered|deferred|failed|expired) to=<([^>]*)> '
                      r'relay=(\S+) attempts=(\d+) delay=(\d+)s reply="(.*)"$')


def wait_until(what, fn, timeout=WAIT, interval=0.05):
    """Poll fn() until it returns something true; that value, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            fail(f'{what}: not within {timeout:.0f} s')
        time.sleep(interval)


def events(d, qid=None, addr=None, event=None):
    """ternd's delivery log lines (event=delivered|deferred|failed|expired) as dicts, filtered."""
    out = []
    for line in d.stderr().decode('utf-8', 'replace').splitlines():
        m = EVENT_RE.search(line)
        if not m:
            continue
        e = dict(zip(('id', 'event', 'to', 'relay', 'attempts', 'delay', 'reply'), m.groups()))
        e['attempts'] = int(e['attempts'])
        if (qid is None or e['id'] == qid) and (addr is None or e['to'] == addr) and \
                (event is None or e['event'] == event):
            out.append(e)
    return out


def wait_event(d, qid, addr, event, timeout=WAIT, min_attempts=1):
    """The first log line `qid event=EVENT to=<addr>` (with attempts >= min_attempts)."""
    deadline = time.monotonic() + timeout
    while True:
        ev = [e for e in events(d, qid, addr, event) if e['attempts'] >= min_attempts]
        if ev:
            return ev[0]
        if time.monotonic() > deadline or not d.alive():
            fail(f'no "{qid} event={event} to=<{addr}>" (attempts >= {min_attempts}) in the '
                 f'log within {timeout:.0f} s; its lines: {events(d, qid, addr)[-4:]!r}')
        time.sleep(0.05)


def stop_process(proc, *files):
    """Stop a helper server the test started: SIGTERM to its PID, SIGKILL after 5 s; close
    the files given (its pipes, its log)."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for f in files:
        if f is not None:
            f.close()


# ---- ports and readiness ----------------------------------------------------------------------

def free_port(family=socket.AF_INET):
    host = '::1' if family == socket.AF_INET6 else '127.0.0.1'
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_listening(port):
    """True when some socket in this network namespace LISTENs on TCP port `port`."""
    for name in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == '0A' and \
                            int(fields[1].rsplit(':', 1)[1], 16) == port:
                        return True
        except OSError:
            pass
    return False


# ---- the daemon -------------------------------------------------------------------------------

def base_config(tmpdir, port, family=socket.AF_INET):
    listen = f'[::1]:{port}' if family == socket.AF_INET6 else f'127.0.0.1:{port}'
    return {
        'listen': listen,
        'spool_dir': os.path.join(tmpdir, 'spool'),
        'mailbox_dir': os.path.join(tmpdir, 'mail'),
        'hostname': HOSTNAME,
        'local_domains': 'example.org, localhost',
        'relay_networks': '127.0.0.0/8',
        'max_message_size': '1048576',
        'shutdown_timeout': '5',
    }


def write_config(path, conf):
    with open(path, 'w') as f:
        f.write('# generated by tests/e2e/harness.py\n')
        for k, v in conf.items():
            if v is not None:
                f.write(f'{k} = {v}\n')


class Ternd:
    """One ternd process.  conf: overrides of base_config (a value None removes the key)."""

    def __init__(self, ctx, conf=None, family=socket.AF_INET, args=(), preexec_fn=None,
                 env=None, wrap=None):
        self.ctx = ctx
        self.path = ctx.ternd_path
        self.family = family
        self.overrides = dict(conf or {})
        self.args = list(args)
        self.preexec_fn = preexec_fn
        self.extra_env = env or {}
        self.wrap = wrap or []  # a command prefix, e.g. ['unshare', '-m', ...]
        self.tmpdir = tempfile.mkdtemp(prefix='tern-e2e-', dir=ctx.tmproot)
        self.conf_path = os.path.join(self.tmpdir, 'tern.conf')
        self.stderr_path = os.path.join(self.tmpdir, 'stderr.log')
        self.proc = None
        self.port = None
        self.stopped = False
        self.exit_status = None
        self.conf = None
        ctx.daemons.append(self)

    @property
    def spool_dir(self):
        return self.conf['spool_dir']

    @property
    def mailbox_dir(self):
        return self.conf['mailbox_dir']

    @property
    def pid(self):
        return self.proc.pid

    @property
    def host(self):
        return '::1' if self.family == socket.AF_INET6 else '127.0.0.1'

    def start(self):
        last = ''
        for _attempt in range(3):  # another program may grab the free port in between
            port = self.overrides.get('port') or free_port(self.family)
            self.conf = base_config(self.tmpdir, port, self.family)
            self.conf.update({k: v for k, v in self.overrides.items() if k != 'port'})
            self.conf = {k: (v.replace('{port}', str(port)) if isinstance(v, str) else v)
                         for k, v in self.conf.items()}
            write_config(self.conf_path, self.conf)
            self.port = port
            env = dict(os.environ)
            env.update(self.extra_env)
            errf = open(self.stderr_path, 'ab')
            log_from = errf.tell()
            cmd = self.wrap + [self.path, '-f', '-c', self.conf_path] + self.args
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf,
                                         stderr=errf, env=env, preexec_fn=self.preexec_fn)
            errf.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_listening(port) and self._started(log_from):
                    return self
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.kill()
                fail(f'ternd did not listen on port {port} within {START_TIMEOUT:.0f} s; '
                     f'stderr: {self.stderr_tail()!r}')
            last = self.stderr_tail()
            self.exit_status = self.proc.returncode
            if 'in use' not in last.lower() or 'port' in self.overrides:
                break
        self.stopped = True
        fail(f'ternd exited at start with status {self.proc.returncode}; stderr: {last!r}')

    def _started(self, log_from):
        """The port listens before start-up ends (root is dropped, the spool attached, orphans
        reclaimed after the bind): wait for event=started too, when the log level shows it."""
        if self.conf.get('log_level', 'info') not in ('info', 'debug'):
            return True
        try:
            with open(self.stderr_path, 'rb') as f:
                f.seek(log_from)
                return b'event=started' in f.read()
        except OSError:
            return False

    def stderr(self):
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read()
        except OSError:
            return b''

    def stderr_tail(self, n=2000):
        return self.stderr()[-n:].decode('utf-8', 'replace')

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit; its status, or None when it is still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown_bound(self):
        try:
            return float(self.conf.get('shutdown_timeout') or 30) + 10
        except ValueError:
            return 40.0

    def stop(self):
        """Stop with SIGTERM; a list of problems (empty when all is well)."""
        problems = []
        if self.proc is None or self.stopped:
            return problems
        self.stopped = True
        if self.proc.poll() is not None:
            problems.append(f'ternd (pid {self.proc.pid}) died during the test with status '
                            f'{self.proc.returncode}')
        else:
            self.proc.send_signal(signal.SIGTERM)
            status = self.wait_exit(self.shutdown_bound())
            if status is None:
                self.kill()
                problems.append(f'ternd did not exit within {self.shutdown_bound():.0f} s '
                                f'of SIGTERM (killed)')
            elif status != 0:
                problems.append(f'ternd exited with status {status} after SIGTERM (want 0)')
        problems.extend(self.sanitizer_findings())
        return problems

    def sanitizer_findings(self):
        err = self.stderr()
        out = []
        for pat in SAN_PATTERNS:
            i = err.find(pat)
            if i >= 0:
                out.append(f'ternd stderr has {pat.decode()!r}: '
                           f'{err[max(0, i - 200):i + 1500].decode("utf-8", "replace")}')
        return out

    def status_field(self, field):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        with open(f'/proc/{self.proc.pid}/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
        fail(f'no {field} in /proc/{self.proc.pid}/status')

    def connect(self, **kw):
        return Conn(self.port, host=self.host, **kw)


# ---- the raw client ---------------------------------------------------------------------------

ESC_RE = re.compile(r'^([245])\.(\d{1,3})\.(\d{1,3})$')
LINE_RE = re.compile(rb'^(\d{3})([ -])(.*)$', re.S)


class Reply:
    def __init__(self, lines):
        self.raw_lines = lines                      # bytes, without CRLF
        first = lines[0].decode('utf-8', 'replace')
        self.code = int(first[:3])
        rest = first[4:]
        word = rest.split(' ', 1)
        if ESC_RE.match(word[0]):
            self.esc = word[0]
            self.text = word[1] if len(word) > 1 else ''
        else:
            self.esc = None
            self.text = rest
        self.lines = [ln[4:].decode('utf-8', 'replace') for ln in lines]

    @property
    def first(self):
        """The first line with its separator normalised to a space: '250 mx.test'."""
        ln = self.raw_lines[0].decode('utf-8', 'replace')
        return ln[:3] + ' ' + ln[4:]

    def __repr__(self):
        return repr(b'\r\n'.join(self.raw_lines) + b'\r\n')


class Closed(Exception):
    """The server closed the connection (EOF or reset) while a reply was awaited."""


class Conn:
    def __init__(self, port, host='127.0.0.1', timeout=IO_TIMEOUT, greet=True, rcvbuf=None):
        assert host in ('127.0.0.1', '::1'), host
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:  # before connect, so the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b''
        self.eof = False
        self.last_sent = b''
        self.greeting = None
        if greet:
            self.greeting = self.expect(220, None)

    # -- sending
    def send(self, data):
        if isinstance(data, str):
            data = data.encode('utf-8')
        self.last_sent = data
        self.sock.sendall(data)

    def cmd(self, line, code=None, esc=ANY, text=None):
        """Send line + CRLF and read one reply; check it when code is given."""
        if isinstance(line, str):
            line = line.encode('utf-8')
        self.send(line + b'\r\n')
        if code is None:
            return self.reply()
        return self.expect(code, esc, text)

    # -- receiving
    def _fill(self, timeout):
        if self.eof:
            raise Closed('connection closed by the server')
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b''
        except socket.timeout:
            raise AssertionError(f'no reply within {timeout:.1f} s after sending '
                                 f'{self.last_sent[:200]!r}; buffered {self.buf[:200]!r}')
        if not data:
            self.eof = True
            raise Closed(f'connection closed by the server; buffered {self.buf[:200]!r}')
        self.buf += data

    def readline(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b'\n')
            if i >= 0:
                line = self.buf[:i + 1]
                self.buf = self.buf[i + 1:]
                if not line.endswith(b'\r\n') or b'\r' in line[:-2]:
                    fail(f'server sent a line not ending in exactly one CRLF: {line!r}')
                return line[:-2]
            if len(self.buf) > 4096:
                fail(f'server sent a line over 4096 octets: {self.buf[:200]!r}...')
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f'no complete reply line within {timeout:.1f} s after sending '
                     f'{self.last_sent[:200]!r}; buffered {self.buf[:200]!r}')
            self._fill(left)

    def reply(self, timeout=None):
        lines = []
        while True:
            ln = self.readline(timeout)
            m = LINE_RE.match(ln)
            if not m:
                fail(f'malformed reply line {ln!r} (after sending {self.last_sent[:200]!r})')
            if lines and ln[:3] != lines[0][:3]:
                fail(f'multi-line reply changes its code: {lines!r} then {ln!r}')
            lines.append(ln)
            if m.group(2) == b' ':
                return Reply(lines)

    def expect(self, code, esc=ANY, text=None, timeout=None):
        """Read one reply and check code, enhanced code (None: must have none) and text."""
        try:
            r = self.reply(timeout)
        except Closed as e:
            fail(f'after sending {self.last_sent[:300]!r}: expected {code} '
                 f'{esc if esc is not ANY else ""}, but {e}')
        check_reply(r, code, esc, text, self.last_sent)
        return r

    def pending(self, wait=0.3):
        """Bytes the server sent without being asked (waits up to `wait` seconds)."""
        if self.buf:
            return self.buf
        r, _, _ = select.select([self.sock], [], [], wait)
        if r:
            try:
                self._fill(1.0)
            except Closed:
                return b'<EOF>'
        return self.buf

    def expect_close(self, timeout=None):
        """The server closes the connection (EOF or reset), sending nothing more."""
        timeout = self.timeout if timeout is None else timeout
        if self.buf:
            fail(f'expected the server to close, but it sent {self.buf[:300]!r}')
        if self.eof:
            return
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            data = b''
        except socket.timeout:
            fail(f'the server did not close the connection within {timeout:.1f} s')
        if data:
            fail(f'expected the server to close, but it sent {data[:300]!r}')
        self.eof = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def check_reply(r, code, esc=ANY, text=None, sent=b''):
    where = f'after sending {sent[:300]!r}: ' if sent else ''
    if r.code != code:
        fail(f'{where}expected {code} {esc if esc not in (ANY, None) else ""}, got {r!r}')
    if esc is not ANY and r.esc != esc:
        fail(f'{where}expected enhanced code {esc}, got {r!r}')
    if text is not None and text not in r.text:
        fail(f'{where}expected text containing {text!r}, got {r!r}')
    return r


# ---- SMTP helpers -----------------------------------------------------------------------------

def session(d, steps, ehlo=True, close=True):
    """Open a connection, EHLO, then run steps [(line, code, esc[, text]), ...]; the replies."""
    out = []
    with d.connect() as c:
        if ehlo:
            c.cmd('EHLO client.test', 250, None)
        for st in steps:
            line, code, esc = st[0], st[1], st[2]
            text = st[3] if len(st) > 3 else None
            out.append(c.cmd(line, code, esc, text))
        if close:
            c.cmd('QUIT', 221, '2.0.0')
    return out


def start_txn(c, sender='a@b.example', rcpts=('u@example.org',), ehlo=True):
    if ehlo:
        c.cmd('EHLO client.test', 250, None)
    c.cmd(f'MAIL FROM:<{sender}>', 250, '2.1.0')
    for r in rcpts:
        c.cmd(f'RCPT TO:<{r}>', 250, '2.1.5')


def marker(tag='M'):
    return f'{tag}-{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}'


def spool_files(spool_dir):
    for root, _dirs, files in os.walk(spool_dir):
        for name in files:
            yield os.path.join(root, name)


def spool_count(spool_dir, needle):
    """Occurrences of needle (bytes or str) in all files under spool_dir."""
    if isinstance(needle, str):
        needle = needle.encode('utf-8')
    n = 0
    for p in spool_files(spool_dir):
        try:
            with open(p, 'rb') as f:
                n += f.read().count(needle)
        except OSError:
            pass
    return n


def segment_files(spool_dir):
    seg = os.path.join(spool_dir, 'seg')
    return sorted(os.path.join(seg, f) for f in os.listdir(seg)) if os.path.isdir(seg) else []


def unescape(s):
    """Transcript escapes: \\r \\n \\t \\\\ \\xHH; everything else as UTF-8."""
    out = bytearray()
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == '\\' and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt in 'rnt\\':
                out += {'r': b'\r', 'n': b'\n', 't': b'\t', '\\': b'\\'}[nxt]
                i += 2
                continue
            if nxt == 'x' and re.match(r'[0-9a-fA-F]{2}', s[i + 2:i + 4]):
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
        out += ch.encode('utf-8')
        i += 1
    return bytes(out)
