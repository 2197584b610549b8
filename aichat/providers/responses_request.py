"""A Chat Completions request -> an OpenAI Responses request (pure; no I/O).

What it decides, where the Responses API differs:

- Messages become ``input`` items: ``system``/``developer``/``user`` messages keep their
  role, with ``input_text``, ``input_image`` and ``input_file`` parts; assistant text an
  assistant message, its tool calls ``function_call`` items, ``tool`` messages
  ``function_call_output`` items. Audio cannot be read: 400.
- ``store`` is false: a chat request asks for no stored state, and the upstream's default
  would keep one.
- ``max_tokens``/``max_completion_tokens`` -> ``max_output_tokens``, ``reasoning_effort`` ->
  ``reasoning.effort``, ``verbosity`` and ``response_format`` -> ``text``, function tools
  flattened; ``tool_choice``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user``,
  ``metadata``, ``service_tier``, ``prompt_cache_key``, ``prompt_cache_retention`` and
  ``safety_identifier`` keep their names.
- ``stop``, ``seed``, ``n``, penalties, ``logprobs``, unknown fields, ...: no counterpart,
  dropped and named for ``x-aichat-dropped-params``.
"""

from __future__ import annotations

from typing import Any

from aichat.core.errors import InvalidRequest
from aichat.core.schemas import ChatCompletionRequest, as_object

_SAME = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
)
_MAPPED = frozenset(
    {
        *_SAME,
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "functions",
        "tool_choice",
        "reasoning_effort",
        "verbosity",
        "response_format",
        "store",
    }
)


def _part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": str(part.get("text") or "")}
    if kind == "image_url":
        image = part.get("image_url")
        details = image if isinstance(image, dict) else {"url": image}
        return {
            "type": "input_image",
            "image_url": str(details.get("url") or ""),
            "detail": str(details.get("detail") or "auto"),
        }
    if kind == "file" and isinstance(part.get("file"), dict):
        keys = ("file_data", "file_id", "filename")
        return {"type": "input_file", **{k: part["file"][k] for k in keys if k in part["file"]}}
    raise InvalidRequest(
        f"Content part of type '{kind}' cannot be read by this model.",
        param=where,
        code="unsupported_content",
    )


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return content or ""
    return [_part(part, f"{where}[{j}]") for j, part in enumerate(content)]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if p.get("type") == "text")
    return content if isinstance(content, str) else ""


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat conversation as Responses ``input`` items."""
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer", "user"):
            where = f"messages[{i}].content"
            items.append({"type": "message", "role": role, "content": _content(content, where)})
        elif role == "assistant":
            text = _text(content)
            if text:
                part = {"type": "output_text", "text": text, "annotations": []}
                items.append({"type": "message", "role": "assistant", "content": [part]})
            for call in message.get("tool_calls") or ():
                function = as_object(call.get("function"))
                items.append(
                    {
                        "type": "function_call",
                        "call_id": str(call.get("id") or ""),
                        "name": str(function.get("name") or ""),
                        "arguments": str(function.get("arguments") or "{}"),
                    }
                )
        else:  # tool, or the legacy function
            call_id = message.get("tool_call_id") or message.get("name") or ""
            items.append(
                {"type": "function_call_output", "call_id": str(call_id), "output": _text(content)}
            )
    return items


def _tools(chat: ChatCompletionRequest, dropped: list[str]) -> list[dict[str, Any]]:
    tools = []
    declared = [*(chat.tools or ()), *({"function": f} for f in chat.functions or ())]
    for tool in declared:
        kind = tool.get("type", "function")
        spec = tool.get(kind) if isinstance(tool.get(kind), dict) else None
        if kind not in ("function", "custom") or spec is None:
            dropped.append(f"tools.{kind}")
            continue
        keys = ("name", "description", "parameters", "strict", "format")
        tools.append({"type": kind, **{k: spec[k] for k in keys if spec.get(k) is not None}})
    return tools


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        named = choice.get(choice["type"])
        return {
            "type": choice["type"],
            "name": named.get("name") if isinstance(named, dict) else None,
        }
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = as_object(choice.get("allowed_tools"))
        listed = [
            {"type": tool.get("type"), "name": (tool.get(tool.get("type")) or {}).get("name")}
            for tool in allowed.get("tools") or ()
            if isinstance(tool, dict)
        ]
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": listed}
    return choice


def _text_options(body: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    text: dict[str, Any] = {}
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = as_object(fmt.get("json_schema"))
        text["format"] = {"type": "json_schema", **schema}
    elif isinstance(fmt, dict) and fmt.get("type") in ("json_object", "text"):
        text["format"] = {"type": fmt["type"]}
    elif fmt is not None:
        dropped.append("response_format")
    return text


def responses_request(chat: ChatCompletionRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """The Responses request for ``chat``, and the chat fields it could not carry."""
    body = chat.body
    dropped = [k for k, v in body.items() if v is not None and k not in _MAPPED]
    request: dict[str, Any] = {
        "model": model,
        "input": input_items(body["messages"]),
        "store": False,
    }
    if chat.stream:
        request["stream"] = True
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    if max_tokens is not None:
        request["max_output_tokens"] = max_tokens
    request.update({k: body[k] for k in _SAME if body.get(k) is not None})
    tools = _tools(chat, dropped)
    if tools:
        request["tools"] = tools
        if chat.tool_choice is not None:
            request["tool_choice"] = _tool_choice(chat.tool_choice)
    if body.get("reasoning_effort") is not None:
        request["reasoning"] = {"effort": body["reasoning_effort"]}
    text = _text_options(body, dropped)
    if text:
        request["text"] = text
    return request, sorted(set(dropped))
