"""Delivery by real Celery worker processes, against real peers and a real DNS server."""
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailhub import queue
from mailhub.delivery.sweep import sweep
from mailhub.models import MailboxMessage, Message, Recipient

from .conftest import SENDER, add_mailbox, bounces_to, enqueue, raw_message, route_to, statuses, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_final(message, describe=None):
    def finished():
        values = set(Recipient.objects.filter(message=message).values_list("status", flat=True))
        return values and values <= {"delivered", "bounced"}

    return wait_for(finished, describe=describe or f"message {message.queue_id} to be final")


def test_worker_delivers_through_route(settings, smtp_peer, celery_worker_factory):
    peer = smtp_peer(hostname="mx.remote.test")
    route_to(settings, peer)
    celery_worker_factory()
    raw = raw_message(body="first\r\n.\r\n..two dots\r\nlast")

    message = enqueue(["bob@remote.test"], raw=raw)
    wait_final(message)

    recipient = message.recipients.get()
    assert recipient.status == "delivered"
    assert recipient.reply_code == 250
    assert len(peer.messages) == 1
    assert peer.messages[0].content == raw


def test_worker_delivers_through_mx(settings, smtp_peer, dns_server, celery_worker_factory):
    peer = smtp_peer(hostname="mx1.remote.test")
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")
    settings.MAILHUB_MX_PORT = peer.port
    celery_worker_factory(pool="threads")

    message = enqueue(["bob@remote.test"])
    wait_final(message)

    assert statuses(message) == {"bob@remote.test": "delivered"}
    assert peer.messages[0].content == message.raw_bytes


def test_worker_defers_then_delivers(settings, smtp_peer, celery_worker_factory):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "451 4.3.0 try again later"
    celery_worker_factory()

    message = enqueue(["bob@remote.test"])
    wait_for(lambda: statuses(message) == {"bob@remote.test": "deferred"}, describe="the deferral")
    recipient = message.recipients.get()
    assert recipient.reply_code == 451
    assert recipient.next_attempt_at >= timezone.now() + timedelta(seconds=200)

    peer.replies.rcpt.clear()
    queue.retry_now(Recipient.objects.filter(message=message))
    wait_final(message)

    assert statuses(message) == {"bob@remote.test": "delivered"}
    assert len(peer.messages) == 1


def test_worker_bounce_reaches_sender_mailbox(settings, smtp_peer, celery_worker_factory):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["carol@remote.test"] = "550 5.1.1 no such user"
    mailbox = add_mailbox(SENDER)
    celery_worker_factory()

    message = enqueue(["bob@remote.test", "carol@remote.test", "dave@remote.test"])
    wait_final(message)
    stored = wait_for(lambda: MailboxMessage.objects.filter(mailbox=mailbox).first(), describe="the bounce in the mailbox")

    assert statuses(message) == {
        "bob@remote.test": "delivered",
        "carol@remote.test": "bounced",
        "dave@remote.test": "delivered",
    }
    assert [received.recipients for received in peer.messages] == [["bob@remote.test", "dave@remote.test"]]
    assert len(bounces_to(SENDER)) == 1
    assert b"carol@remote.test" in stored.raw_bytes
    assert b"bob@remote.test\r\nAction" not in stored.raw_bytes


