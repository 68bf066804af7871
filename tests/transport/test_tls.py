"""STARTTLS policies, the STARTTLS injection case and AUTH, against peers with trustme certificates."""
import ssl

import pytest
from aiosmtpd.smtp import AuthResult

from mailhub.delivery.client import open_session
from mailhub.delivery.errors import TemporaryDeliveryError

from .conftest import envelope, route_to


@pytest.fixture
def tls_peer(smtp_peer, tls_certificates):
    return smtp_peer(hostname="mx1.remote.test", tls_context=tls_certificates.server_context())


def deliver(route, *recipients):
    with open_session(route) as session:
        return session.send(envelope(*recipients)), session


def test_may_delivers_encrypted(tls_peer):
    replies, session = deliver(route_to(tls_peer.host(), tls_policy="may"), "bob@remote.test")

    assert replies[0].code == 250
    assert session.tls is True
    assert session.tls_version.startswith("TLS")
    assert tls_peer.messages[0].tls is True
    assert bytes(tls_peer.cleartext[0]) == b"EHLO mailhub.test\r\nSTARTTLS\r\n"
    assert b"MAIL FROM" in bytes(tls_peer.wire[0])


def test_may_without_starttls_delivers_in_clear(smtp_peer):
    peer = smtp_peer()

    replies, session = deliver(route_to(peer.host(), tls_policy="may"), "bob@remote.test")

    assert replies[0].code == 250
    assert session.tls is False


def test_none_never_starts_tls(tls_peer):
    replies, session = deliver(route_to(tls_peer.host(), tls_policy="none"), "bob@remote.test")

    assert replies[0].code == 250
    assert tls_peer.messages[0].tls is False
    assert b"STARTTLS" not in bytes(tls_peer.wire[0])


def test_encrypt_without_starttls_sends_nothing(smtp_peer):
    peer = smtp_peer()

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route_to(peer.host(), tls_policy="encrypt"))

    assert raised.value.reply.code == 451
    assert "STARTTLS" in raised.value.reply.text
    assert peer.messages == []
    assert b"MAIL FROM" not in b"".join(bytes(wire) for wire in peer.wire)


def test_encrypt_accepts_untrusted_certificate(tls_peer, settings):
    settings.MAILHUB_TLS_CA_FILE = ""

    replies, session = deliver(route_to(tls_peer.host(), tls_policy="encrypt"), "bob@remote.test")

    assert replies[0].code == 250
    assert tls_peer.messages[0].tls is True


def test_verify_with_trusted_ca_delivers(tls_peer, tls_certificates, settings):
    settings.MAILHUB_TLS_CA_FILE = tls_certificates.ca_file

    replies, session = deliver(route_to(tls_peer.host(), tls_policy="verify"), "bob@remote.test")

    assert replies[0].code == 250
    assert tls_peer.messages[0].tls is True


def test_verify_with_untrusted_certificate_defers(tls_peer, settings, tmp_path):
    other_ca = pytest.importorskip("trustme").CA()
    ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(ca_file))
    settings.MAILHUB_TLS_CA_FILE = str(ca_file)

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route_to(tls_peer.host(), tls_policy="verify"))

    assert raised.value.reply.enhanced_code == "4.7.5"
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.reply.text
    assert tls_peer.messages == []


def test_verify_with_wrong_host_name_defers(tls_peer, tls_certificates, settings):
    settings.MAILHUB_TLS_CA_FILE = tls_certificates.ca_file

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route_to(tls_peer.host("mx.elsewhere.test"), tls_policy="verify"))

    assert "mx.elsewhere.test" in raised.value.reply.text
    assert tls_peer.messages == []


def test_may_falls_back_to_clear_after_failed_handshake(raw_smtp_peer):
    sessions = []

    def script(connection):
        sessions.append(connection)
        connection.send("220 raw.test ESMTP\r\n")
        connection.read_line()
        connection.send("250-raw.test\r\n250 STARTTLS\r\n")
        command = connection.read_line()
        if command == b"STARTTLS":
            # Replies 220 but then sends plain text instead of a TLS handshake, so the handshake fails.
            connection.send("220 go ahead\r\n")
            connection.send("this is not TLS\r\n" * 4)
            return
        connection.send("250 2.1.0 OK\r\n")
        connection.read_line()
        connection.send("250 2.1.5 OK\r\n")
        connection.read_line()
        connection.send("354 go ahead\r\n")
        connection.read_data()
        connection.send("250 2.0.0 queued in clear\r\n")
        connection.read_line()
        connection.send("221 bye\r\n")

    peer = raw_smtp_peer(script)

    replies, session = deliver(route_to(peer.host(), tls_policy="may"), "bob@remote.test")

    assert replies[0].text == "queued in clear"
    assert session.tls is False
    assert len(sessions) == 2


