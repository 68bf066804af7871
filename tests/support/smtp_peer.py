"""Fixtures for remote MTAs on 127.0.0.1: scripted aiosmtpd servers and raw-socket peers.

``smtp_peer(**options)`` starts an aiosmtpd server on an ephemeral port acting as a
remote MTA. Its ``replies`` (a PeerReplies) script what it answers to the greeting,
EHLO, MAIL, each RCPT and the end of DATA; a test may change them between attempts.
It records every accepted message (``messages``), the exact bytes each session received
(``wire``, decrypted after STARTTLS) and those it received before TLS (``cleartext``), the number of sessions and the maximum of concurrent ones, and can be
stopped and started again on the same port::

    def test_delivery(smtp_peer):
        peer = smtp_peer(hostname="mx1.remote.test")
        peer.replies.rcpt["bad@remote.test"] = "550 5.1.1 no such user"

``raw_smtp_peer(script)`` runs ``script(connection)`` in a thread for each client of
a plain socket server, for dialogues aiosmtpd will not produce (a reply injected after
STARTTLS, a connection dropped after the final dot).

``tls_certificates`` is a trustme CA with a server certificate for the peers' names.
"""
import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest
from aiosmtpd.smtp import SMTP

from mailhub.delivery.types import RemoteHost

LOOPBACK = "127.0.0.1"
WAIT_SECONDS = 10
# Replies that make the peer close the connection instead of answering.
DROP = "DROP"
DSN_MAIL_PARAMETERS = ("RET=", "ENVID=")
DSN_RCPT_PARAMETERS = ("NOTIFY=", "ORCPT=")
CERTIFICATE_NAMES = ["localhost", "127.0.0.1", "::1", "peer.test", "*.remote.test", "remote.test", "relay.test", "*.relay.test"]


@dataclass
class PeerReplies:
    """What a peer answers; None means aiosmtpd's normal reply.

    ``rcpt`` maps a lower-case address to its reply. ``data`` is the reply to the final
    dot; DROP closes the connection without a reply. ``mail``, ``rcpt`` values and
    ``data`` may also be callables that return a reply or None.
    """

    greeting: str = None
    ehlo: str = None
    mail: object = None
    rcpt: dict = field(default_factory=dict)
    data: object = None


@dataclass
class ReceivedMessage:
    """One message a peer accepted: envelope, DSN parameters and the un-stuffed content."""

    envelope_sender: str
    recipients: list
    content: bytes
    mail_options: list
    rcpt_options: list
    dsn_mail_parameters: list
    dsn_rcpt_parameters: list
    tls: bool
    session_number: int


def split_dsn_parameters(arg, keywords):
    """Return ``arg`` without the DSN parameters (which aiosmtpd rejects), and those parameters."""
    address_end = arg.rfind(">")
    if address_end < 0:
        return arg, []
    head, tail = arg[:address_end + 1], arg[address_end + 1:]
    kept, dsn = [], []
    for token in tail.split():
        (dsn if token.upper().startswith(keywords) else kept).append(token)
    return " ".join([head, *kept]), dsn


def resolve_reply(reply, argument):
    return reply(argument) if callable(reply) else reply


