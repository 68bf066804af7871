"""The message page: recipients, attempt log, decoded content, raw download and HTML safety."""
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from mailhub.models import DeliveryAttempt

from .conftest import build_raw

pytestmark = pytest.mark.django_db

HOSTILE_HTML = (
    '<html><body><p>Offer</p><script>document.title="owned"</script>'
    '<img src="http://tracker.invalid/pixel.gif"></body></html>'
)


def page_url(message):
    return reverse("admin:mailhub_message_change", args=[message.pk])


def test_page_shows_recipient_table(operator_client, deferred_message):
    content = operator_client.get(page_url(deferred_message)).content.decode()

    assert "carol@deferred.test" in content
    assert "dave@deferred.test" in content
    assert "Deferred" in content
    assert "451 4.7.1 Greylisted, try again later" in content
    assert "mx.deferred.test" in content


def test_page_shows_attempt_log(operator_client, deferred_message):
    recipient = deferred_message.recipients.first()
    DeliveryAttempt.objects.create(
        message=deferred_message,
        recipient=recipient,
        started_at=timezone.now(),
        outcome="deferred",
        remote_host="mx1.deferred.test",
        reply_code=421,
        reply_enhanced_code="4.3.2",
        reply_text="Service shutting down",
    )

    content = operator_client.get(page_url(deferred_message)).content.decode()

    assert "Attempt log" in content
    assert "mx1.deferred.test" in content
    assert "421 4.3.2 Service shutting down" in content


def test_page_shows_headers_body_and_attachments(operator_client, spool_message):
    raw = build_raw(subject="Quarterly =?utf-8?q?r=C3=A9sum=C3=A9?=", body="Plain text body line.\n", attachment=("report.pdf", b"%PDF-1.4 data"))
    message = spool_message(raw=raw)

    content = operator_client.get(page_url(message)).content.decode()

    assert "Quarterly résumé" in content
    assert "Plain text body line." in content
    assert "report.pdf" in content
    assert "application/pdf" in content


def test_raw_download_returns_bytes_as_stored(operator_client, deferred_message):
    response = operator_client.get(reverse("admin:mailhub_message_raw", args=[deferred_message.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert f'filename="{deferred_message.queue_id}.eml"' in response["Content-Disposition"]
    assert response.content == deferred_message.raw_bytes


def test_raw_download_needs_view_permission(client, django_user_model, deferred_message):
    staff = django_user_model.objects.create_user(username="nobody", password="x", is_staff=True)
    client.force_login(staff)

    response = client.get(reverse("admin:mailhub_message_raw", args=[deferred_message.pk]))

    assert response.status_code == 403


def test_html_body_never_live(operator_client, spool_message):
    message = spool_message(raw=build_raw(body="See the HTML part.\n", html=HOSTILE_HTML))

    content = operator_client.get(page_url(message)).content.decode()

    assert "<script>document.title" not in content
    assert not re.search(r"<img[^>]+tracker\.invalid", content)
    assert "&lt;script&gt;document.title=&quot;owned&quot;&lt;/script&gt;" in content
    assert "&lt;img src=&quot;http://tracker.invalid/pixel.gif&quot;&gt;" in content


def test_html_preview_is_sandboxed(operator_client, spool_message):
    message = spool_message(raw=build_raw(html=HOSTILE_HTML))

    response = operator_client.get(reverse("admin:mailhub_message_html", args=[message.pk]))

    policy = response["Content-Security-Policy"]
    assert "sandbox" in policy.split(";")[0]
    assert "default-src 'none'" in policy
    assert "img-src data:" in policy
    assert "script-src" not in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"


def test_html_preview_frame_is_sandboxed(operator_client, spool_message):
    message = spool_message(raw=build_raw(html=HOSTILE_HTML))

    content = operator_client.get(page_url(message)).content.decode()

    assert re.search(r'<iframe id="message-html-preview" src="[^"]+" sandbox=""', content)


def test_viewer_sees_page_without_actions(viewer_client, deferred_message):
    response = viewer_client.get(page_url(deferred_message))

    content = response.content.decode()
    assert response.status_code == 200
    assert "carol@deferred.test" in content
    assert 'name="_selected_action"' not in content
    assert "Action on the selected recipients" not in content
    assert 'name="_save"' not in content


def test_operator_sees_recipient_actions(operator_client, deferred_message):
    content = operator_client.get(page_url(deferred_message)).content.decode()

    assert 'name="_selected_action"' in content
    for label in ["Retry now", "Hold", "Release from hold", "Bounce now (send a DSN)"]:
        assert f">{label}</option>" in content


def test_message_with_broken_charset_still_shows(operator_client, spool_message):
    raw = (
        b"From: a@example.org\r\nTo: b@example.com\r\nSubject: broken\r\n"
        b"Content-Type: text/plain; charset=x-unknown-charset\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 =ZZ\r\n"
    )
    message = spool_message(raw=raw)

    response = operator_client.get(page_url(message))

    assert response.status_code == 200
    assert "Caf" in response.content.decode()
