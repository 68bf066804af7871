"""EHLO lists per listener, AUTH availability, and TLS as real clients (smtplib, swaks, openssl) see them."""
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from mailhub.models import Message

from ..support.waiting import wait_for
from .conftest import PASSWORD, message_text

pytestmark = pytest.mark.django_db(transaction=True)

COMMON = {"size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "dsn"}


def ehlo_features(client):
    client.ehlo()
    return set(client.esmtp_features)


def test_mx_ehlo_offers_starttls_no_auth(mail_listeners):
    with mail_listeners.smtp("mx") as client:
        before = ehlo_features(client)
        size = client.esmtp_features["size"]
        client.starttls(context=mail_listeners.client_context())
        after = ehlo_features(client)

    assert before == COMMON | {"starttls"}
    assert size == str(25 * 1024 * 1024)
    assert after == COMMON


def test_submission_offers_auth_only_after_starttls(mail_listeners):
    with mail_listeners.smtp("submission") as client:
        before = ehlo_features(client)
        client.starttls(context=mail_listeners.client_context())
        after = ehlo_features(client)
        mechanisms = client.esmtp_features["auth"].split()

    assert before == COMMON | {"starttls"}
    assert after == COMMON | {"auth"}
    assert mechanisms == ["PLAIN", "LOGIN"]


def test_submissions_offers_auth_at_once(mail_listeners):
    with mail_listeners.smtp("submissions") as client:
        features = ehlo_features(client)

    assert features == COMMON | {"auth"}


def test_size_follows_setting(mail_listeners, settings):
    settings.MAILHUB_MAX_MESSAGE_SIZE = 12345
    with mail_listeners.smtp("mx") as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "12345"


def test_auth_refused_in_clear(mail_listeners, directory, raw_client):
    client = raw_client("submission")
    client.command("EHLO client.test")
    code, lines = client.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==")

    assert code == 538
    assert lines[0].startswith("538 5.7.11")


def test_mx_refuses_auth(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    code, _lines = client.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==")

    assert code == 503


def test_plain_auth_from_loopback_when_allowed(mail_listeners, directory, settings):
    settings.MAILHUB_ALLOW_PLAIN_AUTH_FROM_LOOPBACK = True
    with mail_listeners.smtp("submission") as client:
        features = ehlo_features(client)
        client.login("alice", PASSWORD)

    assert "auth" in features


def test_auth_login_mechanism(mail_listeners, directory):
    with mail_listeners.smtp("submissions") as client:
        client.ehlo()
        client.user, client.password = "bob", PASSWORD
        code, _text = client.auth("LOGIN", client.auth_login, initial_response_ok=False)

    assert code == 235


def test_received_names_protocol_and_tls(mail_listeners, directory, settings):
    settings.MAILHUB_RECEIVED_SHOWS_USER = True
    with mail_listeners.smtp("submissions") as client:
        client.login("alice", PASSWORD)
        client.sendmail("alice@local.test", ["x@remote.test"], message_text("alice@local.test", "x@remote.test"))
    with mail_listeners.smtp("mx") as client:
        client.sendmail("x@remote.test", ["bob@local.test"], message_text("x@remote.test", "bob@local.test"))
    with mail_listeners.smtp("mx") as client:
        client.helo("old.client.test")
        client.sendmail("x@remote.test", ["bob@local.test"], message_text("x@remote.test", "bob@local.test"))

    submitted, relayed, plain = [m.raw_bytes.split(b";", 1)[0] for m in Message.objects.order_by("id")]
    assert re.search(rb"with ESMTPSA \(TLSv1\.[23]:[A-Z0-9_-]+\)", submitted)
    assert b"(authenticated as alice)" in submitted
    assert re.search(rb"with ESMTP id [0-9A-Z]+\r\n", relayed)
    assert b"for <bob@local.test>" in relayed
    assert b"with SMTP" in plain
    for message in Message.objects.all():
        assert f" id {message.queue_id}".encode() in message.raw_bytes.split(b";", 1)[0]


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_ehlo_and_auth_after_starttls(mail_listeners, directory):
    base = ["swaks", "--server", mail_listeners.host, "--port", str(mail_listeners.submission_port),
            "--ehlo", "client.test", "--from", "alice@local.test", "--to", "bob@remote.test"]
    clear = subprocess.run(base + ["--quit-after", "EHLO"], capture_output=True, text=True, timeout=60)
    secured = subprocess.run(
        base + ["--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD,
                "--tls-verify", "--tls-ca-path", ca_file(mail_listeners)],
        capture_output=True, text=True, timeout=60,
    )

    assert re.search(r"250[- ]STARTTLS", clear.stdout)
    assert "AUTH" not in clear.stdout
    assert secured.returncode == 0, secured.stdout + secured.stderr
    assert re.search(r"250[- ]AUTH PLAIN LOGIN", secured.stdout)
    assert "235 2.7.0" in secured.stdout
    assert re.search(r"250 2\.0\.0 Ok: queued as [0-9A-Z]{12}", secured.stdout)
    assert Message.objects.get().envelope_sender == "alice@local.test"


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_auth_refused_in_clear(mail_listeners, directory):
    result = subprocess.run(
        ["swaks", "--server", mail_listeners.host, "--port", str(mail_listeners.submission_port),
         "--ehlo", "client.test", "--from", "alice@local.test", "--to", "bob@remote.test",
         "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert Message.objects.count() == 0


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_implicit_tls(mail_listeners, directory):
    result = subprocess.run(
        ["swaks", "--server", mail_listeners.host, "--port", str(mail_listeners.submissions_port),
         "--tls-on-connect", "--ehlo", "client.test", "--from", "alice@local.test", "--to", "bob@remote.test",
         "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", PASSWORD],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert Message.objects.count() == 1


def ca_file(mail_listeners):
    path = mail_listeners.certfile.replace("server-cert.pem", "ca.pem")
    mail_listeners.ca.cert_pem.write_to_path(path)
    return path


def openssl_session(mail_listeners, *extra):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{mail_listeners.host}:{mail_listeners.submission_port}",
         "-starttls", "smtp", "-CAfile", ca_file(mail_listeners), *extra],
        input="QUIT\r\n", capture_output=True, text=True, timeout=60,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_starttls_negotiates_tls12_or_newer(mail_listeners):
    result = openssl_session(mail_listeners)
    tls11 = openssl_session(mail_listeners, "-tls1_1")

    assert re.search(r"Protocol\s*:\s*TLSv1\.[23]", result.stdout) or re.search(r"New, TLSv1\.[23]", result.stdout)
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "Cipher is (NONE)" in tls11.stdout or tls11.returncode != 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_certificate_replaced_without_restart(mail_listeners, tmp_path):
    first = openssl_session(mail_listeners)
    replacement = mail_listeners.ca.issue_cert("mailhub.test", "127.0.0.1", common_name="renewed.mailhub.test")
    new_key = tmp_path / "new-key.pem"
    new_cert = tmp_path / "new-cert.pem"
    replacement.private_key_pem.write_to_path(str(new_key))
    replacement.cert_chain_pems[0].write_to_path(str(new_cert))
    shutil.move(str(new_key), mail_listeners.keyfile)
    shutil.move(str(new_cert), mail_listeners.certfile)
    second = openssl_session(mail_listeners)

    assert "renewed.mailhub.test" not in first.stdout
    assert "CN = renewed.mailhub.test" in second.stdout or "CN=renewed.mailhub.test" in second.stdout
    assert "Verify return code: 0 (ok)" in second.stdout


def test_certificate_without_its_key_keeps_the_old_pair(mail_listeners, caplog):
    # A renewal that has written the new certificate but not yet its key.
    caplog.set_level(logging.INFO)
    replacement = mail_listeners.ca.issue_cert("mailhub.test", "127.0.0.1", common_name="half.mailhub.test")
    replacement.cert_chain_pems[0].write_to_path(mail_listeners.certfile)

    with mail_listeners.smtp("submissions") as client:
        code, _ = client.ehlo()

    assert code == 250
    assert any("not reloaded, serving the previous one" in record.getMessage() for record in caplog.records)


def abort_handshakes(mail_listeners):
    """Start TLS handshakes on the implicit-TLS port that never complete, in four ways."""
    address = (mail_listeners.host, mail_listeners.submissions_port)

    socket.create_connection(address, timeout=10).close()

    plaintext = socket.create_connection(address, timeout=10)
    plaintext.sendall(b"EHLO client.test\r\n")
    try:
        plaintext.recv(1024)
    except OSError:
        pass
    plaintext.close()

    tls10 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls10.check_hostname = False
    tls10.verify_mode = ssl.CERT_NONE
    tls10.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls10.minimum_version = tls10.maximum_version = ssl.TLSVersion.TLSv1
    with socket.create_connection(address, timeout=10) as raw, pytest.raises((ssl.SSLError, OSError)):
        tls10.wrap_socket(raw, server_hostname="mailhub.test")

    # Connects and sends nothing, so the handshake times out on the server.
    return socket.create_connection(address, timeout=10)


def test_aborted_tls_handshakes_leave_no_traceback(mail_listeners, settings, caplog):
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    caplog.set_level(logging.INFO)
    idle = abort_handshakes(mail_listeners)
    limiter = mail_listeners.thread.connection_limiter

    def failed():
        return [record for record in caplog.records if "TLS handshake failed" in record.getMessage()]

    # The idle connection is counted only once the server has accepted it, and its
    # handshake fails only after the command timeout.
    wait_for(lambda: len(failed()) >= 3 and limiter.total == 0, timeout=30, describe="every aborted session to end")
    idle.close()
    # Longer than the command timeout, so a timer that a dead session left behind would fire.
    time.sleep(2.5)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]

    assert [record.getMessage() for record in errors] == []
    assert limiter.total == 0
    assert len(failed()) >= 3


def test_session_usable_after_aborted_handshakes(mail_listeners, settings):
    settings.MAILHUB_SERVER_COMMAND_TIMEOUT = 1
    abort_handshakes(mail_listeners).close()
    with mail_listeners.smtp("submissions") as client:
        features = ehlo_features(client)

    assert features == COMMON | {"auth"}
