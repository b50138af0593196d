#!/usr/bin/env python3
"""smtpserver.py - a small, scriptable SMTP server (RFC 5321) for tern's tests.

Stdlib only.  Usable as a module (SMTPServer(...).serve()) or as a script:

    python3 smtpserver.py --port N --maildir DIR [--script SPEC]... [--idle SECONDS]

It listens on 127.0.0.1:N (N = 0 picks a free port; --host ::1 for IPv6),
prints "ready PORT" on stdout once it accepts connections, and serves one
connection at a time.  Each message accepted is stored once per accepted
recipient, exactly as received after dot-unstuffing (CRLF kept), in
DIR/<recipient>/<n>.eml; every command line received and every reply sent
is appended to DIR/transcript.txt ("C: ..." / "S: ..."), "# pipelined"
after a command when more input had already arrived before its reply, and
"# connect" / "# closed" around each connection.

It is strict where tern must be: a command or data line ending in a bare LF,
or with a bare CR inside, is refused (500 5.5.2 for a command; 554 5.6.0 for
the message at its end), so a client that sends anything but CRLF fails.

SPEC, repeatable (REPLY: "\\n" separates the lines of a multi-line reply,
sent as given, e.g. "550-5.1.1 a\\n550 5.1.1 b"):
    greeting=REPLY        the greeting, instead of "220 smtpserver.test ESMTP"
    ehlo=REPLY            the whole reply to EHLO (e.g. "502 5.5.1 no", to
                          make the client fall back to HELO)
    helo=REPLY            the reply to HELO
    ext=KEYWORD           advertise KEYWORD too ("SIZE 1000" replaces SIZE)
    no-ext=KEYWORD        do not advertise KEYWORD; the defaults are
                          PIPELINING, SIZE 10240000, 8BITMIME, SMTPUTF8, DSN,
                          ENHANCEDSTATUSCODES (a client that pipelines when
                          PIPELINING is not offered gets 503 5.5.0 to all)
    mail=REPLY            the reply to MAIL FROM
    rcpt:ADDR=REPLY       the reply to RCPT TO:<ADDR>
    data=REPLY            the reply to DATA (instead of 354)
    dot=REPLY             the reply after the final dot (for the message)
    rset=REPLY            the reply to RSET
    starttls=REPLY        the reply to STARTTLS (advertise it with ext=STARTTLS); after a
                          220 the server sends "this is not TLS" in plaintext and closes,
                          so the client's handshake fails (no STARTTLS: 502 5.5.1)
    drop=STAGE            close the connection instead of answering STAGE
    stall=STAGE           never answer STAGE (keep the connection, read on)
    malformed=STAGE       answer STAGE with a malformed reply ("25O 2.0.0 Ok")
    max-messages=K        after K messages accepted on one connection, answer the
                          next MAIL with "421 4.7.0 Too many messages on one
                          connection" and close (as Exim's smtp_accept_max_per_connection)
    close-after=K         close the connection, without a word, right after the
                          reply to the K-th message accepted on it (the client
                          finds out when it next writes or reads)
    hold=SECONDS          wait this long before the greeting (connections overlap)
STAGE is one of greeting, ehlo, helo, mail, rcpt, data, dot, quit.

--concurrent serves every connection in a thread of its own (else one at a
time) and keeps DIR/concurrency.txt up to date: the most connections that
were open at once (a connection stops counting when its QUIT is answered,
or when it closes).

Bounded: it exits after --idle seconds (default 30) without a connection or a
command, and on SIGTERM.
"""

import argparse
import os
import select
import signal
import socket
import sys
import threading
import time

from lineconn import Closed, LineConn

STAGES = ("greeting", "ehlo", "helo", "mail", "rcpt", "data", "dot", "quit")
DEFAULT_EXTS = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN",
                "ENHANCEDSTATUSCODES"]


