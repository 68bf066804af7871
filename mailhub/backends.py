"""SpoolBackend: a Django email backend that commits each message to the mailhub spool.

Set ``EMAIL_BACKEND = "mailhub.backends.SpoolBackend"``, or on Django 6.1 and later
``MAILERS = {"default": {"BACKEND": "mailhub.backends.SpoolBackend"}}``.
``send_messages()`` returns once the messages are committed, or, inside the caller's
``atomic()`` block, once they joined that transaction. Delivery is queued only on commit.
"""
import email.policy
import inspect
import logging
from dataclasses import dataclass
from email.headerregistry import Address, AddressHeader

from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, transaction
from django.utils.encoding import force_str, punycode

from . import conf, headers, spool
from .addresses import needs_smtputf8, validate_address
from .exceptions import BadHeaderError, InvalidAddress, InvalidMessage, SpoolError
from .models import Message

logger = logging.getLogger(__name__)

# CR and LF start a new header or SMTP command, and NUL ends a C string in many MTAs.
FORBIDDEN_CHARACTERS = ("\r", "\n", "\x00")

# Python before 3.15 reports a non-ASCII local part as a defect, as Django 6.1's SMTP
# backend notes, but SMTPUTF8 (RFC 6531) allows it. The ")" is part of Python's text.
TOLERATED_ADDRESS_DEFECTS = frozenset({"local-part contains non-ASCII characters)"})


@dataclass(frozen=True)
class PreparedMessage:
    """A message rendered to bytes with its envelope, ready for the spool."""

    raw: bytes
    envelope_sender: str
    recipients: list
    smtputf8: bool


class SpoolBackend(BaseEmailBackend):
    """An EMAIL_BACKEND that stores messages in the spool for the Celery workers to deliver.

    Invalid messages (CR, LF or NUL in a header or address, an address that does not
    parse) raise even with ``fail_silently=True``, as with Django's SMTP backend, which
    also builds the message outside its error handling. ``fail_silently`` silences only
    a failed database write, which is logged.
    """

    def __init__(self, fail_silently=False, **kwargs):
        # Django 6.1 passes ``alias`` and MAILERS OPTIONS through kwargs, and its base
        # class rejects options it does not know, so fail_silently is taken here.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently

    def send_messages(self, email_messages):
        """Spool the messages that have recipients and return how many were spooled.

        Every message is rendered and checked before the first one is stored, so an
        invalid message in a batch stores none of them.
        """
        if not email_messages:
            return 0

        prepared = [self.prepare_message(item) for item in email_messages if item.recipients()]

        return self.store_messages(prepared)

    def prepare_message(self, email_message):
        check_header_fields(email_message)
        envelope_sender = envelope_address(email_message.from_email)
        recipients = list(dict.fromkeys(envelope_address(item) for item in email_message.recipients()))
        smtputf8 = any(needs_smtputf8(address) for address in [envelope_sender, *recipients])

        raw = render_message(email_message, smtputf8)
        check_size(raw)

        return PreparedMessage(raw, envelope_sender, recipients, smtputf8)

    def store_messages(self, prepared):
        if not prepared:
            return 0

        # One transaction for the batch: a failure that raises leaves none of it spooled,
        # so the caller can send the whole batch again without duplicates.
        try:
            with transaction.atomic():
                return sum(self.store_message(item) for item in prepared)
        except DatabaseError as error:
            # BEGIN or COMMIT failed, such as SQLite's "database is locked" after its timeout.
            # NOTE: no test reaches this branch; the per-message branch below is tested.
            self.report_store_failure(prepared, error)
            return 0

    def store_message(self, item):
        """Store one message; return 1, or 0 after a silenced database error."""
        try:
            spool.enqueue(
                item.raw,
                item.envelope_sender,
                item.recipients,
                source=Message.Source.BACKEND,
                smtputf8=item.smtputf8,
            )
        except DatabaseError as error:
            self.report_store_failure([item], error)
            return 0
        return 1

    def report_store_failure(self, items, error):
        """Log each message that was not stored, then raise SpoolError unless fail_silently is set."""
        message_ids = [headers.summarize(item.raw)["message_id"] for item in items]
        for item, message_id in zip(items, message_ids):
            logger.error(
                "message_id=%s not spooled from=<%s> recipients=%d: %s",
                message_id,
                item.envelope_sender,
                len(item.recipients),
                error,
                extra={"message_id": message_id, "recipient_count": len(item.recipients)},
            )

        if not self.fail_silently:
            raise SpoolError(
                f"the spool could not store {len(items)} message(s), {', '.join(message_ids)}, "
                f"from <{items[0].envelope_sender}>: {error}"
            ) from error


