"""Failed-AUTH limits: a per-address cap on password checks that parallel sessions cannot
pass, and per-user-name delays that never lock the user out."""
import base64
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.signals import user_login_failed

from mailhub import conf
from mailhub.server.limits import AuthThrottle

from .conftest import PASSWORD, RawClient, message_text, proxy_v1_header

pytestmark = pytest.mark.django_db(transaction=True)

PARALLEL_SESSIONS = 20


def auth_attempt(client, login, password):
    token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    return client.command(f"AUTH PLAIN {token}")


def open_submissions_session(listeners, client_address=None):
    """Return a RawClient after EHLO on the implicit-TLS port, optionally behind a PROXY header."""
    client = RawClient(listeners.host, listeners.submissions_port)
    if client_address is not None:
        client.send(proxy_v1_header(client_address, listeners.submissions_port))
    client.start_tls(listeners.client_context())
    assert client.read_reply()[0] == 220
    assert client.command("EHLO client.test")[0] == 250
    return client


def auth_from(listeners, client_address, login, password):
    client = open_submissions_session(listeners, client_address)
    try:
        return auth_attempt(client, login, password)[0]
    finally:
        client.close()


@pytest.fixture
def failed_password_checks():
    """Collect the login of every password check that Django's authenticate() failed."""
    logins = []

    def record(sender, credentials, **kwargs):
        logins.append(credentials.get("username"))

    user_login_failed.connect(record, weak=False)
    yield logins
    user_login_failed.disconnect(record)


def test_parallel_sessions_bounded_per_address(mail_listeners, directory, settings, failed_password_checks):
    settings.MAILHUB_AUTH_MAX_FAILURES = 5
    clients = [open_submissions_session(mail_listeners) for _ in range(PARALLEL_SESSIONS)]
    passwords = [PASSWORD if index == PARALLEL_SESSIONS - 1 else f"guess{index}" for index in range(PARALLEL_SESSIONS)]
    start = threading.Barrier(PARALLEL_SESSIONS)

    def attempt(client, password):
        start.wait(30)
        return auth_attempt(client, "alice", password)[0]

    with ThreadPoolExecutor(PARALLEL_SESSIONS) as pool:
        codes = list(pool.map(attempt, clients, passwords))
    for client in clients:
        client.close()

    # A success gives its place back, so one more session may start a check after it.
    # The limit bounds the number of wrong guesses checked.
    assert len(failed_password_checks) <= 5
    assert codes.count(235) <= 1
    assert codes.count(421) >= PARALLEL_SESSIONS - 6
    assert set(codes) <= {235, 535, 421}


def test_address_over_limit_gets_421_before_check(mail_listeners, directory, settings, failed_password_checks):
    settings.MAILHUB_AUTH_MAX_FAILURES = 2
    codes = [auth_from(mail_listeners, None, "alice", f"guess{index}") for index in range(2)]
    blocked = auth_from(mail_listeners, None, "alice", PASSWORD)

    assert codes == [535, 421]
    assert blocked == 421
    assert len(failed_password_checks) == 2


def test_user_failures_421_without_lockout(mail_listeners, directory, settings, caplog):
    settings.MAILHUB_AUTH_MAX_FAILURES = 3
    settings.MAILHUB_PROXY_PROTOCOL = True
    caplog.set_level(logging.INFO, logger="mailhub.server.authentication")
    wrong = [auth_from(mail_listeners, f"198.51.100.{index}", "alice", "wrong") for index in range(1, 6)]
    right = [auth_from(mail_listeners, "203.0.113.9", "alice", PASSWORD) for _ in range(4)]
    messages = [record.getMessage() for record in caplog.records]

    # Failures of one name from many addresses end in 421 once the name is past the limit,
    # but the owner's correct password still gets in.
    assert wrong == [535, 535, 421, 421, 421]
    assert right == [235] * 4
    assert len([message for message in messages if "AUTH failed" in message]) == 5
    assert any("AUTH for 'alice' delayed" in message for message in messages)


