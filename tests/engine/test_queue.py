"""Operator operations on the spool, and their respect for live leases."""
from datetime import timedelta

import pytest
from django.utils import timezone

from mailhub import queue
from mailhub.models import DeliveryAttempt, Message, Recipient

from .conftest import SENDER, bounces_to, enqueue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_hints")]


def live_lease():
    return {"lease_token": "worker", "lease_expires_at": timezone.now() + timedelta(minutes=5)}


def test_retry_now_makes_deferred_due():
    message = enqueue(["a@remote.test", "b@remote.test"])
    later = timezone.now() + timedelta(hours=1)
    Recipient.objects.update(status="deferred", next_attempt_at=later)
    Recipient.objects.filter(address="b@remote.test").update(**live_lease())

    assert queue.retry_now(Recipient.objects.filter(message=message)) == 1

    a = Recipient.objects.get(address="a@remote.test")
    b = Recipient.objects.get(address="b@remote.test")
    assert a.next_attempt_at <= timezone.now()
    assert a.status == "queued"
    assert b.next_attempt_at == later
    assert b.status == "deferred"


def test_hold_and_release():
    enqueue(["a@remote.test", "b@remote.test"])
    Recipient.objects.filter(address="b@remote.test").update(**live_lease())

    assert queue.hold(Recipient.objects.all()) == 1
    assert Recipient.objects.get(address="a@remote.test").status == "held"
    assert Recipient.objects.get(address="b@remote.test").status == "queued"

    assert queue.release(Recipient.objects.all()) == 1
    assert Recipient.objects.get(address="a@remote.test").status == "queued"


def test_bounce_now_sends_dsn():
    message = enqueue(["a@remote.test", "b@remote.test"])
    Recipient.objects.filter(address="b@remote.test").update(status="delivered")

    assert queue.bounce_now(Recipient.objects.filter(message=message), "mailbox retired") == 1

    a = Recipient.objects.get(address="a@remote.test")
    assert a.status == "bounced"
    assert a.reply_text == "mailbox retired"
    assert DeliveryAttempt.objects.filter(recipient=a, outcome="bounced").count() == 1
    assert len(bounces_to(SENDER)) == 1


def test_bounce_now_skips_live_lease():
    enqueue(["a@remote.test"])
    Recipient.objects.update(**live_lease())
    assert queue.bounce_now(Recipient.objects.all(), "no") == 0
    assert Recipient.objects.get().status == "queued"


def test_requeue_takes_held_and_expired_lease():
    enqueue(["a@remote.test", "b@remote.test", "c@remote.test"])
    Recipient.objects.filter(address="a@remote.test").update(status="held")
    Recipient.objects.filter(address="b@remote.test").update(
        status="deferred", lease_token="dead", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    Recipient.objects.filter(address="c@remote.test").update(**live_lease())

    assert queue.requeue(Recipient.objects.all()) == 2

    assert Recipient.objects.get(address="a@remote.test").status == "queued"
    assert Recipient.objects.get(address="b@remote.test").lease_token == ""
    assert Recipient.objects.get(address="c@remote.test").lease_token == "worker"


def test_delete_messages_skips_leased():
    free = enqueue(["a@remote.test"])
    busy = enqueue(["b@remote.test"])
    Recipient.objects.filter(message=busy).update(**live_lease())

    assert queue.delete_messages(Message.objects.all()) == 1

    assert not Message.objects.filter(pk=free.pk).exists()
    assert Message.objects.filter(pk=busy.pk).exists()


def test_purge_only_finished_old_messages():
    old_done = enqueue(["a@remote.test"])
    old_pending = enqueue(["b@remote.test", "c@remote.test"])
    new_done = enqueue(["d@remote.test"])
    Recipient.objects.exclude(address="c@remote.test").update(status="delivered")
    Message.objects.filter(pk__in=[old_done.pk, old_pending.pk]).update(created_at=timezone.now() - timedelta(days=8))

    assert queue.purge(7) == 1

    assert set(Message.objects.values_list("pk", flat=True)) == {old_pending.pk, new_done.pk}
