"""The message list: columns, filters, search and a fixed number of queries."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailhub.models import Message, Recipient

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:mailhub_message_changelist")


def listed_queue_ids(response):
    return {message.queue_id for message in response.context["cl"].result_list}


def test_list_shows_summary_columns(operator_client, deferred_message):
    response = operator_client.get(LIST_URL)

    assert response.status_code == 200
    content = response.content.decode()
    assert deferred_message.queue_id in content
    assert "alice@example.org" in content
    assert "carol@deferred.test, dave@deferred.test" in content
    assert "2 deferred" in content
    assert "451 4.7.1 Greylisted, try again later" in content
    assert '<td class="field-next_attempt">in ' in content


def test_list_names_first_recipients_and_counts_rest(operator_client, spool_message):
    message = spool_message([f"user{number}@many.test" for number in range(5)])

    content = operator_client.get(LIST_URL).content.decode()

    assert "user0@many.test, user1@many.test, user2@many.test and 2 more" in content
    assert message.queue_id in content


def test_list_shows_due_now_after_retry(operator_client, deferred_message):
    deferred_message.recipients.update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    content = operator_client.get(LIST_URL).content.decode()

    assert "due now" in content


@pytest.mark.parametrize("status", ["queued", "deferred", "held", "delivered", "bounced"])
def test_filter_by_status(operator_client, spool_message, status):
    matching = spool_message(("x@status.test",), status=status)
    other_status = "delivered" if status != "delivered" else "queued"
    other = spool_message(("y@status.test",), status=other_status)

    response = operator_client.get(LIST_URL, {"status": status})

    assert listed_queue_ids(response) == {matching.queue_id}
    assert other.queue_id not in response.content.decode()


def test_filter_pending_takes_queued_and_deferred(operator_client, spool_message):
    queued = spool_message(status="queued")
    deferred = spool_message(status="deferred")
    spool_message(status="delivered")

    response = operator_client.get(LIST_URL, {"status": "pending"})

    assert listed_queue_ids(response) == {queued.queue_id, deferred.queue_id}


def test_filter_by_recipient_domain(operator_client, spool_message, deferred_message):
    spool_message(("bob@other.test",))

    response = operator_client.get(LIST_URL, {"domain": "deferred.test"})

    assert listed_queue_ids(response) == {deferred_message.queue_id}


def test_filter_by_internationalised_domain(operator_client, spool_message):
    message = spool_message(("info@xn--bcher-kva.test",))
    spool_message(("info@other.test",))

    response = operator_client.get(LIST_URL, {"domain": "Bücher.test"})

    assert listed_queue_ids(response) == {message.queue_id}


def test_domain_filter_box_keeps_other_parameters(operator_client, deferred_message):
    response = operator_client.get(LIST_URL, {"status": "deferred", "domain": "deferred.test", "q": "Stuck"})

    form = response.content.decode().split('id="recipient-domain-filter"')[1].split("</form>")[0]
    assert '<input type="hidden" name="status" value="deferred">' in form
    assert '<input type="hidden" name="q" value="Stuck">' in form
    assert 'name="domain" value="deferred.test"' in form
    assert listed_queue_ids(response) == {deferred_message.queue_id}


def test_status_and_domain_match_same_recipient(operator_client, spool_message):
    message = spool_message(("a@one.test", "b@two.test"))
    Recipient.objects.filter(address="a@one.test").update(status="delivered")
    Recipient.objects.filter(address="b@two.test").update(status="deferred")

    mismatched = operator_client.get(LIST_URL, {"status": "deferred", "domain": "one.test"})
    matched = operator_client.get(LIST_URL, {"status": "deferred", "domain": "two.test"})

    assert listed_queue_ids(mismatched) == set()
    assert listed_queue_ids(matched) == {message.queue_id}


def test_filter_by_source(operator_client, spool_message):
    from_mx = spool_message(source=Message.Source.MX)
    spool_message(source=Message.Source.BACKEND)

    response = operator_client.get(LIST_URL, {"source__exact": "mx"})

    assert listed_queue_ids(response) == {from_mx.queue_id}


def test_filter_by_age_bucket(operator_client, spool_message):
    fresh = spool_message(age=timedelta(minutes=1))
    middle = spool_message(age=timedelta(minutes=15))
    old = spool_message(age=timedelta(days=2))

    assert listed_queue_ids(operator_client.get(LIST_URL, {"age": "0-5"})) == {fresh.queue_id}
    assert listed_queue_ids(operator_client.get(LIST_URL, {"age": "10-20"})) == {middle.queue_id}
    assert listed_queue_ids(operator_client.get(LIST_URL, {"age": "1280-"})) == {old.queue_id}


def test_filter_by_date(operator_client, spool_message):
    today = spool_message()
    spool_message(age=timedelta(days=40))
    since = str(timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0))

    response = operator_client.get(LIST_URL, {"created_at__gte": since})

    assert listed_queue_ids(response) == {today.queue_id}


@pytest.mark.parametrize("field", ["address", "message_id", "subject", "queue_id", "sender"])
def test_search(operator_client, spool_message, field):
    wanted = spool_message(("needle@search.test",), sender="finder@search.test", subject="Invoice 4711")
    spool_message(("hay@other.test",), subject="Unrelated")
    terms = {
        "address": "needle@search.test",
        "message_id": wanted.message_id.strip("<>"),
        "subject": "Invoice 4711",
        "queue_id": wanted.queue_id,
        "sender": "finder@search.test",
    }

    response = operator_client.get(LIST_URL, {"q": terms[field]})

    assert listed_queue_ids(response) == {wanted.queue_id}


def test_search_quoted_phrase(operator_client, spool_message):
    wanted = spool_message(subject="Invoice 4711 overdue")
    spool_message(subject="Invoice overdue 4711")

    response = operator_client.get(LIST_URL, {"q": '"Invoice 4711"'})

    assert listed_queue_ids(response) == {wanted.queue_id}


def test_search_words_must_all_match(operator_client, spool_message):
    wanted = spool_message(("needle@search.test",), subject="Invoice 4711")
    spool_message(("needle@search.test",), subject="Reminder")

    response = operator_client.get(LIST_URL, {"q": "needle@search.test Invoice"})

    assert listed_queue_ids(response) == {wanted.queue_id}


def test_search_by_address_lists_message_once(operator_client, spool_message):
    message = spool_message(("one@same.test", "two@same.test"))

    response = operator_client.get(LIST_URL, {"q": "same.test"})

    assert [item.queue_id for item in response.context["cl"].result_list] == [message.queue_id]


def create_messages(count):
    """Store ``count`` messages with two recipients each, in the spool's tables."""
    now = timezone.now()
    messages = Message.objects.bulk_create(
        Message(raw=b"Subject: load\r\n\r\nbody\r\n", envelope_sender="load@example.org", source="backend", size=24, created_at=now - timedelta(minutes=number))
        for number in range(count)
    )
    Recipient.objects.bulk_create(
        Recipient(
            message=message,
            address=f"user{index}@{'a' if index else 'b'}.load.test",
            domain=f"{'a' if index else 'b'}.load.test",
            status="deferred" if index else "queued",
            attempts=index,
            reply_code=451 if index else None,
            reply_text="try later" if index else "",
        )
        for message in messages
        for index in range(2)
    )


