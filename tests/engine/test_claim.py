"""Claiming due recipients with leases: exclusivity, expiry and what is never claimed."""
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from mailhub import spool
from mailhub.delivery import claim
from mailhub.models import Recipient


def spool_messages(count, recipients_each=1):
    messages = []
    for number in range(count):
        addresses = [f"user{number}-{index}@remote.test" for index in range(recipients_each)]
        raw = f"Subject: claim test {number}\r\n\r\nbody\r\n".encode()
        messages.append(spool.enqueue(raw, "sender@example.test", addresses, source="backend"))
    return messages


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    # These tests call the claim functions directly; the hints would only fill the broker.
    monkeypatch.setattr(spool, "schedule_delivery", lambda message: None)


@pytest.mark.django_db
def test_claim_takes_due_recipients():
    spool_messages(3, recipients_each=2)
    token, claimed = claim.claim(limit=10)
    assert len(claimed) == 6
    assert {recipient.lease_token for recipient in claimed} == {token}
    assert all(recipient.lease_expires_at > timezone.now() for recipient in claimed)


@pytest.mark.django_db
def test_claim_respects_limit():
    spool_messages(5)
    _, claimed = claim.claim(limit=2)
    assert len(claimed) == 2


@pytest.mark.django_db
def test_claimed_recipients_not_claimed_again():
    spool_messages(4)
    _, first = claim.claim(limit=2)
    _, second = claim.claim(limit=10)
    assert len(second) == 2
    assert not {r.id for r in first} & {r.id for r in second}
    _, third = claim.claim(limit=10)
    assert third == []


@pytest.mark.django_db
def test_expired_lease_is_claimable():
    spool_messages(1)
    _, first = claim.claim(limit=10)
    Recipient.objects.filter(id=first[0].id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    token, second = claim.claim(limit=10)
    assert [r.id for r in second] == [first[0].id]
    assert second[0].lease_token == token


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["delivered", "bounced", "held"])
def test_not_pending_never_claimed(status):
    spool_messages(1)
    Recipient.objects.update(status=status)
    _, claimed = claim.claim(limit=10)
    assert claimed == []


@pytest.mark.django_db
def test_future_attempt_not_claimed():
    spool_messages(1)
    Recipient.objects.update(status="deferred", next_attempt_at=timezone.now() + timedelta(minutes=5))
    _, claimed = claim.claim(limit=10)
    assert claimed == []


@pytest.mark.django_db
def test_claim_message_only_its_recipients():
    first, second = spool_messages(2, recipients_each=2)
    _, claimed = claim.claim_message(second.pk)
    assert {recipient.message_id for recipient in claimed} == {second.pk}
    assert len(claimed) == 2


@pytest.mark.django_db
def test_release_frees_lease():
    spool_messages(1)
    token, claimed = claim.claim(limit=10)
    assert claim.release(token) == 1
    recipient = Recipient.objects.get(id=claimed[0].id)
    assert recipient.lease_token == ""
    assert recipient.lease_expires_at is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_are_exclusive():
    spool_messages(60)
    results = []
    errors = []
    barrier = threading.Barrier(4)

    def claim_until_empty():
        try:
            barrier.wait()
            while True:
                _, claimed = claim.claim(limit=7)
                if not claimed:
                    return
                results.extend(recipient.id for recipient in claimed)
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim_until_empty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(results) == 60, connection.vendor
    assert len(set(results)) == 60


@pytest.mark.django_db
def test_claimed_recipients_share_message():
    spool_messages(1, recipients_each=3)

    _token, recipients = claim.claim()

    assert len(recipients) == 3
    assert len({id(recipient.message) for recipient in recipients}) == 1
