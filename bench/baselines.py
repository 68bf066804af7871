"""The baselines mailhub is measured beside: a private Postfix instance and aiosmtpd sinks.

Postfix runs as its own instance (``postfix -c DIR``) with its configuration, queue and
data folders under a temporary folder and one smtpd on 127.0.0.1, so the system's
Postfix configuration is never touched. It either discards what it accepts or relays
everything to one host:port (an smtp-sink).

Each aiosmtpd server runs in its own process, started as
``python -m bench.baselines sink --port PORT [--sqlite FILE] [--reply-delay SECONDS]``.
Without options it is a bare sink that stores nothing. With --sqlite it inserts and
commits each message in SQLite (WAL) before the 250. With --reply-delay it waits before
each reply, like a remote relay's round trip.
"""
import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from .common import LOOPBACK, BenchmarkError, ManagedProcess, free_port, python_module_command, wait_for_port

POSTFIX_COMMAND_TIMEOUT = 120
APT_TIMEOUT = 600
POSTFIX_HOSTNAME = "postfix.bench.test"

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_missing_reason():
    """Return why a private Postfix instance cannot run here, or None when it can.

    As root on Debian, a missing postfix package is installed first with apt-get.
    """
    if not postfix_installed():
        install_postfix()
    if not postfix_installed():
        return "postfix is not installed: run apt-get install postfix (Debian) to add the Postfix baseline"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (postfix start runs as root, then drops to the postfix user)"
    return None


def postfix_installed():
    return bool(shutil.which("postfix")) or os.access("/usr/sbin/postfix", os.X_OK)


def install_postfix():
    """Install Debian's postfix package when running as root with apt-get; print what happened."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    print("postfix is not installed; installing it with apt-get for the Postfix baseline", flush=True)
    # NOTE: not run on the machine these scripts were written on, which had postfix already.
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "postfix"], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT
    )
    if result.returncode != 0:
        print(f"apt-get install postfix failed (status {result.returncode}): {result.stderr.strip()}", flush=True)


class PostfixInstance:
    """A private Postfix instance on 127.0.0.1:port, discarding mail or relaying it to relay_port.

    With ``hold=True`` smtpd puts every accepted message on the hold queue, so the queue
    can be filled first and released with release().
    """

    def __init__(self, relay_port=None, hold=False, transport_map=None):
        reason = postfix_missing_reason()
        if reason:
            raise BenchmarkError(reason)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailhub-bench-postfix-"))
        # Postfix daemons run as the postfix user and must reach their folders.
        self.root.chmod(0o755)
        self.config_directory = self.root / "conf"
        self.queue_directory = self.root / "queue"
        self.data_directory = self.root / "data"
        self.maillog = self.root / "maillog"
        self.relay_port = relay_port
        self.hold = hold
        self.transport_map = transport_map or {}
        self.started = False
        self.write_configuration()

    def write_configuration(self):
        for folder in (self.config_directory, self.queue_directory, self.data_directory):
            folder.mkdir()
        shutil.chown(self.data_directory, user="postfix")
        (self.config_directory / "main.cf").write_text(self.main_cf())
        (self.config_directory / "master.cf").write_text(MASTER_CF.format(listen=f"{LOOPBACK}:{self.port}"))

    def main_cf(self):
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue_directory}",
            f"data_directory = {self.data_directory}",
            "command_directory = /usr/sbin",
            "daemon_directory = /usr/lib/postfix/sbin",
            "shlib_directory = /usr/lib/postfix",
            "meta_directory = /etc/postfix",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"syslog_name = postfix-bench-{self.port}",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.root}",
            f"myhostname = {POSTFIX_HOSTNAME}",
            "mydomain = bench.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            "alias_maps =",
            "alias_database =",
            "biff = no",
            "smtp_tls_security_level = none",
            "smtpd_tls_security_level = none",
            "smtp_dns_support_level = disabled",
            "local_transport = discard",
        ]
        if self.relay_port is None:
            lines += ["default_transport = discard", "relay_transport = discard"]
        else:
            lines += [
                "default_transport = smtp",
                "relay_transport = smtp",
                f"relayhost = [{LOOPBACK}]:{self.relay_port}",
            ]
        if self.transport_map:
            entries = ", ".join(f"{domain}={nexthop}" for domain, nexthop in self.transport_map.items())
            lines.append(f"transport_maps = inline:{{{entries}}}")
        if self.hold:
            # A HOLD action rather than defer_transports: releasing then needs no reload, and
            # a flush sent while the old qmgr still defers would push the mail back by minutes.
            lines.append("smtpd_client_restrictions = check_client_access static:HOLD")
        return "\n".join(lines) + "\n"

    def postfix(self, *arguments):
        return self.run("postfix", "-c", str(self.config_directory), *arguments)

    def run(self, *command):
        result = subprocess.run(command, capture_output=True, text=True, timeout=POSTFIX_COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise BenchmarkError(
                f"{' '.join(command)} failed (status {result.returncode}): {result.stderr.strip()}\n"
                f"last lines of {self.maillog}:\n{self.maillog_tail()}"
            )
        return result.stdout

    def maillog_tail(self, lines=20):
        if not self.maillog.exists():
            return "(no maillog yet)"
        return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])

    def start(self):
        self.postfix("check")
        # Marked started first, so stop() also runs after a start that failed half way.
        self.started = True
        self.postfix("start")
        wait_for_port(self.port)

    def release(self):
        """Let the held messages go: move them to the deferred queue and flush it."""
        self.run("postsuper", "-c", str(self.config_directory), "-H", "ALL")
        self.run("postqueue", "-c", str(self.config_directory), "-f")

    def queued_messages(self):
        """Return how many messages are in any of this instance's queues."""
        count = 0
        for name in ("incoming", "active", "deferred", "hold", "maildrop"):
            folder = self.queue_directory / name
            if folder.exists():
                count += sum(len(files) for _, _, files in os.walk(folder))
        return count

    def stop(self):
        if self.started:
            try:
                self.postfix("stop")
            except (BenchmarkError, subprocess.TimeoutExpired):
                subprocess.run(["postfix", "-c", str(self.config_directory), "abort"], timeout=POSTFIX_COMMAND_TIMEOUT)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


