"""Settings of the Celery worker processes that tests start (see celery_worker.py).

A worker is another process, so tests.settings alone would give it its own run id, and
with it another queue and broker folder. The fixture passes the test run's queue, broker
folder and mailhub settings in the environment, and this module applies them.
"""
import json
import os
import shutil

from tests.settings import *  # noqa: F403
from tests.settings import CELERY_BROKER_URL, VAR_DIR

# tests.settings made a broker folder for this process's id; the worker uses the run's.
shutil.rmtree(VAR_DIR / f"test-broker-{os.getpid()}", ignore_errors=True)

CELERY_TASK_DEFAULT_QUEUE = os.environ["MAILHUB_WORKER_QUEUE"]

_broker_folder = os.environ.get("MAILHUB_WORKER_BROKER_FOLDER", "")
if CELERY_BROKER_URL.startswith("filesystem://") and _broker_folder:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": os.path.join(_broker_folder, "queue"),
        "data_folder_out": os.path.join(_broker_folder, "queue"),
        "control_folder": os.path.join(_broker_folder, "control"),
        "processed_folder": os.path.join(_broker_folder, "processed"),
        "store_processed": False,
    }

# Every MAILHUB_* setting of the test process, so a test's settings reach its workers.
globals().update(json.loads(os.environ.get("MAILHUB_WORKER_SETTINGS", "{}")))
