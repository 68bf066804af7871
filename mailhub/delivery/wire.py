"""The message bytes as they go on the wire after DATA (RFC 5321 sections 2.3.8 and 4.5.2)."""
import re

# A line end is CRLF, a bare LF or a bare CR; SMTP allows only CRLF on the wire.
LINE_END = re.compile(rb"\r\n|\n|\r")


def normalize_line_ends(raw):
    """Return ``raw`` with every CRLF, bare LF and bare CR made CRLF."""
    return LINE_END.sub(b"\r\n", raw)


def encode_data(raw):
    """Return the DATA content for ``raw``: CRLF line ends, dot-stuffed, ending in CRLF "." CRLF.

    Line ends are normalised first, so a stored bare CR or LF can never make a line
    that the server reads as the end of data.
    """
    data = normalize_line_ends(raw)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"

    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")

    return data + b".\r\n"
