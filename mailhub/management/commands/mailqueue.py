"""``manage.py mailqueue``: act on queued mail, like Postfix's postqueue and postsuper.

Each subcommand selects mail with the same options as ``mailq`` and calls one operation
of mailhub.queue. With ``--dry-run`` it prints what the operation would touch and
changes nothing.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from ... import conf, queue
from ...delivery.claim import lease_free
from ...models import Message, Recipient
from ..queue_listing import plural
from ..queue_selection import add_selection_arguments, has_selection, select_messages, select_recipients

PENDING_OR_HELD = (*Recipient.PENDING_STATUSES, Recipient.Status.HELD)


@dataclass(frozen=True)
class RecipientAction:
    """An operation on recipients: which statuses it acts on and how the command reports it."""

    operation: str
    statuses: tuple
    # Whether the operation leaves recipients alone while a worker holds their lease.
    skips_leased: bool
    verb: str
    past_tense: str
    help: str
    selection_required: bool = True


# The statuses mirror the ones each mailhub.queue function filters on, so that a dry run
# lists the recipients the operation would change.
RECIPIENT_ACTIONS = {
    "flush": RecipientAction(
        operation="retry_now",
        statuses=Recipient.PENDING_STATUSES,
        skips_leased=True,
        verb="flush",
        past_tense="flushed",
        help="Retry queued and deferred mail now (postqueue -f); without a selection, the whole queue.",
        selection_required=False,
    ),
    "hold": RecipientAction(
        operation="hold",
        statuses=Recipient.PENDING_STATUSES,
        skips_leased=True,
        verb="hold",
        past_tense="held",
        help="Hold queued and deferred recipients: no delivery until released (postsuper -h).",
    ),
    "release": RecipientAction(
        operation="release",
        statuses=(Recipient.Status.HELD,),
        skips_leased=False,
        verb="release",
        past_tense="released",
        help="Release held recipients back into the queue, due now (postsuper -H).",
    ),
    "requeue": RecipientAction(
        operation="requeue",
        statuses=PENDING_OR_HELD,
        skips_leased=True,
        verb="requeue",
        past_tense="requeued",
        help="Put queued, deferred and held recipients back as queued and due now (postsuper -r).",
    ),
    "bounce": RecipientAction(
        operation="bounce_now",
        statuses=PENDING_OR_HELD,
        skips_leased=True,
        verb="bounce",
        past_tense="bounced",
        help="Bounce queued, deferred and held recipients now and send the sender a DSN.",
    ),
}

SELECTION_MISSING = (
    "no mail selected; give queue ids, --domain or --status, or pass --all to act on the whole queue"
)


class Command(BaseCommand):
    help = (
        "Act on queued mail: flush, hold, release, requeue, bounce or delete it by queue id, "
        "recipient domain or status, or purge old delivered and bounced mail. "
        "Run 'manage.py mailqueue ACTION --help' for the options of each action."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        for name, action in RECIPIENT_ACTIONS.items():
            subparser = actions.add_parser(name, help=action.help, description=action.help)
            add_selection_arguments(subparser)
            add_all_argument(subparser)
            add_dry_run_argument(subparser)
            if name == "bounce":
                subparser.add_argument(
                    "--reason",
                    default="bounced by the postmaster",
                    help="Text of the 550 5.0.0 reply that the DSN reports to the sender.",
                )

        delete_help = (
            "Delete whole messages, with all their recipients, that have a recipient matching "
            "the selection (postsuper -d). No DSN is sent."
        )
        delete = actions.add_parser("delete", help=delete_help, description=delete_help)
        add_selection_arguments(delete)
        add_all_argument(delete)
        add_dry_run_argument(delete)

        purge_help = "Delete messages whose recipients are all delivered or bounced, older than --days."
        purge = actions.add_parser("purge", help=purge_help, description=purge_help)
        purge.add_argument(
            "--days",
            type=int,
            default=None,
            help="Age in days after which finished messages are deleted "
            "(default: the MAILHUB_PURGE_AFTER_DAYS setting, 7 unless set).",
        )
        add_dry_run_argument(purge)

    def handle(self, *args, action, **options):
        if action in RECIPIENT_ACTIONS:
            self.run_recipient_action(action, RECIPIENT_ACTIONS[action], options)
        elif action == "delete":
            self.run_delete(options)
        else:
            self.run_purge(options)

    def run_recipient_action(self, name, action, options):
        check_selection(options, action.selection_required)
        selected = select_recipients(options)
        recipients = selected.filter(status__in=action.statuses)
        # Counted before the operation, which changes the statuses.
        skipped = describe_skipped(action, selected, named=bool(options["queue_ids"]))

        if options["dry_run"]:
            self.preview_recipients(action, recipients, skipped)
            return

        if name == "bounce":
            count = queue.bounce_now(recipients, options["reason"])
        else:
            count = getattr(queue, action.operation)(recipients)
        self.stdout.write(f"{action.past_tense} {plural(count, 'recipient')}{skipped}")

    def preview_recipients(self, action, recipients, skipped_text):
        rows = list(recipients.select_related("message").order_by("message__created_at", "id"))
        free = set(recipients.filter(lease_free(timezone.now())).values_list("id", flat=True))
        skipped = {row.id for row in rows if action.skips_leased and row.id not in free}

        self.stdout.write(f"dry run: would {action.verb} {plural(len(rows) - len(skipped), 'recipient')}{skipped_text}")
        for row in rows:
            note = "  (skipped: a worker is delivering it)" if row.id in skipped else ""
            self.stdout.write(f"{row.message.queue_id}  {row.address}  {row.status}{note}")

    def run_delete(self, options):
        check_selection(options, required=True)
        messages = select_messages(options)

        if options["dry_run"]:
            self.preview_delete(messages)
            return

        count = queue.delete_messages(messages)
        self.stdout.write(f"deleted {plural(count, 'message')}")

    def preview_delete(self, messages):
        now = timezone.now()
        busy = set(
            Recipient.objects.filter(message__in=messages, lease_expires_at__gt=now).values_list("message_id", flat=True)
        )
        rows = list(messages.order_by("created_at", "id"))

        self.stdout.write(f"dry run: would delete {plural(len(rows) - len(busy), 'message')}")
        for message in rows:
            note = "  (skipped: a worker is delivering it)" if message.id in busy else ""
            self.stdout.write(self.describe_message(message) + note)

    def run_purge(self, options):
        days = conf.get("PURGE_AFTER_DAYS") if options["days"] is None else options["days"]
        if days < 0:
            raise CommandError(f"--days must be 0 or more, not {days}")

        if options["dry_run"]:
            self.preview_purge(days)
            return

        count = queue.purge(days)
        self.stdout.write(f"purged {plural(count, 'message')} older than {plural(days, 'day')}")

    def preview_purge(self, days):
        rows = list(purgeable_messages(days).order_by("created_at", "id"))

        self.stdout.write(f"dry run: would purge {plural(len(rows), 'message')} older than {plural(days, 'day')}")
        for message in rows:
            self.stdout.write(self.describe_message(message))

    def describe_message(self, message):
        created = timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M:%S")
        statuses = ", ".join(
            f"{address} {status}" for address, status in message.recipients.values_list("address", "status")
        )
        return f"{message.queue_id}  {message.size} bytes  {created}  from <{message.envelope_sender}>  {statuses}"


def add_all_argument(parser):
    parser.add_argument(
        "--all",
        action="store_true",
        help="Act on the whole queue when no queue id, --domain or --status is given.",
    )


def add_dry_run_argument(parser):
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Print what would be touched and change nothing.",
    )


def check_selection(options, required):
    if required and not has_selection(options) and not options["all"]:
        raise CommandError(SELECTION_MISSING)


def describe_skipped(action, selected, named):
    """Return "; skipped ..." naming the selected recipients that ``action`` leaves alone, or "".

    Without named queue ids, delivered and bounced recipients are left out of the count,
    because --all or --domain would otherwise report every finished recipient they match.
    """
    out_of_scope = selected.exclude(status__in=action.statuses)
    if not named:
        out_of_scope = out_of_scope.exclude(status__in=Recipient.FINAL_STATUSES)
    by_status = list(out_of_scope.order_by("status").values_list("status").annotate(total=Count("id")))
    parts = [f"{total} {status}" for status, total in by_status]
    total = sum(total for _, total in by_status)

    if action.skips_leased:
        leased = selected.filter(status__in=action.statuses).exclude(lease_free(timezone.now())).count()
        if leased:
            parts.append(f"{leased} being delivered by a worker")
            total += leased

    if not parts:
        return ""
    text = f"; skipped {plural(total, 'recipient')}: {', '.join(parts)}"
    # Only a flush needs the hint: hold skips held mail because it is already held.
    if action.operation == "retry_now" and any(status == Recipient.Status.HELD for status, _ in by_status):
        text += " (release held mail first with 'manage.py mailqueue release QUEUE_ID')"
    return text


def purgeable_messages(days):
    """Return the messages that mailhub.queue.purge(days) deletes, for the dry run.

    TODO: this repeats purge()'s selection; mailhub.queue could expose it so the two
    cannot drift apart.
    """
    cutoff = timezone.now() - timedelta(days=days)
    unfinished = Recipient.objects.exclude(status__in=Recipient.FINAL_STATUSES).values("message_id")
    return Message.objects.filter(created_at__lt=cutoff).exclude(id__in=unfinished)
