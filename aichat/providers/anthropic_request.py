"""A Chat Completions request -> an Anthropic Messages request (pure; no I/O).

What it decides, where Messages differs:

- ``system`` and ``developer`` messages become the top-level ``system``, in their order
  (Messages has no system turns); ``tool`` messages become ``tool_result`` blocks of a user
  turn; turns of the same role in a row are merged, as Messages wants roles to alternate.
- Images become ``image`` blocks (a ``data:`` URL as base64, any other as a URL source); a
  ``file`` part with PDF data becomes a ``document`` block. Audio cannot be read: 400.
- ``max_tokens`` is required by Messages: the client's, else the route's default.
  ``temperature`` is capped at Anthropic's 1.0. ``reasoning_effort`` becomes a thinking
  budget below ``max_tokens`` (none for ``none``, or when ``max_tokens`` leaves no room), and
  then ``temperature`` and ``top_p``, which thinking does not take, are dropped.
- ``response_format`` with a JSON schema becomes ``output_config.format``.
- ``tool_choice`` maps to ``auto``/``any``/``none``/``tool``; ``parallel_tool_calls: false``
  to ``disable_parallel_tool_use``.
- Everything else (``seed``, ``n``, penalties, ``logprobs``, unknown fields, ...) has no
  Messages counterpart: dropped, and named for ``x-aichat-dropped-params``. So is
  ``prompt_cache_key``: Anthropic caches by ``cache_control`` breakpoints instead, which
  ``cache_breakpoints`` places on a route that opts in (``prompt_caching = "auto"``).
"""

from __future__ import annotations

import json
from typing import Any

from aichat.core.errors import InvalidRequest
from aichat.core.schemas import ChatCompletionRequest, as_object

# reasoning_effort -> thinking budget in tokens (Anthropic's least is 1,024).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
_MIN_BUDGET = 1024

# Chat fields read below: any other field present is dropped and named.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "tools",
        "functions",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "reasoning_effort",
        "response_format",
    }
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text") or "") for part in content if part.get("type") == "text"
        )
    return ""


def _data_url(url: str) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a ``data:...;base64,`` URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    media, _, encoding = head.partition(";")
    return (media, data) if encoding == "base64" else None


