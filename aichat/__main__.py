"""``python -m aichat`` and the ``aichat`` command (the executable's entry point too).

SIGHUP is held before the rest of aichat is imported (``aichat.operations.hangup``): the
imports alone take half a second, start-up several on a busy machine, and SIGHUP's default
action would end the gateway during them.
"""

from aichat.operations import hangup


def main() -> int:
    """Hold SIGHUP, then run the command line; the exit code."""
    hangup.hold()
    from aichat.cli import main as command  # only now: it imports the whole gateway

    return command()


if __name__ == "__main__":
    raise SystemExit(main())
