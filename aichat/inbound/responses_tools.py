"""Responses API tools -> chat-completions function tools, and their calls back.

A chat upstream knows one kind of tool: a function that takes a JSON object. What this
module decides:

- ``function`` tools pass as functions, in the Responses shape or the chat one.
- ``custom`` (freeform) tools become functions of one string, ``input``, whose description
  carries the tool's grammar if it has one; a call comes back as a ``custom_tool_call``
  holding that string.
- ``namespace`` tools are flattened: each tool inside becomes a function named
  ``<namespace>__<name>``, made unique and kept to OpenAI's 64 characters. A call of one
  comes back with its own ``name`` and its ``namespace``, so the client routes it; calls in
  ``input`` that carry a ``namespace`` are renamed the same way.
- Hosted tools (``web_search``, ``file_search``, ``code_interpreter``, ``image_generation``,
  ``computer_use_preview``, ``mcp``, ``shell``, ``apply_patch``, …) run on OpenAI's own
  servers or need item types a chat upstream cannot produce: dropped and reported. A request
  whose only tools are hosted ones is answered without tools.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# OpenAI's limit on a function name; vLLM and others check it too.
_MAX_NAME = 64

# A tool_choice naming one of these types picks a tool; any other type is a hosted tool.
_CLIENT_KINDS = ("function", "custom")


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool as the client declared it: its name, namespace and kind."""

    name: str
    namespace: str | None = None
    custom: bool = False


@dataclass(slots=True)
class ToolMap:
    """The chat tools of one request and how their names map back to the client's."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    _by_flat: dict[str, ClientTool] = field(default_factory=dict)
    _flat: dict[tuple[str | None, str], str] = field(default_factory=dict)
    # Per flattened name, the suffix to try next: each try moves it on, so n tools of one
    # name cost n tries in all, not n squared.
    _next: dict[str, int] = field(default_factory=dict)

    def add(self, tool: ClientTool, function: dict[str, Any]) -> None:
        """Declare ``tool`` upstream as ``function``, under a name no other tool has."""
        name = tool.name if tool.namespace is None else self._unique(tool)
        self._by_flat[name] = tool
        self._flat[(tool.namespace, tool.name)] = name
        self.tools.append({"type": "function", "function": {**function, "name": name}})

    def _unique(self, tool: ClientTool) -> str:
        base = f"{tool.namespace}__{tool.name}"
        name = _fit(base)
        number = self._next.get(base, 1)
        while name in self._by_flat:
            number += 1
            name = _fit(f"{base}_{number}")
        self._next[base] = number
        return name

    def flat_name(self, name: str, namespace: Any = None) -> str:
        """The upstream's name for the client's tool ``name`` in ``namespace``."""
        space = namespace if isinstance(namespace, str) else None  # as a client may send it
        return self._flat.get((space, name), name)

    def client_tool(self, flat_name: str) -> ClientTool:
        """The client's tool behind an upstream name (a plain function if unknown)."""
        return self._by_flat.get(flat_name) or ClientTool(flat_name)

    def only(self, names: set[str]) -> None:
        """Keep only the tools whose upstream names are in ``names``."""
        self.tools = [tool for tool in self.tools if tool["function"]["name"] in names]


def _fit(name: str) -> str:
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9]}_{digest}"


def _custom_function(tool: dict[str, Any]) -> dict[str, Any]:
    description = str(tool.get("description") or "")
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        grammar = f"The input must match this {fmt.get('syntax')} grammar:\n{fmt.get('definition')}"
        description = f"{description}\n\n{grammar}" if description else grammar
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's whole input."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    return {"description": description, "parameters": parameters}


def _declared(tool: dict[str, Any]) -> dict[str, Any]:
    """Where a function tool's fields are: nested in the chat shape, at the top in Responses'."""
    nested = tool.get("function")
    return nested if isinstance(nested, dict) else tool


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    source = _declared(tool)
    keys = ("description", "parameters", "strict")
    return {k: source[k] for k in keys if source.get(k) is not None}


def _name(tool: dict[str, Any]) -> str | None:
    name = _declared(tool).get("name")
    return name if isinstance(name, str) and name else None


def _add_client_tool(tools: ToolMap, tool: Any, namespace: str | None) -> bool:
    """Add a function or custom tool; False for anything else."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    name = _name(tool) if kind in _CLIENT_KINDS else None
    if name is None:
        return False
    custom = kind == "custom"
    function = _custom_function(tool) if custom else _function(tool)
    tools.add(ClientTool(name, namespace, custom), function)
    return True


def map_tools(declared: list[dict[str, Any]]) -> tuple[ToolMap, list[str]]:
    """The chat tools for a request's ``tools``, and the hosted tools dropped from them."""
    tools = ToolMap()
    dropped: list[str] = []
    namespaces = [tool for tool in declared if tool.get("type") == "namespace"]
    for tool in declared:  # plain names first: they keep their names, namespaces adapt
        if tool.get("type") != "namespace" and not _add_client_tool(tools, tool, None):
            dropped.append(f"tools.{tool.get('type')}")
    for space in namespaces:
        inner = space.get("tools")
        for tool in inner if isinstance(inner, list) else ():
            if not _add_client_tool(tools, tool, str(space.get("name") or "")):
                kind = tool.get("type") if isinstance(tool, dict) else None
                dropped.append(f"tools.{space.get('name')}.{kind}")
    return tools, dropped


def map_tool_choice(choice: Any, tools: ToolMap) -> tuple[str | dict[str, Any] | None, bool]:
    """The chat ``tool_choice`` for a Responses one, and whether it was dropped.

    ``allowed_tools`` narrows ``tools`` to the listed client tools; a choice of a hosted
    tool is dropped (the model chooses, as with ``auto``).
    """
    if isinstance(choice, str):
        return choice, False
    if not isinstance(choice, dict):
        return None, True
    kind = choice.get("type")
    if kind in _CLIENT_KINDS and isinstance(choice.get("name"), str):
        name = tools.flat_name(choice["name"], choice.get("namespace"))
        return {"type": "function", "function": {"name": name}}, False
    if kind == "allowed_tools":
        listed = choice.get("tools")
        allowed = {
            tools.flat_name(str(_name(tool)), tool.get("namespace"))
            for tool in (listed if isinstance(listed, list) else ())
            if isinstance(tool, dict) and tool.get("type") in _CLIENT_KINDS
        }
        tools.only(allowed)
        return str(choice.get("mode") or "auto"), False
    return None, True


def custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function it was declared as.

    A model that ignored the one-string schema still has its call delivered: then the
    arguments themselves are the input.
    """
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments


def custom_arguments(text: str) -> str:
    """The function arguments that carry a custom tool's ``text`` input upstream."""
    return json.dumps({"input": text}, ensure_ascii=False)
