"""Properties of every parser and translator, over inputs hypothesis makes up.

Upstream bytes cut anywhere, any JSON an upstream or a client may send, any event sequence
a provider may yield, any environment: each either gives exactly what went in or fails
with the error the gateway documents, never anything else.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from aichat.answer.blocks import BlockDelta, BlockStart, BlockStop, End, segment
from aichat.answer.translate import Completion, ModelRenamer, complete, rename_model, stream_chunks
from aichat.core.config import ConfigError, load_settings
from aichat.core.errors import InvalidRequest, UpstreamError
from aichat.core.prompt import Prompt
from aichat.core.schemas import parse_chat_request, read_json
from aichat.operations.auth import KeyRing, _digest, presented_key
from aichat.providers.aichats import piece_text
from aichat.providers.base import Event, Finish, RawChunks, TextDelta, ToolCallDelta, Usage
from aichat.providers.http import MAX_RETRY_AFTER, UpstreamBounds, retry_after_seconds
from aichat.providers.native import with_model
from aichat.providers.openai import OpenAIProvider
from aichat.providers.openai_events import chunk_events, completion_events
from aichat.providers.streaming import iter_line_batches, sse_payloads
from tests.fakes import aichats_body, sse_events

# Modest example counts keep the whole file within a few seconds; no deadline, as CI
# machines may be busy.
PROPERTIES = settings(max_examples=60, deadline=None)

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=15,
)
# Cuts of a byte string into successive network reads: sizes, the last read takes the rest.
read_sizes = st.lists(st.integers(1, 12), max_size=40)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` as successive reads of ``sizes`` bytes, and a last read with the rest."""
    reads, start = [], 0
    for size in sizes:
        reads.append(data[start : start + size])
        start += size
    return [*reads, data[start:]]


async def _reads(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def run(coroutine: Any) -> Any:
    """Run one example's coroutine on a fresh loop (hypothesis drives sync tests)."""
    return asyncio.run(coroutine)


def chat_request(**extra: Any) -> Prompt:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    return Prompt.of_chat(parse_chat_request(body), json.dumps(body).encode())


# The aichats service escapes a newline as the two characters \ and n, and cannot send a
# carriage return, a literal backslash-n or its "trylimit" marker as answer text.
aichats_pieces = st.lists(
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\r\\"), max_size=12
    ).filter(lambda piece: "trylimit" not in piece),
    max_size=12,
)


@PROPERTIES
@given(pieces=aichats_pieces, sizes=read_sizes)
def test_aichats_answers_survive_any_cut_of_the_stream(pieces: list[str], sizes: list[int]) -> None:
    async def answer() -> str:
        reads = cut(aichats_body(pieces), sizes)
        out = []
        async for lines in iter_line_batches(_reads(reads)):
            out.extend(piece_text(payload) for payload in sse_payloads(lines))
        return "".join(out)

    assert run(answer()) == "".join(pieces)


# OpenAI-compatible servers differ in how they frame the same chunks.
framings = st.fixed_dictionaries(
    {
        "prefix": st.sampled_from(["data: ", "data:"]),
        "newline": st.sampled_from(["\n", "\r\n"]),
        "comment": st.booleans(),  # ": keep-alive" lines between events
        "event_line": st.booleans(),  # "event: message" before each data line
    }
)


def _upstream_answering(reads: list[bytes]) -> Any:
    async def upstream_body(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    return upstream_body


@PROPERTIES
@given(chunks=st.lists(json_values, max_size=6), framing=framings, sizes=read_sizes)
def test_openai_stream_parsing_gives_back_every_chunk_under_any_framing_and_cut(
    chunks: list[Any], framing: dict[str, Any], sizes: list[int]
) -> None:
    payloads = [json.dumps({"choices": [], "n": chunk}) for chunk in chunks]
    nl = framing["newline"]
    body = ""
    for payload in [*payloads, "[DONE]"]:
        body += f": keep-alive{nl}{nl}" if framing["comment"] else ""
        body += f"event: message{nl}" if framing["event_line"] else ""
        body += f"{framing['prefix']}{payload}{nl}{nl}"
    provider = OpenAIProvider(mock.Mock(), "http://upstream.test", None, UpstreamBounds(5, 5))

    async def events() -> list[Event]:
        return [event async for event in provider.stream(chat_request(stream=True), "m")]

    with mock.patch(
        "aichat.providers.openai.upstream_body", _upstream_answering(cut(body.encode(), sizes))
    ):
        got = run(events())
    # However the reads fall, every chunk arrives once, in order, and nothing after [DONE].
    assert got[-1] == Finish()
    batches = got[:-1]
    assert all(isinstance(b, RawChunks) and b.jsons for b in batches)
    assert [j for b in batches for j in b.jsons] == payloads  # type: ignore[union-attr]


# Nested "model" keys are left out: OpenAI's chunks have none, and the renaming relies on it.
no_model_keys = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(texts.filter(lambda key: key != "model"), inner, max_size=3)
    ),
    max_leaves=10,
)


