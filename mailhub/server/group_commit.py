"""Group commit: the messages of many sessions stored in one transaction.

Each session hands its prepared message to the listeners' GroupCommitter and waits. The
committer runs one transaction at a time (SERVER_GROUP_COMMIT_CONCURRENCY), in the
database thread pool or on PostgreSQL from the event loop (postgres_groups), and messages
that arrive while it runs form the next group. Under
load one commit stores many messages. With one transaction at a time, the listeners'
threads do not wait for each other on SQLite's write lock, though they still may wait
for a worker process. Every session's future is resolved only after its group has
committed, so a 250 still means stored. When a group fails, every message in it fails,
and the transaction stores none of them.
"""
import asyncio
import logging

from django.db import DatabaseError, DataError, IntegrityError, connection

from .. import conf, spool
from ..exceptions import ShuttingDown
from ..spool_rows import inserts_group_in_one_statement
from .database import log_group_retry, run_in_db_thread
from .delivery_hints import DeliveryHints
from .postgres_groups import PostgresGroupWriter

logger = logging.getLogger(__name__)

DRAIN_POLL_SECONDS = 0.02


class GroupCommitter:
    """Stores prepared messages of the listeners' sessions, many in one transaction."""

    def __init__(self):
        self.waiting = []
        self.accepting = True
        # Messages in the groups being committed now.
        self.committing = 0
        self.flushers = set()
        self.hints = DeliveryHints()
        self.postgres = PostgresGroupWriter()

    async def store(self, prepared):
        """Store one spool.PreparedMessage with the next group; return its message id once committed.

        Raises the group's database error when the group could not be stored, and
        ShuttingDown after stop_accepting().
        """
        if not self.accepting:
            raise ShuttingDown("the listeners are stopping")
        loop = asyncio.get_running_loop()
        stored = loop.create_future()
        self.waiting.append((prepared, stored))
        if len(self.flushers) < conf.get("SERVER_GROUP_COMMIT_CONCURRENCY"):
            self.flushers.add(loop.create_task(self.flush()))
        return await stored

    async def flush(self):
        """Commit the waiting messages group after group until none is left."""
        try:
            while self.waiting:
                group = self.take_group()
                self.committing += len(group)
                try:
                    await self.commit_group(group)
                finally:
                    self.committing -= len(group)
        finally:
            # In the same step as the last look at self.waiting, so a message added
            # after it always finds this task gone and starts another.
            self.flushers.discard(asyncio.current_task())

    def take_group(self):
        """Take the oldest waiting messages up to SERVER_GROUP_COMMIT_MAX_MESSAGES and _MAX_BYTES.

        A message whose session has gone (its future is cancelled) is dropped unstored.
        """
        self.waiting = [(prepared, stored) for prepared, stored in self.waiting if not stored.done()]
        max_messages = conf.get("SERVER_GROUP_COMMIT_MAX_MESSAGES")
        max_bytes = conf.get("SERVER_GROUP_COMMIT_MAX_BYTES")
        size = 0
        count = 0
        for prepared, _stored in self.waiting:
            if count and (count >= max_messages or size + prepared.fields["size"] > max_bytes):
                break
            size += prepared.fields["size"]
            count += 1
        group, self.waiting = self.waiting[:count], self.waiting[count:]
        return group

    async def store_group(self, prepared):
        if inserts_group_in_one_statement():
            return await self.postgres.store(prepared)
        return await run_in_db_thread(store_group, prepared)

    def stop_accepting(self):
        """Make every later store() raise ShuttingDown, so that drain() has an end."""
        self.accepting = False

    async def drain(self, timeout):
        """Stop accepting messages and wait up to ``timeout`` seconds for those handed in to be committed.

        The listeners call this when they stop, after they have stopped accepting
        connections, so that the sessions of a group being committed still get their
        reply. A stored message without a reply would be sent again by its client. The
        sessions that are still open get 421 for any later message instead.
        """
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (self.waiting or self.flushers) and loop.time() < started + timeout:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        # The sessions of the last group send their replies on the loop's next turns.
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        if self.waiting or self.flushers:
            logger.warning(
                "%d messages not stored within %.1f s; their sessions end without a reply, and a group "
                "being committed may still be stored, so its clients will send those messages again",
                len(self.waiting) + self.committing,
                loop.time() - started,
            )

    async def close(self):
        """Close the committer's own database connection; call it after the listeners stop."""
        await self.postgres.close()

    async def commit_group(self, group):
        if not group:
            return
        prepared = [item for item, _stored in group]
        try:
            message_ids = await self.store_group(prepared)
        except asyncio.CancelledError:
            # The loop is shutting down: the group's sessions end without a reply.
            for _item, stored in group:
                stored.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - every waiting session gets the error and answers 4xx
            if len(group) > 1 and is_data_error(error):
                # One message's content failed the whole statement, so the others must
                # not share its 451: each message is stored on its own.
                logger.warning(
                    "group of %d messages not stored (queue_ids=%s): %s; storing them one by one",
                    len(group),
                    ",".join(item.queue_id for item in prepared),
                    error,
                )
                for entry in group:
                    await self.commit_group([entry])
                return
            logger.warning(
                "group of %d messages not stored (queue_ids=%s): %s",
                len(group),
                ",".join(item.queue_id for item in prepared),
                error,
            )
            for _item, stored in group:
                if not stored.done():
                    stored.set_exception(error)
            return

        logger.debug(
            "group of %d messages committed (queue_ids=%s)",
            len(group),
            ",".join(item.queue_id for item in prepared),
        )
        for message_id, (_item, stored) in zip(message_ids, group):
            if not stored.done():
                stored.set_result(message_id)
        self.hints.add(message_ids, sum(len(item.recipients) for item in prepared))


def store_group(prepared):
    """Store a group of prepared messages as one transaction; return their message ids.

    A pool thread's connection may have died while idle (a database restart, an
    administrator's pg_terminate_backend), and each of the pool's threads would fail one
    group on it. A group that fails on a lost connection is tried once more on a new
    one. That is safe even when the group was committed just before the connection
    went: queue ids are unique, so the second try fails instead of storing it twice.
    """
    for attempt in range(2):
        used = None
        try:
            connection.ensure_connection()
            used = connection.connection
            return spool.store_group(prepared)
        except DatabaseError as error:
            if attempt or not connection_lost(used):
                raise
            connection.close()
            log_group_retry(prepared, error)


def connection_lost(used):
    """Return whether the database connection ``used`` for a failed group is gone."""
    if used is None:
        return False
    if connection.connection is not used:
        # Django dropped it after a failed rollback.
        return True
    # psycopg marks a connection that the server closed as broken.
    return bool(getattr(used, "broken", False) or getattr(used, "closed", False))


def is_data_error(error):
    """Return whether ``error`` comes from the rows themselves, not from the database connection."""
    if isinstance(error, (DataError, IntegrityError)):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(error, (psycopg.DataError, psycopg.IntegrityError))
