#!/usr/bin/env python3
"""lmtpserver.py - a small, scriptable LMTP server (RFC 2033) for tern's tests.

Stdlib only.  Usable as a module (LMTPServer(...).serve()) or as a script:

    python3 lmtpserver.py (--unix PATH | --port N) --maildir DIR [--script SPEC]...
                          [--idle SECONDS]

It listens on a unix socket or on 127.0.0.1:N (N = 0 picks a free port), prints
"ready PORT" (0 for a unix socket) on stdout once it accepts connections, and
serves one connection at a time.  Each message accepted for a recipient is
stored, exactly as received after dot-unstuffing (CRLF line ends kept), in
DIR/<recipient>/<n>.eml; every command line received and every reply sent is
appended to DIR/transcript.txt ("C: ..." / "S: ..."), and "# pipelined" after a
command when more input had already arrived before its reply.

It is strict where tern must be: a command or data line ending in a bare LF,
or a bare CR inside one, is refused (500 5.5.2 for a command; 554 5.6.0 to
every recipient for the message), so a client that sends anything but CRLF
fails its test.

SPEC, repeatable:
    ADDR=REPLY          answer RCPT TO:<ADDR> with REPLY (e.g. "452 4.2.2 full")
    data:ADDR=REPLY     answer for ADDR after the final dot with REPLY
    no-pipelining       do not advertise PIPELINING, and refuse (503 5.5.0, to
                        everything that follows) a client that sends a command
                        before the reply to the previous one
    close-after-data    after the final dot, close without a reply
    malformed           answer RCPT with a malformed reply ("25O 2.1.5 Ok")
    stall               accept the connection and never send the greeting
    greeting=REPLY      the greeting, instead of "220 ... LMTP ready"
In REPLY, the two characters "\\n" separate the lines of a multi-line reply,
sent as given ("550-5.1.1 a\\n550 5.1.1 b").

Bounded: it exits after --idle seconds (default 30) without a connection or a
command, and on SIGTERM, removing the unix socket.
"""

import argparse
import os
import select
import signal
import socket
import sys

from lineconn import Closed, LineConn


class Script:
    def __init__(self, specs=()):
        self.rcpt = {}
        self.data = {}
        self.modes = set()
        self.greeting = None
        for spec in specs:
            self.add(spec)

    def add(self, spec):
        if spec in ("no-pipelining", "close-after-data", "malformed", "stall"):
            self.modes.add(spec)
        elif spec.startswith("greeting="):
            self.greeting = spec[len("greeting="):]
        elif spec.startswith("data:") and "=" in spec:
            addr, reply = spec[len("data:"):].split("=", 1)
            self.data[addr.lower()] = reply
        elif "=" in spec:
            addr, reply = spec.split("=", 1)
            self.rcpt[addr.lower()] = reply
        else:
            raise ValueError("bad script entry: %r" % spec)


