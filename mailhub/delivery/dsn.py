"""Delivery status notifications (RFC 3464) sent back to the envelope sender.

A DSN is a ``multipart/report; report-type=delivery-status`` message with a text part
for people, a ``message/delivery-status`` part for programs and the original headers or
message. It is built with the email package and spooled from the null sender ``<>``.
Mail from ``<>`` never gets a DSN, so two MTAs cannot bounce a message back and forth.
"""
import email.policy
import email.utils
import logging
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser

from django.db import transaction
from django.utils import timezone

from .. import conf, headers, spool
from ..models import DeliveryAttempt, Recipient
from . import retry
from .xtext import escape_non_ascii, typed_address

logger = logging.getLogger(__name__)

FAILED = "failed"
DELAYED = "delayed"
DELIVERED = "delivered"

SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
}
INTRODUCTIONS = {
    FAILED: "Your message could not be delivered to one or more recipients.\n"
    "The recipients and the reasons follow; the original message or its headers are attached.",
    DELAYED: "Your message has not been delivered yet to one or more recipients.\n"
    "Delivery is still being retried; you do not need to send it again.",
    DELIVERED: "Your message was delivered to the recipients listed below.",
}
# The NOTIFY keyword (RFC 3461) that requests each kind of report.
NOTIFY_KEYWORDS = {FAILED: "FAILURE", DELAYED: "DELAY", DELIVERED: "SUCCESS"}


def wants_report(recipient, action):
    """Return whether the recipient's NOTIFY requests a report of this kind.

    Without NOTIFY, failures and delays are reported, which RFC 3461 section 4.1 allows
    (the absence of NOTIFY may be read as FAILURE or FAILURE,DELAY).
    """
    keywords = {item.strip().upper() for item in recipient.notify.split(",") if item.strip()}
    if not keywords:
        return action in (FAILED, DELAYED)
    if "NEVER" in keywords:
        return False
    return NOTIFY_KEYWORDS[action] in keywords


def report_unnotified(message):
    """Send the DSNs that the message's recipients are owed: failures and successes.

    Each recipient is reported once: its ``notified_at`` is set in the same transaction
    that spools the DSN.
    """
    report(message, FAILED, Recipient.objects.filter(status=Recipient.Status.BOUNCED, notified_at__isnull=True))
    report(message, DELIVERED, Recipient.objects.filter(status=Recipient.Status.DELIVERED, notified_at__isnull=True, notify__icontains="SUCCESS"))


def report_delay(message):
    """Send a delay warning for deferred recipients that have not had one."""
    pending = Recipient.objects.filter(status=Recipient.Status.DEFERRED, delay_notified_at__isnull=True)
    report(message, DELAYED, pending, mark="delay_notified_at")


def report(message, action, candidates, mark="notified_at"):
    """Mark the matching recipients of the message as notified and spool one DSN for them.

    Returns the spooled DSN Message, or None when no recipient is to be reported.
    """
    with transaction.atomic():
        recipients = take(message, candidates, mark)
        reported = [recipient for recipient in recipients if wants_report(recipient, action)]
        if not reported:
            return None
        if not message.envelope_sender:
            log_dropped(message, action, reported)
            return None
        raw = build(message, action, reported)
        dsn = spool.enqueue(raw, "", [message.envelope_sender], source="bounce")

    logger.info(
        "queue_id=%s dsn=%s action=%s to=<%s> recipients=%s",
        message.queue_id,
        dsn.queue_id,
        action,
        message.envelope_sender,
        ",".join(recipient.address for recipient in reported),
        extra={"queue_id": message.queue_id, "recipient_count": len(reported)},
    )
    return dsn


def take(message, candidates, mark):
    """Stamp the unreported candidates of the message with one time and read them back.

    The conditional update lets only one worker report a recipient even when two finish
    recipients of one message at the same moment.
    """
    stamp = timezone.now()
    candidates = candidates.filter(message=message, **{f"{mark}__isnull": True})
    if not candidates.update(**{mark: stamp}):
        return []
    return list(
        Recipient.objects.filter(message=message, **{mark: stamp}).select_related("message").order_by("id")
    )


def log_dropped(message, action, recipients):
    logger.warning(
        "queue_id=%s from=<> no DSN sent for a message from the null sender, action=%s recipients=%s",
        message.queue_id,
        action,
        ",".join(f"{recipient.address} ({recipient.reply_code} {recipient.reply_text})" for recipient in recipients),
        extra={"queue_id": message.queue_id, "recipient_count": len(recipients)},
    )


