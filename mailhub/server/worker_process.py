"""The Celery worker that ``runmailserver --worker`` runs beside the listeners, restarted if it dies."""
import logging
import os
import signal
import subprocess
import sys
import time

from .. import conf

logger = logging.getLogger(__name__)

# A warm shutdown lets each running delivery task finish its drain, which claims more due
# mail for DELIVERY_DRAIN_SECONDS, and then the destination it is sending to.
STOP_MARGIN_SECONDS = 30
# A worker that keeps crashing at start (a bad broker URL, say) is restarted with a
# growing delay, so the log shows the error without a restart loop that eats a core.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0


def celery_app_name():
    configured = conf.get("CELERY_APP")
    if configured:
        return configured
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings")
    return settings_module.rpartition(".")[0] or settings_module


class WorkerProcess:
    """A ``celery worker -B`` subprocess that ``check()`` restarts after an unexpected exit."""

    def __init__(self):
        self.command = [sys.executable, "-m", "celery", "-A", celery_app_name(), "worker", "-B", "--loglevel=info"]
        self.process = None
        self.restart_delay = FIRST_RESTART_DELAY
        self.restart_at = None

    def start(self):
        # A process group of its own lets kill_leftovers() reach the pool processes, which
        # outlive a worker main process that was killed.
        self.process = subprocess.Popen(self.command, start_new_session=True)
        logger.info("Celery worker started with pid %d: %s", self.process.pid, " ".join(self.command))
        return self

    def check(self):
        """Restart the worker if it has exited; call this every few seconds."""
        if self.process.poll() is None:
            return
        now = time.monotonic()
        if self.restart_at is None:
            self.kill_leftovers()
            logger.error(
                "the Celery worker (pid %d) exited with status %s; restarting it in %.0f s",
                self.process.pid,
                self.process.returncode,
                self.restart_delay,
            )
            self.restart_at = now + self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, MAX_RESTART_DELAY)
        if now >= self.restart_at:
            self.restart_at = None
            self.start()

    def kill_leftovers(self):
        """Kill what is left of the worker's process group, such as orphaned pool processes."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self):
        """Ask the worker for a warm shutdown (SIGTERM), and kill it if it does not end in time."""
        if self.process.poll() is not None:
            self.kill_leftovers()
            logger.warning("the Celery worker had already exited with status %s", self.process.returncode)
            return
        self.process.terminate()
        stop_timeout = conf.get("DELIVERY_DRAIN_SECONDS") + STOP_MARGIN_SECONDS
        try:
            self.process.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            logger.error("the Celery worker did not stop within %d s; killing it", stop_timeout)
            self.process.kill()
            self.process.wait()
        self.kill_leftovers()
        logger.info("the Celery worker stopped with status %s", self.process.returncode)
