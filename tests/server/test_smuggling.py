"""SMTP smuggling and STARTTLS injection: only <CRLF>.<CRLF> ends DATA; pipelined
plaintext after STARTTLS has no effect."""
import logging

import pytest

from mailhub.models import Alias, Message

from .conftest import RawClient

pytestmark = pytest.mark.django_db(transaction=True)

SMUGGLING_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n"]


def smuggling_payload(ending):
    """Return a first message whose body contains a fake end of data and a second, smuggled transaction."""
    smuggled = (
        b"MAIL FROM:<admin@remote.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
    )
    return b"Subject: first\r\n\r\nfirst body" + ending + smuggled + b".\r\n"


def open_transaction(client):
    client.command("EHLO client.test")
    assert client.command("MAIL FROM:<x@remote.test>")[0] == 250
    assert client.command("RCPT TO:<bob@local.test>")[0] == 250
    assert client.command("DATA")[0] == 354


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS, ids=lambda ending: repr(ending)[2:-1])
def test_bare_newline_endings_rejected(mail_listeners, directory, raw_client, ending):
    client = raw_client("mx")
    open_transaction(client)
    code, lines = client.command(smuggling_payload(ending))
    after = client.command("NOOP")

    assert code == 550
    assert lines[0].startswith("550 5.5.2")
    assert after[0] == 250
    assert Message.objects.count() == 0


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS, ids=lambda ending: repr(ending)[2:-1])
def test_bare_newline_endings_normalized(mail_listeners, directory, raw_client, settings, ending):
    settings.MAILHUB_BARE_NEWLINE_POLICY = "normalize"
    client = raw_client("mx")
    open_transaction(client)
    code, _lines = client.command(smuggling_payload(ending))
    after = client.command("NOOP")

    messages = list(Message.objects.all())
    assert code == 250
    assert after[0] == 250
    assert len(messages) == 1
    assert b"Subject: smuggled" in messages[0].raw_bytes
    assert messages[0].raw_bytes.count(b"Subject: ") == 2
    assert b"\r\n\r\n" in messages[0].raw_bytes
    assert b"\n" not in messages[0].raw_bytes.replace(b"\r\n", b"")
    assert b"\r" not in messages[0].raw_bytes.replace(b"\r\n", b"")


def test_dot_stuffing_removed_only_after_crlf(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    open_transaction(client)
    code, _ = client.command(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\nend\r\n.\r\n")

    assert code == 250
    assert Message.objects.get().raw_bytes.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n..\r\nend\r\n")


def test_bytes_stored_as_sent(mail_listeners, directory, raw_client):
    body = (
        b"From: x@remote.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
        b"8-bit: caf\xc3\xa9 \xff\xfe latin-1 \xe9\r\n\ttabs and  spaces  \r\n\r\n\r\ntrailing\r\n"
    )
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test> BODY=8BITMIME")
    client.command("RCPT TO:<bob@local.test>")
    client.command("DATA")
    code, _ = client.command(body + b".\r\n")

    raw = Message.objects.get().raw_bytes
    assert code == 250
    assert raw.endswith(b"\r\n" + body)
    assert raw[: raw.index(body)].startswith(b"Received: ")


def test_starttls_pipelined_command_has_no_effect(mail_listeners, directory):
    client = RawClient(mail_listeners.host, mail_listeners.mx_port)
    client.read_reply()
    client.command("EHLO client.test")
    client.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\nRCPT TO:<bob@local.test>\r\n")
    code, _ = client.read_reply()
    assert code == 220
    client.start_tls(mail_listeners.client_context())
    need_helo = client.command("MAIL FROM:<x@remote.test>")
    client.command("EHLO client.test")
    rcpt_without_mail = client.command("RCPT TO:<bob@local.test>")
    client.close()

    assert need_helo[0] == 503
    assert rcpt_without_mail[0] == 503
    assert Message.objects.count() == 0


def test_nul_byte_rejected(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    open_transaction(client)
    code, lines = client.command(b"Subject: nul\r\n\r\na\x00b\r\n.\r\n")

    assert code == 554
    assert "NUL" in lines[0]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@remote.test>\rRCPT TO:<bob@local.test>\r\n",
        b"MAIL FROM:<a\x00@remote.test>\r\n",
        b"MAIL FROM:<a@remote.test>\nRCPT TO:<bob@local.test>\r\n",
    ],
)
def test_cr_lf_nul_in_arguments_rejected(mail_listeners, directory, raw_client, line):
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, _ = client.command(line)
    rcpt = client.command("RCPT TO:<bob@local.test>")

    assert code in (500, 501)
    assert rcpt[0] == 503


def test_shell_metacharacters_kept_literal(mail_listeners, directory, raw_client, settings):
    Alias.objects.create(domain=directory.domain, local_part="", destinations="bob@local.test")
    client = raw_client("mx")
    client.command("EHLO client.test")
    outside_grammar = client.command("MAIL FROM:<$(id)@remote.test>")
    client.command("MAIL FROM:<`id`${PATH}|x&y@remote.test>")
    client.command("RCPT TO:<${jndi}|$HOME&`id`@local.test>")
    client.command("DATA")
    code, _ = client.command(b"Subject: meta\r\n\r\nx\r\n.\r\n")

    message = Message.objects.get()
    assert outside_grammar[0] == 501
    assert code == 250
    assert message.envelope_sender == "`id`${PATH}|x&y@remote.test"
    assert message.recipients.get().address == "${jndi}|$HOME&`id`@local.test"


@pytest.mark.parametrize(
    "content, reply",
    [
        (b"Subject: lf\r\n\r\nfirst\n.\nsecond\r\n", "550 5.5.2"),
        (b"Subject: nul\r\n\r\na\x00b\r\n", "554 5.6.0"),
        (b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n", "554 5.6.0"),
    ],
    ids=["bare-lf", "nul", "long-line"],
)
def test_data_rejection_logged(mail_listeners, directory, raw_client, settings, caplog, content, reply):
    settings.MAILHUB_MAX_LINE_LENGTH = 1000
    caplog.set_level(logging.INFO, logger="mailhub.server")
    client = raw_client("mx")
    open_transaction(client)
    code, lines = client.command(content + b".\r\n")
    logged = [record.getMessage() for record in caplog.records if "rejected DATA" in record.getMessage()]

    assert code == int(reply[:3])
    assert lines[0].startswith(reply)
    assert len(logged) == 1
    assert "client=127.0.0.1" in logged[0]
    assert "from=<x@remote.test>" in logged[0]
    assert "to=<bob@local.test>" in logged[0]
    assert f"reply={reply}" in logged[0]
    assert Message.objects.count() == 0
