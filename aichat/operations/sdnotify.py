"""Tell systemd about the service's state (``Type=notify`` units), with the standard library only.

systemd passes the address of its notification socket in ``$NOTIFY_SOCKET``: a filesystem path,
or an abstract-namespace name written with a leading ``@``. Outside systemd the variable is
unset and every call here does nothing, so the server can call it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("aichat")


def _address(value: str) -> str | None:
    if value.startswith("@"):
        # Linux abstract namespace: the kernel's name starts with a NUL byte, not '@'.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. systemd's vsock: addresses, which a gateway on a host never gets


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; return whether a notification was sent.

    A failure to notify is logged, never raised: the gateway serves the same either way, and
    systemd itself reports a unit that never became ready.
    """
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _address(value)
    if address is None:
        log.warning("NOTIFY_SOCKET %r is not a unix socket address; not notifying", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True
