"""`manage.py runmailserver` as a process: it binds the listeners, stores mail, and stops
its Celery worker on SIGTERM."""
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailhub.models import Message
from tests.support.celery_worker import worker_environment

from .conftest import message_text

pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90


def wait_for_log(log_path, pattern, process):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if process.poll() is not None:
            raise AssertionError(f"runmailserver exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not logged in {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")


def start_runmailserver(tmp_path, *options):
    """Start runmailserver on the test database; MAILHUB_* settings of this process reach it."""
    log_path = tmp_path / "runmailserver.log"
    env = worker_environment({"MAILHUB_VAR_DIR": str(tmp_path)})
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by the caller through the process
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runmailserver", "--mx", "127.0.0.1:0", "--submission", "", *options],
        cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return process, log_path, log_file


def stop(process, log_file):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    log_file.close()


def test_runmailserver_accepts_mail_and_stops(directory, tmp_path, settings):
    settings.MAILHUB_TLS_DIR = str(tmp_path / "tls")
    process, log_path, log_file = start_runmailserver(tmp_path)
    try:
        port = int(wait_for_log(log_path, r"listener mx 127\.0\.0\.1:(\d+) started", process).group(1))
        with smtplib.SMTP("127.0.0.1", port, timeout=30, local_hostname="client.test") as client:
            client.sendmail("x@remote.test", ["bob@local.test"], message_text("x@remote.test", "bob@local.test"))
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(60)
    finally:
        stop(process, log_file)

    log = log_path.read_text()
    assert returncode == 0, log[-3000:]
    assert "generated a self-signed TLS certificate" in log
    assert "listener submission" not in log
    assert Message.objects.get().recipients.get().address == "bob@local.test"
    assert re.search(r"queue_id=\w+ client=127\.0\.0\.1 from=<x@remote\.test> to=<bob@local\.test> reply=250", log)


@pytest.mark.worker
@pytest.mark.slow
def test_runmailserver_worker_stopped_on_sigterm(directory, tmp_path, settings):
    settings.MAILHUB_CELERY_APP = "project"
    settings.MAILHUB_TLS_DIR = str(tmp_path / "tls")
    process, log_path, log_file = start_runmailserver(tmp_path, "--worker")
    try:
        worker_pid = int(wait_for_log(log_path, r"Celery worker started with pid (\d+)", process).group(1))
        wait_for_log(log_path, r" ready\.", process)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(90)
    finally:
        stop(process, log_file)

    assert returncode == 0, log_path.read_text()[-3000:]
    assert "the Celery worker stopped" in log_path.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def test_runmailserver_rejects_bad_address(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "runmailserver", "--mx", "nonsense"],
        cwd=REPO_ROOT, env=worker_environment({"MAILHUB_VAR_DIR": str(tmp_path)}),
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "invalid mx listen address 'nonsense'" in result.stderr


@pytest.mark.worker
@pytest.mark.slow
def test_runmailserver_restarts_dead_worker(directory, tmp_path, settings):
    settings.MAILHUB_CELERY_APP = "project"
    settings.MAILHUB_TLS_DIR = str(tmp_path / "tls")
    process, log_path, log_file = start_runmailserver(tmp_path, "--worker")
    try:
        first_pid = int(wait_for_log(log_path, r"Celery worker started with pid (\d+)", process).group(1))
        wait_for_log(log_path, r" ready\.", process)
        os.kill(first_pid, signal.SIGKILL)
        wait_for_log(log_path, rf"worker \(pid {first_pid}\) exited with status -9; restarting it", process)
        restarted = wait_for_log(log_path, rf"Celery worker started with pid (?!{first_pid}\b)(\d+)", process)
        second_pid = int(restarted.group(1))
        os.kill(second_pid, 0)
    finally:
        stop(process, log_file)

    assert second_pid != first_pid
    assert leftover_processes({first_pid, process.pid}) == []


def leftover_processes(group_ids):
    """Return the pids of live processes in the given process groups or with those parents."""
    result = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=True)
    leftovers = []
    for line in result.stdout.splitlines():
        pid, ppid, pgid, stat = line.split(None, 3)
        if stat.startswith("Z"):
            continue
        if int(pgid) in group_ids or int(ppid) in group_ids:
            leftovers.append(int(pid))
    return leftovers
