"""Fixtures shared by every test; each group of real servers lives in tests/support/."""

pytest_plugins = [
    "tests.support.dns_server",
    "tests.support.smtp_peer",
    "tests.support.celery_worker",
    "tests.support.listeners",
]
