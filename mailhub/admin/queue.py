"""The queue screens: the message list and page, the recipient list and the raw download."""
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator, smart_split, unescape_string_literal
from django.utils.timesince import timesince
from django.views.decorators.clickjacking import xframe_options_sameorigin

from .. import queue
from ..models import DeliveryAttempt, Message, Recipient
from . import summary
from .actions import QUEUE_ACTIONS, QueuePermissionsMixin
from .filters import AgeFilter, RecipientDomainFilter, RecipientStatusFilter
from .message_view import decode_message, html_preview_response
from .paginator import QueuePaginator
from .summaries import attach_recipient_summaries, format_reply

REPLY_COLUMN_LENGTH = 60


class MessageChangeList(ChangeList):
    """A changelist that adds recipient summaries to the page's messages in fixed queries."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        attach_recipient_summaries(self.result_list)


class ReadOnlyQueueAdmin(QueuePermissionsMixin, admin.ModelAdmin):
    """The spool is written by mailhub only: operators view it and act on it through actions."""

    list_per_page = 100
    # Django's paginator counts every listed row on each page load, but this one stops
    # counting at a bound. The full count is a second COUNT(*) over the whole spool, and facet
    # counts run one more COUNT per filter choice.
    paginator = QueuePaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = QUEUE_ACTIONS

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Message)
class MessageAdmin(ReadOnlyQueueAdmin):
    list_display = [
        "queue_id",
        "sender",
        "recipient_list",
        "status_summary",
        "size",
        "age",
        "attempt_count",
        "next_attempt",
        "last_reply",
    ]
    list_filter = [RecipientStatusFilter, RecipientDomainFilter, "source", AgeFilter, "created_at"]
    search_fields = ["queue_id", "envelope_sender", "message_id", "subject"]
    fieldsets = [
        (None, {"fields": ["queue_id", "envelope_sender", "subject", "message_id", "size", "created_at"]}),
        (
            "Origin",
            {"fields": ["source", "client_address", "helo_name", "authenticated_user"]},
        ),
        (
            "Transport",
            {"fields": ["body_8bitmime", "smtputf8", "dsn_ret", "dsn_envid"]},
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("raw")

    def get_changelist(self, request, **kwargs):
        return MessageChangeList

    def get_search_results(self, request, queryset, search_term):
        """Match each word in a message field or in a recipient address.

        Recipients are matched in a subquery, not a join, so no message is listed twice
        and Django needs no DISTINCT over the whole spool.
        """
        for word in smart_split(search_term):
            if word.startswith(("'", '"')) and word[0] == word[-1]:
                word = unescape_string_literal(word)
            in_message = Q()
            for field in self.search_fields:
                in_message |= Q(**{f"{field}__icontains": word})
            in_recipients = Recipient.objects.filter(address__icontains=word).values("message_id")
            queryset = queryset.filter(in_message | Q(pk__in=in_recipients))
        return queryset, False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("summary/", view(self.summary_view), name="mailhub_message_summary"),
            path("<path:object_id>/raw/", view(self.raw_view), name="mailhub_message_raw"),
            path("<path:object_id>/html/", view(self.html_view), name="mailhub_message_html"),
            *super().get_urls(),
        ]

    @admin.display(description="envelope sender", ordering="envelope_sender")
    def sender(self, message):
        return message.envelope_sender or "<>"

    @admin.display(description="recipients")
    def recipient_list(self, message):
        summary_ = message.recipient_summary
        shown = ", ".join(summary_.first_addresses)
        hidden = summary_.total - len(summary_.first_addresses)
        return f"{shown} and {hidden} more" if hidden > 0 else shown

    @admin.display(description="status")
    def status_summary(self, message):
        counts = message.recipient_summary.status_counts
        return ", ".join(f"{count} {status}" for status, count in counts.items())

    @admin.display(description="age", ordering="created_at")
    def age(self, message):
        return timesince(message.created_at)

    @admin.display(description="attempts")
    def attempt_count(self, message):
        return message.recipient_summary.attempts

    @admin.display(description="next attempt")
    def next_attempt(self, message):
        return describe_next_attempt(message.recipient_summary.next_attempt_at)

    @admin.display(description="last reply")
    def last_reply(self, message):
        reply = format_reply(message.recipient_summary.last_reply)
        return format_html('<span title="{}">{}</span>', reply, Truncator(reply).chars(REPLY_COLUMN_LENGTH))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        if message is not None and self.has_view_permission(request, message):
            extra_context = {**(extra_context or {}), **self.message_page_context(request, message)}
        return super().change_view(request, object_id, form_url, extra_context)

    def message_page_context(self, request, message):
        recipient_admin = self.admin_site._registry[Recipient]
        return {
            "recipients": describe_recipients(message.recipients.all()),
            "attempt_log": DeliveryAttempt.objects.filter(message=message).select_related("recipient"),
            "decoded": decode_message(message.raw_bytes),
            "raw_url": reverse("admin:mailhub_message_raw", args=[message.pk]),
            "html_url": reverse("admin:mailhub_message_html", args=[message.pk]),
            "recipient_actions": recipient_admin.get_action_choices(request, default_choices=[]),
            "recipient_changelist_url": reverse("admin:mailhub_recipient_changelist"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }

    def raw_view(self, request, object_id):
        message = self.get_viewable_message(request, object_id)
        return raw_download(message.raw_bytes, message.queue_id)

    @xframe_options_sameorigin
    def html_view(self, request, object_id):
        message = self.get_viewable_message(request, object_id)
        return html_preview_response(decode_message(message.raw_bytes).html_body)

    def summary_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return summary.queue_summary_view(self, request)

    def get_viewable_message(self, request, object_id):
        message = get_object_or_404(Message, pk=object_id)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        return message

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Recipients go with their message, so deleting them needs no permission of their own.
        perms_needed.discard(Recipient._meta.verbose_name)
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request, obj):
        queue.delete_messages(Message.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        queue.delete_messages(queryset)


@admin.register(Recipient)
class RecipientAdmin(ReadOnlyQueueAdmin):
    list_display = ["address", "message_link", "status", "attempts", "next_attempt_at", "reply", "remote_host"]
    list_filter = [RecipientStatusFilter, RecipientDomainFilter, AgeFilter]
    search_fields = ["address", "message__queue_id"]
    list_select_related = ["message"]
    ordering = ["-id"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("message__raw")

    def has_delete_permission(self, request, obj=None):
        # A single recipient leaves the queue by bouncing. Mail is deleted per message.
        return False

    @admin.display(description="message", ordering="message__created_at")
    def message_link(self, recipient):
        url = reverse("admin:mailhub_message_change", args=[recipient.message_id])
        return format_html('<a href="{}">{}</a>', url, recipient.message.queue_id)

    @admin.display(description="last reply")
    def reply(self, recipient):
        return Truncator(format_reply(recipient)).chars(REPLY_COLUMN_LENGTH)


def describe_recipients(recipients):
    """Return the recipients with ``next_attempt_label`` set for the message page."""
    recipients = list(recipients)
    for recipient in recipients:
        pending = recipient.status in Recipient.PENDING_STATUSES
        recipient.next_attempt_label = describe_next_attempt(recipient.next_attempt_at) if pending else "-"
    return recipients


def describe_next_attempt(when):
    if when is None:
        return "-"
    now = timezone.now()
    if when <= now:
        return "due now"
    return f"in {timesince(now, when)}"


def raw_download(raw, queue_id):
    response = HttpResponse(raw, content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="{queue_id}.eml"'
    return response
