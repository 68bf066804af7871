"""The retry schedule and the queue lifetime of deferred recipients.

The defaults are Postfix's minimal_backoff_time (300 s), maximal_backoff_time (4000 s)
and maximal_queue_lifetime (5 days).
"""
import random
from datetime import timedelta

from .. import conf


def retry_delay(attempts):
    """Return the seconds to wait after the given number of failed attempts (1 or more).

    The delay is RETRY_FIRST * RETRY_FACTOR ** (attempts - 1), capped at RETRY_MAX, then
    spread by up to RETRY_JITTER (a fraction) either way, so recipients deferred together
    do not all come back in the same second.
    """
    attempts = max(attempts, 1)
    base = conf.get("RETRY_FIRST") * conf.get("RETRY_FACTOR") ** (attempts - 1)
    base = min(base, conf.get("RETRY_MAX"))
    jitter = conf.get("RETRY_JITTER")
    return base * random.uniform(1 - jitter, 1 + jitter)


def next_attempt_at(attempts, now):
    """Return when a recipient that has failed ``attempts`` times is due again."""
    return now + timedelta(seconds=retry_delay(attempts))


def expires_at(message):
    """Return the time after which the message's pending recipients bounce as expired."""
    return message.created_at + timedelta(seconds=conf.get("QUEUE_LIFETIME"))


def is_expired(message, now):
    return now >= expires_at(message)


def lifetime_cutoff(now):
    """Return the creation time before which a message has outlived QUEUE_LIFETIME."""
    return now - timedelta(seconds=conf.get("QUEUE_LIFETIME"))


def delay_warning_due(message, now):
    """Return whether a deferred recipient of the message should get a delay warning DSN.

    DELAY_WARNING_AFTER is in seconds; 0 turns warnings off.
    """
    after = conf.get("DELAY_WARNING_AFTER")
    if not after:
        return False
    return now >= message.created_at + timedelta(seconds=after)
