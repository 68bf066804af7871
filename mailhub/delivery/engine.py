"""The store-and-forward core: deliver claimed recipients and record what happened.

Claimed recipients are grouped by route, and a local route goes to local delivery. A
remote route takes a destination slot and opens one SMTP session. The session sends every
due message for that destination, with each message's commands pipelined behind the
previous message's data. While it is open, the engine claims more due recipients of the
same domains, and for a relay also of other domains routed the same way. Each recipient
ends delivered, deferred (with its next attempt time) or bounced. The outcomes of a batch
are stored together, which also releases their leases, and DSNs for the finished
recipients follow.
"""
import dataclasses
import logging
import time
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
# at most this many batches before it ends, so a worker process stuck behind one large
# destination still gets to the hints of other destinations.
MAX_BATCHES_PER_SESSION = 50


def deliver_message(message_id):
    """Deliver the due recipients of one message; returns how many were claimed."""
    token, recipients = claim.claim_message(message_id)
    return deliver_claimed(token, recipients)


def deliver_due(limit=None):
    """Deliver one batch of due recipients of any message; returns how many were claimed."""
    token, recipients = claim.claim(limit=limit)
    return deliver_claimed(token, recipients)


def deliver_next_domain():
    """Deliver a batch of due recipients of the domain that is due first; returns how many were claimed.

    A batch of one domain fills one SMTP session, where a batch of the oldest due
    recipients of every domain would open a session for each of them.
    """
    domain = claim.first_due_domain()
    if domain is None:
        return 0
    token, recipients = claim.claim_for_domains([domain], conf.get("CLAIM_BATCH"))
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
        release_unrecorded(token, recipients)
        send_reports(recipients)
    return len(recipients)


def release_unrecorded(token, recipients):
    """Give back the lease of recipients that got no outcome; a recorded one has dropped it."""
    if any(recipient.lease_token == token for recipient in recipients):
        claim.release(token)


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
        renew_slot = Renewal(lambda: slots.renew(holder))
        try:
            with client.open_session(route) as session:
                if send_batch(session, token, recipients, renew_slot) and session.is_connected:
                    send_more(session, route, recipients, renew_slot)
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


def send_more(session, route, first_batch, renew_slot):
    """Claim and send more due recipients of the route's domains over the open session.

    When they are done, a relay session goes on with the next due domain that is routed
    to the same relay in the same way, as one connection to a smarthost carries mail
    for every domain.
    """
    domains = {recipient.domain for recipient in first_batch}
    for _ in range(MAX_BATCHES_PER_SESSION):
        token, claimed = claim.claim_for_domains(domains, conf.get("CLAIM_BATCH"))
        if not claimed:
            domain = next_domain_on_route(route)
            if domain is None:
                return
            # The domains done so far stay in the set, so one claim can take recipients
            # of several domains that arrive for this relay meanwhile.
            domains = domains | {domain}
            continue
        try:
            healthy = send_batch(session, token, bounce_looping(token, claimed), renew_slot)
        finally:
            release_unrecorded(token, claimed)
            send_reports(claimed)
        if not healthy or not session.is_connected:
            return


def next_domain_on_route(route):
    """Return the first due domain if a relay route like ``route`` serves it, else None."""
    if route.kind != "relay":
        return None
    domain = claim.first_due_domain()
    if domain is None:
        return None
    candidate = resolve(domain)
    if isinstance(candidate, Reply) or dataclasses.replace(candidate, domain=route.domain) != route:
        return None
    return domain


def send_batch(session, token, recipients, renew_slot):
    """Send each message of the batch; returns False once the session has failed."""
    renew_lease = Renewal(lambda: claim.renew(token))
    unrecorded = UnrecordedOutcomes(token)
    chunks = [
        chunk
        for message_recipients in group_by_message(recipients).values()
        for chunk in chunked(message_recipients, conf.get("RECIPIENTS_PER_TRANSACTION"))
    ]

    def renew():
        renew_lease()
        renew_slot()

    try:
        for chunk, replies in send_chunks(session, chunks, renew):
            unrecorded.add(zip(chunk, replies))
    finally:
        # Also when sending raised: what was sent must be recorded, or it is sent again.
        unrecorded.record()
    return session.is_connected


