"""The AUTH command of the submission listeners (RFC 4954), with failed-AUTH throttling."""
import asyncio
import logging

from .. import conf
from . import auth, replies
from .state import SessionClosed

logger = logging.getLogger(__name__)

AUTH_MECHANISMS = ("PLAIN", "LOGIN")


class AuthCommands:
    """AUTH PLAIN and LOGIN for MailhubSMTP; credentials are checked off the event loop."""

    async def smtp_AUTH(self, argument):
        reply = self.auth_precondition_error(argument)
        if reply is not None:
            await self.push(str(reply))
            return

        # The place is reserved before the credentials are read, so sessions of one address
        # running in parallel cannot start more password checks than AUTH_MAX_FAILURES.
        attempt = self.listener.auth_throttle.reserve(self.client.address)
        if attempt is None:
            logger.warning("client=%s AUTH blocked: too many failures", self.client.address)
            await self.close_with(replies.TOO_MANY_AUTH_FAILURES)

        try:
            await self.run_auth(attempt, argument)
        finally:
            attempt.settle()

    async def run_auth(self, attempt, argument):
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        try:
            login, password = await self.read_credentials(mechanism, initial.strip())
        except auth.CredentialsError as error:
            logger.info("client=%s AUTH %s malformed: %s", self.client.address, mechanism, error)
            await self.fail_auth(attempt, "")
            return
        if login is None:
            return

        user = await self.check_password(attempt, login, password)
        if user is None:
            await self.fail_auth(attempt, login)
            return

        attempt.succeed(login)
        self.client.authenticated_user = user
        self.client.login = login
        self.session.authenticated = True
        logger.info("client=%s AUTH %s succeeded for %s", self.client.address, mechanism, login)
        await self.push(str(replies.AUTH_OK))

    async def check_password(self, attempt, login, password):
        """Wait the user name's delay, then return the authenticated user or None.

        A session that ends while the check runs counts as a failure of its address, so
        dropping connections mid-check cannot run password checks past the limit.
        """
        delay = self.listener.auth_throttle.user_delay(login)
        if delay:
            logger.info(
                "client=%s AUTH for %r delayed %.1f s after failures of that name", self.client.address, login, delay
            )
            await asyncio.sleep(delay)
        try:
            return await self.run_password_check(auth.authenticate_login, login, password)
        except asyncio.CancelledError:
            attempt.fail("")
            raise

    def auth_precondition_error(self, argument):
        if not self.policy.offers_auth:
            return replies.AUTH_NOT_OFFERED
        if not self.session.host_name or not self.session.extended_smtp:
            return replies.HELO_FIRST
        if not self.may_offer_auth():
            return replies.ENCRYPTION_REQUIRED
        if self.client.authenticated_user is not None:
            return replies.ALREADY_AUTHENTICATED
        if self.envelope.mail_from is not None:
            return replies.NESTED_MAIL
        if not argument:
            return replies.ARGUMENT_SYNTAX.format(syntax="AUTH mechanism [initial-response]")
        if argument.partition(" ")[0].upper() not in AUTH_MECHANISMS:
            return replies.UNKNOWN_MECHANISM
        return None

    async def read_credentials(self, mechanism, initial):
        """Return (login, password); (None, None) when the client cancelled with "*"."""
        if mechanism == "PLAIN":
            response = initial if initial and initial != "=" else await self.challenge("")
            if response is None:
                return None, None
            if initial == "=":
                response = ""
            return auth.parse_plain(auth.decode_base64(response))

        login = initial or await self.challenge("VXNlcm5hbWU6")
        if login is None:
            return None, None
        login = auth.decode_text(auth.decode_base64(login))
        password = await self.challenge("UGFzc3dvcmQ6")
        if password is None:
            return None, None
        return login, auth.decode_text(auth.decode_base64(password))

    async def challenge(self, text):
        """Send a 334 challenge and return the client's line, or None after "*" (RFC 4954)."""
        await super().push(f"334 {text}")
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            await self.close_with(replies.LINE_TOO_LONG)
        except asyncio.IncompleteReadError:
            self.transport.close()
            raise SessionClosed("connection closed in AUTH")
        line = line.rstrip(b"\r\n").decode("ascii", errors="replace")
        if line == "*":
            await self.push(str(replies.AUTH_ABORTED))
            return None
        return line

    async def fail_auth(self, attempt, login):
        """Count the failure, wait the address's delay, then reply 535, or 421 at a limit.

        The same path runs for a wrong password, an unknown user and undecodable data.
        A user name past AUTH_MAX_FAILURES ends the failing session with 421, but a later
        correct password for that name is still accepted, so guessing cannot lock a user out.
        """
        throttle = self.listener.auth_throttle
        attempt.fail(login)
        delay = throttle.address_delay(self.client.address)
        address_failures, user_failures = throttle.recent_failures(self.client.address, login)
        logger.warning(
            "client=%s AUTH failed for %r, replying after %.1f s",
            self.client.address,
            login,
            delay,
            extra={"address_failures": address_failures, "user_failures": user_failures},
        )
        await asyncio.sleep(delay)
        max_failures = conf.get("AUTH_MAX_FAILURES")
        # 0 turns the limits off, so a failure then always gets 535.
        if max_failures and (throttle.has_failed_too_often(self.client.address) or user_failures >= max_failures):
            await self.close_with(replies.TOO_MANY_AUTH_FAILURES)
        await self.push(str(replies.AUTH_FAILED))
