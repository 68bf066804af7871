"""The DATA phase as a line parser that closes every known SMTP smuggling path.

Only <CRLF>.<CRLF> ends the message. A bare LF or bare CR never ends a line, so it can
neither form an end-of-data marker nor a line start for dot-stuffing. The bare newline
policy decides whether such a message is rejected or its bare line ends are made CRLF.
The parser keeps reading to the end-of-data marker after it has decided to reject a
message, so the client sees its reply in step (RFC 5321 section 4.2.5).
"""
import enum

END_OF_DATA_LINE = b".\r\n"
CRLF = b"\r\n"


class Verdict(enum.Enum):
    ACCEPTABLE = "acceptable"
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"
    BARE_NEWLINE = "bare newline"
    NUL_BYTE = "NUL byte"


class BareNewlinePolicy(enum.Enum):
    REJECT = "reject"
    NORMALIZE = "normalize"


class DataParser:
    """Collect the message content from the lines of a DATA stream.

    ``feed_line`` takes each line as read up to and including CRLF, or a fragment of a
    line that is longer than the reader's buffer (then ``complete`` is False). It returns
    True once the end-of-data line arrives.
    """

    def __init__(self, *, max_size, max_line_length, bare_newline_policy):
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.bare_newline_policy = BareNewlinePolicy(bare_newline_policy)
        self.verdict = Verdict.ACCEPTABLE
        self.size = 0
        self.line_length = 0
        self.at_line_start = True
        self._content = bytearray()

    @property
    def content(self):
        return bytes(self._content)

    def feed_line(self, line, complete=True):
        """Add one line or fragment; return True at the end-of-data line."""
        if self.at_line_start and line == END_OF_DATA_LINE:
            return True

        if self.at_line_start and line.startswith(b"."):
            line = line[1:]
        self.at_line_start = complete
        self.check_line_length(len(line), complete)

        text = line[:-2] if complete else line
        if b"\x00" in text:
            self.reject(Verdict.NUL_BYTE)
        if b"\r" in text or b"\n" in text:
            text = self.handle_bare_newlines(text)
            line = text + CRLF if complete else text

        self.size += len(line)
        if self.max_size and self.size > self.max_size:
            self.reject(Verdict.TOO_BIG)
        if self.verdict is Verdict.ACCEPTABLE:
            self._content += line
        return False

    def check_line_length(self, length, complete):
        self.line_length += length
        if self.max_line_length and self.line_length - (2 if complete else 0) > self.max_line_length:
            self.reject(Verdict.LINE_TOO_LONG)
        if complete:
            self.line_length = 0

    def handle_bare_newlines(self, text):
        if self.bare_newline_policy is BareNewlinePolicy.REJECT:
            self.reject(Verdict.BARE_NEWLINE)
            return text
        return text.replace(b"\r", b"\n").replace(b"\n", CRLF)

    def reject(self, verdict):
        """Record the first reason to reject and drop what was collected, to bound memory."""
        if self.verdict is Verdict.ACCEPTABLE:
            self.verdict = verdict
        self._content = bytearray()
