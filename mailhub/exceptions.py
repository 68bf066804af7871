"""Errors that mailhub raises, each also a subclass of the matching Python or Django error."""
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.mail.message import BadHeaderError as DjangoBadHeaderError


class MailhubError(Exception):
    """Base class of every mailhub error."""


class InvalidAddress(MailhubError, ValueError):
    """An envelope address is malformed or contains characters that could inject commands."""


class InvalidMessage(MailhubError, ValueError):
    """A message cannot be spooled as given (empty, no recipients, forbidden bytes)."""


class BadHeaderError(InvalidMessage, DjangoBadHeaderError):
    """A header or address of an outgoing message contains CR, LF or NUL.

    It subclasses Django's BadHeaderError (an alias of ValueError in Django 6.1), so callers
    that catch Django's error also catch this one.
    """


class SuspiciousMessage(MailhubError, SuspiciousOperation):
    """A message or header tries to inject headers or SMTP commands."""


class SpoolError(MailhubError, RuntimeError):
    """The spool could not store a message; the sender keeps responsibility for it."""


class ShuttingDown(SpoolError):
    """The listeners are stopping and store no more messages; the client should try again later."""


class ConfigurationError(MailhubError, ImproperlyConfigured):
    """A mailhub setting has an invalid value."""
