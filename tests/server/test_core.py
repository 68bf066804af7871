"""The core path: MX accepts local mail only, submission needs AUTH, both store before 250."""
import base64
import smtplib
import socket
import ssl

import pytest
from django.db import connection

from mailhub.models import Domain, Mailbox, Message, Recipient
from mailhub.server import replies

from .conftest import PASSWORD, RawClient, message_text, proxy_v1_header, stored_messages

pytestmark = pytest.mark.django_db(transaction=True)


def test_mx_stores_mail_for_mailbox(mail_listeners, directory):
    raw = message_text("sender@remote.test", "alice@local.test")
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.mail("sender@remote.test")
        client.rcpt("alice@local.test")
        code, text = client.data(raw)

    messages = stored_messages()
    assert code == 250
    assert len(messages) == 1
    message = messages[0]
    assert text.decode() == f"2.0.0 Ok: queued as {message.queue_id}"
    assert message.source == "mx"
    assert message.envelope_sender == "sender@remote.test"
    assert message.client_address == "127.0.0.1"
    assert message.helo_name == "client.test"
    assert [r.address for r in message.recipients.all()] == ["alice@local.test"]
    assert message.raw_bytes.startswith(b"Received: from client.test ([127.0.0.1])\r\n")
    assert message.raw_bytes.endswith(b"\r\n" + raw)


def test_mx_stores_mail_for_alias(mail_listeners, directory):
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.sendmail("sender@remote.test", ["sales@local.test"], message_text("s@remote.test", "sales@local.test"))

    assert list(Recipient.objects.values_list("address", flat=True)) == ["sales@local.test"]


def test_mx_accepts_bare_postmaster(mail_listeners, directory):
    domain = Domain.objects.create(name="mailhub.test")
    Mailbox.objects.create(domain=domain, local_part="postmaster")
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.mail("sender@remote.test")
        code, _text = client.rcpt("Postmaster")
        client.data(message_text("sender@remote.test", "postmaster"))

    assert code == 250
    assert list(Recipient.objects.values_list("address", flat=True)) == ["postmaster@mailhub.test"]


def test_mx_rejects_unknown_local_user(mail_listeners, directory):
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.mail("sender@remote.test")
        code, text = client.rcpt("nobody@local.test")

    assert code == 550
    assert text.startswith(b"5.1.1")
    assert Message.objects.count() == 0


def test_mx_rejects_remote_domain(mail_listeners, directory):
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.mail("sender@remote.test")
        code, text = client.rcpt("bob@remote.test")

    assert code == 550
    assert text.startswith(b"5.7.1")
    assert Message.objects.count() == 0


def test_submission_requires_auth(mail_listeners, directory):
    with mail_listeners.smtp("submission") as client:
        client.ehlo()
        code, text = client.mail("alice@local.test")

    assert code == 530
    assert text.startswith(b"5.7.0")


def test_submission_accepts_any_recipient_after_auth(mail_listeners, directory):
    raw = message_text("alice@local.test", "bob@remote.test")
    with mail_listeners.smtp("submission") as client:
        client.starttls(context=mail_listeners.client_context())
        client.ehlo()
        client.login("alice", PASSWORD)
        client.sendmail("alice@local.test", ["bob@remote.test", "carol@elsewhere.test"], raw)

    message = Message.objects.get()
    assert message.source == "submission"
    assert message.authenticated_user == "alice"
    assert sorted(message.recipients.values_list("address", flat=True)) == ["bob@remote.test", "carol@elsewhere.test"]
    assert b"with ESMTPSA (TLSv1.3:" in message.raw_bytes
    assert message.raw_bytes.endswith(b"\r\n" + raw)


def test_submissions_implicit_tls_auth(mail_listeners, directory):
    with mail_listeners.smtp("submissions") as client:
        client.ehlo()
        assert "auth" in client.esmtp_features
        client.login("alice@local.test", PASSWORD)
        client.sendmail("alice@local.test", ["bob@remote.test"], message_text("alice@local.test", "bob@remote.test"))

    assert Message.objects.get().authenticated_user == "alice@local.test"


