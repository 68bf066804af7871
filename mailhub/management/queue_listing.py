"""The queue listing that ``mailq`` prints, in Postfix's layout or as JSON lines.

The text layout follows Postfix's ``mailq``: one entry per message with its queue id,
size in bytes, arrival time and envelope sender, then its recipients with their status
and last reply, and a final "-- N Kbytes in M Requests." line. The JSON form writes one
object per message and line, like Postfix's ``postqueue -j``.
"""
import json
import math

from django.db.models import Prefetch
from django.utils import timezone

from ..models import Recipient

HEADER = f"{'-Queue ID-':<13} {'--Size--':>8} {'----Arrival Time----':<20}  -Sender/Recipient-------"
RECIPIENT_INDENT = " " * 45
REPLY_INDENT = RECIPIENT_INDENT + "  "
ARRIVAL_FORMAT = "%a %b %d %H:%M:%S"
CHUNK_SIZE = 500

# Postfix marks a message that is being delivered with "*" and a held one with "!".
ACTIVE_MARK = "*"
HELD_MARK = "!"


def listed_messages(messages, recipients):
    """Return the messages in arrival order with the given recipients of each prefetched."""
    listed = Prefetch("recipients", queryset=recipients.order_by("id"), to_attr="listed_recipients")
    return messages.order_by("created_at", "id").prefetch_related(listed).iterator(chunk_size=CHUNK_SIZE)


def write_text(messages, stdout, empty_text="Mail queue is empty"):
    """Write the Postfix-style listing, or ``empty_text`` if there is nothing to list; return the number of messages written."""
    now = timezone.now()
    count = 0
    total_size = 0

    for message in messages:
        if count == 0:
            stdout.write(HEADER)
        for line in format_message(message, now):
            stdout.write(line)
        count += 1
        total_size += message.size

    if count == 0:
        stdout.write(empty_text)
        return 0
    stdout.write(format_summary(count, total_size))
    return count


def format_message(message, now):
    mark = message_mark(message, now)
    arrival = timezone.localtime(message.created_at).strftime(ARRIVAL_FORMAT)
    lines = [f"{message.queue_id + mark:<13} {message.size:>8} {arrival:<20}  {display_sender(message)}"]
    for recipient in message.listed_recipients:
        lines.extend(format_recipient(recipient, now))
    lines.append("")
    return lines


def format_recipient(recipient, now):
    details = [recipient.status, plural(recipient.attempts, "attempt")]
    if recipient.status in Recipient.PENDING_STATUSES:
        details.append("next " + timezone.localtime(recipient.next_attempt_at).strftime(ARRIVAL_FORMAT))
    if is_leased(recipient, now):
        details.append("being delivered")
    lines = [f"{RECIPIENT_INDENT}{recipient.address}  ({', '.join(details)})"]

    reply = format_reply(recipient)
    if reply:
        lines.append(f"{REPLY_INDENT}{reply}")
    return lines


def format_reply(recipient):
    """Return the last reply as "451 4.7.1 text [host]", or "" before the first attempt."""
    parts = [str(part) for part in (recipient.reply_code, recipient.reply_enhanced_code) if part]
    text = " ".join(recipient.reply_text.split())
    if text:
        parts.append(text)
    if recipient.remote_host:
        parts.append(f"[{recipient.remote_host}]")
    return " ".join(parts)


def format_summary(count, total_size):
    kbytes = math.ceil(total_size / 1024)
    return f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}."


def message_mark(message, now):
    recipients = message.listed_recipients
    if any(recipient.status == Recipient.Status.HELD for recipient in recipients):
        return HELD_MARK
    if any(is_leased(recipient, now) for recipient in recipients):
        return ACTIVE_MARK
    return " "


def is_leased(recipient, now):
    return recipient.lease_expires_at is not None and recipient.lease_expires_at > now


def display_sender(message):
    # Postfix shows the null sender <> of bounces as MAILER-DAEMON.
    return message.envelope_sender or "MAILER-DAEMON"


def plural(count, noun):
    return f"{count} {noun}{'s' if count != 1 else ''}"


def write_json(messages, stdout):
    """Write one JSON object per message and line; return the number of messages written."""
    count = 0
    for message in messages:
        stdout.write(json.dumps(message_record(message), ensure_ascii=False))
        count += 1
    return count


def message_record(message):
    return {
        "queue_id": message.queue_id,
        "arrival_time": message.created_at.isoformat(),
        "message_size": message.size,
        "sender": message.envelope_sender,
        "source": message.source,
        "message_id": message.message_id,
        "recipients": [recipient_record(recipient) for recipient in message.listed_recipients],
    }


def recipient_record(recipient):
    return {
        "address": recipient.address,
        "status": recipient.status,
        "attempts": recipient.attempts,
        "next_attempt_at": recipient.next_attempt_at.isoformat(),
        "reply_code": recipient.reply_code,
        "enhanced_status_code": recipient.reply_enhanced_code,
        "reply_text": recipient.reply_text,
        "remote_host": recipient.remote_host,
        "lease_expires_at": recipient.lease_expires_at.isoformat() if recipient.lease_expires_at else None,
    }
