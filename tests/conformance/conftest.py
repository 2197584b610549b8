"""One gateway in front of every provider, and the knobs that make each scenario happen."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aichat.core.config import ModelConfig
from tests.conftest import Gateway, GatewayFactory
from tests.fakes import FakeAichats, FakeOpenAI

PROVIDERS = ("aichats", "openai", "mock")
TEXT = ["Hello", ",", " world", "!"]
# The emulated tool call, cut where a streamed answer might cut it.
TOOL_BLOCK = [
    "<tool",
    '_calls>\n[{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}]\n</tool_calls>',
]


@dataclass
class Upstreams:
    """The gateway and the fake upstreams behind it."""

    gateway: Gateway
    aichats: FakeAichats
    openai: FakeOpenAI

    def prepare(self, provider: str, scenario: str) -> str:
        """Make ``provider`` behave as ``scenario`` says; return the model to ask for."""
        if provider == "mock":
            return f"mock-{scenario}"  # the mock's behaviour is its configuration
        if provider == "aichats":
            fake = self.aichats
            fake.pieces = TOOL_BLOCK if scenario == "tool" else TEXT
            if scenario == "fail_before":
                fake.status = 503
            elif scenario == "fail_after":
                fake.chunk_size, fake.drop_after = len("data: Hello\n\n"), 1
            return "aichats"
        up = self.openai
        up.text_pieces, up.tool_calls = TEXT, scenario == "tool"
        if scenario == "fail_before":
            up.status = 503
        elif scenario == "fail_after":
            up.drop_after = 2  # the role chunk and "Hello" get through
        return "openai"


@pytest.fixture
async def upstreams(
    make_gateway: GatewayFactory,
    upstream: tuple[FakeAichats, str],
    openai_upstream: tuple[FakeOpenAI, str],
) -> Upstreams:
    """A gateway with one model per provider (and per scenario for the mock)."""
    mock_text = "Hello, world!"
    routes = (
        ModelConfig(name="aichats", provider="aichats", emulate_tools=True),
        ModelConfig(name="openai", provider="openai", base_url=openai_upstream[1]),
        ModelConfig(name="mock-text", provider="mock", text=mock_text),
        ModelConfig(
            name="mock-tool", provider="mock", text="".join(TOOL_BLOCK), emulate_tools=True
        ),
        ModelConfig(name="mock-fail_before", provider="mock", text=mock_text, fail_after=0),
        ModelConfig(name="mock-fail_after", provider="mock", text=mock_text, fail_after=1),
    )
    gateway = await make_gateway(routes=routes, retries=0)
    return Upstreams(gateway, upstream[0], openai_upstream[0])
