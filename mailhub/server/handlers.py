"""What each listener accepts: the MX policy (local recipients only) and the submission policy.

Every check that needs the database is a plain function that runs in the listeners'
database thread pool. The session calls ``check_sender``, ``check_recipient`` and
``check_message``, and sends the Reply they return or goes on when they return None.
A policy whose ``checks_sender`` or ``checks_message`` is False accepts every sender or
message, and the session skips that call. A recipient that ``recipient_known_deliverable``
finds in the RecipientCache is accepted without a query.
"""
import email.utils
import ipaddress
import logging

from .. import conf, directory, headers
from ..addresses import domain_of
from . import replies
from .recipient_cache import RecipientCache

logger = logging.getLogger(__name__)

SEND_AS_ANY_PERMISSION = "mailhub.send_as_any"


def is_trusted(client_address):
    """Return whether the client is in TRUSTED_NETWORKS. An empty list trusts no address, loopback included."""
    networks = conf.get("TRUSTED_NETWORKS")
    if not networks or not client_address:
        return False
    try:
        address = ipaddress.ip_address(client_address)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def may_relay(client):
    return client.authenticated_user is not None or is_trusted(client.address)


def check_local_recipient(address):
    """Return None for a deliverable local address, UNKNOWN_USER for an unknown one, or
    RELAY_DENIED when the domain is not local. Runs database queries."""
    if not directory.is_local_domain(domain_of(address)):
        return replies.RELAY_DENIED
    if not directory.is_deliverable_locally(address):
        return replies.UNKNOWN_USER
    return None


class RecipientMemory:
    """Remembers the local recipients a policy found deliverable, in a RecipientCache."""

    def __init__(self, recipient_cache=None):
        self.recipient_cache = recipient_cache if recipient_cache is not None else RecipientCache()

    def recipient_known_deliverable(self, recipient):
        """Return True when the recipient was found deliverable less than the cache's TTL ago."""
        return self.recipient_cache.is_deliverable(recipient)


class MXPolicy(RecipientMemory):
    """Port 25: strangers may send only to local mailboxes and aliases; no AUTH is offered."""

    source = "mx"
    offers_auth = False
    checks_sender = False
    checks_message = False

    def requires_auth(self, client):
        return False

    def check_sender(self, client, sender):
        return None

    def check_recipient(self, client, recipient):
        reply = check_local_recipient(recipient)
        if reply is None:
            self.recipient_cache.remember_deliverable(recipient)
        if reply is replies.RELAY_DENIED and is_trusted(client.address):
            return None
        return reply

    def check_message(self, client, sender, raw):
        return None


class SubmissionPolicy(RecipientMemory):
    """Ports 587 and 465: authenticated users send to any recipient, only as themselves."""

    source = "submission"
    offers_auth = True
    checks_sender = True
    checks_message = True

    def requires_auth(self, client):
        return not is_trusted(client.address)

    def check_sender(self, client, sender):
        """Return SENDER_NOT_OWNED unless the user may use the envelope sender. Runs queries.

        The null sender <> claims no identity, so it is allowed; the From: header of such a
        message is still checked at the end of DATA.
        """
        user = client.authenticated_user
        if user is None or not sender or may_send_as_any(user):
            return None
        if directory.lookup_key(sender) in directory.addresses_owned_by(user):
            return None
        return replies.SENDER_NOT_OWNED.format(user=user.get_username())

    def check_recipient(self, client, recipient):
        """Return UNKNOWN_USER for an undeliverable address in a local domain; any remote
        recipient is accepted. Runs database queries."""
        if not directory.is_local_domain(domain_of(recipient)):
            return None
        if not directory.is_deliverable_locally(recipient):
            return replies.UNKNOWN_USER
        self.recipient_cache.remember_deliverable(recipient)
        return None

    def check_message(self, client, sender, raw):
        """Return FROM_NOT_OWNED unless the user owns every From: address. Runs queries."""
        user = client.authenticated_user
        if user is None or may_send_as_any(user):
            return None
        from_addresses = header_from_addresses(raw)
        if from_addresses is None:
            return None
        owned = directory.addresses_owned_by(user)
        for address in from_addresses:
            if not address or directory.lookup_key(address) not in owned:
                return replies.FROM_NOT_OWNED.format(user=user.get_username())
        return None


def may_send_as_any(user):
    return user.has_perm(SEND_AS_ANY_PERMISSION)


def header_from_addresses(raw):
    """Return the addresses of every From: field, None when there is none, [""] when unparsable."""
    parsed = headers.parse_headers(raw)
    fields = parsed.get_all("From")
    if not fields:
        return None
    addresses = [address for _name, address in email.utils.getaddresses([str(field) for field in fields])]
    return addresses or [""]


POLICIES = {
    "mx": MXPolicy,
    "submission": SubmissionPolicy,
    "submissions": SubmissionPolicy,
}
