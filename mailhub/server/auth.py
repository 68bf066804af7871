"""SMTP AUTH against Django's authenticate(): PLAIN and LOGIN credentials (RFC 4616, RFC 4954).

The login may be the Django user name or the address of a mailbox the user owns. Both
cases run the same queries and one authenticate() call, so the time taken does not tell
whether a user exists. Django's ModelBackend also hashes the password for unknown users.
"""
import binascii
from base64 import b64decode

from django.contrib.auth import authenticate

from .. import directory


class CredentialsError(ValueError):
    """The client sent credentials that cannot be decoded."""


def decode_base64(blob):
    try:
        return b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as error:
        raise CredentialsError("invalid base64 data") from error


def decode_text(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CredentialsError("credentials are not UTF-8") from error


def parse_plain(response):
    """Return (user name, password) from a decoded PLAIN response "authzid NUL authcid NUL passwd".

    An authorization identity other than the login itself would mean acting for another
    user, which mailhub does not offer, so it is rejected.
    """
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise CredentialsError("PLAIN response must have three NUL-separated parts")
    authzid, authcid, password = (decode_text(part) for part in parts)
    if authzid and authzid != authcid:
        raise CredentialsError("authorization identity differs from the login")
    return authcid, password


def authenticate_login(login, password):
    """Return the active Django user for the login and password, or None. Runs database queries."""
    if not login or not password:
        return None
    mailbox = directory.find_mailbox(login) if "@" in login else None
    username = mailbox.user.get_username() if mailbox is not None and mailbox.user is not None else login
    user = authenticate(None, username=username, password=password)
    if user is None or not user.is_active:
        return None
    return user
