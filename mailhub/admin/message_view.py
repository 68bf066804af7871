"""Decode a raw message for display: headers, text body, HTML source and attachments.

Templates autoescape every value, so the admin page shows an HTML body as source text.
Only html_preview_response serves it as HTML, under a Content-Security-Policy that
blocks scripts and every remote load.
"""
import email.parser
import email.policy
from dataclasses import dataclass, field

from django.http import HttpResponse

from ..headers import decode_field

# Bodies larger than this are cut for display. The raw download has the whole message.
MAX_DISPLAY_BODY = 512 * 1024


@dataclass
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass
class DecodedMessage:
    headers: list = field(default_factory=list)
    text_body: str = ""
    html_body: str = ""
    attachments: list = field(default_factory=list)
    truncated: bool = False


def decode_message(raw):
    """Return a DecodedMessage for raw message bytes, however malformed they are."""
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(bytes(raw))
    decoded = DecodedMessage(headers=read_headers(message))

    for part in message.walk():
        if part.is_multipart():
            continue
        add_part(decoded, part)

    decoded.text_body, text_cut = cut_for_display(decoded.text_body)
    decoded.html_body, html_cut = cut_for_display(decoded.html_body)
    decoded.truncated = text_cut or html_cut
    return decoded


def read_headers(message):
    return [(name, decode_field(value)) for name, value in message.items()]


def add_part(decoded, part):
    content_type = part.get_content_type()
    is_attachment = part.get_content_disposition() == "attachment" or part.get_filename()

    if content_type == "text/plain" and not is_attachment and not decoded.text_body:
        decoded.text_body = part_text(part)
    elif content_type == "text/html" and not is_attachment and not decoded.html_body:
        decoded.html_body = part_text(part)
    else:
        decoded.attachments.append(describe_attachment(part))


def part_text(part):
    """Return a part's payload decoded from its transfer encoding and charset."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def describe_attachment(part):
    payload = part.get_payload(decode=True) or b""
    filename = decode_field(part.get_filename()) if part.get_filename() else ""
    return Attachment(filename=filename, content_type=part.get_content_type(), size=len(payload))


def cut_for_display(text):
    if len(text) <= MAX_DISPLAY_BODY:
        return text, False
    return text[:MAX_DISPLAY_BODY], True


# The preview frame may show inline styles and data: images, and nothing else: no scripts,
# no forms, no plugins and no request to any other host (so no tracking pixels).
PREVIEW_CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"
)


def html_preview_response(html):
    """Return an HTML body as a response that browsers render without scripts or remote loads."""
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = PREVIEW_CONTENT_SECURITY_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    return response
