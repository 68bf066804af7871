"""Every listener limit, hit on purpose: each gets its reply code and stores nothing."""
import base64
import logging
import os
import smtplib
import socket
import time

import pytest

from mailhub.models import Message

from ..support.waiting import wait_for
from .conftest import PASSWORD, RawClient, message_text

pytestmark = pytest.mark.django_db(transaction=True)


def start_transaction(client, recipient="<bob@local.test>"):
    client.command("EHLO client.test")
    assert client.command("MAIL FROM:<x@remote.test>")[0] == 250
    assert client.command(f"RCPT TO:{recipient}")[0] == 250


def test_too_many_recipients(mail_listeners, directory, raw_client, settings, caplog):
    settings.MAILHUB_MAX_RECIPIENTS = 3
    caplog.set_level(logging.INFO, logger="mailhub.server")
    client = raw_client("mx")
    start_transaction(client)
    codes = [client.command(f"RCPT TO:<{name}@local.test>") for name in ("bob", "sales", "alice")]
    logged = [record.getMessage() for record in caplog.records if "rejected RCPT" in record.getMessage()]

    assert [code for code, _ in codes] == [250, 250, 452]
    assert codes[2][1][0].startswith("452 4.5.3")
    assert len(logged) == 1
    assert "to=<alice@local.test>" in logged[0]
    assert "reply=452 4.5.3" in logged[0]


