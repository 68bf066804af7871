"""Property: random command sequences never crash the MX listener, always get well-formed
replies, never get 250 for a message that was not stored, and never relay."""
import re

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from mailhub.models import Message, Recipient

from .conftest import RawClient

pytestmark = pytest.mark.django_db(transaction=True)

REPLY_LINE = re.compile(r"^[2-5][0-9][0-9]([ -].*)?$")
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$")

addresses = st.sampled_from([
    "<bob@local.test>", "<alice@local.test>", "<sales@local.test>", "<nobody@local.test>",
    "<user@remote.test>", "<user%remote.test@local.test>", "<@local.test:user@remote.test>",
    "<>", "<bob@local.test.>", "<BOB@LOCAL.TEST>", "bob@local.test", "<\"b o b\"@local.test>",
])
parameters = st.sampled_from(["", " SIZE=100", " SIZE=999999999", " BODY=8BITMIME", " SMTPUTF8",
                              " RET=HDRS ENVID=x+2By", " NOTIFY=SUCCESS,FAILURE", " ORCPT=rfc822;a@b", " BOGUS=1"])
text_without_line_ends = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=80
)
body = st.binary(max_size=300).map(lambda data: data.replace(b"\r\n.\r\n", b"\r\n..\r\n"))

commands = st.one_of(
    st.builds(lambda name: f"EHLO {name}\r\n".encode(), st.sampled_from(["client.test", "x", "[127.0.0.1]"])),
    st.just(b"HELO client.test\r\n"),
    st.builds(lambda a, p: f"MAIL FROM:{a}{p}\r\n".encode(), addresses, parameters),
    st.builds(lambda a, p: f"RCPT TO:{a}{p}\r\n".encode(), addresses, parameters),
    st.builds(lambda data: ("DATA", data), body),
    st.sampled_from([b"RSET\r\n", b"NOOP\r\n", b"VRFY bob\r\n", b"EXPN staff\r\n", b"HELP\r\n",
                     b"AUTH PLAIN AGJvYgB4\r\n", b"STARTTLS now\r\n", b"NOOP\n", b"NO\rOP\r\n",
                     b"\r\n", b"BDAT 10 LAST\r\n", b"ETRN local.test\r\n"]),
    st.builds(lambda text: text.encode("utf-8") + b"\r\n", text_without_line_ends),
)


def read_checked_reply(client, transcript):
    code, lines = client.read_reply()
    for line in lines:
        transcript.append(line)
        assert REPLY_LINE.match(line), transcript
    return code, lines


def run_sequence(client, steps, transcript):
    """Send each step; return the queue ids of 250 replies to DATA."""
    queued = []
    for step in steps:
        if isinstance(step, tuple):
            client.send(b"DATA\r\n")
            code, _ = read_checked_reply(client, transcript)
            if code == 354:
                client.send(step[1] + b"\r\n.\r\n")
                code, lines = read_checked_reply(client, transcript)
                match = QUEUED.match(lines[-1]) if lines else None
                if code == 250:
                    assert match, transcript
                    queued.append(match.group(1))
        else:
            transcript.append(f">> {step!r}")
            client.send(step)
            code, lines = read_checked_reply(client, transcript)
        if code is None or code in (221, 421):
            break
    return queued


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(commands, min_size=1, max_size=25))
def test_random_sessions_are_safe(mail_listeners, directory, steps):
    before = set(Message.objects.values_list("queue_id", flat=True))
    client = RawClient(mail_listeners.host, mail_listeners.mx_port, timeout=30)
    transcript = []
    try:
        assert read_checked_reply(client, transcript)[0] == 220
        queued = run_sequence(client, steps, transcript)
    finally:
        client.close()

    stored = set(Message.objects.values_list("queue_id", flat=True)) - before
    assert stored == set(queued), transcript
    assert not Recipient.objects.exclude(domain="local.test").exists()

    alive = RawClient(mail_listeners.host, mail_listeners.mx_port, timeout=30)
    assert alive.read_reply()[0] == 220
    alive.close()
