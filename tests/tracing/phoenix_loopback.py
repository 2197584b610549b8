"""Run Arize Phoenix with every port on 127.0.0.1 (run by Phoenix's own venv's Python).

``PHOENIX_HOST`` binds its HTTP port (UI, REST API, OTLP/HTTP) where asked, but Phoenix
binds its OTLP/gRPC port to every interface, with no setting for it. Its gRPC server is
given the loopback address here instead, then Phoenix's own command runs: ``serve``.
"""

import sys

import grpc.aio._server as grpc_server  # Phoenix's dependency, not aichat's

_add_insecure_port = grpc_server.Server.add_insecure_port


def _on_loopback(self: grpc_server.Server, address: str) -> int:
    return _add_insecure_port(self, "127.0.0.1:" + address.rsplit(":", 1)[1])


grpc_server.Server.add_insecure_port = _on_loopback  # type: ignore[method-assign]

from phoenix.server.main import main  # noqa: E402 (after the patch it relies on)

sys.argv = ["phoenix", "serve"]
main()
