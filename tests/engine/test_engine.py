"""The delivery engine in the test process, against real aiosmtpd peers and a real DNS server."""
import email.policy
from datetime import timedelta
from email.parser import BytesParser

import pytest
from django.utils import timezone

from mailhub import queue, tasks
from mailhub.delivery import claim, engine, outcomes
from mailhub.delivery.types import Reply
from mailhub.delivery.sweep import sweep
from mailhub.models import DeliveryAttempt, DestinationSlot, MailboxMessage, Message, Recipient, SweepRecord
from mailhub.spool import EnvelopeRecipient

from .conftest import SENDER, add_mailbox, bounces_to, enqueue, raw_message, route_to, statuses

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_hints")]


def parse(message):
    return BytesParser(policy=email.policy.default).parsebytes(Message.objects.get(pk=message.pk).raw_bytes)


def status_blocks(report):
    return [dict(block) for block in list(report.iter_parts())[1].get_payload()]


def test_route_delivery_bytes_equal(settings, smtp_peer):
    peer = smtp_peer(hostname="mx.remote.test")
    route_to(settings, peer)
    raw = raw_message(body="line one\r\n.leading dot\r\nline three")
    message = enqueue(["bob@remote.test"], raw=raw)

    assert engine.deliver_message(message.pk) == 1

    recipient = message.recipients.get()
    assert recipient.status == "delivered"
    assert recipient.reply_code == 250
    assert recipient.reply_enhanced_code == "2.0.0"
    assert recipient.remote_host
    assert recipient.lease_token == ""
    assert len(peer.messages) == 1
    assert peer.messages[0].content == raw
    assert peer.messages[0].recipients == ["bob@remote.test"]
    attempt = DeliveryAttempt.objects.get(recipient=recipient)
    assert attempt.outcome == "delivered"
    assert attempt.reply_code == 250


def test_mx_delivery_through_dns(settings, smtp_peer, dns_server):
    peer = smtp_peer(hostname="mx1.remote.test")
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")
    settings.MAILHUB_MX_PORT = peer.port
    message = enqueue(["bob@remote.test"])

    engine.deliver_message(message.pk)

    assert statuses(message) == {"bob@remote.test": "delivered"}
    assert peer.messages[0].content == message.raw_bytes
    assert "mx1.remote.test" in message.recipients.get().remote_host


def test_delivered_recipient_never_sent_again(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    message = enqueue(["bob@remote.test"])
    engine.deliver_message(message.pk)
    Recipient.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=1))

    assert engine.deliver_message(message.pk) == 0
    assert engine.deliver_due() == 0
    assert len(peer.messages) == 1


def test_temporary_failure_defers_then_delivers(settings, smtp_peer):
    settings.MAILHUB_RETRY_JITTER = 0
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "451 4.3.0 try again later"
    message = enqueue(["bob@remote.test"])
    before = timezone.now()

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "deferred"
    assert recipient.attempts == 1
    assert recipient.reply_code == 451
    assert recipient.reply_enhanced_code == "4.3.0"
    assert before + timedelta(seconds=300) <= recipient.next_attempt_at <= timezone.now() + timedelta(seconds=300)
    assert engine.deliver_message(message.pk) == 0

    peer.replies.rcpt.clear()
    assert queue.retry_now(Recipient.objects.filter(message=message)) == 1
    engine.deliver_message(message.pk)

    recipient.refresh_from_db()
    assert recipient.status == "delivered"
    assert recipient.attempts == 2
    assert len(peer.messages) == 1
    assert not bounces_to(SENDER)


def test_second_deferral_doubles_delay(settings, smtp_peer):
    settings.MAILHUB_RETRY_JITTER = 0
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "451 4.3.0 try again later"
    message = enqueue(["bob@remote.test"])
    engine.deliver_message(message.pk)
    queue.retry_now(Recipient.objects.all())
    before = timezone.now()

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.attempts == 2
    assert before + timedelta(seconds=600) <= recipient.next_attempt_at <= timezone.now() + timedelta(seconds=600)


