"""Per-message recipient summaries for one page of the message list, in a fixed number of queries."""
from dataclasses import dataclass, field

from django.db.models import Count, F, Min, Q, Sum, Window
from django.db.models.functions import RowNumber

from ..models import Recipient

# The message list shows this many addresses of each message and counts the rest.
SHOWN_ADDRESSES = 3


@dataclass
class RecipientSummary:
    total: int = 0
    status_counts: dict = field(default_factory=dict)
    attempts: int = 0
    next_attempt_at: object = None
    first_addresses: list = field(default_factory=list)
    last_reply: object = None


def attach_recipient_summaries(messages):
    """Set ``recipient_summary`` on each message: three queries, however many messages."""
    summaries = {message.pk: RecipientSummary() for message in messages}
    if summaries:
        add_counts(summaries)
        add_first_addresses(summaries)
        add_last_replies(summaries)
    for message in messages:
        message.recipient_summary = summaries[message.pk]


def add_counts(summaries):
    status_counts = {
        status: Count("id", filter=Q(status=status)) for status in Recipient.Status.values
    }
    rows = (
        Recipient.objects.filter(message_id__in=list(summaries))
        .values("message_id")
        .annotate(
            total=Count("id"),
            attempt_sum=Sum("attempts"),
            next_due=Min("next_attempt_at", filter=Q(status__in=Recipient.PENDING_STATUSES)),
            **status_counts,
        )
        .order_by()
    )
    for row in rows:
        summary = summaries[row["message_id"]]
        summary.total = row["total"]
        summary.attempts = row["attempt_sum"] or 0
        summary.next_attempt_at = row["next_due"]
        summary.status_counts = {status: row[status] for status in Recipient.Status.values if row[status]}


def add_first_addresses(summaries):
    position = Window(RowNumber(), partition_by=[F("message_id")], order_by=[F("id").asc()])
    rows = (
        Recipient.objects.filter(message_id__in=list(summaries))
        .annotate(position=position)
        .filter(position__lte=SHOWN_ADDRESSES)
        .values_list("message_id", "address")
        .order_by("message_id", "id")
    )
    for message_id, address in rows:
        summaries[message_id].first_addresses.append(address)


def add_last_replies(summaries):
    """Set the latest remote reply that any recipient of the message got."""
    position = Window(RowNumber(), partition_by=[F("message_id")], order_by=[F("updated_at").desc(), F("id").desc()])
    rows = (
        Recipient.objects.filter(message_id__in=list(summaries), reply_code__isnull=False)
        .annotate(position=position)
        .filter(position=1)
        .only("message_id", "reply_code", "reply_enhanced_code", "reply_text", "remote_host")
    )
    for recipient in rows:
        summaries[recipient.message_id].last_reply = recipient


def format_reply(recipient):
    """Return a reply as ``451 4.7.1 text``, or an empty string when there was none."""
    if recipient is None or recipient.reply_code is None:
        return ""
    parts = [str(recipient.reply_code), recipient.reply_enhanced_code, recipient.reply_text]
    return " ".join(part for part in parts if part)
