"""Inbound accept rate: messages/s that each server acknowledges, loaded by smtp-source.

Targets, all on 127.0.0.1 and all measured in every run, one after the other:
  postfix        a private Postfix instance that discards what it accepts
  aiosmtpd-sink  a bare aiosmtpd sink that stores nothing
  sqlite-sink    aiosmtpd plus one SQLite insert and commit per message (WAL)
  mailhub        ``manage.py runmailserver --mx``, which commits every message before its 250

Each measurement sends --messages messages of --size bytes, one connection per message,
over 1, 10 and 50 parallel sessions. After each mailhub measurement the script counts
the spool's messages, so an acknowledged message that was not stored shows up as a note.

    .venvs/django5/bin/python -m bench.inbound [--database postgres] [--messages 5000] [--runs 3]
"""
import sys

from .baselines import PostfixInstance, postfix_missing_reason, start_aiosmtpd_sink
from .common import BenchmarkError, Report, base_parser, check_runs, ratio_figure, Figure
from .load import load_tools_missing_reason, run_smtp_source
from .stack import MailhubStack, runmailserver_available

TARGETS = ["postfix", "aiosmtpd-sink", "sqlite-sink", "mailhub"]
SENDER = "sender@load.bench.test"
LOCAL_DOMAIN = "bench.test"
RECIPIENT = f"rcpt@{LOCAL_DOMAIN}"
TABLE = "Inbound accept rate, messages/s (median, min–max)"
RATIO_TABLE = "Inbound ratios in the same run (median, min–max)"


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per measurement (default %(default)s)")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes (default %(default)s)")
    parser.add_argument(
        "--sessions", type=int, nargs="+", default=[1, 10, 50], help="parallel sessions (default %(default)s)"
    )
    parser.add_argument(
        "--targets", nargs="+", choices=TARGETS, default=TARGETS, help="servers to measure (default: all)"
    )
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    check_runs(arguments)
    reason = load_tools_missing_reason()
    if reason:
        raise SystemExit(f"Cannot run the inbound benchmark: {reason}")

    report = Report("inbound", parameters=vars(arguments) | {"json": str(arguments.json)})
    targets = select_targets(arguments.targets, report)
    with MailhubStack(arguments.database, "inbound", keep=arguments.keep) as stack:
        servers = {}
        try:
            servers = start_targets(targets, stack)
            rates = measure(servers, arguments, stack, report)
        finally:
            stop_targets(servers)

    record_rates(report, rates, arguments)
    report.print_tables()
    report.write_json(arguments.json)


def select_targets(requested, report):
    targets = list(requested)
    if "postfix" in targets:
        reason = postfix_missing_reason()
        if reason:
            report.note(f"Postfix baseline skipped: {reason}")
            targets.remove("postfix")
    if "mailhub" in targets and not runmailserver_available():
        report.note("mailhub skipped: mailhub has no runmailserver command yet")
        targets.remove("mailhub")
    return targets


def start_targets(targets, stack):
    """Start every target; return {name: (stopper, port)}."""
    servers = {}
    for target in targets:
        servers[target] = start_target(target, stack)
    return servers


def start_target(target, stack):
    if target == "postfix":
        postfix = PostfixInstance()
        try:
            postfix.start()
        except BaseException:
            postfix.stop()
            raise
        return postfix, postfix.port
    if target == "aiosmtpd-sink":
        process, port = start_aiosmtpd_sink(stack.workdir / "aiosmtpd-sink.log")
        return process, port
    if target == "sqlite-sink":
        process, port = start_aiosmtpd_sink(
            stack.workdir / "sqlite-sink.log", sqlite_path=stack.workdir / "sink.sqlite3", name="sqlite-sink"
        )
        return process, port
    stack.migrate()
    stack.setup_django()
    create_local_recipient()
    process, port = stack.start_runmailserver()
    return process, port


def create_local_recipient():
    from mailhub.models import Domain, Mailbox

    domain, _ = Domain.objects.get_or_create(name=LOCAL_DOMAIN)
    Mailbox.objects.get_or_create(domain=domain, local_part="rcpt")


def stop_targets(servers):
    for stopper, _ in servers.values():
        stopper.stop()


def measure(servers, arguments, stack, report):
    """Return {(target, sessions): [rate per run]} with every target measured in every run."""
    rates = {(target, sessions): [] for target in servers for sessions in arguments.sessions}
    timeout = max(120, arguments.messages // 20)
    for run in range(arguments.runs):
        for sessions in arguments.sessions:
            for target, (_, port) in servers.items():
                stored_before = count_spool_messages() if target == "mailhub" else 0
                elapsed = run_smtp_source(
                    port, sessions, arguments.messages, arguments.size, SENDER, RECIPIENT, timeout
                )
                rate = arguments.messages / elapsed
                rates[(target, sessions)].append(rate)
                print(f"run {run + 1}: {target:14} {sessions:3} sessions {rate:8.0f} messages/s", flush=True)
                if target == "mailhub":
                    check_stored(count_spool_messages() - stored_before, arguments.messages, report)
    return rates


def count_spool_messages():
    from mailhub.models import Message

    return Message.objects.count()


def check_stored(stored, acknowledged, report):
    if stored != acknowledged:
        report.note(f"mailhub acknowledged {acknowledged} messages but the spool holds {stored} new ones")


def record_rates(report, rates, arguments):
    for (target, sessions), values in rates.items():
        report.add(TABLE, target, session_label(sessions), Figure(values, "messages/s"))
    for target in ("mailhub", "aiosmtpd-sink", "sqlite-sink"):
        for baseline in ("postfix", "aiosmtpd-sink"):
            if target == baseline:
                continue
            for sessions in arguments.sessions:
                if (target, sessions) in rates and (baseline, sessions) in rates:
                    figure = ratio_figure(rates[(target, sessions)], rates[(baseline, sessions)])
                    report.add(RATIO_TABLE, f"{target} / {baseline}", session_label(sessions), figure)


def session_label(sessions):
    return f"{sessions} session" + ("" if sessions == 1 else "s")


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"inbound benchmark failed: {error}")
