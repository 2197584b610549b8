"""Linear in every input: each parser, translator and splitter, fed inputs of size n and 4n,
must take at most about 5 times as long for 4n (a linear one takes 4 times, a quadratic one
16), so the next quadratic loop is caught when it is written, not by the next review.

How it holds on a loaded 2-core machine: the cases are measured in a fresh interpreter
(``verdicts``), not in the test process with its threads and its fragmented heap; time is
that thread's CPU time (other processes' turns do not count), with the garbage
collector off; n doubles from a small start until one
run takes ``ONE_RUN`` (at most ``MAX_N`` items: past that the ratio measures the memory
caches, not the code), and runs are repeated to tens of milliseconds, so fixed costs and
timer noise are small beside the work; a measurement at n repeats four times as many runs
as one at 4n, so both last as long and share whatever load there is, and they are taken in
turns, the best of ``RUNS`` counting; a case over the bound is measured afresh, up to
``ATTEMPTS`` times, before it fails.

To cover a new parser, add one line to ``CASES``: a name, a function making its input of
size n (outside the timed part), and the call to time (a coroutine is awaited).
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aichat.answer.blocks import collect, segment
from aichat.answer.capabilities import dropped_header
from aichat.answer.discovery import read_listing
from aichat.answer.translate import Completion, ModelRenamer, complete, stream_chunks
from aichat.answer.usage import Meter
from aichat.core.prompt import Prompt
from aichat.core.schemas import (
    ChatCompletionRequest,
    parse_chat_request,
    parse_json,
    prompt_text,
    validate_body,
)
from aichat.core.tokens import prompt_tokens
from aichat.inbound import anthropic_api, responses_api
from aichat.inbound.anthropic_api import MessagesRequest
from aichat.inbound.responses_api import Envelope, ResponsesRequest, ResponseStream
from aichat.inbound.responses_tools import map_tools
from aichat.providers.aichats import answer_text, build_history
from aichat.providers.anthropic import MESSAGES
from aichat.providers.anthropic_events import MessagesReader
from aichat.providers.anthropic_request import cache_breakpoints, messages_request
from aichat.providers.base import Event, Finish, RawChunks, TextDelta, ToolCallDelta
from aichat.providers.native import stream_events, with_model
from aichat.providers.openai import read_payloads, reported_usage
from aichat.providers.openai_events import chunk_events, completion_events
from aichat.providers.reasoning import MAX_LEAD, StrippedReasoning, ThinkSplitter
from aichat.providers.responses import RESPONSES
from aichat.providers.responses_events import ResponsesReader
from aichat.providers.responses_request import responses_request
from aichat.providers.streaming import EventSplitter, LineDecoder, sse_payloads
from aichat.providers.tool_emulation import CallScanner, prompted_request

BOUND = 5.0  # how much longer 4n may take than n
# n doubles from START until one run takes ``ONE_RUN``; past MAX_N, runs are repeated
# instead: a larger input measures the memory caches and, in a long-lived process whose
# heap has free room for n but not for 4n, the page faults of fresh arenas, not the code.
START, MAX_N = 16, 1 << 8
ONE_RUN = 0.001  # CPU seconds
FLOOR = 0.005  # CPU seconds the runs of one measurement at size n take at least (x4)
RUNS = 5  # measurements per size; the best counts
ATTEMPTS = 3  # fresh measurements of a case before it fails


@dataclass(frozen=True)
class Case:
    """One function under test: its input of size n, and the call to time."""

    name: str
    make: Callable[[int], Any]
    run: Callable[[Any], Any]


# --- inputs --------------------------------------------------------------------------------

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CHAT = ChatCompletionRequest.model_validate({"model": "m", "messages": [USER]})
PROMPT = Prompt.of_chat(CHAT, b"")


def chat_body(**fields: Any) -> dict[str, Any]:
    """A chat request body with ``fields`` set."""
    return {"model": "m", "messages": [USER], **fields}


def calls_and_results(n: int) -> list[dict[str, Any]]:
    """n/2 assistant tool calls, each followed by its result."""
    messages: list[dict[str, Any]] = [USER]
    for i in range(n // 2):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "ok"})
    return messages


def responses_body(**fields: Any) -> ResponsesRequest:
    """A validated Responses request with ``fields`` set."""
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def responses_calls(n: int) -> list[dict[str, Any]]:
    """n/2 function calls, each followed by its output."""
    items: list[dict[str, Any]] = []
    for i in range(n // 2):
        items.append({"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"c{i}", "output": "ok"})
    return items


def messages_body(**fields: Any) -> MessagesRequest:
    """A validated Anthropic Messages request with ``fields`` set."""
    body = {"model": "m", "max_tokens": 5, "messages": [USER], **fields}
    return MessagesRequest.model_validate(body)


def anthropic_turns(n: int) -> list[dict[str, Any]]:
    """n/2 tool uses, each followed by its result."""
    turns: list[dict[str, Any]] = [USER]
    for i in range(n // 2):
        use = {"type": "tool_use", "id": f"t{i}", "name": "f", "input": {}}
        turns.append({"role": "assistant", "content": [use]})
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}
        turns.append({"role": "user", "content": [result]})
    return turns


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    """An OpenAI ``chat.completion.chunk`` with one choice."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps(
        {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    )