class Script:
    def __init__(self, specs=()):
        self.replies = {}
        self.rcpt = {}
        self.exts = list(DEFAULT_EXTS)
        self.actions = {}   # stage -> "drop" / "stall" / "malformed"
        self.max_messages = None
        self.close_after = None
        self.hold = 0.0
        for spec in specs:
            self.add(spec)

    def add(self, spec):
        key, sep, value = spec.partition("=")
        if not sep:
            raise ValueError("bad script entry: %r" % spec)
        if key in ("greeting", "ehlo", "helo", "mail", "data", "dot", "rset", "starttls"):
            self.replies[key] = value
        elif key.startswith("rcpt:"):
            self.rcpt[key[len("rcpt:"):].lower()] = value
        elif key == "ext":
            word = value.split(" ", 1)[0].upper()
            self.exts = [e for e in self.exts if e.split(" ", 1)[0].upper() != word]
            self.exts.append(value)
        elif key == "no-ext":
            self.exts = [e for e in self.exts if e.split(" ", 1)[0].upper() != value.upper()]
        elif key == "max-messages":
            self.max_messages = int(value)
        elif key == "close-after":
            self.close_after = int(value)
        elif key == "hold":
            self.hold = float(value)
        elif key in ("drop", "stall", "malformed") and value in STAGES:
            self.actions[value] = key
        else:
            raise ValueError("bad script entry: %r" % spec)


class Conn(LineConn):
    def __init__(self, server, sock):
        super().__init__(server, sock)
        self.left = False  # no longer counted as open (concurrency.txt)

    def log(self, line):
        with self.server.lock:
            with open(os.path.join(self.server.maildir, "transcript.txt"), "ab") as f:
                f.write(line + b"\n")

    def answer(self, stage, reply):
        """Send reply for stage, unless the script says to drop, stall or garble it."""
        action = self.server.script.actions.get(stage)
        if action == "drop":
            self.log(b"# drop at " + stage.encode())
            raise Closed()
        if action == "stall":
            self.log(b"# stall at " + stage.encode())
            deadline = time.time() + self.server.idle
            while time.time() < deadline:
                try:
                    if not self.sock.recv(65536):
                        break
                except (socket.timeout, OSError):
                    break
            raise Closed()
        if action == "malformed":
            reply = "25O 2.0.0 Ok"
        self.send(reply)

    def serve(self):
        sc = self.server.script
        self.log(b"# connect")
        try:
            self.session(sc)
        finally:
            self.log(b"# closed")

    def session(self, sc):
        if sc.hold:
            time.sleep(sc.hold)
        self.answer("greeting", sc.replies.get("greeting", "220 smtpserver.test ESMTP"))
        sender = None
        rcpts = []
        accepted = 0
        broken = False
        pipelining = any(e.upper() == "PIPELINING" for e in sc.exts)
        while True:
            line = self.readline()
            self.log(b"C: " + line.rstrip(b"\r\n"))
            if self.buf:
                self.log(b"# pipelined")
                if not pipelining and not broken:
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
            if verb == "EHLO":
                if "ehlo" in sc.replies:
                    self.answer("ehlo", sc.replies["ehlo"])
                    continue
                exts = ["smtpserver.test"] + sc.exts
                self.answer("ehlo", "\\n".join(
                    "250%s%s" % ("-" if i < len(exts) - 1 else " ", e)
                    for i, e in enumerate(exts)))
            elif verb == "HELO":
                pipelining = False
                self.answer("helo", sc.replies.get("helo", "250 smtpserver.test"))
            elif verb == "MAIL" and cmd.upper().startswith("MAIL FROM:<") and ">" in cmd:
                if sc.max_messages is not None and accepted >= sc.max_messages:
                    self.send("421 4.7.0 Too many messages on one connection")
                    return
                reply = sc.replies.get("mail", "250 2.1.0 Ok")
                if reply.startswith("2"):
                    sender = cmd[len("MAIL FROM:<"):cmd.index(">")]
                    rcpts = []
                self.answer("mail", reply)
            elif verb == "RCPT" and cmd.upper().startswith("RCPT TO:<") and ">" in cmd:
                addr = cmd[len("RCPT TO:<"):cmd.index(">")]
                if sender is None:
                    self.answer("rcpt", "503 5.5.1 MAIL first")
                    continue
                reply = sc.rcpt.get(addr.lower(), "250 2.1.5 Ok")
                if reply.startswith("2"):
                    rcpts.append(addr)
                self.answer("rcpt", reply)
            elif verb == "DATA":
                if not rcpts:
                    self.answer("data", "554 5.5.1 No valid recipients")
                    continue
                reply = sc.replies.get("data", "354 End data with <CR><LF>.<CR><LF>")
                self.answer("data", reply)
                if not reply.startswith("354"):
                    continue
                body, bare = self.read_data()
                if bare:
                    self.answer("dot", "554 5.6.0 Bare CR or LF in the message")
                else:
                    reply = sc.replies.get("dot", "250 2.0.0 Ok: queued")
                    if reply.startswith("2") and sc.actions.get("dot") is None:
                        for addr in rcpts:
                            self.store(addr, body)
                        accepted += 1
                    self.answer("dot", reply)
                    if sc.close_after is not None and accepted >= sc.close_after:
                        self.log(b"# close after %d" % accepted)
                        return
                sender = None
                rcpts = []
            elif verb == "RSET":
                sender = None
                rcpts = []
                self.send(sc.replies.get("rset", "250 2.0.0 Ok"))
            elif verb == "STARTTLS" and "starttls" in sc.replies:
                reply = sc.replies["starttls"]
                self.send(reply)
                if reply.startswith("220"):
                    self.log(b"# broken TLS: plaintext instead of a handshake, then close")
                    self.sock.sendall(b"this is not TLS\r\n")
                    raise Closed()
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                # the session is over for the count before the client can hear it is
                self.server.leave(self)
                self.answer("quit", "221 2.0.0 Bye")
                return
            else:
                self.send("500 5.5.2 Command not recognized")

    def read_data(self):
        body = []
        bare = False
        while True:
            line = self.readline()
            if line == b".\r\n":
                self.log(b"C: .")
                return b"".join(body), bare
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                bare = True
            if line.startswith(b"."):
                line = line[1:]
            body.append(line)

    def store(self, addr, body):
        d = os.path.join(self.server.maildir, addr.replace("/", "_") or "_")
        with self.server.lock:
            os.makedirs(d, exist_ok=True)
            n = len(os.listdir(d)) + 1
            with open(os.path.join(d, "%d.eml" % n), "wb") as f:
                f.write(body)


