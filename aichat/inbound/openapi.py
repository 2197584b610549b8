"""``GET /openapi.json``: an OpenAPI 3.1 document of aichat's own endpoints.

Request schemas come from the pydantic models the gateway validates with; the response
models below exist to describe answers (the gateway writes those from templates).
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from aichat import __version__
from aichat.core.schemas import ChatCompletionRequest
from aichat.inbound.anthropic_api import CountTokensRequest, MessagesRequest
from aichat.inbound.responses_api import ResponsesRequest


class ErrorDetail(BaseModel):
    """The inside of every error answer."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error answer: OpenAI's shape."""

    error: ErrorDetail


class ModelObject(BaseModel):
    """One model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    context_window: int | None = Field(
        None, description="Tokens the model holds, prompt and answer together, where known."
    )


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[ModelObject]
    models: list[dict[str, Any]] | None = Field(
        None, description="The Codex CLI's model catalog, when the query has client_version."
    )


class AssistantMessage(BaseModel):
    """The answer of a whole completion."""

    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None


class Choice(BaseModel):
    """One choice of a whole completion."""

    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A whole (non-streamed) answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


_ERRORS = {
    "400": "Invalid request",
    "401": "Missing or wrong API key",
    "404": "Unknown model",
    "408": "Request body not received in time",
    "413": "Body too large",
    "415": "Compressed body: send it without Content-Encoding",
    "429": "Rate limit exceeded",
    "502": "Upstream failed",
    "503": "Overloaded, shutting down, or every upstream's circuit open",
    "504": "Upstream timed out",
}


_SSE_EVENT = {
    "description": "One server-sent event. `data` is a `chat.completion.chunk` as JSON, "
    "`[DONE]` after the last chunk of a complete answer, or an `ErrorBody` as JSON that "
    "ends a stream which failed after it started (no `[DONE]` follows).",
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


class AnthropicErrorDetail(BaseModel):
    """The inside of an Anthropic error."""

    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error answer of ``/v1/messages``: Anthropic's shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class ResponseObject(BaseModel):
    """A whole (non-streamed) Responses API answer; fields beyond these are documented by
    OpenAI's API reference."""

    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]


class MessageObject(BaseModel):
    """A whole (non-streamed) Anthropic Messages answer."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: dict[str, Any]


class TokenCount(BaseModel):
    """``POST /v1/messages/count_tokens``."""

    input_tokens: int


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: str, body: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {status: _json(_ERRORS[status], body) for status in statuses}


_ANSWER_ERRORS = ("400", "401", "404", "408", "413", "415", "429", "502", "503", "504")


def _answer_operation(
    operation_id: str,
    request: type[BaseModel],
    answer: type[BaseModel],
    description: str,
    security: list[dict[str, list[str]]],
    error_body: type[BaseModel] = ErrorBody,
) -> dict[str, Any]:
    """A POST that answers whole (JSON) or streamed (SSE), per its ``stream`` field."""
    return {
        "post": {
            "operationId": operation_id,
            "security": security,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": {
                    "description": description,
                    "content": {
                        "application/json": {"schema": _ref(answer)},
                        # Before OpenAPI 3.2's ``itemSchema``, tools (schemathesis among
                        # them) read an event stream's ``schema`` as that of one event.
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **_errors(*_ANSWER_ERRORS, body=error_body),
            },
        }
    }


def _status(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def openapi_document() -> dict[str, Any]:
    """The whole document; built once per application."""
    requests: list[type[BaseModel]] = [
        ChatCompletionRequest,
        ResponsesRequest,
        MessagesRequest,
        CountTokensRequest,
    ]
    answers: list[type[BaseModel]] = [
        ChatCompletion,
        ResponseObject,
        MessageObject,
        TokenCount,
        ModelList,
        ErrorBody,
        AnthropicErrorBody,
    ]
    _, schemas = models_json_schema(
        [(model, "validation") for model in requests]
        + [(model, "serialization") for model in answers],
        ref_template="#/components/schemas/{model}",
    )
    secured: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    # Anthropic's SDKs send the key as x-api-key.
    anthropic_secured: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "aichat", "version": __version__},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "paths": {
            "/v1/chat/completions": _answer_operation(
                "createChatCompletion",
                ChatCompletionRequest,
                ChatCompletion,
                "A chat completion, or with `stream: true` a stream of "
                "`chat.completion.chunk` events ending in `data: [DONE]`",
                secured,
            ),
            "/v1/responses": _answer_operation(
                "createResponse",
                ResponsesRequest,
                ResponseObject,
                "A response, or with `stream: true` typed `response.*` events ending in "
                "`response.completed` (or `error` and `response.failed`)",
                secured,
            ),
            "/v1/messages": _answer_operation(
                "createMessage",
                MessagesRequest,
                MessageObject,
                "A message, or with `stream: true` Anthropic's events ending in "
                "`message_stop` (or `error`)",
                anthropic_secured,
                AnthropicErrorBody,
            ),
            "/v1/messages/count_tokens": {
                "post": {
                    "operationId": "countMessageTokens",
                    "security": anthropic_secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(CountTokensRequest)}},
                    },
                    "responses": {
                        "200": _json("Input tokens, counted locally", TokenCount),
                        **_errors(
                            "400", "401", "404", "413", "415", "429", body=AnthropicErrorBody
                        ),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "client_version",
                            "in": "query",
                            "required": False,
                            "description": "The Codex CLI's version: adds its catalog.",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": _json("Models", ModelList), **_errors("401", "429")},
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "operationId": "retrieveModel",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        }
                    ],
                    "responses": {
                        "200": _json("A model", ModelObject),
                        **_errors("401", "404", "429"),
                    },
                }
            },
            "/health": {"get": {"operationId": "health", "responses": {"200": _status("Alive")}}},
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "parameters": [
                        {
                            "name": "verbose",
                            "in": "query",
                            "required": False,
                            "description": "1: also list each upstream, its circuit and last "
                            "error (needs AICHAT_METRICS_KEY when one is set)",
                            "schema": {"type": "string", "enum": ["0", "1"]},
                        }
                    ],
                    "responses": {
                        "200": _status("Ready"),
                        "503": _status("Not ready"),
                        **_errors("400", "401"),
                    },
                }
            },
        },
    }


OPENAPI = web.AppKey("openapi", dict[str, Any])


async def openapi_endpoint(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.json_response(request.app[OPENAPI])