def completion(message: dict[str, Any]) -> str:
    """A whole OpenAI ``chat.completion``."""
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps({"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]})


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def messages_deltas(n: int) -> bytes:
    """A Messages stream's text block of n deltas, as one read."""
    start = sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "x"},
    }
    return start + sse("content_block_delta", delta) * n


def responses_deltas(n: int) -> bytes:
    """A Responses stream's n text deltas, as one read."""
    delta = {
        "type": "response.output_text.delta",
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "x",
    }
    return sse("response.output_text.delta", delta) * n


def texts(piece: str, head: str = "", tail: str = "") -> Callable[[int], list[Event]]:
    """n text deltas of ``piece`` (after ``head``, before ``tail``), then ``Finish``."""

    def make(n: int) -> list[Event]:
        pieces = [head, *[piece] * n, tail]
        return [*(TextDelta(text) for text in pieces if text), Finish("stop")]

    return make


def argument_pieces(n: int) -> list[Event]:
    """One tool call whose arguments arrive in n pieces, then ``Finish``."""
    first = ToolCallDelta(0, "call_1", "f", '{"a": "')
    piece = ToolCallDelta(0, arguments="x" * 64)
    return [first, *[piece] * n, ToolCallDelta(0, arguments='"}'), Finish()]


def raw_chunks(n: int) -> list[Event]:
    """n one-chunk reads of an OpenAI stream, then ``Finish``."""
    return [*[RawChunks((chunk({"content": " "}),))] * n, Finish("stop")]


def tool_results(n: int) -> ChatCompletionRequest:
    """A chat request whose user turn is followed by n tool results (parallel calls)."""
    results = [{"role": "tool", "tool_call_id": f"c{i}", "content": "ok"} for i in range(n)]
    return parse_chat_request(chat_body(messages=[USER, *results]))


def cached_messages(chat: ChatCompletionRequest) -> None:
    """A chat request translated for a Messages upstream, its cache breakpoints marked."""
    cache_breakpoints(messages_request(chat, "m", 100)[0])


async def reads_of(reads: list[bytes]) -> AsyncIterator[bytes]:
    """``reads`` as an upstream's body."""
    for read in reads:
        yield read


def native_stream(dialect: Any) -> Callable[[list[bytes]], Any]:
    """Every event of a native upstream's stream in ``dialect``, from its reads."""
    return lambda reads: drain(stream_events(dialect, reads_of(reads), 1 << 30))


def split_events(reads: list[bytes]) -> None:
    """An event splitter fed every read."""
    splitter = EventSplitter(1 << 30)
    for read in reads:
        splitter.feed(read)


async def events_of(events: list[Event]) -> AsyncIterator[Event]:
    """``events`` as a provider's stream."""
    for event in events:
        yield event


async def blocks_of(events: list[Event], reasoning: bool = True) -> None:
    """Every block event of an answer."""
    await collect(segment(events[0], events_of(events[1:]), PROMPT, reasoning))


