"""SpoolBackend and database transactions: commit, rollback and failed writes."""
from contextlib import contextmanager

import pytest
from django.core import mail
from django.db import OperationalError, connection, transaction

from mailhub.exceptions import SpoolError
from mailhub.models import Message, Recipient


class Rollback(Exception):
    """Raised inside atomic() to roll the caller's transaction back."""


def send_one(**options):
    return mail.send_mail("Hello", "Body\n", "site@example.com", ["bob@remote.test"], **options)


@contextmanager
def failing_inserts(table):
    """Make every INSERT into ``table`` fail the way a full disk or a lost server does."""

    def execute(execute_query, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT") and table in sql:
            raise OperationalError(f"simulated failure writing {table}")
        return execute_query(sql, params, many, context)

    with connection.execute_wrapper(execute):
        yield


@pytest.mark.django_db
def test_commit_queues_one_delivery_hint(spool_backend, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        send_one()

    assert Message.objects.count() == 1
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_rollback_spools_nothing(spool_backend, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(Rollback):
            with transaction.atomic():
                assert send_one() == 1
                assert Message.objects.count() == 1
                raise Rollback

    assert Message.objects.count() == 0
    assert Recipient.objects.count() == 0
    assert callbacks == []


@pytest.mark.django_db(transaction=True)
def test_rollback_of_outer_transaction(spool_backend):
    with pytest.raises(Rollback):
        with transaction.atomic():
            send_one()
            raise Rollback

    assert Message.objects.count() == 0
    assert Recipient.objects.count() == 0
    assert connection.run_on_commit == []


@pytest.mark.django_db
def test_send_joins_caller_transaction(spool_backend, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            send_one()
            assert callbacks == []

    assert len(callbacks) == 1


@pytest.mark.django_db
def test_failed_write_raises_spool_error(spool_backend, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        with failing_inserts("mailhub_recipient"):
            with pytest.raises(SpoolError, match="simulated failure") as raised:
                send_one()

    assert isinstance(raised.value.__cause__, OperationalError)
    assert Message.objects.count() == 0
    assert callbacks == []


@pytest.mark.django_db
def test_fail_silently_returns_zero(spool_backend, django_capture_on_commit_callbacks, caplog):
    with django_capture_on_commit_callbacks() as callbacks:
        with failing_inserts("mailhub_message"):
            count = send_one(fail_silently=True)

    assert count == 0
    assert Message.objects.count() == 0
    assert callbacks == []
    assert "not spooled from=<site@example.com>" in caplog.text


@pytest.mark.django_db
def test_fail_silently_keeps_other_messages(spool_backend):
    datatuple = [
        ("First", "Body\n", "site@example.com", ["a@remote.test"]),
        ("Second", "Body\n", "site@example.com", ["b@remote.test"]),
    ]
    failures = iter([False, True])

    def fail_second_message(execute_query, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT") and "mailhub_message" in sql and next(failures):
            raise OperationalError("simulated failure writing mailhub_message")
        return execute_query(sql, params, many, context)

    with connection.execute_wrapper(fail_second_message):
        count = mail.send_mass_mail(datatuple, fail_silently=True)

    assert count == 1
    assert list(Message.objects.values_list("subject", flat=True)) == ["First"]
    assert list(Recipient.objects.values_list("address", flat=True)) == ["a@remote.test"]


@pytest.mark.django_db
def test_failed_batch_stores_none(spool_backend):
    datatuple = [
        ("First", "Body\n", "site@example.com", ["a@remote.test"]),
        ("Second", "Body\n", "site@example.com", ["b@remote.test"]),
    ]
    failures = iter([False, True])

    def fail_second_message(execute_query, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT") and "mailhub_message" in sql and next(failures):
            raise OperationalError("simulated failure writing mailhub_message")
        return execute_query(sql, params, many, context)

    with connection.execute_wrapper(fail_second_message):
        with pytest.raises(SpoolError):
            mail.send_mass_mail(datatuple)

    assert Message.objects.count() == 0
    assert Recipient.objects.count() == 0
