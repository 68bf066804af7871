"""RFC 3464 DSNs: structure, fields, NOTIFY, RET and the null sender."""
import email.policy
from email.parser import BytesParser

import pytest

from mailhub import spool
from mailhub.delivery import dsn
from mailhub.delivery.xtext import typed_address
from mailhub.models import Message, Recipient

ORIGINAL = (
    b"Received: from client.example.test by mailhub.test\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: quarterly report\r\n"
    b"Message-ID: <original-1@example.test>\r\n"
    b"\r\n"
    b"The body of the original message.\r\n"
)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(spool, "schedule_delivery", lambda message: None)


def spool_original(sender="alice@example.test", recipients=None, **fields):
    recipients = recipients or ["bob@remote.test"]
    return spool.enqueue(ORIGINAL, sender, recipients, source="submission", **fields)


def bounce(recipient, code=550, enhanced="5.1.1", text="user unknown", host="mx.remote.test[127.0.0.1]:25"):
    Recipient.objects.filter(id=recipient.id).update(
        status="bounced", reply_code=code, reply_enhanced_code=enhanced, reply_text=text, remote_host=host
    )


def parse(dsn_message):
    return BytesParser(policy=email.policy.default).parsebytes(Message.objects.get(pk=dsn_message.pk).raw_bytes)


