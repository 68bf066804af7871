"""Fixtures that run mailhub's real listeners (MX, submission, submissions) on 127.0.0.1.

The listeners run on an event loop in a background thread, bound to ephemeral ports, with
a certificate from a trustme CA. Their database calls run in other threads, so tests that
use them need committed rows: mark them ``django_db(transaction=True)``.
"""
import smtplib
import ssl
from dataclasses import dataclass

import pytest
import trustme

from mailhub.server.runner import ListenerAddress, ListenerThread
from mailhub.server.tls import CertificateStore

LISTENER_HOST = "127.0.0.1"
SERVER_NAME = "mailhub.test"


@dataclass
class RunningListeners:
    host: str
    mx_port: int
    submission_port: int
    submissions_port: int
    ca: trustme.CA
    certfile: str
    keyfile: str
    thread: ListenerThread

    def client_context(self):
        """Return a client SSLContext that trusts the test CA and checks the host name."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def smtp(self, name="mx", timeout=30):
        """Return an smtplib client connected to a listener; "submissions" speaks implicit TLS."""
        if name == "submissions":
            return smtplib.SMTP_SSL(
                self.host, self.submissions_port, timeout=timeout, context=self.client_context(),
                local_hostname="client.test",
            )
        port = self.mx_port if name == "mx" else self.submission_port
        return smtplib.SMTP(self.host, port, timeout=timeout, local_hostname="client.test")


@pytest.fixture(scope="session")
def listener_ca():
    return trustme.CA()


@pytest.fixture
def listener_certificate(listener_ca, tmp_path):
    """Write a server certificate for mailhub.test and 127.0.0.1 and return (certfile, keyfile)."""
    issued = listener_ca.issue_cert(SERVER_NAME, LISTENER_HOST)
    certfile = tmp_path / "server-cert.pem"
    keyfile = tmp_path / "server-key.pem"
    issued.private_key_pem.write_to_path(str(keyfile))
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    return str(certfile), str(keyfile)


@pytest.fixture
def mail_listeners(transactional_db, listener_ca, listener_certificate, settings):
    """Start the three listeners on ephemeral ports of 127.0.0.1 and stop them after the test."""
    certfile, keyfile = listener_certificate
    settings.MAILHUB_TLS_CERTFILE = certfile
    settings.MAILHUB_TLS_KEYFILE = keyfile
    addresses = [
        ListenerAddress("mx", LISTENER_HOST, 0),
        ListenerAddress("submission", LISTENER_HOST, 0),
        ListenerAddress("submissions", LISTENER_HOST, 0),
    ]
    thread = ListenerThread(addresses, CertificateStore(certfile, keyfile)).start()
    try:
        yield RunningListeners(
            host=LISTENER_HOST,
            mx_port=thread.port("mx"),
            submission_port=thread.port("submission"),
            submissions_port=thread.port("submissions"),
            ca=listener_ca,
            certfile=certfile,
            keyfile=keyfile,
            thread=thread,
        )
    finally:
        thread.stop()
