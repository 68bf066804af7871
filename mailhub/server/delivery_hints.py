"""Delivery hints for the messages the listeners committed, sent a few at a time.

Sending one Celery message costs about as much CPU as storing a mail message: about
0.3 ms with kombu's filesystem transport, measured on a 2-core machine. So the hints of
every group committed within HINT_DELAY seconds go to the broker together, from a pool
thread, after the sessions have had their replies. A hint lost on the way (the process
stops during the delay, the broker is down) only delays delivery until the periodic
sweep finds the message due.
"""
import asyncio
import logging

from .. import spool
from .database import executor

logger = logging.getLogger(__name__)

# Short against delivery times and the sweep interval, long enough that a busy listener
# sends one hint for dozens of messages.
HINT_DELAY = 0.05


class DeliveryHints:
    """Collects the committed message ids of one event loop and sends their hints in batches."""

    def __init__(self):
        self.message_ids = []
        self.recipient_count = 0
        self.timer = None

    def add(self, message_ids, recipient_count):
        """Schedule hints for committed messages; must be called on the event loop."""
        self.message_ids.extend(message_ids)
        self.recipient_count += recipient_count
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(HINT_DELAY, self.send)

    def send(self):
        message_ids, recipient_count = self.message_ids, self.recipient_count
        self.message_ids, self.recipient_count, self.timer = [], 0, None
        loop = asyncio.get_running_loop()
        loop.run_in_executor(executor(), spool.schedule_group_delivery, message_ids, recipient_count)


def load_broker_client():
    """Load Celery's producer pool and the broker transport, so that the first hint does
    not stall the listeners for the 90 or so modules it imports (about 70 ms)."""
    from ..tasks import deliver_due

    try:
        deliver_due.app.producer_pool
    except Exception as error:  # noqa: BLE001 - a broken broker setting shows again at the first hint
        logger.warning("Celery producer pool not loaded at start: %s", error)
