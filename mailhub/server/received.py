"""The Received: trace header the listeners prepend (RFC 5321 section 4.4).

The "with" protocol follows RFC 3848 (ESMTP, ESMTPA, ESMTPS, ESMTPSA), and RFC 6531
(UTF8SMTP and its A/S/SA forms) when the client used SMTPUTF8. HELO sessions get SMTP.
"""
import email.utils
import re

# Characters that could break the header's structure or inject another field: a HELO name
# is client data, so anything outside printable ASCII and the comment delimiters are replaced.
UNSAFE_IN_COMMENT = re.compile(r"[^\x21-\x27\x2a-\x5b\x5d-\x7e]")


def protocol_name(*, extended, encrypted, authenticated, smtputf8):
    if not extended:
        return "SMTP"
    name = "UTF8SMTP" if smtputf8 else "ESMTP"
    if encrypted:
        name += "S"
    if authenticated:
        name += "A"
    return name


def sanitize(text):
    return UNSAFE_IN_COMMENT.sub("?", text)[:255]


def build_received(
    *,
    helo_name,
    client_address,
    hostname,
    protocol,
    tls_version="",
    tls_cipher="",
    authenticated_user="",
    recipients=(),
    queue_id="",
    now=None,
):
    """Return the Received: field as bytes, folded, ending in CRLF.

    The recipient goes into the "for" clause only when the message has exactly one, so the
    header never lists the other recipients of a message (Postfix does the same).
    """
    from_part = f"from {sanitize(helo_name) or 'unknown'} ([{client_address or 'unknown'}]"
    if authenticated_user:
        from_part += f" (authenticated as {sanitize(authenticated_user)})"
    from_part += ")"

    with_part = f"by {hostname} (mailhub) with {protocol}"
    if tls_version:
        with_part += f" ({sanitize(tls_version)}:{sanitize(tls_cipher)})"
    if queue_id:
        with_part += f" id {queue_id}"

    lines = [f"Received: {from_part}", f"\t{with_part}"]
    if len(recipients) == 1:
        lines.append(f"\tfor <{sanitize(recipients[0])}>;")
    else:
        lines[-1] += ";"
    lines.append(f"\t{email.utils.format_datetime(now) if now else email.utils.formatdate(localtime=False)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
