"""Many clients at once and a large slow message."""
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailhub.models import Message, Recipient

from .conftest import message_text

pytestmark = pytest.mark.django_db(transaction=True)

SESSIONS = 300


def run_session(host, port, index, barrier):
    """Connect, wait until every session is connected, then send one message; return the reply."""
    client = smtplib.SMTP(host, port, timeout=120, local_hostname="client.test")
    try:
        barrier.wait(120)
        client.ehlo()
        client.mail(f"sender{index}@remote.test")
        client.rcpt("bob@local.test")
        code, text = client.data(message_text(f"sender{index}@remote.test", "bob@local.test", subject=f"load {index}"))
        client.quit()
        return code, text
    finally:
        client.close()


@pytest.mark.slow
def test_300_concurrent_sessions(mail_listeners, directory, settings):
    settings.MAILHUB_MAX_CONNECTIONS_PER_CLIENT = SESSIONS + 10
    barrier = threading.Barrier(SESSIONS)
    with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
        futures = [pool.submit(run_session, mail_listeners.host, mail_listeners.mx_port, i, barrier)
                   for i in range(SESSIONS)]
        results = [future.result(timeout=300) for future in futures]

    assert [code for code, _ in results] == [250] * SESSIONS
    assert Message.objects.count() == SESSIONS
    assert Recipient.objects.filter(address="bob@local.test").count() == SESSIONS
    queue_ids = {text.decode().rsplit(" ", 1)[-1] for _, text in results}
    assert queue_ids == set(Message.objects.values_list("queue_id", flat=True))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_20_megabytes_sent_slowly(mail_listeners, directory, raw_client, settings):
    """20 MB in 1 MB blocks 0.3 s apart: about 6 s in total, three times the command and
    data timeouts of 2 s, while each block arrives well inside them."""
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 2
    settings.MAILHUB_SERVER_DATA_TIMEOUT = 2
    line = b"x" * 998 + b"\r\n"
    block = line * 1048
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<x@remote.test> SIZE=21000000")
    client.command("RCPT TO:<bob@local.test>")
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: big and slow\r\n\r\n")
    started = time.monotonic()
    for _ in range(20):
        client.send(block)
        time.sleep(0.3)
    code, lines = client.command(b".\r\n")
    elapsed = time.monotonic() - started

    message = Message.objects.get()
    assert code == 250, lines
    assert elapsed > 2 * 2
    assert message.size > 20 * 1000 * 1000
    assert message.raw_bytes.endswith(block)
