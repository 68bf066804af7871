"""Per-process bounds on connections and on failed authentication.

Both live in the listener process's memory: they protect one listener process from one
flood, and with several listener processes behind a load balancer each enforces its own
share. Every method runs on the event loop thread, so no lock is needed. The limits are
read from settings at each call, so a changed setting applies to the next session.
"""
import logging
import time
from collections import Counter, defaultdict, deque

from .. import conf

logger = logging.getLogger(__name__)


class ConnectionLimiter:
    """Count open sessions in total and per client address (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT)."""

    def __init__(self):
        self.total = 0
        self.per_client = Counter()

    def acquire(self, client_address):
        """Count a new session; return False, counting nothing, when a limit is reached."""
        max_total = conf.get("MAX_CONNECTIONS")
        max_per_client = conf.get("MAX_CONNECTIONS_PER_CLIENT")
        if max_total and self.total >= max_total:
            return False
        if max_per_client and self.per_client[client_address] >= max_per_client:
            return False
        self.total += 1
        self.per_client[client_address] += 1
        return True

    def release(self, client_address):
        self.total -= 1
        self.per_client[client_address] -= 1
        if self.per_client[client_address] <= 0:
            del self.per_client[client_address]


class AuthThrottle:
    """Track failed AUTH attempts per client address and per user name within a window.

    The delay before a failure reply starts at AUTH_FAILURE_DELAY and doubles with each
    recent failure of the address or the name, up to AUTH_FAILURE_MAX_DELAY; at
    AUTH_MAX_FAILURES within AUTH_FAILURE_WINDOW seconds the session is closed with 421.
    The state depends only on the failures seen, never on whether the user exists, so a
    wrong password and an unknown user get the same reply after the same delay.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.failures = defaultdict(deque)

    def keys(self, client_address, username):
        keys = [("address", client_address)]
        if username:
            keys.append(("user", username.lower()))
        return keys

    def recent_failures(self, client_address, username=""):
        """Return the larger recent failure count of the address and the user name."""
        return max(self.count(key) for key in self.keys(client_address, username))

    def count(self, key):
        times = self.failures.get(key)
        if not times:
            return 0
        cutoff = self.clock() - conf.get("AUTH_FAILURE_WINDOW")
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self.failures[key]
            return 0
        return len(times)

    def is_blocked(self, client_address, username=""):
        max_failures = conf.get("AUTH_MAX_FAILURES")
        return bool(max_failures) and self.recent_failures(client_address, username) >= max_failures

    def record_failure(self, client_address, username):
        """Record a failure and return the delay in seconds to wait before replying."""
        now = self.clock()
        for key in self.keys(client_address, username):
            self.failures[key].append(now)
        failures = self.recent_failures(client_address, username)
        base_delay = conf.get("AUTH_FAILURE_DELAY")
        return min(base_delay * (2 ** (failures - 1)), conf.get("AUTH_FAILURE_MAX_DELAY"))

    def record_success(self, client_address, username):
        """Forget the user name's failures; the address keeps its count, so one good password
        does not reset guessing against other names from the same address."""
        self.failures.pop(("user", username.lower()), None)
