"""The mailbox screens: domains, mailboxes, aliases and the mail stored in mailboxes."""
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.clickjacking import xframe_options_sameorigin

from ..directory import has_postmaster
from ..models import Alias, Domain, Mailbox, MailboxMessage
from .message_view import decode_message, html_preview_response
from .queue import raw_download


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "mailbox_count", "alias_count", "created_at"]
    list_filter = ["active"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                mailbox_total=Count("mailboxes", distinct=True),
                alias_total=Count("aliases", distinct=True),
            )
        )

    def save_model(self, request, domain, form, change):
        super().save_model(request, domain, form, change)
        if not has_postmaster(domain):
            # RFC 5321 section 4.5.1 requires a postmaster address in every domain that accepts mail.
            messages.warning(
                request,
                f"no postmaster@{domain.name} yet: add a mailbox or an alias for it, because RFC 5321 "
                "requires every mail domain to accept mail for postmaster",
            )

    @admin.display(description="mailboxes", ordering="mailbox_total")
    def mailbox_count(self, domain):
        return domain.mailbox_total

    @admin.display(description="aliases", ordering="alias_total")
    def alias_count(self, domain):
        return domain.alias_total


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["address", "user", "active", "message_count", "total_size", "messages_link"]
    list_filter = ["active", "domain"]
    search_fields = ["address", "user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["address"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(message_total=Count("messages"), size_total=Sum("messages__size"))
        )

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, mailbox):
        return mailbox.message_total

    @admin.display(description="total size", ordering="size_total")
    def total_size(self, mailbox):
        return filesizeformat(mailbox.size_total or 0)

    @admin.display(description="")
    def messages_link(self, mailbox):
        url = reverse("admin:mailhub_mailboxmessage_changelist")
        return format_html('<a href="{}?mailbox__id__exact={}">View messages</a>', url, mailbox.pk)


class AliasForm(forms.ModelForm):
    replaces_mailbox = forms.BooleanField(
        required=False,
        label="Replace the mailbox",
        help_text="Allow a source that is also a mailbox address. The alias then receives all of that mailbox's mail.",
    )

    class Meta:
        model = Alias
        fields = "__all__"

    def clean(self):
        cleaned_data = super().clean()
        # Alias.clean() reads the flag during the model validation that follows this method.
        self.instance.replaces_mailbox = cleaned_data.get("replaces_mailbox", False)
        return cleaned_data


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    form = AliasForm
    list_display = ["source", "destination_summary", "active"]
    list_filter = ["active", "domain"]
    search_fields = ["source", "destinations"]
    readonly_fields = ["source"]

    @admin.display(description="destinations")
    def destination_summary(self, alias):
        return ", ".join(alias.destination_list())


@admin.register(MailboxMessage)
class MailboxMessageAdmin(admin.ModelAdmin):
    """Stored mail, newest first, read-only because it is the message as delivered."""

    list_display = ["received_at", "mailbox", "sender", "subject", "date", "size"]
    list_filter = ["mailbox", "seen", "received_at"]
    search_fields = ["subject", "from_header", "envelope_sender", "message_id", "queue_id"]
    list_select_related = ["mailbox"]
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = [
        "mailbox",
        "envelope_sender",
        "envelope_recipient",
        "from_header",
        "to_header",
        "subject",
        "date",
        "message_id",
        "queue_id",
        "size",
        "received_at",
        "seen",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("raw")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="sender", ordering="from_header")
    def sender(self, message):
        return message.from_header or message.envelope_sender

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/raw/", view(self.raw_view), name="mailhub_mailboxmessage_raw"),
            path("<path:object_id>/html/", view(self.html_view), name="mailhub_mailboxmessage_html"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        if message is not None and self.has_view_permission(request, message):
            extra_context = {
                **(extra_context or {}),
                "decoded": decode_message(message.raw_bytes),
                "raw_url": reverse("admin:mailhub_mailboxmessage_raw", args=[message.pk]),
                "html_url": reverse("admin:mailhub_mailboxmessage_html", args=[message.pk]),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def raw_view(self, request, object_id):
        message = self.get_viewable_message(request, object_id)
        return raw_download(message.raw_bytes, message.queue_id or f"mailbox-message-{message.pk}")

    @xframe_options_sameorigin
    def html_view(self, request, object_id):
        message = self.get_viewable_message(request, object_id)
        return html_preview_response(decode_message(message.raw_bytes).html_body)

    def get_viewable_message(self, request, object_id):
        message = get_object_or_404(MailboxMessage, pk=object_id)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        return message
