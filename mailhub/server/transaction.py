"""The mail transaction commands MAIL, RCPT and DATA, and storing the message in the spool."""
import asyncio
import functools
import ipaddress
import logging
import re
import time

from .. import conf, spool
from ..directory import lookup_key
from ..exceptions import ShuttingDown
from ..models.spool import new_queue_id
from ..spool import EnvelopeRecipient
from . import replies
from .data import END_OF_DATA_LINE, DataParser, Verdict
from .paths import PathError, decode_xtext, is_xtext, parse_command_argument, parse_parameters, parse_path
from .received import build_received, protocol_name
from .state import SessionClosed
from .tls import describe_tls

logger = logging.getLogger(__name__)

NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# Messages up to this size (octets) are checked and summarised on the event loop.
PREPARE_ON_LOOP_MAX_SIZE = 64 * 1024
# str.isdigit() also accepts digits of other scripts, such as full-width "１２".
ASCII_DIGITS = re.compile(r"[0-9]+")


class TransactionCommands:
    """MAIL, RCPT and DATA for MailhubSMTP; the listener's policy decides what is accepted."""

    def transaction_precondition_error(self):
        if not self.session.host_name:
            return replies.HELO_FIRST
        if self.policy.requires_auth(self.client) and self.client.authenticated_user is None:
            return replies.AUTH_REQUIRED
        return None

    async def smtp_MAIL(self, argument):
        reply = self.transaction_precondition_error()
        if reply is None and self.envelope.mail_from is not None:
            reply = replies.NESTED_MAIL
        if reply is not None:
            await self.reply(reply, ("MAIL", ""))
            return

        # A rejected MAIL leaves no transaction, so its parameters must not reach the next one.
        self._set_post_data_state()
        try:
            path_text, parameter_text = parse_command_argument(argument, "FROM:")
            parameters = parse_parameters(parameter_text) if self.session.extended_smtp else {}
            if parameter_text.strip() and not self.session.extended_smtp:
                raise PathError("parameters need EHLO")
        except PathError:
            await self.reply(replies.ARGUMENT_SYNTAX.format(syntax="MAIL FROM:<address> [parameters]"))
            return

        reply = self.apply_mail_parameters(parameters)
        if reply is None:
            try:
                sender = parse_path(path_text, utf8=self.client.smtputf8, allow_null=True)
            except PathError:
                reply = self.malformed_path_reply(path_text)
        if reply is not None:
            await self.reply(reply, ("MAIL", ""))
            return

        reply = await self.run_db(self.policy.check_sender, self.client, sender) if self.policy.checks_sender else None
        if reply is not None:
            logger.info("client=%s rejected MAIL from=<%s> reply=%s", self.client.address, sender, reply)
            self.client.smtputf8 = False
            await self.push(str(reply))
            return

        self.envelope.mail_from = sender
        self.envelope.smtp_utf8 = self.client.smtputf8
        await self.push(str(replies.SENDER_OK))

    def malformed_path_reply(self, path_text):
        if not self.client.smtputf8 and not path_text.isascii():
            return replies.SMTPUTF8_REQUIRED
        return replies.MALFORMED_ADDRESS

    def apply_mail_parameters(self, parameters):
        """Check MAIL's ESMTP parameters and keep the DSN ones; return a Reply for a bad one."""
        for keyword, value in parameters.items():
            if keyword == "SIZE":
                if not isinstance(value, str) or not ASCII_DIGITS.fullmatch(value):
                    return replies.BAD_PARAMETER.format(parameter="SIZE")
                if int(value) > conf.get("MAX_MESSAGE_SIZE"):
                    return replies.SIZE_EXCEEDED
            elif keyword == "BODY":
                if not isinstance(value, str) or value.upper() not in ("7BIT", "8BITMIME"):
                    return replies.BAD_PARAMETER.format(parameter="BODY")
            elif keyword == "SMTPUTF8":
                if value is not True:
                    return replies.BAD_PARAMETER.format(parameter="SMTPUTF8")
                self.client.smtputf8 = True
            elif keyword == "RET":
                if not isinstance(value, str) or value.upper() not in ("FULL", "HDRS"):
                    return replies.BAD_PARAMETER.format(parameter="RET")
                self.client.dsn_ret = value.upper()
            elif keyword == "ENVID":
                if not is_xtext(value) or len(value) > 100:
                    return replies.BAD_PARAMETER.format(parameter="ENVID")
                self.client.dsn_envid = decode_xtext(value)
                if not self.client.dsn_envid.isprintable():
                    return replies.BAD_PARAMETER.format(parameter="ENVID")
            elif keyword == "AUTH":
                continue
            else:
                return replies.UNKNOWN_PARAMETER.format(parameter=keyword[:20])
        return None

    async def smtp_RCPT(self, argument):
        reply = self.transaction_precondition_error()
        if reply is None and self.envelope.mail_from is None:
            reply = replies.NEED_MAIL
        if reply is not None:
            await self.reply(reply, ("RCPT", ""))
            return

        try:
            path_text, parameter_text = parse_command_argument(argument, "TO:")
            parameters = parse_parameters(parameter_text) if self.session.extended_smtp else {}
            if parameter_text.strip() and not self.session.extended_smtp:
                raise PathError("parameters need EHLO")
        except PathError:
            await self.reply(replies.ARGUMENT_SYNTAX.format(syntax="RCPT TO:<address> [parameters]"))
            return

        try:
            address = parse_path(
                path_text, utf8=self.client.smtputf8, allow_null=False, postmaster_domain=self.hostname
            )
        except PathError:
            await self.reply(self.malformed_path_reply(path_text), ("RCPT", path_text[:100]))
            return

        recipient, reply = build_envelope_recipient(address, parameters)
        # rcpt_tos counts every accepted RCPT, duplicates included, as Postfix's
        # smtpd_recipient_limit does.
        if reply is None and len(self.envelope.rcpt_tos) >= conf.get("MAX_RECIPIENTS"):
            reply = replies.TOO_MANY_RECIPIENTS
        duplicate = reply is None and self.is_duplicate_recipient(address)
        if reply is None and not duplicate:
            reply = await self.check_recipient(address)
        if reply is not None:
            await self.reply(reply, ("RCPT", address))
            return

        # A duplicate is accepted but stored once: a second Recipient row would deliver a
        # second copy, so a client could fill a mailbox MAX_RECIPIENTS times faster.
        # Postfix's cleanup drops duplicates the same way.
        if not duplicate:
            self.client.recipients.append(recipient)
        self.envelope.rcpt_tos.append(address)
        await self.push(str(replies.RECIPIENT_OK))

    def is_duplicate_recipient(self, address):
        key = lookup_key(address)
        return any(lookup_key(recipient.address) == key for recipient in self.client.recipients)

    async def check_recipient(self, address):
        if self.policy.recipient_known_deliverable(address):
            return None
        try:
            return await self.run_db(self.policy.check_recipient, self.client, address)
        except Exception:  # noqa: BLE001 - a lookup failure must not become a 5xx or a traceback
            logger.exception("client=%s recipient lookup failed for %s", self.client.address, address)
            return replies.LOOKUP_FAILED

    async def smtp_DATA(self, argument):
        reply = self.transaction_precondition_error()
        if reply is None and not self.client.recipients:
            reply = replies.NEED_RCPT if self.envelope.mail_from is not None else replies.NEED_MAIL
        if reply is None and argument:
            reply = replies.ARGUMENT_SYNTAX.format(syntax="DATA")
        if reply is not None:
            await self.reply(reply, ("DATA", ""))
            return

        await self.push(str(replies.START_DATA))
        parser = await self.receive_data()

        reply = data_verdict_reply(parser)
        if reply is not None:
            self.log_rejected_message(reply)
        else:
            reply = await self.store(parser.content)
        self._set_post_data_state()
        if reply is replies.SERVICE_UNAVAILABLE:
            await self.close_with(reply)
        await self.push(str(reply))

    async def receive_data(self):
        """Read the DATA stream up to <CRLF>.<CRLF>; a lost connection cancels this task."""
        parser = DataParser(
            max_size=conf.get("MAX_MESSAGE_SIZE"),
            max_line_length=conf.get("MAX_LINE_LENGTH"),
            bare_newline_policy=conf.get("BARE_NEWLINE_POLICY"),
        )
        self.in_data = True
        self.data_started_at = self.last_block_at = self.loop.time()
        self.data_bytes = 0
        self._reset_timeout(conf.get("SERVER_DATA_TIMEOUT"))
        try:
            while True:
                # Up to the next ".\r\n" rather than line by line: far fewer reads, and the
                # reader never takes bytes past the end of data (pipelined commands).
                try:
                    block = await self._reader.readuntil(END_OF_DATA_LINE)
                    found = True
                except asyncio.LimitOverrunError as error:
                    block = await self._reader.read(error.consumed)
                    found = False
                except asyncio.IncompleteReadError:
                    self.transport.close()
                    raise SessionClosed("connection closed in DATA")
                if parser.feed(block, found):
                    return parser
        finally:
            self.in_data = False
            self._reset_timeout()

    async def store(self, content):
        """Prepend the Received: field and commit the message with the next group; return the reply."""
        envelope = self.envelope
        client = self.client
        queue_id = new_queue_id()
        raw = self.build_received_header(queue_id) + content
        started = time.monotonic()

        if self.policy.checks_message:
            reply = await self.run_db(self.policy.check_message, client, envelope.mail_from, raw)
            if reply is not None:
                self.log_rejected_message(reply)
                return reply

        try:
            prepared = await self.prepare_message(raw, queue_id)
            await self.wait_for_commit(prepared)
        except ShuttingDown:
            logger.info(
                "client=%s from=<%s> queue_id=%s message not stored, the listeners are stopping; replied %s",
                client.address,
                envelope.mail_from,
                queue_id,
                replies.SERVICE_UNAVAILABLE,
            )
            return replies.SERVICE_UNAVAILABLE
        except Exception:  # noqa: BLE001 - nothing was acknowledged, so the client keeps the message
            logger.exception(
                "client=%s from=<%s> queue_id=%s message not stored, replied %s",
                client.address,
                envelope.mail_from,
                queue_id,
                replies.STORE_FAILED,
            )
            return replies.STORE_FAILED

        reply = replies.QUEUED.format(queue_id=queue_id)
        for recipient in client.recipients:
            logger.info(
                "queue_id=%s client=%s from=<%s> to=<%s> reply=%s",
                queue_id,
                client.address,
                envelope.mail_from,
                recipient.address,
                reply,
                extra={"queue_id": queue_id, "size": len(raw), "store_seconds": time.monotonic() - started},
            )
        return reply

    async def prepare_message(self, raw, queue_id):
        """Check and summarise the message for the spool, in a pool thread when it is large.

        A small message is prepared on the event loop, where that costs less than the
        thread hand-off. Parsing the header section of a large one could stall every
        session for as long as it takes.
        """
        envelope = self.envelope
        client = self.client
        call = functools.partial(
            spool.prepare,
            raw,
            envelope.mail_from,
            list(client.recipients),
            source=self.policy.source,
            client_address=client_address_or_none(client.address),
            helo_name=client.helo_name[:255],
            authenticated_user=client.login[:150] if client.authenticated_user is not None else "",
            dsn_ret=client.dsn_ret,
            dsn_envid=client.dsn_envid,
            smtputf8=client.smtputf8,
            queue_id=queue_id,
        )
        if len(raw) <= PREPARE_ON_LOOP_MAX_SIZE:
            return call()
        return await self.run_db(call)

    async def wait_for_commit(self, prepared):
        """Hand the message to the group committer and wait, with the idle timeout paused."""
        self.pending_db_calls += 1
        try:
            return await self.listener.committer.store(prepared)
        finally:
            self.pending_db_calls -= 1
            self._reset_timeout()

    def log_rejected_message(self, reply):
        logger.info(
            "client=%s rejected DATA from=<%s> to=<%s> reply=%s",
            self.client.address,
            self.envelope.mail_from,
            ",".join(recipient.address for recipient in self.client.recipients),
            reply,
        )

    def build_received_header(self, queue_id):
        ssl_object = self.transport.get_extra_info("ssl_object") if self.encrypted else None
        tls_version, tls_cipher = describe_tls(ssl_object)
        authenticated = self.client.authenticated_user is not None
        shown_user = self.client.login if authenticated and conf.get("RECEIVED_SHOWS_USER") else ""
        return build_received(
            helo_name=self.client.helo_name,
            client_address=self.client.address,
            hostname=self.hostname,
            protocol=protocol_name(
                extended=self.session.extended_smtp,
                encrypted=self.encrypted,
                authenticated=authenticated,
                smtputf8=self.client.smtputf8,
            ),
            tls_version=tls_version,
            tls_cipher=tls_cipher,
            authenticated_user=shown_user,
            recipients=[recipient.address for recipient in self.client.recipients],
            queue_id=queue_id,
        )


