"""The SMTP protocol of mailhub's listeners: aiosmtpd's SMTP class with its command loop,
MAIL, RCPT, DATA, AUTH, STARTTLS and EHLO replaced.

aiosmtpd 1.4.6 is kept for the stream plumbing and PROXY parsing. Its own command handlers
send replies without enhanced status codes and reject the DSN parameters, run AUTH callbacks
on the event loop, offer AUTH only after STARTTLS (not with implicit TLS), and arm one timer
for the whole DATA phase. Its STARTTLS builds asyncio's TLS protocol by hand, which uvloop's
transports do not take; start_tls() here uses the loop's own loop.start_tls().
"""
import asyncio
import functools
import ipaddress
import logging

from aiosmtpd.smtp import SMTP

from .. import conf
from . import replies
from .authentication import AUTH_MECHANISMS, AuthCommands
from .database import run_in_auth_thread, run_in_db_thread
from .proxy import read_proxy_header
from .state import ClientState, SessionClosed
from .transaction import TransactionCommands

logger = logging.getLogger(__name__)

# RFC 5321 section 4.5.3.1.4: 512 octets per command line, CRLF included. Extensions add
# room: SIZE, BODY, SMTPUTF8 and DSN's RET and ENVID on MAIL (RFC 1870, 6152, 6531, 3461),
# NOTIFY and ORCPT on RCPT (RFC 3461), and an initial AUTH response (RFC 4954 allows 12288).
COMMAND_LINE_LIMIT = 512
COMMAND_LINE_LIMITS = {"MAIL": 512 + 26 + 20 + 10 + 110, "RCPT": 512 + 500, "AUTH": 12288}
# A command line longer than this is not drained further: the session is closed.
MAX_DRAINED_COMMAND = 64 * 1024
# Web and proxy requests sent to an SMTP port end the session at once, as Postfix's
# smtpd_forbidden_commands does, so a browser or a cross-protocol attack gets no dialogue.
FORBIDDEN_COMMANDS = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"})
HTTP_REQUEST = replies.Reply(221, "2.7.0", "Error: this is an SMTP server; goodbye")
# Replies to the server's own failures, such as a database outage. They do not count
# towards MAX_ERRORS_PER_SESSION, so a client is not disconnected for them.
SERVER_FAILURES = frozenset(
    str(reply)
    for reply in (replies.STORE_FAILED, replies.LOCAL_ERROR, replies.LOOKUP_FAILED)
)