async def drain(stream: AsyncIterator[Any]) -> None:
    """Read ``stream`` to its end."""
    async for _ in stream:
        pass


async def responses_stream(events: list[Event]) -> None:
    """Every event of a streamed Responses answer."""
    stream = ResponseStream(Envelope.start(responses_body(), map_tools([])[0]))
    await drain(stream.events(segment(events[0], events_of(events[1:]), PROMPT)))


async def messages_stream(events: list[Event]) -> None:
    """Every event of a streamed Anthropic Messages answer."""
    blocks = segment(events[0], events_of(events[1:]), PROMPT)
    await drain(anthropic_api.stream_events(messages_body(), PROMPT, blocks))


async def chat_stream(events: list[Event]) -> None:
    """Every chunk of a streamed Chat Completions answer."""
    await drain(stream_chunks(events[0], events_of(events[1:]), CHAT, Completion.start("m")))


async def chat_whole(events: list[Event]) -> None:
    """A whole Chat Completions answer."""
    await complete(events[0], events_of(events[1:]), CHAT, Completion.start("m"))


class _Inner:
    """A provider that answers with the events it is given."""

    name = "inner"
    api = "chat"

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    async def stream(self, prompt: Prompt, model: str) -> AsyncIterator[Event]:
        for event in self._events:
            yield event


async def stripped(events: list[Event]) -> None:
    """An answer with ``reasoning = "strip"``."""
    await drain(StrippedReasoning(_Inner(events)).stream(PROMPT, "m"))


def split_think(pieces: list[str]) -> None:
    """A ``<think>`` splitter fed every piece."""
    splitter = ThinkSplitter()
    for piece in pieces:
        splitter.feed(piece)
    splitter.flush()


def scan_calls(pieces: list[str]) -> None:
    """A tool-call scanner fed every piece."""
    scanner = CallScanner()
    for piece in pieces:
        scanner.feed(piece)
    scanner.finish({"f"})


def decode_lines(reads: list[bytes]) -> None:
    """A line decoder fed every read."""
    decoder = LineDecoder(max_line=1 << 30)
    for read in reads:
        decoder.feed(read)
    decoder.flush()


def meter(events: list[Event]) -> None:
    """A usage meter that sees every event."""
    counted = Meter(PROMPT, lambda usage: None)
    for event in events:
        counted.see(event)
    counted.close()


def usage_with(extra: int) -> dict[str, Any]:
    """Usage counts beside ``extra`` fields an upstream added (names longer than orjson's
    key cache takes, which would make a thousand of them cheaper than four thousand)."""
    fields = {f"{i:070d}": i for i in range(extra)}
    return {"prompt_tokens": 1, "completion_tokens": 1, **fields}


# Whitespace that opens an answer is held while a ``<think>`` may follow, up to MAX_LEAD
# characters: blank deltas start past it, or the sizes below it would measure a step.
# Pieces of more than one character make a quadratic copy show at smaller sizes.
BLANK = texts(" " * 16, head=" " * MAX_LEAD)

