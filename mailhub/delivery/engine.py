"""The store-and-forward core: deliver claimed recipients and record what happened.

Claimed recipients are grouped by route, and a local route goes to local delivery. A
remote route takes a destination slot and opens one SMTP session. It sends every due
message for that destination over it, and claims more due recipients of the same
domains while the session is open. Each recipient ends delivered, deferred (with its next attempt time) or
bounced, and its lease is released. DSNs for the finished recipients follow.
"""
import logging
from collections import OrderedDict

from django.db import transaction
from django.utils import timezone

from .. import conf, headers
from ..models import Recipient
from . import claim, client, dsn, local, outcomes, retry, routing, slots
from .errors import DeliveryError
from .types import OutboundEnvelope, Reply

logger = logging.getLogger(__name__)

# Follow-up claims per open session: with CLAIM_BATCH recipients each, one session sends
# at most this many batches before it ends and frees its slot for other workers' turns.
MAX_BATCHES_PER_SESSION = 10


def deliver_message(message_id):
    """Deliver the due recipients of one message; returns how many were claimed."""
    token, recipients = claim.claim_message(message_id)
    return deliver_claimed(token, recipients)


def deliver_due(limit=None):
    """Deliver one batch of due recipients of any message; returns how many were claimed."""
    token, recipients = claim.claim(limit=limit)
    return deliver_claimed(token, recipients)


def deliver_claimed(token, recipients):
    """Deliver recipients claimed under ``token``; every one ends recorded or released."""
    if not recipients:
        return 0
    try:
        remaining = bounce_looping(token, recipients)
        for route, group in group_by_route(token, remaining):
            if route.kind == "local":
                deliver_local(token, group)
            else:
                deliver_remote(token, route, group)
    except Exception:
        logger.exception(
            "delivery of %d claimed recipients failed; their lease is released for a later attempt",
            len(recipients),
            extra={"recipient_count": len(recipients)},
        )
        raise
    finally:
        claim.release(token)
        send_reports(recipients)
    return len(recipients)


def bounce_looping(token, recipients):
    """Bounce recipients of messages past the hop limit (5.4.6); return the others."""
    limit = conf.get("MAX_RECEIVED_HEADERS")
    remaining = []
    looping = []
    hops_by_message = {}
    for recipient in recipients:
        message_id = recipient.message_id
        if message_id not in hops_by_message:
            hops_by_message[message_id] = headers.count_received(recipient.message.raw_bytes)
        hops = hops_by_message[message_id]
        if hops > limit:
            looping.append((recipient, Reply(554, "5.4.6", f"too many Received headers ({hops} > {limit}), mail loop")))
        else:
            remaining.append(recipient)
    if looping:
        outcomes.record(token, looping)
    return remaining


def group_by_route(token, recipients):
    """Return ``[(route, recipients)]``, one entry per destination.

    A domain whose route cannot be resolved (NXDOMAIN, null MX, SERVFAIL) has its
    recipients recorded here with the resolver's reply.
    """
    routes = {}
    groups = OrderedDict()
    for recipient in recipients:
        domain = recipient.domain
        if domain not in routes:
            routes[domain] = resolve(domain)
        route = routes[domain]
        if isinstance(route, Reply):
            continue
        groups.setdefault(route.destination, (route, []))[1].append(recipient)

    unroutable = [(recipient, routes[recipient.domain]) for recipient in recipients if isinstance(routes[recipient.domain], Reply)]
    if unroutable:
        outcomes.record(token, unroutable)
    return list(groups.values())


def resolve(domain):
    """Return the Route of the domain, or the Reply of why it has none."""
    try:
        return routing.resolve_route(domain)
    except DeliveryError as error:
        logger.info("domain=%s route lookup failed: %s", domain, error.reply)
        return error.reply


def deliver_local(token, recipients):
    for recipient in recipients:
        with transaction.atomic():
            reply = local.deliver(recipient)
            if not outcomes.record(token, [(recipient, reply)]):
                # The lease was lost, so another worker owns this recipient now, and the
                # mailbox copies made here must not commit next to that worker's.
                transaction.set_rollback(True)


def deliver_remote(token, route, recipients):
    """Send the recipients over one session to the route, with more due mail for it."""
    wait = conf.get("DESTINATION_SLOT_WAIT")
    with slots.destination_slot(route.destination, wait) as holder:
        if not holder:
            postpone_busy(token, route, recipients, wait)
            return
        try:
            with client.open_session(route) as session:
                if send_batch(session, token, recipients, holder) and session.is_connected:
                    send_more(session, route, recipients, holder)
        except DeliveryError as error:
            unrecorded = set(Recipient.objects.filter(lease_token=token).values_list("id", flat=True))
            pending = [recipient for recipient in recipients if recipient.id in unrecorded]
            outcomes.record(token, [(recipient, error.reply) for recipient in pending])


