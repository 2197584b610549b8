"""What llama.cpp itself answers, asked directly: the facts aichat's readers are written for.

Each test pins one thing the pinned server does, so that a new xllamacpp release that
changes it fails here, by name, before it confuses a test through the gateway:

- ``/v1/models`` lists one model whose ``id`` is the model file's path as given (or the alias
  when one is set) and whose ``meta.n_ctx`` is one slot's context, which ``/props`` also
  gives (``default_generation_settings.n_ctx``); ``/slots`` has one entry per slot.
- Usage, whole and streamed, on each API: Chat Completions ``prompt_tokens_details.
  cached_tokens``; Responses ``input_tokens_details.cached_tokens``; Messages
  ``cache_read_input_tokens`` beside an ``input_tokens`` that counts the uncached rest only,
  sent in ``message_start`` (the ``message_delta`` carries ``output_tokens`` alone). The same
  prompt twice: all but its last token come from the cache.
- A streamed answer closes its connection once sent, though its headers say ``Keep-Alive``
  (a whole answer's does not): a client that pools connections sends its next request into
  a closed one unless it notices.
- A prompt longer than a slot: 400 before any byte, on every API and streamed or not, as
  ``{"error": {"code": 400, "type": "exceed_context_size_error", "message": "request (N
  tokens) exceeds the available context size (M tokens), try increasing it",
  "n_prompt_tokens": N, "n_ctx": M}}``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conformance.checks import parse_sse
from tests.llama.clients import PATHS, request
from tests.llama.clients import usage as answer_usage
from tests.llama.server import SLOT_CONTEXT, SLOTS, Llama

pytestmark = [pytest.mark.slow, pytest.mark.llama]


def body(api: str, text: str, stream: bool) -> dict[str, Any]:
    """The smallest request of ``api`` saying ``text``: two tokens of answer."""
    return request(api, "m", text, stream, max_tokens=2)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A connection per request: llama.cpp closes one after a stream (see below)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


def usage(api: str, stream: bool, raw: bytes) -> dict[str, Any]:
    """The usage of one answer, as llama.cpp laid it out (its ``message_delta`` carries the
    output count alone)."""
    if api == "messages" and stream:
        deltas = [event for name, event in parse_sse(raw, named=True) if name == "message_delta"]
        assert [set(delta["usage"]) for delta in deltas] == [{"output_tokens"}], deltas
    return answer_usage(api, stream, raw)


def test_the_model_list_names_the_file_and_each_slot_holds_its_share(llama: Llama) -> None:
    (listed,) = llama.get("/v1/models")["data"]
    assert listed["id"] == llama.model_id and listed["aliases"] == [llama.model_id]
    assert listed["owned_by"] == "llamacpp"
    assert listed["meta"]["n_ctx"] == SLOT_CONTEXT and listed["meta"]["n_ctx_train"] == 8192
    props = llama.get("/props")
    assert props["default_generation_settings"]["n_ctx"] == SLOT_CONTEXT
    assert props["total_slots"] == SLOTS and props["model_path"] == llama.model_id
    assert [slot["n_ctx"] for slot in llama.get("/slots")] == [SLOT_CONTEXT] * SLOTS


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_the_same_prompt_twice_is_read_from_the_cache_but_its_last_token(
    llama: Llama, http: aiohttp.ClientSession, api: str, stream: bool
) -> None:
    # A prompt of its own: only the first request can have put most of it in the cache.
    text = f"{secrets.token_hex(8)} " + "Tell me about the sea and the sky. " * 4
    seen = []
    for _ in range(2):
        async with http.post(f"{llama.url}{PATHS[api]}", json=body(api, text, stream)) as answer:
            assert answer.status == 200, await answer.text()
            seen.append(usage(api, stream, await answer.read()))
    first, second = seen
    if api == "chat":
        prompt = first["prompt_tokens"]
        assert second["prompt_tokens"] == prompt and first["completion_tokens"] == 2
        assert second["prompt_tokens_details"] == {"cached_tokens": prompt - 1}
    elif api == "responses":
        prompt = first["input_tokens"]
        assert second["input_tokens"] == prompt and first["output_tokens"] == 2
        assert second["input_tokens_details"] == {"cached_tokens": prompt - 1}
    else:
        prompt = first["input_tokens"] + first["cache_read_input_tokens"]
        assert second["cache_read_input_tokens"] == prompt - 1
        assert second["input_tokens"] == 1 and second["output_tokens"] == 2
    assert prompt > 50


async def test_a_streamed_answer_closes_its_connection_and_a_whole_one_keeps_it(
    llama: Llama,
) -> None:
    async with aiohttp.ClientSession() as pooled:  # one connection, kept when it can be
        url = f"{llama.url}{PATHS['chat']}"
        for _ in range(2):
            async with pooled.post(url, json=body("chat", "hi", stream=False)) as answer:
                assert answer.status == 200 and answer.headers["Keep-Alive"].startswith("timeout=")
                await answer.read()
        async with pooled.post(url, json=body("chat", "hi", stream=True)) as answer:
            assert answer.status == 200 and answer.headers["Keep-Alive"].startswith("timeout=")
            await answer.read()
        # Refused while writing the request, or read as a disconnect: which, is a race.
        with pytest.raises(aiohttp.ClientConnectionError):
            await pooled.post(url, json=body("chat", "hi", stream=False))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_a_prompt_longer_than_a_slot_is_refused_before_the_first_byte(
    llama: Llama, http: aiohttp.ClientSession, api: str, stream: bool
) -> None:
    text = "hello " * (SLOT_CONTEXT + 100)
    async with http.post(f"{llama.url}{PATHS[api]}", json=body(api, text, stream)) as answer:
        assert answer.status == 400
        assert answer.content_type == "application/json"
        error = (await answer.json())["error"]
    tokens = error["n_prompt_tokens"]
    assert tokens > SLOT_CONTEXT
    assert error == {
        "code": 400,
        "type": "exceed_context_size_error",
        "message": f"request ({tokens} tokens) exceeds the available context size "
        f"({SLOT_CONTEXT} tokens), try increasing it",
        "n_prompt_tokens": tokens,
        "n_ctx": SLOT_CONTEXT,
    }
