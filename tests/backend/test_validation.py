"""SpoolBackend checks every message before it stores anything."""
import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.message import BadHeaderError as DjangoBadHeaderError

from mailhub.exceptions import BadHeaderError, InvalidAddress, InvalidMessage, MailhubError
from mailhub.models import Message, Recipient

pytestmark = pytest.mark.django_db

VALID = {
    "subject": "Hello",
    "body": "Body\n",
    "from_email": "site@example.com",
    "to": ["bob@remote.test"],
}

INJECTIONS = {
    "subject LF": {"subject": "Hello\nBcc: victim@evil.test"},
    "subject CR": {"subject": "Hello\rBcc: victim@evil.test"},
    "subject NUL": {"subject": "Hello\x00"},
    "from_email CRLF": {"from_email": "site@example.com\r\nBcc: victim@evil.test"},
    "to LF": {"to": ["bob@remote.test\nBcc: victim@evil.test"]},
    "cc NUL": {"cc": ["carol@remote.test\x00"]},
    "bcc CRLF": {"bcc": ["hidden@remote.test>\r\nRCPT TO:<victim@evil.test"]},
    "reply_to LF": {"reply_to": ["replies@example.com\nX-Evil: 1"]},
    "header value LF": {"headers": {"X-Campaign": "spring\nBcc: victim@evil.test"}},
    "header value NUL": {"headers": {"X-Campaign": "spring\x00"}},
    "header name CRLF": {"headers": {"X-Campaign\r\nBcc": "victim@evil.test"}},
}


def build_message(**overrides):
    fields = {**VALID, **overrides}
    headers = fields.pop("headers", None)
    return EmailMessage(**fields, headers=headers)


def assert_spool_empty():
    assert Message.objects.count() == 0
    assert Recipient.objects.count() == 0


@pytest.mark.parametrize("overrides", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_injection_raises_stores_nothing(spool_backend, overrides):
    message = build_message(**overrides)

    with pytest.raises(BadHeaderError) as raised:
        message.send()

    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, DjangoBadHeaderError)
    assert isinstance(raised.value, MailhubError)
    assert_spool_empty()


def test_injection_raises_despite_fail_silently(spool_backend):
    with pytest.raises(BadHeaderError):
        mail.send_mail("Hello\nBcc: victim@evil.test", "Body\n", "site@example.com", ["bob@remote.test"], fail_silently=True)

    assert_spool_empty()


def test_bcc_extra_header_rejected(spool_backend):
    message = build_message(headers={"Bcc": "hidden@remote.test"})

    with pytest.raises(InvalidMessage, match="bcc="):
        message.send()

    assert_spool_empty()


def test_nul_in_body_rejected(spool_backend):
    message = build_message(body="before\x00after\n")

    with pytest.raises(InvalidMessage, match="NUL"):
        message.send()

    assert_spool_empty()


@pytest.mark.parametrize(
    "address",
    ["not an address", "two@remote.test, three@remote.test", "nodomain", "<>"],
)
def test_invalid_recipient_rejected(spool_backend, address):
    message = build_message(to=[address])

    with pytest.raises(InvalidAddress):
        message.send()

    assert_spool_empty()


def test_invalid_sender_rejected(spool_backend):
    message = build_message(from_email="webmaster")

    with pytest.raises(InvalidAddress, match="webmaster"):
        message.send()

    assert_spool_empty()


def test_bad_message_in_batch_stores_none(spool_backend):
    messages = [
        build_message(subject="First"),
        build_message(subject="Second\nBcc: victim@evil.test"),
        build_message(subject="Third"),
    ]

    with pytest.raises(BadHeaderError):
        mail.send_mass_mail([(m.subject, m.body, m.from_email, m.to) for m in messages])

    assert_spool_empty()


def test_oversized_message_rejected(spool_backend, settings):
    settings.MAILHUB_MAX_MESSAGE_SIZE = 10_000
    message = build_message()
    message.attach("big.bin", b"\x00" * 20_000, "application/octet-stream")

    with pytest.raises(InvalidMessage, match="MAILHUB_MAX_MESSAGE_SIZE"):
        message.send()

    assert_spool_empty()
