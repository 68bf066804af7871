"""Run the SMTP listeners (MX, submission, submissions) and optionally a Celery worker with beat."""
import asyncio
import logging
import os
import signal
import subprocess
import sys

from django.core.management.base import BaseCommand, CommandError

from mailhub import conf
from mailhub.exceptions import ConfigurationError
from mailhub.server import database
from mailhub.server.runner import configured_addresses, start_servers, stop_servers

logger = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT = 30


class Command(BaseCommand):
    help = (
        "Run mailhub's SMTP listeners: MX (no AUTH, local recipients only), submission "
        "(STARTTLS, AUTH) and submissions (implicit TLS, AUTH). With --worker, also run a "
        "Celery worker with the embedded beat scheduler, so one command runs the whole system."
    )

    def add_arguments(self, parser):
        parser.add_argument("--mx", metavar="ADDR:PORT", help="MX listener address; default MAILHUB_MX_LISTEN, empty turns it off.")
        parser.add_argument(
            "--submission", metavar="ADDR:PORT",
            help="Submission (STARTTLS) listener address; default MAILHUB_SUBMISSION_LISTEN, empty turns it off.",
        )
        parser.add_argument(
            "--submissions", metavar="ADDR:PORT",
            help="Submission with implicit TLS (RFC 8314) address; default MAILHUB_SUBMISSIONS_LISTEN, empty turns it off.",
        )
        parser.add_argument(
            "--worker", action="store_true",
            help="Also start a Celery worker with beat (celery -A MAILHUB_CELERY_APP worker -B) and stop it on exit.",
        )

    def handle(self, *args, **options):
        overrides = {name: options[name] for name in ("mx", "submission", "submissions") if options[name] is not None}
        try:
            addresses = configured_addresses(overrides)
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        if not addresses:
            raise CommandError("every listener is off: give --mx, --submission or --submissions, or set MAILHUB_MX_LISTEN")

        worker = start_worker() if options["worker"] else None
        try:
            asyncio.run(serve(addresses))
        except PermissionError as error:
            raise CommandError(f"cannot bind a listener port ({error}); ports below 1024 need privileges, try --mx 127.0.0.1:2525") from error
        except OSError as error:
            raise CommandError(f"cannot start the listeners: {error}") from error
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        finally:
            if worker is not None:
                stop_worker(worker)
            database.shutdown()


async def serve(addresses):
    """Run the listeners until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    started = await start_servers(addresses)
    # TODO: watch the --worker process and log or restart it when it exits early. Until then
    # the listeners go on storing mail, which waits for the next worker.
    try:
        await stop.wait()
        logger.info("stopping the listeners")
    finally:
        await stop_servers(started)


def celery_app_name():
    configured = conf.get("CELERY_APP")
    if configured:
        return configured
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings")
    return settings_module.rpartition(".")[0] or settings_module


def start_worker():
    command = [sys.executable, "-m", "celery", "-A", celery_app_name(), "worker", "-B", "--loglevel=info"]
    worker = subprocess.Popen(command)
    logger.info("Celery worker started with pid %d: %s", worker.pid, " ".join(command))
    return worker


def stop_worker(worker):
    """Ask the worker for a warm shutdown (SIGTERM), and kill it if it does not end in time."""
    if worker.poll() is not None:
        logger.warning("the Celery worker had already exited with status %s", worker.returncode)
        return
    worker.terminate()
    try:
        worker.wait(WORKER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.error("the Celery worker did not stop within %d s; killing it", WORKER_STOP_TIMEOUT)
        worker.kill()
        worker.wait()
    logger.info("the Celery worker stopped with status %s", worker.returncode)
