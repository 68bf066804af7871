"""Local delivery (the MDA): alias expansion and storing mail in local mailboxes.

Each recipient is delivered in one transaction that stores its MailboxMessage rows, adds
remote alias destinations as new recipients of the same message, and marks it delivered,
so a worker that dies half-way leaves nothing half done.
"""
import logging

from django.db import transaction
from django.utils import timezone

from .. import directory, headers
from ..addresses import domain_of
from ..models import MailboxMessage, Recipient
from .types import Reply

logger = logging.getLogger(__name__)

LOCAL_HOST = "local"


def deliver(recipient):
    """Deliver one claimed local recipient and return its Reply.

    An unknown user (5.1.1) or an alias loop (5.4.6) gives a 5xx Reply, not an exception.

    The MailboxMessage rows are saved in the caller's transaction, which also records the
    outcome, so the mailbox copy and the delivered status commit together.
    """
    try:
        finals = directory.expand(recipient.address)
    except directory.AliasLoopError as error:
        return Reply(550, "5.4.6", f"alias expansion loop: {error}", remote_host=LOCAL_HOST)

    mailboxes = []
    remote = []
    unknown = []
    for final in finals:
        if not directory.is_local_domain(domain_of(final)):
            remote.append(final)
            continue
        mailbox = directory.find_mailbox(final)
        if mailbox is None:
            unknown.append(final)
        else:
            mailboxes.append(mailbox)

    if not mailboxes and not remote:
        return Reply(550, "5.1.1", f"<{recipient.address}>: user unknown", remote_host=LOCAL_HOST)
    for final in unknown:
        logger.warning(
            "queue_id=%s to=<%s> alias destination <%s> has no mailbox; it gets its own recipient, which bounces",
            recipient.message.queue_id,
            recipient.address,
            final,
        )

    store_in_mailboxes(recipient, mailboxes)
    forward(recipient, remote + unknown)
    return Reply(250, "2.0.0", describe(mailboxes, remote + unknown), remote_host=LOCAL_HOST)


def store_in_mailboxes(recipient, mailboxes):
    message = recipient.message
    raw = message.raw_bytes
    summary = headers.summarize(raw)
    now = timezone.now()
    MailboxMessage.objects.bulk_create(
        [
            MailboxMessage(
                mailbox=mailbox,
                raw=raw,
                size=len(raw),
                envelope_sender=message.envelope_sender,
                envelope_recipient=mailbox.address,
                queue_id=message.queue_id,
                received_at=now,
                **summary,
            )
            for mailbox in mailboxes
        ]
    )


def forward(recipient, addresses):
    """Add alias destinations as new recipients of the same message.

    These are remote destinations, and local ones without a mailbox, which bounce with
    5.1.1 on their own attempt so the sender learns of them in a DSN. They keep the
    NOTIFY of the alias recipient, and the alias address becomes their original
    recipient, so a DSN names the address the sender used.
    """
    if not addresses:
        return
    original = recipient.original_recipient or f"rfc822;{recipient.address}"
    now = timezone.now()
    Recipient.objects.bulk_create(
        [
            Recipient(
                message=recipient.message,
                address=address,
                domain=domain_of(address),
                notify=recipient.notify,
                original_recipient=original,
                next_attempt_at=now,
            )
            for address in addresses
        ]
    )
    transaction.on_commit(lambda: hint(recipient.message_id))


def hint(message_id):
    from .engine import send_hint

    send_hint(message_id)


def describe(mailboxes, remote):
    parts = [f"stored in {mailbox.address}" for mailbox in mailboxes]
    parts += [f"forwarded to {address}" for address in remote]
    return "; ".join(parts)
