"""The AUTH command of the submission listeners (RFC 4954), with failed-AUTH throttling."""
import asyncio
import logging

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

        throttle = self.listener.auth_throttle
        if throttle.is_blocked(self.client.address):
            logger.warning("client=%s AUTH blocked: too many failures", self.client.address)
            await self.close_with(replies.TOO_MANY_AUTH_FAILURES)

        mechanism, _, initial = argument.partition(" ")
        try:
            login, password = await self.read_credentials(mechanism.upper(), initial.strip())
        except auth.CredentialsError as error:
            logger.info("client=%s AUTH %s malformed: %s", self.client.address, mechanism.upper(), error)
            await self.fail_auth("")
            return
        if login is None:
            return

        user = None
        if not throttle.is_blocked(self.client.address, login):
            user = await self.run_db(auth.authenticate_login, login, password)
        if user is None:
            await self.fail_auth(login)
            return

        throttle.record_success(self.client.address, login)
        self.client.authenticated_user = user
        self.client.login = login
        self.session.authenticated = True
        logger.info("client=%s AUTH %s succeeded for %s", self.client.address, mechanism.upper(), login)
        await self.push(str(replies.AUTH_OK))

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

    async def fail_auth(self, login):
        """Wait the throttle's delay, then reply 535, or 421 once the limit is reached.

        The same path runs for a wrong password, an unknown user and undecodable data.
        """
        throttle = self.listener.auth_throttle
        delay = throttle.record_failure(self.client.address, login)
        logger.warning(
            "client=%s AUTH failed for %r, replying after %.1f s",
            self.client.address,
            login,
            delay,
            extra={"recent_failures": throttle.recent_failures(self.client.address, login)},
        )
        await asyncio.sleep(delay)
        if throttle.is_blocked(self.client.address, login):
            await self.close_with(replies.TOO_MANY_AUTH_FAILURES)
        await self.push(str(replies.AUTH_FAILED))