def start_aiosmtpd_sink(log_path, sqlite_path=None, reply_delay=0.0, name="aiosmtpd-sink"):
    """Start an aiosmtpd sink in its own process; return (process, port)."""
    port = free_port()
    arguments = ["sink", "--port", str(port), "--reply-delay", str(reply_delay)]
    if sqlite_path is not None:
        arguments += ["--sqlite", str(sqlite_path)]
    process = ManagedProcess(name, python_module_command("bench.baselines", *arguments), log_path)
    wait_for_port(port, process)
    return process, port


class SinkHandler:
    """Accept every message; with a SQLite connection, insert and commit it before the 250."""

    def __init__(self, connection=None):
        self.connection = connection
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):
        if self.connection is not None:
            self.connection.execute(
                "INSERT INTO message (envelope_sender, recipients, raw, received_at) VALUES (?, ?, ?, ?)",
                (envelope.mail_from, ",".join(envelope.rcpt_tos), envelope.original_content, time.time()),
            )
            self.connection.commit()
        self.messages += 1
        return "250 2.0.0 Ok: queued"


def open_sink_database(path):
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, envelope_sender TEXT, "
        "recipients TEXT, raw BLOB, received_at REAL)"
    )
    connection.commit()
    return connection


def build_smtp_class(reply_delay):
    from aiosmtpd.smtp import SMTP

    if not reply_delay:
        return SMTP

    class DelayedReplySMTP(SMTP):
        """An SMTP server that waits before each reply, greeting included."""

        async def push(self, status):
            # A multi-line reply is pushed line by line; only its last line ("250 ...",
            # not "250-...") starts the wait, so each reply waits once.
            text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
            if text[3:4] != "-":
                await asyncio.sleep(reply_delay)
            await super().push(status)

    return DelayedReplySMTP


async def serve_sink(port, sqlite_path, reply_delay):
    connection = open_sink_database(sqlite_path) if sqlite_path else None
    handler = SinkHandler(connection)
    smtp_class = build_smtp_class(reply_delay)
    loop = asyncio.get_running_loop()

    # hostname= avoids aiosmtpd looking up the machine's name on every connection.
    server = await loop.create_server(
        lambda: smtp_class(handler, hostname="sink.bench.test", enable_SMTPUTF8=True),
        host=LOOPBACK,
        port=port,
        backlog=1024,
    )
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    async with server:
        await stopped.wait()
    print(f"sink stopped after {handler.messages} messages", flush=True)


def main():
    parser = argparse.ArgumentParser(description="Run an aiosmtpd sink on 127.0.0.1 for the benchmarks.")
    subcommands = parser.add_subparsers(dest="command", required=True)
    sink = subcommands.add_parser("sink", help="accept and discard (or store in SQLite) every message")
    sink.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    sink.add_argument("--sqlite", type=Path, default=None, help="SQLite file to insert and commit each message into")
    sink.add_argument("--reply-delay", type=float, default=0.0, help="seconds to wait before each reply")
    arguments = parser.parse_args()
    asyncio.run(serve_sink(arguments.port, arguments.sqlite, arguments.reply_delay))


if __name__ == "__main__":
    main()
