"""Claiming due recipients with a lease, so two workers never deliver one recipient at once.

A claim is one atomic step. On PostgreSQL and MySQL the due rows are locked with
``SELECT ... FOR UPDATE SKIP LOCKED`` and stamped in the same short transaction. SQLite
has no row locks but runs one writer at a time, so there a single conditional
``UPDATE ... WHERE id IN (SELECT ... LIMIT n)`` does the same. The claimed rows are then
read back by their lease token. No transaction stays open after the claim, so none is
open during an SMTP conversation.
"""
import logging
import secrets
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from .. import conf
from ..models import Message, Recipient

logger = logging.getLogger(__name__)


# The order of the (status, next_attempt_at) index, so a claim reads the first due rows
# from the index instead of sorting every due row: deferred ones first, then queued,
# each oldest first.
CLAIM_ORDER = ("status", "next_attempt_at", "id")


def new_lease_token():
    return secrets.token_hex(16)


def lease_free(now):
    """Match recipients that no worker holds: no lease, or one that has expired."""
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)


def due(now):
    """Match recipients that are due for an attempt and not held by a live lease."""
    return Q(status__in=Recipient.PENDING_STATUSES, next_attempt_at__lte=now) & lease_free(now)


def claim(condition=None, limit=None):
    """Claim up to ``limit`` due recipients that also match ``condition``.

    Returns ``(lease_token, recipients)``, the recipients with their messages loaded and
    ordered by message, or ``(token, [])`` when nothing was due.
    """
    now = timezone.now()
    token = new_lease_token()
    limit = limit or conf.get("CLAIM_BATCH")
    selection = due(now) if condition is None else due(now) & condition
    lease = {"lease_token": token, "lease_expires_at": now + timedelta(seconds=conf.get("LEASE_SECONDS"))}

    if connection.features.has_select_for_update_skip_locked:
        claim_with_row_locks(selection, limit, lease)
    else:
        claim_with_conditional_update(selection, limit, lease, now)

    return token, claimed(token)


def claim_with_row_locks(selection, limit, lease):
    with transaction.atomic():
        ids = list(
            Recipient.objects.select_for_update(skip_locked=True)
            .filter(selection)
            .order_by(*CLAIM_ORDER)
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            Recipient.objects.filter(id__in=ids).update(**lease)


def claim_with_conditional_update(selection, limit, lease, now):
    # The subquery and the update are one statement under SQLite's single writer, so no
    # other claim runs in between. The outer filter still re-checks the lease, and only
    # the lease: with the whole due condition, SQLite walks every due row of the due index
    # instead of looking the few candidates up by primary key.
    candidates = Recipient.objects.filter(selection).order_by(*CLAIM_ORDER).values("id")[:limit]
    Recipient.objects.filter(lease_free(now), id__in=candidates).update(**lease)


def claimed(token):
    """Return the recipients that hold the lease ``token``, with their messages.

    Each message is read once and shared by its recipients, because a join would copy
    the raw bytes into every recipient's row: 100 recipients of a 25 MiB message would
    hold 2.5 GiB.
    """
    if not token:
        return []
    recipients = list(Recipient.objects.filter(lease_token=token).order_by("message_id", "id"))
    messages = Message.objects.in_bulk({recipient.message_id for recipient in recipients})
    for recipient in recipients:
        recipient.message = messages[recipient.message_id]
    return recipients


def claim_message(message_id):
    """Claim the due recipients of one message.

    Most hints arrive for messages that a session has already sent with others of their
    destination, so a plain read checks them first, without taking SQLite's write lock.
    """
    if not has_due_recipient(message_id, timezone.now()):
        return new_lease_token(), []
    return claim(Q(message_id=message_id), limit=conf.get("CLAIM_BATCH"))


# Every delivery hint runs the two reads below, so they avoid building the due() filter
# through the ORM, which costs several times the read itself.

def has_due_recipient(message_id, now):
    """Return whether a recipient of the message is due and free, as due() matches it.

    The rows are read by message alone and tested here, because with the due condition in
    SQL the planner may walk the whole due index instead of the message's few rows.
    """
    rows = Recipient.objects.filter(message_id=message_id).values_list("status", "next_attempt_at", "lease_expires_at")
    return any(
        status in Recipient.PENDING_STATUSES and next_attempt_at <= now and (lease_expires_at is None or lease_expires_at <= now)
        for status, next_attempt_at, lease_expires_at in rows
    )


def first_due_domain():
    """Return the domain of the recipient that a claim would take first, or None when nothing is due."""
    order = ", ".join(column(name) for name in CLAIM_ORDER)
    sql = f"SELECT {column('domain')} FROM {recipient_table()} WHERE {due_sql()} ORDER BY {order} LIMIT 1"
    with connection.cursor() as cursor:
        cursor.execute(sql, due_parameters(timezone.now()))
        row = cursor.fetchone()
    return row[0] if row else None


def due_sql():
    """Return due() as an SQL condition whose parameters come from due_parameters()."""
    lease_expires_at = column("lease_expires_at")
    return (
        f"{column('status')} IN (%s, %s) AND {column('next_attempt_at')} <= %s "
        f"AND ({lease_expires_at} IS NULL OR {lease_expires_at} <= %s)"
    )


def due_parameters(now):
    now = connection.ops.adapt_datetimefield_value(now)
    return [*(status.value for status in Recipient.PENDING_STATUSES), now, now]


def recipient_table():
    return connection.ops.quote_name(Recipient._meta.db_table)


def column(name):
    return connection.ops.quote_name(Recipient._meta.get_field(name).column)


def claim_for_domains(domains, limit):
    """Claim due recipients of the given domains, to send over an open session."""
    return claim(Q(domain__in=list(domains)), limit=limit)


def release(token, recipient_ids=None):
    """Drop the lease ``token`` from the recipients that still have it, and return their count."""
    queryset = Recipient.objects.filter(lease_token=token)
    if recipient_ids is not None:
        queryset = queryset.filter(id__in=list(recipient_ids))
    return queryset.update(lease_token="", lease_expires_at=None)


def renew(token):
    """Push the expiry of the lease ``token`` a full LEASE_SECONDS forward.

    NOTE: the engine renews the lease before an SMTP transaction once a quarter of
    LEASE_SECONDS has passed since the claim or the last renewal, not during one. A single
    transaction that outlasts LEASE_SECONDS (the client timeouts allow it) can lose its
    lease to the sweep, and then the recipient may be sent twice.
    """
    expires_at = timezone.now() + timedelta(seconds=conf.get("LEASE_SECONDS"))
    return Recipient.objects.filter(lease_token=token).update(lease_expires_at=expires_at)


def postpone(token, recipients, seconds):
    """Give claimed recipients back, due again in ``seconds``, without counting an attempt."""
    later = timezone.now() + timedelta(seconds=seconds)
    return Recipient.objects.filter(lease_token=token, id__in=[r.id for r in recipients]).update(
        lease_token="", lease_expires_at=None, next_attempt_at=later
    )
