"""Local mail: the domains mailhub serves, their mailboxes and aliases, and stored mail."""
from django.conf import settings
from django.db import models
from django.utils import timezone

from ..addresses import normalize_domain


class Domain(models.Model):
    """A mail domain that mailhub serves: the MX listener accepts mail for it."""

    name = models.CharField(max_length=255, unique=True, help_text="Lower case, as an A-label.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        self.name = normalize_domain(self.name)
        super().save(*args, **kwargs)


class Mailbox(models.Model):
    """A local mailbox, owned by a Django user who logs in with that user's password."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="mailboxes")
    local_part = models.CharField(max_length=64)
    address = models.CharField(max_length=320, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="mailboxes",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "mailboxes"

    def __str__(self):
        return self.address

    def save(self, *args, **kwargs):
        self.local_part = self.local_part.lower()
        self.address = f"{self.local_part}@{self.domain.name}"
        super().save(*args, **kwargs)


class Alias(models.Model):
    """An alias: mail to its source goes to each destination, local or remote.

    An empty local part makes a catch-all for the domain, used only when no mailbox or
    other alias matches.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    local_part = models.CharField(max_length=64, blank=True, help_text="Empty for a catch-all.")
    source = models.CharField(max_length=320, unique=True, editable=False)
    destinations = models.TextField(help_text="Destination addresses, one per line or comma-separated.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["source"]
        verbose_name_plural = "aliases"

    def __str__(self):
        return self.source

    def save(self, *args, **kwargs):
        self.local_part = self.local_part.lower()
        self.source = f"{self.local_part}@{self.domain.name}"
        super().save(*args, **kwargs)

    @property
    def is_catch_all(self):
        return not self.local_part

    def destination_list(self):
        """Return the destination addresses in the order given, without blanks."""
        parts = self.destinations.replace(",", "\n").splitlines()
        return [part.strip() for part in parts if part.strip()]


class MailboxMessage(models.Model):
    """A message delivered into a local mailbox: raw bytes plus decoded fields for listing."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="messages")
    raw = models.BinaryField()
    size = models.PositiveIntegerField(default=0)
    envelope_sender = models.CharField(max_length=320, blank=True)
    envelope_recipient = models.CharField(max_length=320, blank=True)
    from_header = models.CharField(max_length=998, blank=True)
    to_header = models.TextField(blank=True)
    subject = models.CharField(max_length=998, blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    date = models.DateTimeField(null=True, blank=True)
    queue_id = models.CharField(max_length=16, blank=True)
    seen = models.BooleanField(default=False)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["mailbox", "-received_at"], name="mailhub_mbox_recent")]

    def __str__(self):
        return f"{self.mailbox.address}: {self.subject}"

    @property
    def raw_bytes(self):
        return bytes(self.raw)
