"""Queue actions on messages and recipients: effects, admin log, confirmation pages and permissions."""
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.urls import reverse
from django.utils import timezone

from mailhub.models import Message, Recipient

from .conftest import VIEW_PERMISSIONS, make_user

pytestmark = pytest.mark.django_db

MESSAGE_LIST = reverse("admin:mailhub_message_changelist")
RECIPIENT_LIST = reverse("admin:mailhub_recipient_changelist")


def run_action(client, url, action, ids, **extra):
    data = {"action": action, "_selected_action": [str(pk) for pk in ids], "index": "0", **extra}
    return client.post(url, data)


def statuses(message):
    return sorted(message.recipients.values_list("status", flat=True))


def change_log(message):
    return list(LogEntry.objects.filter(object_id=str(message.pk), action_flag=CHANGE).values_list("change_message", flat=True))


def test_retry_now_makes_deferred_due(operator_client, deferred_message):
    response = run_action(operator_client, MESSAGE_LIST, "retry_now", [deferred_message.pk])

    assert response.status_code == 302
    for recipient in deferred_message.recipients.all():
        assert recipient.next_attempt_at <= timezone.now()
        assert recipient.status == "queued"
    assert change_log(deferred_message) == ["Retried now: carol@deferred.test, dave@deferred.test"]


def test_hold_and_release(operator_client, deferred_message):
    run_action(operator_client, MESSAGE_LIST, "hold", [deferred_message.pk])
    held = statuses(deferred_message)
    run_action(operator_client, MESSAGE_LIST, "release", [deferred_message.pk])

    assert held == ["held", "held"]
    assert statuses(deferred_message) == ["queued", "queued"]
    assert change_log(deferred_message) == [
        "Released: carol@deferred.test, dave@deferred.test",
        "Held: carol@deferred.test, dave@deferred.test",
    ]


def test_action_reports_count(operator_client, deferred_message):
    response = run_action(operator_client, MESSAGE_LIST, "hold", [deferred_message.pk])

    shown = [str(message) for message in response.wsgi_request._messages]
    assert shown == ["Held: 2 recipient(s) changed."]


def test_bounce_asks_for_confirmation_first(operator_client, deferred_message):
    response = run_action(operator_client, MESSAGE_LIST, "bounce_now", [deferred_message.pk])

    content = response.content.decode()
    assert response.status_code == 200
    assert "Bounce recipients now?" in content
    assert "carol@deferred.test" in content
    assert statuses(deferred_message) == ["deferred", "deferred"]


def test_bounce_after_confirmation_sends_dsn(operator_client, deferred_message):
    data = {
        "action": "bounce_now",
        "_selected_action": [str(deferred_message.pk)],
        "confirm_bounce": "yes",
        "reason": "Mailbox retired",
    }

    response = operator_client.post(MESSAGE_LIST, data)

    assert response.status_code == 302
    assert statuses(deferred_message) == ["bounced", "bounced"]
    recipient = deferred_message.recipients.first()
    assert recipient.reply_text == "Mailbox retired"
    dsn = Message.objects.get(source=Message.Source.BOUNCE)
    assert list(dsn.recipients.values_list("address", flat=True)) == ["alice@example.org"]
    assert b"carol@deferred.test" in dsn.raw_bytes
    assert change_log(deferred_message) == ["Bounced (Mailbox retired): carol@deferred.test, dave@deferred.test"]


def test_delete_asks_for_confirmation(operator_client, deferred_message):
    response = run_action(operator_client, MESSAGE_LIST, "delete_selected", [deferred_message.pk])

    assert response.status_code == 200
    assert "Are you sure" in response.content.decode()
    assert Message.objects.filter(pk=deferred_message.pk).exists()


def test_delete_after_confirmation(operator_client, deferred_message):
    data = {"action": "delete_selected", "_selected_action": [str(deferred_message.pk)], "post": "yes"}

    response = operator_client.post(MESSAGE_LIST, data)

    assert response.status_code == 302
    assert not Message.objects.filter(pk=deferred_message.pk).exists()
    assert not Recipient.objects.filter(message_id=deferred_message.pk).exists()
    assert LogEntry.objects.filter(object_id=str(deferred_message.pk), action_flag=DELETION).count() == 1


def test_delete_skips_message_under_live_lease(operator_client, deferred_message):
    deferred_message.recipients.update(lease_token="worker-1", lease_expires_at=timezone.now() + timedelta(minutes=5))
    data = {"action": "delete_selected", "_selected_action": [str(deferred_message.pk)], "post": "yes"}

    operator_client.post(MESSAGE_LIST, data)

    assert Message.objects.filter(pk=deferred_message.pk).exists()


