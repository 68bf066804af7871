"""The retry schedule and the queue lifetime."""
from datetime import timedelta

import pytest
from django.utils import timezone

from mailhub.delivery import retry


@pytest.fixture
def no_jitter(settings):
    settings.MAILHUB_RETRY_JITTER = 0
    settings.MAILHUB_RETRY_FIRST = 300
    settings.MAILHUB_RETRY_FACTOR = 2.0
    settings.MAILHUB_RETRY_MAX = 4000


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (6, 4000), (50, 4000)],
)
def test_retry_delay_doubles_to_cap(no_jitter, attempts, expected):
    assert retry.retry_delay(attempts) == expected


def test_retry_delay_treats_zero_as_first(no_jitter):
    assert retry.retry_delay(0) == 300


def test_retry_jitter_stays_in_bounds(settings):
    settings.MAILHUB_RETRY_JITTER = 0.1
    delays = [retry.retry_delay(1) for _ in range(500)]
    assert min(delays) >= 270
    assert max(delays) <= 330
    assert len(set(delays)) > 1


def test_retry_jitter_applies_at_cap(settings):
    settings.MAILHUB_RETRY_JITTER = 0.1
    delays = [retry.retry_delay(30) for _ in range(200)]
    assert min(delays) >= 3600
    assert max(delays) <= 4400


def test_next_attempt_adds_delay(no_jitter):
    now = timezone.now()
    assert retry.next_attempt_at(2, now) == now + timedelta(seconds=600)


class FakeMessage:
    def __init__(self, created_at):
        self.created_at = created_at


def test_lifetime_expiry(settings):
    settings.MAILHUB_QUEUE_LIFETIME = 5 * 24 * 3600
    now = timezone.now()
    assert not retry.is_expired(FakeMessage(now - timedelta(days=4, hours=23)), now)
    assert retry.is_expired(FakeMessage(now - timedelta(days=5)), now)


def test_delay_warning_off_by_default(settings):
    now = timezone.now()
    assert not retry.delay_warning_due(FakeMessage(now - timedelta(days=4)), now)


def test_delay_warning_after_setting(settings):
    settings.MAILHUB_DELAY_WARNING_AFTER = 3600
    now = timezone.now()
    assert not retry.delay_warning_due(FakeMessage(now - timedelta(minutes=59)), now)
    assert retry.delay_warning_due(FakeMessage(now - timedelta(minutes=61)), now)