CASES = [
    # Request bodies of the three APIs, and what counts or rewrites them.
    Case("chat: n messages", lambda n: chat_body(messages=[USER] * n), parse_chat_request),
    Case(
        "chat: a message of n parts",
        lambda n: chat_body(
            messages=[{"role": "user", "content": [{"type": "text", "text": "a"}] * n}]
        ),
        parse_chat_request,
    ),
    Case("chat: n tools", lambda n: chat_body(tools=[TOOL] * n), parse_chat_request),
    Case(
        "chat: n tool calls and results",
        lambda n: chat_body(messages=calls_and_results(n)),
        parse_chat_request,
    ),
    Case(
        "request json: n messages",
        lambda n: json.dumps(chat_body(messages=[USER] * n)).encode(),
        parse_json,
    ),
    Case(
        "request json: n integers past 64 bits",
        lambda n: json.dumps(chat_body(x=[2**64] * n)).encode(),
        parse_json,
    ),
    Case(
        "request json: n escaped surrogate pairs, read exactly",
        lambda n: json.dumps(
            chat_body(messages=[{"role": "user", "content": "\U0001f600"}] * n, x=2**64)
        ).encode(),
        parse_json,
    ),
    Case(
        "responses: n input items validated",
        lambda n: {"model": "m", "input": responses_calls(n)},
        lambda body: validate_body(ResponsesRequest, body),
    ),
    Case(
        "messages: n turns validated",
        lambda n: {"model": "m", "max_tokens": 5, "messages": anthropic_turns(n)},
        lambda body: validate_body(MessagesRequest, body),
    ),
    Case(
        "responses: n input messages",
        lambda n: responses_body(input=[USER] * n),
        responses_api.to_chat_request,
    ),
    Case(
        "responses: n function calls and outputs",
        lambda n: responses_body(input=responses_calls(n)),
        responses_api.to_chat_request,
    ),
    Case(
        "responses: n tools",
        lambda n: responses_body(tools=[{"type": "function", "name": f"f{i}"} for i in range(n)]),
        responses_api.to_chat_request,
    ),
    Case(
        "responses: n namespace tools of one name",
        lambda n: [
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}] * n}
        ],
        map_tools,
    ),
    Case(
        "responses: n namespaces of one name",
        lambda n: (
            [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]}] * n
        ),
        map_tools,
    ),
    Case("responses: n hosted tools", lambda n: [{"type": "web_search"}] * n, map_tools),
    Case(
        "messages: n turns",
        lambda n: messages_body(
            messages=[USER, {"role": "assistant", "content": "ok"}] * (n // 2) + [USER]
        ),
        anthropic_api.to_chat_request,
    ),
    Case(
        "messages: n tool uses and results",
        lambda n: messages_body(messages=anthropic_turns(n)),
        anthropic_api.to_chat_request,
    ),
    Case(
        "messages: n tools",
        lambda n: messages_body(tools=[{"name": f"f{i}", "input_schema": {}} for i in range(n)]),
        anthropic_api.to_chat_request,
    ),
    Case(
        "count tokens: n messages",
        lambda n: parse_chat_request(chat_body(messages=[USER] * n)),
        lambda chat: prompt_tokens(prompt_text(chat)),
    ),
    Case(
        "tool emulation: n tools",
        lambda n: parse_chat_request(chat_body(tools=[TOOL] * n)),
        prompted_request,
    ),
    Case(
        "tool emulation: n calls and results",
        lambda n: parse_chat_request(chat_body(messages=calls_and_results(n))),
        prompted_request,
    ),
    Case(
        "aichats history: n turns",
        lambda n: parse_chat_request(
            chat_body(messages=[USER, {"role": "assistant", "content": "ok"}] * n)
        ),
        lambda chat: build_history(chat, "transcript"),
    ),
    # Requests translated for upstreams of the other APIs, and the client's own, renamed.
    Case("messages upstream request: n tool results", tool_results, cached_messages),
    Case(
        "messages upstream request: n tool calls and results",
        lambda n: parse_chat_request(chat_body(messages=calls_and_results(n))),
        cached_messages,
    ),
    Case(
        "responses upstream request: n tool results",
        tool_results,
        lambda chat: responses_request(chat, "m"),
    ),
    Case(
        "responses upstream request: n tool calls and results",
        lambda n: parse_chat_request(chat_body(messages=calls_and_results(n))),
        lambda chat: responses_request(chat, "m"),
    ),
    Case(
        "native request: model renamed in a body of n messages",
        lambda n: json.dumps(chat_body(messages=[USER] * n)).encode(),
        lambda raw: with_model(raw, {"model": "m"}, "upstream"),
    ),
    # Upstream streams and whole answers.
    Case("lines: n in one read", lambda n: [b"data: x\n" * n], decode_lines),
    Case("lines: one of n bytes in n reads", lambda n: [b"x"] * n + [b"\n"], decode_lines),
    Case("lines: n blank bytes in n reads", lambda n: [b" "] * n + [b"\n"], decode_lines),
    Case("sse: n data lines", lambda n: ["data: x", ""] * n, sse_payloads),
    Case("aichats: n pieces in one read", lambda n: ["a\\nb"] * n, answer_text),
    Case(
        "openai: n chunks in one read",
        lambda n: [f"data: {chunk({'content': 'x'})}", ""] * n,
        read_payloads,
    ),
    Case("openai: a chunk of n characters", lambda n: chunk({"content": "x " * n}), chunk_events),
    Case(
        "openai: a chunk of n tool calls",
        lambda n: chunk(
            {"tool_calls": [{"index": i, "function": {"arguments": "{}"}} for i in range(n)]}
        ),
        chunk_events,
    ),
    Case(
        "openai: a whole answer of n characters",
        lambda n: completion({"role": "assistant", "content": " " * n}),
        completion_events,
    ),
    Case("chat stream: n text deltas", texts("x"), chat_stream),
    Case("chat stream: n chunks passed through", raw_chunks, chat_stream),
    Case(
        "chat stream: model renamed in n chunks",
        lambda n: tuple(chunk({"content": "x"}) for _ in range(n)),
        ModelRenamer("client").events,
    ),
    Case("chat whole: n text deltas", texts("x"), chat_whole),
    Case("chat whole: n tool-call argument pieces", argument_pieces, chat_whole),
    Case(
        "messages upstream: n deltas in one read",
        messages_deltas,
        lambda data: MessagesReader().stream(data),
    ),
    Case(
        "messages upstream: a whole message of n blocks",
        lambda n: json.dumps(
            {"content": [{"type": "text", "text": "x"}] * n, "stop_reason": "end_turn"}
        ).encode(),
        lambda data: MessagesReader().whole(data),
    ),
    Case(
        "messages upstream, passed on: n events in one read",
        lambda n: [messages_deltas(n)],
        native_stream(MESSAGES),
    ),
    Case(
        "messages upstream, passed on: n events in n reads",
        lambda n: [messages_deltas(1)] * n,
        native_stream(MESSAGES),
    ),
    Case(
        "responses upstream, passed on: n events in one read",
        lambda n: [responses_deltas(n)],
        native_stream(RESPONSES),
    ),
    Case("events: one of n bytes in n reads", lambda n: [b"data: "] + [b"x\r"] * n, split_events),
    Case("events: n in one read", lambda n: [b"data: x\r\n\r\n" * n], split_events),
    Case(
        "responses upstream: n deltas in one read",
        responses_deltas,
        lambda data: ResponsesReader().stream(data),
    ),
    Case(
        "responses upstream: a whole response of n items",
        lambda n: json.dumps(
            {
                "status": "completed",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "x"}]}]
                * n,
            }
        ).encode(),
        lambda data: ResponsesReader().whole(data),
    ),
    # Blocks, reasoning, tool-call text.
    Case("blocks: n text deltas", texts("x"), blocks_of),
    Case("blocks: n blank deltas", BLANK, blocks_of),
    Case("blocks: n tool-call argument pieces", argument_pieces, blocks_of),
    Case("blocks: <think> and n deltas", texts("x", "<think>", "</think>ok"), blocks_of),
    Case("blocks: n blank deltas after </think>", texts(" ", "<think>a</think>", "ok"), blocks_of),
    Case("think: n blank pieces", lambda n: [" " * 16] * n, split_think),
    Case(
        "think: n blank pieces before <think>",
        lambda n: [" " * 16] * n + ["<think>a</think>b"],
        split_think,
    ),
    Case(
        "think: n pieces inside <think>",
        lambda n: ["<think>", *["x"] * n, "</think>b"],
        split_think,
    ),
    Case("think: n pieces, never closed", lambda n: ["<think>", *["x<"] * n], split_think),
    Case("strip: n blank deltas", BLANK, stripped),
    Case("strip: n blank chunks", raw_chunks, stripped),
    Case("strip: <think> and n deltas", texts("x", "<think>", "</think>ok"), stripped),
    Case("tool emulation: n pieces of text", lambda n: ["x<"] * n, scan_calls),
    Case("tool emulation: n blank pieces", lambda n: [" "] * n, scan_calls),
    Case(
        "tool emulation: n pieces inside a block",
        lambda n: ["<tool_calls>[", *['{"name": "f"},'] * n, '{"name": "f"}]</tool_calls>'],
        scan_calls,
    ),
    Case("responses stream: n text deltas", texts("x"), responses_stream),
    Case("responses stream: n blank deltas", BLANK, responses_stream),
    Case("responses stream: n tool-call argument pieces", argument_pieces, responses_stream),
    Case("messages stream: n text deltas", texts("x"), messages_stream),
    Case("messages stream: n blank deltas", BLANK, messages_stream),
    # Discovery lists, usage.
    Case(
        "discovery: a list of n models",
        lambda n: json.dumps(
            {"data": [{"id": f"model-{i}", "object": "model"} for i in range(n)]}
        ).encode(),
        read_listing,
    ),
    Case("usage meter: n text deltas", texts("x"), meter),
    Case(
        "usage: a chunk whose usage has n fields",
        lambda n: json.dumps({"choices": [], "usage": usage_with(n)}),
        reported_usage,
    ),
    Case("dropped parameters: n names", lambda n: [f"p{i}" for i in range(n)], dropped_header),
]


