"""Session state that mailhub's SMTP protocol keeps beside aiosmtpd's Session."""
from dataclasses import dataclass, field


@dataclass
class ClientState:
    """The client's address, HELO name, login and transaction; unlike aiosmtpd's Session it survives STARTTLS."""

    address: str = ""
    helo_name: str = ""
    authenticated_user: object = None
    login: str = ""
    recipients: list = field(default_factory=list)
    dsn_ret: str = ""
    dsn_envid: str = ""
    smtputf8: bool = False


class SessionClosed(Exception):
    """The session was ended by the server; the command loop stops."""
