"""The ``aichats`` web-chat upstream: ``POST {base}/chat/send2/``, answers in ``data:`` lines.

Wire format: ``shared/docs/upstream-aichats.md``. What this module decides:

- The service has no system role. ``system``/``developer`` messages are carried in the next
  user turn, ahead of its text and marked as instructions, so they keep their meaning
  (never sent as fake assistant turns).
- ``AICHATS_HISTORY=transcript`` (default) folds the conversation into one ``you`` entry
  written as a ``User: ...`` / ``Assistant: ...`` transcript; ``turns`` sends each turn as its
  own history entry. A lone user message is sent as it is in both modes.
- Tools, tool/function messages and non-text content parts are refused with a 400.
- An answer without any text is an upstream failure (502), not an empty success.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import aiohttp
import orjson

from aichat.core.config import HistoryMode
from aichat.core.errors import InvalidRequest, UpstreamError
from aichat.core.prompt import Api, Prompt
from aichat.core.schemas import ChatCompletionRequest, text_of
from aichat.providers.base import Event, Finish, TextDelta
from aichat.providers.http import JSON_HEADERS, UpstreamBounds, upstream_body
from aichat.providers.streaming import iter_line_batches, sse_payloads

USER, ASSISTANT = "you", "chatGPT"
_TRYLIMIT = " trylimit"
_BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)


def _instructions(texts: list[str]) -> str:
    return "Instructions:\n" + "\n\n".join(texts)


def conversation_turns(request: ChatCompletionRequest) -> list[tuple[str, str]]:
    """The conversation as ``(from, text)`` turns, system text folded into user turns.

    Raises ``InvalidRequest`` for anything this text-only, tool-less service cannot carry.
    """
    if request.tools or request.functions:
        raise InvalidRequest(
            "This model does not support tools or functions.", param="tools", code="unsupported"
        )
    turns: list[tuple[str, str]] = []
    pending_system: list[str] = []
    for i, message in enumerate(request.messages):
        if message.role in ("tool", "function") or message.tool_calls:
            raise InvalidRequest(
                "This model does not support tool calls or tool messages.",
                param=f"messages[{i}]",
                code="unsupported",
            )
        text = text_of(message, i)
        if message.role in ("system", "developer"):
            pending_system.append(text)
        elif message.role == "user":
            if pending_system:
                text = f"{_instructions(pending_system)}\n\n{text}"
                pending_system = []
            turns.append((USER, text))
        elif text:
            turns.append((ASSISTANT, text))
    if pending_system:
        turns.append((USER, _instructions(pending_system)))
    return turns


def build_history(request: ChatCompletionRequest, mode: HistoryMode) -> list[dict[str, str]]:
    """The ``messagesHistory`` list for the request body."""
    turns = conversation_turns(request)
    if mode == "turns" or len(turns) == 1:
        return [{"from": who, "content": text} for who, text in turns]
    labels = {USER: "User", ASSISTANT: "Assistant"}
    transcript = "\n\n".join(f"{labels[who]}: {text}" for who, text in turns)
    return [{"from": USER, "content": transcript}]


def piece_text(payload: str) -> str:
    """Answer text of one ``data:`` payload: escapes decoded, ``trylimit`` markers removed."""
    if _TRYLIMIT in payload:
        payload = payload.replace(_TRYLIMIT, "")
    elif payload == _TRYLIMIT.strip():
        # The SSE separator space can swallow the marker's own leading space.
        return ""
    return payload.replace("\\n", "\n")


def answer_text(payloads: list[str]) -> str:
    """The answer text of several pieces: ``piece_text`` of each, joined."""
    joined = "".join(payloads)
    if "trylimit" not in joined and "\\" not in joined:
        return joined  # nothing to decode or remove: the usual case, at the cost of one join
    return "".join(piece_text(payload) for payload in payloads)


class AichatsProvider:
    """Streams answers from the aichats web chat."""

    name = "aichats"
    api: Api = "chat"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        history: HistoryMode,
        bounds: UpstreamBounds,
    ) -> None:
        self._session = session
        self._url = f"{base_url}/chat/send2/"
        self._history = history
        self._bounds = bounds
        self._headers = {
            "accept": "application/json, text/event-stream",
            "origin": base_url,
            "referer": f"{base_url}/chat/",
            "user-agent": _BROWSER_UA,
            **JSON_HEADERS,
        }

    async def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """Yield the answer's text pieces as they arrive, then ``Finish``."""
        request = prompt.chat()
        payload = {"type": "chat", "messagesHistory": build_history(request, self._history)}
        body = upstream_body(
            self._session,
            self._url,
            body=orjson.dumps(payload),
            headers=self._headers,
            bounds=self._bounds,
            name=self.name,
            whole=not request.stream,  # pieces are kept for one completion: bounded
        )
        answered = False
        line_batches = iter_line_batches(body, self._bounds.max_line)
        async with aclosing(body), aclosing(line_batches) as batches:
            async for lines in batches:
                # Pieces that arrived in one read become one delta: one write, one chunk.
                text = answer_text(sse_payloads(lines))
                if text:
                    answered = True
                    yield TextDelta(text)
        if not answered:
            # The service answers every prompt with text; an empty stream is a refusal or a
            # block, which a retry or a fallback may get past.
            raise UpstreamError(f"{self.name} upstream sent an empty answer.")
        yield Finish("stop")
