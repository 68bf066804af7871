"""Queue actions shared by the message and recipient lists: retry now, hold, release, bounce.

Each action runs the matching operation of mailhub.queue on the selected recipients (all
recipients of the selected messages), needs its own permission and writes one admin log
entry per message it touched. Deleting messages goes through Django's own delete action.
"""
import logging
from collections import defaultdict

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme

from .. import queue
from ..models import Message, Recipient

logger = logging.getLogger(__name__)

DEFAULT_BOUNCE_REASON = "Bounced by the postmaster"
# A log entry names this many addresses of a message and counts the rest.
LOGGED_ADDRESSES = 5
BOUNCE_CONFIRMATION_SHOWN = 50


class QueuePermissionsMixin:
    """The permission checks that the queue actions name in ``permissions=[...]``."""

    def has_retry_permission(self, request):
        return request.user.has_perm("mailhub.retry_message")

    def has_hold_permission(self, request):
        return request.user.has_perm("mailhub.hold_message")

    def has_bounce_permission(self, request):
        return request.user.has_perm("mailhub.bounce_message")


def recipients_of(queryset):
    if queryset.model is Recipient:
        return queryset
    return Recipient.objects.filter(message__in=queryset.values("pk"))


@admin.action(permissions=["retry"], description="Retry now")
def retry_now(modeladmin, request, queryset):
    return run_operation(modeladmin, request, queryset, queue.retry_now, "Retried now")


@admin.action(permissions=["hold"], description="Hold")
def hold(modeladmin, request, queryset):
    return run_operation(modeladmin, request, queryset, queue.hold, "Held")


@admin.action(permissions=["hold"], description="Release from hold")
def release(modeladmin, request, queryset):
    return run_operation(modeladmin, request, queryset, queue.release, "Released")


@admin.action(permissions=["bounce"], description="Bounce now (send a DSN)")
def bounce_now(modeladmin, request, queryset):
    """Show a confirmation page with the bounce reason, then bounce on its POST."""
    if request.POST.get("confirm_bounce") != "yes":
        return render_bounce_confirmation(modeladmin, request, queryset)

    reason = request.POST.get("reason", "").strip() or DEFAULT_BOUNCE_REASON

    def bounce_with_reason(recipients):
        return queue.bounce_now(recipients, reason)

    return run_operation(modeladmin, request, queryset, bounce_with_reason, f"Bounced ({reason})")


QUEUE_ACTIONS = [retry_now, hold, release, bounce_now]


def run_operation(modeladmin, request, queryset, operation, verb):
    """Apply a mailhub.queue operation, log it per message and report the count."""
    recipients = recipients_of(queryset)
    log_entries = build_log_entries(request, recipients, verb)

    count = operation(recipients)

    LogEntry.objects.bulk_create(log_entries)
    logger.info(
        "admin action %r by user=%s changed %d recipients of %d messages",
        verb,
        request.user.get_username(),
        count,
        len(log_entries),
        extra={"recipient_count": count, "message_count": len(log_entries)},
    )
    modeladmin.message_user(request, f"{verb}: {count} recipient(s) changed.", messages.SUCCESS)
    return redirect_to_next(request)


def build_log_entries(request, recipients, verb):
    """Return unsaved LogEntry rows, one per message, naming the recipients acted on."""
    addresses = defaultdict(list)
    queue_ids = {}
    for message_id, queue_id, address in recipients.values_list("message_id", "message__queue_id", "address"):
        addresses[message_id].append(address)
        queue_ids[message_id] = queue_id

    content_type = ContentType.objects.get_for_model(Message)
    return [
        LogEntry(
            user_id=request.user.pk,
            content_type=content_type,
            object_id=str(message_id),
            object_repr=queue_ids[message_id],
            action_flag=CHANGE,
            change_message=f"{verb}: {describe_addresses(message_addresses)}",
        )
        for message_id, message_addresses in addresses.items()
    ]


def describe_addresses(addresses):
    named = ", ".join(addresses[:LOGGED_ADDRESSES])
    rest = len(addresses) - LOGGED_ADDRESSES
    return f"{named} and {rest} more" if rest > 0 else named


def redirect_to_next(request):
    """Return a redirect to the page the form came from, or None for the changelist."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return HttpResponseRedirect(target)
    return None


def render_bounce_confirmation(modeladmin, request, queryset):
    # The statuses that mailhub.queue.bounce_now takes; delivered and bounced mail stays as it is.
    recipients = recipients_of(queryset).filter(status__in=(*Recipient.PENDING_STATUSES, Recipient.Status.HELD))
    recipient_count = recipients.count()
    shown = list(recipients.select_related("message").defer("message__raw")[:BOUNCE_CONFIRMATION_SHOWN])
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Bounce recipients now?",
        "opts": modeladmin.model._meta,
        "queryset": queryset,
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "recipients": shown,
        "recipient_count": recipient_count,
        "hidden_count": recipient_count - len(shown),
        "default_reason": DEFAULT_BOUNCE_REASON,
        "next": request.POST.get("next", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/mailhub/bounce_confirmation.html", context)
