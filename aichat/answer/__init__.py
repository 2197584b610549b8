"""The answer path: from a parsed request to the events of one answer, whatever the API.

Routing a model to its targets (``routing``, ``capabilities``), trying them in turn with
circuit breakers (``failover``), starting the answer (``answering``), translating neutral
events to OpenAI chunks and content blocks (``translate``, ``openai_events``, ``blocks``),
writing server-sent events (``sse``) and counting tokens (``usage``). Also the routing table
this path reads and how it is built and swapped: ``state`` (the application's typed keys),
``reload`` and ``discovery``.

May import: ``aichat.operations``, ``aichat.providers``, ``aichat.core``.
Never imports ``aichat.inbound`` or the entry modules.
"""
