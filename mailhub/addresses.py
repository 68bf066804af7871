"""Envelope addresses: splitting, normalising and checking them (RFC 5321 section 4.1.2, RFC 6531)."""
import idna

from .exceptions import InvalidAddress

# CR, LF and NUL end or corrupt an SMTP command line; no envelope address may carry them.
FORBIDDEN_CHARACTERS = frozenset("\r\n\x00")
MAX_ADDRESS_LENGTH = 320


def validate_address(address):
    """Raise InvalidAddress unless ``address`` is usable as an envelope address.

    The empty string (the null reverse-path ``<>``) is valid only as a sender, so callers
    check that case themselves.
    """
    if any(char in FORBIDDEN_CHARACTERS for char in address):
        raise InvalidAddress(f"address {address!r} contains CR, LF or NUL")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(f"address is longer than {MAX_ADDRESS_LENGTH} characters")
    if "@" not in address:
        raise InvalidAddress(f"address {address!r} has no domain")
    local_part, domain = split_address(address)
    if not local_part or not domain:
        raise InvalidAddress(f"address {address!r} has an empty local part or domain")


def split_address(address):
    """Split at the last "@", because a quoted local part may itself contain "@"."""
    local_part, _, domain = address.rpartition("@")
    return local_part, domain


def normalize_domain(domain):
    """Return the domain in lower case as an A-label, without a trailing dot.

    Internationalised domains are compared and looked up in DNS as A-labels (IDNA 2008,
    RFC 5890, with the UTS 46 mapping), so "bücher.test" and "xn--bcher-kva.test" name the
    same domain and "straße.test" stays distinct from "strasse.test". A domain that is not
    valid IDNA is returned in lower case as given.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain.startswith("[") and domain.endswith("]"):
        return domain
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def domain_of(address):
    """Return the normalised domain of an envelope address."""
    return normalize_domain(split_address(address)[1])


def canonical_address(address):
    """Return the address with its domain normalised and its local part as given.

    Local parts are case-sensitive by RFC 5321, but mailboxes are looked up without case,
    as every common MTA does.
    """
    local_part, domain = split_address(address)
    return f"{local_part}@{normalize_domain(domain)}"


def needs_smtputf8(address):
    """Return whether an address needs the SMTPUTF8 extension (non-ASCII local part)."""
    local_part, domain = split_address(address)
    if not local_part.isascii():
        return True
    return not domain.isascii() and normalize_domain(domain) == domain.lower()
