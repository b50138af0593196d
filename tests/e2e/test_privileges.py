"""
test_privileges.py - least privilege: ternd started as root drops to `user` for good, the
spool, the Maildirs and the control socket belong to that user with owner-only modes, and the
Landlock sandbox keeps the daemon to its own directories.

The user is `nobody` (present on every Debian system; no account is created).  Its daemons
live in a temporary directory made traversable (0755) for it; ternd itself makes and chowns
spool_dir and mailbox_dir.  Tests that need root skip with the reason when not run as root.

The sandbox is shown by what it forbids, not by a hook: a Maildir that is a symbolic link to a
directory outside mailbox_dir takes the delivery with `sandbox = off` (so the set-up would
escape) and refuses it with `sandbox = on` (Landlock judges the resolved path).
"""

import os
import pwd
import re
import signal
import smtplib
import ssl
import stat
import subprocess
import time

from harness import Skip, base_config, fail, free_port, wait_until, write_config

DLV_WAIT = 30.0
USER = 'nobody'


def need_root():
    if os.geteuid() != 0:
        raise Skip('needs root: ternd must be started as root to drop privileges')


def nobody():
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        raise Skip(f'no user {USER!r} on this system')


def open_up(t, d):
    """Let the unprivileged user reach the daemon's temporary directory (test-made dirs)."""
    os.chmod(t.tmproot, 0o755)
    os.chmod(d.tmpdir, 0o755)


def start(d):
    """Start and wait for the end of start-up: the port listens before root is dropped."""
    d.start()
    wait_until('ternd logs event=started', lambda: log_has(d, r'event=started '), timeout=10)
    return d


def send(d, rcpts, body):
    with smtplib.SMTP(d.host, d.port, timeout=10) as s:
        s.sendmail('sender@client.example', rcpts, body)


def status(pid):
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.split()
    return out


def new_files(d, local, domain='example.org'):
    nd = os.path.join(d.mailbox_dir, domain, local, 'new')
    try:
        return [os.path.join(nd, n) for n in os.listdir(nd)]
    except FileNotFoundError:
        return []


def log_has(d, pattern):
    return re.search(pattern, d.stderr().decode('utf-8', 'replace'), re.M)


