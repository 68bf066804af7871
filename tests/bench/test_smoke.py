"""Smoke runs of every benchmark script with tiny counts, so the scripts cannot rot.

Each test runs a script as a subprocess against the database and broker of this test
run's configuration (SQLite and the filesystem broker, or PostgreSQL and Redis) and
checks the JSON it writes. Nothing here times anything or asserts a speed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.baselines import postfix_missing_reason
from bench.load import load_tools_missing_reason
from bench.stack import delivery_available, runmailserver_available

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_TIMEOUT = 240

pytestmark = [pytest.mark.slow]


def bench_environment():
    """Return the scripts' environment: PostgreSQL and Redis when this test run uses them."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url.startswith(("postgres://", "postgresql://")):
        env["MAILHUB_BENCH_POSTGRES_URL"] = database_url.rsplit("/", 1)[0] + "/postgres"
    broker_url = os.environ.get("CELERY_BROKER_URL", "")
    if broker_url.startswith("redis://"):
        env["MAILHUB_BENCH_REDIS_URL"] = broker_url
    return env


def database_option():
    uses_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    return ["--database", "postgres" if uses_postgres else "sqlite"]


def run_script(name, tmp_path, *arguments):
    """Run ``python -m bench.NAME`` with tiny counts and return the JSON document it wrote."""
    output = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", f"bench.{name}", *database_option(), "--runs", "1", "--json", str(output), *arguments]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=bench_environment(), capture_output=True, text=True, timeout=SCRIPT_TIMEOUT
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    assert output.exists(), f"bench.{name} wrote no JSON:\n{result.stdout}"
    return json.loads(output.read_text())


def rows_named(document, table_start, row):
    return [item for item in document["results"] if item["table"].startswith(table_start) and item["row"] == row]


def assert_figures_consistent(document):
    assert document["results"], f"no figures in {document['benchmark']}"
    for item in document["results"]:
        assert item["runs"], f"figure without runs: {item}"
        assert item["min"] <= item["median"] <= item["max"], f"median outside min and max: {item}"


def require_load_tools():
    reason = load_tools_missing_reason()
    if reason:
        pytest.skip(reason)


def require_postfix():
    require_load_tools()
    reason = postfix_missing_reason()
    if reason:
        pytest.skip(reason)


def require_runmailserver():
    if not runmailserver_available():
        pytest.skip("mailhub has no runmailserver command yet (mailhub/management/commands/runmailserver.py)")


def require_delivery():
    if not delivery_available():
        pytest.skip("mailhub has no delivery tasks yet (mailhub/tasks.py)")


def test_application_script(tmp_path):
    document = run_script("application", tmp_path, "--messages", "20", "--smtp-messages", "2", "--reply-delay", "0.01")

    assert_figures_consistent(document)
    assert rows_named(document, "send_mail() latency", f"SpoolBackend ({database_option()[1]})")
    assert rows_named(document, "SMTP backend / SpoolBackend", "median latency")


def test_inbound_script_baselines(tmp_path):
    require_load_tools()

    document = run_script(
        "inbound", tmp_path, "--messages", "20", "--sessions", "1", "5", "--targets", "aiosmtpd-sink", "sqlite-sink"
    )

    assert_figures_consistent(document)
    assert len(rows_named(document, "Inbound accept rate", "aiosmtpd-sink")) == 2
    assert rows_named(document, "Inbound ratios", "sqlite-sink / aiosmtpd-sink")


def test_inbound_script_postfix(tmp_path):
    require_postfix()

    document = run_script("inbound", tmp_path, "--messages", "20", "--sessions", "2", "--targets", "postfix", "aiosmtpd-sink")

    assert rows_named(document, "Inbound accept rate", "postfix")
    assert rows_named(document, "Inbound ratios", "aiosmtpd-sink / postfix")


def test_inbound_script_mailhub(tmp_path):
    require_load_tools()
    require_runmailserver()

    document = run_script("inbound", tmp_path, "--messages", "20", "--sessions", "1", "5", "--targets", "mailhub", "aiosmtpd-sink")

    assert_figures_consistent(document)
    assert len(rows_named(document, "Inbound accept rate", "mailhub")) == 2
    assert not [note for note in document["notes"] if "spool holds" in note], document["notes"]


@pytest.mark.worker
def test_outbound_script_mailhub(tmp_path):
    require_load_tools()
    require_delivery()

    document = run_script("outbound", tmp_path, "--messages", "20", "--workers", "1", "2", "--domains", "1", "3", "--targets", "mailhub")

    assert_figures_consistent(document)
    assert len(rows_named(document, "Outbound delivery rate", "mailhub, 2 workers")) == 2
    assert not [note for note in document["notes"] if "spool records" in note], document["notes"]


def test_outbound_script_postfix(tmp_path):
    require_postfix()

    document = run_script("outbound", tmp_path, "--messages", "20", "--domains", "1", "3", "--targets", "postfix")

    assert len(rows_named(document, "Outbound delivery rate", "postfix")) == 2


@pytest.mark.worker
def test_memory_script(tmp_path):
    require_load_tools()
    require_runmailserver()
    require_delivery()

    document = run_script("memory", tmp_path, "--sessions", "10", "--deliveries", "20")

    assert_figures_consistent(document)
    assert rows_named(document, "Listener peak RSS", "runmailserver (MX)")
    assert rows_named(document, "Worker peak RSS", "worker, 1 process"), document["notes"]


def test_growth_script(tmp_path):
    document = run_script("growth", tmp_path, "--sizes", "40", "200", "--recipients-per-message", "2", "--due-fraction", "0.5")

    assert_figures_consistent(document)
    for operation in ("claim", "admin messages", "admin recipients"):
        assert len(rows_named(document, "Time per operation", operation)) == 2, operation
        assert rows_named(document, "Largest size / smallest size", operation), operation
