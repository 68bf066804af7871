"""Postfix's load tools: smtp-source as the load generator and smtp-sink as the outbound sink.

Both come with Debian's postfix package. smtp-sink counts with ``-c`` (it prints
``sess=N quit=N mesg=N`` on every change), not with ``-M``: ``-M N`` exits on the Nth
message before its 250, so the sender defers that message.
"""
import os
import re
import shutil
import subprocess
import threading
import time

from .baselines import install_postfix
from .common import LOOPBACK, BenchmarkError, ManagedProcess, free_port, wait_for_port

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
SINK_BACKLOG = 1024
MESSAGE_COUNTER = re.compile(rb"mesg=(\d+)")


def find_tool(name, default_path):
    """Return the path of a Postfix tool, or None when the postfix package is not installed."""
    if os.access(default_path, os.X_OK):
        return default_path
    return shutil.which(name)


def load_tools_missing_reason():
    """Return why smtp-source/smtp-sink cannot run here, or None when both are installed.

    As root on Debian, a missing postfix package (which contains both) is installed first.
    """
    if not (find_tool("smtp-source", SMTP_SOURCE) and find_tool("smtp-sink", SMTP_SINK)):
        install_postfix()
    missing = [name for name, path in (("smtp-source", SMTP_SOURCE), ("smtp-sink", SMTP_SINK)) if not find_tool(name, path)]
    if missing:
        return (
            f"{' and '.join(missing)} not found: install Debian's postfix package "
            "(apt-get install postfix) to get Postfix's load tools"
        )
    return None


def run_smtp_source(port, sessions, messages, size, sender, recipient, timeout, recipients_per_message=1):
    """Send ``messages`` messages of ``size`` bytes over ``sessions`` parallel sessions, one per connection.

    Returns the wall-clock seconds from the first connection to the last QUIT. Raises
    BenchmarkError when smtp-source reports an error (a 4xx or 5xx reply or a lost connection).
    """
    command = [
        find_tool("smtp-source", SMTP_SOURCE),
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        "-r", str(recipients_per_message),
        "-M", "loadgen.bench.test",
        "-f", sender,
        "-t", recipient,
        f"{LOOPBACK}:{port}",
    ]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"smtp-source did not finish {messages} messages within {timeout} s") from error
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise BenchmarkError(f"smtp-source against port {port} failed (status {result.returncode}): {output}")
    return elapsed


class SmtpSink:
    """An smtp-sink process on 127.0.0.1 that accepts and discards, counting messages."""

    def __init__(self, log_path, name="smtp-sink"):
        self.port = free_port()
        self.count = 0
        self.lock = threading.Lock()
        command = [find_tool("smtp-sink", SMTP_SINK), "-c"]
        if os.geteuid() == 0:
            # smtp-sink drops root privileges after it binds; it needs a user for that.
            command += ["-u", "postfix"]
        command += [f"{LOOPBACK}:{self.port}", str(SINK_BACKLOG)]
        self.process = ManagedProcess(name, command, log_path)
        self.reader = None
        self.start_counting()
        wait_for_port(self.port, self.process)

    def start_counting(self):
        # ManagedProcess writes output to a file; the counter is read back from that file.
        self.reader = threading.Thread(target=self.follow_counter, daemon=True)
        self.reader.start()

    def follow_counter(self):
        pending = b""
        with open(self.process.log_path, "rb") as log:
            while self.process.process.poll() is None:
                chunk = log.read()
                if not chunk:
                    time.sleep(0.02)
                    continue
                # smtp-sink ends each counter line with CR; a line cut by the read waits for its end.
                complete, _, pending = (pending + chunk).rpartition(b"\r")
                found = MESSAGE_COUNTER.findall(complete)
                if found:
                    with self.lock:
                        self.count = int(found[-1])

    def messages(self):
        with self.lock:
            return self.count

    def wait_for_messages(self, total, timeout):
        """Wait until the sink has counted ``total`` messages; return the time it took."""
        started = time.perf_counter()
        deadline = started + timeout
        while self.messages() < total:
            self.process.raise_if_exited()
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"smtp-sink counted {self.messages()} of {total} messages after {timeout} s")
            time.sleep(0.01)
        return time.perf_counter() - started

    def stop(self):
        self.process.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
