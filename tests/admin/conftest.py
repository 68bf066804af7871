"""Fixtures for the admin tests: users with and without queue permissions, and spooled mail."""
from datetime import timedelta
from email.message import EmailMessage

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from mailhub.models import Message, Recipient
from mailhub.spool import enqueue

VIEW_PERMISSIONS = [
    "view_message",
    "view_recipient",
    "view_domain",
    "view_mailbox",
    "view_alias",
    "view_mailboxmessage",
]


def build_raw(subject="Hello", sender="alice@example.org", to="bob@example.com", body="Hi there.\n", html=None, attachment=None):
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash((subject, sender, to)))}@example.org>"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        filename, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return message.as_bytes().replace(b"\n", b"\r\n")


@pytest.fixture
def spool_message():
    """Return a function that spools a message and sets its recipients' state."""

    def make(
        recipients=("bob@example.com",),
        *,
        sender="alice@example.org",
        subject="Hello",
        status=Recipient.Status.QUEUED,
        age=timedelta(0),
        source=Message.Source.BACKEND,
        raw=None,
        **recipient_fields,
    ):
        raw = raw or build_raw(subject=subject, sender=sender, to=", ".join(recipients))
        message = enqueue(raw, sender, list(recipients), source=source)
        if age:
            Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - age)
        message.recipients.update(status=status, **recipient_fields)
        message.refresh_from_db()
        return message

    return make


@pytest.fixture
def deferred_message(spool_message):
    return spool_message(
        ("carol@deferred.test", "dave@deferred.test"),
        subject="Stuck report",
        status=Recipient.Status.DEFERRED,
        attempts=3,
        next_attempt_at=timezone.now() + timedelta(minutes=30),
        reply_code=451,
        reply_enhanced_code="4.7.1",
        reply_text="Greylisted, try again later",
        remote_host="mx.deferred.test",
        age=timedelta(minutes=15),
    )


def make_user(django_user_model, username, permissions):
    user = django_user_model.objects.create_user(username=username, password="secret-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="mailhub", codename__in=permissions))
    return user


@pytest.fixture
def operator_client(db, django_user_model):
    """A staff client with every queue and mailbox permission, but not a superuser."""
    codenames = [
        *VIEW_PERMISSIONS,
        "retry_message",
        "hold_message",
        "bounce_message",
        "delete_message",
        "add_domain",
        "change_domain",
        "change_mailbox",
        "add_mailbox",
        "add_alias",
        "change_alias",
        "delete_mailboxmessage",
    ]
    client = Client()
    client.force_login(make_user(django_user_model, "operator", codenames))
    return client


@pytest.fixture
def viewer_client(db, django_user_model):
    """A staff client that may only view the queue and the mailboxes."""
    client = Client()
    client.force_login(make_user(django_user_model, "viewer", VIEW_PERMISSIONS))
    return client
