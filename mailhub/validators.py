"""Checks for the mail directory: domain names, local parts and alias destinations.

The models' clean() methods and the operator commands share these functions, so the admin
and the shell accept the same values. Each raises django.core.exceptions.ValidationError
with a message that names the value and says what to give instead.
"""
import ipaddress
import re
from contextlib import contextmanager

import idna
from django.core.exceptions import ValidationError

# RFC 5321 section 4.5.3.1: a local part has at most 64 octets, a domain at most 255; a
# domain name in DNS has at most 253 characters in text form and 63 octets per label (RFC 1035).
MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 253
MAX_LABEL_OCTETS = 63

# RFC 5322 section 3.2.3 atext, used by RFC 5321's Dot-string; RFC 6531 adds every non-ASCII character.
ATEXT_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~")
LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")


def validate_domain_name(value):
    """Raise ValidationError unless ``value`` is a domain name usable in an SMTP address.

    Labels are letters, digits and hyphens (RFC 1123), each 1 to 63 octets, at most 253 in
    all. A Unicode domain must convert to an A-label under IDNA 2008 with the UTS 46
    mapping. One trailing dot is allowed. IP addresses and address literals are rejected.
    """
    check_no_space(value, "domain")
    if value.startswith("["):
        raise ValidationError(
            "%(value)r is an address literal, not a domain name; give a domain name such as example.com",
            code="address_literal",
            params={"value": value},
        )
    if is_ip_address(value):
        raise ValidationError(
            "%(value)r is an IP address, not a domain name; give a domain name such as example.com",
            code="ip_address",
            params={"value": value},
        )

    name = to_a_label(value.removesuffix("."))
    if len(name) > MAX_DOMAIN_OCTETS:
        raise ValidationError(
            "domain %(value)r is longer than %(limit)d characters as an A-label",
            code="domain_too_long",
            params={"value": value, "limit": MAX_DOMAIN_OCTETS},
        )
    labels = name.split(".")
    for label in labels:
        check_label(label, value)
    if labels[-1].isdigit():
        # RFC 3696 section 2 rules out all-numeric top-level domains, so this is a mistyped IP address.
        raise ValidationError(
            "domain %(value)r ends in a numeric label; give a domain name such as example.com",
            code="numeric_tld",
            params={"value": value},
        )


def validate_served_domain(value):
    """Raise ValidationError unless ``value`` can be a domain that mailhub serves.

    Besides validate_domain_name(), the domain must be fully qualified (two labels or
    more), because RFC 5321 section 2.3.5 permits only fully qualified names in SMTP.
    """
    validate_domain_name(value)
    # The A-label, because UTS 46 maps full stops such as U+3002 to ".".
    if "." not in to_a_label(value.removesuffix(".")):
        raise ValidationError(
            "invalid domain %(value)r: it needs at least two labels; give a domain such as example.com",
            code="not_fully_qualified",
            params={"value": value},
        )


def validate_local_part(value):
    """Raise ValidationError unless ``value`` is a local part for a mailbox or an alias.

    The local part must be an RFC 5321 Dot-string of at most 64 octets (UTF-8 allowed,
    as RFC 6531 permits). Quoted local parts are rejected, because RFC 5321 section 4.1.2
    says a host SHOULD avoid defining mailboxes whose local part needs the Quoted-string form.
    """
    if not value:
        raise ValidationError("the local part is empty; give the part before the '@', such as bob", code="empty")
    if "@" in value:
        raise ValidationError(
            "local part %(value)r contains '@'; give only the part before the '@'",
            code="contains_at",
            params={"value": value},
        )
    if value.startswith('"'):
        raise ValidationError(
            "quoted local part %(value)r is not supported for a mailbox or alias; use letters, digits, dots and !#$%%&'*+-/=?^_`{|}~",
            code="quoted",
            params={"value": value},
        )
    check_no_space(value, "local part")
    check_dot_atom(value)
    if len(value.encode()) > MAX_LOCAL_PART_OCTETS:
        raise ValidationError(
            "local part %(value)r is longer than %(limit)d octets",
            code="local_part_too_long",
            params={"value": value, "limit": MAX_LOCAL_PART_OCTETS},
        )


def validate_destination(address):
    """Raise ValidationError unless ``address`` is a valid alias destination.

    A destination has exactly one '@' outside a quoted local part, a Dot-string or quoted
    local part, and a fully qualified domain name or an address literal.
    """
    local_part, domain = split_destination(address)

    if local_part.startswith('"'):
        check_quoted_string(local_part, address)
    else:
        with naming_address(address):
            validate_local_part(local_part)

    with naming_address(address):
        if domain.startswith("["):
            validate_address_literal(domain)
        else:
            validate_served_domain(domain)


def validate_destinations(addresses):
    """Raise ValidationError listing every invalid address in ``addresses``, or if there are none."""
    if not addresses:
        raise ValidationError("no destination given; give at least one address such as bob@example.com", code="empty")
    errors = []
    for address in addresses:
        try:
            validate_destination(address)
        except ValidationError as error:
            errors.extend(error.error_list)
    if errors:
        raise ValidationError(errors)


