"""Helpers that read what SpoolBackend stored in the spool."""
import email
import email.policy

from mailhub.models import Message


def stored_message():
    """Return the only spooled message, failing if there is not exactly one."""
    messages = list(Message.objects.all())
    assert len(messages) == 1, f"expected one spooled message, found {len(messages)}"
    return messages[0]


def recipient_addresses(message):
    return [recipient.address for recipient in message.recipients.order_by("id")]


def parse_raw(message):
    """Parse a spooled message's bytes, to check what a mail reader will see.

    Python's parser keeps CRLF inside decoded text, so line ends become LF first, as a
    mail reader on Unix stores them.
    """
    raw = message.raw_bytes.replace(b"\r\n", b"\n")
    return email.message_from_bytes(raw, policy=email.policy.default)


def header_section(raw):
    return raw.split(b"\r\n\r\n", 1)[0]
