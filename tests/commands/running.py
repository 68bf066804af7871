"""Helpers for the operator command tests: run a command, build queued mail, snapshot the spool."""
from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from mailhub import spool
from mailhub.models import Alias, Domain, Mailbox, MailboxMessage, Message, Recipient


def run(*args, **options):
    """Run a management command and return what it wrote to stdout."""
    stdout = StringIO()
    call_command(*args, stdout=stdout, **options)
    return stdout.getvalue()


def queue_message(*recipients, sender="site@example.com", subject="Hello"):
    raw = (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
        "Message-ID: <test@example.com>\r\n\r\nBody\r\n"
    ).encode()
    return spool.enqueue(raw, sender, list(recipients), source="backend")


def set_recipient(message, address, **fields):
    """Give one recipient of a message a delivery state, as a worker would have left it."""
    Recipient.objects.filter(message=message, address=address).update(**fields)


def defer(message, address, reply_code=451, enhanced="4.7.1", text="Try again later", host="mx.remote.test"):
    set_recipient(
        message,
        address,
        status=Recipient.Status.DEFERRED,
        attempts=2,
        reply_code=reply_code,
        reply_enhanced_code=enhanced,
        reply_text=text,
        remote_host=host,
        next_attempt_at=timezone.now() + timedelta(minutes=10),
    )


def spool_snapshot():
    """Return every spool and directory row as plain values, to prove a dry run changed nothing."""
    return {
        "messages": list(Message.objects.order_by("id").values()),
        "recipients": list(Recipient.objects.order_by("id").values()),
        "domains": list(Domain.objects.order_by("id").values()),
        "mailboxes": list(Mailbox.objects.order_by("id").values()),
        "aliases": list(Alias.objects.order_by("id").values()),
        "stored": list(MailboxMessage.objects.order_by("id").values("id", "mailbox_id")),
    }
