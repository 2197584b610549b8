"""What each kind of upstream can do, and which request parameters it would not honour.

Requests are written for OpenAI; many upstreams do less. The gateway fills a gap when it can
(usage is counted locally, ``stream_options.include_usage`` is answered by the gateway, tools
are emulated where a model turns that on), refuses what would change the answer's meaning
(tools without emulation, images: the provider answers 400), and drops generation
parameters the upstream ignores, saying so in a response header and a warning log line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from aichat.core.config import ModelConfig, ProviderKind
from aichat.core.prompt import Api, Prompt

ToolSupport = Literal["native", "emulated", "none"]

DROPPED_HEADER = "x-aichat-dropped-params"

# Chat-completions parameters that shape generation. The gateway itself honours ``stream``,
# ``stream_options`` and ``tools``/``tool_choice`` (or refuses them), so they are not listed.
GENERATION_PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "temperature",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One upstream kind's abilities; ``params`` None means it honours every parameter."""

    tools: ToolSupport
    vision: bool
    usage: bool  # reports token usage itself (otherwise the gateway counts)
    stream_options: bool  # takes ``stream_options`` (otherwise the gateway answers it)
    params: frozenset[str] | None


CAPABILITIES: dict[ProviderKind, Capabilities] = {
    # A web chat: text in, text out, nothing else.
    "aichats": Capabilities(
        "none", vision=False, usage=False, stream_options=False, params=frozenset()
    ),
    # Forwards the request as sent: whatever the upstream supports, it gets.
    "openai": Capabilities("native", vision=True, usage=True, stream_options=True, params=None),
    # The client's own Messages request as sent; other APIs' translated, and what the
    # translation could not carry is named by it.
    "anthropic": Capabilities("native", vision=True, usage=True, stream_options=False, params=None),
    # Echo or fixed text; exact usage, no sampling.
    "mock": Capabilities(
        "none", vision=False, usage=True, stream_options=False, params=frozenset()
    ),
}


def capabilities_for(model: ModelConfig) -> Capabilities:
    """The capabilities of ``model``'s provider, with tool emulation when it is turned on."""
    caps = CAPABILITIES[model.provider]
    return dataclasses.replace(caps, tools="emulated") if model.emulate_tools else caps


def dropped_params(prompt: Prompt, api: Api, caps: Capabilities) -> list[str]:
    """What an upstream speaking ``api`` with ``caps`` will not get of ``prompt``: what its
    API has no place for, and generation parameters it ignores."""
    dropped = set(prompt.dropped_for(api))
    if caps.params is not None:
        dropped.update(
            key
            for key, value in prompt.chat().body.items()
            if value is not None and key in GENERATION_PARAMS and key not in caps.params
        )
    return sorted(dropped)


# Names come from the client (unknown field names, namespace names): the header says what
# was dropped without letting a name break the response or outgrow a client's header limit.
_NAME = re.compile(r"[^A-Za-z0-9_.\-\[\]]")
_MAX_NAME, _MAX_NAMES = 64, 32


def dropped_header(names: list[str]) -> str:
    """The ``x-aichat-dropped-params`` value: names made safe, at most 32 of them."""
    safe = [_NAME.sub("?", name[:_MAX_NAME]) for name in names[:_MAX_NAMES]]
    if len(names) > _MAX_NAMES:
        safe.append(f"+{len(names) - _MAX_NAMES} more")
    return ",".join(safe)
