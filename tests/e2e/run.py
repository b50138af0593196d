#!/usr/bin/python3
"""
run.py - run the end-to-end tests against a ternd binary.

    python3 tests/e2e/run.py --ternd build/ternd [-k PATTERN] [--list]

Finds every function test_* in tests/e2e/test_*.py (in file order; modules may also add
generated tests to their globals), runs each alone with a fresh context, and prints TAP:

    1..N
    ok 1 - test_greeting
    not ok 2 - test_foo
    # reason, one line each
    ok 3 - test_bar # SKIP why

followed by "# N passed, N failed, N skipped".  A test fails when it raises, when a ternd it
started died or did not exit 0 on SIGTERM, or when that ternd's stderr holds a sanitizer
finding.  Each test has a time limit (--test-timeout, default 60 s).  Exit status 1 if any
test failed or none ran.
"""

import argparse
import fnmatch
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


class TestTimeout(Exception):
    pass


class Ctx:
    """What a test gets: the ternd path, a temp root, and daemons it starts (stopped after)."""

    def __init__(self, ternd_path, tmproot, repo):
        self.ternd_path = ternd_path
        self.tmproot = tmproot
        self.repo = repo
        self.daemons = []
        self.notes = []

    def start(self, conf=None, **kw):
        """Start a ternd with these config overrides; returns the running harness.Ternd."""
        return harness.Ternd(self, conf, **kw).start()

    def daemon(self, conf=None, **kw):
        """A harness.Ternd not yet started."""
        return harness.Ternd(self, conf, **kw)

    def note(self, msg):
        self.notes.append(msg)

    def cleanup(self):
        problems = []
        for d in self.daemons:
            try:
                problems.extend(d.stop())
            except Exception as e:  # never leave a daemon behind
                d.kill()
                problems.append(f'stopping ternd: {e!r}')
        return problems


def load_tests(modules=()):
    tests = []
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith('test_') and name.endswith('.py')):
            continue
        if modules and name[:-3] not in modules:
            continue
        spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(HERE, name))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for attr, fn in vars(mod).items():
            if attr.startswith('test_') and callable(fn):
                tests.append((attr, fn))
    return tests


def on_alarm(signum, frame):
    raise TestTimeout('test time limit reached')


def run_one(fn, args, repo):
    tmproot = tempfile.mkdtemp(prefix='tern-e2e-')
    ctx = Ctx(os.path.abspath(args.ternd), tmproot, repo)
    status, msgs = 'ok', []
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.test_timeout)
    try:
        fn(ctx)
    except harness.Skip as e:
        status = 'skip'
        msgs.append(str(e))
    except AssertionError as e:
        status = 'fail'
        msgs.extend(str(e).splitlines() or ['assertion failed'])
        tb = traceback.extract_tb(e.__traceback__)
        frames = [f for f in tb if os.path.basename(f.filename).startswith('test_')]
        if frames:
            f = frames[-1]
            msgs.append(f'at {os.path.basename(f.filename)}:{f.lineno}: {f.line}')
    except TestTimeout:
        status = 'fail'
        msgs.append(f'timed out after {args.test_timeout} s')
    except Exception:
        status = 'fail'
        msgs.extend(traceback.format_exc().rstrip().splitlines())
    finally:
        signal.alarm(0)
    try:
        signal.alarm(args.test_timeout)
        problems = ctx.cleanup()
    except TestTimeout:
        problems = ['timed out stopping ternd']
        for d in ctx.daemons:
            d.kill()
    finally:
        signal.alarm(0)
    if problems:
        if status != 'fail':
            status = 'fail'
        msgs.extend(problems)
    if status == 'fail' and ctx.daemons:
        for d in ctx.daemons:
            tail = d.stderr_tail(1500).strip()
            if tail:
                msgs.append(f'ternd stderr ({d.stderr_path}), last lines:')
                msgs.extend('  ' + ln for ln in tail.splitlines()[-15:])
    msgs.extend(ctx.notes)
    if status != 'fail' or not args.keep:
        shutil.rmtree(tmproot, ignore_errors=True)
    return status, msgs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--ternd', required=True, help='path of the ternd binary')
    ap.add_argument('-k', dest='pattern', action='append', default=[],
                    help='run only tests whose name contains PATTERN (or matches it as a glob)')
    ap.add_argument('--list', action='store_true', help='list the tests and exit')
    ap.add_argument('--test-timeout', type=int, default=60)
    ap.add_argument('--module', action='append', default=[],
                    help='run only the tests of module NAME (test_basic, ...); repeatable')
    ap.add_argument('--keep', action='store_true', help="keep failed tests' temp dirs")
    args = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(HERE))
    tests = load_tests(args.module)
    if args.pattern:
        tests = [(n, f) for n, f in tests
                 if any(p in n or fnmatch.fnmatch(n, p) for p in args.pattern)]
    if args.list:
        for n, _ in tests:
            print(n)
        return 0
    if not os.access(args.ternd, os.X_OK):
        print(f'Bail out! {args.ternd} is not an executable', flush=True)
        return 1

    print(f'1..{len(tests)}', flush=True)
    npass = nfail = nskip = 0
    t0 = time.monotonic()
    for i, (name, fn) in enumerate(tests, 1):
        t1 = time.monotonic()
        status, msgs = run_one(fn, args, repo)
        dt = time.monotonic() - t1
        if status == 'ok':
            npass += 1
            print(f'ok {i} - {name}', flush=True)
        elif status == 'skip':
            nskip += 1
            print(f'ok {i} - {name} # SKIP {" ".join(msgs)}', flush=True)
            msgs = []
        else:
            nfail += 1
            print(f'not ok {i} - {name}', flush=True)
        for m in msgs:
            print(f'#   {m}', flush=True)
        if dt > 10:
            print(f'#   (took {dt:.1f} s)', flush=True)
    print(f'# {npass} passed, {nfail} failed, {nskip} skipped in {time.monotonic() - t0:.1f} s',
          flush=True)
    return 1 if nfail or not tests else 0


if __name__ == '__main__':
    sys.exit(main())
