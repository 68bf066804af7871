"""manage.py mailqueue flush|hold|release|requeue|bounce|delete|purge."""
import re
from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from mailhub.models import Message, Recipient

from .running import defer, queue_message, run, set_recipient, spool_snapshot

pytestmark = pytest.mark.django_db


def status_of(address):
    return Recipient.objects.get(address=address).status


def lease(message, address):
    set_recipient(message, address, lease_token="worker", lease_expires_at=timezone.now() + timedelta(minutes=5))


def age(message, days):
    Message.objects.filter(id=message.id).update(created_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def queue():
    """Two messages: one deferred to remote.test and queued to other.test, one held."""
    first = queue_message("bob@remote.test", "carol@other.test")
    defer(first, "bob@remote.test")
    second = queue_message("dave@remote.test")
    set_recipient(second, "dave@remote.test", status=Recipient.Status.HELD)
    return first, second


def test_flush_makes_deferred_due(queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as hints:
        output = run("mailqueue", "flush")

    bob = Recipient.objects.get(address="bob@remote.test")
    assert bob.status == Recipient.Status.QUEUED
    assert bob.next_attempt_at <= timezone.now()
    assert status_of("dave@remote.test") == Recipient.Status.HELD
    assert output.strip().startswith("flushed 2 recipients; skipped 1 recipient: 1 held")
    assert len(hints) == 1


def test_flush_by_domain(queue):
    output = run("mailqueue", "flush", "--domain", "other.test")

    assert output.strip() == "flushed 1 recipient"
    assert Recipient.objects.get(address="bob@remote.test").next_attempt_at > timezone.now()


def test_hold_by_queue_id(queue):
    first, _ = queue

    output = run("mailqueue", "hold", first.queue_id)

    assert status_of("bob@remote.test") == Recipient.Status.HELD
    assert status_of("carol@other.test") == Recipient.Status.HELD
    assert output.strip() == "held 2 recipients"


def test_hold_by_domain_and_status(queue):
    run("mailqueue", "hold", "--domain", "remote.test", "--status", "deferred")

    assert status_of("bob@remote.test") == Recipient.Status.HELD
    assert status_of("carol@other.test") == Recipient.Status.QUEUED


def test_hold_needs_selection(queue):
    with pytest.raises(CommandError, match="no mail selected; give queue ids, --domain or --status, or pass --all"):
        run("mailqueue", "hold")


def test_hold_all(queue):
    run("mailqueue", "hold", "--all")

    assert set(Recipient.objects.values_list("status", flat=True)) == {Recipient.Status.HELD}


def test_hold_skips_leased_recipient(queue):
    first, _ = queue
    lease(first, "bob@remote.test")

    preview = run("mailqueue", "hold", first.queue_id, "--dry-run")
    output = run("mailqueue", "hold", first.queue_id)

    assert "would hold 1 recipient" in preview
    assert "bob@remote.test  deferred  (skipped: a worker is delivering it)" in preview
    assert output.strip() == "held 1 recipient; skipped 1 recipient: 1 being delivered by a worker"
    assert status_of("bob@remote.test") == Recipient.Status.DEFERRED


def test_flush_held_message_says_skipped(queue):
    _, held = queue

    output = run("mailqueue", "flush", held.queue_id)
    preview = run("mailqueue", "flush", held.queue_id, "--dry-run")

    assert output.strip() == (
        "flushed 0 recipients; skipped 1 recipient: 1 held "
        "(release held mail first with 'manage.py mailqueue release QUEUE_ID')"
    )
    assert "would flush 0 recipients; skipped 1 recipient: 1 held" in preview
    assert status_of("dave@remote.test") == Recipient.Status.HELD


def test_hold_bounced_message_says_skipped(queue):
    first, _ = queue
    set_recipient(first, "carol@other.test", status=Recipient.Status.BOUNCED)

    output = run("mailqueue", "hold", first.queue_id)

    assert output.strip() == "held 1 recipient; skipped 1 recipient: 1 bounced"


@pytest.mark.parametrize("domain", ["bad domain!", "bad..test", "[1.2.3]"])
def test_invalid_domain_fails(queue, domain):
    before = spool_snapshot()

    with pytest.raises(CommandError, match=f"invalid --domain: .*{re.escape(domain)}"):
        run("mailqueue", "hold", "--domain", domain)

    assert spool_snapshot() == before


def test_address_literal_domain_selects(queue):
    literal = queue_message("root@[192.0.2.1]")

    output = run("mailqueue", "hold", "--domain", "[192.0.2.1]")

    assert output.strip() == "held 1 recipient"
    assert Recipient.objects.get(message=literal).status == Recipient.Status.HELD


def test_release_held(queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as hints:
        output = run("mailqueue", "release", "--status", "held")

    assert status_of("dave@remote.test") == Recipient.Status.QUEUED
    assert output.strip() == "released 1 recipient"
    assert len(hints) == 1


def test_requeue_deferred(queue):
    run("mailqueue", "requeue", "--domain", "remote.test")

    bob = Recipient.objects.get(address="bob@remote.test")
    assert bob.status == Recipient.Status.QUEUED
    assert bob.attempts == 2
    assert bob.reply_code == 451
    assert status_of("dave@remote.test") == Recipient.Status.QUEUED


def test_bounce_sends_dsn(queue):
    first, _ = queue

    output = run("mailqueue", "bounce", first.queue_id, "--reason", "mailbox closed")

    bob = Recipient.objects.get(address="bob@remote.test")
    assert bob.status == Recipient.Status.BOUNCED
    assert bob.reply_code == 550
    assert bob.reply_text == "mailbox closed"
    assert output.strip() == "bounced 2 recipients"
    dsn = Message.objects.get(source=Message.Source.BOUNCE)
    assert dsn.envelope_sender == ""
    assert list(dsn.recipients.values_list("address", flat=True)) == ["site@example.com"]


def test_delete_by_queue_id(queue):
    first, second = queue

    output = run("mailqueue", "delete", first.queue_id)

    assert list(Message.objects.values_list("queue_id", flat=True)) == [second.queue_id]
    assert output.strip() == "deleted 1 message"


def test_delete_by_domain_removes_whole_messages(queue):
    run("mailqueue", "delete", "--domain", "other.test")

    assert Recipient.objects.filter(address="bob@remote.test").count() == 0
    assert Message.objects.count() == 1


def test_delete_by_status(queue):
    _, second = queue

    run("mailqueue", "delete", "--status", "held")

    assert not Message.objects.filter(id=second.id).exists()
    assert Message.objects.count() == 1


def test_delete_skips_message_being_delivered(queue):
    first, _ = queue
    lease(first, "carol@other.test")

    preview = run("mailqueue", "delete", "--all", "--dry-run")
    output = run("mailqueue", "delete", "--all")

    assert "would delete 1 message" in preview
    assert f"{first.queue_id}  " in preview
    assert "(skipped: a worker is delivering it)" in preview
    assert output.strip() == "deleted 1 message"
    assert list(Message.objects.values_list("id", flat=True)) == [first.id]


def test_delete_needs_selection(queue):
    with pytest.raises(CommandError, match="pass --all"):
        run("mailqueue", "delete")

    assert Message.objects.count() == 2


def test_unknown_queue_id_fails(queue):
    with pytest.raises(CommandError, match="queue id not found: NOSUCHID; list the queue"):
        run("mailqueue", "delete", "nosuchid")

    assert Message.objects.count() == 2


@pytest.fixture
def finished_mail():
    """Old delivered, old bounced, young delivered, and old but still deferred mail."""
    old_delivered = queue_message("a@remote.test", subject="old delivered")
    set_recipient(old_delivered, "a@remote.test", status=Recipient.Status.DELIVERED)
    age(old_delivered, 10)
    old_bounced = queue_message("b@remote.test", subject="old bounced")
    set_recipient(old_bounced, "b@remote.test", status=Recipient.Status.BOUNCED)
    age(old_bounced, 10)
    young = queue_message("c@remote.test", subject="young delivered")
    set_recipient(young, "c@remote.test", status=Recipient.Status.DELIVERED)
    age(young, 2)
    old_pending = queue_message("d@remote.test", "e@remote.test", subject="old pending")
    set_recipient(old_pending, "d@remote.test", status=Recipient.Status.DELIVERED)
    defer(old_pending, "e@remote.test")
    age(old_pending, 10)
    return old_delivered, old_bounced, young, old_pending


def test_purge_old_finished_mail(finished_mail):
    old_delivered, old_bounced, young, old_pending = finished_mail

    output = run("mailqueue", "purge", "--days", "7")

    assert set(Message.objects.values_list("id", flat=True)) == {young.id, old_pending.id}
    assert output.strip() == "purged 2 messages older than 7 days"


def test_purge_default_days_from_setting(finished_mail, settings):
    settings.MAILHUB_PURGE_AFTER_DAYS = 1

    output = run("mailqueue", "purge")

    assert output.strip() == "purged 3 messages older than 1 day"


def test_purge_negative_days_fails():
    with pytest.raises(CommandError, match="--days must be 0 or more, not -1"):
        run("mailqueue", "purge", "--days", "-1")


def test_purge_dry_run_lists_messages(finished_mail):
    old_delivered, old_bounced, young, old_pending = finished_mail
    before = spool_snapshot()

    output = run("mailqueue", "purge", "--days", "7", "--dry-run")

    assert spool_snapshot() == before
    assert "dry run: would purge 2 messages older than 7 days" in output
    assert old_delivered.queue_id in output
    assert old_bounced.queue_id in output
    assert young.queue_id not in output
    assert old_pending.queue_id not in output


DRY_RUNS = {
    "flush": ["flush"],
    "hold": ["hold", "--all"],
    "release": ["release", "--all"],
    "requeue": ["requeue", "--domain", "remote.test"],
    "bounce": ["bounce", "--all"],
    "delete": ["delete", "--all"],
    "purge": ["purge", "--days", "0"],
}


@pytest.mark.parametrize("arguments", DRY_RUNS.values(), ids=DRY_RUNS.keys())
def test_dry_run_touches_nothing(queue, arguments, django_capture_on_commit_callbacks):
    done = queue_message("done@remote.test")
    set_recipient(done, "done@remote.test", status=Recipient.Status.DELIVERED)
    before = spool_snapshot()

    with django_capture_on_commit_callbacks() as hints:
        output = run("mailqueue", *arguments, "--dry-run")

    assert spool_snapshot() == before
    assert hints == []
    assert output.startswith("dry run: would ")
    assert any(queue_id in output for queue_id in Message.objects.values_list("queue_id", flat=True))
