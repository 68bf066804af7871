"""Session slots per destination, shared by every worker on every machine.

A destination has DESTINATION_CONCURRENCY slot rows. A worker takes one before it
connects and frees it after QUIT; a slot whose holder died is free again once its
expiry passes, so a killed worker blocks a slot for at most LEASE_SECONDS.
"""
import contextlib
import logging
import secrets
import time
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from .. import conf
from ..models import DestinationSlot

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.2


def slot_lifetime():
    return timedelta(seconds=conf.get("LEASE_SECONDS"))


def ensure_slots(destination, limit):
    rows = [DestinationSlot(destination=destination, slot=number) for number in range(limit)]
    DestinationSlot.objects.bulk_create(rows, ignore_conflicts=True)


def free_slots(destination, limit, now):
    return DestinationSlot.objects.filter(
        Q(holder="") | Q(expires_at__lte=now) | Q(expires_at__isnull=True),
        destination=destination,
        slot__lt=limit,
    )


def try_acquire(destination, limit):
    """Take one free slot of the destination in one atomic step; returns the holder token or ""."""
    now = timezone.now()
    holder = secrets.token_hex(16)
    values = {"holder": holder, "expires_at": now + slot_lifetime()}

    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            slot_id = (
                free_slots(destination, limit, now)
                .select_for_update(skip_locked=True)
                .order_by("slot")
                .values_list("id", flat=True)
                .first()
            )
            if slot_id is None:
                return ""
            DestinationSlot.objects.filter(id=slot_id).update(**values)
        return holder

    candidate = free_slots(destination, limit, now).order_by("slot").values("id")[:1]
    updated = free_slots(destination, limit, now).filter(id__in=candidate).update(**values)
    return holder if updated else ""


def acquire(destination, wait):
    """Take a slot of the destination, polling for up to ``wait`` seconds; returns the token or ""."""
    limit = conf.get("DESTINATION_CONCURRENCY")
    holder = try_acquire(destination, limit)
    if holder:
        return holder

    # The slot rows are created after a failed try only, which spares every later session
    # a write. A raised DESTINATION_CONCURRENCY gets its new rows the same way.
    ensure_slots(destination, limit)
    deadline = time.monotonic() + wait
    while True:
        holder = try_acquire(destination, limit)
        if holder or time.monotonic() >= deadline:
            return holder
        time.sleep(POLL_INTERVAL)


def renew(holder):
    """Push the slot's expiry forward while its session is still sending."""
    DestinationSlot.objects.filter(holder=holder).update(expires_at=timezone.now() + slot_lifetime())


def release(holder):
    DestinationSlot.objects.filter(holder=holder).update(holder="", expires_at=None)


@contextlib.contextmanager
def destination_slot(destination, wait):
    """Hold a slot of the destination for the ``with`` block; yields the holder token or ""."""
    holder = acquire(destination, wait)
    try:
        yield holder
    finally:
        if holder:
            release(holder)