def test_wrong_password_rejected(mail_listeners, directory):
    with mail_listeners.smtp("submissions") as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
            client.login("alice", "wrong")

    assert raised.value.smtp_code == 535


def test_failed_commit_replies_451(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test>")
    client.command("RCPT TO:<bob@local.test>")
    client.command("DATA")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE mailhub_recipient RENAME TO mailhub_recipient_away")
    try:
        code, lines = client.command(b"Subject: lost\r\n\r\nbody\r\n.\r\n")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE mailhub_recipient_away RENAME TO mailhub_recipient")

    assert code == 451
    assert lines[0].startswith("451 4.3.0")
    assert Message.objects.count() == 0


def test_failed_commits_keep_session_open(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_MAX_ERRORS_PER_SESSION = 2
    client = raw_client("mx")
    client.command("EHLO client.test")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE mailhub_recipient RENAME TO mailhub_recipient_away")
    try:
        failed = [send_raw_message(client)[0] for _ in range(4)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE mailhub_recipient_away RENAME TO mailhub_recipient")
    code, lines = send_raw_message(client)

    assert failed == [451, 451, 451, 451]
    assert code == 250
    assert lines[0].endswith(Message.objects.get().queue_id)


def send_raw_message(client):
    """Send one message to bob@local.test in an open session; return the reply to the data."""
    client.command("MAIL FROM:<x@remote.test>")
    client.command("RCPT TO:<bob@local.test>")
    client.command("DATA")
    return client.command(b"Subject: retried\r\n\r\nbody\r\n.\r\n")


def test_dsn_parameters_stored(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    mail = client.command("MAIL FROM:<x@remote.test> RET=HDRS ENVID=Env+2BId.1")
    rcpt = client.command("RCPT TO:<bob@local.test> NOTIFY=success,FAILURE ORCPT=rfc822;Bob+40local.test")
    client.command("DATA")
    code, _ = client.command(b"Subject: dsn\r\n\r\nbody\r\n.\r\n")

    message = Message.objects.get()
    recipient = message.recipients.get()
    assert (mail[0], rcpt[0], code) == (250, 250, 250)
    assert message.dsn_ret == "HDRS"
    assert message.dsn_envid == "Env+Id.1"
    assert recipient.notify == "SUCCESS,FAILURE"
    assert recipient.original_recipient == "rfc822;Bob@local.test"


def test_invalid_dsn_parameters_rejected(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    bad_ret = client.command("MAIL FROM:<x@remote.test> RET=ALL")
    unknown = client.command("MAIL FROM:<x@remote.test> FOO=1")
    client.command("MAIL FROM:<x@remote.test>")
    bad_notify = client.command("RCPT TO:<bob@local.test> NOTIFY=NEVER,SUCCESS")
    injected = client.command("RCPT TO:<bob@local.test> ORCPT=rfc822;a+0D+0Ab@x")

    assert bad_ret[1][0].startswith("501 5.5.4")
    assert unknown[1][0].startswith("555 5.5.4")
    assert bad_notify[1][0].startswith("501 5.5.4")
    assert injected[1][0].startswith("501 5.5.4")


def test_smtputf8_addresses(mail_listeners, directory, raw_client):
    Mailbox.objects.create(domain=directory.domain, local_part="jörg")
    client = raw_client("mx")
    client.command("EHLO client.test")
    without = client.command("MAIL FROM:<müller@bücher.test>")
    client.command("MAIL FROM:<müller@bücher.test> SMTPUTF8")
    rcpt = client.command("RCPT TO:<jörg@local.test>")
    client.command("DATA")
    code, _ = client.command("Subject: grüße\r\n\r\nbody\r\n.\r\n".encode())

    message = Message.objects.get()
    assert without[1][0].startswith("553 5.6.7")
    assert rcpt[0] == 250
    assert code == 250
    assert message.smtputf8
    assert message.envelope_sender == "müller@bücher.test"
    assert b"with UTF8SMTP" in message.raw_bytes


def test_proxy_header_before_implicit_tls(mail_listeners, directory, settings):
    settings.MAILHUB_PROXY_PROTOCOL = True
    client = RawClient(mail_listeners.host, mail_listeners.submissions_port)
    client.send(proxy_v1_header("192.0.2.44", mail_listeners.submissions_port))
    client.start_tls(mail_listeners.client_context())
    greeting = client.read_reply()
    client.command("EHLO client.test")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    auth = client.command(f"AUTH PLAIN {token}")
    client.close()

    assert greeting[0] == 220
    assert auth[0] == 235


def test_client_hello_in_the_proxy_header_segment(mail_listeners, directory, settings):
    # A proxy may forward the client's ClientHello in the same segment as its PROXY
    # header, so the listener reads both at once and must hand the rest to TLS.
    settings.MAILHUB_PROXY_PROTOCOL = True
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = mail_listeners.client_context().wrap_bio(incoming, outgoing, server_hostname="mailhub.test")
    with socket.create_connection((mail_listeners.host, mail_listeners.submissions_port), timeout=30) as sock:
        first_write = proxy_v1_header("192.0.2.45", mail_listeners.submissions_port)
        greeting = run_tls_over(sock, tls, incoming, outgoing, first_write)

    assert greeting.startswith(b"220 ")


def run_tls_over(sock, tls, incoming, outgoing, first_write):
    """Complete a client handshake through memory BIOs; return the first bytes read over TLS."""
    pending = first_write
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(pending + outgoing.read())
            pending = b""
            incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    while True:
        try:
            return tls.read(1024)
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))


@pytest.mark.parametrize(
    "line, reply",
    [
        ("MAIL FROM:<x@remote.test> SIZE=\uff11\uff12", "501 5.5.4"),
        ("MAIL FROM:<x@remote.test>SIZE=1", "501 5.5.4"),
        ("MAIL FROM:<x@[999.1.1.1]>", "501 5.1.3"),
        ("MAIL FROM:<x@[1.2.3.4.5]>", "501 5.1.3"),
        ("MAIL FROM:<x@[IPv6:12345::1]>", "501 5.1.3"),
        ("MAIL FROM:<x@[IPv6:1:2:3]>", "501 5.1.3"),
    ],
)
def test_lenient_mail_arguments_rejected(mail_listeners, directory, raw_client, line, reply):
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, lines = client.command(line)
    rcpt = client.command("RCPT TO:<bob@local.test>")

    assert code == 501
    assert lines[0].startswith(reply)
    assert rcpt[0] == 503


@pytest.mark.parametrize(
    "line",
    [
        "MAIL FROM:<x@remote.test> SIZE=12",
        "MAIL FROM:<x@[192.0.2.1]>",
        "MAIL FROM:<x@[255.255.255.255]>",
        "MAIL FROM:<x@[IPv6:2001:db8::1]>",
        "MAIL FROM:<x@[ipv6:::ffff:192.0.2.1]>",
    ],
)
def test_valid_mail_arguments_accepted(mail_listeners, directory, raw_client, line):
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, lines = client.command(line)

    assert code == 250, lines


def test_rcpt_address_literal_checked(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test>")
    code, lines = client.command("RCPT TO:<bob@[300.0.0.1]>")

    assert code == 501
    assert lines[0].startswith("501 5.1.3")


def test_data_reply_without_enhanced_code(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test>")
    client.command("RCPT TO:<bob@local.test>")
    code, lines = client.command("DATA")

    assert code == 354
    assert lines == ["354 End data with <CR><LF>.<CR><LF>"]


def test_reply_table_has_single_spaces():
    table = [value for value in vars(replies).values() if isinstance(value, replies.Reply)]
    texts = [str(reply) for reply in table]

    assert len(table) > 40
    assert [text for text in texts if "  " in text] == []


def test_duplicate_recipients_stored_once(mail_listeners, directory):
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        client.mail("sender@remote.test")
        replies_to_rcpt = [
            client.rcpt(address)[0]
            for address in ("alice@local.test", "ALICE@Local.Test", "bob@local.test", "alice@local.test")
        ]
        code, _text = client.data(message_text("sender@remote.test", "alice@local.test"))

    assert replies_to_rcpt == [250, 250, 250, 250]
    assert code == 250
    assert sorted(Recipient.objects.values_list("address", flat=True)) == ["alice@local.test", "bob@local.test"]
