"""The queue summary page: recipient domains by age bucket, links into the list, worker health."""
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from celery import Celery
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from mailhub.admin import summary
from mailhub.models import SweepRecord

pytestmark = pytest.mark.django_db

SUMMARY_URL = reverse("admin:mailhub_message_summary")
NO_PING = override_settings(MAILHUB_ADMIN_WORKER_PING_TIMEOUT=0)


@pytest.fixture
def shaped_queue(spool_message):
    """Recipients spread over domains and ages: fresh, 15 minutes, 2 hours and 2 days old."""
    spool_message(("a1@alpha.test", "a2@alpha.test"), status="deferred", age=timedelta(minutes=15))
    spool_message(("a3@alpha.test",), status="queued", age=timedelta(minutes=1))
    spool_message(("b1@beta.test",), status="deferred", age=timedelta(hours=2))
    spool_message(("c1@gamma.test",), status="deferred", age=timedelta(days=2))
    spool_message(("done@alpha.test",), status="delivered")
    spool_message(("h1@alpha.test",), status="held")


def shape_rows(response):
    shape = response.context["shape"]
    return {row.domain: row for row in shape.rows}, shape.totals


@NO_PING
def test_summary_counts_by_domain_and_age(operator_client, shaped_queue):
    rows, totals = shape_rows(operator_client.get(SUMMARY_URL))

    assert set(rows) == {"alpha.test", "beta.test", "gamma.test"}
    assert rows["alpha.test"].counts[:3] == [1, 0, 2]
    assert rows["alpha.test"].total == 3
    assert rows["beta.test"].counts[5] == 1
    assert rows["gamma.test"].counts[-1] == 1
    assert totals.total == 5
    assert totals.counts[0] == 1


@NO_PING
def test_summary_sorts_busiest_domain_first(operator_client, shaped_queue):
    response = operator_client.get(SUMMARY_URL)

    assert [row.domain for row in response.context["shape"].rows][0] == "alpha.test"


@NO_PING
@pytest.mark.parametrize(("status", "expected"), [("deferred", 4), ("queued", 1), ("held", 1)])
def test_summary_by_status(operator_client, shaped_queue, status, expected):
    _, totals = shape_rows(operator_client.get(SUMMARY_URL, {"status": status}))

    assert totals.total == expected


@NO_PING
def test_summary_cell_links_to_filtered_list(operator_client, shaped_queue):
    response = operator_client.get(SUMMARY_URL)
    rows, _ = shape_rows(response)
    link = rows["alpha.test"].links[2]

    listed = operator_client.get(link)

    assert parse_qs(urlsplit(link).query) == {"status": ["pending"], "domain": ["alpha.test"], "age": ["10-20"]}
    recipients = [address for message in listed.context["cl"].result_list for address in message.recipient_summary.first_addresses]
    assert sorted(recipients) == ["a1@alpha.test", "a2@alpha.test"]
    assert link.replace("&", "&amp;") in response.content.decode()


@NO_PING
def test_summary_shows_last_sweep(operator_client):
    SweepRecord.objects.create(name="sweep", ran_at=timezone.now() - timedelta(seconds=20), requeued=4, worker="celery@host1")

    content = operator_client.get(SUMMARY_URL).content.decode()

    assert "celery@host1" in content
    assert "4 re-queued" in content
    assert "LATE" not in content


@NO_PING
def test_summary_flags_late_sweep(operator_client):
    SweepRecord.objects.create(name="sweep", ran_at=timezone.now() - timedelta(hours=1))

    assert "LATE: check that Celery beat runs." in operator_client.get(SUMMARY_URL).content.decode()


@NO_PING
def test_summary_flags_missing_sweep(operator_client):
    content = operator_client.get(SUMMARY_URL).content.decode()

    assert "never ran: check that Celery beat runs." in content
    assert "not checked" in content


@override_settings(MAILHUB_ADMIN_WORKER_PING_TIMEOUT=0.2)
def test_summary_reports_no_worker(operator_client):
    content = operator_client.get(SUMMARY_URL).content.decode()

    assert "no worker on queue mailhub-test-" in content


def test_worker_ping_survives_unreachable_broker(monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment before any app's own broker.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    # Port 1 on loopback has no listener, so the connection is refused at once.
    app = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)

    status = summary.ping_workers(0.2, app=app)

    assert status.checked
    assert "127.0.0.1:1" in status.error
    assert status.names == []


@NO_PING
def test_summary_for_viewer(viewer_client, shaped_queue):
    assert viewer_client.get(SUMMARY_URL).status_code == 200


def test_summary_needs_view_permission(client, django_user_model):
    staff = django_user_model.objects.create_user(username="nobody", password="x", is_staff=True)
    client.force_login(staff)

    assert client.get(SUMMARY_URL).status_code == 403


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@override_settings(MAILHUB_ADMIN_WORKER_PING_TIMEOUT=3.0)
def test_summary_names_live_worker(operator_client, celery_worker_factory):
    worker = celery_worker_factory(pool="solo", concurrency=1, name="pingme")

    content = operator_client.get(SUMMARY_URL).content.decode()

    assert "1 answering on queue mailhub-test-" in content
    assert "pingme-" in content
    worker.stop()
