"""The queue lists count a bounded number of rows, so a page load never counts the whole spool."""
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailhub.admin import paginator

from .test_message_list import create_messages

pytestmark = pytest.mark.django_db

BOUND = 5

LISTS = [
    ("admin:mailhub_message_changelist", {}, "messages"),
    ("admin:mailhub_message_changelist", {"status": "deferred"}, "messages"),
    ("admin:mailhub_recipient_changelist", {}, "recipients"),
    ("admin:mailhub_recipient_changelist", {"status": "pending"}, "recipients"),
]


@pytest.fixture
def small_bound(monkeypatch):
    monkeypatch.setattr(paginator, "EXACT_COUNT_LIMIT", BOUND)


def get_list(client, url_name, params):
    with CaptureQueriesContext(connection) as context:
        response = client.get(reverse(url_name), params)
    assert response.status_code == 200
    return response, [query["sql"] for query in context.captured_queries]


def test_short_list_is_counted_exactly(operator_client, small_bound):
    create_messages(3)

    response, _ = get_list(operator_client, "admin:mailhub_message_changelist", {})

    assert response.context["cl"].result_count == 3
    assert response.context["cl"].paginator.count_qualifier == ""
    assert re.search(r'<p class="paginator">\s*3 messages', response.content.decode())


@pytest.mark.parametrize(("url_name", "params", "plural"), LISTS)
def test_long_list_count_stops_at_bound(operator_client, small_bound, url_name, params, plural):
    create_messages(20)

    response, queries = get_list(operator_client, url_name, params)

    counts = [sql for sql in queries if "COUNT(*)" in sql]
    assert counts, queries
    assert all(f"LIMIT {BOUND + 1}" in sql for sql in counts), counts
    changelist = response.context["cl"]
    qualifier = changelist.paginator.count_qualifier
    # PostgreSQL may have an estimate above the bound, from table statistics or from the
    # planner. Without one it shows the bound, as SQLite always does.
    if connection.vendor == "postgresql" and qualifier == "about":
        assert changelist.result_count > BOUND
    else:
        assert (qualifier, changelist.result_count) == ("more than", BOUND)
    assert f"{qualifier} {changelist.result_count} {plural}" in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="table statistics are PostgreSQL's")
def test_long_unfiltered_list_shows_postgresql_estimate(operator_client, small_bound):
    create_messages(20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mailhub_message")

    response, _ = get_list(operator_client, "admin:mailhub_message_changelist", {})

    assert response.context["cl"].paginator.count_qualifier == "about"
    assert "about 20 messages" in response.content.decode()


def test_select_all_names_inexact_count(operator_client, small_bound):
    create_messages(20)

    response, _ = get_list(operator_client, "admin:mailhub_message_changelist", {})

    content = response.content.decode()
    changelist = response.context["cl"]
    count_label = f"{changelist.paginator.count_qualifier} {changelist.result_count}"
    assert changelist.paginator.count_qualifier
    assert f"Select all messages ({count_label})" in content
    assert f"All messages selected ({count_label})" in content
    assert f"Select all {changelist.result_count} messages" not in content


def test_select_all_keeps_exact_count(operator_client, monkeypatch):
    # Two pages of 100, both within the bound, so the count is exact.
    monkeypatch.setattr(paginator, "EXACT_COUNT_LIMIT", 150)
    create_messages(120)

    response, _ = get_list(operator_client, "admin:mailhub_message_changelist", {})

    content = response.content.decode()
    assert response.context["cl"].paginator.count_qualifier == ""
    assert "Select all 120 messages" in content
    assert "Select all messages (" not in content


def test_search_names_inexact_count(operator_client, small_bound):
    create_messages(20)

    response, _ = get_list(operator_client, "admin:mailhub_message_changelist", {"q": "load"})

    content = response.content.decode()
    changelist = response.context["cl"]
    assert changelist.paginator.count_qualifier
    assert f"{changelist.paginator.count_qualifier} {changelist.result_count} results" in content
    assert f">{changelist.result_count} results" not in content