def _image(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = str(image.get("url") if isinstance(image, dict) else image or "")
    inline = _data_url(url)
    if inline is not None:
        source = {"type": "base64", "media_type": inline[0], "data": inline[1]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = as_object(part.get("file"))
    inline = _data_url(str(file.get("file_data") or ""))
    if inline is None:
        raise InvalidRequest(
            "A file part needs its data inline ('file_data') for this model.",
            param=where,
            code="unsupported_content",
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": inline[0], "data": inline[1]},
    }
    if file.get("filename"):
        block["title"] = str(file["filename"])
    return block


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            blocks.append(_image(part))
        elif kind == "file":
            blocks.append(_file(part, f"{where}[{j}]"))
        else:
            raise InvalidRequest(
                f"Content part of type '{kind}' cannot be read by this model.",
                param=f"{where}[{j}]",
                code="unsupported_content",
            )
    return blocks


def _tool_use(call: dict[str, Any], where: str) -> dict[str, Any]:
    function = as_object(call.get("function"))
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            "Tool call arguments must be a JSON object for this model.",
            param=where,
            code="invalid_value",
        )
    return {
        "type": "tool_use",
        "id": str(call.get("id") or ""),
        "name": str(function.get("name") or ""),
        "input": arguments,
    }


def _turns(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The system texts and the alternating turns of a chat conversation."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    # Per user turn (by index), its tool results: they answer the assistant's calls, so they
    # open the turn, before its text. Put there once at the end: inserting each one in place
    # cost a scan of the results before it, quadratic in a turn of many results.
    results: dict[int, list[dict[str, Any]]] = {}

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        elif blocks:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        role, content, where = message.get("role"), message.get("content"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "user":
            add("user", _user_blocks(content, f"{where}.content"))
        elif role == "assistant":
            text = _text(content)
            blocks = [{"type": "text", "text": text}] if text else []
            for j, call in enumerate(message.get("tool_calls") or ()):
                blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
            add("assistant", blocks)
        else:  # tool, or the legacy function
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or message.get("name") or ""),
                "content": _text(content),
            }
            if not turns or turns[-1]["role"] != "user":
                turns.append({"role": "user", "content": []})
            results.setdefault(len(turns) - 1, []).append(result)
    for index, found in results.items():
        turns[index]["content"][:0] = found
    return system, turns


def _tools(chat: ChatCompletionRequest, dropped: list[str]) -> list[dict[str, Any]]:
    tools = []
    declared = [*(chat.tools or ()), *({"function": f} for f in chat.functions or ())]
    for tool in declared:
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            dropped.append(f"tools.{tool.get('type')}")
            continue
        spec = {
            "name": str(function.get("name") or ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = str(function["description"])
        tools.append(spec)
    return tools


_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _tool_choice(chat: ChatCompletionRequest, dropped: list[str]) -> dict[str, Any] | None:
    choice = chat.tool_choice
    mapped: dict[str, Any] | None = None
    if isinstance(choice, str) and choice in _CHOICES:
        mapped = {"type": _CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": str(choice["function"].get("name") or "")}
    elif choice is not None:
        dropped.append("tool_choice")
    if chat.body.get("parallel_tool_calls") is False:
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    return mapped


def _thinking(effort: Any, max_tokens: int, dropped: list[str]) -> dict[str, Any] | None:
    if effort is None or effort == "none":
        return None
    budget = min(THINKING_BUDGETS.get(str(effort), THINKING_BUDGETS["medium"]), max_tokens - 1)
    if budget < _MIN_BUDGET:
        dropped.append("reasoning_effort")  # max_tokens leaves no room to think
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _output_format(response_format: Any, dropped: list[str]) -> dict[str, Any] | None:
    if not isinstance(response_format, dict) or response_format.get("type") == "text":
        return None
    schema = response_format.get("json_schema")
    if response_format.get("type") == "json_schema" and isinstance(schema, dict):
        return {"type": "json_schema", "schema": schema.get("schema") or {}}
    dropped.append("response_format")
    return None


def messages_request(
    chat: ChatCompletionRequest, model: str, default_max_tokens: int
) -> tuple[dict[str, Any], list[str]]:
    """The Messages request for ``chat``, and the chat fields it could not carry."""
    body = chat.body
    dropped = [k for k, v in body.items() if v is not None and k not in _MAPPED]
    system, turns = _turns(body["messages"])
    max_tokens = chat.max_completion_tokens or chat.max_tokens or default_max_tokens
    request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    if chat.stream:
        request["stream"] = True
    stop = chat.stop
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    thinking = _thinking(body.get("reasoning_effort"), max_tokens, dropped)
    if thinking is not None:
        request["thinking"] = thinking
        dropped += [k for k in ("temperature", "top_p") if body.get(k) is not None]
    else:
        if chat.temperature is not None:
            request["temperature"] = min(chat.temperature, 1.0)
        if chat.top_p is not None:
            request["top_p"] = chat.top_p
    tools = _tools(chat, dropped)
    choice = _tool_choice(chat, dropped)
    if tools:
        request["tools"] = tools
        if choice is not None:
            request["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    output_format = _output_format(body.get("response_format"), dropped)
    if output_format is not None:
        request["output_config"] = {"format": output_format}
    return request, sorted(set(dropped))


# Anthropic reads a prompt's prefix from its cache up to a block marked ``cache_control``,
# and takes at most four marks in a request.
MAX_BREAKPOINTS = 4
_TURN_BREAKPOINTS = 2
_EPHEMERAL = {"type": "ephemeral"}


def _last_cacheable(blocks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last block a mark can go on (Anthropic refuses one on an empty text block)."""
    cacheable = (b for b in reversed(blocks) if b.get("type") != "text" or bool(b.get("text")))
    return next(cacheable, None)


def cache_breakpoints(request: dict[str, Any]) -> None:
    """Mark the parts of a translated Messages ``request`` that the next request repeats.

    The prompt is cached in the order Anthropic reads it: tools, system, turns. Marked: the
    last tool, the system prompt, the last turn (written to the cache for the next request)
    and the user turn before it (read from the cache this request wrote last time); four
    marks at most.
    """
    marks = 0
    tools = request.get("tools")
    if tools:
        tools[-1]["cache_control"] = _EPHEMERAL
        marks += 1
    if request.get("system"):
        request["system"] = [
            {"type": "text", "text": request["system"], "cache_control": _EPHEMERAL}
        ]
        marks += 1
    turns = request["messages"]
    turn_marks = min(_TURN_BREAKPOINTS, MAX_BREAKPOINTS - marks)
    for n, turn in enumerate(reversed(turns)):
        if turn_marks == 0:
            break
        block = _last_cacheable(turn["content"])
        if block is not None and (n == 0 or turn["role"] == "user"):
            block["cache_control"] = _EPHEMERAL
            turn_marks -= 1