def hanging_then_accepting_peer(raw_smtp_peer):
    """A peer whose first session hangs after DATA; later sessions accept and record messages."""
    state = {"sessions": 0, "messages": [], "hanging": threading.Event()}

    def script(connection):
        state["sessions"] += 1
        first = state["sessions"] == 1
        connection.send("220 peer.test ESMTP\r\n")
        while True:
            line = connection.read_line().decode()
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                connection.send("250 peer.test\r\n")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                connection.send("250 2.0.0 OK\r\n")
            elif verb == "DATA" and first:
                state["hanging"].set()
                # Sends no reply, so the worker waits here until it is killed.
                connection.read_line()
            elif verb == "DATA":
                connection.send("354 go ahead\r\n")
                state["messages"].append(connection.read_data())
                connection.send("250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                connection.send("221 2.0.0 bye\r\n")
                return
            else:
                connection.send("502 5.5.2 unknown command\r\n")

    peer = raw_smtp_peer(script)
    return peer, state


def test_killed_worker_message_delivered_later(settings, raw_smtp_peer, celery_worker_factory):
    peer, state = hanging_then_accepting_peer(raw_smtp_peer)
    route_to(settings, peer)
    settings.MAILHUB_LEASE_SECONDS = 5
    first_worker = celery_worker_factory(name="doomed")

    message = enqueue(["bob@remote.test"])
    wait_for(state["hanging"].is_set, describe="the worker to be mid-delivery")
    first_worker.kill()

    recipient = message.recipients.get()
    assert recipient.status == "queued"
    assert recipient.lease_token != ""

    celery_worker_factory(name="survivor")

    def delivered_after_sweeps():
        sweep()
        return statuses(message) == {"bob@remote.test": "delivered"}

    wait_for(delivered_after_sweeps, interval=1, describe="delivery after the lease expired")

    assert len(state["messages"]) == 1
    assert b"Hello from the engine tests." in state["messages"][0]
    recipient.refresh_from_db()
    assert recipient.possible_duplicate is False


@pytest.mark.slow
def test_three_workers_two_thousand_messages(settings, smtp_peer, celery_worker_factory):
    if connection.vendor != "postgresql":
        pytest.skip("the three-worker load test needs PostgreSQL; set DATABASE_URL=postgres://... and a Redis broker")
    settings.MAILHUB_DESTINATION_CONCURRENCY = 2
    settings.MAILHUB_CLAIM_BATCH = 50
    domains = [f"d{number:02d}.test" for number in range(20)]
    peers = {}
    for domain in domains:
        peers[domain] = smtp_peer(hostname=f"mx.{domain}")
        route_to(settings, peers[domain], domain=domain)

    for index in range(3):
        celery_worker_factory(name=f"load{index}", concurrency=2)

    for number in range(2000):
        domain = domains[number % len(domains)]
        enqueue([f"user{number}@{domain}"], raw=raw_message(subject=f"load {number}"))

    def all_final():
        return not Recipient.objects.exclude(status__in=["delivered", "bounced"]).exists()

    def final_with_sweeps():
        if all_final():
            return True
        sweep()
        return False

    wait_for(final_with_sweeps, timeout=900, interval=2, describe="2,000 messages to be delivered")

    assert Recipient.objects.filter(status="delivered").count() == 2000
    for domain, peer in peers.items():
        received = peer.received_recipients()
        assert len(received) == 100, domain
        assert len(set(received)) == 100, domain
        assert peer.max_concurrent_sessions <= 2, domain
    assert Message.objects.filter(source="bounce").count() == 0


def test_pool_processes_share_one_destination(settings, smtp_peer, celery_worker_factory):
    # Small claims leave most of the backlog due while the first session runs, so the
    # other pool processes claim their share of it.
    settings.MAILHUB_CLAIM_BATCH = 10
    peer = smtp_peer()
    route_to(settings, peer)
    messages = [enqueue([f"user{number}@remote.test"], raw=raw_message(subject=f"share {number}")) for number in range(600)]

    celery_worker_factory(name="sharing", concurrency=3)

    def all_final():
        return not Recipient.objects.exclude(status__in=["delivered", "bounced"]).exists()

    wait_for(all_final, timeout=300, describe="600 messages to be delivered")

    assert Recipient.objects.filter(status="delivered").count() == len(messages)
    received = peer.received_recipients()
    assert len(received) == len(messages)
    assert len(set(received)) == len(messages)
    assert peer.max_concurrent_sessions >= 2
    assert Recipient.objects.filter(attempts=1).count() == len(messages)
