"""Delivery to Postfix's smtp-sink, a real MTA test server (skipped where it is not installed)."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mailhub.delivery.client import open_session
from mailhub.delivery.types import RemoteHost

from .conftest import envelope, route_to

SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
START_SECONDS = 10


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_listener(port, process):
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"smtp-sink did not listen on 127.0.0.1:{port} within {START_SECONDS} s")


@pytest.fixture
def smtp_sink():
    """Run smtp-sink on 127.0.0.1, writing each message to a file in a temporary folder (-d)."""
    if SMTP_SINK is None:
        pytest.skip("Postfix's smtp-sink is not installed (Debian package postfix)")

    # smtp-sink started as root drops to the -u user, who must be able to write the dumps.
    folder = Path(tempfile.mkdtemp(prefix="mailhub-smtp-sink-"))
    os.chmod(folder, 0o777)
    port = free_port()
    # -d: dump every transaction to a file named by the template; 10: the listen backlog.
    command = [SMTP_SINK, "-u", "nobody", "-d", str(folder / "%M."), f"127.0.0.1:{port}", "10"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_listener(port, process)
        yield port, folder
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_delivery_to_smtp_sink(smtp_sink):
    port, folder = smtp_sink

    raw = b"Subject: to smtp-sink\r\n\r\nfirst line\n.\r\nsecond line\r\n"
    with open_session(route_to(RemoteHost("sink.test", "127.0.0.1", port))) as session:
        replies = session.send(envelope("one@remote.test", "two@remote.test", raw=raw))

    assert [reply.code for reply in replies] == [250, 250]
    assert "PIPELINING" in session.extensions

    deadline = time.monotonic() + START_SECONDS
    while not list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    dumps = list(folder.iterdir())
    assert len(dumps) == 1
    dumped = dumps[0].read_bytes()
    assert b"X-Helo-Args: mailhub.test\n" in dumped
    assert b"X-Mail-Args: <alice@sender.test>\n" in dumped
    assert b"X-Rcpt-Args: <one@remote.test>\n" in dumped
    assert b"X-Rcpt-Args: <two@remote.test>\n" in dumped
    # smtp-sink writes the un-stuffed message with LF line ends and one extra LF at the end.
    assert dumped.endswith(b"\nSubject: to smtp-sink\n\nfirst line\n.\nsecond line\n\n")
