"""Polling helpers for tests that wait on work done by other processes (workers, listeners)."""
import time

import pytest
from django.db import close_old_connections


def wait_for(condition, timeout=120, interval=0.2, describe="condition"):
    """Poll ``condition()`` until it returns a true value; fail naming ``describe`` at the deadline.

    Each poll drops the old database connection, so a read sees what other processes
    committed since the last one.
    """
    deadline = time.monotonic() + timeout
    while True:
        close_old_connections()
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {describe}")
        time.sleep(interval)
