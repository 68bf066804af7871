"""Django's mail API through SpoolBackend: what each call stores in the spool."""
import email.message
from email.mime.image import MIMEImage

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from mailhub.models import Message, Recipient

from .spooled import header_section, parse_raw, recipient_addresses, stored_message

pytestmark = pytest.mark.django_db

# A 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def inline_image(content, content_id):
    """Return an inline image part in the form this Django version's attach() takes."""
    if django.VERSION >= (6, 0):
        part = email.message.MIMEPart()
        part.set_content(content, maintype="image", subtype="png", disposition="inline", cid=content_id)
        return part
    part = MIMEImage(content, "png")
    part.add_header("Content-ID", content_id)
    part.add_header("Content-Disposition", "inline")
    return part


def default_connection():
    """Return the default backend instance the way this Django version recommends."""
    if django.VERSION >= (6, 1):
        return mail.mailers.default
    return mail.get_connection()


def test_send_mail_spools_message(spool_backend):
    count = mail.send_mail("Hello", "Body text\n", "Site <site@example.com>", ["bob@remote.test"])

    message = stored_message()
    assert count == 1
    assert message.source == Message.Source.BACKEND
    assert message.envelope_sender == "site@example.com"
    assert recipient_addresses(message) == ["bob@remote.test"]
    assert message.subject == "Hello"
    assert message.size == len(message.raw_bytes)
    assert message.message_id.startswith("<")


def test_send_mail_raw_has_crlf_line_ends(spool_backend):
    mail.send_mail("Hello", "line one\nline two\n", "site@example.com", ["bob@remote.test"])

    raw = stored_message().raw_bytes
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


def test_send_mail_recipients_queued(spool_backend):
    mail.send_mail("Hello", "Body\n", "site@example.com", ["a@remote.test", "b@other.test"])

    recipients = list(Recipient.objects.order_by("id"))
    assert [recipient.status for recipient in recipients] == ["queued", "queued"]
    assert [recipient.domain for recipient in recipients] == ["remote.test", "other.test"]


def test_send_mail_html_message(spool_backend):
    mail.send_mail("Hello", "Plain\n", "site@example.com", ["bob@remote.test"], html_message="<p>Rich</p>")

    parsed = parse_raw(stored_message())
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(preferencelist=("plain",)).get_content().rstrip("\n") == "Plain"
    assert parsed.get_body(preferencelist=("html",)).get_content().rstrip("\n") == "<p>Rich</p>"


def test_send_mass_mail_counts_messages(spool_backend):
    datatuple = [
        ("First", "One\n", "site@example.com", ["a@remote.test"]),
        ("Second", "Two\n", "site@example.com", ["b@remote.test", "c@remote.test"]),
        ("Nobody", "Three\n", "site@example.com", []),
    ]

    count = mail.send_mass_mail(datatuple)

    messages = list(Message.objects.order_by("id"))
    assert count == 2
    assert [message.subject for message in messages] == ["First", "Second"]
    assert recipient_addresses(messages[1]) == ["b@remote.test", "c@remote.test"]


def test_mail_admins_spools_to_admins(spool_backend, admins):
    mail.mail_admins("Disk full", "The disk is full.\n")

    message = stored_message()
    assert message.envelope_sender == "server@example.com"
    assert recipient_addresses(message) == ["ops@example.com", "zoe@example.com"]
    assert message.subject == "[site] Disk full"


def test_email_message_cc_reply_to_headers(spool_backend):
    message = EmailMessage(
        "Hello",
        "Body\n",
        "site@example.com",
        ["to@remote.test"],
        cc=["cc@remote.test"],
        reply_to=["replies@example.com"],
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsubscribe@example.com>"},
    )

    assert message.send() == 1

    parsed = parse_raw(stored_message())
    assert parsed["To"] == "to@remote.test"
    assert parsed["Cc"] == "cc@remote.test"
    assert parsed["Reply-To"] == "replies@example.com"
    assert parsed["X-Campaign"] == "spring"
    assert parsed["List-Unsubscribe"] == "<mailto:unsubscribe@example.com>"


def test_bcc_in_recipients_not_headers(spool_backend):
    message = EmailMessage(
        "Hello",
        "Body\n",
        "site@example.com",
        ["to@remote.test"],
        cc=["cc@remote.test"],
        bcc=["hidden@secret.test"],
    )

    message.send()

    stored = stored_message()
    assert recipient_addresses(stored) == ["to@remote.test", "cc@remote.test", "hidden@secret.test"]
    assert b"hidden" not in stored.raw_bytes
    assert b"secret.test" not in stored.raw_bytes
    assert parse_raw(stored)["Bcc"] is None


