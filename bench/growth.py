"""Growth: how claiming due recipients and rendering the admin queue lists scale with the spool.

The script fills the spool step by step to each --sizes count of queued recipients, with
--recipients-per-message recipients per message. A --due-fraction share of them is due
now and the others are deferred up to an hour ahead. At each size the script times:
  claim         ``mailhub.delivery.claim.claim()`` of CLAIM_BATCH recipients, rolled back after
  admin messages, admin recipients
                a GET of the admin changelist by a logged-in superuser, through Django's test client

Each figure is the median of --runs timings at that size; the ratio column divides the
largest size's timings by the smallest size's, run by run. Index-bound queries stay
roughly flat; a full scan (a COUNT(*) or a sort without an index) grows with the spool.

    .venvs/django5/bin/python -m bench.growth [--database postgres] [--sizes 10000 100000 1000000]
"""
import random
import sys
import time
from datetime import timedelta

from .common import BenchmarkError, Figure, Report, base_parser, build_message, check_runs, ratio_figure
from .stack import MailhubStack

TABLE = "Time per operation by queued recipients, ms (median, min–max)"
RATIO_TABLE = "Largest size / smallest size in the same run (median, min–max)"
INSERT_BATCH = 2000
ADMIN_PAGES = {
    "admin messages": "/admin/mailhub/message/",
    "admin recipients": "/admin/mailhub/recipient/",
}


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10000, 100000, 1000000], help="queued recipient counts (default %(default)s)"
    )
    parser.add_argument("--recipients-per-message", type=int, default=5, help="default %(default)s")
    parser.add_argument("--due-fraction", type=float, default=0.1, help="share of recipients due now (default %(default)s)")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    check_runs(arguments)
    sizes = sorted(arguments.sizes)
    report = Report("growth", parameters=vars(arguments) | {"json": str(arguments.json)})

    timings = {}
    with MailhubStack(arguments.database, "growth", keep=arguments.keep) as stack:
        stack.migrate()
        stack.setup_django()
        client = logged_in_client()
        queued = 0
        for size in sizes:
            started = time.perf_counter()
            queued = fill_spool_to(queued, size, arguments)
            print(f"{size:,} queued recipients (filled in {time.perf_counter() - started:.1f} s)", flush=True)
            for operation, values in measure_size(client, arguments.runs).items():
                timings[(operation, size)] = values
                print(f"  {operation:17} {Figure(values).format(2)} ms", flush=True)

    record(report, timings, sizes)
    report.print_tables(digits=2)
    report.write_json(arguments.json)


def logged_in_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("bench", "bench@bench.test", None)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def fill_spool_to(queued, size, arguments):
    """Insert messages and recipients until ``size`` recipients are queued; return the new count."""
    from django.db import transaction
    from django.utils import timezone

    from mailhub.models import Message, Recipient

    raw = build_message(600, "sender@site.bench.test", "rcpt@remote.bench.test")
    per_message = arguments.recipients_per_message
    now = timezone.now()
    generator = random.Random(size)
    while queued < size:
        count = min(INSERT_BATCH, size - queued)
        message_count = -(-count // per_message)
        with transaction.atomic():
            messages = Message.objects.bulk_create(
                [build_spool_message(raw, now) for _ in range(message_count)], batch_size=500
            )
            recipients = [
                build_recipient(messages[index // per_message], queued + index, now, generator, arguments.due_fraction)
                for index in range(count)
            ]
            Recipient.objects.bulk_create(recipients, batch_size=500)
        queued += count
    return queued


def build_spool_message(raw, now):
    from mailhub.models import Message

    return Message(raw=raw, envelope_sender="sender@site.bench.test", source=Message.Source.BACKEND, size=len(raw), subject="growth", created_at=now)


def build_recipient(message, serial, now, generator, due_fraction):
    from mailhub.models import Recipient

    domain = f"d{serial % 50:02d}.remote.bench.test"
    if generator.random() < due_fraction:
        status, next_attempt_at = Recipient.Status.QUEUED, now
    else:
        status, next_attempt_at = Recipient.Status.DEFERRED, now + timedelta(seconds=generator.uniform(60, 3600))
    return Recipient(message=message, address=f"rcpt{serial}@{domain}", domain=domain, status=status, next_attempt_at=next_attempt_at)


def measure_size(client, runs):
    """Return {operation: [milliseconds per run]} at the spool's current size."""
    timings = {"claim": []}
    timings.update({name: [] for name in ADMIN_PAGES})
    for _ in range(runs):
        timings["claim"].append(time_claim())
        for name, url in ADMIN_PAGES.items():
            timings[name].append(time_admin_page(client, url))
    return timings


def time_claim():
    """Time one claim of CLAIM_BATCH due recipients; the transaction is rolled back, so the spool stays as it was."""
    from django.db import transaction

    from mailhub.delivery import claim

    with transaction.atomic():
        started = time.perf_counter()
        _, recipients = claim.claim()
        elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    if not recipients:
        raise BenchmarkError("claim() found no due recipients; raise --due-fraction")
    return elapsed * 1000


def time_admin_page(client, url):
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise BenchmarkError(f"GET {url} returned {response.status_code}, expected 200")
    return elapsed * 1000


def record(report, timings, sizes):
    for (operation, size), values in timings.items():
        report.add(TABLE, operation, f"{size:,}", Figure(values, "ms"))
    smallest, largest = sizes[0], sizes[-1]
    if smallest == largest:
        return
    for operation in dict.fromkeys(operation for operation, _ in timings):
        figure = ratio_figure(timings[(operation, largest)], timings[(operation, smallest)])
        report.add(RATIO_TABLE, operation, f"{largest:,} / {smallest:,}", figure)


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"growth benchmark failed: {error}")