def status_blocks(report):
    parts = list(report.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    return [dict(block) for block in parts[1].get_payload()]


@pytest.mark.django_db
def test_failure_dsn_structure():
    message = spool_original(
        recipients=[spool.EnvelopeRecipient("bob@remote.test", notify="FAILURE", original_recipient="rfc822;Bob@remote.test")],
        dsn_envid="ENV-42",
    )
    bounce(message.recipients.get())

    sent = dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced"))

    assert sent.envelope_sender == ""
    assert sent.source == "bounce"
    assert list(sent.recipients.values_list("address", flat=True)) == ["alice@example.test"]
    report = parse(sent)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == "alice@example.test"
    assert report["Auto-Submitted"] == "auto-replied"
    parts = list(report.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert "bob@remote.test" in parts[0].get_content()
    per_message, per_recipient = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; mailhub.test"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert "Arrival-Date" in per_message
    assert per_recipient["Final-Recipient"] == "rfc822; bob@remote.test"
    assert per_recipient["Original-Recipient"] == "rfc822; Bob@remote.test"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.test"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 user unknown"
    assert "Last-Attempt-Date" in per_recipient


@pytest.mark.django_db
def test_dsn_returns_full_message_by_default():
    message = spool_original()
    bounce(message.recipients.get())
    report = parse(dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")))
    returned = list(report.iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_content()["Message-ID"] == "<original-1@example.test>"
    assert "The body of the original message." in returned.get_content().get_content()


@pytest.mark.django_db
def test_dsn_ret_hdrs_returns_headers_only():
    message = spool_original(dsn_ret="HDRS")
    bounce(message.recipients.get())
    report = parse(dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")))
    returned = list(report.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: quarterly report" in returned.get_content()
    assert "The body of the original message." not in returned.get_content()


@pytest.mark.django_db
def test_dsn_size_cap_returns_headers(settings):
    settings.MAILHUB_BOUNCE_MAX_RETURNED_SIZE = 50
    message = spool_original(dsn_ret="FULL")
    bounce(message.recipients.get())
    report = parse(dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")))
    assert list(report.iter_parts())[2].get_content_type() == "text/rfc822-headers"


@pytest.mark.django_db
def test_one_dsn_lists_every_failed_recipient():
    message = spool_original(recipients=["a@remote.test", "b@remote.test", "c@remote.test"])
    for recipient in message.recipients.exclude(address="b@remote.test"):
        bounce(recipient)

    sent = dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced"))
    again = dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced"))

    finals = [block["Final-Recipient"] for block in status_blocks(parse(sent))[1:]]
    assert finals == ["rfc822; a@remote.test", "rfc822; c@remote.test"]
    assert again is None
    assert Message.objects.filter(source="bounce").count() == 1


@pytest.mark.django_db
def test_no_dsn_for_null_sender():
    message = spool_original(sender="")
    bounce(message.recipients.get())
    assert dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")) is None
    assert not Message.objects.filter(source="bounce").exists()
    assert message.recipients.get().notified_at is not None


@pytest.mark.django_db
def test_no_dsn_for_notify_never():
    message = spool_original(recipients=[spool.EnvelopeRecipient("bob@remote.test", notify="NEVER")])
    bounce(message.recipients.get())
    assert dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")) is None
    assert not Message.objects.filter(source="bounce").exists()


@pytest.mark.django_db
def test_success_dsn_only_when_asked():
    message = spool_original(
        recipients=[
            spool.EnvelopeRecipient("asked@remote.test", notify="SUCCESS,FAILURE"),
            spool.EnvelopeRecipient("silent@remote.test"),
        ]
    )
    Recipient.objects.update(status="delivered", reply_code=250, reply_enhanced_code="2.0.0", reply_text="ok")

    dsn.report_unnotified(message)

    sent = Message.objects.get(source="bounce")
    blocks = status_blocks(BytesParser(policy=email.policy.default).parsebytes(sent.raw_bytes))
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822; asked@remote.test"]
    assert blocks[1]["Action"] == "delivered"
    assert blocks[1]["Status"] == "2.0.0"


@pytest.mark.django_db
def test_delay_dsn_honours_notify():
    message = spool_original(
        recipients=[
            spool.EnvelopeRecipient("delay@remote.test", notify="DELAY"),
            spool.EnvelopeRecipient("failure-only@remote.test", notify="FAILURE"),
        ]
    )
    Recipient.objects.update(status="deferred", reply_code=451, reply_enhanced_code="4.3.0", reply_text="later")

    dsn.report_delay(message)

    sent = Message.objects.get(source="bounce")
    blocks = status_blocks(BytesParser(policy=email.policy.default).parsebytes(sent.raw_bytes))
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822; delay@remote.test"]
    assert blocks[1]["Action"] == "delayed"
    assert "Will-Retry-Until" in blocks[1]


@pytest.mark.django_db
def test_hostile_reply_text_stays_one_field():
    message = spool_original()
    bounce(message.recipients.get(), text="bad\r\nX-Injected: yes\r\n\r\nbody")
    report = parse(dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced")))
    per_recipient = status_blocks(report)[1]
    assert "X-Injected" not in per_recipient
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 bad X-Injected: yes body"


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("mx.remote.test[127.0.0.1]:25", "mx.remote.test"),
        ("[127.0.0.1]:2626", "127.0.0.1"),
        ("[::1]:25", "::1"),
        ("relay.test", "relay.test"),
    ],
)
def test_remote_mta_name_drops_address_and_port(recorded, expected):
    assert dsn.remote_mta_name(recorded) == expected


@pytest.mark.django_db
def test_non_ascii_recipient_uses_utf8_address_type():
    recipient = spool.EnvelopeRecipient(
        "müller@bücher.test", notify="FAILURE", original_recipient="utf-8;m\\x{FC}ller+ö@bücher.test"
    )
    message = spool_original(recipients=[recipient], smtputf8=True)
    bounce(message.recipients.get())

    sent = dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced"))

    status_part = list(parse(sent).iter_parts())[1]
    per_recipient = status_blocks(parse(sent))[1]
    assert per_recipient["Final-Recipient"] == "utf-8; m\\x{FC}ller@b\\x{FC}cher.test"
    assert per_recipient["Original-Recipient"] == "utf-8; m\\x{FC}ller+\\x{F6}@b\\x{FC}cher.test"
    assert status_part.as_bytes().isascii()
    assert b"=?utf-8?" not in status_part.as_bytes()


@pytest.mark.django_db
def test_non_ascii_reply_stays_7bit_in_diagnostic_code():
    message = spool_original()
    bounce(message.recipients.get(), text="<jürgen@remote.test>: no such user")

    per_recipient = status_blocks(parse(dsn.report(message, dsn.FAILED, Recipient.objects.filter(status="bounced"))))[1]

    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <j\\x{FC}rgen@remote.test>: no such user"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bob@remote.test", "rfc822; bob@remote.test"),
        ("é@x.test", "utf-8; \\x{E9}@x.test"),
        ("a+b=c\\d é@x.test", "utf-8; a\\x{2B}b\\x{3D}c\\x{5C}d\\x{20}\\x{E9}@x.test"),
        ("😀@x.test", "utf-8; \\x{1F600}@x.test"),
    ],
)
def test_typed_address_escapes_for_7bit(address, expected):
    assert typed_address(address) == expected
