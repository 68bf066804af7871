"""Command-line selection of queued mail: by queue id, by recipient domain and by status.

``mailq`` and every ``mailqueue`` subcommand share these options, so an operator can
check a selection with ``mailq`` before acting on it with the same options.
"""
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from ..addresses import normalize_domain
from ..models import Message, Recipient
from ..validators import validate_address_literal, validate_domain_name

STATUS_CHOICES = [status.value for status in Recipient.Status]


def add_selection_arguments(parser):
    parser.add_argument(
        "queue_ids",
        nargs="*",
        metavar="QUEUE_ID",
        help="Select these messages by queue id, as mailq prints it (case does not matter).",
    )
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="Select recipients in this domain (repeatable); a Unicode domain matches its A-label.",
    )
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        choices=STATUS_CHOICES,
        help="Select recipients with this status (repeatable).",
    )


def has_selection(options):
    return bool(options["queue_ids"] or options["domain"] or options["status"])


def select_recipients(options, recipients=None):
    """Return the recipients that match the queue ids, domains and statuses in ``options``.

    Raises CommandError for a queue id that is not in the spool, because a typo must not
    act on nothing without a word.
    """
    recipients = Recipient.objects.all() if recipients is None else recipients
    queue_ids = checked_queue_ids(options["queue_ids"])
    if queue_ids:
        recipients = recipients.filter(message__queue_id__in=queue_ids)
    if options["domain"]:
        recipients = recipients.filter(domain__in=checked_domains(options["domain"]))
    if options["status"]:
        recipients = recipients.filter(status__in=options["status"])
    return recipients


def select_messages(options, recipients=None):
    """Return the messages that have at least one recipient matching ``options``."""
    message_ids = select_recipients(options, recipients).values("message_id")
    return Message.objects.filter(id__in=message_ids)


def checked_queue_ids(queue_ids):
    queue_ids = [queue_id.strip().upper() for queue_id in queue_ids]
    if not queue_ids:
        return []
    found = set(Message.objects.filter(queue_id__in=queue_ids).values_list("queue_id", flat=True))
    missing = [queue_id for queue_id in queue_ids if queue_id not in found]
    if missing:
        raise CommandError(
            f"queue id not found: {', '.join(missing)}; list the queue with 'manage.py mailq --all'"
        )
    return queue_ids


def checked_domains(domains):
    """Return the --domain values normalised, or raise CommandError for one that no recipient can have.

    An invalid domain would select nothing, and an operator would read "held 0 recipients"
    as "nothing is queued there" instead of as a typo.
    """
    checked = []
    for domain in domains:
        try:
            if domain.startswith("["):
                validate_address_literal(domain)
            else:
                validate_domain_name(domain)
        except ValidationError as error:
            raise CommandError(f"invalid --domain: {'; '.join(error.messages)}") from None
        checked.append(normalize_domain(domain))
    return checked