def test_delete_from_message_page(operator_client, deferred_message):
    url = reverse("admin:mailhub_message_delete", args=[deferred_message.pk])

    confirmation = operator_client.get(url)
    response = operator_client.post(url, {"post": "yes"})

    assert confirmation.status_code == 200
    assert response.status_code == 302
    assert not Message.objects.filter(pk=deferred_message.pk).exists()


def test_select_across_applies_to_filtered_list(operator_client, deferred_message, spool_message):
    other = spool_message(("eve@elsewhere.test",), status="deferred")
    data = {"action": "hold", "_selected_action": [str(deferred_message.pk)], "index": "0", "select_across": "1"}

    operator_client.post(f"{MESSAGE_LIST}?domain=deferred.test", data)

    assert statuses(deferred_message) == ["held", "held"]
    assert statuses(other) == ["deferred"]


def test_recipient_action_from_message_page(operator_client, deferred_message):
    carol = deferred_message.recipients.get(address="carol@deferred.test")
    page = reverse("admin:mailhub_message_change", args=[deferred_message.pk])

    response = run_action(operator_client, RECIPIENT_LIST, "hold", [carol.pk], next=page)

    assert response.status_code == 302
    assert response["Location"] == page
    assert statuses(deferred_message) == ["deferred", "held"]
    assert change_log(deferred_message) == ["Held: carol@deferred.test"]


def test_recipient_action_ignores_foreign_next(operator_client, deferred_message):
    carol = deferred_message.recipients.get(address="carol@deferred.test")

    response = run_action(operator_client, RECIPIENT_LIST, "retry_now", [carol.pk], next="https://evil.invalid/")

    assert response["Location"] != "https://evil.invalid/"


def test_recipient_bounce_confirmation_keeps_next(operator_client, deferred_message):
    carol = deferred_message.recipients.get(address="carol@deferred.test")
    page = reverse("admin:mailhub_message_change", args=[deferred_message.pk])

    confirmation = run_action(operator_client, RECIPIENT_LIST, "bounce_now", [carol.pk], next=page)
    data = {
        "action": "bounce_now",
        "_selected_action": [str(carol.pk)],
        "confirm_bounce": "yes",
        "reason": "",
        "next": page,
    }
    response = operator_client.post(RECIPIENT_LIST, data)

    assert f'name="next" value="{page}"' in confirmation.content.decode()
    assert response["Location"] == page
    assert statuses(deferred_message) == ["bounced", "deferred"]
    carol.refresh_from_db()
    assert carol.reply_text == "Bounced by the postmaster"


@pytest.mark.parametrize("action", ["retry_now", "hold", "release", "bounce_now", "delete_selected"])
def test_viewer_cannot_run_action(viewer_client, deferred_message, action):
    deferred_message.recipients.update(next_attempt_at=timezone.now() + timedelta(hours=1))
    data = {"action": action, "_selected_action": [str(deferred_message.pk)], "index": "0", "post": "yes", "confirm_bounce": "yes"}

    viewer_client.post(MESSAGE_LIST, data)

    assert Message.objects.filter(pk=deferred_message.pk).exists()
    assert statuses(deferred_message) == ["deferred", "deferred"]
    assert all(recipient.next_attempt_at > timezone.now() for recipient in deferred_message.recipients.all())
    assert not LogEntry.objects.exists()


def test_viewer_list_has_no_action_bar(viewer_client, deferred_message):
    content = viewer_client.get(MESSAGE_LIST).content.decode()

    assert deferred_message.queue_id in content
    assert 'name="action"' not in content


@pytest.mark.parametrize(
    ("permission", "allowed", "denied"),
    [
        ("retry_message", {"retry_now"}, {"hold", "release", "bounce_now", "delete_selected"}),
        ("hold_message", {"hold", "release"}, {"retry_now", "bounce_now", "delete_selected"}),
        ("bounce_message", {"bounce_now"}, {"retry_now", "hold", "release", "delete_selected"}),
        ("delete_message", {"delete_selected"}, {"retry_now", "hold", "release", "bounce_now"}),
    ],
)
def test_each_action_needs_its_own_permission(client, django_user_model, permission, allowed, denied):
    client.force_login(make_user(django_user_model, "partial", [*VIEW_PERMISSIONS, permission]))

    content = client.get(MESSAGE_LIST).content.decode()

    for action in allowed:
        assert f'<option value="{action}">' in content
    for action in denied:
        assert f'<option value="{action}">' not in content


def test_recipient_list_filters_and_actions(operator_client, deferred_message, spool_message):
    spool_message(("zed@other.test",), status="delivered")

    response = operator_client.get(RECIPIENT_LIST, {"status": "deferred"})
    addresses = {recipient.address for recipient in response.context["cl"].result_list}

    assert addresses == {"carol@deferred.test", "dave@deferred.test"}
    assert deferred_message.queue_id in response.content.decode()
