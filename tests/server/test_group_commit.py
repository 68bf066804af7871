"""Group commit: messages of concurrent sessions stored in one transaction, each 250 after its commit."""
import asyncio
import logging
import re
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from django.db import IntegrityError, connection, transaction

from mailhub import spool
from mailhub.models import Message, Recipient
from mailhub.server import database, replies
from mailhub.server.group_commit import GroupCommitter

from .conftest import message_text

pytestmark = pytest.mark.django_db(transaction=True)

SESSIONS = 6
WAIT_SECONDS = 60


def send_one(mail_listeners, index, before_data=None):
    """Send one message to the MX listener; return (code, reply text).

    ``before_data`` runs after RCPT, so a test can hold the spool once every recipient
    look-up is done.
    """
    with mail_listeners.smtp("mx", timeout=WAIT_SECONDS) as client:
        client.ehlo()
        client.mail(f"sender{index}@remote.test")
        client.rcpt("alice@local.test")
        if before_data is not None:
            before_data()
        try:
            code, text = client.data(
                message_text(f"sender{index}@remote.test", "alice@local.test", subject=f"group {index}")
            )
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error.decode()
        return code, text.decode()


def send_while_held(mail_listeners):
    """Send SESSIONS messages at once while the spool is held, so those after the first group form one more.

    Returns the (code, reply text) of each session in order.
    """
    recipients_checked = threading.Barrier(SESSIONS + 1)
    spool_held = threading.Event()

    def before_data():
        recipients_checked.wait(WAIT_SECONDS)
        spool_held.wait(WAIT_SECONDS)

    with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
        futures = [pool.submit(send_one, mail_listeners, index, before_data) for index in range(SESSIONS)]
        # SQLite's held write lock would also hold a look-up on a new connection, so
        # the lock is taken only once every RCPT has its reply.
        recipients_checked.wait(WAIT_SECONDS)
        with spool_writes_held():
            spool_held.set()
            # The first group waits for the lock; the messages that come later queue behind it.
            wait_until_queued(mail_listeners.thread.committer, SESSIONS)
        return [future.result(timeout=WAIT_SECONDS) for future in futures]


@contextmanager
def spool_writes_held():
    """Hold a lock from a second connection that makes the listeners' INSERT into the spool wait.

    Yields that connection's cursor; what the block does with it is committed when the
    lock is released.
    """
    holder = connection.copy()
    holder.set_autocommit(False)
    try:
        with holder.cursor() as cursor:
            if holder.vendor == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute(f"LOCK TABLE {Message._meta.db_table} IN EXCLUSIVE MODE")
            yield cursor
        holder.commit()
    finally:
        holder.close()


def wait_until_queued(committer, count):
    """Wait until ``count`` messages are in the blocked group or waiting for the next one."""
    deadline = time.monotonic() + WAIT_SECONDS
    while committer.committing + len(committer.waiting) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{committer.committing} + {len(committer.waiting)} messages queued, expected {count}")
        time.sleep(0.02)


def queue_id_of(reply_text):
    match = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9A-Z]+)", reply_text)
    assert match, reply_text
    return match.group(1)


def test_concurrent_sessions_commit_in_one_group(mail_listeners, directory, caplog):
    caplog.set_level(logging.DEBUG, logger="mailhub.server.group_commit")

    results = send_while_held(mail_listeners)

    assert [code for code, _text in results] == [250] * SESSIONS
    queue_ids = [queue_id_of(text) for _code, text in results]
    assert len(set(queue_ids)) == SESSIONS

    stored = {message.queue_id: message for message in Message.objects.all()}
    assert sorted(stored) == sorted(queue_ids)
    for index, queue_id in enumerate(queue_ids):
        raw = stored[queue_id].raw_bytes
        assert f" id {queue_id}".encode() in raw.split(b"\r\n\r\n", 1)[0]
        assert f"Subject: group {index}".encode() in raw
        assert stored[queue_id].envelope_sender == f"sender{index}@remote.test"
    assert Recipient.objects.filter(address="alice@local.test").count() == SESSIONS

    # The held group and the one that formed behind it: six messages in at most two commits.
    group_sizes = [
        int(match.group(1))
        for record in caplog.records
        if (match := re.match(r"group of (\d+) messages committed", record.getMessage()))
    ]
    assert len(group_sizes) <= 2, group_sizes
    assert sum(group_sizes) == SESSIONS


@contextmanager
def recipient_table_missing():
    """Rename the recipient table away, so a group's message INSERT succeeds and its recipient INSERT fails."""
    table = Recipient._meta.db_table
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(table + '_away')}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {quote(table + '_away')} RENAME TO {quote(table)}")


def test_failed_group_gets_451_stores_nothing(mail_listeners, directory):
    with recipient_table_missing():
        results = send_while_held(mail_listeners)

    store_failed = (replies.STORE_FAILED.code, f"{replies.STORE_FAILED.enhanced_code} {replies.STORE_FAILED.text}")
    assert results == [store_failed] * SESSIONS
    assert Message.objects.count() == 0
    assert Recipient.objects.count() == 0