def check_header_fields(email_message):
    """Raise BadHeaderError if a header field or address contains CR, LF or NUL.

    A "Bcc" extra header raises InvalidMessage, because Django 5.2 would write it into
    the message for every recipient to read (Django 6 raises ValueError itself).

    Django rejects CR and LF in most header fields itself, but not NUL, and not in the
    bcc addresses, which reach the SMTP envelope without passing through a header.
    """
    for name in email_message.extra_headers:
        if force_str(name).lower() == "bcc":
            raise InvalidMessage('"Bcc" is not a valid extra header; pass the addresses as bcc=[...]')

    for field, value in header_fields(email_message):
        text = force_str(value)
        if any(char in text for char in FORBIDDEN_CHARACTERS):
            raise BadHeaderError(
                f"{field} {text!r} contains CR, LF or NUL; remove the line break or NUL character"
            )


def header_fields(email_message):
    """Yield (field, value) for every caller-given value that ends up in a header or the envelope."""
    yield "subject", email_message.subject
    yield "from_email", email_message.from_email
    for field in ("to", "cc", "bcc", "reply_to"):
        for address in getattr(email_message, field):
            yield field, address
    for name, value in email_message.extra_headers.items():
        yield "header name", name
        yield f"header {name}", value
    for attachment in email_message.attachments:
        if isinstance(attachment, tuple) and attachment[0]:
            yield "attachment filename", attachment[0]


def envelope_address(address):
    """Return the addr-spec of a header-style address ("Name <user@host>") for the envelope.

    The domain becomes an A-label (RFC 5890), which needs no SMTPUTF8. A non-ASCII local
    part stays as given and makes the message need SMTPUTF8.
    """
    text = force_str(address)
    parsed = AddressHeader.value_parser(text)

    defects = {str(defect) for defect in parsed.all_defects} - TOLERATED_ADDRESS_DEFECTS
    if defects:
        raise InvalidAddress(f"invalid address {text!r}: {'; '.join(sorted(defects))}")
    mailboxes = parsed.all_mailboxes
    if len(mailboxes) != 1:
        raise InvalidAddress(f"invalid address {text!r}: expected one address, found {len(mailboxes)}")

    mailbox = mailboxes[0]
    addr_spec = Address(username=mailbox.local_part, domain=ascii_domain(mailbox.domain, text)).addr_spec
    validate_address(addr_spec)
    return addr_spec


def check_size(raw):
    """Raise InvalidMessage for a message larger than the listeners accept.

    Remote servers reject such a message too, so it would only bounce later; the caller
    learns of it at once instead.
    """
    limit = conf.get("MAX_MESSAGE_SIZE")
    if limit and len(raw) > limit:
        raise InvalidMessage(
            f"the message is {len(raw)} bytes after encoding, more than MAILHUB_MAX_MESSAGE_SIZE "
            f"({limit} bytes); send smaller attachments or raise the setting"
        )


def ascii_domain(domain, address):
    if domain.isascii():
        return domain
    try:
        return punycode(domain)
    except UnicodeError as error:
        raise InvalidAddress(f"invalid domain in address {address!r}: {error}") from error


def render_message(email_message, smtputf8):
    """Return the message as the bytes that go on the wire, with CRLF line ends.

    The spool stores these bytes as they are, and delivery sends them unchanged.
    """
    if accepts_policy(email_message):
        # Django 6.1 builds on Python's modern email API. The SMTPUTF8 policy writes
        # headers as UTF-8 (RFC 6532), which only an SMTPUTF8 envelope may carry.
        policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
        raw = email_message.message(policy=policy).as_bytes()
    else:
        # NOTE: Django 5.2 writes a non-ASCII local part in a header as an RFC 2047
        # encoded word, which mail readers show undecoded. The envelope carries UTF-8.
        raw = email_message.message().as_bytes(linesep="\r\n")

    if b"\x00" in raw:
        raise InvalidMessage("the message contains a NUL byte, which SMTP cannot carry; remove it from the body")
    return raw


def accepts_policy(email_message):
    """Return whether message() takes the ``policy`` argument, as it does in Django 6.1."""
    return "policy" in inspect.signature(email_message.message).parameters
