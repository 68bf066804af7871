"""The one way into the spool, used by the backend, the listeners and the bounce writer.

A message exists once this module's transaction commits. Delivery is only queued after
the commit, so a rolled back transaction sends nothing, and a lost broker message is
recovered by the periodic sweep.

``enqueue()`` stores one message through the ORM. The listeners instead ``prepare()``
each message and write many of them with ``store_group()`` in one transaction (group
commit), with plain multi-row INSERTs instead of model instances.
"""
import logging
import math
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from . import conf, headers
from .addresses import domain_of, needs_smtputf8, validate_address
from .exceptions import InvalidAddress, InvalidMessage
from .models import Message, Recipient
from .models.spool import new_queue_id
from .spool_rows import insert_group, inserts_group_in_one_statement

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class EnvelopeRecipient:
    """An envelope recipient with its DSN parameters from RCPT TO (RFC 3461)."""

    address: str
    notify: str = ""
    original_recipient: str = ""


def enqueue(
    raw,
    envelope_sender,
    recipients,
    *,
    source,
    client_address=None,
    helo_name="",
    authenticated_user="",
    dsn_ret="",
    dsn_envid="",
    smtputf8=False,
    queue_id=None,
):
    """Store a message and its recipients and queue delivery once the transaction commits.

    ``recipients`` contains addresses or EnvelopeRecipient objects. Inside a caller's
    ``atomic()`` block the message joins that transaction. A listener passes ``queue_id``
    when it has already written that id into the Received: field. Returns the saved
    Message. Raises InvalidMessage or InvalidAddress before anything is written.
    """
    prepared = prepare(
        raw,
        envelope_sender,
        recipients,
        queue_id=queue_id or new_queue_id(),
        source=source,
        client_address=client_address,
        helo_name=helo_name,
        authenticated_user=authenticated_user,
        dsn_ret=dsn_ret,
        dsn_envid=dsn_envid,
        smtputf8=smtputf8,
    )
    message = Message(**prepared.fields)
    envelope_recipients = prepared.recipients

    with transaction.atomic():
        message.save()
        Recipient.objects.bulk_create(build_recipients(message, envelope_recipients))
        transaction.on_commit(lambda: schedule_delivery(message))

    logger.info(
        "queue_id=%s accepted from=<%s> recipients=%d size=%d source=%s",
        message.queue_id,
        envelope_sender,
        len(envelope_recipients),
        message.size,
        source,
        extra={"queue_id": message.queue_id, "recipient_count": len(envelope_recipients)},
    )
    return message


@dataclass(frozen=True)
class PreparedMessage:
    """A checked message with its Message field values and envelope recipients, not yet stored."""

    queue_id: str
    fields: dict
    recipients: list


def prepare(
    raw,
    envelope_sender,
    recipients,
    *,
    queue_id,
    source,
    client_address=None,
    helo_name="",
    authenticated_user="",
    dsn_ret="",
    dsn_envid="",
    smtputf8=False,
):
    """Check and summarise a message for store_group(); nothing is written.

    Takes the arguments of enqueue(), with ``queue_id`` required. Raises InvalidMessage
    or InvalidAddress.
    """
    envelope_recipients = [as_envelope_recipient(item) for item in recipients]
    validate_envelope(raw, envelope_sender, envelope_recipients)
    values = message_fields(
        raw,
        envelope_sender,
        envelope_recipients,
        source=source,
        client_address=client_address,
        helo_name=helo_name,
        authenticated_user=authenticated_user,
        dsn_ret=dsn_ret,
        dsn_envid=dsn_envid,
        smtputf8=smtputf8,
    )
    values["queue_id"] = queue_id
    values["created_at"] = timezone.now()
    return PreparedMessage(queue_id, values, envelope_recipients)


def store_group(prepared):
    """Store prepared messages and their recipients as one transaction; return their message ids.

    The ids are in the order of ``prepared``, and the group is stored whole or not at all.
    On PostgreSQL the group is one statement, which commits by itself in autocommit mode:
    one round trip per group instead of three (BEGIN, INSERT, COMMIT). Inside a caller's
    ``atomic()`` block the group joins that transaction. Delivery is not queued: the
    caller calls schedule_group_delivery() once the group has committed.
    """
    if inserts_group_in_one_statement():
        return insert_group(prepared)
    with transaction.atomic():
        return insert_group(prepared)



def as_envelope_recipient(item):
    if isinstance(item, EnvelopeRecipient):
        return item
    return EnvelopeRecipient(address=item)


def validate_envelope(raw, envelope_sender, recipients):
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidMessage("the raw message must be bytes")
    if not raw:
        raise InvalidMessage("the message is empty")
    if not recipients:
        raise InvalidMessage("the message has no recipients")
    if envelope_sender:
        validate_address(envelope_sender)
    for recipient in recipients:
        validate_address(recipient.address)
    if any(char in envelope_sender for char in "\r\n\x00"):
        raise InvalidAddress(f"envelope sender {envelope_sender!r} contains CR, LF or NUL")


def message_fields(raw, envelope_sender, recipients, **fields):
    """Return the Message field values of a raw message and its envelope."""
    raw = bytes(raw)
    # Only what the Message row keeps: summarize() would also parse the Date field.
    summary = headers.summary_fields(raw)
    smtputf8 = fields.pop("smtputf8") or envelope_needs_smtputf8(envelope_sender, recipients)
    return dict(
        raw=raw,
        envelope_sender=envelope_sender,
        size=len(raw),
        message_id=headers.decode_field(summary["message-id"]),
        subject=headers.decode_field(summary["subject"]),
        body_8bitmime=not raw.isascii(),
        smtputf8=smtputf8,
        **fields,
    )


def envelope_needs_smtputf8(envelope_sender, recipients):
    addresses = [envelope_sender] + [recipient.address for recipient in recipients]
    return any(needs_smtputf8(address) for address in addresses if address)


def build_recipients(message, recipients):
    now = timezone.now()
    return [
        Recipient(
            message=message,
            address=recipient.address,
            domain=domain_of(recipient.address),
            notify=recipient.notify,
            original_recipient=recipient.original_recipient,
            next_attempt_at=now,
        )
        for recipient in recipients
    ]


def schedule_delivery(message):
    """Send the broker a hint to deliver the message now.

    A broker failure is logged and not raised, because the message is already committed:
    the periodic sweep finds it due and queues it again.
    """
    from .tasks import deliver_message

    try:
        deliver_message.delay(message.pk)
    except Exception as error:  # noqa: BLE001 - any broker error must leave the spool as it is
        logger.warning(
            "queue_id=%s delivery hint not sent, the sweep will pick it up: %s",
            message.queue_id,
            error,
        )


def schedule_group_delivery(message_ids, recipient_count):
    """Send the broker hints for messages committed by the listeners.

    A lone message gets its deliver_message hint as from enqueue(). More messages get
    one deliver_due hint per CLAIM_BATCH recipients, because a hint costs about as much
    CPU as storing a message and a worker claims a whole batch at once. Broker failures
    are logged, as in schedule_delivery().
    """
    from .tasks import deliver_due, deliver_message

    try:
        if len(message_ids) == 1:
            deliver_message.delay(message_ids[0])
            return
        for _ in range(math.ceil(recipient_count / conf.get("CLAIM_BATCH"))):
            deliver_due.delay()
    except Exception as error:  # noqa: BLE001 - any broker error must leave the spool as it is
        logger.warning(
            "delivery hint for %d messages not sent, the sweep will pick them up: %s",
            len(message_ids),
            error,
        )
