"""Helpers for the engine tests: spooling, routes to test peers and waiting on the spool."""

import pytest

from mailhub import spool
from mailhub.delivery import engine
from mailhub.models import Domain, Mailbox, Message, Recipient
from tests.support import waiting

SENDER = "alice@sender.test"
WAIT_SECONDS = 120


def raw_message(subject="engine test", body="Hello from the engine tests.", extra_headers=""):
    text = (
        f"From: Alice <{SENDER}>\r\n"
        "To: bob@remote.test\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <engine-test@sender.test>\r\n"
        f"{extra_headers}"
        "\r\n"
        f"{body}\r\n"
    )
    return text.encode()


def enqueue(recipients, raw=None, sender=SENDER, **options):
    return spool.enqueue(raw or raw_message(), sender, recipients, source="backend", **options)


def route_to(settings, peer, domain="remote.test"):
    current = getattr(settings, "MAILHUB_ROUTES", None)
    routes = dict(current) if isinstance(current, dict) else {}
    routes[domain] = f"127.0.0.1:{peer.port}"
    settings.MAILHUB_ROUTES = routes


def statuses(message):
    return dict(Recipient.objects.filter(message=message).values_list("address", "status"))


def bounces_to(address):
    return list(Message.objects.filter(source="bounce", recipients__address=address))


def add_mailbox(address):
    local_part, domain_name = address.split("@")
    domain, _ = Domain.objects.get_or_create(name=domain_name)
    return Mailbox.objects.create(domain=domain, local_part=local_part)


def wait_for(condition, timeout=WAIT_SECONDS, interval=0.2, describe="condition"):
    return waiting.wait_for(condition, timeout=timeout, interval=interval, describe=describe)


@pytest.fixture
def no_hints(monkeypatch):
    """Keep delivery hints out of the broker for tests that call the engine in-process."""
    monkeypatch.setattr(spool, "schedule_delivery", lambda message: None)
    monkeypatch.setattr(engine, "send_hint", lambda message_id, countdown=None: None)


@pytest.fixture(autouse=True)
def short_timeouts(settings):
    """Client timeouts short enough that a hung test fails fast; a peer replies in milliseconds."""
    settings.MAILHUB_CONNECT_TIMEOUT = 10
    settings.MAILHUB_COMMAND_TIMEOUT = 10
    settings.MAILHUB_DATA_BLOCK_TIMEOUT = 10
    settings.MAILHUB_DATA_END_TIMEOUT = 10
    settings.MAILHUB_DESTINATION_SLOT_WAIT = 1
