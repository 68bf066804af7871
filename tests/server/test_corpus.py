"""Real-world messages through the submission listener land in the spool byte for byte."""
import shutil
import subprocess

import pytest

from mailhub.models import Message
from tests.support.corpus import corpus_files, corpus_params, to_crlf

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

# No corpus message is rejected by a documented policy today. A file that should be (a NUL
# byte, a line over MAX_LINE_LENGTH) goes here as name: (reason, expected reply code).
REFUSED = {}


def expected_stored(raw):
    """Return the bytes a listener stores after its Received: field: smtplib and swaks end
    the data with CRLF when the message does not."""
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def assert_stored_as_sent(message, expected, name):
    """The stored bytes are exactly one prepended Received: field followed by the message."""
    stored = message.raw_bytes
    trace = stored[: len(stored) - len(expected)]
    assert stored.endswith(expected), name
    assert trace.startswith(b"Received: from client.test "), name
    assert trace.endswith(b"\r\n"), name
    assert trace.count(b"Received:") == 1, name


def test_corpus_through_smtplib(mail_listeners, directory):
    files = corpus_files()
    if not files:
        pytest.skip("corpus folder is absent; set MAILHUB_CORPUS_DIR")
    replies = {}
    with mail_listeners.smtp("submissions") as client:
        client.login("postmaster", PASSWORD)
        for path in files:
            raw = to_crlf(path.read_bytes())
            client.rset()
            client.mail("postmaster@local.test", ["BODY=8BITMIME"])
            client.rcpt("bob@local.test")
            replies[path.name] = (client.data(raw), raw)

    for name, ((code, text), raw) in replies.items():
        if name in REFUSED:
            assert code == REFUSED[name][1], name
            continue
        assert code == 250, f"{name}: {code} {text!r}"
        queue_id = text.decode().rsplit(" ", 1)[-1]
        message = Message.objects.get(queue_id=queue_id)
        assert_stored_as_sent(message, expected_stored(raw), name)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
@pytest.mark.parametrize("path", corpus_params())
def test_corpus_through_swaks(mail_listeners, directory, path, tmp_path):
    raw = to_crlf(path.read_bytes())
    data_file = tmp_path / "message.eml"
    data_file.write_bytes(raw)
    result = subprocess.run(
        ["swaks", "--server", mail_listeners.host, "--port", str(mail_listeners.submissions_port),
         "--tls-on-connect", "--ehlo", "client.test", "--auth", "PLAIN", "--auth-user", "postmaster",
         "--auth-password", PASSWORD, "--from", "postmaster@local.test", "--to", "bob@local.test",
         "--data", f"@{data_file}"],
        capture_output=True, timeout=60,
    )

    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    assert_stored_as_sent(Message.objects.get(), data_from_transcript(result.stdout), path.name)


def data_from_transcript(transcript):
    """Return the message data swaks sent, read from its transcript and un-dot-stuffed.

    swaks edits a file given with --data (it drops a leading mbox "From " line and adjusts
    trailing line ends), so the bytes it sent, not the file, are what the spool must hold.
    """
    lines = transcript.split(b"\n")
    start = lines.index(b" ~> DATA") + 2
    end = lines.index(b" ~> .", start)
    # The transcript prints each sent line with the CR of its CRLF, where the file had one.
    sent = [line[4:].removesuffix(b"\r") for line in lines[start:end]]
    assert all(line.startswith(b" ~> ") for line in lines[start:end])
    unstuffed = [line[1:] if line.startswith(b".") else line for line in sent]
    return b"".join(line + b"\r\n" for line in unstuffed)
