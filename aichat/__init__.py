"""aichat: an OpenAI-compatible gateway for chat services that do not speak the OpenAI API.

The package is layered; a module imports only from its own layer or the ones below it, never
in a circle (``tests/unit/test_layers.py`` checks both):

- entry, the modules at this level: ``cli``, ``server``, ``workers``, ``app``, ``healthcheck``,
  ``usage_cli``, ``agent_env`` and ``__main__`` (the commands and the assembled application);
- ``inbound``: the HTTP APIs clients call, and the playground;
- ``answer``: the answer path from a request to its events, and the routing table it reads;
- ``operations``: auth, limits, budgets, breakers, metrics, logs, timing, lifecycle;
- ``providers``: upstreams behind one interface;
- ``core``: settings, schemas, errors, request context, ids, token counts.

This module holds only the version, so any module may import it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aichat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
