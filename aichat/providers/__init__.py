"""Upstreams: providers behind one interface (``base.Provider``); ``registry`` builds them.

Each provider speaks its upstream's protocol (``openai``, ``aichats``, ``mock``) over the
shared HTTP bounds (``http``) and upstream line decoding (``streaming``), and yields the
neutral events of ``base``. Adapters wrap a provider to give it what its upstream lacks:
emulated tool calls (``tool_emulation``) and reasoning split from text (``reasoning``, with
the partial-marker hold-back of ``markers``).

May import: ``aichat.core``. Never imports ``aichat.operations``, ``aichat.answer``,
``aichat.inbound`` or the entry modules.

Kept free of code on purpose: importing ``aichat.providers.base`` must not import every provider.
"""
