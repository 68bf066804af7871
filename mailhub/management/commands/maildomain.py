"""``manage.py maildomain add|remove|list``: the mail domains that mailhub serves."""
import logging

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count

from ...addresses import normalize_domain
from ...directory import has_postmaster
from ...models import Alias, Domain, MailboxMessage
from ...validators import validate_served_domain
from ..mail_directory import find_domain, validate_row, write_table

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Add, remove or list the mail domains served here: the MX listener accepts mail for them."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        add = actions.add_parser("add", help="Serve a new mail domain.", description="Serve a new mail domain.")
        add.add_argument("name", help="The domain, such as example.com; a Unicode domain is stored as its A-label.")
        add.add_argument("--inactive", action="store_true", help="Add the domain without accepting mail for it yet.")
        add.add_argument(
            "--postmaster",
            metavar="ADDRESS",
            help="Also add the alias postmaster@DOMAIN to this address, local or remote (RFC 5321 requires a postmaster).",
        )

        remove_help = "Stop serving a domain; --cascade also deletes its mailboxes, their mail and its aliases."
        remove = actions.add_parser("remove", help=remove_help, description=remove_help)
        remove.add_argument("name", help="The domain to remove.")
        remove.add_argument(
            "--cascade",
            action="store_true",
            help="Also delete the domain's mailboxes with their stored mail, and its aliases.",
        )
        remove.add_argument("--dry-run", action="store_true", help="Print what would be deleted and change nothing.")

        actions.add_parser("list", help="List the domains with their mailbox and alias counts.")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(options)

    def handle_add(self, options):
        name = checked_domain_name(options["name"])
        if Domain.objects.filter(name=name).exists():
            raise CommandError(f"domain {name} already exists; list domains with 'manage.py maildomain list'")

        with transaction.atomic():
            domain = Domain(name=name, active=not options["inactive"])
            validate_row(domain, f"domain {name} not added")
            domain.save()
            if options["postmaster"]:
                self.add_postmaster_alias(domain, options["postmaster"])

        logger.info("domain %s added", name)
        self.stdout.write(f"domain {name} added" + (" (inactive)" if options["inactive"] else ""))
        if options["postmaster"]:
            self.stdout.write(f"alias postmaster@{name} added, to {options['postmaster'].strip()}")
        elif not has_postmaster(domain):
            self.stdout.write(
                f"no postmaster@{name} yet, which RFC 5321 requires: add one with "
                f"'manage.py mailalias add postmaster@{name} you@{name}'"
            )

    def add_postmaster_alias(self, domain, address):
        alias = Alias(domain=domain, local_part="postmaster", destinations=address.strip())
        validate_row(alias, f"domain {domain.name} not added, because its postmaster alias is invalid")
        alias.save()
        logger.info("alias %s added destinations=1", alias.source)

    def handle_remove(self, options):
        domain = find_domain(options["name"])
        mailboxes = list(domain.mailboxes.values_list("address", flat=True))
        aliases = list(domain.aliases.values_list("source", flat=True))
        stored = MailboxMessage.objects.filter(mailbox__domain=domain).count()

        if (mailboxes or aliases) and not options["cascade"] and not options["dry_run"]:
            raise CommandError(
                f"domain {domain.name} still has {len(mailboxes)} mailboxes and {len(aliases)} aliases; "
                "remove them first, or pass --cascade to delete them with the domain"
            )

        if options["dry_run"]:
            self.stdout.write(
                f"dry run: would delete domain {domain.name}, {len(mailboxes)} mailboxes "
                f"with {stored} stored messages, and {len(aliases)} aliases"
            )
            for address in [*mailboxes, *aliases]:
                self.stdout.write(f"  {address}")
            return

        domain.delete()

        logger.info("domain %s removed with %d mailboxes and %d aliases", domain.name, len(mailboxes), len(aliases))
        self.stdout.write(f"domain {domain.name} removed")

    def handle_list(self, options):
        domains = Domain.objects.annotate(
            mailbox_count=Count("mailboxes", distinct=True),
            alias_count=Count("aliases", distinct=True),
        ).order_by("name")
        rows = [
            [domain.name, "yes" if domain.active else "no", domain.mailbox_count, domain.alias_count]
            for domain in domains
        ]
        if not rows:
            self.stdout.write("no domains; add one with 'manage.py maildomain add example.com'")
            return
        write_table(self.stdout, ["DOMAIN", "ACTIVE", "MAILBOXES", "ALIASES"], rows)


def checked_domain_name(name):
    """Return ``name`` normalised (lower case, A-label), or raise CommandError saying why it is invalid."""
    try:
        validate_served_domain(name.strip())
    except ValidationError as error:
        raise CommandError("; ".join(error.messages)) from None
    return normalize_domain(name)
