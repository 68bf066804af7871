"""Test settings: the project settings with test databases that several runs can share a machine with.

The SQLite test database is a file, not memory, because Celery worker processes that
the tests start must open it too. Each run's names carry its process id, so two test
runs on one machine never touch each other's database.
"""
import os

from project.settings import *  # noqa: F403
from project.settings import DATABASES, VAR_DIR, filesystem_broker_options

RUN_ID = os.getpid()

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_mailhub_{RUN_ID}"}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILHUB_HOSTNAME = "mailhub.test"
MAILHUB_ALLOW_PRIVATE_MX = True

# Each run gets its own broker folder and queue name, so a worker that one run starts
# never takes another run's tasks (the filesystem transport shares a folder, Redis a key).
CELERY_TASK_DEFAULT_QUEUE = f"mailhub-test-{RUN_ID}"
if CELERY_BROKER_URL.startswith("filesystem://"):  # noqa: F405
    TEST_BROKER_FOLDER = VAR_DIR / f"test-broker-{RUN_ID}"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(TEST_BROKER_FOLDER)
