"""The DATA phase as a line parser that closes every known SMTP smuggling path.

Only <CRLF>.<CRLF> ends the message. A bare LF or bare CR never ends a line, so it can
neither form an end-of-data marker nor a line start for dot-stuffing. The bare newline
policy decides whether such a message is rejected or its bare line ends are made CRLF.
The parser keeps reading to the end-of-data marker after it has decided to reject a
message, so the client sees its reply in step (RFC 5321 section 4.2.5).

``feed`` takes the stream in blocks and checks runs of ordinary lines with a few passes
of C string methods. Anything unusual in a run (a bare CR or LF, a NUL, a line that may
be too long, a rejected message) goes through ``feed_line``, one line at a time, so both
ways reach the same verdict and the same content.
"""
import enum
import functools
import re

END_OF_DATA_LINE = b".\r\n"
CRLF = b"\r\n"
# An incomplete line is held back up to this length when MAX_LINE_LENGTH is 0 (no limit).
UNLIMITED_LINE_CHUNK = 64 * 1024


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
        # The bytes after the last CRLF that feed() has seen: the start of a line.
        self._pending = b""

    @property
    def content(self):
        return bytes(self._content)

    def feed(self, block, ends_with_dot_line):
        """Add a block of the stream; return True once the end-of-data line has arrived.

        ``ends_with_dot_line`` means that the block was read up to the first ".\\r\\n" in the
        stream. It ends the data only where a line starts, which the parser decides from
        what came before.
        """
        if ends_with_dot_line:
            text = block[:-3]
            if self.dot_starts_line(text):
                self.feed_text(text)
                return True
        self.feed_text(block)
        return False

    def dot_starts_line(self, text):
        """Return whether a "." right after ``text`` is at the start of a line."""
        if not self._pending and not text:
            return self.at_line_start
        return (self._pending[-2:] + text[-2:])[-2:] == CRLF

    def feed_text(self, data):
        data = self._pending + data if self._pending else data
        end = data.rfind(CRLF)
        if end < 0:
            self._pending = data
        else:
            self._pending = data[end + 2 :]
            self.feed_lines(data[: end + 2])
        self.bound_pending()

    def feed_lines(self, lines):
        """Add complete lines, each ending with CRLF."""
        if not self.at_line_start:
            first_end = lines.find(CRLF) + 2
            self.feed_line(lines[:first_end])
            lines = lines[first_end:]
        if not lines:
            return
        if self.are_plain_lines(lines):
            self.add_plain_lines(lines)
            return
        for line in lines[:-2].split(CRLF):
            self.feed_line(line + CRLF)

    def are_plain_lines(self, lines):
        """Return whether the lines hold no NUL, no bare CR or LF and no line that may be too long."""
        if self.verdict is not Verdict.ACCEPTABLE or b"\x00" in lines:
            return False
        line_ends = lines.count(CRLF)
        if lines.count(b"\r") != line_ends or lines.count(b"\n") != line_ends:
            return False
        if self.max_line_length and len(lines) > self.max_line_length + 2:
            # Counted with a leading dot, so a dot-stuffed line at the limit takes the slow way.
            return long_line_pattern(self.max_line_length).search(lines) is None
        return True

    def add_plain_lines(self, lines):
        if lines.startswith(b"."):
            lines = lines[1:]
        if b"\r\n." in lines:
            lines = lines.replace(b"\r\n.", CRLF)
        self.size += len(lines)
        if self.max_size and self.size > self.max_size:
            self.reject(Verdict.TOO_BIG)
            return
        self._content += lines

    def bound_pending(self):
        """Pass on the start of a line that is longer than any line may be, to bound memory."""
        limit = self.max_line_length + 2 if self.max_line_length else UNLIMITED_LINE_CHUNK
        if len(self._pending) <= limit:
            return
        # A CR at the end may be the first half of the CRLF that ends the line.
        keep = 1 if self._pending.endswith(b"\r") else 0
        fragment = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        self.feed_line(fragment, complete=False)

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


@functools.cache
def long_line_pattern(max_line_length):
    """Compile a pattern that finds a line of more than ``max_line_length`` octets before its CRLF."""
    return re.compile(rb"^[^\n]{%d}" % (max_line_length + 2), re.MULTILINE)
