"""The SMTP client session that carries outbound mail to one route's hosts (RFC 5321).

``open_session(route)`` connects to the first host of the route that greets and accepts
EHLO, starts TLS as the route's TLS policy requires and authenticates to a relay. The session's
``send(envelope)`` runs one or more mail transactions over the same connection and
returns one Reply per envelope recipient: remote failures and a lost connection come back
as replies, never as exceptions. ``send_each(envelopes)`` does the same for a sequence of
envelopes and pipelines each transaction's commands behind the previous message's data.
``is_connected`` turns False once the connection is gone.
"""
import base64
import logging
import ssl
from dataclasses import dataclass

from .. import conf
from ..addresses import FORBIDDEN_CHARACTERS
from .connection import ConnectionLost, ProtocolError, SMTPConnection, format_host, parse_reply_lines
from .errors import TemporaryDeliveryError
from .tls import MAY, NONE, create_client_context, requires_tls
from .transaction import MailTransaction, envelope_needs_smtputf8
from .types import Reply
from .wire import encode_data

logger = logging.getLogger(__name__)

# Errors that end a connection: the server closed it, stopped replying or sent something that is not a reply.
CONNECTION_ERRORS = (OSError, ConnectionLost, ProtocolError)
# QUIT comes after the mail is handed over, so a server slow to reply to it is not
# worth the full COMMAND_TIMEOUT.
QUIT_TIMEOUT = 10
# Characters that would end or split an SMTP command line if sent inside an address.
UNSAFE_ADDRESS_CHARACTERS = FORBIDDEN_CHARACTERS | {"<", ">"}


class HostFailed(Exception):
    """One host could not be used, for the reason in ``reply``; open_session tries the next host."""

    def __init__(self, reply, retry_without_tls=False):
        super().__init__(str(reply))
        self.reply = reply
        self.retry_without_tls = retry_without_tls


def open_session(route):
    """Return an SMTPSession to the first usable host of ``route.hosts``.

    A refused or failed connection, a greeting other than 220, a 4xx to EHLO and an
    unmet TLS requirement each move on to the next host. Under the ``may`` policy a
    failed TLS handshake retries the same host in clear text, as Postfix does.
    Raises TemporaryDeliveryError, naming every host and what failed there, when no
    host can be used.
    """
    failures = []
    for host in route.hosts:
        use_tls = route.tls_policy != NONE
        while True:
            session = SMTPSession(route, host)
            try:
                session.start(use_tls)
            except HostFailed as failure:
                session.abort()
                failures.append(failure.reply)
                logger.info("destination=%s remote_host=%s session failed: %s", route.destination, session.label, failure.reply)
                if failure.retry_without_tls and use_tls:
                    use_tls = False
                    continue
                break

            logger.info(
                "destination=%s remote_host=%s session started%s",
                route.destination, session.label, f" with {session.tls_version}" if session.tls else " without TLS",
            )
            return session

    raise TemporaryDeliveryError(summarize_failures(route, failures))


def summarize_failures(route, failures):
    """Return one temporary Reply that lists what failed on each host of the route."""
    if not failures:
        return Reply(451, "4.4.4", f"no host to connect to for {route.destination}")

    last = failures[-1]
    enhanced_code = last.enhanced_code if last.enhanced_code.startswith("4.") else "4.4.1"
    details = "; ".join(f"{reply.remote_host}: {reply.code} {reply.text}".strip() for reply in failures)
    return Reply(451, enhanced_code, f"all hosts failed: {details}", last.remote_host)


def chunk(items, size):
    size = max(1, int(size))
    return [items[start:start + size] for start in range(0, len(items), size)]


def parse_extensions(lines):
    """Return the EHLO keywords (upper case) and their parameters; the first line is the greeting."""
    extensions = {}
    for line in lines[1:]:
        keyword, _, parameters = line.partition(" ")
        if keyword:
            extensions[keyword.upper()] = parameters.strip()
    return extensions