def check_tree(root, uid, gid, what):
    """Every directory 0700 and every file 0600, all owned by uid:gid, from root down."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [None] + filenames:
            p = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(p)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if (st.st_uid, st.st_gid) != (uid, gid) or stat.S_IMODE(st.st_mode) != want:
                fail(f'{what}: {p} is {st.st_uid}:{st.st_gid} mode '
                     f'{stat.S_IMODE(st.st_mode):04o}, want {uid}:{gid} mode {want:04o}')
            n += 1
    return n


# ---- dropping root ----------------------------------------------------------------------------

def test_root_drops_to_user_for_good(t):
    need_root()
    pw = nobody()
    d = t.daemon({'user': USER})
    d.overrides['control_socket'] = os.path.join(d.tmpdir, 'ctl.sock')
    open_up(t, d)
    start(d)
    st = status(d.pid)
    for key, want in (('Uid', pw.pw_uid), ('Gid', pw.pw_gid)):
        # real, effective, saved, file system
        if st[key] != [str(want)] * 4:
            fail(f'/proc/{d.pid}/status {key}: {st[key]}, want {want} four times')
    if '0' in st.get('Groups', []):
        fail(f'/proc/{d.pid}/status Groups: {st["Groups"]} still has root\'s group')
    if st.get('NoNewPrivs') != ['1']:
        fail(f'/proc/{d.pid}/status NoNewPrivs: {st.get("NoNewPrivs")}, want 1')
    for cap in ('CapPrm', 'CapEff', 'CapAmb'):
        if int(st[cap][0], 16) != 0:
            fail(f'/proc/{d.pid}/status {cap}: {st[cap]}, want none')
    if not log_has(d, rf'event=privileges user={USER} uid={pw.pw_uid} gid={pw.pw_gid} '
                      r'action=drop'):
        fail(f'no event=privileges action=drop line: {d.stderr_tail()!r}')

    # the control socket: the user's, 0600
    cst = os.lstat(d.conf['control_socket'])
    if not stat.S_ISSOCK(cst.st_mode) or cst.st_uid != pw.pw_uid or \
            stat.S_IMODE(cst.st_mode) != 0o600:
        fail(f'control socket: uid {cst.st_uid} mode {stat.S_IMODE(cst.st_mode):04o}, '
             f'want uid {pw.pw_uid} mode 0600')

    # mail is accepted and delivered, into files and directories of the user's, owner-only
    body = 'Subject: priv\r\n\r\ndelivered as nobody\r\n'
    send(d, ['bob@example.org'], body)
    files = wait_until('the message is in bob\'s Maildir', lambda: new_files(d, 'bob'))
    with open(files[0], 'rb') as f:
        if b'delivered as nobody' not in f.read():
            fail(f'{files[0]} does not hold the message')
    check_tree(d.mailbox_dir, pw.pw_uid, pw.pw_gid, 'mailbox_dir')
    for sub in ('tmp', 'new', 'cur'):
        if not os.path.isdir(os.path.join(d.mailbox_dir, 'example.org', 'bob', sub)):
            fail(f'Maildir bob has no {sub}/')
    n = check_tree(d.spool_dir, pw.pw_uid, pw.pw_gid, 'spool_dir')
    if n < 5:  # spool_dir, lock, seg/, tmp/, maildrop/, segments
        fail(f'spool_dir has {n} entries, want at least 5')


def test_root_spool_is_given_to_user(t):
    """A spool left by a run as root (no `user`) is the user's after a start with `user`."""
    need_root()
    pw = nobody()
    first = t.daemon({'relay_host': '127.0.0.1:1', 'min_backoff': '600',
                      'max_backoff': '600'})
    open_up(t, first)
    start(first)
    if not log_has(first, r'event=privileges uid=0 warning="RUNNING AS ROOT'):
        fail(f'root without user: no loud warning in the log: {first.stderr_tail()!r}')
    send(first, ['far@remote.example'], 'Subject: kept\r\n\r\nqueued as root\r\n')
    wait_until('the remote recipient is deferred',
               lambda: log_has(first, r'event=deferred to=<far@remote.example>'))
    problems = first.stop()
    if problems:
        fail('; '.join(problems))
    roots = [p for p in (os.path.join(first.spool_dir, n) for n in ('lock', 'seg'))
             if os.lstat(p).st_uid == 0]
    if len(roots) != 2:
        fail('the first run (as root) should have left a root-owned spool')

    second = t.daemon({'user': USER, 'spool_dir': first.spool_dir,
                       'relay_host': '127.0.0.1:1', 'min_backoff': '600',
                       'max_backoff': '600'})
    open_up(t, second)
    start(second)
    if not log_has(second, rf'event=chown spool_dir=\S+ entries=\d+ user={USER}'):
        fail(f'no event=chown line for the spool: {second.stderr_tail()!r}')
    if not log_has(second, r'event=recovered messages=1$'):
        fail(f'the message queued as root was not recovered: {second.stderr_tail()!r}')
    check_tree(first.spool_dir, pw.pw_uid, pw.pw_gid, 'spool_dir after the second start')
    # and the user can go on writing it: a new message is accepted and queued
    send(second, ['far2@remote.example'], 'Subject: new\r\n\r\nqueued as nobody\r\n')
    wait_until('the new remote recipient is deferred',
               lambda: log_has(second, r'event=deferred to=<far2@remote.example>'))