def _call(case: Case, data: Any) -> None:
    result = case.run(data)
    if inspect.iscoroutine(result):
        # Nothing in a case waits for I/O: one step runs the coroutine to its end.
        try:
            result.send(None)
        except StopIteration:
            return
        raise AssertionError(f"{case.name} awaited something other than its own input")


def _cpu(case: Case, data: Any, repeat: int) -> float:
    """The CPU time of ``repeat`` runs of ``case`` on ``data``."""
    started = time.thread_time()
    for _ in range(repeat):
        _call(case, data)
    return time.thread_time() - started


def _times(case: Case, n: int, repeat: int) -> tuple[float, float]:
    """The best CPU times of ``RUNS`` measurements of one run at sizes n and 4n. Each
    measurement of n runs it four times as often, so that both last as long and share the
    load alike (another process on the same core slows both); they are taken in turns."""
    small_data, large_data = case.make(n), case.make(4 * n)  # read, never changed
    small = large = float("inf")
    for _ in range(RUNS):
        small = min(small, _cpu(case, small_data, 4 * repeat) / 4)
        large = min(large, _cpu(case, large_data, repeat))
    return small, large


def _size(case: Case) -> tuple[int, int]:
    """The size n, and the runs per measurement that make it take ``FLOOR`` at least."""
    n = START
    while True:
        data = case.make(n)
        started = time.thread_time()
        _call(case, data)
        once = time.thread_time() - started
        if once >= ONE_RUN or n >= MAX_N:
            return n, max(1, math.ceil(FLOOR / max(once, 1e-6)))
        n *= 2


