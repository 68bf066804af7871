"""Database calls of the listeners, run in a thread pool so they do not block the event loop.

Each pool thread keeps its Django connection open between calls, because opening one
per SMTP command costs more than the query itself. A call that fails with a database
error closes its thread's connection, so the next call reconnects. ``shutdown()`` closes
every thread's connection, because a test database cannot be dropped while one is open.
"""
import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from django.db import DatabaseError, connections

from .. import conf

CLOSE_TIMEOUT = 30

_executor = None
_thread_ids = set()
_lock = threading.Lock()


def executor():
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=conf.get("SERVER_DB_THREADS"), thread_name_prefix="mailhub-db"
            )
        return _executor


def call_in_pool_thread(func, args, kwargs):
    with _lock:
        _thread_ids.add(threading.get_ident())
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
    """Close this thread's connections, then wait so every pool thread takes one such task."""
    connections.close_all()
    barrier.wait(CLOSE_TIMEOUT)


def shutdown():
    """Close every pool thread's connections and stop the pool; the next call starts a new one."""
    global _executor
    with _lock:
        pool, _executor = _executor, None
        thread_count = len(_thread_ids)
        _thread_ids.clear()
    if pool is None:
        return
    if thread_count:
        barrier = threading.Barrier(thread_count)
        futures = [pool.submit(close_thread_connections, barrier) for _ in range(thread_count)]
        wait(futures, CLOSE_TIMEOUT)
    pool.shutdown(wait=True)
