"""TLS policies of the SMTP client and the SSL contexts that enforce them.

The levels follow Postfix's smtp_tls_security_level: ``none`` never starts TLS, ``may``
starts it whenever the server offers STARTTLS and accepts any certificate, ``encrypt``
requires TLS but accepts any certificate, ``verify`` requires TLS with a certificate that
a trusted CA signed for the host name connected to.
"""
import ssl

from .. import conf
from ..exceptions import ConfigurationError

NONE = "none"
MAY = "may"
ENCRYPT = "encrypt"
VERIFY = "verify"
POLICIES = (NONE, MAY, ENCRYPT, VERIFY)


def validate_policy(policy, setting="a TLS policy"):
    """Return ``policy`` in lower case; raise ConfigurationError unless it is a known level."""
    normalized = str(policy).strip().lower()
    if normalized not in POLICIES:
        raise ConfigurationError(
            f"invalid TLS policy {policy!r} in {setting}; use one of {', '.join(POLICIES)}"
        )
    return normalized


def requires_tls(policy):
    return policy in (ENCRYPT, VERIFY)


def create_client_context(policy):
    """Return the SSL context for STARTTLS under ``policy`` (``may``, ``encrypt`` or ``verify``).

    ``verify`` trusts conf TLS_CA_FILE when set, else the system CA store. The other
    levels skip certificate checks, because opportunistic TLS (RFC 7435) still beats clear
    text against a passive listener.
    """
    if policy == VERIFY:
        ca_file = conf.get("TLS_CA_FILE") or None
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
