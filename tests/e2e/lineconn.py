"""
lineconn.py - what the scripted test servers (smtpserver.py, lmtpserver.py) share: a
connection that sends CRLF reply lines and reads lines, logging both into the server's
transcript.  Standard library only; the servers run as scripts, so this sits beside them.
"""

import socket


class Closed(Exception):
    pass


class LineConn:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.buf = b""
        self.sock.settimeout(server.idle)

    def log(self, line):
        raise NotImplementedError

    def send(self, reply):
        """A reply; a literal backslash-n in it separates the lines of a multi-line reply."""
        lines = reply.split("\\n")
        data = b"".join(l.encode("utf-8", "surrogateescape") + b"\r\n" for l in lines)
        for l in lines:
            self.log(b"S: " + l.encode("utf-8", "surrogateescape"))
        self.sock.sendall(data)

    def readline(self):
        """One line with its line end as received, or Closed."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > 100000:
                raise Closed()
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, OSError):
                raise Closed()
            if not chunk:
                raise Closed()
            self.buf += chunk
