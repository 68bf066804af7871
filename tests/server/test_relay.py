"""No open relay: the MX listener relays nothing without AUTH, whatever the address tricks;
sender identity on submission; PROXY protocol and trusted networks."""
import socket
import struct

import pytest

from mailhub.models import Alias, Message

from .conftest import PASSWORD, RawClient, message_text, proxy_v1_header

pytestmark = pytest.mark.django_db(transaction=True)

# Each is a recipient that tries to reach remote.test through local.test or around it.
ADDRESS_TRICKS = [
    "<user@remote.test>",
    "<USER@REMOTE.TEST>",
    "<@local.test:user@remote.test>",
    "<@local.test,@other.test:user@remote.test>",
    "<user%remote.test@local.test>",
    "<remote.test!user@local.test>",
    '<"user@remote.test"@local.test>',
    '<"user%remote.test"@local.test>',
    "<user@remote.test.>",
    "<user@local.test.>",
    "<user@remote.test@local.test>",
    "<user@[127.0.0.1]>",
    "<user@[IPv6:::1]>",
    "<alice@local.test.remote.test>",
    "<alice@lоcal.test>",  # Cyrillic "о": an IDN lookalike of local.test
    "<alice@xn--lcal-1fd.test>",
    "<alice@local.test >",
    "<alice@local.test\tx>",
    "user@remote.test",
    "<user@remote.test> NOTIFY=NEVER",
    "<${jndi:ldap://remote.test/a}@local.test>",
    "<`touch /tmp/pwned`@local.test>",
    "<$(id)@local.test>",
    "<user;rm -rf /@local.test>",
]

SENDERS = ["<>", "<someone@remote.test>", "<alice@local.test>", "<ALICE@LOCAL.TEST>"]


def send_attempt(client, sender, recipient):
    """Return the RCPT reply code, and the DATA reply code when RCPT was accepted."""
    client.command("RSET")
    mail_code, _ = client.command(f"MAIL FROM:{sender}")
    assert mail_code == 250
    rcpt_code, _ = client.command(f"RCPT TO:{recipient}")
    if rcpt_code != 250:
        return rcpt_code, None
    client.command("DATA")
    data_code, _ = client.command(b"Subject: relay test\r\n\r\nbody\r\n.\r\n")
    return rcpt_code, data_code


@pytest.mark.parametrize("sender", SENDERS)
def test_mx_relays_nothing_without_auth(mail_listeners, directory, raw_client, settings, sender):
    settings.MAILHUB_MAX_ERRORS_PER_SESSION = 1000
    client = raw_client("mx")
    client.command("EHLO client.test")
    results = {recipient: send_attempt(client, sender, recipient) for recipient in ADDRESS_TRICKS}

    accepted = {recipient: codes for recipient, codes in results.items() if codes[0] == 250}
    assert accepted == {}
    assert all(code >= 500 for code, _ in results.values())
    assert Message.objects.count() == 0


def test_percent_hack_with_catch_all_stays_local(mail_listeners, directory, raw_client):
    Alias.objects.create(domain=directory.domain, local_part="", destinations="bob@local.test")
    client = raw_client("mx")
    client.command("EHLO client.test")
    codes = send_attempt(client, "<x@remote.test>", "<user%remote.test@local.test>")

    message = Message.objects.get()
    assert codes == (250, 250)
    assert list(message.recipients.values_list("address", flat=True)) == ["user%remote.test@local.test"]
    assert list(message.recipients.values_list("domain", flat=True)) == ["local.test"]


