"""Pydantic models of the OpenAI Chat Completions request.

Only what the gateway reads is typed; unknown fields are kept (``extra="allow"``) because
clients send many and pass-through providers forward them. Responses are not modelled here:
they are written from pre-serialised templates in ``translate`` (no object per chunk).
"""

from __future__ import annotations

import json
import math
from typing import Any, Generic, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from aichat.core.errors import InvalidRequest

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Open(BaseModel):
    # Strict: a value of the wrong JSON type is a 400, as OpenAI answers, never coerced
    # ("stream": "yes" is not true, "temperature": "0" is not 0).
    model_config = ConfigDict(extra="allow", strict=True)


_Model = TypeVar("_Model", bound=BaseModel)


class ContentPart(_Open):
    """One part of a list-valued ``content``: ``text``, ``image_url``, ``input_audio``, ..."""

    type: str
    text: str | None = None


class ChatMessage(_Open):
    """One message of the conversation."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    """``stream_options``: only ``include_usage`` changes what the gateway sends."""

    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions`` body."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    _body: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("n", "max_tokens", "max_completion_tokens", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON has one kind of number: 2.0 is an integer as much as 2 is (JSON Schema agrees).
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @property
    def body(self) -> dict[str, Any]:
        """The request exactly as the client sent it, for pass-through providers."""
        # Pydantic's private store read directly: ``self._body`` takes its slow __getattr__.
        body: dict[str, Any] = self.__pydantic_private__["_body"]  # type: ignore[index]
        return body

    @property
    def include_usage(self) -> bool:
        """Whether the stream must end with a usage chunk."""
        return self.stream and self.stream_options is not None and self.stream_options.include_usage


def _param_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"str", "list[ContentPart]"} or part.startswith(("function-", "literal[")):
            # pydantic names union branches in ``loc``; clients know only their own fields.
            continue
        else:
            path += f".{part}" if path else part
    return path


def _not_json(constant: str) -> Any:
    # Python reads NaN and Infinity, which JSON has not: an upstream would get them verbatim.
    raise ValueError(f"{constant} is not a JSON value")


def _finite(number: str) -> float:
    # 1e400 reads as infinity, which JSON cannot carry: an upstream would get null or
    # Infinity, not what the client wrote.
    value = float(number)
    if math.isinf(value):
        raise ValueError(f"{number} is out of range for a JSON number")
    return value


def _has_unpaired_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` holds half of a UTF-16 pair (it cannot be UTF-8)."""
    pending = [value]
    while pending:  # a loop, not recursion: the body may nest as deep as the parser allows
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False


# Where an integer past 64 bits could be: 19 digits in a row where a JSON value starts
# (first, or after ``:``, ``[`` or ``,``, whitespace or a minus sign). Digits only a string
# can hold (an id's, a hash's) do not count: they would send a coding agent's 40-50 KB
# request to the slower parser for nothing. Looked for in a copy of the body with digits
# made ``0``, those openers (and whitespace and ``-``, which may stand between an opener and
# the digits) ``:`` and every other byte ``x``: one pass and one substring search, where a
# regular expression takes three times as long. Whitespace or a minus sign before digits in
# a string's text can look like a number too; such bodies merely take the slower parser.
_VALUE_START = b":"
_DIGITS_TABLE = bytes(
    ord("0") if 0x30 <= byte <= 0x39 else ord(":") if byte in b":[, \t\r\n-" else ord("x")
    for byte in range(256)
)
_LONG_NUMBER = _VALUE_START + b"0" * 19


