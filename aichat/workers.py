"""``aichat serve --workers N``: N gateway processes on one port, under one supervisor.

Decisions:

- **Fork, not re-exec.** The supervisor parses the configuration once, then forks the
  workers before any event loop, thread or upstream session exists; each worker builds its
  own application and its own upstream ``ClientSession`` (one per process, as with one
  worker). Nothing is read twice, and the one-file executable works the same. The
  tokenizer, when a route needs it, is loaded before the fork: its 130 MB of tables are
  then shared by all workers instead of copied into each.
- **One port, ``SO_REUSEPORT``.** Every worker listens on the same address and the kernel
  spreads new connections across them. The supervisor first binds the address itself
  without that option: a port already taken (by another gateway with workers, which would
  otherwise be joined silently) fails at start, and port 0 is resolved to one free port
  for all workers.
- **Readiness through the supervisor.** Workers report ``READY=1`` and ``STOPPING=1`` over
  the ``sd_notify`` protocol to a socket of the supervisor (``aichat.operations.sdnotify``
  unchanged); the supervisor tells systemd ``READY=1`` only once every worker listens
  (systemd's ``NotifyAccess=main`` only hears the main process anyway).
- **Signals forwarded, each worker drains.** SIGTERM or SIGINT to the supervisor goes to
  every worker, which drains as a single gateway does; the supervisor exits when they all
  have: 0 if they all exited cleanly.
- **A worker that dies is not restarted.** The supervisor stops the others (they drain)
  and exits 1, so the service manager (systemd ``Restart=on-failure``, a container's
  restart policy) restarts the whole gateway and records the failure, instead of a
  gateway running on with fewer processes than configured, unnoticed.
- Workers die with the supervisor (``PR_SET_PDEATHSIG``): a killed supervisor leaves no
  orphan holding the port.
- **One gateway's state.** Each worker gets one end of a socket pair made before the fork;
  on the other, the supervisor serves the rate and concurrency counters, token budgets and
  the workers' summed metrics (``aichat.operations.shared``), so the workers count and
  report as one process. Its loop (asyncio, once the forks are done) also watches the
  notification socket and the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator

from aichat.app import preload
from aichat.core.config import Settings, StartupError
from aichat.operations import hangup, sdnotify
from aichat.operations.shared import Hub
from aichat.server import listen_error, serve

log = logging.getLogger("aichat")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WATCHED = {*_STOP_SIGNALS, signal.SIGCHLD, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def run(settings: Settings, load: Callable[[], Settings] | None = None) -> int:
    """Serve with ``settings.workers`` processes (in this one when it is 1); the exit code.

    ``load`` reads the settings anew: each worker reloads with it on SIGHUP, which the
    supervisor passes on to all of them.
    """
    if settings.workers == 1:
        serve(settings, load)
        return 0
    try:
        port = _claim_port(settings.host, settings.port)
    except OSError as exc:
        raise StartupError(listen_error(settings.host, settings.port, exc)) from None
    preload(settings)
    # Objects that live as long as the process, out of the cyclic GC before the fork: its
    # passes would write to each of them and so copy their pages into every worker.
    gc.freeze()
    return Supervisor(settings.model_copy(update={"port": port}), load).run()


def _claim_port(host: str, port: int) -> int:
    """Bind ``host:port`` once without ``SO_REUSEPORT``: fails if anything listens there
    already; the port bound (a free one for port 0)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        # As the workers' own sockets: a previous run's connections in TIME_WAIT are no
        # obstacle, a listening socket is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        bound: int = probe.getsockname()[1]
        return bound