def test_duplicate_recipient_spooled_once(spool_backend):
    message = EmailMessage("Hello", "Body\n", "site@example.com", ["bob@remote.test"], bcc=["bob@remote.test"])

    message.send()

    assert recipient_addresses(stored_message()) == ["bob@remote.test"]


def test_extra_from_header_keeps_envelope(spool_backend):
    message = EmailMessage(
        "Hello",
        "Body\n",
        "bounces@example.com",
        ["bob@remote.test"],
        headers={"From": "News <news@example.com>"},
    )

    message.send()

    stored = stored_message()
    assert stored.envelope_sender == "bounces@example.com"
    assert parse_raw(stored)["From"] == "News <news@example.com>"


def test_attachment_and_inline_image(spool_backend):
    message = EmailMultiAlternatives("Report", "See attached.\n", "site@example.com", ["bob@remote.test"])
    message.attach_alternative('<p>Logo: <img src="cid:logo@example.com"></p>', "text/html")
    message.attach("report.csv", "id,total\n1,42\n", "text/csv")
    message.attach("data.bin", bytes(range(256)), "application/octet-stream")
    message.attach(inline_image(PNG, "<logo@example.com>"))

    assert message.send() == 1

    stored = stored_message()
    assert b"Content-ID: <logo@example.com>" in stored.raw_bytes
    parts = {part.get_filename() or part["Content-ID"]: part for part in parse_raw(stored).iter_attachments()}
    assert parts["report.csv"].get_content() == "id,total\n1,42\n"
    assert parts["data.bin"].get_content() == bytes(range(256))
    assert parts["<logo@example.com>"].get_content() == PNG
    assert parts["<logo@example.com>"].get_content_type() == "image/png"


def test_non_ascii_names_and_subject(spool_backend):
    message = EmailMessage(
        "Grüße aus Köln ✓",
        "Schöne Grüße\n",
        "Jörg Müller <joerg@example.com>",
        ["Zoë Çelik <zoe@remote.test>"],
    )

    message.send()

    stored = stored_message()
    parsed = parse_raw(stored)
    assert stored.subject == "Grüße aus Köln ✓"
    assert stored.smtputf8 is False
    assert header_section(stored.raw_bytes).isascii()
    assert parsed["From"].addresses[0].display_name == "Jörg Müller"
    assert parsed["To"].addresses[0].display_name == "Zoë Çelik"
    assert parsed.get_content() == "Schöne Grüße\n"


def test_idn_domain_becomes_a_label(spool_backend):
    message = EmailMessage("IDN", "Body\n", "info@bücher.example", ["kunde@münchen.test"])

    message.send()

    stored = stored_message()
    assert stored.envelope_sender == "info@xn--bcher-kva.example"
    assert recipient_addresses(stored) == ["kunde@xn--mnchen-3ya.test"]
    assert stored.smtputf8 is False


def test_non_ascii_local_part_needs_smtputf8(spool_backend):
    message = EmailMessage("UTF-8", "Body\n", "jörg@example.com", ["José <josé@remote.test>"])

    message.send()

    stored = stored_message()
    assert stored.smtputf8 is True
    assert stored.envelope_sender == "jörg@example.com"
    assert recipient_addresses(stored) == ["josé@remote.test"]


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django 5.2 writes headers as RFC 2047 encoded words")
def test_smtputf8_headers_are_utf8(spool_backend):
    message = EmailMessage("UTF-8", "Body\n", "jörg@example.com", ["josé@remote.test"])

    message.send()

    head = header_section(stored_message().raw_bytes)
    assert "From: jörg@example.com".encode() in head
    assert "To: josé@remote.test".encode() in head


def test_send_messages_returns_count(spool_backend):
    messages = [
        EmailMessage("One", "Body\n", "site@example.com", ["a@remote.test"]),
        EmailMessage("Two", "Body\n", "site@example.com", ["b@remote.test"]),
        EmailMessage("None", "Body\n", "site@example.com", []),
    ]

    count = default_connection().send_messages(messages)

    assert count == 2
    assert Message.objects.count() == 2


def test_send_messages_empty_list(spool_backend):
    assert default_connection().send_messages([]) == 0


@pytest.mark.skipif(django.VERSION < (6, 1), reason="send(using=...) needs Django 6.1 or later")
def test_send_using_mailer_alias(settings):
    settings.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        "spool": {"BACKEND": "mailhub.backends.SpoolBackend"},
    }
    message = EmailMessage("Alias", "Body\n", "site@example.com", ["bob@remote.test"])

    assert message.send(using="spool") == 1

    assert stored_message().subject == "Alias"
    assert mail.outbox == []
