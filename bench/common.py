"""Figures, tables, JSON results and process helpers shared by every benchmark script.

A figure is the median of at least three runs with their min and max. A comparison is a
ratio computed run by run (both sides measured in the same run), then summarised the
same way, so a noisy moment on a shared machine hits both sides of a ratio alike.
"""
import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
LOOPBACK = "127.0.0.1"

# Every wait in the harness ends by itself; a script that hits one of these raises.
PORT_WAIT_SECONDS = 60
STOP_WAIT_SECONDS = 20


class BenchmarkError(RuntimeError):
    """A benchmark step failed; the message names the step and what to check."""


@dataclass
class Figure:
    """One measured quantity: every run's value and their median, min and max."""

    values: list
    unit: str = ""

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def minimum(self):
        return min(self.values)

    @property
    def maximum(self):
        return max(self.values)

    def as_dict(self):
        return {
            "unit": self.unit,
            "runs": self.values,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
        }

    def format(self, digits=0):
        return f"{self.median:,.{digits}f} ({self.minimum:,.{digits}f}–{self.maximum:,.{digits}f})"


def ratio_figure(numerators, denominators):
    """Return the run-by-run ratio of two equally long lists of measurements."""
    if len(numerators) != len(denominators):
        raise ValueError(f"ratio needs runs in pairs, got {len(numerators)} and {len(denominators)}")
    return Figure([a / b if b else float("inf") for a, b in zip(numerators, denominators)], "ratio")


def percentile(values, fraction):
    """Return the nearest-rank percentile (fraction 0.99 for p99) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Report:
    """The rows of one benchmark, printed as Markdown tables and written as JSON."""

    name: str
    parameters: dict
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    load_average_at_start: tuple = field(default_factory=os.getloadavg)

    def add(self, table, row, column, figure):
        """Record one figure under a table, a row label and a column label."""
        self.rows.append({"table": table, "row": row, "column": column, **figure.as_dict()})

    def note(self, text):
        """Record and print a remark such as a skipped baseline and its reason."""
        self.notes.append(text)
        print(f"NOTE: {text}", flush=True)

    def print_tables(self, digits=0):
        for table in dict.fromkeys(row["table"] for row in self.rows):
            print(f"\n{table}\n")
            print(markdown_table(self.rows_of(table), digits))
        print()

    def rows_of(self, table):
        return [row for row in self.rows if row["table"] == table]

    def write_json(self, path=None):
        """Write the figures with the machine, the versions and the command line; return the path."""
        if path is None:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            stamp = self.started_at.replace(":", "").replace("+0000", "Z")
            path = RESULTS_DIR / f"{self.name}-{stamp}.json"
        document = {
            "benchmark": self.name,
            "started_at": self.started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, "-m", f"bench.{self.name}", *sys.argv[1:]],
            "parameters": self.parameters,
            "machine": describe_machine() | {"load_average_at_start": self.load_average_at_start},
            "versions": describe_versions(),
            "notes": self.notes,
            "results": self.rows,
        }
        Path(path).write_text(json.dumps(document, indent=2) + "\n")
        print(f"Figures written to {path}")
        return Path(path)


def markdown_table(rows, digits=0):
    """Return rows as a Markdown table: one line per row label, one column per column label."""
    columns = list(dict.fromkeys(row["column"] for row in rows))
    labels = list(dict.fromkeys(row["row"] for row in rows))
    cells = {(row["row"], row["column"]): row for row in rows}
    unit = rows[0]["unit"] if rows else ""
    lines = [
        "| " + " | ".join([unit or "figure", *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label in labels:
        values = [format_cell(cells.get((label, column)), digits) for column in columns]
        lines.append("| " + " | ".join([label, *values]) + " |")
    return "\n".join(lines)


def format_cell(row, digits):
    if row is None:
        return "–"
    figure = Figure(row["runs"], row["unit"])
    return figure.format(2 if row["unit"] == "ratio" else digits)


def describe_machine():
    """Return the CPU, core count, memory and load average that the figures were taken on."""
    return {
        "platform": platform.platform(),
        "cpu": read_cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": read_memory_mb(),
        "load_average": os.getloadavg(),
    }


def read_cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def read_memory_mb():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def describe_versions():
    """Return the versions of Python, the libraries under test and Postfix where installed."""
    import sqlite3

    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for package in ("django", "aiosmtpd", "celery", "kombu", "psycopg", "redis"):
        versions[package] = package_version(package)
    versions["postfix"] = postfix_version()
    return versions


def package_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def postfix_version():
    if not shutil.which("postconf"):
        return None
    result = subprocess.run(
        ["postconf", "-h", "-d", "mail_version"], capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip() or None


def base_parser(description, runs=3):
    """Return an argument parser with the options that every benchmark script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help="runs per figure; figures are medians (default %(default)s)")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="spool database for mailhub: a fresh SQLite file, or a fresh PostgreSQL database "
        "(server from MAILHUB_BENCH_POSTGRES_URL) with Redis as the broker (MAILHUB_BENCH_REDIS_URL)",
    )
    parser.add_argument("--json", type=Path, default=None, help="JSON output file (default: bench/results/NAME-TIME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with logs and databases")
    return parser


def check_runs(arguments):
    if arguments.runs < 1:
        raise SystemExit("--runs must be at least 1")
    if arguments.runs < 3:
        print(f"NOTE: --runs {arguments.runs} is below 3; the medians are not meaningful figures.")


def free_port():
    """Return a TCP port on 127.0.0.1 that is free now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port, process=None, timeout=PORT_WAIT_SECONDS):
    """Wait until something accepts connections on 127.0.0.1:port; raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.raise_if_exited()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchmarkError(f"nothing listens on {LOOPBACK}:{port} after {timeout} s")


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns a true value and return that value; raise after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise BenchmarkError(f"timed out after {timeout} s waiting for {what}")


class ManagedProcess:
    """A child process in its own process group, with its output in a log file.

    stop() signals the whole group (celery's pool children included) and waits for it,
    so no benchmark leaves a server behind, even when a step raises.
    """

    def __init__(self, name, command, log_path, env=None, cwd=REPO_ROOT):
        self.name = name
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.process.pid

    def raise_if_exited(self):
        code = self.process.poll()
        if code is not None:
            raise BenchmarkError(
                f"{self.name} exited with status {code}; last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines=30):
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, sig=signal.SIGTERM):
        """Signal the process and wait; kill its group when it outlives STOP_WAIT_SECONDS.

        Only the main process gets ``sig``: a Celery worker then finishes its pool's
        current tasks (warm shutdown), which a signal to every pool child would cut short.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_WAIT_SECONDS)
        # Pool children may outlive their parent for a moment; the group id is still ours.
        signal_group(self.process.pid, signal.SIGKILL)
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def python_module_command(module, *arguments):
    return [sys.executable, "-m", module, *arguments]


def read_peak_rss_kb(pid):
    """Return the peak resident set size (VmHWM) of a process in KiB, or 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(pid):
    """Return pid and the pids of all its descendants, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def build_message(size, sender, recipient, serial=0):
    """Return a plain text message of about ``size`` bytes with CRLF line endings."""
    head = (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: mailhub benchmark message {serial}\r\n"
        f"Message-ID: <bench-{serial}-{time.time_ns()}@bench.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode("ascii")
    line = b"The quick brown fox jumps over the lazy dog, 0123456789 abcdefghij.\r\n"
    body_size = max(0, size - len(head))
    body = (line * (body_size // len(line) + 1))[:body_size]
    if body and not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    return head + body
