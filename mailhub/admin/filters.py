"""List filters for the queue: recipient status, recipient domain and age.

A message matches when one of its recipients matches. Status and domain are checked
against the same recipient, so "deferred at example.com" never matches a message whose
deferred recipient is elsewhere and whose example.com recipient was delivered.
"""
from datetime import timedelta

from django.contrib import admin
from django.utils import timezone

from ..addresses import normalize_domain
from ..models import Recipient
from .recipient_match import filter_by_recipients

PENDING = "pending"
STATUS_PARAMETER = "status"
DOMAIN_PARAMETER = "domain"
AGE_PARAMETER = "age"

# The age buckets of Postfix's qshape, in minutes since the message arrived. None is open ended.
AGE_BUCKETS = [(0, 5), (5, 10), (10, 20), (20, 40), (40, 80), (80, 160), (160, 320), (320, 640), (640, 1280), (1280, None)]


def age_bucket_key(bucket):
    start, end = bucket
    return f"{start}-{end}" if end is not None else f"{start}-"


def age_bucket_label(bucket):
    start, end = bucket
    return f"{start}-{end} min" if end is not None else f"{start}+ min"


def parse_age_bucket(key):
    """Return (start, end) minutes for a key such as ``10-20`` or ``1280-``, or None."""
    for bucket in AGE_BUCKETS:
        if age_bucket_key(bucket) == key:
            return bucket
    return None


def recipient_conditions(params):
    """Return the Recipient lookups that the status and domain parameters ask for."""
    conditions = {}
    status = params.get(STATUS_PARAMETER)
    domain = params.get(DOMAIN_PARAMETER)

    if status == PENDING:
        conditions["status__in"] = Recipient.PENDING_STATUSES
    elif status in Recipient.Status.values:
        conditions["status"] = status
    if domain:
        conditions["domain"] = normalize_domain(domain)
    return conditions


def filter_params(request):
    return {name: request.GET.get(name) for name in (STATUS_PARAMETER, DOMAIN_PARAMETER)}


class RecipientStatusFilter(admin.SimpleListFilter):
    title = "recipient status"
    parameter_name = STATUS_PARAMETER

    def lookups(self, request, model_admin):
        return [(PENDING, "Pending (queued or deferred)"), *Recipient.Status.choices]

    def queryset(self, request, queryset):
        conditions = recipient_conditions(filter_params(request))
        if "status" not in conditions and "status__in" not in conditions:
            return queryset
        return filter_by_recipients(queryset, conditions)


class RecipientDomainFilter(admin.ListFilter):
    """A text box for the recipient domain.

    Listing the domains as links would scan and group every pending recipient on each
    page load. The queue summary lists the domains with counts instead.
    """

    title = "recipient domain"
    parameter_name = DOMAIN_PARAMETER
    template = "admin/mailhub/domain_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        if self.parameter_name in params:
            values = params.pop(self.parameter_name)
            self.used_parameters[self.parameter_name] = values[-1] if isinstance(values, list) else values

    def value(self):
        return self.used_parameters.get(self.parameter_name, "")

    def has_output(self):
        return True

    def expected_parameters(self):
        return [self.parameter_name]

    def choices(self, changelist):
        """Yield one entry: the other query parameters to keep and the link that clears the filter."""
        kept = []
        for name, values in changelist.params.items():
            if name in (self.parameter_name, "p"):
                continue
            for value in values if isinstance(values, list) else [values]:
                kept.append((name, value))
        yield {
            "value": self.value(),
            "kept_parameters": kept,
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def queryset(self, request, queryset):
        conditions = recipient_conditions(filter_params(request))
        # With a status chosen too, the status filter applies both conditions at once.
        if "domain" not in conditions or len(conditions) > 1:
            return queryset
        return filter_by_recipients(queryset, conditions)


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = AGE_PARAMETER

    def lookups(self, request, model_admin):
        return [(age_bucket_key(bucket), age_bucket_label(bucket)) for bucket in AGE_BUCKETS]

    def queryset(self, request, queryset):
        bucket = parse_age_bucket(self.value())
        if bucket is None:
            return queryset
        field = "message__created_at" if queryset.model is Recipient else "created_at"
        return filter_by_age(queryset, bucket, field=field)


def filter_by_age(queryset, bucket, *, field, now=None):
    """Keep the rows whose ``field`` lies in the age bucket (start and end in minutes)."""
    now = now or timezone.now()
    start, end = bucket
    queryset = queryset.filter(**{f"{field}__lte": now - timedelta(minutes=start)})
    if end is not None:
        queryset = queryset.filter(**{f"{field}__gt": now - timedelta(minutes=end)})
    return queryset
