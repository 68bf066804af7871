"""The mailbox screens: domains, mailboxes, aliases, stored mail and its message page."""
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailhub import headers
from mailhub.models import Alias, Domain, Mailbox, MailboxMessage

from .conftest import build_raw
from .test_message_page import HOSTILE_HTML

pytestmark = pytest.mark.django_db

MAILBOX_MESSAGES = reverse("admin:mailhub_mailboxmessage_changelist")


@pytest.fixture
def mailbox(django_user_model):
    owner = django_user_model.objects.create_user(username="bob", password="x")
    domain = Domain.objects.create(name="example.com")
    return Mailbox.objects.create(domain=domain, local_part="bob", user=owner)


def store(mailbox, subject="Hello", age=timedelta(0), raw=None):
    """Store a message in the mailbox with its decoded fields, as local delivery does."""
    raw = raw or build_raw(subject=subject, to=mailbox.address)
    summary = headers.summarize(raw)
    return MailboxMessage.objects.create(
        mailbox=mailbox,
        raw=raw,
        size=len(raw),
        envelope_sender="alice@example.org",
        envelope_recipient=mailbox.address,
        from_header=summary["from_header"],
        to_header=summary["to_header"],
        subject=summary["subject"],
        message_id=summary["message_id"],
        date=summary["date"],
        received_at=timezone.now() - age,
    )


def test_domain_list_counts_mailboxes_and_aliases(operator_client, mailbox):
    Alias.objects.create(domain=mailbox.domain, local_part="postmaster", destinations="bob@example.com")
    Mailbox.objects.create(domain=mailbox.domain, local_part="carol")

    response = operator_client.get(reverse("admin:mailhub_domain_changelist"))

    domain = response.context["cl"].result_list[0]
    assert domain.mailbox_total == 2
    assert domain.alias_total == 1


def test_mailbox_list_shows_owner_count_and_size(operator_client, mailbox):
    first = store(mailbox)
    second = store(mailbox, subject="Second")

    response = operator_client.get(reverse("admin:mailhub_mailbox_changelist"))

    listed = response.context["cl"].result_list[0]
    content = response.content.decode()
    assert listed.message_total == 2
    assert listed.size_total == first.size + second.size
    assert "bob@example.com" in content
    assert ">bob<" in content
    assert f"?mailbox__id__exact={mailbox.pk}" in content


def test_alias_list(operator_client, mailbox):
    Alias.objects.create(domain=mailbox.domain, local_part="sales", destinations="bob@example.com\ncarol@remote.test")

    content = operator_client.get(reverse("admin:mailhub_alias_changelist")).content.decode()

    assert "sales@example.com" in content
    assert "bob@example.com, carol@remote.test" in content


def test_alias_search(operator_client, mailbox):
    Alias.objects.create(domain=mailbox.domain, local_part="sales", destinations="bob@example.com")
    Alias.objects.create(domain=mailbox.domain, local_part="info", destinations="carol@remote.test")

    response = operator_client.get(reverse("admin:mailhub_alias_changelist"), {"q": "remote.test"})

    assert [alias.source for alias in response.context["cl"].result_list] == ["info@example.com"]


def test_mailbox_messages_newest_first(operator_client, mailbox):
    store(mailbox, subject="Oldest", age=timedelta(days=2))
    store(mailbox, subject="Newest")
    store(mailbox, subject="Middle", age=timedelta(hours=1))

    response = operator_client.get(MAILBOX_MESSAGES, {"mailbox__id__exact": mailbox.pk})

    subjects = [message.subject for message in response.context["cl"].result_list]
    content = response.content.decode()
    assert subjects == ["Newest", "Middle", "Oldest"]
    assert "alice@example.org" in content


def test_mailbox_messages_filtered_by_mailbox(operator_client, mailbox):
    other = Mailbox.objects.create(domain=mailbox.domain, local_part="carol")
    store(mailbox, subject="For Bob")
    store(other, subject="For Carol")

    response = operator_client.get(MAILBOX_MESSAGES, {"mailbox__id__exact": other.pk})

    assert [message.subject for message in response.context["cl"].result_list] == ["For Carol"]