def _verdict(case: Case) -> str | None:
    """Why ``case`` grows faster than linearly, or None when it does not."""
    seen = []
    for _ in range(ATTEMPTS):
        n, repeat = _size(case)
        small, large = _times(case, n, repeat)
        seen.append(f"n={n} x{repeat}: {small * 1000:.1f} ms, 4n: {large * 1000:.1f} ms")
        if large <= BOUND * small:
            return None
    return f"{case.name} grows faster than linearly: {'; '.join(seen)}"


def _measure_all() -> None:
    """Every case's verdict as JSON on stdout, the garbage collector off (its passes land
    on arbitrary runs) and run by hand before each case."""
    gc.disable()
    verdicts = {}
    for case in CASES:
        gc.collect()
        verdicts[case.name] = _verdict(case)
    print(json.dumps(verdicts))


@pytest.fixture(scope="module")
def verdicts() -> dict[str, str | None]:
    """Every case measured in a fresh interpreter: the test process itself, after a thousand
    tests, has threads that earlier tests left running and a heap whose free room is in
    pieces; in it one case took 6 times as long at 4n alone as it does in a fresh process."""
    measured = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_linearity"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert measured.returncode == 0, measured.stderr
    found: dict[str, str | None] = json.loads(measured.stdout.splitlines()[-1])
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_time_grows_linearly_with_the_input(case: Case, verdicts: dict[str, str | None]) -> None:
    verdict = verdicts[case.name]
    if verdict is not None:
        pytest.fail(verdict)


if __name__ == "__main__":
    _measure_all()