def test_root_does_not_chown_through_symlinks(t):
    """The spool is the user's, so a compromised daemon may put symbolic links in it: at the
    next start as root, ternd must not chown through them (spool_dir/policy -> /etc would
    give /etc's files to the user).  Each case: a root-owned victim directory, a symlink to
    it in the user's spool (a spool subdirectory, or the directory of state_store =
    lmdb:PATH under spool_dir); ternd refuses to start, says why, and the victim stays
    root's."""
    need_root()
    pw = nobody()
    for link, store in (('policy', None), ('seg', None), ('db', 'db/lmdb'), ('db', 'db')):
        tmp = os.path.join(t.tmproot, f'symlink-{link}-{store or "spool"}'.replace('/', '_'))
        os.mkdir(tmp)
        os.chmod(t.tmproot, 0o755)
        os.chmod(tmp, 0o755)
        victim = os.path.join(tmp, 'victim')
        os.mkdir(victim, 0o700)
        os.mkdir(os.path.join(victim, 'lmdb'), 0o700)
        secret = os.path.join(victim, 'shadow')
        with open(secret, 'w') as f:
            f.write('root secret\n')
        os.chmod(secret, 0o600)
        conf = base_config(tmp, free_port())
        spool = conf['spool_dir']
        os.makedirs(spool, 0o700)
        os.chown(spool, pw.pw_uid, pw.pw_gid)  # as an earlier run left it
        os.symlink(victim, os.path.join(spool, link))  # what the user can do there
        conf['user'] = USER
        conf['sandbox'] = 'off'
        if store is not None:
            conf['state_store'] = 'lmdb:' + os.path.join(spool, store)
        path = os.path.join(tmp, 'tern.conf')
        write_config(path, conf)
        p = subprocess.run([t.ternd_path, '-f', '-c', path], capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        err = p.stderr.decode('utf-8', 'replace')
        owners = {n: os.lstat(os.path.join(victim, n)).st_uid for n in ('', 'shadow', 'lmdb')}
        if any(owners.values()):
            fail(f'symlink {link} -> victim (state_store {store}): root chowned through it: '
                 f'{owners}; stderr {err!r}')
        if p.returncode != 1 or 'is a symlink in a directory that is not root' not in err:
            fail(f'symlink {link} -> victim (state_store {store}): exit {p.returncode}, '
                 f'stderr {err!r}; want exit 1 and the reason')


def test_root_only_tls_key_read_before_drop(t):
    """The TLS key may stay root's (0600): it is read before root is dropped, and STARTTLS
    works as the user; a SIGHUP reload, as the user, cannot read it and keeps the old one."""
    need_root()
    pw = nobody()
    d = t.daemon({'user': USER})
    open_up(t, d)
    cert = os.path.join(d.tmpdir, 'server.crt')
    key = os.path.join(d.tmpdir, 'server.key')
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                        '-days', '2', '-subj', '/CN=mx.test', '-addext',
                        'subjectAltName=DNS:mx.test'], check=True, capture_output=True,
                       timeout=30)
    except FileNotFoundError:
        raise Skip('openssl not installed')
    os.chmod(key, 0o600)  # root's only
    d.overrides.update({'tls_cert': cert, 'tls_key': key})
    start(d)
    if status(d.pid)['Uid'] != [str(pw.pw_uid)] * 4:
        fail('not running as the user')
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False  # the chain is still checked: it is this certificate
    with smtplib.SMTP(d.host, d.port, timeout=10) as s:
        s.ehlo('client.test')
        code, _msg = s.starttls(context=ctx)
        if code != 220:
            fail(f'STARTTLS answered {code}')
        s.ehlo('client.test')
        s.sendmail('a@b.example', ['tls@example.org'], 'Subject: k\r\n\r\nkey\r\n')
    wait_until('delivered over TLS', lambda: new_files(d, 'tls'))
    d.signal(signal.SIGHUP)
    wait_until('the reload is logged', lambda: log_has(d, r'event=reload tls=kept-old'))


