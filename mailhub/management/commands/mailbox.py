"""``manage.py mailbox add|remove|list|passwd``: local mailboxes and the Django users that own them."""
import logging
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, Sum

from ...models import Mailbox
from ..mail_directory import find_domain, find_mailbox, parse_mailbox_address, validate_row, write_table
from ..passwords import add_password_argument, read_new_password

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Add, remove or list mailboxes, or set the password of a mailbox's owner. Each mailbox "
        "belongs to a Django user, who logs in to the submission port with that user's password."
    )
    # Tests and callers pass a terminal-like stdin, as Django's createsuperuser allows.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        add_help = (
            "Add a mailbox owned by a Django user: an existing user is linked, a missing one is "
            "created with the password from --password or the prompt."
        )
        add = actions.add_parser("add", help=add_help, description=add_help)
        add.add_argument("address", help="The mailbox address, such as bob@example.com; its domain must be served here.")
        add.add_argument(
            "--user",
            metavar="USERNAME",
            help="The owning Django user's username (default: the mailbox address).",
        )
        add_password_argument(add)
        add.add_argument("--inactive", action="store_true", help="Add the mailbox without accepting mail for it yet.")

        remove_help = "Remove a mailbox and the mail stored in it; the owning Django user stays."
        remove = actions.add_parser("remove", help=remove_help, description=remove_help)
        remove.add_argument("address", help="The mailbox address.")
        remove.add_argument("--dry-run", action="store_true", help="Print what would be deleted and change nothing.")

        listing = actions.add_parser("list", help="List mailboxes with owner, message count and size.")
        listing.add_argument("--domain", help="List only the mailboxes of this domain.")

        passwd_help = "Set the password of the Django user who owns the mailbox."
        passwd = actions.add_parser("passwd", help=passwd_help, description=passwd_help)
        passwd.add_argument("address", help="The mailbox address.")
        add_password_argument(passwd)

    def handle(self, *args, action, **options):
        self.stdin = options.get("stdin", sys.stdin)
        getattr(self, f"handle_{action}")(options)

    def handle_add(self, options):
        local_part, domain = parse_mailbox_address(options["address"])
        address = f"{local_part}@{domain.name}"
        if Mailbox.objects.filter(address=address).exists():
            raise CommandError(
                f"mailbox {address} already exists; set its password with 'manage.py mailbox passwd {address}'"
            )
        mailbox = Mailbox(domain=domain, local_part=local_part, active=not options["inactive"])
        # Validated before the owning user is created, so a rejected address leaves no user behind.
        validate_row(mailbox, f"mailbox {address} not added", exclude=["user"])
        username = options["user"] or address

        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        created = user is None
        if not created and options["password"] is not None:
            raise CommandError(
                f"user {username} already exists and keeps its password; leave out --password, "
                f"or change the password with 'manage.py mailbox passwd {address}' afterwards"
            )
        if created:
            user = self.build_user(user_model, username, address, options["password"])

        with transaction.atomic():
            if created:
                user.save()
            mailbox.user = user
            mailbox.save()

        logger.info("mailbox %s added user=%s user_created=%s", address, username, created)
        owner = "new user" if created else "existing user"
        self.stdout.write(f"mailbox {address} added, owned by {owner} {username}")

    def build_user(self, user_model, username, address, password):
        """Return an unsaved user with the checked password and, where the model has one, the email field set."""
        user = user_model(**{user_model.USERNAME_FIELD: username})
        email_field = user_model.get_email_field_name()
        if any(field.name == email_field for field in user_model._meta.get_fields()):
            setattr(user, email_field, address)
        user.set_password(read_new_password(password, self.stdin, user))
        return user

    def handle_remove(self, options):
        mailbox = find_mailbox(options["address"])
        stored = mailbox.messages.count()

        if options["dry_run"]:
            self.stdout.write(f"dry run: would remove mailbox {mailbox.address} with {stored} stored messages")
            return

        mailbox.delete()

        logger.info("mailbox %s removed with %d stored messages", mailbox.address, stored)
        self.stdout.write(f"mailbox {mailbox.address} removed with {stored} stored messages")

    def handle_list(self, options):
        mailboxes = Mailbox.objects.select_related("user").annotate(
            message_count=Count("messages"), total_size=Sum("messages__size")
        )
        if options["domain"]:
            mailboxes = mailboxes.filter(domain=find_domain(options["domain"]))

        rows = [
            [
                mailbox.address,
                mailbox.user.get_username() if mailbox.user else "-",
                "yes" if mailbox.active else "no",
                mailbox.message_count,
                mailbox.total_size or 0,
            ]
            for mailbox in mailboxes.order_by("address")
        ]
        if not rows:
            self.stdout.write("no mailboxes; add one with 'manage.py mailbox add user@example.com'")
            return
        write_table(self.stdout, ["MAILBOX", "USER", "ACTIVE", "MESSAGES", "BYTES"], rows)

    def handle_passwd(self, options):
        mailbox = find_mailbox(options["address"])
        user = mailbox.user
        if user is None:
            raise CommandError(
                f"mailbox {mailbox.address} has no owning user; remove it and add it again with "
                "'manage.py mailbox add ADDRESS --user USERNAME'"
            )

        user.set_password(read_new_password(options["password"], self.stdin, user))
        user.save(update_fields=["password"])

        logger.info("mailbox %s password changed user=%s", mailbox.address, user.get_username())
        self.stdout.write(f"password changed for user {user.get_username()}, owner of {mailbox.address}")
