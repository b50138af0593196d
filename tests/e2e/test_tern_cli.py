"""
test_tern_cli.py - golden output of `tern explain` and `tern compare`, and every exit status.

The tern binary is the one next to the ternd under test (same build directory).  Each
golden case (GOLDEN below) runs tern with its arguments and compares stdout byte for byte
with tests/e2e/golden/NAME; JSON goldens must also parse.  The goldens are what users read:
after changing a catalogue table (codes.def, esc.def, reply.def) or explain.c, regenerate
them and read the diff by eye:

    python3 tests/e2e/test_tern_cli.py --regen [--tern build/tern]
    (or TERN_REGEN_GOLDEN=1 with the e2e runner)

Exit statuses: 0 done, 2 unknown code or nothing recognisable, 64 usage.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import SAN_PATTERNS, fail  # noqa: E402

GOLDEN_DIR = os.path.join(HERE, 'golden')
LINE_550 = '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown'

# (golden file, tern arguments)
GOLDEN = [
    ('explain_421.txt', ['explain', '421']),
    ('explain_501.txt', ['explain', '501']),
    ('explain_4.7.1.txt', ['explain', '4.7.1']),
    ('explain_line_550.txt', ['explain', LINE_550]),
    ('compare_421_501.txt', ['compare', '421', '501']),
    ('compare_421_501.json', ['--json', 'compare', '421', '501']),
    ('explain_421.fr.txt', ['--lang', 'fr', 'explain', '421']),
    ('explain_501.fr.txt', ['--lang', 'fr', 'explain', '501']),
    ('explain_4.7.1.fr.txt', ['--lang', 'fr', 'explain', '4.7.1']),
    ('explain_line_550.fr.txt', ['--lang', 'fr', 'explain', LINE_550]),
    ('compare_421_501.fr.txt', ['--lang', 'fr', 'compare', '421', '501']),
    ('compare_421_501.fr.json', ['--json', '--lang', 'fr', 'compare', '421', '501']),
]


def tern_path(t):
    return os.path.join(os.path.dirname(t.ternd_path), 'tern')


def run_tern(path, args, timeout=20):
    """(exit status, stdout, stderr) as text; a sanitizer finding fails the test."""
    p = subprocess.run([path] + list(args), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    for pat in SAN_PATTERNS:
        if pat in p.stderr:
            fail(f'tern {args}: sanitizer finding:\n{p.stderr.decode("utf-8", "replace")[:1500]}')
    return p.returncode, p.stdout.decode('utf-8'), p.stderr.decode('utf-8', 'replace')


def regen_wanted():
    return os.environ.get('TERN_REGEN_GOLDEN') == '1'


def check_golden(t, name, args):
    path = tern_path(t)
    rc, out, err = run_tern(path, args)
    if rc != 0:
        fail(f'tern {args}: exit {rc}, want 0; stderr {err!r}')
    if name.endswith('.json'):
        try:
            json.loads(out)
        except ValueError as e:
            fail(f'tern {args}: output is not valid JSON: {e}')
    gpath = os.path.join(GOLDEN_DIR, name)
    if regen_wanted():
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        with open(gpath, 'w', encoding='utf-8') as f:
            f.write(out)
        return
    if not os.path.exists(gpath):
        fail(f'{gpath} missing; create it with: python3 tests/e2e/test_tern_cli.py --regen')
    with open(gpath, encoding='utf-8') as f:
        want = f.read()
    if out != want:
        wl, ol = want.splitlines(), out.splitlines()
        for i in range(max(len(wl), len(ol))):
            w = wl[i] if i < len(wl) else '<end>'
            o = ol[i] if i < len(ol) else '<end>'
            if w != o:
                fail(f'tern {args} differs from golden/{name} at line {i + 1}:\n'
                     f'  want: {w!r}\n  got:  {o!r}\n'
                     f'(if the change is intended: python3 tests/e2e/test_tern_cli.py --regen)')
        fail(f'tern {args} differs from golden/{name} (line endings)')


def _golden_test(name, args):
    def test(t):
        check_golden(t, name, args)
    return test


for _name, _args in GOLDEN:
    _fn = 'test_tern_golden_' + _name.replace('.', '_')
    globals()[_fn] = _golden_test(_name, _args)


def test_tern_exit_status_ok(t):
    path = tern_path(t)
    for args in (['explain', '421'], ['explain', '421', '4.7.1', LINE_550],
                 ['explain', 'Diagnostic-Code: smtp; 550 5.7.1 Relay access denied'],
                 ['explain', 'host mx.example.com[192.0.2.1] said: 421 4.3.2 Try again later'],
                 ['explain', 'X.7.1'], ['compare', '4.7.1', '5.1.1'], ['compare', '250', '354'],
                 ['--lang=fr', 'compare', 'X.2.2', '552'], ['explain', '--', '421'],
                 ['--help']):
        rc, out, err = run_tern(path, args)
        if rc != 0 or not out or err:
            fail(f'tern {args}: exit {rc}, want 0 with output and no stderr; stderr {err!r}')


def test_tern_exit_status_unknown(t):
    path = tern_path(t)
    for args, bad in ((['explain', '599'], '599'), (['explain', '5.9.9'], '5.9.9'),
                      (['explain', 'hello'], 'hello'), (['explain', '3.1.1'], '3.1.1'),
                      (['explain', '42'], '42'), (['compare', '421', '600'], '600'),
                      (['compare', 'nothing', '501'], 'nothing'),
                      (['--json', 'explain', '999'], '999')):
        rc, out, err = run_tern(path, args)
        if rc != 2:
            fail(f'tern {args}: exit {rc}, want 2; stderr {err!r}')
        if not err.startswith(f'tern: {bad}: '):
            fail(f'tern {args}: stderr should name the bad input: {err!r}')
    # one bad code among good ones: the good ones are still explained, exit 2
    rc, out, err = run_tern(path, ['explain', '421', '599'])
    if rc != 2 or 'SMTP 421' not in out or '599' not in err:
        fail(f'tern explain 421 599: exit {rc}, stdout {out[:60]!r}, stderr {err!r}')
    rc, out, err = run_tern(path, ['--json', 'explain', '421', '599'])
    if rc != 2 or [o['code'] for o in json.loads(out)] != [421]:
        fail(f'tern --json explain 421 599: exit {rc}, stdout {out[:200]!r}')


def test_tern_exit_status_usage(t):
    path = tern_path(t)
    for args in ([], ['explain'], ['compare', '421'], ['compare', '421', '501', '550'],
                 ['frobnicate', '421'], ['--lang', 'de', 'explain', '421'], ['--lang'],
                 ['--bogus', 'explain', '421']):
        rc, out, err = run_tern(path, args)
        if rc != 64:
            fail(f'tern {args}: exit {rc}, want 64; stderr {err!r}')
        if 'usage:' not in err or out:
            fail(f'tern {args}: want usage on stderr and nothing on stdout: {err!r} {out!r}')


def test_tern_json_explain(t):
    rc, out, err = run_tern(tern_path(t), ['--json', 'explain', '421', LINE_550, 'X.7.1'])
    if rc != 0:
        fail(f'exit {rc}: {err}')
    docs = json.loads(out)
    if [d['code'] for d in docs] != [421, 550, None]:
        fail(f'codes {[d["code"] for d in docs]}')
    if docs[0]['class_name'] != 'transient negative' or docs[0]['enhanced'] is not None:
        fail(f'421: {docs[0]["class_name"]!r} {docs[0]["enhanced"]!r}')
    if not any(s['id'] == 'R_SHUTDOWN' for s in docs[0]['tern_sends']):
        fail('421: R_SHUTDOWN not among tern_sends')
    e = docs[1]['enhanced']
    if (e['code'], e['subject_title'], e['class_matches']) != ('5.1.1', 'Addressing Status', True):
        fail(f'550 5.1.1: enhanced {e!r}')
    if docs[1]['text'] != LINE_550[10:]:
        fail(f'550 line text {docs[1]["text"]!r}')
    if docs[2]['enhanced']['class'] is not None or docs[2]['class'] is not None:
        fail(f'X.7.1: class {docs[2]["class"]!r}')


def _regen_main():
    import argparse
    ap = argparse.ArgumentParser(description='regenerate the golden files of tern explain/compare')
    ap.add_argument('--regen', action='store_true', required=True)
    ap.add_argument('--tern', default=os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                   'build', 'tern'))
    args = ap.parse_args()

    class Ctx:
        ternd_path = os.path.join(os.path.dirname(os.path.abspath(args.tern)), 'ternd')

    os.environ['TERN_REGEN_GOLDEN'] = '1'
    for name, targs in GOLDEN:
        check_golden(Ctx, name, targs)
        print(f'wrote {os.path.join(GOLDEN_DIR, name)}')
    return 0


if __name__ == '__main__':
    sys.exit(_regen_main())