@PROPERTIES
@given(
    fields=st.dictionaries(texts.filter(lambda key: key != "model"), no_model_keys, max_size=5),
    at=st.integers(0, 5),
    old=texts,
    new=texts,
    style=st.sampled_from([{"separators": (",", ":")}, {}, {"indent": 1}, {"ensure_ascii": False}]),
)
def test_rename_model_changes_the_model_and_nothing_else(
    fields: dict[str, Any], at: int, old: str, new: str, style: dict[str, Any]
) -> None:
    items = list(fields.items())
    items.insert(min(at, len(items)), ("model", old))
    chunk = dict(items)
    assert json.loads(rename_model(json.dumps(chunk, **style), new)) == {**chunk, "model": new}


@PROPERTIES
@given(
    chunks=st.lists(
        st.dictionaries(texts.filter(lambda key: key != "model"), no_model_keys, max_size=4),
        min_size=1,
        max_size=6,
    ),
    models=st.lists(st.sampled_from(["up", "up-2", 'odd "name"']), min_size=1, max_size=6),
    new=texts,
    batches=st.lists(st.integers(1, 4), max_size=6),
)
def test_renaming_whole_batches_renames_every_chunk_and_nothing_else(
    chunks: list[dict[str, Any]], models: list[str], new: str, batches: list[int]
) -> None:
    # The upstream's model may change between chunks; the batch fast path must notice.
    jsons = [
        json.dumps({"id": "c", "model": models[i % len(models)], **chunk})
        for i, chunk in enumerate(chunks)
    ]
    renamer = ModelRenamer(new)
    out, start = "", 0
    for size in [*batches, len(jsons)]:
        out += renamer.events(tuple(jsons[start : start + size])) if jsons[start:] else ""
        start += size
    events = [line[6:] for line in out.split("\n\n") if line]
    assert [json.loads(e) for e in events] == [{**json.loads(j), "model": new} for j in jsons]


provider_answers = st.tuples(
    st.lists(texts, min_size=1, max_size=8),
    st.none() | st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6)),
    st.sampled_from(["stop", "length", "content_filter"]),
)


