"""Safe bytes on the wire: CRLF line ends and dot-stuffing, whatever the stored message holds."""
import pytest

from mailhub.delivery.client import open_session
from mailhub.delivery.wire import encode_data, normalize_line_ends

from .conftest import envelope, route_to

TRICKY_BODY = (
    b"Subject: dots\r\n"
    b"\r\n"
    b"bare LF then a dot line\n.\r\n"
    b"bare CR then a dot line\r.\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b".leading dot\n"
    b"QUIT\r\n"
    b"last line without an end"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb\rc", b"a\r\nb\r\nc\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"x\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"x\r.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"..a\r\n", b"...a\r\n.\r\n"),
        (b"x\r\n\r\n.\n", b"x\r\n\r\n..\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_encode_data(raw, expected):
    assert encode_data(raw) == expected


def test_encoded_data_has_only_crlf_line_ends():
    data = encode_data(TRICKY_BODY)

    assert data.count(b"\r") == data.count(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")
    assert data.count(b"\r\n.\r\n") == 1
    assert data.endswith(b"\r\n.\r\n")


def test_tricky_body_reaches_peer_as_one_message(smtp_peer):
    peer = smtp_peer()

    with open_session(route_to(peer.host())) as session:
        replies = session.send(envelope("bob@remote.test", raw=TRICKY_BODY))

    assert replies[0].code == 250
    assert len(peer.messages) == 1
    assert peer.messages[0].content == normalize_line_ends(TRICKY_BODY) + b"\r\n"
    assert peer.sessions == 1

    wire = bytes(peer.wire[0])
    data_start = wire.index(b"DATA\r\n") + len(b"DATA\r\n")
    assert wire[data_start:] == encode_data(TRICKY_BODY) + b"QUIT\r\n"


def test_tricky_body_on_raw_socket(raw_smtp_peer):
    received = []

    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        for reply in ("250 raw.test", "250 2.1.0 OK", "250 2.1.5 OK", "354 go ahead"):
            connection.read_line()
            connection.send(reply + "\r\n")
        received.append(connection.read_data())
        connection.send("250 2.0.0 queued\r\n")
        received.append(connection.read_line())
        connection.send("221 bye\r\n")

    peer = raw_smtp_peer(script)

    with open_session(route_to(peer.host())) as session:
        replies = session.send(envelope("bob@remote.test", raw=TRICKY_BODY))

    assert replies[0].code == 250
    assert received == [encode_data(TRICKY_BODY), b"QUIT"]
