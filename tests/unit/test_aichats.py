"""The aichats provider: history building, piece decoding, and its HTTP call (aioresponses)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st

from aichat.core.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from aichat.core.prompt import Prompt
from aichat.core.schemas import parse_chat_request
from aichat.providers.aichats import AichatsProvider, answer_text, build_history, piece_text
from aichat.providers.base import Finish, TextDelta
from aichat.providers.http import UpstreamBounds

BASE = "http://aichats.test"


def _request(*messages: dict[str, Any], **extra: Any) -> Any:
    return parse_chat_request({"model": "gpt-4o", "messages": list(messages), **extra})


SYSTEM = {"role": "system", "content": "Be brief."}
USER1 = {"role": "user", "content": "Hi"}
BOT = {"role": "assistant", "content": "Hello!"}
USER2 = {"role": "user", "content": "Who are you?"}


def test_single_user_message_is_sent_as_is() -> None:
    for mode in ("transcript", "turns"):
        assert build_history(_request(USER1), mode) == [{"from": "you", "content": "Hi"}]


def test_turns_mode_keeps_roles_and_folds_system_into_next_user_turn() -> None:
    history = build_history(_request(SYSTEM, USER1, BOT, USER2), "turns")
    assert history == [
        {"from": "you", "content": "Instructions:\nBe brief.\n\nHi"},
        {"from": "chatGPT", "content": "Hello!"},
        {"from": "you", "content": "Who are you?"},
    ]


def test_transcript_mode_folds_everything_into_one_user_entry() -> None:
    history = build_history(_request(SYSTEM, USER1, BOT, USER2), "transcript")
    assert history == [
        {
            "from": "you",
            "content": "User: Instructions:\nBe brief.\n\nHi\n\n"
            "Assistant: Hello!\n\nUser: Who are you?",
        }
    ]


def test_developer_message_after_last_user_turn_is_still_carried() -> None:
    developer = {"role": "developer", "content": "Answer in French."}
    history = build_history(_request(USER1, developer), "turns")
    assert history[-1] == {"from": "you", "content": "Instructions:\nAnswer in French."}
    assert all(turn["from"] != "chatGPT" for turn in history)


def test_tool_use_is_refused() -> None:
    call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {}}]}
    with pytest.raises(InvalidRequest):
        build_history(_request(USER1, call), "turns")
    with pytest.raises(InvalidRequest):
        build_history(_request(USER1, tools=[{"type": "function"}]), "turns")


def test_answer_text_is_each_piece_text_joined() -> None:
    assert answer_text(["a", "b"]) == "ab"
    assert answer_text(["line\\n", "next"]) == "line\nnext"
    assert answer_text(["done", " trylimit"]) == "done"
    assert answer_text(["try", "limit"]) == "trylimit"  # a marker only within one piece
    assert answer_text(["ends with \\", "n"]) == "ends with \\n"  # an escape too


def test_piece_text() -> None:
    assert piece_text("line\\nnext") == "line\nnext"
    assert piece_text(" trylimit") == ""
    assert piece_text("trylimit") == ""
    assert piece_text("done trylimit") == "done"
    assert piece_text("a trylimit b") == "a b"
    assert piece_text("plain") == "plain"


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\\")))
def test_piece_text_inverts_the_services_escaping(text: str) -> None:
    escaped = text.replace("\n", "\\n")
    if " trylimit" not in text and text != "trylimit":
        assert piece_text(escaped) == text


async def _collect(provider: AichatsProvider) -> list[Any]:
    prompt = Prompt.of_chat(_request(USER1), b"")
    return [event async for event in provider.stream(prompt, "gpt-4o")]


def _provider(session: aiohttp.ClientSession, mode: str = "transcript") -> AichatsProvider:
    return AichatsProvider(session, BASE, mode, UpstreamBounds(first_byte=5, idle=5))  # type: ignore[arg-type]


async def test_provider_posts_payload_and_yields_pieces(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    body = "data: Hel\n\ndata: lo\\nthere\n\ndata:  trylimit\n\n"
    mocked.post(f"{BASE}/chat/send2/", status=200, body=body)
    events = await _collect(_provider(session))
    (call,) = next(iter(mocked.requests.values()))
    # The whole body arrives in one read: its pieces become one delta (one write).
    assert events == [TextDelta("Hello\nthere"), Finish("stop")]
    assert json.loads(call.kwargs["data"]) == {
        "type": "chat",
        "messagesHistory": [{"from": "you", "content": "Hi"}],
    }
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert call.kwargs["headers"]["origin"] == BASE
    assert call.kwargs["headers"]["referer"] == f"{BASE}/chat/"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (403, False)])
async def test_provider_maps_http_errors(
    session: aiohttp.ClientSession, mocked: aioresponses, status: int, retryable: bool
) -> None:
    mocked.post(f"{BASE}/chat/send2/", status=status, body="nope", headers={"Retry-After": "3"})
    with pytest.raises(UpstreamError) as info:
        await _collect(_provider(session))
    assert info.value.status == 502
    assert info.value.upstream_status == status
    assert info.value.retryable is retryable
    assert info.value.retry_after == 3


async def test_provider_maps_connection_errors_and_timeouts(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    mocked.post(f"{BASE}/chat/send2/", exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(UpstreamError) as info:
        await _collect(_provider(session))
    assert info.value.status == 502
    mocked.post(f"{BASE}/chat/send2/", exception=TimeoutError())
    with pytest.raises(UpstreamTimeout):
        await _collect(_provider(session))


@given(
    st.lists(
        st.sampled_from(["a", " ", "\\", "n", "\\n", "trylimit", " trylimit", "é"]), max_size=8
    )
)
def test_answer_text_fast_path_agrees_with_piece_by_piece(pieces: list[str]) -> None:
    assert answer_text(pieces) == "".join(piece_text(piece) for piece in pieces)
