"""Fixtures shared by every test; each group of real servers lives in tests/support/."""

pytest_plugins = [
    "tests.support.dns_server",
    "tests.support.smtp_peer",
    "tests.support.celery_worker",
    "tests.support.listeners",
]


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's broker folder; its name carries the run's process id."""
    import shutil

    from django.conf import settings

    folder = getattr(settings, "TEST_BROKER_FOLDER", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