def test_1001_recipients_bounded(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_MAX_ERRORS_PER_SESSION = 10
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test>")
    client.send(b"".join(b"RCPT TO:<bob@local.test>\r\n" for _ in range(1001)))
    replies = []
    while True:
        code, lines = client.read_reply()
        if code is None:
            break
        replies.append(lines[0][:9])

    assert replies.count("250 2.1.5") == 100
    assert replies[100] == "452 4.5.3"
    assert replies[-1] == "421 4.7.0"
    assert len(replies) < 1001
    assert Message.objects.count() == 0


def test_size_parameter_over_limit(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, lines = client.command("MAIL FROM:<x@remote.test> SIZE=999999999")

    assert code == 552
    assert lines[0].startswith("552 5.3.4")


def test_streamed_size_over_limit_drained(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_MAX_MESSAGE_SIZE = 10_000
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    client.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 300)
    code, lines = client.command(b".\r\n")
    after = client.command("NOOP")

    assert code == 552
    assert lines[0].startswith("552 5.3.4")
    assert after[0] == 250
    assert Message.objects.count() == 0


def test_command_line_513_bytes(mail_listeners, raw_client):
    client = raw_client("mx")
    line = "NOOP " + "a" * 506
    code, lines = client.command(line)
    ok = client.command("NOOP " + "a" * 505)

    assert len(line) + 2 == 513
    assert code == 500
    assert lines[0].startswith("500 5.5.2")
    assert ok[0] == 250


def test_ten_megabytes_without_line_end_in_data(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    chunk = b"z" * 65536
    for _ in range(160):
        client.send(chunk)
    code, lines = client.command(b"\r\n.\r\n")

    assert code == 554
    assert lines[0].startswith("554 5.6.0")
    assert Message.objects.count() == 0


def test_ten_megabytes_without_line_end_as_command(mail_listeners, raw_client):
    client = raw_client("mx")
    try:
        for _ in range(160):
            client.send(b"z" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    code, lines = client.read_reply()

    assert code == 500
    assert lines[0].startswith("500 5.5.2")
    assert client.read_reply()[0] in (None, 500)


def test_long_lines_within_bound_are_kept(mail_listeners, directory, raw_client):
    body = b"Subject: long\r\n\r\n" + b"w" * 5000 + b"\r\n"
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    code, _ = client.command(body + b".\r\n")

    assert code == 250
    assert Message.objects.get().raw_bytes.endswith(body)


def test_http_request_closes(mail_listeners, raw_client):
    client = raw_client("mx")
    code, lines = client.command(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    closed = client.read_reply()

    assert code == 221
    assert closed[0] is None


def test_errors_per_session(mail_listeners, raw_client, settings):
    settings.MAILHUB_MAX_ERRORS_PER_SESSION = 3
    client = raw_client("mx")
    codes = [client.command("BOGUS")[0] for _ in range(4)]
    final = client.read_reply()

    assert codes == [500, 500, 500, 500]
    assert final[0] == 421
    assert final[1][0].startswith("421 4.7.0")


def test_connections_per_client(mail_listeners, settings):
    settings.MAILHUB_MAX_CONNECTIONS_PER_CLIENT = 2
    clients = []
    greetings = []
    for _ in range(3):
        clients.append(RawClient(mail_listeners.host, mail_listeners.mx_port))
        greetings.append(clients[-1].read_reply())
    clients[0].command("QUIT")
    clients[0].close()
    time.sleep(0.2)
    later = RawClient(mail_listeners.host, mail_listeners.mx_port)
    greeting_after_close = later.read_reply()
    for client in clients[1:] + [later]:
        client.close()

    assert [code for code, _ in greetings] == [220, 220, 421]
    assert greetings[2][1][0].startswith("421 4.7.0")
    assert greeting_after_close[0] == 220


def test_connections_in_total(mail_listeners, settings):
    settings.MAILHUB_MAX_CONNECTIONS = 2
    clients = []
    codes = []
    for port in (mail_listeners.mx_port, mail_listeners.submission_port, mail_listeners.mx_port):
        clients.append(RawClient(mail_listeners.host, port))
        codes.append(clients[-1].read_reply()[0])
    for client in clients:
        client.close()

    assert codes == [220, 220, 421]


def test_command_timeout(mail_listeners, raw_client, settings):
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, lines = client.read_reply()

    assert code == 421
    assert lines[0].startswith("421 4.4.2")


def test_trickling_client_is_cut_off(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    settings.MAILHUB_SERVER_DATA_TIMEOUT = 1
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    closed = False
    for _ in range(40):
        try:
            client.send(b"x")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
    code, lines = client.read_reply()

    assert closed or code == 421
    assert code in (421, None)
    assert Message.objects.count() == 0


def test_trickled_command_is_cut_off(mail_listeners, raw_client, settings):
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    client = raw_client("mx")
    for byte in b"EHLO client.test":
        try:
            client.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
    code, lines = client.read_reply()

    assert code == 421
    assert lines[0].startswith("421 4.4.2")


def test_data_timeout_per_block(mail_listeners, directory, raw_client, settings):
    """Blocks 0.5 s apart keep a 1 s data timeout alive for well over 1 s in total.

    Each block carries 1000 bytes, above the default minimum data rate of 500 bytes/s."""
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    settings.MAILHUB_SERVER_DATA_TIMEOUT = 1
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    client.send(b"Subject: slow\r\n\r\n")
    for _ in range(6):
        client.send(b"l" * 998 + b"\r\n")
        time.sleep(0.5)
    code, _ = client.command(b".\r\n")

    assert code == 250
    assert Message.objects.count() == 1


def auth_attempt(client, login, password):
    token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    return client.command(f"AUTH PLAIN {token}")


def test_failed_auth_throttled_then_421(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_AUTH_MAX_FAILURES = 3
    client = raw_client("submissions", tls_context=mail_listeners.client_context())
    client.command("EHLO client.test")
    replies = [auth_attempt(client, "alice", f"guess{i}") for i in range(3)]

    assert [code for code, _ in replies] == [535, 535, 421]
    assert replies[0][1][0].startswith("535 5.7.8")
    assert replies[2][1][0].startswith("421 4.7.0")

    again = raw_client("submissions", tls_context=mail_listeners.client_context())
    again.command("EHLO client.test")
    blocked = auth_attempt(again, "alice", PASSWORD)
    assert blocked[0] == 421


def test_disconnect_before_final_dot_stores_nothing(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    client.send(message_text("x@remote.test", "bob@local.test") + b"\r\n")
    client.sock.shutdown(socket.SHUT_WR)
    assert client.read_reply()[0] in (None, 421)
    time.sleep(0.3)

    assert Message.objects.count() == 0


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_connections_closed_at_once_release_their_sockets(mail_listeners, settings):
    # uvloop may report the client's EOF before the session's command loop has started.
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 300
    before = open_descriptors()
    for _ in range(50):
        socket.create_connection((mail_listeners.host, mail_listeners.mx_port), timeout=10).close()

    wait_for(lambda: open_descriptors() <= before, timeout=20, describe="the server to close its side of 50 connections")

    assert mail_listeners.thread.connection_limiter.total == 0


def test_message_after_stop_gets_421(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    start_transaction(client)
    client.command("DATA")
    mail_listeners.thread.committer.stop_accepting()
    reply = client.command(message_text("x@remote.test", "bob@local.test") + b".\r\n")

    assert reply[0] == 421
    assert "4.3.2" in reply[1][0]
    assert client.read_reply() == (None, [])
    assert Message.objects.count() == 0


def test_implicit_tls_connection_limit_reply(mail_listeners, settings):
    settings.MAILHUB_MAX_CONNECTIONS_PER_CLIENT = 1
    with mail_listeners.smtp("submissions") as first:
        first.ehlo()
        with pytest.raises(smtplib.SMTPConnectError) as rejected:
            mail_listeners.smtp("submissions")

    assert rejected.value.smtp_code == 421
    assert b"4.7.0" in rejected.value.smtp_error
