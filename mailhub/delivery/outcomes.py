"""Recording what happened to each claimed recipient: delivered, deferred or bounced.

Every update is conditional on the lease token. A worker that ran past LEASE_SECONDS,
so that another worker took its lease over, cannot overwrite the newer result, and the
lost result is logged. Each recipient also gets a DeliveryAttempt row with the reply that ended it.
A batch of outcomes is stored in bulk. Only when a lease turns out lost are its rows
stored one by one, to find which of them the worker still holds.
"""
import logging
from datetime import datetime
from enum import Enum

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from ..models import DeliveryAttempt, Recipient
from . import retry
from .claim import lease_free
from .types import Reply

logger = logging.getLogger(__name__)

Outcome = DeliveryAttempt.Outcome
EXPIRED_STATUS = "4.4.7"


def judge(recipient, reply, now):
    """Return the outcome of a reply for a recipient, counting the queue lifetime."""
    if reply.is_success:
        return Outcome.DELIVERED
    if reply.is_temporary and not retry.is_expired(recipient.message, now):
        return Outcome.DEFERRED
    return Outcome.BOUNCED


def record(token, results):
    """Store the outcome of each ``(recipient, reply)`` pair in one transaction.

    Returns ``[(recipient, outcome)]`` for the recipients whose lease was still held.
    """
    now = timezone.now()
    planned = [(recipient, reply, judge(recipient, reply, now)) for recipient, reply in results]
    with transaction.atomic():
        if store_all(token, planned, now):
            recorded = [(recipient, outcome) for recipient, _, outcome in planned]
        else:
            recorded = [
                (recipient, outcome)
                for recipient, reply, outcome in planned
                if store(token, recipient, reply, outcome, now)
            ]
    for recipient, outcome in recorded:
        log_outcome(recipient, outcome)
    return recorded


def result_fields(recipient, reply, outcome, now):
    """Return the recipient's new field values, except ``attempts``, which the update increments."""
    fields = {
        "status": outcome,
        "reply_code": reply.code,
        "reply_enhanced_code": reply.enhanced_code,
        "reply_text": reply.text,
        "remote_host": reply.remote_host,
        "lease_token": "",
        "lease_expires_at": None,
        "possible_duplicate": recipient.possible_duplicate or reply.possible_duplicate,
        "next_attempt_at": recipient.next_attempt_at,
        "finished_at": recipient.finished_at,
    }
    if outcome == Outcome.DEFERRED:
        fields["next_attempt_at"] = retry.next_attempt_at(recipient.attempts + 1, now)
    else:
        fields["finished_at"] = now
    if outcome == Outcome.BOUNCED and reply.is_temporary:
        fields["reply_enhanced_code"] = EXPIRED_STATUS
        fields["reply_text"] = f"delivery time expired, last reply: {reply}"
    return fields


def store_all(token, planned, now):
    """Store every planned outcome, or none of them.

    Returns False, with nothing changed, when a lease was lost on any of the rows, so
    the caller stores them one by one and learns which ones it still holds. The rows go
    to the database through executemany, without model instances, because a batch of a
    hundred messages would otherwise cost two statements and two instances per recipient.
    The statements are built before the transaction starts, which keeps SQLite's write
    lock for the database work alone.
    """
    if not planned:
        return True
    rows = [(recipient, reply, outcome, result_fields(recipient, reply, outcome, now)) for recipient, reply, outcome in planned]
    update_sql, update_params = result_updates(token, rows, now)
    insert_sql, insert_params = attempt_inserts(rows, now)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(update_sql, update_params)
            if cursor.rowcount != len(rows):
                raise LeaseLost(cursor.rowcount, len(rows))
            cursor.executemany(insert_sql, insert_params)
    except LeaseLost:
        return False
    for recipient, _, _, fields in rows:
        refresh(recipient, fields, recipient.attempts + 1)
    return True


class LeaseLost(Exception):
    """A bulk store matched fewer rows than it had: some lease was taken over meanwhile."""


# The columns that result_updates sets, in the order of its parameters.
RESULT_COLUMNS = (
    "status", "reply_code", "reply_enhanced_code", "reply_text", "remote_host", "lease_token",
    "lease_expires_at", "possible_duplicate", "next_attempt_at", "finished_at", "updated_at",
)


def result_updates(token, rows, now):
    """Return one conditional UPDATE and its parameters for each row, for executemany."""
    ops = connection.ops
    table = ops.quote_name(Recipient._meta.db_table)
    column = {name: ops.quote_name(Recipient._meta.get_field(name).column) for name in (*RESULT_COLUMNS, "attempts", "id")}
    assignments = ", ".join(f"{column[name]} = %s" for name in RESULT_COLUMNS)
    sql = (
        f"UPDATE {table} SET {assignments}, {column['attempts']} = {column['attempts']} + 1 "
        f"WHERE {column['id']} = %s AND {column['lease_token']} = %s"
    )
    stamp = adapt(now)
    params = [
        [adapt(fields[name]) if name in fields else stamp for name in RESULT_COLUMNS] + [recipient.id, token]
        for recipient, _, _, fields in rows
    ]
    return sql, params