def test_unknown_user_refused(t):
    port = free_port()
    tmp = os.path.join(t.tmproot, 'nouser')
    os.mkdir(tmp)
    conf = base_config(tmp, port)
    conf['user'] = 'no-such-user-tern'
    path = os.path.join(tmp, 'tern.conf')
    write_config(path, conf)
    p = subprocess.run([t.ternd_path, '-f', '-c', path], capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode('utf-8', 'replace')
    if p.returncode != 1 or 'user no-such-user-tern: no such user' not in err:
        fail(f'user = no-such-user-tern: exit {p.returncode}, stderr {err!r}; want exit 1 '
             f'and "no such user"')


def test_not_root_ignores_user(t):
    """Started by an ordinary user, `user` naming another user is ignored with a warning."""
    need_root()
    pw = nobody()

    def become_nobody():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    d = t.daemon({'user': 'root'}, preexec_fn=become_nobody)
    open_up(t, d)
    os.chown(d.tmpdir, pw.pw_uid, pw.pw_gid)
    start(d)
    if not log_has(d, r'event=privileges user=root uid=\d+ action=none warning="not started '
                      r'as root: the user key is ignored'):
        fail(f'no warning that user is ignored: {d.stderr_tail()!r}')
    st = status(d.pid)
    if st['Uid'] != [str(pw.pw_uid)] * 4:
        fail(f'Uid {st["Uid"]}, want {pw.pw_uid}')
    send(d, ['carol@example.org'], 'Subject: u\r\n\r\nunprivileged\r\n')
    wait_until('delivered by an unprivileged ternd', lambda: new_files(d, 'carol'))


# ---- the sandbox ------------------------------------------------------------------------------

def sandbox_escape(t, sandbox):
    """Deliver to a Maildir that is a symlink out of mailbox_dir; (daemon, files outside)."""
    conf = {'sandbox': sandbox, 'min_backoff': '600', 'max_backoff': '600'}
    if os.geteuid() == 0:
        conf['user'] = USER
    d = t.daemon(conf)
    open_up(t, d)
    uid, gid = (nobody().pw_uid, nobody().pw_gid) if os.geteuid() == 0 else \
        (os.geteuid(), os.getegid())
    outside = os.path.join(d.tmpdir, 'outside')
    dom = os.path.join(d.tmpdir, 'mail', 'example.org')
    os.makedirs(outside)
    os.makedirs(dom)
    for p in (outside, os.path.dirname(dom), dom):
        os.chown(p, uid, gid)
        os.chmod(p, 0o700)
    os.symlink(outside, os.path.join(dom, 'eve'))
    start(d)
    send(d, ['eve@example.org'], 'Subject: s\r\n\r\nescape\r\n')
    wait_until('an outcome for eve',
               lambda: log_has(d, r'event=(delivered|deferred) to=<eve@example.org>'))
    found = []
    for dirpath, _dirs, files in os.walk(outside):
        found.extend(os.path.join(dirpath, f) for f in files)
    return d, found


def test_sandbox_keeps_daemon_in_its_directories(t):
    d, found = sandbox_escape(t, 'off')
    if not found or not log_has(d, r'event=delivered to=<eve@example.org>'):
        fail(f'sandbox = off: the symlinked Maildir did not take the message, so this test '
             f'proves nothing: {d.stderr_tail()!r}')
    problems = d.stop()
    if problems:
        fail('; '.join(problems))

    d, found = sandbox_escape(t, 'on')
    if log_has(d, r'event=sandbox state=off reason="the kernel has no Landlock"'):
        raise Skip('the kernel has no Landlock')
    if not log_has(d, r'event=sandbox state=on landlock_abi=\d+'):
        fail(f'no event=sandbox state=on line: {d.stderr_tail()!r}')
    if found:
        fail(f'sandbox = on: ternd wrote outside its directories: {found}')
    if not log_has(d, r'event=deferred to=<eve@example.org> relay=maildir attempts=1 '
                      r'delay=\d+s reply="451 4\.3\.0 Cannot write to the mailbox: '
                      r'[a-z]+: Permission denied"'):
        fail(f'sandbox = on: want the delivery deferred with Permission denied: '
             f'{d.stderr_tail()!r}')
    if status(d.pid).get('NoNewPrivs') != ['1']:
        fail('NoNewPrivs is not set')
    # and inside its directories all is well
    send(d, ['bob@example.org'], 'Subject: in\r\n\r\ninside\r\n')
    wait_until('a delivery inside mailbox_dir', lambda: new_files(d, 'bob'))


def test_sandbox_reload_after_rename(t):
    """Under the sandbox, a certificate replaced by rename (as editors and renewals do: a new
    file, not the inode the sandbox saw at start) is still read at SIGHUP."""
    d = t.daemon({'sandbox': 'on'})
    paths = {}
    for name in ('one', 'two'):
        cert = os.path.join(d.tmpdir, name + '.crt')
        key = os.path.join(d.tmpdir, name + '.key')
        try:
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                            'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                            '-days', '2', '-subj', f'/CN={name}.test'], check=True,
                           capture_output=True, timeout=30)
        except FileNotFoundError:
            raise Skip('openssl not installed')
        paths[name] = (cert, key)
    cert, key = os.path.join(d.tmpdir, 'tls.crt'), os.path.join(d.tmpdir, 'tls.key')
    os.link(paths['one'][0], cert)
    os.link(paths['one'][1], key)
    d.overrides.update({'tls_cert': cert, 'tls_key': key})
    start(d)
    if log_has(d, r'event=sandbox state=off'):
        raise Skip('no Landlock on this kernel')
    os.replace(paths['two'][0], cert)
    os.replace(paths['two'][1], key)
    d.signal(signal.SIGHUP)
    wait_until('the reload is logged', lambda: log_has(d, r'event=reload tls=\S+'))
    if not log_has(d, r'event=reload tls=reloaded'):
        fail(f'SIGHUP after a rename did not reload: {d.stderr_tail()!r}')
    with smtplib.SMTP(d.host, d.port, timeout=10) as s:
        s.ehlo('client.test')
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        code, _msg = s.starttls(context=ctx)  # verifies against the second certificate
        if code != 220:
            fail(f'STARTTLS answered {code}')


