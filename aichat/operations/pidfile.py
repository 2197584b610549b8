"""The PID file: how ``aichat reload`` finds the running gateway without anyone's help.

Decisions:

- ``aichat serve`` writes its PID (with ``--workers``, the supervisor's, which passes SIGHUP
  on to every worker) to ``AICHAT_PID_FILE``, by default ``aichat-<port>.pid`` in the
  temporary directory (``$TMPDIR``, else ``/tmp``): writable in the container image, in the
  Kubernetes pod (an ``emptyDir``) and under the systemd unit (``PrivateTmp``), and one file
  per port, so gateways on one machine do not share one. It is written before the gateway
  listens (SIGHUP waits until it can reload: ``aichat.operations.hangup``) and removed at
  exit.
- The file is locked (``flock``) for as long as the gateway runs, and the kernel drops the
  lock when the process dies, however it dies: a file left behind by a killed gateway is
  known to be stale, and its PID, perhaps another process's by now, is never signalled. A
  second gateway with the same PID file is refused at start instead of taking it over.
- ``aichat reload`` signals only a PID written by its own user into a file that is locked.
- A PID file that cannot be written (a read-only directory, say) is a warning, not a reason
  to refuse to serve: the gateway works without it, only ``aichat reload`` cannot find it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aichat.core.config import Settings, StartupError

log = logging.getLogger("aichat")


class NotRunning(Exception):
    """No running gateway could be found through the PID file; the message says why."""


def pid_path(settings: Settings) -> Path:
    """The gateway's PID file: ``AICHAT_PID_FILE``, else ``aichat-<port>.pid`` in the temp dir."""
    return settings.pid_file or Path(tempfile.gettempdir()) / f"aichat-{settings.port}.pid"


def _holder(fd: int) -> str:
    """The PID another gateway wrote into the file it holds, for a message."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _locked(path: Path) -> int | None:
    """``path`` opened and locked by this process; None if it could not be written."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.warning(
                "cannot write the PID file %s (%s): `aichat reload` will not find this "
                "gateway; set AICHAT_PID_FILE / --pid-file to a writable path",
                path,
                exc.strerror or exc,
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StartupError(
                f"another aichat (pid {holder}) runs with the PID file {path}: stop it, or give "
                "this gateway a PID file of its own with --pid-file / AICHAT_PID_FILE"
            ) from None
        # The gateway that held it may have removed the file between our open and our lock:
        # then the lock is on a file nobody finds, so open the path again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """Hold ``path`` with this process's PID in it while the block runs; removed after.

    Forked workers inherit the descriptor and with it the lock; they never remove the file.
    """
    fd = _locked(path)
    if fd is None:
        yield
        return
    owner = os.getpid()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{owner}\n".encode(), 0)
        yield
    finally:
        if os.getpid() == owner:
            # Removed while still locked: no other gateway can have taken it over.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)


def running_pid(path: Path) -> int:
    """The PID of the gateway holding ``path``; NotRunning says why there is none."""
    where = "its path is AICHAT_PID_FILE / --pid-file, by default set by the port"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotRunning(f"no PID file at {path}: is the gateway running? ({where})") from None
    except OSError as exc:
        raise NotRunning(f"cannot read the PID file {path}: {exc.strerror or exc}") from None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise NotRunning(f"the PID file {path} belongs to another user: not signalled")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            raise NotRunning(f"the PID file {path} holds no PID yet: try again") from None
        raise NotRunning(f"the PID file {path} is stale: no gateway holds it ({where})")
    finally:
        os.close(fd)


def signal_reload(path: Path) -> int:
    """Send SIGHUP to the gateway holding ``path``; its PID."""
    pid = running_pid(path)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise NotRunning(f"the gateway of {path} (pid {pid}) has just exited") from None
    return pid
