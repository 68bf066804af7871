"""What the application feels: the latency of ``send_mail()`` with SpoolBackend and with Django's SMTP backend.

SpoolBackend commits each message to a fresh spool (SQLite or PostgreSQL) and queues the
delivery hint. No worker runs, so nothing else competes with the caller. Django's SMTP
backend talks to an aiosmtpd server in its own process that waits --reply-delay seconds
(default 0.05) before each reply, greeting included, as a remote relay's round trips do.
Both use a new connection per ``send_mail()`` call, as ``send_mail()`` does by default.

The SMTP side is slow by design (about 7 replies per message), so by default it sends
fewer messages than the spool side (--smtp-messages) and its time for --messages
messages is extrapolated from its mean; pass --smtp-messages equal to --messages to measure it.

    .venvs/django5/bin/python -m bench.application [--database postgres] [--messages 1000] [--smtp-messages 50]
"""
import statistics
import sys
import time

from .baselines import start_aiosmtpd_sink
from .common import BenchmarkError, Figure, Report, base_parser, check_runs, percentile, ratio_figure
from .stack import MailhubStack

SPOOL_BACKEND = "mailhub.backends.SpoolBackend"
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
SENDER = "app@site.bench.test"
RECIPIENT = "user@remote.bench.test"
BODY = "Hello,\n\nyour order has shipped.\n\n" + "This line pads the body to a typical size.\n" * 20
LATENCY_TABLE = "send_mail() latency in ms (median of runs, min–max)"
TOTAL_TABLE = "Time to hand over the messages, s (median of runs, min–max)"
RATIO_TABLE = "SMTP backend / SpoolBackend in the same run (median, min–max)"
SMTP_TIMEOUT = 30


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="send_mail() calls per run with SpoolBackend (default %(default)s)")
    parser.add_argument(
        "--smtp-messages", type=int, default=50, help="send_mail() calls per run with the SMTP backend (default %(default)s)"
    )
    parser.add_argument("--reply-delay", type=float, default=0.05, help="seconds the SMTP server waits before each reply")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    check_runs(arguments)
    report = Report("application", parameters=vars(arguments) | {"json": str(arguments.json)})

    with MailhubStack(arguments.database, "application", keep=arguments.keep) as stack:
        stack.migrate()
        stack.setup_django()
        server, port = start_aiosmtpd_sink(stack.workdir / "slow-server.log", reply_delay=arguments.reply_delay, name="slow-server")
        try:
            spool_runs, smtp_runs = measure(arguments, port)
        finally:
            server.stop()

    record(report, arguments, spool_runs, smtp_runs)
    report.print_tables(digits=2)
    report.write_json(arguments.json)


def measure(arguments, port):
    """Return per-run latency lists (seconds) for SpoolBackend and for the SMTP backend."""
    spool_runs, smtp_runs = [], []
    send_through(spool_connection, 1)
    send_through(lambda: smtp_connection(port), 1)
    for run in range(arguments.runs):
        spool_runs.append(send_through(spool_connection, arguments.messages))
        smtp_runs.append(send_through(lambda: smtp_connection(port), arguments.smtp_messages))
        print(
            f"run {run + 1}: SpoolBackend median {statistics.median(spool_runs[-1]) * 1000:.2f} ms, "
            f"SMTP backend median {statistics.median(smtp_runs[-1]) * 1000:.1f} ms",
            flush=True,
        )
    return spool_runs, smtp_runs


def spool_connection():
    from django.core.mail import get_connection

    return get_connection(SPOOL_BACKEND)


def smtp_connection(port):
    from django.core.mail import get_connection

    return get_connection(SMTP_BACKEND, host="127.0.0.1", port=port, timeout=SMTP_TIMEOUT, use_tls=False)


def send_through(make_connection, count):
    """Call send_mail() ``count`` times, each with a new backend; return each call's seconds."""
    from django.core.mail import send_mail

    latencies = []
    for serial in range(count):
        started = time.perf_counter()
        sent = send_mail(f"Order {serial} shipped", BODY, SENDER, [RECIPIENT], connection=make_connection())
        latencies.append(time.perf_counter() - started)
        if sent != 1:
            raise BenchmarkError(f"send_mail() returned {sent} for message {serial}, expected 1")
    return latencies


def record(report, arguments, spool_runs, smtp_runs):
    spool_label = f"SpoolBackend ({arguments.database})"
    smtp_label = f"Django SMTP backend, {arguments.reply_delay * 1000:.0f} ms per reply"
    spool_medians = [statistics.median(run) * 1000 for run in spool_runs]
    smtp_medians = [statistics.median(run) * 1000 for run in smtp_runs]

    report.add(LATENCY_TABLE, spool_label, "median", Figure(spool_medians, "ms"))
    report.add(LATENCY_TABLE, spool_label, "p99", Figure([percentile(run, 0.99) * 1000 for run in spool_runs], "ms"))
    report.add(LATENCY_TABLE, smtp_label, "median", Figure(smtp_medians, "ms"))
    report.add(LATENCY_TABLE, smtp_label, "p99", Figure([percentile(run, 0.99) * 1000 for run in smtp_runs], "ms"))

    column = f"{arguments.messages:,} messages"
    report.add(TOTAL_TABLE, spool_label, column, Figure([sum(run) for run in spool_runs], "s"))
    smtp_totals = [statistics.mean(run) * arguments.messages for run in smtp_runs]
    if arguments.smtp_messages != arguments.messages:
        smtp_label += f" (estimated from {arguments.smtp_messages} messages)"
    report.add(TOTAL_TABLE, smtp_label, column, Figure(smtp_totals, "s"))

    report.add(RATIO_TABLE, "median latency", "SMTP / spool", ratio_figure(smtp_medians, spool_medians))


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"application benchmark failed: {error}")