class MailhubSMTP(AuthCommands, TransactionCommands, SMTP):
    """One SMTP session of an MX or submission listener."""

    def __init__(self, listener):
        self.listener = listener
        self.policy = listener.policy
        self.client = ClientState()
        self.error_count = 0
        self.counted_connection = False
        self.in_data = False
        self.pending_db_calls = 0
        self.data_started_at = 0.0
        self.data_bytes = 0
        self.last_block_at = 0.0
        self.tls_handshake_running = False
        self.ended = False
        store = listener.certificate_store
        # aiosmtpd sizes its StreamReader buffer with this, and a DATA line up to
        # MAX_LINE_LENGTH must fit in it for readuntil() to return it whole.
        self.line_length_limit = max(conf.get("MAX_LINE_LENGTH") + 2, COMMAND_LINE_LIMITS["AUTH"])
        self.idle_deadline = 0.0
        # When the armed idle timer fires; None when none is armed.
        self.timer_at = None
        super().__init__(
            handler=NO_HANDLER,
            data_size_limit=conf.get("MAX_MESSAGE_SIZE"),
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=conf.get("HOSTNAME"),
            ident="ESMTP mailhub",
            tls_context=store.context if store is not None else None,
            timeout=conf.get("SERVER_COMMAND_TIMEOUT"),
            auth_required=False,
            auth_require_tls=False,
            loop=listener.loop,
        )

    def __dir__(self):
        # aiosmtpd's __init__ reads every attribute that dir() names, once per connection,
        # to build tables of bound smtp_ and auth_ methods. dispatch() looks commands up
        # in a table made once per class instead, so these sessions list nothing here.
        return []

    # Connection state ---------------------------------------------------------------

    @property
    def encrypted(self):
        return self._original_transport is not None

    @property
    def peer_address(self):
        peer = self.session.peer if self.session else None
        return peer[0] if isinstance(peer, tuple) else str(peer or "")

    def connection_lost(self, error):
        if self.tls_handshake_running:
            # The TLS layer reports a failed handshake both here and to start_tls(), which
            # logs why and ends the session; aiosmtpd would cancel the session first.
            self.cancel_timeout()
            super(SMTP, self).connection_lost(error)
            return
        super().connection_lost(error)

    def eof_received(self):
        # aiosmtpd cancels the command loop here. uvloop may report an EOF before the loop's
        # first step, and a loop cancelled then never runs its clean-up, so the socket stayed
        # open until the idle timer. The EOF goes to the reader and ends the loop at its next read.
        super(SMTP, self).eof_received()
        # Over TLS the TLS layer closes the transport, and True would only draw a warning.
        return not (self.encrypted or self.tls_handshake_running)

    def data_received(self, data):
        if self.in_data:
            self.data_bytes += len(data)
            self.last_block_at = self.loop.time()
        super().data_received(data)

    def _reset_timeout(self, duration=None):
        """Move the idle deadline; the timer is rearmed only when it would fire too late.

        Every command moves the deadline, and a new timer per command cost more than the
        command itself. A timer that fires early finds the deadline moved and rearms.
        """
        # A session whose command loop has ended keeps no timer, because its transport may
        # already be gone (a failed TLS handshake never calls connection_lost here).
        if self.ended:
            return
        self.idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        if self.timer_at is None or self.timer_at > self.idle_deadline:
            self.arm_timer(self.idle_deadline)

    def arm_timer(self, when):
        self.cancel_timeout()
        self.timer_at = when
        self._timeout_handle = self.loop.call_at(when, self._timeout_cb)

    def cancel_timeout(self):
        # The handle stays set after it fired or was cancelled: aiosmtpd's connection_lost()
        # asserts that there is one.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self.timer_at = None

    def _timeout_cb(self):
        """Close an idle session; in DATA only once no block arrived for SERVER_DATA_TIMEOUT
        seconds or the average rate fell below SERVER_MIN_DATA_RATE."""
        self.timer_at = None
        if self.ended or self.transport is None or self.transport.is_closing():
            return
        if self.idle_deadline > self.loop.time():
            self.arm_timer(self.idle_deadline)
            return
        if self.tls_handshake_running:
            # The handshake has its own timeout of the same length, which aborts the connection.
            return
        if self.pending_db_calls:
            # The client waits for the server's reply, so it is not idle: storing a large
            # message may take longer than the command timeout.
            self._reset_timeout()
            return
        if self.in_data:
            deadline = self.data_deadline()
            if deadline > self.loop.time():
                self.arm_timer(deadline)
                return
        logger.info("client=%s session timed out%s", self.client.address, " in DATA" if self.in_data else "")
        self.transport.write(f"{replies.COMMAND_TIMEOUT}\r\n".encode())
        self.transport.close()

    def data_deadline(self):
        data_timeout = conf.get("SERVER_DATA_TIMEOUT")
        block_deadline = self.last_block_at + data_timeout
        min_rate = conf.get("SERVER_MIN_DATA_RATE")
        if not min_rate:
            return block_deadline
        rate_deadline = self.data_started_at + data_timeout + self.data_bytes / min_rate
        return min(block_deadline, rate_deadline)

    async def run_db(self, func, *args, **kwargs):
        """Run a database call in the pool, with the idle timeout paused while it runs."""
        return await self.with_idle_timeout_paused(run_in_db_thread(func, *args, **kwargs))

    async def run_password_check(self, func, *args):
        """Run a password check in the AUTH threads, with the idle timeout paused while it runs."""
        return await self.with_idle_timeout_paused(run_in_auth_thread(func, *args))

    async def with_idle_timeout_paused(self, call):
        self.pending_db_calls += 1
        try:
            return await call
        finally:
            self.pending_db_calls -= 1
            self._reset_timeout()

    async def push(self, status):
        text = str(status)
        if text[:1] in ("4", "5") and text not in SERVER_FAILURES:
            self.error_count += 1
        await super().push(text)

    async def reply(self, reply, log_context=None):
        if log_context is not None and reply.is_error:
            logger.info(
                "client=%s rejected %s from=<%s> to=<%s> reply=%s",
                self.client.address,
                log_context[0],
                (self.envelope.mail_from or "") if self.envelope else "",
                log_context[1],
                reply,
            )
        await self.push(str(reply))

    async def close_with(self, reply):
        await self.push(str(reply))
        self.transport.close()
        raise SessionClosed(str(reply))

    # The command loop ---------------------------------------------------------------

    async def _handle_client(self):
        try:
            await self.run_session()
        except (SessionClosed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            self._writer.close()
            raise
        finally:
            self.ended = True
            self.cancel_timeout()
            self.in_data = False
            if self.counted_connection:
                self.listener.connection_limiter.release(self.client.address)
                self.counted_connection = False

    async def run_session(self):
        self.client.address = self.peer_address
        if not self.client.address:
            # uvloop has no peer name for a connection reset before this first step, and an
            # empty address would count every such connection against one client.
            self.transport.close()
            raise SessionClosed("connection reset before the greeting")
        if conf.get("PROXY_PROTOCOL"):
            await self.read_proxy_header()

        if not self.listener.connection_limiter.acquire(self.client.address):
            logger.warning("client=%s rejected: too many connections", self.client.address)
            if self.listener.implicit_tls:
                # A client of the implicit-TLS port can read the reply only over TLS.
                await self.start_tls()
            await self.close_with(replies.TOO_MANY_CONNECTIONS)
        self.counted_connection = True

        if self.listener.implicit_tls:
            await self.start_tls()
        await self.push(f"220 {self.hostname} {self.__ident__}")

        while self.transport is not None:
            line = await self.read_command_line()
            if line is None:
                continue
            self._reset_timeout()
            await self.dispatch_safely(line)
            if self.error_count > conf.get("MAX_ERRORS_PER_SESSION"):
                logger.warning("client=%s disconnected after %d errors", self.client.address, self.error_count)
                await self.close_with(replies.TOO_MANY_ERRORS)

    async def read_proxy_header(self):
        self._reset_timeout(conf.get("SERVER_COMMAND_TIMEOUT"))
        address = await read_proxy_header(self._reader, self.client.address)
        if address is None:
            self.transport.close()
            raise SessionClosed("invalid PROXY header")
        self.client.address = address

    async def read_command_line(self):
        """Return one command line without its line end, or None after replying to a bad one."""
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self.drain_long_line(error.consumed)
            await self.push(str(replies.LINE_TOO_LONG))
            return None
        except asyncio.IncompleteReadError:
            self.transport.close()
            raise SessionClosed("connection closed by client")

        if not line.endswith(b"\r\n"):
            if conf.get("BARE_NEWLINE_POLICY") == "reject":
                await self.push(str(replies.BARE_NEWLINE_IN_COMMAND))
                return None
            line = line[:-1] + b"\r\n"
        line = line[:-2]

        if b"\r" in line or b"\x00" in line:
            await self.push(str(replies.FORBIDDEN_CHARACTER))
            return None
        return line

    async def drain_long_line(self, consumed):
        """Discard an overlong command line up to its LF, closing the session past a bound."""
        drained = 0
        while True:
            chunk = await self._reader.read(consumed)
            drained += len(chunk)
            if not chunk or drained > MAX_DRAINED_COMMAND:
                await self.close_with(replies.LINE_TOO_LONG)
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as error:
                consumed = error.consumed

    async def dispatch_safely(self, line):
        """Run a command; an unexpected error gets a 451 reply and a logged traceback, never
        a traceback to the client."""
        try:
            await self.dispatch(line)
        except (SessionClosed, ConnectionError, asyncio.CancelledError):
            raise
        except Exception:  # noqa: BLE001 - the session goes on after a local error
            logger.exception("client=%s error while handling a command", self.client.address)
            self._set_rset_state()
            await self.push(str(replies.LOCAL_ERROR))

    async def dispatch(self, line):
        command_bytes, _, argument_bytes = line.partition(b" ")
        try:
            command = command_bytes.decode("ascii").upper()
        except UnicodeDecodeError:
            await self.push(str(replies.BAD_SYNTAX))
            return
        if not command:
            await self.push(str(replies.BAD_SYNTAX))
            return

        limit = COMMAND_LINE_LIMITS.get(command, COMMAND_LINE_LIMIT)
        if len(line) + 2 > limit:
            await self.push(str(replies.LINE_TOO_LONG))
            return
        if command in FORBIDDEN_COMMANDS:
            logger.warning("client=%s sent %s, an HTTP or proxy request; disconnecting", self.client.address, command)
            await self.close_with(HTTP_REQUEST)

        method = command_methods(type(self)).get(command)
        if method is None:
            await self.push(str(replies.COMMAND_UNRECOGNIZED))
            return

        try:
            argument = argument_bytes.strip(b" ").decode("utf-8") or None
        except UnicodeDecodeError:
            await self.push(str(replies.BAD_SYNTAX))
            return
        await method(self, argument)

    # Greeting and extensions --------------------------------------------------------

    def may_offer_auth(self):
        if not self.policy.offers_auth:
            return False
        if self.encrypted:
            return True
        return conf.get("ALLOW_PLAIN_AUTH_FROM_LOOPBACK") and is_loopback(self.client.address)

    def extensions(self):
        lines = [
            f"SIZE {conf.get('MAX_MESSAGE_SIZE')}",
            "8BITMIME",
            "SMTPUTF8",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ]
        if self.tls_context is not None and not self.encrypted:
            lines.append("STARTTLS")
        if self.may_offer_auth():
            lines.append("AUTH " + " ".join(AUTH_MECHANISMS))
        return lines

    async def smtp_EHLO(self, hostname):
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self.start_new_session(hostname, extended=True)
        lines = [self.hostname] + self.extensions()
        for line in lines[:-1]:
            await self.push(f"250-{line}")
        await self.push(f"250 {lines[-1]}")

    async def smtp_HELO(self, hostname):
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self.start_new_session(hostname, extended=False)
        await self.push(f"250 {self.hostname}")

    def start_new_session(self, hostname, extended):
        self._set_rset_state()
        self.session.extended_smtp = extended
        self.session.host_name = hostname
        self.client.helo_name = hostname

    def _set_post_data_state(self):
        super()._set_post_data_state()
        if hasattr(self, "client"):
            self.client.recipients = []
            self.client.dsn_ret = ""
            self.client.dsn_envid = ""
            self.client.smtputf8 = False

    async def smtp_NOOP(self, argument):
        await self.push(str(replies.NOOP_OK))

    async def smtp_RSET(self, argument):
        if argument:
            await self.push(str(replies.ARGUMENT_SYNTAX.format(syntax="RSET")))
            return
        self._set_rset_state()
        await self.push(str(replies.RESET_OK))

    async def smtp_QUIT(self, argument):
        await self.push(str(replies.BYE))
        self.transport.close()
        raise SessionClosed("QUIT")

    async def smtp_VRFY(self, argument):
        await self.push(str(replies.CANNOT_VRFY))

    async def smtp_EXPN(self, argument):
        await self.push(str(replies.NOT_IMPLEMENTED))

    async def smtp_HELP(self, argument):
        await self.push("214 2.0.0 See RFC 5321: https://www.rfc-editor.org/rfc/rfc5321")

    # TLS ----------------------------------------------------------------------------

    async def smtp_STARTTLS(self, argument):
        if argument:
            await self.push(str(replies.ARGUMENT_SYNTAX.format(syntax="STARTTLS")))
            return
        if self.encrypted:
            await self.push(str(replies.ALREADY_TLS))
            return
        if self.tls_context is None:
            await self.push(str(replies.TLS_NOT_AVAILABLE))
            return
        # The client may send its ClientHello right after the 220. Paused, the transport
        # leaves it in the socket for the handshake instead of the command buffer.
        self.transport.pause_reading()
        await self.push(str(replies.READY_FOR_TLS))
        await self.start_tls()

    async def start_tls(self):
        """Run the TLS handshake on this connection, with the current certificate.

        loop.start_tls() is the event loop's public API, so the same code runs on asyncio's
        loop and on uvloop. After STARTTLS, bytes that arrived before the handshake are
        discarded (STARTTLS injection, RFC 3207 section 4); with implicit TLS they are the
        start of the handshake. HELO and AUTH must be given again.
        """
        self.tls_context = self.listener.certificate_store.refresh()
        plain_transport = self.transport
        plain_transport.pause_reading()
        early_bytes = self.take_buffered_bytes()
        self.tls_handshake_running = True
        handshake = self.loop.create_task(
            self.loop.start_tls(
                plain_transport,
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=conf.get("SERVER_COMMAND_TIMEOUT"),
            )
        )
        if early_bytes and not self.listener.implicit_tls:
            logger.info("client=%s sent %d bytes after STARTTLS; discarded", self.client.address, len(early_bytes))
        try:
            if early_bytes and self.listener.implicit_tls:
                await hand_over_to_tls(plain_transport, self, early_bytes)
            transport = await handshake
        except asyncio.CancelledError:
            handshake.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - any handshake failure ends only this session
            logger.info("client=%s TLS handshake failed: %s", self.client.address, str(error) or type(error).__name__)
            handshake.cancel()
            plain_transport.close()
            raise SessionClosed("TLS handshake failed") from error
        finally:
            self.tls_handshake_running = False

        # A connection closed during the handshake may end it without an error.
        if transport is None or transport.is_closing():
            logger.info("client=%s closed the connection during or right after the TLS handshake", self.client.address)
            plain_transport.close()
            raise SessionClosed("connection closed during the TLS handshake")
        self.use_tls_transport(plain_transport, transport)

    def take_buffered_bytes(self):
        """Return the bytes that the command reader received but has not parsed, and drop them."""
        buffered = bytes(self._reader._buffer)
        self._reader._buffer.clear()
        return buffered

    def use_tls_transport(self, plain_transport, transport):
        """Read and write through the TLS transport, with a new aiosmtpd Session and no client state."""
        self._original_transport = plain_transport
        self.transport = transport
        # StreamReaderProtocol's own view of the connection: over TLS, an EOF from the
        # client leaves closing the transport to the TLS layer.
        self._transport = transport
        self._over_ssl = True
        self._reader._transport = transport
        self._writer._transport = transport
        self._set_rset_state()
        peer = self.session.peer
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}
        self.client.authenticated_user = None
        self.client.helo_name = ""


