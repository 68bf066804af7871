"""Property: reading DATA in blocks up to ".\\r\\n" gives the same verdict, content and end
of data as reading it line by line, for any stream cut into any chunks."""
import asyncio

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from mailhub.server.data import END_OF_DATA_LINE, DataParser, Verdict

# Small limits, so that long lines, large messages and a reader buffer that overflows
# all come up in short examples.
MAX_LINE_LENGTH = 20
MAX_SIZE = 200
READER_LIMIT = 32

pieces = st.one_of(
    st.sampled_from([b"\r\n", b".", b"..", b"\r", b"\n", b"\x00", b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r"]),
    st.sampled_from([b"line\r\n", b"\r\n.dot", b"\r\n..two", b"end.\r\n", b"a b c\r\n"]),
    st.binary(max_size=30),
    st.builds(lambda size: b"x" * size, st.integers(15, 60)),
)
streams = st.lists(pieces, max_size=40).map(b"".join)
chunk_sizes = st.lists(st.integers(1, 50), min_size=1, max_size=10)


def new_parser(policy):
    return DataParser(max_size=MAX_SIZE, max_line_length=MAX_LINE_LENGTH, bare_newline_policy=policy)


async def read_by_lines(reader, parser):
    """The reference: one line (or buffer-sized fragment) at a time."""
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            complete = True
        except asyncio.LimitOverrunError as error:
            line = await reader.read(error.consumed)
            complete = False
        if parser.feed_line(line, complete):
            return


async def read_by_blocks(reader, parser):
    """As TransactionCommands.receive_data reads."""
    while True:
        try:
            block = await reader.readuntil(END_OF_DATA_LINE)
            found = True
        except asyncio.LimitOverrunError as error:
            block = await reader.read(error.consumed)
            found = False
        if parser.feed(block, found):
            return


def run_reader(read, stream, chunks, policy):
    """Feed ``stream`` to a StreamReader in chunks; return (verdict, content, rest) or None at EOF."""

    async def main():
        reader = asyncio.StreamReader(limit=READER_LIMIT)
        parser = new_parser(policy)
        task = asyncio.ensure_future(read(reader, parser))
        position = 0
        index = 0
        while position < len(stream) and not task.done():
            size = chunks[index % len(chunks)]
            reader.feed_data(stream[position : position + size])
            position += size
            index += 1
            await asyncio.sleep(0)
        reader.feed_eof()
        try:
            await task
        except asyncio.IncompleteReadError:
            return None
        rest = bytes(reader._buffer) + stream[position:]
        return parser.verdict, parser.content, rest

    return asyncio.run(main())


@hypothesis_settings(max_examples=400, deadline=None)
@given(body=streams, tail=st.binary(max_size=20), chunks=chunk_sizes, policy=st.sampled_from(["reject", "normalize"]))
def test_blocks_and_lines_agree(body, tail, chunks, policy):
    stream = body + b"\r\n.\r\n" + tail
    expected = run_reader(read_by_lines, stream, [len(stream)], policy)
    assert run_reader(read_by_blocks, stream, chunks, policy) == expected


@hypothesis_settings(max_examples=200, deadline=None)
@given(stream=streams, chunks=chunk_sizes, policy=st.sampled_from(["reject", "normalize"]))
def test_blocks_and_lines_agree_without_a_final_marker(stream, chunks, policy):
    expected = run_reader(read_by_lines, stream, [max(1, len(stream))], policy)
    assert run_reader(read_by_blocks, stream, chunks, policy) == expected


@pytest.mark.parametrize(
    ("stream", "verdict", "content"),
    [
        (b".\r\n", Verdict.ACCEPTABLE, b""),
        (b"a.\r\nb\r\n.\r\n", Verdict.ACCEPTABLE, b"a.\r\nb\r\n"),
        (b"..\r\n.x\r\n.\r\n", Verdict.ACCEPTABLE, b".\r\nx\r\n"),
        (b"a\r\n.b\r\nc.\r\n.\r\n", Verdict.ACCEPTABLE, b"a\r\nb\r\nc.\r\n"),
        (b"a\n.\r\nb\r\n.\r\n", Verdict.BARE_NEWLINE, b""),
        (b"a" * 21 + b"\r\n.\r\n", Verdict.LINE_TOO_LONG, b""),
        (b"." + b"a" * 20 + b"\r\n.\r\n", Verdict.ACCEPTABLE, b"a" * 20 + b"\r\n"),
        (b"a\x00\r\n.\r\n", Verdict.NUL_BYTE, b""),
    ],
)
def test_examples(stream, verdict, content):
    assert run_reader(read_by_blocks, stream, [7], "reject") == (verdict, content, b"")
