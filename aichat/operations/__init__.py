"""Operations: what keeps the gateway safe and observable, around every request.

Client keys (``auth``), rate and concurrency limits (``limits``), token and money budgets
(``budgets``), circuit breakers (``breaker``), draining on shutdown (``lifecycle``),
Prometheus metrics (``metrics``), access logs and request ids (``logs``), per-request timing
(``timing``), OpenTelemetry traces (``tracing``, an attempt's hook; ``trace_setup``;
``trace_spans``, ``trace_content`` and ``trace_export``, loaded only when tracing is on),
connection accounting (``connections``) and systemd readiness (``sdnotify``).

May import: ``aichat.providers`` (its neutral event types), ``aichat.core``.
Never imports ``aichat.answer``, ``aichat.inbound`` or the entry modules.
"""
