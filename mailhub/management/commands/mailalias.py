"""``manage.py mailalias add|remove|list``: aliases, including a domain's catch-all "@domain"."""
import logging

from django.core.management.base import BaseCommand, CommandError

from ...models import Alias, Mailbox
from ..mail_directory import find_alias, find_domain, parse_alias_source, validate_row, write_table

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Add, remove or list aliases. Mail to an alias goes to each destination, local or remote; "
        "the source \"@example.com\" is the domain's catch-all, used when no mailbox or other alias matches."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        add = actions.add_parser("add", help="Add an alias.", description="Add an alias.")
        add.add_argument("source", help='The alias address, such as info@example.com, or "@example.com" for a catch-all.')
        add.add_argument("destinations", nargs="+", metavar="DESTINATION", help="A destination address, local or remote.")
        add.add_argument("--inactive", action="store_true", help="Add the alias without using it yet.")
        add.add_argument(
            "--force",
            action="store_true",
            help="Allow a source that is also a mailbox address; the alias then receives all of that mailbox's mail.",
        )

        remove = actions.add_parser("remove", help="Remove an alias.", description="Remove an alias.")
        remove.add_argument("source", help='The alias address, or "@example.com" for a catch-all.')
        remove.add_argument("--dry-run", action="store_true", help="Print what would be removed and change nothing.")

        listing = actions.add_parser("list", help="List aliases and their destinations.")
        listing.add_argument("--domain", help="List only the aliases of this domain.")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(options)

    def handle_add(self, options):
        local_part, domain = parse_alias_source(options["source"])
        destinations = [destination.strip() for destination in options["destinations"]]
        source = f"{local_part}@{domain.name}"
        existing = Alias.objects.filter(source=source).first()
        if existing is not None:
            raise CommandError(
                f"alias {source} already exists, to {', '.join(existing.destination_list())}; "
                f"remove it first with 'manage.py mailalias remove {source}'"
            )
        if Mailbox.objects.filter(address=source).exists() and not options["force"]:
            raise CommandError(
                f"{source} is a mailbox address, and an alias for it would take all of the mailbox's mail; "
                "choose another address, or pass --force if the alias should replace the mailbox"
            )

        alias = Alias(
            domain=domain,
            local_part=local_part,
            destinations="\n".join(destinations),
            active=not options["inactive"],
        )
        alias.replaces_mailbox = options["force"]
        validate_row(alias, f"alias {source} not added")
        alias.save()

        logger.info("alias %s added destinations=%d replaces_mailbox=%s", alias.source, len(destinations), options["force"])
        self.stdout.write(f"alias {alias.source} added, to {', '.join(destinations)}")

    def handle_remove(self, options):
        alias = find_alias(options["source"])

        if options["dry_run"]:
            self.stdout.write(f"dry run: would remove alias {alias.source} to {', '.join(alias.destination_list())}")
            return

        alias.delete()

        logger.info("alias %s removed", alias.source)
        self.stdout.write(f"alias {alias.source} removed")

    def handle_list(self, options):
        aliases = Alias.objects.select_related("domain").order_by("source")
        if options["domain"]:
            aliases = aliases.filter(domain=find_domain(options["domain"]))

        rows = [
            [alias.source, "yes" if alias.active else "no", ", ".join(alias.destination_list())]
            for alias in aliases
        ]
        if not rows:
            self.stdout.write("no aliases")
            return
        write_table(self.stdout, ["ALIAS", "ACTIVE", "DESTINATIONS"], rows)
