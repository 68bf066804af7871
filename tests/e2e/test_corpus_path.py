"""Every corpus message through the submission listener, a real worker and both delivery paths.

Each message goes in with CRLF line ends, as an SMTP client must send it, and must come out
byte for byte: in the local mailbox and at the remote test MX, after the one Received:
header the listener prepends. tests/server/test_corpus.py sends the corpus with swaks too.
"""
import pytest

from mailhub.models import MailboxMessage, Message
from tests.support.corpus import corpus_files, corpus_params, to_crlf

from .conftest import (
    SENDER,
    is_one_received_header,
    sent_form,
    split_trace_header,
    submission_client,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REMOTE_RECIPIENT = "bob@remote.test"


def policy_refusal(data):
    """Return why the listener's documented policy refuses ``data``, or None when it accepts it."""
    if b"\x00" in data:
        return "it contains a NUL byte, which RFC 5322 forbids and the listener rejects with 554 5.6.0"
    return None


@pytest.fixture
def corpus():
    files = corpus_files()
    if not files:
        pytest.skip(corpus_params()[0].marks[0].kwargs["reason"])
    return {path.name: to_crlf(path.read_bytes()) for path in files}


def submit_corpus(listeners, corpus, recipient):
    """Submit every corpus message in one session; return {name: (code, text)}."""
    replies = {}
    client = submission_client(listeners)
    try:
        for name, data in corpus.items():
            replies[name] = submit(client, SENDER, [recipient], data)
    finally:
        client.quit()
    return replies


def check_replies(corpus, replies):
    """Return the names whose reply does not match the policy, each with the reason."""
    problems = []
    for name, (code, text) in replies.items():
        reason = policy_refusal(corpus[name])
        if reason is None and code != 250:
            problems.append(f"{name}: expected 250, got {code} {text}")
        if reason is not None and not 500 <= code < 600:
            problems.append(f"{name}: should be refused because {reason}, got {code} {text}")
    return problems


def queue_ids(replies):
    """Map each accepted file name to the queue id that its 250 reply names."""
    return {name: text.rsplit(" ", 1)[-1] for name, (code, text) in replies.items() if code == 250}


def mailbox_mismatches(mailbox, accepted, corpus):
    """Wait for every accepted message in the mailbox; return the names not stored byte for byte."""
    wait_for(
        lambda: MailboxMessage.objects.filter(mailbox=mailbox).count() >= len(accepted),
        describe=f"{len(accepted)} messages in the local mailbox",
    )
    stored = dict(MailboxMessage.objects.filter(mailbox=mailbox).values_list("queue_id", "raw"))
    mismatches = []
    for name, queue_id in accepted.items():
        prefix = split_trace_header(bytes(stored[queue_id]), sent_form(corpus[name]))
        if prefix is None or not is_one_received_header(prefix):
            mismatches.append(name)
    return mismatches


def test_corpus_lands_in_local_mailbox(mail_listeners, local_directory, celery_worker_factory, corpus):
    replies = submit_corpus(mail_listeners, corpus, SENDER)
    assert check_replies(corpus, replies) == []
    accepted = queue_ids(replies)
    celery_worker_factory()

    assert mailbox_mismatches(local_directory, accepted, corpus) == [], "stored bytes differ from the bytes sent"


def test_corpus_reaches_remote_mx(settings, mail_listeners, local_directory, smtp_peer, celery_worker_factory, corpus):
    # Like Postfix, the peer takes lines longer than RFC 5321's 1000 octets, which two
    # corpus messages have; aiosmtpd's default would reject them with 500.
    peer = smtp_peer(hostname="mx.remote.test", line_length_limit=64 * 1024)
    settings.MAILHUB_ROUTES = {"remote.test": f"127.0.0.1:{peer.port}"}
    replies = submit_corpus(mail_listeners, corpus, REMOTE_RECIPIENT)
    assert check_replies(corpus, replies) == []
    accepted = queue_ids(replies)
    celery_worker_factory()

    wait_for(lambda: len(peer.messages) >= len(accepted), describe=f"{len(accepted)} messages at the remote MX")
    spooled = dict(Message.objects.filter(queue_id__in=accepted.values()).values_list("queue_id", "raw"))
    received = {bytes(message.content) for message in peer.messages}
    mismatches = []
    for name, queue_id in accepted.items():
        raw = bytes(spooled[queue_id])
        prefix = split_trace_header(raw, sent_form(corpus[name]))
        if raw not in received or prefix is None or not is_one_received_header(prefix):
            mismatches.append(name)
    assert mismatches == [], "bytes at the remote MX differ from the bytes sent"


def test_nul_byte_refused_with_5xx(mail_listeners, local_directory):
    data = b"From: postmaster@local.test\r\nSubject: nul\r\n\r\nbefore\x00after\r\n"
    client = submission_client(mail_listeners)
    try:
        code, text = submit(client, SENDER, [SENDER], data)
    finally:
        client.quit()

    assert 500 <= code < 600, text
    assert "NUL" in text
    assert not Message.objects.exists()
