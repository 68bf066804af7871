"""Destination session slots: the limit, expiry and release."""
from datetime import timedelta

import pytest
from django.utils import timezone

from mailhub.delivery import slots
from mailhub.models import DestinationSlot

pytestmark = pytest.mark.django_db


def test_slots_limited_to_concurrency(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 3
    holders = [slots.acquire("relay:a.test:25", wait=0) for _ in range(4)]
    assert all(holders[:3])
    assert holders[3] == ""
    assert len(set(holders[:3])) == 3


def test_released_slot_reusable(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    holder = slots.acquire("relay:a.test:25", wait=0)
    assert slots.acquire("relay:a.test:25", wait=0) == ""
    slots.release(holder)
    assert slots.acquire("relay:a.test:25", wait=0)


def test_expired_slot_reusable(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    slots.acquire("relay:a.test:25", wait=0)
    DestinationSlot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert slots.acquire("relay:a.test:25", wait=0)


def test_destinations_independent(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    assert slots.acquire("relay:a.test:25", wait=0)
    assert slots.acquire("relay:b.test:25", wait=0)


def test_lowered_limit_ignores_higher_slots(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 2
    slots.acquire("relay:a.test:25", wait=0)
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    assert slots.acquire("relay:a.test:25", wait=0) == ""


def test_context_manager_releases(settings):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    with slots.destination_slot("relay:a.test:25", wait=0) as holder:
        assert holder
        assert DestinationSlot.objects.filter(holder=holder).exists()
    assert not DestinationSlot.objects.exclude(holder="").exists()