async def hand_over_to_tls(plain_transport, session, early_bytes):
    """Give the TLS layer the bytes of its handshake that the session read before it started.

    With implicit TLS the client sends its ClientHello at once, and the event loop may read
    it before start_tls() runs (uvloop starts reading only after connection_made()
    returns, so the session cannot pause it there). loop.start_tls() puts its TLS protocol
    on the transport at its first step and calls that protocol's connection_made() at the
    next turn of the loop. The bytes follow at that turn, before the transport reads again.
    """
    for _turn in range(2):
        await asyncio.sleep(0)
    tls_protocol = plain_transport.get_protocol()
    if tls_protocol is session or plain_transport.is_closing():
        logger.warning(
            "client=%s TLS handshake not started; %d bytes sent before it were dropped",
            session.client.address,
            len(early_bytes),
        )
        return
    # asyncio's TLS protocol and uvloop's both take bytes as a buffered protocol.
    if hasattr(tls_protocol, "get_buffer"):
        feed_buffered_protocol(tls_protocol, early_bytes)
    else:
        tls_protocol.data_received(early_bytes)


def feed_buffered_protocol(protocol, data):
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


class NoHandler:
    """The event handler given to aiosmtpd: MailhubSMTP handles every command itself."""

    def __dir__(self):
        return []


NO_HANDLER = NoHandler()


@functools.cache
def command_methods(cls):
    """Return {command: function} for the smtp_ methods of a session class."""
    return {name.removeprefix("smtp_"): getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}


def is_loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
