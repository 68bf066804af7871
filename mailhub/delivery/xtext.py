"""xtext, the encoding of DSN parameter values on the wire (RFC 3461 section 4)."""
import re

# Printable ASCII except "+" and "=", or "+" and two upper-case hex digits.
XTEXT = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")


def encode_xtext(value):
    """Return ``value`` with "+", "=", controls, space and non-ASCII written as "+XX" hex."""
    encoded = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            encoded.append(chr(byte))
        else:
            encoded.append(f"+{byte:02X}")
    return "".join(encoded)


def is_xtext(value):
    return XTEXT.match(value) is not None


def ensure_xtext(value):
    """Return ``value`` unchanged when it is valid xtext, else encoded.

    The listeners store ENVID and ORCPT as the client sent them, already xtext;
    encoding those again would turn "+2B" into "+2B2B".
    """
    return value if is_xtext(value) else encode_xtext(value)


def decode_xtext(value):
    """Return the text that ``value`` encodes; "+XX" becomes the byte XX."""
    decoded = bytearray()
    index = 0
    while index < len(value):
        hex_digits = value[index + 1:index + 3]
        if value[index] == "+" and len(hex_digits) == 2:
            decoded.append(int(hex_digits, 16))
            index += 3
        else:
            decoded.extend(value[index].encode("utf-8"))
            index += 1
    return decoded.decode("utf-8", "replace")


def encode_utf8_addr_xtext(address):
    """Return ``address`` in RFC 6533's utf-8-addr-xtext form, which is 7-bit.

    Printable ASCII other than "+", "=" and "\\" stays as it is. Every other character
    becomes "\\x{HEX}", its code point in upper-case hex with at least two digits.
    """
    return "".join(
        character if "!" <= character <= "~" and character not in "+=\\" else embedded_unicode_char(character)
        for character in address
    )


def escape_non_ascii(value):
    """Return a utf-8-addr-unitext value in utf-8-addr-xtext form: only its non-ASCII characters are escaped."""
    return "".join(character if character.isascii() else embedded_unicode_char(character) for character in value)


def embedded_unicode_char(character):
    """Return RFC 6533's escape of one character: "\\x{HEX}", upper-case, at least two digits."""
    return f"\\x{{{ord(character):02X}}}"


def typed_address(address):
    """Return a DSN address field value: "rfc822; address", or "utf-8; ..." for a non-ASCII address (RFC 6533)."""
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {encode_utf8_addr_xtext(address)}"
