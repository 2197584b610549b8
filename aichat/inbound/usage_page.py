"""The usage page at ``/usage`` and its JSON API, ``GET /usage/api``.

Decisions:

- The data is behind a key of its own, ``AICHAT_ADMIN_KEY``, not the metrics key: a
  metrics key is handed to every scraper and dashboard, while the history names every key
  and what it spent over months. Without ``AICHAT_ADMIN_KEY`` the API answers 404 saying
  how to turn it on. The page itself and its files hold no data and need no key; the
  page asks for the admin key and sends it with each call, like the playground.
- The API is what the page draws, so scripts get the same numbers: ``since`` and
  ``until`` (UTC days, at most ``MAX_DAYS`` apart; default the last 30 days), ``by`` (key,
  model or upstream). It reads the history database, so answers finished in the last
  second (``WRITE_EVERY``) may be missing; budgets are read from where they are enforced.
- Charts are uPlot, shipped in the package (``static/vendor/uplot``, from npm by
  ``scripts/vendor-uplot``, its licence beside it): no build step, nothing loaded from
  another host. The page runs under the playground's Content-Security-Policy.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from aichat.answer.usage import LEDGER
from aichat.core.errors import APIError, AuthenticationError, InvalidRequest, NotFound
from aichat.inbound.playground import add_pages
from aichat.operations.auth import FAILED_KEYS, key_matches, presented_key
from aichat.operations.budgets import WINDOWS, subject, window_ids, window_resets
from aichat.operations.history import HISTORY, DatabaseDown
from aichat.operations.redis_pool import StoreBusy, StoreUnavailable
from aichat.operations.usage_report import GROUPS, MAX_DAYS, GroupBy, dollars, report

ADMIN_KEY = web.AppKey("admin_key", str)
API_PATH = "/usage/api"
_ASSETS = {
    "/usage": ("usage.html", "text/html"),
    "/usage/static/usage.js": ("usage.js", "text/javascript"),
    "/usage/static/theme.css": ("theme.css", "text/css"),
    "/usage/static/usage.css": ("usage.css", "text/css"),
    "/usage/static/uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript"),
    "/usage/static/uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css"),
}


class HistoryUnavailable(APIError):
    """The usage history database cannot be read right now (503)."""

    status = 503
    type = "server_error"
    code = "usage_history_unavailable"


def _require_admin(request: web.Request) -> None:
    required = request.app.get(ADMIN_KEY)
    if required is None:
        raise NotFound(
            "The usage API is off: set AICHAT_ADMIN_KEY on the gateway to turn it on.",
            code="admin_key_not_set",
        )
    if not key_matches(presented_key(request), required):
        request.app[FAILED_KEYS].record(request.remote)
        raise AuthenticationError("Incorrect or missing admin key (AICHAT_ADMIN_KEY).")


def _day(request: web.Request, name: str, default: date) -> date:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{name}: {value[:20]!r} is not a date (YYYY-MM-DD)", param=name
        ) from None


def query(request: web.Request) -> tuple[date, date, GroupBy]:
    """The range and grouping a request asks for, checked."""
    until = _day(request, "until", datetime.now(UTC).date())
    since = _day(request, "since", until - timedelta(days=29))
    if since > until or (until - since).days >= MAX_DAYS:
        raise InvalidRequest(
            f"since must be on or before until, and at most {MAX_DAYS} days before it",
            param="since",
        )
    by = request.query.get("by", "key")
    for group in GROUPS:
        if by == group:
            return since, until, group
    raise InvalidRequest(f"by: must be one of {', '.join(GROUPS)}", param="by")


async def budget_use(app: web.Application) -> list[dict[str, Any]]:
    """Each budget's use so far in its current window (empty where the store is down)."""
    ledger = app.get(LEDGER)
    if ledger is None:
        return []
    budgets = ledger.budgets
    now = time.time()
    windows = window_ids(now)
    resets = window_resets(now)
    found = []
    for key, of_key in sorted(budgets.by_key.items()):
        for budget in of_key:
            try:
                spent = await budgets.store.spent(windows, subject(key, budget.unit))
            except (StoreUnavailable, StoreBusy):
                continue
            shown = dollars if budget.unit == "usd" else int
            for window, limit, used, reset in zip(
                WINDOWS, budget.limits, spent, resets, strict=True
            ):
                if limit:
                    found.append(
                        {
                            "key": key,
                            "window": window,
                            "unit": budget.unit,
                            "used": shown(used),
                            "limit": shown(limit),
                            "resets_at": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }
                    )
    return found


async def usage_api(request: web.Request) -> web.Response:
    """``GET /usage/api``: the history of a range, grouped, with totals and budgets."""
    _require_admin(request)
    since, until, by = query(request)
    history = request.app[HISTORY]
    try:
        rows = await history.database.read(since.isoformat(), until.isoformat())
    except DatabaseDown as exc:
        raise HistoryUnavailable(f"The usage history cannot be read: {exc}") from None
    body = report(rows, since, until, by)
    body["budgets"] = await budget_use(request.app)
    return web.json_response(body)


def add_usage_page(app: web.Application, admin_key: str | None) -> None:
    """Route the page, its files and its API; the API needs ``admin_key`` (None: off)."""
    if admin_key is not None:
        app[ADMIN_KEY] = admin_key
    add_pages(app.router, _ASSETS, "usage page", "reinstall it")
    app.router.add_get(API_PATH, usage_api)
