"""The embedded broker's filesystem transport: a reader never sees a file half written."""
import threading
import time
import uuid

import pytest
from kombu import Connection

MESSAGES = 2000
DEADLINE_SECONDS = 60


@pytest.fixture
def queue_name():
    # kombu keeps queue bindings per process, so a name used by an earlier test would
    # skip writing this test's exchange table.
    return f"hints-{uuid.uuid4().hex}"


@pytest.fixture
def broker_options(tmp_path):
    folders = {name: tmp_path / name for name in ("queue", "control", "processed")}
    for folder in folders.values():
        folder.mkdir()
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
        "processed_folder": str(folders["processed"]),
        "store_processed": False,
    }


def connect(options):
    return Connection("filesystem://", transport="mailhub.broker:Transport", transport_options=options)


def publish_all(options, name, failures):
    try:
        with connect(options) as connection:
            queue = connection.SimpleQueue(name)
            for serial in range(MESSAGES):
                queue.put({"serial": serial, "padding": "x" * 2000})
    except Exception as error:  # noqa: BLE001 - the test reports any publishing error
        failures.append(error)


def consume_all(options, name, failures):
    received = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    with connect(options) as connection:
        queue = connection.SimpleQueue(name)
        while len(received) < MESSAGES and time.monotonic() < deadline:
            try:
                message = queue.get(timeout=0.01)
            except queue.Empty:
                continue
            except Exception as error:  # noqa: BLE001 - a torn file shows up here as a decoding error
                failures.append(error)
                continue
            received.append(message.payload["serial"])
            message.ack()
    return received


def test_concurrent_reader_gets_whole_messages(broker_options, queue_name):
    failures = []
    # Bound first: kombu records a binding in its per-process state before it writes the
    # exchange table, so a second thread of this process could publish to no table.
    with connect(broker_options) as connection:
        connection.SimpleQueue(queue_name).close()
    publisher = threading.Thread(target=publish_all, args=(broker_options, queue_name, failures))

    publisher.start()
    received = consume_all(broker_options, queue_name, failures)
    publisher.join(DEADLINE_SECONDS)

    assert failures == []
    assert sorted(received) == list(range(MESSAGES))


def test_no_temporary_files_left(broker_options, queue_name, tmp_path):
    with connect(broker_options) as connection:
        connection.SimpleQueue(queue_name).put({"serial": 1})

    leftovers = [path.name for path in tmp_path.rglob("*.partial")]
    assert leftovers == []
    assert len(list((tmp_path / "queue").glob(f"*.{queue_name}.msg"))) == 1
    assert queue_name in (tmp_path / "control" / f"{queue_name}.exchange").read_text()
