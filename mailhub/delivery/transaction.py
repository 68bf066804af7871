"""One SMTP mail transaction on an open connection: MAIL, RCPT, DATA (RFC 5321 section 3.3).

The caller (client.SMTPSession) decides whether a transaction may start. This module builds
its commands from the envelope and the server's EHLO extensions, sends them with or
without PIPELINING (RFC 2920) and returns one Reply per recipient.
"""
import re

from .. import conf
from ..addresses import canonical_address, needs_smtputf8
from .connection import ConnectionLost, ProtocolError
from .types import Reply
from .xtext import ensure_xtext

# RFC 3461 section 4.1: NEVER alone, or a list of SUCCESS, FAILURE and DELAY.
NOTIFY_VALUE = re.compile(r"^(NEVER|(SUCCESS|FAILURE|DELAY)(,(SUCCESS|FAILURE|DELAY))*)$", re.IGNORECASE)
RET_VALUES = ("FULL", "HDRS")


def envelope_needs_smtputf8(envelope):
    """Return whether the envelope needs SMTPUTF8: flagged so, or an address with a non-ASCII local part."""
    addresses = [envelope.envelope_sender, *envelope.recipients]
    return envelope.smtputf8 or any(needs_smtputf8(address) for address in addresses if address)


def format_address(address, smtputf8):
    """Return the address for MAIL or RCPT; without SMTPUTF8 the domain goes as an A-label."""
    if not address or smtputf8:
        return address
    return canonical_address(address)


def format_orcpt(original_recipient):
    """Return the ORCPT value ``addr-type;xtext`` (RFC 3461 section 4.2); a bare address is rfc822."""
    address_type, separator, address = original_recipient.partition(";")
    if not separator:
        address_type, address = "rfc822", original_recipient
    return f"{address_type.strip()};{ensure_xtext(address.strip())}"


