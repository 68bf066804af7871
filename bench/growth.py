"""Growth: how claiming due recipients and rendering the admin queue lists scale with the spool.

The script fills the spool step by step to each --sizes count of queued recipients, with
--recipients-per-message recipients per message. A --due-fraction share of them fell due
within the last hour and the others are deferred up to an hour ahead. At each size the
script times:
  claim         ``mailhub.delivery.claim.claim()`` of CLAIM_BATCH recipients, rolled back after
  admin ...     a GET of each page in ADMIN_PAGES by a logged-in superuser, through Django's
                test client: the message and recipient lists, each also filtered by status,
                and the queue summary

Each figure is the median of --runs timings at that size, taken after one untimed round.
The ratio table divides the largest size's timings by the smallest size's, run by run.
Index-bound queries stay roughly flat; a full scan (a COUNT(*) or a sort without an
index) grows with the spool. --explain prints the database's plan of every query.

    .venvs/django5/bin/python -m bench.growth [--database postgres] [--sizes 10000 100000 1000000] [--explain]
"""
import random
import sys
import time
from datetime import timedelta

from .common import BenchmarkError, Figure, Report, base_parser, build_message, check_runs, ratio_figure
from .stack import MailhubStack

TABLE = "Time per operation by queued recipients, ms (median, min–max)"
RATIO_TABLE = "Largest size / smallest size in the same run (median, min–max)"
INSERT_BATCH = 20000
ADMIN_PAGES = {
    "admin messages": "/admin/mailhub/message/",
    "admin recipients": "/admin/mailhub/recipient/",
    "admin deferred messages": "/admin/mailhub/message/?status=deferred",
    "admin queued recipients": "/admin/mailhub/recipient/?status=queued",
    "admin queue summary": "/admin/mailhub/message/summary/",
}


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10000, 100000, 1000000], help="queued recipient counts (default %(default)s)"
    )
    parser.add_argument("--recipients-per-message", type=int, default=5, help="default %(default)s")
    parser.add_argument("--due-fraction", type=float, default=0.1, help="share of recipients due now (default %(default)s)")
    parser.add_argument(
        "--explain", action="store_true", help="print the database's plan of every query that each operation runs, at each size"
    )
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
        skip_worker_ping()
        client = logged_in_client()
        queued = 0
        for size in sizes:
            started = time.perf_counter()
            queued = fill_spool_to(queued, size, arguments)
            print(f"{size:,} queued recipients (filled in {time.perf_counter() - started:.1f} s)", flush=True)
            for operation, values in measure_size(client, arguments.runs).items():
                timings[(operation, size)] = values
                print(f"  {operation:23} {Figure(values).format(2)} ms", flush=True)
            if arguments.explain:
                explain_operations(client)

    record(report, timings, sizes)
    report.print_tables(digits=2)
    report.write_json(arguments.json)


def skip_worker_ping():
    """Turn off the queue summary's wait for Celery workers, because none run here and only the page's queries are timed."""
    from django.conf import settings

    settings.MAILHUB_ADMIN_WORKER_PING_TIMEOUT = 0


