"""
test_transcripts.py - golden transcripts, and the check that every reply of the catalogue
is exercised by some end-to-end test or transcript.

A transcript (tests/e2e/transcripts/NAME.txt) is replayed on a fresh connection to a fresh
ternd, one test each (test_transcript_NAME).  Lines:

    # config: KEY = VALUE   a config override for this transcript (several allowed);
                            {port} is the listening port, {e2e} this directory
    # covers: <ids>         the catalogue replies it exercises, comma-separated (R_NAME, ...)
    # anything else         a comment; blank lines are ignored
    C: text                 send text + CRLF (escapes \\r \\n \\t \\\\ \\xHH; UTF-8 as is)
    R: text                 send text raw, no CRLF added (same escapes; {N*c} = N times c)
    S: 250 2.1.0 Sender     read one reply; its first line ("250-x" read as "250 x") must
                            start with this text
    S: <close>              the server closes the connection, sending nothing more

The replies are read in order; C/R lines are sent as they come (so several C lines before
an S line are pipelined).
"""

import os
import re

from harness import fail, unescape

HERE = os.path.dirname(os.path.abspath(__file__))
TDIR = os.path.join(HERE, 'transcripts')
COVERS_RE = re.compile(r'#\s*covers:\s*(R_[A-Z0-9_]+(?:\s*,\s*R_[A-Z0-9_]+)*)')

# Replies that no end-to-end test can provoke, each with the reason.
NOT_REACHABLE_E2E = {
    'R_LOCAL_ERROR': 'sent only when calloc/realloc/spool_msg_new fail (out of memory); '
                     'left to unit tests',
    'R_SUBMIT_REFUSED': 'sendmail -bs: ternd refuses a submission permanently for a reason '
                        'other than an unknown user; the -bs session applies the same address '
                        'and size checks first, so only a ternd with a smaller '
                        'max_message_size than the sendmail side can provoke it',
}


def parse_transcript(path):
    conf, steps = {}, []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line.strip():
                continue
            if line.startswith('#'):
                m = re.match(r'#\s*config:\s*([a-z_]+)\s*=\s*(.*)$', line)
                if m:
                    conf[m.group(1)] = m.group(2).strip()
                continue
            kind, sep, rest = line.partition(': ')
            if kind not in ('C', 'R', 'S') or not sep:
                fail(f'{path}:{n}: cannot parse {line!r}')
            steps.append((n, kind, rest))
    return conf, steps


def expand(text):
    return re.sub(r'\{(\d+)\*(.)\}', lambda m: m.group(2) * int(m.group(1)), text)


def replay(t, path):
    conf, steps = parse_transcript(path)
    d = t.start({k: v.replace('{e2e}', HERE) for k, v in conf.items()})
    name = os.path.basename(path)
    c = d.connect(greet=False)
    sent = b''
    with c:
        for n, kind, text in steps:
            where = f'{name}:{n}'
            if kind == 'C':
                data = unescape(text) + b'\r\n'
                c.send(data)
                sent = data
            elif kind == 'R':
                data = unescape(expand(text))
                c.send(data)
                sent = data
            elif text == '<close>':
                try:
                    c.expect_close()
                except AssertionError as e:
                    fail(f'{where}: {e}')
            else:
                want = text[:3] + ' ' + text[4:] if len(text) > 3 and text[3] == '-' else text
                try:
                    r = c.reply()
                except Exception as e:
                    fail(f'{where}: want "{want}" after sending {sent[:200]!r}: {e}')
                if not r.first.startswith(want):
                    fail(f'{where}: after sending {sent[:200]!r}\n  want "{want}..."\n'
                         f'  got  {r!r}')


def _make(path):
    def test(t):
        replay(t, path)
    return test


for _f in sorted(os.listdir(TDIR)) if os.path.isdir(TDIR) else []:
    if _f.endswith('.txt'):
        globals()['test_transcript_' + _f[:-4]] = _make(os.path.join(TDIR, _f))


def catalogue(repo):
    """{id: (code, esc or None)} from src/smtp/reply.def."""
    path = os.path.join(repo, 'src', 'smtp', 'reply.def')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    out = {}
    for m in re.finditer(r'^REPLY\(\s*(R_[A-Z0-9_]+)\s*,\s*(\d{3})\s*,\s*("([^"]*)"|NULL)',
                         text, re.M):
        out[m.group(1)] = (int(m.group(2)), m.group(4))
    if not out:
        fail(f'no REPLY entries found in {path}')
    return out


def covered(where=HERE):
    """{id: [file, ...]} of every "# covers:" marker in the tests and transcripts."""
    out = {}
    files = [os.path.join(HERE, f) for f in os.listdir(HERE)
             if f.startswith('test_') and f.endswith('.py')]
    files += [os.path.join(TDIR, f) for f in os.listdir(TDIR) if f.endswith('.txt')]
    for p in sorted(files):
        with open(p, encoding='utf-8') as f:
            for m in COVERS_RE.finditer(f.read()):
                for rid in re.split(r'\s*,\s*', m.group(1).strip()):
                    out.setdefault(rid, []).append(os.path.basename(p))
    return out


def test_reply_catalogue_covered(t):
    cat = catalogue(t.repo)
    cov = covered()
    unknown = sorted(set(cov) - set(cat))
    if unknown:
        fail(f'"# covers:" names replies not in reply.def: {unknown} (in '
             f'{[cov[u] for u in unknown]})')
    missing = sorted(set(cat) - set(cov) - set(NOT_REACHABLE_E2E))
    if missing:
        fail(f'{len(missing)} replies of reply.def are exercised by no e2e test or '
             f'transcript: {", ".join(missing)}')
    for rid, why in NOT_REACHABLE_E2E.items():
        if rid in cat:
            t.note(f'{rid} not covered end to end: {why}')


def test_transcript_covers_match_replies(t):
    """A transcript that claims to cover R_X expects a reply with R_X's code and esc."""
    cat = catalogue(t.repo)
    bad = []
    for f in sorted(os.listdir(TDIR)):
        if not f.endswith('.txt'):
            continue
        path = os.path.join(TDIR, f)
        with open(path, encoding='utf-8') as fh:
            text = fh.read()
        _conf, steps = parse_transcript(path)
        expected = [s[2] for s in steps if s[1] == 'S']
        for m in COVERS_RE.finditer(text):
            for rid in re.split(r'\s*,\s*', m.group(1).strip()):
                if rid not in cat:
                    continue
                code, esc = cat[rid]
                want = f'{code} {esc}' if esc else f'{code}'
                if not any(e.replace('-', ' ', 1).startswith(want) for e in expected):
                    bad.append(f'{f}: covers {rid} but expects no "{want}" reply')
    if bad:
        fail('\n'.join(bad))
