"""Values passed between routing, the SMTP client and the delivery engine."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    """An SMTP reply, or a locally made one for a failure that had no remote reply.

    ``remote_host`` names the host that gave the reply; it is empty when mailhub itself
    decided (a DNS failure, a refused connection, an expired queue lifetime).
    """

    code: int
    enhanced_code: str = ""
    text: str = ""
    remote_host: str = ""
    # True when the connection broke after the final "." and before the reply (RFC 1047).
    possible_duplicate: bool = False

    @property
    def is_success(self):
        return 200 <= self.code < 300

    @property
    def is_temporary(self):
        return 400 <= self.code < 500

    @property
    def is_permanent(self):
        return self.code >= 500

    def __str__(self):
        parts = [str(self.code), self.enhanced_code, self.text]
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class RemoteHost:
    """One address to connect to, with the name it was found under (MX host or relay)."""

    name: str
    address: str
    port: int


@dataclass(frozen=True)
class Route:
    """The next hop for mail to one domain.

    ``kind`` is "local" (a domain mailhub serves), "relay" (a configured route or relay
    host) or "mx" (the domain's MX records from DNS). ``destination`` is the key that the
    per-destination concurrency limit and connection reuse group by.
    """

    kind: str
    destination: str
    domain: str
    hosts: tuple = ()
    tls_policy: str = "may"
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class OutboundEnvelope:
    """The envelope, DSN parameters and bytes that one SMTP transaction sends."""

    queue_id: str
    envelope_sender: str
    recipients: tuple
    raw: bytes
    body_8bitmime: bool = False
    smtputf8: bool = False
    dsn_ret: str = ""
    dsn_envid: str = ""
    # Per recipient, in the order of ``recipients``: (NOTIFY, ORCPT) to pass on, or ("", "").
    recipient_dsn: tuple = ()
