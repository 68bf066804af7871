"""Celery tasks of mailhub's MTA: deliver, sweep and purge.

Every task is idempotent and acknowledged late. A task that runs twice, or again after
its worker died, finds the recipients already final or claimed and does not send them
again.
"""
import logging

from celery import shared_task

from . import conf, queue
from .delivery import engine
from .delivery import sweep as sweeping

logger = logging.getLogger(__name__)


@shared_task(name="mailhub.tasks.deliver_message", acks_late=True, ignore_result=True)
def deliver_message(message_id):
    """Deliver the due recipients of one message; returns how many were claimed."""
    return engine.deliver_message(message_id)


@shared_task(name="mailhub.tasks.deliver_due", acks_late=True, ignore_result=True)
def deliver_due(batches=1):
    """Deliver up to ``batches`` batches of due recipients of any message."""
    claimed = 0
    for _ in range(batches):
        count = engine.deliver_due()
        claimed += count
        if not count:
            break
    return claimed


@shared_task(name="mailhub.tasks.sweep", acks_late=True, ignore_result=True)
def sweep():
    """Re-queue due recipients and expired leases, expire lifetimes, record the run."""
    return sweeping.sweep()


@shared_task(name="mailhub.tasks.purge", acks_late=True, ignore_result=True)
def purge(days=None):
    """Delete finished messages older than ``days`` (default PURGE_AFTER_DAYS)."""
    if days is None:
        days = conf.get("PURGE_AFTER_DAYS")
    return queue.purge(days)