def test_expired_after_lifetime_bounces_with_dsn(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    add_mailbox(SENDER)
    peer.replies.rcpt["bob@remote.test"] = "451 4.3.0 mailbox busy"
    message = enqueue(["bob@remote.test"])
    engine.deliver_message(message.pk)
    assert statuses(message) == {"bob@remote.test": "deferred"}

    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=5, minutes=1))
    queue.retry_now(Recipient.objects.filter(message=message))
    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "bounced"
    assert recipient.reply_enhanced_code == "4.4.7"
    [bounce] = bounces_to(SENDER)
    per_recipient = status_blocks(parse(bounce))[1]
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "4.4.7"
    assert per_recipient["Diagnostic-Code"] == "smtp; 451 4.3.0 mailbox busy"


def test_sweep_expires_lifetime(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    message = enqueue(["bob@remote.test"])
    Recipient.objects.update(
        status="deferred",
        reply_code=421,
        reply_text="too busy",
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=6))

    counts = sweep()

    assert counts["expired"] == 1
    assert statuses(message) == {"bob@remote.test": "bounced"}
    assert len(bounces_to(SENDER)) == 1
    assert peer.messages == []


def test_one_of_three_rejected(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["carol@remote.test"] = "550 5.1.1 no such user"
    message = enqueue(["bob@remote.test", "carol@remote.test", "dave@remote.test"])

    engine.deliver_message(message.pk)

    assert statuses(message) == {
        "bob@remote.test": "delivered",
        "carol@remote.test": "bounced",
        "dave@remote.test": "delivered",
    }
    assert len(peer.messages) == 1
    assert peer.messages[0].recipients == ["bob@remote.test", "dave@remote.test"]
    [bounce] = bounces_to(SENDER)
    report = parse(bounce)
    assert report.get_content_type() == "multipart/report"
    blocks = status_blocks(report)
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822; carol@remote.test"]
    assert blocks[1]["Status"] == "5.1.1"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert blocks[1]["Remote-MTA"].startswith("dns; ")


def test_no_dsn_for_null_sender(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "550 5.1.1 no such user"
    message = enqueue(["bob@remote.test"], sender="")

    engine.deliver_message(message.pk)

    assert statuses(message) == {"bob@remote.test": "bounced"}
    assert not Message.objects.filter(source="bounce").exists()


def test_no_dsn_for_notify_never(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "550 5.1.1 no such user"
    message = enqueue([EnvelopeRecipient("bob@remote.test", notify="NEVER")])

    engine.deliver_message(message.pk)

    assert statuses(message) == {"bob@remote.test": "bounced"}
    assert not Message.objects.filter(source="bounce").exists()


def test_bounce_reaches_local_mailbox(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    mailbox = add_mailbox(SENDER)
    peer.replies.rcpt["bob@remote.test"] = "550 5.1.1 no such user"
    message = enqueue(["bob@remote.test"])

    engine.deliver_message(message.pk)
    [bounce] = bounces_to(SENDER)
    engine.deliver_message(bounce.pk)

    stored = MailboxMessage.objects.get(mailbox=mailbox)
    assert stored.raw_bytes == bounce.raw_bytes
    assert stored.envelope_sender == ""
    assert stored.subject == "Undelivered Mail Returned to Sender"


def test_local_delivery_byte_for_byte(settings):
    mailbox = add_mailbox("carol@local.test")
    raw = raw_message(subject="=?utf-8?q?caf=C3=A9?=", body="caf\xc3\xa9 bytes stay bytes")
    message = enqueue(["Carol@LOCAL.test"], raw=raw)

    engine.deliver_message(message.pk)

    assert statuses(message) == {"Carol@LOCAL.test": "delivered"}
    stored = MailboxMessage.objects.get(mailbox=mailbox)
    assert stored.raw_bytes == raw
    assert stored.subject == "café"
    assert stored.from_header == f"Alice <{SENDER}>"
    assert stored.queue_id == message.queue_id
    assert stored.envelope_recipient == "carol@local.test"


def test_unknown_local_user_bounces(settings):
    add_mailbox("carol@local.test")
    message = enqueue(["nobody@local.test"])

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "bounced"
    assert recipient.reply_enhanced_code == "5.1.1"
    [bounce] = bounces_to(SENDER)
    assert status_blocks(parse(bounce))[1]["Status"] == "5.1.1"


def test_alias_destination_without_mailbox_bounces(settings):
    from mailhub.models import Alias, Domain

    carol = add_mailbox("carol@local.test")
    Alias.objects.create(
        domain=Domain.objects.get(name="local.test"),
        local_part="team",
        destinations="carol@local.test, gone@local.test",
    )
    message = enqueue(["team@local.test"])

    engine.deliver_message(message.pk)
    engine.deliver_message(message.pk)

    assert statuses(message) == {"team@local.test": "delivered", "gone@local.test": "bounced"}
    assert MailboxMessage.objects.filter(mailbox=carol).count() == 1
    [bounce] = bounces_to(SENDER)
    [block] = status_blocks(parse(bounce))[1:]
    assert block["Status"] == "5.1.1"
    assert block["Final-Recipient"] == "rfc822; gone@local.test"
    assert block["Original-Recipient"] == "rfc822; team@local.test"


def test_alias_expands_local_and_remote(settings, smtp_peer):
    from mailhub.models import Alias, Domain

    peer = smtp_peer()
    route_to(settings, peer)
    carol = add_mailbox("carol@local.test")
    dave = add_mailbox("dave@local.test")
    Alias.objects.create(
        domain=Domain.objects.get(name="local.test"),
        local_part="team",
        destinations="carol@local.test, dave@local.test, erin@remote.test",
    )
    message = enqueue(["team@local.test"])

    engine.deliver_message(message.pk)
    engine.deliver_message(message.pk)

    assert statuses(message) == {"team@local.test": "delivered", "erin@remote.test": "delivered"}
    assert MailboxMessage.objects.filter(mailbox__in=[carol, dave]).count() == 2
    assert peer.received_recipients() == ["erin@remote.test"]
    forwarded = Recipient.objects.get(address="erin@remote.test")
    assert forwarded.original_recipient == "rfc822;team@local.test"


def test_alias_loop_bounces(settings):
    from mailhub.models import Alias, Domain

    domain = Domain.objects.create(name="local.test")
    Alias.objects.create(domain=domain, local_part="ping", destinations="pong@local.test")
    Alias.objects.create(domain=domain, local_part="pong", destinations="ping@local.test")
    message = enqueue(["ping@local.test"])

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "bounced"
    assert recipient.reply_enhanced_code == "5.4.6"


def test_hop_limit_bounces(settings, smtp_peer):
    settings.MAILHUB_MAX_RECEIVED_HEADERS = 3
    peer = smtp_peer()
    route_to(settings, peer)
    trace = "".join(f"Received: from hop{number}.test by hop{number + 1}.test\r\n" for number in range(4))
    message = enqueue(["bob@remote.test"], raw=trace.encode() + raw_message())

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "bounced"
    assert recipient.reply_enhanced_code == "5.4.6"
    assert peer.messages == []


def test_null_mx_and_nxdomain_bounce(settings, dns_server):
    dns_server.add_null_mx("nomail.test")
    dns_server.set_nxdomain("gone.test")
    message = enqueue(["a@nomail.test", "b@gone.test"])

    engine.deliver_message(message.pk)

    codes = dict(message.recipients.values_list("address", "reply_enhanced_code"))
    assert statuses(message) == {"a@nomail.test": "bounced", "b@gone.test": "bounced"}
    assert codes == {"a@nomail.test": "5.1.10", "b@gone.test": "5.1.2"}
    [bounce] = bounces_to(SENDER)
    assert len(status_blocks(parse(bounce))) == 3


def test_servfail_defers(settings, dns_server):
    dns_server.set_servfail("flaky.test")
    message = enqueue(["a@flaky.test"])

    engine.deliver_message(message.pk)

    assert statuses(message) == {"a@flaky.test": "deferred"}
    assert not bounces_to(SENDER)


def test_refused_connection_defers(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    peer.stop()
    message = enqueue(["bob@remote.test"])

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "deferred"
    assert recipient.reply_code // 100 == 4


def test_messages_share_one_session(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    messages = [enqueue([f"user{number}@remote.test"]) for number in range(5)]

    engine.deliver_message(messages[0].pk)

    assert peer.sessions == 1
    assert len(peer.messages) == 5
    assert set(Recipient.objects.values_list("status", flat=True)) == {"delivered"}
    assert DestinationSlot.objects.exclude(holder="").count() == 0


def test_busy_destination_postpones(settings, smtp_peer):
    settings.MAILHUB_DESTINATION_CONCURRENCY = 1
    settings.MAILHUB_DESTINATION_SLOT_WAIT = 0
    peer = smtp_peer()
    route_to(settings, peer)
    destination = f"relay:127.0.0.1:{peer.port}"
    DestinationSlot.objects.create(
        destination=destination, slot=0, holder="other-worker", expires_at=timezone.now() + timedelta(minutes=5)
    )
    message = enqueue(["bob@remote.test"])

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "queued"
    assert recipient.attempts == 0
    assert recipient.lease_token == ""
    assert peer.sessions == 0

    DestinationSlot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    queue.retry_now(Recipient.objects.all())
    engine.deliver_message(message.pk)
    assert statuses(message) == {"bob@remote.test": "delivered"}


def test_sweep_returns_expired_leases(settings):
    message = enqueue(["bob@remote.test"])
    Recipient.objects.update(lease_token="dead-worker", lease_expires_at=timezone.now() - timedelta(seconds=1))

    counts = sweep()

    assert counts["expired_leases"] == 1
    assert counts["requeued"] == 1
    recipient = message.recipients.get()
    assert recipient.lease_token == ""
    record = SweepRecord.objects.get(name="sweep")
    assert record.expired_leases == 1
    assert record.ran_at <= timezone.now()


def test_sweep_leaves_live_leases(settings):
    enqueue(["bob@remote.test"])
    Recipient.objects.update(lease_token="live-worker", lease_expires_at=timezone.now() + timedelta(minutes=5))

    counts = sweep()

    assert counts["expired_leases"] == 0
    assert counts["requeued"] == 0
    assert Recipient.objects.get().lease_token == "live-worker"


def test_success_dsn_on_delivery(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer)
    message = enqueue([EnvelopeRecipient("bob@remote.test", notify="SUCCESS")])

    engine.deliver_message(message.pk)

    [report] = bounces_to(SENDER)
    assert status_blocks(parse(report))[1]["Action"] == "delivered"


def test_delay_warning_dsn(settings, smtp_peer):
    settings.MAILHUB_DELAY_WARNING_AFTER = 3600
    peer = smtp_peer()
    route_to(settings, peer)
    peer.replies.rcpt["bob@remote.test"] = "451 4.3.0 try again later"
    message = enqueue(["bob@remote.test"])
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(hours=2))

    engine.deliver_message(message.pk)
    queue.retry_now(Recipient.objects.all())
    engine.deliver_message(message.pk)

    assert statuses(message) == {"bob@remote.test": "deferred"}
    [warning] = bounces_to(SENDER)
    block = status_blocks(parse(warning))[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.3.0"


def test_lost_reply_after_data_marks_duplicate(settings, raw_smtp_peer):
    def drop_after_final_dot(connection):
        connection.send("220 peer.test ESMTP\r\n")
        while True:
            verb = connection.read_line().decode().split(" ")[0].upper()
            if verb == "DATA":
                connection.send("354 go ahead\r\n")
                connection.read_data()
                return
            connection.send("250 peer.test\r\n" if verb in ("EHLO", "HELO") else "250 2.0.0 OK\r\n")

    peer = raw_smtp_peer(drop_after_final_dot)
    route_to(settings, peer)
    message = enqueue(["bob@remote.test"])

    engine.deliver_message(message.pk)

    recipient = message.recipients.get()
    assert recipient.status == "deferred"
    assert recipient.possible_duplicate is True
    assert recipient.reply_code == 451


def test_batch_outcomes_skip_a_lost_lease(settings):
    message = enqueue(["a@remote.test", "b@remote.test", "c@remote.test"])
    token, recipients = claim.claim_message(message.pk)
    taken_over = recipients[1]
    Recipient.objects.filter(pk=taken_over.pk).update(lease_token="other-worker")
    accepted = Reply(250, "2.0.0", "queued", "peer")

    recorded = outcomes.record(token, [(recipient, accepted) for recipient in recipients])

    assert [recipient.address for recipient, _ in recorded] == ["a@remote.test", "c@remote.test"]
    assert statuses(message) == {"a@remote.test": "delivered", "b@remote.test": "queued", "c@remote.test": "delivered"}
    assert Recipient.objects.get(pk=taken_over.pk).lease_token == "other-worker"
    assert sorted(DeliveryAttempt.objects.values_list("recipient__address", flat=True)) == ["a@remote.test", "c@remote.test"]


def test_batch_outcomes_store_each_reply(settings):
    message = enqueue(["a@remote.test", "b@remote.test", "c@remote.test"])
    token, recipients = claim.claim_message(message.pk)
    replies = [Reply(250, "2.0.0", "queued as A", "peer"), Reply(451, "4.3.0", "later", "peer"), Reply(550, "5.1.1", "no such user", "peer")]

    outcomes.record(token, list(zip(recipients, replies)))

    stored = {recipient.address: recipient for recipient in Recipient.objects.filter(message=message)}
    assert [(stored[address].status, stored[address].reply_text, stored[address].attempts) for address in sorted(stored)] == [
        ("delivered", "queued as A", 1),
        ("deferred", "later", 1),
        ("bounced", "no such user", 1),
    ]
    assert stored["b@remote.test"].next_attempt_at > timezone.now()
    assert stored["b@remote.test"].finished_at is None
    assert stored["c@remote.test"].finished_at is not None
    assert all(recipient.lease_token == "" for recipient in stored.values())
    assert recipients[1].status == "deferred"
    assert recipients[1].attempts == 1
    assert DeliveryAttempt.objects.filter(message=message).count() == 3


def test_next_domain_goes_in_one_session(settings, smtp_peer):
    first_peer = smtp_peer()
    second_peer = smtp_peer()
    route_to(settings, first_peer, domain="first.test")
    route_to(settings, second_peer, domain="second.test")
    enqueue(["a@first.test"])
    enqueue(["b@second.test"])
    enqueue(["c@first.test"])

    assert engine.deliver_next_domain() == 2

    assert first_peer.sessions == 1
    assert sorted(first_peer.received_recipients()) == ["a@first.test", "c@first.test"]
    assert second_peer.sessions == 0
    assert engine.deliver_next_domain() == 1
    assert engine.deliver_next_domain() == 0
    assert second_peer.received_recipients() == ["b@second.test"]


def test_relay_session_goes_on_with_other_domains(settings, smtp_peer):
    peer = smtp_peer()
    route_to(settings, peer, domain="first.test")
    route_to(settings, peer, domain="second.test")
    other_peer = smtp_peer()
    route_to(settings, other_peer, domain="third.test")
    first = enqueue(["a@first.test"])
    enqueue(["b@second.test"])
    enqueue(["c@third.test"])
    enqueue(["d@second.test"])

    assert engine.deliver_message(first.pk) == 1

    assert peer.sessions == 1
    assert sorted(peer.received_recipients()) == ["a@first.test", "b@second.test", "d@second.test"]
    assert other_peer.sessions == 0
    assert Recipient.objects.get(address="c@third.test").status == "queued"


def test_deliver_task_drains_other_due_mail(settings, smtp_peer):
    first_peer = smtp_peer()
    second_peer = smtp_peer()
    route_to(settings, first_peer, domain="first.test")
    route_to(settings, second_peer, domain="second.test")
    first = enqueue(["a@first.test"])
    enqueue(["b@second.test"])
    later = enqueue(["c@second.test"])
    Recipient.objects.filter(message=later).update(next_attempt_at=timezone.now() + timedelta(hours=1))

    assert tasks.deliver_message(first.pk) == 2

    assert first_peer.received_recipients() == ["a@first.test"]
    assert second_peer.received_recipients() == ["b@second.test"]
    assert statuses(later) == {"c@second.test": "queued"}


def test_outcomes_wait_for_record_batch(settings):
    settings.MAILHUB_DELIVERY_RECORD_RECIPIENTS = 3
    settings.MAILHUB_DELIVERY_RECORD_SECONDS = 60
    message = enqueue(["a@remote.test", "b@remote.test", "c@remote.test"])
    token, recipients = claim.claim_message(message.pk)
    accepted = Reply(250, "2.0.0", "queued", "peer")
    unrecorded = engine.UnrecordedOutcomes(token)

    unrecorded.add([(recipients[0], accepted), (recipients[1], accepted)])
    assert set(statuses(message).values()) == {"queued"}

    unrecorded.add([(recipients[2], accepted)])
    assert set(statuses(message).values()) == {"delivered"}


def test_outcomes_recorded_after_each_reply(settings):
    settings.MAILHUB_DELIVERY_RECORD_RECIPIENTS = 1
    message = enqueue(["a@remote.test", "b@remote.test"])
    token, recipients = claim.claim_message(message.pk)
    unrecorded = engine.UnrecordedOutcomes(token)

    unrecorded.add([(recipients[0], Reply(250, "2.0.0", "queued", "peer"))])

    assert statuses(message) == {"a@remote.test": "delivered", "b@remote.test": "queued"}