def test_auth_users_read_as_the_user(t):
    """auth_users is loaded with the AUTH threads after the drop (and reread on SIGHUP), so it
    must be readable by the user: root-only refuses to start with the reason; readable by the
    user's group, AUTH works inside the sandbox."""
    need_root()
    pw = nobody()
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'auth_users')
    d = t.daemon({'user': USER})
    open_up(t, d)
    users = os.path.join(d.tmpdir, 'users')
    with open(src, 'rb') as f, open(users, 'wb') as g:
        g.write(f.read())
    os.chmod(users, 0o600)  # root's only
    cert = os.path.join(d.tmpdir, 'server.crt')
    key = os.path.join(d.tmpdir, 'server.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days',
                    '2', '-subj', '/CN=mx.test'], check=True, capture_output=True, timeout=30)
    d.overrides.update({'auth_users': users, 'tls_cert': cert, 'tls_key': key})
    try:
        d.start()  # the port listens (bound as root) before the users file is read
    except AssertionError:
        pass
    status_ = d.wait_exit(10)
    d.stopped = True
    err = d.stderr().decode('utf-8', 'replace')
    if status_ != 1 or 'Permission denied' not in err:
        fail(f'a root-only auth_users with user = {USER}: want exit 1 naming "Permission '
             f'denied", got status {status_}: {err[-600:]!r}')

    d2 = t.daemon({'user': USER})
    open_up(t, d2)
    os.chown(users, 0, pw.pw_gid)
    os.chmod(users, 0o640)
    d2.overrides.update({'auth_users': users, 'tls_cert': cert, 'tls_key': key})
    start(d2)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    with smtplib.SMTP(d2.host, d2.port, timeout=10) as s:
        s.ehlo('client.test')
        s.starttls(context=ctx)
        s.ehlo('client.test')
        code, _msg = s.login('alice', 'secret')
        if code != 235:
            fail(f'AUTH as nobody: {code}')


def test_state_store_is_the_users(t):
    """The greylisting store (LMDB, under spool_dir by default, or state_store = lmdb:PATH
    elsewhere) is opened after the drop: its files are the user's and it works in the
    sandbox (451 4.7.1 Greylisted, not the 451 4.3.0 of a failing store)."""
    need_root()
    pw = nobody()
    for where in ('default', 'elsewhere'):
        d = t.daemon({'user': USER, 'relay_networks': '', 'greylist': 'on',
                      'greylist_delay': '300'})
        open_up(t, d)
        store = os.path.join(d.tmpdir, 'spool', 'policy')
        if where == 'elsewhere':
            store = os.path.join(d.tmpdir, 'state', 'lmdb')
            d.overrides['state_store'] = 'lmdb:' + store
        start(d)
        with d.connect() as c:
            c.cmd('EHLO client.test', 250, None)
            c.cmd('MAIL FROM:<a@b.example>', 250, '2.1.0')
            c.cmd('RCPT TO:<u@example.org>', 451, '4.7.1', 'Greylisted')
            c.cmd('QUIT', 221)
        n = check_tree(store, pw.pw_uid, pw.pw_gid, f'state store ({where})')
        if n < 3:  # the directory, data.mdb, lock.mdb
            fail(f'state store ({where}): {n} entries in {store}, want the LMDB files')
