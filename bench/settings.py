"""Settings of the benchmark processes: the project settings plus a few bench-only values.

bench/stack.py sets DATABASE_URL, CELERY_BROKER_URL, MAILHUB_VAR_DIR and
MAILHUB_BENCH_RUN in the environment of every process it starts, so each benchmark run
has its own database, broker folder or queue, and log files.
"""
import os

from project.settings import *  # noqa: F403
from project.settings import LOGGING, VAR_DIR

RUN_ID = os.environ.get("MAILHUB_BENCH_RUN", str(os.getpid()))

MAILHUB_HOSTNAME = "mailhub.bench.test"
MAILHUB_ALLOW_PRIVATE_MX = True

# The load generator connects from 127.0.0.1 only, so the per-client limit would cap
# every session count; the benchmark measures throughput, not this defence.
MAILHUB_MAX_CONNECTIONS = 5000
MAILHUB_MAX_CONNECTIONS_PER_CLIENT = 5000

# The sink and the routes are plain SMTP on loopback without certificates.
MAILHUB_RELAY_TLS_POLICY = "none"
MAILHUB_MX_TLS_POLICY = "none"

# Each run takes only its own delivery hints from a shared Redis.
CELERY_TASK_DEFAULT_QUEUE = f"mailhub-bench-{RUN_ID}"

# mailhub logs one line per accepted message and per attempt, as in production, but
# into a file per process, so the benchmark's own output stays readable.
LOGGING["handlers"]["bench_file"] = {
    "class": "logging.FileHandler",
    "formatter": "plain",
    "filename": str(VAR_DIR / f"mailhub-{os.getpid()}.log"),
}
LOGGING["loggers"]["mailhub"]["handlers"] = ["bench_file"]
LOGGING["loggers"]["mailhub"]["level"] = os.environ.get("MAILHUB_LOG_LEVEL", "INFO")