class SMTPServer:
    def __init__(self, maildir, port=0, host="127.0.0.1", script=(), idle=30.0,
                 concurrent=False):
        self.maildir = maildir
        self.concurrent = concurrent
        self.lock = threading.Lock()
        self.open = 0
        self.max_open = 0
        self.script = script if isinstance(script, Script) else Script(script)
        self.idle = idle
        os.makedirs(maildir, exist_ok=True)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port or 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)

    def serve(self):
        try:
            while True:
                ready, _, _ = select.select([self.sock], [], [], self.idle)
                if not ready:
                    return
                conn, _ = self.sock.accept()
                if self.concurrent:
                    threading.Thread(target=self.one, args=(conn,), daemon=True).start()
                else:
                    self.one(conn)
        finally:
            self.sock.close()

    def count(self, delta):
        with self.lock:
            self.open += delta
            self.max_open = max(self.max_open, self.open)
            with open(os.path.join(self.maildir, "concurrency.txt"), "w") as f:
                f.write("%d\n" % self.max_open)

    def leave(self, c):
        if not c.left:
            c.left = True
            self.count(-1)

    def one(self, conn):
        self.count(1)
        c = Conn(self, conn)
        try:
            c.serve()
        except (Closed, OSError):
            pass
        finally:
            conn.close()
            self.leave(c)


def main(argv=None):
    ap = argparse.ArgumentParser(description="a scriptable SMTP server for tests")
    ap.add_argument("--port", type=int, default=0, metavar="N")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--maildir", required=True, metavar="DIR")
    ap.add_argument("--script", action="append", default=[], metavar="SPEC")
    ap.add_argument("--idle", type=float, default=30.0, metavar="SECONDS")
    ap.add_argument("--concurrent", action="store_true")
    args = ap.parse_args(argv)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    server = SMTPServer(args.maildir, port=args.port, host=args.host, script=args.script,
                        idle=args.idle, concurrent=args.concurrent)
    print("ready %d" % server.port, flush=True)
    try:
        server.serve()
    except SystemExit:
        server.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