def logged_in_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("bench", "bench@bench.test", None)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def fill_spool_to(queued, size, arguments):
    """Insert messages and recipients until ``size`` recipients are queued, and return the new count.

    The rows go in with the database's own bulk path (COPY on PostgreSQL, executemany on
    SQLite) in batches of INSERT_BATCH recipients. A million recipients took about 35 s
    on the 2-core machine of docs/benchmarks.md.
    """
    from django.db import connection, transaction

    from mailhub.models import Message, Recipient

    per_message = arguments.recipients_per_message
    filler = SpoolFiller(arguments.due_fraction, random.Random(size))
    next_message_id = (Message.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    while queued < size:
        count = min(INSERT_BATCH, size - queued)
        message_count = -(-count // per_message)
        message_ids = range(next_message_id, next_message_id + message_count)
        messages = [filler.message_row(message_id) for message_id in message_ids]
        recipients = [filler.recipient_row(message_ids[index // per_message], queued + index) for index in range(count)]
        with transaction.atomic(), connection.cursor() as cursor:
            insert_rows(cursor, Message, filler.message_columns, messages)
            insert_rows(cursor, Recipient, filler.recipient_columns, recipients)
        next_message_id += message_count
        queued += count

    reset_sequences(Message, Recipient)
    if connection.vendor == "postgresql":
        vacuum_tables(Message, Recipient)
    return queued


class SpoolFiller:
    """Rows of the spool tables as lists in the columns' order, with realistic timestamps.

    Messages arrived over the last day, and every row has a timestamp of its own, as mail
    that trickles in has. Equal timestamps would turn every index on them into one long run
    of ties. A --due-fraction share of the recipients fell due within the last hour, and the
    others are deferred up to an hour ahead.
    """

    def __init__(self, due_fraction, generator):
        from django.db import connection
        from django.utils import timezone

        from mailhub.models import Message, Recipient

        self.due_fraction = due_fraction
        self.generator = generator
        self.now = timezone.now()
        self.raw = build_message(600, "sender@site.bench.test", "rcpt@remote.bench.test")
        self.adapt_datetime = connection.ops.adapt_datetimefield_value
        self.message_columns, self.message_template = column_template(
            Message(raw=self.raw, envelope_sender="sender@site.bench.test", source=Message.Source.BACKEND, size=len(self.raw), subject="growth")
        )
        # The database numbers the recipients. Message ids are chosen here, so that recipients can name them.
        self.recipient_columns, self.recipient_template = column_template(Recipient(message_id=0), exclude="id")

    def message_row(self, message_id):
        created_at = self.now - timedelta(seconds=self.generator.uniform(0, 86400))
        return self.fill(self.message_template, self.message_columns, id=message_id, queue_id=f"G{message_id:011d}", created_at=self.adapt_datetime(created_at))

    def recipient_row(self, message_id, serial):
        from mailhub.models import Recipient

        domain = f"d{serial % 50:02d}.remote.bench.test"
        if self.generator.random() < self.due_fraction:
            status, offset = Recipient.Status.QUEUED, -self.generator.uniform(0, 3600)
        else:
            status, offset = Recipient.Status.DEFERRED, self.generator.uniform(60, 3600)
        return self.fill(
            self.recipient_template,
            self.recipient_columns,
            message_id=message_id,
            address=f"rcpt{serial}@{domain}",
            domain=domain,
            status=str(status),
            next_attempt_at=self.adapt_datetime(self.now + timedelta(seconds=offset)),
            updated_at=self.adapt_datetime(self.now),
        )

    @staticmethod
    def fill(template, columns, **values):
        row = list(template)
        for column, value in values.items():
            row[columns.index(column)] = value
        return row


def column_template(instance, exclude=None):
    """Return the model's column names and the instance's values prepared for the database."""
    from django.db import connection

    fields = [field for field in instance._meta.concrete_fields if field.column != exclude]
    columns = [field.column for field in fields]
    values = [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]
    return columns, values


def insert_rows(cursor, model, columns, rows):
    table = model._meta.db_table
    if cursor.db.vendor == "postgresql":
        with cursor.cursor.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        return
    placeholders = ", ".join(["%s"] * len(columns))
    cursor.executemany(f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({placeholders})', rows)


def reset_sequences(*models):
    """Move PostgreSQL's id sequences past the ids that the filler chose itself."""
    from django.core.management.color import no_style
    from django.db import connection

    statements = connection.ops.sequence_reset_sql(no_style(), models)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def vacuum_tables(*models):
    """Do on PostgreSQL what autovacuum would do after such a load, before the timings start.

    Otherwise autovacuum starts on the new rows during the timings and competes with
    them, and the planner has no statistics. SQLite gets no ANALYZE: Django never runs
    one, so a real SQLite spool plans without statistics, and so does this one.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')


def measure_size(client, runs):
    """Return {operation: [milliseconds per run]} at the spool's current size.

    One untimed round goes first, so the first size does not pay for loading templates
    and warming caches.
    """
    timings = {"claim": []}
    timings.update({name: [] for name in ADMIN_PAGES})
    time_claim()
    for url in ADMIN_PAGES.values():
        time_admin_page(client, url)
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


def explain_operations(client):
    """Print the plan of every query that the claim and each admin page run."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from mailhub.delivery import claim

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        claim.claim()
        transaction.set_rollback(True)
    print_plans("claim", captured.captured_queries)
    for name, url in ADMIN_PAGES.items():
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        print_plans(name, captured.captured_queries)


def print_plans(operation, queries):
    from django.db import connection, transaction

    print(f"\n  plans of {operation}:")
    for query in queries:
        sql = query["sql"]
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")) or "django_session" in sql:
            continue
        prefix = "EXPLAIN (ANALYZE, BUFFERS)" if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN"
        # EXPLAIN ANALYZE runs the statement, so an UPDATE's changes are rolled back.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"{prefix} {sql}")
            plan = [" ".join(str(column) for column in row) for row in cursor.fetchall()]
            transaction.set_rollback(True)
        print(f"    {sql[:300]}")
        for line in plan:
            print(f"      {line}")
    print(flush=True)


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
