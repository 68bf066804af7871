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

_executor = None
_pool_size = 0
_lock = threading.Lock()


def executor():
    global _executor, _pool_size
    with _lock:
        if _executor is None:
            _pool_size = conf.get("SERVER_DB_THREADS")
            _executor = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="mailhub-db")
        return _executor


def call_in_pool_thread(func, args, kwargs):
    try:
        return func(*args, **kwargs)
    except DatabaseError:
        connections.close_all()
        raise


async def run_in_db_thread(func, *args, **kwargs):
    loop = asyncio.get_running_loop()
    call = functools.partial(call_in_pool_thread, func, args, kwargs)
    return await loop.run_in_executor(executor(), call)


def close_thread_connections(barrier):
    """Close this thread's connections, then wait until every pool thread has run this task.

    While each task waits at the barrier its thread takes no other task, so a pool of N
    threads given N such tasks runs one in every thread, starting missing threads as needed.
    """
    connections.close_all()
    barrier.wait(CLOSE_TIMEOUT)


def shutdown():
    """Close every pool thread's connections and stop the pool; the next call starts a new one."""
    global _executor
    with _lock:
        pool, _executor = _executor, None
        pool_size = _pool_size
    if pool is None:
        return
    barrier = threading.Barrier(pool_size)
    futures = [pool.submit(close_thread_connections, barrier) for _ in range(pool_size)]
    wait(futures, CLOSE_TIMEOUT)
    pool.shutdown(wait=True)


def log_group_retry(prepared, error):
    """Log that a group failed on a lost database connection and goes again on a new one."""
    logger.warning(
        "group of %d messages not stored, database connection lost; retrying on a new connection (queue_ids=%s): %s",
        len(prepared),
        ",".join(item.queue_id for item in prepared),
        error,
    )
