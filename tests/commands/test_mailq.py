"""manage.py mailq: the Postfix-style listing and its JSON form."""
import json
from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from mailhub.models import Message, Recipient

from .running import defer, queue_message, run, set_recipient

pytestmark = pytest.mark.django_db


def test_empty_queue():
    assert run("mailq").strip() == "Mail queue is empty"


def test_listing_layout():
    message = queue_message("bob@remote.test", "carol@other.test")
    defer(message, "bob@remote.test")

    lines = run("mailq").splitlines()

    assert lines[0].split() == ["-Queue", "ID-", "--Size--", "----Arrival", "Time----", "-Sender/Recipient-------"]
    entry = lines[1].split()
    assert entry[0] == message.queue_id
    assert entry[1] == str(message.size)
    assert entry[-1] == "site@example.com"
    assert lines[2].split()[0] == "bob@remote.test"
    assert "(deferred, 2 attempts, next" in lines[2]
    assert lines[3].strip() == "451 4.7.1 Try again later [mx.remote.test]"
    assert lines[4].split()[0] == "carol@other.test"
    assert "(queued, 0 attempts, next" in lines[4]
    assert lines[-1] == "-- 1 Kbytes in 1 Request."


def test_summary_counts_kbytes_and_requests():
    first = queue_message("a@remote.test")
    second = queue_message("b@remote.test")

    last_line = run("mailq").splitlines()[-1]

    kbytes = -(-(first.size + second.size) // 1024)
    assert last_line == f"-- {kbytes} Kbytes in 2 Requests."


def test_held_and_active_marks():
    held = queue_message("a@remote.test")
    active = queue_message("b@remote.test")
    set_recipient(held, "a@remote.test", status=Recipient.Status.HELD)
    set_recipient(active, "b@remote.test", lease_token="t", lease_expires_at=timezone.now() + timedelta(minutes=5))

    output = run("mailq")

    assert f"{held.queue_id}!" in output
    assert f"{active.queue_id}*" in output
    assert "being delivered" in output


def test_null_sender_shown_as_mailer_daemon():
    queue_message("bob@remote.test", sender="")

    assert "MAILER-DAEMON" in run("mailq")


def test_finished_recipients_hidden_by_default():
    partly = queue_message("done@remote.test", "waiting@remote.test")
    finished = queue_message("gone@remote.test")
    set_recipient(partly, "done@remote.test", status=Recipient.Status.DELIVERED)
    set_recipient(finished, "gone@remote.test", status=Recipient.Status.BOUNCED)

    default = run("mailq")
    everything = run("mailq", "--all")

    assert "waiting@remote.test" in default
    assert "done@remote.test" not in default
    assert finished.queue_id not in default
    assert "done@remote.test" in everything
    assert finished.queue_id in everything


def test_filter_by_domain_and_status():
    message = queue_message("bob@remote.test", "carol@other.test")
    other = queue_message("dave@other.test")
    defer(message, "bob@remote.test")

    by_domain = run("mailq", "--domain", "REMOTE.test")
    by_status = run("mailq", "--status", "deferred")

    assert "bob@remote.test" in by_domain
    assert "carol@other.test" not in by_domain
    assert other.queue_id not in by_domain
    assert "bob@remote.test" in by_status
    assert other.queue_id not in by_status


def test_filter_by_queue_id():
    selected = queue_message("a@remote.test")
    queue_message("b@remote.test")

    output = run("mailq", selected.queue_id.lower())

    assert selected.queue_id in output
    assert "b@remote.test" not in output


def test_bounced_message_shown_by_queue_id():
    bounced = queue_message("gone@remote.test")
    set_recipient(bounced, "gone@remote.test", status=Recipient.Status.BOUNCED, reply_code=550, reply_text="No such user")

    output = run("mailq", bounced.queue_id)

    assert "Mail queue is empty" not in output
    assert bounced.queue_id in output
    assert "gone@remote.test  (bounced" in output
    assert "550 No such user" in output


def test_selection_matching_nothing_says_so():
    queue_message("bob@remote.test")

    output = run("mailq", "--domain", "other.test")

    assert "No queued mail matches the selection" in output


def test_invalid_domain_selection_fails():
    with pytest.raises(CommandError, match="invalid --domain: domain 'bad domain!'"):
        run("mailq", "--domain", "bad domain!")


def test_unknown_queue_id_fails():
    with pytest.raises(CommandError, match="queue id not found: NOSUCHID"):
        run("mailq", "nosuchid")


def test_json_lines():
    message = queue_message("bob@remote.test", "zoë@remote.test")
    defer(message, "bob@remote.test")
    queue_message("carol@other.test")

    records = [json.loads(line) for line in run("mailq", "--json").splitlines()]

    assert [record["queue_id"] for record in records] == list(
        Message.objects.order_by("created_at", "id").values_list("queue_id", flat=True)
    )
    first = records[0]
    assert first["message_size"] == message.size
    assert first["sender"] == "site@example.com"
    assert first["source"] == "backend"
    assert first["recipients"][0] == {
        "address": "bob@remote.test",
        "status": "deferred",
        "attempts": 2,
        "next_attempt_at": Recipient.objects.get(address="bob@remote.test").next_attempt_at.isoformat(),
        "reply_code": 451,
        "enhanced_status_code": "4.7.1",
        "reply_text": "Try again later",
        "remote_host": "mx.remote.test",
        "lease_expires_at": None,
    }
    assert first["recipients"][1]["address"] == "zoë@remote.test"


def test_json_empty_queue():
    assert run("mailq", "--json") == ""
