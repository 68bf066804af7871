"""Outbound delivery rate: messages/s from a full queue to an smtp-sink, mailhub beside Postfix.

mailhub: --messages messages are enqueued with ``mailhub.spool.enqueue`` while no worker
runs (MAILHUB_ROUTES sends every recipient domain to the sink), then one Celery worker
with 1, 2 or 4 prefork processes starts. Postfix: a private instance takes the same
number of messages from smtp-source onto its hold queue, then the queue is released
and flushed. Both sides are timed by the sink's own counter, from the first message it
receives to the last, so worker start-up and Postfix's release are left out. After each mailhub measurement the script checks in the spool that every recipient
of the batch is delivered.

--domains 20 spreads the recipients over 20 domains (each with its own route to the
same sink) to show connection reuse and per-destination concurrency at work.

    .venvs/django5/bin/python -m bench.outbound [--database postgres] [--messages 5000] [--workers 1 2 4] [--domains 1 20]
"""
import sys
import time

from .baselines import PostfixInstance, postfix_missing_reason
from .common import BenchmarkError, Figure, Report, base_parser, build_message, check_runs, ratio_figure, wait_until
from .load import SmtpSink, load_tools_missing_reason, run_smtp_source
from .stack import MailhubStack, delivery_available

SENDER = "sender@site.bench.test"
TABLE = "Outbound delivery rate to smtp-sink, messages/s (median, min–max)"
RATIO_TABLE = "Outbound ratios in the same run (median, min–max)"
FILL_SESSIONS = 10


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per measurement (default %(default)s)")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes (default %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker process counts (default %(default)s)")
    parser.add_argument("--domains", type=int, nargs="+", default=[1, 20], help="recipient domain counts (default %(default)s)")
    parser.add_argument(
        "--targets", nargs="+", choices=["postfix", "mailhub"], default=["postfix", "mailhub"], help="what to measure (default: both)"
    )
    return parser.parse_args()


def recipient_domains(count):
    return [f"d{index:02d}.bench.test" for index in range(1, count + 1)]


def main():
    arguments = parse_arguments()
    check_runs(arguments)
    reason = load_tools_missing_reason()
    if reason:
        raise SystemExit(f"Cannot run the outbound benchmark: {reason}")

    report = Report("outbound", parameters=vars(arguments) | {"json": str(arguments.json)})
    measure_postfix = "postfix" in arguments.targets and postfix_available(report)
    measure_mailhub = "mailhub" in arguments.targets and delivery_available()
    if "mailhub" in arguments.targets and not measure_mailhub:
        report.note("mailhub skipped: mailhub has no delivery tasks yet (mailhub/tasks.py)")

    rates = {}
    all_domains = recipient_domains(max(arguments.domains))
    with MailhubStack(arguments.database, "outbound", keep=arguments.keep) as stack:
        with SmtpSink(stack.workdir / "smtp-sink.log") as sink:
            stack.extra_env["MAILHUB_ROUTES"] = ",".join(f"{domain}=127.0.0.1:{sink.port}" for domain in all_domains)
            if measure_mailhub:
                stack.migrate()
                stack.setup_django()
            for run in range(arguments.runs):
                for domains in arguments.domains:
                    measure_run(run, domains, arguments, stack, sink, rates, measure_postfix, measure_mailhub, report)

    record_rates(report, rates, arguments)
    report.print_tables()
    report.write_json(arguments.json)


def postfix_available(report):
    reason = postfix_missing_reason()
    if reason:
        report.note(f"Postfix baseline skipped: {reason}")
        return False
    return True


def measure_run(run, domains, arguments, stack, sink, rates, measure_postfix, measure_mailhub, report):
    column = domain_label(domains)
    if measure_postfix:
        rate = postfix_relay_rate(sink, arguments.messages, arguments.size, recipient_domains(domains))
        rates.setdefault(("postfix", column), []).append(rate)
        print(f"run {run + 1}: postfix relay         {column:10} {rate:8.0f} messages/s", flush=True)
    if not measure_mailhub:
        return
    for workers in arguments.workers:
        rate = mailhub_delivery_rate(stack, sink, arguments.messages, arguments.size, recipient_domains(domains), workers, report)
        label = f"mailhub, {workers} worker" + ("" if workers == 1 else "s")
        rates.setdefault((label, column), []).append(rate)
        print(f"run {run + 1}: {label:22} {column:10} {rate:8.0f} messages/s", flush=True)


