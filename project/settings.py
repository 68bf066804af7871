"""Settings of the mailhub example project, read from the environment with django-environ.

Every value has a default that runs the whole mail system on one machine with no
database or broker server: SQLite in WAL mode and kombu's filesystem transport.
"""
from pathlib import Path

import django
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

# Django 6.1 replaced EMAIL_BACKEND with MAILERS and raises if both are set.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": env("EMAIL_BACKEND", default="mailhub.backends.SpoolBackend")}}
else:
    EMAIL_BACKEND = env("EMAIL_BACKEND", default="mailhub.backends.SpoolBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
SERVER_EMAIL = env("SERVER_EMAIL", default="root@localhost")
ADMINS = [tuple(pair.split(":", 1)) for pair in env.list("ADMINS", default=[])]

# Celery: the broker only carries "deliver this message now" hints. The spool in the
# database is the source of truth, so a lost hint delays mail and loses none.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
BROKER_FOLDER = Path(env("MAILHUB_BROKER_FOLDER", default=str(VAR_DIR / "broker")))


def filesystem_broker_options(folder):
    """Return kombu filesystem transport options for a broker kept in ``folder``, creating it."""
    for name in ("queue", "control", "processed"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        # kombu polls the folder once a second by default, which would cap a worker at
        # about one delivery hint per second per pool process.
        "polling_interval": 0.05,
    }


if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's own filesystem transport lets a reader see a message file before it is written.
    CELERY_BROKER_TRANSPORT = "mailhub.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(BROKER_FOLDER)
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
    "mailhub-purge": {
        "task": "mailhub.tasks.purge",
        "schedule": 3600.0,
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# mailhub itself. mailhub/conf.py lists every setting with its default; any of them can
# be set here from an environment variable of the same name, such as MAILHUB_ROUTES.


def mailhub_settings_from_environment():
    """Return a MAILHUB_* setting for each such variable in the environment.

    The value is parsed by the type of the setting's default in mailhub/conf.py, so the
    defaults stay in that one module: "true"/"false" for flags, numbers for sizes and
    times, comma-separated lists for lists. Routes and TLS policies stay strings, which
    mailhub parses itself ("a.test=host:port,*=relay:587").
    """
    from mailhub.conf import DEFAULTS

    parsers = {bool: env.bool, int: env.int, float: env.float, list: env.list}
    values = {}
    for name, default in DEFAULTS.items():
        variable = f"MAILHUB_{name}"
        if variable in env.ENVIRON:
            values[variable] = parsers.get(type(default), env.str)(variable)
    return values


MAILHUB_TLS_DIR = str(VAR_DIR / "tls")
MAILHUB_ALLOW_PLAIN_AUTH_FROM_LOOPBACK = DEBUG
globals().update(mailhub_settings_from_environment())

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
        # Celery's worker also logs through the root logger; without propagate=False
        # every mailhub line would appear twice in a worker's output.
        "mailhub": {
            "handlers": ["console"],
            "level": env("MAILHUB_LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
        # aiosmtpd's logger writes a line per connection at INFO and repeats, as a warning,
        # the invalid PROXY headers that mailhub logs itself, so only its errors are kept.
        "mail.log": {
            "handlers": ["console"],
            "level": "ERROR",
            "propagate": False,
        },
    },
}