def count_list_queries(client, url, params=None):
    with CaptureQueriesContext(connection) as context:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(context.captured_queries)


LIST_PAGES = [
    ("admin:mailhub_message_changelist", {}),
    ("admin:mailhub_message_changelist", {"status": "deferred", "domain": "a.load.test"}),
    ("admin:mailhub_message_changelist", {"q": "load.test"}),
    ("admin:mailhub_recipient_changelist", {}),
]


@pytest.mark.parametrize(("url_name", "params"), LIST_PAGES)
def test_list_queries_fixed_for_10_and_1000(operator_client, django_assert_max_num_queries, url_name, params):
    url = reverse(url_name)
    create_messages(10)
    with django_assert_max_num_queries(12):
        operator_client.get(url, params)
    queries_at_10 = count_list_queries(operator_client, url, params)

    create_messages(990)
    with django_assert_max_num_queries(12):
        operator_client.get(url, params)
    queries_at_1000 = count_list_queries(operator_client, url, params)

    assert queries_at_10 == queries_at_1000


def test_list_does_not_load_raw_bytes(operator_client, deferred_message):
    with CaptureQueriesContext(connection) as context:
        operator_client.get(LIST_URL)

    message_selects = [query["sql"] for query in context.captured_queries if 'FROM "mailhub_message"' in query["sql"]]
    assert message_selects
    assert not any('"mailhub_message"."raw"' in sql for sql in message_selects)
