"""The queue summary page: recipient domains by age, like Postfix's qshape, and worker health."""
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from celery import current_app
from django.db.models import Case, Count, IntegerField, Value, When
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .. import conf
from ..models import Recipient, SweepRecord
from .filters import AGE_BUCKETS, PENDING, age_bucket_key, age_bucket_label

logger = logging.getLogger(__name__)

# The page lists the domains with the most recipients, but the totals count every domain.
SHOWN_DOMAINS = 100
# The sweep counts as late after missing this many runs in a row.
SWEEP_LATE_AFTER_INTERVALS = 3
STATUS_CHOICES = {
    PENDING: (Recipient.PENDING_STATUSES, "queued and deferred"),
    Recipient.Status.QUEUED: ((Recipient.Status.QUEUED,), "queued"),
    Recipient.Status.DEFERRED: ((Recipient.Status.DEFERRED,), "deferred"),
    Recipient.Status.HELD: ((Recipient.Status.HELD,), "held"),
}


@dataclass
class ShapeRow:
    domain: str
    counts: list
    total: int = 0
    links: list = field(default_factory=list)
    total_link: str = ""

    @property
    def cells(self):
        return list(zip(self.counts, self.links))


@dataclass
class QueueShape:
    rows: list
    totals: ShapeRow
    domain_count: int


@dataclass
class WorkerStatus:
    checked: bool = False
    names: list = field(default_factory=list)
    error: str = ""
    queue_name: str = ""


def queue_summary_view(model_admin, request):
    status = request.GET.get("status", PENDING)
    if status not in STATUS_CHOICES:
        status = PENDING
    statuses, status_label = STATUS_CHOICES[status]
    changelist_url = reverse("admin:mailhub_message_changelist")
    sweep = SweepRecord.objects.filter(name="sweep").first()
    now = timezone.now()

    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Queue summary",
        "opts": model_admin.model._meta,
        "status": status,
        "status_label": status_label,
        "status_choices": [(key, label) for key, (_, label) in STATUS_CHOICES.items()],
        "bucket_labels": [age_bucket_label(bucket) for bucket in AGE_BUCKETS],
        "shape": build_queue_shape(statuses, status, changelist_url, now),
        "sweep": sweep,
        "sweep_late": sweep is not None and sweep.ran_at < now - sweep_late_after(),
        "workers": ping_workers(conf.get("ADMIN_WORKER_PING_TIMEOUT")),
        "now": now,
    }
    return TemplateResponse(request, "admin/mailhub/queue_summary.html", context)


def build_queue_shape(statuses, status_parameter, changelist_url, now=None):
    """Count recipients per domain and message age bucket, with a link for each count."""
    # NOTE: one GROUP BY over every recipient in the chosen statuses, so the page's cost
    # grows with the queue, as qshape's scan of the queue files does.
    now = now or timezone.now()
    rows = (
        Recipient.objects.filter(status__in=statuses)
        .annotate(bucket=age_bucket_case(now))
        .values("domain", "bucket")
        .annotate(count=Count("id"))
        .order_by()
    )

    counts_by_domain = {}
    for row in rows:
        counts = counts_by_domain.setdefault(row["domain"], [0] * len(AGE_BUCKETS))
        counts[row["bucket"]] += row["count"]

    shape_rows = [ShapeRow(domain=domain, counts=counts, total=sum(counts)) for domain, counts in counts_by_domain.items()]
    shape_rows.sort(key=lambda row: (-row.total, row.domain))
    totals = ShapeRow(
        domain="TOTAL",
        counts=[sum(row.counts[index] for row in shape_rows) for index in range(len(AGE_BUCKETS))],
    )
    totals.total = sum(totals.counts)

    shown = shape_rows[:SHOWN_DOMAINS]
    for row in [totals, *shown]:
        add_links(row, status_parameter, changelist_url)
    return QueueShape(rows=shown, totals=totals, domain_count=len(shape_rows))


def age_bucket_case(now):
    """Return the index of the message's age bucket, the same ranges as the age list filter."""
    whens = [
        When(message__created_at__gt=now - timedelta(minutes=end), then=Value(index))
        for index, (_, end) in enumerate(AGE_BUCKETS)
        if end is not None
    ]
    return Case(*whens, default=Value(len(AGE_BUCKETS) - 1), output_field=IntegerField())


def add_links(row, status_parameter, changelist_url):
    base = {"status": status_parameter}
    if row.domain != "TOTAL":
        base["domain"] = row.domain
    row.links = [
        f"{changelist_url}?{urlencode({**base, 'age': age_bucket_key(bucket)})}" for bucket in AGE_BUCKETS
    ]
    row.total_link = f"{changelist_url}?{urlencode(base)}"


def sweep_late_after():
    return timedelta(seconds=conf.get("SWEEP_INTERVAL") * SWEEP_LATE_AFTER_INTERVALS)


def ping_workers(timeout, app=None):
    """Return the Celery workers of ``app`` (the current app) that consume its default queue.

    Workers of other sites or test runs may share the broker, so only those that reply
    within ``timeout`` seconds and consume ``task_default_queue`` count. The broker
    connection gets the same time limit and no retries, so a broker that is down costs the
    page about ``timeout`` seconds, not the client's default retry loop.
    """
    if not timeout:
        return WorkerStatus()
    app = app or current_app
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            replies = app.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    except Exception as error:  # noqa: BLE001 - any broker failure is shown on the page, not raised
        logger.warning("worker status request to the Celery broker failed: %s", error)
        return WorkerStatus(checked=True, error=str(error) or error.__class__.__name__)
    queue_name = app.conf.task_default_queue
    names = sorted(name for name, queues in replies.items() if any(queue.get("name") == queue_name for queue in queues or []))
    return WorkerStatus(checked=True, names=names, queue_name=queue_name)
