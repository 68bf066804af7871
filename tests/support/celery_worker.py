"""Fixtures that start real Celery worker processes on the test run's database and broker.

Usage::

    @pytest.mark.django_db(transaction=True)
    def test_delivery(celery_worker_factory, settings):
        settings.MAILHUB_ROUTES = {"remote.test": f"127.0.0.1:{port}"}
        worker = celery_worker_factory()          # started and ready
        ...
        worker.kill()                             # SIGKILL, as a crash would

Each worker runs ``python -m celery -A project worker`` with the settings module
tests.support.worker_settings. It connects to the per-run test database, whose name
exists only once pytest-django has created it (hence the ``transaction=True`` mark),
and to the per-run broker folder or Redis queue. It gets every ``MAILHUB_*`` setting of
the test process at the moment it starts, so ``settings.MAILHUB_ROUTES = ...`` before
the start reaches the worker. Later changes do not.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 90
STOP_TIMEOUT = 15


class WorkerStartError(RuntimeError):
    """A worker process exited or did not report ready in time."""


def database_url():
    """Return a DATABASE_URL for the test database that pytest-django created."""
    from django.db import connection

    settings_dict = connection.settings_dict
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    schemes = {"django.db.backends.postgresql": "postgres", "django.db.backends.mysql": "mysql"}
    if engine not in schemes:
        raise WorkerStartError(f"no DATABASE_URL scheme known for the database engine {engine}")
    credentials = quote(settings_dict.get("USER") or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    at = "@" if credentials else ""
    return f"{schemes[engine]}://{credentials}{at}{host}{port}/{quote(settings_dict['NAME'], safe='')}"


def mailhub_settings():
    """Return the test process's MAILHUB_* settings that JSON can carry to the worker."""
    from django.conf import settings

    values = {}
    for name in dir(settings):
        if not name.startswith("MAILHUB_"):
            continue
        value = getattr(settings, name)
        try:
            json.dumps(value)
        except TypeError:
            continue
        values[name] = value
    return values


def worker_environment(extra_env):
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.support.worker_settings",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MAILHUB_WORKER_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "MAILHUB_WORKER_BROKER_FOLDER": str(getattr(settings, "TEST_BROKER_FOLDER", "")),
            "MAILHUB_WORKER_SETTINGS": json.dumps(mailhub_settings()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({name: str(value) for name, value in (extra_env or {}).items()})
    return env


class WorkerProcess:
    """A Celery worker in its own process group, so its pool children stop with it."""

    def __init__(self, name, command, env, log_path):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.process.pid

    def log_text(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerStartError(f"worker {self.name} exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            if " ready." in self.log_text():
                return
            time.sleep(0.2)
        raise WorkerStartError(f"worker {self.name} not ready after {timeout} s:\n{self.log_text()[-4000:]}")

    def signal_group(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self):
        """Kill the worker and its pool processes with SIGKILL, as a crash or OOM kill would."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self):
        """Stop the worker: SIGTERM (warm shutdown), then SIGKILL if it does not exit."""
        if self.process.poll() is None:
            # The main process alone gets SIGTERM, so it can stop its pool children itself.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)
        # Pool children of a killed parent may still be alive in the group.
        self.signal_group(signal.SIGKILL)
        self.log_file.close()


@pytest.fixture
def celery_worker_factory(tmp_path):
    """Return ``start(pool="prefork", concurrency=2, env=None, name=None) -> WorkerProcess``.

    The worker is ready when ``start`` returns; every worker stops at teardown.
    """
    from django.conf import settings

    workers = []

    def start(pool="prefork", concurrency=2, env=None, name=None):
        name = name or f"worker{len(workers) + 1}"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "-Q",
            settings.CELERY_TASK_DEFAULT_QUEUE,
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        worker = WorkerProcess(name, command, worker_environment(env), tmp_path / f"{name}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start

    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory):
    """One ready worker with the prefork pool and two processes."""
    return celery_worker_factory()
