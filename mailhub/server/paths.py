"""Parsing of MAIL and RCPT arguments: the RFC 5321 path and the ESMTP parameters.

The grammar is RFC 5321 section 4.1.2, extended by RFC 6531 for UTF-8 when the client
declares SMTPUTF8. Anything outside it is rejected, so CR, LF, NUL, control characters,
spaces and trailing dots never reach a lookup or the spool. A source route
(``<@a.test:user@b.test>``) is accepted and ignored, as RFC 5321 section 3.6.1 requires.
"""
import ipaddress
import re
from dataclasses import dataclass, field

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
UTF8_NON_ASCII = r"[^\x00-\x7f]"
LABEL_ASCII = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
LABEL_UTF8 = r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f]){0,61}(?:[A-Za-z0-9]|[^\x00-\x7f]))?"
ADDRESS_LITERAL = r"\[(?:[0-9.]{7,15}|(?i:IPv6):[0-9A-Fa-f:.]{2,45})\]"
QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
QUOTED_STRING_UTF8 = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"'


def mailbox_pattern(utf8):
    atom_char = f"(?:{ATEXT}|{UTF8_NON_ASCII})" if utf8 else ATEXT
    atom = f"{atom_char}+"
    dot_string = f"{atom}(?:\\.{atom})*"
    label = LABEL_UTF8 if utf8 else LABEL_ASCII
    domain = f"{label}(?:\\.{label})*"
    quoted = QUOTED_STRING_UTF8 if utf8 else QUOTED_STRING
    return f"(?P<local>{dot_string}|{quoted})@(?P<domain>{domain}|{ADDRESS_LITERAL})"


SOURCE_ROUTE = r"(?:@[A-Za-z0-9.\[\]:-]+(?:,@[A-Za-z0-9.\[\]:-]+)*:)?"
PATHS = {
    (utf8, bracketed): re.compile(
        f"<{SOURCE_ROUTE}{mailbox_pattern(utf8)}>" if bracketed else mailbox_pattern(utf8)
    )
    for utf8 in (False, True)
    for bracketed in (False, True)
}
DOT_STRING_ASCII = re.compile(f"{ATEXT}+(?:\\.{ATEXT}+)*")
XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255


class PathError(ValueError):
    """A MAIL or RCPT argument does not follow RFC 5321's grammar."""


@dataclass
class ParsedPath:
    address: str
    parameters: dict = field(default_factory=dict)


def parse_command_argument(argument, keyword):
    """Split ``FROM:<path> params`` into the path text and the parameter text."""
    if argument is None or not argument[: len(keyword)].upper() == keyword:
        raise PathError(f"expected {keyword}<address>")
    rest = argument[len(keyword):].lstrip(" ")
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            raise PathError("unterminated <path>")
        parameter_text = rest[end + 1:]
        if parameter_text and not parameter_text.startswith(" "):
            raise PathError("parameters must follow the path after a space")
        return rest[: end + 1], parameter_text
    path, _, params = rest.partition(" ")
    return path, " " + params if params else ""


def parse_path(path_text, *, utf8, allow_null, postmaster_domain=""):
    """Return the address in a path; "" for the null path ``<>`` when allowed.

    With ``postmaster_domain``, the bare ``<Postmaster>`` that RFC 5321 section 4.5.1
    requires every server to accept becomes postmaster at that domain.
    """
    if path_text == "<>":
        if allow_null:
            return ""
        raise PathError("the null path <> is not allowed here")
    if postmaster_domain and path_text.lower() == "<postmaster>":
        return f"postmaster@{postmaster_domain}"

    match = PATHS[(utf8, path_text.startswith("<"))].fullmatch(path_text)
    if match is None:
        raise PathError("malformed address")

    local = match.group("local")
    domain = match.group("domain")
    if domain.startswith("[") and not is_valid_address_literal(domain[1:-1]):
        raise PathError("invalid address literal")
    local = unquote_simple_local_part(local)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise PathError("address too long")
    return f"{local}@{domain}"


def is_valid_address_literal(literal):
    """Return whether ``literal`` (without brackets) is an IPv4 dotted quad or "IPv6:" and an
    IPv6 address, the two forms of RFC 5321 section 4.1.3 that the grammar above admits."""
    if literal[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(literal[5:])
        except ValueError:
            return False
        return True
    octets = literal.split(".")
    return len(octets) == 4 and all(re.fullmatch(r"[0-9]{1,3}", octet) and int(octet) <= 255 for octet in octets)


def unquote_simple_local_part(local):
    """Drop the quotes of a quoted local part that is also a dot-string: ``"joe"`` is ``joe``."""
    if local.startswith('"') and DOT_STRING_ASCII.fullmatch(local[1:-1]):
        return local[1:-1]
    return local


def parse_parameters(text):
    """Return ESMTP parameters as {KEYWORD: value or True}; keywords upper case, values as sent."""
    parameters = {}
    for item in text.split(" "):
        if not item:
            continue
        keyword, equals, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", keyword) or (equals and not value):
            raise PathError(f"invalid parameter {item[:40]}")
        keyword = keyword.upper()
        if keyword in parameters:
            raise PathError(f"duplicate parameter {keyword}")
        parameters[keyword] = value if equals else True
    return parameters


def is_xtext(value):
    return isinstance(value, str) and XTEXT.fullmatch(value) is not None


def decode_xtext(value):
    """Decode RFC 3461 xtext, where "+XX" stands for the byte with hex value XX."""
    return re.sub(r"\+([0-9A-F]{2})", lambda match: chr(int(match.group(1), 16)), value)
