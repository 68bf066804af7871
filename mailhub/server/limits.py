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
    """Bound AUTH password checks per client address and slow down guessing per user name.

    Per client address, at most AUTH_MAX_FAILURES password checks may be in flight or have
    failed within AUTH_FAILURE_WINDOW seconds. An attempt reserves its place before the
    check, so parallel sessions cannot all pass the limit at once. A success gives the
    place back and a failure keeps it until the window moves on. Past the limit the
    session is closed with 421 4.7.0, and each failure waits a growing delay first.

    Per user name, failures add a growing delay before every check of that name, the
    correct password included, up to AUTH_FAILURE_MAX_DELAY. Past AUTH_MAX_FAILURES a
    wrong password for the name also gets 421, but the name is never blocked, so failures
    from other addresses cannot lock a user out. A correct password is never counted as a
    failure.

    The state depends only on the attempts seen, never on whether the user exists, so a
    wrong password and an unknown user get the same reply after the same delay.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.failures = defaultdict(deque)
        self.in_flight = Counter()

    def reserve(self, client_address):
        """Return an AuthAttempt that reserves one check against the address's limit, or None
        when the address has reached AUTH_MAX_FAILURES."""
        if self.is_blocked(client_address):
            return None
        self.in_flight[client_address] += 1
        return AuthAttempt(self, client_address)

    def release(self, client_address):
        self.in_flight[client_address] -= 1
        if self.in_flight[client_address] <= 0:
            del self.in_flight[client_address]

    def is_blocked(self, client_address):
        """Return whether the address's failures and checks in flight reach AUTH_MAX_FAILURES."""
        max_failures = conf.get("AUTH_MAX_FAILURES")
        if not max_failures:
            return False
        used = self.count(("address", client_address)) + self.in_flight[client_address]
        return used >= max_failures

    def has_failed_too_often(self, client_address):
        """Return whether the address's recorded failures alone reach AUTH_MAX_FAILURES."""
        max_failures = conf.get("AUTH_MAX_FAILURES")
        return bool(max_failures) and self.count(("address", client_address)) >= max_failures

    def user_delay(self, username):
        """Return the seconds to wait before checking a password for the user name."""
        # TODO: a user name and the user's mailbox address are two keys, so a guesser who
        # alternates the two forms of one login grows each delay half as fast.
        if not username:
            return 0.0
        return growing_delay(self.count(("user", username.lower())))

    def address_delay(self, client_address):
        """Return the seconds to wait before replying to a failure of the address."""
        return growing_delay(self.count(("address", client_address)))

    def recent_failures(self, client_address, username=""):
        """Return the recent failure counts of the address and of the user name."""
        user_failures = self.count(("user", username.lower())) if username else 0
        return self.count(("address", client_address)), user_failures

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

    def record_failure(self, client_address, username):
        now = self.clock()
        self.failures[("address", client_address)].append(now)
        if username:
            self.failures[("user", username.lower())].append(now)

    def record_success(self, username):
        """Forget the user name's failures. The address keeps its count, so one good password
        does not reset guessing against other names from the same address."""
        self.failures.pop(("user", username.lower()), None)


class AuthAttempt:
    """One AUTH attempt's place against its client address's limit, settled exactly once."""

    def __init__(self, throttle, client_address):
        self.throttle = throttle
        self.client_address = client_address
        self.settled = False

    def succeed(self, username):
        self.settle()
        self.throttle.record_success(username)

    def fail(self, username):
        """Count a failure for the address and, when given, the user name."""
        if not self.settled:
            self.settle()
            self.throttle.record_failure(self.client_address, username)

    def settle(self):
        """Give the place back; a later succeed(), fail() or settle() changes nothing."""
        if not self.settled:
            self.settled = True
            self.throttle.release(self.client_address)


def growing_delay(failures):
    """Return AUTH_FAILURE_DELAY doubled per failure after the first, up to AUTH_FAILURE_MAX_DELAY."""
    if failures <= 0:
        return 0.0
    base_delay = conf.get("AUTH_FAILURE_DELAY")
    return min(base_delay * (2 ** min(failures - 1, 32)), conf.get("AUTH_FAILURE_MAX_DELAY"))
