"""Inbound APIs: the HTTP handlers clients call, one module per API, and the playground.

Chat Completions (``chat``), Responses (``responses_api``, ``responses_tools``), Anthropic
Messages (``anthropic_api``), models and health (``meta``), the OpenAPI document (``openapi``)
and the playground page (``playground`` with its files in ``static/``). A handler parses the
request in its API's shape, asks the answer path for an answer and writes it back in that
shape.

May import: ``aichat.answer``, ``aichat.operations``, ``aichat.providers``, ``aichat.core``.
Imported only by the entry modules at the top of the package (``aichat.app``).
"""
