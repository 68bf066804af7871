"""Helpers for the end-to-end tests: a local directory, a submission client and waiting."""
import smtplib

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from mailhub.models import Domain, Mailbox
from tests.support import waiting

PASSWORD = "correct horse battery staple"
SENDER = "postmaster@local.test"
WAIT_SECONDS = 180


@pytest.fixture
def local_directory(transactional_db):
    """local.test with the mailbox postmaster@, whose user may send as anyone."""
    user = get_user_model().objects.create_user("postmaster", password=PASSWORD)
    user.user_permissions.add(Permission.objects.get(codename="send_as_any"))
    domain = Domain.objects.create(name="local.test")
    return Mailbox.objects.create(domain=domain, local_part="postmaster", user=user)


def submission_client(listeners):
    """Return an smtplib client on the submission port after STARTTLS and AUTH."""
    client = smtplib.SMTP(listeners.host, listeners.submission_port, timeout=60, local_hostname="client.test")
    client.starttls(context=listeners.client_context())
    client.login("postmaster", PASSWORD)
    return client


def submit(client, sender, recipients, data):
    """Run one transaction and return the (code, text) reply to DATA, or the first failing reply."""
    mail_options = [] if data.isascii() else ["BODY=8BITMIME"]
    code, text = client.mail(sender, mail_options)
    if code != 250:
        client.rset()
        return code, text.decode(errors="replace")
    for recipient in recipients:
        code, text = client.rcpt(recipient)
        if code not in (250, 251):
            client.rset()
            return code, text.decode(errors="replace")
    code, text = client.data(data)
    return code, text.decode(errors="replace")


def sent_form(data):
    """Return the bytes a server stores for ``data``: smtplib ends the last line with CRLF."""
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def split_trace_header(stored, sent):
    """Return the prefix that the listener put before ``sent``, or None if ``stored`` doesn't end with it."""
    if not stored.endswith(sent):
        return None
    return stored[: len(stored) - len(sent)]


def is_one_received_header(prefix):
    """Return whether the bytes are exactly one folded Received: header field."""
    if not prefix.startswith(b"Received: ") or not prefix.endswith(b"\r\n"):
        return False
    lines = prefix[:-2].split(b"\r\n")
    return all(line[:1] in (b" ", b"\t") for line in lines[1:])


def wait_for(condition, describe, timeout=WAIT_SECONDS):
    return waiting.wait_for(condition, timeout=timeout, interval=0.25, describe=describe)
