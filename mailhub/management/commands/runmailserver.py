"""Run the SMTP listeners (MX, submission, submissions) and optionally a Celery worker with beat."""
import asyncio
import logging
import signal

from django.core.management.base import BaseCommand, CommandError

from mailhub.exceptions import ConfigurationError
from mailhub.server import database, event_loop
from mailhub.server.group_commit import GroupCommitter
from mailhub.server.runner import configured_addresses, start_servers, stop_servers
from mailhub.server.worker_process import WorkerProcess

logger = logging.getLogger(__name__)

WORKER_CHECK_INTERVAL = 2.0
# How long a stop waits for the messages being committed, so that their sessions get a reply.
STOP_DRAIN_SECONDS = 10.0


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

        worker = WorkerProcess().start() if options["worker"] else None
        try:
            with asyncio.Runner(loop_factory=event_loop.new_event_loop) as runner:
                runner.run(serve(addresses, worker))
        except PermissionError as error:
            raise CommandError(f"cannot bind a listener port ({error}); ports below 1024 need privileges, try --mx 127.0.0.1:2525") from error
        except OSError as error:
            raise CommandError(f"cannot start the listeners: {error}") from error
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        finally:
            if worker is not None:
                worker.stop()
            database.shutdown()


async def serve(addresses, worker=None):
    """Run the listeners until SIGTERM or SIGINT, restarting the worker if it exits."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    committer = GroupCommitter()
    started = await start_servers(addresses, committer=committer)
    try:
        while not stop.is_set():
            if worker is not None:
                worker.check()
            try:
                await asyncio.wait_for(stop.wait(), WORKER_CHECK_INTERVAL)
            except asyncio.TimeoutError:
                pass
        logger.info("stopping the listeners")
    finally:
        await stop_servers(started)
        await committer.drain(STOP_DRAIN_SECONDS)
        await committer.close()
