"""A short-lived memory of recipient addresses that were found deliverable.

The event loop accepts RCPT for a remembered address without a query. Only
deliverable addresses are remembered, so a mailbox or alias added takes mail at once.
One removed or deactivated is accepted for at most SERVER_RECIPIENT_CACHE_SECONDS more,
and its messages then bounce at delivery as for any unknown user.
"""
import threading
import time

from .. import conf

# Bounds the memory that a flood of distinct valid addresses can take. A full cache starts over.
MAX_ENTRIES = 10_000


class RecipientCache:
    """Deliverable addresses with their expiry times, shared by the listeners of one process."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.expiry_by_address = {}
        self.lock = threading.Lock()

    def is_deliverable(self, address):
        """Return True when ``address`` was found deliverable less than the TTL ago."""
        expires_at = self.expiry_by_address.get(address)
        return expires_at is not None and expires_at > self.clock()

    def remember_deliverable(self, address):
        ttl = conf.get("SERVER_RECIPIENT_CACHE_SECONDS")
        if ttl <= 0:
            return
        with self.lock:
            if len(self.expiry_by_address) >= MAX_ENTRIES:
                self.expiry_by_address = {}
            self.expiry_by_address[address] = self.clock() + ttl

    def clear(self):
        with self.lock:
            self.expiry_by_address = {}