def domain_label(domains):
    return f"{domains} domain" + ("" if domains == 1 else "s")


def delivery_timeout(messages):
    return max(120, messages // 10)


def postfix_relay_rate(sink, messages, size, domains):
    """Fill a held Postfix queue, release it, and return messages/s as the sink counts them."""
    with PostfixInstance(relay_port=sink.port, hold=True) as postfix:
        fill_postfix(postfix, messages, size, domains)
        baseline = sink.messages()
        postfix.release()
        return sink_rate(sink, baseline, messages)


def fill_postfix(postfix, messages, size, domains):
    timeout = delivery_timeout(messages)
    for index, domain in enumerate(domains):
        share = messages // len(domains) + (1 if index < messages % len(domains) else 0)
        if share:
            run_smtp_source(postfix.port, FILL_SESSIONS, share, size, SENDER, f"rcpt@{domain}", timeout)
    # smtpd replied 250 to all of them, but cleanup may still be moving some to the hold queue.
    wait_until(lambda: postfix_settled(postfix), timeout, "Postfix to move the messages to its hold queue")


def postfix_settled(postfix):
    queue = postfix.queue_directory
    busy = sum(1 for name in ("incoming", "active", "maildrop") for path in (queue / name).rglob("*") if path.is_file())
    return busy == 0


def sink_rate(sink, baseline, messages):
    """Wait for ``messages`` more messages at the sink; return them per second from the first to the last."""
    timeout = delivery_timeout(messages)
    wait_until(lambda: sink.messages() > baseline, timeout, "the first message to reach smtp-sink", interval=0.005)
    first_seen = time.perf_counter()
    sink.wait_for_messages(baseline + messages, timeout)
    elapsed = time.perf_counter() - first_seen
    # The window opens at the first message, so it spans the other messages - 1.
    return max(messages - 1, 1) / elapsed if elapsed > 0 else float("inf")


def mailhub_delivery_rate(stack, sink, messages, size, domains, workers, report):
    """Enqueue a batch, start a worker with ``workers`` processes, return messages/s at the sink."""
    stack.purge_broker()
    first_id = fill_spool(messages, size, domains)
    baseline = sink.messages()
    worker = stack.start_worker(workers, name=f"worker-{workers}")
    try:
        rate = sink_rate(sink, baseline, messages)
        check_delivered(first_id, messages, report)
    finally:
        worker.stop()
    return rate


def fill_spool(messages, size, domains):
    """Enqueue ``messages`` messages round robin over the domains; return the first message's id."""
    from mailhub.models import Message
    from mailhub.spool import enqueue

    first_id = None
    for serial in range(messages):
        recipient = f"rcpt{serial}@{domains[serial % len(domains)]}"
        raw = build_message(size, SENDER, recipient, serial)
        message = enqueue(raw, SENDER, [recipient], source=Message.Source.BACKEND)
        first_id = first_id or message.pk
    return first_id


def check_delivered(first_id, messages, report):
    """Wait until the batch's recipients are final in the spool; note any that are not delivered."""
    from mailhub.models import Recipient

    batch = Recipient.objects.filter(message_id__gte=first_id)
    final = list(Recipient.FINAL_STATUSES)
    try:
        wait_until(lambda: batch.filter(status__in=final).count() >= messages, delivery_timeout(messages), "the spool to record every delivery", interval=0.2)
    except BenchmarkError as error:
        report.note(str(error))
    delivered = batch.filter(status=Recipient.Status.DELIVERED).count()
    if delivered != messages:
        report.note(f"the sink counted {messages} messages but the spool records {delivered} delivered recipients")


def record_rates(report, rates, arguments):
    for (label, column), values in rates.items():
        report.add(TABLE, label, column, Figure(values, "messages/s"))
    for workers in arguments.workers:
        label = f"mailhub, {workers} worker" + ("" if workers == 1 else "s")
        for domains in arguments.domains:
            column = domain_label(domains)
            if (label, column) in rates and ("postfix", column) in rates:
                report.add(RATIO_TABLE, f"{label} / postfix", column, ratio_figure(rates[(label, column)], rates[("postfix", column)]))


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"outbound benchmark failed: {error}")