# The columns that attempt_inserts fills, in the order of its parameters.
ATTEMPT_COLUMNS = (
    "message_id", "recipient_id", "started_at", "outcome", "remote_host", "reply_code", "reply_enhanced_code", "reply_text",
)


def attempt_inserts(rows, now):
    """Return the INSERT of a DeliveryAttempt and its parameters for each row, for executemany."""
    ops = connection.ops
    meta = DeliveryAttempt._meta
    columns = ", ".join(ops.quote_name(meta.get_field(name).column) for name in ATTEMPT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(ATTEMPT_COLUMNS))
    sql = f"INSERT INTO {ops.quote_name(meta.db_table)} ({columns}) VALUES ({placeholders})"
    stamp = adapt(now)
    params = [
        [recipient.message_id, recipient.id, stamp, adapt(outcome), reply.remote_host, reply.code, reply.enhanced_code, reply.text]
        for recipient, reply, outcome, _ in rows
    ]
    return sql, params


def adapt(value):
    """Return the value as the database driver takes it, as the ORM would have converted it."""
    if value is None or value.__class__ in PLAIN_TYPES:
        return value
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, Enum):
        return value.value
    return value


PLAIN_TYPES = frozenset({str, int, bool})


def attempt_row(recipient, reply, outcome, now):
    return DeliveryAttempt(
        message_id=recipient.message_id,
        recipient_id=recipient.id,
        started_at=now,
        outcome=outcome,
        remote_host=reply.remote_host,
        reply_code=reply.code,
        reply_enhanced_code=reply.enhanced_code,
        reply_text=reply.text,
    )


def store(token, recipient, reply, outcome, now):
    """Store one outcome if the lease ``token`` still holds the recipient; return whether it did."""
    fields = result_fields(recipient, reply, outcome, now)
    updated = Recipient.objects.filter(id=recipient.id, lease_token=token).update(attempts=F("attempts") + 1, **fields)
    if not updated:
        logger.warning(
            "queue_id=%s to=<%s> lease lost before the result was stored, result %s not recorded: %s",
            recipient.message.queue_id,
            recipient.address,
            outcome,
            reply,
        )
        return False

    attempt_row(recipient, reply, outcome, now).save()
    refresh(recipient, fields, recipient.attempts + 1)
    return True


def refresh(recipient, fields, attempts):
    """Copy the stored values onto the in-memory recipient, for DSNs and logs."""
    for name, value in fields.items():
        if name != "attempts":
            setattr(recipient, name, value)
    recipient.attempts = attempts


def log_outcome(recipient, outcome):
    level = logging.INFO if outcome != Outcome.BOUNCED else logging.WARNING
    logger.log(
        level,
        "queue_id=%s to=<%s> status=%s attempts=%d relay=%s reply=%s %s %s%s",
        recipient.message.queue_id,
        recipient.address,
        outcome,
        recipient.attempts,
        recipient.remote_host or "none",
        recipient.reply_code,
        recipient.reply_enhanced_code,
        recipient.reply_text,
        " possible_duplicate=yes" if recipient.possible_duplicate else "",
        extra={"queue_id": recipient.message.queue_id, "attempts": recipient.attempts},
    )


def expire(recipient, now):
    """Bounce a pending recipient, not under a live lease, that outlived QUEUE_LIFETIME.

    Returns whether this call bounced it (another worker may have claimed it meanwhile).
    """
    last = Reply(
        code=recipient.reply_code or 451,
        enhanced_code=recipient.reply_enhanced_code,
        text=recipient.reply_text or "no delivery attempt succeeded",
        remote_host=recipient.remote_host,
    )
    fields = {
        "status": Recipient.Status.BOUNCED,
        "reply_code": last.code,
        "reply_enhanced_code": EXPIRED_STATUS,
        "reply_text": f"delivery time expired, last reply: {last}",
        "finished_at": now,
        "lease_token": "",
        "lease_expires_at": None,
    }
    with transaction.atomic():
        updated = (
            Recipient.objects.filter(lease_free(now), id=recipient.id, status__in=Recipient.PENDING_STATUSES)
            .update(**fields)
        )
        if updated:
            DeliveryAttempt.objects.create(
                message_id=recipient.message_id,
                recipient_id=recipient.id,
                started_at=now,
                outcome=Outcome.BOUNCED,
                reply_code=last.code,
                reply_enhanced_code=EXPIRED_STATUS,
                reply_text=fields["reply_text"],
            )
    if updated:
        refresh(recipient, fields, recipient.attempts)
        log_outcome(recipient, Outcome.BOUNCED)
    return bool(updated)