@contextmanager
def naming_address(address):
    """Prefix the message of a ValidationError raised inside with the whole address."""
    try:
        yield
    except ValidationError as error:
        raise ValidationError(
            "invalid address %(value)r: %(reason)s",
            code="invalid_address",
            params={"value": address, "reason": error.messages[0]},
        ) from None


def to_a_label(name):
    """Return ``name`` in lower case as an A-label, or raise ValidationError if IDNA rejects it."""
    name = name.lower()
    try:
        if not name.isascii():
            return idna.encode(name, uts46=True).decode("ascii")
        for label in name.split("."):
            if label.startswith("xn--"):
                idna.decode(label)
    except idna.IDNAError as error:
        raise ValidationError(
            "%(value)r is not a valid internationalised domain name (%(reason)s)",
            code="invalid_idna",
            params={"value": name, "reason": error},
        ) from None
    return name


def check_label(label, value):
    if not label:
        raise ValidationError(
            "domain %(value)r has an empty label (two dots in a row, or a leading dot)",
            code="empty_label",
            params={"value": value},
        )
    if "*" in label:
        raise ValidationError(
            "domain %(value)r contains '*'; wildcard domains are not supported, add each domain by name",
            code="wildcard",
            params={"value": value},
        )
    if len(label) > MAX_LABEL_OCTETS:
        raise ValidationError(
            "domain %(value)r has a label longer than %(limit)d octets",
            code="label_too_long",
            params={"value": value, "limit": MAX_LABEL_OCTETS},
        )
    if not LDH_LABEL.match(label):
        raise ValidationError(
            "domain %(value)r has the invalid label %(label)r; a label contains only letters, digits "
            "and hyphens, and does not start or end with a hyphen",
            code="invalid_label",
            params={"value": value, "label": label},
        )


def check_dot_atom(value):
    if value.startswith(".") or value.endswith("."):
        raise ValidationError(
            "local part %(value)r starts or ends with a dot", code="edge_dot", params={"value": value}
        )
    if ".." in value:
        raise ValidationError("local part %(value)r contains two dots in a row", code="double_dot", params={"value": value})
    for char in value:
        if not is_atext(char) and char != ".":
            raise ValidationError(
                "local part %(value)r contains %(char)r; use letters, digits, dots and !#$%%&'*+-/=?^_`{|}~",
                code="invalid_character",
                params={"value": value, "char": char},
            )


def is_atext(char):
    if char.isascii():
        return char.isalnum() or char in ATEXT_SYMBOLS
    return char.isprintable() and not char.isspace()


def check_no_space(value, what):
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValidationError(
            "%(what)s %(value)r contains a space or control character; remove it",
            code="space",
            params={"what": what, "value": value},
        )


def split_destination(address):
    """Return (local part, domain) of a destination, raising ValidationError unless it has one '@' to split at."""
    if address.startswith('"'):
        closing = find_closing_quote(address)
        local_part, rest = address[: closing + 1], address[closing + 1 :]
        if not rest.startswith("@") or "@" in rest[1:] or len(rest) == 1:
            raise missing_at(address)
        return local_part, rest[1:]

    if address.count("@") != 1:
        raise missing_at(address)
    local_part, _, domain = address.partition("@")
    if not local_part or not domain:
        raise missing_at(address)
    return local_part, domain


def find_closing_quote(address):
    index = 1
    while index < len(address):
        if address[index] == "\\":
            index += 2
            continue
        if address[index] == '"':
            return index
        index += 1
    raise ValidationError(
        "invalid address %(value)r: the quoted local part has no closing quote", code="invalid_address", params={"value": address}
    )


def check_quoted_string(local_part, address):
    # find_closing_quote() ended the string at the first '"' that is not a quoted pair, so
    # only control characters and the length are left to check.
    content = local_part[1:-1]
    if any(not char.isprintable() for char in content) or len(local_part.encode()) > MAX_LOCAL_PART_OCTETS:
        raise ValidationError(
            "invalid address %(value)r: the quoted local part has control characters or more than %(limit)d octets",
            code="invalid_address",
            params={"value": address, "limit": MAX_LOCAL_PART_OCTETS},
        )


def validate_address_literal(value):
    """Raise ValidationError unless ``value`` is an RFC 5321 address literal such as [192.0.2.1] or [IPv6:2001:db8::1]."""
    inner = value.removeprefix("[").removesuffix("]")
    if value.startswith("[") and value.endswith("]"):
        if inner.lower().startswith("ipv6:") and is_ip_address(inner[5:], version=6):
            return
        if is_ip_address(inner, version=4):
            return
    raise ValidationError(
        "%(value)r is not an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]",
        code="invalid_address_literal",
        params={"value": value},
    )


def missing_at(address):
    return ValidationError(
        "invalid address %(value)r: an address has exactly one '@' between a local part and a domain, such as bob@example.com",
        code="invalid_address",
        params={"value": address},
    )


def is_ip_address(text, version=None):
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or parsed.version == version