async def _events(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


@PROPERTIES
@given(answer=provider_answers, include_usage=st.booleans())
def test_streamed_and_whole_answers_agree(
    answer: tuple[list[str], Usage | None, str], include_usage: bool
) -> None:
    pieces, usage, reason = answer
    events: list[Event] = [TextDelta(p) for p in pieces]
    events += [usage] if usage else []
    events.append(Finish(reason))
    request = chat_request(stream=True, stream_options={"include_usage": include_usage}).chat()
    completion = Completion("chatcmpl-x", 1, "gpt-4o")

    async def both() -> tuple[list[bytes], bytes]:
        streamed = [
            c async for c in stream_chunks(events[0], _events(events[1:]), request, completion)
        ]
        whole = await complete(events[0], _events(events[1:]), request, completion)
        return streamed, whole

    streamed, whole_bytes = run(both())
    # One write may carry several events: what counts is the events, in order.
    payloads = sse_events(b"".join(streamed))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    whole = json.loads(whole_bytes)
    with_choices = [c["choices"][0] for c in chunks if c["choices"]]
    text = "".join(choice["delta"].get("content") or "" for choice in with_choices)
    assert text == whole["choices"][0]["message"]["content"] == "".join(pieces)
    assert with_choices[-1]["finish_reason"] == whole["choices"][0]["finish_reason"] == reason
    assert {c["id"] for c in chunks} == {whole["id"]}
    usage_chunks = [c["usage"] for c in chunks if not c["choices"]]
    assert usage_chunks == ([whole["usage"]] if include_usage else [])
    if usage is not None:
        assert whole["usage"]["prompt_tokens"] == usage.prompt_tokens


provider_events = st.lists(
    st.one_of(
        st.builds(TextDelta, texts),
        st.builds(
            ToolCallDelta,
            index=st.integers(0, 2),
            id=st.none() | st.just("call_1"),
            name=st.none() | st.sampled_from(["f", "g"]),
            arguments=texts,
        ),
    ),
    max_size=10,
)


@PROPERTIES
@given(events=provider_events, reason=st.sampled_from(["stop", "tool_calls", "length"]))
def test_blocks_open_fill_and_close_in_order(events: list[Event], reason: str) -> None:
    answer: list[Event] = [*events, Finish(reason)]

    async def blocks() -> list[Any]:
        return [
            b
            async for found in segment(answer[0], _events(answer[1:]), chat_request())
            for b in found
        ]

    out = run(blocks())
    assert isinstance(out[-1], End)
    assert out[-1].reason == reason
    open_index, filled, expected_index = None, "", 0
    for block in out[:-1]:
        if isinstance(block, BlockStart):
            assert open_index is None
            assert block.index == expected_index
            open_index, filled, expected_index = block.index, "", expected_index + 1
        elif isinstance(block, BlockDelta):
            assert block.index == open_index
            filled += block.text
        else:
            assert isinstance(block, BlockStop)
            assert (block.index, block.text) == (open_index, filled)
            open_index = None
    assert open_index is None
    text_blocks = [b.text for b in out if isinstance(b, BlockStop) and b.tool is None]
    assert "".join(text_blocks) == "".join(e.text for e in events if isinstance(e, TextDelta))


# Chunk-like JSON whose every field may hold any JSON value: what a broken upstream sends.
def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return json_values | st.fixed_dictionaries({}, optional=fields)


chunk_like = st.fixed_dictionaries(
    {},
    optional={
        "choices": json_values
        | st.lists(
            _maybe(
                index=json_values,
                finish_reason=json_values,
                delta=_maybe(
                    content=json_values,
                    tool_calls=json_values
                    | st.lists(
                        _maybe(
                            index=json_values,
                            id=json_values,
                            function=_maybe(name=json_values, arguments=json_values),
                        ),
                        max_size=2,
                    ),
                ),
            ),
            max_size=2,
        ),
        "usage": _maybe(prompt_tokens=json_values, completion_tokens=json_values),
    },
)


@PROPERTIES
@given(data=chunk_like | json_values)
def test_any_upstream_json_parses_into_typed_events_or_an_upstream_error(data: Any) -> None:
    for parse, part in ((chunk_events, "delta"), (completion_events, "message")):
        text = json.dumps(data).replace('"delta"', f'"{part}"')  # a whole answer's field
        try:
            events, reason = parse(text)
        except UpstreamError:
            continue
        assert reason is None or isinstance(reason, str)
        for event in events:
            if isinstance(event, TextDelta):
                assert isinstance(event.text, str)
            elif isinstance(event, ToolCallDelta):
                assert isinstance(event.index, int)
                assert all(v is None or isinstance(v, str) for v in (event.id, event.name))
                assert isinstance(event.arguments, str)
            else:
                assert isinstance(event, Usage)
                assert isinstance(event.prompt_tokens, int)
                assert isinstance(event.completion_tokens, int)


class _Body:
    """Stands in for a request: ``read_json`` only reads the body."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def read(self) -> bytes:
        return self._raw


def _is_json(value: Any) -> bool:
    """Whether ``value`` is standard JSON: no NaN or infinity, every string (keys too) UTF-8."""
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(map(_is_json, value))
    if isinstance(value, dict):
        return all(_is_json(k) and _is_json(v) for k, v in value.items())
    return not (isinstance(value, float) and not math.isfinite(value))


any_text = st.text(max_size=10)  # surrogates included
client_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)


@PROPERTIES
@given(body=client_json, ensure_ascii=st.booleans())
# Integers past 64 bits, which orjson alone would read as floats.
@example(body={"seed": -(2**63) - 1}, ensure_ascii=True)
@example(body=[2**64, 10**30, 2**63 - 1], ensure_ascii=False)
def test_read_json_takes_exactly_the_bodies_that_are_json(body: Any, ensure_ascii: bool) -> None:
    # Python spells NaN and Infinity, which JSON has not; surrogatepass writes the
    # unpaired surrogates that ensure_ascii=False leaves raw: bytes a client could send.
    raw = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    if _is_json(body):
        assert run(read_json(_Body(raw))) == body  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidRequest) as refused:
            run(read_json(_Body(raw)))  # type: ignore[arg-type]
        assert refused.value.code == "invalid_json"


names = st.text(st.characters(exclude_categories=["Cs", "Cc", "Z"], exclude_characters=","))


@PROPERTIES
@given(
    models=st.lists(names.filter(str.strip), min_size=1, max_size=5),
    spaces=st.sampled_from(["", " ", "  ", "\t"]),
    keys=st.lists(names.filter(str.strip), max_size=3),
    secret=names.filter(str.strip),
)
def test_list_variables_split_on_commas_and_trim(
    models: list[str], spaces: str, keys: list[str], secret: str
) -> None:
    env = {
        "AICHAT_MODELS": f",{spaces}".join(f"{spaces}{m}" for m in models) + ",",
        "APP_SECRET": secret,
        "AICHAT_API_KEYS": ",".join(keys),
    }
    loaded = load_settings(env, dotenv_path=None)
    assert loaded.models == tuple(m.strip() for m in models)
    assert [k.get_secret_value() for k in loaded.api_keys] == [k.strip() for k in [secret, *keys]]


@PROPERTIES
@given(value=st.text(max_size=8), number=st.integers(-(10**6), 10**6))
def test_flags_and_numbers_from_the_environment(value: str, number: int) -> None:
    env = {"APP_SECRET": "k", "AICHAT_PLAYGROUND": value, "AICHAT_PORT": str(number)}
    flag = value.strip().lower()
    if flag not in {"", "1", "true", "yes", "on", "0", "false", "no", "off"}:
        with pytest.raises(ConfigError, match=r"AICHAT_PLAYGROUND: .* is not a boolean"):
            load_settings(env, dotenv_path=None)
        return
    if not 0 <= number <= 65535:
        with pytest.raises(ConfigError, match="AICHAT_PORT"):
            load_settings(env, dotenv_path=None)
        return
    loaded = load_settings(env, dotenv_path=None)
    assert loaded.port == number
    # An empty (or blank) variable counts as unset: the default, on.
    assert loaded.playground is (flag in {"", "1", "true", "yes", "on"})


@PROPERTIES
@given(value=st.none() | st.text(max_size=40))
def test_retry_after_never_fails_and_is_within_a_day(value: str | None) -> None:
    seconds = retry_after_seconds(value)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER


@PROPERTIES
@given(delay=st.floats(0, MAX_RETRY_AFTER), ahead=st.integers(0, int(MAX_RETRY_AFTER) - 2))
def test_retry_after_in_seconds_or_as_a_date(delay: float, ahead: int) -> None:
    assert retry_after_seconds(repr(delay)) == delay
    when = email.utils.formatdate(time.time() + ahead, usegmt=True)
    seconds = retry_after_seconds(when)
    assert seconds is not None
    assert ahead - 2 <= seconds <= ahead + 1


@PROPERTIES
@given(
    delay=st.floats(MAX_RETRY_AFTER, exclude_min=True) | st.floats(max_value=0, exclude_max=True)
)
def test_a_retry_after_beyond_a_day_or_negative_is_ignored(delay: float) -> None:
    assert retry_after_seconds(repr(delay)) is None


@PROPERTIES
@given(key=st.text(min_size=1, max_size=20), presented=any_text)
def test_a_key_ring_matches_only_its_own_keys(key: str, presented: str) -> None:
    assume(key.strip() == key)
    ring = KeyRing([(_digest(key), mock.sentinel.policy)])
    assert ring.lookup(key) is mock.sentinel.policy
    assert ring.lookup(presented) is (mock.sentinel.policy if presented == key else None)


@PROPERTIES
@given(scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "", "Token"]), token=any_text)
def test_presented_key_reads_bearer_tokens_only(scheme: str, token: str) -> None:
    request = mock.Mock(headers={"Authorization": f"{scheme} {token}"})
    got = presented_key(request)
    if scheme.lower() == "bearer" and token.strip():
        assert got == token.strip()
    else:
        assert got is None


plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["model", "type", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@PROPERTIES
@given(
    model=st.text(max_size=12),
    others=st.dictionaries(st.sampled_from(["metadata", "type", "input"]), plain_json),
    spaced=st.booleans(),
)
def test_with_model_changes_the_top_level_model_and_nothing_else(
    model: str, others: dict[str, Any], spaced: bool
) -> None:
    body = {**others, "model": model}
    raw = json.dumps(body, separators=(", ", ": ") if spaced else (",", ":")).encode()
    sent = with_model(raw, body, "upstream-model")
    assert json.loads(sent) == {**others, "model": "upstream-model"}
    if raw.count(b'"model"') == 1:  # one place for it: every other byte as sent
        pair = b'"model"' + (b": " if spaced else b":") + json.dumps(model).encode()
        assert sent.replace(b'"model":"upstream-model"', pair) == raw