def build_envelope_recipient(address, parameters):
    """Return (EnvelopeRecipient, None), or (None, Reply) for a bad RCPT parameter."""
    notify = ""
    original_recipient = ""
    for keyword, value in parameters.items():
        if keyword == "NOTIFY":
            values = value.upper().split(",") if isinstance(value, str) else []
            valid = values == ["NEVER"] or (values and set(values) <= NOTIFY_VALUES)
            if not valid or len(values) != len(set(values)):
                return None, replies.BAD_PARAMETER.format(parameter="NOTIFY")
            notify = ",".join(values)
        elif keyword == "ORCPT":
            address_type, _, original = value.partition(";") if isinstance(value, str) else ("", "", "")
            if not address_type or not original or not is_xtext(original) or len(value) > 500:
                return None, replies.BAD_PARAMETER.format(parameter="ORCPT")
            original_recipient = f"{address_type};{decode_xtext(original)}"
            if not original_recipient.isprintable():
                return None, replies.BAD_PARAMETER.format(parameter="ORCPT")
        else:
            return None, replies.UNKNOWN_PARAMETER.format(parameter=keyword[:20])
    return EnvelopeRecipient(address, notify=notify, original_recipient=original_recipient), None


def data_verdict_reply(parser):
    if parser.verdict is Verdict.ACCEPTABLE:
        return None
    if parser.verdict is Verdict.TOO_BIG:
        return replies.SIZE_EXCEEDED
    if parser.verdict is Verdict.LINE_TOO_LONG:
        return replies.LONG_LINE_IN_DATA.format(limit=parser.max_line_length)
    if parser.verdict is Verdict.BARE_NEWLINE:
        return replies.BARE_NEWLINE_IN_DATA
    return replies.MESSAGE_REJECTED.format(reason="message contains a NUL byte")


@functools.lru_cache(maxsize=4096)
def client_address_or_none(address):
    # Cached: a busy MX gets connections from the same clients again and again.
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
