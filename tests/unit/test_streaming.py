"""Bytes -> lines -> data payloads, under every possible network split."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat.providers.openai import read_payloads
from aichat.providers.streaming import LineDecoder, LineTooLong, iter_line_batches, sse_payloads

# Text without line breaks of any kind: those are the separators under test.
line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40
)


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for size in sizes:
        if start >= len(data):
            break
        chunks.append(data[start : start + size])
        start += size
    if start < len(data):
        chunks.append(data[start:])
    return chunks


def _decode_all(chunks: list[bytes]) -> list[str]:
    decoder = LineDecoder()
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.flush()


@given(
    lines=st.lists(line_text, max_size=12),
    sizes=st.lists(st.integers(1, 9), max_size=60),
    crlf=st.booleans(),
)
def test_any_text_cut_anywhere_round_trips(lines: list[str], sizes: list[int], crlf: bool) -> None:
    ending = "\r\n" if crlf else "\n"
    data = "".join(line + ending for line in lines).encode()
    assert _decode_all(_cut(data, sizes)) == lines


def test_every_two_way_split_of_multibyte_text() -> None:
    data = "añ€😀\ndata: 日本\r\nlast".encode()
    for cut in range(len(data) + 1):
        assert _decode_all([data[:cut], data[cut:]]) == ["añ€😀", "data: 日本", "last"]


def test_invalid_utf8_becomes_replacement_not_an_error() -> None:
    assert _decode_all([b"ok \xff\xfe\n"]) == ["ok \ufffd\ufffd"]


def test_pending_bytes_are_only_the_unfinished_line() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"one\ntw") == ["one"]
    assert decoder.pending == 2


async def test_line_batches_over_an_async_source() -> None:
    async def source() -> AsyncIterator[bytes]:
        for chunk in (b"da", b"ta: \xc3", b"\xa9\n", b"one\ntwo\n", b"tail"):
            yield chunk

    batches = [lines async for lines in iter_line_batches(source())]
    assert batches == [["data: é"], ["one", "two"], ["tail"]]


def test_sse_payloads_of_single_lines() -> None:
    assert sse_payloads(["data: hello"]) == ["hello"]
    assert sse_payloads(["data:hello"]) == ["hello"]
    assert sse_payloads(["data:  two spaces"]) == [" two spaces"]
    assert sse_payloads(["data:"]) == [""]
    assert sse_payloads(["event: x"]) == []
    assert sse_payloads([": comment"]) == []
    assert sse_payloads([""]) == []


def _line_by_line(data: bytes) -> list[str]:
    """The reference: split on 0x0A, drop one trailing CR, decode each line alone."""
    *complete, rest = data.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in complete]
    if rest:
        lines.append(rest[:-1] if rest.endswith(b"\r") else rest)
    return [line.decode("utf-8", "replace") for line in lines]


@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
    sizes=st.lists(st.integers(1, 9), max_size=60),
)
def test_any_bytes_cut_anywhere_decode_as_if_line_by_line(data: bytes, sizes: list[int]) -> None:
    # Invalid UTF-8 and stray CRs included: decoding whole reads must change nothing.
    assert _decode_all(_cut(data, sizes)) == _line_by_line(data)


def test_sse_payloads_of_a_batch_keep_their_order() -> None:
    lines = ["data: a", "data:b", "data:  c", "data:", "event: x", ": comment", "", "data: [DONE]"]
    assert sse_payloads(lines) == ["a", "b", " c", "", "[DONE]"]


def test_an_endless_line_is_refused_past_its_bound_and_never_held_beyond_it() -> None:
    decoder = LineDecoder(max_line=10_000)
    for _ in range(9):
        assert decoder.feed(b"x" * 1000) == []
    assert decoder.pending == 9000
    with pytest.raises(LineTooLong) as info:
        decoder.feed(b"x" * 1001)
    assert info.value.status == 502
    assert info.value.code == "upstream_error"
    assert "AICHAT_MAX_LINE_BYTES" in info.value.message
    decoder = LineDecoder(max_line=10)
    with pytest.raises(LineTooLong):  # the unfinished rest of a read counts too
        decoder.feed(b"ok\n" + b"y" * 11)
    assert LineDecoder(max_line=10).feed(b"0123456789\n") == ["0123456789"]


def test_a_long_line_across_many_reads_is_joined_whole() -> None:
    decoder = LineDecoder()
    parts = [bytes([65 + i % 26]) * 4096 for i in range(200)]
    for part in parts:
        assert decoder.feed(part) == []
    assert decoder.feed(b"!\nnext") == [b"".join(parts).decode() + "!"]
    assert decoder.flush() == ["next"]


_LINES = st.lists(
    st.sampled_from(
        [
            'data: {"choices":[]}',
            'data:{"id":"x"}',
            "data: ",
            "data:",
            "data: [DONE]",
            'data: {"error":{"message":"boom"}}',
            ": keep-alive",
            "event: message",
            "",
        ]
    )
)


@given(_LINES)
def test_a_reads_payloads_end_at_done_and_name_the_first_error(lines: list[str]) -> None:
    payloads, done, failed = read_payloads(lines)
    every = [payload for payload in sse_payloads(lines) if payload]
    expected = every[: every.index("[DONE]")] if "[DONE]" in every else every
    assert (payloads, done) == (expected, "[DONE]" in every)
    errors = [i for i, payload in enumerate(expected) if payload.startswith('{"error"')]
    assert failed == (errors[0] if errors else None)
