"""The playground's HTTP side: what is served, with which headers, and when it is off."""

from __future__ import annotations

import pytest

from aichat.inbound.playground import CONTENT_SECURITY_POLICY
from tests.conftest import Gateway, GatewayFactory

PAGE = {
    "/": "text/html",
    "/static/app.js": "text/javascript",
    "/static/style.css": "text/css",
}


@pytest.mark.parametrize(("path", "content_type"), PAGE.items())
async def test_page_and_assets_load_without_a_key_under_a_strict_policy(
    gateway: Gateway, path: str, content_type: str
) -> None:
    async with gateway.http.get(f"{gateway.url}{path}") as resp:
        assert resp.status == 200
        assert resp.content_type == content_type
        assert resp.charset == "utf-8"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert await resp.read()


def test_policy_allows_nothing_but_this_origin() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'"  # no inline code, no other host
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == directives["form-action"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"


@pytest.mark.parametrize(
    "path", ["/static/", "/static/other.js", "/static/../playground.py", "/index.html"]
)
async def test_only_the_pages_own_files_are_served(gateway: Gateway, path: str) -> None:
    async with gateway.http.get(f"{gateway.url}{path}") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_page_can_be_turned_off(make_gateway: GatewayFactory) -> None:
    off = await make_gateway(playground=False)
    for path in PAGE:
        async with off.http.get(f"{off.url}{path}") as resp:
            assert resp.status == 404
    async with off.http.get(f"{off.url}/health") as resp:
        assert resp.status == 200


async def test_api_still_needs_the_key(gateway: Gateway) -> None:
    """The page is open; the calls it makes are not."""
    async with gateway.http.get(f"{gateway.url}/v1/models") as resp:
        assert resp.status == 401
