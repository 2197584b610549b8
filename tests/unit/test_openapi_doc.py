"""``/openapi.json`` is a valid OpenAPI 3.1 document that describes routes the gateway has."""

from __future__ import annotations

from openapi_spec_validator import OpenAPIV31SpecValidator

from aichat.app import create_app
from aichat.core.config import Settings
from aichat.inbound.openapi import openapi_document


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_every_documented_operation_is_routed() -> None:
    app = create_app(Settings(api_keys=("sk-unit",)))
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    # aiohttp names a path parameter with its pattern: {model:.+} documents as {model}.
    routed = {(method, path.replace("{model:.+}", "{model}")) for method, path in routed}
    assert documented <= routed, documented - routed


def test_every_error_answer_is_in_its_apis_shape() -> None:
    for path, operations in openapi_document()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    body = "AnthropicErrorBody" if path.startswith("/v1/messages") else "ErrorBody"
                    assert schema == {"$ref": f"#/components/schemas/{body}"}, (path, status)
