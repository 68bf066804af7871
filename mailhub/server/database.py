"""Database calls of the listeners, run in a thread pool so they do not block the event loop.

Each pool thread keeps its Django connection open between calls, because opening one
per SMTP command costs more than the query itself. A call that fails with a database
error closes its thread's connection, so the next call reconnects. ``shutdown()`` closes
every thread's connection, because a test database cannot be dropped while one is open.
"""
import asyncio
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from django.db import DatabaseError, connections

from .. import conf

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 30


class ThreadPool:
    """A thread pool started at its first call, sized by a setting read then."""

    def __init__(self, size_setting, thread_name_prefix):
        self.size_setting = size_setting
        self.thread_name_prefix = thread_name_prefix
        self.pool = None
        self.size = 0
        self.lock = threading.Lock()

    def executor(self):
        with self.lock:
            if self.pool is None:
                self.size = conf.get(self.size_setting)
                self.pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=self.thread_name_prefix)
            return self.pool

    async def run(self, func, *args, **kwargs):
        """Run ``func`` in a pool thread and return its result; a database error closes that thread's connections."""
        loop = asyncio.get_running_loop()
        call = functools.partial(call_in_pool_thread, func, args, kwargs)
        return await loop.run_in_executor(self.executor(), call)

    def shutdown(self):
        """Close every thread's connections and stop the pool; the next call starts a new one."""
        with self.lock:
            pool, self.pool = self.pool, None
            size = self.size
        if pool is None:
            return
        barrier = threading.Barrier(size)
        futures = [pool.submit(close_thread_connections, barrier) for _ in range(size)]
        wait(futures, CLOSE_TIMEOUT)
        pool.shutdown(wait=True)


DATABASE_THREADS = ThreadPool("SERVER_DB_THREADS", "mailhub-db")
# Password checks have threads of their own: each hashes for a long time (Django's PBKDF2
# iterations), and a burst of AUTH attempts in the database threads would hold up the
# recipient look-ups and commits of every session.
AUTH_THREADS = ThreadPool("SERVER_AUTH_THREADS", "mailhub-auth")


def executor():
    return DATABASE_THREADS.executor()


def call_in_pool_thread(func, args, kwargs):
    try:
        return func(*args, **kwargs)
    except DatabaseError:
        connections.close_all()
        raise


run_in_db_thread = DATABASE_THREADS.run
run_in_auth_thread = AUTH_THREADS.run


def close_thread_connections(barrier):
    """Close this thread's connections, then wait until every pool thread has run this task.

    While each task waits at the barrier its thread takes no other task, so a pool of N
    threads given N such tasks runs one in every thread, starting missing threads as needed.
    """
    connections.close_all()
    barrier.wait(CLOSE_TIMEOUT)


def shutdown():
    """Close the connections of every pool thread and stop the pools; the next call starts new ones."""
    DATABASE_THREADS.shutdown()
    AUTH_THREADS.shutdown()


def log_group_retry(prepared, error):
    """Log that a group failed on a lost database connection and goes again on a new one."""
    logger.warning(
        "group of %d messages not stored, database connection lost; retrying on a new connection (queue_ids=%s): %s",
        len(prepared),
        ",".join(item.queue_id for item in prepared),
        error,
    )
