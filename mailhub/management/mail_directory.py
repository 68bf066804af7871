"""Look-ups shared by the maildomain, mailbox and mailalias commands, with errors that name the fix."""
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from ..addresses import normalize_domain, split_address, validate_address
from ..exceptions import InvalidAddress
from ..models import Alias, Domain, Mailbox


def find_domain(name):
    """Return the Domain called ``name`` (any case, Unicode or A-label) or raise CommandError."""
    domain = Domain.objects.filter(name=normalize_domain(name)).first()
    if domain is None:
        raise CommandError(f"domain {name!r} is not served here; add it with 'manage.py maildomain add {name}'")
    return domain


def parse_mailbox_address(address):
    """Return (local part, Domain) of a mailbox address; the domain must be served here."""
    checked_address(address)
    local_part, domain_name = split_address(address.strip())
    return local_part.lower(), find_domain(domain_name)


def parse_alias_source(source):
    """Return (local part, Domain) of an alias source; "@domain" gives an empty local part (catch-all)."""
    source = source.strip()
    if source.startswith("@"):
        return "", find_domain(source[1:])
    return parse_mailbox_address(source)


def checked_address(address):
    try:
        validate_address(address.strip())
    except InvalidAddress as error:
        raise CommandError(f"{error}; give an address such as user@example.com") from None
    return address.strip()


def find_mailbox(address):
    local_part, domain = parse_mailbox_address(address)
    mailbox = Mailbox.objects.filter(address=f"{local_part}@{domain.name}").select_related("user").first()
    if mailbox is None:
        raise CommandError(f"mailbox {address!r} not found; list mailboxes with 'manage.py mailbox list'")
    return mailbox


def find_alias(source):
    local_part, domain = parse_alias_source(source)
    alias = Alias.objects.filter(source=f"{local_part}@{domain.name}").first()
    if alias is None:
        raise CommandError(f"alias {source!r} not found; list aliases with 'manage.py mailalias list'")
    return alias


def validate_row(instance, description, exclude=None):
    """Run the model's full_clean(), the same checks as the admin, and raise CommandError with its messages."""
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as error:
        raise CommandError(f"{description}: {'; '.join(error.messages)}") from None


def write_table(stdout, headings, rows):
    """Write rows as left-aligned columns under ``headings``."""
    table = [headings, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[column]) for row in table) for column in range(len(headings))]
    for row in table:
        stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
