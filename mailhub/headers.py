"""Read summary fields from a raw message's header section without re-serialising it."""
import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import re

# A header section ends at the first empty line, whatever the line ends are.
HEADER_END = re.compile(rb"\r?\n\r?\n")
RECEIVED_FIELD = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
MAX_SUMMARY_LENGTH = 998
# C0 and C1 controls and DEL.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
SUMMARY_FIELDS = ("subject", "message-id", "from", "to", "date")
# Header fields the way the email package's parser reads them without a defect: a name
# of printable characters but the colon, or a folded continuation line, each ended by CRLF.
PLAIN_SECTION = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*(?:\r\n(?:[\x21-\x39\x3b-\x7e]+:|[ \t])[^\r\n]*)*")


def header_section(raw):
    """Return the bytes of the header section, up to and without the empty line."""
    match = HEADER_END.search(raw)
    return raw[: match.start()] if match else raw


def parse_headers(raw):
    """Parse only the header section into an email.message.Message; the body is not read."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return parser.parsebytes(header_section(raw) + b"\r\n\r\n")


def decode_field(value):
    """Decode RFC 2047 encoded words into one line of text.

    Undecodable bytes become replacement characters, and a malformed encoded word stays
    as it is. Control characters become spaces: an encoded word may hide a NUL, which
    PostgreSQL refuses in a text column, and a summary is one line for display.
    """
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(str(value))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        parts = [(str(value), None)]
    decoded = []
    for text, charset in parts:
        if isinstance(text, bytes):
            try:
                text = text.decode(charset or "utf-8", errors="replace")
            except LookupError:
                text = text.decode("utf-8", errors="replace")
        decoded.append(text)
    text = CONTROL_CHARACTERS.sub(" ", "".join(decoded))
    return " ".join(text.split())[:MAX_SUMMARY_LENGTH]


def summarize(raw):
    """Return the decoded Subject, Message-ID, From, To and Date of a raw message."""
    fields = summary_fields(raw)
    date = None
    if fields["date"]:
        try:
            date = email.utils.parsedate_to_datetime(str(fields["date"]))
        except (TypeError, ValueError, IndexError):
            date = None
    return {
        "subject": decode_field(fields["subject"]),
        "message_id": decode_field(fields["message-id"]),
        "from_header": decode_field(fields["from"]),
        "to_header": decode_field(fields["to"]),
        "date": date,
    }


def summary_fields(raw):
    """Return {name: first value, undecoded, or None} for each of SUMMARY_FIELDS."""
    fields = plain_summary_fields(header_section(raw))
    if fields is None:
        parsed = parse_headers(raw)
        fields = {name: parsed.get(name) for name in SUMMARY_FIELDS}
    return fields


def plain_summary_fields(section):
    """Return the first value of each summary field as the email package's compat32 parser
    gives it, or None when the section is not plain UTF-8 fields in CRLF lines.

    Every listener and backend message is summarised, and the email parser costs more
    than the rest of storing a small message. For ASCII both ways agree
    (tests/engine/test_headers.py). UTF-8 field values (RFC 6532, sent with SMTPUTF8)
    keep their characters here, where the compat32 parser turns each 8-bit byte into a
    replacement character. Any other section goes to the parser.
    """
    if not PLAIN_SECTION.fullmatch(section):
        return None
    try:
        text = section.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = dict.fromkeys(SUMMARY_FIELDS)
    current = None
    for line in text.split("\r\n"):
        if line[0] in " \t":
            if current is not None:
                fields[current] += "\r\n" + line
            continue
        name, _, value = line.partition(":")
        name = name.lower()
        current = name if name in fields and fields[name] is None else None
        if current is not None:
            fields[current] = value.lstrip(" \t")
    return fields


def count_received(raw):
    """Count the Received: fields, the hop count that stops mail loops (RFC 5321 section 6.3)."""
    return len(RECEIVED_FIELD.findall(header_section(raw)))