def test_loopback_is_not_trusted(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")

    assert send_attempt(client, "<a@local.test>", "<user@remote.test>") == (550, None)


def test_trusted_network_may_relay(mail_listeners, directory, raw_client, settings):
    settings.MAILHUB_TRUSTED_NETWORKS = ["127.0.0.0/8"]
    client = raw_client("mx")
    client.command("EHLO client.test")

    assert send_attempt(client, "<a@local.test>", "<user@remote.test>") == (250, 250)
    assert Message.objects.get().recipients.get().address == "user@remote.test"


def test_proxy_protocol_names_client(mail_listeners, directory, settings):
    settings.MAILHUB_PROXY_PROTOCOL = True
    settings.MAILHUB_TRUSTED_NETWORKS = ["127.0.0.0/8"]
    client = RawClient(mail_listeners.host, mail_listeners.mx_port)
    client.send(proxy_v1_header("203.0.113.7", mail_listeners.mx_port))
    assert client.read_reply()[0] == 220
    client.command("EHLO client.test")
    codes = send_attempt(client, "<a@remote.test>", "<user@remote.test>")
    local = send_attempt(client, "<a@remote.test>", "<bob@local.test>")
    client.close()

    assert codes == (550, None)
    assert local == (250, 250)
    assert Message.objects.get().client_address == "203.0.113.7"


def test_proxy_protocol_v2(mail_listeners, directory, settings):
    settings.MAILHUB_PROXY_PROTOCOL = True
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton("198.51.100.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 25)
    header = signature + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses
    client = RawClient(mail_listeners.host, mail_listeners.mx_port)
    client.send(header)
    assert client.read_reply()[0] == 220
    client.command("EHLO client.test")
    assert send_attempt(client, "<a@remote.test>", "<bob@local.test>") == (250, 250)
    client.close()

    assert Message.objects.get().client_address == "198.51.100.9"


def test_missing_proxy_header_closes(mail_listeners, settings):
    settings.MAILHUB_PROXY_PROTOCOL = True
    client = RawClient(mail_listeners.host, mail_listeners.mx_port)
    client.send(b"EHLO client.test\r\n")
    code, _ = client.read_reply()
    client.close()

    assert code is None


def submit(mail_listeners, login, sender, from_header, recipients=("x@remote.test",)):
    with mail_listeners.smtp("submissions") as client:
        client.login(login, PASSWORD)
        code, text = client.mail(sender)
        if code != 250:
            return code, text
        for recipient in recipients:
            client.rcpt(recipient)
        return client.data(message_text(from_header, recipients[0]))


def test_user_cannot_send_as_other_user(mail_listeners, directory):
    envelope = submit(mail_listeners, "alice", "bob@local.test", "alice@local.test")
    header = submit(mail_listeners, "alice", "alice@local.test", "Bob <bob@local.test>")

    assert envelope[0] == 553
    assert envelope[1].startswith(b"5.7.1")
    assert header[0] == 553
    assert header[1].startswith(b"5.7.1")
    assert Message.objects.count() == 0


def test_user_sends_as_own_alias_and_case(mail_listeners, directory):
    own = submit(mail_listeners, "alice", "Alice@Local.Test", "Alice <alice@local.test>")
    alias = submit(mail_listeners, "alice", "sales@local.test", "Sales <sales@local.test>")

    assert own[0] == 250
    assert alias[0] == 250
    assert Message.objects.count() == 2


def test_alias_of_other_user_refused(mail_listeners, directory):
    refused = submit(mail_listeners, "bob", "sales@local.test", "bob@local.test")

    assert refused[0] == 553


def test_permission_allows_any_sender(mail_listeners, directory):
    result = submit(mail_listeners, "postmaster", "ceo@elsewhere.test", "CEO <ceo@elsewhere.test>")

    assert result[0] == 250
    assert Message.objects.get().envelope_sender == "ceo@elsewhere.test"


@pytest.mark.parametrize("recipient", ["<bob@local.test>", "<user@remote.test>", "<user%remote.test@local.test>"])
def test_submission_without_auth_relays_nothing(mail_listeners, directory, raw_client, recipient):
    client = raw_client("submission")
    client.command("EHLO client.test")
    mail = client.command("MAIL FROM:<alice@local.test>")
    rcpt = client.command(f"RCPT TO:{recipient}")
    data = client.command("DATA")

    assert mail[0] == 530
    assert mail[1][0].startswith("530 5.7.0")
    assert rcpt[0] == 530
    assert data[0] == 530
    assert Message.objects.count() == 0


def test_authenticated_submission_relays(mail_listeners, directory):
    result = submit(mail_listeners, "alice", "alice@local.test", "alice@local.test",
                    recipients=("user@remote.test", "bob@local.test"))

    assert result[0] == 250
    assert sorted(Message.objects.get().recipients.values_list("domain", flat=True)) == ["local.test", "remote.test"]


def test_submission_rejects_unknown_local_recipient(mail_listeners, directory):
    with mail_listeners.smtp("submissions") as client:
        client.login("alice", PASSWORD)
        client.mail("alice@local.test")
        unknown = client.rcpt("nobody@local.test")
        alias = client.rcpt("sales@local.test")
        remote = client.rcpt("user@remote.test")

    assert unknown[0] == 550
    assert unknown[1].startswith(b"5.1.1")
    assert alias[0] == 250
    assert remote[0] == 250


def test_forged_sender_to_unknown_user_leaves_no_bounce(mail_listeners, directory, raw_client):
    client = raw_client("mx")
    client.command("EHLO client.test")
    client.command("MAIL FROM:<victim@remote.test>")
    rcpt = client.command("RCPT TO:<nobody@local.test>")
    data = client.command("DATA")

    assert rcpt[0] == 550
    assert rcpt[1][0].startswith("550 5.1.1")
    assert data[0] == 503
    assert Message.objects.count() == 0