class UnrecordedOutcomes:
    """Replies of sent recipients waiting to be stored together under one lease token."""

    def __init__(self, token):
        self.token = token
        self.results = []
        self.oldest = None

    def add(self, results):
        if not self.results:
            self.oldest = time.monotonic()
        self.results.extend(results)
        waited = time.monotonic() - self.oldest
        if len(self.results) >= conf.get("DELIVERY_RECORD_RECIPIENTS") or waited >= conf.get("DELIVERY_RECORD_SECONDS"):
            self.record()

    def record(self):
        results, self.results = self.results, []
        if results:
            outcomes.record(self.token, results)


class Renewal:
    """Run ``renew`` again once a quarter of LEASE_SECONDS has passed since the last run.

    Each SMTP transaction then starts with at least three quarters of its lease left,
    without a database write before every message.
    """

    def __init__(self, renew):
        self.renew = renew
        self.renewed_at = time.monotonic()

    def __call__(self):
        now = time.monotonic()
        if now - self.renewed_at >= conf.get("LEASE_SECONDS") / 4:
            self.renew()
            self.renewed_at = now


def send_chunks(session, chunks, renew):
    """Send each chunk as one envelope over the session; yield ``(chunk, replies)`` in order.

    Once the session breaks, the remaining chunks get the session failure reply unsent.
    """
    position = 0
    while position < len(chunks) and session.is_connected:
        try:
            for replies in session.send_each(envelopes_of(chunks[position:], renew)):
                chunk = chunks[position]
                position += 1
                if len(replies) != len(chunk):
                    logger.error(
                        "queue_id=%s the client returned %d replies for %d recipients",
                        chunk[0].message.queue_id,
                        len(replies),
                        len(chunk),
                    )
                    session.abort()
                    yield chunk, [session_failure_reply()] * len(chunk)
                    break
                yield chunk, list(replies)
        except DeliveryError as error:
            failed = chunks[position]
            logger.info("queue_id=%s transaction failed: %s", failed[0].message.queue_id, error.reply)
            position += 1
            yield failed, [error.reply] * len(failed)
        except OSError as error:
            logger.warning("queue_id=%s session broke: %s", chunks[position][0].message.queue_id, error)
            session.abort()
            break
    for chunk in chunks[position:]:
        yield chunk, [session_failure_reply()] * len(chunk)


def envelopes_of(chunks, renew):
    """Yield the envelope of each chunk, renewing the leases before each transaction."""
    for chunk in chunks:
        renew()
        yield build_envelope(chunk)


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
    """Send the DSNs that the recipients' messages now owe: failures, successes, delays.

    Only messages with a recipient of this batch that may owe a report are read. Other
    workers report what they finished, and the sweep reports what any worker missed.
    """
    now = timezone.now()
    finished = {recipient.message_id: recipient.message for recipient in recipients if owes_final_report(recipient)}
    deferred = {recipient.message_id: recipient.message for recipient in recipients if owes_delay_report(recipient)}
    for message_id, message in (finished | deferred).items():
        try:
            if message_id in finished:
                dsn.report_unnotified(message)
            if message_id in deferred and retry.delay_warning_due(message, now):
                dsn.report_delay(message)
        except Exception:
            # The recipients stay unreported (notified_at is rolled back with the DSN),
            # so the next sweep tries again.
            logger.exception("queue_id=%s writing a DSN failed", message.queue_id)


def owes_final_report(recipient):
    if recipient.notified_at is not None:
        return False
    if recipient.status == Recipient.Status.BOUNCED:
        return True
    return recipient.status == Recipient.Status.DELIVERED and "SUCCESS" in recipient.notify.upper()


def owes_delay_report(recipient):
    return recipient.status == Recipient.Status.DEFERRED and recipient.delay_notified_at is None


def send_hint(message_id, countdown=None):
    """Queue a deliver_message task; a broker failure is logged, the sweep recovers it."""
    from ..tasks import deliver_message

    try:
        deliver_message.apply_async((message_id,), countdown=countdown)
    except Exception as error:  # noqa: BLE001 - the spool is the source of truth; the sweep re-sends hints
        logger.warning("message_id=%s delivery hint not sent, the sweep will pick it up: %s", message_id, error)
