"""Helpers shared by the transport tests: routes to test peers and envelopes."""
import pytest

from mailhub.delivery.types import OutboundEnvelope, Route

MESSAGE = b"From: alice@sender.test\r\nTo: bob@remote.test\r\nSubject: test\r\n\r\nHello.\r\n"


def route_to(*hosts, tls_policy="none", kind="relay", username="", password=""):
    """Return a Route to RemoteHosts (for example ``peer.host()``) with the given TLS policy."""
    return Route(
        kind=kind,
        destination=f"{kind}:test",
        domain="remote.test",
        hosts=tuple(hosts),
        tls_policy=tls_policy,
        username=username,
        password=password,
    )


def envelope(*recipients, raw=MESSAGE, sender="alice@sender.test", queue_id="Q1", **options):
    return OutboundEnvelope(
        queue_id=queue_id,
        envelope_sender=sender,
        recipients=tuple(recipients or ("bob@remote.test",)),
        raw=raw,
        **options,
    )


@pytest.fixture(autouse=True)
def short_timeouts(settings):
    """Set client timeouts short enough that a hung test fails fast."""
    settings.MAILHUB_CONNECT_TIMEOUT = 10
    settings.MAILHUB_COMMAND_TIMEOUT = 10
    settings.MAILHUB_DATA_BLOCK_TIMEOUT = 10
    settings.MAILHUB_DATA_END_TIMEOUT = 10