class MailTransaction:
    """The commands and replies of one transaction for some recipients of an envelope.

    With PIPELINING, ``follow`` may name a function that returns the next transaction's
    commands. They go out in the same write as this transaction's final dot, because RFC
    2920 section 3.1 lets message content start a group. That transaction then runs with
    ``commands_sent``.
    """

    def __init__(self, connection, extensions, envelope, indexes, data):
        self.connection = connection
        self.extensions = extensions
        self.envelope = envelope
        self.indexes = indexes
        self.data = data
        self.smtputf8 = envelope_needs_smtputf8(envelope) and "SMTPUTF8" in extensions
        self.completed = False
        self.follow = None

    @property
    def label(self):
        return self.connection.label

    # Commands.

    def build_mail_command(self, size):
        envelope = self.envelope
        parts = [f"MAIL FROM:<{format_address(envelope.envelope_sender, self.smtputf8)}>"]
        if "SIZE" in self.extensions:
            parts.append(f"SIZE={size}")
        if envelope.body_8bitmime and "8BITMIME" in self.extensions:
            parts.append("BODY=8BITMIME")
        # NOTE: an 8-bit body goes unchanged to a server without 8BITMIME, because converting
        # it would break "bytes in, bytes out". RFC 6152 expects conversion (which Postfix
        # does) or a bounce instead.
        if self.smtputf8:
            parts.append("SMTPUTF8")
        if "DSN" in self.extensions:
            if envelope.dsn_ret.upper() in RET_VALUES:
                parts.append(f"RET={envelope.dsn_ret.upper()}")
            if envelope.dsn_envid:
                parts.append(f"ENVID={ensure_xtext(envelope.dsn_envid)}")
        return " ".join(parts).encode("utf-8")

    def build_rcpt_command(self, index):
        parts = [f"RCPT TO:<{format_address(self.envelope.recipients[index], self.smtputf8)}>"]
        if "DSN" in self.extensions and index < len(self.envelope.recipient_dsn):
            notify, original_recipient = self.envelope.recipient_dsn[index]
            if notify and NOTIFY_VALUE.match(notify):
                parts.append(f"NOTIFY={notify.upper()}")
            if original_recipient:
                parts.append(f"ORCPT={format_orcpt(original_recipient)}")
        return " ".join(parts).encode("utf-8")

    @property
    def pipelined(self):
        return "PIPELINING" in self.extensions

    def command_group(self):
        """Return MAIL, every RCPT and DATA as one pipelined group of lines."""
        commands = [self.build_mail_command(len(self.data)), *self.rcpt_commands(), b"DATA"]
        return b"".join(command + b"\r\n" for command in commands)

    def rcpt_commands(self):
        return [self.build_rcpt_command(index) for index in self.indexes]

    # Running.

    def run(self, commands_sent=False):
        """Send the transaction; return one Reply per recipient index.

        Raises OSError, ConnectionLost or ProtocolError when the connection fails before
        the final dot. After it, the replies are marked possible_duplicate instead.
        """
        if self.pipelined:
            return self.run_pipelined(commands_sent)
        return self.run_in_lockstep(self.build_mail_command(len(self.data)), self.rcpt_commands(), self.data)

    def run_in_lockstep(self, mail_command, rcpt_commands, data):
        timeout = conf.get("COMMAND_TIMEOUT")

        mail_reply = self.connection.command(mail_command, timeout)
        if not mail_reply.is_success:
            return [mail_reply] * len(rcpt_commands)

        rcpt_replies = [self.connection.command(command, timeout) for command in rcpt_commands]
        if not any(reply.is_success for reply in rcpt_replies):
            return rcpt_replies

        data_reply = self.connection.command("DATA", timeout)
        if data_reply.code != 354:
            return replace_accepted(rcpt_replies, data_reply)
        return self.send_data(rcpt_replies, data)

    def run_pipelined(self, commands_sent=False):
        """Send MAIL, every RCPT and DATA in one write and read their replies in order (RFC 2920)."""
        timeout = conf.get("COMMAND_TIMEOUT")

        if not commands_sent:
            self.connection.send(self.command_group(), timeout)
        mail_reply = self.connection.read_reply(timeout)
        rcpt_replies = [self.connection.read_reply(timeout) for _ in self.indexes]
        data_reply = self.connection.read_reply(timeout)

        if not mail_reply.is_success:
            rcpt_replies = [mail_reply] * len(self.indexes)
        accepted = any(reply.is_success for reply in rcpt_replies)

        if data_reply.code == 354 and not accepted:
            # RFC 2920 section 3.1: a server that accepted DATA with no valid recipient
            # gets an empty message ended at once, which it cannot deliver to anyone.
            self.connection.send(b".\r\n", timeout)
            self.connection.read_reply(conf.get("DATA_END_TIMEOUT"))
            self.completed = True
            return rcpt_replies
        if data_reply.code != 354:
            return replace_accepted(rcpt_replies, data_reply)
        return self.send_data(rcpt_replies, self.data)

    def send_data(self, rcpt_replies, data):
        """Send the message after 354; accepted recipients get the reply to the final dot.

        A connection that breaks or times out after the whole message was sent leaves the
        outcome unknown (RFC 1047): the server may have taken the message, so those
        replies are marked possible_duplicate.
        """
        trailer = self.follow() if self.follow is not None else b""
        try:
            self.connection.send_in_blocks(data, conf.get("DATA_BLOCK_TIMEOUT"), trailer)
        except (OSError, ConnectionLost) as error:
            self.connection.close()
            lost = Reply(451, "4.4.2", f"connection lost while sending the message: {error}", self.label)
            return replace_accepted(rcpt_replies, lost)

        try:
            final_reply = self.connection.read_reply(conf.get("DATA_END_TIMEOUT"))
        except (OSError, ConnectionLost, ProtocolError) as error:
            self.connection.close()
            text = f"no reply after the end of data ({error}); the server may have accepted the message"
            lost = Reply(451, "4.4.2", text, self.label, possible_duplicate=True)
            return replace_accepted(rcpt_replies, lost)

        self.completed = True
        return replace_accepted(rcpt_replies, final_reply)


def replace_accepted(rcpt_replies, reply):
    """Return the RCPT replies with every accepted one replaced by ``reply``."""
    return [reply if rcpt.is_success else rcpt for rcpt in rcpt_replies]
