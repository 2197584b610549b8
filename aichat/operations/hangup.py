"""SIGHUP held from the first moment of the process, and let through once it can reload.

Decisions:

- SIGHUP's default action ends the process, and start-up (imports, the tokenizer, the
  application, the first discovery listing) takes seconds on a busy machine: a
  ``docker compose kill -s HUP`` right after a restart must not take the gateway down. The
  ``aichat`` entry point therefore blocks SIGHUP (``pthread_sigmask``) before it imports
  anything else, and the gateway unblocks it once its reload handler is in place.
- Blocked, not ignored: the kernel keeps a blocked signal pending, so a SIGHUP during
  start-up becomes one reload as soon as the gateway can reload, and a configuration changed
  while it started is not missed. Several pending SIGHUPs are one, which asks for the same.
- Threads inherit the mask of the thread that starts them: those started during start-up
  keep SIGHUP blocked for good, so the kernel gives it to the event loop's thread, whose
  handler the loop installed. Forked workers inherit it too; each lets it through once its
  own reload handler is in place. A process that never reloads keeps it blocked: ignored.
- What is left unguarded is the interpreter's own start before the entry point runs.
"""

from __future__ import annotations

import signal


def hold() -> None:
    """Keep SIGHUP pending in this thread (and threads it starts) instead of acting on it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def release() -> None:
    """Let SIGHUP through to its handler, a pending one at once."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
