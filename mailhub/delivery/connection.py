"""One TCP connection to an SMTP server: send command lines, read replies, start TLS.

It knows the wire format (RFC 5321 section 4.2) and nothing about the SMTP dialogue,
which lives in client.py.
"""
import re
import socket

from ..exceptions import MailhubError
from .types import Reply

# RFC 5321 section 4.5.3.1.5 limits a reply line to 512 octets; real servers send longer
# EHLO lines, so this only stops a server that never ends a line.
MAX_LINE_LENGTH = 8192
MAX_REPLY_LINES = 200
RECEIVE_SIZE = 65536
# Each data block gets DATA_BLOCK_TIMEOUT to leave, as RFC 5321 section 4.5.3.2.5 times
# each TCP send, not the whole message.
DATA_BLOCK_SIZE = 65536

REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)(.*)$")
ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


class ConnectionLost(MailhubError, ConnectionError):
    """The server closed the connection, or it broke, where a reply was expected."""


class ProtocolError(MailhubError, ValueError):
    """The server sent something that is not an SMTP reply."""


def format_host(host):
    """Return the host as Postfix logs it: ``name[address]:port``."""
    if host.name == host.address:
        return f"[{host.address}]:{host.port}"
    return f"{host.name}[{host.address}]:{host.port}"


def parse_reply_lines(lines, remote_host):
    """Return the Reply for the lines of one reply (bytes, line ends removed).

    The enhanced status code (RFC 2034) is taken from the first line when its class
    matches the reply code, and removed from every line's text.
    """
    code = int(lines[0][:3])
    texts = []
    enhanced_code = ""
    for line in lines:
        text = line[4:].decode("utf-8", "replace").strip()
        match = ENHANCED_CODE.match(text)
        if match and match.group(1) == str(code)[0]:
            enhanced_code = enhanced_code or ".".join(match.groups())
            text = text[match.end():]
        texts.append(text)
    return Reply(code, enhanced_code, " ".join(text for text in texts if text), remote_host)


class SMTPConnection:
    """A socket to one RemoteHost, with a receive buffer and per-call timeouts."""

    def __init__(self, host):
        self.host = host
        self.label = format_host(host)
        self.sock = None
        self.buffer = b""
        self.tls_version = ""

    def connect(self, timeout):
        self.sock = socket.create_connection((self.host.address, self.host.port), timeout=timeout)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    @property
    def is_open(self):
        return self.sock is not None

    def send(self, data, timeout):
        if self.sock is None:
            raise ConnectionLost(f"connection to {self.label} is closed")
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def send_in_blocks(self, data, timeout, trailer=b""):
        """Send ``data`` in DATA_BLOCK_SIZE pieces, each within ``timeout`` seconds.

        ``trailer`` goes out in the same write as the last piece, so pipelined commands
        that follow the data leave without a round trip of their own.
        """
        view = memoryview(data)
        starts = range(0, len(view), DATA_BLOCK_SIZE)
        for start in starts[:-1]:
            self.send(view[start:start + DATA_BLOCK_SIZE], timeout)
        last = starts[-1] if starts else 0
        self.send(bytes(view[last:]) + trailer, timeout)

    def read_line(self, timeout):
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_LENGTH:
                raise ProtocolError(f"{self.label} sent a reply line longer than {MAX_LINE_LENGTH} bytes")
            self.sock.settimeout(timeout)
            chunk = self.sock.recv(RECEIVE_SIZE)
            if not chunk:
                raise ConnectionLost(f"{self.label} closed the connection")
            self.buffer += chunk

        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def read_reply(self, timeout):
        """Read one (possibly multi-line) reply; raise ConnectionLost, TimeoutError or ProtocolError."""
        return parse_reply_lines(self.read_reply_lines(timeout), self.label)

    def read_reply_lines(self, timeout):
        """Read the lines of one reply, checked for syntax, as bytes without line ends."""
        if self.sock is None:
            raise ConnectionLost(f"connection to {self.label} is closed")

        lines = []
        while len(lines) < MAX_REPLY_LINES:
            line = self.read_line(timeout)
            match = REPLY_LINE.match(line)
            if match is None or (lines and match.group(1) != lines[0][:3]):
                raise ProtocolError(f"{self.label} sent an invalid reply line {line[:100]!r}")
            lines.append(line)
            if match.group(2) != b"-":
                return lines
        raise ProtocolError(f"{self.label} sent a reply of more than {MAX_REPLY_LINES} lines")

    def command(self, line, timeout):
        """Send one command line (str or bytes, without CRLF) and return its reply."""
        if isinstance(line, str):
            line = line.encode("ascii")
        self.send(line + b"\r\n", timeout)
        return self.read_reply(timeout)

    def start_tls(self, context, server_hostname, timeout):
        """Wrap the socket in TLS after the server's 220 reply to STARTTLS.

        Whatever the server sent after that reply and before the handshake is dropped
        unread: RFC 3207 section 4.2 makes the client forget everything learned before
        TLS, and a reply injected there in clear text must never answer a later command.
        """
        self.buffer = b""
        self.sock.settimeout(timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls_version = self.sock.version() or ""
