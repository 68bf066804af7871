"""Settings of the mailhub example project, read from the environment with django-environ.

Every value has a default that runs the whole mail system on one machine with no
database or broker server: SQLite in WAL mode and kombu's filesystem transport.
"""
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env("MAILHUB_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# The default key only suits development; production sets SECRET_KEY in the environment.
SECRET_KEY = env("SECRET_KEY", default="mailhub-development-key-not-for-production")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "mailhub",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def sqlite_options():
    """Return SQLite options for several processes writing one file.

    WAL lets readers go on while one writer commits. IMMEDIATE transactions take the
    write lock at BEGIN, so two writers wait on the busy timeout instead of failing with
    "database is locked" when a read transaction tries to upgrade.
    """
    return {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }


DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'mailhub.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(sqlite_options())

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

EMAIL_BACKEND = env("EMAIL_BACKEND", default="mailhub.backends.SpoolBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
SERVER_EMAIL = env("SERVER_EMAIL", default="root@localhost")
ADMINS = [tuple(pair.split(":", 1)) for pair in env.list("ADMINS", default=[])]

# Celery: the broker only carries "deliver this message now" hints; the spool in the
# database is the source of truth, so a lost hint delays mail and loses none.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
BROKER_FOLDER = Path(env("MAILHUB_BROKER_FOLDER", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    for folder in ("queue", "control", "processed"):
        (BROKER_FOLDER / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_FOLDER / "queue"),
        "data_folder_out": str(BROKER_FOLDER / "queue"),
        "control_folder": str(BROKER_FOLDER / "control"),
        "processed_folder": str(BROKER_FOLDER / "processed"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "mailhub-sweep": {
        "task": "mailhub.tasks.sweep",
        "schedule": env.float("MAILHUB_SWEEP_INTERVAL", default=30.0),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# mailhub itself; mailhub/conf.py lists every setting with its default.
MAILHUB_HOSTNAME = env("MAILHUB_HOSTNAME", default="localhost")
MAILHUB_MX_LISTEN = env("MAILHUB_MX_LISTEN", default="0.0.0.0:25")
MAILHUB_SUBMISSION_LISTEN = env("MAILHUB_SUBMISSION_LISTEN", default="0.0.0.0:587")
MAILHUB_SUBMISSIONS_LISTEN = env("MAILHUB_SUBMISSIONS_LISTEN", default="")
MAILHUB_ROUTES = env("MAILHUB_ROUTES", default="")
MAILHUB_RELAY_HOST = env("MAILHUB_RELAY_HOST", default="")
MAILHUB_RELAY_USERNAME = env("MAILHUB_RELAY_USERNAME", default="")
MAILHUB_RELAY_PASSWORD = env("MAILHUB_RELAY_PASSWORD", default="")
MAILHUB_DNS_NAMESERVERS = env.list("MAILHUB_DNS_NAMESERVERS", default=[])
MAILHUB_DNS_PORT = env.int("MAILHUB_DNS_PORT", default=53)
MAILHUB_MX_PORT = env.int("MAILHUB_MX_PORT", default=25)
MAILHUB_ALLOW_PRIVATE_MX = env.bool("MAILHUB_ALLOW_PRIVATE_MX", default=False)
MAILHUB_TLS_CERTFILE = env("MAILHUB_TLS_CERTFILE", default="")
MAILHUB_TLS_KEYFILE = env("MAILHUB_TLS_KEYFILE", default="")
MAILHUB_TLS_DIR = env("MAILHUB_TLS_DIR", default=str(VAR_DIR / "tls"))
MAILHUB_ALLOW_PLAIN_AUTH_FROM_LOOPBACK = env.bool(
    "MAILHUB_ALLOW_PLAIN_AUTH_FROM_LOOPBACK", default=DEBUG
)
MAILHUB_MAX_MESSAGE_SIZE = env.int("MAILHUB_MAX_MESSAGE_SIZE", default=25 * 1024 * 1024)
MAILHUB_MAX_RECIPIENTS = env.int("MAILHUB_MAX_RECIPIENTS", default=100)
MAILHUB_TRUSTED_NETWORKS = env.list("MAILHUB_TRUSTED_NETWORKS", default=[])
MAILHUB_PROXY_PROTOCOL = env.bool("MAILHUB_PROXY_PROTOCOL", default=False)
MAILHUB_BARE_NEWLINE_POLICY = env("MAILHUB_BARE_NEWLINE_POLICY", default="reject")
MAILHUB_CELERY_APP = env("MAILHUB_CELERY_APP", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "mailhub": {"handlers": ["console"], "level": env("MAILHUB_LOG_LEVEL", default="INFO")},
    },
}
