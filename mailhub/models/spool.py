"""The spool: messages as accepted, their envelope recipients and the delivery attempts."""
import secrets

from django.db import models
from django.utils import timezone

# Crockford's base32 without I, L, O and U: queue ids are read aloud and typed by operators.
QUEUE_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
QUEUE_ID_LENGTH = 12


def new_queue_id():
    """Return a random queue id such as ``4F3A2B1C0D9E``, short enough for every log line."""
    # One urandom read per id instead of one per character. The alphabet has 32
    # characters, so the low five bits of a random byte pick each one evenly.
    return "".join(QUEUE_ID_ALPHABET[byte & 31] for byte in secrets.token_bytes(QUEUE_ID_LENGTH))


class Message(models.Model):
    """A message in the spool: the raw bytes as accepted and its envelope."""

    class Source(models.TextChoices):
        BACKEND = "backend", "Django backend"
        SUBMISSION = "submission", "Submission (MSA)"
        MX = "mx", "MX"
        BOUNCE = "bounce", "Bounce (DSN)"

    class Ret(models.TextChoices):
        UNSET = "", "Not given"
        FULL = "FULL", "Full message"
        HDRS = "HDRS", "Headers only"

    queue_id = models.CharField(max_length=16, unique=True, default=new_queue_id, editable=False)
    raw = models.BinaryField(help_text="The message bytes as accepted, trace headers included.")
    envelope_sender = models.CharField(
        max_length=320, blank=True, help_text="MAIL FROM address; empty for the null sender <>."
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    helo_name = models.CharField(max_length=255, blank=True)
    authenticated_user = models.CharField(max_length=150, blank=True)
    size = models.PositiveIntegerField(default=0)
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    subject = models.CharField(max_length=998, blank=True)
    body_8bitmime = models.BooleanField(default=False, help_text="The body contains 8-bit bytes.")
    smtputf8 = models.BooleanField(default=False, help_text="The envelope or headers need SMTPUTF8.")
    dsn_ret = models.CharField(max_length=4, choices=Ret.choices, blank=True)
    dsn_envid = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("retry_message", "Can retry queued mail now"),
            ("hold_message", "Can hold and release queued mail"),
            ("bounce_message", "Can bounce queued mail"),
            ("send_as_any", "Can submit mail with any sender address"),
        ]

    def __str__(self):
        return self.queue_id

    @property
    def raw_bytes(self):
        """Return the raw message as bytes; some databases hand BinaryField back as memoryview."""
        return bytes(self.raw)


class Recipient(models.Model):
    """One envelope recipient of a message, with its own delivery state."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DEFERRED = "deferred", "Deferred"
        DELIVERED = "delivered", "Delivered"
        BOUNCED = "bounced", "Bounced"
        HELD = "held", "Held"

    PENDING_STATUSES = (Status.QUEUED, Status.DEFERRED)
    FINAL_STATUSES = (Status.DELIVERED, Status.BOUNCED)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320)
    domain = models.CharField(max_length=255, help_text="The address's domain, normalised for routing.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    reply_code = models.PositiveSmallIntegerField(null=True, blank=True)
    reply_enhanced_code = models.CharField(max_length=16, blank=True)
    reply_text = models.TextField(blank=True)
    remote_host = models.CharField(max_length=255, blank=True)
    # DSN parameters from RCPT (RFC 3461): NOTIFY as a comma-separated list, ORCPT as given.
    notify = models.CharField(max_length=40, blank=True)
    original_recipient = models.CharField(max_length=500, blank=True)
    # Set when a DSN reported this recipient's final status, so each failure is reported once.
    notified_at = models.DateTimeField(null=True, blank=True)
    delay_notified_at = models.DateTimeField(null=True, blank=True)
    # The connection was lost after the final "." and before the reply (RFC 1047): the
    # remote may have the message, so a later attempt may deliver a duplicate.
    possible_duplicate = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="mailhub_rcpt_due"),
            models.Index(fields=["lease_expires_at"], name="mailhub_rcpt_lease"),
            # Claims for an open session select by domain and read in due order.
            models.Index(fields=["domain", "status", "next_attempt_at"], name="mailhub_rcpt_domain_due"),
            models.Index(fields=["status", "notified_at"], name="mailhub_rcpt_notify"),
            # A worker reads back what it claimed by its lease token.
            models.Index(fields=["lease_token"], name="mailhub_rcpt_token"),
            # The admin recipient list filtered by one status reads the newest recipients
            # of that status first, without sorting the others.
            models.Index(fields=["status", "id"], name="mailhub_rcpt_status_id"),
        ]

    def __str__(self):
        return f"{self.address} ({self.status})"


class DeliveryAttempt(models.Model):
    """One attempt to deliver one recipient, with the reply that ended it."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "Delivered"
        DEFERRED = "deferred", "Deferred"
        BOUNCED = "bounced", "Bounced"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempts")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="attempt_log")
    started_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    remote_host = models.CharField(max_length=255, blank=True)
    reply_code = models.PositiveSmallIntegerField(null=True, blank=True)
    reply_enhanced_code = models.CharField(max_length=16, blank=True)
    reply_text = models.TextField(blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self):
        return f"{self.recipient_id} {self.outcome} {self.reply_code}"


class DestinationSlot(models.Model):
    """A held session slot of one destination, shared by every worker on every machine.

    A worker takes a free slot (or one whose lease expired) before it connects, and frees it
    after QUIT, so no destination sees more sessions at once than DESTINATION_CONCURRENCY.
    """

    destination = models.CharField(max_length=255)
    slot = models.PositiveSmallIntegerField()
    holder = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "slot"], name="mailhub_slot_unique"),
        ]

    def __str__(self):
        return f"{self.destination}#{self.slot}"


class SweepRecord(models.Model):
    """The time and counts of the last periodic sweep, so operators can see that beat runs."""

    name = models.CharField(max_length=32, unique=True)
    ran_at = models.DateTimeField()
    requeued = models.PositiveIntegerField(default=0)
    expired_leases = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)

    def __str__(self):
        return f"{self.name} at {self.ran_at}"