class Conn(LineConn):
    def __init__(self, server, sock):
        super().__init__(server, sock)

    def log(self, line):
        with open(os.path.join(self.server.maildir, "transcript.txt"), "ab") as f:
            f.write(line + b"\n")

    def serve(self):
        sc = self.server.script
        if "stall" in sc.modes:
            try:
                self.sock.recv(1)
            except (socket.timeout, OSError):
                pass
            return
        self.send(sc.greeting or "220 lmtpserver.test LMTP ready")
        sender = None
        rcpts = []
        broken = False      # a pipelining violation: everything is refused from then on
        while True:
            line = self.readline()
            self.log(b"C: " + line.rstrip(b"\r\n"))
            if self.buf:
                self.log(b"# pipelined")    # the next command came before this reply
            if "no-pipelining" in sc.modes and self.buf and not broken:
                broken = True
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                self.send("500 5.5.2 Line must end in CRLF, without a bare CR or LF")
                continue
            if broken:
                self.send("503 5.5.0 Command sent before the previous reply (no PIPELINING)")
                if line[:4].upper() == b"QUIT":
                    return
                continue
            cmd = line[:-2].decode("utf-8", "surrogateescape")
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "LHLO":
                exts = ["lmtpserver.test", "8BITMIME", "ENHANCEDSTATUSCODES"]
                if "no-pipelining" not in sc.modes:
                    exts.append("PIPELINING")
                self.send("\\n".join("250%s%s" % ("-" if i < len(exts) - 1 else " ", e)
                                     for i, e in enumerate(exts)))
            elif verb in ("HELO", "EHLO"):
                self.send("500 5.5.1 This is LMTP: say LHLO")
            elif verb == "MAIL" and cmd.upper().startswith("MAIL FROM:<") and cmd.endswith(">"):
                sender = cmd[len("MAIL FROM:<"):-1]
                rcpts = []
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT" and cmd.upper().startswith("RCPT TO:<") and cmd.endswith(">"):
                addr = cmd[len("RCPT TO:<"):-1]
                if sender is None:
                    self.send("503 5.5.1 MAIL first")
                elif "malformed" in sc.modes:
                    self.send("25O 2.1.5 Ok")
                elif addr.lower() in sc.rcpt:
                    self.send(sc.rcpt[addr.lower()])
                else:
                    rcpts.append(addr)
                    self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.send("503 5.5.1 No valid recipients")
                    continue
                self.send("354 Go ahead")
                body, bare = self.read_data()
                if "close-after-data" in sc.modes:
                    return
                for addr in rcpts:
                    if bare:
                        self.send("554 5.6.0 Bare CR or LF in the message")
                    elif addr.lower() in sc.data:
                        self.send(sc.data[addr.lower()])
                    else:
                        self.store(addr, body)
                        self.send("250 2.0.0 <%s> delivered" % addr)
                sender = None
                rcpts = []
            elif verb == "RSET":
                sender = None
                rcpts = []
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("500 5.5.2 Command not recognized")

    def read_data(self):
        body = []
        bare = False
        while True:
            line = self.readline()
            if line == b".\r\n":
                return b"".join(body), bare
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                bare = True
            if line.startswith(b"."):
                line = line[1:]
            body.append(line)

    def store(self, addr, body):
        d = os.path.join(self.server.maildir, addr.replace("/", "_") or "_")
        os.makedirs(d, exist_ok=True)
        n = len(os.listdir(d)) + 1
        with open(os.path.join(d, "%d.eml" % n), "wb") as f:
            f.write(body)


class LMTPServer:
    def __init__(self, maildir, unix=None, port=None, script=(), idle=30.0):
        self.maildir = maildir
        self.unix = unix
        self.script = script if isinstance(script, Script) else Script(script)
        self.idle = idle
        os.makedirs(maildir, exist_ok=True)
        if unix is not None:
            if os.path.exists(unix):
                os.unlink(unix)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix)
            self.port = 0
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", port or 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(16)

    def serve(self):
        try:
            while True:
                ready, _, _ = select.select([self.sock], [], [], self.idle)
                if not ready:
                    return
                conn, _ = self.sock.accept()
                try:
                    Conn(self, conn).serve()
                except (Closed, OSError):
                    pass
                finally:
                    conn.close()
        finally:
            self.close()

    def close(self):
        self.sock.close()
        if self.unix is not None and os.path.exists(self.unix):
            os.unlink(self.unix)


def main(argv=None):
    ap = argparse.ArgumentParser(description="a scriptable LMTP server for tests")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="PATH")
    where.add_argument("--port", type=int, metavar="N")
    ap.add_argument("--maildir", required=True, metavar="DIR")
    ap.add_argument("--script", action="append", default=[], metavar="SPEC")
    ap.add_argument("--idle", type=float, default=30.0, metavar="SECONDS")
    args = ap.parse_args(argv)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    server = LMTPServer(args.maildir, unix=args.unix, port=args.port, script=args.script,
                        idle=args.idle)
    print("ready %d" % server.port, flush=True)
    try:
        server.serve()
    except SystemExit:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
