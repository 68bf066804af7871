"""The periodic sweep: the safety net that makes the spool, not the broker, the source of truth.

It returns recipients whose worker died (expired leases) to the queue and sends delivery
hints for everything due. It bounces recipients past the queue lifetime and sends the
DSNs that a failed worker still owed. It records when it ran, so operators can see that
beat is alive.
"""
import logging
import socket
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from .. import conf
from ..models import Message, Recipient, SweepRecord
from . import claim, dsn, outcomes, retry
from .engine import send_hint

logger = logging.getLogger(__name__)

# Bounds one sweep's work, so a huge backlog is worked through over several sweeps
# instead of one sweep flooding the broker.
MAX_HINTS_PER_SWEEP = 1000
MAX_EXPIRED_PER_SWEEP = 1000
MAX_REPORTS_PER_SWEEP = 200


def sweep():
    """Run one sweep; returns the counts it stores in the SweepRecord named "sweep"."""
    now = timezone.now()
    expired_leases = clear_expired_leases(now)
    expired = expire_lifetimes(now)
    requeued = hint_due_messages(now)
    reported = send_owed_reports(now)

    SweepRecord.objects.update_or_create(
        name="sweep",
        defaults={
            "ran_at": timezone.now(),
            "requeued": requeued,
            "expired_leases": expired_leases,
            "worker": socket.gethostname(),
        },
    )
    counts = {"requeued": requeued, "expired_leases": expired_leases, "expired": expired, "reported": reported}
    logger.info(
        "sweep requeued=%d expired_leases=%d expired=%d reported=%d",
        requeued,
        expired_leases,
        expired,
        reported,
        extra=counts,
    )
    return counts


def clear_expired_leases(now):
    """Drop leases that outlived their worker, so the recipients are due again."""
    return Recipient.objects.filter(
        status__in=Recipient.PENDING_STATUSES, lease_expires_at__lte=now
    ).update(lease_token="", lease_expires_at=None)


def expire_lifetimes(now):
    """Bounce pending recipients of messages older than QUEUE_LIFETIME, with a DSN."""
    stale = list(
        Recipient.objects.filter(
            claim.lease_free(now),
            status__in=Recipient.PENDING_STATUSES,
            message__created_at__lte=retry.lifetime_cutoff(now),
        ).select_related("message")[:MAX_EXPIRED_PER_SWEEP]
    )
    expired = [recipient for recipient in stale if outcomes.expire(recipient, now)]
    for message in {recipient.message_id: recipient.message for recipient in expired}.values():
        dsn.report_unnotified(message)
    return len(expired)


def hint_due_messages(now):
    message_ids = list(
        Recipient.objects.filter(claim.due(now))
        .order_by("message_id")
        .values_list("message_id", flat=True)
        .distinct()[:MAX_HINTS_PER_SWEEP]
    )
    for message_id in message_ids:
        send_hint(message_id)
    return len(message_ids)


def send_owed_reports(now):
    """Send DSNs that were not written when their recipients finished, and delay warnings."""
    owed = Q(status=Recipient.Status.BOUNCED, notified_at__isnull=True) | Q(
        status=Recipient.Status.DELIVERED, notified_at__isnull=True, notify__icontains="SUCCESS"
    )
    messages = list(Message.objects.filter(recipients__in=Recipient.objects.filter(owed)).distinct()[:MAX_REPORTS_PER_SWEEP])
    for message in messages:
        dsn.report_unnotified(message)

    delay_after = conf.get("DELAY_WARNING_AFTER")
    if delay_after:
        delayed = Message.objects.filter(
            created_at__lte=now - timedelta(seconds=delay_after),
            recipients__status=Recipient.Status.DEFERRED,
            recipients__delay_notified_at__isnull=True,
        ).distinct()[:MAX_REPORTS_PER_SWEEP]
        for message in delayed:
            dsn.report_delay(message)
    return len(messages)
