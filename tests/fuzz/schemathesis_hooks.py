"""Hooks and a check for the schemathesis run of ``test_schemathesis`` (``SCHEMATHESIS_HOOKS``).

Loaded by the schemathesis command in its own process, never by pytest.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, HookContext, Response

# The models of the gateway under test (see test_schemathesis.CONFIG).
MODELS = ("gpt-4o", "demo")
ERROR_KEYS = {"message", "type", "param", "code"}


@schemathesis.hook
def map_body(context: HookContext, body: Any) -> Any:
    """Send most chat requests to a configured model, so they get past the router.

    Random names only ever meet the router's 404. Only non-empty names are replaced: the
    schema's one rule for a name, so a valid body stays valid and an invalid one invalid.
    One in four keeps its random name, to keep the 404 path under test.
    """
    if isinstance(body, dict) and isinstance(body.get("model"), str) and len(body["model"]) % 4:
        body["model"] = MODELS[len(body["model"]) % len(MODELS)]
    return body


@schemathesis.check
def openai_error_shape(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every API error is ``{"error": {"message", "type", "param", "code"}}``, as OpenAI's,
    except on the Anthropic Messages paths, whose errors are in Anthropic's shape."""
    if response.status_code < 400 or not case.path.startswith("/v1/"):
        return None
    body = response.json()
    if case.path.startswith("/v1/messages"):
        assert isinstance(body, dict), "error body is not a JSON object"
        assert body.get("type") == "error", f"error body: {body}"
        assert set(body["error"]) == {"type", "message"}, f"error keys: {sorted(body['error'])}"
        assert body["error"]["message"], "message is empty"
        return True
    assert isinstance(body, dict), "error body is not a JSON object"
    assert set(body) == {"error"}, f"error body keys: {sorted(body)}"
    error = body["error"]
    assert isinstance(error, dict), "error is not an object"
    assert set(error) == ERROR_KEYS, f"error keys: {sorted(error)}"
    assert isinstance(error["message"], str), "message is not a string"
    assert error["message"], "message is empty"
    assert isinstance(error["type"], str), "type is not a string"
    return True
