"""Errors that mailhub raises, each also a subclass of the matching Python or Django error."""
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation


class MailhubError(Exception):
    """Base class of every mailhub error."""


class InvalidAddress(MailhubError, ValueError):
    """An envelope address is malformed or contains characters that could inject commands."""


class InvalidMessage(MailhubError, ValueError):
    """A message cannot be spooled as given (empty, no recipients, forbidden bytes)."""


class SuspiciousMessage(MailhubError, SuspiciousOperation):
    """A message or header tries to inject headers or SMTP commands."""


class SpoolError(MailhubError, RuntimeError):
    """The spool could not store a message; the sender keeps responsibility for it."""


class ConfigurationError(MailhubError, ImproperlyConfigured):
    """A mailhub setting has an invalid value."""
