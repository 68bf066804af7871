"""SERVER_EVENT_LOOP: which event loop runs the listeners."""
import asyncio
import subprocess
import sys

import pytest

from mailhub.exceptions import ConfigurationError
from mailhub.server import event_loop
from tests.support.celery_worker import worker_environment

from .test_runmailserver import REPO_ROOT

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")


@pytest.mark.parametrize(
    "setting, loop_class",
    [("auto", uvloop.Loop), ("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)],
)
def test_setting_chooses_the_loop(settings, setting, loop_class):
    settings.MAILHUB_SERVER_EVENT_LOOP = setting
    loop = event_loop.new_event_loop()
    try:
        assert isinstance(loop, loop_class)
    finally:
        loop.close()


def test_asyncio_loop_is_not_uvloop(settings):
    settings.MAILHUB_SERVER_EVENT_LOOP = "asyncio"
    loop = event_loop.new_event_loop()
    loop.close()

    assert not isinstance(loop, uvloop.Loop)


def test_unknown_loop_name_is_a_configuration_error(settings):
    settings.MAILHUB_SERVER_EVENT_LOOP = "trio"

    with pytest.raises(ConfigurationError, match="MAILHUB_SERVER_EVENT_LOOP must be one of"):
        event_loop.new_event_loop()


def test_runmailserver_reports_an_unknown_loop(tmp_path, settings):
    # worker_environment() passes this process's mailhub settings to the command.
    settings.MAILHUB_SERVER_EVENT_LOOP = "trio"
    env = worker_environment({"MAILHUB_VAR_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "manage.py", "runmailserver", "--mx", "127.0.0.1:0", "--submission", ""],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "MAILHUB_SERVER_EVENT_LOOP must be one of auto, uvloop, asyncio, not 'trio'" in result.stderr
    assert "Traceback" not in result.stderr