def test_listener_stores_again_after_a_failed_group(mail_listeners, directory):
    with recipient_table_missing():
        failed = send_one(mail_listeners, 0)

    code, text = send_one(mail_listeners, 1)

    assert failed[0] == replies.STORE_FAILED.code
    assert code == 250
    assert list(Message.objects.values_list("queue_id", flat=True)) == [queue_id_of(text)]


@pytest.mark.parametrize("count", [1, 3, 5, 12])
def test_store_group_keeps_order_and_recipients(count):
    prepared = [
        spool.prepare(
            message_text(f"sender{index}@remote.test", "alice@local.test", subject=f"order {index}"),
            f"sender{index}@remote.test",
            [f"rcpt{index}-{number}@local.test" for number in range(index % 3 + 1)],
            source="mx",
            client_address="127.0.0.1",
            queue_id=f"ORDER{index:04d}",
        )
        for index in range(count)
    ]

    message_ids = spool.store_group(prepared)

    assert len(message_ids) == count
    for index, message_id in enumerate(message_ids):
        message = Message.objects.get(pk=message_id)
        assert message.queue_id == f"ORDER{index:04d}"
        assert message.envelope_sender == f"sender{index}@remote.test"
        assert message.subject == f"order {index}"
        assert message.client_address == "127.0.0.1"
        addresses = sorted(message.recipients.values_list("address", flat=True))
        assert addresses == [f"rcpt{index}-{number}@local.test" for number in range(index % 3 + 1)]
    assert set(Recipient.objects.values_list("status", flat=True)) == {Recipient.Status.QUEUED}
    assert set(Recipient.objects.values_list("attempts", "lease_token", "reply_code")) == {(0, "", None)}
    assert not Recipient.objects.filter(next_attempt_at__isnull=True).exists()


def test_store_group_stores_all_or_nothing():
    def prepare(queue_id):
        return spool.prepare(b"Subject: x\r\n\r\nx\r\n", "a@remote.test", ["alice@local.test"], source="mx", queue_id=queue_id)

    spool.store_group([prepare("TAKEN")])

    with pytest.raises(IntegrityError), transaction.atomic():
        spool.store_group([prepare("FRESH"), prepare("TAKEN")])

    assert list(Message.objects.values_list("queue_id", flat=True)) == ["TAKEN"]
    assert Recipient.objects.count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates server backends, which SQLite does not have")
def test_group_retried_after_terminated_connection(mail_listeners, directory):
    first_code, _text = send_one(mail_listeners, 0)
    with connection.cursor() as cursor:
        # The listeners' pool connections, as a database restart or an administrator would end them.
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (terminated,) = cursor.fetchone()

    code, text = send_one(mail_listeners, 1)

    assert first_code == 250
    assert terminated >= 1
    assert code == 250, text
    assert Message.objects.get(queue_id=queue_id_of(text)).recipients.get().address == "alice@local.test"


def test_drain_waits_for_handed_in_messages(monkeypatch):
    store_group = spool.store_group

    def slow_store_group(group):
        # Longer than drain()'s polling interval, so only a drain that waits finds it done.
        time.sleep(0.5)
        return store_group(group)

    monkeypatch.setattr(spool, "store_group", slow_store_group)
    monkeypatch.setattr("mailhub.server.group_commit.inserts_group_in_one_statement", lambda: False)
    prepared = [
        spool.prepare(b"Subject: x\r\n\r\nx\r\n", "a@remote.test", ["alice@local.test"], source="mx", queue_id=f"DRAIN{index}")
        for index in range(3)
    ]

    async def stop_while_storing():
        committer = GroupCommitter()
        stores = [asyncio.ensure_future(committer.store(item)) for item in prepared]
        await asyncio.sleep(0)
        await committer.drain(WAIT_SECONDS)
        done = [store.done() for store in stores]
        await committer.close()
        return done

    try:
        done = asyncio.run(stop_while_storing())
    finally:
        database.shutdown()

    assert done == [True, True, True]
    assert Message.objects.filter(queue_id__startswith="DRAIN").count() == 3


def test_bad_message_fails_alone():
    def prepare(queue_id):
        return spool.prepare(b"Subject: x\r\n\r\nx\r\n", "a@remote.test", ["alice@local.test"], source="mx", queue_id=queue_id)

    spool.store_group([prepare("TAKEN")])

    async def store_together():
        committer = GroupCommitter()
        # Handed in on one loop turn, so the three form one group.
        stores = [asyncio.ensure_future(committer.store(prepare(queue_id))) for queue_id in ("FRESH1", "TAKEN", "FRESH2")]
        results = await asyncio.gather(*stores, return_exceptions=True)
        await committer.close()
        return results

    try:
        first, duplicate, second = asyncio.run(store_together())
    finally:
        database.shutdown()

    assert isinstance(first, int)
    assert isinstance(second, int)
    assert isinstance(duplicate, Exception)
    assert set(Message.objects.values_list("queue_id", flat=True)) == {"TAKEN", "FRESH1", "FRESH2"}
