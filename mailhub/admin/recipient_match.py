"""Filters that keep the queue list rows whose recipients match a status or a domain.

PostgreSQL plans these queries from its table statistics. SQLite has none, because Django
never runs ANALYZE, so it plans each query shape the same way whatever the spool contains.
On SQLite this module picks the shape that reads an index instead of the whole spool:

- Recipient list, one status: mailhub_rcpt_status_id is in id order within a status, so
  a page reads 100 index entries.
- Recipient list, a domain or several statuses: ``id IN (subquery)`` collects the matching
  ids through an index, and SQLite reads them in id order without sorting the rows. A plain
  filter would walk mailhub_rcpt_status_id through every recipient of the status to find
  the few of one domain.
- Message list: ``id IN (subquery)`` collects every matching recipient, then looks up and
  sorts their messages, which is cheap when few recipients match. ``EXISTS`` walks the
  messages in list order and looks up the recipients of each, which is cheap when most
  messages match but reads the whole spool when few do. A sample of the oldest and the
  newest recipients decides between the two.
"""
from django.db import connections
from django.db.models import Count, Exists, OuterRef, Q

from ..models import Recipient

# The number of recipients sampled at each end of the spool.
SAMPLE_SIZE = 1000
# The matching share of each sample above which the message list walks the messages. In
# SQLite's plans the page walks from the newest message and the count from the oldest.
# NOTE: an estimate, not a measured crossover. A spool that matches at both ends but
# rarely in between still makes the count walk through the middle.
COMMON_SHARE = 0.5


def filter_by_recipients(queryset, conditions):
    """Return the messages with a recipient that matches every condition, or the matching recipients."""
    if connections[queryset.db].vendor != "sqlite":
        return filter_as_planned(queryset, conditions)
    if queryset.model is Recipient:
        return filter_recipients(queryset, conditions)
    return filter_messages(queryset, conditions)


def filter_as_planned(queryset, conditions):
    if queryset.model is Recipient:
        return queryset.filter(**conditions)
    return queryset.filter(pk__in=Recipient.objects.filter(**conditions).values("message_id"))


def filter_recipients(queryset, conditions):
    if list(conditions) == ["status"]:
        return queryset.filter(**conditions)
    return queryset.filter(pk__in=Recipient.objects.filter(**conditions).values("pk"))


def filter_messages(queryset, conditions):
    matching = Recipient.objects.filter(**conditions)
    if is_common(conditions, queryset.db):
        return queryset.filter(Exists(matching.filter(message=OuterRef("pk"))))
    return queryset.filter(pk__in=matching.values("message_id"))


def is_common(conditions, using):
    """Return whether at least COMMON_SHARE of the oldest and of the newest recipients match."""
    # Both samples always run, so a list page runs the same queries whatever the spool contains.
    shares = [matching_share(conditions, order, using) for order in ("id", "-id")]
    return min(shares) >= COMMON_SHARE


def matching_share(conditions, order, using):
    """Return the matching share of the first SAMPLE_SIZE recipients in ``order``, or 0 for an empty spool."""
    recipients = Recipient.objects.using(using)
    sample = recipients.order_by(order).values("pk")[:SAMPLE_SIZE]
    counts = recipients.filter(pk__in=sample).aggregate(total=Count("pk"), matching=Count("pk", filter=Q(**conditions)))
    return counts["matching"] / counts["total"] if counts["total"] else 0