class PeerHandler:
    """aiosmtpd handler hooks that apply the peer's scripted replies and record messages."""

    def __init__(self, peer):
        self.peer = peer

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.peer.replies.ehlo:
            return [self.peer.replies.ehlo]

        lines = [line for line in responses[:-1] if self.peer.keeps_extension(line)]
        lines.extend(f"250-{keyword}" for keyword in self.peer.extra_extensions())
        return lines + [responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = resolve_reply(self.peer.replies.mail, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        server.dsn_rcpt_parameters = []
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = resolve_reply(self.peer.replies.rcpt.get(address.lower()), address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        server.dsn_rcpt_parameters.append(server.pending_dsn_rcpt)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        message = ReceivedMessage(
            envelope_sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            content=envelope.original_content,
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            dsn_mail_parameters=list(server.dsn_mail_parameters),
            dsn_rcpt_parameters=list(server.dsn_rcpt_parameters),
            tls=server.tls_started,
            session_number=server.session_number,
        )
        reply = resolve_reply(self.peer.replies.data, message)
        if reply == DROP:
            self.peer.record(message, accepted=True)
            server.transport.abort()
            return "451 4.4.2 connection dropped by the test peer"
        self.peer.record(message, accepted=not reply or reply.startswith("2"))
        return reply or f"250 2.0.0 OK queued as {self.peer.name}-{len(self.peer.messages)}"


class PeerSMTP(SMTP):
    """aiosmtpd's SMTP protocol that counts sessions, records raw bytes and scripts the greeting."""

    def __init__(self, peer, **kwargs):
        # aiosmtpd sizes the connection's StreamReader from this attribute in __init__.
        if peer.line_length_limit:
            self.line_length_limit = peer.line_length_limit
        super().__init__(PeerHandler(peer), **kwargs)
        self.peer = peer
        self.session_number = 0
        self.wire = bytearray()
        self.cleartext = bytearray()
        self.greeted = False
        self.counted = False
        self.tls_started = False
        self.dsn_mail_parameters = []
        self.dsn_rcpt_parameters = []
        self.pending_dsn_rcpt = []

    def connection_made(self, transport):
        if self.counted:
            self.tls_started = True
        else:
            self.counted = True
            self.session_number = self.peer.open_session(self.wire, self.cleartext)
        super().connection_made(transport)

    def connection_lost(self, error):
        if self.counted:
            self.peer.close_session()
            self.counted = False
        super().connection_lost(error)

    def data_received(self, data):
        self.wire.extend(data)
        if not self.tls_started:
            self.cleartext.extend(data)
        super().data_received(data)

    async def push(self, status):
        if not self.greeted:
            self.greeted = True
            if self.peer.replies.greeting:
                await super().push(self.peer.replies.greeting)
                if self.peer.replies.greeting.startswith("421"):
                    self.transport.close()
                return
        await super().push(status)

    async def smtp_MAIL(self, arg):
        if self.peer.dsn and arg:
            arg, self.dsn_mail_parameters = split_dsn_parameters(arg, DSN_MAIL_PARAMETERS)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        self.pending_dsn_rcpt = []
        if self.peer.dsn and arg:
            arg, self.pending_dsn_rcpt = split_dsn_parameters(arg, DSN_RCPT_PARAMETERS)
        await super().smtp_RCPT(arg)


class SMTPPeer:
    """An aiosmtpd server on 127.0.0.1 playing a remote MTA; see the module docstring."""

    def __init__(self, hostname="peer.test", tls_context=None, smtputf8=False, dsn=False,
                 eightbitmime=True, pipelining=True, size_limit=0, authenticator=None, auth_exclude=(),
                 name="peer", line_length_limit=0):
        self.hostname = hostname
        self.name = name
        self.tls_context = tls_context
        self.smtputf8 = smtputf8
        self.dsn = dsn
        self.eightbitmime = eightbitmime
        self.pipelining = pipelining
        self.size_limit = size_limit
        self.authenticator = authenticator
        self.auth_exclude = list(auth_exclude)
        # 0 keeps aiosmtpd's RFC 5321 limit of 1001 octets; Postfix-like peers accept longer lines.
        self.line_length_limit = line_length_limit
        self.replies = PeerReplies()

        self.lock = threading.Lock()
        self.messages = []
        self.rejected = []
        self.wire = []
        self.cleartext = []
        self.sessions = 0
        self.active_sessions = 0
        self.max_concurrent_sessions = 0

        self.port = 0
        self.loop = None
        self.thread = None
        self.server = None
        self.protocols = set()

    # Scripting.

    def keeps_extension(self, line):
        keyword = line[4:].split(" ")[0].upper()
        if keyword == "8BITMIME":
            return self.eightbitmime
        if keyword == "SIZE":
            return bool(self.size_limit)
        return True

    def extra_extensions(self):
        extra = []
        if self.pipelining:
            extra.append("PIPELINING")
        if self.dsn:
            extra.append("DSN")
        return extra

    # Recording.

    def open_session(self, wire, cleartext):
        with self.lock:
            self.cleartext.append(cleartext)
            self.sessions += 1
            self.active_sessions += 1
            self.max_concurrent_sessions = max(self.max_concurrent_sessions, self.active_sessions)
            self.wire.append(wire)
            return self.sessions

    def close_session(self):
        with self.lock:
            self.active_sessions -= 1

    def record(self, message, accepted):
        with self.lock:
            (self.messages if accepted else self.rejected).append(message)

    def received_recipients(self):
        with self.lock:
            return [recipient for message in self.messages for recipient in message.recipients]

    # Running.

    @property
    def address(self):
        return LOOPBACK

    def route_entry(self, domain):
        """Return the MAILHUB_ROUTES entry that sends ``domain`` to this peer."""
        return f"{domain}={LOOPBACK}:{self.port}"

    def environ(self):
        """Return the environment that makes another process's MX delivery connect here."""
        return {"MAILHUB_MX_PORT": str(self.port)}

    def host(self, name=None):
        """Return the RemoteHost that reaches this peer, named ``name`` (default: its hostname)."""
        return RemoteHost(name or self.hostname, LOOPBACK, self.port)

    def build_protocol(self):
        protocol = PeerSMTP(
            self,
            hostname=self.hostname,
            ident="mailhub test peer",
            tls_context=self.tls_context,
            require_starttls=False,
            enable_SMTPUTF8=self.smtputf8,
            data_size_limit=self.size_limit or None,
            authenticator=self.authenticator,
            auth_exclude_mechanism=self.auth_exclude,
            auth_require_tls=self.authenticator is not None and self.tls_context is not None,
        )
        self.protocols.add(protocol)
        return protocol

    def start(self):
        """Start listening (again on the same port, once it has had one)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self.thread.start()

        async def create_server():
            return await self.loop.create_server(self.build_protocol, host=LOOPBACK, port=self.port, reuse_address=True)

        self.server = asyncio.run_coroutine_threadsafe(create_server(), self.loop).result(WAIT_SECONDS)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self):
        """Stop listening and close every open session, like a host that went down."""
        if self.server is None:
            return

        async def close_server():
            self.server.close()
            for protocol in list(self.protocols):
                if protocol.transport is not None:
                    protocol.transport.abort()
            self.protocols.clear()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close_server(), self.loop).result(WAIT_SECONDS)
        self.server = None

    def shutdown(self):
        self.stop()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT_SECONDS)
            self.loop.close()
            self.loop = None


@pytest.fixture
def smtp_peer():
    """Factory of started SMTPPeers; every peer is shut down after the test."""
    peers = []

    def start_peer(**options):
        peer = SMTPPeer(**options).start()
        peers.append(peer)
        return peer

    yield start_peer
    for peer in peers:
        peer.shutdown()


@dataclass
class TLSCertificates:
    """A trustme CA and a server certificate for the test peers' names and 127.0.0.1."""

    ca: object
    ca_file: str
    server_certificate: object

    def server_context(self):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_certificate.configure_cert(context)
        return context


@pytest.fixture(scope="session")
def tls_certificates(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TLSCertificates(ca, str(ca_file), ca.issue_cert(*CERTIFICATE_NAMES))


class RawConnection:
    """One client connection of a RawPeer, with line reads and a recorded byte log."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.received = bytearray()
        self.sock.settimeout(WAIT_SECONDS)

    def send(self, data):
        self.sock.sendall(data.encode("ascii") if isinstance(data, str) else data)

    def receive(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("client closed the connection")
        self.received.extend(chunk)
        self.buffer += chunk

    def read_line(self):
        """Return the next line without CRLF; raise ConnectionError when the client has gone."""
        while b"\r\n" not in self.buffer:
            self.receive()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_data(self):
        """Return the DATA content up to and including the final CRLF "." CRLF, still dot-stuffed."""
        while b"\r\n.\r\n" not in b"\r\n" + self.buffer:
            self.receive()
        content, _, self.buffer = (b"\r\n" + self.buffer).partition(b"\r\n.\r\n")
        return content[2:] + b"\r\n.\r\n"

    def start_tls(self, context):
        self.buffer = b""
        self.sock = context.wrap_socket(self.sock, server_side=True)

    def close(self):
        self.sock.close()


class RawPeer:
    """A TCP server on 127.0.0.1 that runs ``script(RawConnection)`` in a thread per client."""

    def __init__(self, script):
        self.script = script
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.errors = []
        self.threads = []
        self.accepting = threading.Thread(target=self.accept_clients, daemon=True)
        self.accepting.start()

    def host(self, name="peer.test"):
        return RemoteHost(name, LOOPBACK, self.port)

    def accept_clients(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            connection = RawConnection(sock)
            self.connections.append(connection)
            thread = threading.Thread(target=self.run_script, args=(connection,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def run_script(self, connection):
        try:
            self.script(connection)
        except (OSError, ConnectionError, ssl.SSLError) as error:
            self.errors.append(error)
        finally:
            connection.close()

    def stop(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for thread in self.threads:
            thread.join(WAIT_SECONDS)


@pytest.fixture
def raw_smtp_peer():
    """Factory of RawPeers; each is stopped after the test."""
    peers = []

    def start_peer(script):
        peer = RawPeer(script)
        peers.append(peer)
        return peer

    yield start_peer
    for peer in peers:
        peer.stop()
