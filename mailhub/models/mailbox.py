"""Local mail: the domains mailhub serves, their mailboxes and aliases, and stored mail."""
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.utils import timezone

from .. import validators
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

    def clean(self):
        # Normalised here, before validate_unique(), so "EXAMPLE.TEST" is reported as a
        # duplicate of "example.test" instead of failing in the database.
        try:
            validators.validate_served_domain(self.name)
        except ValidationError as error:
            raise ValidationError({"name": error.error_list}) from None
        self.name = normalize_domain(self.name)

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

    def clean(self):
        self.local_part = self.local_part.lower()
        try:
            validators.validate_local_part(self.local_part)
        except ValidationError as error:
            raise ValidationError({"local_part": error.error_list}) from None
        if self.domain_id is None:
            return

        self.address = f"{self.local_part}@{self.domain.name}"
        self.check_alias_address()

    def check_alias_address(self):
        # An exact alias wins over a mailbox in every look-up, so the new mailbox would get
        # no mail. The operator decides which of the two goes.
        if not Alias.objects.filter(source=self.address).exists():
            return
        raise ValidationError(
            {
                "local_part": ValidationError(
                    "an alias already uses %(address)s and would take all of this mailbox's mail; "
                    "delete the alias first, or make it point to another address",
                    code="alias_exists",
                    params={"address": self.address},
                )
            }
        )

    def validate_unique(self, exclude=None):
        super().validate_unique(exclude=exclude)
        check_computed_unique(self, "address", exclude, f"mailbox {self.address} already exists")

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

    # Set to True to allow a source that is also a mailbox address: the alias then takes
    # the mailbox's mail, because an exact alias wins over a mailbox in every look-up.
    replaces_mailbox = False

    def clean(self):
        self.local_part = self.local_part.lower()
        errors = {}
        if self.local_part:
            try:
                validators.validate_local_part(self.local_part)
            except ValidationError as error:
                errors["local_part"] = error.error_list
        try:
            validators.validate_destinations(self.destination_list())
        except ValidationError as error:
            errors["destinations"] = error.error_list
        if errors:
            raise ValidationError(errors)
        if self.domain_id is None:
            return

        self.source = f"{self.local_part}@{self.domain.name}"
        self.check_mailbox_address()
        self.check_loop()

    def check_mailbox_address(self):
        if self.replaces_mailbox or not Mailbox.objects.filter(address=self.source).exists():
            return
        raise ValidationError(
            {
                "local_part": ValidationError(
                    "%(source)s is a mailbox address; an alias for it would take all of the mailbox's mail. "
                    "Choose another address, or confirm that the alias replaces the mailbox",
                    code="mailbox_exists",
                    params={"source": self.source},
                )
            }
        )

    def check_loop(self):
        # Imported here because mailhub.directory imports the models.
        from ..directory import MAX_ALIAS_DEPTH, find_alias_loop

        chain = find_alias_loop(self)
        if chain is None:
            return
        kind = "loops back" if chain[-1] in chain[:-1] else f"is deeper than {MAX_ALIAS_DEPTH} levels"
        raise ValidationError(
            {
                "destinations": ValidationError(
                    "alias expansion %(kind)s: %(chain)s; change a destination so the chain ends at a mailbox or a remote address",
                    code="alias_loop",
                    params={"kind": kind, "chain": " -> ".join(chain)},
                )
            }
        )

    def validate_unique(self, exclude=None):
        super().validate_unique(exclude=exclude)
        check_computed_unique(self, "source", exclude, f"alias {self.source} already exists")

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


def check_computed_unique(instance, field_name, exclude, message):
    """Raise ValidationError if another row has the value that clean() computed for ``field_name``.

    Django's unique check skips fields that a form does not show, and these are computed
    from the domain and the local part, so the error is put on the local part.
    """
    value = getattr(instance, field_name)
    if not value:
        return
    duplicates = type(instance)._default_manager.filter(**{field_name: value}).exclude(pk=instance.pk)
    if not duplicates.exists():
        return
    key = "local_part" if "local_part" not in (exclude or ()) else NON_FIELD_ERRORS
    raise ValidationError({key: ValidationError(message, code="unique")})


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
