"""The README's run command and five-minute walkthrough, as a new user would run them.

``scripts/run`` starts on a fresh folder with no database or broker server: SQLite and
the filesystem broker live in the folder named by MAILHUB_VAR_DIR.
"""
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-passw0rd"
START_SECONDS = 240
DELIVERY_SECONDS = 120

pytestmark = [pytest.mark.slow, pytest.mark.worker]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout, describe):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {describe}")


def accepts_connections(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def count_rows(database, table):
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        try:
            return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
        except sqlite3.OperationalError:
            return 0


@pytest.fixture
def walkthrough_env(tmp_path, smtp_peer):
    peer = smtp_peer(hostname="mx.remote.test")
    ports = {name: free_port() for name in ("mx", "submission", "submissions")}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE") and not name.startswith("MAILHUB_")
    }
    env.update(
        {
            "MAILHUB_VAR_DIR": str(tmp_path / "var"),
            "MAILHUB_MX_LISTEN": f"127.0.0.1:{ports['mx']}",
            "MAILHUB_SUBMISSION_LISTEN": f"127.0.0.1:{ports['submission']}",
            "MAILHUB_SUBMISSIONS_LISTEN": f"127.0.0.1:{ports['submissions']}",
            "MAILHUB_ROUTES": f"remote.test=127.0.0.1:{peer.port}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env, ports, peer, tmp_path / "var" / "mailhub.sqlite3"


@pytest.fixture
def running_system(walkthrough_env, tmp_path):
    env, ports, peer, database = walkthrough_env
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", "scripts/run"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(
            lambda: process.poll() is None and all(accepts_connections(port) for port in ports.values()),
            START_SECONDS,
            "scripts/run to open its three listeners",
        )
        wait_until(lambda: b" ready." in log_path.read_bytes(), START_SECONDS, "the Celery worker to be ready")
        yield env, ports, peer, database, log_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def manage(env, *arguments):
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="the README walkthrough uses swaks; apt-get install swaks")
def test_readme_walkthrough(running_system):
    env, ports, peer, database, log_path = running_system
    manage(env, "maildomain", "add", "example.test")
    manage(env, "mailbox", "add", "alice@example.test", "--password", PASSWORD)
    manage(env, "mailalias", "add", "postmaster@example.test", "alice@example.test")

    swaks = subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{ports['submission']}", "--tls", "--auth", "PLAIN",
            "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
            "--from", "alice@example.test", "--to", "alice@example.test", "--header", "Subject: hello",
        ],
        capture_output=True,
        timeout=60,
    )
    assert swaks.returncode == 0, swaks.stdout.decode(errors="replace")[-2000:]

    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as client:
        client.starttls()
        client.login("alice@example.test", PASSWORD)
        client.sendmail(
            "alice@example.test",
            ["alice@example.test"],
            b"Subject: hello\r\nFrom: alice@example.test\r\n\r\nHi\r\n",
        )
    with smtplib.SMTP("127.0.0.1", ports["mx"], timeout=30) as client:
        client.sendmail("someone@remote.test", ["postmaster@example.test"], b"Subject: to the postmaster\r\n\r\nHi\r\n")
    wait_until(lambda: count_rows(database, "mailhub_mailboxmessage") == 3, DELIVERY_SECONDS, "three messages in alice's mailbox")
    assert "alice@example.test" in manage(env, "mailbox", "list")

    manage(
        env,
        "shell",
        "-c",
        "from django.core.mail import send_mail; send_mail('Hi', 'Body', 'alice@example.test', ['bob@remote.test'])",
    )
    wait_until(lambda: len(peer.messages) == 1, DELIVERY_SECONDS, "the message at the remote test server")
    assert peer.messages[0].recipients == ["bob@remote.test"]
    assert b"Subject: Hi" in peer.messages[0].content
    wait_until(lambda: "empty" in manage(env, "mailq").lower(), DELIVERY_SECONDS, "an empty queue")
