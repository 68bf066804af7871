"""Recipient filters of the queue lists: each query shape keeps the same rows."""
import pytest
from django.db import connection

from mailhub.admin import recipient_match
from mailhub.admin.recipient_match import filter_by_recipients
from mailhub.models import Message, Recipient

pytestmark = pytest.mark.django_db

ON_SQLITE = connection.vendor == "sqlite"


def spool(statuses, domain="match.test"):
    """Store one message per status, each with one recipient, and return the messages."""
    messages = Message.objects.bulk_create(Message(raw=b"x", source="backend") for _ in statuses)
    Recipient.objects.bulk_create(
        Recipient(message=message, address=f"user{index}@{domain}", domain=domain, status=status)
        for index, (message, status) in enumerate(zip(messages, statuses))
    )
    return messages


def test_common_status_uses_exists():
    messages = spool(["deferred"] * 9 + ["held"])

    matched = filter_by_recipients(Message.objects.all(), {"status": "deferred"})

    assert set(matched) == set(messages[:9])
    if ON_SQLITE:
        assert "EXISTS" in str(matched.query)


def test_rare_status_uses_in():
    messages = spool(["deferred"] * 9 + ["held"])

    matched = filter_by_recipients(Message.objects.all(), {"status": "held"})

    assert list(matched) == [messages[9]]
    assert "EXISTS" not in str(matched.query)


def test_one_common_end_uses_in(monkeypatch):
    messages = spool(["delivered"] * 4 + ["deferred"] * 4)
    # Each sample then covers one end: the oldest four are delivered, the newest four deferred.
    monkeypatch.setattr(recipient_match, "SAMPLE_SIZE", 4)

    matched = filter_by_recipients(Message.objects.all(), {"status": "deferred"})

    assert set(matched) == set(messages[4:])
    assert "EXISTS" not in str(matched.query)


def test_empty_spool_share_is_zero():
    assert recipient_match.matching_share({"status": "queued"}, "id", "default") == 0


def test_recipient_list_one_status_filters_rows():
    spool(["queued", "deferred"])

    matched = filter_by_recipients(Recipient.objects.all(), {"status": "queued"})

    assert [recipient.status for recipient in matched] == ["queued"]
    assert " IN (SELECT" not in str(matched.query)


def test_recipient_list_domain_uses_in():
    spool(["deferred", "queued"], domain="wanted.test")
    spool(["deferred"], domain="other.test")

    matched = filter_by_recipients(Recipient.objects.order_by("-id"), {"status": "deferred", "domain": "wanted.test"})

    assert [(recipient.domain, recipient.status) for recipient in matched] == [("wanted.test", "deferred")]
    if ON_SQLITE:
        assert " IN (SELECT" in str(matched.query)