def is_safe_address(address):
    return UNSAFE_ADDRESS_CHARACTERS.isdisjoint(address)


def log_result(envelope, recipient, reply):
    # DEBUG, because the engine logs every recipient's outcome with this reply at INFO,
    # and a second line per recipient costs a busy queue time for nothing new.
    logger.debug(
        "queue_id=%s recipient=%s remote_host=%s reply=%s%s",
        envelope.queue_id, recipient, reply.remote_host or "-", reply,
        " (possible duplicate)" if reply.possible_duplicate else "",
    )


@dataclass
class InFlight:
    """A transaction whose commands were sent ahead, and the step it belongs to."""

    step: tuple
    transaction: MailTransaction


class SMTPSession:
    """An SMTP session to one host, ready for mail transactions once ``start()`` returns."""

    def __init__(self, route, host):
        self.route = route
        self.host = host
        self.connection = SMTPConnection(host)
        self.label = format_host(host)
        self.extensions = {}
        self.greeting = None
        self.tls = False
        self.needs_reset = False
        # The transaction whose commands went out behind the previous message's data.
        self.in_flight = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def remote_host(self):
        """The host as replies name it: ``name[address]:port``."""
        return self.label

    @property
    def is_connected(self):
        return self.connection.is_open

    @property
    def tls_version(self):
        return self.connection.tls_version

    def reply(self, code, enhanced_code, text):
        return Reply(code, enhanced_code, text, self.label)

    # Session set-up: greeting, EHLO, STARTTLS, AUTH.

    def start(self, use_tls=True):
        """Connect, read the greeting, say EHLO, start TLS and authenticate; raise HostFailed."""
        try:
            self.connect()
            self.read_greeting()
            self.say_hello()
            if use_tls:
                self.start_tls_if_offered()
            elif requires_tls(self.route.tls_policy):
                self.fail(451, "4.7.4", "TLS is required by policy but was not used")
            self.authenticate_if_configured()
        except ssl.SSLError as error:
            retry = self.route.tls_policy == MAY
            self.fail(451, "4.7.5", f"TLS handshake failed: {error}", retry_without_tls=retry)
        except TimeoutError as error:
            self.fail(451, "4.4.2", f"timed out during session set-up: {error}")
        except CONNECTION_ERRORS as error:
            self.fail(451, "4.4.2", f"connection failed during session set-up: {error}")

    def fail(self, code, enhanced_code, text, retry_without_tls=False):
        raise HostFailed(self.reply(code, enhanced_code, text), retry_without_tls)

    def connect(self):
        try:
            self.connection.connect(conf.get("CONNECT_TIMEOUT"))
        except TimeoutError:
            self.fail(451, "4.4.1", "connection timed out")
        except OSError as error:
            self.fail(451, "4.4.1", f"connection failed: {error.strerror or error}")

    def read_greeting(self):
        self.greeting = self.connection.read_reply(conf.get("COMMAND_TIMEOUT"))
        if self.greeting.code != 220:
            # RFC 5321 section 3.1: a client not greeted with 220 must not send mail there.
            raise HostFailed(self.greeting)

    def say_hello(self):
        """Send EHLO (HELO when EHLO gets a 5xx) and record the extensions the server offers."""
        hostname = conf.get("HOSTNAME")
        timeout = conf.get("COMMAND_TIMEOUT")

        self.connection.send(f"EHLO {hostname}\r\n".encode("ascii"), timeout)
        lines = self.connection.read_reply_lines(timeout)
        reply = parse_reply_lines(lines, self.label)
        if reply.is_success:
            self.extensions = parse_extensions([line[4:].decode("utf-8", "replace").strip() for line in lines])
            return
        if reply.is_temporary:
            raise HostFailed(reply)

        reply = self.connection.command(f"HELO {hostname}", timeout)
        if not reply.is_success:
            raise HostFailed(reply)
        self.extensions = {}

    def start_tls_if_offered(self):
        policy = self.route.tls_policy
        if "STARTTLS" not in self.extensions:
            if requires_tls(policy):
                self.fail(451, "4.7.4", f"TLS policy {policy} requires STARTTLS, which the server does not offer")
            return

        reply = self.connection.command("STARTTLS", conf.get("COMMAND_TIMEOUT"))
        if reply.code != 220:
            if requires_tls(policy):
                self.fail(451, "4.7.4", f"STARTTLS rejected: {reply}")
            return

        context = create_client_context(policy)
        self.connection.start_tls(context, self.host.name, conf.get("COMMAND_TIMEOUT"))
        self.tls = True

        # RFC 3207 section 4.2: discard what the server sent before TLS and send EHLO again.
        self.extensions = {}
        self.say_hello()

    def authenticate_if_configured(self):
        """Authenticate with the route's credentials; they travel in clear text only under the policy none."""
        if not self.route.username:
            return
        if not self.tls and self.route.tls_policy != NONE:
            self.fail(451, "4.7.0", "credentials are configured but TLS was not started; AUTH not attempted")

        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            reply = self.auth_plain()
        elif "LOGIN" in mechanisms:
            reply = self.auth_login()
        else:
            offered = " ".join(mechanisms) or "none"
            self.fail(451, "4.7.0", f"the server offers no AUTH mechanism mailhub supports (PLAIN, LOGIN); offered: {offered}")

        if reply.code != 235:
            # A rejected password is an operator's error to fix, and mail should wait for
            # the fix instead of bouncing (Postfix: smtp_sasl_auth_soft_bounce = yes).
            self.fail(451, "4.7.0", f"authentication failed: {reply}")

    def auth_plain(self):
        token = f"\0{self.route.username}\0{self.route.password}".encode("utf-8")
        return self.connection.command(b"AUTH PLAIN " + base64.b64encode(token), conf.get("COMMAND_TIMEOUT"))

    def auth_login(self):
        timeout = conf.get("COMMAND_TIMEOUT")
        reply = self.connection.command("AUTH LOGIN", timeout)
        for secret in (self.route.username, self.route.password):
            if reply.code != 334:
                return reply
            reply = self.connection.command(base64.b64encode(secret.encode("utf-8")), timeout)
        return reply

    # Ending the session.

    def close(self):
        """Send QUIT and close the connection; a server that is already gone is no error."""
        if not self.connection.is_open:
            return
        try:
            self.connection.command("QUIT", min(conf.get("COMMAND_TIMEOUT"), QUIT_TIMEOUT))
        except CONNECTION_ERRORS:
            pass
        finally:
            self.connection.close()

    def abort(self):
        self.connection.close()

    # Mail transactions.

    def send(self, envelope):
        """Deliver ``envelope``; return one Reply per recipient, in the envelope's order.

        Recipients beyond conf RECIPIENTS_PER_TRANSACTION go in further transactions
        over the same connection.
        """
        [replies] = self.send_each([envelope])
        return replies

    def send_each(self, envelopes):
        """Deliver each envelope of the iterable in turn; yield its replies as it finishes.

        The iterable is read one envelope ahead: with PIPELINING, the next transaction's
        commands go out in the same write as the end of the current message's data.
        """
        steps = self.plan_transactions(envelopes)
        upcoming = next(steps, None)
        try:
            while upcoming is not None:
                step, upcoming = upcoming, next(steps, None)
                envelope, replies, indexes, last = step
                if indexes:
                    for index, reply in zip(indexes, self.send_transaction(step, upcoming)):
                        replies[index] = reply
                if last:
                    for recipient, reply in zip(envelope.recipients, replies):
                        log_result(envelope, recipient, reply)
                    yield replies
        finally:
            if self.in_flight is not None:
                # Commands sent ahead await replies that no later transaction would expect.
                self.in_flight = None
                self.abort()

    def plan_transactions(self, envelopes):
        """Yield ``(envelope, replies, indexes, last)`` per transaction of each envelope.

        ``replies`` is the envelope's list that the transactions fill in, with unsafe
        addresses refused up front; ``last`` marks the envelope's final step.
        """
        for envelope in envelopes:
            replies = [None] * len(envelope.recipients)
            sendable = []
            for index, recipient in enumerate(envelope.recipients):
                if is_safe_address(recipient):
                    sendable.append(index)
                else:
                    replies[index] = self.reply(501, "5.1.3", "recipient address contains CR, LF, NUL, < or >")

            batches = chunk(sendable, conf.get("RECIPIENTS_PER_TRANSACTION")) or [[]]
            for number, batch in enumerate(batches):
                yield envelope, replies, batch, number == len(batches) - 1

    def send_transaction(self, step, upcoming=None):
        """Run the transaction of ``step`` and return the replies of its recipients."""
        envelope, _, indexes, _ = step
        in_flight, self.in_flight = self.in_flight, None
        refusal = self.check_envelope(envelope)
        if refusal is not None:
            return [refusal] * len(indexes)

        commands_sent = in_flight is not None and in_flight.step is step
        transaction = in_flight.transaction if commands_sent else self.new_transaction(envelope, indexes)
        transaction.follow = lambda: self.send_ahead(upcoming)
        try:
            if not commands_sent:
                self.reset_if_needed()
            replies = transaction.run(commands_sent)
        except CONNECTION_ERRORS as error:
            self.connection.close()
            return [self.reply(451, "4.4.2", f"connection lost before the end of data: {error}")] * len(indexes)

        self.needs_reset = not transaction.completed
        if any(reply.code == 421 for reply in replies):
            # 421 announces that the server closes the connection (RFC 5321 section 3.8).
            self.connection.close()
        return replies

    def new_transaction(self, envelope, indexes):
        return MailTransaction(self.connection, self.extensions, envelope, indexes, encode_data(envelope.raw))

    def send_ahead(self, step):
        """Return the commands of ``step`` to pipeline behind the current data, or b"" to wait.

        Only a transaction that starts clean (no refusal, no RSET owed) goes ahead.
        """
        if step is None or "PIPELINING" not in self.extensions or self.needs_reset:
            return b""
        envelope, _, indexes, _ = step
        if not indexes or self.check_envelope(envelope) is not None:
            return b""
        transaction = self.new_transaction(envelope, indexes)
        self.in_flight = InFlight(step, transaction)
        return transaction.command_group()

    def check_envelope(self, envelope):
        """Return a Reply that fails every recipient before anything is sent, or None."""
        if not self.connection.is_open:
            return self.reply(451, "4.4.2", "connection to the server was lost before this transaction")
        if not is_safe_address(envelope.envelope_sender):
            return self.reply(501, "5.1.7", "sender address contains CR, LF, NUL, < or >")

        if envelope_needs_smtputf8(envelope) and "SMTPUTF8" not in self.extensions:
            return self.reply(550, "5.6.7", "the message needs SMTPUTF8, which the server does not offer (RFC 6531)")

        limit = self.size_limit()
        if limit and len(envelope.raw) > limit:
            return self.reply(552, "5.3.4", f"message of {len(envelope.raw)} bytes exceeds the server's SIZE limit of {limit}")
        return None

    def size_limit(self):
        value = self.extensions.get("SIZE", "").strip()
        return int(value) if value.isdigit() else 0

    def reset_if_needed(self):
        """Send RSET after a transaction that ended before its data, so the next one starts clean."""
        if not self.needs_reset:
            return
        reply = self.connection.command("RSET", conf.get("COMMAND_TIMEOUT"))
        if not reply.is_success:
            raise ProtocolError(f"{self.label} rejected RSET: {reply}")
        self.needs_reset = False