def postpone_busy(token, route, recipients, wait):
    """Give recipients back when every slot of their destination stayed busy."""
    claim.postpone(token, recipients, wait)
    logger.info(
        "destination=%s all %d session slots busy, %d recipients postponed by %s s",
        route.destination,
        conf.get("DESTINATION_CONCURRENCY"),
        len(recipients),
        wait,
        extra={"recipient_count": len(recipients)},
    )
    for message_id in {recipient.message_id for recipient in recipients}:
        send_hint(message_id, countdown=wait)


def send_more(session, route, first_batch, holder):
    """Claim and send more due recipients of the route's domains over the open session."""
    domains = {recipient.domain for recipient in first_batch}
    for _ in range(MAX_BATCHES_PER_SESSION):
        token, claimed = claim.claim_for_domains(domains, conf.get("CLAIM_BATCH"))
        if not claimed:
            return
        try:
            healthy = send_batch(session, token, bounce_looping(token, claimed), holder)
        finally:
            claim.release(token)
            send_reports(claimed)
        if not healthy or not session.is_connected:
            return


def send_batch(session, token, recipients, holder):
    """Send each message of the batch; returns False once the session has failed."""
    healthy = True
    for message_recipients in group_by_message(recipients).values():
        for chunk in chunked(message_recipients, conf.get("RECIPIENTS_PER_TRANSACTION")):
            claim.renew(token)
            slots.renew(holder)
            replies = send_envelope(session, chunk) if healthy else None
            if replies is None:
                healthy = False
                replies = [session_failure_reply()] * len(chunk)
            outcomes.record(token, list(zip(chunk, replies)))
    return healthy


def send_envelope(session, recipients):
    """Send one SMTP transaction; returns one Reply per recipient, or None if the session broke."""
    envelope = build_envelope(recipients)
    try:
        replies = session.send(envelope)
    except DeliveryError as error:
        logger.info("queue_id=%s transaction failed: %s", envelope.queue_id, error.reply)
        return [error.reply] * len(recipients)
    except OSError as error:
        logger.warning("queue_id=%s session broke: %s", envelope.queue_id, error)
        return None
    if len(replies) != len(recipients):
        logger.error(
            "queue_id=%s the client returned %d replies for %d recipients",
            envelope.queue_id,
            len(replies),
            len(recipients),
        )
        return None
    return list(replies)


def session_failure_reply():
    return Reply(451, "4.4.2", "the SMTP session broke before this message was sent")


def build_envelope(recipients):
    message = recipients[0].message
    return OutboundEnvelope(
        queue_id=message.queue_id,
        envelope_sender=message.envelope_sender,
        recipients=tuple(recipient.address for recipient in recipients),
        raw=message.raw_bytes,
        body_8bitmime=message.body_8bitmime,
        smtputf8=message.smtputf8,
        dsn_ret=message.dsn_ret,
        dsn_envid=message.dsn_envid,
        recipient_dsn=tuple((recipient.notify, recipient.original_recipient) for recipient in recipients),
    )


def group_by_message(recipients):
    groups = OrderedDict()
    for recipient in recipients:
        groups.setdefault(recipient.message_id, []).append(recipient)
    return groups


def chunked(items, size):
    size = max(int(size), 1)
    return [items[start : start + size] for start in range(0, len(items), size)]


def send_reports(recipients):
    """Send the DSNs that the recipients' messages now owe: failures, successes, delays."""
    now = timezone.now()
    messages = {recipient.message_id: recipient.message for recipient in recipients}
    for message in messages.values():
        try:
            dsn.report_unnotified(message)
            if retry.delay_warning_due(message, now):
                dsn.report_delay(message)
        except Exception:
            # The recipients stay unreported (notified_at is rolled back with the DSN),
            # so the next sweep tries again.
            logger.exception("queue_id=%s writing a DSN failed", message.queue_id)


def send_hint(message_id, countdown=None):
    """Queue a deliver_message task; a broker failure is logged, the sweep recovers it."""
    from ..tasks import deliver_message

    try:
        deliver_message.apply_async((message_id,), countdown=countdown)
    except Exception as error:  # noqa: BLE001 - the spool is the source of truth; the sweep re-sends hints
        logger.warning("message_id=%s delivery hint not sent, the sweep will pick it up: %s", message_id, error)
