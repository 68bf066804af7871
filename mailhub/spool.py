"""The one way into the spool, used by the backend, the listeners and the bounce writer.

A message exists once this module's transaction commits. Delivery is only queued after
the commit, so a rolled back transaction sends nothing, and a lost broker message is
recovered by the periodic sweep.

``enqueue()`` stores one message through the ORM. The listeners instead ``prepare()``
each message and write many of them with ``store_prepared()`` in one transaction (group
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

logger = logging.getLogger(__name__)

# From this many rows on, store_prepared() sends them with psycopg 3's pipelined
# executemany(). For fewer rows the pipeline's own round trips cost more CPU than Django's
# client-side binding of one multi-row INSERT (measured with psycopg 3.3 and 4 KB messages).
PIPELINE_MIN_ROWS = 4
# Keeps one INSERT of store_prepared() under PostgreSQL's 65,535 bind parameters with
# server-side binding (about 20 columns per row).
MAX_ROWS_PER_INSERT = 1000


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
    """Check and summarise a message for store_prepared(); nothing is written.

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


def store_prepared(prepared):
    """Insert prepared messages and their recipients in the caller's transaction.

    Runs only inside ``atomic()``, so the group is stored whole or not at all. Returns the
    new message ids in the order of ``prepared``. Delivery is not queued: the caller
    calls schedule_group_delivery() once the transaction has committed.
    """
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("store_prepared() needs the caller's atomic() block")
    message_ids = insert_rows(Message, [item.fields for item in prepared], returning=True)
    now = timezone.now()
    recipient_rows = [
        {
            "message_id": message_id,
            "address": recipient.address,
            "domain": domain_of(recipient.address),
            "notify": recipient.notify,
            "original_recipient": recipient.original_recipient,
            "next_attempt_at": now,
        }
        for message_id, item in zip(message_ids, prepared)
        for recipient in item.recipients
    ]
    insert_rows(Recipient, recipient_rows)
    return message_ids


def insert_rows(model, rows, returning=False):
    """INSERT ``rows`` (dicts by field attname, the same keys in each) with multi-row statements.

    Fields a row leaves out get their default, computed once for all rows. With
    ``returning``, returns the new primary keys in row order, as bulk_create() relies on.
    """
    if not rows:
        return []
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    values = database_values(fields, rows)

    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    statement = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
    if len(rows) >= PIPELINE_MIN_ROWS and uses_psycopg3():
        returning_clause = f" RETURNING {quote(model._meta.pk.column)}" if returning else ""
        return insert_rows_pipelined(statement + placeholders + returning_clause, values, returning)
    batch_size = max(1, min(MAX_ROWS_PER_INSERT, connection.ops.bulk_batch_size(fields, rows)))
    with_returning = returning and connection.features.can_return_rows_from_bulk_insert
    if returning and not with_returning:
        batch_size = 1

    keys = []
    with connection.cursor() as cursor:
        for start in range(0, len(values), batch_size):
            batch = values[start : start + batch_size]
            sql = statement + ", ".join([placeholders] * len(batch))
            if with_returning:
                sql += f" RETURNING {quote(model._meta.pk.column)}"
            cursor.execute(sql, [value for row in batch for value in row])
            if with_returning:
                keys.extend(row[0] for row in cursor.fetchall())
            elif returning:
                keys.append(connection.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column))
    return keys


def uses_psycopg3():
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def insert_rows_pipelined(sql, values, returning):
    """Run a one-row INSERT for every row with psycopg 3's executemany(); return the RETURNING values.

    executemany() sends all rows in one pipeline with server-side binding, so PostgreSQL
    parses the statement once and the message bytes go over unquoted. Django's cursor
    binds on the client instead, which for groups of four 4 KB messages took about 1.3
    times the CPU (measured with psycopg 3.3 on a 2-core machine), more for larger groups.
    """
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.executemany(sql, values, returning=returning)
        if not returning:
            return []
        keys = [cursor.fetchone()[0]]
        while cursor.nextset():
            keys.append(cursor.fetchone()[0])
        return keys


def database_values(fields, rows):
    """Return each row's values for ``fields`` as the database adapter takes them.

    The defaults of the fields that the rows leave out are converted once for all rows.
    """
    set_fields = [field for field in fields if field.attname in rows[0]]
    defaults = {
        field.attname: field.get_db_prep_save(default_value(field), connection)
        for field in fields
        if field.attname not in rows[0]
    }
    values = []
    for row in rows:
        converted = defaults | {field.attname: field.get_db_prep_save(row[field.attname], connection) for field in set_fields}
        values.append([converted[field.attname] for field in fields])
    return values


def default_value(field):
    """Return what save() would store in a field left unset: now for auto_now(_add), else the default."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return timezone.now()
    return field.get_default()


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
    summary = headers.summarize(raw)
    smtputf8 = fields.pop("smtputf8") or envelope_needs_smtputf8(envelope_sender, recipients)
    return dict(
        raw=raw,
        envelope_sender=envelope_sender,
        size=len(raw),
        message_id=summary["message_id"],
        subject=summary["subject"],
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
