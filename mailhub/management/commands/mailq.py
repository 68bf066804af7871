"""``manage.py mailq``: list the mail queue the way Postfix's mailq does."""
from django.core.management.base import BaseCommand

from ...models import Recipient
from ..queue_listing import listed_messages, write_json, write_text
from ..queue_selection import add_selection_arguments, has_selection, select_messages, select_recipients


class Command(BaseCommand):
    help = (
        "List queued mail: queue id, size in bytes, arrival time and envelope sender of each "
        "message, then each recipient with its status and last reply. By default only "
        "recipients that are not yet delivered or bounced are shown, except for messages named "
        "by queue id, which are shown with all their recipients. A '!' after the queue id "
        "marks held mail, a '*' mail that a worker is delivering."
    )

    def add_arguments(self, parser):
        add_selection_arguments(parser)
        parser.add_argument(
            "--all",
            action="store_true",
            help="Also list delivered and bounced recipients, and messages that have only those.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Write one JSON object per message and line instead of the text listing.",
        )

    def handle(self, *args, **options):
        recipients = self.shown_recipients(options)
        messages = listed_messages(select_messages(options, recipients), recipients)

        if options["json"]:
            write_json(messages, self.stdout)
        elif has_selection(options):
            write_text(messages, self.stdout, empty_text="No queued mail matches the selection; add --all to include delivered and bounced mail")
        else:
            write_text(messages, self.stdout)

    def shown_recipients(self, options):
        recipients = Recipient.objects.all()
        # A message named by queue id is shown with all its recipients, because the operator
        # asking about it must see that it was delivered or bounced, not an empty queue.
        if not options["all"] and not options["status"] and not options["queue_ids"]:
            recipients = recipients.exclude(status__in=Recipient.FINAL_STATUSES)
        return select_recipients(options, recipients)
