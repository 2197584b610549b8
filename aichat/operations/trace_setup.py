"""Whether to trace: asked for by the OpenTelemetry SDK's variables, else nothing imported.

Decisions:

- **Configured only by the OpenTelemetry SDK's own environment variables**, read from the
  process environment: tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, unless ``OTEL_SDK_DISABLED=true`` or
  ``OTEL_TRACES_EXPORTER=none``. Spans go over OTLP/HTTP (protobuf); another exporter or
  protocol asked for is refused at start-up rather than silently not traced.
- **Off costs nothing on the request path.** Nothing of OpenTelemetry is imported, no
  middleware is installed, and the request path's hooks (``aichat.core.trace``) are
  skipped on a request's ``Exchange.trace`` being None and an unset context variable
  (``aichat.core.trace.OUTBOUND``).
- **On**, ``aichat.operations.trace_spans`` makes the spans and
  ``aichat.operations.trace_export`` sends them; they need the ``tracing`` extra
  (``pip install 'aichat[tracing]'``), which ``make run`` and the Docker image install.
- Message contents are recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
  says so (the variable OpenTelemetry's GenAI instrumentations read).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aichat.core.config import StartupError

if TYPE_CHECKING:
    from aichat.operations.trace_spans import Tracing

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# What OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT may say to put contents on spans.
_CAPTURE = {"true", "span_only", "span_and_event"}


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip().lower()


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks for traces; StartupError if it asks for what aichat lacks."""
    if _value(environ, "OTEL_SDK_DISABLED") == "true":
        return False
    exporters = _value(environ, "OTEL_TRACES_EXPORTER") or "otlp"
    if exporters == "none" or not any(environ.get(name, "").strip() for name in _ENDPOINTS):
        return False
    if exporters != "otlp":
        raise StartupError(
            f"OTEL_TRACES_EXPORTER={exporters} is not available: aichat exports traces over "
            "OTLP/HTTP only; set it to otlp (or none)"
        )
    # The traces' own protocol, if set, wins over the one for every signal.
    name, protocol = next(((n, p) for n in _PROTOCOLS if (p := _value(environ, n))), ("", ""))
    if protocol and protocol != "http/protobuf":
        raise StartupError(
            f"{name}={protocol} is not available: aichat exports traces over OTLP/HTTP "
            "(http/protobuf); point the endpoint at the receiver's OTLP/HTTP port "
            "(usually 4318) and unset it"
        )
    return True


def content_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks for message contents on spans."""
    return _value(environ, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT") in _CAPTURE


def configured_tracing(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The application's tracing when ``environ`` asks for it, else None (nothing imported).

    The caller installs ``Tracing.middleware`` outermost and ``Tracing.running`` as a
    ``cleanup_ctx``.
    """
    if not tracing_wanted(environ):
        return None
    try:
        from aichat.operations.trace_spans import Tracing
    except ImportError as exc:
        raise StartupError(
            f"traces were asked for ({_ENDPOINTS[1]} or {_ENDPOINTS[0]} is set) but the "
            f"OpenTelemetry SDK is missing ({exc.name}): pip install 'aichat[tracing]'"
        ) from None
    return Tracing(capture_content=content_wanted(environ))
