"""Group commits on PostgreSQL, sent from the listeners' event loop.

With psycopg 3 a group is one statement that commits by itself (spool_rows). The
listeners send it over an asyncio connection of their own instead of through the thread
pool, because a pool thread waits for the event loop to release the GIL at every step.
With 10 sessions loading a 2-core machine, a group of four 4 KB messages took 3.6 ms
that way, against 1.5 ms for the same statement without the loop beside it.
The connection uses Django's parameters for the default database, in autocommit mode.
"""
from django.db import DEFAULT_DB_ALIAS, connections

from ..spool_rows import group_statement_and_params
from .database import log_group_retry

# Django's own cursor classes are synchronous; the asyncio connection uses psycopg's.
SYNC_ONLY_PARAMETERS = ("cursor_factory",)


class PostgresGroupWriter:
    """Stores groups of prepared messages over asyncio connections, one per group being committed.

    SERVER_GROUP_COMMIT_CONCURRENCY groups may commit at once, and each needs a connection
    of its own: psycopg runs one statement at a time on a connection.
    """

    def __init__(self):
        self.connections = set()
        self.idle = []

    async def store(self, prepared):
        """Insert the group and commit it; return the message ids in the order of ``prepared``.

        A connection that the server closed while idle (a restart, pg_terminate_backend)
        fails the first group sent on it, so a group that fails on a lost connection is
        sent once more on a new one. Queue ids are unique: a group that was committed
        before the connection went fails the second time instead of being stored twice.
        """
        for attempt in range(2):
            database = None
            try:
                database = await self.take_connection()
                message_ids = await execute(database, prepared)
            except Exception as error:  # noqa: BLE001 - any failure on a lost connection is retried once
                lost = database is None or database.broken or database.closed
                await self.give_back(database, usable=not lost)
                if attempt or not lost:
                    raise
                log_group_retry(prepared, error)
            else:
                await self.give_back(database, usable=True)
                return message_ids

    async def take_connection(self):
        if self.idle:
            return self.idle.pop()
        database = await open_connection()
        self.connections.add(database)
        return database

    async def give_back(self, database, usable):
        if database is None:
            return
        if usable:
            self.idle.append(database)
            return
        self.connections.discard(database)
        await database.close()

    async def close(self):
        """Close every connection, also one that a cancelled group left in use."""
        connections_to_close, self.connections, self.idle = self.connections, set(), []
        for database in connections_to_close:
            await database.close()


async def execute(database, prepared):
    sql, params = group_statement_and_params(prepared)
    async with database.cursor() as cursor:
        await cursor.execute(sql, params)
        ids_by_queue_id = dict(await cursor.fetchall())
    return [ids_by_queue_id[item.queue_id] for item in prepared]


async def open_connection():
    """Open an autocommit asyncio connection with Django's settings for the default database."""
    import psycopg
    from psycopg import sql

    wrapper = connections[DEFAULT_DB_ALIAS]
    parameters = wrapper.get_connection_params()
    for name in SYNC_ONLY_PARAMETERS:
        parameters.pop(name, None)
    database = await psycopg.AsyncConnection.connect(**parameters, autocommit=True)
    # Django runs the same statement on its own connections for this option.
    role = wrapper.settings_dict["OPTIONS"].get("assume_role")
    if role:
        await database.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return database
