"""Upstream failures a test machine cannot cause for real (DNS, certificates), named as such."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

import aiohttp
import pytest
from aioresponses import aioresponses

from aichat.core.errors import UpstreamError
from aichat.providers.http import UpstreamBounds, upstream_body

URL = "https://ai-chats.org/chat/send2/"
# What aiohttp's connector errors carry about the connection: only used in their own str().
KEY = SimpleNamespace(host="ai-chats.org", port=443, ssl=True)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),  # type: ignore[arg-type]
            "aichats upstream unreachable: DNS lookup of ai-chats.org:443 failed.",
        ),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad")),  # type: ignore[arg-type]
            "aichats upstream unreachable: TLS certificate of ai-chats.org:443 not trusted.",
        ),
        (
            aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError("wrong version")),
            "aichats upstream unreachable: TLS handshake with ai-chats.org:443 failed.",
        ),
        (
            aiohttp.ServerDisconnectedError(),
            "aichats upstream unreachable: ai-chats.org:443 closed the connection without "
            "answering.",
        ),
    ],
)
async def test_connection_failures_name_host_and_kind(
    mocked: aioresponses, session: aiohttp.ClientSession, exc: Exception, message: str
) -> None:
    mocked.post(URL, exception=exc, repeat=True)  # a disconnect is asked again once
    body = upstream_body(
        session, URL, body=b"{}", headers={}, bounds=UpstreamBounds(5, 5), name="aichats"
    )
    with pytest.raises(UpstreamError) as info:
        await anext(body)
    assert info.value.message == message
    assert info.value.cause == message.removeprefix("aichats upstream unreachable: ")[:-1]
    assert info.value.retryable
