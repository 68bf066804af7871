"""Memory: peak RSS of runmailserver holding many SMTP sessions, and of a worker delivering a full queue.

Listener: each run starts a fresh ``runmailserver --mx`` and, beside it, a bare aiosmtpd
sink. On each server it opens --sessions connections, each sends EHLO, MAIL, RCPT and one
message and then stays open, and the script reads the peak RSS (VmHWM) while all are held.

Worker: each run enqueues --deliveries messages routed to an smtp-sink, starts one Celery
worker with --worker-concurrency prefork processes, and reads the peak RSS (VmHWM) of
every process in the worker's tree every 0.2 s until the sink has every message. The
figure is the sum of those peaks. Peaks between two samples are still counted, because
the kernel keeps VmHWM; pages that the pool children share with their parent are counted
once per process, so the sum is an upper bound.

    .venvs/django5/bin/python -m bench.memory [--database postgres] [--sessions 300] [--deliveries 10000]
"""
import asyncio
import sys
import time

from .baselines import start_aiosmtpd_sink
from .common import (
    LOOPBACK,
    BenchmarkError,
    Figure,
    Report,
    base_parser,
    build_message,
    check_runs,
    process_tree,
    ratio_figure,
    read_peak_rss_kb,
)
from .inbound import RECIPIENT, create_local_recipient
from .load import SmtpSink, load_tools_missing_reason
from .outbound import delivery_timeout, fill_spool
from .stack import MailhubStack, delivery_available, runmailserver_available

SENDER = "sender@load.bench.test"
REMOTE_DOMAIN = "remote.bench.test"
SESSION_TABLE = "Listener peak RSS with the sessions held, MB (median, min–max)"
WORKER_TABLE = "Worker peak RSS while delivering, MB (median, min–max)"
RATIO_TABLE = "Memory ratios in the same run (median, min–max)"
SESSION_TIMEOUT = 120
SAMPLE_INTERVAL = 0.2


def parse_arguments():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300, help="concurrent SMTP sessions to hold (default %(default)s)")
    parser.add_argument("--deliveries", type=int, default=10000, help="messages the worker delivers per run (default %(default)s)")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="prefork processes of the worker (default %(default)s)")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes (default %(default)s)")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    check_runs(arguments)
    report = Report("memory", parameters=vars(arguments) | {"json": str(arguments.json)})

    with MailhubStack(arguments.database, "memory", keep=arguments.keep) as stack:
        stack.migrate()
        stack.setup_django()
        create_local_recipient()
        measure_listeners(stack, arguments, report)
        measure_worker(stack, arguments, report)

    report.print_tables(digits=1)
    report.write_json(arguments.json)


def measure_listeners(stack, arguments, report):
    column = f"{arguments.sessions} sessions"
    sink_peaks, mailhub_peaks = [], []
    for run in range(arguments.runs):
        process, port = start_aiosmtpd_sink(stack.workdir / f"aiosmtpd-sink-{run}.log")
        sink_peaks.append(held_sessions_peak(process, port, arguments.sessions, arguments.size))
        print(f"run {run + 1}: aiosmtpd-sink {sink_peaks[-1]:.1f} MB with {column}", flush=True)
        if runmailserver_available():
            process, port = stack.start_runmailserver(name=f"runmailserver-{run}")
            mailhub_peaks.append(held_sessions_peak(process, port, arguments.sessions, arguments.size))
            print(f"run {run + 1}: runmailserver {mailhub_peaks[-1]:.1f} MB with {column}", flush=True)

    report.add(SESSION_TABLE, "aiosmtpd-sink", column, Figure(sink_peaks, "MB"))
    if not mailhub_peaks:
        report.note("runmailserver skipped: mailhub has no runmailserver command yet")
        return
    report.add(SESSION_TABLE, "runmailserver (MX)", column, Figure(mailhub_peaks, "MB"))
    report.add(RATIO_TABLE, "runmailserver / aiosmtpd-sink", column, ratio_figure(mailhub_peaks, sink_peaks))


