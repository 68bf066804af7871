"""Recording what happened to each claimed recipient: delivered, deferred or bounced.

Every update is conditional on the lease token. A worker that ran past LEASE_SECONDS,
so that another worker took its lease over, cannot overwrite the newer result, and the
lost result is logged. Each recipient also gets a DeliveryAttempt row with the reply that ended it.
"""
import logging

from django.db import transaction
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
    recorded = []
    with transaction.atomic():
        for recipient, reply in results:
            outcome = judge(recipient, reply, now)
            if store(token, recipient, reply, outcome, now):
                recorded.append((recipient, outcome))
    for recipient, outcome in recorded:
        log_outcome(recipient, outcome)
    return recorded


def store(token, recipient, reply, outcome, now):
    attempts = recipient.attempts + 1
    fields = {
        "status": outcome,
        "attempts": F("attempts") + 1,
        "reply_code": reply.code,
        "reply_enhanced_code": reply.enhanced_code,
        "reply_text": reply.text,
        "remote_host": reply.remote_host,
        "lease_token": "",
        "lease_expires_at": None,
    }
    if reply.possible_duplicate:
        fields["possible_duplicate"] = True
    if outcome == Outcome.DEFERRED:
        fields["next_attempt_at"] = retry.next_attempt_at(attempts, now)
    else:
        fields["finished_at"] = now
    if outcome == Outcome.BOUNCED and reply.is_temporary:
        fields["reply_enhanced_code"] = EXPIRED_STATUS
        fields["reply_text"] = f"delivery time expired, last reply: {reply}"

    updated = Recipient.objects.filter(id=recipient.id, lease_token=token).update(**fields)
    if not updated:
        logger.warning(
            "queue_id=%s to=<%s> lease lost before the result was stored, result %s not recorded: %s",
            recipient.message.queue_id,
            recipient.address,
            outcome,
            reply,
        )
        return False

    DeliveryAttempt.objects.create(
        message_id=recipient.message_id,
        recipient_id=recipient.id,
        started_at=now,
        outcome=outcome,
        remote_host=reply.remote_host,
        reply_code=reply.code,
        reply_enhanced_code=reply.enhanced_code,
        reply_text=reply.text,
    )
    refresh(recipient, fields, attempts)
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