def test_starttls_injected_reply_is_discarded(raw_smtp_peer, tls_certificates):
    """A reply sent in clear with the 220 to STARTTLS must not answer the first command over TLS."""
    server_context = tls_certificates.server_context()
    commands_after_tls = []

    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        connection.read_line()
        connection.send("250-raw.test\r\n250 STARTTLS\r\n")
        assert connection.read_line() == b"STARTTLS"
        connection.send("220 go\r\n250 injected\r\n")
        connection.start_tls(server_context)

        ehlo = connection.read_line()
        commands_after_tls.append(ehlo)
        connection.send("250-raw.test after TLS\r\n250-X-AFTER-TLS\r\n250 8BITMIME\r\n")
        for reply in ("250 2.1.0 sender OK", "250 2.1.5 recipient OK", "354 go ahead"):
            commands_after_tls.append(connection.read_line())
            connection.send(reply + "\r\n")
        connection.read_data()
        connection.send("250 2.0.0 queued over TLS\r\n")
        commands_after_tls.append(connection.read_line())
        connection.send("221 bye\r\n")

    peer = raw_smtp_peer(script)

    replies, session = deliver(route_to(peer.host("peer.test"), tls_policy="may"), "bob@remote.test")

    assert session.tls is True
    assert "X-AFTER-TLS" in session.extensions
    assert commands_after_tls[0] == b"EHLO mailhub.test"
    assert commands_after_tls[1:4] == [b"MAIL FROM:<alice@sender.test>", b"RCPT TO:<bob@remote.test>", b"DATA"]
    assert replies[0].text == "queued over TLS"
    assert peer.errors == []


def test_smtplib_discards_injected_reply(raw_smtp_peer, tls_certificates):
    """Python's smtplib, which other mail code here may use, also drops the injected reply."""
    import smtplib

    server_context = tls_certificates.server_context()
    seen = []

    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        connection.read_line()
        connection.send("250-raw.test\r\n250 STARTTLS\r\n")
        connection.read_line()
        connection.send("220 go\r\n250 injected\r\n")
        connection.start_tls(server_context)
        seen.append(connection.read_line())
        connection.send("250 raw.test after TLS\r\n")
        seen.append(connection.read_line())
        connection.send("221 bye\r\n")

    peer = raw_smtp_peer(script)
    client = smtplib.SMTP("127.0.0.1", peer.port, timeout=5)
    client.ehlo("mailhub.test")
    client.starttls(context=ssl._create_unverified_context())
    code, text = client.ehlo("mailhub.test")
    client.quit()

    assert (code, text) == (250, b"raw.test after TLS")
    assert [line.upper() for line in seen] == [b"EHLO MAILHUB.TEST", b"QUIT"]


class Credentials:
    """An aiosmtpd authenticator that accepts one user name and password and records attempts."""

    def __init__(self, username, password):
        self.expected = (username.encode(), password.encode())
        self.attempts = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.attempts.append((mechanism, auth_data.login, session.ssl is not None))
        return AuthResult(success=(auth_data.login, auth_data.password) == self.expected, handled=False)


def test_relay_auth_over_tls(smtp_peer, tls_certificates, caplog):
    credentials = Credentials("relayuser", "s3cret")
    peer = smtp_peer(hostname="relay.test", tls_context=tls_certificates.server_context(), authenticator=credentials)
    route = route_to(peer.host(), tls_policy="encrypt", username="relayuser", password="s3cret")

    with caplog.at_level("DEBUG", logger="mailhub"):
        replies, session = deliver(route, "bob@remote.test")

    assert replies[0].code == 250
    assert credentials.attempts == [("PLAIN", b"relayuser", True)]
    assert "queue_id=Q1 recipient=bob@remote.test" in caplog.text
    assert "s3cret" not in caplog.text
    assert "Hello." not in caplog.text


def test_relay_auth_failure_defers(smtp_peer, tls_certificates):
    credentials = Credentials("relayuser", "s3cret")
    peer = smtp_peer(hostname="relay.test", tls_context=tls_certificates.server_context(), authenticator=credentials)
    route = route_to(peer.host(), tls_policy="encrypt", username="relayuser", password="wrong")

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route)

    assert "authentication failed" in raised.value.reply.text
    assert "wrong" not in raised.value.reply.text
    assert peer.messages == []


def test_credentials_never_sent_in_clear(smtp_peer):
    credentials = Credentials("relayuser", "s3cret")
    peer = smtp_peer(hostname="relay.test", authenticator=credentials)
    route = route_to(peer.host(), tls_policy="may", username="relayuser", password="s3cret")

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route)

    assert "TLS was not started" in raised.value.reply.text
    assert credentials.attempts == []
    assert b"AUTH" not in bytes(peer.wire[0])


def test_relay_auth_login_when_plain_not_offered(smtp_peer, tls_certificates):
    credentials = Credentials("relayuser", "s3cret")
    peer = smtp_peer(
        hostname="relay.test", tls_context=tls_certificates.server_context(),
        authenticator=credentials, auth_exclude=["PLAIN"],
    )
    route = route_to(peer.host(), tls_policy="encrypt", username="relayuser", password="s3cret")

    replies, session = deliver(route, "bob@remote.test")

    assert replies[0].code == 250
    assert credentials.attempts == [("LOGIN", b"relayuser", True)]