def held_sessions_peak(process, port, sessions, size):
    """Hold ``sessions`` sessions on the server, then stop it; return its peak RSS in MB."""
    try:
        asyncio.run(asyncio.wait_for(hold_sessions(port, sessions, size, process.pid), SESSION_TIMEOUT))
        return sum(read_peak_rss_kb(pid) for pid in process_tree(process.pid)) / 1024
    except TimeoutError as error:
        raise BenchmarkError(f"{sessions} sessions on port {port} did not finish within {SESSION_TIMEOUT} s") from error
    finally:
        process.stop()


async def hold_sessions(port, sessions, size, server_pid):
    """Open the sessions, send one message on each, and keep all of them open together."""
    raw = build_message(size, SENDER, RECIPIENT)
    ready = asyncio.Event()
    connected = []
    tasks = [asyncio.create_task(run_session(port, raw, ready, connected, sessions)) for _ in range(sessions)]
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter:
                # A session ended before all were held, and its exception gives the reason.
                task.result()
                raise BenchmarkError("a session ended before all sessions were held")
        # Every session has its message accepted and is still open: the peak is now.
        await asyncio.sleep(0.5)
    finally:
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)


async def run_session(port, raw, ready, connected, sessions):
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await expect(reader, "220")
        for command, code in (("EHLO loadgen.bench.test", "250"), (f"MAIL FROM:<{SENDER}>", "250"), (f"RCPT TO:<{RECIPIENT}>", "250"), ("DATA", "354")):
            writer.write(command.encode() + b"\r\n")
            await expect(reader, code)
        writer.write(raw + b".\r\n")
        await expect(reader, "250")
        connected.append(writer)
        if len(connected) == sessions:
            ready.set()
        await asyncio.sleep(SESSION_TIMEOUT)
    finally:
        writer.close()


async def expect(reader, code):
    """Read one (possibly multi-line) reply; raise unless it starts with ``code``."""
    while True:
        line = await reader.readline()
        if not line:
            raise BenchmarkError(f"the server closed the connection while {code} was expected")
        if line[3:4] != b"-":
            break
    if not line.startswith(code.encode()):
        raise BenchmarkError(f"expected {code}, got {line.decode(errors='replace').strip()}")


def measure_worker(stack, arguments, report):
    if not delivery_available():
        report.note("worker skipped: mailhub has no delivery tasks yet")
        return
    reason = load_tools_missing_reason()
    if reason:
        report.note(f"worker skipped: {reason}")
        return
    column = f"{arguments.deliveries:,} messages"
    label = f"worker, {arguments.worker_concurrency} process" + ("" if arguments.worker_concurrency == 1 else "es")
    peaks = []
    with SmtpSink(stack.workdir / "smtp-sink.log") as sink:
        stack.extra_env["MAILHUB_ROUTES"] = f"*=127.0.0.1:{sink.port}"
        for run in range(arguments.runs):
            try:
                peaks.append(worker_peak(stack, sink, arguments))
            except BenchmarkError as error:
                # The listener figures are already taken, so keep them and record why the worker has none.
                report.note(f"worker measurement of run {run + 1} failed: {error}")
                break
            print(f"run {run + 1}: {label} {peaks[-1]:.1f} MB delivering {column}", flush=True)
    if peaks:
        report.add(WORKER_TABLE, label, column, Figure(peaks, "MB"))


def worker_peak(stack, sink, arguments):
    """Deliver a batch with a new worker; return the sum of its processes' peak RSS in MB."""
    stack.purge_broker()
    fill_spool(arguments.deliveries, arguments.size, [REMOTE_DOMAIN])
    target = sink.messages() + arguments.deliveries
    worker = stack.start_worker(arguments.worker_concurrency, name="memory-worker")
    deadline = time.monotonic() + delivery_timeout(arguments.deliveries)
    # A pool child that exits takes its VmHWM with it, so each process keeps the largest value read.
    peaks_kb = {}
    try:
        while True:
            record_peaks(peaks_kb, worker.pid)
            if sink.messages() >= target:
                break
            worker.raise_if_exited()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the worker delivered {sink.messages()} of {target} messages before the timeout")
            time.sleep(SAMPLE_INTERVAL)
    finally:
        worker.stop()
    return sum(peaks_kb.values()) / 1024


def record_peaks(peaks_kb, root_pid):
    for pid in process_tree(root_pid):
        peaks_kb[pid] = max(peaks_kb.get(pid, 0), read_peak_rss_kb(pid))


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"memory benchmark failed: {error}")