def test_mailbox_message_search(operator_client, mailbox):
    store(mailbox, subject="Invoice 42")
    store(mailbox, subject="Newsletter")

    response = operator_client.get(MAILBOX_MESSAGES, {"q": "Invoice"})

    assert [message.subject for message in response.context["cl"].result_list] == ["Invoice 42"]


def test_mailbox_message_page_is_safe(operator_client, mailbox):
    message = store(mailbox, raw=build_raw(subject="Promo", body="Text part.\n", html=HOSTILE_HTML))

    content = operator_client.get(reverse("admin:mailhub_mailboxmessage_change", args=[message.pk])).content.decode()

    assert "Text part." in content
    assert "<script>document.title" not in content
    assert not re.search(r"<img[^>]+tracker\.invalid", content)
    assert "&lt;script&gt;" in content


def test_mailbox_message_raw_download(operator_client, mailbox):
    message = store(mailbox)

    response = operator_client.get(reverse("admin:mailhub_mailboxmessage_raw", args=[message.pk]))

    assert response["Content-Type"] == "message/rfc822"
    assert response.content == message.raw_bytes


def test_mailbox_message_html_preview_is_sandboxed(operator_client, mailbox):
    message = store(mailbox, raw=build_raw(html=HOSTILE_HTML))

    response = operator_client.get(reverse("admin:mailhub_mailboxmessage_html", args=[message.pk]))

    assert response["Content-Security-Policy"].startswith("sandbox;")


def test_viewer_cannot_delete_stored_mail(viewer_client, mailbox):
    message = store(mailbox)

    response = viewer_client.post(reverse("admin:mailhub_mailboxmessage_delete", args=[message.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert MailboxMessage.objects.filter(pk=message.pk).exists()


def test_operator_deletes_stored_mail(operator_client, mailbox):
    message = store(mailbox)

    operator_client.post(reverse("admin:mailhub_mailboxmessage_delete", args=[message.pk]), {"post": "yes"})

    assert not MailboxMessage.objects.filter(pk=message.pk).exists()


def test_stored_mail_pages_need_view_permission(client, django_user_model, mailbox):
    message = store(mailbox)
    staff = django_user_model.objects.create_user(username="nobody", password="x", is_staff=True)
    client.force_login(staff)

    assert client.get(MAILBOX_MESSAGES).status_code == 403
    assert client.get(reverse("admin:mailhub_mailboxmessage_raw", args=[message.pk])).status_code == 403


def count_queries(client, url):
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return len(context.captured_queries)


@pytest.mark.parametrize("url_name", ["mailhub_domain_changelist", "mailhub_mailbox_changelist", "mailhub_mailboxmessage_changelist", "mailhub_alias_changelist"])
def test_mailbox_lists_use_fixed_queries(operator_client, django_assert_max_num_queries, mailbox, url_name):
    url = reverse(f"admin:{url_name}")

    grow_mail_system(10)
    with django_assert_max_num_queries(10):
        operator_client.get(url)
    at_10 = count_queries(operator_client, url)

    grow_mail_system(990)
    with django_assert_max_num_queries(10):
        operator_client.get(url)
    at_1000 = count_queries(operator_client, url)

    assert at_10 == at_1000


def grow_mail_system(count):
    """Add ``count`` domains, each with a mailbox holding one message and an alias."""
    start = Domain.objects.count()
    names = [f"d{number}.test" for number in range(start, start + count)]
    # bulk_create skips save(), so the address and source fields are set here.
    domains = Domain.objects.bulk_create(Domain(name=name) for name in names)
    mailboxes = Mailbox.objects.bulk_create(
        Mailbox(domain=domain, local_part="user", address=f"user@{domain.name}") for domain in domains
    )
    Alias.objects.bulk_create(
        Alias(domain=domain, local_part="alias", source=f"alias@{domain.name}", destinations=f"user@{domain.name}")
        for domain in domains
    )
    raw = build_raw()
    MailboxMessage.objects.bulk_create(
        MailboxMessage(mailbox=mailbox, raw=raw, size=len(raw), subject="Hello") for mailbox in mailboxes
    )
