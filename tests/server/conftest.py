"""Local mail directory and helpers shared by the listener tests."""
import socket
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from mailhub.models import Alias, Domain, Mailbox, Message

PASSWORD = "correct horse battery staple"


@dataclass
class Directory:
    domain: Domain
    alice: object
    bob: object
    admin: object
    alice_mailbox: Mailbox
    bob_mailbox: Mailbox
    alias: Alias


@pytest.fixture
def directory(transactional_db, settings):
    """local.test with mailboxes alice@ and bob@, alias sales@ -> alice, and a send-as-any user."""
    settings.MAILHUB_AUTH_FAILURE_DELAY = 0.05
    settings.MAILHUB_AUTH_FAILURE_MAX_DELAY = 0.2
    users = get_user_model()
    alice = users.objects.create_user("alice", password=PASSWORD)
    bob = users.objects.create_user("bob", password=PASSWORD)
    admin = users.objects.create_user("postmaster", password=PASSWORD)
    admin.user_permissions.add(Permission.objects.get(codename="send_as_any"))
    domain = Domain.objects.create(name="local.test")
    alice_mailbox = Mailbox.objects.create(domain=domain, local_part="alice", user=alice)
    bob_mailbox = Mailbox.objects.create(domain=domain, local_part="bob", user=bob)
    alias = Alias.objects.create(domain=domain, local_part="sales", destinations="alice@local.test")
    return Directory(domain, alice, bob, admin, alice_mailbox, bob_mailbox, alias)


def stored_messages():
    return list(Message.objects.prefetch_related("recipients").order_by("id"))


def message_text(sender, recipient, subject="Test", body="Hello.\r\n"):
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@client.test>\r\n\r\n{body}"
    ).encode()


class RawClient:
    """A line-level SMTP client for the cases that smtplib cannot send (smuggling, bad syntax)."""

    def __init__(self, host, port, timeout=30, tls_context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="mailhub.test")
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_reply(self):
        """Return (code, [lines]) of one reply; (None, []) when the server closed the connection."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None, lines
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, line):
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line)
        return self.read_reply()

    def start_tls(self, context):
        self.sock = context.wrap_socket(self.sock, server_hostname="mailhub.test")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw_client(mail_listeners):
    clients = []

    def connect(name="mx", tls_context=None):
        port = {"mx": mail_listeners.mx_port, "submission": mail_listeners.submission_port,
                "submissions": mail_listeners.submissions_port}[name]
        client = RawClient(mail_listeners.host, port, tls_context=tls_context)
        clients.append(client)
        code, _lines = client.read_reply()
        assert code == 220
        return client

    yield connect
    for client in clients:
        client.close()


def proxy_v1_header(client_address, server_port):
    return f"PROXY TCP4 {client_address} 127.0.0.1 40000 {server_port}\r\n".encode()

