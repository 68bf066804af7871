"""Every reply the listeners send: SMTP reply code, enhanced status code (RFC 3463) and text.

Keeping them in one table lets tests, logs and the handlers name a reply instead of
repeating its digits, and keeps codes consistent between the MX and submission listeners.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced_code: str
    text: str

    def __str__(self):
        # RFC 3463 defines enhanced status codes for the classes 2, 4 and 5 only, so a 3xx reply
        # such as 354 carries none.
        if not self.enhanced_code:
            return f"{self.code} {self.text}"
        return f"{self.code} {self.enhanced_code} {self.text}"

    def with_text(self, text):
        """Return the same codes with another text, such as one that names the queue id."""
        return Reply(self.code, self.enhanced_code, text)

    def format(self, **values):
        return self.with_text(self.text.format(**values))

    @property
    def is_error(self):
        return self.code >= 400


# Success.
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
RESET_OK = Reply(250, "2.0.0", "Reset state")
NOOP_OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
CANNOT_VRFY = Reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

# Temporary failures: the client keeps the message and tries again later.
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing transmission channel")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many failed authentication attempts, try again later")
COMMAND_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
STORE_FAILED = Reply(451, "4.3.0", "Error: queue file write error, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Error: local error in processing, try again later")
LOOKUP_FAILED = Reply(451, "4.3.0", "Temporary recipient lookup failure, try again later")
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")

# Syntax and sequence errors.
COMMAND_UNRECOGNIZED = Reply(500, "5.5.1", "Error: command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
BARE_NEWLINE_IN_COMMAND = Reply(500, "5.5.2", "Error: bare <CR> or <LF> received")
FORBIDDEN_CHARACTER = Reply(501, "5.5.2", "Error: NUL or bare <CR> in command")
ARGUMENT_SYNTAX = Reply(501, "5.5.4", "Syntax: {syntax}")
MALFORMED_ADDRESS = Reply(501, "5.1.3", "Error: malformed address")
BAD_PARAMETER = Reply(501, "5.5.4", "Error: invalid parameter {parameter}")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Error: parameter {parameter} not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
HELO_FIRST = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_NOT_OFFERED = Reply(503, "5.5.1", "Error: authentication not enabled")
ALREADY_TLS = Reply(503, "5.5.1", "Error: TLS already active")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Error: unsupported authentication mechanism")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Error: invalid base64 data")

# Permanent failures.
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
UNKNOWN_USER = Reply(550, "5.1.1", "Recipient address rejected: user unknown")
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
BARE_NEWLINE_IN_DATA = Reply(550, "5.5.2", "Error: bare <CR> or <LF> received in message data")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: not owned by user {user}")
FROM_NOT_OWNED = Reply(553, "5.7.1", "From: header address rejected: not owned by user {user}")
LONG_LINE_IN_DATA = Reply(554, "5.6.0", "Error: message contains a line longer than {limit} octets")
MESSAGE_REJECTED = Reply(554, "5.6.0", "Error: message rejected: {reason}")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8")
