"""The mailhub side of a benchmark: a fresh spool database, the broker and mailhub's processes.

Every run gets a temporary folder with a new SQLite file (or a new PostgreSQL database
and its own Redis queue), migrates it, and starts ``runmailserver`` and Celery workers as
subprocesses with the same environment. close() stops them and drops the database.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import LOOPBACK, REPO_ROOT, BenchmarkError, ManagedProcess, free_port, wait_for_port

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MIGRATE_TIMEOUT = 300


def postgres_server_url():
    return os.environ.get("MAILHUB_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def redis_url():
    return os.environ.get("MAILHUB_BENCH_REDIS_URL", DEFAULT_REDIS_URL)


def runmailserver_available():
    """Return whether mailhub has the runmailserver command yet."""
    return (REPO_ROOT / "mailhub" / "management" / "commands" / "runmailserver.py").exists()


def delivery_available():
    """Return whether mailhub has the Celery delivery task yet."""
    return (REPO_ROOT / "mailhub" / "tasks.py").exists()


class MailhubStack:
    """A fresh spool database with its broker, and the mailhub processes started on it."""

    def __init__(self, database, label, keep=False, extra_env=None):
        self.database = database
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mailhub-bench-{label}-"))
        self.run_id = f"{label}-{os.getpid()}"
        self.database_name = f"mailhub_bench_{label}_{os.getpid()}".replace("-", "_")
        self.processes = []
        self.extra_env = dict(extra_env or {})
        self.database_url = self.create_database()
        self.broker_url = "filesystem://" if database == "sqlite" else redis_url()

    def create_database(self):
        if self.database == "sqlite":
            return f"sqlite:///{self.workdir / 'spool.sqlite3'}"
        run_postgres_statement(f'CREATE DATABASE "{self.database_name}"')
        return postgres_database_url(self.database_name)

    def env(self, **overrides):
        """Return the environment of every process on this stack (and of django.setup() here)."""
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DATABASE_URL": self.database_url,
                "CELERY_BROKER_URL": self.broker_url,
                "MAILHUB_VAR_DIR": str(self.workdir),
                "MAILHUB_BENCH_RUN": self.run_id,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            }
        )
        env.update(self.extra_env)
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def migrate(self):
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=MIGRATE_TIMEOUT,
        )
        if result.returncode != 0:
            raise BenchmarkError(f"manage.py migrate failed:\n{result.stdout}\n{result.stderr}")

    def setup_django(self):
        """Point this process's Django at the stack's database and broker, then set it up."""
        os.environ.update(self.env())
        import django

        django.setup()

    def start_runmailserver(self, name="runmailserver"):
        """Start ``manage.py runmailserver`` with only the MX listener; return (process, port)."""
        if not runmailserver_available():
            raise BenchmarkError("mailhub has no runmailserver command yet (mailhub/management/commands/runmailserver.py)")
        port = free_port()
        command = [sys.executable, "manage.py", "runmailserver", "--mx", f"{LOOPBACK}:{port}"]
        process = self.start(name, command, MAILHUB_SUBMISSION_LISTEN="", MAILHUB_SUBMISSIONS_LISTEN="")
        wait_for_port(port, process)
        return process, port

    def start_worker(self, concurrency, name="worker"):
        """Start one Celery worker with ``concurrency`` prefork processes on this run's queue."""
        if not delivery_available():
            raise BenchmarkError("mailhub has no delivery tasks yet (mailhub/tasks.py)")
        command = [
            sys.executable, "-m", "celery", "-A", "project", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency),
            "--queues", f"mailhub-bench-{self.run_id}",
            "--hostname", f"{name}-{self.run_id}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "WARNING",
        ]
        return self.start(name, command)

    def start(self, name, command, **env_overrides):
        log_path = self.workdir / f"{name}.log"
        process = ManagedProcess(name, command, log_path, env=self.env(**env_overrides))
        self.processes.append(process)
        return process

    def purge_broker(self):
        """Drop the delivery hints left in this run's queue, so the next measurement starts empty."""
        if self.database == "postgres":
            delete_redis_queue(f"mailhub-bench-{self.run_id}")
            return
        queue_folder = self.workdir / "broker" / "queue"
        if queue_folder.exists():
            for path in queue_folder.iterdir():
                path.unlink(missing_ok=True)

    def stop_processes(self):
        while self.processes:
            self.processes.pop().stop()

    def close(self):
        """Stop every process, drop the database and the broker queue, remove the folder."""
        self.stop_processes()
        if self.database == "postgres":
            close_django_connections()
            run_postgres_statement(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            delete_redis_queue(f"mailhub-bench-{self.run_id}")
        if self.keep:
            print(f"Kept the folder {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def postgres_database_url(name):
    base = postgres_server_url()
    return base.rsplit("/", 1)[0] + f"/{name}"


def run_postgres_statement(statement):
    """Run one statement outside a transaction on the server's maintenance database."""
    import psycopg

    url = postgres_server_url().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


def delete_redis_queue(queue_name):
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=10)
    client.delete(queue_name)
    client.close()


def close_django_connections():
    if "django" not in sys.modules:
        return
    from django.db import connections

    connections.close_all()