def build(message, action, recipients):
    """Return the DSN for the recipients of the message as bytes with CRLF line ends."""
    hostname = conf.get("HOSTNAME")
    report_message = EmailMessage(policy=email.policy.SMTP)
    report_message["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report_message["To"] = message.envelope_sender
    report_message["Subject"] = SUBJECTS[action]
    report_message["Date"] = email.utils.format_datetime(timezone.now())
    report_message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    report_message["Auto-Submitted"] = "auto-replied"

    report_message.set_content(human_readable(message, action, recipients))
    report_message.make_mixed()
    report_message.set_type("multipart/report")
    report_message.set_param("report-type", "delivery-status")
    report_message.attach(delivery_status(message, action, recipients))
    report_message.attach(returned_content(message, action))
    return report_message.as_bytes()


def human_readable(message, action, recipients):
    lines = [
        f"This is the mail system at host {conf.get('HOSTNAME')}.",
        "",
        INTRODUCTIONS[action],
        "",
        f"Queue ID: {message.queue_id}",
        f"Subject: {message.subject}",
        "",
    ]
    for recipient in recipients:
        lines.append(f"<{recipient.address}>: {explain(recipient)}")
    return "\n".join(lines) + "\n"


def explain(recipient):
    host = f"host {recipient.remote_host} said: " if recipient.remote_host else ""
    reply = " ".join(str(part) for part in (recipient.reply_code, recipient.reply_enhanced_code, recipient.reply_text) if part)
    return single_line(f"{host}{reply}" or "no reply recorded")


def delivery_status(message, action, recipients):
    part = MIMEPart(policy=email.policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload([per_message_fields(message)] + [per_recipient_fields(recipient, action) for recipient in recipients])
    return part


def per_message_fields(message):
    fields = Message(policy=email.policy.SMTP)
    if message.dsn_envid:
        fields["Original-Envelope-Id"] = single_line(message.dsn_envid)
    fields["Reporting-MTA"] = f"dns; {conf.get('HOSTNAME')}"
    fields["Arrival-Date"] = email.utils.format_datetime(message.created_at)
    return fields


def per_recipient_fields(recipient, action):
    fields = Message(policy=email.policy.SMTP)
    if recipient.original_recipient:
        fields["Original-Recipient"] = single_line(original_recipient_field(recipient.original_recipient))
    # message/delivery-status is 7-bit, so a non-ASCII address goes in RFC 6533's
    # utf-8 address type, escaped, instead of as an encoded word.
    fields["Final-Recipient"] = typed_address(single_line(recipient.address))
    fields["Action"] = action
    fields["Status"] = status_code(recipient, action)
    if recipient.remote_host and recipient.remote_host != "local":
        fields["Remote-MTA"] = f"dns; {single_line(remote_mta_name(recipient.remote_host))}"
    diagnostic = diagnostic_code(recipient)
    if diagnostic:
        # Also 7-bit: a remote reply may quote a non-ASCII address (SMTPUTF8).
        fields["Diagnostic-Code"] = escape_non_ascii(diagnostic)
    last_attempt = recipient.finished_at or recipient.updated_at
    if last_attempt:
        fields["Last-Attempt-Date"] = email.utils.format_datetime(last_attempt)
    if action == DELAYED:
        fields["Will-Retry-Until"] = email.utils.format_datetime(retry.expires_at(recipient.message))
    return fields


def original_recipient_field(value):
    """Return ORCPT as stored from RCPT (``rfc822;addr``) in the ``type; address`` form of RFC 3464.

    A non-ASCII address takes the utf-8 address type of RFC 6533, in its 7-bit form.
    """
    address_type, separator, address = value.partition(";")
    if not separator:
        return typed_address(value)
    address_type, address = address_type.strip(), address.strip()
    if address.isascii():
        return f"{address_type}; {address}"
    if address_type.lower() == "utf-8":
        # Already utf-8-addr-unitext, whose special characters are escaped.
        return f"utf-8; {escape_non_ascii(address)}"
    return typed_address(address)


def status_code(recipient, action):
    if recipient.reply_enhanced_code:
        return recipient.reply_enhanced_code
    defaults = {DELIVERED: "2.0.0", DELAYED: "4.0.0", FAILED: "5.0.0"}
    return defaults[action]


def diagnostic_code(recipient):
    """Return ``smtp; <reply>`` with the last reply the remote gave the recipient.

    An expired recipient's own reply text states that it expired, so the diagnostic repeats the
    last reply of its attempts instead.
    """
    reply_code = recipient.reply_code
    reply = " ".join(part for part in (recipient.reply_enhanced_code, recipient.reply_text) if part)
    if recipient.reply_enhanced_code == "4.4.7":
        last = (
            DeliveryAttempt.objects.filter(recipient=recipient, reply_code__isnull=False)
            .exclude(reply_enhanced_code="4.4.7")
            .order_by("-started_at", "-id")
            .first()
        )
        if last is not None:
            reply_code = last.reply_code
            reply = " ".join(part for part in (last.reply_enhanced_code, last.reply_text) if part)
    if reply_code is None:
        return ""
    return single_line(f"smtp; {reply_code} {reply}")


def returned_content(message, action):
    """Return the original as headers only or as the whole message (RET, size cap)."""
    raw = message.raw_bytes
    full = message.dsn_ret == message.Ret.FULL or (message.dsn_ret == "" and action == FAILED)
    if full and len(raw) <= conf.get("BOUNCE_MAX_RETURNED_SIZE"):
        part = MIMEPart(policy=email.policy.SMTP)
        part.set_content(BytesParser(policy=email.policy.SMTP).parsebytes(raw))
        return part

    part = MIMEPart(policy=email.policy.SMTP)
    header_text = headers.header_section(raw).decode("utf-8", errors="replace")
    part.set_content(header_text.replace("\r\n", "\n") + "\n", subtype="rfc822-headers")
    return part


def single_line(text):
    """Return text fit for one header field: remote replies may carry CR, LF or NUL."""
    return " ".join(str(text).replace("\x00", " ").split())


def remote_mta_name(remote_host):
    """Return the host name of a recorded ``name[address]:port``, or the address when unnamed.

    RFC 3464 section 2.3.5 wants the remote MTA's name for the "dns" type, without a port.
    """
    name, bracket, rest = remote_host.partition("[")
    if name or not bracket:
        return name or remote_host
    return rest.partition("]")[0]