class Supervisor:
    """Starts the workers, relays signals and readiness, and ends when they all have."""

    def __init__(self, settings: Settings, load: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self._load = load
        self.workers: set[int] = set()
        self.ready = 0
        self.stopping = False
        self.failed = False
        self._pid = os.getpid()
        # Abstract-namespace address: nothing to clean up on disk, private to this run.
        self._notify_name = f"aichat-workers-{os.getpid()}-{secrets.token_hex(8)}"
        self._done = asyncio.Event()  # set once no worker is left

    def run(self) -> int:
        """Fork the workers and supervise them until they have all exited; the exit code."""
        with contextlib.ExitStack() as stack:
            notify = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            notify.bind("\0" + self._notify_name)
            wake_read, wake_write = (stack.enter_context(s) for s in socket.socketpair())
            links = [socket.socketpair() for _ in range(self.settings.workers)]
            ends = [stack.enter_context(end) for pair in links for end in pair]
            # Until the handlers below are in place, a stop signal waits instead of killing
            # the supervisor between two forks.
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
            for _, worker_end in links:
                self._fork(unblocked, worker_end, ends)
            for _, worker_end in links:
                worker_end.close()  # the worker's alone now: its exit ends its link
            stack.enter_context(_signals_to(wake_write))
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            hangup.release()  # the entry point held it; now the handler passes it on
            log.info(
                "%d workers on http://%s:%d (pid %d; workers %s)",
                len(self.workers),
                self.settings.host,
                self.settings.port,
                self._pid,
                " ".join(map(str, sorted(self.workers))),
            )
            asyncio.run(self._supervise(notify, wake_read, [end for end, _ in links]))
        return 1 if self.failed else 0

    def _fork(
        self,
        unblocked: set[int | signal.Signals],
        link: socket.socket,
        ends: list[socket.socket],
    ) -> None:
        pid = os.fork()
        if pid:
            self.workers.add(pid)
            return
        code = 1
        try:
            # SIGHUP stays held until this worker's reload handler is in place.
            signal.pthread_sigmask(signal.SIG_SETMASK, {*unblocked, signal.SIGHUP})
            _die_with(self._pid)
            for end in ends:  # the other workers' links, and the supervisor's ends
                if end is not link:
                    end.close()
            os.environ["NOTIFY_SOCKET"] = "@" + self._notify_name
            serve(self.settings, self._load, link)
            code = 0
        except BaseException:  # a worker reports everything, then exits
            traceback.print_exc()
        finally:
            logging.shutdown()
            # Never return into the supervisor's code: this process is a worker only.
            os._exit(code)

    async def _supervise(
        self, notify: socket.socket, wake: socket.socket, links: list[socket.socket]
    ) -> None:
        hub = Hub()
        for worker, link in enumerate(links):
            await hub.join(worker, link)
        loop = asyncio.get_running_loop()
        notify.setblocking(False)
        loop.add_reader(notify, lambda: self._on_notify(notify.recv(4096)))
        loop.add_reader(wake, self._on_wake, wake)
        try:
            if self.workers:
                await self._done.wait()
        finally:
            loop.remove_reader(notify)
            loop.remove_reader(wake)
            await hub.close()

    def _on_wake(self, wake: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in wake.recv(64):
                self._on_signal(signum)
        if not self.workers:
            self._done.set()

    def _on_notify(self, message: bytes) -> None:
        if b"READY=1" in message.split(b"\n"):
            self.ready += 1
            if self.ready == self.settings.workers and not self.stopping:
                log.info("all %d workers ready", self.ready)
                sdnotify.notify("READY=1")

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
        elif signum in _STOP_SIGNALS:
            self._stop(signal.Signals(signum))
        elif signum == signal.SIGHUP and not self.stopping:
            log.info("reloading %d workers", len(self.workers))
            self._signal_workers(signal.SIGHUP)

    def _stop(self, how: signal.Signals) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("stopping %d workers", len(self.workers))
            sdnotify.notify("STOPPING=1")
        self._signal_workers(how)

    def _signal_workers(self, signum: signal.Signals) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping and code in (0, -signal.SIGTERM, -signal.SIGINT):
                continue  # a worker stopped before its loop took over the signals ends so too
            self.failed = True
            log.error("worker %d exited unexpectedly (exit code %d)", pid, code)
            if not self.stopping:
                self._stop(signal.SIGTERM)


@contextlib.contextmanager
def _signals_to(wake: socket.socket) -> Iterator[None]:
    """Deliver the watched signals as bytes on ``wake`` (read in the select loop)."""
    wake.setblocking(False)
    previous_fd = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _noted) for signum in _WATCHED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)


def _noted(signum: int, frame: object) -> None:
    """The wake-up fd carries the signal; nothing else to do at interrupt time."""


def _die_with(supervisor: int) -> None:
    """Linux: this worker gets SIGTERM when ``supervisor`` dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before prctl took effect
        os._exit(1)
