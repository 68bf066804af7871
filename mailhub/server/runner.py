"""Start and stop the listeners: MX, submission (STARTTLS) and submissions (implicit TLS).

``serve()`` runs them on the current thread's event loop until stopped (runmailserver);
``ListenerThread`` runs them on a loop in a background thread (tests, embedding).
"""
import asyncio
import logging
import threading
from dataclasses import dataclass

from .. import conf
from ..exceptions import ConfigurationError
from . import database, event_loop, tls
from .delivery_hints import load_broker_client
from .group_commit import GroupCommitter
from .handlers import POLICIES
from .limits import AuthThrottle, ConnectionLimiter
from .recipient_cache import RecipientCache
from .session import MailhubSMTP

logger = logging.getLogger(__name__)

LISTENER_NAMES = ("mx", "submission", "submissions")
# asyncio's default backlog of 100 drops connection bursts that a busy MX receives. The
# kernel caps this value at net.core.somaxconn.
LISTEN_BACKLOG = 1024


@dataclass(frozen=True)
class ListenerAddress:
    name: str
    host: str
    port: int

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name} {host}:{self.port}"


def parse_listen_address(name, value):
    """Return a ListenerAddress for "host:port" or "[v6]:port"; None for an empty value."""
    if not value:
        return None
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"invalid {name} listen address {value!r}: expected HOST:PORT, e.g. 0.0.0.0:25")
    host = host.strip("[]") or "0.0.0.0"
    return ListenerAddress(name, host, int(port))


def configured_addresses(overrides=None):
    """Return the enabled listener addresses from settings, with ``overrides`` {name: "host:port"}."""
    overrides = overrides or {}
    addresses = []
    for name in LISTENER_NAMES:
        value = overrides.get(name)
        if value is None:
            value = conf.get(f"{name.upper()}_LISTEN")
        address = parse_listen_address(name, value)
        if address is not None:
            addresses.append(address)
    return addresses


class Listener:
    """The state that every session of one listening socket shares."""

    def __init__(
        self, name, loop, *, certificate_store, connection_limiter, auth_throttle, committer, recipient_cache=None
    ):
        self.name = name
        self.loop = loop
        self.policy = POLICIES[name](recipient_cache)
        self.committer = committer
        self.implicit_tls = name == "submissions"
        self.certificate_store = certificate_store
        self.connection_limiter = connection_limiter
        self.auth_throttle = auth_throttle
        if self.implicit_tls and certificate_store is None:
            raise ConfigurationError("the submissions listener needs a TLS certificate (MAILHUB_TLS_CERTFILE)")

    def create_session(self):
        return MailhubSMTP(self)


async def start_servers(addresses, certificate_store=None, *, committer, connection_limiter=None, auth_throttle=None):
    """Bind every listener and return [(ListenerAddress with the bound port, asyncio.Server)].

    The caller closes ``committer`` (a GroupCommitter) after stop_servers().
    """
    loop = asyncio.get_running_loop()
    if certificate_store is None:
        certificate_store = tls.configured_store()
    # One limiter and one throttle for all listeners, so the limits count the whole process.
    limiter = connection_limiter if connection_limiter is not None else ConnectionLimiter()
    throttle = auth_throttle if auth_throttle is not None else AuthThrottle()
    # One committer for all listeners, so their messages share groups, and one cache.
    recipient_cache = RecipientCache()

    started = []
    try:
        for address in addresses:
            listener = Listener(
                address.name,
                loop,
                certificate_store=certificate_store,
                connection_limiter=limiter,
                auth_throttle=throttle,
                committer=committer,
                recipient_cache=recipient_cache,
            )
            server = await loop.create_server(
                listener.create_session, host=address.host, port=address.port, backlog=LISTEN_BACKLOG
            )
            bound_port = server.sockets[0].getsockname()[1]
            bound = ListenerAddress(address.name, address.host, bound_port)
            started.append((bound, server))
            logger.info("listener %s started", bound)
    except BaseException:
        await stop_servers(started)
        raise
    loop.run_in_executor(database.executor(), load_broker_client)
    return started


async def stop_servers(started):
    for address, server in started:
        server.close()
        await server.wait_closed()
        logger.info("listener %s stopped", address)


class ListenerThread:
    """The listeners on their own event loop in a daemon thread, started and stopped from outside."""

    def __init__(self, addresses, certificate_store=None):
        self.addresses = addresses
        self.certificate_store = certificate_store
        self.loop = event_loop.new_event_loop()
        self.connection_limiter = ConnectionLimiter()
        self.auth_throttle = AuthThrottle()
        self.committer = GroupCommitter()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mailhub-listeners", daemon=True)
        self.started = []

    def start(self, timeout=30):
        self.thread.start()
        starting = start_servers(
            self.addresses,
            self.certificate_store,
            connection_limiter=self.connection_limiter,
            auth_throttle=self.auth_throttle,
            committer=self.committer,
        )
        future = asyncio.run_coroutine_threadsafe(starting, self.loop)
        self.started = future.result(timeout)
        return self

    def port(self, name):
        for address, _server in self.started:
            if address.name == name:
                return address.port
        raise KeyError(f"no {name} listener is running")

    def stop(self, timeout=30):
        if self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.shutdown(), self.loop)
            future.result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        self.loop.close()
        database.shutdown()

    async def shutdown(self):
        await stop_servers(self.started)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.committer.close()
