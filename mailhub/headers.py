"""Read summary fields from a raw message's header section without re-serialising it."""
import email.header
import email.parser
import email.policy
import email.utils
import re

# A header section ends at the first empty line, whatever the line ends are.
HEADER_END = re.compile(rb"\r?\n\r?\n")
RECEIVED_FIELD = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
MAX_SUMMARY_LENGTH = 998


def header_section(raw):
    """Return the bytes of the header section, up to and without the empty line."""
    match = HEADER_END.search(raw)
    return raw[: match.start()] if match else raw


def parse_headers(raw):
    """Parse only the header section into an email.message.Message; the body is not read."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return parser.parsebytes(header_section(raw) + b"\r\n\r\n")


def decode_field(value):
    """Decode RFC 2047 encoded words; undecodable bytes become replacement characters."""
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(str(value))
    except (ValueError, LookupError):
        return str(value)
    decoded = []
    for text, charset in parts:
        if isinstance(text, bytes):
            try:
                text = text.decode(charset or "utf-8", errors="replace")
            except LookupError:
                text = text.decode("utf-8", errors="replace")
        decoded.append(text)
    text = "".join(decoded)
    return " ".join(text.split())[:MAX_SUMMARY_LENGTH]


def summarize(raw):
    """Return the decoded Subject, Message-ID, From, To and Date of a raw message."""
    headers = parse_headers(raw)
    date = None
    if headers.get("Date"):
        try:
            date = email.utils.parsedate_to_datetime(str(headers["Date"]))
        except (TypeError, ValueError, IndexError):
            date = None
    return {
        "subject": decode_field(headers.get("Subject")),
        "message_id": decode_field(headers.get("Message-ID")),
        "from_header": decode_field(headers.get("From")),
        "to_header": decode_field(headers.get("To")),
        "date": date,
    }


def count_received(raw):
    """Count the Received: fields, the hop count that stops mail loops (RFC 5321 section 6.3)."""
    return len(RECEIVED_FIELD.findall(header_section(raw)))