def _may_hold_big_integers(raw: bytes) -> bool:
    """Whether ``raw`` may hold an integer orjson would read as a float (see above)."""
    return _LONG_NUMBER in _VALUE_START + raw.translate(_DIGITS_TABLE)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 413 above the size limit, 400 when it is not JSON."""
    return parse_json(await request.read())  # read raises 413 past client_max_size


def parse_json(raw: bytes, exact: bool = True) -> Any:
    """``raw`` as JSON; a 400 when it is not JSON.

    ``exact=False`` for a body that goes upstream as its bytes and is read again only if
    it must be translated (``Validated``): integers past 64 bits may then be floats, which
    spares a pass over a coding agent's 40-50 KB body looking for them.
    """
    # orjson is several times faster and strict (no NaN, no lone surrogates); anything it
    # refuses goes through json, whose error messages the client is shown. So do bodies
    # with integers that may not fit 64 bits, which orjson reads as floats, losing digits.
    if not exact or not _may_hold_big_integers(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        body = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON and bad UTF-8; RecursionError absurdly deep nesting.
        raise InvalidRequest("Request body is not valid JSON.", code="invalid_json") from None
    # Only a \uD800-\uDFFF escape can make one, so most bodies skip the search.
    if (b"\\ud" in raw or b"\\uD" in raw) and _has_unpaired_surrogate(body):
        raise InvalidRequest(
            "Request body is not valid JSON: a string holds an unpaired surrogate "
            "(a \\uD800-\\uDFFF escape without its other half).",
            code="invalid_json",
        )
    return body


def validate_body(model: type[_Model], body: Any) -> _Model:
    """``body`` validated as ``model``; a 400 naming the first offending field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = _param_path(tuple(first["loc"]))
        raise InvalidRequest(
            f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_value"
        ) from None


class Validated(Generic[_Model]):
    """``body`` validated as ``model`` on first use, and only once.

    A request of the Responses or Messages API is validated only when an upstream of
    another API needs it translated; then both the translation and the answer's own words
    (its envelope, whether it shows thinking) read it. A coding agent's request is 40-50 KB:
    validating it twice is the cost of one more pass over all of it. ``raw``: the bytes
    ``body`` was read from with ``exact=False``, read again exactly before validation when
    they may hold integers past 64 bits.
    """

    __slots__ = ("_model", "_raw", "_value", "body")

    def __init__(self, model: type[_Model], body: Any, raw: bytes | None = None) -> None:
        self._model = model
        self.body = body
        self._raw = raw
        self._value: _Model | None = None

    def __call__(self) -> _Model:
        """The validated request; a 400 naming the first offending field otherwise."""
        if self._value is None:
            raw, body = self._raw, self.body
            if raw is not None and _may_hold_big_integers(raw):
                body = parse_json(raw)
            self._value = validate_body(self._model, body)
        return self._value


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: for reading optional nested
    objects of JSON that may be malformed."""
    return value if isinstance(value, dict) else {}


def routing_fields(body: Any, limit_field: str) -> tuple[str, bool, int | None]:
    """What the gateway itself needs of a request in any API: its ``model``, whether it
    streams, and its answer's token limit (``limit_field``) when it sets a valid one.

    The rest is left to whoever reads the request next: the upstream, for a request that
    reaches one in its own API, or the translation to another API.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_body")
    model, stream, limit = body.get("model"), body.get("stream", False), body.get(limit_field)
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Invalid value for 'model': a non-empty string is required.",
            param="model",
            code="invalid_value",
        )
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(
            "Invalid value for 'stream': a boolean is required.",
            param="stream",
            code="invalid_value",
        )
    valid_limit = type(limit) is int and limit >= 1
    return model, stream, limit if valid_limit else None


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; raise a 400 naming the first offending field."""
    request = validate_body(ChatCompletionRequest, body)
    request._body = body
    return request


def text_of(message: ChatMessage, index: int) -> str:
    """The message's text: a string, or its text parts joined by newlines; other parts: 400.

    ``index`` is the message's position, used to name the offending part in the error.
    """
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise InvalidRequest(
                f"Content part of type '{part.type}' is not supported by this model; "
                "send text parts only.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _plain_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "\n".join(part.text for part in message.content if part.text is not None)
    return message.content or ""


def prompt_text(request: ChatCompletionRequest) -> list[str]:
    """The text of each message, for counting prompt tokens (non-text parts skipped)."""
    return [_plain_text(message) for message in request.messages]


def last_user_text(request: ChatCompletionRequest) -> str:
    """The text of the last user message (non-text parts skipped); empty if there is none."""
    users = [message for message in request.messages if message.role == "user"]
    return _plain_text(users[-1]) if users else ""
