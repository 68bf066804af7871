"""The summary of a message's header section: the plain-field reader and the email
package's parser agree on every ASCII section that the reader takes."""
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from mailhub import headers

from ..support.corpus import corpus_params


def parsed_fields(section):
    parsed = headers.parse_headers(section)
    return {name: parsed.get(name) for name in headers.SUMMARY_FIELDS}


names = st.sampled_from(
    [b"Subject", b"SUBJECT", b"subject", b"Message-ID", b"From", b"To", b"Date", b"X-Other", b"Received", b"Sub:ject"]
)
values = st.sampled_from(
    [b"", b" ", b"  plain", b"\tTabbed", b" =?utf-8?q?caf=C3=A9?=", b" =?utf-8?b?w6k=?= =?utf-8?b?w6k=?=",
     b" <a@b.test>", b" Fri, 4 Dec 2026 10:00:00 +0000", b" trailing  ", b":colon", b" caf\xc3\xa9"]
)
continuations = st.lists(st.sampled_from([b" more", b"\tmore", b"  =?utf-8?q?x?=", b" "]), max_size=2)
fields = st.builds(lambda name, value, rest: b"\r\n".join([name + b":" + value, *rest]), names, values, continuations)
odd_lines = st.sampled_from([b"From sender", b"no colon here", b" leading space", b"Bad Name: x", b"a\nb: c", b"x: a\rb"])
sections = st.lists(st.one_of(fields, fields, fields, odd_lines), min_size=1, max_size=6).map(b"\r\n".join)


@hypothesis_settings(max_examples=500, deadline=None)
@given(section=sections)
def test_plain_reader_agrees_with_the_parser(section):
    plain = headers.plain_summary_fields(section)
    # The parser turns 8-bit bytes into replacement characters, the plain reader reads UTF-8.
    if plain is not None and section.isascii():
        assert plain == parsed_fields(section)


def test_utf8_fields_keep_their_characters():
    summary = headers.summarize("Subject: h\u00e9llo \u2713\r\nFrom: J\u00f6rg <j@b.test>\r\n\r\nbody".encode())

    assert summary["subject"] == "h\u00e9llo \u2713"
    assert summary["from_header"] == "J\u00f6rg <j@b.test>"


def test_latin1_fields_go_to_the_parser():
    assert headers.plain_summary_fields(b"Subject: caf\xe9") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?UTF-8?B?broken!!?=", "=?UTF-8?B?broken!!?="),
        ("=?UTF-8?Q?nul=00here?=", "nul here"),
        ("=?UTF-8?Q?a=01b=7Fc=1B[31m?=", "a b c [31m"),
        ("plain\ttext", "plain text"),
    ],
)
def test_decode_field_cases(value, expected):
    assert headers.decode_field(value) == expected


@pytest.mark.parametrize(
    "section",
    [
        b"Subject: hello\r\nFrom: a@b.test",
        b"Subject:\r\n folded\r\n\tagain\r\nSubject: second",
        b"subject:   spaced   \r\nMESSAGE-ID: <1@b.test>",
    ],
)
def test_plain_sections_are_read_without_the_parser(section):
    assert headers.plain_summary_fields(section) == parsed_fields(section)


@pytest.mark.parametrize("section", [b"From sender\r\nSubject: x", b" x\r\nSubject: y", b"Subject: caf\xe9", b"Subject: a\nTo: b"])
def test_other_sections_go_to_the_parser(section):
    assert headers.plain_summary_fields(section) is None


@pytest.mark.parametrize("path", corpus_params())
def test_corpus_summaries_match_the_parser(path):
    # As an SMTP client sends it: every line ended by CRLF.
    raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    section = headers.header_section(raw)
    plain = headers.plain_summary_fields(section)
    if plain is None or not section.isascii():
        pytest.skip("this message's header section is not plain ASCII; the parser's reading differs or is used")
    assert plain == parsed_fields(section)
