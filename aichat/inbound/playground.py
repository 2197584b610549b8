"""The built-in playground: one static page at ``/`` that talks to this gateway's own API.

The page, its script and its style ship inside the package (``aichat/inbound/static``): no build
step and nothing fetched from elsewhere, so it works on a machine without internet. Loading
it needs no key; every API call it makes sends the key the user types.

A strict Content-Security-Policy is the second line of defence behind the script's rule of
never parsing network text as HTML: only this origin's own script and style run, and Trusted
Types make any HTML-parsing sink (``innerHTML`` and friends) throw instead of injecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from aichat.core.config import StartupError

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files: revalidate every time, so an upgraded gateway never runs a stale script.
    "Cache-Control": "no-cache",
}

# Everything the page may load, by URL path; nothing else under /static/ exists.
_ASSETS = {
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/theme.css": ("theme.css", "text/css"),
    "/static/style.css": ("style.css", "text/css"),
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.body,
            content_type=self.content_type,
            charset="utf-8",
            headers=PAGE_HEADERS,
        )


def add_pages(
    router: web.UrlDispatcher, assets: dict[str, tuple[str, str]], page: str, fix: str
) -> None:
    """Route each of ``page``'s ``assets`` (URL path -> file in ``static``, content type).

    Files are read once, here, not per request; a missing one stops the start, saying ``fix``.
    """
    static = files("aichat.inbound") / "static"
    for path, (name, content_type) in assets.items():
        try:
            body = (static / name).read_bytes()
        except FileNotFoundError:
            raise StartupError(
                f"the {page}'s {name} is missing from this installation of aichat "
                f"(package data aichat/inbound/static): {fix}"
            ) from None
        router.add_get(path, _Asset(body, content_type).handle)


def add_playground(router: web.UrlDispatcher) -> None:
    """Route ``GET /`` and the page's assets."""
    add_pages(router, _ASSETS, "playground", "reinstall it, or set AICHAT_PLAYGROUND=0")
