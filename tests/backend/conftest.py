"""Fixtures for the SpoolBackend tests: the backend configured the way a project sets it."""
import django
import pytest

BACKEND = "mailhub.backends.SpoolBackend"
CONFIGURATIONS = ["EMAIL_BACKEND", "MAILERS"]


@pytest.fixture(params=CONFIGURATIONS)
def spool_backend(request, settings):
    """Configure SpoolBackend through EMAIL_BACKEND, and on Django 6.1 and later also through MAILERS.

    pytest-django swaps in Django's locmem backend for tests, so each test sets the
    backend again here.
    """
    if request.param == "MAILERS":
        if django.VERSION < (6, 1):
            pytest.skip(f"MAILERS needs Django 6.1 or later; this is Django {django.get_version()}")
        settings.MAILERS = {"default": {"BACKEND": BACKEND}}
    else:
        if hasattr(settings, "MAILERS"):
            # Django 6.1 ignores EMAIL_BACKEND once MAILERS is defined.
            del settings.MAILERS
        settings.EMAIL_BACKEND = BACKEND
    return request.param


@pytest.fixture
def admins(settings):
    """Set ADMINS in the form this Django version expects and return the addresses."""
    addresses = ["ops@example.com", "Zoë Admin <zoe@example.com>"]
    if django.VERSION < (6, 0):
        settings.ADMINS = [("Ops", "ops@example.com"), ("Zoë Admin", "zoe@example.com")]
    else:
        settings.ADMINS = addresses
    settings.SERVER_EMAIL = "server@example.com"
    settings.EMAIL_SUBJECT_PREFIX = "[site] "
    return addresses
