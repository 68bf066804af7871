"""Operator operations on the spool, used by the admin and the management commands.

Each function takes a queryset (of Recipient or Message) and returns how many rows it
changed. None of them touches a recipient under a live lease, because a worker may be in
the middle of an SMTP conversation for it. Such recipients are skipped and not counted.
A lease that has expired belongs to a dead worker and is taken back.
"""
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .delivery import dsn
from .delivery.claim import lease_free
from .delivery.engine import send_hint
from .models import DeliveryAttempt, Message, Recipient

logger = logging.getLogger(__name__)

OPERATOR_BOUNCE_STATUS = "5.0.0"
FREE_LEASE = {"lease_token": "", "lease_expires_at": None}


def retry_now(recipients):
    """Make queued and deferred recipients due now and send delivery hints.

    Deferred recipients go back to "queued", as Postfix's flush moves deferred mail to
    the active queue, so the status shows that the operator's retry is pending.
    """
    now = timezone.now()
    selected = recipients.filter(lease_free(now), status__in=Recipient.PENDING_STATUSES)
    message_ids = set(selected.values_list("message_id", flat=True))
    count = Recipient.objects.filter(id__in=list(selected.values_list("id", flat=True))).filter(
        lease_free(now), status__in=Recipient.PENDING_STATUSES
    ).update(status=Recipient.Status.QUEUED, next_attempt_at=now, **FREE_LEASE)
    hint_after_commit(message_ids)
    log_operation("retry_now", count)
    return count


def hold(recipients):
    """Stop delivery of queued and deferred recipients until they are released."""
    now = timezone.now()
    count = pending_free(recipients, now).update(status=Recipient.Status.HELD, **FREE_LEASE)
    log_operation("hold", count)
    return count


def release(recipients):
    """Return held recipients to the queue, due now."""
    now = timezone.now()
    selected = select_ids(recipients.filter(status=Recipient.Status.HELD))
    message_ids = set(selected.values_list("message_id", flat=True))
    count = selected.filter(status=Recipient.Status.HELD).update(
        status=Recipient.Status.QUEUED, next_attempt_at=now, **FREE_LEASE
    )
    hint_after_commit(message_ids)
    log_operation("release", count)
    return count


def bounce_now(recipients, reason):
    """Bounce queued, deferred and held recipients at once and send the sender a DSN."""
    now = timezone.now()
    reason = " ".join(str(reason).split()) or "bounced by the postmaster"
    with transaction.atomic():
        selected = list(
            select_ids(
                recipients.filter(
                    lease_free(now), status__in=(*Recipient.PENDING_STATUSES, Recipient.Status.HELD)
                )
            ).select_related("message")
        )
        count = Recipient.objects.filter(id__in=[recipient.id for recipient in selected]).update(
            status=Recipient.Status.BOUNCED,
            reply_code=550,
            reply_enhanced_code=OPERATOR_BOUNCE_STATUS,
            reply_text=reason,
            remote_host="",
            finished_at=now,
            **FREE_LEASE,
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    message_id=recipient.message_id,
                    recipient_id=recipient.id,
                    started_at=now,
                    outcome=DeliveryAttempt.Outcome.BOUNCED,
                    reply_code=550,
                    reply_enhanced_code=OPERATOR_BOUNCE_STATUS,
                    reply_text=reason,
                )
                for recipient in selected
            ]
        )
        for message in {recipient.message_id: recipient.message for recipient in selected}.values():
            dsn.report_unnotified(message)
    for recipient in selected:
        logger.warning(
            "queue_id=%s to=<%s> status=bounced by operator: %s",
            recipient.message.queue_id,
            recipient.address,
            reason,
            extra={"queue_id": recipient.message.queue_id},
        )
    return count


def delete_messages(messages):
    """Delete messages, with their recipients and attempts, unless a worker has a live lease on one of their recipients."""
    now = timezone.now()
    busy = Recipient.objects.filter(lease_expires_at__gt=now).values("message_id")
    deletable = Message.objects.filter(id__in=list(messages.values_list("id", flat=True))).exclude(id__in=busy)
    queue_ids = list(deletable.values_list("queue_id", flat=True))
    deletable.delete()
    for queue_id in queue_ids:
        logger.warning("queue_id=%s deleted by operator", queue_id, extra={"queue_id": queue_id})
    return len(queue_ids)


def requeue(recipients):
    """Put queued, deferred and held recipients back as queued and due now.

    Unlike retry_now this also takes held recipients, and it resets nothing else: the
    attempt count and the last reply stay for the record.
    """
    now = timezone.now()
    statuses = (*Recipient.PENDING_STATUSES, Recipient.Status.HELD)
    selected = select_ids(recipients.filter(lease_free(now), status__in=statuses))
    message_ids = set(selected.values_list("message_id", flat=True))
    count = selected.filter(lease_free(now), status__in=statuses).update(
        status=Recipient.Status.QUEUED, next_attempt_at=now, **FREE_LEASE
    )
    hint_after_commit(message_ids)
    log_operation("requeue", count)
    return count


def purge(older_than_days):
    """Delete messages older than the given days whose recipients are all delivered or bounced."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    unfinished = Recipient.objects.exclude(status__in=Recipient.FINAL_STATUSES).values("message_id")
    finished = Message.objects.filter(created_at__lt=cutoff).exclude(id__in=unfinished)
    count = 0
    for batch in batched(list(finished.values_list("id", flat=True)), 500):
        # Re-checked per batch: a message that got a new recipient (an alias forward)
        # since the list was read is no longer finished.
        count += Message.objects.filter(id__in=batch).exclude(id__in=unfinished).delete()[1].get("mailhub.Message", 0)
    logger.info("purge deleted=%d older_than_days=%s", count, older_than_days, extra={"deleted": count})
    return count


def pending_free(recipients, now):
    return select_ids(recipients.filter(lease_free(now), status__in=Recipient.PENDING_STATUSES)).filter(
        lease_free(now), status__in=Recipient.PENDING_STATUSES
    )


def select_ids(recipients):
    """Return a plain queryset of the same rows, so update() works on sliced or joined input."""
    return Recipient.objects.filter(id__in=list(recipients.values_list("id", flat=True)))


def hint_after_commit(message_ids):
    for message_id in message_ids:
        transaction.on_commit(lambda message_id=message_id: send_hint(message_id))


def batched(items, size):
    return [items[start : start + size] for start in range(0, len(items), size)]


def log_operation(name, count):
    logger.info("operator %s recipients=%d", name, count, extra={"recipient_count": count})


__all__ = ["retry_now", "hold", "release", "bounce_now", "delete_messages", "requeue", "purge"]