def test_correct_password_while_delayed_not_counted(mail_listeners, directory, settings, failed_password_checks):
    """A mail client retrying with the right password after failures of its name gets in,
    and its attempts add no failures to its address."""
    settings.MAILHUB_AUTH_MAX_FAILURES = 2
    settings.MAILHUB_PROXY_PROTOCOL = True
    for index in range(1, 4):
        auth_from(mail_listeners, f"198.51.100.{index}", "alice", "wrong")
    retries = [auth_from(mail_listeners, "203.0.113.9", "alice", PASSWORD) for _ in range(3)]
    other_user = auth_from(mail_listeners, "203.0.113.9", "bob", PASSWORD)

    assert retries == [235, 235, 235]
    assert other_user == 235
    assert len(failed_password_checks) == 3


def test_unknown_user_and_wrong_password_same_reply(mail_listeners, directory, raw_client):
    wrong = raw_client("submissions", tls_context=mail_listeners.client_context())
    wrong.command("EHLO client.test")
    wrong_reply = auth_attempt(wrong, "alice", "wrong")
    unknown = raw_client("submissions", tls_context=mail_listeners.client_context())
    unknown.command("EHLO client.test")
    unknown_reply = auth_attempt(unknown, "nosuchuser", "wrong")

    assert wrong_reply == unknown_reply


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def throttle(settings):
    settings.MAILHUB_AUTH_MAX_FAILURES = 3
    settings.MAILHUB_AUTH_FAILURE_WINDOW = 60
    settings.MAILHUB_AUTH_FAILURE_DELAY = 1.0
    settings.MAILHUB_AUTH_FAILURE_MAX_DELAY = 4.0
    return AuthThrottle(clock=FakeClock())


def test_throttle_reserves_checks_in_flight(throttle):
    attempts = [throttle.reserve("192.0.2.1") for _ in range(4)]

    assert all(attempt is not None for attempt in attempts[:3])
    assert attempts[3] is None
    assert throttle.reserve("192.0.2.2") is not None


def test_throttle_success_gives_place_back(throttle):
    attempts = [throttle.reserve("192.0.2.1") for _ in range(3)]
    attempts[0].succeed("alice")
    attempts[1].fail("alice")
    attempts[1].settle()

    assert throttle.reserve("192.0.2.1") is not None
    assert throttle.reserve("192.0.2.1") is None
    assert throttle.recent_failures("192.0.2.1", "alice") == (1, 1)


def test_throttle_user_delay_grows_capped_never_blocks(throttle):
    delays = []
    for index in range(6):
        delays.append(throttle.user_delay("Alice"))
        throttle.reserve(f"192.0.2.{index}").fail("alice")

    assert delays == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert throttle.reserve("192.0.2.99") is not None


def test_throttle_failures_expire_after_window(throttle):
    for _ in range(3):
        throttle.reserve("192.0.2.1").fail("alice")
    blocked = throttle.reserve("192.0.2.1")
    throttle.clock.now += 61

    assert blocked is None
    assert throttle.reserve("192.0.2.1") is not None
    assert throttle.user_delay("alice") == 0.0


def test_mx_takes_mail_while_password_checks_wait(mail_listeners, directory, settings, monkeypatch):
    # More stuck password checks than database threads: the MX must still look up its
    # recipient and commit, because password checks run in threads of their own.
    settings.MAILHUB_AUTH_MAX_FAILURES = 0
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 0
    release = threading.Event()
    started = threading.Semaphore(0)

    def stuck_check(login, password):
        started.release()
        release.wait(60)

    monkeypatch.setattr("mailhub.server.auth.authenticate_login", stuck_check)
    checks = conf.get("SERVER_DB_THREADS") * 2
    with ThreadPoolExecutor(checks) as pool:
        attempts = [pool.submit(auth_from, mail_listeners, None, "alice", "wrong") for _ in range(checks)]
        assert started.acquire(timeout=30)
        try:
            with mail_listeners.smtp("mx", timeout=20) as client:
                rejected_recipients = client.sendmail("x@remote.test", ["bob@local.test"], message_text("x@remote.test", "bob@local.test"))
            still_waiting = not any(attempt.done() for attempt in attempts)
        finally:
            release.set()
        codes = [attempt.result(timeout=60) for attempt in attempts]

    assert rejected_recipients == {}
    assert still_waiting
    assert set(codes) == {535}
