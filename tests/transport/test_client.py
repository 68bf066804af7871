"""The SMTP client session against real aiosmtpd peers on 127.0.0.1."""
import socket

import pytest

from mailhub.delivery.client import open_session
from mailhub.delivery.errors import TemporaryDeliveryError
from mailhub.delivery.routing import resolve_route
from mailhub.delivery.types import RemoteHost

from .conftest import MESSAGE, envelope, route_to


def closed_port_host(name="down.remote.test"):
    """Return a RemoteHost on a 127.0.0.1 port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return RemoteHost(name, "127.0.0.1", port)


def deliver(route, *recipients, **options):
    with open_session(route) as session:
        return session.send(envelope(*recipients, **options))


def test_delivers_to_peer(smtp_peer):
    peer = smtp_peer(hostname="mx1.remote.test")

    replies = deliver(route_to(peer.host()), "bob@remote.test")

    assert [reply.code for reply in replies] == [250]
    assert replies[0].remote_host == f"mx1.remote.test[127.0.0.1]:{peer.port}"
    assert len(peer.messages) == 1
    assert peer.messages[0].envelope_sender == "alice@sender.test"
    assert peer.messages[0].recipients == ["bob@remote.test"]
    assert peer.messages[0].content == MESSAGE


def test_ehlo_names_configured_hostname(smtp_peer, settings):
    settings.MAILHUB_HOSTNAME = "out.mailhub.test"
    peer = smtp_peer()

    deliver(route_to(peer.host()), "bob@remote.test")

    assert bytes(peer.wire[0]).startswith(b"EHLO out.mailhub.test\r\n")


def test_refused_connection_moves_to_next_host(smtp_peer):
    peer = smtp_peer(hostname="mx2.remote.test")

    replies = deliver(route_to(closed_port_host(), peer.host()), "bob@remote.test")

    assert replies[0].code == 250
    assert replies[0].remote_host.startswith("mx2.remote.test[")
    assert len(peer.messages) == 1


def test_stopped_peer_fails_over_then_recovers(smtp_peer):
    first = smtp_peer(hostname="mx1.remote.test")
    second = smtp_peer(hostname="mx2.remote.test")
    route = route_to(first.host(), second.host())

    first.stop()
    deliver(route, "bob@remote.test")
    first.start()
    deliver(route, "carol@remote.test")

    assert second.received_recipients() == ["bob@remote.test"]
    assert first.received_recipients() == ["carol@remote.test"]


def test_temporary_greeting_moves_to_next_host(smtp_peer):
    busy = smtp_peer(hostname="mx1.remote.test")
    busy.replies.greeting = "421 4.3.2 too busy"
    peer = smtp_peer(hostname="mx2.remote.test")

    replies = deliver(route_to(busy.host(), peer.host()), "bob@remote.test")

    assert replies[0].code == 250
    assert busy.messages == []
    assert len(peer.messages) == 1


def test_temporary_ehlo_reply_moves_to_next_host(smtp_peer):
    busy = smtp_peer(hostname="mx1.remote.test")
    busy.replies.ehlo = "451 4.3.0 try later"
    peer = smtp_peer(hostname="mx2.remote.test")

    replies = deliver(route_to(busy.host(), peer.host()), "bob@remote.test")

    assert replies[0].code == 250
    assert len(peer.messages) == 1
    assert b"MAIL FROM" not in bytes(busy.wire[0])


def test_all_hosts_failing_names_each(smtp_peer):
    busy = smtp_peer(hostname="mx2.remote.test")
    busy.replies.greeting = "554 5.3.2 not accepting mail"
    down = closed_port_host("mx1.remote.test")

    with pytest.raises(TemporaryDeliveryError) as raised:
        open_session(route_to(down, busy.host()))

    reply = raised.value.reply
    assert reply.code == 451
    assert "mx1.remote.test[127.0.0.1]" in reply.text
    assert "connection failed" in reply.text
    assert "mx2.remote.test[127.0.0.1]" in reply.text
    assert "554 not accepting mail" in reply.text


def test_helo_when_ehlo_rejected(smtp_peer):
    peer = smtp_peer()
    peer.replies.ehlo = "502 5.5.1 EHLO not implemented"

    replies = deliver(route_to(peer.host()), "bob@remote.test")

    assert replies[0].code == 250
    assert b"\r\nHELO mailhub.test\r\n" in bytes(peer.wire[0])
    assert peer.messages[0].mail_options == []


def test_one_of_three_recipients_rejected(smtp_peer):
    peer = smtp_peer()
    peer.replies.rcpt["bad@remote.test"] = "550 5.1.1 no such user"

    replies = deliver(route_to(peer.host()), "one@remote.test", "bad@remote.test", "two@remote.test")

    assert [reply.code for reply in replies] == [250, 550, 250]
    assert replies[1].enhanced_code == "5.1.1"
    assert replies[1].text == "no such user"
    assert len(peer.messages) == 1
    assert peer.messages[0].recipients == ["one@remote.test", "two@remote.test"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_mail_from_rejection_applies_to_all(smtp_peer, pipelining):
    peer = smtp_peer(pipelining=pipelining)
    peer.replies.mail = "553 5.7.1 sender rejected"

    replies = deliver(route_to(peer.host()), "one@remote.test", "two@remote.test")

    assert [str(reply) for reply in replies] == ["553 5.7.1 sender rejected"] * 2
    assert peer.messages == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_data_rejection_applies_to_accepted(smtp_peer, pipelining):
    peer = smtp_peer(pipelining=pipelining)
    peer.replies.rcpt["bad@remote.test"] = "550 5.1.1 no such user"
    peer.replies.data = "451 4.3.0 queue full"

    replies = deliver(route_to(peer.host()), "one@remote.test", "bad@remote.test")

    assert [reply.code for reply in replies] == [451, 550]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_all_recipients_rejected_sends_no_data(smtp_peer, pipelining):
    peer = smtp_peer(pipelining=pipelining)
    peer.replies.rcpt["one@remote.test"] = "550 5.1.1 no such user"
    peer.replies.rcpt["two@remote.test"] = "450 4.2.1 mailbox busy"

    with open_session(route_to(peer.host())) as session:
        replies = session.send(envelope("one@remote.test", "two@remote.test"))
        again = session.send(envelope("three@remote.test"))

    assert [reply.code for reply in replies] == [550, 450]
    assert [reply.code for reply in again] == [250]
    assert [message.recipients for message in peer.messages] == [["three@remote.test"]]


def test_pipelining_sends_commands_in_one_write(smtp_peer):
    peer = smtp_peer(pipelining=True)

    deliver(route_to(peer.host()), "one@remote.test", "two@remote.test")

    wire = bytes(peer.wire[0])
    assert b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<one@remote.test>\r\nRCPT TO:<two@remote.test>\r\nDATA\r\n" in wire


def test_several_envelopes_over_one_session(smtp_peer):
    peer = smtp_peer()
    peer.replies.mail = lambda address: "451 4.3.0 later" if address == "first@sender.test" else None

    with open_session(route_to(peer.host())) as session:
        first = session.send(envelope("bob@remote.test", sender="first@sender.test", queue_id="Q1"))
        second = session.send(envelope("bob@remote.test", sender="second@sender.test", queue_id="Q2"))
        third = session.send(envelope("carol@remote.test", sender="third@sender.test", queue_id="Q3"))

    assert first[0].code == 451
    assert second[0].code == 250
    assert third[0].code == 250
    assert peer.sessions == 1
    assert [message.envelope_sender for message in peer.messages] == ["second@sender.test", "third@sender.test"]
    assert bytes(peer.wire[0]).count(b"RSET\r\n") == 1
    assert bytes(peer.wire[0]).endswith(b"QUIT\r\n")


def test_recipients_split_into_transactions(smtp_peer, settings):
    settings.MAILHUB_RECIPIENTS_PER_TRANSACTION = 2
    peer = smtp_peer()
    recipients = [f"user{number}@remote.test" for number in range(5)]

    replies = deliver(route_to(peer.host()), *recipients)

    assert [reply.code for reply in replies] == [250] * 5
    assert [message.recipients for message in peer.messages] == [recipients[0:2], recipients[2:4], recipients[4:5]]
    assert peer.sessions == 1


def test_size_and_8bitmime_parameters(smtp_peer):
    peer = smtp_peer(size_limit=10_000_000)
    raw = "Subject: caf\u00e9\r\n\r\ncaf\u00e9\r\n".encode("utf-8")

    deliver(route_to(peer.host()), "bob@remote.test", raw=raw, body_8bitmime=True)

    assert peer.messages[0].mail_options == [f"SIZE={len(raw) + 3}", "BODY=8BITMIME"]
    assert peer.messages[0].content == raw


def test_7bit_message_sends_no_body_parameter(smtp_peer):
    peer = smtp_peer()

    deliver(route_to(peer.host()), "bob@remote.test")

    assert peer.messages[0].mail_options == []


def test_message_over_size_limit_not_sent(smtp_peer):
    peer = smtp_peer(size_limit=100)

    replies = deliver(route_to(peer.host()), "bob@remote.test", raw=b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n")

    assert str(replies[0]).startswith("552 5.3.4")
    assert b"MAIL FROM" not in bytes(peer.wire[0])


def test_smtputf8_required_but_not_offered(smtp_peer):
    peer = smtp_peer(smtputf8=False)

    replies = deliver(route_to(peer.host()), "j\u00f6rg@remote.test", "bob@remote.test", sender="\u00e5sa@sender.test")

    assert [reply.code for reply in replies] == [550, 550]
    assert {reply.enhanced_code for reply in replies} == {"5.6.7"}
    assert b"MAIL FROM" not in bytes(peer.wire[0])


def test_smtputf8_flag_without_offer_rejected(smtp_peer):
    peer = smtp_peer(smtputf8=False)

    replies = deliver(route_to(peer.host()), "bob@remote.test", smtputf8=True)

    assert replies[0].enhanced_code == "5.6.7"
    assert peer.messages == []


def test_smtputf8_address_delivered_when_offered(smtp_peer):
    peer = smtp_peer(smtputf8=True)

    replies = deliver(route_to(peer.host()), "j\u00f6rg@remote.test", sender="\u00e5sa@sender.test", smtputf8=True)

    assert replies[0].code == 250
    assert peer.messages[0].envelope_sender == "\u00e5sa@sender.test"
    assert peer.messages[0].recipients == ["j\u00f6rg@remote.test"]
    assert "SMTPUTF8" in peer.messages[0].mail_options


def test_dsn_parameters_passed_when_offered(smtp_peer):
    peer = smtp_peer(dsn=True)

    deliver(
        route_to(peer.host()), "bob@remote.test", "carol@remote.test",
        dsn_ret="HDRS", dsn_envid="id+1 x",
        recipient_dsn=(("SUCCESS,FAILURE", "rfc822;Bob@Remote.test"), ("NEVER", "")),
    )

    message = peer.messages[0]
    assert message.dsn_mail_parameters == ["RET=HDRS", "ENVID=id+2B1+20x"]
    assert message.dsn_rcpt_parameters == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Remote.test"], ["NOTIFY=NEVER"]]


def test_dsn_parameters_left_out_when_not_offered(smtp_peer):
    peer = smtp_peer(dsn=False)

    replies = deliver(route_to(peer.host()), "bob@remote.test", dsn_ret="FULL", recipient_dsn=(("NEVER", "rfc822;bob@remote.test"),))

    assert replies[0].code == 250
    assert b"NOTIFY" not in bytes(peer.wire[0])
    assert b"RET=" not in bytes(peer.wire[0])


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_connection_lost_after_final_dot(smtp_peer, pipelining):
    peer = smtp_peer(pipelining=pipelining)
    peer.replies.rcpt["bad@remote.test"] = "550 5.1.1 no such user"
    peer.replies.data = "DROP"

    with open_session(route_to(peer.host())) as session:
        replies = session.send(envelope("bob@remote.test", "bad@remote.test"))
        later = session.send(envelope("carol@remote.test"))

    assert replies[0].code == 451
    assert replies[0].possible_duplicate is True
    assert replies[1].code == 550
    assert replies[1].possible_duplicate is False
    assert len(peer.messages) == 1
    assert later[0].code == 451
    assert later[0].possible_duplicate is False


def test_connection_lost_before_data_is_not_duplicate(raw_smtp_peer):
    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        connection.read_line()
        connection.send("250 raw.test\r\n")
        connection.read_line()
        connection.send("250 2.1.0 OK\r\n")
        connection.read_line()

    peer = raw_smtp_peer(script)

    replies = deliver(route_to(peer.host()), "bob@remote.test")

    assert replies[0].code == 451
    assert replies[0].enhanced_code == "4.4.2"
    assert replies[0].possible_duplicate is False


def test_final_reply_timeout_is_possible_duplicate(raw_smtp_peer, settings):
    settings.MAILHUB_DATA_END_TIMEOUT = 0.5
    finished = []

    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        for reply in ("250 raw.test", "250 2.1.0 OK", "250 2.1.5 OK", "354 go ahead"):
            connection.read_line()
            connection.send(reply + "\r\n")
        connection.read_data()
        # No reply to the final dot: wait until the client gives up and closes.
        try:
            connection.read_line()
        except ConnectionError:
            finished.append(True)

    peer = raw_smtp_peer(script)

    replies = deliver(route_to(peer.host()), "bob@remote.test")

    assert replies[0].code == 451
    assert replies[0].possible_duplicate is True
    assert "may have accepted" in replies[0].text


@pytest.mark.django_db
def test_load_shared_between_equal_mx(dns_server, smtp_peer, settings):
    peer = smtp_peer()
    settings.MAILHUB_MX_PORT = peer.port
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_mx("remote.test", 10, "mx2.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")
    dns_server.add_a("mx2.remote.test", "127.0.0.1")

    used = []
    for number in range(30):
        route = resolve_route("remote.test")
        replies = deliver(route, f"user{number}@remote.test")
        used.append(replies[0].remote_host.split("[")[0])

    assert peer.sessions == 30
    # Each session picks mx1 first with p = 1/2, so 30 sessions all on one host has p = 2**-29.
    assert used.count("mx1.remote.test") > 0
    assert used.count("mx2.remote.test") > 0


@pytest.mark.django_db
def test_first_mx_refusing_second_gets_mail(dns_server, smtp_peer, settings):
    peer = smtp_peer()
    settings.MAILHUB_MX_PORT = peer.port
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_mx("remote.test", 20, "mx2.remote.test")
    # The peer listens on 127.0.0.1 only, so mx1's IPv6 loopback address refuses the connection.
    dns_server.add_aaaa("mx1.remote.test", "::1")
    dns_server.add_a("mx2.remote.test", "127.0.0.1")

    route = resolve_route("remote.test")
    replies = deliver(route, "bob@remote.test")

    assert [host.name for host in route.hosts] == ["mx1.remote.test", "mx2.remote.test"]
    assert replies[0].code == 250
    assert replies[0].remote_host.startswith("mx2.remote.test[127.0.0.1]")
    assert peer.received_recipients() == ["bob@remote.test"]


def test_idn_domain_sent_as_a_label_without_smtputf8(smtp_peer):
    peer = smtp_peer(smtputf8=False)

    replies = deliver(route_to(peer.host()), "bob@b\u00fccher.test", sender="alice@m\u00fcnchen.test")

    assert replies[0].code == 250
    assert peer.messages[0].envelope_sender == "alice@xn--mnchen-3ya.test"
    assert peer.messages[0].recipients == ["bob@xn--bcher-kva.test"]


def test_address_with_line_break_never_sent(smtp_peer):
    peer = smtp_peer()

    replies = deliver(route_to(peer.host()), "bob@remote.test>\r\nRSET", "carol@remote.test")

    assert replies[0].code == 501
    assert replies[1].code == 250
    assert peer.messages[0].recipients == ["carol@remote.test"]
    assert b"RSET" not in bytes(peer.wire[0])


def test_sender_with_line_break_fails_all(smtp_peer):
    peer = smtp_peer()

    replies = deliver(route_to(peer.host()), "bob@remote.test", sender="alice@sender.test\r\nRCPT TO:<x@y>")

    assert [reply.enhanced_code for reply in replies] == ["5.1.7"]
    assert b"MAIL FROM" not in bytes(peer.wire[0])


def test_421_reply_ends_session(smtp_peer):
    peer = smtp_peer()
    peer.replies.mail = "421 4.3.2 shutting down"

    with open_session(route_to(peer.host())) as session:
        replies = session.send(envelope("bob@remote.test"))
        connected = session.is_connected
        later = session.send(envelope("carol@remote.test"))

    assert replies[0].code == 421
    assert connected is False
    assert later[0].code == 451
    assert "lost before this transaction" in later[0].text


def test_null_sender(smtp_peer):
    peer = smtp_peer()

    replies = deliver(route_to(peer.host()), "bob@remote.test", sender="")

    assert replies[0].code == 250
    assert b"MAIL FROM:<>" in bytes(peer.wire[0])


def test_xtext_values_not_encoded_twice(smtp_peer):
    peer = smtp_peer(dsn=True)

    deliver(
        route_to(peer.host()), "bob+tag@remote.test",
        dsn_envid="QUEUE+2B1", recipient_dsn=(("FAILURE", "rfc822;bob+2Btag@remote.test"),),
    )

    assert peer.messages[0].dsn_mail_parameters == ["ENVID=QUEUE+2B1"]
    assert peer.messages[0].dsn_rcpt_parameters == [["NOTIFY=FAILURE", "ORCPT=rfc822;bob+2Btag@remote.test"]]


def test_invalid_notify_value_left_out(smtp_peer):
    peer = smtp_peer(dsn=True)

    replies = deliver(route_to(peer.host()), "bob@remote.test", dsn_ret="ALL", recipient_dsn=(("SOMETIMES", ""),))

    assert replies[0].code == 250
    assert peer.messages[0].dsn_mail_parameters == []
    assert peer.messages[0].dsn_rcpt_parameters == [[]]


def test_send_each_pipelines_next_transaction_behind_data(raw_smtp_peer, settings):
    # The peer holds back its reply to the first message until the second message's
    # commands have arrived, which only a client that sends them ahead lets happen.
    settings.MAILHUB_DATA_END_TIMEOUT = 5
    received = []

    def script(connection):
        connection.send("220 raw.test ESMTP\r\n")
        connection.read_line()
        connection.send("250-raw.test\r\n250 PIPELINING\r\n")
        for _ in range(3):
            connection.read_line()
        connection.send("250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go ahead\r\n")
        received.append(connection.read_data())
        group = [connection.read_line() for _ in range(3)]
        received.append(group)
        connection.send("250 2.0.0 first queued\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go ahead\r\n")
        received.append(connection.read_data())
        connection.send("250 2.0.0 second queued\r\n")
        connection.read_line()
        connection.send("221 bye\r\n")

    peer = raw_smtp_peer(script)

    with open_session(route_to(peer.host())) as session:
        replies = list(session.send_each([envelope("bob@remote.test", queue_id="Q1"), envelope("carol@remote.test", queue_id="Q2")]))

    assert [(reply.code, reply.text) for [reply] in replies] == [(250, "first queued"), (250, "second queued")]
    assert received[1] == [b"MAIL FROM:<alice@sender.test>", b"RCPT TO:<carol@remote.test>", b"DATA"]
    assert len(received) == 3
    assert not peer.errors


def test_send_each_keeps_replies_apart(smtp_peer):
    peer = smtp_peer(pipelining=True)
    peer.replies.rcpt["carol@remote.test"] = "550 5.1.1 no such user"
    envelopes = [
        envelope("bob@remote.test", queue_id="Q1"),
        envelope("carol@remote.test", queue_id="Q2"),
        envelope("dave@remote.test", "carol@remote.test", queue_id="Q3"),
        envelope("erin@remote.test", queue_id="Q4"),
    ]

    with open_session(route_to(peer.host())) as session:
        replies = list(session.send_each(envelopes))

    assert [[reply.code for reply in envelope_replies] for envelope_replies in replies] == [[250], [550], [250, 550], [250]]
    assert [message.recipients for message in peer.messages] == [["bob@remote.test"], ["dave@remote.test"], ["erin@remote.test"]]
    assert peer.sessions == 1


@pytest.mark.parametrize("size", [65536 - 200, 65536 * 2 - 3, 200_000], ids=["one-block", "two-blocks", "four-blocks"])
def test_send_each_large_messages_intact(smtp_peer, size):
    peer = smtp_peer(pipelining=True)
    lines = b"".join(b"line %06d of a large message, padded to a fixed width......\r\n" % number for number in range(size // 64))
    large = MESSAGE + lines
    envelopes = [envelope("bob@remote.test", raw=large, queue_id="Q1"), envelope("carol@remote.test", raw=large, queue_id="Q2")]

    with open_session(route_to(peer.host())) as session:
        replies = list(session.send_each(envelopes))

    assert [[reply.code for reply in envelope_replies] for envelope_replies in replies] == [[250], [250]]
    assert [message.content for message in peer.messages] == [large, large]
