"""End to end in headless Chromium: log in, filter the queue, retry a deferred message.

The test saves screenshots of the queue list, the message page and the queue summary
into MAILHUB_TEST_ARTIFACTS (default: test-artifacts/ in the repository).
"""
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from mailhub.models import Recipient, SweepRecord
from tests.admin.conftest import build_raw

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-password"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent; install Debian's chromium package"),
]


@pytest.fixture
def artifacts_dir():
    default = Path(__file__).resolve().parents[2] / "test-artifacts"
    folder = Path(os.environ.get("MAILHUB_TEST_ARTIFACTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        yield page
        browser.close()


@pytest.fixture
def queue_contents(spool_message, live_server, django_user_model):
    """A superuser, a deferred message with a hostile HTML body, and other mail in the queue."""
    django_user_model.objects.create_superuser("postmaster", "postmaster@example.org", PASSWORD)
    SweepRecord.objects.create(name="sweep", ran_at=timezone.now() - timedelta(seconds=12), requeued=1, worker="celery@mailhub-test")
    tracker_url = f"{live_server.url}/tracker-pixel.gif"
    hostile_html = (
        "<p>Quarterly numbers</p><script>document.title = 'script ran'</script>"
        f'<img src="{tracker_url}" alt="tracker">'
    )
    deferred = spool_message(
        ("carol@deferred.test", "dave@deferred.test"),
        subject="Quarterly report",
        raw=build_raw(subject="Quarterly report", to="carol@deferred.test", body="Numbers attached.\n", html=hostile_html),
        status=Recipient.Status.DEFERRED,
        attempts=2,
        next_attempt_at=timezone.now() + timedelta(minutes=30),
        reply_code=451,
        reply_enhanced_code="4.7.1",
        reply_text="Greylisted, please try again later",
        remote_host="mx.deferred.test",
        age=timedelta(minutes=25),
    )
    for number in range(3):
        spool_message((f"user{number}@other.test",), subject=f"Welcome {number}", age=timedelta(minutes=3 * number))
    spool_message(("gone@done.test",), subject="Receipt", status=Recipient.Status.DELIVERED, reply_code=250, reply_text="OK queued")
    return deferred


@pytest.mark.django_db(transaction=True)
def test_retry_deferred_message_in_browser(queue_contents, live_server, browser_page, artifacts_dir, caplog):
    page = browser_page
    deferred = queue_contents
    loaded_urls = []
    page.on("response", lambda response: loaded_urls.append(response.url))

    page.goto(f"{live_server.url}/admin/login/?next=/admin/mailhub/message/")
    page.fill("#id_username", "postmaster")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/mailhub/message/$"))
    assert page.locator("#result_list tbody tr").count() == 5
    page.screenshot(path=str(artifacts_dir / "queue-list.png"), full_page=True)

    page.fill("#recipient-domain-filter input[name=domain]", "deferred.test")
    page.click("#recipient-domain-filter button[type=submit]")
    page.wait_for_url(re.compile(r"domain=deferred\.test"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    row = rows.first
    assert deferred.queue_id in row.inner_text()
    assert "2 deferred" in row.inner_text()
    assert row.locator("td.field-next_attempt").inner_text().startswith("in ")

    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "retry_now")
    page.click("button[name=index]")
    page.wait_for_load_state()
    assert "Retried now: 2 recipient(s) changed." in page.locator("ul.messagelist").inner_text()
    row = page.locator("#result_list tbody tr").first
    assert row.locator("td.field-next_attempt").inner_text() == "due now"
    assert "2 queued" in row.inner_text()
    assert "2 deferred" not in row.inner_text()
    page.screenshot(path=str(artifacts_dir / "queue-list-after-retry.png"), full_page=True)

    row.locator(f"a:has-text('{deferred.queue_id}')").click()
    page.wait_for_url(re.compile(rf"/admin/mailhub/message/{deferred.pk}/change/"))
    recipient_rows = page.locator("#recipients tr.recipient-row")
    assert recipient_rows.count() == 2
    assert "Greylisted, please try again later" in recipient_rows.first.inner_text()
    assert recipient_rows.first.locator("td.recipient-next-attempt").inner_text() == "due now"
    page.click("summary:has-text('Preview in a sandboxed frame')")
    page.locator("#message-html-preview").wait_for(state="visible")
    preview = page.frame_locator("#message-html-preview")
    preview.locator("text=Quarterly numbers").wait_for()
    assert "<script>" in page.locator("#message-html-source").inner_text()
    page.screenshot(path=str(artifacts_dir / "message-page.png"), full_page=True)

    assert page.title() != "script ran"
    assert not [url for url in loaded_urls if "tracker-pixel" in url]
    assert "tracker-pixel" not in caplog.text

    page.goto(f"{live_server.url}/admin/mailhub/message/summary/")
    assert page.locator("tr.shape-row[data-domain='deferred.test']").count() == 1
    page.screenshot(path=str(artifacts_dir / "queue-summary.png"), full_page=True)

    page.click("tr.shape-row[data-domain='other.test'] td a >> nth=0")
    page.wait_for_url(re.compile(r"domain=other\.test"))
    assert page.locator("#result_list tbody tr").count() == 3
